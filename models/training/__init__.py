"""Shared training pieces: `data` (the motion dataset and loader), `config` (training configs and the
command lines derived from them), `loop` (the steps of a training loop, called in order by a model's train.py)."""
