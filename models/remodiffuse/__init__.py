"""ReMoDiffuse (retrieval-augmented motion diffusion): `model.py` (ReMoDiffuseConfig, the retrieval
encoders, semantics-modulated attention, the masked x0 loss), `database.py` (the retrieval database of a
`remodiffuse` build or a reference `.npz`, hybrid scoring), `mixture.py` (the condition mixture and the
DDIM sampler), `train.py` (presets tiny/paper; `python -m models train remodiffuse`), `api.py`
(`load(run_dir) -> generator`), `evaluate.py` (the standard table plus tail-5% / balanced MM-Dist over
the build's rareness), `tune.py` (`python -m models tune-mixture`: the paper's coefficient search).

The package registers itself (`MODEL`) without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="remodiffuse",
    summary="ReMoDiffuse: retrieval-augmented diffusion with semantics-modulated attention and a condition mixture",
    commands={"train": "models.remodiffuse.train", "evaluate": "models.remodiffuse.evaluate"},
    checkpoint="remodiffuse",
    generator="models.remodiffuse.api:load",
)

_EXPORTS = {"ReMoDiffuse": "models.remodiffuse.model", "ReMoDiffuseConfig": "models.remodiffuse.model",
            "load": "models.remodiffuse.api"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.remodiffuse' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
