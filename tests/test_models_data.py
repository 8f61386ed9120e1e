"""models.training.data: reference filters and crops, zero-copy reads, statistics, pickling and workers."""

import pickle
import random

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.noise_release import write_synthetic_release
from models.training.data import DataOptions, MotionDataset, Normalizer, collate, compute_stats, make_loader

LINE = "a person walks#a/DET person/NOUN walk/VERB#{}#{}"
# lengths around the filters (HumanML3D 40 <= T < 200) and sub-clips of 39, 40, 199 frames
CRAFTED = {
    "100000": (39, [LINE.format(0.0, 0.0)]),
    "100001": (40, [LINE.format("nan", 0.0), LINE.format(0.0, 1.95)]),
    "100002": (199, [LINE.format(0.0, 0.0), LINE.format(0.0, 1.95), LINE.format(0.0, 2.0), LINE.format(0.05, 10.0),
                     LINE.format(1.0, 2.0)]),
    "100003": (200, [LINE.format(0.0, 0.0), LINE.format(1.0, 5.0)]),
    "100004": (43, ["the man jumps#the/DET man/NOUN jump/VERB#0.0#0.0", LINE.format(0.0, 0.0),
                    "someone waves#someone/PRON wave/VERB#0.0#0.0"]),
}


def reference_samples(root, ids, min_len=40, max_len=200, fps=20):
    """The reference Text2MotionDataset loop, straight from the release files:
    (kind, id, start, end, captions) per sample."""
    out = []
    for name in ids:
        motion = np.load(root / "new_joint_vecs" / f"{name}.npy")
        if not min_len <= len(motion) < max_len:
            continue
        whole = []
        for line in (root / "texts" / f"{name}.txt").read_text().splitlines():
            caption, _, f_tag, to_tag = line.strip().split("#")
            f_tag = 0.0 if np.isnan(float(f_tag)) else float(f_tag)
            to_tag = 0.0 if np.isnan(float(to_tag)) else float(to_tag)
            if f_tag == 0.0 and to_tag == 0.0:
                whole.append(caption)
                continue
            clip = motion[int(f_tag * fps):int(to_tag * fps)]
            if min_len <= len(clip) < max_len:
                out.append(("sub", name, int(f_tag * fps), int(f_tag * fps) + len(clip), (caption,)))
        if whole:
            out.append(("whole", name, 0, len(motion), tuple(whole)))
    return sorted(out)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models-data")
    root = write_synthetic_release(tmp / "rel", num_motions=4, mirrors=False, seed=3)
    rng = np.random.default_rng(0)
    for motion_id, (length, lines) in CRAFTED.items():
        np.save(root / "new_joint_vecs" / f"{motion_id}.npy", rng.normal(size=(length, 263)).astype(np.float32))
        np.save(root / "new_joints" / f"{motion_id}.npy", np.zeros((length, 22, 3), np.float32))
        (root / "texts" / f"{motion_id}.txt").write_text("\n".join(lines) + "\n")
    ids = [line for line in (root / "train.txt").read_text().split()] + list(CRAFTED)
    (root / "train.txt").write_text("\n".join(ids) + "\n")
    run_build(root, tmp / "out")
    return root, tmp / "out", ids


def _kind(ds, i):
    return "sub" if "_" in ds.name(i) else "whole"


def _keys(ds):
    return sorted((_kind(ds, i), ds.name(i).split("_")[-1], int(ds.starts[i]), int(ds.ends[i]), tuple(ds.captions(i)))
                  for i in range(len(ds)))


def test_samples_and_filters_match_the_reference(crafted):
    root, out, ids = crafted
    ds = MotionDataset(out, "train", stats=None, options=DataOptions.for_dataset("humanml3d"))
    assert _keys(ds) == reference_samples(root, ids)
    lengths = {ds.name(i): len(ds.raw_motion(i)) for i in range(len(ds))}
    assert "100000" not in lengths and "100003" not in lengths  # 39 and 200 frames: out
    assert lengths["100001"] == 40 and lengths["100002"] == 199
    assert all(40 <= n < 200 for n in lengths.values())


def test_kit_preset_and_unfiltered_options(crafted):
    root, out, ids = crafted
    assert DataOptions.for_dataset("kitml").min_length == 24
    with pytest.raises(ValueError, match="unknown dataset"):
        DataOptions.for_dataset("amass")
    kit_like = MotionDataset(out, "train", stats=None, options=DataOptions(min_length=24, max_length=200))
    assert _keys(kit_like) == reference_samples(root, ids, 24, 200)
    assert "100000" in {kit_like.name(i) for i in range(len(kit_like))}  # 39 frames: in with KIT's 24
    everything = MotionDataset(out, "train", stats=None, options=DataOptions(min_length=None, max_length=None))
    assert {"100000", "100003"} <= {everything.name(i) for i in range(len(everything))}


