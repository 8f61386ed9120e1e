"""ReMoDiffuse-style retrieval over text features: exact hybrid top-k and the neighbours step.

Score of database annotation i for a query (feature f_q, length L):

    s_i = cos(f_i, f_q) * exp(-lam * |l_i - L| / max(l_i, L))

`hybrid_topk` computes the exact top k in blocks of queries (one matmul + top-k each, memory
bounded by `max_block_bytes`), never returning the query's own motion and, optionally, its mirror
(`M<id>` <-> `<id>`), or, in the reference's way, skipping candidates of equal length instead.
Lengths are annotation frame counts (a sub-clip: its own range).

`RetrievalNeighbours` (a dataset step, reads `text_features` and `annotations`): every annotation
of every split against all training annotations -> `<out>/retrieval_neighbours/{train,val,test}`.
Rareness lives in `processors.neighbours.rareness`, the ReMoDiffuse database file in
`datasets_build.exports.remodiffuse`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value

from datasets_build.core.deps import require
from datasets_build.core.device import pick_device
from processors.base import DatasetStep, StepInputError, save_dataset
from processors.text.features import Annotations, read_annotations

__all__ = [
    "Annotations", "RetrievalNeighbours", "hybrid_topk", "length_weights", "mirror_id", "motion_groups",
    "read_annotations", "verified_topk",
]

FAISS_PIP = "pip install faiss-cpu  (or faiss-gpu-cu12 on a CUDA machine)"


# ----------------------------------------------------------------------------------------------
# Exact hybrid top-k


def hybrid_topk(query_features: np.ndarray, query_lengths: np.ndarray, db_features: np.ndarray,
                db_lengths: np.ndarray, k: int = 2, lam: float = 0.1, *,
                query_groups: np.ndarray | None = None, db_groups: np.ndarray | None = None,
                skip_equal_length: bool | np.ndarray = False, backend: str = "torch",
                device: str | None = None, block_size: int | None = None,
                max_block_bytes: int = 256 << 20, progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database rows per query by the hybrid score.

    query_groups: (Q,) or (Q, E) int codes; a query never retrieves a database row whose
    `db_groups` code is one of its own (-1 = no code). skip_equal_length: bool, or (Q,) bool per
    query: drop candidates whose length equals the query's (the reference's rule). `progress`: the
    label of a progress bar over the query blocks (torch backend), or None for none.
    Returns indices (Q, k) int64 into the database (-1 where fewer than k candidates) and scores
    (Q, k) float32 (-inf there), best first.
    """
    q, d = _unit_rows(query_features, "query"), _unit_rows(db_features, "database")
    ql, dl = np.asarray(query_lengths, np.int64), np.asarray(db_lengths, np.int64)
    if not len(q) and not len(ql):  # an empty split (a tiny build's val): nothing to search for
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dims, database features {d.shape[1]}")
    if len(ql) != len(q) or len(dl) != len(d):
        raise ValueError(f"{len(ql)} query lengths for {len(q)} queries, {len(dl)} database lengths for {len(d)} rows")
    if k < 1 or lam < 0:
        raise ValueError(f"need k >= 1 and lam >= 0, got k={k}, lam={lam}")
    groups = _query_groups(query_groups, len(q), db_groups, len(d))
    skip = np.broadcast_to(np.asarray(skip_equal_length, bool), (len(q),))
    if backend == "faiss":
        return _faiss_topk(q, ql, d, dl, k, lam, groups, np.asarray(db_groups), skip)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}: 'torch' (exact, blocked) or 'faiss'")
    return _torch_topk(q, ql, d, dl, k, lam, groups, None if db_groups is None else np.asarray(db_groups),
                       skip, device, block_size, max_block_bytes, progress)


def length_weights(query_lengths: np.ndarray, db_lengths: np.ndarray, lam: float) -> np.ndarray:
    """exp(-lam * |l - L| / max(l, L)) for every (query, database) pair of lengths, float32."""
    ql = np.asarray(query_lengths, np.float64)[:, None]
    dl = np.asarray(db_lengths, np.float64)[None, :]
    rel = np.abs(dl - ql) / np.maximum(np.maximum(dl, ql), 1e-12)
    return np.exp(-lam * rel).astype(np.float32)


def _unit_rows(features: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} features must be 2-d (rows, dim), got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} features: {int(bad.sum())} rows hold NaN/inf (first row {int(np.argmax(bad))})")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _query_groups(query_groups, q: int, db_groups, n: int) -> np.ndarray | None:
    if query_groups is None:
        return None
    if db_groups is None or len(db_groups) != n:
        raise ValueError("query_groups needs db_groups with one code per database row")
    return np.asarray(query_groups, np.int64).reshape(q, -1)


