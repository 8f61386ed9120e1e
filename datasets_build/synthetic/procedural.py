"""Procedurally animated skeletons with exactly known action boundaries (no licensed data needed).

Motions are built from local joint rotations (forward kinematics over the dataset's chains) and a
root trajectory solved so that the supporting foot stays planted: the root moves by minus the
supporting ankle's motion relative to the root, and its height keeps that ankle at its standing
height above the floor. World frame = the canonical one of the release: y up, facing +Z at the
start, the person's LEFT side on +X (so a left turn is a positive yaw about +y, toward +X).

Units: HumanML3D in meters. KIT-ML in the release's own units (~547 per meter: its Mean.npy puts
the mean root height at 560 and the hip-knee-ankle length at 449, vs 0.82 m for HumanML3D).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Callable, Sequence

import numpy as np

from datasets_build.motion.kinematics import get_skeleton
from datasets_build.synthetic.grammar import (  # caption_text/caption_tokens: used with describe()
    FINALLY, PHRASES, SUBJECTS, THEN, Token, caption_text, caption_tokens, parse,
)

__all__ = ["ACTIONS", "MIRROR_ACTION", "Segment", "forward_kinematics", "generate_motion",
           "random_actions", "describe", "describe_segment", "caption_text", "caption_tokens"]

ACTIONS = ("walk forward", "walk backward", "turn left", "turn right", "jump", "wave left hand",
           "wave right hand", "kick left", "kick right", "sit down", "crouch")
MIRROR_ACTION = {a: a.replace("left", "_").replace("right", "left").replace("_", "right") for a in ACTIONS}
# Seconds per action; 3 actions stay under 10 s (HumanML3D keeps T < 200 frames at 20 fps).
_DURATION = {a: (2.0, 3.0) for a in ACTIONS} | {"walk forward": (2.4, 3.4), "walk backward": (2.4, 3.4)}
_G = 9.81  # m/s^2: a jump's airborne time follows from its height


@dataclass(frozen=True)
class Segment:
    action: str
    start: int  # feature frames, end exclusive
    end: int


# ----------------------------------------------------------------------------- skeletons
# Rest pose = neutral standing, arms hanging. Offsets from the parent joint for the centre and LEFT
# joints; right ones are mirrored. HumanML3D (meters): bone lengths of new_joints/012314.npy (all
# release motions share the retargeted skeleton), left/right averaged; directions from the
# standing frame 0 of 009548, legs made vertical so the gait geometry below is exact.
_HML_OFFSETS = {1: (0.0625, -0.0862, 0.0), 3: (0.0, 0.1193, -0.0554), 4: (0.0, -0.3919, 0.0),
                6: (0.0, 0.1321, 0.0552), 7: (0.0, -0.429, 0.0), 9: (0.0, 0.0553, 0.0153),
                10: (0.022, -0.0558, 0.1336), 12: (0.0, 0.2193, -0.0053), 13: (0.0784, 0.1165, 0.0),
                15: (0.0, 0.0868, 0.0556), 16: (0.126, -0.0182, 0.0), 18: (0.0391, -0.2557, -0.0261),
                20: (0.0, -0.2555, 0.0807)}
# KIT-ML (release units): torso, hips, legs and feet from the mean pose of the release's Mean.npy
# (rotation-invariant positions, symmetric there); arms, which the mean shortens, from HumanML3D's
# proportions. Hips and shoulders sit 3 units behind the spine: KIT's raw offsets point them the
# other way (+X for the right side), and an exactly opposite bone makes the features' IK divide 0/0.
_KIT_OFFSETS = {1: (0.0, 76.33, 6.80), 2: (0.0, 106.89, -10.67), 3: (0.0, 38.85, 8.28),
                4: (0.0, 21.76, 15.20), 8: (97.35, 0.0, -3.0), 9: (20.63, -134.79, -13.75),
                10: (0.0, -123.97, 39.15), 16: (44.85, 0.0, -3.0), 17: (0.0, -223.12, 0.0),
                18: (0.0, -225.75, 0.0), 19: (4.33, -19.44, 15.92), 20: (15.03, -19.93, 38.31)}


@dataclass(frozen=True)
class _Rig:
    """A skeleton plus the joint roles the actions animate; pairs are (left, right)."""

    fps: float
    unit: float  # dataset units per meter
    parents: np.ndarray
    order: tuple[int, ...]
    offsets: np.ndarray
    hip: tuple[int, int]
    knee: tuple[int, int]
    ankle: tuple[int, int]
    shoulder: tuple[int, int]
    elbow: tuple[int, int]
    spine: tuple[int, ...]
    feet: tuple[int, ...]

    @cached_property
    def ankle_height(self) -> float:
        rest = forward_kinematics(np.broadcast_to(np.eye(3), (1, len(self.parents), 3, 3)), np.zeros((1, 3)), self)
        return float(rest[0, self.ankle[0], 1] - rest[0, list(self.feet), 1].min())


def _make_rig(dataset: str, table: dict[int, tuple[float, float, float]], unit: float, **roles) -> _Rig:
    skel = get_skeleton(dataset)
    offsets = np.zeros((skel.n_joints, 3))
    for j, v in table.items():
        offsets[j] = v
    offsets[list(skel.right_joints)] = offsets[list(skel.left_joints)] * (-1.0, 1.0, 1.0)
    parents = np.zeros(skel.n_joints, dtype=int)
    order = [0]
    for chain in skel.chains:  # arm chains start at a spine joint already placed: topological order
        for k in range(1, len(chain)):
            parents[chain[k]] = chain[k - 1]
            order.append(chain[k])
    feet = tuple(sorted({*skel.feet_left, *skel.feet_right, *roles["ankle"]}))
    return _Rig(skel.fps, unit, parents, tuple(order), offsets, feet=feet, **roles)


_RIGS = {
    "humanml3d": _make_rig("humanml3d", _HML_OFFSETS, 1.0, hip=(1, 2), knee=(4, 5), ankle=(7, 8),
                           shoulder=(16, 17), elbow=(18, 19), spine=(3, 6, 9)),
    "kitml": _make_rig("kitml", _KIT_OFFSETS, 547.0, hip=(16, 11), knee=(17, 12), ankle=(18, 13),
                       shoulder=(8, 5), elbow=(9, 6), spine=(1, 2)),
}


def _rig(dataset: str | _Rig) -> _Rig:
    return dataset if isinstance(dataset, _Rig) else _RIGS[get_skeleton(dataset).name]


# ----------------------------------------------------------------------------- kinematics
def _axis_rot(angle: np.ndarray, axis: int) -> np.ndarray:
    """Rotation matrices [..., 3, 3] about coordinate axis 0/1/2 by `angle` radians."""
    m = np.zeros(np.shape(angle) + (3, 3))
    k, l = (axis + 1) % 3, (axis + 2) % 3
    c, s = np.cos(angle), np.sin(angle)
    m[..., axis, axis] = 1.0
    m[..., k, k], m[..., k, l], m[..., l, k], m[..., l, l] = c, -s, s, c
    return m


def _euler(deg: np.ndarray) -> np.ndarray:
    """(pitch about x, yaw about y, roll about z) in degrees -> Ry @ Rx @ Rz.  Signs in this frame:
    leg/arm pitch -a swings the limb forward, spine pitch +a leans forward, left-arm roll +a raises
    it sideways, yaw +a turns toward +X (left)."""
    a = np.radians(deg)
    return _axis_rot(a[..., 1], 1) @ _axis_rot(a[..., 0], 0) @ _axis_rot(a[..., 2], 2)


def forward_kinematics(local_rot: np.ndarray, root_pos: np.ndarray, dataset: str = "humanml3d") -> np.ndarray:
    """Local joint rotations [F, J, 3, 3] (joint j's rotation turns the bones to its children,
    joint 0's includes the heading) + root positions [F, 3] -> joint positions [F, J, 3]."""
    rig = _rig(dataset)
    local_rot = np.asarray(local_rot, dtype=np.float64)
    pos = np.empty(local_rot.shape[:-1])
    glob = np.empty_like(local_rot)
    pos[:, 0], glob[:, 0] = root_pos, local_rot[:, 0]
    for j in rig.order[1:]:  # one vectorized step per joint, all frames at once
        p = rig.parents[j]
        pos[:, j] = pos[:, p] + glob[:, p] @ rig.offsets[j]
        glob[:, j] = glob[:, p] @ local_rot[:, j]
    return pos


def _place_root(rel: np.ndarray, lift: np.ndarray, rig: _Rig) -> np.ndarray:
    """Root trajectory keeping the support ankle planted: the lower ankle stands on the floor, and
    over each frame step the root moves by minus the motion (relative to the root) of the ankle
    that is low at both ends of the step, so feet lift off from rest and are pinned on landing."""
    y = rel[:, list(rig.ankle), 1]
    above = y - y.min(1, keepdims=True)  # height over the floor (the lower ankle stands on it)
    high = np.maximum(above[:-1], above[1:])
    d = high[:, 0] - high[:, 1]
    eps = 1e-6 * rig.unit  # ties (both feet down, or within 1 um) keep the previous support
    side = np.where(d < -eps, 0, np.where(d > eps, 1, -1))
    last = np.maximum.accumulate(np.where(side >= 0, np.arange(len(d)), -1))
    first = side[side >= 0][0] if (side >= 0).any() else 0  # leading ties: the first real support
    sup = np.array(rig.ankle)[np.where(last >= 0, side[np.maximum(last, 0)], first)]
    t = np.arange(len(d))
    step = rel[t + 1, sup] - rel[t, sup]
    root = np.zeros((len(rel), 3))
    root[1:, [0, 2]] = -np.cumsum(step[:, [0, 2]], axis=0)
    root[:, 1] = rig.ankle_height - y.min(1) + lift
    return root


# ----------------------------------------------------------------------------- actions
def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _keys(n: int, *knots: tuple[float, float]) -> np.ndarray:
    """Eased curve through (fraction of the clip, value) knots, sampled at frames 0..n."""
    t, v = np.array([k[0] for k in knots]), np.array([k[1] for k in knots], dtype=np.float64)
    u = np.arange(n + 1) / n
    i = np.clip(np.searchsorted(t, u, side="right") - 1, 0, len(t) - 2)
    return v[i] + (v[i + 1] - v[i]) * _smooth((u - t[i]) / (t[i + 1] - t[i]))


class _Clip:
    """n + 1 frames of one action (frame n = the pose the next action starts from), in degrees."""

    def __init__(self, rig: _Rig, n: int) -> None:
        self.rig, self.n = rig, n
        self.ang = np.zeros((n + 1, len(rig.parents), 3))  # local (pitch, yaw, roll)
        self.yaw = np.zeros(n + 1)  # heading change within the clip
        self.lift = np.zeros(n + 1)  # root height above the grounded solution (airborne)

    def leg(self, side: int, flex, knee, twist=0.0, ankle=None) -> None:
        h, k, a = self.rig.hip[side], self.rig.knee[side], self.rig.ankle[side]
        self.ang[:, h, 0], self.ang[:, h, 1], self.ang[:, k, 0] = -flex, twist, knee
        self.ang[:, a, 0] = flex - knee if ankle is None else ankle  # default: foot kept flat

    def arm(self, side: int, flex=0.0, abduct=0.0, elbow=0.0, elbow_roll=0.0) -> None:
        s, e, sign = self.rig.shoulder[side], self.rig.elbow[side], 1.0 - 2.0 * side
        self.ang[:, s, 0], self.ang[:, s, 2] = -flex, sign * abduct
        self.ang[:, e, 0], self.ang[:, e, 2] = -elbow, sign * elbow_roll

    def lean(self, angle) -> None:
        self.ang[:, list(self.rig.spine), 0] += np.asarray(angle)[:, None] / len(self.rig.spine)


def _fold(rig: _Rig, knee: np.ndarray) -> np.ndarray:
    """Hip flexion (degrees) that keeps the ankle on the hip-ankle line when the knee bends by
    `knee` degrees: the knee then only shortens the leg (the foot lifts straight up)."""
    a, b = np.linalg.norm(rig.offsets[rig.knee[0]]), np.linalg.norm(rig.offsets[rig.ankle[0]])
    k = np.radians(knee)
    return np.degrees(np.arctan2(b * np.sin(k), a + b * np.cos(k)))


def _walk(rig: _Rig, n: int, rng: np.random.Generator, backward: bool) -> _Clip:
    c = _Clip(rig, n)
    amp, knee = rng.uniform(12, 16) if backward else rng.uniform(17, 22), rng.uniform(45, 60)
    u, dur = np.arange(n + 1) / n, n / rig.fps
    d, r = 0.25 / dur, 0.3 / dur  # knee lift-off time, gait speed-up / slow-down time
    steps = max(3, round((dur - 2 * 0.25 - 0.3) / rng.uniform(0.5, 0.6)))
    # Start and end at left mid-stance / right mid-swing: both hip-ankle lines are vertical there,
    # so only the swing knee has to come up (foot lifted straight) before the gait phase speeds up;
    # a time warp (zero speed at both ends) keeps every stride full, feet landing at rest.
    speed = _smooth((u - d) / r) * _smooth((1 - u - d) / r)
    warp = np.concatenate([[0.0], np.cumsum(speed[1:] + speed[:-1])])
    phase = (0.25 + steps / 2 * warp / warp[-1] + np.array([[0.0], [0.5]])) % 1.0  # left, right
    stance, sw = phase < 0.5, np.clip(2 * phase - 1, 0, 1)  # stance in [0, 0.5); swing progress
    # Angle of the hip-ankle line: the stance leg (straight) sweeps linearly, i.e. the planted foot
    # drives the root at constant speed; the swing leg leaves and lands with that same angular
    # velocity (the foot lifts off and touches down at rest: no skating), overshooting a little.
    # The swing leg only shortens by its knee bend, so its ankle is always above the support's.
    swing = -np.cos(np.pi * sw) - np.sin(2 * np.pi * sw) / np.pi
    line = amp * np.where(stance, 1 - 4 * phase, swing)
    up = _smooth(u / d) * _smooth((1 - u) / d)
    kn = knee * up * np.where(stance, 0.0, np.sin(np.pi * sw) ** 2)
    for side in (0, 1):
        c.leg(side, line[side] + _fold(rig, kn[side]), kn[side])
        c.arm(side, flex=-0.7 * line[side], elbow=12 * up)  # arms swing against the same-side leg
    c.lean(3 * up)
    if backward:  # the same gait played backward: planted feet, root moving -Z
        c.ang = c.ang[::-1].copy()
    return c


def _turn(rig: _Rig, n: int, rng: np.random.Generator, side: int) -> _Clip:
    c = _Clip(rig, n)
    theta, steps = (1 - 2 * side) * rng.uniform(80, 100), 4
    u = np.arange(n + 1) / n
    foot, bump, last = np.zeros((2, n + 1)), np.zeros((2, n + 1)), [0.0, 0.0]
    for i in range(steps):  # the foot on the turning side leads; each step turns one foot
        s, x = (side + i) % 2, np.clip(u * steps - i, 0, 1)
        target = theta * min(1.0, (i + 1) / (steps - 1))
        foot[s] += (target - last[s]) * _smooth(x)
        bump[s] += np.sin(np.pi * x) ** 2
        last[s] = target
    c.yaw = foot.mean(0)  # pelvis faces between the feet; hips twist so planted feet keep their yaw
    for s in (side, 1 - side):  # draws in lead-foot order: the right turn mirrors the left one
        kn = rng.uniform(35, 45) * bump[s]
        c.leg(s, _fold(rig, kn), kn, twist=foot[s] - c.yaw)  # steps lift the foot straight up
    return c


def _jump(rig: _Rig, n: int, rng: np.random.Generator) -> _Clip:
    c = _Clip(rig, n)
    height = rng.uniform(0.12, 0.25)
    air = 2 * np.sqrt(2 * height / _G)  # ballistic flight time, seconds
    dur = n / rig.fps
    t0 = max(0.02, (dur - 1.75 - air) / 2)
    tc, tt = t0 + 0.5, t0 + 0.7  # crouched, take-off
    tl = tt + air
    ta, te = tl + 0.2, min(tl + 0.75, dur - 0.01)  # landing absorbed, standing again

    def keys(*vals: float) -> np.ndarray:
        return _keys(n, *zip(np.array([0, t0, tc, tt, tl, ta, te, dur]) / dur, vals))

    crouch = keys(0, 0, 1, 0, 0, 0.6, 0, 0)
    for s in (0, 1):
        c.leg(s, 40 * crouch, 80 * crouch)
        c.arm(s, flex=keys(0, 0, -35, 45, 20, -10, 0, 0), elbow=20 * crouch)
    c.lean(20 * crouch)
    x = (np.arange(n + 1) / rig.fps - tt) / air
    c.lift = np.where((x > 0) & (x < 1), 4 * height * x * (1 - x), 0.0) * rig.unit
    return c


def _wave(rig: _Rig, n: int, rng: np.random.Generator, side: int) -> _Clip:
    c = _Clip(rig, n)
    up = _keys(n, (0, 0), (0.25, 1), (0.8, 1), (1, 0))
    swing = _keys(n, (0, 0), (0.25, 0), (0.35, 1), (0.7, 1), (0.8, 0), (1, 0))
    t = np.arange(n + 1) / rig.fps
    wave = rng.uniform(20, 30) * swing * np.sin(2 * np.pi * rng.uniform(1.5, 2.2) * (t - 0.25 * n / rig.fps))
    c.arm(side, abduct=rng.uniform(115, 130) * up, elbow_roll=30 * up + wave)  # forearm up, side to side
    return c


def _kick(rig: _Rig, n: int, rng: np.random.Generator, side: int) -> _Clip:
    c = _Clip(rig, n)
    t = (0, 0.15, 0.35, 0.5, 0.68, 0.88, 1)

    def keys(*vals: float) -> np.ndarray:
        return _keys(n, *zip(t, vals))

    flex = keys(0, 0, -15, rng.uniform(65, 85), 25, 0, 0)
    knee = keys(0, 0, 60, 5, 50, 0, 0)
    c.leg(side, flex, knee, ankle=np.maximum(flex - knee, -25))  # foot flat or pointed, not hooked
    c.lean(keys(0, 0, 3, -12, -3, 0, 0))
    c.arm(1 - side, flex=keys(0, 0, -10, 30, 10, 0, 0), elbow=keys(0, 0, 10, 30, 10, 0, 0))
    c.arm(side, abduct=keys(0, 0, 15, 25, 10, 0, 0))
    return c


def _sit(rig: _Rig, n: int, rng: np.random.Generator) -> _Clip:
    c = _Clip(rig, n)
    bend = _keys(n, (0, 0), (0.1, 0), (0.85, 0.97), (1, 1)) * rng.uniform(85, 95)
    for s in (0, 1):  # shins stay vertical: the flat feet need no ankle bend
        c.leg(s, bend, bend)
        c.arm(s, flex=bend / 3, elbow=bend / 3)
    c.lean(_keys(n, (0, 0), (0.1, 5), (0.5, 35), (0.85, 20), (1, 12)))
    return c


def _crouch(rig: _Rig, n: int, rng: np.random.Generator) -> _Clip:
    c = _Clip(rig, n)
    depth = _keys(n, (0, 0), (0.1, 0), (0.4, 1), (0.6, 1), (0.9, 0), (1, 0)) * rng.uniform(0.8, 1.0)
    for s in (0, 1):
        c.leg(s, 85 * depth, 125 * depth)
        c.arm(s, flex=45 * depth, elbow=20 * depth)
    c.lean(35 * depth)
    return c


_BUILDERS: dict[str, Callable[[_Rig, int, np.random.Generator], _Clip]] = {
    "walk forward": partial(_walk, backward=False), "walk backward": partial(_walk, backward=True),
    "jump": _jump, "sit down": _sit, "crouch": _crouch}
for _side, _name in enumerate(("left", "right")):
    _BUILDERS |= {f"turn {_name}": partial(_turn, side=_side), f"wave {_name} hand": partial(_wave, side=_side),
                  f"kick {_name}": partial(_kick, side=_side)}


def generate_motion(actions: Sequence[str], rng: np.random.Generator,
                    dataset: str = "humanml3d") -> tuple[np.ndarray, list[Segment]]:
    """Raw joints [T+1, J, 3] float32 (features will have T frames) and the action segments,
    which cover the feature frames [0, T) exactly.  "sit down" ends seated, so it must be last."""
    if not actions or any(a not in _BUILDERS for a in actions):
        raise ValueError(f"expected one or more of {ACTIONS}, got {list(actions)}")
    if "sit down" in actions[:-1]:
        raise ValueError("'sit down' ends seated: it can only be the last action")
    rig = _rig(dataset)
    clips, segments, start = [], [], 0
    for a in actions:
        n = int(round(rng.uniform(*_DURATION[a]) * rig.fps))
        clips.append(_BUILDERS[a](rig, n, rng))
        segments.append(Segment(a, start, start + n))
        start += n
    # Clips share their boundary pose: keep each one's first n frames, plus the very last frame.
    ang = np.concatenate([c.ang[:-1] for c in clips] + [clips[-1].ang[-1:]])
    lift = np.concatenate([c.lift[:-1] for c in clips] + [clips[-1].lift[-1:]])
    turned = np.cumsum([0.0] + [c.yaw[-1] for c in clips])  # heading reached after each clip
    ang[:, 0, 1] += np.concatenate([c.yaw[:-1] + o for c, o in zip(clips, turned)] + [turned[-1:]])
    rel = forward_kinematics(_euler(ang), np.zeros((len(ang), 3)), rig)
    joints = rel + _place_root(rel, lift, rig)[:, None, :]
    return joints.astype(np.float32), segments


def random_actions(rng: np.random.Generator, max_actions: int = 3) -> list[str]:
    """1..max_actions actions, no immediate repeats, "sit down" only last."""
    out: list[str] = []
    k = int(rng.integers(1, max_actions + 1))
    for i in range(k):
        pool = [a for a in ACTIONS if a not in out[-1:] and (a != "sit down" or i == k - 1)]
        out.append(pool[int(rng.integers(len(pool)))])
    return out


# ----------------------------------------------------------------------------- captions
def _phrase(action: str, rng: np.random.Generator) -> list[Token]:
    side = "left" if "left" in action else "right" if "right" in action else None
    key = action.replace(side, "{s}") if side else action
    options = PHRASES[key]
    return parse(options[int(rng.integers(len(options)))].replace("{s}", side or ""))


def describe_segment(segment: Segment, rng: np.random.Generator) -> list[Token]:
    """One caption (word, lemma, POS) for a single action."""
    return describe([segment], rng)


def describe(segments: Sequence[Segment], rng: np.random.Generator) -> list[Token]:
    """One caption (word, lemma, POS) describing the segments' actions in time order."""
    words = parse(SUBJECTS[int(rng.integers(len(SUBJECTS)))])
    for i, seg in enumerate(segments):
        if i:
            joins = FINALLY if i == len(segments) - 1 and i >= 2 else THEN
            words += parse(joins[int(rng.integers(len(joins)))])
        words += _phrase(seg.action, rng)
    return words
