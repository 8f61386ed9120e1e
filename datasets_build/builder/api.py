"""Build a recipe: stream a release through its processors into a saved DatasetDict.

    build(BuildConfig(...), executor=None) -> BuildResult

One pass per split: ids are cut into chunks, an executor runs the chunk task on each (in this
process, a fork pool, or elsewhere), and every chunk becomes a shard of the final dataset. This
module keeps the progress bar, merges the chunks' results and publishes. The whole build is
fingerprinted (recipe config, processor fingerprints, the source's file listing): an unchanged
re-run does nothing, a changed one recomputes only rows whose processor inputs changed.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from datasets_build.builder import publish
from datasets_build.builder.chunk import COUNT_KEYS, ChunkTask
from datasets_build.builder.config import BuildConfig, BuildResult, OutOfSpace, StrictStop
from datasets_build.builder.dataset_steps import run_steps
from datasets_build.builder.folder import check_output_folder, claim, output_lock
from datasets_build.builder.plan import (
    default_num_proc, fingerprint, make_chunks, plan_splits, split_features, with_step_columns,
)
from datasets_build.core.hashing import stable_hash
from datasets_build.executor.base import Executor
from datasets_build.executor.local import LocalExecutor
from datasets_build.formats.arrow import finish_split_dir, write_dataset_dict_json
from datasets_build.formats.built import CACHE, PARTIAL, read_build_record
from datasets_build.formats.release import Rejection, open_release
from datasets_build.motion.specs import SPECS


def build(config: BuildConfig, executor: Executor | None = None) -> BuildResult:
    """Run `config`; `executor` defaults to a LocalExecutor with `config.num_proc` workers (or the
    default for the build's size)."""
    started = time.perf_counter()
    spec = SPECS[config.dataset]
    out = Path(config.out)
    release = open_release(config.source, spec, config.splits, config.with_joints, config.follow_links)
    check_output_folder(out, release.root)
    stats = release.mean_std()  # a broken Mean/Std stops the build before any work, not at publish
    for step in config.processors + config.steps:
        step.check_dependencies()
        for module in step.preload:  # slow imports done once, before workers fork
            importlib.import_module(module)
    features = split_features(release, config.processors)
    final_features = with_step_columns(features, config.steps)
    plan, rejections = plan_splits(release, config.splits, config.limit)
    if config.strict and rejections:
        raise StrictStop(rejections[0].message())
    build_fingerprint = fingerprint(config, release, plan)
    with output_lock(out):
        previous = read_build_record(out)
        finished = previous is not None and previous.get("complete", True)
        if finished and previous.get("fingerprint") == build_fingerprint and not config.overwrite:
            return BuildResult(out, True, previous["counts"], [], time.perf_counter() - started,
                               previous.get("counters", {}))
        claim(out, config.overwrite)
        partial = out / PARTIAL
        shutil.rmtree(partial, ignore_errors=True)
        with _out_of_space_cleans_up(out, partial):
            task = ChunkTask(release, features, config.processors, partial, out / CACHE / "rows", config.strict,
                             config.batch_size)
            total = sum(len(ids) for ids in plan.values())
            executor = executor or LocalExecutor(config.num_proc or default_num_proc(total))
            files, counts, counters = _write_shards(config, task, executor, plan, rejections)
            for split in config.splits:
                finish_split_dir(partial / split, files[split], features, split,
                                 stable_hash([build_fingerprint, split]),
                                 f"{spec.title} {split} built by datasets_build ({config.recipe})")
            write_dataset_dict_json(partial, config.splits)
            run_steps(config, partial, out / CACHE, features, build_fingerprint)
            counters.update({step.name: dict(step.counters) for step in config.steps})
            result = BuildResult(out, False, counts, rejections, 0.0, counters)
            publish.publish(config, release, final_features, result, partial, stats)
            result.seconds = time.perf_counter() - started
            publish.write_build_record(out, config, build_fingerprint, result)
    return result


@contextlib.contextmanager
def _out_of_space_cleans_up(out: Path, partial: Path) -> Iterator[None]:
    """A full disk becomes one sentence, and the unfinished splits give their space back; what
    finished before (cached rows, LLM answers: committed as they came) is kept."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as error:
        full = (getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error)
                or "disk is full" in str(error))
        if not full:
            raise
        shutil.rmtree(partial, ignore_errors=True)
        raise OutOfSpace(f"the disk of {out} is full ({error}); the unfinished splits were removed and everything "
                         "finished before (cached rows, LLM answers) is kept: free some space and run the same "
                         "build again") from None


def _write_shards(config: BuildConfig, task: ChunkTask, executor: Executor, plan: dict[str, list[str]],
                  rejections: list[Rejection]) -> tuple[dict, dict, dict]:
    """Read, check, process and write every chunk of every split; rejections are appended."""
    total = sum(len(ids) for ids in plan.values())
    chunks = [chunk for split in config.splits for chunk in make_chunks(split, plan[split], executor.workers)]
    files: dict[str, list[str]] = {split: [] for split in config.splits}
    counts: dict[str, Counter] = {split: Counter() for split in config.splits}
    counters: dict[str, Counter] = {p.name: Counter() for p in config.processors}
    for split in config.splits:
        (task.partial / split).mkdir(parents=True)
    with tqdm(total=total, desc=f"{task.release.spec.name}: read, check, process, write",
              unit=" motions", disable=not config.progress) as bar:
        for chunk, result in zip(chunks, executor.map(task, chunks)):
            files[chunk.split] += result["files"]
            counts[chunk.split].update(result["counts"])
            rejections += result["rejections"]
            for name, values in result["counters"].items():
                counters[name].update(values)
            bar.set_postfix_str(chunk.split, refresh=False)
            bar.update(len(chunk.ids))
    return (files, {split: {k: c.get(k, 0) for k in COUNT_KEYS} for split, c in counts.items()},
            {name: dict(c) for name, c in counters.items()})
