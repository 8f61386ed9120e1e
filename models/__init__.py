"""Trainable model packages (data loaders, retrieval model, metrics) that read built datasets.

- `models.training.data`: `MotionDataset` (reference loader samples, zero-copy from the Arrow memory map),
  `DataOptions`, `Normalizer`, `compute_stats`, `collate`, `make_loader`.
- `datasets_build.text.feature_cache`: the frozen text encoder interface and a per-caption feature cache.
- `models.eval.metrics`: FID, R-precision, MM-Dist, Diversity, MultiModality, retrieval R@k / MedR.
- `models.retrieval`: the TMR-style retrieval model, its training and evaluation CLIs and
  `load_retrieval_model(run_dir)`.
"""
