"""LaMP pretraining checkpoints and the objects other code uses: text and motion feature encoders
(LaMP-Feat, MODELS.md 5.6) and the evaluator stand-in for the generation protocol (`--evaluator lamp:RUN`).

    encoder = load("runs/lamp")                                  # no flags: everything comes from the run
    t = encoder.encode_text(["a person walks forward"])          # (1, 512) text_proj([CLS])
    m = encoder.encode_motion([features])                        # raw [T, D] -> (1, 512) query mean of motion_proj
    evaluator = load_evaluator("runs/lamp")                      # embed_captions / embed_motions for the protocol

RUN_DIR/checkpoint.pt has `models.base`'s layout (format "models.lamp/1"); its model state holds the frozen
VQ-VAE (`vq.*`) with the Q-Former, so the run needs no other folder. Extra entries: `stats` (the VQ's
normalisation), `vq_config`, `vq_fingerprint`. RUN_DIR/vocab.txt is the text vocabulary (`[DEC]` is added
on load); RUN_DIR/best/ holds the checkpoint of the best validation R@1 (what `load` prefers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from datasets_build.motion.normalizer import Normalizer
from models import base
from models.base import CheckpointFormat, config_from_dict, pick_device
from models.lamp.pretrain import LaMP, LaMPConfig
from models.lamp.text import load_tokenizer, pre_caption
from models.vq.model import VQVAE, VQVAEConfig

FORMAT = CheckpointFormat("lamp", 1)
VOCABULARY = "vocab.txt"
BEST = "best"


def save_checkpoint(run_dir: str | os.PathLike, *, model: LaMP, optimizer: torch.optim.Optimizer | None,
                    stats: Normalizer, epoch: int, step: int, train_config: Any, data_options: Any,
                    vq_fingerprint: str | None, extra: dict[str, Any] | None = None) -> Path:
    """RUN_DIR/checkpoint.pt and config.json (atomically, through `models.base`)."""
    return base.save_checkpoint(run_dir, FORMAT, model=model, model_config=model.cfg, train_config=train_config,
                                optimizer=optimizer, epoch=epoch, step=step,
                                configs={"vq_config": model.vq.cfg, "data_options": data_options,
                                         "vq_fingerprint": vq_fingerprint},
                                extra={"stats": stats.state_dict(), **(extra or {})})


def build_from_state(state: dict[str, Any], source: str | os.PathLike) -> LaMP:
    """The LaMP network (with its frozen VQ) of a checkpoint's configs, weights loaded."""
    vq = VQVAE(config_from_dict(VQVAEConfig, state["vq_config"], source))
    model = LaMP(config_from_dict(LaMPConfig, state["model_config"], source), vq)
    model.load_state_dict(state["model"])
    vq.stats = Normalizer.from_state_dict(state["stats"])
    return model


