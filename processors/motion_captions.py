"""Captions of every motion written by a trained LaMP-M2T run (`python -m models train lamp-m2t`), so a build of
unlabelled motions gets text with the same recipe machinery (MODELS.md 5.4; LaMP paper 3.4).

Output column: `generated_caption`, one string per motion: beam search 5 after the run's prompt ("a man is")
over the motion's first 196 frames (LaMP's window), cut to a multiple of 4 frames, normalised with the run's
own statistics. The fingerprint holds the run checkpoint's content hash (a retrained captioner recomputes
the column); the LM folder the run reads is the one recorded at training unless `lm` names another.
Counters: motions, truncated (motions longer than the 196-frame window).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
from datasets import Features, Value

from processors.base import Batch, Processor, StepInputError
from processors.motion_tokens import checkpoint_hash, tokenizer_checkpoint


@dataclasses.dataclass(frozen=True)
class MotionCaptions(Processor):
    name: ClassVar[str] = "motion_captions"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("motion",)
    outputs: ClassVar[Features] = Features({"generated_caption": Value("string")})
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers", "peft")
    extra: ClassVar[str] = "lamp"
    cacheable: ClassVar[bool] = True  # a language-model beam search per motion
    num_gpus: ClassVar[float] = 0.5
    card_note: ClassVar[str] = (
        "Generated captions: `generated_caption` is written by a LaMP-M2T captioner (LaMP's query tokens as the "
        "prefix of a LoRA-adapted causal language model), beam search 5 after the prompt \"a man is\", over the "
        "motion's first 196 frames. The captioner checkpoint's hash is part of the fingerprint.")

    captioner: str  # LaMP-M2T run folder (RUN_DIR/checkpoint.pt)
    lm: str | None = None  # the LM folder when it moved since training (default: the run's record)
    # Not configuration (the captions do not depend on them), so not in the fingerprint.
    device: str | None = dataclasses.field(default=None, compare=False)
    batch_size: int = dataclasses.field(default=32, compare=False)
    # The checkpoint's content hash: a retrained captioner changes the fingerprint.
    captioner_hash: str = dataclasses.field(default="", init=False)

    def __post_init__(self) -> None:
        path = tokenizer_checkpoint(self.captioner)
        if path.is_file():
            object.__setattr__(self, "captioner_hash", checkpoint_hash(path))

    def model(self):
        """This worker's captioner, loaded on first use (torch is imported only here)."""
        from models.lamp.caption import load_captioner

        folder = Path(self.captioner)
        return self.resource("captioner", lambda: load_captioner(folder if folder.is_dir() else folder.parent,
                                                                 self.device, self.lm, self.batch_size))

    def __call__(self, batch: Batch) -> Batch:
        motions = []
        for row, motion in enumerate(batch["motion"]):
            motion = np.asarray(motion, np.float32)
            if motion.ndim != 2 or len(motion) < 4:
                raise StepInputError(f"motion_captions: row {row} has a motion of shape {motion.shape}; the "
                                     "captioner needs at least 4 frames")
            self.counters["motions"] += 1
            self.counters["truncated"] += int(len(motion) > 196)
            motions.append(motion)
        return {"generated_caption": self.model().caption(motions)}


__all__ = ["MotionCaptions"]
