"""The processor contract and the runner's fingerprints: skip what is unchanged, redo what depends."""

import dataclasses
from typing import ClassVar

import datasets
import numpy as np
import pytest
from datasets import Features, List, Value

from conftest import run_build
from datasets_build.builder.config import ProcessorError
from processors import DatasetStep, MissingDependency, Processor, stable_hash


@dataclasses.dataclass(frozen=True)
class MotionEnergy(Processor):
    name: ClassVar[str] = "motion_energy"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("motion",)
    outputs: ClassVar[Features] = Features({"energy": Value("float32")})
    cacheable: ClassVar[bool] = True
    scale: float = 1.0

    def __call__(self, batch):
        return {"energy": [float(np.abs(m).mean()) * self.scale for m in batch["motion"]]}


@dataclasses.dataclass(frozen=True)
class WordCount(Processor):
    name: ClassVar[str] = "word_count"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("annotations",)
    outputs: ClassVar[Features] = Features({"num_words": List(Value("int32"))})
    offset: int = 0

    def __call__(self, batch):
        return {"num_words": [[len(a["tokens"]) + self.offset for a in anns] for anns in batch["annotations"]]}


@dataclasses.dataclass(frozen=True)
class WordsPerEnergy(Processor):
    name: ClassVar[str] = "words_per_energy"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("num_words", "energy")
    outputs: ClassVar[Features] = Features({"ratio": Value("float32")})
    cacheable: ClassVar[bool] = True
    power: int = 1

    def __call__(self, batch):
        return {"ratio": [sum(w) ** self.power / e for w, e in zip(batch["num_words"], batch["energy"])]}


def _build(root, out, *processors):
    return run_build(root, out, processors=tuple(processors), batch_size=4)


def test_processor_columns_are_written_and_equal_a_direct_computation(release, tmp_path):
    root = release(num_motions=12)
    _build(root, tmp_path / "out", MotionEnergy(), WordCount(), WordsPerEnergy())
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert {"energy", "num_words", "ratio"} <= set(train.features)
    rows = train.with_format("numpy")
    for i in range(len(train)):
        row = train[i]
        energy = float(np.abs(rows[i]["motion"]).mean())
        assert row["energy"] == pytest.approx(energy, rel=1e-6)
        assert row["num_words"] == [len(a["tokens"]) for a in row["annotations"]]
        assert row["ratio"] == pytest.approx(sum(row["num_words"]) / energy, rel=1e-5)
    assert "motion_energy" in (tmp_path / "out" / "README.md").read_text()


def test_unchanged_is_skipped_and_a_change_recomputes_only_what_depends_on_it(release, tmp_path):
    root = release(num_motions=12)
    out = tmp_path / "out"
    first = _build(root, out, MotionEnergy(), WordCount(), WordsPerEnergy())
    rows = sum(c["motions"] for c in first.counts.values())
    assert _work(first, "motion_energy") == _work(first, "words_per_energy") == (0, rows)

    assert _build(root, out, MotionEnergy(), WordCount(), WordsPerEnergy()).skipped

    # The word counts change: the ratio reads them and is recomputed, the energy is not.
    second = _build(root, out, MotionEnergy(), WordCount(offset=1), WordsPerEnergy())
    assert not second.skipped
    assert _work(second, "motion_energy") == (rows, 0)
    assert _work(second, "words_per_energy") == (0, rows)

    # Only the last processor's configuration changes.
    third = _build(root, out, MotionEnergy(), WordCount(offset=1), WordsPerEnergy(power=2))
    assert _work(third, "motion_energy") == (rows, 0)
    assert _work(third, "words_per_energy") == (0, rows)
    train = datasets.load_from_disk(str(out))["train"]
    assert train[0]["ratio"] == pytest.approx(sum(train[0]["num_words"]) ** 2 / train[0]["energy"], rel=1e-5)

    # A new motion costs one computation; a copy of a known motion under a new id costs none.
    np.save(root / "new_joint_vecs" / "099998.npy", np.load(root / "new_joint_vecs" / "000000.npy"))
    np.save(root / "new_joint_vecs" / "099999.npy", np.ones((50, 263), np.float32))
    for new_id in ("099998", "099999"):
        np.save(root / "new_joints" / f"{new_id}.npy", np.zeros((np.load(root / "new_joint_vecs" / f"{new_id}.npy").shape[0], 22, 3), np.float32))
        (root / "texts" / f"{new_id}.txt").write_text("a person waits#a/DET person/NOUN wait/VERB#0.0#0.0\n")
    with open(root / "train.txt", "a") as handle:
        handle.write("099998\n099999\n")
    fourth = _build(root, out, MotionEnergy(), WordCount(offset=1), WordsPerEnergy(power=2))
    assert _work(fourth, "motion_energy") == (rows + 1, 1)


