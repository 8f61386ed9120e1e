"""ReMoDiffuse-style retrieval over text features: neighbours, rareness, and the model's database file.

Score of database annotation i for a query (feature f_q, length L):

    s_i = cos(f_i, f_q) * exp(-lam * |l_i - L| / max(l_i, L))

`hybrid_topk` computes the exact top k in blocks of queries (one matmul + top-k each, memory
bounded by `max_block_bytes`), never returning the query's own motion and, optionally, its mirror
(`M<id>` <-> `<id>`), or, in the reference's way, skipping candidates of equal length instead.
Lengths are annotation frame counts (a sub-clip: its own range).

Dataset steps (run after the splits are written; read `text_features` and `annotations`):
- `RetrievalNeighbours`: every annotation of every split against all training annotations ->
  `<out>/retrieval_neighbours/{train,val,test}`.
- `Rareness`: 1 - max cosine to any training caption for val/test annotations ->
  `<out>/rareness/{val,test}`, `rareness.png`, `summary.json`.
`export_remodiffuse` writes ReMoDiffuse's database file (`t2m_text_train.npz`) from a build.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value

from processors.base import DatasetStep, MissingDependency
from processors.text_features import Annotations, read_annotations

__all__ = [
    "Annotations", "RetrievalNeighbours", "Rareness", "balanced_mean", "export_remodiffuse", "hybrid_topk",
    "length_weights", "mirror_id", "motion_groups", "plot_rareness", "read_annotations", "tail_mean",
    "verified_topk",
]

FAISS_PIP = "pip install faiss-cpu  (or faiss-gpu-cu12 on a CUDA machine)"


# ----------------------------------------------------------------------------------------------
# Exact hybrid top-k


def hybrid_topk(query_features: np.ndarray, query_lengths: np.ndarray, db_features: np.ndarray,
                db_lengths: np.ndarray, k: int = 2, lam: float = 0.1, *,
                query_groups: np.ndarray | None = None, db_groups: np.ndarray | None = None,
                skip_equal_length: bool | np.ndarray = False, backend: str = "torch",
                device: str | None = None, block_size: int | None = None,
                max_block_bytes: int = 256 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database rows per query by the hybrid score.

    query_groups: (Q,) or (Q, E) int codes; a query never retrieves a database row whose
    `db_groups` code is one of its own (-1 = no code). skip_equal_length: bool, or (Q,) bool per
    query: drop candidates whose length equals the query's (the reference's rule).
    Returns indices (Q, k) int64 into the database (-1 where fewer than k candidates) and scores
    (Q, k) float32 (-inf there), best first.
    """
    q, d = _unit_rows(query_features, "query"), _unit_rows(db_features, "database")
    ql, dl = np.asarray(query_lengths, np.int64), np.asarray(db_lengths, np.int64)
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
                       skip, device, block_size, max_block_bytes)


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


def _torch_topk(q, ql, d, dl, k, lam, groups, db_groups, skip, device, block_size, max_block_bytes):
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        for b0 in range(0, len(q), block):
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
    if importlib.util.find_spec("faiss") is None:
        raise MissingDependency(f"backend='faiss' needs faiss: {FAISS_PIP}")
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


def _training(splits: DatasetDict, column: str, step: str) -> Annotations:
    if "train" not in splits:
        raise ValueError(f"{step}: the build has no train split (the database); built splits: {list(splits)}")
    db = read_annotations(splits["train"], column, "train")
    if not len(db.ids):
        raise ValueError(f"{step}: the train split has no annotations to retrieve from")
    return db


@dataclasses.dataclass(frozen=True)
class RetrievalNeighbours(DatasetStep):
    """Top-k training annotations for every annotation of every split (ReMoDiffuse's retrieval)."""

    name: ClassVar[str] = "retrieval_neighbours"
    version: ClassVar[str] = "1"
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

    def neighbours(self, queries: Annotations, db: Annotations, training: bool) -> tuple[np.ndarray, np.ndarray]:
        groups, db_groups = (None, None) if self.reference_mode else motion_groups(
            queries.ids, db.ids, self.exclude_mirror)
        return hybrid_topk(queries.features, queries.lengths, db.features, db.lengths, self.k, self.lam,
                           query_groups=groups, db_groups=db_groups,
                           skip_equal_length=self.reference_mode and training,
                           backend=self.backend, device=self.device)

    def run(self, splits: DatasetDict, folder: Path, cache: Path) -> None:
        db = _training(splits, self.column, self.name)
        out = {}
        for split, data in splits.items():
            queries = db if split == "train" else read_annotations(data, self.column, split)
            idx, scores = self.neighbours(queries, db, split == "train")
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
        _save(out, folder)


