"""Files that are not what they claim never hang, exhaust memory or stop a build: each becomes a
rejection with its reason (or, for a release-level file, one sentence), and nothing outside the
release folder is read unless links are allowed."""

import io
import os

import datasets
import numpy as np
import pytest

from conftest import run_build
from datasets_build import read_rejections
from datasets_build.formats.release import LinkOutsideRelease, ReleaseError

TARGET = "000001"  # a train id of every synthetic release


def _huge_npy(path, shape=(10**9, 263)):
    """4 KB on disk, a terabyte declared."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    path.write_bytes(header.getvalue() + b"\0" * 4000)


def _split_ids(root):
    return {(split, i) for split in ("train", "val", "test")
            for i in (root / f"{split}.txt").read_text(encoding="utf-8-sig").split()}


def _build(root, out, **kwargs):
    run_build(root, out, **kwargs)
    rejected = read_rejections(out)
    built = datasets.load_from_disk(str(out))
    kept = {(split, i) for split in built for i in built[split]["id"]}
    dropped = {(r["split"], r["id"]) for r in rejected if r["level"] == "motion"}
    assert kept | dropped == _split_ids(root) and not kept & dropped  # nothing lost
    return {r["id"]: r for r in rejected if r["level"] == "motion"}, built


def _replace(path, make):
    path.unlink()
    make(path)


CASES = {  # name -> (how to break texts/ or new_joint_vecs/ for TARGET, reason, words in the detail)
    "caption FIFO": (lambda r: _replace(r / "texts" / f"{TARGET}.txt", os.mkfifo), "unreadable_captions", "a FIFO"),
    "motion FIFO": (lambda r: _replace(r / "new_joint_vecs" / f"{TARGET}.npy", os.mkfifo), "unreadable_motion",
                    "a FIFO"),
    "caption folder": (lambda r: _replace(r / "texts" / f"{TARGET}.txt", os.mkdir), "unreadable_captions",
                       "a folder, not a regular file"),
    "caption link loop": (lambda r: _replace(r / "texts" / f"{TARGET}.txt",
                                             lambda p: os.symlink(p.name, p)), "unreadable_captions",
                          "cannot be followed"),
    "dangling caption link": (lambda r: _replace(r / "texts" / f"{TARGET}.txt",
                                                 lambda p: os.symlink("gone.txt", p)), "unreadable_captions",
                              "which does not exist"),
    "motion linked to /dev/zero": (lambda r: _replace(r / "new_joint_vecs" / f"{TARGET}.npy",
                                                      lambda p: os.symlink("/dev/zero", p)), "unreadable_motion",
                                   "outside the release folder"),
    "motion declaring a terabyte": (lambda r: _huge_npy(r / "new_joint_vecs" / f"{TARGET}.npy"), "unreadable_motion",
                                    "declares shape (1000000000, 263)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_file_is_a_rejection_with_its_reason(release, tmp_path, case):
    breaker, reason, words = CASES[case]
    root = release(num_motions=6)
    breaker(root)
    rejected, _ = _build(root, tmp_path / "out")
    assert rejected[TARGET]["reason"] == reason and words in rejected[TARGET]["detail"], rejected[TARGET]


def test_a_device_is_refused_even_when_links_may_leave_the_release(release, tmp_path):
    root = release(num_motions=6)
    _replace(root / "new_joint_vecs" / f"{TARGET}.npy", lambda p: os.symlink("/dev/zero", p))
    rejected, _ = _build(root, tmp_path / "out", follow_links=True)
    assert "a character device, not a regular file" in rejected[TARGET]["detail"]


def test_links_outside_the_release_are_refused_unless_allowed(release, tmp_path):
    root = release(num_motions=6)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("a secret caption from elsewhere#a/DET secret/NOUN#0.0#0.0\n")
    _replace(root / "texts" / f"{TARGET}.txt", lambda p: os.symlink(elsewhere, p))
    rejected, _ = _build(root, tmp_path / "out")
    assert rejected[TARGET]["reason"] == "unreadable_captions" and "outside the release folder" in rejected[TARGET]["detail"]
    _, built = _build(root, tmp_path / "allowed", follow_links=True)
    row = next(r for r in built["train"] if r["id"] == TARGET)
    assert row["annotations"][0]["caption"] == "a secret caption from elsewhere"


def test_a_data_folder_that_leaves_the_release_is_one_sentence(release, tmp_path):
    root = release(num_motions=6)
    (root / "texts").rename(tmp_path / "texts-elsewhere")
    os.symlink(tmp_path / "texts-elsewhere", root / "texts")
    with pytest.raises(LinkOutsideRelease, match="texts is a link to .* outside the release folder"):
        run_build(root, tmp_path / "out")
    _build(root, tmp_path / "allowed", follow_links=True)


def test_a_dangling_link_of_no_split_id_does_not_stop_the_build(release, tmp_path):
    root = release(num_motions=6)
    os.symlink("nowhere.npy", root / "new_joint_vecs" / "999999.npy")
    os.symlink("loop.txt", root / "texts" / "loop.txt")
    _build(root, tmp_path / "out")


def test_a_huge_or_fifo_mean_is_one_sentence(release, tmp_path):
    root = release(num_motions=6)
    _huge_npy(root / "Mean.npy", (10**9,))
    with pytest.raises(ReleaseError, match=r"Mean.npy cannot be read as a .npy array \(declares shape"):
        run_build(root, tmp_path / "out")
    _replace(root / "Mean.npy", os.mkfifo)
    with pytest.raises(ReleaseError, match="Mean.npy is a FIFO, not a regular file"):
        run_build(root, tmp_path / "out")


def test_a_fifo_split_file_is_one_sentence(release, tmp_path):
    root = release(num_motions=6)
    _replace(root / "val.txt", os.mkfifo)
    with pytest.raises(ReleaseError, match="val.txt"):
        run_build(root, tmp_path / "out")


def test_bad_index_csv_lines_are_listed_and_their_motions_stay(release, tmp_path):
    root = release(num_motions=6)
    lines = (root / "index.csv").read_bytes().splitlines()
    lines[2] = lines[2][:5] + b"\xff" + lines[2][5:]  # not UTF-8
    lines[3] = b"x" * 200_000 + b",1,2,000002.npy"  # a field over the csv module's limit
    (root / "index.csv").write_bytes(b"\r\n".join(lines) + b"\r\n")
    run_build(root, tmp_path / "out")
    index_lines = [r for r in read_rejections(tmp_path / "out") if r["level"] == "index"]
    assert [(r["line"], r["reason"]) for r in index_lines] == [(3, "bad_index_line"), (4, "bad_index_line")]
    assert "not valid UTF-8" in index_lines[0]["detail"] and "field larger than field limit" in index_lines[1]["detail"]
    built = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(built["train"]) + len(built["val"]) + len(built["test"]) == len(_split_ids(root))
    provenance = [p for split in built.values() for p in split["source_path"]]
    assert sum(p is not None for p in provenance) >= len(provenance) - 4  # only the broken lines' motions lack it


def test_unusual_line_ends_and_separators_keep_every_line_and_its_number(release, tmp_path):
    root = release(num_motions=6)
    caption = ("a person walks\u2028forward\x1c then\x85 turns#a/DET person/NOUN walk/VERB#0.0#0.0",
               "a person jumps#a/DET person/NOUN jump/VERB#0.0#0.0",
               "a person sits#a/DET person/NOUN sit/VERB#0.0#0.0")
    (root / "texts" / f"{TARGET}.txt").write_bytes(("\ufeff" + caption[0] + "\r\n" + caption[1] + "\r" + caption[2]
                                                    + "\n").encode("utf-8"))
    split = (root / "train.txt").read_text().split()
    (root / "train.txt").write_bytes(("\ufeff" + "\r\n".join(split) + "\r\n").encode("utf-8"))
    _, built = _build(root, tmp_path / "out")
    assert list(built["train"]["id"]) == split
    row = next(r for r in built["train"] if r["id"] == TARGET)
    assert [a["line"] for a in row["annotations"]] == [1, 2, 3]
    assert row["annotations"][0]["caption"] == "a person walks\u2028forward\x1c then\x85 turns"
