"""Command-line side of the LLM recipes: options, the endpoint session (`--llm local` starts a
server), `--dry-run` and the Batch API round trip."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator

from datasets_build.llm.engine import LLMConfig
from datasets_build.llm.local_server import LOCAL_MODEL, local_llm_server
from processors.base import Processor
from processors.llm.fine_steps import FineSteps
from processors.llm.ask import LLMProcessor

SECRET_OPTIONS = ("--llm-api-key",)


def uses_llm(processor: Processor) -> bool:
    return isinstance(processor, LLMProcessor)


def add_llm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LLM", "an OpenAI-compatible endpoint: OpenAI (OPENAI_API_KEY), any "
                                      "base URL (vLLM, Ollama, llama.cpp), or a local llama.cpp server")
    group.add_argument("--llm", choices=("api", "local"), default="api",
                       help="'api': OpenAI or --llm-base-url / OPENAI_BASE_URL (default); 'local': start a "
                            "llama.cpp server on loopback with SmolLM2-135M (offline; poor answers)")
    group.add_argument("--llm-model", help=f"model name (default: gpt-4o-mini; {LOCAL_MODEL} with --llm local)")
    group.add_argument("--llm-base-url", metavar="URL", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    group.add_argument("--llm-api-key", metavar="KEY", help="API key (default: OPENAI_API_KEY); never written anywhere")
    group.add_argument("--llm-gguf", metavar="PATH", help="with --llm local: serve this GGUF file instead")
    group.add_argument("--llm-temperature", type=float, default=0.0)
    group.add_argument("--llm-seed", type=int, default=0)
    group.add_argument("--llm-max-tokens", type=int, help="answer length cap (default: 1024; 600 with --llm local)")
    group.add_argument("--llm-concurrency", type=int,
                       help="requests in flight (default: 16; 1 with --llm local, whose server answers one at a time)")
    group.add_argument("--llm-timeout", type=float, help="seconds per request (default: 120; 900 with --llm local)")
    group.add_argument("--llm-max-retries", type=int, default=6)
    group.add_argument("--max-attempts", type=int, default=3,
                       help="answers per caption before it is kept as failed (re-asked with the reasons)")
    group.add_argument("--dry-run", action="store_true",
                       help="print how many requests would be sent, how many are cached, and a token estimate")
    group.add_argument("--llm-batch-export", metavar="FILE",
                       help="write the pending first requests as an OpenAI Batch / vllm run-batch JSONL file and stop")
    group.add_argument("--llm-batch-import", metavar="FILE",
                       help="load a Batch API / vllm run-batch results file into the cache, then build")


def llm_config(args: argparse.Namespace, out: Path) -> LLMConfig:
    local = args.llm == "local"
    model = args.llm_model or (LOCAL_MODEL if local else "gpt-4o-mini")

    def pick(value, api_default, local_default):
        return value if value is not None else (local_default if local else api_default)

    return LLMConfig(model=model, base_url=args.llm_base_url, temperature=args.llm_temperature,
                     seed=args.llm_seed, max_tokens=pick(args.llm_max_tokens, 1024, 600),
                     concurrency=pick(args.llm_concurrency, 16, 1), timeout=pick(args.llm_timeout, 120.0, 900.0),
                     max_retries=args.llm_max_retries, cache_path=str(Path(out) / ".cache" / "llm.sqlite"))


def fine_steps(args: argparse.Namespace, out: Path) -> FineSteps:
    return FineSteps(llm=llm_config(args, out), max_attempts=args.max_attempts)


@contextlib.contextmanager
def llm_session(args: argparse.Namespace) -> Iterator[str | None]:
    """Make the endpoint reachable for the build: the key goes to this process's environment only
    (workers inherit it; nothing writes it), and `--llm local` runs a server meanwhile."""
    if args.llm_api_key:
        os.environ["OPENAI_API_KEY"] = args.llm_api_key
    if args.llm != "local" or args.dry_run or args.llm_batch_export:
        yield args.llm_base_url
        return
    with local_llm_server(args.llm_gguf) as base_url:
        yield base_url


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as it may be written to a card: secret option values replaced."""
    shown, hide = [], False
    for word in argv:
        if hide:
            shown.append("<redacted>")
            hide = False
        elif word in SECRET_OPTIONS:
            shown.append(word)
            hide = True
        elif word.startswith(tuple(o + "=" for o in SECRET_OPTIONS)):
            shown.append(word.split("=", 1)[0] + "=<redacted>")
        else:
            shown.append(word)
    return shown


def with_base_url(processor: LLMProcessor, base_url: str | None) -> LLMProcessor:
    """The processor pointed at the session's endpoint (a local server's port changes per run;
    it is not part of the fingerprint)."""
    return dataclasses.replace(processor, llm=dataclasses.replace(processor.llm, base_url=base_url))
