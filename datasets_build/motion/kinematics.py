"""HumanML3D / KIT-ML motion representation: joints <-> 263-d (251-d) features.

Own vectorized implementation of the representation described in the HumanML3D paper and
release (``motion_representation`` / ``recover_from_ric``).  Every step works on whole
sequences (and leading batch dimensions) with numpy; only cumulative sums integrate over time.

Quaternions are ``(w, x, y, z)``.  Feature layout per frame (J joints):
``[root_rot_vel(1), root_lin_vel_xz(2), root_y(1), ric (J-1)*3, rot6d (J-1)*6, local_vel J*3,
contacts 4]`` -- see :meth:`Skeleton.blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "Skeleton",
    "SKELETONS",
    "HUMANML3D",
    "KITML",
    "get_skeleton",
    "features_to_joints",
    "joints_to_features",
    "select_body_joints",
    "mirror_joints",
]

# The reference smooths the per-frame facing direction with a Gaussian (sigma 20 frames,
# scipy's default truncation of 4 sigma, edge-replicating borders) before deriving root yaw.
FORWARD_SMOOTH_SIGMA = 20.0
_TRUNCATE = 4.0


@dataclass(frozen=True)
class Skeleton:
    """Static description of a dataset's skeleton and feature layout."""

    name: str
    n_joints: int
    feat_dim: int
    fps: float
    chains: tuple[tuple[int, ...], ...]
    raw_offsets: tuple[tuple[float, float, float], ...]
    feet_left: tuple[int, int]
    feet_right: tuple[int, int]
    face_joints: tuple[int, int, int, int]  # r_hip, l_hip, r_shoulder, l_shoulder
    left_joints: tuple[int, ...]  # mirror pairs: left_joints[i] <-> right_joints[i]
    right_joints: tuple[int, ...]

    def __post_init__(self) -> None:
        j = self.n_joints
        if 4 + (j - 1) * 9 + j * 3 + 4 != self.feat_dim:
            raise ValueError(f"{self.name}: feat_dim {self.feat_dim} inconsistent with {j} joints")
        if len(self.raw_offsets) != j or len(self.left_joints) != len(self.right_joints):
            raise ValueError(f"{self.name}: bad offsets or mirror pairs")
        children = sorted(c for chain in self.chains for c in chain[1:])
        if children != list(range(1, j)):
            raise ValueError(f"{self.name}: chains must reach every non-root joint exactly once")

    def blocks(self) -> dict[str, slice]:
        """Named slices of the feature vector."""
        j = self.n_joints
        ric, rot, vel = 4 + (j - 1) * 3, 4 + (j - 1) * 9, 4 + (j - 1) * 9 + j * 3
        return {
            "root_rot_vel": slice(0, 1),
            "root_lin_vel": slice(1, 3),
            "root_y": slice(3, 4),
            "ric": slice(4, ric),
            "rot6d": slice(ric, rot),
            "local_vel": slice(rot, vel),
            "contacts": slice(vel, vel + 4),
        }

    @property
    def yaw_joints(self) -> tuple[int, int, int, int]:
        """Joints for the per-frame root yaw.  The reference's IK unpacks the face joints with
        the hips swapped, so its "across" is (l_hip - r_hip) + (r_sdr - l_sdr): hips and
        shoulders partly cancel.  The release's features are built that way (checked on the
        real files: the other order misses by ~0.1 rad), so we keep it; only the frame-0
        alignment uses the true across direction."""
        r_hip, l_hip, sdr_r, sdr_l = self.face_joints
        return (l_hip, r_hip, sdr_r, sdr_l)

    @property
    def offsets(self) -> np.ndarray:
        return np.asarray(self.raw_offsets, dtype=np.float64)

    def ik_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """For joints 1..J-1: the bone's start joint, and whose rotation the local one is
        relative to (0 = root yaw).  The reference restarts every chain from the root yaw, even
        chains that branch off the spine (the arms), so that quirk is encoded here."""
        bone_parent = np.zeros(self.n_joints, dtype=np.intp)
        rot_parent = np.zeros(self.n_joints, dtype=np.intp)
        for chain in self.chains:
            for k in range(1, len(chain)):
                bone_parent[chain[k]] = chain[k - 1]
                rot_parent[chain[k]] = chain[k - 1] if k > 1 else 0
        return bone_parent[1:], rot_parent[1:]


_D, _U, _L, _R, _F = (0, -1, 0), (0, 1, 0), (1, 0, 0), (-1, 0, 0), (0, 0, 1)

