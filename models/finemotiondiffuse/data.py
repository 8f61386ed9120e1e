"""The fine-grained steps of a `finehumanml3d` build, and the batch condition FineMotionDiffuse trains on.

The build's `fine` column holds, per row, one record per annotation (the `fine_steps` processor):
`status` (checked | failed | error) and `steps` [{index, title, description, pseudo_code}]. Only
`checked` steps are used: any other annotation trains and generates from its coarse caption alone,
and the count of such fallbacks is reported when training starts.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch

from datasets_build.text.encoders import TextEncoder
from datasets_build.text.feature_cache import TextFeatureCache
from models.training.data import DataError, MotionDataset, open_split

Steps = list[str] | None  # a caption's checked step descriptions, or None: coarse only


def fine_steps_of(record: dict[str, Any] | None) -> Steps:
    """The checked steps' descriptions of one `fine` record (None when not checked or empty)."""
    if not record or record.get("status") != "checked":
        return None
    steps = [str(s.get("description") or "").strip() for s in record.get("steps") or []]
    steps = [s for s in steps if s]
    return steps or None


def read_fine_column(data: str | os.PathLike | Any, split: str, table: Any = None) -> list[list[Steps]]:
    """Per table row of the split (or of its Arrow `table`, already open), per annotation, its checked
    steps (None: coarse fallback)."""
    table = open_split(data, split).data.table if table is None else table
    if "fine" not in table.column_names:
        raise DataError(f"{data} has no 'fine' column: FineMotionDiffuse trains on a build of the finehumanml3d "
                        f"recipe (`python -m datasets_build finehumanml3d ...`)")
    return [[fine_steps_of(r) for r in (row or [])] for row in table.column("fine").to_pylist()]


def select_steps(steps: Steps, max_steps: int, drop_first_last: bool = False) -> Steps:
    """Keep at most `max_steps`; with `drop_first_last` (inference) drop the beginning and end pose
    when more than two steps remain."""
    if not steps:
        return None
    if drop_first_last and len(steps) > 2:
        steps = steps[1:-1]
    return list(steps[:max_steps])


def steps_by_caption(data: str | os.PathLike | Any, split: str) -> dict[str, list[str]]:
    """caption -> its checked steps, for generation from captions (the first checked record of a
    caption wins when a caption text occurs on several motions)."""
    table = open_split(data, split).data.table
    fine = read_fine_column(data, split, table)
    out: dict[str, list[str]] = {}
    for row_annotations, row_fine in zip(table.column("annotations").to_pylist(), fine):
        for annotation, steps in zip(row_annotations or [], row_fine):
            if steps and annotation["caption"] not in out:
                out[annotation["caption"]] = steps
    return out


def step_features(cache: TextFeatureCache, per_caption: Sequence[Steps], step_feature: str,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The fine inputs of `FineMotionDiffuse.encode_text` for a batch: steps (B, S, P) pooled or
    (B, S, Lt, W) tokens with step_token_mask (B, S, Lt), and step_mask (B, S); S = the batch's most."""
    B, S = len(per_caption), max((len(s) for s in per_caption if s), default=0)
    texts = sorted({t for s in per_caption if s for t in s})
    if texts:
        cache.add(texts)
    step_mask = torch.zeros(B, S, dtype=torch.bool)
    if step_feature == "pooled":
        width = len(next(iter(cache.pooled.values()))) if texts else 1
        steps = np.zeros((B, S, width), np.float32)
        for b, s in enumerate(per_caption):
            for k, text in enumerate(s or []):
                steps[b, k], step_mask[b, k] = cache.pooled[text], True
        return {"steps": torch.from_numpy(steps).to(device), "step_mask": step_mask.to(device)}
    Lt = max((len(cache.tokens[t]) for t in texts), default=1)
    width = int(cache.encoder.token_dim)
    tokens, token_mask = np.zeros((B, S, Lt, width), np.float32), np.zeros((B, S, Lt), bool)
    for b, s in enumerate(per_caption):
        for k, text in enumerate(s or []):
            t = cache.tokens[text]
            tokens[b, k, :len(t)], token_mask[b, k, :len(t)], step_mask[b, k] = t, True, True
    return {"steps": torch.from_numpy(tokens).to(device), "step_mask": step_mask.to(device),
            "step_token_mask": torch.from_numpy(token_mask).to(device)}


class FineText:
    """The text condition of a training batch: coarse caption tokens plus the picked annotation's
    checked fine steps (the `condition` of `models.motiondiffuse.train.train`)."""

    def __init__(self, cfg: Any, train_set: MotionDataset, text_encoder: TextEncoder, model_cfg: Any,
                 announce: bool) -> None:
        from models.motiondiffuse.train import CoarseText

        self.coarse = CoarseText(cfg, train_set, text_encoder, model_cfg, announce)
        self.steps = TextFeatureCache(text_encoder)  # apart from the coarse cache (which may hold build features)
        self.dataset, self.model_cfg = train_set, model_cfg
        self.fine = read_fine_column(cfg.data, cfg.split)
        counts: Counter = Counter()
        texts = set()
        for index in range(len(train_set)):
            for pick in range(len(train_set.captions(index))):
                steps = self.lookup(index, pick)
                counts["fine" if steps else "coarse"] += 1
                texts.update(steps or [])
        self.counts = dict(counts)
        if announce:
            print(f"fine steps: {counts['fine']} captions with checked steps, {counts['coarse']} fall back to the "
                  f"coarse caption (not checked)", file=sys.stderr)
        self.steps.add(sorted(texts), progress=bool(getattr(cfg, "progress", False)))

    def lookup(self, index: int, pick: int) -> Steps:
        row, annotation = self.dataset.annotation_of(index, pick)
        record = self.fine[row][annotation] if annotation < len(self.fine[row]) else None
        return select_steps(record, self.model_cfg.max_steps)

    def __call__(self, model: Any, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        tokens, token_mask, _ = self.coarse.cache.batch(batch["caption"], device)
        per_caption = [self.lookup(int(i), int(p)) for i, p in zip(batch["index"], batch["annotation"])]
        return model.encode_text(tokens, token_mask,
                                 **step_features(self.steps, per_caption, self.model_cfg.step_feature, device))
