"""flatten_samples against a plain re-implementation of the reference Text2MotionDataset loop."""

import datasets
import numpy as np

from conftest import run_build
from datasets_build import flatten_samples
from datasets_build.synthetic.noise_release import write_synthetic_release


def reference_samples(root, ids, min_len=40, max_len=200, fps=20):
    """What T2M/MoMask's loader builds, read straight from the release files (names minus the
    random letter)."""
    samples = []
    for name in ids:
        motion = np.load(root / "new_joint_vecs" / f"{name}.npy")
        if len(motion) < min_len or len(motion) >= max_len:
            continue
        whole, flag = [], False
        for line in (root / "texts" / f"{name}.txt").read_text().splitlines():
            caption, _, f_tag, to_tag = line.strip().split("#")
            f_tag = 0.0 if np.isnan(float(f_tag)) else float(f_tag)
            to_tag = 0.0 if np.isnan(float(to_tag)) else float(to_tag)
            if f_tag == 0.0 and to_tag == 0.0:
                flag = True
                whole.append(caption)
            else:
                clip = motion[int(f_tag * fps): int(to_tag * fps)]
                if len(clip) < min_len or len(clip) >= max_len:
                    continue
                samples.append(("sub", name, int(f_tag * fps), int(f_tag * fps) + len(clip), (caption,)))
        if flag:
            samples.append(("whole", name, 0, len(motion), tuple(whole)))
    return sorted(samples)


def test_flattened_samples_match_the_reference_on_crafted_lengths(tmp_path):
    root = write_synthetic_release(tmp_path / "rel", num_motions=2, mirrors=False)
    # lengths around the filters: below, at and above 40 and 200; sub-clips 39, 40, 199 frames long
    crafted = {"100000": 39, "100001": 40, "100002": 199, "100003": 200, "100004": 250}
    line = "a person walks#a/DET person/NOUN walk/VERB#{}#{}"
    texts = {
        "100000": [line.format(0.0, 0.0)],
        "100001": [line.format("nan", 0.0), line.format(0.0, 1.95)],
        "100002": [line.format(0.0, 1.95), line.format(0.0, 2.0), line.format(0.05, 10.0), line.format(1.0, 2.0)],
        "100003": [line.format(0.0, 0.0), line.format(1.0, 5.0)],
        "100004": [line.format(1.0, 5.0)],
    }
    for motion_id, length in crafted.items():
        np.save(root / "new_joint_vecs" / f"{motion_id}.npy", np.zeros((length, 263), np.float32))
        np.save(root / "new_joints" / f"{motion_id}.npy", np.zeros((length, 22, 3), np.float32))
        (root / "texts" / f"{motion_id}.txt").write_text("\n".join(texts[motion_id]) + "\n")
    ids = ["000000", "000001"] + list(crafted)
    (root / "train.txt").write_text("\n".join(ids) + "\n")
    run_build(root, tmp_path / "out")
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    ours = sorted(("sub" if "_" in s.name else "whole", s.motion_id, s.start_frame, s.end_frame, s.captions)
                  for s in flatten_samples(train, min_length=40, max_length=200))
    expected = reference_samples(root, ids)
    assert ours == expected
    assert ("sub", "100002", 0, 40, ("a person walks",)) in ours and ("whole", "100003", 0, 200, ("a person walks",)) not in ours


def test_without_filters_every_annotation_is_in_exactly_one_sample(release, tmp_path):
    run_build(release(num_motions=16), tmp_path / "out")
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    samples = flatten_samples(train)
    covered = sorted((s.motion_id, i) for s in samples for i in s.annotation_indices)
    expected = sorted((r["id"], i) for r in train.select_columns(["id", "annotations"]) for i in range(len(r["annotations"])))
    assert covered == expected
    names = [s.name for s in samples]
    assert len(names) == len(set(names))
    for s in samples:
        if s.name != s.motion_id:
            assert s.name.endswith("_" + s.motion_id) and s.name[0].isupper()
