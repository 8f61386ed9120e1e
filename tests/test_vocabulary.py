"""The training vocabulary step: counts, prototype order, options, `lemma_ids`, determinism."""

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from conftest import run_build
from datasets_build.builder.config import ProcessorError
from processors.text.lemmas import Lemmas, is_stop_word
from processors.text.vocabulary import COMPARED_OPTIONS, Vocabulary, load_vocabulary, vocabulary_options


def _build(source: Path, out: Path, vocabulary: Vocabulary = Vocabulary(), **kwargs):
    return run_build(source, out, processors=(Lemmas(),), steps=(vocabulary,), **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from datasets_build.synthetic.noise_release import write_synthetic_release

    tmp = tmp_path_factory.mktemp("vocab")
    root = write_synthetic_release(tmp / "rel", "humanml3d", 40, seed=1)
    result = _build(root, tmp / "out")
    return root, tmp / "out", result


def test_vocabulary_counts_the_training_lemmas(built):
    _, out, result = built
    ds = datasets.load_from_disk(str(out))
    expected = Counter(lemma for row in ds["train"] for lemmas in row["lemmas"] for lemma in lemmas)
    vocab = datasets.load_from_disk(str(out / "vocabulary"))
    assert dict(zip(vocab["lemma"], vocab["count"])) == dict(expected)
    assert vocab["index"] == list(range(len(vocab)))
    # prototype order: training count descending, then lemma
    assert [(-c, w) for w, c in zip(vocab["lemma"], vocab["count"])] == sorted((-c, w) for w, c in expected.items())
    val = Counter(lemma for row in ds["val"] for lemmas in row["lemmas"] for lemma in lemmas)
    assert dict(zip(vocab["lemma"], vocab["count_val"])) == {w: val[w] for w in expected}
    first = vocab[0]
    containing = [a["caption"] for row in ds["train"] for a, lemmas in zip(row["annotations"], row["lemmas"])
                  if first["lemma"] in lemmas]
    assert first["annotations"] == len(containing)
    assert first["examples"] == list(dict.fromkeys(containing))[:3]
    assert load_vocabulary(out) == {w: i for i, w in enumerate(vocab["lemma"])}
    assert result.counters["vocabulary"]["K"] == len(vocab)
    summary = json.loads((out / "vocabulary" / "summary.json").read_text())
    assert summary["K"] == len(vocab) and set(summary["K_by_options"]) == {vocabulary_options(*o) for o in COMPARED_OPTIONS}


def test_lemma_ids_follow_the_lemmas(built):
    _, out, _ = built
    index = load_vocabulary(out)
    ds = datasets.load_from_disk(str(out))
    assert ds["train"].features["lemma_ids"] == datasets.List(datasets.List(datasets.Value("int32")))
    for split in ds.values():
        for row in split:
            assert len(row["lemma_ids"]) == len(row["annotations"])
            for lemmas, ids in zip(row["lemmas"], row["lemma_ids"]):
                assert ids == [index.get(lemma, -1) for lemma in lemmas]
    # the appended column is part of the saved dataset, with the motion untouched
    assert ds["train"].with_format("numpy")[0]["motion"].shape[1] == 263


def test_unchanged_rebuild_is_up_to_date_and_num_proc_gives_the_same_vocabulary(built, tmp_path):
    root, out, _ = built
    assert _build(root, out).skipped
    again = _build(root, tmp_path / "two", num_proc=2)
    for name in ("vocabulary",):
        a = datasets.load_from_disk(str(out / name)).to_dict()
        b = datasets.load_from_disk(str(tmp_path / "two" / name)).to_dict()
        assert a == b
    assert datasets.load_from_disk(str(out))["test"]["lemma_ids"] == \
        datasets.load_from_disk(str(tmp_path / "two"))["test"]["lemma_ids"]
    assert (out / "vocabulary" / "vocabulary.json").read_bytes() == \
        (tmp_path / "two" / "vocabulary" / "vocabulary.json").read_bytes()
    assert again.counters["vocabulary"]["K"] > 0


def test_options_min_count_and_stop_words(built, tmp_path):
    root, out, _ = built
    full = datasets.load_from_disk(str(out / "vocabulary"))
    _build(root, tmp_path / "o", Vocabulary(min_count=3, keep_stop_words=False))
    kept = datasets.load_from_disk(str(tmp_path / "o" / "vocabulary"))
    expected = [w for w, c in zip(full["lemma"], full["count"]) if c >= 3 and not is_stop_word(w)]
    assert kept["lemma"] == expected and len(expected) < len(full)
    ds = datasets.load_from_disk(str(tmp_path / "o"))
    dropped = {w for w in full["lemma"]} - set(expected)
    row = ds["train"][0]
    for lemmas, ids in zip(row["lemmas"], row["lemma_ids"]):
        assert all((i == -1) == (w in dropped) for w, i in zip(lemmas, ids))


def test_a_build_without_a_train_split_says_so(built, tmp_path):
    root, _, _ = built
    with pytest.raises(ValueError, match="no 'train' split"):
        _build(root, tmp_path / "v", splits=("val",))


def test_a_step_column_may_not_overwrite_a_column(built, tmp_path):
    root, _, _ = built

    class Clash(Vocabulary):
        columns = datasets.Features({"lemmas": datasets.List(datasets.List(datasets.Value("string")))})

    with pytest.raises(ProcessorError, match="overwrite"):
        _build(root, tmp_path / "c", Clash())


def test_the_command_line_says_when_there_is_no_train_split(built, tmp_path, capsys):
    from datasets_build.cli.main import main

    root, _, _ = built
    code = main(["mate", "--source", str(root), "--out", str(tmp_path / "m"), "--splits", "val", "--quiet",
                 "--skip-segmentation", "--llm-base-url", "http://127.0.0.1:9/v1", "--llm-max-retries", "0",
                 "--max-attempts", "1"])
    assert code == 1
    assert "error: vocabulary: the build has no 'train' split" in capsys.readouterr().err
