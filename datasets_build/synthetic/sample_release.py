"""The bundled sample release: procedurally animated skeletons in the official layout.

A new user sees the whole pipeline without the licensed data, and tests get motions whose
captions describe exactly what happens, with known action boundaries. Deterministic for a seed.
The layout is the release's: features from joints (`joints_to_features`), joints recovered from
the features (as the release's `new_joints` are), `word/POS` caption lines, sub-clip lines for the
single actions of multi-action HumanML3D motions, `M` mirrors with left/right swapped, splits,
block-averaged Mean/Std and index.csv; plus `segments.jsonl`, the true action boundaries.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from datasets_build.motion.captions import mirror_caption_line
from datasets_build.synthetic.procedural import (
    MIRROR_ACTION, Segment, caption_text, caption_tokens, describe, describe_segment, generate_motion,
    random_actions,
)
from datasets_build.motion.normalizer import block_averaged_std
from datasets_build.motion.specs import SPECS
from datasets_build.synthetic.noise_release import split_of, write_release_files
from datasets_build.motion.kinematics import features_to_joints, get_skeleton, joints_to_features, mirror_joints

SAMPLE_VERSION = "3"  # bump when the generated release changes (3: every split has motions from 3 on)
def seconds_for(frame: int, fps: float) -> str:
    """The shortest decimal number of seconds that a reader turns back into `frame`
    (`int(seconds * fps) == frame`, as the reference loaders compute it)."""
    for digits in range(1, 8):
        for text in (f"{frame / fps:.{digits}f}", f"{frame / fps + 0.5 * 10**-digits:.{digits}f}"):
            if int(float(text) * fps) == frame:
                return text
    raise ValueError(f"no decimal seconds for frame {frame} at {fps} fps")


def _caption_lines(segments: list[Segment], rng: np.random.Generator, fps: float, subclips: bool) -> list[str]:
    lines = []
    for _ in range(2):  # two wordings of the whole motion
        tokens = describe(segments, rng)
        lines.append(f"{caption_text(tokens)}#{caption_tokens(tokens)}#0.0#0.0")
    if subclips and len(segments) > 1:
        for segment in segments:
            tokens = describe_segment(segment, rng)
            lines.append(f"{caption_text(tokens)}#{caption_tokens(tokens)}#"
                         f"{seconds_for(segment.start, fps)}#{seconds_for(segment.end, fps)}")
    return lines


def write_sample_release(root: str | os.PathLike, dataset: str = "humanml3d", num_motions: int = 64,
                         seed: int = 0) -> Path:
    """Write `num_motions` base motions and their mirrors to `root` in the official layout."""
    spec = SPECS[dataset]
    root = Path(root)
    for sub in ("new_joint_vecs", "new_joints", "texts"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width = 6 if dataset == "humanml3d" else 5
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    all_features, index_rows, truth = [], [], []
    for i in range(num_motions):
        base = f"{i:0{width}d}"
        raw, segments = generate_motion(random_actions(rng), rng, dataset)
        # KIT-ML's lines are always whole-motion (the reference loaders cut sub-clips at 20 fps).
        lines = _caption_lines(segments, rng, spec.fps, subclips=dataset == "humanml3d")
        for mirrored in (False, True):
            motion_id = ("M" if mirrored else "") + base
            features = joints_to_features(mirror_joints(raw, dataset) if mirrored else raw, dataset)
            np.save(root / "new_joint_vecs" / f"{motion_id}.npy", features)
            np.save(root / "new_joints" / f"{motion_id}.npy", features_to_joints(features, dataset).astype(np.float32))
            text = [mirror_caption_line(line) for line in lines] if mirrored else lines
            (root / "texts" / f"{motion_id}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
            splits[split_of(i, num_motions)].append(motion_id)
            all_features.append(features)
            truth.append({"id": motion_id, "segments": [
                {"action": MIRROR_ACTION[s.action] if mirrored else s.action, "start_frame": s.start,
                 "end_frame": s.end} for s in segments]})
        index_rows.append([f"./pose_data/procedural/{base}.npy", 0, len(raw), f"{base}.npy"])
    stacked = np.concatenate(all_features)
    write_release_files(root, splits, stacked.mean(axis=0), block_averaged_std(stacked, dataset),
                        index_rows if spec.has_index_csv else None)
    (root / "segments.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    return root


def sample_release_dir(dataset: str, num_motions: int, seed: int) -> Path:
    """Where `--source sample` keeps its generated release (reused while it is complete)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "datasets_build"
    cache = Path(os.environ.get("DATASETS_BUILD_CACHE") or default)
    return cache / "sample" / f"{dataset}-v{SAMPLE_VERSION}-n{num_motions}-seed{seed}"


def ensure_sample_release(dataset: str, num_motions: int = 64, seed: int = 0) -> Path:
    root = sample_release_dir(dataset, num_motions, seed)
    if not (root / ".complete").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_sample_release(tmp, dataset, num_motions, seed)
        (tmp / ".complete").write_text("")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return root
