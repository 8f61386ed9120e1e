"""End-to-end builds of synthetic releases of both datasets."""

import json

import datasets
import numpy as np
import pytest
import yaml

from conftest import run_build
from datasets_build import load_release_stats, read_rejections
from datasets_build.motion.specs import SPECS


def _split_ids(root, split):
    return (root / f"{split}.txt").read_text().split()


@pytest.mark.parametrize("dataset", ["humanml3d", "kitml"])
def test_built_rows_equal_the_release_files(release, tmp_path, dataset):
    root = release(dataset, num_motions=12)
    result = run_build(root, tmp_path / "out", dataset)
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert isinstance(ds, datasets.DatasetDict) and list(ds) == ["train", "val", "test"]
    spec = SPECS[dataset]
    for split in ds:
        rows = ds[split].with_format("numpy")
        assert list(ds[split]["id"]) == _split_ids(root, split)
        assert result.counts[split]["motions"] == len(rows)
        for i, motion_id in enumerate(ds[split]["id"]):
            row = rows[i]
            source = np.load(root / "new_joint_vecs" / f"{motion_id}.npy")
            assert row["motion"].dtype == np.float32
            np.testing.assert_array_equal(row["motion"], source)
            np.testing.assert_array_equal(row["joints"], np.load(root / "new_joints" / f"{motion_id}.npy"))
            assert row["length"] == len(source) and row["fps"] == spec.fps
            assert bool(row["mirrored"]) == motion_id.startswith("M")
            assert row["base_id"] == motion_id.removeprefix("M")
            lines = (root / "texts" / f"{motion_id}.txt").read_text().splitlines()
            annotations = ds[split][i]["annotations"]
            assert [a["caption"] for a in annotations] == [line.split("#")[0] for line in lines]
            assert [" ".join(f"{w}/{p}" for w, p in zip(a["tokens"], a["pos"])) for a in annotations] == [
                line.split("#")[1] for line in lines]
            for a, line in zip(annotations, lines):
                start, end = float(line.split("#")[2]), float(line.split("#")[3])
                assert a["is_subclip"] == (end > 0)
                assert (a["start_frame"], a["end_frame"]) == (
                    (int(start * spec.fps), int(end * spec.fps)) if end > 0 else (0, len(source)))
    assert result.rejections == [] and read_rejections(tmp_path / "out") == []
    mean, std = load_release_stats(tmp_path / "out")
    np.testing.assert_array_equal(mean, np.load(root / "Mean.npy"))
    np.testing.assert_array_equal(std, np.load(root / "Std.npy"))
    assert ("source_path" in ds["train"].features) == (dataset == "humanml3d")


def test_mirrors_are_flagged_and_linked(release, tmp_path):
    run_build(release(num_motions=4), tmp_path / "out")
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    by_id = {r["id"]: r for r in train.select_columns(["id", "base_id", "mirrored", "annotations"])}
    mirror = by_id["M000000"]
    assert mirror["mirrored"] and mirror["base_id"] == "000000" and not by_id["000000"]["mirrored"]
    swap = {"left": "right", "right": "left", "clockwise": "counterclockwise", "counterclockwise": "clockwise"}
    base_captions = [a["caption"] for a in by_id["000000"]["annotations"]]
    assert [a["caption"] for a in mirror["annotations"]] == [
        " ".join(swap.get(w, w) for w in c.split()) for c in base_captions]


def test_card_build_record_and_humanml3d_provenance(release, tmp_path):
    root = release(num_motions=18)
    run_build(root, tmp_path / "out", command="python -m datasets_build humanml3d --source x --out y")
    card = (tmp_path / "out" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "other" and "amass" in meta["license_link"] and "AMASS" in card
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["train", "val", "test"]
    assert "| train | 32 |" in card and "| val | 2 |" in card and "| test | 2 |" in card
    assert [f["name"] for f in meta["dataset_info"]["features"]][:4] == ["id", "base_id", "mirrored", "motion"]
    assert "python -m datasets_build humanml3d --source x --out y" in card
    record = json.loads((tmp_path / "out" / "build.json").read_text())
    assert record["counts"]["train"]["motions"] == 32 and record["recipe"] == "humanml3d"
    row = datasets.load_from_disk(str(tmp_path / "out"))["train"][0]
    assert (row["source_path"], row["source_start_frame"]) == ("./pose_data/synthetic/000000.npy", 0)
    assert row["source_end_frame"] == row["length"] + 1


def test_unchanged_rerun_is_a_noop_and_a_changed_source_rebuilds(release, tmp_path):
    root = release(num_motions=6)
    first = run_build(root, tmp_path / "out")
    shard = next((tmp_path / "out" / "train").glob("data-*.arrow"))
    mtime = shard.stat().st_mtime_ns
    second = run_build(root, tmp_path / "out")
    assert second.skipped and not first.skipped and second.counts == first.counts
    assert shard.stat().st_mtime_ns == mtime
    (root / "texts" / "000000.txt").write_text("a new caption#a/DET new/ADJ caption/NOUN#0.0#0.0\n")
    third = run_build(root, tmp_path / "out")
    assert not third.skipped
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert train[0]["annotations"][0]["caption"] == "a new caption"
    assert run_build(root, tmp_path / "out", overwrite=True).skipped is False


def test_limit_and_splits(release, tmp_path):
    root = release(num_motions=20)
    result = run_build(root, tmp_path / "out", limit=3, splits=("train", "test"))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert list(ds) == ["train", "test"]
    assert list(ds["train"]["id"]) == _split_ids(root, "train")[:3]
    assert {s: c["motions"] for s, c in result.counts.items()} == {"train": 3, "test": 3}


def test_two_workers_give_the_same_dataset(release, tmp_path):
    root = release(num_motions=40)
    run_build(root, tmp_path / "one", num_proc=1)
    run_build(root, tmp_path / "two", num_proc=2)
    one, two = (datasets.load_from_disk(str(tmp_path / d)) for d in ("one", "two"))
    for split in one:
        assert one[split].num_rows == two[split].num_rows
        assert one[split].data.equals(two[split].data)
    assert len(list((tmp_path / "two" / "train").glob("data-*.arrow"))) > 1


def test_empty_split_still_loads(release, tmp_path):
    root = release(num_motions=3)  # ids 0-2 are all train: val and test are empty
    run_build(root, tmp_path / "out")
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds["val"].num_rows == 0 and ds["val"].features == ds["train"].features
