"""FineMotionDiffuse checkpoints and its generator.

    generator = load("runs/fmd")                       # no flags: config, stats, text encoder from the run
    generator.generate(["a person walks"], [120], seed=0, steps=[["The person stands.", "They walk."]])
    generator.use_build("built/finehumanml3d", "test")  # steps of the build's captions (what `evaluate` does)

A caption with no steps (none given, none in the build, or not `checked` there) is generated from
the coarse caption alone; `fallbacks` counts them. Sampling is MotionDiffuse's (models.diffusion).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from datasets_build.motion.normalizer import Normalizer
from datasets_build.text.encoders import TextEncoder
from datasets_build.text.feature_cache import TextFeatureCache
from models.base import CheckpointFormat, pick_device
from models.finemotiondiffuse.data import select_steps, step_features, steps_by_caption
from models.finemotiondiffuse.model import FineMotionDiffuse, FineMotionDiffuseConfig
from models.eval.protocol import GenerationError
from models.motiondiffuse.api import DiffusionGenerator, load_parts, text_batch

FORMAT = CheckpointFormat("finemotiondiffuse", 1)


class FineGenerator(DiffusionGenerator):
    """MotionDiffuse's generator whose text memory adds each caption's fine steps."""

    def __init__(self, model: FineMotionDiffuse, stats: Normalizer, text_encoder: TextEncoder, device: torch.device,
                 respacing: str = "", method: str = "ddpm", drop_first_last: bool | None = None) -> None:
        super().__init__(model, stats, text_encoder, device, encode=self._encode, respacing=respacing, method=method)
        self.drop_first_last = model.cfg.drop_first_last if drop_first_last is None else bool(drop_first_last)
        self.known: dict[str, list[str]] = {}      # caption -> steps (use_build, or the steps of a call)
        self.step_cache = TextFeatureCache(text_encoder)
        self.fallbacks = 0                          # captions generated coarse-only

    def use_build(self, data: str | os.PathLike, split: str) -> int:
        """Take the checked steps of the build's split, by caption; returns how many captions have them."""
        self.known.update(steps_by_caption(data, split))
        return len(self.known)

    def _encode(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        cfg = self.model.cfg
        per_caption = [select_steps(self.known.get(c), cfg.max_steps, self.drop_first_last) for c in captions]
        self.fallbacks += sum(s is None for s in per_caption)
        tokens, mask = text_batch(self.text_encoder, captions, self.device)
        return self.model.encode_text(tokens, mask,
                                      **step_features(self.step_cache, per_caption, cfg.step_feature, self.device))

    def generate(self, captions: Sequence[str], lengths: Sequence[int], seed: int,
                 steps: Sequence[Sequence[str] | None] | None = None) -> list[np.ndarray]:
        """`steps`: per caption, its fine steps in order (None: those known from `use_build`, else coarse)."""
        if steps is not None:
            if len(steps) != len(captions):
                raise GenerationError(f"{len(captions)} captions and {len(steps)} step lists")
            self.known.update({c: list(s) for c, s in zip(captions, steps) if s})
        return super().generate(captions, lengths, seed)


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None,
         text_encoder: TextEncoder | None = None, respacing: str = "", method: str = "ddpm",
         drop_first_last: bool | None = None) -> FineGenerator:
    """The generator of RUN_DIR (its text encoder loaded by name unless given; it must be the trained one)."""
    device = pick_device(device)
    model, stats, text_encoder = load_parts(run_dir, device, text_encoder, FORMAT, FineMotionDiffuse,
                                            FineMotionDiffuseConfig)
    return FineGenerator(model, stats, text_encoder, device, respacing=respacing, method=method,
                         drop_first_last=drop_first_last)
