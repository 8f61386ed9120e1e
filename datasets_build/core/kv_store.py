"""The one SQLite key-value store behind every cache (processor rows, LLM answers).

A table keyed by text, opened lazily (so the object pickles into worker processes and a forked
worker opens its own connection), in WAL mode so that readers never block the writer, with
`synchronous=NORMAL`: a committed row survives the process being killed (it is in the OS's hands);
only a power cut can lose the last ones. Rows are committed as soon as they are put: an
interrupted build (even `kill -9`) loses at most the batch in flight.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

_CHUNK = 500  # keys per SELECT; SQLite caps the number of bound parameters


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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: each statement (or `with self.transaction()`) commits on its own.
            self._db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
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
    """A processor's outputs per row, keyed by a hash of its fingerprint and that row's inputs."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "rows", "value BLOB NOT NULL")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {key: pickle.loads(value) for key, value in self.select(keys, "value")}

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        self.insert((key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) for key, value in items)
