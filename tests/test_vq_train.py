"""The VQ-VAE on a built dataset: training (run folder, fb5 statistics, log), exact resume, the CLI,
`api.load` (frozen, with its statistics), reconstruction metrics, and the `motion_tokens` processor
and its `--motion-tokenizer` recipe wiring."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.formats.built import load_release_stats
from datasets_build.synthetic.sample_release import write_sample_release
from models.base import load_checkpoint
from models.vq.api import FORMAT, detokenize, load, tokenize
from models.vq.evaluate import evaluate, mpjpe
from models.training.config import run_command
from models.vq.train import PRESETS, TrainConfig, learning_rate, main, train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

D = 263


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("vq")
    run_build(write_sample_release(tmp / "rel", "humanml3d", 16, seed=0), tmp / "out")
    return tmp / "out"


def _cfg(built, out, **kw):
    # window 128: a few hundred windows, a few seconds per epoch on one thread
    return TrainConfig(data=str(built), out=str(out), batch_size=32, lr=1e-3, warmup_steps=3, milestones="",
                       window_size=128, num_workers=0, progress=False, log_every=1,
                       model=dict(PRESETS["tiny"].model), **kw)


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "vq"
    train(_cfg(built, run, epochs=2))
    return run


def trained_build(run):
    return json.loads((run / "config.json").read_text())["train_config"]["data"]


def test_run_folder_statistics_and_log(trained):
    state = load_checkpoint(trained, FORMAT)
    assert state["epoch"] == 2 and state["model_config"]["motion_dim"] == D and state["model_config"]["nb_code"] == 16
    config = json.loads((trained / "config.json").read_text())
    assert config["format"] == "models.vq/1" and config["data_options"]["window_size"] == 128
    lines = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and lines[-1]["kind"] == "run"
    assert all(np.isfinite(r["loss"]) and r["perplexity"] >= 1 for r in epochs)
    stats = np.load(trained / "stats.npz")  # fb5: the release Std with root and foot contact divided by 5
    mean, std = load_release_stats(str(trained_build(trained)))
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(stats["std"][4:-4], std[4:-4], rtol=1e-6)
    np.testing.assert_allclose(stats["std"][:4] * 5, std[:4], rtol=1e-6)
    np.testing.assert_allclose(stats["std"][-4:] * 5, std[-4:], rtol=1e-6)


def test_learning_rate_warms_up_then_steps_down():
    cfg = TrainConfig(data="", out="", lr=1.0, warmup_steps=4, milestones="10,20", gamma=0.1)
    assert [learning_rate(cfg, s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert learning_rate(cfg, 9) == 1.0 and learning_rate(cfg, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 25) == pytest.approx(0.01)


def test_resume_is_exact(built, trained, tmp_path):
    run = tmp_path / "resumed"
    train(_cfg(built, run, epochs=1))
    train(_cfg(built, run, epochs=2, resume=True))
    a, b = load_checkpoint(trained, FORMAT)["model"], load_checkpoint(run, FORMAT)["model"]
    for key in a:  # weights and the codebooks' EMA buffers
        assert torch.equal(a[key], b[key]), key


def test_load_is_frozen_with_statistics_and_tokenizes(trained, built):
    vq = load(trained, "cpu")
    assert not vq.training and not any(p.requires_grad for p in vq.parameters())
    assert vq.stats.mean.shape == (D,) and len(vq.fingerprint) == 16
    import datasets

    motion = np.asarray(datasets.load_from_disk(str(built))["train"][0]["motion"], np.float32)
    ids = tokenize(vq, motion)
    assert ids.shape == (len(motion) // 4,) and ids.min() >= 0 and ids.max() < 16
    recon = detokenize(vq, ids)
    assert recon.shape == (len(motion) // 4 * 4, D) and np.isfinite(recon).all()
    features = vq.encode_features(torch.from_numpy(vq.stats.normalize(motion[:64]))[None])
    assert features.shape == (1, 16, 32)


def test_reconstruction_metrics(trained, built):
    metrics = evaluate(str(trained), str(built), "test", device="cpu")
    assert metrics["samples"] > 0 and metrics["MPJPE root-aligned (mm)"] > 0 and 0 < metrics["codes used"] <= 1
    motion = np.random.default_rng(0).normal(size=(40, D)).astype(np.float32)
    assert mpjpe([motion], [motion.copy()], "humanml3d")["MPJPE global (mm)"] == 0


def test_cli_trains_and_refuses_to_overwrite(built, tmp_path, capsys):
    run = tmp_path / "cli"
    args = ["--data", str(built), "--out", str(run), "--preset", "tiny", "--window-size", "128", "--epochs", "1",
            "--max-steps", "2", "--quiet"]
    assert main(args) == 0
    assert "trained 1 epoch" in capsys.readouterr().out
    assert load_checkpoint(run, FORMAT)["step"] == 2
    assert run_command(main, args) == 1 and "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--window-size" in text and "quantizer" in text and "tiny" in text


def test_registered_as_a_model():
    from models.registry import discover

    entry = discover()["vqvae"]
    assert entry.commands == {"train": "models.vq.train", "evaluate": "models.vq.evaluate"}
    out = subprocess.run([sys.executable, "-m", "models", "--help"], capture_output=True, text=True, check=True)
    assert "vqvae" in out.stdout


# ----------------------------------------------------------------------------- the motion_tokens processor
def test_motion_tokens_processor_matches_the_tokenizer_and_the_mirror_rows(trained, built, tmp_path):
    import datasets

    from datasets_build.recipes import RECIPES
    from datasets_build.recipes.options import MotionTokenOptions
    from datasets_build.recipes.release import ReleaseOptions
    from processors.motion_tokens import MotionTokens

    options = ReleaseOptions(tokens=MotionTokenOptions(motion_tokenizer=str(trained), tokenizer_device="cpu"))
    processors, _ = RECIPES["humanml3d"].steps(options)
    assert [type(p) for p in processors] == [MotionTokens]
    assert RECIPES["humanml3d"].steps()[0] == ()  # no tokenizer: the release as it is
    out = tmp_path / "tokens"
    run_build(built.parent / "rel", out, processors=processors)
    split = datasets.load_from_disk(str(out))["train"]
    vq = load(trained, "cpu")
    rows = {r["id"]: r for r in split}
    for row in list(rows.values())[:4]:
        motion = np.asarray(row["motion"], np.float32)
        assert row["motion_tokens"] == tokenize(vq, motion).tolist()
        mirror_id = row["id"][1:] if row["mirrored"] else "M" + row["id"]
        if mirror_id in rows:  # the mirror computed from the row's own features is the release's M row
            agree = np.mean(np.array(row["mirror_motion_tokens"]) == np.array(rows[mirror_id]["motion_tokens"]))
            assert agree >= 0.9, agree
        for annotation, ids in zip(row["annotations"], row["subclip_tokens"]):
            if annotation["is_subclip"]:
                clip = motion[annotation["start_frame"]:annotation["end_frame"]]
                assert ids == tokenize(vq, clip).tolist()
            else:
                assert ids == []


def test_motion_tokens_fingerprint_follows_the_checkpoint(trained, tmp_path):
    import shutil

    from processors.motion_tokens import MotionTokens

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    same = MotionTokens(tokenizer=str(copy))
    assert same.tokenizer_hash == MotionTokens(tokenizer=str(trained)).tokenizer_hash
    state = torch.load(copy / "checkpoint.pt", weights_only=True)
    state["model"]["decoder.model.0.bias"] += 1
    torch.save(state, copy / "checkpoint.pt")
    assert MotionTokens(tokenizer=str(copy)).fingerprint() != same.fingerprint()


def test_a_missing_tokenizer_is_one_sentence(tmp_path):
    from datasets_build.recipes import RECIPES, RecipeError
    from datasets_build.recipes.options import MotionTokenOptions
    from datasets_build.recipes.release import ReleaseOptions

    with pytest.raises(RecipeError, match="no checkpoint.pt"):
        RECIPES["kitml"].steps(ReleaseOptions(tokens=MotionTokenOptions(motion_tokenizer=str(tmp_path))))


def test_a_residual_tokenizer_stores_one_id_per_layer(tmp_path):
    from datasets import List

    from datasets_build.motion.normalizer import Normalizer
    from models.vq.api import save_checkpoint
    from models.vq.model import VQVAE, VQVAEConfig
    from processors.motion_tokens import MotionTokens

    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(**PRESETS["tiny"].model, quantizer="residual", num_quantizers=3)).train()
    vq(torch.randn(2, 64, D), force_dropout_index=2)  # initialise every layer's codebook
    save_checkpoint(tmp_path / "rvq", model=vq, optimizer=None, stats=Normalizer(np.zeros(D), np.ones(D)), epoch=1,
                    step=1, train_config=None, data_options={"window_size": 64})
    step = MotionTokens(tokenizer=str(tmp_path / "rvq"), device="cpu")
    assert step.outputs["motion_tokens"] == List(List(step.outputs["motion_tokens"].feature.feature))
    motion = np.random.default_rng(0).normal(size=(50, D)).astype(np.float32)
    annotations = [{"start_frame": 0, "end_frame": 50, "is_subclip": False},
                   {"start_frame": 8, "end_frame": 40, "is_subclip": True}]
    out = step({"motion": [motion], "annotations": [annotations]})
    assert np.array(out["motion_tokens"][0]).shape == (12, 3)
    assert np.array(out["mirror_motion_tokens"][0]).shape == (12, 3)
    assert out["subclip_tokens"][0][0] == [] and np.array(out["subclip_tokens"][0][1]).shape == (8, 3)
    assert step.counters["frames_dropped"] == 2 and step.counters["subclips"] == 1
