"""Look before a build spends anything: the requests an LLM processor would send (dry run), and
the OpenAI Batch API / `vllm run-batch` round trip (export the pending requests, import answers)."""

from __future__ import annotations

from pathlib import Path

from datasets_build.builder.chunk import read_batches, records_to_columns
from datasets_build.builder.config import BuildConfig
from datasets_build.builder.folder import check_output_folder, claim, output_lock
from datasets_build.builder.plan import plan_splits
from datasets_build.formats.release import open_release
from datasets_build.llm.batch_files import estimate_tokens, export_batch, import_batch
from datasets_build.llm.engine import LLMEngine
from datasets_build.motion.specs import SPECS
from processors.llm.ask import LLMProcessor


def first_requests(config: BuildConfig, processor: LLMProcessor) -> list:
    """The first request of every annotation the build would read (no motion is written)."""
    release = open_release(config.source, SPECS[config.dataset], config.splits, False, config.follow_links)
    plan, _ = plan_splits(release, config.splits, config.limit)
    requests = []
    for split, ids in plan.items():
        for batch in read_batches(release, split, ids, config.batch_size):
            columns = records_to_columns(batch, release)
            requests += processor.first_requests({name: columns[name] for name in processor.inputs})
    return requests


def _claimed(config: BuildConfig) -> None:
    """The answer cache lives in the output folder: claim it as a build would (checks included)."""
    check_output_folder(Path(config.out), Path(config.source))
    with output_lock(Path(config.out)):
        claim(Path(config.out), config.overwrite)


def dry_run(config: BuildConfig, processor: LLMProcessor) -> str:
    _claimed(config)
    requests = first_requests(config, processor)
    engine = LLMEngine(processor.llm)
    unique = {r.key(processor.llm): r for r in requests}
    pending = engine.pending(unique.values())
    engine.close()
    tokens_in, tokens_out = estimate_tokens(pending, processor.llm)
    return (f"dry run ({processor.name}): {len(requests):,} annotations need {len(unique):,} distinct first requests "
            f"({len(requests) - len(unique):,} shared, e.g. mirrors asking their base caption); "
            f"{len(unique) - len(pending):,} are cached, {len(pending):,} would be sent to {processor.llm.model}, "
            f"about {tokens_in:,} input tokens and at most {tokens_out:,} output tokens "
            f"(re-asks after failed checks come on top)")


def batch_export(config: BuildConfig, processors: list[LLMProcessor], path: str) -> str:
    """One file with the pending first requests of every LLM processor (they share the model)."""
    _claimed(config)
    pending = [r for p in processors for r in LLMEngine(p.llm).pending(first_requests(config, p))]
    count = export_batch(pending, processors[0].llm, path)
    return (f"wrote {count:,} pending requests to {path}; run them with the OpenAI Batch API or "
            f"`vllm run-batch`, then import the results file into the cache and build again")


def batch_import(config: BuildConfig, processor: LLMProcessor, path: str) -> str:
    _claimed(config)
    engine = LLMEngine(processor.llm)
    imported, problems = import_batch(path, engine)
    engine.close()
    lines = [f"imported {imported:,} answers from {path} into the cache"]
    lines += [f"  {p}" for p in problems[:20]] + ([f"  ... {len(problems) - 20} more"] if len(problems) > 20 else [])
    return "\n".join(lines)
