"""`show` and `stats`: the pictures exist, have the right frames, and bad requests get clear errors."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_build
from datasets_build.viz.browse import show, stats
from datasets_build.core.errors import UserError
from datasets_build.viz.skeleton import FrameSpan, render_motion, segment_of_frames

REPO = Path(__file__).resolve().parents[1]
CAPTION = "a person crouches#a/DET person/NOUN crouch/VERB#0.0#0.0\nthe person crouches low#the/DET person/NOUN crouch/VERB low/ADV#1.0#2.5\n"


@pytest.fixture
def real_build(realdata, tmp_path):
    root = tmp_path / "rel"
    (root / "texts").mkdir(parents=True)
    shutil.copytree(realdata / "new_joint_vecs", root / "new_joint_vecs")
    for name in ("Mean.npy", "Std.npy"):
        shutil.copy(realdata / name, root / name)
    (root / "train.txt").write_text("M010968\nmissing01\n")
    (root / "val.txt").write_text("")
    (root / "test.txt").write_text("")
    (root / "texts" / "M010968.txt").write_text(CAPTION)
    run_build(root, tmp_path / "built")
    return tmp_path / "built"


def test_gif_plays_the_range_at_ten_frames_a_second_and_png_is_a_filmstrip(real_build, tmp_path):
    message = show(real_build, "M010968", tmp_path / "m.gif", annotation=1)
    assert "frames 20-50 of 70" in message
    with Image.open(tmp_path / "m.gif") as gif:
        assert gif.n_frames == 15  # 30 frames at 20 fps = 1.5 s, drawn at 10 frames a second
        assert gif.info["duration"] == 100
    show(real_build, "M010968", tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as png:
        assert png.width > 3 * png.height  # 8 key poses side by side


def test_unknown_rejected_id_and_bad_annotation_are_explained(real_build, tmp_path):
    with pytest.raises(UserError, match=r"'missing01' is not in .* it was rejected \(missing_motion"):
        show(real_build, "missing01", tmp_path / "x.png")
    with pytest.raises(UserError, match="has 2 annotations; the annotation index must be 0..1"):
        show(real_build, "M010968", tmp_path / "x.png", annotation=2)
    with pytest.raises(ValueError, match="use a .gif, .mp4 or .png"):
        show(real_build, "M010968", tmp_path / "x.jpg")


def test_segments_colour_their_frames(tmp_path):
    owner = segment_of_frames(10, [FrameSpan(0, 4, "walk"), FrameSpan(4, 10, "turn")])
    assert owner.tolist() == [0] * 4 + [1] * 6
    assert segment_of_frames(5, [FrameSpan(1, 3, "x")]).tolist() == [-1, 0, 0, -1, -1]
    joints = np.zeros((6, 22, 3), np.float32)
    joints[:, :, 1] = np.linspace(0, 1.7, 22)
    def pixels_of(colour, path):
        pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).sum(axis=1) < 30).sum())

    render_motion(joints, "humanml3d", tmp_path / "s.png", "test", 20.0, [FrameSpan(0, 3, "a"), FrameSpan(3, 6, "b")])
    render_motion(joints, "humanml3d", tmp_path / "plain.png", "test", 20.0)
    for colour in ("#1f77b4", "#d62728"):  # both segments' colours are drawn, and only with segments
        assert pixels_of(colour, tmp_path / "s.png") > 20
        assert pixels_of(colour, tmp_path / "plain.png") == 0


def test_stats_writes_three_plots_per_split(real_build, tmp_path):
    message = stats(real_build, tmp_path / "plots")
    for name in ("motion_length", "caption_length", "annotations_per_motion"):
        with Image.open(tmp_path / "plots" / f"{name}.png") as png:
            assert png.width > 800
    assert "train: 1 motions, 2 annotations, length 3.5-3.5 s" in message


def test_cli_show_on_a_folder_that_is_not_a_build(tmp_path):
    result = subprocess.run([sys.executable, "-m", "datasets_build", "show", str(tmp_path), "--id", "x", "--out",
                             str(tmp_path / "x.png")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and "is not a built dataset" in result.stderr and "Traceback" not in result.stderr


def test_a_segmentation_timeline_shows_the_segments_and_the_true_boundaries(tmp_path):
    from datasets_build.motion.kinematics import features_to_joints, joints_to_features
    from datasets_build.synthetic.procedural import generate_motion
    from datasets_build.viz.skeleton import FrameSpan

    raw, segments = generate_motion(["walk forward", "jump"], np.random.default_rng(0), "humanml3d")
    joints = features_to_joints(joints_to_features(raw, "humanml3d"), "humanml3d")
    spans = [FrameSpan(s.start, s.end, s.action) for s in segments]
    render_motion(joints, "humanml3d", tmp_path / "t.png", "walks then jumps", 20.0, spans,
                  truth=[segments[1].start])
    with Image.open(tmp_path / "t.png") as png:
        pixels = np.asarray(png.convert("RGB"))
    bottom = pixels[int(pixels.shape[0] * 0.7):]  # the timeline under the poses
    blue, red = np.array([0x1f, 0x77, 0xb4]), np.array([0xd6, 0x27, 0x28])

    def near(colour):  # the timeline's bars are the segment colours at alpha 0.6 over white
        blended = 0.6 * colour + 0.4 * 255
        return (np.abs(bottom - blended).sum(-1) < 30).any()

    assert near(blue) and near(red)


def test_a_bad_picture_name_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "datasets_build", "show", "x", "--id", "1", "--out", "a.jpg"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "use a .gif, .mp4 or .png file name" in result.stderr
    assert "Traceback" not in result.stderr
