"""models.eval.metrics against straightforward re-implementations and hand-computed cases."""

import math

import numpy as np
import pytest

from models.eval import metrics as M


@pytest.fixture
def emb():
    rng = np.random.default_rng(7)
    text = rng.normal(size=(100, 16))
    motion = text + rng.normal(scale=1.5, size=(100, 16))
    return text, motion


# ----------------------------------------------------------------------------- plain versions
def plain_distance(a, b):
    return [[math.sqrt(sum((x - y) ** 2 for x, y in zip(u, v))) for v in b] for u in a]


def plain_r_precision(text, motion, order, batch_size=32, top_k=3):
    """Guo et al.'s loop: per batch, a text hits at k if its motion is among its k nearest."""
    hits, dist_sum, count = [0] * top_k, 0.0, 0
    for lo in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[lo:lo + batch_size]
        dist = plain_distance(text[idx], motion[idx])
        for i in range(batch_size):
            dist_sum += dist[i][i]
            ranked = sorted(range(batch_size), key=lambda j: dist[i][j])
            for k in range(top_k):
                hits[k] += i in ranked[:k + 1]
        count += batch_size
    return [h / count for h in hits], dist_sum / count


def plain_retrieval(sim):
    out = {}
    n = len(sim)
    for name, rows in (("t2m", sim), ("m2t", [list(c) for c in zip(*sim)])):
        ranks = []
        for i in range(n):
            better = sum(1 for j in range(n) if rows[i][j] > rows[i][i])
            ties = sum(1 for j in range(n) if j != i and rows[i][j] == rows[i][i])
            ranks.append(better + ties / 2)
        for k in (1, 2, 3, 5, 10):
            out[f"{name}/R@{k}"] = 100 * sum(r < k for r in ranks) / n
        out[f"{name}/MedR"] = float(np.median(ranks)) + 1
    return out


# ----------------------------------------------------------------------------- generation metrics
def test_distance_matrix(emb):
    text, motion = emb
    np.testing.assert_allclose(M.euclidean_distance_matrix(text[:20], motion[:30]),
                               plain_distance(text[:20], motion[:30]), atol=1e-6)
    self_distance = M.euclidean_distance_matrix(text[:3], text[:3])[1, 1]
    assert np.isfinite(self_distance) and self_distance < 1e-6  # rounding never gives NaN


def test_r_precision_and_mm_dist_match_the_plain_loop(emb):
    text, motion = emb
    top, mm = M.r_precision(text, motion)  # row order: 3 full batches, the last 4 pairs dropped
    ref_top, ref_mm = plain_r_precision(text, motion, np.arange(100))
    np.testing.assert_allclose(top, ref_top, atol=1e-6)
    assert abs(mm - ref_mm) < 1e-6
    top, mm = M.r_precision(text, motion, rng=np.random.default_rng(3))
    ref_top, ref_mm = plain_r_precision(text, motion, np.random.default_rng(3).permutation(100))
    np.testing.assert_allclose(top, ref_top, atol=1e-6)
    assert abs(mm - ref_mm) < 1e-6
    assert 0 < top[0] <= top[1] <= top[2] < 1


def test_r_precision_by_hand():
    text = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # text 0: own motion nearest (1 vs 13.8 and 28.3); text 1: motion 0 at 9 beats its own at 9.5 (second);
    # text 2: motions 0 (10.05) and 1 (10.01) beat its own at 36.06 (third)
    motion = np.array([[1.0, 0.0], [10.0, 9.5], [-20.0, -20.0]])
    top, mm = M.r_precision(text, motion, batch_size=3, top_k=3)
    np.testing.assert_allclose(top, [1 / 3, 2 / 3, 1.0])
    assert mm == pytest.approx((1.0 + 9.5 + math.hypot(20, 30)) / 3)
    assert M.matching_score(text, motion) == pytest.approx(mm)
    with pytest.raises(ValueError, match="full batch"):
        M.r_precision(text, motion, batch_size=32)


def test_fid_matches_the_reference_formula(emb):
    linalg = pytest.importorskip("scipy.linalg")
    text, motion = emb
    s1, s2 = np.cov(text, rowvar=False), np.cov(motion, rowvar=False)
    diff = text.mean(0) - motion.mean(0)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert M.fid(text, motion) == pytest.approx(expected, abs=1e-6)
    assert M.fid(text, text) == pytest.approx(0.0, abs=1e-6)


