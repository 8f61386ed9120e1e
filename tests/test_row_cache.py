"""The row caches hold data, never code: a cache copied or downloaded with a build folder cannot
run anything on the next build, and a damaged row is computed again."""

import dataclasses
import os
import pickle
import sqlite3
from typing import ClassVar

import numpy as np
from datasets import Features, Value

from conftest import run_build
from datasets_build.core.kv_store import RowCache, decode_value, encode_value
from processors import Processor


class _Payload:
    def __reduce__(self):  # what a crafted pickle does when it is loaded
        return (os.system, (f"touch {os.environ['PAYLOAD_MARKER']}",))


@dataclasses.dataclass(frozen=True)
class Energy(Processor):
    name: ClassVar[str] = "energy"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("motion",)
    outputs: ClassVar[Features] = Features({"energy": Value("float32")})
    cacheable: ClassVar[bool] = True

    def __call__(self, batch):
        return {"energy": [float(np.abs(m).mean()) for m in batch["motion"]]}


def test_values_round_trip_as_data():
    value = {"a": [np.arange(6, dtype=np.float16).reshape(2, 3), 3], "b": (np.float32(1.5), None, float("nan"))}
    back = decode_value(encode_value(value))
    assert back["a"][0].dtype == np.float16 and back["a"][0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["b"][0] == 1.5 and back["b"][1] is None and np.isnan(back["b"][2])


def test_a_crafted_cache_runs_no_code_and_bad_rows_are_recomputed(release, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARKER", str(marker))
    source, out = release(num_motions=4), tmp_path / "out"
    run_build(source, out, processors=(Energy(),))
    path = out / ".cache" / "rows" / "energy.sqlite"
    with sqlite3.connect(path) as db:  # an old-style pickle table, and crafted rows in the new one
        db.execute("CREATE TABLE rows (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        db.execute("INSERT INTO rows VALUES ('k', ?)", (pickle.dumps(_Payload()),))
        db.execute("UPDATE row_values SET value = ?", ('{"energy": {"__ndarray__": ["|O", [1], "gASVAAAA"]}}',))
    run_build(source, out, processors=(Energy(),), overwrite=True)
    assert not marker.exists()
    cache = RowCache(path)
    assert len(cache) > 0 and all(isinstance(v["energy"], float) for v in cache.get_many(
        [k for (k,) in cache.db.execute("SELECT key FROM row_values")]).values())
    assert not cache.db.execute("SELECT name FROM sqlite_master WHERE name = 'rows'").fetchall()
