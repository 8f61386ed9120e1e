"""An LLM server cannot make the client read without end: answer bodies are capped in both
transports, whatever the server announces or streams."""

import asyncio
import threading

import pytest

from datasets_build.llm import transport
from datasets_build.llm.transport import MAX_BODY_BYTES, Http11Pool, HttpxPool, ResponseTooLarge


class _Server:
    """A loopback HTTP server that answers every request with `head` and then `body()` bytes."""

    def __init__(self, head: bytes, body):
        self.head, self.body = head, body
        self.ready = threading.Event()

    async def _handle(self, reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        try:
            writer.write(self.head)
            for piece in self.body():
                writer.write(piece)
                await writer.drain()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            writer.close()

    def __enter__(self):
        self.loop = asyncio.new_event_loop()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        async def stop():
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0.05)  # let the handlers finish cancelling

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _endless(piece: bytes, limit: int = 4 * MAX_BODY_BYTES):
    def body():
        sent = 0
        while sent < limit:  # bounded: the test server stops by itself
            yield piece
            sent += len(piece)
    return body


CASES = {
    "announced 8 GB": (b"HTTP/1.1 200 OK\r\nContent-Length: 8000000000\r\n\r\n", _endless(b"x" * 65536)),
    "until close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", _endless(b"x" * 65536)),
    "huge chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", lambda: [b"7fffffff\r\n", b"x" * 65536]),
    "endless chunks": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", _endless(b"10000\r\n" + b"x" * 65536 + b"\r\n")),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["http11", "httpx"])
def test_an_oversized_answer_fails_the_request(case, kind):
    if kind == "httpx" and case == "huge chunk":
        pytest.skip("httpx reads a declared chunk size as it arrives: covered by the endless stream")
    head, body = CASES[case]
    with _Server(head, body) as server:
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"

        async def post():
            pool = Http11Pool(url, {}) if kind == "http11" else HttpxPool(url, {}, 30.0, 1)
            try:
                return await asyncio.wait_for(pool.post(b"{}"), 30)
            finally:
                await pool.close()

        with pytest.raises(ResponseTooLarge, match="over the 16 MiB limit"):
            asyncio.run(post())


def test_the_cap_is_an_error_the_engine_reports():
    assert issubclass(ResponseTooLarge, transport.TRANSPORT_ERRORS)


class _EchoServer(_Server):
    """Answers with `respond(request_head) -> raw HTTP response bytes`."""

    def __init__(self, respond):
        super().__init__(b"", lambda: [])
        self.respond = respond

    async def _handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length")), b"0"))
                await reader.readexactly(length)
                writer.write(self.respond(head.decode("latin-1")))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _http(status: str, body: str, *headers: str) -> bytes:
    data = body.encode()
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(data)}", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _engine(server, tmp_path, **config):
    from datasets_build.llm.engine import LLMConfig, LLMEngine

    return LLMEngine(LLMConfig(model="m", base_url=f"http://127.0.0.1:{server.port}/v1", concurrency=1,
                               cache_path=str(tmp_path / "llm.sqlite"), **config))


def test_a_long_retry_after_fails_the_request_instead_of_stalling(tmp_path):
    import time

    from datasets_build.llm.engine import ChatRequest

    for wait in ("3600", "inf"):
        with _EchoServer(lambda head: _http("429 Too Many Requests", "{}", f"Retry-After: {wait}")) as server:
            started = time.perf_counter()
            engine = _engine(server, tmp_path, max_retries=3)
            result = engine.run([ChatRequest((("user", "hi"),), "v1")])[0]
            engine.close()
        assert time.perf_counter() - started < 10
        assert result.text is None and "over the 60 s limit" in result.error


def test_an_echoed_api_key_is_cut_from_errors_and_answers(tmp_path, monkeypatch):
    import json

    from datasets_build.llm.engine import ChatRequest

    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def echo(head):
        auth = next(line for line in head.split("\r\n") if line.lower().startswith("authorization"))
        return _http("200 OK", json.dumps({"choices": [{"message": {"content": f"you sent {auth}"}}]}))

    with _EchoServer(echo) as server:
        engine = _engine(server, tmp_path, max_retries=0)
        answer = engine.run([ChatRequest((("user", "hi"),), "v1")])[0]
        engine.close()
    assert key not in answer.text and "<redacted>" in answer.text
    assert key.encode() not in (tmp_path / "llm.sqlite").read_bytes()
    with _EchoServer(lambda head: _http("401 Unauthorized", f"bad key: {head}")) as server:
        engine = _engine(server, tmp_path / "b", max_retries=0)
        failed = engine.run([ChatRequest((("user", "hi"),), "v1")])[0]
        engine.close()
    assert failed.text is None and key not in failed.error and "<redacted>" in failed.error
