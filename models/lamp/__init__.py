"""LaMP (language-motion pretraining, ../shared/docs/MODELS.md 5.2 and 5.6): `qformer.py` (the BERT-named
Q-Former with query tokens, cross-attention to a 1408-wide memory and query feed-forward copies),
`pretrain.py` (LaMPConfig, the model over the frozen motion VQ-VAE and its four losses), `text.py`
(caption clean-up, BERT tokenizer, local BERT weights), `train.py` (`python -m models train lamp
--tokenizer VQ_RUN`), `api.py` (checkpoints; `load(run_dir)` -> text and motion feature encoders;
`load_evaluator` for `--evaluator lamp:RUN`), `retrieval.py` (`python -m models evaluate lamp`: LaMP-Feat
retrieval, both directions); LaMP-T2M (`t2m.py`, `t2m_data.py`, `t2m_train.py`, `t2m_api.py`: `python -m
models train lamp-t2m`) and LaMP-M2T (`m2t.py`, `m2t_train.py`, `caption.py`: `python -m models train lamp-m2t`,
`python -m models caption`, LaMP-BertScore).

The package registers its three models (`MODEL`, `MODELS`) without importing torch."""

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

MODELS = (
    ModelEntry(name="lamp-t2m",
               summary="LaMP-T2M: masked motion-token transformer conditioned on a frozen LaMP Q-Former",
               commands={"train": "models.lamp.t2m_train"}, checkpoint="lamp-t2m", generator="models.lamp.t2m_api:load"),
    ModelEntry(name="lamp-m2t",
               summary="LaMP-M2T: motion captioning, LaMP's queries as the prefix of a LoRA-adapted causal LM "
                       "(python -m models caption)",
               commands={"train": "models.lamp.m2t_train"}, checkpoint="lamp-m2t"),
)

_EXPORTS = {"LaMP": "models.lamp.pretrain", "LaMPConfig": "models.lamp.pretrain", "QFormerLM": "models.lamp.qformer",
            "LaMPEncoder": "models.lamp.api", "LaMPEvaluator": "models.lamp.api", "load": "models.lamp.api",
            "load_evaluator": "models.lamp.api", "LaMPT2M": "models.lamp.t2m", "T2MConfig": "models.lamp.t2m",
            "LaMPM2T": "models.lamp.m2t", "M2TConfig": "models.lamp.m2t", "load_captioner": "models.lamp.caption"}


def __getattr__(name: str) -> Any:  # PEP 562: `from models.lamp import LaMP` imports torch only then
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.lamp' has no attribute {name!r}")


__all__ = ["MODEL", "MODELS", *_EXPORTS]
