"""Evaluation shared by all models: metrics (and later the standard evaluator and protocol)."""
