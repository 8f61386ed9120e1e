"""Processors and dataset steps over caption text: lemmas, the vocabulary, text features."""