def _exclusion_pairs(groups: np.ndarray, db_groups: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query row, database column) pairs to exclude, sorted by query row; `position` maps a
    database row to its column in the (length-sorted) score matrix."""
    order = np.argsort(db_groups, kind="stable")
    sorted_codes = db_groups[order]
    rows, cols = [], []
    for e in range(groups.shape[1]):
        codes = groups[:, e]
        lo = np.searchsorted(sorted_codes, codes, "left")
        hi = np.searchsorted(sorted_codes, codes, "right")
        counts = np.where(codes >= 0, hi - lo, 0)
        total = int(counts.sum())
        if total == 0:
            continue
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        rows.append(np.repeat(np.arange(len(codes)), counts))
        cols.append(position[order[starts + np.arange(total)]])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    by_row = np.argsort(rows_all, kind="stable")
    return rows_all[by_row], cols_all[by_row]


def _torch_topk(q, ql, d, dl, k, lam, groups, db_groups, skip, device, block_size, max_block_bytes, progress):
    import torch
    from tqdm.auto import tqdm

    device = pick_device(device)
    n = len(d)
    indices = np.full((len(q), k), -1, np.int64)
    scores = np.full((len(q), k), -np.inf, np.float32)
    if n == 0 or len(q) == 0:
        return indices, scores
    # Queries sorted by (length, skip) and the database by length: a run of queries of one length
    # scales its rows by one weight vector (contiguous memory, one pass), and the equal-length
    # candidates it may skip are one contiguous column range.
    q_order = np.lexsort((skip, ql))
    d_order = np.argsort(dl, kind="stable")
    position = np.empty(n, np.int64)
    position[d_order] = np.arange(n)
    sorted_dl = dl[d_order]
    db = torch.from_numpy(d[d_order]).to(device)
    qs, qls, skips = q[q_order], ql[q_order], skip[q_order]
    if groups is not None:
        pairs = _exclusion_pairs(groups[q_order], db_groups, position)
    block = block_size or max(1, min(len(q), max_block_bytes // (4 * n)))
    kk = min(k, n)
    with torch.inference_mode():
        for b0 in tqdm(range(0, len(q), block), desc=progress, unit=" blocks", leave=False, disable=progress is None):
            b1 = min(b0 + block, len(q))
            s = torch.from_numpy(qs[b0:b1]).to(device) @ db.T
            run_keys = np.stack([qls[b0:b1], skips[b0:b1]], 1)
            bounds = np.flatnonzero(np.any(run_keys[1:] != run_keys[:-1], axis=1)) + 1
            for r0, r1 in zip(np.r_[0, bounds], np.r_[bounds, b1 - b0]):
                if lam:
                    s[r0:r1] *= torch.from_numpy(length_weights(qls[b0 + r0 : b0 + r0 + 1], sorted_dl, lam)[0]).to(device)
                if skips[b0 + r0]:
                    a, b = np.searchsorted(sorted_dl, [qls[b0 + r0], qls[b0 + r0] + 1])
                    s[r0:r1, a:b] = -torch.inf
            if groups is not None and len(pairs[0]):
                lo, hi = np.searchsorted(pairs[0], [b0, b1])
                if hi > lo:
                    rows = torch.from_numpy(pairs[0][lo:hi] - b0).to(device)
                    s[rows, torch.from_numpy(pairs[1][lo:hi]).to(device)] = -torch.inf
            values, cols = torch.topk(s, kk, dim=1)
            indices[q_order[b0:b1], :kk] = d_order[cols.cpu().numpy()]
            scores[q_order[b0:b1], :kk] = values.float().cpu().numpy()
    indices[~np.isfinite(scores)] = -1
    return indices, scores


def _faiss_topk(q, ql, d, dl, k, lam, groups, db_groups, skip):
    """Exact with faiss: search the top m by cosine, rescore, and widen m for the queries whose
    k-th hybrid score could still be beaten by an unseen candidate (s_i <= max(cos_i, 0))."""
    require({"faiss": "faiss"}, "backend='faiss'", command=FAISS_PIP)
    import faiss

    index = faiss.IndexFlatIP(d.shape[1])
    index.add(np.ascontiguousarray(d))

    def search(rows: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        return index.search(np.ascontiguousarray(q[rows]), m)

    return verified_topk(search, ql, dl, len(d), k, lam, groups, db_groups, skip)


def verified_topk(search, ql, dl, n, k, lam, groups, db_groups, skip, first: int = 64):
    """Top k from a cosine top-m `search(rows, m) -> (cos (R, m), idx (R, m))`, exact by widening m."""
    indices = np.full((len(ql), k), -1, np.int64)
    scores = np.full((len(ql), k), -np.inf, np.float32)
    todo, m = np.arange(len(ql)), min(n, first)
    while len(todo) and n:
        cos, idx = search(todo, m)
        valid = idx >= 0
        safe = np.where(valid, idx, 0)
        s = cos * np.exp(-lam * np.abs(dl[safe] - ql[todo, None]) / np.maximum(np.maximum(dl[safe], ql[todo, None]), 1e-12))
        s = np.where(valid, s, -np.inf)
        if groups is not None:
            for e in range(groups.shape[1]):
                s[(db_groups[safe] == groups[todo, e : e + 1]) & (groups[todo, e : e + 1] >= 0)] = -np.inf
        s[skip[todo, None] & (dl[safe] == ql[todo, None])] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(s, top, 1).astype(np.float32)
        kth = best[:, -1] if best.shape[1] == k else np.full(len(todo), -np.inf)
        done = (m >= n) | (kth >= np.maximum(cos[:, -1], 0))
        keep = top[done]
        indices[todo[done], : keep.shape[1]] = np.take_along_axis(idx[done], keep, 1)
        scores[todo[done], : keep.shape[1]] = best[done]
        todo, m = todo[~done], min(n, m * 4)
    indices[~np.isfinite(scores)] = -1
    return indices, scores


def mirror_id(motion_id: str) -> str:
    """`M<id>` <-> `<id>`: the release's mirrored copy of a motion."""
    return motion_id[1:] if motion_id.startswith("M") else "M" + motion_id


