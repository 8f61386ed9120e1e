"""Frozen text encoders (CLIP, MiniLM) and a per-caption cache of their features."""
