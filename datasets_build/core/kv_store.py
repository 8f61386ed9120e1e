"""The one SQLite key-value store behind every cache (processor rows, LLM answers).

A table keyed by text, opened lazily (so the object pickles into worker processes and a forked
worker opens its own connection), in WAL mode so that readers never block the writer, with
`synchronous=NORMAL`: a committed row survives the process being killed (it is in the OS's hands);
only a power cut can lose the last ones. Rows are committed as soon as they are put: an
interrupted build (even `kill -9`) loses at most the batch in flight.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

_CHUNK = 500  # keys per SELECT; SQLite caps the number of bound parameters


def open_sqlite(path: Path) -> sqlite3.Connection:
    """This process's connection to the SQLite file at `path`. Autocommit: each statement (or a
    BEGIN ... COMMIT) commits on its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(path, timeout=120, isolation_level=None)


_connect: Callable[[Path], Any] = open_sqlite


def connect_stores_with(connect: Callable[[Path], Any] | None) -> None:
    """Open the stores of this process with `connect(path)` from now on (None: `open_sqlite`).

    An executor whose workers run on other machines sets it in those workers, so that their
    statements reach the one process that owns the files: SQLite's locks and WAL index do not work
    across machines. The connection needs `execute(sql, params)` (iterable, `fetchone()`),
    `executemany(sql, rows)` and `close()`.
    """
    global _connect
    _connect = connect or open_sqlite


class SqliteStore:
    """Rows of `table` (`key TEXT PRIMARY KEY` plus `columns`, an SQL column list)."""

    def __init__(self, path: str | os.PathLike, table: str, columns: str) -> None:
        self.path = Path(path)
        self.table = table
        self.columns = columns
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = _connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, {self.columns})")
        return self._db

    def select(self, keys: list[str], columns: str) -> Iterator[tuple]:
        """(key, *columns) for each of `keys` that is stored, in chunks of bound parameters."""
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self.db.execute(f"SELECT key, {columns} FROM {self.table} WHERE key IN ({marks})", chunk)

    def insert(self, rows: Iterable[tuple]) -> None:
        """INSERT OR REPLACE whole rows (key first), all in one transaction."""
        rows = list(rows)
        if not rows:
            return
        sql = f"INSERT OR REPLACE INTO {self.table} VALUES ({','.join('?' * len(rows[0]))})"
        db = self.db
        if len(rows) == 1:  # one statement is its own transaction
            db.execute(sql, rows[0])
            return
        db.execute("BEGIN")
        try:
            db.executemany(sql, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def __len__(self) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_db": None}


class RowCache(SqliteStore):
    """A processor's outputs per row, keyed by a hash of its fingerprint and that row's inputs.

    Values are stored as JSON with numeric arrays as tagged base64 (`encode_value`), never as
    pickles: a cache copied from elsewhere can hold wrong numbers at worst, never code that runs."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "row_values", "value TEXT NOT NULL")

    @property
    def db(self) -> sqlite3.Connection:
        fresh = self._db is None
        db = super().db
        if fresh:
            db.execute("DROP TABLE IF EXISTS rows")  # pickled values of earlier versions: never read
        return db

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found = {}
        for key, value in self.select(keys, "value"):
            try:
                found[key] = decode_value(value)
            except (ValueError, TypeError, KeyError):  # a damaged row: computed again
                continue
        return found

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        self.insert((key, encode_value(value)) for key, value in items)


_ARRAY = "__ndarray__"
_NUMERIC_KINDS = "biufc"  # bool, ints, floats, complex: no objects, strings or voids


def encode_value(value: Any) -> str:
    """JSON text of a row value: dicts, lists and tuples (as lists), str, int, float (NaN and inf
    kept), bool, None, numpy scalars, and numeric numpy arrays."""
    return json.dumps(value, default=_encode_extra, separators=(",", ":"))


def _encode_extra(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype.kind in _NUMERIC_KINDS:
        data = np.ascontiguousarray(value)
        return {_ARRAY: [data.dtype.str, list(data.shape), base64.b64encode(data.tobytes()).decode("ascii")]}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a cache value cannot hold {type(value).__name__}")


def decode_value(text: str) -> Any:
    return json.loads(text, object_hook=_decode_array)


def _decode_array(obj: dict) -> Any:
    if _ARRAY not in obj:
        return obj
    dtype, shape, data = obj[_ARRAY]
    dtype = np.dtype(dtype)
    if dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"cached array of dtype {dtype} is not numeric")
    return np.frombuffer(base64.b64decode(data), dtype).reshape(shape).copy()
