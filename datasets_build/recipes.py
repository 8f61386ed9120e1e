"""Recipes: which release a build reads and the ordered processors it applies.

A recipe is data, not a class hierarchy: later recipes (finehumanml3d, mate, remodiffuse) are
the same reader followed by more processors.
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.base import Processor


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # a key of datasets_build.release.SPECS
    help: str
    processors: tuple[Processor, ...] = ()


RECIPES: dict[str, Recipe] = {
    "humanml3d": Recipe(
        "humanml3d", "humanml3d",
        "Build a HumanML3D release (new_joint_vecs, texts, splits, Mean/Std, index.csv) into Arrow.",
    ),
    "kitml": Recipe(
        "kitml", "kitml",
        "Build a KIT-ML release (new_joint_vecs, texts, splits, Mean/Std) into Arrow.",
    ),
}
