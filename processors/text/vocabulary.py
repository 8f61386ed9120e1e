"""The lemma vocabulary of the training captions (MATE's prototypes) and `lemma_ids` per annotation.

`Vocabulary` (a dataset step, reads the `lemmas` column of the `Lemmas` processor) counts every
lemma in every split, keeps the training lemmas that pass the options (minimum count, stop words),
orders them by training count (descending) then lemma, and gives each its prototype index 0..K-1.
It writes `<out>/vocabulary/` (a `Dataset`: lemma, index, counts, examples; `load_from_disk`),
`vocabulary.json` ({lemma: index}) and `summary.json` (K for several option sets, so a build can be
compared with MATE's K = 5,161 on HumanML3D and 1,191 on KIT-ML), and adds `lemma_ids`: per
annotation, the index of each of its lemmas, -1 where a lemma is not in the vocabulary (the list
stays aligned with `lemmas`).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, List, Value

from processors.base import Batch, DatasetStep, StepInputError, save_dataset, split_rows

# Option sets whose K the run summary prints next to the chosen one: (min_count, keep_stop_words).
COMPARED_OPTIONS = ((1, True), (1, False), (2, True), (5, True))

VOCABULARY_FEATURES = Features({
    "lemma": Value("string"),
    "index": Value("int32"),  # prototype index: 0 is the most frequent training lemma
    "count": Value("int64"),  # occurrences in the training captions
    "annotations": Value("int64"),  # training annotations that contain it
    "count_train": Value("int64"),
    "count_val": Value("int64"),
    "count_test": Value("int64"),
    "stop_word": Value("bool"),
    "examples": List(Value("string")),  # the first training captions that contain it
})


@dataclasses.dataclass
class _SplitLemmas:
    """One split's lemmas per annotation, its captions, and how many annotations each row has."""

    lemmas: list[list[str]]
    captions: list[str]
    per_row: list[int]


def vocabulary_options(min_count: int, keep_stop_words: bool) -> str:
    return f"min count {min_count}, stop words {'kept' if keep_stop_words else 'dropped'}"


def select_vocabulary(counts: Counter, min_count: int, keep_stop_words: bool) -> list[str]:
    """Lemmas that pass the options, in prototype order: training count descending, then lemma."""
    from processors.text.lemmas import is_stop_word

    kept = [lemma for lemma, n in counts.items()
            if n >= min_count and (keep_stop_words or not is_stop_word(lemma))]
    return sorted(kept, key=lambda lemma: (-counts[lemma], lemma))


