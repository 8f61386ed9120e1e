
import pytest

from datasets_build.motion.captions import (
    Annotation, CaptionProblem, decode_caption_bytes, parse_caption_line, parse_caption_text,
)

LINE = "a man kicks with his left leg#a/DET man/NOUN kick/VERB with/ADP his/DET left/ADJ leg/NOUN#{}#{}"


def test_whole_motion_line_keeps_caption_tokens_and_pos():
    ann = parse_caption_line(LINE.format("0.0", "0.0"), 3, num_frames=120, fps=20)
    assert isinstance(ann, Annotation)
    assert ann.caption == "a man kicks with his left leg"
    assert ann.tokens == ["a", "man", "kick", "with", "his", "left", "leg"]
    assert ann.pos == ["DET", "NOUN", "VERB", "ADP", "DET", "ADJ", "NOUN"]
    assert (ann.start_frame, ann.end_frame, ann.is_subclip, ann.line) == (0, 120, False, 3)


@pytest.mark.parametrize("start,end", [("nan", "0.0"), ("nan", "nan"), ("0.0", "nan")])
def test_nan_times_count_as_zero_like_the_reference_loaders(start, end):
    ann = parse_caption_line(LINE.format(start, end), 1, num_frames=50, fps=20)
    assert isinstance(ann, Annotation) and not ann.is_subclip
    assert (ann.start, ann.end, ann.end_frame) == (0.0, 0.0, 50)


def test_subclip_frames_at_humanml3d_and_kit_fps():
    ann = parse_caption_line(LINE.format("1.5", "4.0"), 1, num_frames=199, fps=20)
    assert (ann.start_frame, ann.end_frame, ann.is_subclip) == (30, 80, True)
    kit = parse_caption_line(LINE.format("1.5", "4.0"), 1, num_frames=199, fps=12.5)
    assert (kit.start_frame, kit.end_frame) == (18, 50)


def test_subclip_ending_on_the_dropped_last_frame_is_clamped():
    # 10 s at 20 fps is 200 raw frames, 199 feature frames: the reference slice stops at 199 too.
    ann = parse_caption_line(LINE.format("5.0", "10.0"), 1, num_frames=199, fps=20)
    assert (ann.start_frame, ann.end_frame) == (100, 199)


@pytest.mark.parametrize("text,reason,words", [
    ("a man walks#a/DET man/NOUN walk/VERB#0.0", "malformed_caption", "found 3"),
    ("a man walks#a/DET man/NOUN walk/VERB#0.0#0.0#x", "malformed_caption", "found 5"),
    ("a man walks#a/DET man walk/VERB#0.0#0.0", "malformed_caption", "'man'"),
    ("a man walks##0.0#0.0", "malformed_caption", "token field is empty"),
    ("#a/DET#0.0#0.0", "malformed_caption", "caption text is empty"),
    ("a man walks#a/DET#zero#1.0", "bad_time", "'zero'"),
    ("a man walks#a/DET#-1.0#2.0", "bad_time", ">= 0"),
    ("a man walks#a/DET#3.0#2.0", "bad_subclip", "not before"),
    ("a man walks#a/DET#2.0#2.0", "bad_subclip", "not before"),
    ("a man walks#a/DET#1.0#0.0", "bad_subclip", "not before"),
    ("a man walks#a/DET#6.0#7.0", "subclip_out_of_range", "100 frames"),
])
def test_bad_lines_name_the_problem(text, reason, words):
    problem = parse_caption_line(text, 7, num_frames=100, fps=20)
    assert isinstance(problem, CaptionProblem)
    assert problem.reason == reason and problem.line == 7
    assert words in problem.detail


def test_file_text_skips_blank_lines_and_numbers_lines_from_one():
    text = "\n" + LINE.format("0.0", "0.0") + "\r\n\n" + "broken line\n" + LINE.format("1.0", "2.0")
    anns, problems = parse_caption_text(text, num_frames=100, fps=20)
    assert [a.line for a in anns] == [2, 5]
    assert [(p.line, p.reason) for p in problems] == [(4, "malformed_caption")]


def test_non_utf8_names_the_line():
    problem = decode_caption_bytes(b"fine#a/DET#0#0\nbad \xff byte#a/DET#0#0\n")
    assert isinstance(problem, CaptionProblem)
    assert (problem.line, problem.reason) == (2, "caption_encoding")
    assert decode_caption_bytes("caf\u00e9".encode()) == "caf\u00e9"


def test_mirrored_lines_swap_sides_but_not_inside_words():
    from datasets_build.motion.captions import mirror_caption_line, mirror_text

    assert mirror_text("turns left, then right and spins counterclockwise, leftover") == \
        "turns right, then left and spins clockwise, leftover"
    line = "he kicks left#he/PRON kick/VERB left/ADV#1.0#2.5"
    assert mirror_caption_line(line) == "he kicks right#he/PRON kick/VERB right/ADV#1.0#2.5"


@pytest.mark.parametrize("text, mirrored", [
    ("spins counter-clockwise", "spins clockwise"),  # not "counter-counterclockwise"
    ("spins counter clockwise twice", "spins clockwise twice"),
    ("turns anticlockwise, then anti-clockwise", "turns clockwise, then clockwise"),
    ("rotates clock-wise", "rotates counterclockwise"),
    ("steps leftward and then rightwards", "steps rightward and then leftwards"),
    ("Left arm up, then the RIGHT one", "Right arm up, then the LEFT one"),
    ("a left-handed wave, leftovers aside", "a right-handed wave, leftovers aside"),
])
def test_mirroring_knows_the_spellings_of_sides_and_turning_senses(text, mirrored):
    from datasets_build.motion.captions import mirror_text

    assert mirror_text(text) == mirrored
    assert mirror_text(mirror_text("clockwise counterclockwise left rightward")) == "clockwise counterclockwise left rightward"


def test_a_subclip_ending_past_the_motion_is_clipped_like_the_reference():
    """The reference loaders slice motion[start:end]: an end past the motion means its end."""
    clipped = parse_caption_line("a man walks#a/DET#2.0#30.0", 7, num_frames=100, fps=20)
    assert isinstance(clipped, Annotation)
    assert (clipped.start_frame, clipped.end_frame, clipped.clipped) == (40, 100, True)
    one_past = parse_caption_line("a man walks#a/DET#2.0#5.05", 7, num_frames=100, fps=20)  # raw clip end
    assert (one_past.end_frame, one_past.clipped) == (100, False)
    inside = parse_caption_line("a man walks#a/DET#2.0#3.0", 7, num_frames=100, fps=20)
    assert (inside.end_frame, inside.clipped) == (60, False)
