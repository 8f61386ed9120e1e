"""Trainable model packages (data loaders, retrieval model, metrics) that read built datasets."""
