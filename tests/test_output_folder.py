"""The output folder is never lost: only a build's own folders are replaced, one build at a time,
nothing outside it is deleted, and a failed rebuild leaves the previous build whole."""

import dataclasses
import json
from typing import ClassVar

import datasets
import numpy as np
import pytest

from conftest import run_build
from datasets_build.builder.config import OutputFolderError
from datasets_build.builder.folder import output_lock
from datasets_build.formats.built import read_build_record
from datasets_build.formats.release import ReleaseError
from processors import DatasetStep
from processors.base import StepInputError


def _someone_elses_folder(path):
    """A folder that happens to hold names a build writes (a home folder, a repository)."""
    (path / ".cache").mkdir(parents=True)
    (path / ".cache" / "keep.txt").write_text("theirs")
    (path / "train").mkdir()
    (path / "train" / "notes.txt").write_text("theirs")
    (path / "README.md").write_text("their readme")
    (path / "other").mkdir()
    (path / "other" / "data.txt").write_text("theirs")
    return path


def test_a_folder_with_a_cache_is_not_taken_for_a_build(release, tmp_path):
    out = _someone_elses_folder(tmp_path / "home")
    with pytest.raises(OutputFolderError, match="not empty and holds no earlier build"):
        run_build(release(num_motions=4), out)
    assert (out / "train" / "notes.txt").read_text() == "theirs"
    assert (out / "README.md").read_text() == "their readme"


def test_overwrite_into_a_foreign_folder_replaces_only_what_a_build_writes(release, tmp_path):
    out = _someone_elses_folder(tmp_path / "home")
    run_build(release(num_motions=4), out, overwrite=True)
    assert (out / "other" / "data.txt").read_text() == "theirs"
    assert (out / ".cache" / "keep.txt").read_text() == "theirs"
    assert not (out / "train" / "notes.txt").exists()  # train/ is a split: replaced, as --help says
    assert set(datasets.load_from_disk(str(out))) == {"train", "val", "test"}
    run_build(release(num_motions=5), out)  # now it is ours: a changed source rebuilds without asking


def test_a_second_build_into_the_same_folder_is_refused_while_the_first_runs(release, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):  # stands for a build in progress
        with pytest.raises(OutputFolderError, match="another build is writing to"):
            run_build(release(num_motions=4), out)
    run_build(release(num_motions=4), out)  # the lock is gone with its holder


def test_names_in_a_tampered_record_never_reach_outside_the_folder(release, tmp_path):
    source, out = release(num_motions=4), tmp_path / "out"
    run_build(source, out)
    outside, sibling = tmp_path / "outside", tmp_path / "sibling"
    for folder in (outside, sibling):
        folder.mkdir()
        (folder / "precious.txt").write_text("keep me")
    (out / ".cache").mkdir(exist_ok=True)
    (out / ".cache" / "keep.txt").write_text("cache")
    record = json.loads((out / "build.json").read_text())
    record["splits"] += [str(outside), "../sibling", "", ".cache"]
    record["steps"] = [{"name": "../sibling"}, {"name": str(outside)}, "not a step"]
    record["fingerprint"] = "0" * 32  # forces the rebuild
    (out / "build.json").write_text(json.dumps(record))
    run_build(source, out)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (sibling / "precious.txt").read_text() == "keep me"
    assert (out / ".cache" / "keep.txt").read_text() == "cache"


def test_a_broken_std_stops_before_any_work_and_keeps_the_previous_build(release, tmp_path):
    source, out = release(num_motions=4), tmp_path / "out"
    run_build(source, out)
    before = datasets.load_from_disk(str(out))["train"]["id"]
    np.save(source / "Std.npy", np.zeros(263, np.float32))
    with pytest.raises(ReleaseError, match="Std.npy has zero or negative entries"):
        run_build(source, out)
    assert not (out / ".partial").exists()
    assert read_build_record(out) is not None
    assert datasets.load_from_disk(str(out))["train"]["id"] == before


@dataclasses.dataclass(frozen=True)
class FailingStep(DatasetStep):
    name: ClassVar[str] = "failing_step"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("id",)

    def run(self, splits, folder, cache):
        raise StepInputError("this step cannot run on these splits")


def test_a_failing_dataset_step_keeps_the_previous_build_whole(release, tmp_path):
    source, out = release(num_motions=4), tmp_path / "out"
    run_build(source, out)
    with pytest.raises(StepInputError):
        run_build(source, out, steps=(FailingStep(),))
    assert read_build_record(out) is not None  # still the previous, complete build
    assert set(datasets.load_from_disk(str(out))) == {"train", "val", "test"}


def test_the_release_folder_and_a_file_are_refused_as_output(release, tmp_path):
    source = release(num_motions=4)
    readme = (source / "train.txt").read_text()
    with pytest.raises(OutputFolderError, match="is the release folder itself"):
        run_build(source, source)
    with pytest.raises(OutputFolderError, match="inside the release's texts/ folder"):
        run_build(source, source / "texts" / "built")
    assert (source / "train.txt").read_text() == readme and not (source / "README.md").exists()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        run_build(source, tmp_path / "a-file")


def test_a_full_disk_is_one_sentence_and_gives_the_space_back(release, tmp_path, monkeypatch):
    import errno
    import sqlite3

    from datasets_build.builder.config import OutOfSpace
    from datasets_build.core.kv_store import RowCache
    from datasets_build.formats.arrow import ShardWriter

    source, out = release(num_motions=8), tmp_path / "out"
    run_build(source, out)
    calls = {"n": 0}
    write = ShardWriter.write

    def filling_up(self, table):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, table)

    monkeypatch.setattr(ShardWriter, "write", filling_up)
    with pytest.raises(OutOfSpace, match="is full .*No space left on device.*run the same build again"):
        run_build(source, out, batch_size=2, overwrite=True)
    assert not (out / ".partial").exists() and read_build_record(out) is not None
    monkeypatch.setattr(ShardWriter, "write", write)

    def full_database(self, items):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RowCache, "put_many", full_database)
    from test_row_cache import Energy
    with pytest.raises(OutOfSpace, match="database or disk is full"):
        run_build(source, out, processors=(Energy(),))
    assert not (out / ".partial").exists()
    assert set(datasets.load_from_disk(str(out))) == {"train", "val", "test"}
