"""ReMoDiffuse checkpoints and the generator other code uses.

    generator = load("runs/rmd")                      # config, stats, text encoder, database from the run
    motions = generator.generate(["a person walks"], [120], seed=0)   # [120, D] raw features each

RUN_DIR/checkpoint.pt has `models.base`'s layout (format "models.remodiffuse/1") plus `stats` (the
normalisation the model lives in), `text_encoder` (name, identity, checkpoint, widths),
`data_options` and `retrieval` (the build or `.npz` the database comes from). RUN_DIR/mixture.json,
when `tune-mixture` wrote it, holds the paper's coefficients; `mixture="code"` ignores it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from datasets_build.motion.normalizer import Normalizer
from datasets_build.text.encoders import TextEncoder, load_text_encoder
from datasets_build.text.feature_cache import TextFeatureCache
from models import base
from models.base import CheckpointFormat, check_text_encoder, config_from_dict, pick_device
from models.eval.protocol import GenerationError, generation_request
from models.remodiffuse.database import RetrievalDatabase, load_database
from models.remodiffuse.mixture import Mixture, load_mixture, sample
from models.remodiffuse.model import ReMoDiffuse, ReMoDiffuseConfig

FORMAT = CheckpointFormat("remodiffuse", 1)


def save_checkpoint(run_dir: str | os.PathLike, *, model: ReMoDiffuse, optimizer: torch.optim.Optimizer | None,
                    stats: Normalizer, text_encoder: dict[str, Any], epoch: int, step: int, train_config: Any,
                    data_options: Any, retrieval: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    return base.save_checkpoint(run_dir, FORMAT, model=model, model_config=model.cfg, train_config=train_config,
                                optimizer=optimizer, epoch=epoch, step=step,
                                configs={"text_encoder": text_encoder, "data_options": data_options,
                                         "retrieval": retrieval},
                                extra={"stats": stats.state_dict(), **(extra or {})})


class ReMoDiffuseGenerator:
    """generate(captions, lengths, seed) -> raw motions [length_i, D]: online hybrid retrieval of k
    training samples per caption, then DDIM over the respaced chain with the condition mixture."""

    def __init__(self, model: ReMoDiffuse, stats: Normalizer, text_encoder: TextEncoder, database: RetrievalDatabase,
                 mixture: Mixture, device: torch.device, batch_size: int = 32, respacing: str | None = None) -> None:
        self.model, self.stats, self.device = model.to(device).eval(), stats, device
        self.cache, self.database, self.mixture = TextFeatureCache(text_encoder), database, mixture
        self.batch_size = batch_size
        self.diffusion = model.cfg.diffusion(model.cfg.respacing if respacing is None else respacing)

    @torch.no_grad()
    def condition(self, captions: Sequence[str], lengths: Sequence[int]) -> tuple[dict, dict]:
        """The text memory and the encoded retrieval of a batch of captions at these lengths."""
        cfg = self.model.cfg
        tokens, mask, pooled = self.cache.batch(list(captions), self.device)
        entries = self.database.search(pooled.cpu().numpy(), lengths, cfg.num_retrieval, cfg.kinematic_coef)
        motions, m_lengths, r_tokens = self.database.fetch(entries, self.stats, self.device)
        return self.model.encode_text(tokens, mask), self.model.encode_retrieval(motions, m_lengths, r_tokens)

    @torch.no_grad()
    def generate(self, captions: Sequence[str], lengths: Sequence[int], seed: int) -> list[np.ndarray]:
        captions, lengths = generation_request(captions, lengths, self.model.cfg.max_length)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        out: list[np.ndarray] = []
        for k, lo in enumerate(range(0, len(captions), self.batch_size)):
            caps, lens = captions[lo:lo + self.batch_size], lengths[lo:lo + self.batch_size]
            T = max(lens)
            mask = torch.arange(T, device=self.device)[None] < torch.tensor(lens, device=self.device)[:, None]
            text, retrieval = self.condition(caps, lens)
            noise = torch.randn(len(caps), T, self.model.cfg.motion_dim, generator=generator).to(self.device)
            x = sample(self.model, self.diffusion, mask, text, retrieval, self.mixture, noise, generator,
                       seed=int(seed) * 1000 + k)
            x = x.float().cpu().numpy()
            out.extend(self.stats.denormalize(x[i, :n]).astype(np.float32) for i, n in enumerate(lens))
        return out


def load_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    return base.load_checkpoint(run_dir, FORMAT, "cpu")


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None,
         text_encoder: TextEncoder | None = None, database: str | os.PathLike | None = None,
         data: str | os.PathLike | None = None, mixture: str = "auto") -> ReMoDiffuseGenerator:
    """The generator of RUN_DIR. The database comes from the run's build (or `data` / `database`);
    `mixture`: auto (RUN/mixture.json when tune-mixture saved one, else the code's), code or paper."""
    device = pick_device(device)
    state = load_state(run_dir)
    cfg = config_from_dict(ReMoDiffuseConfig, state["model_config"], base.checkpoint_path(run_dir))
    model = ReMoDiffuse(cfg)
    model.load_state_dict(state["model"])
    record = state["text_encoder"]
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    check_text_encoder(text_encoder, record)
    source = state.get("retrieval", {})
    if database is None and data is None:
        database, data = source.get("database"), source.get("data")
    db = load_database(data, database, cfg.max_length)
    return ReMoDiffuseGenerator(model, Normalizer.from_state_dict(state["stats"]), text_encoder, db,
                                load_mixture(run_dir, cfg.dataset, mixture), device)


__all__ = ["FORMAT", "GenerationError", "ReMoDiffuseGenerator", "load",
           "load_state", "save_checkpoint"]
