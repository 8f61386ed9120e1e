"""Processors: small, pure, versioned transformations over batches of a built dataset."""

from processors.base import Batch, MissingDependency, Processor, stable_hash

__all__ = ["Batch", "MissingDependency", "Processor", "stable_hash"]
