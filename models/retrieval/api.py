"""Checkpoints of the retrieval model, and the encoder object other code uses.

    encoder = load("runs/tmr")                               # no flags: everything comes from the run
    t = encoder.encode_text(["a person walks forward"])      # (1, d) float32, unit norm
    m = encoder.encode_motion([features])                    # features [T, D] raw (unnormalised)
    scores = t @ m.T                                         # cosine similarities

`load_retrieval_model` is the same function (the name processors.segmentation uses). The run
folder's `checkpoint.pt` has the layout of `models.base` (format "models.retrieval/1": weights,
optimizer, `model_config`, `train_config`, epoch, step, RNG states) plus the model's own
normalisation statistics (`stats`), its frozen text encoder's record (`text_encoder`: name, identity,
checkpoint, widths) and the `data_options` it was trained with. Run folders written before
`models.base` existed have the same entries (without the RNG states) and load unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from datasets_build.motion.normalizer import Normalizer
from datasets_build.text.encoders import TextEncoder, load_text_encoder
from models import base
from models.base import CheckpointFormat, check_text_encoder, config_from_dict, pick_device
from models.retrieval.model import TMR, RetrievalConfig

FORMAT = CheckpointFormat("retrieval", 1)


def run_configs(text_encoder: dict[str, Any], data_options: Any) -> dict[str, Any]:
    """The records besides the model and training configs that define a run (checkpoint and config.json)."""
    return {"text_encoder": text_encoder, "data_options": data_options}


def save_checkpoint(run_dir: str | os.PathLike, *, model: TMR, optimizer: torch.optim.Optimizer | None,
                    stats: Normalizer, text_encoder: dict[str, Any], epoch: int, step: int,
                    train_config: Any, data_options: Any) -> Path:
    """Write RUN_DIR/checkpoint.pt and config.json (atomically, through `models.base`)."""
    return base.save_checkpoint(run_dir, FORMAT, model=model, model_config=model.cfg, train_config=train_config,
                                optimizer=optimizer, epoch=epoch, step=step,
                                configs=run_configs(text_encoder, data_options), extra={"stats": stats.state_dict()})


def load_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint of RUN_DIR (or the file itself); CheckpointError when missing or not ours."""
    return base.load_checkpoint(run_dir, FORMAT, map_location)


class RetrievalEncoder:
    """Batched text and motion encoders into the shared, L2-normalised latent space."""

    def __init__(self, model: TMR, stats: Normalizer, text_encoder: TextEncoder, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.stats = stats
        self.text_encoder = text_encoder
        self.device = device

    @property
    def dim(self) -> int:
        return self.model.cfg.latent_dim

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(N, d) float32 unit-norm latents of the captions."""
        texts = list(texts)
        out = [np.zeros((0, self.dim), np.float32)]
        for lo in range(0, len(texts), batch_size):
            tokens, mask = self.text_encoder.encode_tokens(texts[lo:lo + batch_size], batch_size=batch_size)
            tokens = torch.as_tensor(np.asarray(tokens, np.float32), device=self.device)
            mask = torch.as_tensor(np.asarray(mask, bool), device=self.device)
            out.append(self.model.encode_text(tokens, mask).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def encode_motion(self, motions: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """(N, d) float32 unit-norm latents of raw feature arrays [T_i, D] (normalised here with the
        model's own statistics). Batches group similar lengths to limit padding."""
        dim = self.model.cfg.motion_dim
        for i, m in enumerate(motions):
            if np.ndim(m) != 2 or np.shape(m)[1] != dim or len(m) == 0:
                raise ValueError(f"motion {i} has shape {np.shape(m)}; expected [T > 0, {dim}]")
        order = np.argsort([len(m) for m in motions], kind="stable")
        out = np.zeros((len(motions), self.dim), np.float32)
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            length = max(len(motions[i]) for i in idx)
            batch = np.zeros((len(idx), length, dim), np.float32)
            mask = np.zeros((len(idx), length), bool)
            for j, i in enumerate(idx):
                batch[j, :len(motions[i])] = self.stats.normalize(np.asarray(motions[i], np.float32))
                mask[j, :len(motions[i])] = True
            latent = self.model.encode_motion(torch.from_numpy(batch).to(self.device),
                                              torch.from_numpy(mask).to(self.device))
            out[idx] = latent.cpu().numpy()
        return out


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None,
         text_encoder: TextEncoder | None = None) -> RetrievalEncoder:
    """The trained model of RUN_DIR with its statistics and frozen text encoder (loaded by name
    unless given; either way it must be the encoder the model was trained with). `device`: None for
    cuda when available."""
    device = pick_device(device)
    state = load_checkpoint(run_dir)
    model = TMR(config_from_dict(RetrievalConfig, state["model_config"], base.checkpoint_path(run_dir)))
    model.load_state_dict(state["model"])
    record = state["text_encoder"]
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    check_text_encoder(text_encoder, record)
    return RetrievalEncoder(model, Normalizer.from_state_dict(state["stats"]), text_encoder, device)


load_retrieval_model = load
