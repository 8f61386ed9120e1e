"""Recipes: which release a build reads and the ordered processors and dataset steps it applies.

A recipe is data plus a function that makes its steps from the parsed options: later recipes
(mate, remodiffuse) are the same reader followed by more steps.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from processors.base import DatasetStep, Processor

Options = Callable[[argparse.ArgumentParser], None]
MakeSteps = Callable[[argparse.Namespace, Path], tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]]


def _no_steps(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    return (), ()


def _fine_steps(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    from datasets_build.llm_cli import fine_steps

    return (fine_steps(args, out),), ()


def _llm_options(parser: argparse.ArgumentParser) -> None:
    from datasets_build.llm_cli import add_llm_options

    add_llm_options(parser)


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # a key of datasets_build.release.SPECS
    help: str
    make_steps: MakeSteps = _no_steps
    options: tuple[Options, ...] = ()
    uses_llm: bool = False  # LLM recipes run one process: the requests are concurrent already


RECIPES: dict[str, Recipe] = {
    "humanml3d": Recipe(
        "humanml3d", "humanml3d",
        "Build a HumanML3D release (new_joint_vecs, texts, splits, Mean/Std, index.csv) into Arrow.",
    ),
    "kitml": Recipe(
        "kitml", "kitml",
        "Build a KIT-ML release (new_joint_vecs, texts, splits, Mean/Std) into Arrow.",
    ),
    "finehumanml3d": Recipe(
        "finehumanml3d", "humanml3d",
        "HumanML3D plus FineHumanML3D's LLM fine-grained step descriptions with pseudo-code checks.",
        make_steps=_fine_steps, options=(_llm_options,), uses_llm=True,
    ),
}
