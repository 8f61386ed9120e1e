"""The one place that makes `import torchvision` (and so `open_clip`, `transformers`,
`sentence_transformers`) work next to a CPU build of torch.

PyPI's torchvision wheel is a CUDA build whose C extension does not load next to CPU torch; its
`_meta_registrations` then registers fake kernels for `torchvision::nms` / `torchvision::qnms`,
operators nobody defined, and the import fails with "operator torchvision::nms does not exist".
Defining the two operator schemas (no kernels: we never run detection ops) before the import lets
it through. When the extension loads (a matching torchvision build), nothing is changed.

Call `ensure_torchvision_importable()` before importing any of those packages.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import torch

# The schemas as torchvision's C++ extension declares them (torchvision/csrc/ops/nms.cpp).
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LOCK = threading.Lock()
_LIBRARY: torch.library.Library | None = None  # kept alive: the definitions vanish with it
_DONE = False


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _extension_loads() -> bool:
    """Whether torchvision's own C extension loads here (it then defines the operators itself)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to guard, the import fails with its own message
    for folder in spec.submodule_search_locations:
        for lib in sorted(Path(folder).glob("_C*.so")) + sorted(Path(folder).glob("_C*.pyd")):
            try:
                torch.ops.load_library(str(lib))
                return True
            except OSError:
                return False
    return False


def ensure_torchvision_importable() -> bool:
    """Define the missing torchvision operator schemas if (and only if) they are needed.

    Returns True when the guard defined them. Idempotent and thread-safe.
    """
    global _LIBRARY, _DONE
    with _LOCK:
        if _DONE or "torchvision" in sys.modules:
            _DONE = True
            return _LIBRARY is not None
        _DONE = True
        missing = [name for name in _SCHEMAS if not _has_op(name)]
        if not missing or _extension_loads():
            return False
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            if not _has_op(name):
                _LIBRARY.define(_SCHEMAS[name])
        return True


def import_open_clip():
    """`open_clip`, imported behind the guard."""
    ensure_torchvision_importable()
    import open_clip

    return open_clip


def import_sentence_transformers():
    """`sentence_transformers`, imported behind the guard."""
    ensure_torchvision_importable()
    import sentence_transformers

    return sentence_transformers
