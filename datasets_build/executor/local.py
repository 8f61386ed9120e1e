"""The local executor: the task in this process, or in a pool of forked worker processes.

Fork starts a worker at once with everything imported (as `datasets.map(num_proc=...)` does on
Linux; spawn costs a second of imports per worker). It is safe because nothing in the parent has
started threads, CUDA or clients: tasks make those in `setup()`, which runs inside each worker.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Iterator, Sequence

from datasets_build.executor.base import Task

START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class LocalExecutor:
    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def map(self, task: Task, items: Sequence[Any]) -> Iterator[Any]:
        if self.workers == 1 or len(items) <= 1:
            yield from _in_process(task, items)
            return
        context = multiprocessing.get_context(START_METHOD)
        pool = ProcessPoolExecutor(min(self.workers, len(items)), context, _start_worker, (task,))
        try:
            yield from pool.map(_run_item, items)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _in_process(task: Task, items: Sequence[Any]) -> Iterator[Any]:
    task.setup()
    try:
        for item in items:
            yield task(item)
    finally:
        task.teardown()


# One task per worker process, set by the pool's initializer: sent once, not with every item.
_TASK: Task | None = None


def _start_worker(task: Task) -> None:
    global _TASK
    _TASK = task
    task.setup()
    # Runs when the worker process exits (multiprocessing calls its finalizers then).
    multiprocessing.util.Finalize(None, task.teardown, exitpriority=10)


def _run_item(item: Any) -> Any:
    return _TASK(item)