@dataclasses.dataclass(frozen=True)
class Rareness(DatasetStep):
    """r = 1 - max cosine to any training caption, per annotation of the evaluation splits."""

    name: ClassVar[str] = "rareness"
    version: ClassVar[str] = "1"
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = "retrieval"

    eval_splits: tuple[str, ...] = ("val", "test")
    column: str = "text_features"
    plot: bool = dataclasses.field(default=True, compare=False)
    device: str | None = dataclasses.field(default=None, compare=False)

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("id", "annotations", self.column)

    def run(self, splits: DatasetDict, folder: Path, cache: Path) -> None:
        db = _training(splits, self.column, self.name)
        out, values = {}, {}
        for split in [s for s in self.eval_splits if s in splits]:
            queries = read_annotations(splits[split], self.column, split)
            idx, cos = hybrid_topk(queries.features, queries.lengths, db.features, db.lengths, 1, 0.0,
                                   device=self.device)
            values[split] = np.clip(1.0 - cos[:, 0], 0.0, 2.0).astype(np.float32)
            j = idx[:, 0]
            out[split] = Dataset.from_dict({
                "id": list(queries.ids), "annotation": queries.index, "caption": queries.captions,
                "rareness": values[split], "nearest_id": [db.ids[i] for i in j],
                "nearest_annotation": db.index[j], "nearest_caption": [db.captions[i] for i in j],
            }, features=Features({"id": Value("string"), "annotation": Value("int32"), "caption": Value("string"),
                                  "rareness": Value("float32"), "nearest_id": Value("string"),
                                  "nearest_annotation": Value("int32"), "nearest_caption": Value("string")}))
            self.counters[f"{split}_annotations"] += len(j)
        _save(out, folder)  # no evaluation split built: an empty folder with an empty summary
        summary = {split: {"count": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v)),
                           "p95": float(np.quantile(v, 0.95)), "max": float(v.max())}
                   for split, v in values.items() if len(v)}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.plot and values and importlib.util.find_spec("matplotlib") is not None:
            plot_rareness(values, folder / "rareness.png")


def _save(splits: dict[str, Dataset], folder: Path) -> None:
    """A DatasetDict under `folder` (`load_from_disk(folder)`), without a progress bar per split."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    folder.mkdir(parents=True, exist_ok=True)
    if not splits:
        return
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        DatasetDict(splits).save_to_disk(str(folder))
    finally:
        if not was_disabled:
            enable_progress_bars()


# ----------------------------------------------------------------------------------------------
# Rareness-aware metrics


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


def plot_rareness(values_by_split: dict[str, Sequence[float]], out_png: str | Path, bins: int = 50) -> Path:
    """Histogram of rareness per split into a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for split, v in values_by_split.items():
        v = np.asarray(v, np.float64)
        axes.hist(v, bins=bins, alpha=0.6, label=f"{split} (n={len(v)}, mean {v.mean():.3f})" if len(v) else split)
    axes.set(xlabel="rareness = 1 - max cosine to a training caption", ylabel="annotations")
    axes.legend()
    figure.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


# ----------------------------------------------------------------------------------------------
# ReMoDiffuse's database file


