"""Hybrid retrieval (exactness against brute force, exclusions, length term, reference mode), the
text feature cache, the dataset steps, ReMoDiffuse's npz export, and the rareness helpers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from conftest import run_build
from datasets_build.synthetic.noise_release import write_synthetic_release
from processors.base import MissingDependency
from processors.neighbours.rareness import Rareness, balanced_mean, plot_rareness, tail_mean
from datasets_build.exports.remodiffuse import export_remodiffuse
from processors.neighbours.hybrid import (
    RetrievalNeighbours, hybrid_topk, mirror_id, motion_groups, read_annotations, verified_topk,
)
from processors.text.features import TextFeatures


def brute_force(q, ql, d, dl, k, lam, groups=None, db_groups=None, skip=False):
    """The definition, in float64 over the whole score matrix."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    rel = np.abs(dl[None] - ql[:, None]) / np.maximum(dl[None], ql[:, None])
    s = (qn.astype(np.float64) @ dn.T.astype(np.float64)) * np.exp(-lam * rel)
    if groups is not None:
        groups = groups.reshape(len(q), -1)
        for e in range(groups.shape[1]):
            s[(db_groups[None] == groups[:, e : e + 1]) & (groups[:, e : e + 1] >= 0)] = -np.inf
    s[np.broadcast_to(skip, (len(q),))[:, None] & (dl[None] == ql[:, None])] = -np.inf
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(s, idx, 1)
    idx[~np.isfinite(scores)] = -1
    return idx, scores


def random_case(seed, queries=60, rows=150, dim=16):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((queries, dim)).astype(np.float32)
    d = rng.standard_normal((rows, dim)).astype(np.float32)
    ql, dl = rng.integers(40, 80, queries), rng.integers(40, 80, rows)
    db_groups = rng.integers(0, 40, rows)
    groups = np.stack([rng.integers(0, 40, queries), np.where(rng.random(queries) < 0.5, rng.integers(0, 40, queries), -1)], 1)
    return rng, q, ql, d, dl, groups, db_groups


@pytest.mark.parametrize("seed,k,lam,block", [
    (0, 1, 0.0, None), (1, 2, 0.1, None), (2, 2, 0.1, 1), (3, 5, 1.0, 7), (4, 3, 5.0, 64), (5, 200, 0.1, 13),
])
def test_topk_equals_brute_force(seed, k, lam, block):
    rng, q, ql, d, dl, groups, db_groups = random_case(seed)
    skip = rng.random(len(q)) < 0.3
    for kwargs, reference in [
        ({}, brute_force(q, ql, d, dl, k, lam)),
        ({"query_groups": groups, "db_groups": db_groups, "skip_equal_length": skip},
         brute_force(q, ql, d, dl, k, lam, groups, db_groups, skip)),
    ]:
        idx, scores = hybrid_topk(q, ql, d, dl, k, lam, block_size=block, **kwargs)
        want_idx, want_scores = reference
        assert idx.shape == scores.shape == (len(q), k) and idx.dtype == np.int64 and scores.dtype == np.float32
        m = min(k, len(d))
        np.testing.assert_array_equal(idx[:, :m], want_idx[:, :m])
        finite = np.isfinite(want_scores[:, :m])
        np.testing.assert_allclose(scores[:, :m][finite], want_scores[:, :m][finite], rtol=1e-5, atol=1e-6)
        assert (idx[:, :m][~finite] == -1).all() and (idx[:, m:] == -1).all()


def test_candidate_search_backend_is_exact_and_faiss_is_optional():
    rng, q, ql, d, dl, groups, db_groups = random_case(7)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)

    def search(rows, m):  # what faiss' IndexFlatIP.search returns
        cos = qn[rows] @ dn.T
        top = np.argsort(-cos, axis=1)[:, :m]
        return np.take_along_axis(cos, top, 1), top

    for k, lam in [(2, 0.1), (4, 3.0)]:
        idx, _ = verified_topk(search, ql, dl, len(d), k, lam, groups, db_groups, np.zeros(len(q), bool), first=2)
        np.testing.assert_array_equal(idx, brute_force(q, ql, d, dl, k, lam, groups, db_groups)[0])
    if importlib.util.find_spec("faiss") is None:
        with pytest.raises(MissingDependency, match="pip install faiss-cpu"):
            hybrid_topk(q, ql, d, dl, backend="faiss")


