"""`python -m models train|evaluate retrieval`: flags derived from the config dataclasses, typed
`--model KEY=VALUE` overrides, one-line user errors, resume, the old `models.retrieval.train` /
`models.retrieval.evaluate` aliases, and run folders written before models.base.

Training runs use test_retrieval_model's hashed toy text encoder, patched in where the commands
load an encoder by name, so no real encoder is needed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.core.errors import UserError
from datasets_build.core.flags import OptionError
from datasets_build.synthetic.sample_release import write_sample_release
from models.__main__ import main
from models.retrieval import TMR, RetrievalConfig, load_retrieval_model
from models.retrieval.api import load_checkpoint
from models.retrieval.train import TrainConfig
from models.training.config import model_overrides, train_config_from_args, train_parser
from test_retrieval_model import TINY, HashedTextEncoder

REPO = Path(__file__).resolve().parents[1]
MODEL_FLAGS = [x for k, v in TINY.items() for x in ("--model", f"{k}={v}")]
QUICK = ["--device", "cpu", "--num-workers", "0", "--quiet", "--batch-size", "32", "--lr", "3e-3", "--log-every", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models-cli")
    root = write_sample_release(tmp / "rel", "humanml3d", 32, seed=0)
    run_build(root, tmp / "out")
    return tmp / "out"


@pytest.fixture(autouse=True)
def hashed_encoder(monkeypatch):
    """Every encoder loaded by name is the hashed toy encoder."""
    def load(name, checkpoint=None, device=None):
        return HashedTextEncoder()

    monkeypatch.setattr("models.retrieval.train.load_text_encoder", load)
    monkeypatch.setattr("models.retrieval.api.load_text_encoder", load)


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _epochs(run):
    return [r["epoch"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]


def test_train_then_evaluate_retrieval(built, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "retrieval", "--data", str(built), "--out", str(run), "--epochs", "2", *QUICK,
                 *MODEL_FLAGS]) == 0
    assert f"trained 2 epochs into {run}" in capsys.readouterr().out
    state = load_checkpoint(run)
    assert state["format"] == "models.retrieval/1" and state["epoch"] == 2 and _epochs(run) == [1, 2]
    assert state["model_config"]["latent_dim"] == 64 and state["model_config"]["vae"] is False
    assert state["train_config"]["lr"] == 3e-3 and state["train_config"]["progress"] is False
    readable = json.loads((run / "config.json").read_text())
    assert readable["model_config"] == state["model_config"] and readable["data_options"] == state["data_options"]
    assert readable["text_encoder"]["identity"] == HashedTextEncoder().identity

    assert main(["evaluate", "retrieval", "--run", str(run), "--data", str(built), "--split", "train", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"all", "batches of 32"} and results["all"]["t2m/R@1"] > 100 / 32
    encoder = load_retrieval_model(run, "cpu")  # no flags: config, stats and encoder come from the run
    assert encoder.encode_text(["a person walks forward"]).shape == (1, 64)


def test_flags_are_derived_from_the_dataclasses():
    parser = train_parser("prog", "", TrainConfig, RetrievalConfig)
    assert train_config_from_args(TrainConfig, RetrievalConfig, parser.parse_args(["--data", "d", "--out", "o"])) \
        == TrainConfig(data="d", out="o")  # every default is the dataclass's
    cfg = train_config_from_args(TrainConfig, RetrievalConfig, parser.parse_args(
        ["--data", "d", "--out", "o", "--quiet", "--epochs", "3", "--text-encoder", "clip", "--resume",
         "--model", "latent_dim=32", "--model", "filter_threshold=none"]))
    assert (cfg.progress, cfg.epochs, cfg.text_encoder, cfg.resume) == (False, 3, "clip", True)
    assert cfg.model == {"latent_dim": 32, "filter_threshold": None}
    help_text = parser.format_help()
    assert "--model KEY=VALUE" in help_text and "latent_dim=256" in help_text and "{clip,clip-random,minilm}" in help_text


def test_model_overrides_are_typed_by_the_model_config():
    assert model_overrides(RetrievalConfig, ["latent_dim=128", "dropout=0.2", "vae=false", "reconstruction=1",
                                             "filter_threshold=None", "temperature= 0.05"]) == {
        "latent_dim": 128, "dropout": 0.2, "vae": False, "reconstruction": True, "filter_threshold": None,
        "temperature": 0.05}
    cases = {"depth=3": "RetrievalConfig has no setting 'depth'; its settings are dropout, ff_dim",
             "latent_dim=12.5": "'12.5' is not a valid int", "vae=maybe": "'maybe' is not a valid bool",
             "latent_dim=none": "None is not allowed", "latent_dim": "expected KEY=VALUE"}
    for pair, message in cases.items():
        with pytest.raises(OptionError, match=message) as error:
            model_overrides(RetrievalConfig, [pair])
        assert isinstance(error.value, UserError) and str(error.value).startswith(f"model setting {pair!r}")


def test_user_errors_are_one_line_with_exit_status_1(built, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "retrieval", "--data", str(built), "--out", str(run), *QUICK, "--model", "latent_dim=x"]) == 1
    assert capsys.readouterr().err == "error: model setting 'latent_dim=x': 'x' is not a valid int\n"
    assert not run.exists()
    assert main(["evaluate", "retrieval", "--run", str(run), "--data", str(built)]) == 1
    assert capsys.readouterr().err == f"error: no retrieval checkpoint at {run / 'checkpoint.pt'}\n"
    assert main(["train", "retrieval", "--data", str(tmp_path / "nothing"), "--out", str(run), *QUICK]) == 1
    assert "is not a built dataset" in capsys.readouterr().err and not run.exists()
    assert main(["train", "retrieval", "--data", str(built), "--out", str(run), "--epochs", "1", "--split", "nope",
                 *QUICK, *MODEL_FLAGS]) == 1
    assert capsys.readouterr().err.startswith("error: split 'nope' is not in")
    assert main(["generate", "retrieval"]) == 2 and "retrieval has no generate command" in capsys.readouterr().err
    assert main(["train", "nobody"]) == 2 and "no model named 'nobody'" in capsys.readouterr().err


def test_resume_continues_from_the_saved_epoch(built, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "retrieval", "--data", str(built), "--out", str(run), *QUICK]
    assert main([*args, "--epochs", "1", *MODEL_FLAGS]) == 0
    first = load_checkpoint(run)
    assert main([*args, "--epochs", "2"]) == 1  # never overwritten without --resume
    assert "already holds a checkpoint" in capsys.readouterr().err and load_checkpoint(run)["epoch"] == 1
    # a resumed run keeps its own model settings: the new --model is not applied
    assert main([*args, "--epochs", "3", "--resume", "--model", "latent_dim=32"]) == 0
    last = load_checkpoint(run)
    assert last["epoch"] == 3 and last["step"] == 3 * first["step"] and _epochs(run) == [1, 2, 3]
    assert last["model_config"] == first["model_config"] and last["model_config"]["latent_dim"] == 64
    adam = next(iter(last["optimizer"]["state"].values()))
    assert int(adam["step"]) == last["step"]  # the optimizer's moments continued, not restarted
    assert not torch.equal(first["model"]["motion_encoder.project.weight"], last["model"]["motion_encoder.project.weight"])


def test_the_old_module_commands_still_work(built, tmp_path, capsys):
    from models.retrieval import evaluate as evaluate_cli
    from models.retrieval import train as train_cli

    run = tmp_path / "run"
    assert train_cli.main(["--data", str(built), "--out", str(run), "--epochs", "1", "--device", "cpu",
                           "--num-workers", "0", "--quiet", *MODEL_FLAGS]) == 0
    assert evaluate_cli.main(["--run", str(run), "--data", str(built), "--split", "test", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "trained 1 epoch into" in out and "R@1" in out and "motion->text" in out
    alias = _run("-m", "models.retrieval.evaluate", "--run", str(tmp_path / "none"), "--data", str(built))
    assert alias.returncode == 1 and "Traceback" not in alias.stderr
    assert "python -m models evaluate retrieval" in alias.stderr  # the one-line note
    assert f"error: no retrieval checkpoint at {tmp_path / 'none' / 'checkpoint.pt'}" in alias.stderr
    usage = _run("-m", "models.retrieval.train", "--help")
    assert usage.returncode == 0 and "usage: python -m models.retrieval.train" in usage.stdout
    assert "--model KEY=VALUE" in usage.stdout


def test_help_lists_models_without_importing_torch():
    listing = _run("-c", "import sys; from models.__main__ import main; main(['--help']); "
                         "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    assert listing.returncode == 0, listing.stderr
    assert "retrieval" in listing.stdout and "train, evaluate" in listing.stdout and "no torch" in listing.stdout
    usage = _run("-m", "models", "train", "retrieval", "--help")
    assert usage.returncode == 0 and "usage: python -m models train retrieval" in usage.stdout
    for flag in ("--data BUILT_DIR", "--epochs N", "--resume", "--quiet", "--text-encoder", "w_contrastive=0.1"):
        assert flag in usage.stdout


def test_a_run_folder_from_before_models_base_still_loads(tmp_path):
    """The layout models.retrieval.api wrote before models.base: no RNG states, no config.json."""
    torch.manual_seed(0)
    cfg = RetrievalConfig(motion_dim=263, token_dim=32, **TINY)
    model = TMR(cfg)
    run = tmp_path / "old"
    run.mkdir()
    torch.save({"format": "models.retrieval/1", "model": model.state_dict(), "optimizer": None,
                "model_config": cfg.__dict__.copy(), "train_config": {}, "data_options": {},
                "stats": {"mean": torch.zeros(263), "std": torch.ones(263)},
                "text_encoder": {"name": "hashed", "identity": HashedTextEncoder().identity, "checkpoint": None,
                                 "dim": 32, "token_dim": 32}, "epoch": 0, "step": 0}, run / "checkpoint.pt")
    encoder = load_retrieval_model(run, "cpu")
    motion = np.random.default_rng(0).standard_normal((50, 263)).astype(np.float32)
    expected = model.eval().encode_motion(torch.from_numpy(motion)[None], torch.ones(1, 50, dtype=torch.bool))
    np.testing.assert_allclose(encoder.encode_motion([motion]), expected.detach().numpy(), atol=1e-5)


def test_presets_set_and_max_steps(built, tmp_path, capsys):
    """--preset supplies defaults (model and training), explicit flags and --set win, --max-steps stops early."""
    run = tmp_path / "run"
    quick = ["--device", "cpu", "--num-workers", "0", "--quiet"]
    assert main(["train", "retrieval", "--data", str(built), "--out", str(run), "--preset", "tiny", "--max-steps", "3",
                 "--set", "latent_dim=32", "--set", "log_every=1", "--model", "num_heads=2", *quick]) == 0
    state = load_checkpoint(run)
    assert state["model_config"]["latent_dim"] == 32 and state["model_config"]["num_layers"] == 1  # --set, preset
    assert state["model_config"]["num_heads"] == 2 and state["model_config"]["vae"] is False
    cfg = state["train_config"]
    assert (cfg["preset"], cfg["epochs"], cfg["lr"], cfg["max_steps"], cfg["log_every"]) == ("tiny", 8, 3e-3, 3, 1)
    assert state["step"] == 3 and state["epoch"] == 1
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "run" and lines[-1]["steps"] == 3 and lines[-1]["steps_per_s"] > 0
    assert main(["train", "retrieval", "--data", str(built), "--out", str(tmp_path / "r2"), "--preset", "tiny",
                 "--epochs", "1", *quick]) == 0
    assert load_checkpoint(tmp_path / "r2")["train_config"]["epochs"] == 1  # an explicit flag beats the preset
    capsys.readouterr()
    assert main(["train", "retrieval", "--data", str(built), "--out", str(tmp_path / "r3"), "--set", "depth=2",
                 *quick]) == 1
    assert "RetrievalConfig has no setting 'depth'" in capsys.readouterr().err
    usage = _run("-m", "models", "train", "evaluator", "--help")
    assert usage.returncode == 0 and "--preset {tiny,paper}" in usage.stdout and "tiny: the CPU test size" in usage.stdout
    assert "--set KEY=VALUE" in usage.stdout and "dim_motion_hidden=1024" in usage.stdout


def test_the_registry_finds_every_model_and_the_model_of_a_run(built, tmp_path):
    from models.registry import UnknownRun, discover, entry_for_run

    models = discover()
    assert {"retrieval", "evaluator"} <= models.keys()
    assert models["evaluator"].commands == {"train": "models.eval.train"}
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "models.retrieval/1"}))
    assert entry_for_run(run).name == "retrieval"
    (run / "config.json").write_text(json.dumps({"format": "models.nobody/1"}))
    with pytest.raises(UnknownRun, match="no registered model writes"):
        entry_for_run(run)
