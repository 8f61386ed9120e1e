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


def test_remodiffuse_recipe_writes_neighbours_rareness_and_an_npz(tmp_path):
    env = {"DATASETS_BUILD_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "rmd"
    result = _cli("remodiffuse", "--source", "sample", "--sample-motions", "20", "--out", out,
                  "--text-encoder", "clip-random", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert "retrieval_neighbours:" in result.stdout and "rareness:" in result.stdout
    neighbours = datasets.load_from_disk(str(out / "retrieval_neighbours"))
    train = datasets.load_from_disk(str(out))["train"]
    assert neighbours["train"].num_rows == sum(len(a) for a in train["annotations"])
    assert set(datasets.load_from_disk(str(out / "rareness"))) == {"val", "test"}
    refused = _cli("export-remodiffuse", out, "--out", tmp_path / "db.npz")
    assert refused.returncode == 1 and "needs CLIP ViT-B/32" in refused.stderr and "Traceback" not in refused.stderr
    assert _cli("export-remodiffuse", out, "--out", tmp_path / "db.npz", "--any-encoder").returncode == 0
    import numpy as np

    with np.load(tmp_path / "db.npz") as db:
        assert db["motions"].shape[1:] == (196, 263) and db["clip_seq_features"].shape[1:] == (77, 512)


def test_split_lists_and_output_folders_that_cannot_work_are_one_line(tmp_path):
    base = ["humanml3d", "--source", "sample", "--sample-motions", "4", "--quiet"]
    for splits, words in (("train,train", "listed more than once"), (",", "comma-separated split names"),
                          ("../x", "must be letters")):
        result = _cli(*base, "--out", tmp_path / "o", "--splits", splits)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "a-file").write_text("x")
    for out, words in ((tmp_path / "a-file", "is a file, not a folder"),
                       (tmp_path / "a-file" / "below", "cannot create the output folder")):
        result = _cli(*base, "--out", out)
        assert result.returncode == 1 and words in result.stderr and "Traceback" not in result.stderr


def test_abbreviated_options_are_refused_and_url_credentials_never_reach_the_card():
    from datasets_build.cli.llm_session import redact_argv

    result = _cli("finehumanml3d", "--source", "sample", "--out", "x", "--llm-api-ke", "KEY", "--dry-run")
    assert result.returncode == 2 and "unrecognized arguments: --llm-api-ke" in result.stderr
    shown = redact_argv(["--llm-base-url", "http://user:SECRET@host:8000/v1", "--llm-api-key", "KEY",
                         "--llm-api-key=KEY2"])
    assert "SECRET" not in " ".join(shown) and "KEY" not in " ".join(shown)
    assert shown[1] == "http://<redacted>@host:8000/v1"


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    command = (f"{sys.executable} -m datasets_build humanml3d --source sample --sample-motions 4 --quiet "
               f"--out {tmp_path / 'o'} | true")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
