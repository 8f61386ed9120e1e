"""The pieces of a training loop that every model repeats, as small functions (nanoGPT-style: the
model's train.py keeps its loop visible and calls these in order; there is no trainer class).

    state = open_run(run_dir, FORMAT, cfg.resume)            # None: a fresh run (inside `with run_folder(run_dir)`:
                                                             # a fresh run that fails leaves no folder)
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

Several GPUs: launch the same command with `torchrun --nproc_per_node=N -m models train NAME ...`.
`init_distributed` reads torchrun's environment (one process per GPU, NCCL; gloo on CPU), `distribute`
wraps the model in DistributedDataParallel (call the wrapper, i.e. its `forward`, so gradients are
averaged), `shard` gives each process its part of every epoch, and only `dist.is_main` writes the
log and the checkpoints. Without torchrun (or on a CPU machine) it is one plain process. The batch
size is per process. `Throughput` measures steps/s and peak GPU memory for the run's last log line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator, Mapping, Sequence

import torch

from datasets_build.core.errors import UserError
from models.base import CHECKPOINT, CheckpointFormat, load_checkpoint, pick_device, restore_rng_state


class RunExistsError(UserError, FileExistsError):
    """A run folder that already holds a checkpoint, and no request to resume it."""


class DivergedError(UserError, FloatingPointError):
    """The loss became NaN or infinite."""


class NothingToDo(UserError, ValueError):
    """A resumed run that already has the epochs asked for."""


@contextlib.contextmanager
def run_folder(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Around a training run: when it fails before its first checkpoint in a folder it created,
    the folder goes (a config.json or stats.npz alone is no run, and would puzzle the next try)."""
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    try:
        yield run_dir
    except BaseException:
        if not existed and run_dir.is_dir() and not (run_dir / CHECKPOINT).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def check_epochs(done: int, epochs: int, run_dir: str | os.PathLike) -> None:
    """A resumed run must have epochs left: `--epochs` is the total, counted from the first run."""
    if done >= epochs:
        raise NothingToDo(f"{run_dir} already has {done} epochs and --epochs is {epochs}: pass a larger "
                          "--epochs to train on (it is the total, not the number to add)")


def epochs_done_line(run_dir: str | os.PathLike, first: int, last: int, step: int) -> str:
    """The closing line of a training command: which epochs this invocation ran, not the total asked."""
    ran = last - first
    since = f" (epochs {first + 1}-{last}; {first} done before, {step} steps in all)" if first else ""
    return f"trained {ran} epoch{'s' if ran != 1 else ''} into {run_dir}{since}"


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


