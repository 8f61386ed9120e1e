"""Command-line side of the LLM recipes: the run-mode flags (`--dry-run`, the Batch API round
trip), the endpoint session (`--llm local` starts a server) and secrets kept off the card."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
from typing import Iterator

from datasets_build.llm.local_server import local_llm_server
from datasets_build.recipes.options import LLMOptions
from processors.base import Processor
from processors.llm.ask import LLMProcessor

SECRET_OPTIONS = ("--llm-api-key",)


def uses_llm(processor: Processor) -> bool:
    return isinstance(processor, LLMProcessor)


def add_session_flags(group: argparse._ArgumentGroup) -> None:
    """The flags that decide what an LLM recipe's run does, beside the LLMOptions flags."""
    group.add_argument("--dry-run", action="store_true",
                       help="print how many requests would be sent, how many are cached, and a token estimate")
    group.add_argument("--llm-batch-export", metavar="FILE",
                       help="write the pending first requests as an OpenAI Batch / vllm run-batch JSONL file and stop")
    group.add_argument("--llm-batch-import", metavar="FILE",
                       help="load a Batch API / vllm run-batch results file into the cache, then build")


@contextlib.contextmanager
def llm_session(options: LLMOptions, serve: bool) -> Iterator[LLMOptions]:
    """The LLM options with a reachable endpoint for the build: the key goes to this process's
    environment only (workers inherit it; nothing writes it), and `--llm local` runs a server
    meanwhile when `serve` (its port is chosen per run; the base URL is in no fingerprint)."""
    if options.llm_api_key:
        os.environ["OPENAI_API_KEY"] = options.llm_api_key
    if options.llm != "local" or not serve:
        yield options
        return
    with local_llm_server(options.llm_gguf) as base_url:
        yield dataclasses.replace(options, llm_base_url=base_url)


# user:password@ in a URL (an endpoint given with its credentials)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as it may be written to a card: secret option values and the credentials
    of URLs replaced (abbreviated options are refused by the parser, so the names are exact)."""
    shown, hide = [], False
    for word in (_URL_CREDENTIALS.sub("<redacted>@", w) for w in argv):
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
