"""Build text-to-motion releases (HumanML3D, KIT-ML) into Hugging Face Arrow datasets.

Command line: `python -m datasets_build --help`. From Python:

    from datasets_build import BuildConfig, build, flatten_samples, load_release_stats

The names below are imported on first use (PEP 562): importing a low layer such as
`datasets_build.core` must not pull in the build machinery above it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SPECS": "datasets_build.motion.specs",
    "BuildConfig": "datasets_build.builder.config",
    "BuildResult": "datasets_build.builder.config",
    "build": "datasets_build.builder.api",
    "ReleaseError": "datasets_build.formats.release",
    "Sample": "datasets_build.formats.samples",
    "flatten_samples": "datasets_build.formats.samples",
    "load_release_stats": "datasets_build.formats.built",
    "read_rejections": "datasets_build.formats.built",
    "UserError": "datasets_build.core.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datasets_build' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
