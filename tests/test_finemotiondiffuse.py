"""FineMotionDiffuse: the CPU tests of MODELS.md §8 (tiny config), and training, resume and generation on
a real `finehumanml3d` build made against the loopback chat server (one caption's answers always fail
the check, so its annotations end `failed` and fall back to the coarse caption)."""

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch

from chat_server import ChatServer, caption_of, fine_json_answer
from datasets_build import build
from datasets_build.recipes import RECIPES
from datasets_build.recipes.finehumanml3d import FineHumanML3DOptions
from datasets_build.recipes.options import LLMOptions
from datasets_build.synthetic.sample_release import write_sample_release
from models.base import load_checkpoint
from models.finemotiondiffuse.api import FORMAT, FineGenerator, load
from models.finemotiondiffuse.data import read_fine_column, select_steps
from models.finemotiondiffuse.model import FineMotionDiffuse, FineMotionDiffuseConfig
from models.finemotiondiffuse.train import PRESETS, TrainConfig, train
from models.motiondiffuse.model import masked_loss
from models.training.data import DataError
from test_motiondiffuse import HashedTextEncoder

TINY = dict(PRESETS["tiny"].model, token_dim=32, pooled_dim=32, max_length=64)
D = 263

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def _coarse(captions):
    tokens, mask = HashedTextEncoder().encode_tokens(captions)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def _randomised(cfg):
    """A model whose zero-initialised outputs get random weights, so that every path reaches the output."""
    torch.manual_seed(0)
    model = FineMotionDiffuse(cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    return model.eval()


def _inputs(b=2, s=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(b, s, 32, generator=g)
    step_mask = torch.tensor([[True, True, True, False], [True, True, False, False]])[:b, :s]
    x = torch.randn(b, 48, D, generator=g)
    return steps, step_mask, x, torch.ones(b, 48, dtype=torch.bool), torch.tensor([10, 60])[:b]


def test_prediction_is_exactly_zero_at_initialisation():
    torch.manual_seed(0)
    model = FineMotionDiffuse(FineMotionDiffuseConfig(**TINY))
    steps, step_mask, x, mask, t = _inputs()
    out = model(x, t, mask, model.encode_text(*_coarse(["a man walks", "jump"]), steps, step_mask))
    assert out.shape == (2, 48, D) and out.abs().max().item() == 0.0


def test_permuting_the_steps_changes_the_text_memory():
    model = _randomised(FineMotionDiffuseConfig(**TINY))
    steps, step_mask, x, mask, t = _inputs()
    coarse = _coarse(["a man walks", "jump"])
    with torch.no_grad():
        a = model.encode_text(*coarse, steps, step_mask)
        swapped = steps.clone()
        swapped[:, [0, 1]] = steps[:, [1, 0]]                       # the same steps, another order
        b = model.encode_text(*coarse, swapped, step_mask)
    assert a["xf"].shape == (2, 4 + coarse[0].shape[1], TINY["text_latent_dim"])
    assert not torch.allclose(a["xf"][:, :2], b["xf"][:, [1, 0]], atol=1e-4)  # the step position encoding acts
    torch.testing.assert_close(a["xf_proj"], b["xf_proj"])           # xf_proj stays the coarse end token's


def test_a_padded_step_changes_nothing():
    model = _randomised(FineMotionDiffuseConfig(**TINY))
    steps, step_mask, x, mask, t = _inputs()
    other = steps.clone()
    other[~step_mask] = 100.0 * torch.randn(int((~step_mask).sum()), 32)
    coarse = _coarse(["a man walks", "jump"])
    with torch.no_grad():
        a = model(x, t, mask, model.encode_text(*coarse, steps, step_mask))
        b = model(x, t, mask, model.encode_text(*coarse, other, step_mask))
    torch.testing.assert_close(a, b)


def test_without_checked_steps_the_model_is_coarse_only():
    model = _randomised(FineMotionDiffuseConfig(**TINY))
    steps, step_mask, x, mask, t = _inputs()
    coarse = _coarse(["a man walks", "jump"])
    with torch.no_grad():
        alone = model(x, t, mask, model.encode_text(*coarse))                         # has_fine False everywhere
        none = model(x, t, mask, model.encode_text(*coarse, steps, torch.zeros_like(step_mask)))
        mixed_mask = step_mask.clone()
        mixed_mask[1] = False                                                        # row 1 has no steps
        mixed = model(x, t, mask, model.encode_text(*coarse, steps, mixed_mask))
    torch.testing.assert_close(none, alone)
    torch.testing.assert_close(mixed[1], alone[1], atol=1e-5, rtol=1e-5)  # the memory of row 1 is the coarse one
    assert not torch.allclose(mixed[0], alone[0], atol=1e-4)
    assert select_steps(None, 4) is None and select_steps(["a", "b", "c", "d", "e"], 4) == ["a", "b", "c", "d"]
    assert select_steps(["begin", "walk", "turn", "end"], 8, drop_first_last=True) == ["walk", "turn"]
    assert select_steps(["begin", "end"], 8, drop_first_last=True) == ["begin", "end"]


def test_the_token_step_encoding_runs_the_text_head():
    model = _randomised(FineMotionDiffuseConfig(**{**TINY, "step_feature": "tokens"}))
    coarse = _coarse(["a man walks", "jump"])
    g = torch.Generator().manual_seed(0)
    steps, token_mask = torch.randn(2, 3, 5, 32, generator=g), torch.ones(2, 3, 5, dtype=torch.bool)
    token_mask[:, :, 4] = False
    step_mask = torch.tensor([[True, True, False], [True, False, False]])
    with torch.no_grad():
        text = model.encode_text(*coarse, steps, step_mask, token_mask)
    assert text["xf"].shape[1] == 3 + coarse[0].shape[1] and torch.isfinite(text["xf"]).all()


def test_loss_falls_on_16_samples():
    """The eps-MSE halves in 300 steps (24 features: the tiny latent cannot carry 263, as for MotionDiffuse)."""
    torch.manual_seed(0)
    cfg = FineMotionDiffuseConfig(**{**TINY, "motion_dim": 24})
    model, diffusion = FineMotionDiffuse(cfg), cfg.diffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 1, 24, generator=g).repeat(1, 48, 1) * 0.5
    mask = torch.ones(16, 48, dtype=torch.bool)
    coarse = _coarse([f"motion number {i}" for i in range(16)])
    steps, step_mask = torch.randn(16, 3, 32, generator=g), torch.ones(16, 3, dtype=torch.bool)
    text = lambda: model.encode_text(*coarse, steps, step_mask)  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = masked_loss(diffusion, model, x0, mask, text(), torch.Generator().manual_seed(123))["loss"].item()
    for _ in range(300):
        loss = masked_loss(diffusion, model, x0, mask, text())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = masked_loss(diffusion, model, x0, mask, text(), torch.Generator().manual_seed(123))["loss"].item()
    assert after < 0.5 * before, (before, after)


# ----------------------------------------------------------------------------- runs on a finehumanml3d build
UNCHECKED = "jump"  # captions with this word never pass the check: their annotations end `failed`


def _answer(body):
    caption = caption_of(body["messages"])
    return "no steps today" if UNCHECKED in caption.lower() else fine_json_answer(caption, steps=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("finemotiondiffuse")
    source = write_sample_release(tmp / "rel", "humanml3d", 16, seed=0)
    with ChatServer(answer=_answer) as server:
        llm = LLMOptions(llm_base_url=server.base_url, llm_model="test-model")
        build(RECIPES["finehumanml3d"].config(source, tmp / "out", FineHumanML3DOptions(llm=llm), progress=False))
    return tmp / "out"


def _cfg(built, out, **kw):
    kw = {"progress": False, **kw}
    return TrainConfig(data=str(built), out=str(out), batch_size=8, lr=1e-3, num_workers=0, times=1,
                       log_every=1, model=dict(PRESETS["tiny"].model, diffusion_steps=50), **kw)


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "fmd"
    train(_cfg(built, run, epochs=2), text_encoder=HashedTextEncoder())
    return run


def test_the_build_has_checked_and_fallback_annotations(built):
    fine = read_fine_column(built, "train")
    table = datasets.load_from_disk(str(built))["train"]
    captions = [a["caption"] for row in table["annotations"] for a in row]
    flat = [steps for row in fine for steps in row]
    assert len(flat) == len(captions) and any(flat) and any(s is None for s in flat)
    for caption, steps in zip(captions, flat):
        assert (steps is None) == (UNCHECKED in caption.lower()), caption
        assert steps is None or len(steps) == 3


def test_training_counts_the_fallbacks_and_saves_a_fine_run(built, trained, capsys):
    state = load_checkpoint(trained, FORMAT)
    assert state["epoch"] == 2 and state["model_config"]["max_steps"] == 4
    assert state["model_config"]["pooled_dim"] == 32 and state["text_encoder"]["identity"] == "hashed:0"
    assert json.loads((trained / "config.json").read_text())["format"] == "models.finemotiondiffuse/1"
    assert any("step_attention" in key for key in state["model"])
    train(_cfg(built, trained.parent / "announced", epochs=1, progress=True, max_steps=1),
          text_encoder=HashedTextEncoder())
    err = capsys.readouterr().err
    assert "captions with checked steps" in err and "fall back to the coarse caption" in err


def test_resume_is_exact(built, trained, tmp_path):
    run = tmp_path / "resumed"
    train(_cfg(built, run, epochs=1), text_encoder=HashedTextEncoder())
    train(_cfg(built, run, epochs=2, resume=True), text_encoder=HashedTextEncoder())
    a, b = load_checkpoint(trained, FORMAT)["model"], load_checkpoint(run, FORMAT)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_generate_with_steps_from_the_call_or_the_build(built, trained):
    generator = load(trained, "cpu", text_encoder=HashedTextEncoder(), respacing="10", method="ddim")
    assert isinstance(generator, FineGenerator)
    steps = [["The person stands upright.", "They step forward with the left foot.", "They stop."], None]
    motions = generator.generate(["a person walks", "someone waves"], [40, 52], seed=0, steps=steps)
    assert [m.shape for m in motions] == [(40, D), (52, D)] and all(np.isfinite(m).all() for m in motions)
    assert generator.fallbacks == 1                                    # "someone waves" had no steps
    known = generator.use_build(built, "test")
    table = datasets.load_from_disk(str(built))["test"]
    checked = {a["caption"] for row in table["annotations"] for a in row if UNCHECKED not in a["caption"].lower()}
    assert known >= len(checked) > 0


def test_a_build_without_fine_steps_is_refused_in_one_sentence(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"annotations": [[{"caption": "walk"}]]})}).save_to_disk(
        str(tmp_path / "b"))
    with pytest.raises(DataError, match="finehumanml3d recipe"):
        read_fine_column(tmp_path / "b", "train")


def test_registered_with_the_cli(trained, tmp_path):
    out = subprocess.run([sys.executable, "-m", "models", "--help"], capture_output=True, text=True, check=True)
    assert "finemotiondiffuse" in out.stdout
    out = subprocess.run([sys.executable, "-m", "models", "train", "finemotiondiffuse", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--preset" in out.stdout and "fusion_layers" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "models", "generate", "--run", str(trained), "--text", "walk", "--out",
                          str(tmp_path / "m.npy"), "--set", "steps=3"], capture_output=True, text=True)
    assert bad.returncode == 1 and "drop_first_last=VALUE" in bad.stderr
