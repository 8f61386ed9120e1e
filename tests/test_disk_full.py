"""A disk that fills up during a real build (a small tmpfs; skipped where mounting is not allowed):
one sentence, the unfinished splits removed, and a re-run after freeing space pays only for what was
not answered before."""

import subprocess
import sys
from pathlib import Path

import pytest

import json

from chat_server import ChatServer, caption_of
from datasets_build.synthetic.sample_release import write_sample_release
from test_decompose import split_caption

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_stops_cleanly_and_the_rerun_keeps_every_answer(tmp_path, small_disk):
    root = write_sample_release(tmp_path / "release", "humanml3d", 6, seed=0)
    padding = " " * 60_000  # big answers (still valid JSON) fill the 3 MB quickly

    with ChatServer(answer=lambda body: json.dumps(split_caption(caption_of(body["messages"]))) + padding) as server:
        command = [sys.executable, "-m", "datasets_build", "mate", "--source", str(root), "--skip-segmentation",
                   "--out", str(small_disk / "out"), "--llm-base-url", server.base_url, "--llm-model", "m",
                   "--llm-structured", "off", "--quiet"]
        first = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert first.returncode == 1 and "is full" in first.stderr and "Traceback" not in first.stderr
        assert not (small_disk / "out" / ".partial").exists()
        answered = len(server.log)
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        second = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert second.returncode == 0, second.stderr[-2000:]
        assert len(server.log) - answered < answered  # only what was not stored is asked again
