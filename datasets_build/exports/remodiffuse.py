"""ReMoDiffuse's retrieval database file (`t2m_text_train.npz` / `kit_text_train.npz`) from a build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset

from datasets_build.formats.built import BuiltDatasetError, processor_config
from processors.neighbours.hybrid import training_annotations, hybrid_topk, motion_groups
from processors.text.features import Annotations, read_annotations


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
        raise BuiltDatasetError(f"{built}: {column!r} was made by encoder {encoder!r}; ReMoDiffuse needs CLIP ViT-B/32 "
                         "features (rebuild with the 'clip' text encoder from local weights, token features on)")
    db = training_annotations(splits, column, "export_remodiffuse")
    token_column = column.removesuffix("_features") + "_token_features"
    if db.features.shape[1] != 512 or token_column not in splits["train"].column_names:
        raise BuiltDatasetError(f"{built}: need 512-d {column!r} and {token_column!r} (77 x 512) columns; found "
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
    for config in processor_config(built, "text_features"):
        if config.get("column", "text_features") == column:
            return config.get("encoder")
    return None


def _fill_missing(indices: np.ndarray, split: str) -> np.ndarray:
    """ReMoDiffuse indexes with these directly: repeat the last neighbour found instead of -1."""
    out = indices.copy()
    for row in np.flatnonzero((out < 0).any(axis=1)):
        found = out[row][out[row] >= 0]
        if not len(found):
            raise BuiltDatasetError(f"{split} annotation {row} has no retrievable training annotation")
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
            raise BuiltDatasetError(f"{token_column}: token sequences of rows {start}.. are not all 77 long (CLIP)")
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
