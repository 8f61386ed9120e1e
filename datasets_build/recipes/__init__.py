"""Recipes: which release a build reads and the ordered processors and dataset steps it applies,
made from option dataclasses (no argparse): the command line derives its flags from them.

    from datasets_build import build
    from datasets_build.recipes import RECIPES
    from datasets_build.recipes.finehumanml3d import FineHumanML3DOptions
    from datasets_build.recipes.options import LLMOptions

    recipe = RECIPES["finehumanml3d"]
    options = FineHumanML3DOptions(llm=LLMOptions(llm_base_url="http://localhost:8000/v1", llm_model="m"))
    build(recipe.config("/data/HumanML3D", "built/fine", options, limit=10))
"""

from __future__ import annotations

from datasets_build.recipes.finehumanml3d import FINEHUMANML3D
from datasets_build.recipes.mate import MATE, MATE_KITML
from datasets_build.recipes.recipe import MissingSegmentEncoder, Recipe, RecipeError
from datasets_build.recipes.release import HUMANML3D, KITML
from datasets_build.recipes.remodiffuse import REMODIFFUSE

RECIPES: dict[str, Recipe] = {r.name: r for r in (HUMANML3D, KITML, FINEHUMANML3D, MATE, MATE_KITML, REMODIFFUSE)}

__all__ = ["RECIPES", "MissingSegmentEncoder", "Recipe", "RecipeError"]
