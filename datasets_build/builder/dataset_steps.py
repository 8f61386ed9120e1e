"""Run the dataset steps over the published splits, appending the columns they declare."""

from __future__ import annotations

from pathlib import Path

import datasets
from datasets import Features
from tqdm.auto import tqdm

from datasets_build.builder.config import BuildConfig, ProcessorError
from datasets_build.core.hashing import stable_hash
from datasets_build.formats.arrow import append_columns


def run_steps(config: BuildConfig, out: Path, cache: Path, features: Features, fingerprint: str) -> None:
    """Run the steps over the DatasetDict in `out` (the build's partial folder: the published build
    is untouched until every step is done), their caches under `cache`."""
    if not config.steps:
        return
    splits = datasets.load_from_disk(str(out))
    for step in config.steps:
        missing = [c for c in step.inputs if c not in features]
        if missing:
            raise ProcessorError(f"step {step.name!r} reads columns {missing}, which the splits do not have")
        step.counters.clear()
        step.__dict__["_quiet"] = not config.progress  # read by Step.progress_label (not configuration)
        step.setup()
        try:
            added = step.run(splits, out / step.name, cache / step.name)
        finally:
            step.teardown()
        if step.columns:
            features = Features({**features, **step.columns})
            for split in config.splits:  # all checked before any file is rewritten
                values = (added or {}).get(split)
                if values is None or set(values) != set(step.columns):
                    raise ProcessorError(f"step {step.name!r} declares columns {sorted(step.columns)} but returned "
                                         f"{sorted(values or {})} for split {split!r}")
            for split in tqdm(config.splits, desc=f"{step.name}: append {', '.join(step.columns)}", unit=" splits",
                              disable=not config.progress):
                append_columns(out / split, added[split], features, stable_hash([fingerprint, split, step.name]))
            splits = datasets.load_from_disk(str(out))  # later steps read the new columns
