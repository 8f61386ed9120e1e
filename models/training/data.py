"""Training samples from a built Arrow dataset, shared by every model.

`MotionDataset` is a torch Dataset over the samples of `datasets_build.flatten_samples` (sub-clips
are samples of their own; `sample_index` computes the same list with numpy, tested equal) that reads
motions straight from the Arrow memory map: the `motion` column's chunks are viewed as flat
float32 frames plus row offsets, so a sample is a numpy slice of the mapped file (no per-row Python
lists, no copy until normalisation). Builds open through the public `datasets` API (`open_split`:
a build folder, a DatasetDict or a `Dataset`, filtered/shuffled/selected ones too, read through
their indices mapping; a streaming IterableDataset is refused with `StreamingNotSupported`). It
pickles as the `Dataset` (file paths for a mapped one) plus small index arrays; a worker process
maps the files again itself, so `DataLoader(num_workers=N)` stays cheap to start.
`collate_ragged` batches rows read with `with_format("torch")` (ragged motions, zero-padded).

Reference rules (T2M / MoMask `Text2MotionDataset`), all options of `DataOptions`:
- keep samples with `min_length <= T < max_length` (HumanML3D 40..200, KIT-ML 24..200);
- crop to a multiple of `unit_length` (4); when `unit_length < 10` the reference draws
  `coin2 = choice(['single', 'single', 'double'])` and on 'double' crops one unit shorter, i.e. the
  shorter crop happens with probability 1/3 (`shorter_crop_prob`), which we reproduce because the
  pretrained evaluators and length predictors were trained on exactly this distribution;
- a random crop start in `[0, T - crop]`; z-normalise; zero-pad to `max_motion_length` (196);
- one caption drawn at random per sample per access.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch

from datasets_build.core.errors import UserError
from datasets_build.motion.normalizer import Normalizer, block_average as _block_average
from datasets_build.motion.specs import SPECS


class DataError(UserError, ValueError):
    """A build, split or statistics file that does not fit what the model needs."""


class MissingSplit(DataError, KeyError):
    """The build has no split of that name."""

    __str__ = Exception.__str__  # KeyError would print the message in quotes


@dataclass(frozen=True)
class DataOptions:
    min_length: int | None = 40
    max_length: int | None = 200  # exclusive
    unit_length: int = 4
    max_motion_length: int = 196  # pad (and, without a max_length filter, crop) to this
    shorter_crop_prob: float | None = None  # None: the reference's 1/3 when unit_length < 10, else 0
    random_crop: bool = True  # False: crop start 0 and never the shorter crop (evaluation)
    caption: str = "random"  # "random" (reference) or "first"

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> "DataOptions":
        """The reference filters of `humanml3d` (40 <= T < 200) or `kitml` (24 <= T < 200)."""
        presets = {"humanml3d": cls(min_length=40), "kitml": cls(min_length=24)}
        if dataset not in presets:
            raise DataError(f"unknown dataset {dataset!r}; expected one of {sorted(presets)}")
        return replace(presets[dataset], **overrides)

    def crop_length(self, length: int, rng: random.Random) -> int:
        """Frames kept from a sample of `length` frames (the reference's coin2 rule)."""
        prob = self.shorter_crop_prob
        if prob is None:
            prob = 1 / 3 if self.unit_length < 10 else 0.0
        units = length // self.unit_length
        if self.random_crop and units > 1 and rng.random() < prob:
            units -= 1  # coin2 == 'double'
        crop = units * self.unit_length
        # the reference never needs this (T < 200 crops to <= 196); without a max_length filter,
        # longer samples get a random window of the padded length
        crop = min(crop, self.max_motion_length // self.unit_length * self.unit_length)
        return crop if crop > 0 else length  # shorter than one unit: keep it whole


# ----------------------------------------------------------------------------- Arrow views
class StreamingNotSupported(DataError, TypeError):
    """An IterableDataset: samples need random access by row."""


def _load_build(data: str | os.PathLike) -> datasets.Dataset | datasets.DatasetDict:
    try:
        return datasets.load_from_disk(str(data))
    except FileNotFoundError:
        raise DataError(f"{data} is not a built dataset (datasets.load_from_disk finds none there)") from None


def open_split(data: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, split: str = "train"
               ) -> datasets.Dataset:
    """A split as a `datasets.Dataset`, through the public API: a build folder (load_from_disk),
    a DatasetDict, or a Dataset as it is (filtered, shuffled or selected ones included)."""
    if isinstance(data, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise StreamingNotSupported("a streaming (Iterable) dataset cannot be served by MotionDataset, which reads "
                                    "rows by index: load the build with datasets.load_from_disk, or "
                                    "load_dataset(..., streaming=False)")
    if isinstance(data, datasets.Dataset):
        return data
    ds = data if isinstance(data, datasets.DatasetDict) else _load_build(data)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise MissingSplit(f"split {split!r} is not in {data} (it has {', '.join(sorted(ds)) or 'none'})")
        return ds[split]
    return ds


def _arrow_view(ds: datasets.Dataset) -> tuple[pa.Table, np.ndarray | None]:
    """(the Arrow table behind `ds`, memory-mapped when it was loaded from disk; the table rows of
    `ds`'s rows in order, or None when they are the table's own). A filter/shuffle/select keeps
    the table and adds an indices mapping; reading through it keeps the motions zero-copy, where
    `flatten_indices()` would write a copy of the whole split."""
    table = ds.data.table
    indices = getattr(ds, "_indices", None)  # datasets has no public accessor for the mapping
    if indices is None:
        return table, None
    return table, indices.column(0).to_numpy().astype(np.int64)


def motion_chunks(table: pa.Table, column: str = "motion") -> list[tuple[np.ndarray, np.ndarray]]:
    """Per chunk of `column` (Array2D (None, D) float32): (frames [F, D] view, row offsets [n+1]).

    Zero-copy: the extension array's storage is list<list<float>>; its innermost values are the
    frames back to back, viewed as numpy without copying (read-only, backed by the memory map)."""
    out = []
    for chunk in table.column(column).chunks:
        storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
        rows = storage.offsets.to_numpy()  # frame offsets into storage.values (slice-aware)
        inner = storage.values
        offsets = inner.offsets.to_numpy()
        count = len(offsets) - 1
        dim = int(offsets[1] - offsets[0]) if count else 0
        if offsets[-1] - offsets[0] != count * dim:  # Array2D guarantees equal widths; cheap sanity check
            raise ValueError(f"column {column!r} has frames of unequal width")
        flat = inner.values.to_numpy(zero_copy_only=True)
        frames = flat[offsets[0]:offsets[0] + count * dim].reshape(-1, max(dim, 1))
        out.append((frames, rows))
    return out


class _ArrowRows:
    """Row access to a mapped split: motion views and captions, rebuilt in every process."""

    def __init__(self, table: pa.Table) -> None:
        self.chunks = motion_chunks(table)
        sizes = [len(rows) - 1 for _, rows in self.chunks]
        self.row_chunk = np.repeat(np.arange(len(sizes)), sizes)
        self.row_local = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, int)
        self.ids = table.column("id").chunks
        # captions: annotations is list<struct>; the struct's `caption` child is one flat string array
        self.captions, self.caption_offsets, self.tokens, self.pos = [], [], [], []
        names = table.schema.field("annotations").type.value_type
        has_tokens = names.get_field_index("tokens") >= 0 and names.get_field_index("pos") >= 0
        for chunk in table.column("annotations").chunks:
            self.captions.append(chunk.values.field("caption"))
            self.caption_offsets.append(chunk.offsets.to_numpy())
            if has_tokens:
                self.tokens.append(chunk.values.field("tokens"))
                self.pos.append(chunk.values.field("pos"))

    def motion(self, row: int) -> np.ndarray:
        frames, rows = self.chunks[self.row_chunk[row]]
        local = self.row_local[row]
        return frames[rows[local]:rows[local + 1]]

    def motion_id(self, row: int) -> str:
        return self.ids[self.row_chunk[row]][int(self.row_local[row])].as_py()

    def caption(self, row: int, annotation: int) -> str:
        c, local = self.row_chunk[row], self.row_local[row]
        return self.captions[c][int(self.caption_offsets[c][local]) + annotation].as_py()

    def word_tokens(self, row: int, annotation: int) -> list[str]:
        """The annotation's `word/POS` tokens (HumanML3D's text-file form); [] when the build has none."""
        if not self.tokens:
            return []
        c, local = self.row_chunk[row], self.row_local[row]
        at = int(self.caption_offsets[c][local]) + annotation
        words, tags = self.tokens[c][at].as_py() or [], self.pos[c][at].as_py() or []
        return [f"{w}/{t}" for w, t in zip(words, tags)]


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVW"  # sub-clip name prefixes, as flatten_samples assigns them


def _flat(table: pa.Table, column: str, field: str) -> np.ndarray:
    """One struct field of a list<struct> column as a flat numpy array (all rows, in order)."""
    parts = []
    for chunk in table.column(column).chunks:
        offsets = chunk.offsets.to_numpy()
        structs = chunk.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        parts.append(structs.field(field).to_numpy(zero_copy_only=False))
    return np.concatenate(parts) if parts else np.zeros(0)


def sample_index(table: pa.Table, min_length: int | None, max_length: int | None) -> dict[str, np.ndarray]:
    """The samples of `flatten_samples` (same order, rows, frame ranges, annotations and names;
    the tests check equality), computed with numpy over the Arrow columns: flatten_samples turns
    every annotation into Python objects, ~1 s for HumanML3D's train split, which would be most
    of the time to the first batch. Returns arrays: row, start, end, ann_ptr/ann_index (annotation
    positions within the row), prefix (0: whole motion, k: the k-th kept sub-clip, letter k-1)."""

    def keep(frames: np.ndarray) -> np.ndarray:
        ok = np.ones(len(frames), bool)
        if min_length is not None:
            ok &= frames >= min_length
        if max_length is not None:
            ok &= frames < max_length
        return ok

    lengths = table.column("length").to_numpy().astype(np.int64)
    counts = np.concatenate([np.diff(c.offsets.to_numpy()) for c in table.column("annotations").chunks] or
                            [np.zeros(0, np.int64)]).astype(np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    ann_row = np.repeat(np.arange(len(lengths)), counts)
    ann_local = np.arange(ptr[-1]) - ptr[ann_row]
    start, end = _flat(table, "annotations", "start_frame"), _flat(table, "annotations", "end_frame")
    is_sub = _flat(table, "annotations", "is_subclip").astype(bool)
    row_ok = keep(lengths)[ann_row]
    sub = np.flatnonzero(is_sub & row_ok & keep(end.astype(np.int64) - start))
    rank = np.arange(len(sub)) - np.searchsorted(sub, ptr[ann_row[sub]])  # kept sub-clips before, same row
    whole_ann = np.flatnonzero(~is_sub & row_ok)
    whole_rows, whole_counts = np.unique(ann_row[whole_ann], return_counts=True)
    # one list of candidates: sub-clips (in annotation order) then whole motions, stably sorted by
    # (row, whole after sub-clips), as flatten_samples appends them
    rows = np.concatenate([ann_row[sub], whole_rows])
    order = np.argsort(rows * 2 + np.r_[np.zeros(len(sub), int), np.ones(len(whole_rows), int)], kind="stable")
    n_counts = np.r_[np.ones(len(sub), np.int64), whole_counts][order]
    src_ptr = np.r_[np.arange(len(sub)), len(sub) + np.r_[0, np.cumsum(whole_counts)[:-1]]].astype(np.int64)[order]
    ann_ptr = np.r_[0, np.cumsum(n_counts)].astype(np.int64)
    flat = np.r_[ann_local[sub], ann_local[whole_ann]].astype(np.int32)
    ann_index = flat[np.repeat(src_ptr - ann_ptr[:-1], n_counts) + np.arange(ann_ptr[-1])]
    return {
        "row": rows[order],
        "start": np.r_[start[sub], np.zeros(len(whole_rows), np.int64)].astype(np.int64)[order],
        "end": np.r_[end[sub], lengths[whole_rows]].astype(np.int64)[order],
        "prefix": np.r_[rank + 1, np.zeros(len(whole_rows), np.int64)].astype(np.int32)[order],
        "ann_ptr": ann_ptr, "ann_index": ann_index,
    }


# ----------------------------------------------------------------------------- dataset
class MotionDataset(torch.utils.data.Dataset):
    """Samples of one split of a built dataset, as the reference loaders serve them.

    `data` is the build folder (`datasets.load_from_disk(data)[split]`), a DatasetDict, or a
    `datasets.Dataset` (a filtered or shuffled one serves its rows, in its order).
    `stats` is required: the model's own Normalizer, or None to return raw features on purpose.
    Items: {"motion": float32 [max_motion_length, D], "length": int, "caption": str, "name": str,
    "index": int}.
    """

    def __init__(self, data: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, split: str = "train", *,
                 stats: Normalizer | None, options: DataOptions | None = None) -> None:
        self.options = options or DataOptions()
        self.stats = stats
        self.source = open_split(data, split)  # pickles as its file paths when loaded from disk
        table, selected = _arrow_view(self.source)
        small = table.select(["length", "annotations"])
        index = sample_index(small if selected is None else small.take(selected),
                             self.options.min_length, self.options.max_length)
        # small index arrays, not Sample objects: they are what gets pickled to workers
        rows = index["row"] if selected is None else selected[index["row"]]  # table rows
        self.rows, self.starts, self.ends = rows, index["start"], index["end"]
        self.prefix, self.ann_ptr, self.ann_index = index["prefix"], index["ann_ptr"], index["ann_index"]
        self._rows: _ArrowRows | None = _ArrowRows(table)
        self._rng: random.Random | None = None
        self._rng_key: int | None = None
        if stats is not None and len(self.rows):
            dim = self.arrow.motion(int(self.rows[0])).shape[1]
            if stats.mean.shape[0] != dim:
                raise DataError(f"stats have {stats.mean.shape[0]} dims, motions have {dim}")

    # pickling: index arrays and options only; every process maps the files again
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_rows=None, _rng=None, _rng_key=None)
        return state

    @property
    def arrow(self) -> _ArrowRows:
        if self._rows is None:
            self._rows = _ArrowRows(self.source.data.table)
        return self._rows

    @property
    def rng(self) -> random.Random:
        # torch seeds each worker differently (initial_seed = base_seed + worker id) every epoch
        seed = torch.initial_seed()
        if self._rng is None or self._rng_key != seed:
            self._rng, self._rng_key = random.Random(seed), seed
        return self._rng

    def __len__(self) -> int:
        return len(self.rows)

    def raw_motion(self, index: int) -> np.ndarray:
        """The sample's whole frame range, a read-only view of the memory-mapped file."""
        return self.arrow.motion(int(self.rows[index]))[self.starts[index]:self.ends[index]]

    def name(self, index: int) -> str:
        """The reference's sample name: the motion id, or `<letter>_<id>` for a sub-clip."""
        k = int(self.prefix[index]) - 1
        prefix = "" if k < 0 else f"{_LETTERS[k] if k < len(_LETTERS) else k}_"
        return prefix + self.arrow.motion_id(int(self.rows[index]))

    def captions(self, index: int) -> list[str]:
        row = int(self.rows[index])
        return [self.arrow.caption(row, int(a)) for a in self.ann_index[self.ann_ptr[index]:self.ann_ptr[index + 1]]]

    def annotation_of(self, index: int, pick: int) -> tuple[int, int]:
        """(row of the split, annotation within that row) of caption `pick` of `captions(index)`: where the
        per-annotation columns of a build (`fine`, `subtexts`) keep that caption's fields."""
        return int(self.rows[index]), int(self.ann_index[self.ann_ptr[index] + pick])

    def word_tokens(self, index: int) -> list[list[str]]:
        """Per caption of `captions(index)`, its `word/POS` tokens (the evaluator's text input)."""
        row = int(self.rows[index])
        return [self.arrow.word_tokens(row, int(a))
                for a in self.ann_index[self.ann_ptr[index]:self.ann_ptr[index + 1]]]

    def crop(self, index: int) -> tuple[int, int]:
        """(start, length) of the frames this access uses (random unless options.random_crop=False)."""
        opt, rng = self.options, self.rng
        total = int(self.ends[index] - self.starts[index])
        length = opt.crop_length(total, rng)
        start = rng.randint(0, total - length) if opt.random_crop else 0
        return start, length

    def __getitem__(self, index: int) -> dict[str, Any]:
        opt = self.options
        start, length = self.crop(index)
        motion = self.raw_motion(index)[start:start + length]
        padded = np.zeros((opt.max_motion_length, motion.shape[1]), np.float32)  # crop <= this
        if self.stats is not None:  # normalise straight into the padded buffer: no temporaries
            np.subtract(motion, self.stats.mean, out=padded[:length])
            np.divide(padded[:length], self.stats.std, out=padded[:length])
        else:
            padded[:length] = motion
        a, b = self.ann_ptr[index], self.ann_ptr[index + 1]
        pick = self.rng.randrange(b - a) if opt.caption == "random" else 0
        caption = self.arrow.caption(int(self.rows[index]), int(self.ann_index[a + pick]))
        return {"motion": padded, "length": length, "caption": caption, "name": self.name(index),
                "index": index, "annotation": pick}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items: motion [B, T, D] float32, length [B] long, mask [B, T] bool, caption/name lists,
    index [B] and annotation [B] (the caption's position in `captions(index)`)."""
    motion = torch.from_numpy(np.stack([it["motion"] for it in items]))
    length = torch.tensor([it["length"] for it in items], dtype=torch.long)
    mask = torch.arange(motion.shape[1])[None, :] < length[:, None]
    return {"motion": motion, "length": length, "mask": mask, "caption": [it["caption"] for it in items],
            "name": [it["name"] for it in items], "index": torch.tensor([it["index"] for it in items]),
            "annotation": torch.tensor([it.get("annotation", 0) for it in items])}


def collate_ragged(items: list[dict[str, Any]], pad_to: int | None = None) -> dict[str, Any]:
    """Collate rows of a build read with `with_format("torch")` (or "numpy"), whose motions have
    different lengths, which torch's default collate refuses: `motion` zero-padded to the longest
    (or `pad_to`) [B, T, D] float32, `length` [B], `mask` [B, T] bool; equal-shaped tensors of
    other columns are stacked, everything else (ids, annotations) stays a list.

        loader = DataLoader(ds["train"].with_format("torch"), batch_size=32, collate_fn=collate_ragged)
    """
    motions = [torch.as_tensor(it["motion"], dtype=torch.float32) for it in items]
    length = torch.tensor([len(m) for m in motions], dtype=torch.long)
    frames = max(int(length.max()) if len(items) else 0, pad_to or 0)
    dim = motions[0].shape[-1] if motions else 0
    motion = torch.zeros(len(items), frames, dim)
    for i, m in enumerate(motions):
        motion[i, :len(m)] = m
    out: dict[str, Any] = {"motion": motion, "length": length,
                           "mask": torch.arange(frames)[None, :] < length[:, None]}
    for key in items[0] if items else ():
        if key in out:
            continue
        values = [it[key] for it in items]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int = 64, shuffle: bool = True, num_workers: int = 0,
                drop_last: bool = True, sampler: torch.utils.data.Sampler | None = None,
                collate_fn: Any = collate, **kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader with `collate`; forked workers share the parent's memory map, spawned ones
    unpickle the dataset (index arrays only) and map the files again. A `sampler` (the
    DistributedSampler of `loop.shard` under torchrun) replaces the shuffle."""
    if num_workers > 0:
        kwargs.setdefault("persistent_workers", True)
        kwargs.setdefault("prefetch_factor", 4)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                                       sampler=sampler, num_workers=num_workers, drop_last=drop_last,
                                       collate_fn=collate_fn, **kwargs)


class MotionWindows(torch.utils.data.Dataset):
    """Every window of `window` frames of every whole motion of a split (motions shorter than the
    window are skipped), normalised by `stats`: the movement autoencoder's samples (Guo et al.'s
    MotionDatasetV2, whose windows start at every frame). Items: float32 [window, D]."""

    def __init__(self, data: str | os.PathLike | datasets.Dataset, split: str = "train", *, stats: Normalizer | None,
                 window: int = 40) -> None:
        self.source, self.stats, self.window = open_split(data, split), stats, int(window)
        table, selected = _arrow_view(self.source)
        lengths = table.column("length").to_numpy().astype(np.int64)
        rows = np.arange(len(lengths)) if selected is None else selected
        self.rows = rows[lengths[rows] >= self.window]
        counts = lengths[self.rows] - self.window + 1
        self.ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        self._rows: _ArrowRows | None = _ArrowRows(table)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_rows"] = None
        return state

    def __len__(self) -> int:
        return int(self.ptr[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if self._rows is None:
            self._rows = _ArrowRows(self.source.data.table)
        k = int(np.searchsorted(self.ptr, index, side="right") - 1)
        start = int(index - self.ptr[k])
        frames = self._rows.motion(int(self.rows[k]))[start:start + self.window]
        out = np.array(frames, np.float32)
        return self.stats.normalize(out).astype(np.float32) if self.stats is not None else out


def compute_stats(data: str | os.PathLike | datasets.Dataset, split: str = "train", *,
                  block_average: str | None = None, eps: float = 1e-6) -> Normalizer:
    """Mean/std over every frame of a split's motions (each row once: sub-clips are not double
    counted). `block_average="humanml3d"|"kitml"` averages std within each block of the feature
    layout, as the release's Std.npy does. Accumulates in float64 over the mapped chunks."""
    total, s1, s2 = 0, 0.0, 0.0
    table, selected = _arrow_view(open_split(data, split))
    if selected is None:
        blocks = ((frames, int(rows[0]), int(rows[-1])) for frames, rows in motion_chunks(table))
    else:  # a filtered or shuffled split: its rows' frame ranges, each row once
        arrow = _ArrowRows(table)
        blocks = ((m, 0, len(m)) for m in (arrow.motion(int(r)) for r in np.unique(selected)))
    for frames, first, last in blocks:
        for lo in range(first, last, 1 << 16):  # bounded float64 blocks
            x = frames[lo:min(lo + (1 << 16), last)].astype(np.float64)
            s1, s2, total = s1 + x.sum(0), s2 + (x * x).sum(0), total + len(x)
    if not total:
        raise DataError(f"split {split!r} has no frames")
    mean = s1 / total
    std = np.sqrt(np.maximum(s2 / total - mean * mean, 0.0))
    if block_average is not None:
        std = _block_average(std, block_average)
    return Normalizer(mean, np.maximum(std, eps))


def dataset_name(data: str | os.PathLike | datasets.Dataset | datasets.DatasetDict) -> str:
    """`humanml3d` or `kitml`, from the feature width of a build (263 / 251)."""
    ds = data if isinstance(data, (datasets.Dataset, datasets.DatasetDict)) else _load_build(data)
    if isinstance(ds, datasets.DatasetDict) and not len(ds):
        raise DataError(f"{data} holds no splits")
    split = ds[next(iter(ds))] if isinstance(ds, datasets.DatasetDict) else open_split(ds)
    width = split.features["motion"].shape[1]
    for name, spec in SPECS.items():
        if spec.feature_dim == width:
            return name
    raise DataError(f"{data}: feature width {width} is neither HumanML3D's nor KIT-ML's")


__all__ = ["DataError", "DataOptions", "MissingSplit", "MotionDataset", "MotionWindows", "Normalizer", "collate",
           "collate_ragged", "compute_stats", "dataset_name", "make_loader", "motion_chunks", "open_split",
           "sample_index", "StreamingNotSupported"]
