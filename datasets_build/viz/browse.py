"""`show` and `stats`: look at a built dataset."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np

from datasets_build.formats.built import BuiltDatasetError, dataset_of, find_row, read_build_record, require_built
from datasets_build.motion.specs import SPECS
from datasets_build.viz.plots import plot_stats
from datasets_build.viz.skeleton import FrameSpan, render_motion
from datasets_build.motion.kinematics import features_to_joints


def open_build(built: Path) -> tuple[datasets.DatasetDict, str]:
    """The DatasetDict of a build and its dataset name (humanml3d or kitml)."""
    ds = require_built(built)
    return ds, dataset_of(built, ds)


def show(built: Path, motion_id: str, out: Path, annotation: int | None = None, progress: bool = False) -> str:
    """Render one motion (or one annotation's frame range) to `out`; returns a one-line summary."""
    ds, dataset = open_build(built)
    split, row = find_row(ds, built, motion_id)
    annotations = row["annotations"]
    if annotation is not None and not 0 <= annotation < len(annotations):
        raise BuiltDatasetError(f"id {motion_id} has {len(annotations)} annotations; the annotation index must be 0..{len(annotations) - 1}.")
    joints = row.get("joints")
    if joints is None:  # built with --no-joints: recover positions from the features
        joints = features_to_joints(row["motion"], dataset)
    start, end = 0, len(joints)
    if annotation is not None:
        chosen = annotations[annotation]
        start, end = int(chosen["start_frame"]), int(chosen["end_frame"])
        title = chosen["caption"]
    else:
        title = annotations[0]["caption"] if annotations else motion_id
    segments = _segments(row, annotation, start)
    truth = [b - start for b in _true_boundaries(built, motion_id) if start < b < end]
    render_motion(joints[start:end], dataset, out, f"{motion_id} ({split}): {title}", float(row["fps"]),
                  segments, frame_offset=start, truth=truth if segments else (), progress=progress)
    lines = [f"wrote {out}: {motion_id} ({split}), frames {start}-{end} of {len(joints)}"]
    if annotation is not None and row.get("subtexts"):
        subtexts = row["subtexts"][annotation]
        lines.append(f"  sub-texts ({subtexts['status']}): " + " | ".join(subtexts["texts"] or ["none"]))
    lines += [f"  segment {s.start + start}-{s.end + start}: {s.label}" for s in segments]
    return "\n".join(lines)


def _segments(row: dict, annotation: int | None, start: int) -> list[FrameSpan]:
    """Segments to colour, relative to the drawn range: the annotation's entry of the
    `segmentation` column (MATE's segmentation: sub-texts with absolute start/end frames), or none."""
    if annotation is None or not row.get("segmentation"):
        return []
    found = row["segmentation"][annotation]["segments"] or []
    return [FrameSpan(int(s["start_frame"]) - start, int(s["end_frame"]) - start, s.get("text", "")) for s in found]


def _true_boundaries(built: Path, motion_id: str) -> list[int]:
    """Frames where one action ends and the next begins, from the `segments.jsonl` of a sample
    release the build was made from (no other release has them)."""
    source = (read_build_record(built) or {}).get("source")
    path = Path(source) / "segments.jsonl" if source else None
    if path is None or not path.is_file():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("id") == motion_id:
            return [int(s["start_frame"]) for s in entry["segments"][1:]]
    return []


def stats(built: Path, out: Path) -> str:
    ds, dataset = open_build(built)
    columns = {split: table.select_columns(["length", "annotations"]).to_dict() for split, table in ds.items()}
    files = plot_stats(columns, SPECS[dataset].fps, f"{SPECS[dataset].title} ({Path(built).name})", out)
    if (Path(built) / "rareness" / "dataset_dict.json").is_file():  # a remodiffuse build
        from processors.neighbours.rareness import plot_rareness

        rareness = datasets.load_from_disk(str(Path(built) / "rareness"))
        files.append(plot_rareness({s: t["rareness"] for s, t in rareness.items()}, Path(out) / "rareness.png"))
    lines = [f"wrote {', '.join(str(f) for f in files)}"]
    for split, c in columns.items():
        lengths = np.asarray(c["length"]) / SPECS[dataset].fps
        captions = sum(len(a) for a in c["annotations"])
        lines.append(f"  {split:>5}: {len(lengths):,} motions, {captions:,} annotations"
                     + (f", length {lengths.min():.1f}-{lengths.max():.1f} s (mean {lengths.mean():.1f})" if len(lengths) else ""))
    return "\n".join(lines)
