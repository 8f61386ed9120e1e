"""Write built splits straight to the layout `Dataset.save_to_disk` produces, in one streaming pass.

Writing the shards ourselves lets a build stream rows from the
release to their final file once: no intermediate dataset, no second copy of the motion arrays,
memory bounded by one batch. `load_from_disk` reads the result like any saved dataset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from datasets import Array2D, Array3D, DatasetInfo, Features, List, Value
from datasets.arrow_writer import TypedSequence
from datasets.features.features import get_nested_type

DEFAULT_SHARD_BYTES = 500 * 1024 * 1024


def variable_length_array(arrays: Sequence[np.ndarray], feature: Array2D | Array3D) -> pa.Array:
    """Arrow column of an ArrayXD feature whose first dimension varies, built from numpy without
    a Python loop over values (the generic encoder walks every number)."""
    extension = get_nested_type(feature)
    storage_type = extension.storage_type
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    flat = (
        np.concatenate([np.asarray(a, dtype=feature.dtype).reshape(-1) for a in arrays])
        if len(arrays) else np.zeros(0, dtype=feature.dtype)
    )
    values: pa.Array = pa.array(flat)
    # Build the nested lists from the innermost dimension out.
    inner_dims = feature.shape[1:]
    count = flat.size
    for dim in reversed(inner_dims):
        count //= dim
        values = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * dim), values)
    outer_offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=outer_offsets[1:])
    storage = pa.ListArray.from_arrays(pa.array(outer_offsets), values).cast(storage_type)
    return pa.ExtensionArray.from_storage(extension, storage)


def column_array(values: list[Any], feature: Any) -> pa.Array:
    """Encode one column of python/numpy values as the Arrow array of its feature."""
    if isinstance(feature, (Array2D, Array3D)) and feature.shape[0] is None and all(
        isinstance(v, np.ndarray) for v in values
    ):
        return variable_length_array(values, feature)
    if isinstance(feature, (Value, List, dict)):  # plain Arrow types convert directly, in C++
        return pa.array(values, type=get_nested_type(feature))
    return pa.array(TypedSequence(values, type=feature))


def batch_table(columns: dict[str, list[Any]], features: Features) -> pa.Table:
    arrays = [column_array(columns[name], feature) for name, feature in features.items()]
    return pa.Table.from_arrays(arrays, schema=features.arrow_schema)


class ShardWriter:
    """Writes tables to `<stem>-NNN.arrow` files in a folder, starting a new file past `max_bytes`.

    The files are Arrow IPC streams whose schema carries the `datasets` features, the format
    `Dataset.save_to_disk` writes and `load_from_disk` memory-maps.
    """

    def __init__(self, folder: Path, stem: str, features: Features, max_bytes: int = DEFAULT_SHARD_BYTES):
        self.folder, self.stem, self.max_bytes = folder, stem, max_bytes
        self.schema = features.arrow_schema
        self.files: list[str] = []
        self.num_rows = 0
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._bytes = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None or self._bytes >= self.max_bytes:
            self._close_file()
            name = f"{self.stem}-{len(self.files):03d}.arrow"
            self.files.append(name)
            self._writer = pa.ipc.new_stream(str(self.folder / name), self.schema)
            self._bytes = 0
        self._writer.write_table(table)
        self._bytes += table.nbytes
        self.num_rows += table.num_rows

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[str]:
        self._close_file()
        return self.files


def finish_split_dir(split_dir: Path, files: list[str], features: Features, split: str,
                     fingerprint: str, description: str = "") -> None:
    """Rename shard files to save_to_disk's names and write its state.json and dataset_info.json."""
    if not files:  # an empty split still needs one (empty) file to load
        writer = ShardWriter(split_dir, "empty", features)
        writer.write(features.arrow_schema.empty_table())
        files = writer.close()
    names = [f"data-{i:05d}-of-{len(files):05d}.arrow" for i in range(len(files))]
    for old, new in zip(files, names):
        os.replace(split_dir / old, split_dir / new)
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (split_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    info = dataclasses.asdict(DatasetInfo(description=description, features=features))
    (split_dir / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2))


def write_dataset_dict_json(out: Path, splits: Sequence[str]) -> None:
    (out / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))


def append_columns(split_dir: Path, values: dict[str, list[Any]], features: Features, fingerprint: str) -> None:
    """Add columns to a split written by `finish_split_dir`, file by file (memory: the new columns
    and one record batch of the existing ones).

    `features` are the split's features after the addition; `values` hold one value per row, in
    row order. Each file is rewritten next to itself and swapped in, so an interrupted append
    leaves whole files (the build record, written last, tells a finished build from it).
    """
    state_path, info_path = split_dir / "state.json", split_dir / "dataset_info.json"
    state = json.loads(state_path.read_text())
    rows = 0
    for entry in state["_data_files"]:
        with pa.memory_map(str(split_dir / entry["filename"])) as source, pa.ipc.open_stream(source) as reader:
            rows += sum(batch.num_rows for batch in reader)
    wrong = {name: len(column) for name, column in values.items() if len(column) != rows}
    if wrong:
        raise ValueError(f"{split_dir}: columns with {wrong} values for a split of {rows} rows")
    added = {name: column_array(column, features[name]) for name, column in values.items()}
    schema = features.arrow_schema
    offset = 0
    for entry in state["_data_files"]:
        path = split_dir / entry["filename"]
        tmp = path.with_name(path.name + ".tmp")
        with pa.memory_map(str(path)) as source, pa.ipc.open_stream(source) as reader, \
                pa.ipc.new_stream(str(tmp), schema) as writer:
            for batch in reader:
                columns = {name: batch.column(name) for name in batch.schema.names}
                columns.update({name: array.slice(offset, batch.num_rows) for name, array in added.items()})
                writer.write_batch(pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema))
                offset += batch.num_rows
        os.replace(tmp, path)
    state["_fingerprint"] = fingerprint
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True))
    info = json.loads(info_path.read_text())
    info["features"] = features.to_dict()
    info_path.write_text(json.dumps(info, indent=2))
