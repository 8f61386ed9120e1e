"""Stable content hashes and file signatures: the keys of every cache and fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def stable_hash(value: Any) -> str:
    """A hex digest that is the same for equal values across runs and processes."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()[:32]


def _feed(digest: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"nd{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value):
            _feed(digest, str(key))
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _feed(digest, {"__type__": type(value).__name__, **dataclasses.asdict(value)})
    else:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())
        digest.update(b";")


def file_signature(path: str | os.PathLike) -> str:
    """`size:mtime_ns` of one file (make's view of "changed"); cheap, unlike a checksum of weights."""
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def folder_signature(root: str | os.PathLike, subfolders: tuple[str, ...] = ()) -> str:
    """Names, sizes and modification times of the files directly in `root` and in `subfolders`.
    A link is described by its target; a dangling link or a link loop by the link itself (it is
    the reader's job to say why such a file cannot be used, not the signature's to fail)."""
    root = Path(root)
    entries = []
    for sub in subfolders:
        folder = root / sub
        if folder.is_dir():
            with os.scandir(folder) as scan:
                entries += sorted(f"{sub}/{e.name} {_size_and_time(e)}" for e in scan)
    with os.scandir(root) as scan:
        top = sorted(scan, key=lambda e: e.name)
    for entry in top:
        if _is_file(entry):
            entries.append(f"{entry.name} {_size_and_time(entry)}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:32]


def _stat(entry: os.DirEntry) -> os.stat_result:
    try:
        return entry.stat()
    except OSError:
        return entry.stat(follow_symlinks=False)


def _size_and_time(entry: os.DirEntry) -> str:
    info = _stat(entry)
    return f"{info.st_size} {info.st_mtime_ns}"


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False
