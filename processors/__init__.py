"""Processors: small, pure, versioned transformations over batches of a built dataset."""

from processors.base import Batch, DatasetStep, MissingDependency, Processor, Step, stable_hash

__all__ = ["Batch", "DatasetStep", "MissingDependency", "Processor", "Step", "stable_hash"]
