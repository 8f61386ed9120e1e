"""The standard text-to-motion evaluation (Guo et al. 2022) and TMR-style retrieval metrics.

Generation metrics take evaluator embeddings (numpy arrays, one row per sample):
- `r_precision`: inside each batch of 32 (a partial last batch is dropped, as the reference loader
  does), the Euclidean distance matrix text x motion; a text hits at k when its own motion is among
  the k smallest distances of its row. Also returns MM-Dist, the mean matched text-motion distance.
- `fid`: Frechet distance between Gaussians fitted to real and generated embeddings.
- `diversity`: mean distance over 300 random index pairs (two draws without replacement).
- `multimodality`: for [texts, generations, dim], mean distance over 10 random pairs of
  generations, the same pair indices for every text.
- `repeat` / `mean_interval`: repetitions summarised as mean and 1.96 * std / sqrt(reps).

Retrieval metrics (`retrieval_metrics`, `retrieval_in_batches`): R@1/2/3/5/10 in percent and
median rank, text->motion and motion->text, over the whole set ("all") or averaged over batches of
32; ties are broken by averaging positions, as TMR does. Similarity is the cosine of the latents
(TMR) or the negative Euclidean distance of the raw features (LaMP's evaluator wrapper).

The repeated protocols built on these (replications, what is computed once) are `models.eval.protocol`.
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np

RECALL_KS = (1, 2, 3, 5, 10)
Similarity = Literal["cosine", "euclidean"]


def euclidean_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] Euclidean distances between the rows of a [N, D] and b [M, D] (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))  # rounding can make a zero distance slightly negative


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def r_precision(text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = 32, top_k: int = 3,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
    """(R-precision top-1..top_k [top_k], MM-Dist) over batches of `batch_size` matched pairs
    (row i of text_emb describes row i of motion_emb). `rng` shuffles before batching, as the
    reference's shuffled evaluation loader; without it batches follow the row order."""
    if len(text_emb) != len(motion_emb):
        raise ValueError(f"{len(text_emb)} texts for {len(motion_emb)} motions")
    batches = _batches(len(text_emb), batch_size, rng)
    if not batches:
        raise ValueError(f"need at least one full batch of {batch_size} pairs, got {len(text_emb)}")
    text_emb, motion_emb = np.asarray(text_emb, np.float64), np.asarray(motion_emb, np.float64)
    hits, dist_sum, count = np.zeros(top_k), 0.0, 0
    for idx in batches:
        dist = euclidean_distance_matrix(text_emb[idx], motion_emb[idx])
        dist_sum += float(np.linalg.norm(text_emb[idx] - motion_emb[idx], axis=1).sum())  # the trace, computed exactly
        order = np.argsort(dist, axis=1)[:, :top_k]
        found = order == np.arange(len(idx))[:, None]  # [B, top_k]: own motion at position j
        hits += np.cumsum(found, axis=1).astype(bool).sum(0)
        count += len(idx)
    return hits / count, dist_sum / count


def matching_score(text_emb: np.ndarray, motion_emb: np.ndarray) -> float:
    """MM-Dist over all pairs: mean Euclidean distance between matched text and motion embeddings."""
    return float(np.linalg.norm(np.asarray(text_emb, np.float64) - np.asarray(motion_emb, np.float64), axis=1).mean())


def fid(real: np.ndarray, generated: np.ndarray) -> float:
    """Frechet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) of the embeddings' Gaussians.

    Tr sqrt(S1 S2) is computed as the sum of sqrt eigenvalues of the symmetric PSD matrix
    sqrt(S1) S2 sqrt(S1), which is similar to S1 S2: the same value as the reference's
    `scipy.linalg.sqrtm(S1 @ S2)` trace, without complex round-off or a scipy dependency."""
    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    if len(real) < 2 or len(generated) < 2:
        raise ValueError("FID needs at least 2 samples on each side")
    mu1, mu2 = real.mean(0), generated.mean(0)
    s1, s2 = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(generated, rowvar=False))
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def diversity_times(n: int, times: int = 300) -> int:
    """Pairs for the diversity of n samples: `times` (300) when n > times, else 100 when n > 100
    [code: momask utils/eval_t2m.py], else n - 1 (the reference asserts; small sets still get a value)."""
    if n > times:
        return times
    return 100 if n > 100 else max(n - 1, 1)


