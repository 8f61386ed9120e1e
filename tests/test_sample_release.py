"""The procedural sample release: deterministic, valid, and its sub-clips are the true boundaries."""

import filecmp
import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from conftest import run_build
from datasets_build.synthetic.sample_release import block_averaged_std, seconds_for, write_sample_release
from datasets_build.motion.kinematics import features_to_joints

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fps", [20.0, 12.5])
def test_seconds_round_trip_to_the_same_frame(fps):
    for frame in range(0, 400):
        assert int(float(seconds_for(frame, fps)) * fps) == frame


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = write_sample_release(tmp_path / "a", num_motions=4, seed=3)
    b = write_sample_release(tmp_path / "b", num_motions=4, seed=3)
    c = write_sample_release(tmp_path / "c", num_motions=4, seed=4)
    for sub in ("new_joint_vecs", "texts", "new_joints"):
        names = sorted(p.name for p in (a / sub).iterdir())
        assert filecmp.cmpfiles(a / sub, b / sub, names, shallow=False)[0] == names
    assert (a / "texts" / "000000.txt").read_text() != (c / "texts" / "000000.txt").read_text()


def test_sample_builds_cleanly_and_subclips_are_the_true_action_boundaries(tmp_path):
    root = write_sample_release(tmp_path / "rel", num_motions=20, seed=0)
    result = run_build(root, tmp_path / "out")
    assert result.rejections == []
    truth = {t["id"]: t["segments"] for t in map(json.loads, (root / "segments.jsonl").read_text().splitlines())}
    built = datasets.load_from_disk(str(tmp_path / "out"))
    checked = 0
    for split in built:
        rows = built[split].with_format("numpy", columns=["motion", "joints"], output_all_columns=True)
        for row in rows:
            segments = truth[row["id"]]
            assert segments[0]["start_frame"] == 0 and segments[-1]["end_frame"] == row["length"]
            subclips = [(a["start_frame"], a["end_frame"]) for a in row["annotations"] if a["is_subclip"]]
            if len(segments) > 1:
                assert subclips == [(s["start_frame"], s["end_frame"]) for s in segments]
                checked += 1
            else:
                assert subclips == []
            # joints are the positions the features encode, as in the release
            np.testing.assert_allclose(row["joints"], features_to_joints(row["motion"], "humanml3d"), atol=1e-5)
    assert checked > 5


def test_mirrors_swap_sides_in_captions_and_actions(tmp_path):
    root = write_sample_release(tmp_path / "rel", num_motions=12, seed=1)
    truth = {t["id"]: [s["action"] for s in t["segments"]]
             for t in map(json.loads, (root / "segments.jsonl").read_text().splitlines())}
    swap = {"left": "right", "right": "left"}
    for motion_id, actions in truth.items():
        if motion_id.startswith("M"):
            continue
        assert truth["M" + motion_id] == [" ".join(swap.get(w, w) for w in a.split()) for a in actions]
        base = (root / "texts" / f"{motion_id}.txt").read_text().splitlines()
        mirror = (root / "texts" / f"M{motion_id}.txt").read_text().splitlines()
        assert [line.split("#")[2:] for line in mirror] == [line.split("#")[2:] for line in base]
        for b, m in zip(base, mirror):
            assert m.split("#")[0] == re.sub(r"\b(left|right)\b", lambda w: swap[w[0]], b.split("#")[0])


def test_release_statistics_are_block_averaged(tmp_path):
    root = write_sample_release(tmp_path / "rel", num_motions=6, seed=0)
    features = np.concatenate([np.load(p) for p in sorted((root / "new_joint_vecs").iterdir())])
    std = np.load(root / "Std.npy")
    np.testing.assert_allclose(np.load(root / "Mean.npy"), features.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, block_averaged_std(features, "humanml3d"), rtol=1e-5)
    assert len(np.unique(std[4:67])) == 1 and len(np.unique(std[-4:])) == 1  # one value per block


def test_kit_sample_has_its_layout(tmp_path):
    root = write_sample_release(tmp_path / "kit", dataset="kitml", num_motions=4, seed=0)
    run_build(root, tmp_path / "out", dataset="kitml")
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert train.features["motion"].shape == (None, 251) and train.features["joints"].shape == (None, 21, 3)
    assert not any(a["is_subclip"] for anns in train["annotations"] for a in anns)
    assert not (root / "index.csv").exists()


def test_cli_sample_refuses_a_non_empty_folder(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "datasets_build", "sample", *map(str, args)],
                              capture_output=True, text=True, cwd=REPO)

    first = cli("--out", tmp_path / "s", "--motions", "3")
    assert first.returncode == 0 and "sample release of 6 motions" in first.stdout
    assert len(list((tmp_path / "s" / "new_joint_vecs").iterdir())) == 6
    again = cli("--out", tmp_path / "s", "--motions", "3")
    assert again.returncode == 1 and "--overwrite" in again.stderr
