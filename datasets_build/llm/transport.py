"""How the LLM engine reaches an endpoint: POST a JSON body to `{base_url}/chat/completions` and get
back (status, headers with lower-case names, body bytes). A request that gets no complete answer
raises OSError (TimeoutError, ConnectionError), EOFError or ValueError; the engine retries those.

Two transports, chosen by `open_transport`:

* `Http11Pool`, for plain-HTTP endpoints reached without a proxy (vLLM, Ollama, llama.cpp on
  loopback or a LAN): HTTP/1.1 with keep-alive on asyncio streams, about 0.1 ms of CPU a request.
  With a fast server the client's CPU is the limit, and httpx costs about 1 ms a request (the
  openai SDK on top of it 1.6 ms): one process could not use a 640 requests/s server.
* `HttpxPool` for everything else (TLS and its certificates, proxies from the environment):
  httpx, as the openai SDK itself uses it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import urllib.request
import weakref
from urllib.parse import urlsplit

from datasets_build.core.errors import MissingDependency

# One request's failures, as the transports raise them (asyncio.TimeoutError: Python 3.10).
TRANSPORT_ERRORS = (OSError, EOFError, ValueError, asyncio.TimeoutError, asyncio.LimitOverrunError)
_CONNECTIONS_PER_CLIENT = 8
# The largest answer body read (a chat completion is a few KB): a server that announces or sends
# more gets its request failed, instead of filling this process's memory.
MAX_BODY_BYTES = 16 << 20


class ResponseTooLarge(OSError):
    """An answer body over MAX_BODY_BYTES."""

    def __init__(self, size: int | str):
        super().__init__(f"the answer body ({size} bytes) is over the {MAX_BODY_BYTES >> 20} MiB limit")


def open_transport(base_url: str, api_key: str, timeout: float, connections: int) -> "Http11Pool | HttpxPool":
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
               "Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "t2m-datasets-build"}
    for variable, header in (("OPENAI_ORG_ID", "OpenAI-Organization"), ("OPENAI_PROJECT_ID", "OpenAI-Project")):
        if os.environ.get(variable):  # as the openai SDK sends them
            headers[header] = os.environ[variable]
    if plain_http(url):
        return Http11Pool(url, headers)
    return HttpxPool(url, headers, timeout, connections)


def plain_http(url: str) -> bool:
    """Whether `url` is plain HTTP reached directly (no proxy from the environment applies)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxied = bool(proxies.get("http") or proxies.get("all")) and not urllib.request.proxy_bypass(parts.hostname or "")
    return parts.scheme == "http" and not proxied


class Http11Pool:
    """Keep-alive connections to one plain-HTTP endpoint, each carrying one request at a time (the
    engine bounds how many are in flight, so the pool holds at most that many)."""

    def __init__(self, url: str, headers: dict[str, str]):
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port or 80)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname  # never user:password@
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open: set[asyncio.StreamWriter] = set()
        # An engine kept to the end of the process is never closed: close its sockets at exit while
        # the interpreter still can (a StreamWriter collected later fails loudly in its __del__).
        weakref.finalize(self, _close_all, self.open, os.getpid())

    async def post(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        request = self.head + b"%d\r\n\r\n" % len(data) + data
        while self.idle:  # the most recently used first
            connection = self.idle.pop()
            if connection[0].at_eof() or connection[1].is_closing():
                self._drop(connection)
                continue
            try:
                return await self._exchange(connection, request)
            except _NoResponse:
                break  # the server closed it while idle (a keep-alive timeout): once more, on a fresh one
        connection = await asyncio.open_connection(*self.address)
        self.open.add(connection[1])
        try:
            return await self._exchange(connection, request)
        except _NoResponse as exc:
            raise ConnectionError(f"the server closed the connection without answering ({exc})") from None

    async def _exchange(self, connection, request: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = connection
        try:
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                if getattr(exc, "partial", b""):
                    raise
                raise _NoResponse(type(exc).__name__) from None
            status, headers, keep = _parse_head(head)
            while 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                status, headers, keep = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            if status in (204, 304):
                body = b""
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                body = await _read_chunked(reader)
            elif "content-length" in headers:
                size = int(headers["content-length"])
                if size > MAX_BODY_BYTES:
                    raise ResponseTooLarge(f"{size:,}")
                body = await reader.readexactly(size)
            else:  # the body ends when the server closes the connection
                body, keep = await _read_to_close(reader), False
        except BaseException:  # a failure, a timeout or a cancellation: the connection is unusable
            self._drop(connection)
            raise
        if keep:
            self.idle.append(connection)
        else:
            self._drop(connection)
        return status, headers, body

    def _drop(self, connection) -> None:
        connection[1].close()
        self.open.discard(connection[1])

    async def close(self) -> None:
        _close_all(self.open, os.getpid())
        self.idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing before the loop does


def _close_all(writers: set[asyncio.StreamWriter], pid: int) -> None:
    if os.getpid() == pid:  # a forked child must not touch its parent's connections (or event loop)
        for writer in writers:
            try:
                writer.close()
            except RuntimeError:  # its event loop is closed: nothing left to tidy
                pass
        writers.clear()


class _NoResponse(ConnectionError):
    """The connection ended before any byte of an answer."""


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    status_line, *lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")  # (a stray CRLF before it)
    version, status = status_line.split(" ", 2)[:2]
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(status), headers, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks, total = [], 0
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        total += size
        if total > MAX_BODY_BYTES:
            raise ResponseTooLarge(f"over {total:,}")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
        pass
    return b"".join(chunks)


async def _read_to_close(reader: asyncio.StreamReader) -> bytes:
    chunks, total = [], 0
    while piece := await reader.read(1 << 16):
        total += len(piece)
        if total > MAX_BODY_BYTES:
            raise ResponseTooLarge(f"over {total:,}")
        chunks.append(piece)
    return b"".join(chunks)


class HttpxPool:
    """httpx clients (httpx2 with openai >= 3) posting to one endpoint, failures as OSError."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float, connections: int):
        try:
            import httpx2 as httpx
        except ImportError:
            try:
                import httpx
            except ImportError:
                raise MissingDependency("the LLM engine needs openai: pip install -e '.[llm]'") from None
        self.httpx, self.url = httpx, url
        # Several small pools instead of one large one: httpx checks every connection it holds
        # for each request, which costs more CPU than the request itself at high concurrency.
        size = _CONNECTIONS_PER_CLIENT
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self.clients = [httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits)
                        for _ in range(-(-connections // size))]
        self.turn = itertools.cycle(self.clients)

    async def post(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            async with next(self.turn).stream("POST", self.url, content=data) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                if int(headers.get("content-length") or 0) > MAX_BODY_BYTES:
                    raise ResponseTooLarge(f"{int(headers['content-length']):,}")
                chunks, total = [], 0
                async for piece in response.aiter_bytes():
                    total += len(piece)
                    if total > MAX_BODY_BYTES:
                        raise ResponseTooLarge(f"over {total:,}")
                    chunks.append(piece)
        except self.httpx.TimeoutException as exc:
            raise TimeoutError(f"{type(exc).__name__}: {exc}") from None
        except self.httpx.RequestError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
        return response.status_code, headers, b"".join(chunks)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