HUMANML3D = Skeleton(
    name="humanml3d",
    n_joints=22,
    feat_dim=263,
    fps=20.0,
    chains=((0, 2, 5, 8, 11), (0, 1, 4, 7, 10), (0, 3, 6, 9, 12, 15),
            (9, 14, 17, 19, 21), (9, 13, 16, 18, 20)),
    # t2m raw offsets (SMPL order: pelvis, l_hip, r_hip, spine1, l_knee, r_knee, spine2, ...)
    raw_offsets=((0, 0, 0), _L, _R, _U, _D, _D, _U, _D, _D, _U, _F, _F, _U, _L, _R, _F,
                 _D, _D, _D, _D, _D, _D),
    feet_left=(7, 10),
    feet_right=(8, 11),
    face_joints=(2, 1, 17, 16),
    left_joints=(1, 4, 7, 10, 13, 16, 18, 20),
    right_joints=(2, 5, 8, 11, 14, 17, 19, 21),
)

KITML = Skeleton(
    name="kitml",
    n_joints=21,
    feat_dim=251,
    fps=12.5,
    chains=((0, 11, 12, 13, 14, 15), (0, 16, 17, 18, 19, 20), (0, 1, 2, 3, 4),
            (3, 5, 6, 7), (3, 8, 9, 10)),
    raw_offsets=((0, 0, 0), _U, _U, _U, _U, _L, _D, _D, _R, _D, _D, _L, _D, _D, _F, _F,
                 _R, _D, _D, _F, _F),
    feet_left=(19, 20),
    feet_right=(14, 15),
    face_joints=(11, 16, 5, 8),
    left_joints=(16, 17, 18, 19, 20, 8, 9, 10),
    right_joints=(11, 12, 13, 14, 15, 5, 6, 7),
)

SKELETONS: dict[str, Skeleton] = {"humanml3d": HUMANML3D, "kitml": KITML}


def get_skeleton(dataset: str | Skeleton) -> Skeleton:
    if isinstance(dataset, Skeleton):
        return dataset
    try:
        return SKELETONS[dataset.lower().replace("-", "").replace("_", "")]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SKELETONS)}") from None


# ----------------------------------------------------------------------------- quaternions
def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _qinv(q: np.ndarray) -> np.ndarray:
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def _qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v by unit quaternions q (broadcasting)."""
    qv = q[..., 1:]
    uv = np.cross(qv, v)
    return v + 2.0 * (q[..., :1] * uv + np.cross(qv, uv))


def _qbetween(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shortest-arc quaternion taking direction u to v: closed form, no trig."""
    w = np.sqrt((u * u).sum(-1) * (v * v).sum(-1)) + (u * v).sum(-1)
    q = np.concatenate([w[..., None], np.cross(u, v)], axis=-1)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    opposite = norm[..., 0] <= 1e-12 * (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-30)
    if np.any(opposite):  # u and -v: half a turn about any axis perpendicular to u (else 0/0 = NaN)
        u_opp = np.broadcast_to(u, q.shape[:-1] + (3,))[opposite]
        axis = np.cross(u_opp, [1.0, 0.0, 0.0])
        along_x = np.linalg.norm(axis, axis=-1) < 1e-6 * np.linalg.norm(u_opp, axis=-1)
        axis[along_x] = np.cross(u_opp[along_x], [0.0, 0.0, 1.0])
        q = q.copy()
        q[opposite] = np.concatenate([np.zeros((len(axis), 1)), axis], axis=-1)
        norm = np.linalg.norm(q, axis=-1, keepdims=True)
    return q / norm


def _quat_to_cont6d(q: np.ndarray) -> np.ndarray:
    """First two columns of the rotation matrix (the continuous 6D representation)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    s = 2.0 / (q * q).sum(-1)
    return np.stack([1 - s * (y * y + z * z), s * (x * y + z * w), s * (x * z - y * w),
                     s * (x * y - z * w), 1 - s * (x * x + z * z), s * (y * z + x * w)], axis=-1)


def _rot_y(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate vectors about +y by `angle` (radians; broadcast over v[..., 0])."""
    c, s = np.cos(angle), np.sin(angle)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([x * c + z * s, np.broadcast_to(y, (x * c).shape), z * c - x * s], axis=-1)


def _gaussian_smooth(x: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """1D Gaussian filter with edge replication (equivalent to scipy's mode='nearest')."""
    radius = int(_TRUNCATE * sigma + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    x = np.moveaxis(x, axis, -1)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(radius, radius)], mode="edge")
    return np.moveaxis(sliding_window_view(xp, 2 * radius + 1, axis=-1) @ w, -1, axis)


