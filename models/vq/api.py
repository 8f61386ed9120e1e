"""VQ-VAE checkpoints and the frozen tokenizer other code uses (LaMP, MoMask, the `motion_tokens` processor).

    vq = load("runs/vq")                              # eval mode, frozen, no flags needed
    ids = tokenize(vq, raw_motion)                    # [T, D] raw features -> (T//4,) or (T//4, Q) ids
    x = vq.stats.normalize(raw)                       # the run's own normalisation (fb5 by default)
    z = vq.encode_features(torch.from_numpy(x)[None])  # (1, T/4, code_dim), LaMP's motion input

RUN_DIR/checkpoint.pt has `models.base`'s layout (format "models.vq/1") plus `stats` (the Normalizer
the model was trained in) and `data_options` (the training window). `vq.fingerprint` identifies the
weights (the checkpoint's content hash): caches of token ids key on it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_build.motion.normalizer import Normalizer
from models import base
from models.base import CheckpointFormat, checkpoint_path, config_from_dict, pick_device
from models.vq.model import VQVAE, VQVAEConfig

FORMAT = CheckpointFormat("vq", 1)


def save_checkpoint(run_dir: str | os.PathLike, *, model: VQVAE, optimizer: torch.optim.Optimizer | None,
                    stats: Normalizer, epoch: int, step: int, train_config: Any, data_options: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    return base.save_checkpoint(run_dir, FORMAT, model=model, model_config=model.cfg, train_config=train_config,
                                optimizer=optimizer, epoch=epoch, step=step, configs={"data_options": data_options},
                                extra={"stats": stats.state_dict(), **(extra or {})})


def checkpoint_fingerprint(run_dir: str | os.PathLike) -> str:
    """sha256 (first 16 hex digits) of the checkpoint file: changes whenever the weights do."""
    digest = hashlib.sha256()
    with open(checkpoint_path(run_dir), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None) -> VQVAE:
    """The trained VQ-VAE of RUN_DIR in eval mode with frozen parameters; `vq.stats` is its Normalizer,
    `vq.fingerprint` its checkpoint hash, `vq.run_dir` where it came from."""
    state = base.load_checkpoint(run_dir, FORMAT)
    cfg = config_from_dict(VQVAEConfig, state["model_config"], run_dir)
    model = VQVAE(cfg)
    model.load_state_dict(state["model"])
    model.stats = Normalizer.from_state_dict(state["stats"])
    model.fingerprint = checkpoint_fingerprint(run_dir)
    model.run_dir = str(run_dir)
    model.requires_grad_(False)
    return model.to(pick_device(device)).eval()


@torch.no_grad()
def tokenize(vq: VQVAE, motion: np.ndarray) -> np.ndarray:
    """Code ids of one RAW motion [T, D]: normalised with `vq.stats`, cropped to a multiple of 4
    (the last T mod 4 frames dropped) -> int64 (T//4,) or (T//4, Q) for a residual quantizer."""
    frames = len(motion) // vq.cfg.downsampling * vq.cfg.downsampling
    if frames == 0:
        shape = (0, vq.cfg.num_quantizers) if vq.residual else (0,)
        return np.zeros(shape, np.int64)
    device = next(vq.parameters()).device
    x = torch.from_numpy(vq.stats.normalize(np.asarray(motion[:frames], np.float32)).astype(np.float32))
    return vq.encode(x[None].to(device))[0].cpu().numpy().astype(np.int64)


@torch.no_grad()
def detokenize(vq: VQVAE, ids: np.ndarray) -> np.ndarray:
    """RAW features [4n, D] of code ids (n,) or (n, Q): decoded, then de-normalised with `vq.stats`."""
    device = next(vq.parameters()).device
    x = vq.decode(torch.as_tensor(np.asarray(ids, np.int64), device=device)[None])[0].float().cpu().numpy()
    return vq.stats.denormalize(x)


__all__ = ["FORMAT", "checkpoint_fingerprint", "detokenize", "load", "save_checkpoint", "tokenize"]