def export_remodiffuse(built_dir: str | Path, out_file: str | Path, *, column: str = "text_features",
                       max_length: int = 196, index_k: int = 4, lam: float = 0.1, exclude_mirror: bool = True,
                       test_split: str = "test", require_clip: bool = True, batch_size: int = 64) -> dict:
    """Write ReMoDiffuse's retrieval database (`t2m_text_train.npz` / `kit_text_train.npz`).

    Needs a build with `TextFeatures(encoder="clip", token_features=True)` (OpenAI CLIP ViT-B/32:
    the features ReMoDiffuse's model was trained with; `require_clip=False` accepts clip-random).
    One entry per training annotation, in row then annotation order: text_features (N, 512),
    captions (N,), motions (N, max_length, D) float32 (the annotation's frames, cut at max_length,
    zero-padded), m_lengths (N,), clip_seq_features (N, 77, 512) float32; train_indexes (N, index_k)
    = hybrid neighbours of each entry (own motion and mirror excluded), test_indexes (M, index_k) for
    the `test_split` annotations; train_keys / test_keys (`<id>#<annotation>`) name the rows.
    Streams the arrays into the file: memory stays at one batch of motions.
    """
    import datasets

    built, out = Path(built_dir), Path(out_file)
    splits = datasets.load_from_disk(str(built))
    encoder = _encoder_of(built, column)
    if require_clip and encoder != "clip":
        raise ValueError(f"{built}: {column!r} was made by encoder {encoder!r}; ReMoDiffuse needs CLIP ViT-B/32 "
                         "features (rebuild with --text-encoder clip --clip-checkpoint FILE, token features on)")
    db = _training(splits, column, "export_remodiffuse")
    token_column = column.removesuffix("_features") + "_token_features"
    if db.features.shape[1] != 512 or token_column not in splits["train"].column_names:
        raise ValueError(f"{built}: need 512-d {column!r} and {token_column!r} (77 x 512) columns; found "
                         f"{db.features.shape[1]}-d features and columns {splits['train'].column_names}")
    m_lengths = np.minimum(db.lengths, max_length)
    groups, db_groups = motion_groups(db.ids, db.ids, exclude_mirror)
    train_idx, _ = hybrid_topk(db.features, m_lengths, db.features, m_lengths, index_k, lam,
                               query_groups=groups, db_groups=db_groups)
    test = read_annotations(splits[test_split], column, test_split) if test_split in splits else None
    test_idx = np.zeros((0, index_k), np.int64)
    if test is not None and len(test.ids):
        groups, db_groups = motion_groups(test.ids, db.ids, exclude_mirror)
        test_idx, _ = hybrid_topk(test.features, test.lengths, db.features, m_lengths, index_k, lam,
                                  query_groups=groups, db_groups=db_groups)
    train_data = splits["train"]
    width = train_data.features["motion"].shape[1]
    _write_npz(out, {
        "text_features": db.features, "captions": np.asarray(db.captions, dtype=str),
        "motions": ((len(db.ids), max_length, width), np.float32,
                    _motion_chunks(train_data, db, max_length, batch_size)),
        "m_lengths": m_lengths.astype(np.int64),
        "clip_seq_features": ((len(db.ids), 77, 512), np.float32,
                              _token_chunks(train_data, token_column, batch_size)),
        "train_indexes": _fill_missing(train_idx, "train"), "test_indexes": _fill_missing(test_idx, test_split),
        "train_keys": np.asarray(db.keys, dtype=str), "test_keys": np.asarray(test.keys if test else [], dtype=str),
    })
    return {"file": str(out), "entries": len(db.ids), "test_entries": len(test_idx), "encoder": encoder}


def _encoder_of(built: Path, column: str) -> str | None:
    record = json.loads((built / "build.json").read_text()) if (built / "build.json").is_file() else {}
    for processor in record.get("processors", []):
        config = processor.get("config", {})
        if processor.get("name") == "text_features" and config.get("column", "text_features") == column:
            return config.get("encoder")
    return None


def _fill_missing(indices: np.ndarray, split: str) -> np.ndarray:
    """ReMoDiffuse indexes with these directly: repeat the last neighbour found instead of -1."""
    out = indices.copy()
    for row in np.flatnonzero((out < 0).any(axis=1)):
        found = out[row][out[row] >= 0]
        if not len(found):
            raise ValueError(f"{split} annotation {row} has no retrievable training annotation")
        out[row, len(found):] = found[-1]
    return out


def _motion_chunks(data: Dataset, db: Annotations, max_length: int, batch_size: int):
    ann, data = 0, data.select_columns(["motion"]).with_format("numpy")
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]["motion"]
        rows = []
        for offset, motion in enumerate(batch):
            while ann < len(db.row) and db.row[ann] == start + offset:
                piece = np.asarray(motion, np.float32)[db.starts[ann] : db.starts[ann] + db.lengths[ann]][:max_length]
                padded = np.zeros((max_length, piece.shape[1]), np.float32)
                padded[: len(piece)] = piece
                rows.append(padded)
                ann += 1
        if rows:
            yield np.stack(rows)


def _token_chunks(data: Dataset, token_column: str, batch_size: int):
    data = data.select_columns([token_column]).with_format("arrow")
    for start in range(0, len(data), batch_size):
        table = data[start : start + batch_size]
        per_annotation = table.column(token_column).combine_chunks().flatten()
        if len(per_annotation) and set(per_annotation.value_lengths().to_numpy(zero_copy_only=False)) != {77}:
            raise ValueError(f"{token_column}: token sequences of rows {start}.. are not all 77 long (CLIP)")
        values = per_annotation.flatten().flatten().to_numpy(zero_copy_only=False)
        yield values.astype(np.float32).reshape(len(per_annotation), 77, -1)


def _write_npz(path: Path, arrays: dict) -> None:
    """np.savez's format, written member by member; (shape, dtype, chunks) members are streamed."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                if isinstance(value, np.ndarray):
                    np.lib.format.write_array(handle, value, allow_pickle=False)
                    continue
                shape, dtype, chunks = value
                np.lib.format.write_array_header_1_0(handle, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
                rows = 0
                for chunk in chunks:
                    chunk = np.ascontiguousarray(chunk, dtype)
                    if chunk.shape[1:] != shape[1:]:
                        raise ValueError(f"{name}: chunk of shape {chunk.shape}, expected (*, {shape[1:]})")
                    handle.write(chunk.tobytes())
                    rows += len(chunk)
                if rows != shape[0]:
                    raise ValueError(f"{name}: wrote {rows} rows, expected {shape[0]}")
    partial.replace(path)
