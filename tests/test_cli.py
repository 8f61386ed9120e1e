"""The command line as a user meets it: help, the README's sample build, the re-run message."""

import os
import subprocess
import sys
from pathlib import Path

import datasets

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "datasets_build", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, **(env or {})})


def test_help_lists_the_recipes_and_options():
    top = _cli("--help")
    assert top.returncode == 0 and "humanml3d" in top.stdout and "kitml" in top.stdout
    sub = _cli("humanml3d", "--help")
    for option in ("--source", "--out", "--limit", "--num-proc", "--overwrite", "--strict", "--no-joints"):
        assert option in sub.stdout


def test_sample_build_summary_and_noop_rerun(tmp_path):
    env = {"DATASETS_BUILD_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "built"
    first = _cli("humanml3d", "--source", "sample", "--out", out, "--sample-motions", "20", env=env)
    assert first.returncode == 0, first.stderr
    assert f"Built {out}" in first.stdout and "train: 32 motions" in first.stdout
    assert "rejected: none" in first.stdout
    assert "humanml3d: read, check, process, write: 100%" in first.stderr
    ds = datasets.load_from_disk(str(out))
    assert {s: ds[s].num_rows for s in ds} == {"train": 32, "val": 2, "test": 6}
    again = _cli("humanml3d", "--source", "sample", "--out", out, "--sample-motions", "20", env=env)
    assert again.returncode == 0 and "is up to date" in again.stdout and "nothing to do" in again.stdout


def test_kitml_sample_and_limit(tmp_path):
    env = {"DATASETS_BUILD_CACHE": str(tmp_path / "cache")}
    result = _cli("kitml", "--source", "sample", "--out", tmp_path / "kit", "--limit", "2", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    ds = datasets.load_from_disk(str(tmp_path / "kit"))
    assert ds["train"].num_rows == 2 and ds["train"][0]["fps"] == 12.5
    assert ds["train"].features["motion"].shape == (None, 251)
