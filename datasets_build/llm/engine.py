"""The LLM engine every LLM processor uses: an OpenAI-compatible client with bounded concurrency,
retries that respect `retry-after`, per-request timeouts, and a content-addressed response cache.

The cache is an SQLite file written as each answer arrives, keyed by a hash of the model, the
prompt version, the messages, the sampling parameters and the answer's constraint: an interrupted
run (even `kill -9`) resumes without sending any request that already has an answer. A request
may carry a `Constraint` (`llm.structured`): the engine adds the fields that ask the server for
constrained decoding, and counts answers that do not have the constrained form
(`constraint_ignored`: the server ignored a field it does not know), warning once. The API key is
read from the environment when a client is made and is never part of a configuration, a cache or
a log.
Requests go out through `llm_transport`: plain HTTP/1.1 on asyncio for a local server, httpx otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from datasets_build.llm.structured import Constraint, field_name, resolve_mode, server_of_url
from datasets_build.llm.transport import TRANSPORT_ERRORS, open_transport
from datasets_build.core.errors import UserError
from datasets_build.core.kv_store import SqliteStore

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
log = logging.getLogger(__name__)


class LLMSetupError(UserError, RuntimeError):
    """No usable endpoint (no key, no URL, a local server that will not start): one sentence."""


@dataclass(frozen=True)
class LLMConfig:
    model: str = "gpt-4o-mini"
    base_url: str | None = None  # None: OPENAI_BASE_URL or OpenAI's own
    temperature: float = 0.0
    seed: int | None = 0
    max_tokens: int = 1024
    concurrency: int = 16
    timeout: float = 120.0  # seconds per request
    max_retries: int = 6
    cache_path: str = ""  # SQLite file; the recipe puts it next to the output
    structured: str = "auto"  # constrained decoding: auto, grammar, json-schema, off (`llm.structured`)
    server: str = ""  # openai, vllm, llama.cpp, compatible; "" = from the base URL (OpenAI's, else compatible)

    def __post_init__(self) -> None:
        self.mode()  # an impossible combination (a grammar for OpenAI) fails here, not at the first request

    def server_kind(self) -> str:
        return self._resolved[1]

    def mode(self) -> str:
        """The constraint mode for this server: grammar, json-schema or off."""
        return self._resolved[0]

    @functools.cached_property
    def _resolved(self) -> tuple[str, str]:  # (mode, server kind), asked for several times per request
        server = self.server or server_of_url(self.base_url or os.environ.get("OPENAI_BASE_URL")) or "compatible"
        return resolve_mode(self.structured, server), server

    def identity(self) -> dict[str, Any]:
        """What decides the answers (a processor's fingerprint uses this, not endpoint or limits)."""
        return {"model": self.model, **self.params(), "structured": self.mode(), "server": self.server_kind()}

    def params(self) -> dict[str, Any]:
        """Sampling parameters: part of every cache key (the endpoint and limits are not)."""
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    prompt_version: str
    constraint: Constraint | None = None  # the answer's form, for constrained decoding

    def constrained(self, config: LLMConfig) -> bool:
        return self.constraint is not None and config.mode() != "off"

    def body(self, config: LLMConfig, with_constraint: bool = True) -> dict[str, Any]:
        body = {"model": config.model, "messages": [{"role": r, "content": c} for r, c in self.messages],
                **{k: v for k, v in config.params().items() if v is not None}}
        if with_constraint and self.constrained(config):
            body.update(self.constraint.fields(config.mode(), config.server_kind()))
        return body

    def wire(self, config: LLMConfig) -> tuple[bytes, str]:
        """(the body as sent, the body without the constraint fields as the cache row keeps it): the
        constraint's fields are serialized once, not per request."""
        plain = json.dumps(self.body(config, with_constraint=False))
        if not self.constrained(config):
            return plain.encode(), plain
        fields = _fields_json(self.constraint, config.mode(), config.server_kind())
        return (plain[:-1] + ", " + fields[1:]).encode(), plain

    def key(self, config: LLMConfig) -> str:
        parts = {"model": config.model, "prompt": self.prompt_version, "messages": self.messages,
                 "params": config.params()}
        if self.constrained(config):  # the form asked for, not the field that carries it
            parts["constraint"] = [config.mode(), self.constraint.digest]
        # One canonical JSON text hashed at once (a tenth of stable_hash's time on long prompts).
        text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=64)
def _fields_json(constraint: Constraint, mode: str, server: str) -> str:
    return json.dumps(constraint.fields(mode, server))


