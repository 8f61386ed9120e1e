"""Every bad input is either rejected with its reason or stops a --strict build with a clear message."""

import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from conftest import run_build
from datasets_build import read_rejections
from datasets_build.builder.config import StrictStop

TARGET = "000001"  # a train id of every synthetic release
GOOD = "a person walks#a/DET person/NOUN walk/VERB#0.0#0.0"


def _motion(root, motion_id=TARGET):
    return root / "new_joint_vecs" / f"{motion_id}.npy"


def _text(root, motion_id=TARGET):
    return root / "texts" / f"{motion_id}.txt"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# name -> (how to break the release, expected reason, expected file, expected line, level)
CASES = {
    "missing feature file": (lambda r: _motion(r).unlink(), "missing_motion", "new_joint_vecs/000001.npy", None, "motion"),
    "missing caption file": (lambda r: _text(r).unlink(), "missing_captions", "texts/000001.txt", None, "motion"),
    "truncated npy": (lambda r: _truncate(_motion(r)), "unreadable_motion", "new_joint_vecs/000001.npy", None, "motion"),
    "not an npy": (lambda r: _motion(r).write_bytes(b"hello"), "unreadable_motion", "new_joint_vecs/000001.npy", None, "motion"),
    "wrong width": (lambda r: np.save(_motion(r), np.zeros((50, 262), np.float32)), "wrong_feature_width",
                    "new_joint_vecs/000001.npy", None, "motion"),
    "wrong rank": (lambda r: np.save(_motion(r), np.zeros((50, 263, 1), np.float32)), "wrong_rank",
                   "new_joint_vecs/000001.npy", None, "motion"),
    "zero frames": (lambda r: np.save(_motion(r), np.zeros((0, 263), np.float32)), "empty_motion",
                    "new_joint_vecs/000001.npy", None, "motion"),
    "nan": (lambda r: np.save(_motion(r), np.full((50, 263), np.nan, np.float32)), "non_finite_motion",
            "new_joint_vecs/000001.npy", None, "motion"),
    "inf": (lambda r: np.save(_motion(r), np.full((50, 263), np.inf, np.float32)), "non_finite_motion",
            "new_joint_vecs/000001.npy", None, "motion"),
    "float64 beyond float32": (lambda r: np.save(_motion(r), np.full((50, 263), 1e300)), "non_finite_motion",
                               "new_joint_vecs/000001.npy", None, "motion"),
    "empty caption file": (lambda r: _text(r).write_text("\n \n"), "empty_captions", "texts/000001.txt", None, "motion"),
    "wrong number of fields": (lambda r: _text(r).write_text(GOOD + "\nonly#two\n"), "malformed_caption",
                               "texts/000001.txt", 2, "annotation"),
    "unparseable time": (lambda r: _text(r).write_text(GOOD + "\na b#a/DET b/NOUN#one#2.0\n"), "bad_time",
                         "texts/000001.txt", 2, "annotation"),
    "token without slash": (lambda r: _text(r).write_text("a b#a/DET b#0.0#0.0\n" + GOOD), "malformed_caption",
                            "texts/000001.txt", 1, "annotation"),
    "sub-clip outside": (lambda r: _text(r).write_text(GOOD + "\na b#a/DET b/NOUN#99.0#100.0\n"),
                         "subclip_out_of_range", "texts/000001.txt", 2, "annotation"),
    "start after end": (lambda r: _text(r).write_text(GOOD + "\na b#a/DET b/NOUN#2.0#1.0\n"), "bad_subclip",
                        "texts/000001.txt", 2, "annotation"),
    "non-utf8": (lambda r: _text(r).write_bytes(GOOD.encode() + b"\ncaf\xe9#x/NOUN#0#0\n"), "caption_encoding",
                 "texts/000001.txt", 2, "motion"),
    "no usable line": (lambda r: _text(r).write_text("broken\n"), "no_valid_captions", "texts/000001.txt", None,
                       "motion"),
    "joints mismatch": (lambda r: np.save(r / "new_joints" / f"{TARGET}.npy", np.zeros((3, 22, 3), np.float32)),
                        "bad_joints", "new_joints/000001.npy", None, "motion"),
}