def _facing(pos: np.ndarray, face: tuple[int, int, int, int]) -> np.ndarray:
    """Horizontal facing direction = up x (hip across + shoulder across), unnormalized.

    Kept unnormalized on purpose: the reference normalizes `across` in 3D, crosses with up and
    only normalizes after smoothing, so frames are weighted by their horizontal component."""
    r_hip, l_hip, sdr_r, sdr_l = face
    across = (pos[..., r_hip, :] - pos[..., l_hip, :]) + (pos[..., sdr_r, :] - pos[..., sdr_l, :])
    across = across / np.linalg.norm(across, axis=-1, keepdims=True)
    # (0, 1, 0) x (ax, ay, az) = (az, 0, -ax)
    return np.stack([across[..., 2], np.zeros_like(across[..., 0]), -across[..., 0]], axis=-1)


_Z = np.array([0.0, 0.0, 1.0])
_QID = np.array([1.0, 0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------- public API
def select_body_joints(raw: np.ndarray, dataset: str = "humanml3d") -> np.ndarray:
    """Keep the body joints of a raw sequence [..., T, J_raw, 3] (SMPL 24 / SMPL-H 52 joints:
    the first 22 are the body in the same order)."""
    skel = get_skeleton(dataset)
    raw = np.asarray(raw)
    if raw.ndim < 3 or raw.shape[-1] != 3 or raw.shape[-2] < skel.n_joints:
        raise ValueError(f"expected [..., T, >={skel.n_joints}, 3] positions, got {raw.shape}")
    return raw[..., : skel.n_joints, :]


def mirror_joints(joints: np.ndarray, dataset: str = "humanml3d") -> np.ndarray:
    """Left/right mirror (the release's ``M`` motions): negate x and swap the side chains."""
    skel = get_skeleton(dataset)
    joints = np.asarray(joints)
    if joints.shape[-2] != skel.n_joints or joints.shape[-1] != 3:
        raise ValueError(f"expected [..., {skel.n_joints}, 3] positions, got {joints.shape}")
    perm = np.arange(skel.n_joints)
    perm[list(skel.left_joints)] = skel.right_joints
    perm[list(skel.right_joints)] = skel.left_joints
    out = joints[..., perm, :].copy()
    out[..., 0] *= -1
    return out


def features_to_joints(
    features: np.ndarray, dataset: str = "humanml3d", append_last_frame: bool = False
) -> np.ndarray:
    """Invert the representation: features [..., T, D] -> joint positions [..., T, J, 3].

    Root yaw is the running sum of the (half-angle) rotation velocities shifted by one frame;
    root x/z integrates the root-frame linear velocity rotated back to the world.  With
    ``append_last_frame`` the frame T (one past the features, which the extraction saw but
    did not emit) is rebuilt from the last local joint velocities, giving [..., T+1, J, 3].
    """
    skel = get_skeleton(dataset)
    f = np.asarray(features, dtype=np.float64)
    if f.shape[-1] != skel.feat_dim or f.ndim < 2:
        raise ValueError(f"expected [..., T, {skel.feat_dim}] features, got {f.shape}")
    b = skel.blocks()
    j = skel.n_joints
    rv = f[..., 0]
    # exclusive cumsum: yaw of frame t uses velocities of frames < t; stored values are half angles
    half = np.concatenate([np.zeros_like(rv[..., :1]), np.cumsum(rv[..., :-1], axis=-1)], axis=-1)
    back = -2.0 * half  # full angle of the inverse root rotation

    vel = np.zeros(f.shape[:-1] + (3,))
    vel[..., 1:, 0] = f[..., :-1, 1]
    vel[..., 1:, 2] = f[..., :-1, 2]
    root = np.cumsum(_rot_y(vel, back), axis=-2)
    root[..., 1] = f[..., 3]

    ric = f[..., b["ric"]].reshape(f.shape[:-1] + (j - 1, 3))
    body = _rot_y(ric, back[..., None])
    body[..., 0] += root[..., None, 0]
    body[..., 2] += root[..., None, 2]
    joints = np.concatenate([root[..., None, :], body], axis=-2)
    if append_last_frame:
        lv = f[..., -1, b["local_vel"]].reshape(f.shape[:-2] + (j, 3))
        last = joints[..., -1, :, :] + _rot_y(lv, back[..., -1, None])
        joints = np.concatenate([joints, last[..., None, :, :]], axis=-3)
    return joints


def joints_to_features(
    joints: np.ndarray, dataset: str = "humanml3d", feet_threshold: float = 0.002
) -> np.ndarray:
    """Forward representation: positions [..., T, J, 3] -> float32 features [..., T-1, D].

    Skeleton retargeting (the reference's uniform_skeleton) is not applied: feed retargeted
    joints (e.g. the release's ``new_joints``) to reproduce the release exactly.
    """
    skel = get_skeleton(dataset)
    pos = np.array(joints, dtype=np.float64)  # copy: we shift/rotate in place
    if pos.ndim < 3 or pos.shape[-2:] != (skel.n_joints, 3):
        raise ValueError(f"expected [..., T, {skel.n_joints}, 3] positions, got {pos.shape}")
    if pos.shape[-3] < 2:
        raise ValueError("need at least 2 frames (velocities use the next frame)")
    batch = pos.shape[:-3]

    # Canonical placement: on the floor, root xz of frame 0 at the origin, frame 0 facing +Z.
    pos[..., 1] -= pos[..., 1].min(axis=(-2, -1), keepdims=True)
    pos[..., [0, 2]] -= pos[..., :1, :1, [0, 2]]
    fwd0 = _facing(pos[..., 0, :, :], skel.face_joints)
    pos = _qrot(_qbetween(fwd0, np.broadcast_to(_Z, fwd0.shape))[..., None, None, :], pos)

    # Foot contacts: squared displacement to the next frame below threshold, per foot joint.
    feet = list(skel.feet_left) + list(skel.feet_right)
    step = pos[..., 1:, feet, :] - pos[..., :-1, feet, :]
    contacts = ((step * step).sum(-1) < feet_threshold).astype(np.float64)

    # Per-frame root yaw from the smoothed facing; frame 0 is pinned to identity like the reference.
    fwd = _gaussian_smooth(_facing(pos, skel.yaw_joints), FORWARD_SMOOTH_SIGMA, axis=-2)
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    r_rot = _qbetween(fwd, np.broadcast_to(_Z, fwd.shape))
    r_rot[..., 0, :] = _QID

    # Root: yaw velocity (arcsin of the relative quaternion's y = half angle), root-frame velocity.
    # Kept as in the reference although it has a quirk: when the smoothed facing crosses -Z the
    # quaternion (w >= 0) flips to its antipode and that one frame gets the wrong sign (seen in
    # the release, e.g. 000612 frame 142); the release's features and new_joints contain it.
    rel = _qmul(r_rot[..., 1:, :], _qinv(r_rot[..., :-1, :]))
    rot_vel = np.arcsin(np.clip(rel[..., 2:3], -1.0, 1.0))
    lin_vel = _qrot(r_rot[..., 1:, :], pos[..., 1:, 0, :] - pos[..., :-1, 0, :])[..., [0, 2]]
    root_y = pos[..., :-1, 0, 1:2]

    # Rotation-invariant coordinates: root-relative in xz, turned into the root's yaw frame.
    local = pos.copy()
    local[..., [0, 2]] -= pos[..., :1, [0, 2]]
    ric = _qrot(r_rot[..., None, :], local)[..., :-1, 1:, :]

    # IK in one shot: shortest-arc rotation of each rest offset onto its bone, made local to
    # the previous joint's global rotation (chain starts are relative to the root yaw).
    bone_parent, rot_parent = skel.ik_tables()
    bones = pos[..., 1:, :] - pos[..., bone_parent, :]
    bones = bones / np.linalg.norm(bones, axis=-1, keepdims=True)
    glob = _qbetween(np.broadcast_to(skel.offsets[1:], bones.shape), bones)
    glob_all = np.concatenate([r_rot[..., None, :], glob], axis=-2)
    loc = _qmul(_qinv(glob_all[..., rot_parent, :]), glob)
    rot6d = _quat_to_cont6d(loc[..., :-1, :, :])

    local_vel = _qrot(r_rot[..., :-1, None, :], pos[..., 1:, :, :] - pos[..., :-1, :, :])

    t1 = pos.shape[-3] - 1
    out = np.concatenate([
        rot_vel, lin_vel, root_y,
        ric.reshape(batch + (t1, -1)),
        rot6d.reshape(batch + (t1, -1)),
        local_vel.reshape(batch + (t1, -1)),
        contacts,
    ], axis=-1)
    return out.astype(np.float32)