@pytest.mark.parametrize("length", [40, 41, 43, 44, 47, 196, 199])
def test_crop_rule_matches_the_reference_coin(length):
    """Reference: unit 4 < 10, so coin2 = choice(['single','single','double']); 'double' crops
    one unit shorter. Crops are multiples of 4, the shorter one about 1/3 of the time."""
    opt, rng = DataOptions(), random.Random(0)
    crops = [opt.crop_length(length, rng) for _ in range(3000)]
    full, short = length // 4 * 4, (length // 4 - 1) * 4
    assert set(crops) == {full, short}
    assert 0.29 < crops.count(short) / len(crops) < 0.38
    fixed = DataOptions(random_crop=False)
    assert {fixed.crop_length(length, rng) for _ in range(50)} == {full}
    never = DataOptions(shorter_crop_prob=0.0)
    assert {never.crop_length(length, rng) for _ in range(50)} == {full}
    # no max_length filter: longer samples are cropped to the padded length
    assert DataOptions(max_length=None).crop_length(400, random.Random(1)) in (196, 192)


def test_items_are_normalised_random_windows_padded_to_196(crafted):
    root, out, _ = crafted
    stats = Normalizer(np.full(263, 0.5, np.float32), np.full(263, 2.0, np.float32))
    ds = MotionDataset(out, "train", stats=stats, options=DataOptions.for_dataset("humanml3d"))
    index = next(i for i in range(len(ds)) if ds.name(i) == "100002")  # 199 frames
    source = np.load(root / "new_joint_vecs" / "100002.npy")
    starts = set()
    for _ in range(60):
        item = ds[index]
        n = item["length"]
        assert item["motion"].shape == (196, 263) and item["motion"].dtype == np.float32
        assert n in (196, 192) and not item["motion"][n:].any()
        raw = item["motion"][:n] * 2.0 + 0.5
        matches = [s for s in range(len(source) - n + 1) if np.allclose(source[s:s + n], raw, atol=1e-5)]
        assert matches, "the item is not a window of the source motion"
        starts.add(matches[0])
    assert len(starts) > 1  # the crop start is random
    fixed = MotionDataset(out, "train", stats=stats, options=DataOptions(random_crop=False))
    item = fixed[next(i for i in range(len(fixed)) if fixed.name(i) == "100002")]
    np.testing.assert_allclose(item["motion"][:196], (source[:196] - 0.5) / 2.0, rtol=1e-6)


def test_random_caption_choice(crafted):
    _, out, _ = crafted
    ds = MotionDataset(out, "train", stats=None)
    index = next(i for i in range(len(ds)) if ds.name(i) == "100004")
    assert ds.captions(index) == ["the man jumps", "a person walks", "someone waves"]
    seen = {ds[index]["caption"] for _ in range(60)}
    assert seen == set(ds.captions(index))
    first = MotionDataset(out, "train", stats=None, options=DataOptions(caption="first"))
    assert {first[index]["caption"] for _ in range(10)} == {"the man jumps"}


def test_motions_are_zero_copy_views_of_the_arrow_file(crafted):
    root, out, _ = crafted
    before = pa.total_allocated_bytes()
    ds = MotionDataset(out, "train", stats=None)
    views = [ds.raw_motion(i) for i in range(len(ds))]
    # memory-mapped buffers are not allocated from Arrow's pool: reading every motion costs nothing
    assert pa.total_allocated_bytes() - before < sum(v.nbytes for v in views) / 20
    for i, view in enumerate(views):
        motion_id = ds.name(i).split("_")[-1]
        source = np.load(root / "new_joint_vecs" / f"{motion_id}.npy")
        assert np.array_equal(view, source[ds.starts[i]:ds.ends[i]])
        assert not view.flags.writeable and not view.flags.owndata
        frames = ds.arrow.chunks[ds.arrow.row_chunk[ds.rows[i]]][0]
        assert np.shares_memory(view, frames)


def test_dataset_pickles_small_and_reopens(crafted):
    _, out, _ = crafted
    ds = MotionDataset(out, "train", stats=None, options=DataOptions(random_crop=False, caption="first"))
    ds[0]  # maps the files in this process
    blob = pickle.dumps(ds)
    motion_bytes = sum(ds.raw_motion(i).nbytes for i in range(len(ds)))
    assert len(blob) < 4000 + 64 * len(ds) and len(blob) < motion_bytes / 10
    copy = pickle.loads(blob)
    assert copy._rows is None  # nothing mapped until used
    for i in range(len(ds)):
        a, b = ds[i], copy[i]
        assert np.array_equal(a["motion"], b["motion"]) and a["caption"] == b["caption"] and a["name"] == b["name"]


@pytest.mark.parametrize("context,workers", [(None, 2), ("spawn", 1)])
def test_multi_worker_loader_serves_every_sample(crafted, context, workers):
    # fork workers share the parent's map; a spawned worker unpickles the index and maps the files
    _, out, _ = crafted
    ds = MotionDataset(out, "train", stats=None, options=DataOptions(random_crop=False, caption="first"))
    loader = make_loader(ds, batch_size=4, shuffle=False, num_workers=workers, drop_last=False,
                         multiprocessing_context=context, persistent_workers=False, prefetch_factor=2)
    batches = list(loader)
    names = [n for b in batches for n in b["name"]]
    assert names == [ds.name(i) for i in range(len(ds))]
    expected = collate([ds[i] for i in range(len(ds))])
    assert torch.equal(torch.cat([b["motion"] for b in batches]), expected["motion"])


