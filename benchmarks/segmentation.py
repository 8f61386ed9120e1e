"""MATE joint segmentation benchmark (prints measurements).

    .venv/bin/python benchmarks/segmentation.py
    .venv/bin/python benchmarks/segmentation.py --motions 8 --model tiny --threads 2 --device cpu

(a) The search alone, N = 4 sub-texts over T = 196 frames, min_len 4, random precomputed costs:
    `optimal_partition` (dynamic programming, O(N G^2)) against `brute_force_partition`
    (every partition enumerated and summed with numpy: C(G-2, 3) partitions, 1,216,865 at unit 1),
    at unit 1 and unit 4; both must return the same optimum. Brute force is timed twice: whole
    (enumeration + evaluation) and evaluation only (the partitions enumerated beforehand); and a
    plain Python loop over itertools.combinations, the way enumeration is usually written.
(b) How many segments the exact search encodes (`used_segments`) per annotation range.
(c) End to end: `Segmentation` over random HumanML3D-sized motions (263-d, lengths drawn from
    40..196 frames), 3 whole-motion annotations per motion with N = 2, 3, 4 sub-texts (the segments
    they share are encoded once), through a checkpoint written here: a RANDOMLY INITIALISED TMR of
    the default RetrievalConfig (6 layers, latent 256; the compute of a trained one) and/or the
    tests' tiny config (1 layer, latent 64), with a hashed toy text encoder (384-d tokens, MiniLM's
    width; text encoding is a negligible share). Reports motions/s and segments/s.
Run it on an otherwise idle machine: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import platform
import sys
import tempfile
import time
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.segmentation import (  # noqa: E402
    brute_force_partition, combinations, grid_points, optimal_partition, used_segments, valid_segments,
)

TINY = dict(latent_dim=64, ff_dim=128, num_layers=1, num_heads=4, dropout=0.0, vae=False, reconstruction=False)


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def bench_search(frames: int, n: int, min_len: int, repeat: int) -> None:
    print(f"(a) search: N={n} sub-texts, T={frames} frames, min_len={min_len}, random costs (best of {repeat})")
    rng = np.random.default_rng(0)
    for unit in (1, 4):
        points = grid_points(frames, unit)
        g = len(points)
        costs = np.where(valid_segments(points, min_len)[None], rng.random((n, g, g)), np.inf)
        dp_time, (dp_bounds, dp_total) = best_of(lambda: optimal_partition(costs), repeat * 20)
        bf_time, (bf_bounds, bf_total) = best_of(lambda: brute_force_partition(costs), repeat)
        inner = combinations(g - 2, n - 1) + 1
        bounds = np.concatenate([np.zeros((len(inner), 1), np.int64), inner, np.full((len(inner), 1), g - 1)], 1)

        def evaluate() -> float:
            totals = np.zeros(len(bounds))
            for k in range(n):
                totals += costs[k, bounds[:, k], bounds[:, k + 1]]
            return float(totals.min())

        eval_time, eval_total = best_of(evaluate, repeat)
        loop_time, loop_total = best_of(lambda: python_enumeration(costs), 1)
        same = bool(np.array_equal(dp_bounds, bf_bounds) and np.isclose(dp_total, bf_total)
                    and np.isclose(eval_total, dp_total) and np.isclose(loop_total, dp_total))
        print(f"  unit {unit}: G={g} grid points, {comb(g - 2, n - 1):,} partitions | DP {dp_time * 1e3:.3f} ms | "
              f"brute force {bf_time * 1e3:.1f} ms (evaluation only {eval_time * 1e3:.1f} ms) | "
              f"speed-up {bf_time / dp_time:,.0f}x ({eval_time / dp_time:,.0f}x vs evaluation only) | "
              f"plain Python enumeration {loop_time * 1e3:,.0f} ms ({loop_time / dp_time:,.0f}x) | "
              f"same optimum: {same} (total {dp_total:.4f}, boundaries {points[dp_bounds].tolist()})")


def python_enumeration(costs: np.ndarray) -> float:
    """The straightforward brute force: a Python loop over itertools.combinations of boundaries."""
    n, g, _ = costs.shape
    table = costs.tolist()
    best = float("inf")
    for inner in itertools.combinations(range(1, g - 1), n - 1):
        bounds = (0, *inner, g - 1)
        total = sum(table[k][bounds[k]][bounds[k + 1]] for k in range(n))
        best = min(best, total)
    return best


def bench_counts(frames: int, min_len: int) -> None:
    print(f"(b) segments encoded per range of T={frames} frames (min_len={min_len}) vs all G(G-1)/2 grid segments")
    for unit in (1, 4):
        points = grid_points(frames, unit)
        valid = valid_segments(points, min_len)
        counts = ", ".join(f"N={n}: {int(used_segments(valid, n).sum()):,}" for n in (1, 2, 3, 4))
        union = int((used_segments(valid, 2) | used_segments(valid, 3) | used_segments(valid, 4)).sum())
        g = len(points)
        print(f"  unit {unit}: {counts} | N=2,3,4 together {union:,} | all {g * (g - 1) // 2:,}")


class HashedTokens:
    """Toy frozen text encoder (hashed words -> fixed random 384-d token vectors)."""

    name, dim, token_dim, max_tokens = "hashed-bench", 384, 384, 32
    identity = "hashed-bench:4096:0"

    def __init__(self) -> None:
        self.table = np.random.default_rng(0).standard_normal((4096, self.token_dim)).astype(np.float32)

    def encode_tokens(self, texts, batch_size=256):
        ids = [[int(hashlib.md5(w.encode()).hexdigest(), 16) % 4096 for w in t.lower().split()[:32] or [""]]
               for t in texts]
        width = max(len(i) for i in ids)
        out, mask = np.zeros((len(texts), width, self.token_dim), np.float32), np.zeros((len(texts), width), bool)
        for k, i in enumerate(ids):
            out[k, :len(i)], mask[k, :len(i)] = self.table[i], True
        return out, mask

    def encode(self, texts, batch_size=256):
        tokens, mask = self.encode_tokens(texts)
        return tokens.sum(1) / mask.sum(1, keepdims=True)


def write_random_checkpoint(run_dir: Path, overrides: dict, text_encoder: HashedTokens) -> None:
    import torch

    from models.training.data import Normalizer
    from models.base import text_encoder_record
    from models.retrieval.api import save_checkpoint
    from models.retrieval.model import TMR, RetrievalConfig

    torch.manual_seed(0)
    model = TMR(RetrievalConfig(motion_dim=263, token_dim=text_encoder.token_dim, **overrides))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir, model=model, optimizer=None, stats=Normalizer(np.zeros(263, np.float32),
                    np.ones(263, np.float32)), text_encoder=text_encoder_record(text_encoder), epoch=0, step=0,
                    train_config={}, data_options={})


def bench_end_to_end(models: list[str], motions: int, threads: int, device: str, unit: int) -> None:
    import torch

    from processors.segmentation import Segmentation

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 197, motions)
    batch = {"motion": [rng.standard_normal((t, 263)).astype(np.float32) for t in lengths],
             "annotations": [], "subtexts": []}
    words = ["walks", "forward", "jumps", "turns", "left", "waves", "kicks", "sits", "down", "slowly"]
    for t in lengths:
        batch["annotations"].append([{"caption": "a person moves", "start_frame": 0, "end_frame": int(t)}] * 3)
        batch["subtexts"].append([{"texts": [" ".join(rng.choice(words, 4)) for _ in range(n)]} for n in (2, 3, 4)])
    text_encoder = HashedTokens()
    print(f"(c) end to end: {motions} motions of {lengths.min()}-{lengths.max()} frames (mean {lengths.mean():.0f}), "
          f"3 annotations each (N = 2, 3, 4), unit {unit}, device {device}, torch {torch.__version__}, "
          f"{threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            run = Path(tmp) / name
            write_random_checkpoint(run, {} if name == "default" else TINY, text_encoder)
            processor = Segmentation(str(run), unit=unit, device=device, text_encoder=text_encoder)
            warm = {k: v[:1] for k, v in batch.items()}
            warm["motion"] = [batch["motion"][0][:40]]
            warm["annotations"] = [[{"caption": "x", "start_frame": 0, "end_frame": 40}] * 3]
            processor(warm)  # loads the model (not timed)
            processor.counters.clear()
            start = time.perf_counter()
            out = processor(batch)
            seconds = time.perf_counter() - start
            segments = processor.counters["segments_encoded"]
            assert all(r["status"] == "ok" for row in out["segmentation"] for r in row)
            label = ("random TMR, default config (6 layers, latent 256)" if name == "default"
                     else "random TMR, tiny config (1 layer, latent 64)")
            print(f"  {label}: {seconds:.1f} s | {motions / seconds:.3f} motions/s | "
                  f"{segments:,} segments ({segments / motions:,.0f} per motion), {segments / seconds:,.0f} segments/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=196)
    parser.add_argument("--subtexts", type=int, default=4)
    parser.add_argument("--min-len", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--motions", type=int, default=4, help="motions for the end-to-end timing")
    parser.add_argument("--model", choices=("default", "tiny", "both"), default="both")
    parser.add_argument("--unit", type=int, default=4, help="grid step of the end-to-end run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, numpy {np.__version__}")
    bench_search(args.frames, args.subtexts, args.min_len, args.repeat)
    bench_counts(args.frames, args.min_len)
    if not args.skip_end_to_end:
        models = ["tiny", "default"] if args.model == "both" else [args.model]
        bench_end_to_end(models, args.motions, args.threads, args.device, args.unit)


if __name__ == "__main__":
    main()
