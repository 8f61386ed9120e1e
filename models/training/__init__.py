"""Shared training pieces: the motion dataset and loader, the loop, config to flags."""
