"""MATE's joint text-motion segmentation: one contiguous motion segment per sub-text, exactly.

For an annotation whose caption was split into sub-texts t_1..t_N (the decomposition processor's
`subtexts` column, in time order), cut its frame range [start_frame, end_frame) into N contiguous
segments, boundaries 0 = s_1 < e_1 = s_2 < ... < e_N = T relative to the range, each at least
`min_len` frames (and at most `max_len` when set), minimising

    sum_n 1 - cos(E_t(t_n), E_m(m[s_n:e_n]))

with the frozen text and motion encoders of a retrieval model (`models.retrieval`, a run dir).
Boundaries lie on a grid of `unit` frames from the range start (1: every frame); the last boundary
is always the range end, so the last segment may end off the grid. The search is exact over all
valid partitions on that grid: every segment that occurs in at least one valid partition is encoded
once (batched `encode_motion` calls over chunks of rows; a segment shared by annotations over the
same range is encoded once), and dynamic programming over the grid finds the optimum in O(N G^2)
(`optimal_partition`; `brute_force_partition` is the enumeration it is tested and benchmarked against).

Output column `segmentation`: per row a list with one struct per annotation (same order):
- status: "ok"        N >= 2 sub-texts, segmented;
          "whole"     N = 1 sub-text: the whole range is its segment (its cost is computed);
          "caption"   no checked sub-texts (entry missing, `texts` empty, or a decomposition whose
                      status is not "checked": it may invent or drop actions):
                      the caption itself over the whole range, as N = 1;
          "too_short" the range cannot hold N segments of >= min_len frames on the grid:
                      segments empty, total_cost NaN;
          "too_long"  a partition exists, but none whose segments are all <= max_len frames:
                      segments empty, total_cost NaN (only with max_len set).
- total_cost: the minimum (sum of the segments' costs), float32.
- unit: the grid step used, in frames.
- segments: per sub-text, in time order: text, start_frame / end_frame (ABSOLUTE frames of the
  motion, end exclusive: the annotation's start_frame added), cost (1 - cos), and MATE's Gaussian
  prior parameters in absolute frames, center = (start + end) / 2 and sigma = (end - start) / 2.
too_short / too_long take precedence over caption (the `caption_fallback` counter still counts it).
Counters: one per status, caption_fallback, segments_encoded, texts_encoded.
"""

from __future__ import annotations

import dataclasses
from math import comb
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Features, List, Value

from datasets_build.core.hashing import file_signature
from processors.base import Batch, Processor

SEGMENT = {"text": Value("string"), "start_frame": Value("int32"), "end_frame": Value("int32"),
           "cost": Value("float32"), "center": Value("float32"), "sigma": Value("float32")}
SEGMENTATION = {"status": Value("string"), "total_cost": Value("float32"), "unit": Value("int32"),
                "segments": List(SEGMENT)}
STATUSES = ("ok", "whole", "caption", "too_short", "too_long")


# ----------------------------------------------------------------------------------------------
# The search, in plain numpy (tested and benchmarked on its own)


def grid_points(frames: int, unit: int) -> np.ndarray:
    """Boundary offsets 0, unit, 2 unit, ... below `frames`, then `frames` itself (G points)."""
    if frames <= 0:
        return np.zeros(1, np.int64)
    return np.append(np.arange(0, frames, unit, dtype=np.int64), np.int64(frames))


def valid_segments(points: np.ndarray, min_len: int, max_len: int | None = None) -> np.ndarray:
    """(G, G) bool: [points[i], points[j]) is a segment a partition may use (i < j, length limits)."""
    length = points[None, :] - points[:, None]
    ok = length >= max(min_len, 1)
    if max_len is not None:
        ok &= length <= max_len
    return ok


