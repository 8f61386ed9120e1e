"""Procedural motions: determinism, canonical placement, physics-like checks, captions."""

from __future__ import annotations

import numpy as np
import pytest

from datasets_build.synthetic.procedural import (ACTIONS, MIRROR_ACTION, Segment, caption_text, caption_tokens, describe,
                                       describe_segment, generate_motion, random_actions)
from datasets_build.motion.kinematics import features_to_joints, get_skeleton, joints_to_features, mirror_joints

UNIT = {"humanml3d": 1.0, "kitml": 547.0}  # dataset units per meter (KIT's release units, see module doc)
DATASETS = ["humanml3d", "kitml"]
UPOS = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X"}


def gen(actions, seed=0, dataset="humanml3d"):
    return generate_motion(actions, np.random.default_rng(seed), dataset)


def facing_yaw(joints: np.ndarray, dataset: str) -> np.ndarray:
    """Per-frame facing (degrees, atan2(x, z): 0 = +Z, +90 = +X) from the true hip/shoulder across."""
    r_hip, l_hip, r_sdr, l_sdr = get_skeleton(dataset).face_joints
    across = joints[:, r_hip] - joints[:, l_hip] + joints[:, r_sdr] - joints[:, l_sdr]
    return np.degrees(np.arctan2(across[:, 2], -across[:, 0]))  # forward = up x across = (az, 0, -ax)


def seeds_and_actions(n=12, dataset="humanml3d"):
    for seed in range(n):
        rng = np.random.default_rng(seed)
        yield seed, random_actions(rng), rng


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("dataset", DATASETS)
def test_deterministic_shapes_and_segments(dataset):
    skel = get_skeleton(dataset)
    for seed, actions, _ in seeds_and_actions(dataset=dataset):
        joints, segs = gen(actions, seed, dataset)
        again, segs2 = gen(actions, seed, dataset)
        assert np.array_equal(joints, again) and segs == segs2
        assert joints.dtype == np.float32 and np.isfinite(joints).all()
        assert joints.shape == (segs[-1].end + 1, skel.n_joints, 3)
        assert [s.action for s in segs] == actions
        assert segs[0].start == 0 and all(a.end == b.start for a, b in zip(segs, segs[1:]))
        assert all(s.end - s.start >= 2.0 * skel.fps - 1 for s in segs)  # each action >= ~2 s
        assert segs[-1].end < 200  # three actions fit HumanML3D's T < 200 (10 s at 20 fps)
    a, _ = gen(["walk forward", "jump"], 1, dataset)
    b, _ = gen(["walk forward", "jump"], 2, dataset)
    assert a.shape != b.shape or not np.array_equal(a, b)


@pytest.mark.parametrize("dataset", DATASETS)
def test_canonical_start_and_floor(dataset):
    """Frame 0: root at the xz origin, facing +Z; the lowest foot point is the floor (y = 0) and
    nothing goes below it.  So the representation's canonicalisation is the identity here."""
    skel, unit = get_skeleton(dataset), UNIT[dataset]
    feet = list(skel.feet_left + skel.feet_right)
    for seed, actions, _ in seeds_and_actions(dataset=dataset):
        joints, _ = gen(actions, seed, dataset)
        assert np.abs(joints[0, 0, [0, 2]]).max() < 1e-6 * unit
        assert abs(facing_yaw(joints[:1], dataset)[0]) < 1e-3
        assert abs(joints[..., 1].min()) < 1e-5 * unit and abs(joints[:, feet, 1].min()) < 1e-5 * unit


@pytest.mark.parametrize("dataset", DATASETS)
def test_features_round_trip(dataset):
    """joints -> features -> joints reproduces the generated frames 0..T-1 directly (no alignment
    needed: the motion is already on the floor, at the origin and facing +Z, see above)."""
    unit = UNIT[dataset]
    for seed, actions, _ in seeds_and_actions(8, dataset):
        joints, segs = gen(actions, seed, dataset)
        feats = joints_to_features(joints, dataset)
        assert feats.shape == (segs[-1].end, get_skeleton(dataset).feat_dim) and np.isfinite(feats).all()
        back = features_to_joints(feats, dataset)
        assert np.abs(back - joints[:-1]).max() < 1e-4 * unit  # measured <= 2e-8 m (float32)


