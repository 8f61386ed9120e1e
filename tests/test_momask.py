"""MoMask host: the CPU tests of MODELS.md §8 ("MoMask host" row, tiny config), training, resume, generation.

A small deterministic pooled text encoder (hashed words -> fixed random vectors, averaged) stands in for
the frozen CLIP; the model sees it through the same TextEncoder interface (`encode`, `dim`, `identity`)."""

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
from models.momask.api import FORMAT, MoMaskError, MoMaskGenerator, load
from models.momask.model import MaskTransformer, MoMaskConfig, ResidualTransformer, lengths_to_mask, q_schedule
from models.momask.sampling import SamplingSettings, generate_base, generate_residual, top_k_filter
from models.momask.train import PRESETS, TrainConfig, train
from models.vq.model import VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

K, C, Q, E, D = 16, 32, 3, 32, 263
TINY = dict(PRESETS["tiny"].model, nb_code=K, code_dim=C, num_quantizers=Q, text_dim=E, max_tokens=16)


class HashedPooledEncoder:
    name = "hashed"
    dim = token_dim = E

    def __init__(self, seed: int = 0):
        self.table = torch.randn(256, E, generator=torch.Generator().manual_seed(seed)).numpy()
        self.identity = f"hashed:{seed}"

    def encode(self, texts, batch_size=256):
        rows = [[int(hashlib.md5(w.encode()).hexdigest(), 16) % 256 for w in t.lower().split()] or [0] for t in texts]
        return np.stack([self.table[r].mean(0) for r in rows]).astype(np.float32)


def _models(dropout=0.0):
    torch.manual_seed(0)
    cfg = MoMaskConfig(**{**TINY, "dropout": dropout})
    return MaskTransformer(cfg), ResidualTransformer(cfg)


# ----------------------------------------------------------------------------- §8 behaviour
def test_mask_transformer_is_bidirectional_and_hides_pads():
    mask, _ = _models()
    mask.eval()
    ids, cond = torch.randint(0, K, (2, 12)), torch.randn(2, E)
    pad = ~lengths_to_mask(torch.tensor([12, 8]), 12)
    base = mask(ids, cond, pad)
    later = ids.clone()
    later[:, 7] = (later[:, 7] + 1) % K                     # a later valid token changes earlier outputs
    assert not torch.allclose(mask(later, cond, pad)[:, 0], base[:, 0])
    padded = ids.clone()
    padded[1, 8:] = torch.randint(0, K, (4,))               # pads of sample 1 change nothing valid
    out = mask(padded, cond, pad)
    torch.testing.assert_close(out[1, :8], base[1, :8], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0], base[0], rtol=0, atol=1e-6)


def test_training_masks_only_valid_positions_with_bert_remasking():
    mask, _ = _models()
    torch.manual_seed(0)
    ids = torch.randint(0, K, (4000, 16))
    lengths = torch.randint(4, 17, (4000,))
    inputs, labels, pad = mask.mask_inputs(ids, lengths)
    masked = labels >= 0
    assert not (masked & pad).any() and (inputs[pad] == mask.pad_id).all()
    assert torch.equal(labels[masked], ids[masked])  # padded rows may get 0 (count over the padded n)
    full = lengths == 16                                    # no padding: round(cos(pi r / 2) n) >= 1 masked
    counts = masked[full].sum(1)
    assert counts.min() >= 1 and counts.max() <= 16 and abs(counts.float().mean() / 16 - 2 / np.pi) < 0.05
    became_mask = (inputs == mask.mask_id)[masked].float().mean()
    kept_or_random = 1 - became_mask
    assert abs(became_mask - 0.9 * 0.88) < 0.02 and abs(kept_or_random - (0.1 + 0.9 * 0.12)) < 0.02


def test_q_schedule_draws_every_residual_layer_and_favours_early_ones():
    torch.manual_seed(0)
    q = q_schedule(20000, 1, 6)
    assert q.min() == 1 and q.max() == 5 and set(q.tolist()) == {1, 2, 3, 4, 5}
    counts = torch.bincount(q)[1:]
    assert counts[0] > counts[-1]
    assert (q_schedule(100, 1, 2) == 1).all()              # Q = 2: layer 1 only


def test_residual_shares_output_projection_with_next_token_embedding():
    _, residual = _models()
    weights = residual.output_weights()
    assert weights.shape == (Q - 1, K, C)
    assert torch.equal(weights[0], residual.token_embed_weight[1, :K])
    separate = ResidualTransformer(MoMaskConfig(**{**TINY, "share_weight": False}))
    assert separate.output_weights().shape == (Q - 1, K, C) and not hasattr(separate, "last_proj_weight")