@dataclasses.dataclass(frozen=True)
class Vocabulary(DatasetStep):
    name: ClassVar[str] = "vocabulary"
    version: ClassVar[str] = "1"
    cites: ClassVar[tuple[str, ...]] = ("mate",)
    inputs: ClassVar[tuple[str, ...]] = ("annotations", "lemmas")
    columns: ClassVar[Features] = Features({"lemma_ids": List(List(Value("int32")))})
    requires: ClassVar[tuple[str, ...]] = ("spacy",)
    extra: ClassVar[str] = "text"

    min_count: int = 1
    keep_stop_words: bool = True
    examples: int = 3
    split: str = "train"  # the split the vocabulary is built from

    @property
    def card_note(self) -> str:  # type: ignore[override]
        return (f"Vocabulary: the lemmas of the `{self.split}` captions ({vocabulary_options(self.min_count, self.keep_stop_words)}), "
                "ordered by training count then lemma; `lemma_ids` gives each lemma of `lemmas` its index in "
                "`vocabulary/` (`load_from_disk`; also `vocabulary/vocabulary.json`), -1 when it is not in the vocabulary.")

    def run(self, splits: DatasetDict, folder: Path, cache: Path) -> dict[str, Batch]:
        if self.split not in splits:
            raise StepInputError(f"vocabulary: the build has no {self.split!r} split to build it from; built: {list(splits)}")
        read = {name: _read(split) for name, split in splits.items()}
        counts = {name: Counter(lemma for lemmas in r.lemmas for lemma in lemmas) for name, r in read.items()}
        train = counts[self.split]
        lemmas = select_vocabulary(train, self.min_count, self.keep_stop_words)
        index = {lemma: i for i, lemma in enumerate(lemmas)}
        summary = {
            "split": self.split, "options": {"min_count": self.min_count, "keep_stop_words": self.keep_stop_words},
            "K": len(lemmas),
            "K_by_options": {vocabulary_options(m, k): len(select_vocabulary(train, m, k)) for m, k in COMPARED_OPTIONS},
            "lemmas_per_split": {s: sum(c.values()) for s, c in counts.items()},
            "unknown_lemmas_per_split": {s: sum(n for lemma, n in c.items() if lemma not in index)
                                         for s, c in counts.items()},
        }
        self._write(folder, lemmas, counts, read[self.split], summary)
        self.counters["K"] = summary["K"]
        self.counters.update({f"K ({options})": k for options, k in summary["K_by_options"].items()})
        for name in read:
            self.counters[f"{name}_lemmas"] = summary["lemmas_per_split"][name]
            self.counters[f"{name}_unknown_lemmas"] = summary["unknown_lemmas_per_split"][name]
        return {name: {"lemma_ids": split_rows([[index.get(lemma, -1) for lemma in annotation] for annotation in r.lemmas],
                                               r.per_row)}
                for name, r in read.items()}

    def _write(self, folder: Path, lemmas: list[str], counts: dict[str, Counter], train: _SplitLemmas,
               summary: dict) -> None:
        from processors.text.lemmas import is_stop_word

        wanted = set(lemmas)
        annotations: Counter = Counter()
        examples: dict[str, list[str]] = {lemma: [] for lemma in lemmas}
        for caption, annotation in zip(train.captions, train.lemmas):
            for lemma in dict.fromkeys(annotation):
                if lemma in wanted:
                    annotations[lemma] += 1
                    if len(examples[lemma]) < self.examples and caption not in examples[lemma]:
                        examples[lemma].append(caption)
        rows = {
            "lemma": lemmas, "index": list(range(len(lemmas))),
            "count": [counts[self.split][lemma] for lemma in lemmas],
            "annotations": [annotations[lemma] for lemma in lemmas],
            **{f"count_{s}": [counts.get(s, Counter())[lemma] for lemma in lemmas] for s in ("train", "val", "test")},
            "stop_word": [is_stop_word(lemma) for lemma in lemmas],
            "examples": [examples[lemma] for lemma in lemmas],
        }
        save_dataset(Dataset.from_dict(rows, features=VOCABULARY_FEATURES), folder)
        (folder / "vocabulary.json").write_text(json.dumps({lemma: i for i, lemma in enumerate(lemmas)},
                                                           ensure_ascii=False, indent=0))
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))


def load_vocabulary(built: str | Path) -> dict[str, int]:
    """{lemma: prototype index} of a build with a vocabulary."""
    path = Path(built) / "vocabulary" / "vocabulary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: build with a recipe that makes a vocabulary (mate, finehumanml3d)")
    return json.loads(path.read_text(encoding="utf-8"))


def _read(split: Dataset) -> _SplitLemmas:
    """Lemmas and captions of every annotation from the Arrow columns (no motion is read)."""
    table = split.data.table
    annotations = table.column("annotations").combine_chunks()
    lemmas = table.column("lemmas").combine_chunks()
    if len(annotations) == 0:
        return _SplitLemmas([], [], [])
    captions = pc.struct_field(pc.list_flatten(annotations), "caption").to_pylist()
    per_row = pc.list_value_length(annotations).fill_null(0).to_pylist()
    return _SplitLemmas(pc.list_flatten(lemmas).to_pylist(), captions, per_row)
