"""Write small (or full-scale) synthetic releases in the official layout, deterministic for a seed.

Used by the tests and the benchmarks: fast at any scale. The motions are smooth random feature
sequences, not skeletons (see `sample.py` for those); the captions are well-formed `word/POS` lines
with sub-clips and left/right-swapped mirrors, so every part of the reader is exercised.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from datasets_build.motion.captions import mirror_caption_line
from datasets_build.motion.specs import SPECS
from datasets_build.synthetic.grammar import (
    NOISE_ACTIONS, NOISE_SUBJECTS, NOISE_THEN, caption_text, caption_tokens, parse,
)

# Parsed once: (word, lemma, POS) tuples.
_SUBJECTS = [parse(spec) for spec in NOISE_SUBJECTS]
_ACTIONS = [parse(spec) for spec in NOISE_ACTIONS]
_THEN = parse(NOISE_THEN)


def split_of(index: int, count: int | None = None) -> str:
    """Split of the index-th base motion: 16 of every 20 train, 1 val, 3 test (mirrors follow).
    Given the `count` of base motions, a release of 3 or more has a motion in every split: when the
    cycle of 20 gives none to test (or val), the last (or the one before) goes there."""
    split = "train" if index % 20 < 16 else ("val" if index % 20 == 16 else "test")
    if count is None or count < 3:
        return split
    if count < 18 and index == count - 1:  # the cycle reaches test only at its 18th motion
        return "test"
    if count < 18 and index == count - 2:  # and val at its 17th (taken by test above when it is the last)
        return "val"
    return split


def _caption(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    words = list(_SUBJECTS[rng.integers(len(_SUBJECTS))]) + list(_ACTIONS[rng.integers(len(_ACTIONS))])
    if rng.random() < 0.5:
        words += _THEN + list(_ACTIONS[rng.integers(len(_ACTIONS))])
    return words


def _line(words: list[tuple[str, str, str]], start: float, end: float, mirror: bool) -> str:
    line = f"{caption_text(words)}#{caption_tokens(words)}#{start}#{end}"
    return mirror_caption_line(line) if mirror else line


def sample_lengths(rng: np.random.Generator, count: int, low: int = 40, high: int = 199) -> np.ndarray:
    """Frame counts spread like HumanML3D's: most between 100 and 199, a pile-up at the 10 s cap."""
    lengths = rng.normal(140, 45, size=count).round().astype(int)
    return np.clip(lengths, low, high)


def write_synthetic_release(root: str | os.PathLike, dataset: str = "humanml3d", num_motions: int = 24,
                            seed: int = 0, mirrors: bool = True, joints: bool = True,
                            subclip_prob: float | None = None, captions: tuple[int, int] = (2, 4)) -> Path:
    """Write `num_motions` base motions (plus mirrors) to `root`; returns `root`.

    Splits follow a fixed pattern (16 of 20 train, 1 val, 3 test), mirrors with their base motion.
    """
    spec = SPECS[dataset]
    root = Path(root)
    for sub in ("new_joint_vecs", "texts") + (("new_joints",) if joints else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if subclip_prob is None:
        subclip_prob = 0.3 if dataset == "humanml3d" else 0.0  # KIT lines are always whole-motion
    width = 6 if dataset == "humanml3d" else 5
    lengths = sample_lengths(rng, num_motions)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    total = np.zeros(spec.feature_dim)
    total_sq = np.zeros(spec.feature_dim)
    frames = 0
    index_rows = []
    for i, length in enumerate(lengths):
        base = f"{i:0{width}d}"
        split = split_of(i)
        lines = []
        for _ in range(rng.integers(captions[0], captions[1] + 1)):
            start = end = 0.0
            if rng.random() < subclip_prob:
                # Half-second boundaries, at least 2 s long, as in HumanML3D's sub-clip lines.
                half_seconds = int(length / spec.fps * 2)
                if half_seconds >= 5:
                    a = int(rng.integers(0, half_seconds - 4))
                    b = int(rng.integers(a + 4, half_seconds + 1))
                    start, end = a / 2, b / 2
            lines.append((_caption(rng), start, end))
        motion = (rng.standard_normal((length, spec.feature_dim), dtype=np.float32).cumsum(axis=0) * 0.05)
        for mirror in (False, True) if mirrors else (False,):
            motion_id = ("M" if mirror else "") + base
            features = -motion if mirror else motion
            np.save(root / "new_joint_vecs" / f"{motion_id}.npy", features)
            if joints:
                np.save(root / "new_joints" / f"{motion_id}.npy",
                        features[:, : spec.num_joints * 3].reshape(length, spec.num_joints, 3))
            text = "\n".join(_line(words, s, e, mirror) for words, s, e in lines) + "\n"
            (root / "texts" / f"{motion_id}.txt").write_text(text, encoding="utf-8")
            splits[split].append(motion_id)
            total += features.sum(axis=0, dtype=np.float64)
            total_sq += np.square(features, dtype=np.float64).sum(axis=0)
            frames += length
        index_rows.append([f"./pose_data/synthetic/{base}.npy", 0, int(length) + 1, f"{base}.npy"])

    mean = total / frames
    std = np.sqrt(np.maximum(total_sq / frames - mean**2, 1e-12))
    write_release_files(root, splits, mean, std, index_rows if spec.has_index_csv else None)
    return root


def write_release_files(root: Path, splits: dict[str, list[str]], mean: np.ndarray, std: np.ndarray,
                        index_rows: list[list] | None) -> None:
    """The files beside the per-motion folders: splits (and their unions), Mean/Std, index.csv."""
    np.save(root / "Mean.npy", np.asarray(mean, dtype=np.float32))
    np.save(root / "Std.npy", np.asarray(std, dtype=np.float32))
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("".join(f"{x}\n" for x in ids))
    (root / "train_val.txt").write_text("".join(f"{x}\n" for x in splits["train"] + splits["val"]))
    (root / "all.txt").write_text("".join(f"{x}\n" for ids in splits.values() for x in ids))
    if index_rows is not None:
        with open(root / "index.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["source_path", "start_frame", "end_frame", "new_name"])
            writer.writerows(index_rows)
