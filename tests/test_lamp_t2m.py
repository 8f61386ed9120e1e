"""LaMP-T2M: the CPU tests of MODELS.md section 8 ("LaMP-T2M") on a frozen tiny random Q-Former, then
training (run folder, exact resume), the generator and the shared `generate` command on a tiny LaMP run
written to tmp_path (random weights: what `python -m models train lamp` writes)."""

import json

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.sample_release import write_sample_release
from models.base import load_checkpoint
from models.lamp.api import save_checkpoint as save_lamp
from models.lamp.pretrain import LaMP, LaMPConfig
from models.lamp.qformer import QFormerLM, qformer_config
from models.lamp.t2m import IGNORE, LaMPT2M, T2MConfig, cosine_schedule, guided_logits, masking, top_k_filter
from models.lamp.t2m_api import load
from models.lamp.t2m_data import TokenSamples, has_token_columns
from models.lamp.t2m_train import FORMAT, PRESETS, TrainConfig, learning_rate, train
from models.lamp.text import caption_vocabulary, write_vocabulary
from models.training.data import DataError, DataOptions, compute_stats
from models.vq.api import checkpoint_fingerprint, load as load_vq, save_checkpoint as save_vq
from models.vq.api import tokenize as vq_tokenize
from models.vq.model import VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

N, CODES, H, VOCAB = 16, 16, 32, 40


def tiny_model(seed: int = 0, **overrides) -> LaMPT2M:
    torch.manual_seed(seed)
    lm = QFormerLM(qformer_config(VOCAB, H, 2, 2, 64, 48, 2))
    cfg = T2MConfig(**{**dict(codebook_size=CODES, max_tokens=N, cond_width=H, memory_width=48, max_text_length=12,
                              token_dim=32, latent_dim=32, num_heads=2, num_layers=2, ff_dim=64), **overrides})
    return LaMPT2M(cfg, lm.bert, torch.randn(1, N, H) * 0.02)


def text(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, 12), generator=g)
    mask = torch.arange(12)[None] < torch.randint(3, 13, (batch, 1), generator=g)
    return ids.masked_fill(~mask, 0), mask


# ----------------------------------------------------------------------------- MODELS.md 8, LaMP-T2M
def test_masking_never_masks_pads_and_counts_on_the_cosine():
    cfg = T2MConfig(codebook_size=CODES, max_tokens=N)
    ids = torch.randint(0, CODES, (256, N))
    g = torch.Generator().manual_seed(3)
    full = torch.ones(256, N, dtype=torch.bool)
    _, labels, masked = masking(ids, full, cfg, g)
    r = torch.rand(256, generator=torch.Generator().manual_seed(3))  # masking's first draw
    expected = (cosine_schedule(r) * N).round().clamp(min=1)
    assert torch.equal(masked.sum(1).float(), expected)
    assert torch.equal(labels[masked], ids[masked]) and (labels[~masked] == IGNORE).all()

    lengths = torch.randint(1, N + 1, (256,))
    valid = torch.arange(N)[None] < lengths[:, None]
    inputs, labels, masked = masking(ids, valid, cfg, torch.Generator().manual_seed(4))
    assert not masked[~valid].any() and (inputs[~valid] == cfg.pad_id).all() and (labels[~valid] == IGNORE).all()
    assert (masked.sum(1) <= expected.new_tensor(N)).all() and masked.any(1).float().mean() > 0.5


def test_bert_remasking_fractions():
    cfg = T2MConfig(codebook_size=CODES, max_tokens=N)
    ids = torch.full((10_000, N), 3)
    inputs, _, masked = masking(ids, torch.ones_like(ids, dtype=torch.bool), cfg, torch.Generator().manual_seed(0))
    chosen = inputs[masked]
    as_mask = (chosen == cfg.mask_id).float().mean().item()
    unchanged = (chosen == 3).float().mean().item()       # kept, or a random code that drew 3 (1/16 of 10%)
    other = ((chosen != 3) & (chosen != cfg.mask_id)).float().mean().item()
    assert abs(as_mask - 0.9 * 0.88) < 0.01
    assert abs(other - 0.1 * 15 / 16) < 0.01
    assert abs(unchanged - (0.9 * 0.12 + 0.1 / 16)) < 0.01


