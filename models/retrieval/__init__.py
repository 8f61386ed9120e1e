"""TMR-style text-motion retrieval: `model.py` (RetrievalConfig, the network and losses), `train.py`
(TrainConfig, presets, the loop; `python -m models train retrieval`), `evaluate.py` (`python -m models
evaluate retrieval`), `api.py` (its checkpoint entries and `load` / `load_retrieval_model`).

The package registers itself (`MODEL`) without importing torch; its classes load on first use."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="retrieval",
    summary="TMR-style text-motion retrieval (text and motion encoders, shared latent space)",
    commands={"train": "models.retrieval.train", "evaluate": "models.retrieval.evaluate"},
    checkpoint="retrieval",
)

_EXPORTS = {"TMR": "models.retrieval.model", "RetrievalConfig": "models.retrieval.model",
            "RetrievalEncoder": "models.retrieval.api", "load": "models.retrieval.api",
            "load_retrieval_model": "models.retrieval.api"}


def __getattr__(name: str) -> Any:  # PEP 562: `from models.retrieval import TMR` imports torch only then
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.retrieval' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
