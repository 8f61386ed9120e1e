"""The Ray executor on one local Ray instance (2 CPUs, loopback only, stopped at the end): the same
published output as the local executor, caches that keep their promise across a killed job, and
the Parquet export read back by Ray Data. Skipped, with the reason, where Ray is missing."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Before Ray is imported: its instance then listens on loopback addresses only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 't2m-datasets-build[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")

from chat_server import ChatServer  # noqa: E402
from conftest import run_build  # noqa: E402
from datasets_build import BuildConfig, build  # noqa: E402
from datasets_build.builder.config import StrictStop  # noqa: E402
from datasets_build.executor.ray import RayExecutor, plan_actors, share_llm_concurrency  # noqa: E402
from datasets_build.executor.ray_stores import can_route_stores  # noqa: E402
from datasets_build.llm.engine import LLMConfig  # noqa: E402
from datasets_build.recipes import RECIPES  # noqa: E402
from datasets_build.recipes.options import TextFeatureOptions  # noqa: E402
from datasets_build.recipes.remodiffuse import ReMoDiffuseOptions  # noqa: E402
from datasets_build.synthetic.noise_release import write_synthetic_release  # noqa: E402
from datasets_build.synthetic.sample_release import write_sample_release  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The cross-machine store server needs kv_store's routing hook; without it only direct stores run.
STORE_MODES = ["direct", "served"] if can_route_stores() else ["direct"]
BEST_STORES = STORE_MODES[-1]


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module: 2 CPUs, no dashboard, stopped at the end."""
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"a local Ray instance does not start here: {error}")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's tasks reach the workers
    yield context.address_info["gcs_address"]
    ray.shutdown()


class Recorder:
    """A task that writes a file when it is set up and torn down, and stops at item -1."""

    def __init__(self, folder):
        self.folder = str(folder)

    def setup(self):
        Path(self.folder, f"setup-{os.getpid()}").touch()

    def teardown(self):
        Path(self.folder, f"teardown-{os.getpid()}").touch()

    def __call__(self, item):
        if item == -1:
            raise StrictStop("item -1 is not allowed")
        time.sleep(0.02 * (item % 3))  # later items may finish first
        return item * 10


def test_results_in_order_setup_once_per_actor_and_errors_as_themselves(ray_address, tmp_path):
    executor = RayExecutor(workers=2)
    assert executor.workers == 2
    assert list(executor.map(Recorder(tmp_path), list(range(12)))) == [i * 10 for i in range(12)]
    deadline = time.monotonic() + 30  # Ray Data ends its actors after the run: each tears the task down
    while time.monotonic() < deadline:
        names = os.listdir(tmp_path)
        setups, teardowns = (sorted(n.split("-")[1] for n in names if n.startswith(p)) for p in ("setup", "teardown"))
        if setups == teardowns:
            break
        time.sleep(0.2)
    assert setups == teardowns and len(setups) == 2  # once per actor
    with pytest.raises(StrictStop, match="item -1 is not allowed"):  # as the local executor raises it
        list(executor.map(Recorder(tmp_path), [1, -1, 2]))


def _release_with_problems(root: Path) -> Path:
    """A synthetic release (several chunks per split) with rejected ids and caption lines."""
    write_synthetic_release(root, "humanml3d", num_motions=20, seed=4)
    (root / "new_joint_vecs" / "000002.npy").write_bytes(b"not a numpy file")
    (root / "texts" / "000003.txt").unlink()
    with (root / "train.txt").open("a") as split:
        split.write("000000\nnot/safe\n")
    return root


