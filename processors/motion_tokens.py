"""Motion token ids of a trained VQ-VAE (`models.vq`, a run folder), stored in the build so that token
models (LaMP-T2M, T2M-GPT, MoMask) never re-encode motions.

Each motion's raw features [T, D] are normalised with the tokenizer's own statistics, cropped to a
multiple of 4 frames (the last T mod 4 frames dropped) and encoded: n = T // 4 ids. Output columns:
- `motion_tokens`: the motion's ids, (n,) for a single codebook, (n, Q) for a residual one.
- `mirror_motion_tokens`: the ids of its left-right mirror, made from the row's own features by the
  project's kinematics (features -> joints -> `mirror_joints` -> features: the release's `M` copies are
  made this way, and it reproduces them to ~1e-6), so mirror augmentation needs no other row.
- `subclip_tokens`: per annotation (same order), the ids of its own frame range [start_frame, end_frame)
  encoded on its own when it is a sub-clip (a separate training sample), else an empty list.

The fingerprint holds the tokenizer checkpoint's content hash: a retrained or different tokenizer
invalidates the cached rows. Counters: motions, subclips, frames_dropped (the T mod 4 tails).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
from datasets import Features, List, Value

from datasets_build.motion.kinematics import features_to_joints, joints_to_features, mirror_joints
from processors.base import Batch, Processor, StepInputError

SINGLE = List(Value("int32"))
RESIDUAL = List(List(Value("int32")))


def tokenizer_checkpoint(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    return path / "checkpoint.pt" if path.is_dir() else path


def checkpoint_hash(path: str | Path) -> str:
    """sha256 (first 16 hex digits) of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def tokenizer_quantizer(run_dir: str | Path) -> str:
    """"single" or "residual", from the run's config.json (no torch needed)."""
    config = tokenizer_checkpoint(run_dir).with_name("config.json")
    try:
        return str(json.loads(config.read_text())["model_config"].get("quantizer", "single"))
    except (OSError, ValueError, KeyError, TypeError):
        return "single"


def mirror_features(motion: np.ndarray, dataset: str) -> np.ndarray:
    """The left-right mirror of raw features [T, D], same length (the release's `M` motion)."""
    joints = features_to_joints(motion, dataset, append_last_frame=True)          # (T + 1, J, 3)
    return joints_to_features(mirror_joints(joints, dataset), dataset).astype(np.float32)  # (T, D)


@dataclasses.dataclass(frozen=True)
class MotionTokens(Processor):
    name: ClassVar[str] = "motion_tokens"
    version: ClassVar[str] = "1"
    cites: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = ("motion", "annotations")
    outputs: ClassVar[Features] = Features({"motion_tokens": SINGLE, "mirror_motion_tokens": SINGLE,
                                            "subclip_tokens": List(SINGLE)})
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = "models"
    cacheable: ClassVar[bool] = True  # a model pass per motion
    num_gpus: ClassVar[float] = 0.25
    card_note: ClassVar[str] = (
        "Motion tokens: `motion_tokens` are the code ids of a trained VQ-VAE (`python -m models train vqvae`) for "
        "the motion cropped to a multiple of 4 frames (T // 4 ids; (n, Q) per row for a residual quantizer), "
        "normalised with the tokenizer's own statistics; `mirror_motion_tokens` those of its left-right mirror "
        "(made from the row's features by the kinematics); `subclip_tokens` per annotation, the ids of a "
        "sub-clip's own frame range (empty for an annotation of the whole motion). The tokenizer checkpoint's "
        "hash is part of the fingerprint.")

    tokenizer: str  # VQ-VAE run folder (RUN_DIR/checkpoint.pt) or the checkpoint file itself
    dataset: str = "humanml3d"  # the skeleton of the mirror (humanml3d or kitml)
    # Not configuration (the ids do not depend on it), so not in the fingerprint.
    device: str | None = dataclasses.field(default=None, compare=False)
    # The checkpoint's content hash: a retrained tokenizer changes the fingerprint.
    tokenizer_hash: str = dataclasses.field(default="", init=False)

    def __post_init__(self) -> None:
        path = tokenizer_checkpoint(self.tokenizer)
        if path.is_file():
            object.__setattr__(self, "tokenizer_hash", checkpoint_hash(path))
        if tokenizer_quantizer(self.tokenizer) == "residual":  # (n, Q) ids per motion
            self.__dict__["outputs"] = Features({"motion_tokens": RESIDUAL, "mirror_motion_tokens": RESIDUAL,
                                                 "subclip_tokens": List(RESIDUAL)})

    def model(self):
        """This worker's frozen VQ-VAE, loaded on first use (torch is imported only here)."""
        from models.vq.api import load

        return self.resource("model", lambda: load(self.tokenizer, self.device))

    def encode(self, motion: np.ndarray) -> list:
        from models.vq.api import tokenize

        return tokenize(self.model(), motion).astype(np.int32).tolist()

    def __call__(self, batch: Batch) -> Batch:
        tokens, mirrors, subclips = [], [], []
        for row, (motion, annotations) in enumerate(zip(batch["motion"], batch["annotations"])):
            motion = np.asarray(motion, np.float32)
            if motion.ndim != 2 or len(motion) < 4:
                raise StepInputError(f"motion_tokens: row {row} has a motion of shape {motion.shape}; "
                                     "at least 4 frames are needed for one token")
            self.counters["motions"] += 1
            self.counters["frames_dropped"] += len(motion) % 4
            tokens.append(self.encode(motion))
            mirrors.append(self.encode(mirror_features(motion, self.dataset)))
            per_annotation = []
            for a in annotations:
                start, end = max(int(a["start_frame"]), 0), min(int(a["end_frame"]), len(motion))
                if a.get("is_subclip") and end - start >= 4:
                    self.counters["subclips"] += 1
                    per_annotation.append(self.encode(motion[start:end]))
                else:
                    per_annotation.append([])
            subclips.append(per_annotation)
        return {"motion_tokens": tokens, "mirror_motion_tokens": mirrors, "subclip_tokens": subclips}


__all__ = ["MotionTokens", "checkpoint_hash", "mirror_features", "tokenizer_quantizer"]
