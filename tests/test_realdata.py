"""Builds over the real HumanML3D files of shared/realdata (caption files written here)."""

import shutil

import datasets
import numpy as np
import pytest

from conftest import run_build
from datasets_build import flatten_samples, load_release_stats, read_rejections

CAPTIONS = {  # official format; sub-clip lines as HumanML3D writes them
    "012314": ["a person walks forward and stops#a/DET person/NOUN walk/VERB forward/ADV and/CCONJ stop/VERB#0.0#0.0",
               "someone walks ahead#someone/PRON walk/VERB ahead/ADV#0.0#0.0",
               "the person raises the left arm#the/DET person/NOUN raise/VERB the/DET left/ADJ arm/NOUN#2.0#5.5"],
    "000612": ["a man kicks with his right leg#a/DET man/NOUN kick/VERB with/ADP his/DET right/ADJ leg/NOUN#0.0#0.0"],
    "007005": ["a person jumps#a/DET person/NOUN jump/VERB#nan#0.0",
               "a person jumps twice#a/DET person/NOUN jump/VERB twice/ADV#0.0#0.0"],
    "009548": ["a person waves#a/DET person/NOUN wave/VERB#3.0#9.95",
               "a person turns around#a/DET person/NOUN turn/VERB around/ADV#0.0#4.0"],
    "011673": ["a person sits down#a/DET person/NOUN sit/VERB down/ADP#0.0#0.0"],
    "M010655": ["a person steps to the left#a/DET person/NOUN step/VERB to/ADP the/DET left/NOUN#0.0#0.0"],
    "M010968": ["a person crouches#a/DET person/NOUN crouch/VERB#0.0#0.0"],
}


@pytest.fixture
def real_release(realdata, tmp_path):
    """The real files in the release layout, with the real split files (29,228 ids, most absent)."""
    root = tmp_path / "HumanML3D"
    shutil.copytree(realdata / "new_joint_vecs", root / "new_joint_vecs")
    shutil.copytree(realdata / "new_joints", root / "new_joints")
    for name in ("train.txt", "val.txt", "test.txt", "train_val.txt", "all.txt", "Mean.npy", "Std.npy", "index.csv"):
        shutil.copy(realdata / name, root / name)
    (root / "texts").mkdir()
    for motion_id, lines in CAPTIONS.items():
        (root / "texts" / f"{motion_id}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_real_files_build_exactly_and_every_listed_id_is_accounted_for(real_release, realdata, tmp_path):
    result = run_build(real_release, tmp_path / "out")
    built = datasets.load_from_disk(str(tmp_path / "out"))
    kept = {i: split for split in built for i in built[split]["id"]}
    # 000612 has no new_joints file: rejected unless joints are left out (next test).
    assert kept == {"012314": "train", "007005": "train", "009548": "train", "M010655": "train",
                    "M010968": "train", "011673": "test"}
    rejected = read_rejections(tmp_path / "out")
    listed = [i for s in ("train", "val", "test") for i in (realdata / f"{s}.txt").read_text().split()]
    assert len(listed) == 29228
    dropped = {r["id"] for r in rejected if r["level"] == "motion"}
    assert set(kept) | dropped == set(listed) and not set(kept) & dropped
    reasons = {r["id"]: r["reason"] for r in rejected if r["level"] == "motion"}
    assert reasons["000612"] == "bad_joints"
    assert sum(reason == "missing_motion" for reason in reasons.values()) == 29228 - 7
    assert result.counts["train"]["motions"] == 5
    for split in built:
        rows = built[split].with_format("numpy")
        for i, motion_id in enumerate(built[split]["id"]):
            np.testing.assert_array_equal(rows[i]["motion"], np.load(realdata / "new_joint_vecs" / f"{motion_id}.npy"))
            np.testing.assert_array_equal(rows[i]["joints"], np.load(realdata / "new_joints" / f"{motion_id}.npy"))
    mean, std = load_release_stats(tmp_path / "out")
    np.testing.assert_array_equal(mean, np.load(realdata / "Mean.npy"))
    np.testing.assert_array_equal(std, np.load(realdata / "Std.npy"))
    by_id = {r["id"]: r for r in built["train"].select_columns(["id", "base_id", "mirrored", "source_path", "annotations"])}
    assert by_id["M010655"]["mirrored"] and by_id["M010655"]["base_id"] == "010655"
    assert by_id["M010655"]["source_path"] is not None  # provenance of the base motion from index.csv
    waves, turns = by_id["009548"]["annotations"]
    assert (waves["start_frame"], waves["end_frame"]) == (60, 199)  # 9.95 s * 20 = frame 199 = T
    assert (turns["start_frame"], turns["end_frame"], turns["is_subclip"]) == (0, 80, True)


def test_float64_real_file_is_cast_without_joints(real_release, realdata, tmp_path):
    run_build(real_release, tmp_path / "out", with_joints=False, splits=("test",))
    test = datasets.load_from_disk(str(tmp_path / "out"))["test"]
    assert "joints" not in test.features
    row = test.with_format("numpy")[list(test["id"]).index("000612")]
    source = np.load(realdata / "new_joint_vecs" / "000612.npy")
    assert source.dtype == np.float64 and row["motion"].dtype == np.float32
    np.testing.assert_array_equal(row["motion"], source.astype(np.float32))


def test_flattened_real_samples_follow_the_reference_loader(real_release, tmp_path):
    run_build(real_release, tmp_path / "out", with_joints=False)
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    samples = {s.name: s for s in flatten_samples(train, min_length=40, max_length=200)}
    # 012314: two whole-motion captions and one sub-clip of 70 frames (2.0-5.5 s).
    assert samples["012314"].captions == (CAPTIONS["012314"][0].split("#")[0], CAPTIONS["012314"][1].split("#")[0])
    assert (samples["A_012314"].start_frame, samples["A_012314"].end_frame) == (40, 110)
    # 009548: only sub-clips, so no whole-motion sample; 3.0-9.95 s and 0-4 s.
    assert "009548" not in samples
    assert [(samples[n].start_frame, samples[n].end_frame) for n in ("A_009548", "B_009548")] == [(60, 199), (0, 80)]
    assert samples["M010968"].length == 70
