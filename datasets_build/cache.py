"""A content-addressed row cache in SQLite, shared by worker processes.

Each row's outputs are stored under a key that hashes the processor's fingerprint and that row's
input values, and committed as soon as they are computed: an interrupted build (even `kill -9`)
loses at most the batch in flight, and a processor that changed recomputes only its own rows.
"""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path
from typing import Any, Iterable

_CHUNK = 500  # keys per SELECT; SQLite caps the number of bound parameters


class RowCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:  # opened lazily so the object pickles into worker processes
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=120)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        return self._db

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, value in self.db.execute(f"SELECT key, value FROM rows WHERE key IN ({marks})", chunk):
                found[key] = pickle.loads(value)
        return found

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        with self.db:  # one transaction, committed on exit
            self.db.executemany(
                "INSERT OR REPLACE INTO rows (key, value) VALUES (?, ?)",
                ((key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) for key, value in items),
            )

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_db": None}
