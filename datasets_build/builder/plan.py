"""Plan a build: the ids per split, the chunks they are cut into, the columns, the fingerprint."""

from __future__ import annotations

import dataclasses
import os

from datasets import Features

from datasets_build.builder.config import BUILD_FORMAT, BuildConfig, ProcessorError
from datasets_build.core.hashing import folder_signature, stable_hash
from datasets_build.formats.release import Rejection, Release, check_id
from datasets_build.formats.schema import base_features
from processors.base import DatasetStep, Processor

# The files a build reads, besides those at the release's top level (split files, Mean/Std, ...).
SOURCE_FOLDERS = ("new_joint_vecs", "texts", "new_joints")


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Ids of one split that become one shard file."""

    split: str
    index: int
    ids: tuple[str, ...]


def plan_splits(release: Release, splits, limit: int | None) -> tuple[dict[str, list[str]], list[Rejection]]:
    """The ids to read per split; ids listed twice are kept at their first place and rejected after."""
    seen: dict[str, str] = {}
    plan: dict[str, list[str]] = {}
    rejections: list[Rejection] = list(release.problems)  # unusable lines of index.csv
    for split in splits:
        ids = release.split_ids(split)[:limit] if limit else release.split_ids(split)
        plan[split] = []
        for motion_id in ids:
            if motion_id in seen and check_id(motion_id) is None:
                where = "earlier in the same file" if seen[motion_id] == split else f"in {seen[motion_id]}.txt"
                rejections.append(Rejection(motion_id, split, "duplicate_id",
                                            f"id is listed {where}; kept there only", f"{split}.txt"))
                continue
            seen[motion_id] = split
            plan[split].append(motion_id)
    return plan, rejections


def fingerprint(config: BuildConfig, release: Release, plan: dict[str, list[str]]) -> str:
    """Changes exactly when the output could: format, plan, source files, processors and steps."""
    return stable_hash({
        "format": BUILD_FORMAT, "dataset": release.spec.name, "plan": plan, "with_joints": release.has_joints,
        "source": folder_signature(release.root, SOURCE_FOLDERS),
        "processors": [p.fingerprint() for p in config.processors],
        "steps": [s.fingerprint() for s in config.steps],
    })


def default_num_proc(num_ids: int) -> int:
    # Starting a worker costs about a second of imports: only worth it for real releases.
    return 1 if num_ids < 2000 else max(1, min(4, os.cpu_count() or 1))


def make_chunks(split: str, ids: list[str], num_proc: int) -> list[Chunk]:
    # Several chunks per worker keep both busy and the progress bar moving; 512 motions (~64 MB of
    # HumanML3D features) per shard file at most.
    size = max(16, min(512, -(-len(ids) // (num_proc * 8))))
    return [Chunk(split, i, tuple(ids[s : s + size])) for i, s in enumerate(range(0, len(ids), size))]


def split_features(release: Release, processors: tuple[Processor, ...]) -> Features:
    """The columns of the written splits: the release's, then each processor's outputs in order."""
    features = base_features(release.spec, release.has_joints)
    for processor in processors:
        missing = [c for c in processor.inputs if c not in features]
        if missing:
            raise ProcessorError(
                f"processor {processor.name!r} reads {missing}, which no earlier step produces "
                f"(available: {', '.join(features)})"
            )
        clash = [c for c in processor.outputs if c in features]
        if clash:
            raise ProcessorError(f"processor {processor.name!r} would overwrite existing columns {clash}")
        features = Features({**features, **processor.outputs})
    return features


def with_step_columns(features: Features, steps: tuple[DatasetStep, ...]) -> Features:
    """The final columns: those of the splits plus the columns that dataset steps append."""
    for step in steps:
        clash = [c for c in step.columns if c in features]
        if clash:
            raise ProcessorError(f"step {step.name!r} would overwrite existing columns {clash}")
        features = Features({**features, **step.columns})
    return features
