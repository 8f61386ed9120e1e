"""Read and validate a HumanML3D or KIT-ML release (layout: shared/docs/REFERENCE.md section 1).

`open_release` checks the layout once; `read_motion` turns one id into a `MotionRecord` or a list of
`Rejection`s. Nothing here writes: the runner decides where records and rejections go.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets_build.core.errors import UserError
from datasets_build.formats.files import FileProblem, npy_array, read_file
from datasets_build.motion.captions import (
    Annotation, decode_caption_bytes, parse_caption_text, split_lines, text_lines,
)
from datasets_build.motion.specs import SPECS, SPLITS, ReleaseSpec


class ReleaseError(UserError):
    """A release folder or file that cannot be read; the message names it and says what is wrong."""


class LinkOutsideRelease(ReleaseError):
    """A folder of the release is a link to a place outside it, and such links are not followed."""


REQUIRED_DIRS = ("new_joint_vecs", "texts")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-.]+$")


@dataclass(frozen=True)
class Rejection:
    """An input item that is not in the output, with its reason (one manifest line)."""

    id: str
    split: str
    reason: str
    detail: str
    file: str = ""
    line: int | None = None
    level: str = "motion"  # "motion": the whole id is left out; "annotation": one caption line is;
    # "index": one line of index.csv is (its motion stays, without provenance)

    def message(self) -> str:
        where = self.file + (f" line {self.line}" if self.line else "")
        return f"{where or self.id}: {self.detail} [{self.reason}, id {self.id}, split {self.split}]"


@dataclass
class MotionRecord:
    id: str
    base_id: str
    mirrored: bool
    motion: np.ndarray  # float32 [T, D]
    annotations: list[Annotation]
    joints: np.ndarray | None = None  # float32 [T, J, 3]
    source: dict = field(default_factory=dict)  # index.csv provenance (HumanML3D)


@dataclass(frozen=True)
class Release:
    """A release folder whose layout has been checked."""

    root: Path
    spec: ReleaseSpec
    has_joints: bool
    index: dict[str, dict]  # base id -> {source_path, source_start_frame, source_end_frame}
    follow_links: bool = False  # read files that are links to places outside the release folder
    problems: tuple[Rejection, ...] = ()  # lines of index.csv that could not be used

    @property
    def inside(self) -> str | None:
        """Where every file read must lie (None: links may lead anywhere)."""
        return None if self.follow_links else str(self.root)

    def read_text(self, name: str) -> str:
        """A top-level text file (split file, index.csv), decoded as UTF-8; one sentence if it cannot be."""
        path = self.root / name
        try:
            return read_file(str(path), self.inside).decode("utf-8")
        except FileProblem as problem:
            raise ReleaseError(f"{path} {problem}.") from None
        except UnicodeDecodeError as error:
            raise ReleaseError(f"{path} is not valid UTF-8 ({error.reason} at byte {error.start}).") from None

    def split_ids(self, split: str) -> list[str]:
        return [line.strip() for line in text_lines(self.read_text(f"{split}.txt")) if line.strip()]

    def mean_std(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The release's Mean.npy / Std.npy as float32, or None when the release has none."""
        paths = [self.root / "Mean.npy", self.root / "Std.npy"]
        if not all(os.path.lexists(p) for p in paths):
            return None
        arrays = []
        for path in paths:
            try:
                array = npy_array(read_file(str(path), self.inside))
            except FileProblem as problem:
                raise ReleaseError(f"{path} {problem}.") from None
            except (ValueError, EOFError) as error:
                raise ReleaseError(f"{path} cannot be read as a .npy array ({error}).") from None
            if array.shape != (self.spec.feature_dim,) or not np.all(np.isfinite(array)):
                raise ReleaseError(
                    f"{path} must hold {self.spec.feature_dim} finite values; it has shape "
                    f"{array.shape}{'' if np.all(np.isfinite(array)) else ' with NaN/inf'}."
                )
            arrays.append(array.astype(np.float32))
        if np.any(arrays[1] <= 0):
            raise ReleaseError(f"{paths[1]} has zero or negative entries; a std must be positive.")
        return arrays[0], arrays[1]


