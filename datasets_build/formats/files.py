"""Reading a release's files without trusting them: only regular files (a FIFO would block and
/dev/zero never ends), links that stay inside the release unless allowed, and `.npy` headers that
must fit the file before any array is allocated (a 4 KB file may declare a terabyte)."""

from __future__ import annotations

import io
import os
import re
import stat

import numpy as np


class FileProblem(Exception):
    """A file that is there but cannot be used; the message completes "<file> ...": "is a FIFO, not
    a regular file"."""


_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def read_file(path: str, inside: str | None = None) -> bytes:
    """The bytes of the regular file at `path`. FileNotFoundError when nothing is there; FileProblem
    when it is not a regular file, cannot be read, or is a link whose target lies outside the folder
    `inside` (an absolute, resolved path; None allows any target)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise FileProblem(f"cannot be read ({error.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(path)
        if inside is not None and not target.startswith(inside.rstrip(os.sep) + os.sep):
            raise FileProblem(f"is a link to {target}, outside the release folder")
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise FileProblem(f"is a link to {target}, which does not exist") from None
        except OSError as error:
            raise FileProblem(f"is a link that cannot be followed ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise FileProblem(f"is {kind}, not a regular file")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise FileProblem(f"cannot be read ({error.strerror})") from None


# The header np.save writes for a plain little-endian float array; anything else goes to np.load.
_NPY_HEADER = re.compile(r"\{'descr': '(<f[48])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n")


def npy_array(data: bytes) -> np.ndarray:
    """The array in the bytes of a `.npy` file; ValueError when it is not one, holds objects (pickles
    are never loaded), or declares more data than it holds."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file (no NUMPY magic)")
    if data[6:8] == b"\x01\x00":  # the common case, parsed here: np.load costs a third more on small files
        header_end = 10 + int.from_bytes(data[8:10], "little")
        match = _NPY_HEADER.fullmatch(data[10:header_end].decode("latin1"))
        if match:
            dtype = np.dtype(match[1])
            shape = tuple(int(n) for n in match[2].split(",") if n.strip())
            count = int(np.prod(shape))
            if len(data) - header_end == count * dtype.itemsize:
                return np.frombuffer(data, dtype, count, offset=header_end).reshape(shape)
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    shape, _, dtype = read_header[version](stream)
    if dtype.hasobject:
        raise ValueError("holds Python objects (a pickle), which are never loaded")
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed > len(data) - stream.tell():
        raise ValueError(f"declares shape {shape} of {dtype} ({needed:,} bytes) but holds "
                         f"{len(data) - stream.tell():,} bytes of data")
    return np.load(io.BytesIO(data), allow_pickle=False)