def autocast(device: torch.device, enabled: bool = True) -> ContextManager[Any]:
    """bf16 autocast on CUDA (no loss scaling needed); full precision elsewhere or when not `enabled`."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergedError(f"the loss is {loss.item()} at epoch {epoch} step {step} "
                            "(a lower learning rate or gradient clipping may help)")


def optimizer_step(loss: torch.Tensor, model: torch.nn.Module | Sequence[torch.nn.Module],
                   optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer], grad_clip: float | None) -> None:
    """Backward, clip the gradient norm to `grad_clip` (None or 0: no clipping), step. Given
    several modules and optimizers (Guo et al.'s evaluator has one per encoder), each module's norm
    is clipped on its own and every optimizer steps."""
    models = [model] if isinstance(model, torch.nn.Module) else list(model)
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        for module in models:
            torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    for opt in optimizers:
        opt.step()


def random_token_features(captions: Sequence[str], width: int, device: torch.device,
                          length: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random (B, length, width) token features and an all-true mask: a frozen text encoder's
    stand-in for throughput benchmarks (its forward is a one-time cache in training)."""
    g = torch.Generator().manual_seed(len(captions))
    tokens = torch.randn(len(captions), length, width, generator=g).to(device)
    return tokens, torch.ones(len(captions), length, dtype=torch.bool, device=device)


def reached(step: int, max_steps: int | None) -> bool:
    """Whether a run limited to `max_steps` optimizer steps (None: no limit) must stop now."""
    return max_steps is not None and step >= max_steps


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


class Throughput:
    """Optimizer steps per second of this process and peak GPU memory, for the run's last log
    line. Only the time between `resume()` and `pause()` counts (the epochs' step loops, data
    loading included; validation and checkpoints left out)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.steps, self.busy, self.since = device, 0, 0.0, None
        self.started = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def resume(self) -> None:
        self.since = time.perf_counter()

    def pause(self) -> None:
        if self.since is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.busy += time.perf_counter() - self.since
            self.since = None

    def step(self, count: int = 1) -> None:
        self.steps += count

    def summary(self) -> dict[str, Any]:
        self.pause()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        return {"kind": "run", "steps": self.steps, "train_seconds": round(self.busy, 3),
                "seconds": round(time.perf_counter() - self.started, 3),
                "steps_per_s": round(self.steps / max(self.busy, 1e-9), 3),
                "peak_memory_mb": None if peak is None else round(peak, 1), "device": str(self.device)}


class Bookkeeping:
    """What every training loop does around its forward pass, written once: the epoch's progress bar and
    running means, the finite-loss check, the optimizer step, the step counter, the JSONL step and epoch
    lines, the ETA line, throughput, and the `--max-steps` stop. A loop reads top to bottom:

        book = Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                           progress=cfg.progress)
        book.announce("MotionDiffuse", model, len(loader), cfg.epochs - start_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            for batch in book.batches(loader, epoch, cfg.epochs):
                losses = ...                                           # {"loss": tensor, ...}
                if book.optimize(losses, model, optimizer, cfg.grad_clip):
                    break                                              # --max-steps reached
            summary = book.end_epoch()                                 # averaged over processes, logged
            save_checkpoint(..., step=book.step)
            if book.finished:
                break
        book.finish()
    """

    def __init__(self, run_dir: str | os.PathLike, device: torch.device, dist: "Dist", *, step: int, log_every: int,
                 max_steps: int | None, progress: bool, shown: Sequence[str] = ("loss",)) -> None:
        self.log = JsonlLog(Path(run_dir) / "log.jsonl")
        self.shown = tuple(shown)  # the running values the progress bar shows
        self.meter = Throughput(device)
        self.device, self.dist, self.step, self.log_every, self.max_steps = device, dist, step, log_every, max_steps
        self.show = progress and dist.is_main
        self.eta: Eta | None = None
        self.epoch, self.means, self.started, self.bar = 0, Means(), time.time(), None

    def announce(self, name: str, model: torch.nn.Module, steps_per_epoch: int, epochs: int,
                 line: str | None = None) -> None:
        """Print the parameter count and plan (`line`: a model's own wording instead); the ETA line follows
        after the first steps."""
        total = steps_per_epoch * epochs
        if self.max_steps is not None:
            total = min(total, max(self.max_steps - self.step, 0))
        if self.show:
            print(parameter_line(name, model, steps_per_epoch, epochs) if line is None else line, file=sys.stderr)
        self.eta = Eta(total, self.show)

    def batches(self, loader: Iterable[Any], epoch: int, epochs: int, label: str = "") -> Iterator[Any]:
        """The epoch's batches behind a progress bar (`label` prefixes its "epoch E/N"); starts its running
        means and throughput clock."""
        self.epoch, self.means, self.started = epoch, Means(), time.time()
        self.bar = progress(loader, f"{label}epoch {epoch + 1}/{epochs}", self.show)
        self.meter.resume()
        return iter(self.bar)

    def optimize(self, losses: Mapping[str, torch.Tensor], model: torch.nn.Module | Sequence[torch.nn.Module],
                 optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer], grad_clip: float | None,
                 **logged: Any) -> bool:
        """Check, step, count and log one batch's `losses` ("loss" is optimized; every value is averaged);
        `logged` adds fields to its step line. True when `max_steps` is reached."""
        check_finite(losses["loss"], self.epoch + 1, self.step)
        optimizer_step(losses["loss"], model, optimizer, grad_clip)
        self.step += 1
        self.meter.step()
        if self.eta is not None:
            self.eta.step()
        values = self.means.add(losses)
        if self.bar is not None and hasattr(self.bar, "set_postfix"):
            self.bar.set_postfix({k: f"{values[k]:.4g}" for k in self.shown if k in values})
        if self.step % self.log_every == 0 and self.dist.is_main:
            self.log.write({"kind": "step", "epoch": self.epoch + 1, "step": self.step, **logged, **values})
        return self.finished

    @property
    def finished(self) -> bool:
        return reached(self.step, self.max_steps)

    def end_epoch(self, **extra: Any) -> dict[str, Any]:
        """The epoch's line: mean losses over every process's batches (+ `extra`), written by rank 0."""
        self.meter.pause()
        summary = {"kind": "epoch", "epoch": self.epoch + 1, "step": self.step,
                   "seconds": round(time.time() - self.started, 3),
                   **mean_across(self.means.means(), self.dist, self.device), **extra}
        if self.dist.is_main:
            self.log.write(summary)
        return summary

    def finish(self, **extra: Any) -> None:
        """The run's last line: steps/s and peak memory (rank 0)."""
        if self.dist.is_main:
            self.log.write({**self.meter.summary(), **extra})


# ----------------------------------------------------------------------------- several processes (torchrun)
@dataclass(frozen=True)
class Dist:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def release_freed_memory(threshold: int = 1 << 20) -> bool:
    """Make glibc hand freed activation buffers back to the OS. Its default mmap threshold grows to
    32 MiB after the first large frees, so a CPU run's activations (a few MiB to 30 MiB each, of a
    different size every batch) are carved from the heap and kept there: resident memory grew by
    ~0.1-0.4 GB a step and a full-size TMR run was killed in epoch 4. A fixed 1 MiB threshold
    keeps big tensors in mmaps released on free. No-op (False) off glibc."""
    if os.name != "posix":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD (also turns off the dynamic growth)
    except (OSError, AttributeError):
        return False


def init_distributed(device: str | None = None) -> tuple[Dist, torch.device]:
    """(this process's Dist, its device). Under torchrun (WORLD_SIZE > 1) it joins the process group:
    NCCL with one GPU per process (cuda:LOCAL_RANK), gloo on CPU; otherwise one plain process.
    It also caps glibc's memory retention (`release_freed_memory`), which every model run needs."""
    release_freed_memory()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = pick_device(device)
    if world <= 1:
        return Dist(), chosen
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Dist(rank, local, world), chosen


def distribute(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel when there are several processes, else itself."""
    if not dist.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (what checkpoints store)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def shard(dataset: torch.utils.data.Dataset, dist: Dist, seed: int,
          shuffle: bool = True) -> torch.utils.data.DistributedSampler | None:
    """Each process's share of every epoch (call `.set_epoch(epoch)`), or None for one process."""
    if not dist.enabled:
        return None
    return torch.utils.data.DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=shuffle, seed=seed,
                                               drop_last=True)


def mean_across(values: Mapping[str, float], dist: Dist, device: torch.device) -> dict[str, float]:
    """Per-key means over the processes (the logged losses); the values themselves with one process."""
    if not dist.enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / dist.world_size for k, v in zip(keys, t.tolist())}


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch.distributed.barrier()


def finish(dist: Dist) -> None:
    """Leave the process group (after the last checkpoint)."""
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def progress(iterable: Iterable[Any], desc: str, enabled: bool = True) -> Iterator[Any]:
    """A transient tqdm bar over `iterable` (none when not `enabled`); `.set_postfix` works on it."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, disable=not enabled, leave=False)


def parameter_line(name: str, model: torch.nn.Module, steps_per_epoch: int, epochs: int) -> str:
    """What a run is about to do, printed at its start: the size decides whether a CPU run is sensible."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (f"{name}: {total / 1e6:.2f} M parameters ({trainable / 1e6:.2f} M trained), "
            f"{steps_per_epoch} steps per epoch, {epochs} epochs")


class Eta:
    """One line with the measured time per step and the expected run time, after a few warm-up
    steps (the first ones include the loader's start and allocator growth, so they are skipped)."""

    def __init__(self, total_steps: int, enabled: bool = True, warmup: int = 1, measure: int = 2) -> None:
        self.total, self.enabled, self.warmup, self.measure = total_steps, enabled, warmup, measure
        self.count, self.since = 0, None

    def step(self) -> None:
        if not self.enabled:
            return
        self.count += 1
        if self.count == self.warmup:
            self.since = time.perf_counter()
        elif self.since is not None and self.count == self.warmup + self.measure:
            per_step = (time.perf_counter() - self.since) / self.measure
            left = per_step * max(self.total - self.count, 0)
            print(f"{per_step:.2f} s per step: about {_duration(left)} for the remaining "
                  f"{max(self.total - self.count, 0)} steps (validation and checkpoints not counted)",
                  file=sys.stderr)
            self.enabled = False


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