def test_own_motion_and_mirror_are_excluded():
    ids = ["000001", "M000001", "000002", "000003"]
    features = np.array([[1, 0, 0], [1, 0.01, 0], [0.9, 0.3, 0], [0, 1, 0]], np.float32)
    lengths = np.full(4, 100)
    groups, db_groups = motion_groups(["000001"], ids, exclude_mirror=True)
    idx, _ = hybrid_topk(features[:1], lengths[:1], features, lengths, k=2, query_groups=groups, db_groups=db_groups)
    assert [ids[i] for i in idx[0]] == ["000002", "000003"]
    groups, db_groups = motion_groups(["000001"], ids, exclude_mirror=False)
    idx, _ = hybrid_topk(features[:1], lengths[:1], features, lengths, k=2, query_groups=groups, db_groups=db_groups)
    assert [ids[i] for i in idx[0]] == ["M000001", "000002"]
    assert mirror_id("M000001") == "000001" and mirror_id("000001") == "M000001"


def test_length_term_reorders_and_scales():
    query = np.array([[1.0, 0.0]], np.float32)
    # A: closer text, length 2x the query's; B: a little further, same length.
    db = np.array([[0.95, np.sqrt(1 - 0.95**2)], [0.9, np.sqrt(1 - 0.9**2)]], np.float32)
    lengths = np.array([200, 100])
    idx, scores = hybrid_topk(query, [100], db, lengths, k=2, lam=0.0)
    assert idx[0].tolist() == [0, 1]
    idx, scores = hybrid_topk(query, [100], db, lengths, k=2, lam=0.1)
    assert idx[0].tolist() == [0, 1]  # 0.95 * exp(-0.1 * 100 / 200) = 0.9037 > 0.9
    np.testing.assert_allclose(scores[0], [0.95 * np.exp(-0.05), 0.9], rtol=1e-6)
    idx, scores = hybrid_topk(query, [100], db, lengths, k=2, lam=1.0)
    assert idx[0].tolist() == [1, 0]  # 0.95 * exp(-1 * 100 / 200) = 0.576 < 0.9
    np.testing.assert_allclose(scores[0], [0.9, 0.95 * np.exp(-0.5)], rtol=1e-6)
    idx, scores = hybrid_topk(query, [200], db, lengths, k=1, lam=1.0)  # symmetric in the two lengths
    np.testing.assert_allclose(scores[0], [0.95], rtol=1e-6)


def test_reference_mode_skips_equal_lengths_instead_of_ids():
    query = np.array([[1.0, 0.0]], np.float32)
    db = np.array([[1.0, 0.0], [0.99, 0.14], [0.5, 0.86]], np.float32)
    lengths = np.array([100, 100, 120])  # row 0 is the query's own motion
    idx, _ = hybrid_topk(query, [100], db, lengths, k=2, skip_equal_length=True)
    assert idx[0].tolist() == [2, -1]  # every equal-length candidate is gone, own or not
    idx, _ = hybrid_topk(query, [100], db, lengths, k=2, query_groups=[0], db_groups=np.array([0, 1, 2]))
    assert idx[0].tolist() == [1, 2]


# ----------------------------------------------------------------------------------------------
# Builds


@pytest.fixture(scope="module")
def minilm_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    source = write_synthetic_release(root / "release", "humanml3d", 20, seed=3)
    out = root / "built"
    features = TextFeatures(encoder="minilm", cache_dir=str(out / ".cache" / "text_features"))
    steps = (RetrievalNeighbours(k=2), Rareness())
    first = run_build(source, out, processors=(features,), steps=steps)
    return source, out, features, steps, first