def test_fid_by_hand():
    # 1-D: (m1 - m2)^2 + v1 + v2 - 2 sqrt(v1 v2), unbiased variances 2 and 8
    assert M.fid(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(4 + 2 + 8 - 2 * 4)
    # a pure shift by (3, 4) of the same set: ||shift||^2
    x = np.random.default_rng(0).normal(size=(50, 2))
    assert M.fid(x, x + [3.0, 4.0]) == pytest.approx(25.0, abs=1e-9)


def test_diversity_and_multimodality_match_plain_loops(emb):
    text, _ = emb
    rng = np.random.default_rng(5)
    pairs = (rng.choice(100, 60, replace=False), rng.choice(100, 60, replace=False))
    plain = sum(math.dist(text[a], text[b]) for a, b in zip(*pairs)) / 60
    assert M.diversity(text, pairs=pairs) == pytest.approx(plain, abs=1e-6)
    # default draws: two index sets without replacement from the given generator
    draw = np.random.default_rng(9)
    expected_pairs = (draw.choice(100, 60, replace=False), draw.choice(100, 60, replace=False))
    assert M.diversity(text, 60, rng=np.random.default_rng(9)) == pytest.approx(
        M.diversity(text, pairs=expected_pairs), abs=1e-12)
    with pytest.raises(ValueError, match="more than 300"):
        M.diversity(text)

    gen = np.random.default_rng(1).normal(size=(7, 30, 5))
    first, second = np.random.default_rng(2).choice(30, 10, replace=False), np.random.default_rng(3).choice(
        30, 10, replace=False)
    plain = sum(math.dist(gen[t, a], gen[t, b]) for t in range(7) for a, b in zip(first, second)) / 70
    assert M.multimodality(gen, pairs=(first, second)) == pytest.approx(plain, abs=1e-6)
    assert M.multimodality(gen, 10, rng=np.random.default_rng(0)) > 0
    with pytest.raises(ValueError, match="more than 10"):
        M.multimodality(gen[:, :10])


def test_diversity_and_multimodality_by_hand():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert M.diversity(points, pairs=(np.array([0, 1]), np.array([1, 1]))) == pytest.approx(2.5)
    gen = np.array([[[0.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [4.0, 5.0]]])  # 2 texts x 2 generations
    assert M.multimodality(gen, pairs=(np.array([0]), np.array([1]))) == pytest.approx((2.0 + 5.0) / 2)


def test_repetitions_and_interval():
    mean, half = M.mean_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and half == pytest.approx(1.96 * math.sqrt(1.25) / 2)
    summary = M.repeat(lambda rep: {"a": float(rep), "b": 1.0}, reps=20)
    assert summary["a"] == pytest.approx((9.5, 1.96 * np.std(np.arange(20)) / math.sqrt(20)))
    assert summary["b"] == (1.0, 0.0)
    vec_mean, vec_half = M.mean_interval(np.array([[1.0, 0.0], [3.0, 0.0]]))
    assert vec_mean.tolist() == [2.0, 0.0] and vec_half.tolist() == pytest.approx([1.96 / math.sqrt(2), 0.0])


# ----------------------------------------------------------------------------- retrieval
def test_retrieval_metrics_match_the_plain_ranking(emb):
    text, motion = emb
    sim = text @ motion.T
    ours = M.retrieval_metrics(sim)
    plain = plain_retrieval(sim.tolist())
    assert ours.keys() == plain.keys()
    for key in plain:
        assert ours[key] == pytest.approx(plain[key], abs=1e-6), key


def test_retrieval_by_hand_with_ties():
    sim = np.array([[0.9, 0.1, 0.9],
                    [0.8, 0.5, 0.2],
                    [0.0, 0.0, 1.0]])
    # t2m ranks (0-based): row 0 ties with one other -> 0.5; row 1: one better -> 1; row 2: 0
    # m2t (columns): col 0: 0.9 best -> 0; col 1: 0.5 best -> 0; col 2: 1.0 best (0.9 lower) -> 0
    out = M.retrieval_metrics(sim)
    assert out["t2m/R@1"] == pytest.approx(200 / 3) and out["t2m/R@2"] == 100.0
    assert out["t2m/MedR"] == 1.5 and out["m2t/R@1"] == 100.0 and out["m2t/MedR"] == 1.0
    with pytest.raises(ValueError, match="square"):
        M.retrieval_metrics(sim[:2])


def test_retrieval_protocols(emb):
    text, motion = emb
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    assert M.retrieval_all(text, motion) == pytest.approx(M.retrieval_metrics(unit(text) @ unit(motion).T))
    rng_order = np.random.default_rng(4).permutation(100)
    batches = [rng_order[i:i + 32] for i in (0, 32, 64)]
    per_batch = [plain_retrieval((unit(text[b]) @ unit(motion[b]).T).tolist()) for b in batches]
    ours = M.retrieval_in_batches(text, motion, 32, rng=np.random.default_rng(4))
    for key in ours:
        assert ours[key] == pytest.approx(np.mean([p[key] for p in per_batch]), abs=1e-6), key
    # a perfect embedding scores perfectly under both protocols
    assert M.retrieval_all(text, text)["t2m/R@1"] == 100.0
    assert M.retrieval_in_batches(text, text)["m2t/MedR"] == 1.0
