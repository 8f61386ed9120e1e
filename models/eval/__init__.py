"""Evaluation shared by all models: `metrics` (FID, R-precision, MM-Dist, Diversity, MultiModality,
retrieval R@k), `evaluator` (Guo et al.'s text-motion matching evaluator, its word vectorizer and
statistics, loading an official or trained evaluator folder), `protocol` (the papers' generation
protocol for any generator, and the retrieval protocols) and `train` (`python -m models train
evaluator`: an evaluator trained on any build). It imports no model package.

The evaluator registers itself (`MODEL`) like a model package so that `python -m models train
evaluator` exists; this file imports no torch."""

from models.registry import ModelEntry

MODEL = ModelEntry(
    name="evaluator",
    summary="Guo et al.'s text-motion matching evaluator (movement autoencoder, then matching)",
    commands={"train": "models.eval.train"},
    checkpoint="evaluator",
)

__all__ = ["MODEL"]
