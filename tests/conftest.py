"""Shared test helpers: synthetic releases, the real HumanML3D files, and a quiet build call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datasets_build import BuildConfig, build
from datasets_build.synthetic.noise_release import write_synthetic_release

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    path = REALDATA / "humanml3d"
    if not path.is_dir():
        pytest.skip(f"real HumanML3D files not found at {path} (shared/realdata is beside the repository)")
    return path


@pytest.fixture
def release(tmp_path: Path):
    """Factory: a synthetic release folder (a fresh copy for each call)."""

    def make(dataset: str = "humanml3d", num_motions: int = 10, seed: int = 0, **kwargs) -> Path:
        root = tmp_path / f"release-{dataset}-{num_motions}-{seed}-{len(list(tmp_path.iterdir()))}"
        return write_synthetic_release(root, dataset, num_motions, seed, **kwargs)

    return make


def run_build(source: Path, out: Path, dataset: str = "humanml3d", **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("num_proc", 1)
    return build(BuildConfig(recipe=dataset, dataset=dataset, source=source, out=out, **kwargs))


def copy_release(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: two OpenMP threads on a busy 2-core machine spin-wait
    each other and run ~10x slower. Modules ask for it with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
