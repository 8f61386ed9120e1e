"""The one rule for choosing a torch device: the one asked for, else CUDA when there is one."""

from __future__ import annotations

from typing import Any


def pick_device(device: Any = None) -> Any:
    """A `torch.device`: `device` ("cuda", "cpu", "cuda:1", a torch.device), or for None / "auto"
    CUDA when available, else the CPU. torch is imported here, not by whoever imports this module."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
