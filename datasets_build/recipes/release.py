"""The release recipes: HumanML3D and KIT-ML as read and validated, no processors."""

from __future__ import annotations

from datasets_build.recipes.recipe import Recipe

HUMANML3D = Recipe(
    "humanml3d", "humanml3d",
    "Build a HumanML3D release (new_joint_vecs, texts, splits, Mean/Std, index.csv) into Arrow.",
)
KITML = Recipe(
    "kitml", "kitml",
    "Build a KIT-ML release (new_joint_vecs, texts, splits, Mean/Std) into Arrow.",
)
