"""Loader throughput and time to first batch: models.training.data.MotionDataset vs a MoMask-style loader.

    .venv/bin/python benchmarks/loader.py [--motions 14614] [--workdir DIR] [--batches 150]

Generates a full-scale synthetic HumanML3D release (14,614 base motions + mirrors, no joints) and
builds it (about a minute; `--workdir` keeps both for the next run), then measures on the train
split, batch 64, 196 frames:
- ours: `MotionDataset` (numpy sample index + zero-copy Arrow views) with a DataLoader of 1 and 2
  workers: time to first batch (the worst of `--repeats` runs), then samples per second;
- MoMask-style: the reference `Text2MotionDataset` re-implemented plainly: read every `.npy` and
  caption file of the split into memory at start, then serve random crops; same measurements.
Both read files the generator just wrote (warm page cache), so the comparison is not disk-bound.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_build import load_release_stats  # noqa: E402
from datasets_build import BuildConfig, build  # noqa: E402
from datasets_build.synthetic.noise_release import write_synthetic_release  # noqa: E402
from models.training.data import DataOptions, MotionDataset, Normalizer, make_loader  # noqa: E402

BATCH, MAX_MOTION_LENGTH, UNIT = 64, 196, 4


class MoMaskStyleDataset(torch.utils.data.Dataset):
    """What MoMask's Text2MotionDataset does: every motion and caption file read up front."""

    def __init__(self, root: Path, split: str, mean: np.ndarray, std: np.ndarray, fps: int = 20,
                 min_len: int = 40, max_len: int = 200) -> None:
        self.mean, self.std = mean, std
        data, lengths = {}, {}
        for name in (root / f"{split}.txt").read_text().split():
            motion = np.load(root / "new_joint_vecs" / f"{name}.npy")
            if not min_len <= len(motion) < max_len:
                continue
            texts, flag = [], False
            with codecs.open(root / "texts" / f"{name}.txt", encoding="utf-8") as f:
                for line in f:
                    caption, tokens, f_tag, to_tag = line.strip().split("#")
                    f_tag = 0.0 if np.isnan(float(f_tag)) else float(f_tag)
                    to_tag = 0.0 if np.isnan(float(to_tag)) else float(to_tag)
                    entry = {"caption": caption, "tokens": tokens.split(" ")}
                    if f_tag == 0.0 and to_tag == 0.0:
                        flag = True
                        texts.append(entry)
                        continue
                    clip = motion[int(f_tag * fps):int(to_tag * fps)]
                    if not min_len <= len(clip) < max_len:
                        continue
                    new_name = random.choice("ABCDEFGHIJKLMNOPQRSTUVW") + "_" + name
                    while new_name in data:
                        new_name = random.choice("ABCDEFGHIJKLMNOPQRSTUVW") + "_" + name
                    data[new_name] = {"motion": clip, "length": len(clip), "text": [entry]}
                    lengths[new_name] = len(clip)
            if flag:
                data[name], lengths[name] = {"motion": motion, "length": len(motion), "text": texts}, len(motion)
        self.names = sorted(data, key=lambda n: lengths[n])  # the reference sorts by length
        self.data = data

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, item: int) -> dict:
        entry = self.data[self.names[item]]
        motion, length = entry["motion"], entry["length"]
        caption = random.choice(entry["text"])["caption"]
        coin2 = np.random.choice(["single", "single", "double"])
        length = (length // UNIT - (1 if coin2 == "double" else 0)) * UNIT
        start = random.randint(0, len(motion) - length)
        motion = (motion[start:start + length] - self.mean) / self.std
        padded = np.zeros((MAX_MOTION_LENGTH, motion.shape[1]), np.float32)
        padded[:length] = motion
        return {"motion": padded, "length": length, "caption": caption, "name": self.names[item], "index": item}


def measure(make_dataset, workers: int, batches: int) -> tuple[float, float, int]:
    """(seconds to first batch including dataset creation, samples/s afterwards, dataset size)."""
    start = time.perf_counter()
    dataset = make_dataset()
    iterator = iter(make_loader(dataset, BATCH, shuffle=True, num_workers=workers))
    next(iterator)
    first = time.perf_counter() - start
    start, served = time.perf_counter(), 0
    for _ in range(batches):
        served += len(next(iterator)["name"])
    rate = served / (time.perf_counter() - start)
    del iterator  # stops the workers before the next measurement
    gc.collect()
    time.sleep(0.5)
    return first, rate, len(dataset)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--motions", type=int, default=14614, help="base motions (mirrors are added)")
    p.add_argument("--workdir", default=None, help="keep the release and build here (reused when present)")
    p.add_argument("--batches", type=int, default=150, help="batches timed after the first")
    p.add_argument("--num-proc", type=int, default=2, help="build worker processes")
    p.add_argument("--repeats", type=int, default=3, help="runs of our loader per setting (the worst is kept)")
    a = p.parse_args(argv)
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="loader-bench-"))
    root, out = work / "release", work / "built"
    try:
        if not (root / "train.txt").exists():
            t = time.perf_counter()
            write_synthetic_release(root, "humanml3d", a.motions, seed=0, joints=False)
            print(f"release: {a.motions} base motions + mirrors written in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        build(BuildConfig(recipe="humanml3d", dataset="humanml3d", source=root, out=out, progress=False,
                          num_proc=a.num_proc))
        print(f"build: {time.perf_counter() - t:.1f} s ({out})")
        mean, std = load_release_stats(out)
        stats = Normalizer(mean, std)
        options = DataOptions.for_dataset("humanml3d")
        ours = lambda: MotionDataset(out, "train", stats=stats, options=options)  # noqa: E731
        momask = lambda: MoMaskStyleDataset(root, "train", mean, std)  # noqa: E731
        rows = []
        for name, factory, repeats in (("MotionDataset (Arrow, zero-copy)", ours, a.repeats),
                                       ("MoMask-style (all .npy up front)", momask, 1)):
            for workers in (1, 2):
                runs = [measure(factory, workers, a.batches) for _ in range(repeats)]
                firsts = [r[0] for r in runs]
                rows.append((name, workers, max(firsts), float(np.median([r[1] for r in runs])), runs[0][2]))
                print(f"  {name:34s} workers={workers}  first batch " + ", ".join(f"{f:.2f}" for f in firsts)
                      + f" s  {rows[-1][3]:.0f} samples/s  ({runs[0][2]} samples)", flush=True)
        print(f"\nbatch {BATCH}, {MAX_MOTION_LENGTH} frames, {a.batches} timed batches, torch threads "
              f"{torch.get_num_threads()}; ours: worst first batch of {a.repeats} runs, median rate")
        print(f"{'loader':34s} {'workers':>7s} {'first batch s':>14s} {'samples/s':>10s} {'samples':>8s}")
        for name, workers, first, rate, size in rows:
            print(f"{name:34s} {workers:7d} {first:14.2f} {rate:10.0f} {size:8d}")
        for workers in (1, 2):
            ours_first = next(r[2] for r in rows if r[1] == workers and r[0].startswith("MotionDataset"))
            ref_first = next(r[2] for r in rows if r[1] == workers and r[0].startswith("MoMask"))
            print(f"time to first batch, {workers} worker(s): {ref_first / ours_first:.1f}x faster "
                  f"(target >= 20x)")
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
