"""MotionDiffuse: the CPU tests of MODELS.md §8 (tiny config), training, resume, generation, CLI.

A small deterministic text encoder (hashed words -> fixed random vectors) stands in for the frozen
CLIP; the model sees it through the same TextEncoder interface."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.sample_release import write_sample_release
from models.base import load_checkpoint
from models.motiondiffuse.api import FORMAT, DiffusionGenerator, load
from models.motiondiffuse.model import MotionDiffuse, MotionDiffuseConfig, masked_loss
from models.motiondiffuse.train import PRESETS, TrainConfig, train

TINY = dict(PRESETS["tiny"].model, token_dim=32, max_length=64)
D = 263


class HashedTextEncoder:
    name = "hashed"
    dim = token_dim = 32

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(256, self.token_dim, generator=g)
        self.identity = f"hashed:{seed}"

    def encode_tokens(self, texts, batch_size=256):
        ids = [[int(hashlib.md5(w.encode()).hexdigest(), 16) % 256 for w in t.lower().split()] or [0] for t in texts]
        width = max(len(i) for i in ids) + 1
        out, mask = np.zeros((len(texts), width, self.token_dim), np.float32), np.zeros((len(texts), width), bool)
        for k, i in enumerate(ids):
            out[k, :len(i)], mask[k, :len(i)] = self.table[i].numpy(), True
        return out, mask

    def encode(self, texts, batch_size=256):
        tokens, mask = self.encode_tokens(texts)
        return tokens.sum(1) / mask.sum(1, keepdims=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def _text(model, captions):
    tokens, mask = HashedTextEncoder().encode_tokens(captions)
    return model.encode_text(torch.from_numpy(tokens), torch.from_numpy(mask))


def _randomise_zero_layers(model):
    """Give the zero-initialised outputs random weights, so that every path reaches the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    return model


def _batch(b=4, t=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([64, 40, 52, 48][:b])
    mask = torch.arange(t)[None] < lengths[:, None]
    return torch.randn(b, t, D, generator=g), mask


def test_prediction_is_exactly_zero_at_initialisation():
    torch.manual_seed(0)
    model = MotionDiffuse(MotionDiffuseConfig(**TINY))
    x, mask = _batch()
    out = model(x, torch.tensor([0, 10, 50, 99]), mask, _text(model, ["a man walks"] * 4))
    assert out.shape == (4, 64, D) and out.abs().max().item() == 0.0


def test_padded_frames_change_neither_loss_nor_valid_outputs():
    torch.manual_seed(0)
    cfg = MotionDiffuseConfig(**TINY)
    model = _randomise_zero_layers(MotionDiffuse(cfg)).eval()
    diffusion = cfg.diffusion()
    x, mask = _batch()
    y = x.clone()
    y[~mask] = 100.0 * torch.randn(int((~mask).sum()), D)
    text = _text(model, ["a man walks", "jump", "a person waves both arms", "run"])
    with torch.no_grad():
        a = masked_loss(diffusion, model, x, mask, text, torch.Generator().manual_seed(3))["loss"]
        b = masked_loss(diffusion, model, y, mask, text, torch.Generator().manual_seed(3))["loss"]
        assert a.item() > 0 and a.item() == pytest.approx(b.item(), rel=1e-6)
        t = torch.tensor([5, 20, 60, 90])
        first = model.layers[0].sa_block
        emb = model.embedding(t, text["xf_proj"])
        h = lambda z: first(model.joint_embed(z) + model.sequence_embedding[None, :64], emb, mask)  # noqa: E731
        torch.testing.assert_close(h(x)[mask], h(y)[mask])
        torch.testing.assert_close(model(x, t, mask, text)[mask], model(y, t, mask, text)[mask])
    for efficient in (False,):  # the softmax (no_eff) attention masks padding too
        model = _randomise_zero_layers(MotionDiffuse(MotionDiffuseConfig(**{**TINY, "efficient_attention": efficient})))
        with torch.no_grad():
            torch.testing.assert_close(model(x, t, mask, text)[mask], model(y, t, mask, text)[mask])


def test_text_changes_the_embedding():
    torch.manual_seed(0)
    model = MotionDiffuse(MotionDiffuseConfig(**TINY))
    t = torch.tensor([7, 7])
    text = _text(model, ["a man walks forward", "a person jumps"])
    emb = model.embedding(t, text["xf_proj"])
    assert not torch.allclose(emb[0], emb[1])  # emb = time_emb + xf_proj: same t, other text
    torch.testing.assert_close(emb - text["xf_proj"], model.embedding(t, torch.zeros_like(text["xf_proj"])))


def test_loss_falls_on_16_samples():
    """The eps-MSE halves in 300 steps. Predicting eps needs the identity map of x_t through the
    latent, so this test uses 24 features (the tiny latent of 32 cannot carry 263 dimensions)."""
    torch.manual_seed(0)
    cfg = MotionDiffuseConfig(**{**TINY, "motion_dim": 24})
    model, diffusion = MotionDiffuse(cfg), cfg.diffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 1, 24, generator=g).repeat(1, 48, 1) * 0.5  # 16 learnable motions
    mask = torch.ones(16, 48, dtype=torch.bool)
    captions = [f"motion number {i}" for i in range(16)]
    tokens, tmask = (torch.from_numpy(a) for a in HashedTextEncoder().encode_tokens(captions))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    eval_g = lambda: torch.Generator().manual_seed(123)  # noqa: E731
    with torch.no_grad():
        before = np.mean([masked_loss(diffusion, model, x0, mask, model.encode_text(tokens, tmask), eval_g())["loss"].item()
                          for _ in range(1)])
    for _ in range(300):
        loss = masked_loss(diffusion, model, x0, mask, model.encode_text(tokens, tmask))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = masked_loss(diffusion, model, x0, mask, model.encode_text(tokens, tmask), eval_g())["loss"].item()
    assert after < 0.5 * before, (before, after)