def _unique_captions(out: Path) -> set[str]:
    splits = datasets.load_from_disk(str(out))
    return {a["caption"] for split in splits.values() for anns in split["annotations"] for a in anns}


def test_text_cache_computes_only_new_captions(minilm_build):
    source, out, features, steps, first = minilm_build
    assert first.counters["text_features"]["texts_computed"] == len(_unique_captions(out))
    again = run_build(source, out, processors=(features,), steps=steps, overwrite=True)
    assert again.counters["text_features"]["texts_computed"] == 0
    assert again.counters["text_features"]["texts_cached"] > 0
    text = source / "texts" / "000000.txt"
    lines = text.read_text().splitlines()
    lines[0] = "a person juggles three red balls#a/DET person/NOUN juggle/VERB three/NUM red/ADJ ball/NOUN#0.0#0.0"
    text.write_text("\n".join(lines) + "\n")
    changed = run_build(source, out, processors=(features,), steps=steps)
    assert changed.counters["text_features"]["texts_computed"] == 1
    row = datasets.load_from_disk(str(out))["train"][0]
    assert row["annotations"][0]["caption"].startswith("a person juggles")
    assert len(row["text_features"]) == len(row["annotations"]) and len(row["text_features"][0]) == 384


def test_neighbour_and_rareness_datasets(minilm_build):
    _, out, _, _, _ = minilm_build
    splits = datasets.load_from_disk(str(out))
    neighbours = datasets.load_from_disk(str(out / "retrieval_neighbours"))
    train = read_annotations(splits["train"])
    train_keys = dict(zip(train.keys, train.lengths))
    for split in ("train", "val", "test"):
        rows = neighbours[split]
        assert len(rows) == sum(len(a) for a in splits[split]["annotations"])
        for row in rows:
            assert 1 <= len(row["neighbours"]) <= 2 and row["scores"] == sorted(row["scores"], reverse=True)
            for n in row["neighbours"]:
                assert f"{n['id']}#{n['annotation']}" in train_keys  # the database is the training set
                assert n["id"] not in (row["id"], mirror_id(row["id"]))
    rareness = datasets.load_from_disk(str(out / "rareness"))
    assert set(rareness) == {"val", "test"}
    values = np.array(rareness["test"]["rareness"])
    assert len(values) == len(neighbours["test"]) and ((values >= 0) & (values <= 1)).all()
    same = [r for r in rareness["test"] if r["caption"] == r["nearest_caption"]]
    assert all(r["rareness"] < 1e-5 for r in same)  # a caption also in train is not rare
    assert (out / "rareness" / "rareness.png").stat().st_size > 0
    assert json.loads((out / "rareness" / "summary.json").read_text())["test"]["count"] == len(values)


def test_reference_mode_step_on_a_build(minilm_build, tmp_path):
    _, out, _, _, _ = minilm_build
    splits = datasets.load_from_disk(str(out))
    RetrievalNeighbours(reference_mode=True).run(splits, tmp_path / "ref", tmp_path / "cache")
    rows = datasets.load_from_disk(str(tmp_path / "ref"))["train"]
    train = read_annotations(splits["train"])
    length_of = dict(zip(train.keys, train.lengths))
    mirrors_found = 0
    for row in rows:  # training queries: never an equal-length candidate, but their mirror may come back
        assert all(length_of[f"{n['id']}#{n['annotation']}"] != row["length"] for n in row["neighbours"])
        mirrors_found += any(n["id"] == mirror_id(row["id"]) for n in row["neighbours"])
    assert mirrors_found > 0  # mirrored sub-clips have other lengths than their whole motion


@pytest.fixture(scope="module")
def clip_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    source = write_synthetic_release(root / "release", "humanml3d", 5, seed=1, captions=(1, 2))
    out = root / "built"
    features = TextFeatures(encoder="clip-random", token_features=True, cache_dir=str(out / ".cache" / "tf"))
    run_build(source, out, processors=(features,))
    return root, out


