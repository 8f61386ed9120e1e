"""MoMask (MATE's host generator): `model.py` (MoMaskConfig, the bidirectional masked transformer over
the base-layer ids and the residual transformer), `sampling.py` (iterative unmasking with guidance, then
the residual layers), `train.py` (TrainConfig, presets tiny/paper; `python -m models train momask --stage
mask|residual`), `api.py` (checkpoints of both stages in one run folder, `load(run_dir) -> generator`);
`python -m models generate|evaluate --run RUN` sample and score it. The tokenizer is `models.vq`'s
residual VQ-VAE (`python -m models train vqvae --preset momask`).

The package registers itself (`MODEL`) without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="momask",
    summary="MoMask: masked and residual token transformers over a residual VQ-VAE, conditioned on pooled CLIP text",
    commands={"train": "models.momask.train"},
    checkpoint="momask",
    generator="models.momask.api:load",
)

_EXPORTS = {"MaskTransformer": "models.momask.model", "ResidualTransformer": "models.momask.model",
            "MoMaskConfig": "models.momask.model", "load": "models.momask.api"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.momask' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
