"""Skeleton pictures of a motion (`show`): animations and filmstrips.

matplotlib only (the `viz` extra), rendered off-screen on 2-D axes through a fixed orthographic
camera (`project`): y-up world positions, the view following the root.
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

PICTURE_SUFFIXES = (".gif", ".mp4", ".png")
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


def project(points: np.ndarray, elev: float = 15.0, azim: float = -60.0) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic camera: y-up world points [..., 3] -> (screen [..., 2], depth [...]), looking down
    at `elev` degrees from the direction `azim` (larger depth: farther from the camera)."""
    a, e = np.radians(azim), np.radians(elev)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    xr, zr = x * np.cos(a) - z * np.sin(a), x * np.sin(a) + z * np.cos(a)
    screen = np.stack([xr, y * np.cos(e) - zr * np.sin(e)], axis=-1)
    return screen, -(y * np.sin(e) + zr * np.cos(e))


class _Stage:
    """The artists of one view, made once and updated per frame (a new 3-D axes per frame is what
    made rendering slow): the ground grid under everything, the root's trail, the limbs sorted by
    depth so the nearer ones are drawn over the farther ones, and the frame's label."""

    def __init__(self, ax, joints: np.ndarray, dataset: str, segments: Sequence[FrameSpan], fps: float,
                 frame_offset: int):
        from matplotlib.collections import LineCollection

        skeleton = get_skeleton(dataset)
        self.joints, self.segments, self.fps, self.offset = joints, segments, fps, frame_offset
        self.owner = segment_of_frames(len(joints), segments)
        self.chains = [list(chain) for chain in skeleton.chains]
        self.sides = ["left" if c[-1] in skeleton.left_joints else "right" if c[-1] in skeleton.right_joints
                      else "centre" for c in skeleton.chains]
        self.floor = float(joints[..., 1].min())
        height = max(float(joints[..., 1].max()) - self.floor, 1e-3)
        self.radius = 0.55 * height  # the view follows the root: the body fills most of it
        self.step = 10 ** np.round(np.log10(height / 3))  # grid spacing: 1 m (1000 mm for KIT-ML)
        ax.set_aspect("equal")
        ax.set_axis_off()
        self.ax = ax
        self.grid = LineCollection([], colors="#cccccc", linewidths=0.8, zorder=0)
        ax.add_collection(self.grid)
        (self.trail,) = ax.plot([], [], color="#999999", linewidth=1, zorder=1)
        self.limbs = [ax.plot([], [], linewidth=3 if side == "left" else 2, solid_capstyle="round",
                              linestyle="-" if side != "right" else (0, (4, 1)))[0] for side in self.sides]
        self.label = ax.text(0.5, 1.0, "", transform=ax.transAxes, ha="center", va="top", fontsize=8)

    def draw(self, frame: int) -> list:
        cx, cz = self.joints[frame, 0, 0], self.joints[frame, 0, 2]
        r, floor = self.radius, self.floor
        # Ground grid at fixed world positions around the root: it slides as the person moves.
        ticks_x = np.arange(np.floor((cx - r) / self.step), np.ceil((cx + r) / self.step) + 1) * self.step
        ticks_z = np.arange(np.floor((cz - r) / self.step), np.ceil((cz + r) / self.step) + 1) * self.step
        lines = [[(t, floor, cz - r), (t, floor, cz + r)] for t in ticks_x]
        lines += [[(cx - r, floor, t), (cx + r, floor, t)] for t in ticks_z]
        self.grid.set_segments(project(np.clip(np.asarray(lines), [cx - r, -np.inf, cz - r],
                                               [cx + r, np.inf, cz + r]))[0])
        trail = self.joints[: frame + 1, 0].copy()
        trail[:, 1] = floor
        near = (np.abs(trail[:, 0] - cx) < r) & (np.abs(trail[:, 2] - cz) < r)
        self.trail.set_data(*project(trail[near])[0].T)
        screen, depth = project(self.joints[frame])
        k = self.owner[frame]
        for line, chain, side in zip(self.limbs, self.chains, self.sides):
            line.set_data(*screen[chain].T)
            line.set_color(SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)] if k >= 0 else _SIDE_COLOURS[side])
            line.set_zorder(3 - float(depth[chain].mean()) / (4 * r))  # nearer: drawn later
        centre = project(np.array([cx, floor + r * 0.9, cz]))[0]
        self.ax.set_xlim(centre[0] - r * 1.05, centre[0] + r * 1.05)
        self.ax.set_ylim(centre[1] - r * 1.05, centre[1] + r * 1.05)
        label = f"frame {frame + self.offset} ({(frame + self.offset) / self.fps:.2f} s)"
        if k >= 0:
            label += f"\n{textwrap.shorten(self.segments[k].label, 60)}"
        self.label.set_text(label)
        self.label.set_color(SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)] if k >= 0 else "black")
        return [self.grid, self.trail, *self.limbs, self.label]


