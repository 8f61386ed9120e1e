"""The release recipes: HumanML3D and KIT-ML as read and validated; with `--motion-tokenizer RUN_DIR`
also the motion token ids of a trained VQ-VAE, with `--captioner RUN_DIR` a LaMP-M2T caption per motion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets_build.recipes.options import MotionCaptionOptions, MotionTokenOptions
from datasets_build.recipes.recipe import Recipe, Steps
from datasets_build.recipes.tokens import motion_captions, motion_tokens


@dataclasses.dataclass(frozen=True)
class ReleaseOptions:
    tokens: MotionTokenOptions = MotionTokenOptions()
    captions: MotionCaptionOptions = MotionCaptionOptions()


def release_steps(dataset: str):
    def make(options: ReleaseOptions, out: Path) -> Steps:
        return motion_tokens(options.tokens, dataset) + motion_captions(options.captions), ()

    return make


HUMANML3D = Recipe(
    "humanml3d", "humanml3d",
    "Build a HumanML3D release (new_joint_vecs, texts, splits, Mean/Std, index.csv) into Arrow.",
    options=ReleaseOptions, make_steps=release_steps("humanml3d"),
)
KITML = Recipe(
    "kitml", "kitml",
    "Build a KIT-ML release (new_joint_vecs, texts, splits, Mean/Std) into Arrow.",
    options=ReleaseOptions, make_steps=release_steps("kitml"),
)