def motion_groups(query_ids: Sequence[str], db_ids: Sequence[str], exclude_mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """Group codes for `hybrid_topk`: each query excludes its own motion (and its mirror)."""
    codes: dict[str, int] = {}
    db = np.fromiter((codes.setdefault(i, len(codes)) for i in db_ids), np.int64, len(db_ids))
    own = [codes.get(i, -1) for i in query_ids]
    columns = [own] + ([[codes.get(mirror_id(i), -1) for i in query_ids]] if exclude_mirror else [])
    return np.asarray(columns, np.int64).T.reshape(len(query_ids), len(columns)), db


# ----------------------------------------------------------------------------------------------
# Dataset steps


def _neighbour_features() -> Features:
    return Features({
        "id": Value("string"), "annotation": Value("int32"), "length": Value("int32"),
        "neighbours": List({"id": Value("string"), "annotation": Value("int32")}),
        "neighbour_ids": List(Value("string")), "scores": List(Value("float32")),
    })


def training_annotations(splits: DatasetDict, column: str, step: str) -> Annotations:
    if "train" not in splits:
        raise StepInputError(f"{step}: the build has no train split (the database); built splits: {list(splits)}")
    db = read_annotations(splits["train"], column, "train")
    if not len(db.ids):
        raise StepInputError(f"{step}: the train split has no annotations to retrieve from")
    return db


@dataclasses.dataclass(frozen=True)
class RetrievalNeighbours(DatasetStep):
    """Top-k training annotations for every annotation of every split (ReMoDiffuse's retrieval)."""

    name: ClassVar[str] = "retrieval_neighbours"
    version: ClassVar[str] = "1"
    cites: ClassVar[tuple[str, ...]] = ("remodiffuse",)
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = "retrieval"

    k: int = 2
    lam: float = 0.1
    exclude_mirror: bool = True
    # The reference's rule: no exclusion by id; training queries skip equal-length candidates
    # (ReMoDiffuse does so in training mode only; val/test queries skip nothing).
    reference_mode: bool = False
    column: str = "text_features"
    device: str | None = dataclasses.field(default=None, compare=False)
    backend: str = dataclasses.field(default="torch", compare=False)

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("id", "annotations", self.column)

    def neighbours(self, queries: Annotations, db: Annotations, training: bool,
                   label: str = "search") -> tuple[np.ndarray, np.ndarray]:
        groups, db_groups = (None, None) if self.reference_mode else motion_groups(
            queries.ids, db.ids, self.exclude_mirror)
        return hybrid_topk(queries.features, queries.lengths, db.features, db.lengths, self.k, self.lam,
                           query_groups=groups, db_groups=db_groups,
                           skip_equal_length=self.reference_mode and training,
                           backend=self.backend, device=self.device, progress=self.progress_label(label))

    def run(self, splits: DatasetDict, folder: Path, cache: Path) -> None:
        db = training_annotations(splits, self.column, self.name)
        out = {}
        for split, data in splits.items():
            queries = db if split == "train" else read_annotations(data, self.column, split)
            idx, scores = self.neighbours(queries, db, split == "train", f"{split} neighbours")
            found = idx >= 0
            self.counters["queries"] += len(idx)
            self.counters["short_lists"] += int((~found).any(axis=1).sum())
            keys = [[{"id": db.ids[j], "annotation": int(db.index[j])} for j in row[ok]] for row, ok in zip(idx, found)]
            out[split] = Dataset.from_dict({
                "id": list(queries.ids), "annotation": queries.index, "length": queries.lengths,
                "neighbours": keys, "neighbour_ids": [[key["id"] for key in row] for row in keys],
                "scores": [s[ok] for s, ok in zip(scores, found)],
            }, features=_neighbour_features())
        self.counters["database"] = len(db.ids)
        save_dataset(out, folder)
