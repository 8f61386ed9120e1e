"""What a build is asked to do (`BuildConfig`) and what it did (`BuildResult`), and its errors.

Kept apart from the modules that run a build, so that the card, the publisher and the executors
can all name these types without importing each other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets_build.core.errors import UserError
from datasets_build.formats.release import Rejection
from datasets_build.motion.specs import SPLITS
from processors.base import DatasetStep, Processor

BUILD_FORMAT = "2"  # bump when the reader or the layout of a built dataset changes (2: annotations.clipped)


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
    follow_links: bool = False  # read links that lead outside the release folder
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

    @property
    def unfinished_rows(self) -> int:
        """Rows whose outputs are provisional (see `Processor.unfinished`): the next run redoes them."""
        return sum(counters.get("unfinished_rows", 0) for counters in self.counters.values())


class ProcessorError(UserError, RuntimeError):
    """A processor or dataset step broke its contract (wrong columns or row count)."""


class StrictStop(UserError):
    """A strict build met a problem; the message names the file, line and what is wrong."""


class OutputFolderError(UserError, ValueError):
    """The output folder cannot take this build (it holds something else)."""


class OutOfSpace(UserError, OSError):
    """The disk of the output folder (or of its caches) filled up during the build."""
