"""MATE (Motion-Aligned Text Encoding): `text.py` (the language model with only its word-embedding
rows trainable), `model.py` (MateConfig, motion encoder/decoder, word-to-motion attention with the
segmentation prior, prototypes, the five losses), `data.py` (training triplets from a `mate` build),
`train.py` (`python -m models train mate`; presets tiny/paper), `api.py` (checkpoints, the
`aligned_embeddings.npz` artefact that `--text-encoder mate:RUN` plugs into a host, `load`),
`localization.py` (`python -m models evaluate mate`: a word's attention over a motion's frames next
to its segment).

The package registers itself (`MODEL`) without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="mate",
    summary="MATE: motion-aligned word embeddings for a host's CLIP (artefact: --text-encoder mate:RUN)",
    commands={"train": "models.mate.train", "evaluate": "models.mate.localization"},
    checkpoint="mate",
)

_EXPORTS = {"Mate": "models.mate.model", "MateConfig": "models.mate.model", "load": "models.mate.api",
            "make_text_tower": "models.mate.text"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.mate' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
