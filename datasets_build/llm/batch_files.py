"""The OpenAI Batch API / `vllm run-batch` round trip: pending requests out as JSONL, answers back
into the engine's cache (keyed as the engine keys them), and a token estimate for a dry run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets_build.llm.engine import ChatRequest, LLMConfig, LLMEngine


def estimate_tokens(requests: list[ChatRequest], config: LLMConfig) -> tuple[int, int]:
    """Rough (input, output) token counts: 4 characters a token in, max_tokens out at most."""
    chars = sum(len(content) for r in requests for _, content in r.messages)
    return chars // 4, len(requests) * config.max_tokens


def export_batch(requests: list[ChatRequest], config: LLMConfig, path: str | os.PathLike) -> int:
    """Write requests as an OpenAI Batch API / `vllm run-batch` input file (JSONL)."""
    with open(path, "w", encoding="utf-8") as handle:
        for request in requests:
            handle.write(json.dumps({"custom_id": request.key(config), "method": "POST",
                                     "url": "/v1/chat/completions", "body": request.body(config)}) + "\n")
    return len(requests)


def import_batch(path: str | os.PathLike, engine: LLMEngine) -> tuple[int, list[str]]:
    """Feed a Batch API / `vllm run-batch` output file into the cache (its custom_id is the request
    key `export_batch` wrote); returns (answers imported, problems with line numbers)."""
    imported, problems = 0, []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            body = (entry.get("response") or {}).get("body") or {}
            text = body["choices"][0]["message"]["content"]
            key = entry["custom_id"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            problems.append(f"{path} line {number}: not a chat-completion result line")
            continue
        if entry.get("error") or text is None:
            problems.append(f"{path} line {number}: {entry.get('error') or 'no text'} ({entry.get('custom_id')})")
            continue
        usage = body.get("usage") or {}
        engine.cache.store(key, body.get("model", engine.config.model), "", "", text,
                           {"prompt_tokens": usage.get("prompt_tokens", 0),
                            "completion_tokens": usage.get("completion_tokens", 0)})
        imported += 1
    return imported, problems