def diversity(emb: np.ndarray, times: int = 300, rng: np.random.Generator | None = None,
              pairs: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Mean distance between `times` random pairs: two index sets each drawn without replacement."""
    emb = np.asarray(emb, np.float64)
    if pairs is None:
        if len(emb) <= times:
            raise ValueError(f"diversity needs more than {times} samples, got {len(emb)}")
        rng = rng if rng is not None else np.random.default_rng()
        pairs = (rng.choice(len(emb), times, replace=False), rng.choice(len(emb), times, replace=False))
    first, second = pairs
    return float(np.linalg.norm(emb[first] - emb[second], axis=1).mean())


def multimodality(emb: np.ndarray, times: int = 10, rng: np.random.Generator | None = None,
                  pairs: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """emb [texts, generations per text, D]: mean distance between `times` pairs of generations of
    the same text (the same pair indices for every text), as the reference computes it."""
    emb = np.asarray(emb, np.float64)
    if emb.ndim != 3:
        raise ValueError(f"multimodality wants [texts, generations, dim], got shape {emb.shape}")
    if pairs is None:
        if emb.shape[1] <= times:
            raise ValueError(f"multimodality needs more than {times} generations per text, got {emb.shape[1]}")
        rng = rng if rng is not None else np.random.default_rng()
        pairs = (rng.choice(emb.shape[1], times, replace=False), rng.choice(emb.shape[1], times, replace=False))
    first, second = pairs
    return float(np.linalg.norm(emb[:, first] - emb[:, second], axis=2).mean())


def mean_interval(values: np.ndarray | list[float]) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(mean, 95% half-interval 1.96 * std / sqrt(reps)) over repetitions (axis 0, std with ddof 0)."""
    values = np.asarray(values, np.float64)
    mean, half = values.mean(0), 1.96 * values.std(0) / np.sqrt(len(values))
    return (float(mean), float(half)) if np.ndim(mean) == 0 else (mean, half)


def repeat(metric_fn: Callable[[int], dict[str, float]], reps: int = 20) -> dict[str, tuple[float, float]]:
    """Run `metric_fn(rep)` `reps` times (it draws its own batches/generations per rep) and summarise
    every returned metric as (mean, 95% half-interval)."""
    runs = [metric_fn(r) for r in range(reps)]
    return {key: mean_interval([run[key] for run in runs]) for key in runs[0]}


# ----------------------------------------------------------------------------- retrieval (TMR)
def _ranks(sim: np.ndarray) -> np.ndarray:
    """0-based rank of the diagonal item in each row of a similarity matrix (higher is better);
    ties average the positions they share."""
    sim = np.asarray(sim, np.float64)
    pos = np.diag(sim)[:, None]
    better = (sim > pos).sum(1)
    equal = (sim == pos).sum(1)  # includes the item itself
    return better + (equal - 1) / 2.0


def _recalls(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}/R@{k}": float(100.0 * np.mean(ranks < k)) for k in RECALL_KS}
    out[f"{prefix}/MedR"] = float(np.median(ranks) + 1)
    return out


def retrieval_metrics(sim: np.ndarray) -> dict[str, float]:
    """R@k and median rank in both directions from a square similarity matrix sim[text, motion]
    whose diagonal holds the matching pairs ("all" protocol when given the whole test set)."""
    sim = np.asarray(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"need a square similarity matrix, got {sim.shape}")
    return {**_recalls(_ranks(sim), "t2m"), **_recalls(_ranks(sim.T), "m2t")}


def similarity_matrix(text: np.ndarray, motion: np.ndarray, similarity: Similarity = "cosine") -> np.ndarray:
    """sim[text, motion]: cosine of the rows, or minus their Euclidean distance."""
    if similarity == "cosine":
        return _normalize(text) @ _normalize(motion).T
    if similarity == "euclidean":
        return -euclidean_distance_matrix(text, motion)
    raise ValueError(f"similarity must be 'cosine' or 'euclidean', got {similarity!r}")


def retrieval_in_batches(text_latent: np.ndarray, motion_latent: np.ndarray, batch_size: int = 32,
                         rng: np.random.Generator | None = None, similarity: Similarity = "cosine") -> dict[str, float]:
    """The "small batches" protocol: metrics inside each batch of `batch_size` pairs, averaged over
    batches; a partial last batch is dropped."""
    t, m = np.asarray(text_latent, np.float64), np.asarray(motion_latent, np.float64)
    batches = _batches(len(t), batch_size, rng)
    if not batches:
        raise ValueError(f"need at least one full batch of {batch_size} pairs, got {len(t)}")
    runs = [retrieval_metrics(similarity_matrix(t[idx], m[idx], similarity)) for idx in batches]
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def retrieval_all(text_latent: np.ndarray, motion_latent: np.ndarray,
                  similarity: Similarity = "cosine") -> dict[str, float]:
    """The "all" protocol: every text against every motion of the set."""
    return retrieval_metrics(similarity_matrix(text_latent, motion_latent, similarity))


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)



# ----------------------------------------------------------------------------- over caption rareness
def _checked(metric: Sequence[float], rareness: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    m, r = np.asarray(metric, np.float64).reshape(-1), np.asarray(rareness, np.float64).reshape(-1)
    if len(m) != len(r) or not len(m):
        raise ValueError(f"need as many metric values as rareness values (non-empty), got {len(m)} and {len(r)}")
    bad = ~(np.isfinite(m) & np.isfinite(r))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} non-finite metric/rareness values (first at {int(np.argmax(bad))})")
    return m, r


def tail_mean(metric: Sequence[float], rareness: Sequence[float], fraction: float = 0.05) -> float:
    """Mean metric over the rarest `fraction` of prompts (at least one; ties by input order)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    m, r = _checked(metric, rareness)
    count = max(1, int(np.ceil(fraction * len(m) - 1e-9)))
    return float(m[np.argsort(-r, kind="stable")[:count]].mean())


def balanced_mean(metric: Sequence[float], rareness: Sequence[float], bins: int = 100) -> float:
    """Mean over equal-width rareness bins (min..max) of the per-bin mean metric; empty bins skipped."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    m, r = _checked(metric, rareness)
    lo, hi = r.min(), r.max()
    which = np.zeros(len(r), np.int64) if hi == lo else np.minimum(((r - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
    sums, counts = np.bincount(which, m, bins), np.bincount(which, minlength=bins)
    return float((sums[counts > 0] / counts[counts > 0]).mean())

__all__ = ["RECALL_KS", "balanced_mean", "tail_mean", "Similarity", "diversity", "diversity_times", "euclidean_distance_matrix", "fid",
           "matching_score", "mean_interval", "multimodality", "r_precision", "repeat", "retrieval_all",
           "retrieval_in_batches", "retrieval_metrics", "similarity_matrix"]
