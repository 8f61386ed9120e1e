"""A per-caption cache of a frozen text encoder's token features, for training models.

The encoders come from `datasets_build.text.encoders.load_text_encoder(name, checkpoint, device)`; any
object with the same interface (`datasets_build.text.encoders.TextEncoder`) can be passed instead,
which is how the tests inject a small deterministic encoder. The encoder is frozen, so each caption's token features are
computed once and kept (float16, trimmed to the caption's tokens) for the whole training run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from datasets_build.text.encoders import TextEncoder


class TextFeatureCache:
    """caption -> (token features [L, token_dim] float16, pooled unit-norm embedding [dim] float32).

    Filled in bulk with `add` (unique captions, batched through the encoder); `batch` pads a list
    of captions to tensors and encodes any caption it has not seen yet."""

    def __init__(self, encoder: TextEncoder, batch_size: int = 256) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.tokens: dict[str, np.ndarray] = {}
        self.pooled: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, captions: Sequence[str], progress: bool = False) -> None:
        todo = sorted({c for c in captions if c not in self.tokens})
        chunks = range(0, len(todo), self.batch_size)
        if progress and len(todo) > self.batch_size:
            from tqdm import tqdm
            chunks = tqdm(chunks, desc="text features", unit="batch")
        for lo in chunks:
            texts = todo[lo:lo + self.batch_size]
            if hasattr(self.encoder, "encode_all"):  # the project's encoders: both outputs in one pass
                pooled, feats, mask = self.encoder.encode_all(texts, batch_size=self.batch_size)
            else:
                feats, mask = self.encoder.encode_tokens(texts, batch_size=self.batch_size)
                pooled = self.encoder.encode(texts, batch_size=self.batch_size)
            pooled = np.asarray(pooled, np.float32)
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            for text, f, m, p in zip(texts, np.asarray(feats), np.asarray(mask, bool), pooled):
                if not m.any():
                    raise ValueError(f"text encoder returned no tokens for {text!r}")
                self.tokens[text] = f[m].astype(np.float16)
                self.pooled[text] = p

    def batch(self, captions: Sequence[str], device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens [B, L, token_dim] float32, mask [B, L] bool, pooled [B, dim] float32) on `device`."""
        self.add(captions)
        length = max(len(self.tokens[c]) for c in captions)
        tokens = np.zeros((len(captions), length, self.encoder.token_dim), np.float32)
        mask = np.zeros((len(captions), length), bool)
        for i, c in enumerate(captions):
            t = self.tokens[c]
            tokens[i, :len(t)], mask[i, :len(t)] = t, True
        pooled = np.stack([self.pooled[c] for c in captions])
        return (torch.from_numpy(tokens).to(device), torch.from_numpy(mask).to(device),
                torch.from_numpy(pooled).to(device))
