"""The LLM engine against real chat-completions servers on loopback (no mock of the client)."""

import asyncio
import contextlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat_server import ChatServer
from datasets_build.llm import transport as llm_transport
from datasets_build.llm.batch_files import export_batch, import_batch
from datasets_build.llm.engine import ChatRequest, LLMConfig, LLMEngine
from datasets_build.llm.transport import Http11Pool, HttpxPool, open_transport, plain_http

REPO = Path(__file__).resolve().parents[1]
_OPEN: list[LLMEngine] = []


def _requests(n, prefix="caption"):
    return [ChatRequest((("system", "be precise"), ("user", f"Caption: {prefix} {i}")), "test.v1") for i in range(n)]


def _engine(base_url, tmp_path, **kwargs):
    kwargs.setdefault("timeout", 1.0)
    base_url = getattr(base_url, "base_url", base_url)  # a ChatServer or a URL
    engine = LLMEngine(LLMConfig(model="test-model", base_url=base_url, cache_path=str(tmp_path / "llm.sqlite"),
                                 **kwargs))
    _OPEN.append(engine)
    return engine


@pytest.fixture(autouse=True)
def _no_real_key_and_engines_closed(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture(params=["http11", "httpx"])
def transport(request, monkeypatch):
    """Both transports against the same servers: plain HTTP/1.1, and httpx (what https takes)."""
    if request.param == "httpx":
        monkeypatch.setattr(llm_transport, "plain_http", lambda url: False)
    return request.param


def test_answers_are_cached_and_never_asked_twice(tmp_path, transport):
    with ChatServer() as server:
        engine = _engine(server, tmp_path)
        first = engine.run(_requests(5))
        assert all(r.text and not r.cached for r in first) and len(server.log) == 5
        assert type(engine._transport) is (Http11Pool if transport == "http11" else HttpxPool)
        again = _engine(server, tmp_path).run(_requests(5) + _requests(1, "new"))
        assert [r.cached for r in again] == [True] * 5 + [False]
        assert [r.text for r in again[:5]] == [r.text for r in first]
        assert len(server.log) == 6


def test_identical_requests_in_one_run_are_sent_once(tmp_path):
    with ChatServer() as server:
        results = _engine(server, tmp_path).run(_requests(3) + _requests(3))
        assert len(server.log) == 3 and results[0].text == results[3].text


def test_each_answer_is_cached_before_the_next_request_goes_out(tmp_path, transport):
    cache = tmp_path / "llm.sqlite"
    seen = []

    def answer(body):  # runs in the server: how many answers has the engine stored so far?
        with contextlib.closing(sqlite3.connect(cache)) as db:
            seen.append(db.execute("SELECT count(*) FROM responses").fetchone()[0])
        return "an answer"

    with ChatServer(answer=answer) as server:
        engine = _engine(server, tmp_path, concurrency=1)
        results = engine.run(_requests(6))
        engine.close()
    assert all(r.text == "an answer" for r in results) and seen == [0, 1, 2, 3, 4, 5]


def test_429_retry_after_500_and_hangs_are_retried_until_answered(tmp_path, transport):
    for fault in ("429", "500", "hang", "bad_json"):
        with ChatServer(fault_rate=1.0, faults=(fault,), hang_seconds=2) as server:
            engine = _engine(server, tmp_path / fault, max_retries=2)
            started = time.monotonic()
            result = engine.run(_requests(1))[0]
            assert result.text is None and result.error and engine.counters["failures"] == 1
            assert engine.counters["sent"] == 3 and engine.counters["retries"] == 2
            if fault == "429":  # retry-after: 0.05 s, honoured instead of the exponential backoff
                assert time.monotonic() - started < 1.0
            if fault == "hang":  # the per-request timeout (1 s) ends each attempt
                assert "no answer within 1 s" in result.error and time.monotonic() - started < 6
            engine.close()  # before the server stops: it would complain of connections left open
    with ChatServer(fault_rate=0.5, faults=("429", "500", "hang"), hang_seconds=2, seed=3) as server:
        engine = _engine(server, tmp_path / "mixed", max_retries=8, concurrency=8)
        results = engine.run(_requests(20))
        assert all(r.text for r in results) and engine.counters["retries"] > 0
        answered = [r for r in engine.cache.get_many([q.key(engine.config) for q in _requests(20)]).values()]
        assert len(answered) == 20  # every answer is in the cache, none lost to the faults around it
        engine.close()


def test_a_client_error_is_not_retried_and_no_key_is_a_clear_error(tmp_path):
    engine = LLMEngine(LLMConfig(cache_path=str(tmp_path / "c.sqlite")))
    with pytest.raises(Exception, match="set OPENAI_API_KEY"):
        engine.run(_requests(1))
    engine.close()
    replies = [(_reply(429, b'{"error": "slow down"}', "retry-after-ms: 20"), False),
               (_reply(400, b'{"error": {"message": "bad model"}}'), False)]
    with _scripted_server(replies) as (base_url, log):
        engine = _engine(base_url, tmp_path)
        result = engine.run(_requests(1))[0]
    assert result.text is None and result.error.startswith("HTTP 400") and "bad model" in result.error
    assert engine.counters["sent"] == 2 and engine.counters["retries"] == 1 and len(log) == 2


def test_plain_http_keep_alive_chunked_and_closed_connections(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    chunked = _answer("chunked")
    replies = [
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (chunked[:10], chunked[10:]))
         + b"0\r\nX-Trailer: 1\r\n\r\n", False),
        (_reply(200, _answer("then closed"), "Connection: close"), True),
        (b"HTTP/1.1 200 OK\r\n\r\n" + _answer("until the end"), True),  # no length: the body ends at the close
        (_reply(200, _answer("kept?")), True),  # the server drops a kept-alive connection (an idle timeout)
        (_reply(200, _answer("fresh")), False),
    ]
    with _scripted_server(replies) as (base_url, log):
        engine = _engine(base_url, tmp_path, concurrency=1)
        results = engine.run(_requests(5))
    assert [r.text for r in results] == ["chunked", "then closed", "until the end", "kept?", "fresh"]
    assert [connection for connection, _, _ in log] == [1, 1, 2, 3, 4]  # the dropped one is not counted a retry
    assert engine.counters["sent"] == 5 and engine.counters["retries"] == 0
    assert all(re.search(r"(?im)^authorization: Bearer sk-test-123\r?$", head) for _, head, _ in log)
    assert all(head.startswith("POST /v1/chat/completions HTTP/1.1") for _, head, _ in log)
    assert log[0][2]["model"] == "test-model" and log[0][2]["messages"][1]["content"] == "Caption: caption 0"


