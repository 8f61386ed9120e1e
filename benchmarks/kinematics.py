"""Benchmark: vectorized joints_to_features vs a plain frame-by-frame loop.

The loop version below is written for comparison only: it walks the frames one by one the
way the reference pipeline's helpers are usually (re)written, with per-frame quaternions.

Run from the repository root:  python benchmarks/kinematics.py [--frames 200] [--repeat 20]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from datasets_build.motion.kinematics import HUMANML3D, Skeleton, joints_to_features, select_body_joints

RAW = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "humanml3d" / "joints" / "000021.npy"


# ----------------------------------------------------------------- per-frame reference code
def _qmul(a, b):
    return np.array([a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
                     a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
                     a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
                     a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0]])


def _qinv(q):
    return np.array([q[0], -q[1], -q[2], -q[3]])


def _qrot(q, v):
    return _qmul(_qmul(q, np.array([0.0, v[0], v[1], v[2]])), _qinv(q))[1:]


def _qbetween(u, v):
    q = np.concatenate([[math.sqrt(u @ u * (v @ v)) + u @ v], np.cross(u, v)])
    return q / np.linalg.norm(q)


def _cont6d(q):
    w, x, y, z = q
    m = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return np.concatenate([m[:, 0], m[:, 1]])


def _forward(p, a, b, c, d):
    across = (p[a] - p[b]) + (p[c] - p[d])
    return np.cross([0.0, 1.0, 0.0], across / np.linalg.norm(across))


def loop_joints_to_features(joints: np.ndarray, skel: Skeleton = HUMANML3D,
                            feet_threshold: float = 0.002) -> np.ndarray:
    pos = np.array(joints, dtype=np.float64)
    T, J = pos.shape[0], skel.n_joints
    zaxis = np.array([0.0, 0.0, 1.0])
    floor = min(pos[t, j, 1] for t in range(T) for j in range(J))
    origin = pos[0, 0].copy()
    r_hip, l_hip, sdr_r, sdr_l = skel.face_joints
    q0 = None
    for t in range(T):
        pos[t, :, 1] -= floor
        pos[t, :, 0] -= origin[0]
        pos[t, :, 2] -= origin[2]
        if q0 is None:
            f0 = _forward(pos[0], r_hip, l_hip, sdr_r, sdr_l)
            q0 = _qbetween(f0 / np.linalg.norm(f0), zaxis)
        for j in range(J):
            pos[t, j] = _qrot(q0, pos[t, j])

    # facing per frame (reference IK order: hips swapped), Gaussian smoothed frame by frame
    fwd = np.array([_forward(pos[t], l_hip, r_hip, sdr_r, sdr_l) for t in range(T)])
    radius = int(4 * 20.0 + 0.5)
    weights = [math.exp(-0.5 * (k / 20.0) ** 2) for k in range(-radius, radius + 1)]
    total = sum(weights)
    r_rot = []
    for t in range(T):
        acc = np.zeros(3)
        for k, w in zip(range(-radius, radius + 1), weights):
            acc += w / total * fwd[min(max(t + k, 0), T - 1)]
        r_rot.append(_qbetween(acc / np.linalg.norm(acc), zaxis) if t else np.array([1.0, 0, 0, 0]))

    offsets = skel.offsets
    rows = []
    for t in range(T - 1):
        rel = _qmul(r_rot[t + 1], _qinv(r_rot[t]))
        row = [math.asin(max(-1.0, min(1.0, rel[2])))]
        v = _qrot(r_rot[t + 1], pos[t + 1, 0] - pos[t, 0])
        row += [v[0], v[2], pos[t, 0, 1]]
        for j in range(1, J):
            d = pos[t, j] - np.array([pos[t, 0, 0], 0.0, pos[t, 0, 2]])
            row += list(_qrot(r_rot[t], d))
        quats = [None] * J
        for chain in skel.chains:
            parent_rot = r_rot[t]
            for k in range(1, len(chain)):
                bone = pos[t, chain[k]] - pos[t, chain[k - 1]]
                glob = _qbetween(offsets[chain[k]], bone / np.linalg.norm(bone))
                quats[chain[k]] = _qmul(_qinv(parent_rot), glob)
                parent_rot = glob
        for j in range(1, J):
            row += list(_cont6d(quats[j]))
        for j in range(J):
            row += list(_qrot(r_rot[t], pos[t + 1, j] - pos[t, j]))
        for j in list(skel.feet_left) + list(skel.feet_right):
            step = pos[t + 1, j] - pos[t, j]
            row.append(1.0 if step @ step < feet_threshold else 0.0)
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


# ----------------------------------------------------------------- benchmark
def sample_sequence(frames: int) -> tuple[np.ndarray, str]:
    """000021 body joints linearly resampled to `frames`, or a synthetic turning walk."""
    if RAW.exists():
        body = select_body_joints(np.load(RAW))
        src = np.linspace(0, len(body) - 1, frames)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, len(body) - 1)
        w = (src - lo)[:, None, None]
        return (1 - w) * body[lo] + w * body[hi], f"{RAW.name} resampled {len(body)}->{frames}"
    rng = np.random.default_rng(0)
    pose = rng.normal(scale=0.3, size=(HUMANML3D.n_joints, 3)) + [0, 1, 0]
    ang = np.linspace(0, 2 * np.pi, frames)
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    seq = np.stack([pose[:, 0] * c + pose[:, 2] * s, np.broadcast_to(pose[:, 1], (frames, len(pose))),
                    pose[:, 2] * c - pose[:, 0] * s], -1)
    return seq + np.cumsum(rng.normal(scale=0.01, size=(frames, 1, 3)), 0), "synthetic"


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()

    joints, label = sample_sequence(args.frames)
    fast = joints_to_features(joints)
    slow = loop_joints_to_features(joints)
    diff = float(np.abs(fast - slow).max())
    assert fast.shape == slow.shape == (args.frames - 1, HUMANML3D.feat_dim), (fast.shape, slow.shape)
    assert diff < 1e-4, f"implementations disagree: max abs diff {diff:.3g}"

    t_fast = best_time(lambda: joints_to_features(joints), args.repeat)
    t_slow = best_time(lambda: loop_joints_to_features(joints), max(1, args.repeat // 10))
    print(f"input: {label}, {args.frames} frames x {HUMANML3D.n_joints} joints")
    print(f"max abs diff (vectorized vs loop): {diff:.2e}")
    print(f"vectorized joints_to_features: {t_fast * 1e3:9.2f} ms  (best of {args.repeat})")
    print(f"per-frame loop reference:      {t_slow * 1e3:9.2f} ms  (best of {max(1, args.repeat // 10)})")
    print(f"speed-up: {t_slow / t_fast:.1f}x")


if __name__ == "__main__":
    main()
