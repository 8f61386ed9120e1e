"""ReMoDiffuse: the CPU tests of MODELS.md §8 (tiny config, an in-memory database of 16 samples), the
retrieval database of a `remodiffuse` build, train / resume / generate in process (a hashed stand-in for the text
encoder) and the command-line registration."""

import json
import random

import numpy as np
import pytest
import torch

from datasets_build.core.errors import UserError
from datasets_build.motion.normalizer import Normalizer
from models.diffusion.schedule import space_timesteps
from models.remodiffuse.database import RetrievalDatabase, from_build, from_npz, hybrid_scores
from models.remodiffuse.mixture import CODE_CONSTANTS, CodeMixture, PaperMixture, complete, sample
from models.remodiffuse.model import ReMoDiffuse, ReMoDiffuseConfig, draw_conditions, masked_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

D, W, P, K = 263, 32, 77, 2
TINY = dict(motion_dim=D, max_length=64, latent_dim=32, num_heads=2, num_layers=2, ff_dim=64, time_embed_dim=128,
            token_dim=W, text_latent_dim=16, text_layers=1, text_heads=2, text_ff_dim=32, retrieval_motion_layers=1,
            retrieval_text_layers=1, retrieval_text_heads=2, retrieval_text_ff_dim=64, diffusion_steps=100,
            respacing="5,5")


def tiny_database(n: int = 16, seed: int = 0) -> RetrievalDatabase:
    rng = np.random.default_rng(seed)
    motions = rng.standard_normal((n, 64, D)).astype(np.float32)
    tokens = rng.standard_normal((n, P, W)).astype(np.float32)
    lengths = rng.choice(np.arange(40, 65, 4), n).astype(np.int64)
    keys = [f"{j:06d}#0" for j in range(n)]
    return RetrievalDatabase(rng.standard_normal((n, 8)).astype(np.float32), lengths, [f"c{j}" for j in range(n)],
                             keys, lambda j: motions[j], lambda j: tokens[j],
                             {key: np.array([(j + 1) % n, (j + 2) % n, (j + 3) % n]) for j, key in enumerate(keys)},
                             "memory")


