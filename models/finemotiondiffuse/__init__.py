"""FineMotionDiffuse: MotionDiffuse plus a fine-grained text branch, trained on `finehumanml3d` builds:
`model.py` (FineMotionDiffuseConfig, the network), `data.py` (the build's checked fine steps, the batch
condition), `train.py` (`python -m models train finemotiondiffuse`), `api.py` (`load(run_dir) -> generator`);
`python -m models generate|evaluate --run RUN` sample and score it.

It extends `models.motiondiffuse` (the one import between model packages that the contracts allow).
The package registers itself (`MODEL`) without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="finemotiondiffuse",
    summary="FineMotionDiffuse: MotionDiffuse whose text memory adds the caption's fine-grained steps",
    commands={"train": "models.finemotiondiffuse.train"},
    checkpoint="finemotiondiffuse",
    generator="models.finemotiondiffuse.api:load",
)

_EXPORTS = {"FineMotionDiffuse": "models.finemotiondiffuse.model",
            "FineMotionDiffuseConfig": "models.finemotiondiffuse.model", "load": "models.finemotiondiffuse.api"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.finemotiondiffuse' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