@dataclass(frozen=True)
class ChatResult:
    text: str | None
    error: str | None = None
    cached: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None  # "length": cut at max_tokens


class ResponseCache(SqliteStore):
    """Answers by request key, one committed row per answer."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, "responses", "model TEXT, prompt_version TEXT, request TEXT, text TEXT NOT NULL, "
                                            "usage TEXT, created REAL")

    def get_many(self, keys: list[str]) -> dict[str, ChatResult]:
        return {key: ChatResult(text, cached=True, usage=json.loads(usage or "{}"))
                for key, text, usage in self.select(keys, "text, usage")}

    def put(self, key: str, request: ChatRequest, config: LLMConfig, result: ChatResult) -> None:
        self.store(key, config.model, request.prompt_version, request.wire(config)[1], result.text, result.usage)

    def store(self, key: str, model: str, prompt_version: str, request: str, text: str,
              usage: dict[str, int]) -> None:
        """One answer row; `request` is the request body as JSON ("" when unknown, e.g. a batch import)."""
        self.insert([(key, model, prompt_version, request, text, json.dumps(usage), time.time())])


def endpoint(config: LLMConfig) -> tuple[str, str]:
    """(base URL, API key): the configured URL, else OPENAI_BASE_URL, else OpenAI's own; the key from
    OPENAI_API_KEY (any for a local server, which ignores it)."""
    base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get("OPENAI_API_KEY")
    if not api_key:
        if not base_url:
            raise LLMSetupError("no LLM endpoint: set OPENAI_API_KEY for OpenAI, or give the base URL of an "
                               "OpenAI-compatible server (vLLM, Ollama, llama.cpp), or use the local server")
        api_key = "not-needed"  # local servers accept any key
    return base_url or "https://api.openai.com/v1", api_key


class LLMEngine:
    """Answers chat requests from the cache or the endpoint. `counters` feed the run summary:
    sent, cached, retries, failures, tokens_in, tokens_out; for constrained requests constrained
    (answers received), constraint_ignored (not in the constrained form) and truncated (cut at
    max_tokens, so their form says nothing about the constraint)."""

    def __init__(self, config: LLMConfig):
        if not config.cache_path:
            raise ValueError("LLMConfig.cache_path is required: answers must be cached")
        self.config = config
        self.cache = ResponseCache(config.cache_path)
        self.counters: Counter = Counter()
        # One event loop and its connections for the engine's life: connections stay open between
        # batches instead of being made again for each.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport = None
        self._warned = False
        self._secrets: tuple[str, ...] = ()

    def run(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Answer every request (identical ones once), in order; failures come back as errors."""
        keys = [r.key(self.config) for r in requests]
        results = self.cache.get_many(list(dict.fromkeys(keys)))
        self.counters["cached"] += sum(k in results for k in keys)
        todo = {k: r for k, r in zip(keys, requests) if k not in results}
        if todo:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            results.update(self._loop.run_until_complete(self._send_all(todo)))
        return [results[k] for k in keys]

    def close(self) -> None:
        if self._loop is not None:
            if self._transport is not None:
                self._loop.run_until_complete(self._transport.close())
            self._loop.close()
            self._loop, self._transport = None, None
        self.cache.close()

    def pending(self, requests: Iterable[ChatRequest]) -> list[ChatRequest]:
        """The requests that have no cached answer yet (for --dry-run and batch export)."""
        unique = {r.key(self.config): r for r in requests}
        cached = self.cache.get_many(list(unique))
        return [r for k, r in unique.items() if k not in cached]

    async def _send_all(self, todo: dict[str, ChatRequest]) -> dict[str, ChatResult]:
        if self._transport is None:
            base_url, api_key = endpoint(self.config)
            self._secrets = _secret_forms(api_key)
            self._transport = open_transport(base_url, api_key, self.config.timeout, self.config.concurrency)
        results: dict[str, ChatResult] = {}
        queue = iter(todo.items())

        async def worker() -> None:  # `concurrency` of these share the queue
            for key, request in queue:
                sent, stored = request.wire(self.config)
                results[key] = result = self._redacted(await self._send(sent))
                if result.error is None:  # stored at once: a kill loses nothing paid for
                    self.cache.store(key, self.config.model, request.prompt_version, stored, result.text, result.usage)
                    if request.constrained(self.config):
                        self._check_form(request.constraint, result)

        await asyncio.gather(*(worker() for _ in range(min(self.config.concurrency, len(todo)))))
        return results

    async def _send(self, body: bytes) -> ChatResult:
        error = "not sent"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.counters["retries"] += 1
            self.counters["sent"] += 1
            headers: dict[str, str] = {}
            try:
                status, headers, data = await self._post(body)
                response = json.loads(data) if 200 <= status < 300 else None
            except asyncio.TimeoutError:
                error = f"no answer within {self.config.timeout:g} s"
            except TRANSPORT_ERRORS as exc:  # ValueError: a body that is not JSON (a broken proxy, say)
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                if response is None:
                    error = f"HTTP {status}: {data[:200].decode(errors='replace')}"
                    if status not in RETRYABLE_STATUS:
                        break
                elif (text := _text_of(response)) is not None:
                    return self._answer(text, response)
                else:  # e.g. content null, or an error object with status 200: back off and ask again
                    error = f"the answer has no text: {str(response)[:200]}"
            if attempt < self.config.max_retries:
                delay = _retry_delay(headers, attempt)
                if not delay <= MAX_RETRY_WAIT:  # also inf and NaN from a hostile retry-after
                    error += f" (the server asked to wait {delay:g} s before retrying: over the {MAX_RETRY_WAIT:g} s limit)"
                    break
                await asyncio.sleep(delay)
        self.counters["failures"] += 1
        return ChatResult(None, error=error)

    def _redacted(self, result: ChatResult) -> ChatResult:
        """The result with the API key (and `Bearer <key>`) cut out of its text and error: a server may
        echo the request's headers, and whatever comes back is stored in the cache and the dataset."""
        if not self._secrets or not any(s in (result.text or "") + (result.error or "") for s in self._secrets):
            return result

        def clean(value: str | None) -> str | None:
            for secret in self._secrets:
                value = value.replace(secret, "<redacted>") if value else value
            return value

        return dataclasses.replace(result, text=clean(result.text), error=clean(result.error))

    async def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if hasattr(asyncio, "timeout"):  # Python 3.11+: unlike wait_for, no task for each request
            async with asyncio.timeout(self.config.timeout):
                return await self._transport.post(body)
        return await asyncio.wait_for(self._transport.post(body), self.config.timeout)

    def _answer(self, text: str, response: dict[str, Any]) -> ChatResult:
        usage = response.get("usage") or {}
        usage = {"prompt_tokens": usage.get("prompt_tokens") or 0,
                 "completion_tokens": usage.get("completion_tokens") or 0}
        self.counters["tokens_in"] += usage["prompt_tokens"]
        self.counters["tokens_out"] += usage["completion_tokens"]
        return ChatResult(text, usage=usage, finish_reason=response["choices"][0].get("finish_reason"))

    def _check_form(self, constraint: Constraint, result: ChatResult) -> None:
        """Count an answer that does not have the constrained form; warn the first time."""
        mode, server = self.config.mode(), self.config.server_kind()
        self.counters["constrained"] += 1
        if result.finish_reason == "length":
            self.counters["truncated"] += 1
            return
        if constraint.matches(result.text or "", mode, server):
            return
        self.counters["constraint_ignored"] += 1
        if not self._warned:
            self._warned = True
            base_url = self.config.base_url or os.environ.get("OPENAI_BASE_URL") or "OpenAI"
            base_url = re.sub(r"(?<=://)[^/@\s]+@", "<redacted>@", base_url)  # user:password@ of a URL
            log.warning("warning: the %s server at %s answered without the form that the `%s` field asked for "
                        "(%s); it may ignore that field. Every answer is still checked; such answers are "
                        "counted as constraint_ignored.", server, base_url, field_name(mode, server), constraint.name)


def _text_of(response: Any) -> str | None:
    try:
        text = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


# The longest wait between two tries of a request that the engine accepts: a server asking for more
# (Retry-After: 3600) fails the request with that reason instead of stalling the build.
MAX_RETRY_WAIT = 60.0


def _secret_forms(api_key: str) -> tuple[str, ...]:
    """The strings to cut out of anything stored: the key itself (a placeholder or a very short
    key would cut ordinary words, so only keys of 8 characters or more)."""
    return (f"Bearer {api_key}", api_key) if api_key and len(api_key) >= 8 and api_key != "not-needed" else ()


def _retry_delay(headers, attempt: int) -> float:
    """The server's retry-after (seconds or milliseconds) when given, else capped exponential
    backoff with jitter."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers else None
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                pass
    return min(30.0, 0.5 * 2**attempt) * (0.5 + random.random() / 2)