def open_release(source: str | os.PathLike, spec: ReleaseSpec, splits=SPLITS, with_joints=True,
                 follow_links: bool = False) -> Release:
    """Check the layout of a release folder; raise ReleaseError with one sentence if it is not one.
    Unless `follow_links`, a folder or file of the release that is a link to a place outside it is
    refused (so nothing outside the release folder is read)."""
    root = Path(source).expanduser()
    unsafe = [s for s in splits if not re.fullmatch(r"[A-Za-z0-9_-]+", s)]
    if unsafe or len(set(splits)) != len(splits) or not splits:
        raise ReleaseError(f"split names must be distinct names of letters, digits, '_' or '-' (the split files "
                           f"NAME.txt of the release); got {list(splits)}.")
    if not root.exists():
        raise ReleaseError(f"the release folder {root} does not exist.")
    if not root.is_dir():
        raise ReleaseError(f"the release folder {root} is not a folder.")
    missing = [d + "/" for d in REQUIRED_DIRS if not (root / d).is_dir()]
    missing += [f"{s}.txt" for s in splits if not (root / f"{s}.txt").is_file()]
    if missing:
        raise ReleaseError(
            f"{root} is not a {spec.title} release: it lacks {', '.join(missing)} "
            f"(expected new_joint_vecs/, texts/ and the split files {', '.join(s + '.txt' for s in splits)})."
        )
    root = root.resolve()
    if not follow_links:
        for name in (*REQUIRED_DIRS, "new_joints"):
            target = (root / name).resolve()
            if (root / name).exists() and root not in target.parents:
                raise LinkOutsideRelease(f"{root / name} is a link to {target}, outside the release folder")
    has_joints = with_joints and (root / "new_joints").is_dir()
    release = Release(root, spec, has_joints, {}, follow_links)
    if not spec.has_index_csv or not os.path.lexists(root / "index.csv"):
        return release
    index, problems = read_index_csv(release)
    return Release(root, spec, has_joints, index, follow_links, tuple(problems))


def read_index_csv(release: Release) -> tuple[dict[str, dict], list[Rejection]]:
    """HumanML3D's index.csv (source_path,start_frame,end_frame,new_name) keyed by base id; a line
    that cannot be used is a Rejection (its motion stays, without provenance)."""
    index: dict[str, dict] = {}
    problems: list[Rejection] = []
    path = release.root / "index.csv"
    try:
        raw_lines = split_lines(read_file(str(path), release.inside))
    except FileProblem as problem:
        raise ReleaseError(f"{path} {problem}.") from None
    header: list[str] = []
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(Rejection("", "", "bad_index_line", f"not valid UTF-8 (byte {raw[error.start]:#04x} at "
                                      f"column {error.start + 1})", "index.csv", number, "index"))
            continue
        if not header:
            header = next(csv.reader([line]))
            continue
        try:
            row = dict(zip(header, next(csv.reader([line]), []), strict=True))
            index[Path(row["new_name"]).stem] = {
                "source_path": row["source_path"],
                "source_start_frame": int(row["start_frame"]),
                "source_end_frame": int(row["end_frame"]),
            }
        except (csv.Error, KeyError, TypeError, ValueError) as error:
            reason = str(error) if isinstance(error, csv.Error) else "expected source_path,start_frame,end_frame," \
                "new_name with integer frames"
            problems.append(Rejection("", "", "bad_index_line", f"{reason}: {line[:120]!r}", "index.csv",
                                      number, "index"))
    return index, problems


def check_id(motion_id: str) -> str | None:
    """Why an id from a split file is unsafe to use as a file name, or None if it is fine."""
    if motion_id in (".", "..") or ".." in motion_id or not _SAFE_ID.match(motion_id):
        return f"id {motion_id!r} contains a path separator, '..' or characters other than letters, digits, '_', '-', '.'"
    return None


def _load_array(path: str, inside: str | None) -> np.ndarray | str:
    """The array in a .npy file, or why it cannot be used; FileNotFoundError when it is absent."""
    try:
        return npy_array(read_file(path, inside))
    except FileProblem as problem:
        return str(problem)
    except (ValueError, EOFError) as error:
        return f"cannot be read as a .npy array ({type(error).__name__}: {error})"