def test_residual_history_sums_lower_layers_and_hides_pads():
    _, residual = _models()
    residual.eval()
    ids = torch.randint(0, K, (2, 10, Q))
    q = torch.tensor([1, 2])
    history = residual.history(ids, q)
    w = residual.token_embed_weight
    torch.testing.assert_close(history[0], w[0][ids[0, :, 0]])
    torch.testing.assert_close(history[1], w[0][ids[1, :, 0]] + w[1][ids[1, :, 1]])
    pad = ~lengths_to_mask(torch.tensor([10, 6]), 10)
    cond = torch.randn(2, E)
    base = residual(history, q, cond, pad)
    noisy = history.clone()
    noisy[1, 6:] += 5.0
    torch.testing.assert_close(residual(noisy, q, cond, pad)[1, :6], base[1, :6], rtol=0, atol=1e-6)


def test_generate_gives_all_layers_with_minus_one_on_pads_and_decodes():
    mask, residual = _models()
    mask.eval(), residual.eval()
    lengths, cond = torch.tensor([10, 7, 3]), torch.randn(3, E)
    settings = SamplingSettings(steps=4)
    g = torch.Generator().manual_seed(0)
    base = generate_base(mask, cond, lengths, settings, g)
    ids = generate_residual(residual, base, cond, lengths, settings, g)
    valid = lengths_to_mask(lengths, 10)
    assert ids.shape == (3, 10, Q) and torch.equal(ids[..., 0], base)
    assert (ids[~valid] == -1).all() and ((ids[valid] >= 0) & (ids[valid] < K)).all()
    g = torch.Generator().manual_seed(0)                    # the same seed gives the same ids
    again = generate_residual(residual, generate_base(mask, cond, lengths, settings, g), cond, lengths, settings, g)
    assert torch.equal(again, ids)
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(motion_dim=D, width=32, code_dim=C, nb_code=K, depth=1, quantizer="residual",
                           num_quantizers=Q)).eval()
    assert vq.decode(ids).shape == (3, 4 * 10, D)          # -1 (pads) add no code


def test_guidance_scale_one_is_the_conditional_logits_and_top_k_keeps_ten_percent():
    mask, _ = _models()
    mask.eval()
    logits = top_k_filter(torch.randn(2, 5, 512), 0.9)
    assert (torch.isfinite(logits).sum(-1) == 52).all()
    lengths, cond = torch.tensor([6]), torch.randn(1, E)
    cond_only = generate_base(mask, cond, lengths, SamplingSettings(steps=3, cond_scale=1.0),
                              torch.Generator().manual_seed(3))
    assert cond_only.shape == (1, 6) and (cond_only >= 0).all()


@pytest.mark.parametrize("stage", ["mask", "residual"])
def test_loss_falls_on_16_samples(stage):
    mask, residual = _models()
    model = mask if stage == "mask" else residual
    torch.manual_seed(1)
    ids, lengths, cond = torch.randint(0, K, (16, 16, Q)), torch.randint(8, 17, (16,)), torch.randn(16, E)
    ids = ids[..., 0] if stage == "mask" else ids
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(2)
    with torch.no_grad():
        before = np.mean([model.loss(ids, lengths, cond)["loss"].item() for _ in range(10)])
    for _ in range(150):
        loss = model.loss(ids, lengths, cond)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = np.mean([model.loss(ids, lengths, cond)["loss"].item() for _ in range(10)])
    assert after < 0.6 * before, (before, after)