def _all_split_ids(root):
    return [(split, i) for split in ("train", "val", "test") for i in (root / f"{split}.txt").read_text().split()]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_with_reason_and_nothing_is_lost(release, tmp_path, case):
    breaker, reason, file, line, level = CASES[case]
    root = release(num_motions=18)
    breaker(root)
    run_build(root, tmp_path / "out")
    rejected = read_rejections(tmp_path / "out")
    matching = [r for r in rejected if r["id"] == TARGET and r["reason"] == reason]
    assert len(matching) == 1, rejected
    assert (matching[0]["file"], matching[0]["line"], matching[0]["level"]) == (file, line, level)
    assert matching[0]["detail"]
    built = datasets.load_from_disk(str(tmp_path / "out"))
    kept = {(split, i) for split in built for i in built[split]["id"]}
    dropped = {(r["split"], r["id"]) for r in rejected if r["level"] == "motion"}
    assert kept | dropped == set(_all_split_ids(root)) and not kept & dropped
    assert ((("train", TARGET) in kept) == (level == "annotation"))
    if level == "annotation":
        row = next(r for r in built["train"] if r["id"] == TARGET)
        assert [a["line"] for a in row["annotations"]] == [3 - line]  # the good line stays


@pytest.mark.parametrize("case", list(CASES))
def test_strict_stops_with_file_line_and_problem(release, tmp_path, case):
    breaker, reason, file, line, _ = CASES[case]
    if case == "no usable line":  # strict stops at the line itself, before the motion is judged
        reason, line = "malformed_caption", 1
    root = release(num_motions=18)
    breaker(root)
    with pytest.raises(StrictStop) as error:
        run_build(root, tmp_path / "out", strict=True)
    message = str(error.value)
    assert file in message and reason in message
    if line:
        assert f"line {line}" in message


def test_unsafe_ids_are_never_read_outside_the_source(release, tmp_path):
    root = release(num_motions=18)
    outside = root.parent / "secret"
    outside.mkdir()
    np.save(outside / "x.npy", np.zeros((50, 263), np.float32))
    (outside / "x.txt").write_text(GOOD)
    bad_ids = ["../secret/x", "..", "a/b", "a\\b", "/etc/passwd", "x..y"]
    with open(root / "train.txt", "a") as handle:
        handle.write("".join(f"{i}\n" for i in bad_ids))
    run_build(root, tmp_path / "out")
    rejected = {r["id"]: r["reason"] for r in read_rejections(tmp_path / "out")}
    assert {i: rejected.get(i) for i in bad_ids} == {i: "unsafe_id" for i in bad_ids}


def test_duplicated_ids_are_kept_once_at_their_first_place(release, tmp_path):
    root = release(num_motions=18)
    train = (root / "train.txt").read_text().split()
    with open(root / "test.txt", "a") as handle:
        handle.write(f"{train[0]}\n")
    with open(root / "train.txt", "a") as handle:
        handle.write(f"{train[1]}\n")
    run_build(root, tmp_path / "out")
    built = datasets.load_from_disk(str(tmp_path / "out"))
    assert list(built["train"]["id"]).count(train[1]) == 1 and train[0] not in built["test"]["id"]
    rejected = [(r["id"], r["split"], r["reason"]) for r in read_rejections(tmp_path / "out")]
    assert sorted(rejected) == sorted([(train[0], "test", "duplicate_id"), (train[1], "train", "duplicate_id")])


def test_float64_features_are_cast_to_float32(release, tmp_path):
    root = release(num_motions=18)
    values = np.random.default_rng(1).standard_normal((60, 263))
    np.save(_motion(root), values)
    np.save(root / "new_joints" / f"{TARGET}.npy", np.zeros((60, 22, 3)))
    run_build(root, tmp_path / "out")
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    row = train.with_format("numpy")[list(train["id"]).index(TARGET)]
    assert row["motion"].dtype == np.float32
    np.testing.assert_array_equal(row["motion"], values.astype(np.float32))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "datasets_build", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or Path(__file__).resolve().parents[1])


def test_cli_missing_source_is_one_sentence(tmp_path):
    result = _cli("humanml3d", "--source", tmp_path / "nowhere", "--out", tmp_path / "out", "--quiet")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: the release folder {tmp_path / 'nowhere'} does not exist."


def test_cli_folder_that_is_not_a_release(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "texts").mkdir()
    result = _cli("kitml", "--source", tmp_path / "src", "--out", tmp_path / "out", "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is not a KIT-ML release: it lacks new_joint_vecs/, train.txt, val.txt, test.txt" in result.stderr


def test_cli_strict_names_file_and_line(release, tmp_path):
    root = release(num_motions=18)
    _text(root).write_text(GOOD + "\na b#a/DET b#0.0#0.0\n")
    result = _cli("humanml3d", "--source", root, "--out", tmp_path / "out", "--strict", "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "texts/000001.txt line 2: token 'b' is not of the form word/POS" in result.stderr


def test_cli_refuses_a_foreign_non_empty_output(release, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    result = _cli("humanml3d", "--source", release(num_motions=3), "--out", tmp_path / "out", "--quiet")
    assert result.returncode == 1 and "not empty" in result.stderr and "--overwrite" in result.stderr
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"
