"""The same builds on the local and the Ray executor on this machine, the Ray executor's costs per
chunk, and what they predict for big jobs on N nodes (prints measurements, then the estimate).

    .venv/bin/python benchmarks/executors.py
    .venv/bin/python benchmarks/executors.py --motions 64 --llm-motions 16 --latency 0.2 --skip-segmentation

1. A humanml3d build of the sample release (reading, checking, writing: no model): the local
   executor (--num-proc 2), the Ray executor starting its own local instance (cold), and on a
   running instance (warm: what a cluster job sees), with the stores served and direct.
2. A finehumanml3d build (LLM steps, MiniLM text features) against the loopback chat server with
   `--latency` seconds per answer, local and Ray (warm); then the same build again with every
   answer cached (`--overwrite`): the CPU path per caption, no request sent.
3. Costs per chunk on Ray: an empty task over 40 items (scheduling, pickling, the result's trip);
   the store server's round trips (a lookup of 64 keys, a put of one answer) against SQLite
   opened directly; segmentation per motion (MATE's exact search over a randomly initialised TMR
   of the default size, one torch thread: what a 1-CPU actor gets), from benchmarks/segmentation.py's
   fixtures.
4. The estimate: 1M captions of LLM annotation and 100k motions of segmentation on N nodes, from
   those measurements and the assumptions printed with it.
Every build runs as its own `python -m datasets_build` process (as a user runs it); the wall
times include its start (imports), the build times are the ones its summary prints.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the benchmark's instance: loopback only

from chat_server import ChatServer  # noqa: E402
from datasets_build.builder.plan import make_chunks  # noqa: E402
from datasets_build.executor.ray_stores import RemoteConnection, StoreServer, can_route_stores  # noqa: E402
from datasets_build.synthetic.sample_release import write_sample_release  # noqa: E402


def cli_build(recipe: str, source: Path, out: Path, extra: list[str], env: dict | None = None) -> dict:
    """Run one build as a user does; wall seconds, the summary's build seconds, its stdout."""
    command = [sys.executable, "-m", "datasets_build", recipe, "--source", str(source), "--out", str(out),
               "--quiet", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    built = re.search(r"Built .* in ([\d.]+) s", result.stdout)
    return {"wall": wall, "build": float(built.group(1)) if built else float("nan"), "stdout": result.stdout}


def requests_sent(stdout: str) -> int:
    found = re.search(r"requests: ([\d,]+) sent", stdout)
    return int(found.group(1).replace(",", "")) if found else -1


def bench_io_build(release: Path, tmp: Path, motions: int) -> dict:
    """The local and the cold Ray runs (before the benchmark's own instance starts)."""
    print(f"1. humanml3d build of the sample release ({2 * motions} ids with mirrors), 2 workers each")
    runs = {"local (--num-proc 2)": cli_build("humanml3d", release, tmp / "io-local", ["--num-proc", "2"])}
    runs["ray, cold (starts a local instance)"] = cli_build("humanml3d", release, tmp / "io-cold",
                                                           ["--executor", "ray", "--num-proc", "2"])
    return runs


def bench_io_build_warm(runs: dict, release: Path, tmp: Path, address: str) -> dict:
    for stores in ("served", "direct") if can_route_stores() else ("direct",):
        runs[f"ray, warm instance, {stores} stores"] = cli_build(
            "humanml3d", release, tmp / f"io-{stores}", ["--ray-address", address, "--num-proc", "2"],
            {"DATASETS_BUILD_RAY_STORES": stores})
    report(runs)
    return runs


def bench_llm_build(releases: list[Path], tmp: Path, address: str, latency: float, concurrency: int) -> dict:
    print(f"2. finehumanml3d build (LLM steps + MiniLM text features), loopback chat server: {latency:g} s per "
          f"answer, --llm-concurrency {concurrency}, 2 workers")
    runs = {}
    env = {"OPENAI_API_KEY": "", "DATASETS_BUILD_RAY_STORES": "served" if can_route_stores() else "direct"}
    with ChatServer(latency=latency) as server:
        common = ["--llm-base-url", server.base_url, "--llm-model", "bench", "--llm-concurrency", str(concurrency),
                  "--text-encoder", "minilm", "--num-proc", "2"]
        for label, out, extra in (("local", "llm-local", []), ("ray, warm instance", "llm-ray", ["--ray-address", address])):
            runs[label] = cli_build("finehumanml3d", releases[0], tmp / out, common + extra, env)
            runs[f"{label}, every answer cached"] = cli_build("finehumanml3d", releases[0], tmp / out,
                                                              common + extra + ["--overwrite"], env)
    # The CPU path per caption (reading, lemmas, text features, the request and its check, the
    # stores, writing) on one actor: two fresh builds of different sizes against a server that
    # answers at once; their difference cancels the startup (instance, actor, models).
    with ChatServer(latency=0.0) as server:
        common = ["--llm-base-url", server.base_url, "--llm-model", "bench", "--llm-concurrency", str(concurrency),
                  "--text-encoder", "minilm", "--ray-address", address, "--num-proc", "1"]
        for i, release in enumerate(releases):
            runs[f"ray, 1 actor, instant server, release {i + 1}"] = cli_build("finehumanml3d", release,
                                                                               tmp / f"llm-slope-{i}", common, env)
    for run in runs.values():
        run["requests"] = requests_sent(run["stdout"])
    report(runs, with_requests=True)
    return runs


def report(runs: dict, with_requests: bool = False) -> None:
    base = next(iter(runs.values()))
    for label, run in runs.items():
        extra = f" | {run['requests']:>4} requests sent" if with_requests else ""
        print(f"   {label:<42} wall {run['wall']:6.1f} s | build {run['build']:6.1f} s "
              f"(x{run['build'] / base['build']:.2f} of the first){extra}")


class Empty:
    """A task that does nothing: what is left is the executor's own cost per item."""

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def __call__(self, item: int) -> dict:
        return {"files": [f"c{item:05d}-000.arrow"], "counts": {"motions": 512}, "rejections": [], "counters": {}}


def bench_ray_costs(ray) -> dict:
    from datasets_build.core.kv_store import RowCache
    from datasets_build.executor.ray import RayExecutor

    print("3. costs per chunk on Ray (warm instance, 2 actors)")
    executor = RayExecutor(workers=2, stores="direct")
    times = {}
    for items in (2, 10, 70):  # the first map also pays for Ray Data's first start in this process
        start = time.perf_counter()
        list(executor.map(Empty(), list(range(items))))
        times[items] = time.perf_counter() - start
    startup = times[10] - (times[70] - times[10]) / 60 * 10
    per_item = (times[70] - times[10]) / 60 * 2  # actor time: two actors share the items
    print(f"   an empty task: {startup:.2f} s to start a map on 2 actors, then {per_item * 1e3:.0f} ms of actor time "
          f"per chunk (scheduling, pickling, the result's trip); maps of 10 and 70 chunks took "
          f"{times[10]:.2f} s and {times[70]:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        server = ray.remote(StoreServer).options(num_cpus=0).remote(tmp)
        remote = RemoteConnection(server, "bench.sqlite")
        remote.execute("CREATE TABLE IF NOT EXISTS row_values (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        direct = RowCache(Path(tmp) / "direct.sqlite")
        value = "x" * 1500  # about an LLM answer
        timings = {}
        for label, run in (("remote", lambda sql, p: remote.execute(sql, p)), ("direct", lambda sql, p: direct.db.execute(sql, p))):
            table = "row_values"
            start = time.perf_counter()
            for i in range(200):
                run(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (f"k{i}", value))
            put = (time.perf_counter() - start) / 200
            keys = [f"k{i}" for i in range(64)]
            start = time.perf_counter()
            for _ in range(200):
                list(run(f"SELECT key, value FROM {table} WHERE key IN ({','.join('?' * 64)})", keys))
            get = (time.perf_counter() - start) / 200
            timings[label] = (put, get)
        ray.kill(server)
    (put, get), (dput, dget) = timings["remote"], timings["direct"]
    print(f"   store server: put of one 1.5 kB answer {put * 1e3:.2f} ms (SQLite directly {dput * 1e3:.2f} ms), "
          f"lookup of 64 keys {get * 1e3:.2f} ms ({dget * 1e3:.2f} ms): one server takes about "
          f"{1 / (put + get / 64):,.0f} answers/s")
    return {"startup": startup, "per_chunk": per_item, "put": put, "get": get}


def bench_segmentation(motions: int) -> float | None:
    """Seconds per motion of MATE's segmentation (default-size random TMR, 1 torch thread)."""
    try:
        import numpy as np
        import torch

        from processors.segmentation import Segmentation
        from segmentation import HashedTokens, write_random_checkpoint  # benchmarks/segmentation.py's fixtures
    except Exception as error:  # noqa: BLE001  # the models package may be mid-change: say so, go on
        print(f"   segmentation not measured: {type(error).__name__}: {error}")
        return None
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 197, motions)
    words = ["walks", "forward", "jumps", "turns", "left", "waves", "kicks", "sits", "down", "slowly"]
    batch = {"motion": [rng.standard_normal((int(t), 263)).astype(np.float32) for t in lengths],
             "annotations": [[{"caption": "a person moves", "start_frame": 0, "end_frame": int(t)}] * 3 for t in lengths],
             "subtexts": [[{"texts": [" ".join(rng.choice(words, 4)) for _ in range(n)]} for n in (2, 3, 4)]
                          for _ in lengths]}
    with tempfile.TemporaryDirectory() as tmp:
        text_encoder = HashedTokens()
        write_random_checkpoint(Path(tmp) / "run", {}, text_encoder)
        processor = Segmentation(str(Path(tmp) / "run"), unit=4, device="cpu", text_encoder=text_encoder)
        processor({k: v[:1] for k, v in batch.items()})  # loads the model
        start = time.perf_counter()
        processor(batch)
        seconds = (time.perf_counter() - start) / motions
    print(f"   segmentation: {seconds:.1f} s per motion ({motions} motions of mean {lengths.mean():.0f} frames, 3 "
          f"annotations of 2-4 sub-texts, unit 4, default-size TMR, 1 CPU thread)")
    return seconds


def estimate(costs: dict, llm: dict, captions_of: list[int], segment_seconds: float | None, args) -> None:
    print("4. estimate (wall time; measured figures from above, assumptions marked)")
    # The CPU path per caption on one actor (reading, lemmas, text features, cache look-ups, checks,
    # writing): the slope between two cached builds of different sizes, so startup cancels out.
    small, big = llm["ray, 1 actor, instant server, release 1"], llm["ray, 1 actor, instant server, release 2"]
    cpu_per_caption = max(1e-4, (big["build"] - small["build"]) / (captions_of[1] - captions_of[0]))
    per_answer_store = costs["put"] + costs["get"] / 64
    store_cap = 1 / per_answer_store
    print(f"   measured: CPU path {cpu_per_caption * 1e3:.1f} ms per caption on one actor (its request to a server "
          f"that answers at once, MiniLM, lemmas, stores; {captions_of[0]} vs {captions_of[1]} captions); store server {per_answer_store * 1e3:.2f} ms per answer, so at most "
          f"{store_cap:,.0f} answers/s for the whole cluster; Ray {costs['per_chunk'] * 1e3:.0f} ms per chunk")
    captions, rate, latency = 1_000_000, args.server_rate, args.server_latency
    in_flight = rate * latency
    print(f"   LLM, {captions:,} captions (assumed: {args.attempts:g} requests per caption, model servers that "
          f"together answer {rate:g} requests/s at {latency:g} s each, so --llm-concurrency {in_flight:.0f}; "
          f"{args.cores} cores per node):")
    for server_rate in (rate, 10 * rate):
        print(f"     model servers answering {server_rate:g} requests/s:")
        for nodes in args.nodes:
            cpu_rate = nodes * args.cores / cpu_per_caption
            limits = [(server_rate / args.attempts, "the model servers"), (cpu_rate, "the nodes' CPUs"),
                      (store_cap / args.attempts, "the store server")]
            throughput, bound = min(limits)
            hours = (captions / throughput + costs["startup"]) / 3600
            print(f"       {nodes:>3} node(s): {hours:6.2f} h ({throughput:,.0f} captions/s, bound by {bound})")
    if segment_seconds is None:
        return
    motions = 100_000
    print(f"   segmentation, {motions:,} motions (measured {segment_seconds:.1f} s per motion per CPU actor; "
          f"assumed: {args.cores} CPU actors per node, or {args.gpus} GPUs per node at {args.gpu_speedup:g}x a CPU "
          f"actor each):")
    for nodes in args.nodes:
        for kind, actors, per_motion in (("CPU", nodes * args.cores, segment_seconds),
                                         ("GPU", nodes * args.gpus, segment_seconds / args.gpu_speedup)):
            chunks = make_chunks("train", [str(i) for i in range(motions)], actors)
            size = len(chunks[0].ids)
            waves = math.ceil(len(chunks) / actors)
            hours = (waves * (size * per_motion + costs["per_chunk"]) + costs["startup"]) / 3600
            print(f"     {nodes:>3} node(s), {kind}: {hours:8.2f} h ({len(chunks)} chunks of {size} in {waves} waves "
                  f"over {actors} actors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--motions", type=int, default=256, help="sample motions of the humanml3d build")
    parser.add_argument("--llm-motions", type=int, default=16, help="sample motions of the finehumanml3d build")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per answer of the loopback server")
    parser.add_argument("--concurrency", type=int, default=8, help="--llm-concurrency of the LLM build")
    parser.add_argument("--segment-motions", type=int, default=2)
    parser.add_argument("--skip-segmentation", action="store_true")
    parser.add_argument("--nodes", type=lambda s: [int(n) for n in s.split(",")], default=[1, 4, 16, 64])
    parser.add_argument("--cores", type=int, default=32, help="assumed CPU cores per node")
    parser.add_argument("--gpus", type=int, default=8, help="assumed GPUs per node")
    parser.add_argument("--gpu-speedup", type=float, default=50.0, help="assumed: a GPU actor vs a 1-CPU actor")
    parser.add_argument("--server-rate", type=float, default=200.0, help="assumed answers/s of all model servers")
    parser.add_argument("--server-latency", type=float, default=4.0, help="assumed seconds per answer")
    parser.add_argument("--attempts", type=float, default=1.1, help="assumed requests per caption (re-asks)")
    args = parser.parse_args()
    import ray

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, ray {ray.__version__}, "
          f"store routing {'available' if can_route_stores() else 'missing (direct stores only)'}")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        release = write_sample_release(tmp / "release", num_motions=args.motions, seed=0)
        llm_releases = [write_sample_release(tmp / f"llm-release-{n}", num_motions=n, seed=1)
                        for n in (args.llm_motions, 3 * args.llm_motions)]
        captions = [sum(len(p.read_text().splitlines()) for p in (r / "texts").glob("*.txt")) for r in llm_releases]
        io_runs = bench_io_build(release, tmp, args.motions)  # before this process starts its instance
        context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        try:
            address = context.address_info["gcs_address"]
            bench_io_build_warm(io_runs, release, tmp, address)
            llm = bench_llm_build(llm_releases, tmp, address, args.latency, args.concurrency)
            costs = bench_ray_costs(ray)
            segment = None if args.skip_segmentation else bench_segmentation(args.segment_motions)
            estimate(costs, llm, captions, segment, args)
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
