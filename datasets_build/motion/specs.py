"""Facts of the datasets: frame rate, feature width, joints, and the split names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseSpec:
    name: str
    title: str
    fps: float
    feature_dim: int
    num_joints: int
    has_index_csv: bool


SPECS: dict[str, ReleaseSpec] = {
    "humanml3d": ReleaseSpec("humanml3d", "HumanML3D", 20.0, 263, 22, True),
    "kitml": ReleaseSpec("kitml", "KIT-ML", 12.5, 251, 21, False),
}
SPLITS = ("train", "val", "test")
