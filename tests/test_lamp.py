"""LaMP pretraining: the CPU tests of MODELS.md section 8 ("LaMP pretraining"), the BERT weight names,
training (CLI, resume), LaMP-Feat retrieval and `--evaluator lamp:RUN`.

The frozen motion encoder is models.vq's VQVAE at MODELS.md 8's tiny size with random weights; the text
side is a BertTokenizer over a small whole-word vocabulary written to tmp_path (no hub)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.sample_release import write_sample_release
from models.base import load_checkpoint
from models.lamp.api import FORMAT, LaMPEvaluator, load, load_evaluator, tokenize
from models.lamp.pretrain import LaMP, LaMPConfig, QueryCountMismatch
from models.lamp.qformer import QFormerLM, qformer_config
from models.lamp.text import caption_vocabulary, load_tokenizer, pre_caption, write_vocabulary
from models.lamp.train import PRESETS, TrainConfig, learning_rate, train
from models.training.data import compute_stats
from models.vq.api import save_checkpoint as save_vq
from models.vq.model import VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

D = 263
TINY_VQ = dict(motion_dim=D, width=32, code_dim=32, nb_code=16, depth=1, dilation_growth=3)
CAPTIONS = ["a person walks forward", "someone jumps up high", "a man turns left slowly", "the person runs in a circle",
            "a woman waves her right hand", "he kicks with the left leg", "a person sits down", "someone crawls on the floor",
            "a man throws a ball", "the person dances happily", "someone climbs the stairs", "a person bows politely",
            "he squats twice", "a woman stretches her arms", "the man spins around", "a person stumbles backwards"]


def tiny_config(tokenizer, frames: int = 64, **overrides) -> LaMPConfig:
    values = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                  hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, encoder_width=48,
                  num_query_tokens=frames // 4, motion_width=32, codebook_size=16, embed_dim=32, max_text_length=12,
                  max_motion_length=frames)
    return LaMPConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    return load_tokenizer(write_vocabulary(caption_vocabulary(CAPTIONS), folder / "vocab.txt"))


def make_model(tokenizer, frames: int = 64, seed: int = 0, **overrides) -> LaMP:
    torch.manual_seed(seed)
    return LaMP(tiny_config(tokenizer, frames, **overrides), VQVAE(VQVAEConfig(**TINY_VQ)))


def batch(tokenizer, n: int = 4, frames: int = 64, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    ids, mask = tokenize(tokenizer, CAPTIONS[:n], 12)
    return torch.randn(n, frames, D, generator=g) * scale, ids, mask


# ----------------------------------------------------------------------------- MODELS.md 8, LaMP pretraining
def test_four_losses_are_finite_and_summed(tokenizer):
    model = make_model(tokenizer)
    losses = model.losses(*batch(tokenizer))
    assert set(losses) == {"loss", "ptc", "ptm", "lm", "gen"}
    assert all(torch.isfinite(v) for v in losses.values())
    total = losses["ptc"] + losses["ptm"] + losses["lm"] + losses["gen"]
    assert torch.allclose(losses["loss"], total)
    losses["loss"].backward()
    assert model.query_tokens.grad is not None and model.temp.grad is not None
    assert all(p.grad is None for p in model.vq.parameters())  # the motion encoder is frozen


def test_unimodal_features_and_the_bidirectional_matching_pass(tokenizer):
    model = make_model(tokenizer).eval()
    motion, ids, mask = batch(tokenizer)
    other_motion, other_ids, other_mask = batch(tokenizer, seed=1)[0], *tokenize(tokenizer, CAPTIONS[4:8], 12)
    with torch.no_grad():
        f_t = model.text_features(ids, mask)
        f_m = model.motion_features(motion)
        assert not torch.allclose(model.motion_features(other_motion), f_m)  # the motion does reach f_m
        assert torch.equal(model.text_features(ids, mask), f_t)
        assert not torch.allclose(model.text_features(other_ids, other_mask), f_t)
        # L_ptc is computed from exactly these uni-modal features
        logits = model.contrastive_logits(f_m, f_t)
        labels = torch.arange(4)
        expected = (torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
                    + torch.nn.functional.cross_entropy(logits.t(), labels, label_smoothing=0.1)) / 2
        assert torch.allclose(model.losses(motion, ids, mask)["ptc"], expected, atol=1e-6)
        # the matching pass is bidirectional: there the queries do see the text
        memory = model.motion_memory(motion)
        queries = model.query_tokens.expand(4, -1, -1)

        def joint(i, m):
            full = torch.cat([torch.ones(4, 16, dtype=torch.bool), m], 1)
            return model.qformer.bert(i, full, query_embeds=queries, encoder_hidden_states=memory)[0][:, :16]

        assert not torch.allclose(joint(ids, mask), joint(other_ids, other_mask))
        alone, _ = model.query_pass(memory)
        assert not torch.allclose(joint(ids, mask), alone)


def test_lm_path_is_causal_and_reads_the_motion(tokenizer):
    model = make_model(tokenizer).eval()
    motion, ids, mask = batch(tokenizer)
    decoder_ids = ids.clone()
    decoder_ids[:, 0] = tokenizer.bos_token_id
    lm_mask = torch.cat([torch.ones(4, 16, dtype=torch.bool), mask], 1)
    with torch.no_grad():
        _, past = model.query_pass(model.motion_memory(motion))
        logits = model.qformer(decoder_ids, lm_mask, past)
        changed = decoder_ids.clone()
        j = 3
        changed[:, j] = (changed[:, j] + 1) % (len(tokenizer) - 1) + 1
        other = model.qformer(changed, lm_mask, past)
        assert torch.allclose(logits[:, :j], other[:, :j], atol=1e-6)
        assert not torch.allclose(logits[:, j:], other[:, j:])
        _, other_past = model.query_pass(model.motion_memory(batch(tokenizer, seed=1)[0]))
        assert not torch.allclose(model.qformer(decoder_ids, lm_mask, other_past), logits)


def test_generation_targets_are_the_vq_ids_and_the_query_count_must_match(tokenizer):
    model = make_model(tokenizer).eval()
    motion, ids, mask = batch(tokenizer)
    targets = model.vq.encode(motion)
    assert targets.shape == (4, model.cfg.num_query_tokens)
    with torch.no_grad():
        decoder_ids = ids.clone()
        decoder_ids[:, 0] = tokenizer.bos_token_id
        logits = model.motion_generation_logits(decoder_ids, mask)
        assert logits.shape == (4, 16, 16)
        expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), label_smoothing=0.1)
        assert torch.allclose(model.motion_generation_loss(motion, decoder_ids, mask), expected)
        with pytest.raises(QueryCountMismatch):
            model.motion_generation_loss(motion, decoder_ids, mask, targets[:, :8])
    wrong = make_model(tokenizer, num_query_tokens=8)  # 64 frames give 16 tokens
    with pytest.raises(QueryCountMismatch, match="16"):
        wrong.losses(motion, ids, mask)


def test_temperature_is_multiplicative_and_starts_at_log_1_over_007(tokenizer):
    model = make_model(tokenizer)
    assert math.isclose(model.temp.item(), math.log(1 / 0.07), rel_tol=1e-6)
    f_m = torch.nn.functional.normalize(torch.randn(3, 5, 32), dim=-1)
    f_t = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    sim = torch.einsum("iqe,je->ijq", f_m, f_t).max(-1).values
    assert torch.allclose(model.contrastive_logits(f_m, f_t), model.temp * sim)


def test_overfitting_16_pairs_lifts_in_batch_r_at_1(tokenizer):
    frames = 32
    # initializer_range 0.2: a 0.02-initialised tiny BERT starts with every [CLS] (and query) feature at cosine
    # 1.0000 to every other, which takes hundreds of steps to break; LaMP starts from pretrained BERT instead
    model = make_model(tokenizer, frames, dropout=0.0, initializer_range=0.2, max_text_length=9)
    # a random VQ encoder's features are ~0.1 wide; scaled inputs stand in for a trained encoder's spread
    motion = torch.randn(16, frames, D, generator=torch.Generator().manual_seed(0)) * 10.0
    ids, mask = tokenize(tokenizer, CAPTIONS, 9)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def r_at_1() -> float:
        model.eval()
        with torch.no_grad():
            t = model.retrieval_features(ids=ids, mask=mask, normalize=True)
            m = model.retrieval_features(motion=motion, normalize=True)
        model.train()
        return float((torch.argmax(t @ m.t(), 1) == torch.arange(16)).float().mean())

    before = r_at_1()
    first = model.losses(motion, ids, mask)["loss"].item()
    for _ in range(120):
        loss = model.losses(motion, ids, mask)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = r_at_1()
    assert before < 0.5 and after >= 0.8 and loss.item() < first, (before, after)


# ----------------------------------------------------------------------------- BERT names and weights
def _reference_bert(vocab: int, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """transformers' own BERT: a BertLMHeadModel's state dict and the hidden states of its encoder."""
    from datasets_build.text.torch_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # PyPI's torchvision does not load next to CPU torch
    from transformers import BertConfig, BertLMHeadModel, BertModel

    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    torch.manual_seed(0)
    lm = BertLMHeadModel(BertConfig(**{**config.to_dict(), "is_decoder": True})).eval()
    encoder = BertModel(config, add_pooling_layer=False).eval()
    encoder.load_state_dict({k[5:]: v for k, v in lm.state_dict().items() if k.startswith("bert.")})
    with torch.no_grad():
        encoder.embeddings.token_type_embeddings.weight.zero_()
        hidden = encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    return {"state": lm.state_dict(), "hidden": hidden}


def test_bert_state_dict_loads_and_matches_transformers_bert(tokenizer, tmp_path):
    vocab = len(tokenizer) - 1  # BERT's vocabulary; the Q-Former adds [DEC]
    ids, mask = tokenize(tokenizer, CAPTIONS[:3], 12)
    ids = ids.clamp(max=vocab - 1)
    reference = _reference_bert(vocab, ids, mask)
    state = reference["state"]
    qformer = QFormerLM(qformer_config(vocab + 1, 32, 2, 2, 64, 48, 2)).eval()
    report = qformer.load_bert(state)
    assert report["missing"] and all("crossattention" in k for k in report["missing"])
    assert report["unused"] == ["bert.embeddings.token_type_embeddings.weight"]  # BLIP-2's Q-Former has none
    layer = qformer.bert.encoder.layer[0]
    assert torch.equal(layer.intermediate_query.dense.weight, layer.intermediate.dense.weight)
    assert torch.equal(layer.output_query.LayerNorm.bias, layer.output.LayerNorm.bias)
    assert torch.equal(qformer.bert.embeddings.word_embeddings.weight[:vocab],
                       state["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(qformer.cls.predictions.decoder.weight, qformer.bert.embeddings.word_embeddings.weight)
    with torch.no_grad():  # the text-only pass is BERT's (token type embeddings zeroed: the Q-Former has none)
        ours = qformer.bert(ids, mask)[0]
    assert torch.allclose(ours[mask], reference["hidden"][mask], atol=1e-5)


def test_text_helpers():
    assert pre_caption('A man "walks"; then.. runs!') == "a man walks then runs"
    assert pre_caption(" ".join(["w"] * 40)).count("w") == 32
    words = caption_vocabulary(["A person walks.", "a person runs"])
    assert words[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and "walks" in words and "." not in words


def test_schedule_warms_up_then_follows_the_epoch_cosine():
    cfg = TrainConfig(data="", out="", epochs=10, lr=2e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=100)
    assert learning_rate(cfg, 0, 0) == pytest.approx(1e-6) and learning_rate(cfg, 0, 50) == pytest.approx(1.005e-4)
    assert learning_rate(cfg, 0, 500) == pytest.approx(2e-4)  # the whole first epoch warms up (capped)
    assert learning_rate(cfg, 1, 60) < 2e-4  # still warming up after the first epoch
    assert learning_rate(cfg, 5, 500) == pytest.approx(1e-5 + (2e-4 - 1e-5) * 0.5)
    assert learning_rate(cfg, 10, 10**6) == pytest.approx(1e-5)


# ----------------------------------------------------------------------------- runs on a build
@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("lamp")
    run_build(write_sample_release(tmp / "rel", "humanml3d", 24, seed=0), tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def vq_run(built, tmp_path_factory):
    """A VQ-VAE run folder with random tiny weights (what `python -m models train vqvae` writes)."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("vq") / "vq"
    save_vq(run, model=VQVAE(VQVAEConfig(**TINY_VQ)), optimizer=None, stats=compute_stats(built, "train"), epoch=1,
            step=1, train_config={}, data_options={})
    return run


