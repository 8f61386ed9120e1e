"""The output folder of a build: one build at a time (a lock held for the whole build), never the
release itself, and deletion only of the names a build writes, inside the folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from datasets_build.builder.config import OutputFolderError
from datasets_build.formats.built import LOCK, holds_our_work, mark_ours

# What a build may name a split or a step folder: a plain name inside the output folder.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_output_folder(out: Path, source: Path) -> None:
    """One sentence when `out` cannot hold a build: a file, the release folder, inside its data."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"the output folder {out} is a file, not a folder")
    resolved, release = out.resolve(), source.resolve()
    if resolved == release:
        raise OutputFolderError(f"the output folder {out} is the release folder itself; the build would "
                                "overwrite the release's own files")
    for data in ("new_joint_vecs", "texts", "new_joints"):
        if resolved == release / data or (release / data) in resolved.parents:
            raise OutputFolderError(f"the output folder {out} is inside the release's {data}/ folder")


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the folder's lock for the whole build; a second build into it gets one sentence."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK, "a+")
    except OSError as error:
        raise OutputFolderError(f"cannot create the output folder {out}: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputFolderError(f"another build is writing to {out} right now; wait for it to finish "
                                        "or choose another output folder") from None
            raise
        yield
    finally:
        handle.close()  # releases the lock (forked workers have exited by then)


def claim(out: Path, overwrite: bool) -> None:
    """Make `out` a build's folder before the first write into it (splits, caches, LLM answers): an
    empty or new folder, one of ours, or any folder when `overwrite`; else one sentence."""
    out.mkdir(parents=True, exist_ok=True)
    if not holds_our_work(out) and any(e.name != LOCK for e in out.iterdir()) and not overwrite:
        raise OutputFolderError(f"the output folder {out} is not empty and holds no earlier build")
    mark_ours(out)


def remove_build_names(out: Path, names: Iterable[str]) -> None:
    """Delete out/<name> for each plain name (no path separator, no '..', not hidden) that lies
    directly inside `out`; a symlink is removed as a link, never followed."""
    root = out.resolve()
    for name in names:
        if not isinstance(name, str) or not _PLAIN_NAME.match(name):
            continue
        path = out / name
        if path.is_symlink():
            path.unlink()
        elif path.resolve().parent == root and path.is_dir():
            shutil.rmtree(path)
        elif path.resolve().parent == root and path.exists():
            os.unlink(path)
