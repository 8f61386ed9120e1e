"""The pieces of a training loop that every model repeats, as small functions (nanoGPT-style: the
model's train.py keeps its loop visible and calls these in order; there is no trainer class).

    state = open_run(run_dir, FORMAT, cfg.resume)            # None: a fresh run
    seed_everything(cfg.seed); model, optimizer = ...
    epoch0, step = restore(state, model, optimizer)          # weights, moments, RNG: (0, 0) when fresh
    log = JsonlLog(run_dir / "log.jsonl")
    for epoch in range(epoch0, cfg.epochs):
        means = Means()
        for batch in progress(loader, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress):
            with autocast(device):
                losses = model.losses(...)
            check_finite(losses["loss"], epoch + 1, step)
            optimizer_step(losses["loss"], model, optimizer, cfg.grad_clip)
            step += 1; values = means.add(losses)
        log.write({"kind": "epoch", ...}); save_checkpoint(run_dir, FORMAT, ...)  # every epoch

Checkpoints themselves (atomic write, format tag, configs, RNG) are `models.base`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator, Mapping

import torch

from datasets_build.core.errors import UserError
from models.base import CHECKPOINT, CheckpointFormat, load_checkpoint, restore_rng_state


class RunExistsError(UserError, FileExistsError):
    """A run folder that already holds a checkpoint, and no request to resume it."""


class DivergedError(UserError, FloatingPointError):
    """The loss became NaN or infinite."""


def open_run(run_dir: str | os.PathLike, fmt: CheckpointFormat, resume: bool) -> dict[str, Any] | None:
    """Create RUN_DIR; return its checkpoint when resuming one, None for a fresh run. A checkpoint
    that is there without `resume` is an error: it is never overwritten silently."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / CHECKPOINT).is_file():
        return None  # resuming a run that never finished an epoch starts it
    if not resume:
        raise RunExistsError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, "
                             "or choose another run folder")
    return load_checkpoint(run_dir, fmt)


def restore(state: Mapping[str, Any] | None, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer | None = None) -> tuple[int, int]:
    """Load a resumed checkpoint's weights, optimizer state and RNG states (call it after building
    the model, whose initialisation draws random numbers); returns (epochs done, steps done)."""
    if not state:
        return 0, 0
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    restore_rng_state(state.get("rng"))
    return int(state["epoch"]), int(state["step"])


def autocast(device: torch.device) -> ContextManager[Any]:
    """bf16 autocast on CUDA (no loss scaling needed); full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergedError(f"the loss is {loss.item()} at epoch {epoch} step {step} "
                            "(a lower learning rate or gradient clipping may help)")


def optimizer_step(loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   grad_clip: float | None) -> None:
    """Backward, clip the gradient norm to `grad_clip` (None or 0: no clipping), step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


class Means:
    """Running means of the per-batch loss values of an epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: Mapping[str, Any]) -> dict[str, float]:
        """Add one batch (tensors or numbers); returns its values as floats."""
        floats = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}
        for k, v in floats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        return floats

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


class JsonlLog:
    """Append-only JSON lines (one per logged step or epoch); each write is opened, written and
    closed, so the log survives a crash up to its last line."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record)) + "\n")


def progress(iterable: Iterable[Any], desc: str, enabled: bool = True) -> Iterator[Any]:
    """A transient tqdm bar over `iterable` (none when not `enabled`); `.set_postfix` works on it."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, disable=not enabled, leave=False)