def test_collate_shapes(crafted):
    _, out, _ = crafted
    ds = MotionDataset(out, "train", stats=None)
    batch = collate([ds[i] for i in range(3)])
    assert batch["motion"].shape == (3, 196, 263) and batch["motion"].dtype == torch.float32
    assert batch["mask"].shape == (3, 196) and batch["mask"].sum(1).tolist() == batch["length"].tolist()
    assert len(batch["caption"]) == 3 and batch["index"].tolist() == [0, 1, 2]


def test_compute_stats_over_the_training_motions(crafted):
    root, out, ids = crafted
    frames = np.concatenate([np.load(root / "new_joint_vecs" / f"{i}.npy") for i in ids]).astype(np.float64)
    stats = compute_stats(out, "train")
    np.testing.assert_allclose(stats.mean, frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.std, np.maximum(frames.std(0), 1e-6), rtol=1e-4, atol=1e-6)
    blocked = compute_stats(out, "train", block_average="humanml3d")
    assert np.unique(blocked.std[4:67]).size == 1  # one value for the 63 position dims
    assert np.allclose(blocked.std[4:67], frames.std(0)[4:67].mean(), rtol=1e-4)
    restored = Normalizer.from_state_dict(stats.state_dict())
    assert np.array_equal(restored.mean, stats.mean) and np.array_equal(restored.std, stats.std)
    x = np.ones((3, 263), np.float32)
    np.testing.assert_allclose(stats.denormalize(stats.normalize(x)), x, rtol=1e-5)


def test_clear_errors(crafted):
    _, out, _ = crafted
    with pytest.raises(ValueError, match="stats have 10 dims"):
        MotionDataset(out, "train", stats=Normalizer(np.zeros(10), np.ones(10)))
    with pytest.raises(ValueError, match="positive"):
        Normalizer(np.zeros(3), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(KeyError, match="nope"):
        MotionDataset(out, "nope", stats=None)
    import datasets
    shuffled = datasets.load_from_disk(str(out))["train"].shuffle(seed=0)
    assert sorted(MotionDataset(shuffled, stats=None).name(i) for i in range(3)) != []  # accepted now


@pytest.fixture(scope="module")
def many_subclips(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("index")
    root = write_synthetic_release(tmp / "rel", num_motions=40, seed=11, subclip_prob=0.7, captions=(1, 5))
    run_build(root, tmp / "out")
    return tmp / "out"


@pytest.mark.parametrize("bounds", [(40, 200), (24, 200), (None, None), (60, 120)])
def test_sample_index_equals_flatten_samples(crafted, many_subclips, bounds):
    """MotionDataset's numpy index is exactly datasets_build.flatten_samples, names included."""
    import datasets
    from datasets_build import flatten_samples

    for out in (crafted[1], many_subclips):
        split = datasets.load_from_disk(str(out))["train"]
        expected = flatten_samples(split, *bounds)
        ds = MotionDataset(out, "train", stats=None, options=DataOptions(min_length=bounds[0], max_length=bounds[1]))
        ours = [(ds.name(i), int(ds.rows[i]), int(ds.starts[i]), int(ds.ends[i]),
                 tuple(int(a) for a in ds.ann_index[ds.ann_ptr[i]:ds.ann_ptr[i + 1]]), tuple(ds.captions(i)))
                for i in range(len(ds))]
        assert ours == [(s.name, s.row, s.start_frame, s.end_frame, s.annotation_indices, s.captions) for s in expected]
        if out == many_subclips:
            assert sum("_" in name for name, *_ in ours) > 10


def test_tokens_annotation_index_and_windows(crafted):
    from models.training.data import MotionWindows

    root, out, _ = crafted
    ds = MotionDataset(out, "train", stats=None)
    index = next(i for i in range(len(ds)) if len(ds.captions(i)) > 1)
    tokens = ds.word_tokens(index)
    assert len(tokens) == len(ds.captions(index)) and all(t and "/" in t[0] for t in tokens)
    item = ds[index]
    assert ds.captions(index)[item["annotation"]] == item["caption"]
    assert collate([ds[index], ds[index]])["annotation"].shape == (2,)
    stats = Normalizer(np.full(263, 0.5, np.float32), np.full(263, 2.0, np.float32))
    windows = MotionWindows(out, "train", stats=stats, window=40)
    import datasets
    lengths = datasets.load_from_disk(str(out))["train"]["length"]
    assert len(windows) == sum(n - 40 + 1 for n in lengths if n >= 40)
    first = np.load(root / "new_joint_vecs" / f"{datasets.load_from_disk(str(out))['train'][0]['id']}.npy")
    np.testing.assert_allclose(windows[1], (first[1:41] - 0.5) / 2.0, rtol=1e-5, atol=1e-6)
    assert windows[len(windows) - 1].shape == (40, 263)
