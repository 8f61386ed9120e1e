"""Reconstruction metrics of a trained VQ-VAE on a split of a built dataset.

    python -m models evaluate vqvae --run runs/vq --data built/humanml3d [--split test]
        [--evaluator DIR_OR_RUN] [--glove DIR] [--json]

Samples are the reference evaluation loader's (the dataset's length filters, sub-clips as samples),
each with one seeded crop to a multiple of 4 frames (the reference's crop rule, `EvaluationSet`).
Every crop is encoded to ids and decoded (`encode` then `decode`, as a token model's output would be).

- MPJPE (mm): joint positions recovered from the raw features by the project's kinematics
  (`features_to_joints`), mean joint error over every valid frame; "root-aligned" subtracts each
  frame's root first (MoMask's calculate_mpjpe), "global" does not.
- With `--evaluator` (Guo et al.'s, or a run of `python -m models train evaluator`): FID of the
  reconstructions against the real crops, R-precision top 1/2/3 and MM-Dist (first caption, batches
  of `--batch-size`, both for the real crops and the reconstructions) and Diversity.
- Code usage: the share of codes used and the perplexity of the ids (layer 0 of a residual quantizer).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from datasets_build.core.flags import add_options, from_args, option
from datasets_build.motion.kinematics import features_to_joints
from models.eval.evaluator import caption_tokens, load_evaluator
from models.eval.metrics import diversity, diversity_times, fid, r_precision
from models.base import pick_device
from models.training.data import DataError, DataOptions, MotionDataset, dataset_name
from models.vq.api import detokenize, load, tokenize
from models.vq.model import VQVAE


@dataclass(frozen=True)
class EvalOptions:
    run: str = option(help="run folder written by `python -m models train vqvae`", metavar="RUN_DIR")
    data: str = option(help="build folder", metavar="BUILT_DIR")
    split: str = option("test", "split to evaluate")
    evaluator: str | None = option(None, "evaluator folder or run for FID / R-precision (none: MPJPE only)",
                                   metavar="DIR_OR_RUN")
    glove: str | None = option(None, "GloVe our_vab folder when it is not inside the evaluator folder", metavar="DIR")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")
    batch_size: int = option(32, "R-precision batch size (smaller when the split has fewer samples)", metavar="B",
                             positive=True)
    seed: int = option(0, "seed of the crops and the R-precision shuffle")
    json: bool = option(False, "print the metrics as JSON instead of a table")


def mpjpe(real: Sequence[np.ndarray], recon: Sequence[np.ndarray], dataset: str) -> dict[str, float]:
    """Mean per-joint position error in mm over every frame of every pair of raw motions [T, D]."""
    aligned, absolute, frames = 0.0, 0.0, 0
    for a, b in zip(real, recon):
        ja, jb = features_to_joints(a, dataset), features_to_joints(b, dataset)    # (T, J, 3) metres
        absolute += float(np.linalg.norm(ja - jb, axis=-1).mean(-1).sum())
        ja, jb = ja - ja[:, :1], jb - jb[:, :1]
        aligned += float(np.linalg.norm(ja - jb, axis=-1).mean(-1).sum())
        frames += len(a)
    return {"MPJPE root-aligned (mm)": 1000 * aligned / max(frames, 1),
            "MPJPE global (mm)": 1000 * absolute / max(frames, 1)}


def code_usage(ids: Sequence[np.ndarray], vq: VQVAE) -> dict[str, float]:
    """Share of the codebook used and perplexity of the ids (the first layer's for a residual quantizer)."""
    flat = np.concatenate([np.asarray(i)[:, 0] if np.ndim(i) == 2 else np.asarray(i) for i in ids])
    flat = flat[flat >= 0]
    counts = np.bincount(flat, minlength=vq.cfg.nb_code).astype(np.float64)
    probs = counts / max(counts.sum(), 1)
    return {"codes used": float((counts > 0).mean()),
            "perplexity": float(np.exp(-(probs * np.log(probs + 1e-12)).sum()))}


def reconstruct(vq: VQVAE, motions: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(ids, raw reconstructions) of raw motions whose lengths are multiples of 4."""
    ids = [tokenize(vq, m) for m in motions]
    return ids, [detokenize(vq, i) for i in ids]


def evaluate(run: str, data: str, split: str = "test", evaluator: Any = None, device: str | None = None,
             batch_size: int = 32, seed: int = 0, vq: VQVAE | None = None) -> dict[str, float]:
    """The metrics (module docstring); `evaluator` is a loaded `models.eval.evaluator.Evaluator` or None."""
    vq = vq or load(run, device)
    dataset = dataset_name(data)
    samples = MotionDataset(data, split, stats=None, options=DataOptions.for_dataset(dataset))
    n = len(samples)
    if n == 0:
        raise DataError(f"split {split!r} of {data} has no samples after the length filters")
    rng = np.random.default_rng(seed)
    options = DataOptions.for_dataset(dataset)
    prng = random.Random(int(rng.integers(2**63)))
    real = []
    for i in range(n):
        total = int(samples.ends[i] - samples.starts[i])
        length = options.crop_length(total, prng)
        start = prng.randint(0, total - length)
        real.append(np.asarray(samples.raw_motion(i)[start:start + length], np.float32))
    ids, recon = reconstruct(vq, real)
    real = [m[:len(r)] for m, r in zip(real, recon)]  # a crop shorter than one unit keeps whole frames only
    metrics: dict[str, float] = {"samples": float(n), **mpjpe(real, recon, dataset), **code_usage(ids, vq)}
    if evaluator is not None:
        real_emb, recon_emb = evaluator.embed_motions(real), evaluator.embed_motions(recon)
        tokens = [samples.word_tokens(i)[0] or None for i in range(n)]
        text_emb = evaluator.embed_texts([t or caption_tokens(samples.captions(i)[0]) for i, t in enumerate(tokens)])
        order = np.random.default_rng(seed + 1).permutation(n)
        size = min(batch_size, n)
        for name, emb in (("real", real_emb), ("reconstruction", recon_emb)):
            top, mm_dist = r_precision(text_emb[order], emb[order], size)
            metrics.update({f"{name} R@1": float(top[0]), f"{name} R@2": float(top[1]), f"{name} R@3": float(top[2]),
                            f"{name} MM-Dist": float(mm_dist)})
        metrics["FID"] = fid(real_emb, recon_emb)
        pairs = diversity_times(n, 300)
        metrics["real Diversity"] = diversity(real_emb, pairs, np.random.default_rng(seed + 2))
        metrics["reconstruction Diversity"] = diversity(recon_emb, pairs, np.random.default_rng(seed + 2))
        metrics["R-precision batch"] = float(size)
    return metrics


def format_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k.ljust(width)}  {v:.4f}" if isinstance(v, float) and k != "samples" else
                     f"{k.ljust(width)}  {int(v)}" for k, v in metrics.items())


def main(argv: list[str] | None = None, prog: str = "python -m models evaluate vqvae") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_options(parser, EvalOptions)
    a = from_args(EvalOptions, parser.parse_args(argv))
    evaluator = None
    if a.evaluator:
        evaluator = load_evaluator(a.evaluator, a.glove, pick_device(a.device))
    metrics = evaluate(a.run, a.data, a.split, evaluator, a.device, a.batch_size, a.seed)
    print(json.dumps(metrics, indent=2) if a.json else format_table(metrics))
    return 0