@pytest.mark.parametrize("kind", ["causal_bool", "float_tril"])
def test_causal_mask_and_the_code_compat_mask(kind):
    model = tiny_model(attention_mask=kind).eval()
    ids = torch.randint(0, CODES, (2, N))
    padding = torch.zeros(2, N, dtype=torch.bool)
    cond = torch.randn(2, H)
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % CODES
    with torch.no_grad():
        a, b = model.logits(ids, cond, padding), model.logits(changed, cond, padding)
    if kind == "causal_bool":  # output i reads cond and tokens <= i only
        assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6) and not torch.allclose(a[:, 10:], b[:, 10:])
    else:  # the released code's float tril(ones) is an additive bias, not a mask: regression test documenting it
        assert (a[:, :10] - b[:, :10]).abs().max() > 1e-5


def test_key_padding_mask_hides_pads():
    model = tiny_model().eval()
    ids = torch.randint(0, CODES, (2, N))
    padding = torch.arange(N)[None].expand(2, N) >= 9
    cond, other = torch.randn(2, H), ids.clone()
    other[:, 9:] = (other[:, 9:] + 5) % CODES
    model.cfg.attention_mask = "float_tril"  # even the non-causal mask never reads pads
    with torch.no_grad():
        assert torch.allclose(model.logits(ids, cond, padding)[:, :9], model.logits(other, cond, padding)[:, :9],
                              atol=1e-6)


def test_classifier_free_guidance_forms():
    c, u = torch.randn(2, 4, CODES), torch.randn(2, 4, CODES)
    assert torch.allclose(guided_logits(c, u, 1.0, "code"), c, atol=1e-6)
    assert torch.allclose(guided_logits(c, u, 4.0, "paper"), guided_logits(c, u, 5.0, "code"), atol=1e-5)
    assert torch.allclose(guided_logits(c, u, 4.0, "paper"), 5 * c - 4 * u, atol=1e-5)
    model = tiny_model().eval()
    ids, padding, cond = torch.randint(0, CODES, (2, N)), torch.zeros(2, N, dtype=torch.bool), torch.randn(2, H)
    with torch.no_grad():
        assert torch.equal(model.guided(ids, cond, padding, 1.0, "code"), model.logits(ids, cond, padding))
        assert not torch.allclose(model.guided(ids, cond, padding, 4.0, "code"), model.logits(ids, cond, padding))
    kept = top_k_filter(torch.randn(3, 512), 0.9)
    assert (torch.isfinite(kept).sum(-1) == 52).all()