def _work(result, name):
    """(rows taken from the cache, rows computed) of one processor in a build."""
    counters = result.counters[name]
    return counters.get("cached", 0), counters.get("computed", 0)


def test_same_config_gives_same_fingerprint_and_any_change_another():
    assert MotionEnergy().fingerprint() == MotionEnergy(scale=1.0).fingerprint()
    assert MotionEnergy().fingerprint() != MotionEnergy(scale=2.0).fingerprint()
    assert MotionEnergy().fingerprint() != WordsPerEnergy().fingerprint()
    assert stable_hash({"a": np.arange(3)}) == stable_hash({"a": np.arange(3)}) != stable_hash({"a": np.arange(4)})


def test_reading_a_column_nobody_makes_fails_before_any_work(release, tmp_path):
    with pytest.raises(ProcessorError, match="reads \\['num_words', 'energy'\\]"):
        _build(release(num_motions=2), tmp_path / "out", WordsPerEnergy())
    assert not (tmp_path / "out" / "build.json").exists()


@dataclasses.dataclass(frozen=True)
class Broken(Processor):
    name: ClassVar[str] = "broken"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("id",)
    outputs: ClassVar[Features] = Features({"x": Value("int32")})

    def __call__(self, batch):
        return {"x": [1]}  # one row whatever the batch


def test_a_processor_returning_the_wrong_row_count_is_named(release, tmp_path):
    with pytest.raises(ProcessorError, match="'broken' returned {'x': 1} rows for a batch of 4"):
        _build(release(num_motions=8), tmp_path / "out", Broken())


@dataclasses.dataclass(frozen=True)
class NeedsAbsentModule(Processor):
    name: ClassVar[str] = "needs_absent"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("id",)
    outputs: ClassVar[Features] = Features({"y": Value("int32")})
    requires: ClassVar[tuple[str, ...]] = ("no_such_module_xyz",)
    extra: ClassVar[str] = "viz"


def test_missing_optional_dependency_fails_at_once_with_the_install_command(release, tmp_path):
    with pytest.raises(MissingDependency, match=r"pip install -e '\.\[viz\]'"):
        _build(release(num_motions=2), tmp_path / "out", NeedsAbsentModule())


@dataclasses.dataclass(frozen=True)
class WordTotals(DatasetStep):
    name: ClassVar[str] = "word_totals"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("annotations",)
    minimum: int = 1

    def run(self, splits, folder, cache):
        import collections
        import json

        counts = collections.Counter(t for anns in splits["train"]["annotations"] for a in anns for t in a["tokens"])
        folder.mkdir(parents=True)
        (folder / "totals.json").write_text(json.dumps({w: c for w, c in counts.items() if c >= self.minimum}))
        self.counters["words"] += len(counts)


def test_dataset_steps_run_after_the_splits_and_join_the_fingerprint(release, tmp_path):
    import json

    root = release(num_motions=8)
    out = tmp_path / "out"
    first = run_build(root, out, steps=(WordTotals(),))
    totals = json.loads((out / "word_totals" / "totals.json").read_text())
    train = datasets.load_from_disk(str(out))["train"]
    assert sum(totals.values()) == sum(len(a["tokens"]) for anns in train["annotations"] for a in anns)
    assert first.counters["word_totals"]["words"] == len(totals)
    assert run_build(root, out, steps=(WordTotals(),)).skipped
    assert not run_build(root, out, steps=(WordTotals(minimum=5),)).skipped
    assert all(c >= 5 for c in json.loads((out / "word_totals" / "totals.json").read_text()).values())
    run_build(root, out)  # the step left the recipe: its folder goes too
    assert not (out / "word_totals").exists()
