"""LaMP-T2M runs as a generator (what `python -m models generate|evaluate --run RUN` use).

    generator = load("runs/t2m")                                   # everything comes from the run
    motions = generator.generate(["a person walks"], [120], seed=0)  # [120, D] raw features each

A motion of L frames is ceil(L / 4) tokens (at most the model's n), decoded by the run's frozen VQ-VAE
to 4 * ceil(L / 4) frames, de-normalised and cut to L frames. Sampling settings (`--set KEY=VALUE`):
timesteps, cfg_scale, cfg_form (paper|code), topk_filter_thres, temperature, gumbel_sample.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models import base
from models.base import pick_device
from models.eval.protocol import GenerationError, generation_request
from models.lamp.api import VOCABULARY, tokenize
from models.lamp.t2m import CfgForm, LaMPT2M
from models.lamp.t2m_train import FORMAT, rebuild
from models.lamp.text import load_tokenizer
from models.vq.model import VQVAE


class T2MGenerator:
    """generate(captions, lengths, seed) -> raw motions [length_i, D]."""

    def __init__(self, model: LaMPT2M, vq: VQVAE, tokenizer, device: torch.device, batch_size: int = 64) -> None:
        self.model, self.vq = model.to(device).eval(), vq.to(device).eval()
        self.stats, self.tokenizer, self.device, self.batch_size = vq.stats, tokenizer, device, batch_size
        self.unit = vq.cfg.downsampling

    @property
    def max_length(self) -> int:
        return self.model.cfg.max_tokens * self.unit

    def token_ids(self, captions: Sequence[str], token_lengths: Sequence[int], generator: torch.Generator
                  ) -> torch.Tensor:
        """(B, max(token_lengths)) generated ids, pad_id past each length."""
        ids, mask = tokenize(self.tokenizer, list(captions), self.model.cfg.max_text_length, self.device)
        lengths = torch.tensor(list(token_lengths), device=self.device)
        return self.model.generate(ids, mask, lengths, generator=generator)

    @torch.no_grad()
    def generate(self, captions: Sequence[str], lengths: Sequence[int], seed: int) -> list[np.ndarray]:
        captions, lengths = generation_request(captions, lengths, self.max_length)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        out: list[np.ndarray] = []
        for lo in range(0, len(captions), self.batch_size):
            lens = lengths[lo:lo + self.batch_size]
            tokens = [math.ceil(n / self.unit) for n in lens]
            ids = self.token_ids(captions[lo:lo + self.batch_size], tokens, generator)
            for i, (n, frames) in enumerate(zip(tokens, lens)):
                x = self.vq.decode(ids[i:i + 1, :n])[0].float().cpu().numpy()     # (4n, D) normalised
                out.append(self.stats.denormalize(x[:frames]).astype(np.float32))
        return out


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None, timesteps: int | None = None,
         cfg_scale: float | None = None, cfg_form: CfgForm | None = None, topk_filter_thres: float | None = None,
         temperature: float | None = None, gumbel_sample: bool | None = None, batch_size: int = 64) -> T2MGenerator:
    """The generator of a LaMP-T2M run; a setting left None keeps the run's (cfg_scale: 4 HumanML3D, 2 KIT)."""
    device = pick_device(device)
    state = base.load_checkpoint(run_dir, FORMAT)
    model, vq, _ = rebuild(state, base.checkpoint_path(run_dir))
    settings = {"timesteps": timesteps, "cfg_scale": cfg_scale, "cfg_form": cfg_form,
                "topk_filter_thres": topk_filter_thres, "temperature": temperature, "gumbel_sample": gumbel_sample}
    model.cfg = dataclasses.replace(model.cfg, **{k: v for k, v in settings.items() if v is not None})
    model.transformer.cfg = model.cfg
    tokenizer = load_tokenizer(Path(run_dir) / VOCABULARY)
    return T2MGenerator(model, vq, tokenizer, device, batch_size)


__all__ = ["GenerationError", "T2MGenerator", "load"]
