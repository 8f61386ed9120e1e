"""A real HTTP server on loopback that speaks the chat-completions API, with scripted answers and
injected faults (429 with retry-after, 500, hangs, malformed or truncated answers, bad JSON).

Used by the tests and by benchmarks/llm_throughput.py. It runs an asyncio server in a thread;
every request is logged (messages, constraint fields, what was done) so tests can assert what
reached the server. It plays a server kind (`owned_by` in /models: vllm, llamacpp, me for
llama-cpp-python) and honours the constraint fields in `honours`; the default answer is the JSON
form of the fine steps when a constraint it honours asks for it, else the tagged text.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

FAULTS = ("429", "500", "hang", "malformed", "truncated", "wrong_steps", "bad_json")
CONSTRAINT_FIELDS = ("grammar", "response_format", "structured_outputs", "json_schema")


def caption_of(messages: list[dict]) -> str:
    """The caption a fine-steps prompt asks about."""
    user = [m["content"] for m in messages if m["role"] == "user"][0]
    return user.rsplit("Caption:", 1)[-1].strip()


def fine_answer(caption: str, steps: int = 3) -> str:
    """A well-formed two-paragraph answer that mentions the caption's words."""
    words = re.findall(r"[a-z]+", caption.lower()) or ["move"]
    titles = [f"phase {i} {words[(i - 1) % len(words)]}" for i in range(1, steps + 1)]
    described = " ".join(f"<step {i}: {t}>The body moves: {caption}, part {i}, the left arm turns 10 degrees.</step {i}: {t}>"
                         for i, t in enumerate(titles, start=1))
    coded = " ".join(f"<step {i}: {t}>move_{i}(left arm, {words[(i - 1) % len(words)]})</step {i}: {t}>"
                     for i, t in enumerate(titles, start=1))
    return described + "\n" + coded


def fine_json_answer(caption: str, steps: int = 3) -> str:
    """The same steps in the JSON form that the fine-steps constraint asks for."""
    words = re.findall(r"[a-z]+", caption.lower()) or ["move"]
    return json.dumps({"steps": [
        {"title": f"phase {i} {words[(i - 1) % len(words)]}",
         "description": f"The body moves: {caption}, part {i}, the left arm turns 10 degrees.",
         "pseudo_code": f"move_{i}(left arm, {words[(i - 1) % len(words)]})"} for i in range(1, steps + 1)]})


def constraint_of(body: dict) -> dict:
    """The constraint fields of a request body."""
    return {k: body[k] for k in CONSTRAINT_FIELDS if k in body}


def default_answer(body: dict) -> str:
    caption = caption_of(body["messages"])
    return fine_json_answer(caption) if body.get("_constrained") else fine_answer(caption)


@dataclass
class ChatServer:
    answer: Callable[[dict], str] = default_answer
    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    hang_seconds: float = 3.0
    seed: int = 0
    owned_by: str = "chat-server"  # what /models says: vllm, llamacpp, me (llama-cpp-python), ...
    honours: tuple[str, ...] = CONSTRAINT_FIELDS  # the constraint fields it applies; others it ignores
    log: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "ChatServer":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("chat server did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        # End the open connections' handlers before the loop stops (else they die as warnings):
        # closed sockets end their reads, and a hang waits on the stop event.
        for writer in list(self._writers):
            writer.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if handlers:
            await asyncio.wait(handlers, timeout=2)

    def _choose_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.faults)
        return None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                status, payload, extra = await self._handle(method, path, body)
                if status is None:  # a hang: never answer this connection
                    try:
                        await asyncio.wait_for(self._stop.wait(), self.hang_seconds)
                    except asyncio.TimeoutError:
                        pass
                    break
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                head_out = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
                            "content-type: application/json", f"content-length: {len(data)}",
                            "connection: keep-alive", *extra]
                writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, method: str, path: str, raw: bytes):
        if method == "GET" and path.endswith("/models"):
            return 200, {"object": "list", "data": [{"id": "test-model", "object": "model",
                                                     "owned_by": self.owned_by}]}, []
        body = json.loads(raw)
        fault = self._choose_fault()
        constraint = constraint_of(body)
        body["_constrained"] = any(k in self.honours for k in constraint)
        entry = {"messages": body["messages"], "model": body.get("model"), "fault": fault, "time": time.time(),
                 "constraint": constraint}
        with self._lock:
            self.log.append(entry)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "429":
            return 429, {"error": {"message": "slow down", "type": "rate_limit"}}, ["retry-after: 0.05"]
        if fault == "500":
            return 500, {"error": {"message": "boom", "type": "server_error"}}, []
        if fault == "hang":
            return None, None, []
        if fault == "bad_json":
            return 200, b'{"id": "x", "choices": [', []
        text = self.answer(body)
        if fault == "malformed":  # tags broken, or (JSON) a pseudo-code step that is no call
            text = re.sub(r"</step", "<step", text, count=2).replace(">", "", 1).replace("(", " ", 1)
        elif fault == "truncated":
            text = text[: len(text) // 2]
        elif fault == "wrong_steps":  # the tagged form, with paragraphs that disagree
            text = fine_answer(caption_of(body["messages"]), 4).split("\n")[0] + "\n" + fine_answer(
                caption_of(body["messages"]), 3).split("\n")[-1]
        entry["answered"] = True
        finish = "length" if fault == "truncated" else "stop"  # as a server says when max_tokens cut it
        return 200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": sum(len(m["content"]) for m in body["messages"]) // 4,
                      "completion_tokens": len(text) // 4, "total_tokens": 0},
        }, []
