"""Run a recipe: stream a release through its processors into a saved DatasetDict.

One pass per split: ids are cut into chunks; each chunk (in this process or a worker) reads and
validates its motions, applies the processors batch by batch (with their row cache), and writes
its rows straight to an Arrow shard of the final dataset. Memory is bounded by one batch per worker.
The whole build is fingerprinted (recipe config, processor fingerprints, the source's file listing):
an unchanged re-run does nothing, a changed one recomputes only rows whose processor inputs changed.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import datasets
from datasets import Features
from tqdm.auto import tqdm

from datasets_build import outputs
from datasets_build.arrow_io import ShardWriter, append_columns, batch_table, finish_split_dir
from datasets_build.cache import RowCache
from datasets_build.release import (
    SPECS, SPLITS, MotionRecord, Release, ReleaseError, Rejection, check_id, open_release, read_motion,
)
from datasets_build.schema import base_features
from processors.base import Batch, DatasetStep, Processor, stable_hash

BUILD_FORMAT = "1"  # bump when the reader or the layout of a built dataset changes


# Fork starts a worker at once with everything imported (as `datasets.map(num_proc=...)` does on
# Linux; spawn costs a second of imports per worker). It is safe because the parent starts no
# threads, CUDA or clients: processors create models and clients lazily, inside the workers.
START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    recipe: str
    dataset: str
    source: Path
    out: Path
    processors: tuple[Processor, ...] = ()
    steps: tuple[DatasetStep, ...] = ()  # run over the written splits, in order
    splits: tuple[str, ...] = SPLITS
    limit: int | None = None
    num_proc: int | None = None  # None: 1 for small builds, else up to 4 by CPU count
    strict: bool = False
    overwrite: bool = False
    with_joints: bool = True
    batch_size: int = 64
    progress: bool = True
    command: str = ""  # how the user ran it, for the dataset card
    source_note: str = ""  # e.g. "bundled sample release", for the dataset card


@dataclasses.dataclass
class BuildResult:
    out: Path
    skipped: bool
    counts: dict[str, dict[str, int]]  # split -> {"motions", "annotations", "subclips", "frames"}
    rejections: list[Rejection]
    seconds: float
    counters: dict[str, dict[str, int]]  # processor name -> its counters


class ProcessorError(RuntimeError):
    """A processor broke its contract (wrong columns or row count)."""


@dataclasses.dataclass(frozen=True)
class _Chunk:
    split: str
    index: int
    ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Context:
    """What a worker needs to turn a chunk of ids into a shard (picklable)."""

    release: Release
    features: Features
    processors: tuple[Processor, ...]
    partial: Path
    cache_dir: Path
    strict: bool
    batch_size: int


class StrictStop(Exception):
    """--strict met a problem; the message names the file, line and what is wrong."""


def build(config: BuildConfig) -> BuildResult:
    started = time.perf_counter()
    spec = SPECS[config.dataset]
    release = open_release(config.source, spec, config.splits, config.with_joints)
    for step in config.processors + config.steps:
        step.check_dependencies()
        for module in step.preload:
            importlib.import_module(module)
    features = _features(release, config.processors)
    final_features = _with_step_columns(features, config.steps)
    plan, rejections = plan_splits(release, config.splits, config.limit)
    if config.strict and rejections:
        raise StrictStop(rejections[0].message())
    fingerprint = stable_hash({
        "format": BUILD_FORMAT, "dataset": spec.name, "plan": plan, "with_joints": release.has_joints,
        "source": outputs.source_signature(release.root),
        "processors": [p.fingerprint() for p in config.processors],
        "steps": [s.fingerprint() for s in config.steps],
    })
    out = Path(config.out)
    previous = outputs.read_build_record(out)
    if previous and previous.get("fingerprint") == fingerprint and not config.overwrite:
        return BuildResult(out, True, previous["counts"], [], time.perf_counter() - started,
                           previous.get("counters", {}))
    ours = previous is not None or (out / ".partial").exists() or (out / ".cache").exists()
    if not ours and out.exists() and any(out.iterdir()) and not config.overwrite:
        raise ReleaseError(f"--out {out} is not empty and holds no earlier build; pass --overwrite to write there anyway.")

    partial = out / ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    context = _Context(release, features, config.processors, partial, out / ".cache" / "rows",
                       config.strict, config.batch_size)
    files, counts, counters = _write_shards(config, context, plan, rejections)
    for split in config.splits:
        finish_split_dir(partial / split, files[split], features, split, stable_hash([fingerprint, split]),
                         f"{spec.title} {split} built by datasets_build ({config.recipe})")
    result = BuildResult(out, False, counts, rejections, 0.0, counters)
    outputs.publish(config, release, final_features, fingerprint, result, partial)
    _run_steps(config, out, features, fingerprint)
    result.counters.update({step.name: dict(step.counters) for step in config.steps})
    result.seconds = time.perf_counter() - started
    outputs.write_build_record(out, config, fingerprint, result)
    return result


def _run_steps(config: BuildConfig, out: Path, features: Features, fingerprint: str) -> None:
    if not config.steps:
        return
    splits = datasets.load_from_disk(str(out))
    for step in config.steps:
        missing = [c for c in step.inputs if c not in features]
        if missing:
            raise ProcessorError(f"step {step.name!r} reads columns {missing}, which the splits do not have")
        step.counters.clear()
        added = step.run(splits, out / step.name, out / ".cache" / step.name)
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


def _with_step_columns(features: Features, steps: tuple[DatasetStep, ...]) -> Features:
    for step in steps:
        clash = [c for c in step.columns if c in features]
        if clash:
            raise ProcessorError(f"step {step.name!r} would overwrite existing columns {clash}")
        features = Features({**features, **step.columns})
    return features


def _write_shards(config: BuildConfig, context: _Context, plan: dict[str, list[str]],
                  rejections: list[Rejection]) -> tuple[dict, dict, dict]:
    """Read, check, process and write every chunk of every split; rejections are appended."""
    total = sum(len(ids) for ids in plan.values())
    num_proc = config.num_proc or _default_num_proc(total)
    chunks = [chunk for split in config.splits for chunk in _chunks(split, plan[split], num_proc)]
    files: dict[str, list[str]] = {split: [] for split in config.splits}
    counts: dict[str, Counter] = {split: Counter() for split in config.splits}
    counters: dict[str, Counter] = {p.name: Counter() for p in config.processors}
    for split in config.splits:
        (context.partial / split).mkdir(parents=True)
    pool = None
    if num_proc > 1:
        pool = ProcessPoolExecutor(num_proc, multiprocessing.get_context(START_METHOD), _set_context, (context,))
    else:
        _set_context(context)
    try:
        results = pool.map(_run_chunk, chunks) if pool else map(_run_chunk, chunks)
        with tqdm(total=total, desc=f"{context.release.spec.name}: read, check, process, write",
                  unit=" motions", disable=not config.progress) as bar:
            for chunk, result in zip(chunks, results):
                files[chunk.split] += result["files"]
                counts[chunk.split].update(result["counts"])
                rejections += result["rejections"]
                for name, values in result["counters"].items():
                    counters[name].update(values)
                bar.set_postfix_str(chunk.split, refresh=False)
                bar.update(len(chunk.ids))
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    keys = ("motions", "annotations", "subclips", "frames")
    return (files, {split: {k: c.get(k, 0) for k in keys} for split, c in counts.items()},
            {name: dict(c) for name, c in counters.items()})


def _features(release: Release, processors: tuple[Processor, ...]) -> Features:
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


def plan_splits(release: Release, splits, limit: int | None) -> tuple[dict[str, list[str]], list[Rejection]]:
    """The ids to read per split; ids listed twice are kept at their first place and rejected after."""
    seen: dict[str, str] = {}
    plan: dict[str, list[str]] = {}
    rejections: list[Rejection] = []
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


def _default_num_proc(num_ids: int) -> int:
    # Starting a worker costs about a second of imports: only worth it for real releases.
    return 1 if num_ids < 2000 else max(1, min(4, os.cpu_count() or 1))


def _chunks(split: str, ids: list[str], num_proc: int) -> list[_Chunk]:
    # Several chunks per worker keep both busy and the progress bar moving; 512 motions (~64 MB of
    # HumanML3D features) per shard file at most.
    size = max(16, min(512, -(-len(ids) // (num_proc * 8))))
    return [_Chunk(split, i, tuple(ids[s : s + size])) for i, s in enumerate(range(0, len(ids), size))]


_CONTEXT: _Context | None = None


def _set_context(context: _Context) -> None:
    global _CONTEXT  # one copy per worker process, not one per chunk
    _CONTEXT = context


def _run_chunk(chunk: _Chunk) -> dict:
    context = _CONTEXT
    for processor in context.processors:
        processor.counters.clear()  # report this chunk's counts only
    writer = ShardWriter(context.partial / chunk.split, f"c{chunk.index:05d}", context.features)
    caches = {p.name: RowCache(context.cache_dir / f"{p.name}.sqlite") for p in context.processors if p.cacheable}
    rejections: list[Rejection] = []
    counts: Counter = Counter()
    batch: list[MotionRecord] = []

    def flush() -> None:
        columns = records_to_columns(batch, context.release)
        for processor in context.processors:
            columns.update(apply_processor(processor, columns, caches.get(processor.name)))
        writer.write(batch_table(columns, context.features))
        counts["motions"] += len(batch)
        counts["annotations"] += sum(len(r.annotations) for r in batch)
        counts["subclips"] += sum(a.is_subclip for r in batch for a in r.annotations)
        counts["frames"] += sum(len(r.motion) for r in batch)
        batch.clear()

    for motion_id in chunk.ids:
        record, problems = read_motion(context.release, motion_id, chunk.split)
        if problems and context.strict:
            raise StrictStop(problems[0].message())
        rejections += problems
        if record is not None:
            batch.append(record)
        if len(batch) >= context.batch_size:
            flush()
    if batch:
        flush()
    for cache in caches.values():
        cache.close()
    return {"files": writer.close(), "counts": counts, "rejections": rejections,
            "counters": {p.name: dict(p.counters) for p in context.processors}}


def records_to_columns(records: list[MotionRecord], release: Release) -> Batch:
    columns: Batch = {
        "id": [r.id for r in records],
        "base_id": [r.base_id for r in records],
        "mirrored": [r.mirrored for r in records],
        "motion": [r.motion for r in records],
        "length": [len(r.motion) for r in records],
        "fps": [release.spec.fps] * len(records),
        "annotations": [[a._asdict() for a in r.annotations] for r in records],
    }
    if release.has_joints:
        columns["joints"] = [r.joints for r in records]
    if release.spec.has_index_csv:
        for key in ("source_path", "source_start_frame", "source_end_frame"):
            columns[key] = [r.source.get(key) for r in records]
    return columns


def apply_processor(processor: Processor, columns: Batch, cache: RowCache | None) -> Batch:
    """Run one processor on a batch, taking rows whose inputs it has seen from its cache."""
    inputs = {name: columns[name] for name in processor.inputs}
    rows = len(columns["id"])
    if cache is None:
        processor.counters["computed"] += rows
        return _checked_call(processor, inputs, rows)
    identity = processor.fingerprint()
    keys = [stable_hash([identity] + [inputs[name][i] for name in processor.inputs]) for i in range(rows)]
    found = cache.get_many(keys)
    todo = [i for i, key in enumerate(keys) if key not in found]
    processor.counters["cached"] += rows - len(todo)
    processor.counters["computed"] += len(todo)
    if todo:
        fresh = _checked_call(processor, {n: [v[i] for i in todo] for n, v in inputs.items()}, len(todo))
        new_rows = {keys[i]: {name: fresh[name][j] for name in fresh} for j, i in enumerate(todo)}
        cache.put_many(new_rows.items())
        found.update(new_rows)
    return {name: [found[key][name] for key in keys] for name in processor.outputs}


def _checked_call(processor: Processor, inputs: Batch, rows: int) -> Batch:
    result = processor(inputs)
    if set(result) != set(processor.outputs):
        raise ProcessorError(
            f"processor {processor.name!r} returned columns {sorted(result)}; it declares {sorted(processor.outputs)}"
        )
    wrong = {name: len(values) for name, values in result.items() if len(values) != rows}
    if wrong:
        raise ProcessorError(f"processor {processor.name!r} returned {wrong} rows for a batch of {rows}")
    return result
