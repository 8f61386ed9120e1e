"""LaMP-T2M training samples read from a build's `motion_tokens` column (processors/motion_tokens.py, made with
`--motion-tokenizer VQ_RUN`), so training runs no VQ encoder.

A sample of `MotionDataset`'s index (whole motions and kept sub-clips, the same captions) serves the token
ids of its frames: `motion_tokens` of the row for a whole motion, `subclip_tokens` of its annotation for a
sub-clip. The crop happens in token space [inferred]: LaMP's crop length (a multiple of 4 frames, one unit
shorter with probability 1/3, at most 196 frames) divided by 4 tokens, at a random token offset. The code
encodes each cropped, zero-padded motion instead, so tokens next to a crop boundary can differ; the build's
ids are those of the whole motion. The build's tokenizer hash (in build.json) must be the LaMP run's VQ.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.training.data import DataError, DataOptions, MotionDataset

COLUMNS = ("motion_tokens", "subclip_tokens")


def build_tokenizer_hashes(data: str | os.PathLike) -> set[str]:
    """The tokenizer checkpoint hashes the build's build.json records (empty when it names none)."""
    path = Path(data) / "build.json"
    if not path.is_file():
        return set()
    return set(re.findall(r'"tokenizer_hash":\s*"([0-9a-f]+)"', path.read_text()))


def has_token_columns(data: str | os.PathLike, split: str) -> bool:
    import datasets

    try:
        names = datasets.load_from_disk(str(data))[split].column_names
    except (FileNotFoundError, KeyError):
        return False
    return all(c in names for c in COLUMNS)


class TokenSamples(torch.utils.data.Dataset):
    """Items {"ids": int64 [max_tokens] (0 past the length), "token_length": int, "caption": str}."""

    def __init__(self, data: str | os.PathLike, split: str, options: DataOptions, max_tokens: int,
                 unit: int = 4, vq_fingerprint: str | None = None) -> None:
        hashes = build_tokenizer_hashes(data)
        if vq_fingerprint and hashes and vq_fingerprint not in hashes:
            raise DataError(f"the motion_tokens of {data} come from another tokenizer ({', '.join(sorted(hashes))}) "
                            f"than the LaMP run's VQ-VAE ({vq_fingerprint}): rebuild with its --motion-tokenizer, or "
                            "train with --set token_column=false")
        self.samples = MotionDataset(data, split, stats=None, options=options)
        self.options, self.max_tokens, self.unit = options, max_tokens, unit
        table = self.samples.source.data.table
        whole = table.column("motion_tokens").to_pylist()
        subclips = table.column("subclip_tokens").to_pylist()
        self.tokens: list[np.ndarray] = []
        for i in range(len(self.samples)):
            row = int(self.samples.rows[i])
            if int(self.samples.prefix[i]) == 0:
                ids = whole[row]
            else:
                row_in_split, annotation = self.samples.annotation_of(i, 0)
                ids = subclips[row_in_split][annotation]
            ids = np.asarray(ids, np.int64)
            if ids.ndim != 1:
                raise DataError(f"{data} holds residual motion tokens (n, Q); LaMP-T2M reads a single codebook")
            self.tokens.append(ids)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids, rng = self.tokens[index], self.samples.rng
        frames = min(len(ids) * self.unit, self.options.max_motion_length)
        count = max(1, min(self.options.crop_length(frames, rng) // self.unit, len(ids)))
        start = rng.randint(0, len(ids) - count) if self.options.random_crop else 0
        out = np.zeros(self.max_tokens, np.int64)
        out[:count] = ids[start:start + count]
        captions = self.samples.captions(index)
        caption = captions[rng.randrange(len(captions))] if self.options.caption == "random" else captions[0]
        return {"ids": out, "token_length": count, "caption": caption}


def collate_tokens(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ids": torch.from_numpy(np.stack([it["ids"] for it in items])),
            "token_length": torch.tensor([it["token_length"] for it in items], dtype=torch.long),
            "caption": [it["caption"] for it in items]}


__all__ = ["COLUMNS", "TokenSamples", "build_tokenizer_hashes", "collate_tokens", "has_token_columns"]