def tokenize(tokenizer: Any, captions: Sequence[str], max_length: int,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """BERT ids and attention mask (B, max_length) of cleaned captions (max_length padding, truncation)."""
    out = tokenizer([pre_caption(c) for c in captions], padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return out["input_ids"].to(device), out["attention_mask"].to(device).bool()


def pad_motions(motions: Sequence[np.ndarray], stats: Normalizer, frames: int, unit: int = 4) -> np.ndarray:
    """Raw motions [T_i, D] -> normalised (N, frames, D): each cut to a multiple of `unit` and at most
    `frames`, then zero-padded to `frames` (LaMP encodes every motion padded to 196)."""
    out = np.zeros((len(motions), frames, len(stats.mean)), np.float32)
    for i, motion in enumerate(motions):
        motion = np.asarray(motion, np.float32)
        if motion.ndim != 2 or motion.shape[1] != len(stats.mean) or len(motion) < unit:
            raise ValueError(f"motion {i} has shape {motion.shape}; expected [T >= {unit}, {len(stats.mean)}]")
        t = min(len(motion) // unit * unit, frames)
        out[i, :t] = stats.normalize(motion[:t])
    return out


class LaMPEncoder:
    """Batched LaMP-Feat text and motion features (raw, as LaMP's evaluator wrapper; `normalize=True`
    gives the trainer's unit-norm ones)."""

    def __init__(self, model: LaMP, stats: Normalizer, tokenizer: Any, device: torch.device,
                 normalize: bool = False) -> None:
        self.model, self.stats, self.tokenizer = model.to(device).eval(), stats, tokenizer
        self.device, self.normalize = device, normalize

    @property
    def dim(self) -> int:
        return self.model.cfg.embed_dim

    @property
    def motion_dim(self) -> int:
        return len(self.stats.mean)

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = [np.zeros((0, self.dim), np.float32)]
        for lo in range(0, len(captions), batch_size):
            ids, mask = tokenize(self.tokenizer, list(captions[lo:lo + batch_size]), self.model.cfg.max_text_length,
                                 self.device)
            out.append(self.model.retrieval_features(ids=ids, mask=mask, normalize=self.normalize).float().cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def encode_motion(self, motions: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        out = [np.zeros((0, self.dim), np.float32)]
        for lo in range(0, len(motions), batch_size):
            x = torch.from_numpy(pad_motions(motions[lo:lo + batch_size], self.stats, self.model.cfg.max_motion_length))
            out.append(self.model.retrieval_features(motion=x.to(self.device), normalize=self.normalize)
                       .float().cpu().numpy())
        return np.concatenate(out)


class EvaluatorShape:
    """What the generation protocol reads of an evaluator's config."""

    def __init__(self, dim_pose: int) -> None:
        self.dim_pose = dim_pose


class LaMPEvaluator:
    """LaMP features in place of Guo et al.'s evaluator in `models.eval.protocol` (LaMP-R-Precision,
    LaMP-MM-Dist, and FID / Diversity in LaMP's space): it embeds raw captions (`embed_captions`, which
    the protocol prefers to word/POS tokens) and raw motions, Euclidean distances on raw features
    (LaMP's EvaluatorModelWrapper_w_LaMP)."""

    def __init__(self, encoder: LaMPEncoder, run_dir: str | os.PathLike) -> None:
        self.encoder = encoder
        self.cfg = EvaluatorShape(encoder.motion_dim)
        self.record = {"path": str(run_dir), "kind": "lamp", "features": "LaMP-Feat (text_proj [CLS], query mean "
                       "of motion_proj)", "normalized": encoder.normalize}

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def describe(self) -> str:
        return f"LaMP features of {self.record['path']} (LaMP-R-Precision / LaMP-MM-Dist)"

    def embed_captions(self, captions: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_text(captions)

    def embed_texts(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """word/POS token lists (the Guo evaluator's input): their words joined back into captions."""
        return self.encoder.encode_text([" ".join(t.rpartition("/")[0] or t for t in tokens) for tokens in token_lists])

    def embed_motions(self, motions: Sequence[np.ndarray]) -> np.ndarray:
        return self.encoder.encode_motion(motions)


def checkpoint_dir(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """The folder of the `best` validation checkpoint when there is one (else the last), or the `last`."""
    run_dir = Path(run_dir)
    if which == "best" and (run_dir / BEST / base.CHECKPOINT).is_file():
        return run_dir / BEST
    return run_dir


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None, which: str = "best",
         normalize: bool = False) -> LaMPEncoder:
    """The LaMP-Feat encoders of RUN_DIR (its best-validation checkpoint unless `which="last"`)."""
    device = pick_device(device)
    folder = checkpoint_dir(run_dir, which)
    state = base.load_checkpoint(folder, FORMAT)
    model = build_from_state(state, base.checkpoint_path(folder))
    tokenizer = load_tokenizer(Path(run_dir) / VOCABULARY)
    return LaMPEncoder(model, model.vq.stats, tokenizer, device, normalize)


def load_evaluator(run_dir: str | os.PathLike, device: str | torch.device | None = None) -> LaMPEvaluator:
    """`--evaluator lamp:RUN`: the run's LaMP features as the generation protocol's evaluator."""
    return LaMPEvaluator(load(run_dir, device), run_dir)


__all__ = ["FORMAT", "LaMPEncoder", "LaMPEvaluator", "build_from_state", "checkpoint_dir", "load", "load_evaluator",
           "pad_motions", "save_checkpoint", "tokenize"]
