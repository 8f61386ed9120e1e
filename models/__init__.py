"""Trainable text-to-motion models that read the built datasets, the standard evaluator, and their command line.

    python -m models --help                                   # the models and the commands each has
    python -m models train evaluator --data built/humanml3d --out runs/eval --preset tiny
    python -m models evaluate --run ground-truth --data built/humanml3d --evaluator runs/eval
    python -m models train retrieval --data built/humanml3d --out runs/tmr
    python -m models evaluate retrieval --run runs/tmr --data built/humanml3d

Layers (imports point down only; a model package never imports another one):
- `models.<package>`: one package per model (`retrieval` today), each with `model.py` (its config
  dataclass and the network), `train.py` (its TrainConfig, presets and a short visible loop),
  `api.py` (`load(run_dir)`: everything comes from the run folder) and `evaluate.py` where it has
  one; its `__init__` registers it (`MODEL`) without importing torch.
- `models.eval`: `evaluator` (Guo et al.'s evaluator, word vectorizer, statistics), `protocol` (the
  papers' generation protocol for any generator; the retrieval protocols), `metrics`, `train`
  (`python -m models train evaluator`). It imports no model package.
- `models.training`: `data` (MotionDataset, MotionWindows, collate, make_loader, compute_stats),
  `config` (TrainOptions, presets; command lines and `--set KEY=VALUE` derived from the dataclasses),
  `loop` (open/resume a run, optimizer steps, bf16 autocast on CUDA, torchrun processes, JSONL log,
  throughput).
- `models.base`: the checkpoint format every package writes (atomic, format-tagged, config beside
  the weights, resume state), `pick_device`, `seed_everything`; `models.registry`: `ModelEntry`
  and the discovery of the registered models.
- `models.__main__`: `python -m models train|generate|evaluate`.
"""
