"""Training samples as token ids: a build's stored `motion_tokens` (made with `--motion-tokenizer VQ_RUN`)
when the build's tokenizer is the run's, else motions encoded by the frozen VQ-VAE per batch.

Stored ids serve MotionDataset's samples (same filters, captions and random draws) cropped in token
space: the crop length is the reference's (a multiple of 4 frames, one unit shorter with probability 1/3)
and the start a random token. A sub-clip sample reads its own `subclip_tokens`. This differs from the
reference (crop frames, then encode) only at the crop edges, where the encoder's receptive field saw
the neighbouring frames [inferred; `--stored-tokens never` restores the reference].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from datasets_build.formats.built import processor_config
from models.training.data import MotionDataset


def stored_tokens_match(data: str, fingerprint: str | None, column: str = "motion_tokens") -> bool:
    """Whether the build at `data` holds `column` made by the tokenizer with this checkpoint fingerprint."""
    if not fingerprint:
        return False
    return any(c.get("tokenizer_hash") == fingerprint for c in processor_config(data, "motion_tokens"))


class TokenSamples(torch.utils.data.Dataset):
    """Items {"ids": int64 (max_tokens, Q) zero-padded, "length": frames (4 x tokens), "caption": str}."""

    def __init__(self, samples: MotionDataset, downsampling: int, max_tokens: int) -> None:
        self.samples, self.unit, self.max_tokens = samples, downsampling, max_tokens
        table = samples.source.data.table
        if "motion_tokens" not in table.column_names:
            raise ValueError("the build has no motion_tokens column")
        self._tokens = table.column("motion_tokens")
        self._subclips = table.column("subclip_tokens")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_tokens=None, _subclips=None)
        return state

    def __len__(self) -> int:
        return len(self.samples)

    def _ids(self, index: int) -> np.ndarray:
        if self._tokens is None:
            table = self.samples.source.data.table
            self._tokens, self._subclips = table.column("motion_tokens"), table.column("subclip_tokens")
        row, annotation = self.samples.annotation_of(index, 0)
        if int(self.samples.prefix[index]) > 0:                      # a sub-clip: its own frame range's ids
            ids = self._subclips[row].as_py()[annotation]
        else:
            ids = self._tokens[row].as_py()
        ids = np.asarray(ids, np.int64)
        return ids[:, None] if ids.ndim == 1 else ids                 # (n, Q)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s, rng = self.samples, self.samples.rng
        ids = self._ids(index)
        units = s.options.crop_length(len(ids) * self.unit, rng) // self.unit
        units = max(1, min(units, len(ids), self.max_tokens))
        start = rng.randint(0, len(ids) - units) if s.options.random_crop else 0
        padded = np.zeros((self.max_tokens, ids.shape[1]), np.int64)
        padded[:units] = ids[start:start + units]
        a, b = s.ann_ptr[index], s.ann_ptr[index + 1]
        pick = rng.randrange(b - a) if s.options.caption == "random" else 0
        caption = s.arrow.caption(int(s.rows[index]), int(s.ann_index[a + pick]))
        return {"ids": padded, "length": units * self.unit, "caption": caption}


def collate_tokens(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ids": torch.from_numpy(np.stack([it["ids"] for it in items])),
            "length": torch.tensor([it["length"] for it in items], dtype=torch.long),
            "caption": [it["caption"] for it in items]}


__all__ = ["TokenSamples", "collate_tokens", "stored_tokens_match"]