# ----------------------------------------------------------------------------- walking
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("action,sign,dist", [("walk forward", 1, 1.2), ("walk backward", -1, 0.8)])
def test_walk_advances_with_alternating_planted_feet(dataset, action, sign, dist):
    skel, unit = get_skeleton(dataset), UNIT[dataset]
    feet = list(skel.feet_left + skel.feet_right)
    for seed in range(6):
        joints, _ = gen([action], seed, dataset)
        feats = joints_to_features(joints, dataset)
        root = features_to_joints(feats, dataset)[:, 0]
        assert sign * root[-1, 2] > dist * unit and abs(root[-1, 0]) < 1e-3 * unit  # meters along +-Z
        assert np.all(sign * np.diff(root[:, 2]) > -1e-6 * unit)  # never moves the wrong way
        contact = feats[:, -4:] > 0.5  # [l_ankle, l_toe, r_ankle, r_toe] (KIT: two foot joints)
        left, right = contact[:, :2].any(1), contact[:, 2:].any(1)
        single = np.where(left & ~right, 1, np.where(right & ~left, 2, 0))
        labels = single[single > 0]
        assert 1 + np.count_nonzero(np.diff(labels)) >= 4  # L, R, L, R ... single-support phases
        # Skating: horizontal foot speed (m/s) at flagged frames.  Where the flagged foot is also
        # on the floor (within 1 mm of its standing height, at both ends of the step) it is
        # exactly planted; over all flagged frames (HumanML3D's velocity threshold also flags slow
        # swing feet) the mean stays within real HumanML3D's (0.07-0.11 m/s on the shared files).
        step = joints[1:, feet] - joints[:-1, feet]
        speed = np.linalg.norm(step[..., [0, 2]], axis=-1) * skel.fps / unit
        low = joints[:, feet, 1] < joints[0, feet, 1] + 0.001 * unit
        on_floor = low[:-1] & low[1:]
        assert speed[contact & on_floor].max() < 0.01
        assert speed[contact].mean() < 0.15


# ----------------------------------------------------------------------------- turning
def test_real_data_convention(realdata):
    """In the release, frame 0 faces +Z and the person's left joints (SMPL 1 = left hip, 16 = left
    shoulder) are on +X: so turning toward one's left means turning toward +X (positive yaw)."""
    joints = np.load(realdata / "new_joints" / "012314.npy")
    assert abs(facing_yaw(joints[:1], "humanml3d")[0]) < 5
    r_hip, l_hip, r_sdr, l_sdr = get_skeleton("humanml3d").face_joints
    assert joints[0, l_hip, 0] > joints[0, r_hip, 0] + 0.05 and joints[0, l_sdr, 0] > joints[0, r_sdr, 0] + 0.2


@pytest.mark.parametrize("dataset", DATASETS)
def test_turns(dataset):
    unit = UNIT[dataset]
    for seed in range(6):
        left, _ = gen(["turn left"], seed, dataset)
        right, _ = gen(["turn right"], seed, dataset)
        yl, yr = facing_yaw(left, dataset), facing_yaw(right, dataset)
        assert 75 < yl[-1] < 105 and -105 < yr[-1] < -75  # drawn in [80, 100] degrees
        assert np.all(np.diff(yl) > -1e-3) and np.all(np.diff(yr) < 1e-3)  # monotonic
        assert np.abs(left[-1, 0, [0, 2]]).max() < 0.05 * unit  # in place: pivots within 5 cm
        # Through the representation: yaw = -2 * sum(root rotation velocity) (smoothed by the
        # sigma-20-frame facing filter, so only the sign and a lower bound are checked).
        for joints, sign in ((left, 1), (right, -1)):
            turned = -2 * np.degrees(joints_to_features(joints, dataset)[:, 0].sum())
            assert sign * turned > 45
        # Mirroring x turns a left turn into a right one (and matches the generated right turn).
        mirrored = mirror_joints(left, dataset)
        assert -105 < facing_yaw(mirrored, dataset)[-1] < -75
        assert np.abs(mirrored - right).max() < 1e-4 * unit  # same draws, symmetric rig: exact


# ----------------------------------------------------------------------------- other actions
@pytest.mark.parametrize("dataset", DATASETS)
def test_jump_sit_crouch(dataset):
    skel, unit = get_skeleton(dataset), UNIT[dataset]
    feet = list(skel.feet_left + skel.feet_right)
    joints, _ = gen(["jump"], 3, dataset)
    airborne = joints[:, feet, 1].min(1) > 0.05 * unit
    assert airborne.sum() >= 3 and joints[:, 0, 1].max() > joints[0, 0, 1] + 0.08 * unit
    assert np.abs(joints[-1] - joints[0]).max() < 1e-3 * unit  # lands where it took off
    joints, _ = gen(["sit down"], 3, dataset)
    assert joints[-1, 0, 1] < 0.75 * joints[0, 0, 1]  # ends seated: root lower by > 25 %
    assert np.abs(joints[-1, feet, 1] - joints[0, feet, 1]).max() < 1e-5 * unit  # feet stay down
    joints, _ = gen(["crouch"], 3, dataset)
    assert joints[:, 0, 1].min() < 0.75 * joints[0, 0, 1]
    assert np.abs(joints[-1, :, 1] - joints[0, :, 1]).max() < 1e-5 * unit  # back up


HANDS = {"humanml3d": ((16, 20), (17, 21)), "kitml": ((8, 10), (5, 7))}  # (shoulder, wrist) left, right
FEET = {"humanml3d": (10, 11), "kitml": (20, 15)}  # toe joints left, right


def check_wave(joints, dataset, side):
    (sh, wr), (osh, owr) = HANDS[dataset][side], HANDS[dataset][1 - side]
    assert (joints[:, wr, 1] - joints[:, sh, 1]).max() > 0.2 * UNIT[dataset]  # hand well above shoulder
    assert (joints[:, owr, 1] < joints[:, osh, 1]).all()  # the other hand stays low