def test_generate_leaves_valid_codes_and_pads():
    model = tiny_model().eval()
    ids, mask = text(3)
    lengths = torch.tensor([16, 7, 1])
    out = model.generate(ids, mask, lengths, timesteps=3, generator=torch.Generator().manual_seed(0))
    valid = torch.arange(16)[None] < lengths[:, None]
    assert out.shape == (3, 16)
    assert ((out[valid] >= 0) & (out[valid] < CODES)).all()
    assert (out[~valid] == model.cfg.pad_id).all() and not (out == model.cfg.mask_id).any()
    again = model.generate(ids, mask, lengths, timesteps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_loss_falls_and_only_the_new_parts_train():
    model = tiny_model(dropout=0.0)
    ids = (torch.arange(N)[None].expand(16, N) // 2) % CODES   # a structured token pattern
    lengths = torch.randint(8, N + 1, (16,), generator=torch.Generator().manual_seed(2))
    text_ids, text_mask = text(16)
    frozen = {k: v.clone() for k, v in model.condition.bert.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(80):
        model.train()
        loss = model(ids, lengths, text_ids, text_mask, torch.Generator().manual_seed(step))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    assert all(torch.equal(v, model.condition.bert.state_dict()[k]) for k, v in frozen.items())
    assert model.condition.text2former.weight.requires_grad and not model.condition.query_tokens.requires_grad
    one = torch.ones(2, dtype=torch.long)  # one real token: most draws mask none of it, the loss stays finite
    draws = [model(ids[:2], one, text_ids[:2], text_mask[:2], torch.Generator().manual_seed(seed))["loss"]
             for seed in range(20)]
    assert all(torch.isfinite(loss) for loss in draws)


def test_condition_path_reads_the_text_through_the_queries():
    model = tiny_model().eval()
    ids, mask = text(2)
    with torch.no_grad():
        cond = model.encode_text(ids, mask)
        assert cond.shape == (2, H)
        assert not torch.allclose(cond, model.encode_text(*text(2, seed=5)))
        model.condition.query_tokens.data.add_(1.0)
        assert not torch.allclose(cond, model.encode_text(ids, mask))  # the queries are on the path


def test_schedule():
    cfg = TrainConfig(data="", out="", warmup_steps=10, lr=1.0, lr_milestone=100, lr_gamma=0.05)
    assert learning_rate(cfg, 0) == pytest.approx(1 / 11) and learning_rate(cfg, 50) == 1.0
    assert learning_rate(cfg, 100) == pytest.approx(0.05)


# ----------------------------------------------------------------------------- training and the generator
@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("t2m")
    run_build(write_sample_release(tmp / "rel", "humanml3d", 24, seed=0), tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def lamp_run(built, tmp_path_factory):
    """A tiny LaMP run folder with random weights (49 queries over a tiny VQ-VAE)."""
    from models.training.data import MotionDataset
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("lamp") / "lamp"
    run.mkdir()
    captions = MotionDataset(built, "train", stats=None)
    from models.lamp.text import load_tokenizer
    tok = load_tokenizer(write_vocabulary(caption_vocabulary(c for i in range(len(captions))
                                                             for c in captions.captions(i)), run / "vocab.txt"))
    stats = compute_stats(built, "train")
    vq = VQVAE(VQVAEConfig(motion_dim=len(stats.mean), width=32, code_dim=32, nb_code=CODES, depth=1))
    cfg = LaMPConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, hidden_size=32,
                     num_layers=2, num_heads=2, intermediate_size=64, encoder_width=48, motion_width=32,
                     codebook_size=CODES, embed_dim=32, max_text_length=16)
    vq_run = run.parent / "vq"
    save_vq(vq_run, model=vq, optimizer=None, stats=stats, epoch=1, step=1, train_config={}, data_options={})
    save_lamp(run, model=LaMP(cfg, vq), optimizer=None, stats=stats, epoch=1, step=1, train_config={},
              data_options={}, vq_fingerprint=checkpoint_fingerprint(vq_run))
    return run


def _cfg(built, lamp_run, out, **kw):
    return TrainConfig(data=str(built), out=str(out), lamp=str(lamp_run), batch_size=8, num_workers=0, progress=False,
                       log_every=1, lr=1e-3, warmup_steps=2, model=dict(PRESETS["tiny"].model), **kw)


@pytest.fixture(scope="module")
def trained(built, lamp_run, tmp_path_factory):
    return train(_cfg(built, lamp_run, tmp_path_factory.mktemp("runs") / "t2m", epochs=2))


def test_run_folder_and_exact_resume(built, lamp_run, trained, tmp_path):
    state = load_checkpoint(trained, FORMAT)
    assert state["epoch"] == 2 and state["model_config"]["max_tokens"] == 49
    assert state["model_config"]["cfg_scale"] == 4.0  # HumanML3D
    assert any(k.startswith("condition.bert.") for k in state["model"])
    assert any(k.startswith("encoder.") for k in state["vq"])
    lines = [json.loads(x) for x in (trained / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["kind"] == "epoch"] == [1, 2]
    assert all(x["val_loss"] > 0 for x in lines if x["kind"] == "epoch")  # the build's val split
    run = tmp_path / "resumed"
    train(_cfg(built, lamp_run, run, epochs=1))
    train(_cfg(built, lamp_run, run, epochs=2, resume=True))
    a, b = load_checkpoint(trained, FORMAT)["model"], load_checkpoint(run, FORMAT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_generator_returns_raw_motions_of_the_asked_lengths(trained):
    generator = load(trained, "cpu", timesteps=3)
    motions = generator.generate(["a person walks forward", "someone jumps"], [40, 61], seed=1)
    assert [m.shape for m in motions] == [(40, 263), (61, 263)]
    assert all(np.isfinite(m).all() for m in motions)
    again = generator.generate(["a person walks forward", "someone jumps"], [40, 61], seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(motions, again))
    assert load(trained, "cpu", cfg_scale=2.0, cfg_form="code").model.cfg.cfg_form == "code"


@pytest.fixture(scope="module")
def token_build(built, lamp_run, tmp_path_factory):
    """The sample release built with the LaMP run's VQ as --motion-tokenizer (motion_tokens, subclip_tokens)."""
    from datasets_build.recipes import RECIPES
    from datasets_build.recipes.options import MotionTokenOptions
    from datasets_build.recipes.release import ReleaseOptions

    options = ReleaseOptions(tokens=MotionTokenOptions(motion_tokenizer=str(lamp_run.parent / "vq"),
                                                       tokenizer_device="cpu"))
    out = tmp_path_factory.mktemp("tokens") / "built"
    run_build(built.parent / "rel", out, processors=RECIPES["humanml3d"].steps(options)[0])
    return out


def test_training_reads_the_motion_tokens_column(token_build, built, lamp_run, tmp_path):
    assert has_token_columns(token_build, "train") and not has_token_columns(built, "train")
    options = DataOptions.for_dataset("humanml3d", random_crop=False, caption="first")
    samples = TokenSamples(token_build, "train", options, 49)
    vq = load_vq(lamp_run.parent / "vq", "cpu")
    subclips = 0
    for i in range(len(samples)):
        item = samples[i]
        frames = options.crop_length(int(samples.samples.ends[i] - samples.samples.starts[i]), samples.samples.rng)
        expected = vq_tokenize(vq, np.asarray(samples.samples.raw_motion(i)))[:frames // 4]
        assert item["token_length"] == frames // 4 and item["ids"][:item["token_length"]].tolist() == expected.tolist()
        assert item["caption"] == samples.samples.captions(i)[0]
        subclips += int(samples.samples.prefix[i] > 0)
    assert subclips > 0  # sub-clips read their own subclip_tokens
    run = train(_cfg(token_build, lamp_run, tmp_path / "run", epochs=1, max_steps=2))
    assert load_checkpoint(run, FORMAT)["vq_fingerprint"] == checkpoint_fingerprint(lamp_run.parent / "vq")
    with pytest.raises(DataError, match="another tokenizer"):
        TokenSamples(token_build, "train", options, 49, vq_fingerprint="0123456789abcdef")


def test_command_line_with_the_token_column_turned_off(token_build, lamp_run, tmp_path, capsys):
    from models.lamp.t2m_train import main

    run = tmp_path / "run"
    assert main(["--preset", "tiny", "--data", str(token_build), "--lamp", str(lamp_run), "--out", str(run),
                 "--epochs", "1", "--max-steps", "1", "--quiet", "--set", "token_column=false",
                 "--set", "attention_mask=float_tril"]) == 0
    state = load_checkpoint(run, FORMAT)
    assert state["train_config"]["token_column"] is False and state["model_config"]["attention_mask"] == "float_tril"
    assert state["model_config"]["latent_dim"] == 32 and "trained LaMP-T2M" in capsys.readouterr().out
