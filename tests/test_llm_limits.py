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
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


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