def _differences(left: Path, right: Path) -> list[str]:
    """Files of the published output (not the caches, not build.json's timings) that differ."""
    files = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    files |= {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    skip = {".cache", "build.json", ".datasets_build.lock"}
    return sorted(str(f) for f in files if not skip & {f.parts[0]} and
                  (not (left / f).is_file() or not (right / f).is_file() or
                   (left / f).read_bytes() != (right / f).read_bytes()))


@pytest.mark.parametrize("stores", STORE_MODES)
def test_ray_build_equals_local_build_byte_for_byte(ray_address, tmp_path, stores):
    root = _release_with_problems(tmp_path / "release")
    local = run_build(root, tmp_path / "local", num_proc=1)
    config = BuildConfig(recipe="humanml3d", dataset="humanml3d", source=root, out=tmp_path / "ray", progress=False)
    result = build(config, RayExecutor(workers=2, stores=stores))
    assert result.counts == local.counts and result.counts["train"]["motions"] > 16  # two chunks or more
    assert [r.message() for r in result.rejections] == [r.message() for r in local.rejections]
    assert {r.reason for r in result.rejections} >= {"unreadable_motion", "missing_captions", "duplicate_id"}
    assert _differences(tmp_path / "local", tmp_path / "ray") == []
    assert len(list((tmp_path / "ray" / "train").glob("*.arrow"))) >= 2


@pytest.mark.slow
def test_side_datasets_and_a_processor_store_byte_for_byte(ray_address, tmp_path):
    """ReMoDiffuse (text features with their own store, neighbours, rareness) on one actor: the
    chunks meet the caches in the local executor's order, so even float bits agree (with several
    workers, which chunk first encodes a repeated caption is a race, locally too, and the encoder's
    last bits depend on its batch)."""
    root = write_sample_release(tmp_path / "release", num_motions=4, seed=1)
    options = ReMoDiffuseOptions(text=TextFeatureOptions(text_encoder="minilm"))

    def config(out, **settings):
        return RECIPES["remodiffuse"].config(root, tmp_path / out, options, progress=False, num_proc=1, **settings)

    build(config("local"))
    result = build(config("ray"), RayExecutor(workers=1, stores=BEST_STORES))
    assert _differences(tmp_path / "local", tmp_path / "ray") == []
    for side in ("release_stats", "retrieval_neighbours", "rareness"):
        assert (tmp_path / "ray" / side).is_dir()
    assert result.counters["text_features"]["texts_computed"] > 0
    assert (tmp_path / "ray" / ".cache" / "text_features" / "texts.sqlite").is_file()  # the processor's own store


def _fine_command(root, out, server, address):
    return [sys.executable, "-m", "datasets_build", "finehumanml3d", "--source", str(root), "--out", str(out),
            "--llm-base-url", server.base_url, "--llm-model", "test-model", "--llm-timeout", "2",
            "--llm-concurrency", "2", "--text-encoder", "minilm", "--quiet", "--num-proc", "1", "--ray-address", address]


@pytest.mark.slow
def test_killed_ray_job_resends_no_answered_request(ray_address, tmp_path):
    """finehumanml3d through the CLI on the module's instance (an address: the stores are served
    when this version can route them), killed with SIGKILL mid-run, then run again."""
    root = write_sample_release(tmp_path / "release", num_motions=8, seed=3)
    out = tmp_path / "out"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
           "DATASETS_BUILD_RAY_STORES": BEST_STORES}
    with ChatServer(latency=0.15) as server:
        job = subprocess.Popen(_fine_command(root, out, server, ray_address), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while sum(e.get("answered", False) for e in server.log) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
        job.wait()
        quiet_since, seen = time.monotonic(), len(server.log)
        while time.monotonic() - quiet_since < 1.5:  # Ray ends the dead driver's actors
            time.sleep(0.1)
            if len(server.log) != seen:
                quiet_since, seen = time.monotonic(), len(server.log)
        killed_at = len(server.log)
        assert killed_at >= 5, job.stderr.read().decode()[-3000:]
        with sqlite3.connect(out / ".cache" / "llm.sqlite") as db:
            cached = {json.dumps(json.loads(r)["messages"], sort_keys=True)
                      for (r,) in db.execute("SELECT request FROM responses")}
        assert 3 <= len(cached) <= killed_at and not (out / "build.json").exists()
        again = subprocess.run(_fine_command(root, out, server, ray_address), cwd=REPO, env=env,
                               capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-3000:]
    resent = [e for e in server.log[killed_at:] if json.dumps(e["messages"], sort_keys=True) in cached]
    assert resent == []
    asked = [json.dumps(e["messages"], sort_keys=True) for e in server.log if e.get("answered")]
    assert len(asked) - len(set(asked)) <= killed_at - len(cached)  # only answers lost in flight were asked again
    assert "fine_steps: " in again.stdout and "checked" in again.stdout


@pytest.mark.skipif(not can_route_stores(), reason="kv_store has no connect_stores_with hook in this version")
def test_served_stores_reach_the_store_server(ray_address, tmp_path):
    """A worker's stores (a row cache here) run their statements in the server, on the driver's machine."""
    results = list(RayExecutor(workers=1, stores="served").map(CacheUser(tmp_path / "rows.sqlite"), [1, 2, 3]))
    assert [r["connection"] for r in results] == ["RemoteConnection"] * 3
    assert [r["found"] for r in results] == [[], [1], [1, 2]]  # each put visible to the next chunk at once
    from datasets_build.core.kv_store import RowCache

    assert RowCache(tmp_path / "rows.sqlite").get_many(["1", "2", "3"]) == {"1": 1, "2": 2, "3": 3}


class CacheUser:
    """A task that looks up every earlier item in a row cache, then puts its own."""

    def __init__(self, path):
        self.path = str(path)

    def setup(self):
        pass

    def teardown(self):
        pass

    def __call__(self, item):
        from datasets_build.core.kv_store import RowCache

        cache = RowCache(self.path)
        found = cache.get_many([str(i) for i in range(1, item)])
        cache.put_many([(str(item), item)])
        connection = type(cache.db).__name__
        cache.close()
        return {"found": sorted(found.values()), "connection": connection}


def test_ray_data_reads_the_parquet_export(ray_address, tmp_path):
    from datasets_build.exports.parquet import export_parquet

    root = write_synthetic_release(tmp_path / "release", "humanml3d", num_motions=6, seed=2)
    run_build(root, tmp_path / "built")
    export_parquet(tmp_path / "built", tmp_path / "parquet")
    train = ray.data.read_parquet(str(tmp_path / "parquet" / "train"))
    rows = train.take_all()
    assert len(rows) == run_build(root, tmp_path / "built").counts["train"]["motions"]
    assert all(len(row["motion"][0]) == 263 and len(row["motion"]) == row["length"] for row in rows)


def test_actor_plan_follows_gpus_and_the_llm_endpoint():
    class Gpu:
        processors = (type("Step", (), {"num_gpus": 0.5})(),)

    assert plan_actors(Gpu(), 8, {"CPU": 32, "GPU": 2}).actors == 4  # 2 GPUs / 0.5 each
    assert plan_actors(Gpu(), 8, {"CPU": 32}).num_gpus == 0  # no GPU on the cluster: CPUs
    from processors.llm.fine_steps import FineSteps

    llm = FineSteps(llm=LLMConfig(concurrency=6, cache_path="x.sqlite", base_url="http://127.0.0.1:9/v1"))
    task = type("T", (), {"processors": (llm,)})()
    plan = plan_actors(task, 4, {"CPU": 4})
    assert (plan.actors, plan.llm_concurrency) == (4, 2)  # 6 requests in flight over 4 actors: 2 each
    assert plan_actors(task, 16, {"CPU": 16}).actors == 6  # never an actor with nothing to send
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Task:
        processors: tuple

    shared = share_llm_concurrency(Task((llm,)), 2)
    assert shared.processors[0].llm.concurrency == 2 and shared.processors[0].fingerprint() == llm.fingerprint()
