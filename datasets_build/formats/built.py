"""THE reader of a build folder: its record, manifest of rejections, release statistics, rows.

A folder is a build when it holds our `build.json` (written last, so a complete build) or the
`dataset_dict.json` of a DatasetDict (a build made elsewhere, or one whose record was lost).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from datasets_build.core.errors import UserError
from datasets_build.motion.specs import SPECS

BUILD_RECORD = "build.json"
MANIFEST = "rejected.jsonl"
RELEASE_STATS = "release_stats"
PARTIAL = ".partial"  # splits and step outputs being written; swapped into place when complete
CACHE = ".cache"
OWNER = ".datasets_build"  # written before a build's first write: this folder is a build's
LOCK = ".datasets_build.lock"  # held for the whole of a build: one build per folder at a time
TOOL = "datasets_build"


class BuiltDatasetError(UserError, ValueError):
    """A folder that is not a build, or a build without what was asked of it."""


def read_build_record(out: str | os.PathLike) -> dict | None:
    """The build record of a complete build by this tool, else None."""
    path = Path(out) / BUILD_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("tool") != TOOL or not isinstance(record.get("fingerprint"), str):
        return None  # someone else's build.json
    return record


def holds_our_work(folder: str | os.PathLike) -> bool:
    """Whether a build of this tool wrote into `folder` (complete, or interrupted after its first
    write): such a folder may be rebuilt in place. A `.cache/` or `train/` alone proves nothing
    (a home folder, a repository): only our record or our ownership marker does."""
    folder = Path(folder)
    if read_build_record(folder) is not None:
        return True
    try:
        return json.loads((folder / OWNER).read_text()).get("tool") == TOOL
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def mark_ours(folder: str | os.PathLike) -> None:
    """Claim `folder` for builds before anything is written into it."""
    (Path(folder) / OWNER).write_text(json.dumps({"tool": TOOL}) + "\n")


def is_built_dataset(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a DatasetDict that `datasets.load_from_disk` opens."""
    return (Path(folder) / "dataset_dict.json").is_file()


def require_built(folder: str | os.PathLike, column: str | None = None, recipe: str = "") -> datasets.DatasetDict:
    """The DatasetDict in `folder`; one sentence when it is not a build or lacks `column`."""
    if not is_built_dataset(folder):
        raise BuiltDatasetError(f"{folder} is not a built dataset (no dataset_dict.json); build one first.")
    ds = datasets.load_from_disk(str(folder))
    if column is not None and column not in next(iter(ds.values())).features:
        made_by = f": build it with the {recipe} recipe" if recipe else ""
        raise BuiltDatasetError(f"{folder} has no {column!r} column{made_by}.")
    return ds


def dataset_of(folder: str | os.PathLike, ds: datasets.DatasetDict) -> str:
    """`humanml3d` or `kitml`: from the build record, else from the feature width (263 / 251)."""
    dataset = (read_build_record(folder) or {}).get("dataset")
    if dataset in SPECS:
        return dataset
    width = next(iter(ds.values())).features["motion"].shape[1]
    for name, spec in SPECS.items():
        if spec.feature_dim == width:
            return name
    raise BuiltDatasetError(f"{folder}: motions have {width} features; expected 263 (HumanML3D) or 251 (KIT-ML).")


def read_rejections(out: str | os.PathLike) -> list[dict]:
    """The manifest of rejected ids and caption lines of a build, one dict each."""
    path = Path(out) / MANIFEST
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_release_stats(out: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The release's Mean/Std (float32, shape (D,)) saved with a build."""
    path = Path(out) / RELEASE_STATS
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: the release this build came from had no Mean.npy/Std.npy.")
    row = datasets.load_from_disk(str(path)).with_format("numpy")[0]
    return row["mean"].astype(np.float32), row["std"].astype(np.float32)


def find_row(ds: datasets.DatasetDict, built: str | os.PathLike, motion_id: str) -> tuple[str, dict[str, Any]]:
    """(split, row with numpy motion/joints) of `motion_id`; the rejection reasons when it is not there."""
    for split, table in ds.items():
        ids = table.data.column("id").to_pylist()
        if motion_id in ids:
            arrays = [c for c in ("motion", "joints") if c in table.features]
            return split, table.with_format("numpy", columns=arrays, output_all_columns=True)[ids.index(motion_id)]
    reasons = []
    if (Path(built) / MANIFEST).is_file():
        reasons = [f"{e['reason']}: {e['detail']}" for e in read_rejections(built) if e["id"] == motion_id]
    where = f"; it was rejected ({'; '.join(reasons)})" if reasons else ""
    raise BuiltDatasetError(f"id {motion_id!r} is not in {built} (splits {', '.join(ds)}){where}.")


def processor_config(built: str | os.PathLike, name: str) -> list[dict[str, Any]]:
    """The recorded (redacted) configurations of the processors called `name` in a build."""
    record = read_build_record(built) or {}
    return [p.get("config", {}) for p in record.get("processors", []) if p.get("name") == name]
