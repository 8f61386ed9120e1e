"""The model commands' user errors and options (issue #16, item 7) and the data sources of
models.training.data (item 6): one-line errors with exit status 1 and no traceback, no run folder
left behind by a failed fresh run, the epoch count after --resume, no abbreviated options, the
sub-command's usage for an unknown option, help on every option; filtered and shuffled Datasets,
streaming ones refused, and `collate_ragged` for `with_format("torch")`."""

import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.core.errors import UserError
from datasets_build.synthetic.sample_release import write_sample_release
from models.__main__ import main
from models.retrieval.model import RetrievalConfig
from models.retrieval.train import TrainConfig
from models.training.config import train_parser
from models.training.data import (
    MotionDataset, StreamingNotSupported, collate_ragged, compute_stats, open_split,
)
from test_retrieval_model import TINY, HashedTextEncoder

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--device", "cpu", "--num-workers", "0", "--quiet", "--batch-size", "32",
         *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models-errors")
    root = write_sample_release(tmp / "rel", "humanml3d", 24, seed=0)
    run_build(root, tmp / "out")
    return tmp / "out"


@pytest.fixture(autouse=True)
def hashed_encoder(monkeypatch):
    monkeypatch.setattr("models.retrieval.train.load_text_encoder", lambda *a, **k: HashedTextEncoder())


def _train(data, out, *extra):
    return main(["train", "retrieval", "--data", str(data), "--out", str(out), *QUICK, *extra])


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_missing_build_and_split_leave_no_run_folder(built, tmp_path, capsys):
    assert _train(tmp_path / "nowhere", tmp_path / "run") == 1
    _one_line_error(capsys, "nowhere")
    assert _train(built, tmp_path / "run", "--split", "nope") == 1
    _one_line_error(capsys, "'nope'", "train")
    assert not (tmp_path / "run").exists()


def test_empty_split_leaves_no_run_folder(built, tmp_path, capsys):
    full = datasets.load_from_disk(str(built))
    short = full["train"].select(range(3)).map(lambda row: {"length": 10})  # every sample below the 40-frame filter
    datasets.DatasetDict({"train": short, "test": full["test"]}).save_to_disk(str(tmp_path / "e"))
    capsys.readouterr()  # the map and save progress bars
    assert _train(tmp_path / "e", tmp_path / "run") == 1
    _one_line_error(capsys, "0 samples")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_sentence(built, tmp_path, capsys):
    assert _train(built, tmp_path / "run", "--device", "cuda") == 1
    _one_line_error(capsys, "no CUDA device", "--device cpu")
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_and_resume_epoch_count(built, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(built, run, "--epochs", "1") == 0
    assert f"trained 1 epoch into {run}" in capsys.readouterr().out
    assert _train(built, run, "--epochs", "3") == 1
    _one_line_error(capsys, "--resume")
    assert _train(built, run, "--epochs", "3", "--resume") == 0
    out = capsys.readouterr().out
    assert f"trained 2 epochs into {run} (epochs 2-3; 1 done before" in out, out
    assert _train(built, run, "--epochs", "3", "--resume") == 1
    _one_line_error(capsys, "already has 3 epochs", "--epochs")


def test_errors_exit_1_without_traceback_in_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "models", "train", "retrieval", "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "run"), "--device", "cpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, usage", [
    (["train", "retrieval", "--data", "d", "--out", "o", "--epo", "2"], "python -m models train retrieval"),
    (["train", "retrieval", "--data", "d", "--out", "o", "--pre", "tiny"], "python -m models train retrieval"),
    (["train", "retrieval", "--data", "d", "--out", "o", "--bogus"], "python -m models train retrieval"),
    (["evaluate", "retrieval", "--run", "r", "--data", "d", "--rep", "2"], "python -m models evaluate retrieval"),
    (["evaluate", "--run", "r", "--data", "d", "--evaluator", "e", "--rep", "2"], "python -m models evaluate"),
    (["generate", "--run", "r", "--text", "t", "--out", "o.npy", "--len", "9"], "python -m models generate"),
])
def test_abbreviations_and_unknown_options_show_the_commands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {usage}") and "unrecognized arguments" in err, err


def test_every_option_has_help():
    from models.retrieval.train import PRESETS
    parser = train_parser("p", "d", TrainConfig, RetrievalConfig, PRESETS)
    assert not parser.allow_abbrev
    missing = [a.option_strings for a in parser._actions if a.option_strings and not (a.help or "").strip()]
    assert not missing


# ----------------------------------------------------------------------------- data sources
def test_filtered_and_shuffled_datasets_are_served_in_their_order(built):
    split = datasets.load_from_disk(str(built))["train"]
    whole = MotionDataset(split, stats=None)
    by_name = {whole.name(i): i for i in range(len(whole))}
    shuffled = MotionDataset(split.shuffle(seed=3), stats=None)
    assert sorted(shuffled.name(i) for i in range(len(shuffled))) == sorted(by_name)
    assert [shuffled.name(i) for i in range(len(shuffled))] != [whole.name(i) for i in range(len(whole))]
    for i in range(len(shuffled)):
        np.testing.assert_array_equal(shuffled.raw_motion(i), whole.raw_motion(by_name[shuffled.name(i)]))
    long = split.filter(lambda row: row["length"] >= 120)
    filtered = MotionDataset(long, stats=None)
    ids = set(long["id"])
    assert 0 < len(filtered) < len(whole) and all(filtered.arrow.motion_id(int(r)) in ids for r in filtered.rows)
    frames = np.concatenate([np.asarray(m, np.float64) for m in long.with_format("numpy")["motion"]])
    np.testing.assert_allclose(compute_stats(long).mean, frames.mean(0), rtol=1e-5, atol=1e-6)
    assert open_split(datasets.load_from_disk(str(built)), "test").num_rows > 0  # a DatasetDict works too


def test_streaming_datasets_are_refused_with_a_user_error(built):
    stream = datasets.load_from_disk(str(built))["train"].to_iterable_dataset()
    with pytest.raises(StreamingNotSupported, match="streaming") as error:
        MotionDataset(stream, stats=None)
    assert isinstance(error.value, UserError)


def test_collate_ragged_pads_torch_format_rows(built):
    split = datasets.load_from_disk(str(built))["train"].with_format("torch")
    loader = torch.utils.data.DataLoader(split, batch_size=4, collate_fn=collate_ragged)
    batch = next(iter(loader))
    lengths = [len(split[i]["motion"]) for i in range(4)]
    assert batch["motion"].shape == (4, max(lengths), 263) and batch["length"].tolist() == lengths
    assert batch["mask"].sum(1).tolist() == lengths and isinstance(batch["id"], list)
    for i, n in enumerate(lengths):
        assert torch.equal(batch["motion"][i, :n], split[i]["motion"].float())
        assert not batch["motion"][i, n:].any()
    assert collate_ragged([split[0]], pad_to=250)["motion"].shape[1] == 250
