"""Feature normalisation: the mean/std a model owns, and the block-averaged std of the releases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets_build.motion.kinematics import get_skeleton


def block_average(std: np.ndarray, dataset: str) -> np.ndarray:
    """`std` with each block of the feature layout (root, positions, rotations, velocities, feet)
    replaced by its mean, as the releases' Std.npy are made. Returns a new array."""
    std = np.array(std, dtype=np.float64 if std.dtype == np.float64 else np.float32)
    for block in get_skeleton(dataset).blocks().values():
        std[block] = std[block].mean()
    return std


def block_averaged_std(features: np.ndarray, dataset: str, eps: float = 1e-6) -> np.ndarray:
    """Per-dimension std of `features` [frames, D], block-averaged, floored at `eps`."""
    return np.maximum(block_average(features.std(axis=0), dataset), eps)


@dataclass
class Normalizer:
    """Mean/std owned by a model (saved with its checkpoint), never silently the dataset's."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float32)
        self.std = np.asarray(self.std, np.float32)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} must be equal 1-d shapes")
        if not (np.all(np.isfinite(self.std)) and np.all(self.std > 0)):
            raise ValueError("std must be finite and positive")

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean

    def state_dict(self) -> dict[str, Any]:
        import torch  # a model's checkpoint holds tensors; the data side needs no torch

        return {"mean": torch.from_numpy(self.mean.copy()), "std": torch.from_numpy(self.std.copy())}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Normalizer":
        return cls(np.asarray(state["mean"]), np.asarray(state["std"]))
