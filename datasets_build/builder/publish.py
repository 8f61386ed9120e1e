"""Publish a build: swap the written splits into place, then write what describes them (release
statistics, the rejected-items manifest, the dataset card) and, last, the build record.
`datasets_build.formats.built` reads them back."""

from __future__ import annotations

import datetime
import os
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from datasets_build.builder import card
from datasets_build.builder.config import BuildConfig, BuildResult
from datasets_build.builder.folder import remove_build_names
from datasets_build.core.hashing import stable_hash
from datasets_build.formats.arrow import ShardWriter, batch_table, finish_split_dir, write_dataset_dict_json
from datasets_build.formats.built import BUILD_RECORD, MANIFEST, RELEASE_STATS, read_build_record
from datasets_build.formats.release import Rejection, Release

# Names of settings that hold secrets (api_key, token, ...); not `token_features`.
_SECRET_KEY = re.compile(r"(^|_)(api_?key|key|secret|password|token|credentials?)$", re.IGNORECASE)


def publish(config: BuildConfig, release: Release, features: datasets.Features, result: BuildResult,
            partial: Path, stats: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Swap the complete new splits and step folders (written under `partial`) into place, then write
    the files that describe them. Until here the previous build stays whole; only the names a build
    writes are replaced."""
    out = Path(config.out)
    previous = read_build_record(out) or {}
    (out / BUILD_RECORD).unlink(missing_ok=True)  # from here until the new record, no build is complete
    previous_steps = [step.get("name") for step in previous.get("steps", []) if isinstance(step, dict)]
    new_names = [*config.splits, *(step.name for step in config.steps)]
    remove_build_names(out, [*previous.get("splits", []), *previous_steps, *new_names, RELEASE_STATS])
    for name in new_names:
        if (partial / name).exists():
            os.replace(partial / name, out / name)
    shutil.rmtree(partial, ignore_errors=True)
    write_dataset_dict_json(out, config.splits)

    if stats is not None:
        _write_release_stats(out / RELEASE_STATS, *stats)
    with open(out / MANIFEST, "w", encoding="utf-8") as handle:
        for rejection in result.rejections:
            handle.write(json.dumps(rejection.__dict__, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(
        card.render(config, release, features, result, rejected_by_reason(result.rejections),
                    has_stats=stats is not None),
        encoding="utf-8",
    )


def _write_release_stats(folder: Path, mean: np.ndarray, std: np.ndarray) -> None:
    features = datasets.Features({"mean": datasets.List(datasets.Value("float32")),
                                  "std": datasets.List(datasets.Value("float32"))})
    folder.mkdir()
    writer = ShardWriter(folder, "stats", features)
    writer.write(batch_table({"mean": [mean], "std": [std]}, features))
    finish_split_dir(folder, writer.close(), features, "release_stats", stable_hash([mean, std]),
                     "Mean.npy and Std.npy of the release")


def write_build_record(out: Path, config: BuildConfig, fingerprint: str, result: BuildResult) -> None:
    """Written last: its presence with a fingerprint says the build in `out` is complete."""
    record = {
        "tool": "datasets_build",
        "fingerprint": fingerprint,
        "recipe": config.recipe,
        "dataset": config.dataset,
        "source": str(config.source),
        "splits": list(config.splits),
        "limit": config.limit,
        "counts": result.counts,
        "rejected": rejected_by_reason(result.rejections),
        "processors": [processor_record(p) for p in config.processors],
        "steps": [processor_record(s) for s in config.steps],
        "counters": result.counters,
        # False: some rows are provisional (an LLM request without an answer); a re-run redoes them.
        "complete": result.unfinished_rows == 0,
        "seconds": round(result.seconds, 3),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "datasets_version": datasets.__version__,
    }
    path = Path(out) / BUILD_RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)  # never half a record


def processor_record(processor) -> dict[str, Any]:
    return {"name": processor.name, "version": processor.version,
            "fingerprint": processor.fingerprint(), "config": redact(processor.config())}


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """Configuration as it may be written to disk: anything that looks like a secret is dropped."""
    return {k: ("<redacted>" if _SECRET_KEY.search(k) else v) for k, v in config.items()}


def rejected_by_reason(rejections: list[Rejection]) -> dict[str, int]:
    return dict(sorted(Counter(f"{r.reason} ({r.level})" for r in rejections).items()))


def summary(result: BuildResult, steps: tuple = ()) -> str:
    """The run summary; `steps` (the build's processors and dataset steps) describe their counters."""
    if result.skipped:
        return (f"{result.out} is up to date (same recipe, processors and source files as its last build); "
                "nothing to do. Pass --overwrite to rebuild anyway.")
    lines = [f"Built {result.out} in {result.seconds:.1f} s"]
    for split, c in result.counts.items():
        clipped = f", {c['clipped']:,} clipped at the motion's end" if c.get("clipped") else ""
        lines.append(f"  {split:>5}: {c['motions']:,} motions, {c['annotations']:,} annotations "
                     f"({c['subclips']:,} sub-clips{clipped}), {c['frames']:,} frames")
    by_reason = rejected_by_reason(result.rejections)
    if by_reason:
        motions = sum(r.level == "motion" for r in result.rejections)
        lines.append(f"  rejected: {motions:,} ids and {len(result.rejections) - motions:,} caption lines, "
                     f"listed in {Path(result.out) / MANIFEST}")
        lines += [f"    {reason}: {count:,}" for reason, count in by_reason.items()]
    else:
        lines.append("  rejected: none")
    by_name = {step.name: step for step in steps}
    for name, counters in result.counters.items():
        text = by_name[name].describe(counters) if name in by_name else \
            f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counters.items()))
        lines.append("  " + text.replace("\n", "\n  "))
    if result.unfinished_rows:
        lines.append(f"  INCOMPLETE: {result.unfinished_rows:,} rows hold provisional outputs (e.g. LLM requests that "
                     "got no answer); run the same command again to redo only those (answers received are cached)")
    return "\n".join(lines)