def _cfg(built, vq_run, out, **kw):
    return TrainConfig(data=str(built), out=str(out), tokenizer=str(vq_run), batch_size=8, lr=1e-3, warmup_steps=2,
                       num_workers=0, progress=False, log_every=1, val_batches=2, model=dict(PRESETS["tiny"].model),
                       **kw)


@pytest.fixture(scope="module")
def trained(built, vq_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lamp"
    train(_cfg(built, vq_run, run, epochs=2))
    return run


def test_run_folder(trained):
    state = load_checkpoint(trained, FORMAT)
    assert state["epoch"] == 2 and state["model_config"]["num_query_tokens"] == 49
    assert state["vq_config"]["code_dim"] == 32 and any(k.startswith("vq.encoder.") for k in state["model"])
    lines = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and lines[-1]["kind"] == "run"
    assert all(math.isfinite(r[k]) for r in epochs for k in ("loss", "ptc", "ptm", "lm", "gen"))
    assert (trained / "vocab.txt").is_file() and (trained / "best" / "checkpoint.pt").is_file()


def test_resume_is_exact(built, vq_run, trained, tmp_path):
    run = tmp_path / "resumed"
    train(_cfg(built, vq_run, run, epochs=1))
    train(_cfg(built, vq_run, run, epochs=2, resume=True))
    a, b = load_checkpoint(trained, FORMAT)["model"], load_checkpoint(run, FORMAT)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_features_retrieval_and_the_lamp_evaluator(built, trained):
    from models.eval.protocol import EvaluationSet, GroundTruth, ProtocolOptions, evaluate_generation
    from models.eval.protocol import format_retrieval_table as format_table
    from models.lamp.retrieval import evaluate

    encoder = load(trained, "cpu", which="last")
    motion = np.random.default_rng(0).normal(size=(50, D)).astype(np.float32)
    assert encoder.encode_text(["a person walks"]).shape == (1, 32)
    assert encoder.encode_motion([motion, motion[:41]]).shape == (2, 32)
    results = evaluate(str(trained), str(built), "train", "cpu", batch_size=4, replications=3)
    assert {"t2m/R@1", "m2t/R@1", "t2m/MedR"} <= set(results["all"]) and "t2m/R@1/ci95" in results["batches of 4"]
    assert "motion->text" in format_table(results)
    evaluator = load_evaluator(trained, "cpu")
    assert isinstance(evaluator, LaMPEvaluator) and evaluator.cfg.dim_pose == D
    test = EvaluationSet(built, evaluator, "train")
    report = evaluate_generation({"Real motions": GroundTruth()}, test, ProtocolOptions(replications=2, batch_size=4))
    assert {"R@1", "MM-Dist", "FID"} <= set(report.results["Real motions"])


def test_cli_train_and_evaluate(built, vq_run, tmp_path, capsys):
    from models.__main__ import main

    run = tmp_path / "cli"
    assert main(["train", "lamp", "--data", str(built), "--tokenizer", str(vq_run), "--out", str(run), "--preset",
                 "tiny", "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    assert load_checkpoint(run, FORMAT)["train_config"]["preset"] == "tiny"
    capsys.readouterr()
    assert main(["evaluate", "lamp", "--run", str(run), "--data", str(built), "--split", "train", "--batch-size", "4",
                 "--replications", "2"]) == 0
    out = capsys.readouterr().out
    assert "text->motion" in out and "batches of 4" in out
    assert main(["train", "lamp", "--data", str(built), "--out", str(tmp_path / "x")]) == 1
    assert "--tokenizer VQ_RUN" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_registered_with_the_cli():
    out = subprocess.run([sys.executable, "-m", "models", "train", "lamp", "--help"], capture_output=True, text=True,
                         check=True)
    assert "--tokenizer" in out.stdout and "--bert" in out.stdout and "num_query_tokens" in out.stdout
