"""The `motion_tokens` step of a recipe: code ids of a trained motion VQ-VAE (`--motion-tokenizer RUN_DIR`)."""

from __future__ import annotations

from pathlib import Path

from datasets_build.recipes.options import MotionTokenOptions
from datasets_build.recipes.recipe import RecipeError
from processors.base import Processor
from processors.motion_tokens import MotionTokens


def motion_tokens(options: MotionTokenOptions, dataset: str) -> tuple[Processor, ...]:
    """() without a tokenizer; else the MotionTokens processor of that run folder."""
    if not options.motion_tokenizer:
        return ()
    run_dir = Path(options.motion_tokenizer)
    if not (run_dir / "checkpoint.pt").is_file() and not run_dir.is_file():
        raise RecipeError(f"the motion tokenizer {run_dir}: no checkpoint.pt there (train one with "
                          "`python -m models train vqvae`)")
    return (MotionTokens(tokenizer=str(run_dir), dataset=dataset, device=options.tokenizer_device),)
