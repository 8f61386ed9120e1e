"""MotionDiffuse (text-conditioned motion diffusion): `model.py` (MotionDiffuseConfig, the network, the
masked epsilon loss), `train.py` (TrainConfig, presets tiny/paper, the loop; `python -m models train
motiondiffuse`), `api.py` (checkpoints, `load(run_dir) -> generator`); `python -m models generate|evaluate --run RUN` sample
and score it (the standard protocol).

The package registers itself (`MODEL`) without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="motiondiffuse",
    summary="MotionDiffuse: linear-attention diffusion transformer conditioned on frozen CLIP text",
    commands={"train": "models.motiondiffuse.train"},
    checkpoint="motiondiffuse",
    generator="models.motiondiffuse.api:load",
)

_EXPORTS = {"MotionDiffuse": "models.motiondiffuse.model", "MotionDiffuseConfig": "models.motiondiffuse.model",
            "load": "models.motiondiffuse.api"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.motiondiffuse' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