def randomise_zero_layers(model):
    """Random weights in the zero-initialised outputs, so that every path reaches the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.abs().sum():
                p.normal_(0, 0.2)


def inputs(model, B=3, T=48, seed=0, db=None):
    g = torch.Generator().manual_seed(seed)
    db = db or tiny_database(seed=seed)
    x = torch.randn(B, T, D, generator=g)
    mask = torch.arange(T)[None] < torch.tensor([T, T - 8, T - 16][:B])[:, None]
    text = model.encode_text(torch.randn(B, 12, W, generator=g), torch.ones(B, 12, dtype=torch.bool))
    stats = Normalizer(np.zeros(D, np.float32), np.ones(D, np.float32))
    retrieval = model.encode_retrieval(*db.fetch(np.arange(B * K).reshape(B, K) % len(db), stats))
    return x, mask, text, retrieval


# ---------------------------------------------------------------------------------------------- retrieval
def test_hybrid_score_ranking_matches_the_definition_and_prefers_closer_lengths():
    db = tiny_database()
    query = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    lengths = np.array([40, 48, 52, 64])
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (
        db.features / np.linalg.norm(db.features, axis=1, keepdims=True)).T
    gamma = np.abs(db.lengths[None] - lengths[:, None]) / np.maximum(db.lengths[None], lengths[:, None])
    expected = cos * np.exp(-0.1 * gamma)
    np.testing.assert_allclose(hybrid_scores(query, lengths, db.features, db.lengths, 0.1), expected, rtol=1e-5)
    assert (db.search(query, lengths, 3, 0.1) == np.argsort(-expected, axis=1, kind="stable")[:, :3]).all()
    # same text feature, different lengths: the closer length wins
    twins = RetrievalDatabase(np.ones((3, 8), np.float32), np.array([80, 60, 44]), ["a"] * 3, ["a#0", "b#0", "c#0"],
                              None, None)
    assert twins.search(np.ones((1, 8), np.float32), [56], 3, 0.1).tolist() == [[1, 2, 0]]
    # the reference's rule skips equal lengths
    assert 1 not in twins.search(np.ones((1, 8), np.float32), [60], 2, 0.1, skip_equal_length=True)[0]


@pytest.fixture(scope="module")
def rmd_build(tmp_path_factory):
    """A remodiffuse build (text features with 77 token positions, neighbours, rareness) of a synthetic
    release, its text features from the hashed stand-in of clip-random (CLIP's random init alone takes
    tens of seconds)."""
    from conftest import run_build
    from datasets_build.synthetic.noise_release import write_synthetic_release
    from processors.neighbours.hybrid import RetrievalNeighbours
    from processors.neighbours.rareness import Rareness
    from processors.text.features import TextFeatures

    root = tmp_path_factory.mktemp("rmd")
    source = write_synthetic_release(root / "release", "humanml3d", 14, seed=1, captions=(1, 3))
    features = TextFeatures(encoder="clip-random", token_features=True, cache_dir=str(root / "cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("datasets_build.text.encoders.load_text_encoder", lambda *args, **kwargs: HashedClipStandIn())
        run_build(source, root / "built", processors=(features,), steps=(RetrievalNeighbours(), Rareness(plot=False)))
    return root / "built"


def test_database_of_a_build_never_retrieves_the_query_itself(rmd_build):
    db = from_build(rmd_build)
    assert len(db) == len(db.neighbours) > 16 and db.features.shape[1] == 512
    rng = random.Random(0)
    picked = db.training_neighbours(db.keys, db.lengths.tolist(), 2, 0.1, rng)
    own = np.array([key.split("#")[0] for key in db.keys])
    base = np.array([k.removeprefix("M") for k in own])
    for q, row in enumerate(picked):
        assert q not in row and all(own[j] != own[q] and base[j] != base[q] for j in row)
    reference = db.training_neighbours(db.keys, db.lengths.tolist(), 2, 0.1, rng, reference=True)
    assert (db.lengths[reference] != db.lengths[:, None]).all()  # the reference's proxy: no equal length
    tokens = db.tokens(0)
    assert tokens.shape == (77, 512)


def test_database_from_the_reference_npz(rmd_build, tmp_path):
    from datasets_build.exports.remodiffuse import export_remodiffuse

    export_remodiffuse(rmd_build, tmp_path / "db.npz", require_clip=False)
    built, npz = from_build(rmd_build), from_npz(tmp_path / "db.npz")
    assert npz.keys == built.keys and (npz.lengths == built.lengths).all()
    np.testing.assert_allclose(npz.motion(3)[:npz.lengths[3]], built.motion(3))
    np.testing.assert_allclose(npz.tokens(5), built.tokens(5).astype(np.float32))
    assert all(len(npz.neighbours[k]) >= 2 and built.index[k] not in npz.neighbours[k] for k in npz.keys)
    # a reference database without our keys: only the reference's online retrieval can serve training
    arrays = dict(np.load(tmp_path / "db.npz"))
    del arrays["train_keys"]
    np.savez(tmp_path / "reference.npz", **arrays)
    keyless = from_npz(tmp_path / "reference.npz")
    with pytest.raises(UserError, match="--reference-retrieval"):
        keyless.training_neighbours(built.keys[:3], [40, 40, 40], 2, 0.1, random.Random(0))
    picked = keyless.training_neighbours(built.keys[:3], built.lengths[:3], 2, 0.1, random.Random(0), reference=True,
                                         features=built.features[:3])
    assert (keyless.lengths[picked] != built.lengths[:3, None]).all()


def test_a_build_without_retrieval_columns_gets_one_sentence(tmp_path, release):
    from conftest import run_build

    out = tmp_path / "plain"
    run_build(release("humanml3d", 4), out)
    with pytest.raises(UserError, match="python -m datasets_build remodiffuse"):
        from_build(out)


# ---------------------------------------------------------------------------------------------- the model
def test_zero_initialised_output_and_retrieval_values():
    model = ReMoDiffuse(ReMoDiffuseConfig(**TINY))
    assert all(not layer.sa_block.value_retr.weight.abs().sum() for layer in model.layers)
    x, mask, text, retr = inputs(model)
    assert not model(x, torch.full((3,), 50), mask, text, retr, torch.full((3,), 11)).abs().sum()


@pytest.mark.parametrize("cond, text_free, retrieval_free", [(0, True, True), (1, False, True), (10, True, False)])
def test_condition_flags_make_the_output_bitwise_independent(cond, text_free, retrieval_free):
    torch.manual_seed(0)
    model = ReMoDiffuse(ReMoDiffuseConfig(**TINY)).eval()
    randomise_zero_layers(model)
    x, mask, text, retr = inputs(model, seed=0)
    _, _, text2, retr2 = inputs(model, seed=5, db=tiny_database(seed=7))
    t, c = torch.tensor([10, 500, 90]), torch.full((3,), cond)
    with torch.no_grad():
        base = model(x, t, mask, text, retr, c)
        other_text = model(x, t, mask, text2, retr, c)
        other_retr = model(x, t, mask, text, retr2, c)
    assert torch.equal(base, other_text) == text_free
    assert torch.equal(base, other_retr) == retrieval_free


def test_condition_dropout_is_independent_per_condition():
    c = draw_conditions(20000, 0.1, 0.1, torch.device("cpu"), torch.Generator().manual_seed(0))
    text, retr = (c % 10 > 0).float(), (c // 10 > 0).float()
    assert abs(text.mean() - 0.9) < 0.01 and abs(retr.mean() - 0.9) < 0.01
    assert abs((text * retr).mean() - 0.81) < 0.01  # independent draws


def test_x0_loss_falls_on_16_samples():
    torch.manual_seed(0)
    model = ReMoDiffuse(ReMoDiffuseConfig(**TINY))
    diffusion = model.cfg.diffusion()
    db = tiny_database()
    stats = Normalizer(np.zeros(D, np.float32), np.ones(D, np.float32))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 1, D, generator=g).expand(16, 40, D) * 0.5 + torch.randn(16, 40, D, generator=g) * 0.05
    mask = torch.arange(40)[None] < torch.tensor([40, 32] * 8)[:, None]
    tokens, token_mask = torch.randn(16, 6, W, generator=g), torch.ones(16, 6, dtype=torch.bool)
    fetched = db.fetch(np.stack([db.neighbours[k][:2] for k in db.keys]), stats)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for step in range(60):
        cond = draw_conditions(16, 0.1, 0.1, torch.device("cpu"), g)
        loss = masked_loss(diffusion, model, x0, mask, model.encode_text(tokens, token_mask),
                           model.encode_retrieval(*fetched), cond, g)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


# ---------------------------------------------------------------------------------------------- sampling
def test_fifty_respaced_steps():
    assert len(space_timesteps(1000, "15,15,8,6,6")) == 50
    assert ReMoDiffuseConfig().diffusion(ReMoDiffuseConfig().respacing).num_timesteps == 50


@pytest.mark.parametrize("dataset", ["humanml3d", "kitml"])
def test_code_mixture_sums_to_one_and_follows_the_released_schedule(dataset):
    mix, rng = CodeMixture.for_dataset(dataset), np.random.default_rng(0)
    seen = set()
    for t in range(1000):
        w = mix.coefficients(t, 0, rng)
        assert abs(sum(w) - 1) < 1e-9
        if t <= 100:
            assert w[:3] == CODE_CONSTANTS[dataset]["fine"]
        else:
            scale = t / 1000 * CODE_CONSTANTS[dataset]["coarse_scale"] + 1
            pair = "both+retrieval" if w[1] == 0 and w[3] == 0 else "text+none"
            seen.add(pair)
            kept = (w[0], w[2]) if pair == "both+retrieval" else (w[1], w[3])
            assert kept == pytest.approx((scale, 1 - scale))
    assert seen == {"both+retrieval", "text+none"}
    paper = PaperMixture(complete((2.0, -0.5, 0.5)), complete((0.3, 0.2, 0.9)))
    assert all(abs(sum(paper.coefficients(0, i, rng)) - 1) < 1e-12 for i in range(50))


def test_sample_runs_four_conditions_per_step_and_returns_the_shape(monkeypatch):
    torch.manual_seed(0)
    model = ReMoDiffuse(ReMoDiffuseConfig(**TINY)).eval()
    randomise_zero_layers(model)
    x, mask, text, retr = inputs(model)
    calls = []
    forward = model.forward

    def counting(x_t, t, m, te, r, cond):
        calls.append(sorted(cond.tolist()))
        return forward(x_t, t, m, te, r, cond)

    monkeypatch.setattr(model, "forward", counting)
    diffusion = model.cfg.diffusion(model.cfg.respacing)
    out = sample(model, diffusion, mask, text, retr, CodeMixture(), torch.randn(3, 48, D))
    assert out.shape == (3, 48, D) and torch.isfinite(out).all()
    assert len(calls) == diffusion.num_timesteps == 10
    assert all(c == sorted([11] * 3 + [1] * 3 + [10] * 3 + [0] * 3) for c in calls)


# ---------------------------------------------------------------------------------------------- commands
class HashedClipStandIn:
    """Stands in for the build's clip-random encoder (same name and 512-wide tokens, no 40 s CLIP start):
    hashed words -> fixed random vectors."""

    name, dim, token_dim, identity = "clip-random", 512, 512, "hashed-512:0"

    def __init__(self):
        self.table = torch.randn(256, 512, generator=torch.Generator().manual_seed(0)).numpy()

    def encode_tokens(self, texts, batch_size=256):
        ids = [[hash_word(w) for w in t.lower().split()][:77] or [0] for t in texts]
        out, mask = np.zeros((len(texts), 77, 512), np.float32), np.zeros((len(texts), 77), bool)
        for k, i in enumerate(ids):
            out[k, :len(i)], mask[k, :len(i)] = self.table[i], True
        return out, mask

    def encode(self, texts, batch_size=256):
        tokens, mask = self.encode_tokens(texts)
        return tokens.sum(1) / mask.sum(1, keepdims=True)


def hash_word(word: str) -> int:
    import hashlib

    return int(hashlib.md5(word.encode()).hexdigest(), 16) % 256


def train_config(data, out, **overrides):
    from models.remodiffuse.train import PRESETS, TrainConfig

    values = {**PRESETS["tiny"].train, "data": str(data), "out": str(out), "device": "cpu", "progress": False,
              "batch_size": 16, "iterations": 6, "epochs": 2, **overrides}
    return TrainConfig(**values, model=dict(PRESETS["tiny"].model))


@pytest.fixture(scope="module")
def trained(rmd_build, tmp_path_factory):
    from models.remodiffuse.train import train

    run = tmp_path_factory.mktemp("run") / "rmd"
    train(train_config(rmd_build, run), text_encoder=HashedClipStandIn())
    return run


def test_run_folder_and_log(trained):
    from models.base import load_checkpoint
    from models.remodiffuse.api import FORMAT

    state = load_checkpoint(trained, FORMAT)
    assert state["epoch"] == 2 and state["model_config"]["motion_dim"] == D
    assert state["model_config"]["dataset"] == "humanml3d"
    assert state["retrieval"]["data"] and (trained / "stats.npz").is_file()
    kinds = [json.loads(line)["kind"] for line in (trained / "log.jsonl").read_text().splitlines()]
    assert kinds.count("epoch") == 2 and kinds[-1] == "run"


def test_resume_is_exact(rmd_build, trained, tmp_path):
    from models.remodiffuse.train import train

    run = tmp_path / "resumed"
    train(train_config(rmd_build, run, epochs=1), text_encoder=HashedClipStandIn())
    train(train_config(rmd_build, run, resume=True), text_encoder=HashedClipStandIn())
    a, b = torch.load(run / "checkpoint.pt"), torch.load(trained / "checkpoint.pt")
    assert a["step"] == b["step"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_generate_returns_finite_raw_motions(trained):
    from models.remodiffuse.api import load

    generator = load(trained, "cpu", text_encoder=HashedClipStandIn())
    assert generator.diffusion.num_timesteps == 10  # the tiny preset's "5,5" chain
    motions = generator.generate(["a person walks forward", "someone jumps"], [40, 52], seed=0)
    assert [m.shape for m in motions] == [(40, D), (52, D)] and all(np.isfinite(m).all() for m in motions)
    again = generator.generate(["a person walks forward", "someone jumps"], [40, 52], seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(motions, again))


def test_registered_with_the_cli(capsys):
    from models.__main__ import main

    assert main(["--help"]) == 0 and "remodiffuse" in capsys.readouterr().out
    for argv, flag in ((["train", "remodiffuse", "--help"], "--reference-retrieval"),
                       (["evaluate", "remodiffuse", "--help"], "--mixture"),
                       (["tune-mixture", "--help"], "--grid-step")):
        with pytest.raises(SystemExit):
            main(argv)
        assert flag in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- evaluation helpers
def test_differentiable_frechet_distance_equals_fid():
    from models.eval.metrics import fid
    from models.remodiffuse.tune import frechet

    rng = np.random.default_rng(1)
    real, generated = rng.standard_normal((300, 6)), rng.standard_normal((80, 6)) * 1.5 + 0.3
    centred = real - real.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred / (len(real) - 1))
    root = torch.as_tensor(vectors @ np.diag(np.sqrt(values)) @ vectors.T)
    got = frechet(torch.as_tensor(real.mean(0)), root, torch.as_tensor(generated, dtype=torch.float64))
    assert float(got) == pytest.approx(fid(real, generated), rel=1e-6)


def test_saved_paper_mixture_is_read_back(tmp_path):
    from models.remodiffuse.mixture import load_mixture

    assert load_mixture(tmp_path, "kitml") == CodeMixture.for_dataset("kitml")
    PaperMixture(complete((1.5, -0.5, 0.0)), complete((0.4, 0.1, 0.2)), 10, 1.25).save(tmp_path)
    tuned = load_mixture(tmp_path, "kitml")
    assert isinstance(tuned, PaperMixture) and tuned.coarse == (1.5, -0.5, 0.0, 0.0) and tuned.fid == 1.25
    assert load_mixture(tmp_path, "kitml", "code") == CodeMixture.for_dataset("kitml")


def test_retrieval_text_feature_is_the_last_position_of_the_full_encoder():
    from models.remodiffuse.model import last_position

    torch.manual_seed(0)
    encoder = ReMoDiffuse(ReMoDiffuseConfig(**{**TINY, "retrieval_text_layers": 2})).retrieval.text_encoder.eval()
    tokens = torch.randn(4, P, W)
    torch.testing.assert_close(last_position(encoder, tokens), encoder(tokens)[:, -1:], rtol=1e-5, atol=1e-5)
