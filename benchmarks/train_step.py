"""Training throughput of the generators: samples/s and peak memory per model and preset, with the
data loader included (MotionDataset + collate + cached text features) and excluded (one batch
kept on the device), on the current device.

    .venv/bin/python benchmarks/train_step.py --data built/sample --model motiondiffuse --preset paper \
        --batch-size 8 --steps 5 [--device cpu|cuda] [--json OUT.json]

A model joins by defining `benchmark_step(preset, data, batch_size, device) -> (step, loader)` in its
train module (the registry's "train" command): `step(batch)` is one optimizer step on a batch of
`loader`. A frozen text encoder is replaced by fixed random token features of its width
(`models.training.loop.random_token_features`: its forward is a one-time cache in training, not a
per-step cost).
Peak memory is torch's peak allocation on CUDA and the process's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def benchmark_steps() -> dict:
    """{model name: its train module's `benchmark_step`}, for every registered model that has one."""
    import importlib

    from models.registry import discover

    steps = {}
    for name, entry in discover().items():
        module = entry.commands.get("train")
        if module and hasattr(importlib.import_module(module), "benchmark_step"):
            steps[name] = getattr(importlib.import_module(module), "benchmark_step")
    return steps


STEPS = benchmark_steps()


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(model: str, preset: str, data: str, batch_size: int, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    step, loader = STEPS[model](preset, data, batch_size, device)
    batches = iter(loader)
    first = next(batches)
    step(first)  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    sync()
    with_loader = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step(first)
    sync()
    without = time.perf_counter() - started
    return {"model": model, "preset": preset, "batch_size": batch_size, "steps": steps, "device": str(device),
            "samples_per_s_with_loader": round(steps * batch_size / with_loader, 2),
            "samples_per_s_without_loader": round(steps * batch_size / without, 2),
            "peak_memory_mb": round(peak_mb(device), 1), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="build folder")
    parser.add_argument("--model", action="append", choices=sorted(STEPS), help="default: every model")
    parser.add_argument("--preset", action="append", help="default: tiny and paper")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None)
    a = parser.parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = [measure(m, p, a.data, a.batch_size, a.steps, device)
            for m in (a.model or sorted(STEPS)) for p in (a.preset or ["tiny", "paper"])]
    for r in rows:
        print(f"{r['model']:<16} {r['preset']:<6} batch {r['batch_size']:>3} on {r['device']}: "
              f"{r['samples_per_s_with_loader']:>8} samples/s with the loader, "
              f"{r['samples_per_s_without_loader']:>8} without; peak {r['peak_memory_mb']} MB")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
