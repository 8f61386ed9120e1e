"""LaMP (language-motion pretraining, ../shared/docs/MODELS.md 5.2 and 5.6): `qformer.py` (the BERT-named
Q-Former with query tokens, cross-attention to a 1408-wide memory and query feed-forward copies),
`pretrain.py` (LaMPConfig, the model over the frozen motion VQ-VAE and its four losses), `text.py`
(caption clean-up, BERT tokenizer, local BERT weights), `train.py` (`python -m models train lamp
--tokenizer VQ_RUN`), `api.py` (checkpoints; `load(run_dir)` -> text and motion feature encoders;
`load_evaluator` for `--evaluator lamp:RUN`), `retrieval.py` (`python -m models evaluate lamp`: LaMP-Feat
retrieval, both directions).

The package registers itself (`MODEL`) without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="lamp",
    summary="LaMP language-motion pretraining (Q-Former over a frozen motion VQ-VAE; LaMP-Feat retrieval)",
    commands={"train": "models.lamp.train", "evaluate": "models.lamp.retrieval"},
    checkpoint="lamp",
)

_EXPORTS = {"LaMP": "models.lamp.pretrain", "LaMPConfig": "models.lamp.pretrain", "QFormerLM": "models.lamp.qformer",
            "LaMPEncoder": "models.lamp.api", "LaMPEvaluator": "models.lamp.api", "load": "models.lamp.api",
            "load_evaluator": "models.lamp.api"}


def __getattr__(name: str) -> Any:  # PEP 562: `from models.lamp import LaMP` imports torch only then
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.lamp' has no attribute {name!r}")


__all__ = ["MODEL", *_EXPORTS]
