"""MATE's training triplets {t, m, w} from a `mate` build (MODELS.md 6.1).

Each access picks one caption of the sample (as MotionDataset does) and one vocabulary word of it;
the word's sub-text (the first of the caption's checked sub-texts that contains it [inferred]) gives
the segment [s, e) of the joint segmentation, moved into the cropped sample's frames. A word in no
sub-text, a sub-text that was not checked, or a build without `segmentation` gives no segment: the
prior term is 0 for that sample (uniform keys) [inferred].

Columns read (the recipe's): `lemmas`, `lemma_ids` (-1: not in the vocabulary), `subtexts`
(`texts`, `status`), `segmentation` (`segments`: `start_frame`, `end_frame` in the motion's frames)
and `vocabulary/` (lemma -> prototype index, `stop_word`).

The word itself (what WE(w) embeds) is the caption's surface form of the lemma when one is found
("walks" for "walk"), else the lemma [inferred]: the host encodes raw captions, so the rows of the
surface tokens are the ones that matter.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from models.training.data import DataError, DataOptions, MotionDataset, collate

_WORD = re.compile(r"[a-z]+")


def read_vocabulary(data: str | os.PathLike) -> tuple[list[str], set[str]]:
    """(lemmas by prototype index, stop-word lemmas) of a build's `vocabulary/`."""
    folder = Path(data) / "vocabulary"
    index_file = folder / "vocabulary.json"
    if not index_file.is_file():
        raise DataError(f"{data} has no vocabulary/vocabulary.json: build it with the mate recipe "
                        "(./run.sh mate --source ... --out ...)")
    index = json.loads(index_file.read_text())
    lemmas = [""] * len(index)
    for lemma, k in index.items():
        lemmas[int(k)] = lemma
    stop: set[str] = set()
    try:
        table = datasets.load_from_disk(str(folder))
        stop = {row["lemma"] for row in table.select_columns(["lemma", "stop_word"]) if row["stop_word"]}
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return lemmas, stop


def surface_word(caption: str, lemma: str) -> str:
    """The caption's word for `lemma`: itself, or the first word that starts with its stem
    ("walks", "walking" for "walk"; "waves" for "wave"), else the lemma."""
    words = _WORD.findall(caption.lower())
    if lemma in words:
        return lemma
    stem = lemma[:-1] if lemma.endswith("e") and len(lemma) > 3 else lemma
    for word in words:
        if len(stem) >= 3 and word.startswith(stem) and len(word) - len(stem) <= 4:
            return word
    return lemma


def find_segment(word: str, lemma: str, subtexts: dict | None, segmentation: dict | None) -> tuple[int, int] | None:
    """[s, e) of the first checked sub-text that contains the word (or its lemma), in motion frames."""
    if not subtexts or not segmentation or subtexts.get("status") != "checked":
        return None
    segments = segmentation.get("segments") or []
    texts = subtexts.get("texts") or []
    if len(segments) != len(texts):
        return None
    for text, segment in zip(texts, segments):
        words = set(_WORD.findall(text.lower()))
        if word in words or lemma in words:
            return int(segment["start_frame"]), int(segment["end_frame"])
    return None


class TripletDataset(MotionDataset):
    """MotionDataset items plus `word`, `lemma` (prototype index), `lemma_set` (the caption's
    vocabulary lemmas), `seg_start`/`seg_end` (sample frames) and `has_segment`."""

    def __init__(self, data: str | os.PathLike, split: str = "train", *, stats, options: DataOptions | None = None,
                 skip_stop_words: bool = True) -> None:
        super().__init__(data, split, stats=stats, options=options)
        self.lemmas, stop = read_vocabulary(data)
        self.skip = {i for i, lemma in enumerate(self.lemmas) if lemma in stop} if skip_stop_words else set()
        columns = self.source.column_names
        for needed in ("lemmas", "lemma_ids"):
            if needed not in columns:
                raise DataError(f"{data} has no {needed!r} column: build it with the mate recipe")
        wanted = [c for c in ("lemmas", "lemma_ids", "subtexts", "segmentation") if c in columns]
        self.has_segmentation = "segmentation" in columns
        # small per-annotation text columns, read once into Python (the motions stay memory-mapped)
        self.text_rows: dict[str, list[Any]] = self.source.data.table.select(wanted).to_pydict()

    def triplet(self, index: int, annotation: int, start: int, length: int, rng) -> dict[str, Any]:
        """The word, its prototype index and its segment (frames of the cropped sample)."""
        row = int(self.rows[index])
        lemmas, ids = self.text_rows["lemmas"][row][annotation], self.text_rows["lemma_ids"][row][annotation]
        known = sorted({int(k) for k in ids if k >= 0})
        choices = [k for k in known if k not in self.skip] or known
        caption = self.arrow.caption(row, annotation)
        if not choices:
            raise DataError(f"caption {caption!r} has no lemma in the vocabulary (rebuild with a smaller "
                            "--vocab-min-count)")
        k = choices[rng.randrange(len(choices))]
        lemma = self.lemmas[k]
        word = surface_word(caption, lemma)
        segment = None
        if self.has_segmentation:
            segment = find_segment(word, lemma, self.text_rows.get("subtexts", [[None]])[row][annotation],
                                   self.text_rows["segmentation"][row][annotation])
        offset = int(self.starts[index]) + start  # the sample's frame 0 in motion frames
        s, e = (segment[0] - offset, segment[1] - offset) if segment else (0, length)
        s, e = max(0, min(s, length)), max(0, min(e, length))
        has = segment is not None and e > s
        return {"word": word, "lemma": k, "lemma_set": frozenset(int(i) for i in ids if i >= 0),
                "seg_start": s if has else 0, "seg_end": e if has else length, "has_segment": has}

    def __getitem__(self, index: int) -> dict[str, Any]:
        opt = self.options
        start, length = self.crop(index)
        motion = self.raw_motion(index)[start:start + length]
        padded = np.zeros((opt.max_motion_length, motion.shape[1]), np.float32)
        padded[:length] = motion if self.stats is None else self.stats.normalize(motion)
        a, b = self.ann_ptr[index], self.ann_ptr[index + 1]
        pick = self.rng.randrange(b - a) if opt.caption == "random" else 0
        annotation = int(self.ann_index[a + pick])
        caption = self.arrow.caption(int(self.rows[index]), annotation)
        return {"motion": padded, "length": length, "caption": caption, "name": self.name(index), "index": index,
                "annotation": pick, **self.triplet(index, annotation, start, length, self.rng)}


def collate_triplets(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`collate` plus word (list), lemma (B,), seg_start/seg_end (B,), has_segment (B,) bool,
    contains (B, B) bool = word j's lemma is in caption i, same_caption (B, B) bool."""
    out = collate(items)
    lemma = torch.tensor([it["lemma"] for it in items])
    out.update(word=[it["word"] for it in items], lemma=lemma,
               seg_start=torch.tensor([it["seg_start"] for it in items]),
               seg_end=torch.tensor([it["seg_end"] for it in items]),
               has_segment=torch.tensor([bool(it["has_segment"]) for it in items]),
               contains=torch.tensor([[int(l) in it["lemma_set"] for l in lemma.tolist()] for it in items]),
               same_caption=torch.tensor([[a["caption"] == b["caption"] for b in items] for a in items]))
    return out


__all__ = ["TripletDataset", "collate_triplets", "find_segment", "read_vocabulary", "surface_word"]
