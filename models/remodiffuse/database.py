"""ReMoDiffuse's retrieval database (MODELS.md §4.2, §4.6): every training annotation with its CLIP
pooled feature, caption, frames, length and CLIP token sequence, plus precomputed neighbour lists.

Read from a `remodiffuse` build (`python -m datasets_build remodiffuse`: columns `text_features`,
`text_token_features`, folder `retrieval_neighbours/`) or from the reference's `.npz`
(`export-remodiffuse`: text_features, captions, motions, m_lengths, clip_seq_features,
train_indexes, train_keys). Motions stay in the build's memory map (or the npz arrays) and are
normalised with the model's statistics when fetched.

Hybrid score (paper Eq. 4): s_i = cos(f_i, f_q) * exp(-lambda |l_i - L| / max(l_i, L)).

Training retrieval, by default: the query is the sample's own annotation, `<id>#<annotation>` of the
dataset-level sample (the reference code indexes `train_indexes` with a caption index: MODELS.md 4.2),
and its neighbours are the build's list, which never holds its own motion (nor its mirror). With
`reference=True`: the reference's online rule, the top-k by score skipping candidates of the same
length as the query (its proxy for "not itself"). Generation: online top-k without exclusion.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch

from datasets_build.core.errors import UserError
from datasets_build.motion.normalizer import Normalizer

RECIPE_HINT = ("build it with `python -m datasets_build remodiffuse --source ... --out ...` (token features on, "
               "the model's --text-encoder) or pass a reference database with --database FILE")


class DatabaseError(UserError, ValueError):
    """A build or database file that lacks what retrieval needs."""


def hybrid_scores(query_features: np.ndarray, query_lengths: np.ndarray, db_features: np.ndarray,
                  db_lengths: np.ndarray, lam: float) -> np.ndarray:
    """(Q, N) float32: cos(f_i, f_q) * exp(-lam |l_i - L| / max(l_i, L))                 (paper Eq. 4)"""
    q = query_features / np.maximum(np.linalg.norm(query_features, axis=1, keepdims=True), 1e-12)
    d = db_features / np.maximum(np.linalg.norm(db_features, axis=1, keepdims=True), 1e-12)
    ql, dl = np.asarray(query_lengths, np.float64)[:, None], np.asarray(db_lengths, np.float64)[None]
    gamma = np.abs(dl - ql) / np.maximum(np.maximum(dl, ql), 1e-12)
    return (q @ d.T * np.exp(-lam * gamma)).astype(np.float32)


def top_k(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """(Q, k) indices of the best scores, best first (ties: the lower index); `excluded` (Q, N) bool."""
    s = np.where(excluded, -np.inf, scores) if excluded is not None else scores
    if k > s.shape[1]:
        raise DatabaseError(f"cannot retrieve {k} samples from a database of {s.shape[1]}")
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@dataclass
class RetrievalDatabase:
    features: np.ndarray                      # (N, F) float32 pooled text features
    lengths: np.ndarray                       # (N,) int64 frames, capped at max_length
    captions: list[str]
    keys: list[str]                           # "<id>#<annotation>"
    motion: Callable[[int], np.ndarray]       # entry -> raw frames (l, D)
    tokens: Callable[[int], np.ndarray]       # entry -> token features (P, W)
    neighbours: dict[str, np.ndarray] = field(default_factory=dict)  # training key -> entries, best first
    source: str = ""

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def index(self) -> dict[str, int]:
        if not hasattr(self, "_index"):
            self._index = {key: j for j, key in enumerate(self.keys)}
        return self._index

    def search(self, features: np.ndarray, lengths: Sequence[int], k: int, lam: float,
               skip_equal_length: bool = False) -> np.ndarray:
        """Online top-k (Q, k) entries; `skip_equal_length`: the reference's training rule."""
        scores = hybrid_scores(np.asarray(features, np.float32), np.asarray(lengths), self.features, self.lengths, lam)
        excluded = (self.lengths[None] == np.asarray(lengths)[:, None]) if skip_equal_length else None
        return top_k(scores, k, excluded)

    def training_neighbours(self, keys: Sequence[str], lengths: Sequence[int], k: int, lam: float,
                            rng: random.Random, reference: bool = False,
                            features: np.ndarray | None = None) -> np.ndarray:
        """(B, k) entries for training queries: the build's list (first k, shuffled), or with
        `reference` the online top-k skipping equal lengths (query `features`, default: the entries')."""
        if reference:
            if features is None:
                features = self.features[[self.index[key] for key in keys]]
            return self.search(features, lengths, k, lam, skip_equal_length=True)
        if not self.neighbours:
            raise DatabaseError(f"{self.source} has no neighbour lists keyed by training sample (train_keys): pass "
                                "--reference-retrieval, or write it with `python -m datasets_build export-remodiffuse`")
        out = np.empty((len(keys), k), np.int64)
        for i, key in enumerate(keys):
            found = self.neighbours.get(key)
            if found is None or len(found) < k:
                raise DatabaseError(f"{self.source} has {0 if found is None else len(found)} precomputed neighbours "
                                    f"for {key} where {k} are needed: rebuild with --k {k} or more")
            chosen = list(found[:k])
            rng.shuffle(chosen)
            out[i] = chosen
        return out

    def fetch(self, entries: np.ndarray, stats: Normalizer, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """entries (B, k) -> normalised motions (B, k, Tr, D) zero-padded to the longest, lengths (B, k),
        token features (B, k, P, W) float32."""
        flat = entries.reshape(-1)
        lengths = self.lengths[flat]
        frames = int(lengths.max())
        first = np.asarray(self.motion(int(flat[0])))
        motions = np.zeros((len(flat), frames, first.shape[1]), np.float32)
        for n, j in enumerate(flat):
            m = np.asarray(self.motion(int(j)))[:lengths[n]]
            motions[n, :len(m)] = (m - stats.mean) / stats.std
        tokens = np.stack([np.asarray(self.tokens(int(j)), np.float32) for j in flat])
        B, k = entries.shape
        return (torch.from_numpy(motions.reshape(B, k, frames, -1)).to(device),
                torch.from_numpy(lengths.reshape(B, k)).to(device),
                torch.from_numpy(tokens.reshape(B, k, *tokens.shape[1:])).to(device))


# ------------------------------------------------------------------------------------------ readers
def _list_values(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list<...> array (possibly sliced) -> (offsets rebased to 0, its child array)."""
    offsets = array.offsets.to_numpy()
    return offsets - offsets[0], array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


class _TokenColumn:
    """Lazy access to `text_token_features` (list<list<list<half>>>): entry -> (P, W) float16 view."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.chunks, self.starts = [], []
        for chunk in column.chunks:
            row_offsets, per_annotation = _list_values(chunk)          # rows -> annotations
            ann_offsets, per_token = _list_values(per_annotation)      # annotations -> tokens
            token_offsets, values = _list_values(per_token)            # tokens -> values
            width = int(token_offsets[1]) if len(token_offsets) > 1 else 0
            if len(token_offsets) > 1 and (np.diff(token_offsets) != width).any():
                raise DatabaseError("text_token_features rows have tokens of different widths")
            flat = values.to_numpy(zero_copy_only=False).reshape(-1, max(width, 1))
            self.chunks.append((flat, ann_offsets))
            self.starts.append(len(ann_offsets) - 1)
        self.bounds = np.r_[0, np.cumsum(self.starts)]

    def __call__(self, entry: int) -> np.ndarray:
        c = int(np.searchsorted(self.bounds, entry, side="right") - 1)
        flat, offsets = self.chunks[c]
        local = entry - self.bounds[c]
        return flat[offsets[local]:offsets[local + 1]]


def from_build(data: str | os.PathLike, max_length: int = 196) -> RetrievalDatabase:
    """The database of a `remodiffuse` build's train split, with its `retrieval_neighbours/train`."""
    import datasets

    from models.training.data import _arrow_view, open_split

    built = Path(data)
    train = open_split(built, "train")
    needed = ["text_features", "text_token_features"]
    missing = [c for c in needed if c not in train.column_names]
    if missing or not (built / "retrieval_neighbours" / "train").is_dir():
        what = ", ".join(missing + ([] if (built / "retrieval_neighbours" / "train").is_dir()
                                    else ["retrieval_neighbours/train"]))
        raise DatabaseError(f"{built} has no {what} for ReMoDiffuse's retrieval: {RECIPE_HINT}")
    table, selected = _arrow_view(train)
    if selected is not None:
        raise DatabaseError(f"{built}: the database needs the whole train split, not a filtered view")
    anns = table.column("annotations").combine_chunks()
    ann_offsets, structs = _list_values(anns)
    row = np.repeat(np.arange(len(anns)), np.diff(ann_offsets))
    position = np.arange(len(row)) - ann_offsets[row]
    ids = table.column("id").to_pylist()
    starts = structs.field("start_frame").to_numpy(zero_copy_only=False).astype(np.int64)
    ends = structs.field("end_frame").to_numpy(zero_copy_only=False).astype(np.int64)
    _, vectors = _list_values(table.column("text_features").combine_chunks())
    offsets, values = _list_values(vectors)
    features = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(row), -1)
    keys = [f"{ids[r]}#{a}" for r, a in zip(row, position)]
    from models.training.data import _ArrowRows

    rows = _ArrowRows(table)

    def motion(entry: int) -> np.ndarray:
        return rows.motion(int(row[entry]))[starts[entry]:ends[entry]][:max_length]

    index = {key: j for j, key in enumerate(keys)}
    # the train folder alone: a DatasetDict with an empty split does not load (datasets' concat of no tables)
    lists = datasets.load_from_disk(str(built / "retrieval_neighbours" / "train"))
    neighbours = {}
    for query_id, query_ann, found in zip(lists["id"], lists["annotation"], lists["neighbours"]):
        neighbours[f"{query_id}#{query_ann}"] = np.array([index[f"{n['id']}#{n['annotation']}"] for n in found],
                                                         np.int64)
    return RetrievalDatabase(features, np.minimum(ends - starts, max_length), structs.field("caption").to_pylist(),
                             keys, motion, _TokenColumn(table.column("text_token_features")), neighbours, str(built))


def from_npz(path: str | os.PathLike, max_length: int = 196) -> RetrievalDatabase:
    """The reference's `t2m_text_train.npz` (or our export of it)."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatabaseError(f"--database {path} is not a readable .npz file ({error})") from None
    needed = ("text_features", "captions", "motions", "m_lengths", "clip_seq_features")
    missing = [name for name in needed if name not in archive.files]
    if missing:
        raise DatabaseError(f"--database {path} lacks {', '.join(missing)}: write it with "
                            "`python -m datasets_build export-remodiffuse BUILT --out FILE`")
    motions, tokens = archive["motions"], archive["clip_seq_features"]
    lengths = np.minimum(archive["m_lengths"].astype(np.int64), max_length)
    n = len(lengths)
    keys = [str(k) for k in archive["train_keys"]] if "train_keys" in archive.files else [str(j) for j in range(n)]
    neighbours = {}
    if "train_indexes" in archive.files and "train_keys" in archive.files:  # lists without the query's motion
        neighbours = {key: np.asarray(row, np.int64) for key, row in zip(keys, archive["train_indexes"])}
    return RetrievalDatabase(archive["text_features"].astype(np.float32), lengths,
                             [str(c) for c in archive["captions"]], keys, lambda j: motions[j],
                             lambda j: tokens[j], neighbours, str(path))


def load_database(data: str | os.PathLike | None, database: str | os.PathLike | None,
                  max_length: int = 196) -> RetrievalDatabase:
    if database:
        return from_npz(database, max_length)
    if data is None:
        raise DatabaseError(f"no retrieval database: {RECIPE_HINT}")
    return from_build(data, max_length)


__all__ = ["DatabaseError", "RetrievalDatabase", "from_build", "from_npz", "hybrid_scores", "load_database", "top_k"]