# ----------------------------------------------------------------------------- runs on a build
@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("motiondiffuse")
    run_build(write_sample_release(tmp / "rel", "humanml3d", 16, seed=0), tmp / "out")
    return tmp / "out"


def _cfg(built, out, **kw):
    model = dict(PRESETS["tiny"].model, diffusion_steps=50)
    return TrainConfig(data=str(built), out=str(out), batch_size=8, lr=1e-3, num_workers=0, times=1,
                       progress=False, log_every=1, model=model, **kw)


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "md"
    train(_cfg(built, run, epochs=2), text_encoder=HashedTextEncoder())
    return run


def test_run_folder_and_normalisation_preset(trained):
    state = load_checkpoint(trained, FORMAT)
    assert state["epoch"] == 2 and state["model_config"]["feat_bias"] == 25.0
    assert state["model_config"]["motion_dim"] == D and state["text_encoder"]["identity"] == "hashed:0"
    config = json.loads((trained / "config.json").read_text())
    assert config["format"] == "models.motiondiffuse/1" and config["model_config"]["feat_bias"] == 25.0
    lines = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["kind"] == "epoch"] == [1, 2] and lines[-1]["kind"] == "run"
    stats = np.load(trained / "stats.npz")
    assert stats["std"].shape == (D,)


def test_resume_is_exact(built, trained, tmp_path):
    run = tmp_path / "resumed"
    train(_cfg(built, run, epochs=1), text_encoder=HashedTextEncoder())
    train(_cfg(built, run, epochs=2, resume=True), text_encoder=HashedTextEncoder())
    a, b = load_checkpoint(trained, FORMAT)["model"], load_checkpoint(run, FORMAT)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_generate_returns_finite_raw_motions(trained):
    generator = load(trained, "cpu", text_encoder=HashedTextEncoder())
    assert isinstance(generator, DiffusionGenerator) and generator.diffusion.num_timesteps == 50
    motions = generator.generate(["a person walks", "someone jumps"], [40, 52], seed=0)
    assert [m.shape for m in motions] == [(40, D), (52, D)] and all(np.isfinite(m).all() for m in motions)
    again = generator.generate(["a person walks", "someone jumps"], [40, 52], seed=0)
    np.testing.assert_array_equal(motions[0], again[0])
    ddim = load(trained, "cpu", text_encoder=HashedTextEncoder(), respacing="5", method="ddim")
    assert ddim.diffusion.num_timesteps == 5 and np.isfinite(ddim.generate(["walk"], [44], 1)[0]).all()


def test_registered_with_the_cli():
    out = subprocess.run([sys.executable, "-m", "models", "--help"], capture_output=True, text=True, check=True)
    assert "motiondiffuse" in out.stdout
    out = subprocess.run([sys.executable, "-m", "models", "train", "motiondiffuse", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--preset" in out.stdout and "feat_bias" in out.stdout and "--times" in out.stdout


def test_precomputed_token_features_fill_the_cache_trimmed(tmp_path):
    import datasets

    from datasets_build.text.feature_cache import TextFeatureCache
    from models.motiondiffuse.api import fill_from_build
    from models.training.data import DataError

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 77, 32)).astype(np.float16)
    rows = {"annotations": [[{"caption": "a man walks"}, {"caption": "he jumps"}], [{"caption": "she runs"}]],
            "text_token_features": [feats[:2].tolist(), feats[2:].tolist()],
            "text_token_lengths": [[4, 3], [5]]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "b"))
    cache = TextFeatureCache(HashedTextEncoder())
    assert fill_from_build(cache, tmp_path / "b", "train") == 3
    np.testing.assert_array_equal(cache.tokens["he jumps"], feats[1, :3])
    tokens, mask, _ = cache.batch(["she runs", "a man walks"])
    assert tokens.shape == (2, 5, 32) and mask.sum(1).tolist() == [5, 4]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"annotations": rows["annotations"]})}).save_to_disk(
        str(tmp_path / "c"))
    with pytest.raises(DataError, match="--token-features"):
        fill_from_build(cache, tmp_path / "c", "train")
