"""`export-parquet`: a build as sharded Parquet files with plain Arrow types, for the rest of the
ecosystem (polars, DuckDB, Spark, `ray.data.read_parquet`, pandas).

Every dataset of the build becomes a folder of `part-NNNNN.parquet` files: the splits (`train/`,
`val/`, `test/`) and the side datasets (`release_stats/`, `vocabulary/`, `retrieval_neighbours/train/`,
...). The `datasets` extension types become nested lists: a motion `Array2D((None, D), float32)` is
`list<fixed_size_list<float>[D]>`, joints `Array3D((None, J, 3))` are
`list<fixed_size_list<fixed_size_list<float>[3]>[J]>`; everything else already is plain Arrow. The
files carry no `huggingface` schema metadata, so a reader sees what it reads.

Beside them: `features.json` (each dataset's `datasets.Features`, for the way back), `export.json`
(files and rows per dataset, the build's fingerprint), the build's dataset card (`README.md`: the
license terms travel with the data), `rejected.jsonl`, and under `extras/` the side folders' other
files (`vocabulary.json`, summaries, plots), kept out of the Parquet folders. The way back:

    features = datasets.Features.from_dict(json.load(open(f"{DIR}/features.json"))["train"])
    train = datasets.Dataset.from_parquet(f"{DIR}/train/*.parquet").cast(features)

(`from_parquet` refuses a folder without rows, as an empty split's is: that split is
`datasets.Dataset.from_dict({name: [] for name in features}, features=features)`.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from datasets_build.core.errors import UserError
from datasets_build.formats.built import MANIFEST, read_build_record, require_built

FILE_BYTES = 512 * 1024 * 1024  # of Arrow data per Parquet file (what Spark and Ray read as one task)
ROW_GROUP_BYTES = 64 * 1024 * 1024  # of Arrow data per row group (a reader's unit of work)
CARD = "README.md"
SAVED_FILES = {"dataset_dict.json", "state.json", "dataset_info.json"}  # what save_to_disk writes besides .arrow


class ParquetExportError(UserError, ValueError):
    """The export cannot be written where it was asked to."""


def export_parquet(built: str | Path, out: str | Path, *, file_bytes: int = FILE_BYTES,
                   row_group_bytes: int = ROW_GROUP_BYTES, overwrite: bool = False) -> str:
    """Write every dataset of the build `built` under `out` (see the module docstring); a summary."""
    built, out = Path(built), Path(out)
    require_built(built)  # one sentence when it is not a build
    if out.resolve() == built.resolve() or built.resolve() in out.resolve().parents:
        raise ParquetExportError(f"the Parquet folder {out} is inside the build {built}; choose a folder outside it")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ParquetExportError(f"the Parquet folder {out} is not empty")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    features: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    for name, dataset in built_datasets(built):
        files, rows = write_parquet(dataset.data.table, out / name, file_bytes, row_group_bytes)
        features[name] = dataset.features.to_dict()
        manifest[name] = {"files": files, "rows": rows}
    for extra in (CARD, MANIFEST):
        if (built / extra).is_file():
            shutil.copyfile(built / extra, out / extra)
    for name, path in side_files(built):  # vocabulary.json, summaries, plots: kept apart from the Parquet
        (out / "extras" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / "extras" / name)
    (out / "features.json").write_text(json.dumps(features, indent=1))
    record = read_build_record(built) or {}
    (out / "export.json").write_text(json.dumps({"build": str(built), "fingerprint": record.get("fingerprint"),
                                                 "datasets": manifest}, indent=1))
    total = sum(len(entry["files"]) for entry in manifest.values())
    return (f"wrote {len(manifest)} datasets ({', '.join(manifest)}) to {out}: {total} Parquet files, "
            f"{sum(entry['rows'] for entry in manifest.values()):,} rows")


def built_datasets(built: Path) -> Iterator[tuple[str, Any]]:
    """(name, Dataset) for each split of the build, then each side dataset (a split of a side
    DatasetDict is named `<folder>/<split>`), in a fixed order."""
    import datasets

    splits = json.loads((built / "dataset_dict.json").read_text())["splits"]
    for split in splits:
        yield split, datasets.load_from_disk(str(built / split))
    for folder in sorted(p for p in built.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in splits:
            continue
        if (folder / "dataset_dict.json").is_file():
            for split in json.loads((folder / "dataset_dict.json").read_text())["splits"]:
                yield f"{folder.name}/{split}", datasets.load_from_disk(str(folder / split))
        elif (folder / "state.json").is_file():
            yield folder.name, datasets.load_from_disk(str(folder))


def side_files(built: Path) -> Iterator[tuple[str, Path]]:
    """(name, path) of the files of the side folders that are not part of a saved dataset."""
    splits = set(json.loads((built / "dataset_dict.json").read_text())["splits"])
    for folder in sorted(p for p in built.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in splits:
            for path in sorted(folder.glob("*")):
                if path.is_file() and path.name not in SAVED_FILES and path.suffix != ".arrow":
                    yield f"{folder.name}/{path.name}", path


def write_parquet(table: pa.Table, folder: Path, file_bytes: int = FILE_BYTES,
                  row_group_bytes: int = ROW_GROUP_BYTES) -> tuple[list[str], int]:
    """`table` as `folder/part-NNNNN.parquet` files of about `file_bytes` each, with plain types;
    (file names, rows). An empty table still gets one file (its schema)."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([pa.field(f.name, plain_type(f.type), f.nullable) for f in table.schema])
    rows_per_group = max(1, int(row_group_bytes // max(1, table.nbytes // max(1, table.num_rows))))
    if table.num_rows == 0:  # still one file: its schema, and no row group (an empty one trips readers)
        pq.ParquetWriter(folder / "part-00000.parquet", schema, compression="zstd").close()
        return ["part-00000.parquet"], 0
    files: list[str] = []
    writer: pq.ParquetWriter | None = None
    written = 0
    for batch in table.to_batches(max_chunksize=rows_per_group):
        if writer is None or written >= file_bytes:
            if writer is not None:
                writer.close()
            files.append(f"part-{len(files):05d}.parquet")
            writer = pq.ParquetWriter(folder / files[-1], schema, compression="zstd")
            written = 0
        plain = pa.RecordBatch.from_arrays([plain_array(column, field.type)
                                            for column, field in zip(batch.columns, schema)], schema=schema)
        writer.write_batch(plain, row_group_size=rows_per_group)
        written += plain.nbytes
    if writer is not None:
        writer.close()
    return files, table.num_rows


def plain_type(arrow_type: pa.DataType) -> pa.DataType:
    """`arrow_type` without extension types: a `datasets` ArrayXD becomes nested lists, fixed-size
    where its shape is fixed; structs and lists are rebuilt around their converted children."""
    if isinstance(arrow_type, pa.ExtensionType):
        shape = getattr(arrow_type, "shape", None)
        if shape is None:  # not one of datasets' arrays: its storage
            return plain_type(arrow_type.storage_type)
        result = arrow_type.storage_type  # nested lists, one level per dimension, around the values
        for _ in shape:
            result = result.value_type
        for size in reversed(shape):
            result = pa.list_(result) if size is None else pa.list_(result, size)
        return result
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, plain_type(f.type), f.nullable) for f in arrow_type])
    if pa.types.is_fixed_size_list(arrow_type):
        return pa.list_(plain_type(arrow_type.value_type), arrow_type.list_size)
    if pa.types.is_large_list(arrow_type):
        return pa.large_list(plain_type(arrow_type.value_type))
    if pa.types.is_list(arrow_type):
        return pa.list_(plain_type(arrow_type.value_type))
    return arrow_type


def plain_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """`array` cast to `plain_type(array.type)` (an extension array through its storage)."""
    if array.type == target:
        return array
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    return array.cast(target)
