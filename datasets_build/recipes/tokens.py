"""The steps of a recipe that run a trained model over every motion: `motion_tokens` (code ids of a motion
VQ-VAE, `--motion-tokenizer RUN_DIR`) and `motion_captions` (a LaMP-M2T captioner, `--captioner RUN_DIR`)."""

from __future__ import annotations

from pathlib import Path

from datasets_build.recipes.options import MotionCaptionOptions, MotionTokenOptions
from datasets_build.recipes.recipe import RecipeError
from processors.base import Processor
from processors.motion_captions import MotionCaptions
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


def motion_captions(options: MotionCaptionOptions) -> tuple[Processor, ...]:
    """() without a captioner; else the MotionCaptions processor of that LaMP-M2T run folder."""
    if not options.captioner:
        return ()
    run_dir = Path(options.captioner)
    if not (run_dir / "checkpoint.pt").is_file():
        raise RecipeError(f"the captioner {run_dir}: no checkpoint.pt there (train one with "
                          "`python -m models train lamp-m2t`)")
    return (MotionCaptions(captioner=str(run_dir), lm=options.captioner_lm, device=options.captioner_device),)
