"""Retrieval and text-encoder benchmark (prints measurements).

    .venv/bin/python benchmarks/retrieval.py                    # HumanML3D-sized: 23,384 x 23,384
    .venv/bin/python benchmarks/retrieval.py --annotations 5000 --skip-encoders

(a) `hybrid_topk` for every training annotation against all of them: random unit 512-d features,
    lengths 40..196, 3 annotations per motion, mirrors paired, own motion and mirror excluded, k=2,
    lambda=0.1; checked exact against float64 brute force on sampled queries.
(b) encoder throughput (captions/s) on HumanML3D-style captions: MiniLM pooled and with tokens,
    CLIP ViT-B/32 (random weights: same compute as OpenAI's) pooled (trimmed to the batch's real
    length) and with all 77 token positions.
Run it on an otherwise idle machine: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_SUBJECTS = ["a person", "a man", "a woman", "someone", "the person", "a figure", "the man"]
_ACTIONS = [
    "walks forward slowly", "walks in a counterclockwise circle", "jogs forward and then stops",
    "kicks with his left leg", "raises both arms above the head", "jumps up and down twice",
    "turns around to the right", "sits down on a chair", "waves with the right hand", "bends down to pick something up",
    "steps to the left sideways", "throws a ball with the right arm", "crouches low and stands back up",
    "does a cartwheel", "stumbles backward", "dances side to side", "climbs up some stairs",
]
_TAILS = ["", "", " before walking away", " while looking around", " then returns to the start position",
          " with his hands on his hips", " and then walks backward"]


def captions(count: int, seed: int = 0) -> list[str]:
    """HumanML3D-like captions: a subject, one or two actions, sometimes a tail (about 12 words)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)}"
        if rng.random() < 0.5:
            text += f" and then {rng.choice(_ACTIONS)}"
        out.append(text + rng.choice(_TAILS))
    return out


def bench_neighbours(count: int, k: int, lam: float, block_size: int | None, device: str | None) -> None:
    import torch

    from datasets_build.core.device import pick_device
    from processors.neighbours.hybrid import hybrid_topk, motion_groups

    rng = np.random.default_rng(0)
    features = rng.standard_normal((count, 512)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    lengths = rng.integers(40, 197, count)
    motions = np.arange(count) // 3  # 3 annotations per motion; motion 2m and 2m+1 are mirrors
    ids = [("M" if m % 2 else "") + f"{m // 2:06d}" for m in motions]
    groups, db_groups = motion_groups(ids, ids, exclude_mirror=True)
    print(f"neighbours: {count:,} x {count:,} annotations, 512-d, k={k}, lambda={lam}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {pick_device(device)}")
    hybrid_topk(features[:64], lengths[:64], features, lengths, k, lam, device=device)  # warm-up
    times, cpu = [], []
    for _ in range(2):
        start, start_cpu = time.perf_counter(), time.process_time()
        idx, scores = hybrid_topk(features, lengths, features, lengths, k, lam, query_groups=groups,
                                  db_groups=db_groups, block_size=block_size, device=device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    print(f"  time: {min(times):.2f} s best of 2 ({', '.join(f'{t:.2f}' for t in times)}; CPU time "
          f"{', '.join(f'{t:.1f}' for t in cpu)} s); {count * count / min(times) / 1e6:,.0f} M pairs/s")
    sample = rng.choice(count, 200, replace=False)
    cos = features[sample].astype(np.float64) @ features.T.astype(np.float64)
    rel = np.abs(lengths[None] - lengths[sample, None]) / np.maximum(lengths[None], lengths[sample, None])
    s = cos * np.exp(-lam * rel)
    s[(db_groups[None] == groups[sample, :1]) | (db_groups[None] == groups[sample, 1:])] = -np.inf
    want = np.argsort(-s, axis=1, kind="stable")[:, :k]
    print(f"  exact on {len(sample)} sampled queries: {bool((want == idx[sample]).all())}; "
          f"own motion/mirror returned: {int((db_groups[idx] == groups[:, :1]).sum() + (db_groups[idx] == groups[:, 1:]).sum())}")


def bench_encoders(count: int, clip_count: int, device: str | None) -> None:
    from datasets_build.text.encoders import load_text_encoder

    texts = captions(count)
    words = np.mean([len(t.split()) for t in texts])
    print(f"encoders: {count} HumanML3D-style captions ({words:.1f} words on average), batch 256")
    for name, n in (("minilm", count), ("clip-random", clip_count)):
        start = time.perf_counter()
        encoder = load_text_encoder(name, device=device)
        load = time.perf_counter() - start
        encoder.encode(texts[:64])  # warm-up
        start = time.perf_counter()
        encoder.encode(texts[:n])
        pooled = n / (time.perf_counter() - start)
        m = max(64, n // 4)
        start = time.perf_counter()
        encoder.encode_all(texts[:m])
        tokens = m / (time.perf_counter() - start)
        print(f"  {name:12s} load {load:5.1f} s | pooled {pooled:7.0f} captions/s ({n}) | "
              f"pooled + tokens {tokens:7.0f} captions/s ({m}) | HumanML3D's 44,970 captions: "
              f"{44970 / pooled / 60:.1f} min pooled, {44970 / tokens / 60:.1f} min with tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=int, default=23384)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--captions", type=int, default=2048)
    parser.add_argument("--clip-captions", type=int, default=512)
    parser.add_argument("--skip-encoders", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    bench_neighbours(args.annotations, args.k, args.lam, args.block_size, args.device)
    if not args.skip_encoders:
        bench_encoders(args.captions, args.clip_captions, args.device)


if __name__ == "__main__":
    main()