def read_motion(release: Release, motion_id: str, split: str) -> tuple[MotionRecord | None, list[Rejection]]:
    """Read one id; returns the record (None if rejected) and every rejection it produced."""
    spec, root = release.spec, release.root

    def reject(reason: str, detail: str, file: str = "", line: int | None = None, level: str = "motion"):
        return Rejection(motion_id, split, reason, detail, file, line, level)

    unsafe = check_id(motion_id)
    if unsafe:
        return None, [reject("unsafe_id", unsafe)]

    motion_file = f"new_joint_vecs/{motion_id}.npy"
    try:
        motion = _load_array(f"{root}/{motion_file}", release.inside)  # plain strings: pathlib costs show at 30k files
    except FileNotFoundError:
        return None, [reject("missing_motion", "feature file is missing", motion_file)]
    if isinstance(motion, str):
        return None, [reject("unreadable_motion", motion, motion_file)]
    problem = _check_features(motion, spec.feature_dim)
    if problem:
        return None, [reject(problem[0], problem[1], motion_file)]
    if motion.dtype != np.float32:
        with np.errstate(over="ignore"):
            motion = motion.astype(np.float32)
        if not _all_finite(motion):  # float64 values beyond float32's range become inf
            return None, [reject("non_finite_motion", "values overflow float32", motion_file)]

    caption_file = f"texts/{motion_id}.txt"
    try:
        text = decode_caption_bytes(read_file(f"{root}/{caption_file}", release.inside))
    except FileNotFoundError:
        return None, [reject("missing_captions", "caption file is missing", caption_file)]
    except FileProblem as problem:
        return None, [reject("unreadable_captions", f"caption file {problem}", caption_file)]
    if not isinstance(text, str):
        return None, [reject(text.reason, text.detail, caption_file, text.line)]
    if not text.strip():
        return None, [reject("empty_captions", "caption file has no caption line", caption_file)]
    annotations, problems = parse_caption_text(text, len(motion), spec.fps)
    rejections = [reject(p.reason, p.detail, caption_file, p.line, "annotation") for p in problems]
    if not annotations:
        rejections.append(reject("no_valid_captions", "no caption line of this motion is usable", caption_file))
        return None, rejections

    joints = None
    if release.has_joints:
        joints_file = f"new_joints/{motion_id}.npy"
        try:
            joints = _load_array(f"{root}/{joints_file}", release.inside)
        except FileNotFoundError:
            joints = "file is missing (build with --no-joints to leave joints out)"
        if not isinstance(joints, str):
            expected = (len(motion), spec.num_joints, 3)
            if joints.shape != expected:
                joints = f"shape {joints.shape} does not match the features; expected {expected}"
            elif not _all_finite(joints):
                joints = "contains NaN or inf"
        if isinstance(joints, str):
            return None, rejections + [reject("bad_joints", joints, joints_file)]
        joints = np.ascontiguousarray(joints, dtype=np.float32)

    mirrored = motion_id.startswith("M") and len(motion_id) > 1
    base_id = motion_id[1:] if mirrored else motion_id
    record = MotionRecord(
        motion_id, base_id, mirrored, motion, annotations, joints, release.index.get(base_id, {})
    )
    return record, rejections


def _all_finite(array: np.ndarray) -> bool:
    # A sum is finite only if every term is (NaN and inf propagate); the full check runs only when
    # the sum is not, which also covers a finite array whose sum overflows.
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(array.sum())) or bool(np.isfinite(array).all())


def _check_features(motion: np.ndarray, dim: int) -> tuple[str, str] | None:
    if motion.ndim != 2:
        return "wrong_rank", f"has shape {motion.shape}; expected [frames, {dim}]"
    if motion.shape[1] != dim:
        return "wrong_feature_width", f"has {motion.shape[1]} features per frame; expected {dim}"
    if motion.shape[0] == 0:
        return "empty_motion", "has zero frames"
    if not np.issubdtype(motion.dtype, np.floating) and not np.issubdtype(motion.dtype, np.integer):
        return "unreadable_motion", f"has dtype {motion.dtype}; expected float32"
    if not _all_finite(motion):
        bad = np.argwhere(~np.isfinite(motion))[0]
        return "non_finite_motion", f"contains NaN or inf (first at frame {bad[0]}, feature {bad[1]})"
    return None
