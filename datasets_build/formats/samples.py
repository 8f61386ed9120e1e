"""Flatten a built split into the sample list the reference loaders (T2M, MoMask, ...) train on.

The reference `Text2MotionDataset` makes one sample per motion from its whole-motion captions, and
one more sample per sub-clip caption (named `<letter>_<id>`), each with its own frame range. A
motion whose every caption is a sub-clip is not a sample itself. Length filters apply to the whole
motion first (a motion outside them contributes nothing, not even its sub-clips), then to each
sub-clip. Filters are options here because they belong to the loader, not to the stored data.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import datasets

_LETTERS = string.ascii_uppercase[:23]  # the reference draws from 'A'..'W'


@dataclass(frozen=True)
class Sample:
    name: str  # the motion id, or `<letter>_<id>` for a sub-clip
    row: int  # row of the motion in the split
    motion_id: str
    start_frame: int
    end_frame: int  # exclusive
    captions: tuple[str, ...]
    annotation_indices: tuple[int, ...]  # positions in the row's `annotations`

    @property
    def length(self) -> int:
        return self.end_frame - self.start_frame


def flatten_samples(split: datasets.Dataset, min_length: int | None = None,
                    max_length: int | None = None) -> list[Sample]:
    """Samples of a built split; `min_length <= frames < max_length` when the bounds are given
    (the reference uses 40 and 200 for HumanML3D, 24 and 200 for KIT-ML)."""

    def keep(frames: int) -> bool:
        return (min_length is None or frames >= min_length) and (max_length is None or frames < max_length)

    table = split.select_columns(["id", "length", "annotations"]).data
    ids = table.column("id").to_pylist()
    lengths = table.column("length").to_pylist()
    annotations = table.column("annotations").to_pylist()
    samples: list[Sample] = []
    for row, (motion_id, length, anns) in enumerate(zip(ids, lengths, annotations)):
        if not keep(length):
            continue
        whole = [i for i, a in enumerate(anns) if not a["is_subclip"]]
        subclips = [i for i, a in enumerate(anns) if a["is_subclip"]]
        named = 0
        for i in subclips:
            a = anns[i]
            if not keep(a["end_frame"] - a["start_frame"]):
                continue
            prefix = _LETTERS[named] if named < len(_LETTERS) else f"{named}"
            named += 1
            samples.append(Sample(f"{prefix}_{motion_id}", row, motion_id, a["start_frame"], a["end_frame"],
                                  (a["caption"],), (i,)))
        if whole:
            samples.append(Sample(motion_id, row, motion_id, 0, length,
                                  tuple(anns[i]["caption"] for i in whole), tuple(whole)))
    return samples
