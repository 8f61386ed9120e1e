"""MATE checkpoints and the artefact hosts load.

    run = load("runs/mate")                      # MateRun: model (eval), stats, lemmas, text record
    write_artefact(run_dir, model.text, initial_table, record)

RUN_DIR/checkpoint.pt has `models.base`'s layout (format "models.mate/1"); its `model` state holds
everything that trains (the embedding table included) but not the frozen language-model layers,
which are rebuilt from the `text_encoder` record {kind, checkpoint, base_identity} and checked.

RUN_DIR/aligned_embeddings.npz is the artefact (MODELS.md 6.5: only word embeddings differ), a plain
numpy file the data side reads (`--text-encoder mate:RUN`, datasets_build.text.encoders):
`row_ids` (n,) int64 the rows that differ from the base encoder, `rows` (n, E) float32 their new
values, `base_encoder` ("clip" / "clip-random" / "distilbert" / "clip-tiny"), `base_checkpoint` (""
for none), `base_identity` (the base weights' checksum identity), `vocab_size`, `width`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_build.core.errors import UserError
from datasets_build.motion.normalizer import Normalizer
from models import base
from models.base import CheckpointFormat, atomic_write, config_from_dict, pick_device
from models.mate.model import Mate, MateConfig
from models.mate.text import TextTower, make_text_tower

FORMAT = CheckpointFormat("mate", 1)
ARTEFACT = "aligned_embeddings.npz"


class MateRunError(UserError, ValueError):
    """A MATE run whose text encoder or weights do not fit."""


def text_record(tower: TextTower, checkpoint: str | None) -> dict[str, Any]:
    return {"kind": tower.kind, "checkpoint": checkpoint, "base_identity": tower.base_identity,
            "vocab_size": int(tower.embedding.weight.shape[0]), "width": int(tower.embedding.weight.shape[1])}


def frozen_keys(model: Mate) -> set[str]:
    """State-dict keys of the frozen language model (every text key but the embedding table)."""
    table = model.text.embedding.weight
    names = {n for n, p in model.named_parameters() if p is table}
    return {k for k in model.state_dict() if k.startswith("text.") and k not in names}


def trainable_state(model: Mate) -> dict[str, torch.Tensor]:
    skip = frozen_keys(model)
    return {k: v for k, v in model.state_dict().items() if k not in skip}


def load_trainable(model: Mate, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = sorted(set(missing) - frozen_keys(model)) + sorted(unexpected)
    if wrong:
        raise MateRunError(f"the MATE checkpoint does not fit its model config (keys {', '.join(wrong[:4])})")


class _StateOnly(torch.nn.Module):
    """What `base.save_checkpoint` needs from a model: `state_dict()` (the trainable part)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = state

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._state


def save_checkpoint(run_dir: str | os.PathLike, *, model: Mate, optimizer: torch.optim.Optimizer | None,
                    stats: Normalizer, text: dict[str, Any], lemmas: list[str], epoch: int, step: int,
                    train_config: Any, data_options: Any) -> Path:
    return base.save_checkpoint(run_dir, FORMAT, model=_StateOnly(trainable_state(model)), model_config=model.cfg,
                                train_config=train_config, optimizer=optimizer, epoch=epoch, step=step,
                                configs={"text_encoder": text, "data_options": data_options, "lemmas": lemmas},
                                extra={"stats": stats.state_dict()})


def build_tower(record: dict[str, Any]) -> TextTower:
    tower = make_text_tower(record["kind"], record["checkpoint"])
    if record.get("base_identity") and tower.base_identity != record["base_identity"]:
        raise MateRunError(f"the text encoder {record['kind']!r} ({record['checkpoint']}) now has the weights "
                           f"{tower.base_identity}, the MATE run was trained on {record['base_identity']}")
    return tower


def write_artefact(run_dir: str | os.PathLike, tower: TextTower, initial: torch.Tensor,
                   record: dict[str, Any]) -> Path:
    """RUN_DIR/aligned_embeddings.npz: the rows that differ from `initial` (bitwise) and their values."""
    table = tower.embedding.weight.detach().float().cpu()
    changed = torch.nonzero((table != initial.float().cpu()).any(dim=1)).flatten()
    arrays = {"row_ids": changed.numpy().astype(np.int64), "rows": table[changed].numpy().astype(np.float32),
              "base_encoder": np.array(record["kind"]), "base_checkpoint": np.array(record["checkpoint"] or ""),
              "base_identity": np.array(record["base_identity"]), "vocab_size": np.array(table.shape[0]),
              "width": np.array(table.shape[1])}
    return atomic_write(Path(run_dir) / ARTEFACT, lambda f: np.savez(f, **arrays))


@dataclass
class MateRun:
    model: Mate
    stats: Normalizer
    lemmas: list[str]
    text: dict[str, Any]
    data_options: dict[str, Any]
    device: torch.device


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None) -> MateRun:
    """The trained model of RUN_DIR in eval mode, with its statistics and vocabulary."""
    device = pick_device(device)
    state = base.load_checkpoint(run_dir, FORMAT, "cpu")
    cfg = config_from_dict(MateConfig, state["model_config"], base.checkpoint_path(run_dir))
    model = Mate(cfg, build_tower(state["text_encoder"]))
    load_trainable(model, state["model"])
    return MateRun(model.to(device).eval(), Normalizer.from_state_dict(state["stats"]), list(state["lemmas"]),
                   state["text_encoder"], state["data_options"], device)


__all__ = ["ARTEFACT", "FORMAT", "MateRun", "MateRunError", "build_tower", "load", "load_trainable",
           "save_checkpoint", "text_record", "trainable_state", "write_artefact"]
