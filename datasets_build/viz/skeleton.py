"""Pictures of a built dataset: skeleton animations (`show`) and the first plots to look at (`stats`).

matplotlib only (the `viz` extra), rendered off-screen. Data are y-up; matplotlib's 3-D axes are
z-up, so positions are drawn as (x, z, y).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from datasets_build.core.errors import MissingDependency, UserError
from datasets_build.motion.kinematics import get_skeleton
from datasets_build.viz.plots import pyplot


class PictureError(UserError, ValueError):
    """A picture that cannot be written as asked."""

SEGMENT_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
# By body side (no segment uses these): the person's left limbs steel blue, right limbs grey.
_SIDE_COLOURS = {"left": "#4a6d8c", "right": "#777777", "centre": "#a0522d"}


_SIDE_NOTE = "left limbs: solid, thick (blue unless a segment colours them); right limbs: dashed"


@dataclass(frozen=True)
class FrameSpan:
    """A labelled frame range [start, end) of the motion being drawn (e.g. a MATE sub-text)."""

    start: int
    end: int
    label: str


def segment_of_frames(length: int, segments: Sequence[FrameSpan]) -> np.ndarray:
    """Index into `segments` for every frame, -1 where no segment covers it."""
    owner = np.full(length, -1)
    for k, segment in enumerate(segments):
        owner[max(0, segment.start) : min(length, segment.end)] = k
    return owner


def render_motion(joints: np.ndarray, dataset: str, out: Path, title: str, fps: float,
                  segments: Sequence[FrameSpan] = (), frame_offset: int = 0) -> Path:
    """Draw joints [T, J, 3] as an animation (.gif, .mp4) or a filmstrip of key poses (.png).

    Frames inside a segment are coloured by it; `frame_offset` maps local frames to the frame
    numbers of the whole motion (for sub-clips) in the captions under the picture.
    """
    plt = pyplot()
    skeleton = get_skeleton(dataset)
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".mp4", ".png"):
        raise PictureError(f"{out}: use a .gif, .mp4 or .png file name")
    owner = segment_of_frames(len(joints), segments)
    sides = ["left" if chain[-1] in skeleton.left_joints else "right" if chain[-1] in skeleton.right_joints
             else "centre" for chain in skeleton.chains]
    floor = float(joints[..., 1].min())
    # The view follows the root with a fixed size, so the body stays large on long walks.
    radius = max(float(joints[..., 1].max()) - floor, 1e-3) * 0.6
    wrapped = "\n".join(textwrap.wrap(title, 70))

    def draw(ax, frame: int) -> None:
        ax.cla()
        cx, cz = joints[frame, 0, 0], joints[frame, 0, 2]
        ax.set_xlim(cx - radius, cx + radius)
        ax.set_ylim(cz - radius, cz + radius)
        ax.set_zlim(floor, floor + 2 * radius)
        ax.set_box_aspect((1, 1, 1), zoom=1.5)
        ax.view_init(elev=15, azim=-60)
        ax.set_axis_off()
        grid = np.linspace(-radius, radius, 2)
        gx, gz = np.meshgrid(cx + grid, cz + grid)
        ax.plot_surface(gx, gz, np.full_like(gx, floor), color="#dddddd", alpha=0.5, shade=False)
        trail = joints[: frame + 1, 0]
        near = (np.abs(trail[:, 0] - cx) < radius) & (np.abs(trail[:, 2] - cz) < radius)
        ax.plot(trail[near, 0], trail[near, 2], np.full(int(near.sum()), floor), color="#888888", linewidth=1)
        k = owner[frame]
        for c, chain in enumerate(skeleton.chains):
            colour = SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)] if k >= 0 else _SIDE_COLOURS[sides[c]]
            points = joints[frame, list(chain)]
            ax.plot(points[:, 0], points[:, 2], points[:, 1], color=colour,
                    linewidth=3 if sides[c] == "left" else 2, linestyle="-" if sides[c] != "right" else (0, (4, 1)))
        label = f"frame {frame + frame_offset} ({(frame + frame_offset) / fps:.2f} s)"
        if k >= 0:
            label += f"\n{textwrap.shorten(segments[k].label, 60)}"
        ax.set_title(label, fontsize=8, color=SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)] if k >= 0 else "black")

    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        frames = np.linspace(0, len(joints) - 1, min(8, len(joints))).round().astype(int)
        figure = plt.figure(figsize=(2.6 * len(frames), 3.6))
        for i, frame in enumerate(frames):
            draw(figure.add_subplot(1, len(frames), i + 1, projection="3d"), int(frame))
        figure.suptitle(wrapped, fontsize=10)
        figure.text(0.01, 0.01, _SIDE_NOTE, fontsize=8, color="#555555")
        figure.tight_layout()
        figure.savefig(out, dpi=100)
        plt.close(figure)
        return out

    from matplotlib import animation

    figure = plt.figure(figsize=(5, 5.4))
    ax = figure.add_subplot(projection="3d")
    figure.suptitle(wrapped, fontsize=9)
    figure.text(0.01, 0.01, _SIDE_NOTE, fontsize=7, color="#555555")
    movie = animation.FuncAnimation(figure, lambda f: draw(ax, f), frames=len(joints), interval=1000 / fps)
    if suffix == ".mp4":
        if not animation.FFMpegWriter.isAvailable():
            plt.close(figure)
            raise MissingDependency("writing .mp4 needs ffmpeg on PATH (apt-get install ffmpeg); or write a .gif")
        movie.save(out, writer=animation.FFMpegWriter(fps=fps))
    else:
        movie.save(out, writer=animation.PillowWriter(fps=min(fps, 25)))
    plt.close(figure)
    return out
