"""The motion VQ-VAE (T2M-GPT / LaMP stage 1; MoMask's residual VQ with `--set quantizer=residual`):
`model.py` (VQVAEConfig, encoder/decoder, the losses; the quantizers are `models.nn.quantize`),
`train.py` (TrainConfig, presets tiny/paper, the loop; `python -m models train vqvae`), `evaluate.py`
(reconstruction MPJPE and FID; `python -m models evaluate vqvae`), `api.py` (checkpoints,
`load(run_dir) -> VQVAE` frozen, with its normalisation as `vq.stats`).

`models.vq` is a tokenizer layer: model packages (LaMP, MoMask) and the `motion_tokens` processor import
it. The package registers itself (`MODEL`) without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="vqvae",
    summary="motion VQ-VAE tokenizer (1-D conv, EMA codebook or residual VQ; LaMP / T2M-GPT / MoMask stage 1)",
    commands={"train": "models.vq.train", "evaluate": "models.vq.evaluate"},
    checkpoint="vq",
)

_EXPORTS = {"VQVAE": "models.vq.model", "VQVAEConfig": "models.vq.model", "load": "models.vq.api"}


def __getattr__(name: str) -> Any:  # PEP 562: `from models.vq import VQVAE` imports torch only then
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.vq' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
