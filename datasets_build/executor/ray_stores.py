"""The build's caches for Ray workers on other machines: one process owns the SQLite files.

The row caches and the LLM answer cache are SQLite files in WAL mode under the build's `.cache/`.
SQLite's locks and its WAL index (a memory-mapped file) only work between processes of one
machine: on NFS or any shared storage, two machines writing one file corrupt it or read stale
pages. So with workers on several machines the files are opened by one `StoreServer` actor placed
on the driver's machine (where the local executor would open them), and each worker's stores send
their statements to it (`RemoteConnection`, installed with `kv_store.connect_stores_with`).

What this keeps: an answer or row is committed by the server as soon as a worker puts it, so it is
visible to every worker at once (a mirror's base caption answered on one machine is a cache hit on
another) and survives a killed job (the next run sends no answered request again). What it costs:
one round trip per lookup of a batch and per put (about a millisecond; an LLM request takes a
second), and the server runs one statement at a time (SQLite's writer does so anyway).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

from datasets_build.core.errors import UserError


class StoreRoutingUnavailable(UserError, RuntimeError):
    """The stores of this version cannot be routed to another process."""


def route_stores(server: Any) -> None:
    """Open every store of this worker process through `server` (a `StoreServer` actor handle)."""
    from datasets_build.core import kv_store

    check_routing()
    kv_store.connect_stores_with(lambda path: RemoteConnection(server, str(path)))


def check_routing() -> None:
    """Raise StoreRoutingUnavailable when this version's stores cannot be sent to another process."""
    if not can_route_stores():
        raise StoreRoutingUnavailable(
            "the caches cannot be shared by Ray workers on several machines: datasets_build.core.kv_store has no "
            "connect_stores_with hook in this version; run the Ray executor with its stores opened directly "
            "(stores='direct', only safe when every worker runs on the machine that holds the output folder)")


def can_route_stores() -> bool:
    from datasets_build.core import kv_store

    return hasattr(kv_store, "connect_stores_with")


class StoreServer:
    """Runs the stores' statements on this machine's SQLite files (a Ray actor: wrap with ray.remote).

    `cwd` is the driver's working directory: a relative store path means what it means there.
    Connections stay open for the server's life, so each statement costs no open or schema check.
    """

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        self.connections: dict[str, sqlite3.Connection] = {}

    def _db(self, path: str) -> sqlite3.Connection:
        if path not in self.connections:
            full = Path(self.cwd, path)
            full.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(full, timeout=120, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")  # as kv_store opens them; workers' PRAGMAs are skipped
            db.execute("PRAGMA synchronous=NORMAL")
            self.connections[path] = db
        return self.connections[path]

    def run(self, path: str, statements: list[tuple[str, str, Any]], transaction: bool = False) -> tuple[str, Any]:
        """("ok", rows of the last statement) or ("error", (kind, message)) for a list of statements
        (kind "one": execute, "many": executemany), in one transaction when asked or several."""
        db = self._db(path)
        try:
            if len(statements) == 1 and not transaction:
                return "ok", _run_one(db, *statements[0])
            db.execute("BEGIN")
            try:
                for statement in statements:
                    _run_one(db, *statement)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return "ok", []
        except sqlite3.Error as error:  # the worker raises it again (a full disk stays one sentence)
            return "error", (type(error).__name__, str(error))

    def close(self) -> int:
        """Close every file (checkpointing its WAL); the number closed."""
        for db in self.connections.values():
            db.close()
        closed = len(self.connections)
        self.connections.clear()
        return closed

    def pid(self) -> int:
        return os.getpid()


def _run_one(db: sqlite3.Connection, kind: str, sql: str, params: Any) -> list[tuple]:
    if kind == "many":
        db.executemany(sql, params)
        return []
    return db.execute(sql, params).fetchall()


class RemoteConnection:
    """The part of `sqlite3.Connection` that `kv_store` uses, run by a `StoreServer`.

    Statements between BEGIN and COMMIT are sent together when COMMIT comes, and run there in one
    transaction (a ROLLBACK drops them): several workers share the server, so a transaction must
    not span round trips. PRAGMAs are the server's (it opens every file with kv_store's settings).
    """

    def __init__(self, server: Any, path: str) -> None:
        self.server, self.path = server, path
        self._pending: list[tuple[str, str, Any]] | None = None

    def execute(self, sql: str, params: Iterable[Any] = ()) -> "_Rows":
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word == "PRAGMA":
            return _Rows([])
        if word == "BEGIN":
            self._pending = []
            return _Rows([])
        if word in ("COMMIT", "END"):
            pending, self._pending = self._pending or [], None
            return _Rows(self._send(pending, transaction=True) if pending else [])
        if word == "ROLLBACK":
            self._pending = None
            return _Rows([])
        if self._pending is not None:
            self._pending.append(("one", sql, list(params)))
            return _Rows([])
        return _Rows(self._send([("one", sql, list(params))]))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> "_Rows":
        statement = ("many", sql, [tuple(row) for row in rows])
        if self._pending is not None:
            self._pending.append(statement)
            return _Rows([])
        return _Rows(self._send([statement]))

    def close(self) -> None:
        self._pending = None

    def _send(self, statements: list[tuple[str, str, Any]], transaction: bool = False) -> list[tuple]:
        import ray

        status, value = ray.get(self.server.run.remote(self.path, statements, transaction))
        if status == "error":
            kind, message = value
            raise getattr(sqlite3, kind, sqlite3.OperationalError)(message)
        return value


class _Rows:
    """A cursor's answers: iterate, or fetchone()."""

    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows)

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return list(self.rows)
