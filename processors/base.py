"""What a processor is: a small, pure function over a batch with declared columns and a version;
and what a dataset step is: a versioned step over a whole built dataset (see `DatasetStep`).

A processor subclasses `Processor` as a frozen dataclass. Its fields are its configuration and,
with its name and version, make its fingerprint: change either and the runner recomputes it (and
whatever reads its outputs), and nothing else. Reading, writing, caching and parallelism live in
`datasets_build.builder` and `datasets_build.executor`, so the same processor runs in a test, a local build or another executor.

    @dataclass(frozen=True)
    class CaptionWordCount(Processor):
        name: ClassVar[str] = "caption_word_count"
        version: ClassVar[str] = "1"
        inputs: ClassVar[tuple[str, ...]] = ("annotations",)
        outputs: ClassVar[Features] = Features({"num_words": List(Value("int32"))})

        def __call__(self, batch):
            return {"num_words": [[len(a["tokens"]) for a in anns] for anns in batch["annotations"]]}
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from datasets import Dataset, DatasetDict, Features

from datasets_build.core.deps import require
from datasets_build.core.errors import MissingDependency, StepInputError
from datasets_build.core.hashing import stable_hash

__all__ = ["Batch", "DatasetStep", "MissingDependency", "Processor", "Step", "StepInputError", "save_dataset",
           "split_rows", "stable_hash"]

Batch = dict[str, list[Any]]


@dataclasses.dataclass(frozen=True)
class Step:
    """What processors and dataset steps share: identity, configuration, counters, dependencies."""

    name: ClassVar[str]
    version: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    # Python modules this step imports, and the extra of this project that installs them.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    # Slow imports (spaCy pulls in torch) done once in the parent, before workers fork from it.
    preload: ClassVar[tuple[str, ...]] = ()
    # GPUs (a fraction shares one) that each worker reserves under an executor that schedules GPUs (Ray).
    num_gpus: ClassVar[float] = 0
    # A paragraph for the dataset card: the rule this step follows, when a column name is not enough.
    card_note: ClassVar[str] = ""
    # The papers whose method this step implements, cited by the card (keys of builder/citations.py).
    cites: ClassVar[tuple[str, ...]] = ()
    # Counters for the run summary (datatrove style); not part of the configuration.
    counters: Counter = dataclasses.field(default_factory=Counter, compare=False, repr=False, kw_only=True)

    def config(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}

    def fingerprint(self) -> str:
        return stable_hash({"name": self.name, "version": self.version, "config": self.config()})

    def check_dependencies(self) -> None:
        """Fail at once, before any work, with the exact install command."""
        require(self.requires, repr(self.name), self.extra)

    def setup(self) -> None:
        """Make this step's clients and models; called once per worker process before its first
        batch (after any fork), and never in the process that forks the workers."""

    def teardown(self) -> None:
        """Release what `setup()` made; called once when the worker is done."""
        for resource in self.__dict__.pop("_resources", {}).values():
            close = getattr(resource, "close", None)
            if callable(close):
                close()

    def describe(self, counters: Mapping[str, int]) -> str:
        """This step's lines in the run summary (its counters; a step may say more)."""
        return f"{self.name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counters.items()))

    def progress_label(self, what: str) -> str | None:
        """The label of a progress bar over long work inside this step, or None when the build runs
        quietly (the builder says which before it runs the step)."""
        return None if self.__dict__.get("_quiet", False) else f"{self.name}: {what}"

    def resource(self, name: str, make: Callable[[], Any]) -> Any:
        """A client or model of this worker: made once (by `setup()`, or on first use when the step is
        called directly, as in a test), closed by `teardown()`, and never pickled or copied."""
        resources = self.__dict__.setdefault("_resources", {})  # frozen dataclass: set without __setattr__
        if name not in resources:
            resources[name] = make()
        return resources[name]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_resources", "_quiet")}


@dataclasses.dataclass(frozen=True)
class Processor(Step):
    """A row transformation: input columns of a batch in, as many rows of output columns out."""

    outputs: ClassVar[Features]
    # Whether the runner keeps each row's outputs in a cache keyed by (fingerprint, inputs): worth
    # it for slow or paid work (models, LLM calls), not for a cheap transformation.
    cacheable: ClassVar[bool] = False

    def unfinished(self, row: dict[str, Any]) -> bool:
        """Whether this row's outputs are provisional (an LLM request that got no answer): such a row
        is written but not cached, the build is recorded as incomplete, and the next run of the
        same build computes it again."""
        return False

    def __call__(self, batch: Batch) -> Batch:
        """Map a batch of input columns to a batch of output columns with as many rows.

        Models and clients come from `setup()`, never from the constructor: the executor may fork
        workers from the process that built the processor.
        """
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class DatasetStep(Step):
    """A step over the whole built dataset (a vocabulary, retrieval neighbours, rareness).

    It runs after the splits are written, reads their `inputs` columns, and writes what it makes
    under `folder` (side datasets that `datasets.load_from_disk` opens, JSON, ...), keeping any
    cache of its own under `cache`. Its fingerprint joins the build's, like a processor's.

    A step that declares `columns` returns their values for every row of every split
    ({split: {column: [one value per row]}}); the runner appends them to the splits, for
    columns that need the whole dataset first (ids into a vocabulary built from the train split).
    """

    columns: ClassVar[Features] = Features()

    def run(self, splits: DatasetDict, folder: Path, cache: Path) -> dict[str, Batch] | None:
        raise NotImplementedError


def save_dataset(data: Dataset | dict[str, Dataset], folder: Path) -> None:
    """`save_to_disk` into `folder` (`load_from_disk(folder)` opens it) without its progress bars;
    an empty dict leaves just the folder."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, dict) and not data:
        return
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        (DatasetDict(data) if isinstance(data, dict) else data).save_to_disk(str(folder))
    finally:
        if not was_disabled:
            enable_progress_bars()


def split_rows(values: list[Any], per_row: list[int]) -> list[list[Any]]:
    """Per-annotation values (flat, in row order) back into one list per row of `per_row` items."""
    rows, start = [], 0
    for n in per_row:
        rows.append(values[start : start + n])
        start += n
    return rows