def used_segments(valid: np.ndarray, n: int) -> np.ndarray:
    """(G, G) bool: the segments that occur in at least one valid partition of the grid (point 0
    to point G-1) into `n` segments. Only these need encoding; all False when none exists."""
    g = len(valid)
    forward = np.zeros((n + 1, g), bool)  # forward[k, i]: point i is reached from 0 by k segments
    backward = np.zeros((n + 1, g), bool)  # backward[k, j]: the end is reached from j by k segments
    forward[0, 0] = backward[0, g - 1] = True
    for k in range(1, n + 1):
        forward[k] = (forward[k - 1][:, None] & valid).any(axis=0)
        backward[k] = (valid & backward[k - 1][None, :]).any(axis=1)
    used = np.zeros_like(valid)
    for k in range(1, n + 1):  # the segment is the k-th of the partition
        used |= forward[k - 1][:, None] & valid & backward[n - k][None, :]
    return used


def optimal_partition(costs: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Exact minimum of sum_n costs[n, b_n, b_{n+1}] over grid boundaries 0 = b_0 < ... < b_N = G-1.

    `costs` is (N, G, G): the cost of sub-text n on segment [point i, point j); +inf marks a segment
    it may not use (too short, too long, not encoded, and every i >= j). Dynamic programming over
    the grid: best[j] after step n = the cheapest way to cover [0, point j) with n+1 segments, one
    vectorised (G, G) min per sub-text, O(N G^2). Returns (boundaries (N+1,) grid indices, total),
    or (None, inf) when no partition has a finite cost. Ties go to the earliest boundaries."""
    n_texts, g, _ = costs.shape
    best = np.full(g, np.inf)
    best[0] = 0.0
    back = np.empty((n_texts, g), np.int64)
    total = np.empty((g, g))  # reused: at small G numpy's per-call overhead is most of the time
    columns = np.arange(g)
    for n in range(n_texts):
        np.add(best[:, None], costs[n], out=total)  # (from i, to j)
        back[n] = total.argmin(axis=0)
        best = total[back[n], columns]
    if not np.isfinite(best[-1]):
        return None, float("inf")
    bounds = [g - 1]
    for n in range(n_texts - 1, -1, -1):
        bounds.append(int(back[n, bounds[-1]]))
    return np.asarray(bounds[::-1], np.int64), float(best[-1])


def combinations(n: int, k: int) -> np.ndarray:
    """All k-subsets of range(n), (C(n, k), k) int64 in lexicographic order, built with numpy."""
    out = np.zeros((1, 0), np.int64)
    for _ in range(k):
        last = out[:, -1] if out.shape[1] else np.full(len(out), -1, np.int64)
        counts = np.maximum(n - 1 - last, 0)  # next value in last+1 .. n-1
        rows = np.repeat(np.arange(len(out)), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        out = np.concatenate([out[rows], (last[rows] + 1 + offsets)[:, None]], axis=1)
    return out


def brute_force_partition(costs: np.ndarray, max_partitions: int = 20_000_000) -> tuple[np.ndarray | None, float]:
    """The same optimum as `optimal_partition` by enumerating every partition of the grid (all
    C(G-2, N-1) choices of interior boundaries), vectorised: the reference the DP is checked and
    benchmarked against. The first minimum in lexicographic order wins ties."""
    n_texts, g, _ = costs.shape
    count = _choose(g - 2, n_texts - 1)
    if count > max_partitions:
        raise ValueError(f"{count:,} partitions (G={g}, N={n_texts}) exceed max_partitions={max_partitions:,}")
    if count == 0:
        return None, float("inf")
    inner = combinations(g - 2, n_texts - 1) + 1
    bounds = np.concatenate([np.zeros((len(inner), 1), np.int64), inner,
                             np.full((len(inner), 1), g - 1, np.int64)], axis=1)
    totals = np.zeros(len(bounds))
    for n in range(n_texts):
        totals += costs[n, bounds[:, n], bounds[:, n + 1]]
    best = int(np.argmin(totals))
    if not np.isfinite(totals[best]):
        return None, float("inf")
    return bounds[best], float(totals[best])


def _choose(n: int, k: int) -> int:
    return comb(n, k) if 0 <= k <= n else 0


# ----------------------------------------------------------------------------------------------
# The processor


@dataclasses.dataclass
class _Plan:
    """One annotation's search: its range, sub-texts and the segments to encode."""

    texts: list[str]
    status: str
    points: np.ndarray | None = None  # absolute grid boundaries
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # grid indices (i, j) of the used segments
    segment_ids: np.ndarray | None = None  # their indices among the row's distinct segments


@dataclasses.dataclass(frozen=True)
class Segmentation(Processor):
    name: ClassVar[str] = "segmentation"
    version: ClassVar[str] = "1"
    cites: ClassVar[tuple[str, ...]] = ("mate",)
    inputs: ClassVar[tuple[str, ...]] = ("motion", "annotations", "subtexts")
    outputs: ClassVar[Features] = Features({"segmentation": List(SEGMENTATION)})
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = "models"
    cacheable: ClassVar[bool] = True  # a model pass over ~G^2/2 segments per annotation range
    num_gpus: ClassVar[float] = 0.5
    card_note: ClassVar[str] = (
        "Segmentation: `segmentation` cuts each annotation's frame range into one contiguous segment per "
        "sub-text, at the exact minimum of sum 1 - cos(text, motion segment) with the frozen encoders of a "
        "retrieval model, over all partitions on a grid of `unit` frames. Frames are absolute (end exclusive); "
        "`center` and `sigma` are MATE's Gaussian prior, (s+e)/2 and (e-s)/2. `status`: ok (N >= 2), whole "
        "(N = 1), caption (no checked sub-texts: the caption as N = 1), too_short (N segments do not fit), "
        "too_long (none fits under max_len).")

    encoder: str  # retrieval run dir (RUN_DIR/checkpoint.pt) or the checkpoint file itself
    unit: int = 4  # boundary grid step in frames (1: every frame)
    min_len: int = 4  # frames per segment, at least
    max_len: int | None = None  # frames per segment, at most (None: the exhaustive search)
    # Not configuration (results do not depend on them), so not in the fingerprint.
    device: str | None = dataclasses.field(default=None, compare=False)
    batch_size: int = dataclasses.field(default=64, compare=False)  # segments per motion-encoder batch
    chunk_segments: int = dataclasses.field(default=16384, compare=False)  # per encoder call (whole rows)
    # A text encoder object to use instead of loading the checkpoint's by name (tests, or one the
    # loader cannot name); the loader checks it is the one the model was trained with.
    text_encoder: Any = dataclasses.field(default=None, compare=False, repr=False)
    # Size and mtime of the checkpoint: a retrained model changes the fingerprint.
    encoder_signature: str = dataclasses.field(default="", init=False)

    def __post_init__(self) -> None:
        if self.unit < 1 or self.min_len < 1:
            raise ValueError(f"Segmentation: unit ({self.unit}) and min_len ({self.min_len}) must be >= 1")
        if self.max_len is not None and self.max_len < self.min_len:
            raise ValueError(f"Segmentation: max_len ({self.max_len}) is below min_len ({self.min_len})")
        path = Path(self.encoder)
        path = path / "checkpoint.pt" if path.is_dir() else path
        if path.is_file():
            object.__setattr__(self, "encoder_signature", file_signature(path))

    def __call__(self, batch: Batch) -> Batch:
        motions = [np.asarray(m, np.float32) for m in batch["motion"]]
        plans: list[list[_Plan]] = []
        segments: list[dict[tuple[int, int], int]] = []  # per row: (start, end) -> index, each encoded once
        for row, (motion, anns, subtexts) in enumerate(zip(motions, batch["annotations"], batch["subtexts"])):
            subtexts = subtexts if subtexts is not None else [None] * len(anns)
            if len(subtexts) != len(anns):
                raise ValueError(f"segmentation: row {row} has {len(subtexts)} subtexts entries for "
                                 f"{len(anns)} annotations (expected one per annotation)")
            segments.append({})
            plans.append([self._plan(len(motion), a, s, segments[-1]) for a, s in zip(anns, subtexts)])
        texts = list(dict.fromkeys(t for row in plans for p in row if p.pairs is not None for t in p.texts))
        self.counters["segments_encoded"] += sum(map(len, segments))
        self.counters["texts_encoded"] += len(texts)
        encoder, text_latents = None, {}
        if texts:  # no model at all for a batch with nothing to segment
            encoder = self.retrieval_model()
            text_latents = dict(zip(texts, encoder.encode_text(texts)))
        out: list[list[dict[str, Any]]] = [[] for _ in plans]
        chunk: list[int] = []
        # Rows in chunks of about `chunk_segments` segments: one encoder call per chunk (batches of
        # similar lengths across rows), and only one chunk's latents in memory (unit 1: ~17k per row).
        for row in range(len(plans) + 1):
            if row < len(plans):
                chunk.append(row)
            if chunk and (row == len(plans) or sum(len(segments[r]) for r in chunk) >= self.chunk_segments):
                clips = [motions[r][a:b] for r in chunk for a, b in segments[r]]  # views
                latents = encoder.encode_motion(clips, batch_size=self.batch_size) if clips else None
                offset = 0
                for r in chunk:
                    mine = latents[offset:offset + len(segments[r])] if clips else None
                    offset += len(segments[r])
                    out[r] = [self._solve(p, text_latents, mine) if p.pairs is not None else self._empty(p.status)
                              for p in plans[r]]
                chunk = []
        for p in (p for row in plans for p in row):
            self.counters[p.status] += 1
        return {"segmentation": out}

    def retrieval_model(self):
        """This worker's retrieval encoders, loaded on first use: a batch with nothing to segment
        needs no model (torch is imported only here)."""
        from models.retrieval.api import load_retrieval_model

        return self.resource("model", lambda: load_retrieval_model(self.encoder, self.device,
                                                                     text_encoder=self.text_encoder))

    def _plan(self, length: int, annotation: dict[str, Any], subtexts: dict[str, Any] | None,
              segments: dict[tuple[int, int], int]) -> _Plan:
        # Only a decomposition that passed its check: a failed one may invent or drop actions.
        checked = (subtexts or {}).get("status", "checked") == "checked"
        texts = [t for t in ((subtexts or {}).get("texts") or []) if t and t.strip()] if checked else []
        if not texts:
            self.counters["caption_fallback"] += 1
        status = "caption" if not texts else "whole" if len(texts) == 1 else "ok"
        texts = texts or [annotation["caption"]]
        start = max(int(annotation["start_frame"]), 0)
        end = min(int(annotation["end_frame"]), length)  # a sub-clip: its own range
        points = grid_points(end - start, self.unit)
        used = used_segments(valid_segments(points, self.min_len, self.max_len), len(texts))
        if not used.any():
            # Say which limit is at fault: without max_len, would a partition exist?
            fits = self.max_len is not None and used_segments(valid_segments(points, self.min_len), len(texts)).any()
            return _Plan(texts, "too_long" if fits else "too_short")
        i, j = np.nonzero(used)
        points = points + start
        ids = np.asarray([segments.setdefault((int(a), int(b)), len(segments))
                          for a, b in zip(points[i], points[j])], np.int64)
        return _Plan(texts, status, points, (i, j), ids)

    def _solve(self, plan: _Plan, text_latents: dict[str, np.ndarray], segment_latents: np.ndarray) -> dict[str, Any]:
        g = len(plan.points)
        i, j = plan.pairs
        t = np.stack([text_latents[x] for x in plan.texts]).astype(np.float64)
        costs = np.full((len(plan.texts), g, g), np.inf)
        costs[:, i, j] = 1.0 - t @ segment_latents[plan.segment_ids].astype(np.float64).T
        bounds, total = optimal_partition(costs)
        assert bounds is not None  # used_segments found a valid partition and all its costs are finite
        segments = []
        for n, text in enumerate(plan.texts):
            s, e = int(plan.points[bounds[n]]), int(plan.points[bounds[n + 1]])
            segments.append({"text": text, "start_frame": s, "end_frame": e,
                             "cost": float(costs[n, bounds[n], bounds[n + 1]]),
                             "center": (s + e) / 2, "sigma": (e - s) / 2})
        return {"status": plan.status, "total_cost": total, "unit": self.unit, "segments": segments}

    def _empty(self, status: str) -> dict[str, Any]:
        return {"status": status, "total_cost": float("nan"), "unit": self.unit, "segments": []}