# ----------------------------------------------------------------------------- runs on a build
@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("momask")
    run_build(write_sample_release(tmp / "rel", "humanml3d", 16, seed=0), tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def tokenizer(built, tmp_path_factory):
    from models.vq.train import PRESETS as VQ_PRESETS, TrainConfig as VQTrain, train as train_vq

    run = tmp_path_factory.mktemp("vq") / "rvq"
    model = dict(VQ_PRESETS["tiny"].model, quantizer="residual", num_quantizers=Q)
    train_vq(VQTrain(data=str(built), out=str(run), epochs=1, batch_size=16, lr=1e-3, warmup_steps=2, milestones="",
                     window_size=32, num_workers=0, progress=False, max_steps=3, model=model))
    return run


def _cfg(built, tokenizer, out, stage, **kw):
    return TrainConfig(data=str(built), out=str(out), tokenizer=str(tokenizer), stage=stage, batch_size=8,
                       lr=1e-3, warmup_steps=2, milestones="", num_workers=0, progress=False, log_every=1,
                       model=dict(PRESETS["tiny"].model), **kw)


@pytest.fixture(scope="module")
def trained(built, tokenizer, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "momask"
    for stage in ("mask", "residual"):
        train(_cfg(built, tokenizer, run, stage, epochs=2), text_encoder=HashedPooledEncoder())
    return run


def test_run_folder_holds_both_stages(trained, tokenizer):
    mask, residual = load_checkpoint(trained, FORMAT), load_checkpoint(trained / "residual", FORMAT)
    assert mask["stage"] == "mask" and residual["stage"] == "residual" and mask["epoch"] == residual["epoch"] == 2
    assert mask["model_config"]["num_quantizers"] == Q and mask["model_config"]["text_dim"] == E
    assert mask["tokenizer"]["fingerprint"] == residual["tokenizer"]["fingerprint"]
    assert json.loads((trained / "config.json").read_text())["format"] == "models.momask/1"
    lines = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["kind"] == "epoch"] == [1, 2] and lines[-1]["kind"] == "run"
    assert all(np.isfinite(r["val_loss"]) for r in lines if r["kind"] == "epoch")  # the build's val split


def test_resume_is_exact(built, tokenizer, trained, tmp_path):
    run = tmp_path / "resumed"
    train(_cfg(built, tokenizer, run, "residual", epochs=1), text_encoder=HashedPooledEncoder())
    train(_cfg(built, tokenizer, run, "residual", epochs=2, resume=True), text_encoder=HashedPooledEncoder())
    a, b = load_checkpoint(trained / "residual", FORMAT)["model"], load_checkpoint(run / "residual", FORMAT)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_generate_returns_raw_motions_of_the_asked_lengths(trained):
    generator = load(trained, "cpu", text_encoder=HashedPooledEncoder(), steps=3)
    assert isinstance(generator, MoMaskGenerator) and generator.residual is not None
    motions = generator.generate(["a person walks", "someone jumps"], [40, 50], seed=0)
    assert [m.shape for m in motions] == [(40, D), (50, D)] and all(np.isfinite(m).all() for m in motions)
    np.testing.assert_array_equal(motions[1], generator.generate(["a person walks", "someone jumps"], [40, 50], 0)[1])
    ids = generator.generate_ids(["walk"], [5], seed=1)
    assert ids.shape == (1, 5, Q) and (ids >= 0).all()
    base_only = load(trained, "cpu", text_encoder=HashedPooledEncoder(), residual=False)
    assert (base_only.generate_ids(["walk"], [5], 1)[..., 1:] == -1).all()
    with pytest.raises(MoMaskError):
        load(trained, "cpu", text_encoder=HashedPooledEncoder(seed=1))  # another text encoder


def test_registered_with_the_cli():
    out = subprocess.run([sys.executable, "-m", "models", "train", "momask", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--stage" in out.stdout and "--tokenizer" in out.stdout and "cond_drop_mask" in out.stdout


def test_stored_motion_tokens_are_read_when_the_tokenizer_matches(built, tokenizer, tmp_path):
    import datasets

    from datasets_build.recipes import RECIPES
    from datasets_build.recipes.options import MotionTokenOptions
    from datasets_build.recipes.release import ReleaseOptions
    from models.momask.data import TokenSamples, stored_tokens_match
    from models.training.data import DataOptions, MotionDataset
    from models.vq.api import load as load_vq, tokenize

    options = ReleaseOptions(tokens=MotionTokenOptions(motion_tokenizer=str(tokenizer), tokenizer_device="cpu"))
    out = tmp_path / "tokens"
    run_build(built.parent / "rel", out, processors=RECIPES["humanml3d"].steps(options)[0])
    vq = load_vq(tokenizer, "cpu")
    assert stored_tokens_match(str(out), vq.fingerprint) and not stored_tokens_match(str(built), vq.fingerprint)
    assert not stored_tokens_match(str(out), "0" * 16)
    samples = MotionDataset(str(out), "train", stats=vq.stats,
                            options=DataOptions.for_dataset("humanml3d", random_crop=False, caption="first"))
    tokens = TokenSamples(samples, 4, 49)
    for index in range(min(6, len(samples))):  # whole samples (sub-clips included): the stored ids are tokenize's
        item, motion = tokens[index], samples.raw_motion(index)
        n = len(motion) // 4
        assert item["length"] == 4 * n and item["caption"] == samples.captions(index)[0]
        np.testing.assert_array_equal(item["ids"][:n], tokenize(vq, motion))
        assert (item["ids"][n:] == 0).all()
    assert len(datasets.load_from_disk(str(out))["train"][0]["motion_tokens"][0]) == Q
    run = tmp_path / "run"
    train(_cfg(out, tokenizer, run, "residual", epochs=1, max_steps=2), text_encoder=HashedPooledEncoder())
    assert load_checkpoint(run / "residual", FORMAT)["step"] == 2


def test_generator_decodes_a_single_codebook_tokenizer_and_crops_to_the_asked_lengths():
    from datasets_build.motion.normalizer import Normalizer

    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(motion_dim=D, width=32, code_dim=C, nb_code=K, depth=1)).eval()
    vq.stats = Normalizer(np.zeros(D, np.float32), np.ones(D, np.float32))
    mask = MaskTransformer(MoMaskConfig(**{**TINY, "num_quantizers": 1}))
    generator = MoMaskGenerator(mask, None, vq, HashedPooledEncoder(), torch.device("cpu"), SamplingSettings(steps=2))
    assert generator.generate_ids(["walk"], [4], 0).shape == (1, 4, 1)
    motions = generator.generate(["a person walks", "jumps"], [13, 8], seed=0)
    assert [m.shape for m in motions] == [(13, D), (8, D)] and all(np.isfinite(m).all() for m in motions)
