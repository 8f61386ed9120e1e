"""Parse HumanML3D / KIT-ML caption files: one annotation per line, `caption#tok/POS ...#start#end`.

Pure functions over text: the reader decides what to do with the problems they report.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple


class Annotation(NamedTuple):  # a NamedTuple: built ~90k times per release, cheaper than a dataclass
    """One valid caption line, with its time span resolved to frames of the motion."""

    caption: str
    tokens: list[str]
    pos: list[str]
    start: float  # seconds as written (NaN read as 0.0, like the reference loaders)
    end: float
    start_frame: int
    end_frame: int  # exclusive
    is_subclip: bool
    line: int  # 1-based line number in the caption file
    # The line's end lay more than one frame past the motion: end_frame is the motion's end, as the
    # reference loaders' slicing makes it.
    clipped: bool = False


# Words that name a side or a turning sense, swapped in a mirrored motion's caption: left/right
# (also leftward(s)/rightward(s), "left-hand"), and clockwise with its spellings: "clock-wise",
# "counter-clockwise", "counter clockwise", "anticlockwise", "anti-clockwise".
_MIRROR_PATTERN = re.compile(r"\b(?:(counter|anti)[- ]?)?clock[- ]?wise\b|\b(left|right)(wards?)?\b", re.IGNORECASE)


def _mirrored(match: re.Match) -> str:
    word = match[0]
    if match[2]:  # left / right (+ wards)
        swapped = "right" if match[2].lower() == "left" else "left"
        swapped += match[3] or ""
    else:
        swapped = "clockwise" if match[1] else "counterclockwise"
    if word.isupper() and len(word) > 1:
        return swapped.upper()
    return swapped[0].upper() + swapped[1:] if word[0].isupper() else swapped


def mirror_text(text: str) -> str:
    """Swap left/right (leftward(s)/rightward(s)) and clockwise/counterclockwise (any spelling:
    "counter-clockwise", "anticlockwise", "clock-wise" ...), as the release's `M` captions do;
    capitals are kept, and words that merely contain them ("leftover") stay."""
    return _MIRROR_PATTERN.sub(_mirrored, text)


def mirror_caption_line(line: str) -> str:
    """A caption line of the mirrored motion: caption and `word/POS` tokens swapped, times kept."""
    caption, tokens, start, end = line.split("#")
    return "#".join([mirror_text(caption), mirror_text(tokens), start, end])


@dataclass(frozen=True)
class CaptionProblem:
    """A caption line that cannot be used, and why."""

    line: int
    reason: str  # short machine-readable reason, e.g. "malformed_caption"
    detail: str  # one sentence for a human


def _seconds(text: str) -> float:
    value = float(text)  # raises ValueError on garbage; 'nan' parses
    return 0.0 if math.isnan(value) else value


def parse_caption_line(
    text: str, line: int, num_frames: int, fps: float
) -> Annotation | CaptionProblem:
    """Parse one non-blank caption line of a motion with `num_frames` frames at `fps`."""
    fields = text.split("#")
    if len(fields) != 4:
        return CaptionProblem(
            line, "malformed_caption",
            f"expected 4 '#'-separated fields (caption#tokens#start#end), found {len(fields)}",
        )
    caption, token_field, start_text, end_text = (f.strip() for f in fields)
    if not caption:
        return CaptionProblem(line, "malformed_caption", "the caption text is empty")
    pairs = [token.rpartition("/") for token in token_field.split()]
    if not pairs:
        return CaptionProblem(line, "malformed_caption", "the token field is empty")
    for word, slash, tag in pairs:
        if not (slash and word and tag):
            token = word + slash + tag
            return CaptionProblem(
                line, "malformed_caption", f"token {token!r} is not of the form word/POS"
            )
    words = [p[0] for p in pairs]
    tags = [p[2] for p in pairs]
    try:
        start, end = _seconds(start_text), _seconds(end_text)
    except ValueError:
        return CaptionProblem(
            line, "bad_time", f"start/end {start_text!r}/{end_text!r} are not numbers of seconds"
        )
    if math.isinf(start) or math.isinf(end) or start < 0 or end < 0:
        return CaptionProblem(line, "bad_time", f"start/end {start}/{end} must be finite and >= 0")

    if start == 0.0 and end == 0.0:
        return Annotation(caption, words, tags, 0.0, 0.0, 0, num_frames, False, line)
    if start >= end:
        return CaptionProblem(line, "bad_subclip", f"sub-clip start {start}s is not before its end {end}s")
    start_frame, end_frame = int(start * fps), int(end * fps)
    if start_frame >= num_frames:
        return CaptionProblem(
            line, "subclip_out_of_range",
            f"sub-clip {start}s-{end}s starts at frame {start_frame}, at or past the end of the motion's "
            f"{num_frames} frames at {fps:g} fps",
        )
    # The features have one frame fewer than the raw clip (velocities need a next frame), so a
    # sub-clip ending on the clip's last raw frame is one past the end: that one frame is no clip.
    # An end further out is clipped to the motion, as the reference loaders' slicing does.
    clipped = end_frame > num_frames + 1
    end_frame = min(end_frame, num_frames)
    if end_frame <= start_frame:
        return CaptionProblem(line, "bad_subclip", f"sub-clip {start}s-{end}s covers no whole frame")
    return Annotation(caption, words, tags, start, end, start_frame, end_frame, True, line, clipped)


_LINE_END = re.compile(r"\r\n|\r|\n")
_LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")


def text_lines(text: str) -> list[str]:
    """The lines of a text file: split at \\n, \\r\\n and \\r only, after one leading byte-order mark.
    Not `str.splitlines()`, which also splits at characters that may sit inside a caption (\\x0b,
    \\x0c, \\x1c-\\x1e, \\x85, U+2028, U+2029) and so would cut a line in two and shift every line
    number after it."""
    return _LINE_END.split(text[1:] if text.startswith("\ufeff") else text)


def split_lines(data: bytes) -> list[bytes]:
    """The lines of a file's bytes, split as `text_lines` splits text (the same line numbers)."""
    return _LINE_END_BYTES.split(data[3:] if data.startswith(b"\xef\xbb\xbf") else data)


def parse_caption_text(
    text: str, num_frames: int, fps: float
) -> tuple[list[Annotation], list[CaptionProblem]]:
    """Parse a whole caption file's text; blank lines are skipped, problems collected."""
    annotations: list[Annotation] = []
    problems: list[CaptionProblem] = []
    for number, raw in enumerate(text_lines(text), start=1):
        if not raw.strip():
            continue
        parsed = parse_caption_line(raw.strip(), number, num_frames, fps)
        (annotations if isinstance(parsed, Annotation) else problems).append(parsed)
    return annotations, problems


def decode_caption_bytes(data: bytes) -> str | CaptionProblem:
    """Decode a caption file as UTF-8, naming the first line that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        for number, raw in enumerate(split_lines(data), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return CaptionProblem(
                    number, "caption_encoding",
                    f"not valid UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1})",
                )
        raise  # unreachable: some line failed above
