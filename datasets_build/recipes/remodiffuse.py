"""ReMoDiffuse's retrieval database: CLIP text features, hybrid neighbours and caption rareness."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets_build.recipes.finehumanml3d import text_features
from datasets_build.recipes.options import NeighbourOptions, TextFeatureOptions
from datasets_build.recipes.recipe import Recipe, Steps
from processors.neighbours.hybrid import RetrievalNeighbours
from processors.neighbours.rareness import Rareness


@dataclasses.dataclass(frozen=True)
class ReMoDiffuseOptions:
    text: TextFeatureOptions = TextFeatureOptions(text_encoder="clip", token_features=True)
    neighbours: NeighbourOptions = NeighbourOptions()


def remodiffuse_steps(options: ReMoDiffuseOptions, out: Path) -> Steps:
    n = options.neighbours
    neighbours = RetrievalNeighbours(k=n.k, lam=n.lam, exclude_mirror=not n.keep_mirrors,
                                     reference_mode=n.reference_retrieval)
    return (text_features(options.text, out),), (neighbours, Rareness())


REMODIFFUSE = Recipe(
    "remodiffuse", "humanml3d",
    "HumanML3D plus ReMoDiffuse retrieval: CLIP text features, hybrid neighbours, caption rareness.",
    options=ReMoDiffuseOptions, make_steps=remodiffuse_steps,
)
