"""What a recipe is: which release it reads, its options (a dataclass of option groups), the
ordered processors and dataset steps it makes from them, and how its work is best run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from datasets_build.builder.config import BuildConfig
from datasets_build.core.errors import UserError
from processors.base import DatasetStep, Processor

Steps = tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]


class RecipeError(UserError, ValueError):
    """Options that cannot make a recipe's steps; the message says which value is missing or wrong."""


class MissingSegmentEncoder(RecipeError):
    """The mate recipe was asked to segment without a trained retrieval model."""


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A recipe without options of its own (the release as read and validated)."""


def no_steps(options: Any, out: Path) -> Steps:
    return (), ()


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # a key of datasets_build.motion.specs.SPECS
    help: str
    options: type = NoOptions  # a frozen dataclass whose fields are option groups (dataclasses)
    make_steps: Callable[[Any, Path], Steps] = no_steps
    # Execution hints. LLM recipes run in one process with large batches: their requests are
    # concurrent already, and a batch of 256 rows keeps many requests in flight.
    batch_size: int = 64
    num_proc: int | None = None  # None: by the size of the build
    uses_llm: bool = False

    def steps(self, options: Any = None, out: str | Path = ".") -> Steps:
        """The processors and dataset steps for `options` (default: the recipe's defaults)."""
        return self.make_steps(options if options is not None else self.options(), Path(out))

    def config(self, source: str | Path, out: str | Path, options: Any = None, **build: Any) -> BuildConfig:
        """A BuildConfig for this recipe; `build` sets BuildConfig fields (limit, strict, num_proc, ...)."""
        processors, steps = self.steps(options, out)
        build = {"batch_size": self.batch_size, **build}
        if build.get("num_proc") is None:
            build["num_proc"] = self.num_proc
        return BuildConfig(recipe=self.name, dataset=self.dataset, source=Path(source), out=Path(out),
                           processors=processors, steps=steps, **build)