def check_kick(joints, dataset, side):
    unit, toe, other = UNIT[dataset], FEET[dataset][side], FEET[dataset][1 - side]
    rel = joints[:, toe] - joints[:, 0]
    peak = np.argmax(joints[:, toe, 1])
    assert joints[peak, toe, 1] > 0.3 * unit and rel[peak, 2] > 0.3 * unit  # forward and up
    assert np.ptp(joints[:, other], axis=0).max() < 1e-4 * unit  # the support foot stays planted


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("side", [0, 1])
def test_wave_and_kick_and_their_mirrors(dataset, side):
    name = ("left", "right")[side]
    joints, _ = gen([f"wave {name} hand"], side, dataset)
    check_wave(joints, dataset, side)
    check_wave(mirror_joints(joints, dataset), dataset, 1 - side)
    joints, _ = gen([f"kick {name}"], side, dataset)
    check_kick(joints, dataset, side)
    check_kick(mirror_joints(joints, dataset), dataset, 1 - side)
    # Exactly symmetric rig and actions: the mirrored motion is the mirrored action's motion.
    twin, _ = gen([MIRROR_ACTION[f"kick {name}"]], side, dataset)
    assert np.abs(mirror_joints(joints, dataset) - twin).max() < 1e-4 * UNIT[dataset]


def test_action_rules():
    with pytest.raises(ValueError):
        gen(["sit down", "walk forward"])
    with pytest.raises(ValueError):
        gen(["fly"])
    assert set(MIRROR_ACTION) == set(ACTIONS) and all(MIRROR_ACTION[MIRROR_ACTION[a]] == a for a in ACTIONS)
    assert MIRROR_ACTION["turn left"] == "turn right" and MIRROR_ACTION["wave right hand"] == "wave left hand"
    assert MIRROR_ACTION["kick left"] == "kick right" and MIRROR_ACTION["jump"] == "jump"
    seen = set()
    for seed in range(300):
        acts = random_actions(np.random.default_rng(seed))
        assert 1 <= len(acts) <= 3 and set(acts) <= set(ACTIONS)
        assert "sit down" not in acts[:-1] and all(a != b for a, b in zip(acts, acts[1:]))
        seen.update(acts)
    assert seen == set(ACTIONS)
    for seed in range(10):  # chained actions meet in the neutral pose: no jumps at the boundaries
        joints, segs = gen(["walk forward", "turn left", "jump", "crouch", "sit down"], seed)
        step = np.linalg.norm(np.diff(joints, axis=0), axis=-1)  # m per frame
        assert step.max() < 0.3  # 6 m/s: the fastest joint is a walking swing foot
        assert all(step[s.start - 1:s.start + 1].max() < 0.03 for s in segs[1:])  # measured <= 0.022


# ----------------------------------------------------------------------------- captions
KEYS = {"walk forward": {"forward", "ahead"}, "walk backward": {"backward", "backwards", "back"},
        "turn left": {"turn", "pivot"}, "turn right": {"turn", "pivot"}, "jump": {"jump"},
        "wave left hand": {"wave"}, "wave right hand": {"wave"}, "kick left": {"kick"},
        "kick right": {"kick"}, "sit down": {"sit", "seat"}, "crouch": {"crouch", "squat"}}


def check_caption(tokens, segs):
    assert all(pos in UPOS for _, _, pos in tokens)
    assert all(lemma == lemma.lower() for _, lemma, _ in tokens)
    assert tokens[0][2] in {"DET", "PRON"}
    lemmas = [lemma for _, lemma, _ in tokens]
    at = -1
    for seg in segs:  # every action's key word, in time order
        at = next(i for i in range(at + 1, len(lemmas)) if lemmas[i] in KEYS[seg.action])
    sides = [w for w in lemmas if w in ("left", "right")]
    assert sides == [s for seg in segs for s in ("left", "right") if s in seg.action]


def test_captions_follow_the_segments():
    for seed, actions, rng in seeds_and_actions(60):
        _, segs = gen(actions, seed)
        tokens = describe(segs, rng)
        check_caption(tokens, segs)
        mirrored = [Segment(MIRROR_ACTION[s.action], s.start, s.end) for s in segs]
        check_caption(describe(mirrored, rng), mirrored)
        for seg in segs:
            check_caption(describe_segment(seg, rng), [seg])
    tokens = describe([Segment("walk forward", 0, 50), Segment("turn left", 50, 90)], np.random.default_rng(0))
    text = caption_text(tokens)
    assert text.islower() and " ," not in text and "left" in text
    assert all("/" in t and t.split("/")[0].isalpha() for t in caption_tokens(tokens).split())
    # "left" keeps its word as lemma (HumanML3D), NOUN/VERB carry lemmas ("walks" -> "walk")
    assert ("left" in caption_tokens(tokens)) and ("walk/VERB" in caption_tokens(tokens)
                                                   or "move/VERB" in caption_tokens(tokens)
                                                   or "step/NOUN" in caption_tokens(tokens))
    variety = {caption_text(describe([Segment("jump", 0, 40)], np.random.default_rng(s))) for s in range(30)}
    assert len(variety) >= 6
