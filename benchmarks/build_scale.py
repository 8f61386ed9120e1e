"""Full-scale build benchmark: our streaming build against the I/O floor and a naive in-memory build.

    python benchmarks/build_scale.py                 # 14,614 base motions + mirrors = 29,228
    python benchmarks/build_scale.py --motions 2000  # a quicker look

Generates a synthetic HumanML3D-shaped release in a temporary folder (lengths 40-199 frames spread
like HumanML3D's, 2-4 captions each, ~30% sub-clip lines), then runs each contender in its own
process so that its wall time and peak RSS are its own:
  (a) I/O floor: np.load every feature file and read every caption file, nothing else;
  (b) our build (`datasets_build.builder`), with the default worker count and with one process;
  (c) naive: load everything into lists, `Dataset.from_dict`, `save_to_disk`;
  (d) our build with lemmas and the vocabulary step (its `lemma_ids` appended to the splits);
and times `load_from_disk` plus the first batch of 64 random 196-frame crops of the built dataset.
Run it on an otherwise idle machine; the release is read warm (it was just written).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NAIVE_MEMORY_LIMIT_GB = 18
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_mb() -> dict[str, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mb": self_kb / 1024, "largest_child_rss_mb": child_kb / 1024}


def _ids(root: Path) -> list[str]:
    return [i for s in ("train", "val", "test") for i in (root / f"{s}.txt").read_text().split()]


def stage_io_floor(root: Path, out: Path) -> dict:
    frames = 0
    for motion_id in _ids(root):
        frames += len(np.load(root / "new_joint_vecs" / f"{motion_id}.npy"))
        (root / "texts" / f"{motion_id}.txt").read_text(encoding="utf-8")
    return {"frames": frames}


def stage_ours(root: Path, out: Path, num_proc: int | None) -> dict:
    from datasets_build import BuildConfig, build

    result = build(BuildConfig(recipe="humanml3d", dataset="humanml3d", source=root, out=out,
                               num_proc=num_proc, progress=False, overwrite=True))
    return {"motions": sum(c["motions"] for c in result.counts.values()), "rejected": len(result.rejections)}


def stage_text(root: Path, out: Path) -> dict:
    """Our build plus MATE's text side without the LLM: lemmas, then the vocabulary step, whose
    `lemma_ids` are appended to the written splits (every shard rewritten once)."""
    from datasets_build import BuildConfig, build
    from processors.text.lemmas import Lemmas
    from processors.text.vocabulary import Vocabulary

    result = build(BuildConfig(recipe="text", dataset="humanml3d", source=root, out=out, processors=(Lemmas(),),
                               steps=(Vocabulary(),), progress=False, overwrite=True))
    return {"motions": sum(c["motions"] for c in result.counts.values()), "K": result.counters["vocabulary"]["K"]}


def stage_naive(root: Path, out: Path) -> dict:
    # It holds everything in memory several times over: cap it so it fails alone instead of
    # waking the kernel's OOM killer on a 24 GB machine.
    limit = NAIVE_MEMORY_LIMIT_GB * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        return _naive_build(root, out)
    except MemoryError as error:
        return {"failed": f"{type(error).__name__} under a {NAIVE_MEMORY_LIMIT_GB} GB address-space cap"}


def _naive_build(root: Path, out: Path) -> dict:
    import datasets

    columns: dict[str, list] = {"id": [], "motion": [], "captions": []}
    for motion_id in _ids(root):
        columns["id"].append(motion_id)
        columns["motion"].append(np.load(root / "new_joint_vecs" / f"{motion_id}.npy").astype(np.float32))
        columns["captions"].append((root / "texts" / f"{motion_id}.txt").read_text().splitlines())
    features = datasets.Features({"id": datasets.Value("string"),
                                  "motion": datasets.Array2D((None, 263), "float32"),
                                  "captions": datasets.List(datasets.Value("string"))})
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(out))
    return {"motions": len(columns["id"])}


def stage_first_batch(root: Path, out: Path) -> dict:
    import datasets

    started = time.perf_counter()
    train = datasets.load_from_disk(str(out))["train"].with_format("numpy", columns=["motion"])
    loaded = time.perf_counter() - started
    rng = np.random.default_rng(0)
    batch = np.zeros((64, 196, 263), np.float32)
    for k, row in enumerate(rng.choice(len(train), 64, replace=False)):
        motion = train[int(row)]["motion"]
        start = int(rng.integers(0, max(1, len(motion) - 196 + 1)))
        crop = motion[start : start + 196]
        batch[k, : len(crop)] = crop
    return {"load_s": loaded, "first_batch_s": time.perf_counter() - started - loaded}


STAGES = {
    "io_floor": stage_io_floor,
    "ours": lambda root, out: stage_ours(root, out, None),
    "ours_1proc": lambda root, out: stage_ours(root, out, 1),
    "naive": stage_naive,
    "text": lambda root, out: stage_text(root, out),
    "first_batch": stage_first_batch,
}


def run_stage(name: str, root: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--stage", name, "--root", str(root), "--out", str(out)]
    line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(line)


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--motions", type=int, default=14614, help="base motions (mirrors double them)")
    parser.add_argument("--workdir", type=Path, help="where to generate (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of (a) and (b), alternating (median)")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # child process: run one contender, print one JSON line
        started = time.perf_counter()
        result = STAGES[args.stage](args.root, args.out)
        print(json.dumps({"wall_s": time.perf_counter() - started, **result, **_peak_mb()}))
        return

    from datasets_build.synthetic.noise_release import write_synthetic_release

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp) / "HumanML3D"
        started = time.perf_counter()
        write_synthetic_release(root, "humanml3d", args.motions, seed=0, joints=False)
        size = sum(f.stat().st_size for f in (root / "new_joint_vecs").iterdir())
        print(f"generated {2 * args.motions:,} motions ({size / 1e9:.2f} GB of features) "
              f"in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs")
        # The floor and our build alternate, three times each, so that a noisy neighbour on a
        # shared machine hits both alike; medians are reported.
        runs: dict[str, list[dict]] = {"io_floor": [], "ours": []}
        for _ in range(args.repeat):
            for name in runs:
                runs[name].append(run_stage(name, root, Path(tmp) / f"out-{name}"))
        results = {name: _median_run(r) for name, r in runs.items()}
        results["first_batch"] = run_stage("first_batch", root, Path(tmp) / "out-ours")
        results["ours_1proc"] = run_stage("ours_1proc", root, Path(tmp) / "out-ours_1proc")
        results["text"] = run_stage("text", root, Path(tmp) / "out-text")
        results["naive"] = run_stage("naive", root, Path(tmp) / "out-naive")
        print("wall s per run: " + "; ".join(
            f"{name} " + ", ".join(f"{r['wall_s']:.1f}" for r in rs) for name, rs in runs.items()))

    floor = results["io_floor"]["wall_s"]
    print(f"\n{'contender':<34}{'wall s':>9}{'x floor':>9}{'peak RSS MB':>13}{'largest worker MB':>19}")
    labels = {"io_floor": "(a) I/O floor (load every file)", "ours": "(b) our build, default workers",
              "ours_1proc": "(b) our build, 1 process", "text": "(d) (b) + lemmas + vocabulary",
              "naive": "(c) naive from_dict + save_to_disk"}
    for name, label in labels.items():
        r = results[name]
        print(f"{label:<34}{r['wall_s']:>9.1f}{r['wall_s'] / floor:>9.2f}{r['peak_rss_mb']:>13.0f}"
              f"{r['largest_child_rss_mb']:>19.0f}" + (f"  FAILED: {r['failed']}" if "failed" in r else ""))
    fb = results["first_batch"]
    print(f"\nload_from_disk: {fb['load_s'] * 1000:.0f} ms; first batch of 64 random 196-frame crops: "
          f"{fb['first_batch_s'] * 1000:.0f} ms")
    print("targets: (b) <= 1.5x (a) wall time; (b) peak RSS < 1500 MB (main process plus each worker)")


if __name__ == "__main__":
    main()
