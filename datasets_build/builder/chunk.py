"""THE task of every executor: turn one chunk of ids into one Arrow shard.

`ChunkTask` holds what a worker needs (picklable: the release, the columns, the processors, where
to write); an executor calls `setup()` once per worker, the task once per chunk, and `teardown()`
once at the end. Each call reads and validates its motions, applies the processors batch by
batch (with their row caches), and writes the rows straight to a shard of the final dataset:
memory is bounded by one batch per worker.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from datasets import Features

from datasets_build.builder.config import ProcessorError, StrictStop
from datasets_build.builder.plan import Chunk
from datasets_build.core.hashing import stable_hash
from datasets_build.core.kv_store import RowCache
from datasets_build.formats.arrow import ShardWriter, batch_table
from datasets_build.formats.release import MotionRecord, Rejection, Release, read_motion
from processors.base import Batch, Processor

COUNT_KEYS = ("motions", "annotations", "subclips", "clipped", "frames")


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    release: Release
    features: Features
    processors: tuple[Processor, ...]
    partial: Path  # shards go to partial/<split>/
    cache_dir: Path  # row caches: cache_dir/<processor>.sqlite
    strict: bool
    batch_size: int

    def setup(self) -> None:
        for processor in self.processors:
            processor.setup()

    def teardown(self) -> None:
        for processor in reversed(self.processors):
            processor.teardown()

    def __call__(self, chunk: Chunk) -> dict[str, Any]:
        """{"files": shard files, "counts", "rejections", "counters": this chunk's processor counters}."""
        for processor in self.processors:
            processor.counters.clear()  # report this chunk's counts only
        writer = ShardWriter(self.partial / chunk.split, f"c{chunk.index:05d}", self.features)
        caches = {p.name: RowCache(self.cache_dir / f"{p.name}.sqlite") for p in self.processors if p.cacheable}
        rejections: list[Rejection] = []
        counts: Counter = Counter()
        try:
            for batch in read_batches(self.release, chunk.split, chunk.ids, self.batch_size, rejections, self.strict):
                columns = records_to_columns(batch, self.release)
                for processor in self.processors:
                    columns.update(apply_processor(processor, columns, caches.get(processor.name)))
                writer.write(batch_table(columns, self.features))
                counts["motions"] += len(batch)
                counts["annotations"] += sum(len(r.annotations) for r in batch)
                counts["subclips"] += sum(a.is_subclip for r in batch for a in r.annotations)
                counts["clipped"] += sum(a.clipped for r in batch for a in r.annotations)
                counts["frames"] += sum(len(r.motion) for r in batch)
        finally:
            for cache in caches.values():
                cache.close()
        return {"files": writer.close(), "counts": counts, "rejections": rejections,
                "counters": {p.name: dict(p.counters) for p in self.processors}}


def read_batches(release: Release, split: str, ids: Iterable[str], batch_size: int,
                 rejections: list[Rejection] | None = None, strict: bool = False) -> Iterator[list[MotionRecord]]:
    """The valid records of `ids` in batches; problems go to `rejections` (or stop a strict build)."""
    batch: list[MotionRecord] = []
    for motion_id in ids:
        record, problems = read_motion(release, motion_id, split)
        if problems and strict:
            raise StrictStop(problems[0].message())
        if rejections is not None:
            rejections += problems
        if record is not None:
            batch.append(record)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


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
        result = _checked_call(processor, inputs, rows)
        unfinished = sum(processor.unfinished({name: result[name][i] for name in result}) for i in range(rows))
        if unfinished:
            processor.counters["unfinished_rows"] += unfinished
        return result
    identity = processor.fingerprint()
    keys = [stable_hash([identity] + [inputs[name][i] for name in processor.inputs]) for i in range(rows)]
    found = cache.get_many(keys)
    todo = [i for i, key in enumerate(keys) if key not in found]
    processor.counters["cached"] += rows - len(todo)
    processor.counters["computed"] += len(todo)
    if todo:
        fresh = _checked_call(processor, {n: [v[i] for i in todo] for n, v in inputs.items()}, len(todo))
        new_rows = {keys[i]: {name: fresh[name][j] for name in fresh} for j, i in enumerate(todo)}
        cache.put_many((key, row) for key, row in new_rows.items() if not processor.unfinished(row))
        found.update(new_rows)
    rows_out = [found[key] for key in keys]
    unfinished = sum(processor.unfinished(row) for row in rows_out)
    if unfinished:
        processor.counters["unfinished_rows"] += unfinished
    return {name: [row[name] for row in rows_out] for name in processor.outputs}


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