def test_export_remodiffuse_npz(clip_build):
    root, out = clip_build
    splits = datasets.load_from_disk(str(out))
    assert splits["train"].features["text_token_features"].feature.feature.feature.dtype == "float16"
    with pytest.raises(ValueError, match="ReMoDiffuse needs CLIP"):
        export_remodiffuse(out, root / "db.npz")  # clip-random is refused unless asked for
    info = export_remodiffuse(out, root / "db.npz", require_clip=False, index_k=3)
    data = np.load(root / "db.npz")
    n = sum(len(a) for a in splits["train"]["annotations"])
    m = sum(len(a) for a in splits["test"]["annotations"])
    assert info["entries"] == n and info["test_entries"] == m
    expected = {"text_features": ((n, 512), np.float32), "motions": ((n, 196, 263), np.float32),
                "m_lengths": ((n,), np.int64), "clip_seq_features": ((n, 77, 512), np.float32),
                "train_indexes": ((n, 3), np.int64), "test_indexes": ((m, 3), np.int64)}
    for key, (shape, dtype) in expected.items():
        assert data[key].shape == shape and data[key].dtype == dtype, key
    assert data["captions"].shape == (n,) and data["captions"].dtype.kind == "U"
    train = read_annotations(splits["train"])
    np.testing.assert_array_equal(data["text_features"], train.features)
    assert data["captions"].tolist() == train.captions
    # Entry 0: the first annotation's frames, zero-padded past its length.
    motion = np.asarray(splits["train"][0]["motion"], np.float32)
    length = int(data["m_lengths"][0])
    np.testing.assert_array_equal(data["motions"][0, :length], motion[train.starts[0] : train.starts[0] + length])
    assert not data["motions"][0, length:].any()
    assert ((data["train_indexes"] >= 0) & (data["train_indexes"] < n)).all()
    own = np.array([i.lstrip("M") for i in train.ids])
    assert (own[data["train_indexes"]] != own[:, None]).all()  # never the motion or its mirror


def test_export_needs_clip_shaped_features(minilm_build, tmp_path):
    _, out, _, _, _ = minilm_build
    with pytest.raises(ValueError, match="minilm"):
        export_remodiffuse(out, tmp_path / "db.npz")
    with pytest.raises(ValueError, match="512-d"):
        export_remodiffuse(out, tmp_path / "db.npz", require_clip=False)


# ----------------------------------------------------------------------------------------------
# Rareness helpers


def test_tail_and_balanced_means_on_hand_made_values(tmp_path):
    rareness = np.arange(100) / 100.0  # 0.00 .. 0.99
    metric = np.arange(100, dtype=float)
    assert tail_mean(metric, rareness, 0.05) == pytest.approx(np.mean([95, 96, 97, 98, 99]))
    assert tail_mean([1.0, 5.0, 3.0], [0.1, 0.9, 0.5], 0.1) == 5.0  # at least one prompt
    # Two clusters: 9 common prompts with metric 1, one rare prompt with metric 10.
    r = np.array([0.0] * 9 + [1.0])
    m = np.array([1.0] * 9 + [10.0])
    assert balanced_mean(m, r, bins=100) == pytest.approx(5.5)  # two non-empty bins, equally weighted
    assert balanced_mean(m, r, bins=1) == pytest.approx(m.mean())
    assert balanced_mean([2.0, 4.0], [0.3, 0.3]) == pytest.approx(3.0)  # all in one bin
    with pytest.raises(ValueError, match="non-finite"):
        balanced_mean([1.0, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="as many"):
        tail_mean([1.0], [0.1, 0.2])
    png = plot_rareness({"val": r, "test": rareness}, tmp_path / "plot.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_an_empty_query_split_has_no_neighbours_and_no_error():
    """A tiny build's val split holds no annotation: its features come back as shape (0, 0)."""
    db = np.eye(3, 4, dtype=np.float32)
    idx, scores = hybrid_topk(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), db, np.array([40, 50, 60]), k=2)
    assert idx.shape == (0, 2) and scores.shape == (0, 2)
