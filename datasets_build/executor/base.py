"""What an executor is: it runs a task over items, somewhere, and hands back results in order.

A task is set up once per worker (`setup()`: clients, models, connections), called once per
item, and torn down once per worker (`teardown()`). The build's chunk task is the only task today;
executors know nothing of builds (datatrove's split between a pipeline step and its executors).
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence


class Task(Protocol):
    def setup(self) -> None: ...

    def __call__(self, item: Any) -> Any: ...

    def teardown(self) -> None: ...


class Executor(Protocol):
    workers: int  # how many items may run at once

    def map(self, task: Task, items: Sequence[Any]) -> Iterator[Any]:
        """task(item) for each item, in the order of `items`, as they finish."""
        ...