def _timeline(ax, length: int, segments: Sequence[FrameSpan], truth: Sequence[int], frame_offset: int, fps: float):
    """A bar of the segments over the frames, the true boundaries as black ticks; returns the cursor."""
    ax.set_xlim(0, length)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for k, span in enumerate(segments):
        ax.axvspan(span.start, span.end, color=SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)], alpha=0.6, linewidth=0)
    for boundary in truth:
        ax.axvline(boundary, color="black", linewidth=1.5, ymin=0, ymax=0.45)
    ticks = ax.get_xticks()
    ax.set_xticks(ticks[(ticks >= 0) & (ticks <= length)])
    ax.set_xticklabels([f"{(t + frame_offset) / fps:.1f}s" for t in ax.get_xticks()], fontsize=7)
    ax.set_title("segments (colour) and true boundaries (black)" if truth else "segments", fontsize=7, pad=2)
    return ax.axvline(0, color="black", linewidth=1)


def render_motion(joints: np.ndarray, dataset: str, out: Path, title: str, fps: float,
                  segments: Sequence[FrameSpan] = (), frame_offset: int = 0, truth: Sequence[int] = (),
                  progress: bool = False) -> Path:
    """Draw joints [T, J, 3] as an animation (.gif, .mp4) or a filmstrip of key poses (.png).

    Frames inside a segment are coloured by it, and a timeline under the body shows the segments
    (with `truth`, true boundary frames, as ticks); `frame_offset` maps local frames to the frame
    numbers of the whole motion (for sub-clips) in the labels. A GIF is drawn at 10 frames a second
    at most (the eye needs no more), each frame by updating the same artists.
    """
    plt = pyplot()
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in PICTURE_SUFFIXES:
        raise PictureError(f"{out}: use a .gif, .mp4 or .png file name")
    wrapped = "\n".join(textwrap.wrap(title, 70))
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        frames = np.linspace(0, len(joints) - 1, min(8, len(joints))).round().astype(int)
        figure = plt.figure(figsize=(2.2 * len(frames), 3.6 if segments else 3.0))
        grid = figure.add_gridspec(2 if segments else 1, len(frames), height_ratios=[6, 1] if segments else [1])
        for i, frame in enumerate(frames):
            _Stage(figure.add_subplot(grid[0, i]), joints, dataset, segments, fps, frame_offset).draw(int(frame))
        if segments:
            cursor = _timeline(figure.add_subplot(grid[1, :]), len(joints), segments, truth, frame_offset, fps)
            cursor.remove()
            for frame in frames:
                figure.axes[-1].axvline(frame, color="black", linewidth=0.8, linestyle=":")
        figure.suptitle(wrapped, fontsize=10)
        figure.text(0.01, 0.01, _SIDE_NOTE, fontsize=8, color="#555555")
        figure.savefig(out, dpi=100)
        plt.close(figure)
        return out

    figure = plt.figure(figsize=(4.8, 5.6 if segments else 5.2))
    grid = figure.add_gridspec(2 if segments else 1, 1, height_ratios=[8, 1] if segments else [1],
                               left=0.02, right=0.98, bottom=0.08, top=0.9)
    stage = _Stage(figure.add_subplot(grid[0]), joints, dataset, segments, fps, frame_offset)
    cursor = _timeline(figure.add_subplot(grid[1]), len(joints), segments, truth, frame_offset, fps) \
        if segments else None
    figure.suptitle(wrapped, fontsize=9)
    figure.text(0.01, 0.01, _SIDE_NOTE, fontsize=7, color="#555555")
    rate = fps if suffix == ".mp4" else min(fps, 10.0)
    frames = np.unique(np.round(np.arange(0, len(joints), fps / rate)).astype(int).clip(0, len(joints) - 1))

    def update(frame: int) -> list:
        artists = stage.draw(frame)
        if cursor is not None:
            cursor.set_xdata([frame, frame])
            artists.append(cursor)
        return artists

    try:
        if suffix == ".mp4":
            _write_mp4(figure, update, frames, rate, out)
        else:
            _write_gif(figure, update, frames, rate, out, progress)
    finally:
        plt.close(figure)
    return out


def _write_gif(figure, update, frames: np.ndarray, rate: float, out: Path, progress: bool) -> None:
    """Blitting: the still parts (title, timeline) are drawn once; each frame restores them and
    draws only the moving artists, then becomes a palette image."""
    from PIL import Image
    from tqdm.auto import tqdm

    moving = update(int(frames[0]))
    for artist in moving:
        artist.set_animated(True)
    canvas = figure.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(figure.bbox)
    images = []
    for frame in tqdm(frames, desc=f"render {out.name}", unit=" frames", leave=False, disable=not progress):
        canvas.restore_region(background)
        for artist in update(int(frame)):
            figure.draw_artist(artist)
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]
        images.append(Image.fromarray(rgb).quantize(colors=64, method=Image.Quantize.FASTOCTREE))
    images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / rate), loop=0,
                   optimize=False)


def _write_mp4(figure, update, frames: np.ndarray, rate: float, out: Path) -> None:
    from matplotlib import animation

    if not animation.FFMpegWriter.isAvailable():
        raise MissingDependency("writing .mp4 needs ffmpeg on PATH (apt-get install ffmpeg); or write a .gif")
    animation.FuncAnimation(figure, update, frames=frames, interval=1000 / rate).save(
        out, writer=animation.FFMpegWriter(fps=rate))
