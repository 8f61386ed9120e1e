"""Trainable text-to-motion models that read the built datasets, and their command line.

    python -m models --help                                   # the models and the commands each has
    python -m models train retrieval --data built/humanml3d --out runs/tmr
    python -m models evaluate retrieval --run runs/tmr --data built/humanml3d

Layers (imports point down only; a model package never imports another one):
- `models.<package>`: one package per model (`retrieval` today), each with `model.py` (its config
  dataclass and the network), `train.py` (its TrainConfig and a short visible loop), `api.py`
  (`load(run_dir)`: everything comes from the run folder) and `evaluate.py` where it has one.
- `models.training`: `data` (MotionDataset, DataOptions, collate, make_loader, compute_stats),
  `config` (TrainOptions; command lines and `--model KEY=VALUE` derived from the dataclasses),
  `loop` (open/resume a run, optimizer step with clipping, bf16 autocast on CUDA, JSONL log, progress).
  `models.eval`: `metrics` (FID, R-precision, MM-Dist, Diversity, MultiModality, retrieval R@k / MedR).
- `models.base`: the checkpoint format every package writes (atomic, format-tagged, config beside
  the weights, resume state), `pick_device`, `seed_everything`.
- `models.__main__`: `python -m models train|generate|evaluate NAME`, a registry of lazy imports.
"""