def test_plain_http_only_when_no_proxy_applies(monkeypatch):
    assert plain_http("http://127.0.0.1:8000/v1/chat/completions")
    assert not plain_http("https://api.openai.com/v1/chat/completions")
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    assert not plain_http("http://10.0.0.5:8000/v1/chat/completions")
    assert plain_http("http://localhost:8000/v1/chat/completions")
    transport = open_transport("https://api.openai.com/v1", "k", 1.0, 16)
    assert isinstance(transport, HttpxPool) and len(transport.clients) == 2  # pools of 8 connections
    asyncio.run(transport.close())


def test_an_engine_left_open_at_exit_exits_quietly(tmp_path):
    script = ("import sys; from datasets_build.llm.engine import ChatRequest, LLMConfig, LLMEngine\n"
              "engine = LLMEngine(LLMConfig(model='m', base_url=sys.argv[1], cache_path=sys.argv[2]))\n"
              "assert engine.run([ChatRequest((('user', 'Caption: x'),), 'v')])[0].text\n")
    with ChatServer() as server:
        result = subprocess.run([sys.executable, "-c", script, server.base_url, str(tmp_path / "c.sqlite")],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and result.stderr == ""


def test_batch_export_and_import_feed_the_same_cache(tmp_path):
    with ChatServer() as server:
        engine = _engine(server, tmp_path)
        requests = _requests(4)
        assert export_batch(engine.pending(requests), engine.config, tmp_path / "batch.jsonl") == 4
        lines = [json.loads(line) for line in (tmp_path / "batch.jsonl").read_text().splitlines()]
        assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["body"]["model"] == "test-model"
        # what the Batch API / vllm run-batch writes back
        results = [{"custom_id": line["custom_id"], "response": {"status_code": 200, "body": {
            "model": "test-model", "choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2}}}, "error": None} for i, line in enumerate(lines[:3])]
        results.append({"custom_id": lines[3]["custom_id"], "response": None, "error": {"message": "expired"}})
        (tmp_path / "results.jsonl").write_text("\n".join(map(json.dumps, results)) + "\nnot json\n")
        imported, problems = import_batch(tmp_path / "results.jsonl", engine)
        assert imported == 3 and len(problems) == 2 and "line 5" in problems[1]
        assert len(engine.pending(requests)) == 1
        answers = engine.run(requests)
        assert [a.text for a in answers[:3]] == ["answer 0", "answer 1", "answer 2"] and len(server.log) == 1


def _answer(text):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


def _reply(status, body, *headers):
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@contextlib.contextmanager
def _scripted_server(replies):
    """A loopback server that answers the i-th request with replies[i] = (raw bytes, then close the
    connection?). Yields its base URL and a log of (connection number, request head, JSON body)."""
    listener = socket.create_server(("127.0.0.1", 0))
    replies, log = list(replies), []

    def serve(connection, number):
        buffer = b""
        with connection:
            while replies:
                while b"\r\n\r\n" not in buffer:
                    if not (data := connection.recv(65536)):
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(buffer) < length:
                    buffer += connection.recv(65536)
                log.append((number, head.decode(), json.loads(buffer[:length])))
                buffer = buffer[length:]
                reply, close = replies.pop(0)
                connection.sendall(reply)
                if close:
                    return

    def accept():
        for number in range(1, 1000):
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection, number), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", log
    finally:
        listener.close()
