"""MATE (models/mate): MODELS.md section 8's "MATE" row on CPU, the triplets of a mate-shaped build,
training with exact resume, the artefact and its `mate:RUN` plug-in, and the localisation picture."""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.sample_release import write_sample_release

pytestmark = pytest.mark.usefixtures("one_thread")

from models.mate.model import Mate, MateConfig, WordAttention, attention_prior, cross_loss, info_nce  # noqa: E402
from models.mate.text import make_text_tower  # noqa: E402

WORDS = ["walk", "run", "jump", "turn", "wave", "kick", "sit", "stand", "crouch", "spin",
         "left", "right", "forward", "back", "arm", "leg", "hand", "slowly", "quickly", "circle"]


def tiny_config(**overrides) -> MateConfig:
    values = {"motion_dim": 263, "max_length": 64, "latent_dim": 32, "encoder_layers": 1, "decoder_layers": 1,
              "num_heads": 2, "ff_dim": 64, "word_heads": 2, "dropout": 0.0, "num_prototypes": len(WORDS),
              "token_width": 32, "sentence_width": 32, "prior_weight": 1.0, "temperature": 0.07}
    return MateConfig(**{**values, **overrides})


def tiny_model(seed: int = 0, **overrides) -> Mate:
    torch.manual_seed(seed)
    model = Mate(tiny_config(**overrides), make_text_tower("clip-tiny"))
    model.init_prototypes(WORDS)
    return model


def triplets(n: int = 16, seed: int = 0, frames: int = 48) -> dict:
    """n synthetic triplets: two-word captions of the 20-word vocabulary, the first word sampled."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randperm(len(WORDS), generator=g)[:n] % len(WORDS)
    second = (first + 1 + torch.randint(0, len(WORDS) - 1, (n,), generator=g)) % len(WORDS)
    captions = [f"a person does {WORDS[a]} then {WORDS[b]}" for a, b in zip(first.tolist(), second.tolist())]
    lemma_sets = [{a, b} for a, b in zip(first.tolist(), second.tolist())]
    lengths = torch.randint(frames // 2, frames + 1, (n,), generator=g)
    mask = torch.arange(frames)[None] < lengths[:, None]
    return {"motion": torch.randn(n, frames, 263, generator=g) * mask[..., None], "mask": mask,
            "caption": captions, "word": [WORDS[a] for a in first.tolist()], "lemma": first,
            "seg_start": torch.zeros(n, dtype=torch.long), "seg_end": lengths // 2,
            "has_segment": torch.ones(n, dtype=torch.bool),
            "contains": torch.tensor([[int(l) in s for l in first.tolist()] for s in lemma_sets]),
            "same_caption": torch.tensor([[a == b for b in captions] for a in captions])}


# ----------------------------------------------------------------------------- section 8, MATE row
def test_a_step_changes_only_the_embedding_rows_of_the_batch_tokens():
    from models.mate.train import TrainConfig, make_optimizer

    model = tiny_model()
    tower = model.text
    allowed = tower.token_ids([f"a person does {w} then" for w in WORDS])
    tower.set_trainable_rows(sorted(allowed))
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    batch = triplets(4)
    optimizer = make_optimizer(model, TrainConfig(data="", out="", lr=1e-2, embedding_lr=1e-2, weight_decay=0.1))
    loss = model.losses(batch)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    table = "token_embedding.weight"
    changed = set(torch.nonzero((tower.token_embedding.weight != before[table]).any(1)).flatten().tolist())
    present = tower.token_ids(batch["caption"] + batch["word"])
    assert changed and changed <= present & allowed
    assert not changed & set(tower.special_ids)
    for name, value in tower.named_parameters():
        if name != table:
            assert torch.equal(value, before[name]), name
    assert all(not p.requires_grad for n, p in tower.named_parameters() if n != table)
    assert not tower.training  # the frozen LM stays in eval mode
    model.train()
    assert not tower.training


def test_prior_is_one_at_the_centre_and_exp_minus_half_at_the_segment_ends():
    start, end = torch.tensor([10, 0]), torch.tensor([30, 8])
    prior = attention_prior(start, end, 40)
    assert prior.shape == (2, 40)
    assert prior[0, 20].item() == pytest.approx(1.0)
    assert prior[0, 10].item() == pytest.approx(math.exp(-0.5))
    assert prior[0, 30].item() == pytest.approx(math.exp(-0.5))
    assert prior[0, 0].item() == pytest.approx(math.exp(-0.5 * 4), rel=1e-5)  # over all frames
    inside = attention_prior(start, end, 40, "gaussian_inside")
    assert inside[0, 5].item() == 0 and inside[0, 20].item() == pytest.approx(1.0)
    binary = attention_prior(start, end, 40, "binary")
    assert binary[0, 10:31].eq(1).all() and binary[0, :10].eq(0).all() and binary[0, 31:].eq(0).all()
    assert attention_prior(start, end, 40, "none").eq(0).all()
    assert attention_prior(start, end, 40, has_segment=torch.tensor([True, False]))[1].eq(0).all()


def test_lambda_zero_leaves_the_keys_unchanged_and_the_prior_moves_attention():
    frames, prior = torch.randn(2, 40, 32), attention_prior(torch.tensor([10, 0]), torch.tensor([30, 8]), 40)
    assert torch.equal(WordAttention(tiny_config(prior_weight=0.0)).keys(frames, prior), frames)
    with_prior = WordAttention(tiny_config(prior_weight=1.0)).keys(frames, prior)
    assert torch.allclose(with_prior[0, 20], 2 * frames[0, 20]) and not torch.equal(with_prior, frames)


def test_losses_are_finite_and_prototype_logits_are_b_by_k():
    model = tiny_model()
    batch = triplets(16)
    losses = model.losses(batch)
    assert set(losses) == {"loss", "word", "self", "cross", "align", "sent", "rec"}
    assert all(torch.isfinite(v) for v in losses.values())
    out = model.attend(batch["word"], batch["motion"], batch["mask"], batch["seg_start"], batch["seg_end"],
                       batch["has_segment"])
    assert model.prototype_logits(out["word_motion"]).shape == (16, len(WORDS))
    assert out["weights"].shape == (16, 48)
    assert out["weights"][~batch["mask"]].abs().max() == 0  # padded frames get no attention
    total = losses["rec"] + losses["word"] + losses["sent"]
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-5)


def test_cross_loss_is_zero_for_orthogonal_features_and_align_is_symmetric():
    B, d = 4, 16
    own = torch.eye(d)[:B]                                      # f^{m_i}_{w_i} in dims 0..3
    grid = torch.eye(d)[B:2 * B][None].repeat(B, 1, 1)          # every other feature in dims 4..7
    negatives = ~torch.eye(B, dtype=torch.bool)
    assert cross_loss(own, grid, negatives).item() == 0.0
    # motion i's other words now share f^{m_i}_{w_i}'s direction: |cos| = 1/sqrt(2) on the first term, 0 on the second
    assert cross_loss(own, grid + own[:, None], negatives).item() == pytest.approx(0.5 / math.sqrt(2))
    a, b = torch.randn(8, d), torch.randn(8, d)
    same = torch.zeros(8, 8, dtype=torch.bool)
    same[0, 3] = same[3, 0] = True
    assert info_nce(a, b, 0.07, same).item() == pytest.approx(info_nce(b, a, 0.07, same).item(), rel=1e-6)
    # the same-lemma pair is no negative: changing b[3] leaves row 0's term alone
    moved = b.clone()
    moved[3] = a[0] * 10
    assert info_nce(a, moved, 0.07, same).item() != pytest.approx(info_nce(a, moved, 0.07).item())


def test_word_loss_falls_on_16_triplets():
    model = tiny_model(seed=1)
    model.text.set_trainable_rows(sorted(model.text.token_ids(WORDS)))
    batch = triplets(16, seed=3)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(60):
        losses = model.losses(batch)
        first = losses["word"].item() if first is None else first
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert model.losses(batch)["word"].item() < 0.6 * first


# ----------------------------------------------------------------------------- a mate-shaped build
def split_caption(caption: str) -> list[str]:
    import re

    return [p for p in re.split(r",? (?:and )?(?:then|afterwards|finally) |, and |, ", caption.rstrip(".")) if p]


def add_mate_columns(built, tmp_path):
    """The mate recipe's columns on a plain sample build (lemmas = the release tokens, sub-texts
    split at 'then', segments of equal length): the schema the real recipe writes, quickly."""
    build = datasets.load_from_disk(str(built))
    lemmas = sorted({t for split in build.values() for anns in split["annotations"] for a in anns
                     for t in a["tokens"]})
    index = {lemma: k for k, lemma in enumerate(lemmas)}

    def columns(row):
        row_lemmas, ids, subtexts, segmentation = [], [], [], []
        for a in row["annotations"]:
            row_lemmas.append(list(a["tokens"]))
            ids.append([index[t] for t in a["tokens"]])
            texts = split_caption(a["caption"])
            start, end = a["start_frame"], a["end_frame"] or row["length"]
            bounds = np.linspace(start, end, len(texts) + 1).astype(int)
            subtexts.append({"status": "checked", "texts": texts})
            segmentation.append({"status": "ok", "segments": [
                {"text": t, "start_frame": int(s), "end_frame": int(e)} for t, s, e in zip(texts, bounds, bounds[1:])]})
        return {"lemmas": row_lemmas, "lemma_ids": ids, "subtexts": subtexts, "segmentation": segmentation}

    out = tmp_path / "mate"
    build.map(columns).save_to_disk(str(out))
    (out / "vocabulary").mkdir()
    (out / "vocabulary" / "vocabulary.json").write_text(json.dumps(index))
    stop = {"a", "the", "and", "then", "to", "with"}
    datasets.Dataset.from_dict({"lemma": lemmas, "stop_word": [x in stop for x in lemmas]}).save_to_disk(
        str(out / "vocabulary"))
    return out


@pytest.fixture(scope="module")
def mate_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mate-model")
    root = write_sample_release(tmp / "rel", "humanml3d", 8, seed=5)
    run_build(root, tmp / "built")
    return add_mate_columns(tmp / "built", tmp)


def test_triplets_carry_a_vocabulary_word_and_its_segment(mate_build):
    from models.mate.data import TripletDataset, collate_triplets, surface_word
    from models.training.data import DataOptions

    ds = TripletDataset(mate_build, "train", stats=None, options=DataOptions(min_length=1, shorter_crop_prob=0.0,
                                                                                random_crop=False))
    assert len(ds) > 0 and ds.has_segmentation
    seen_segment = False
    for i in range(len(ds)):
        item = ds[i]
        assert item["lemma"] in item["lemma_set"] and ds.lemmas[item["lemma"]] not in {"a", "the", "and", "then"}
        assert 0 <= item["seg_start"] < item["seg_end"] <= item["length"]
        seen_segment |= bool(item["has_segment"]) and item["seg_end"] - item["seg_start"] < item["length"]
    assert seen_segment  # multi-action captions get a part of the motion
    batch = collate_triplets([ds[i] for i in range(4)])
    assert batch["contains"].shape == (4, 4) and batch["contains"].diagonal().all()
    assert surface_word("a man walks forward", "walk") == "walks"
    assert surface_word("someone waves", "wave") == "waves"
    assert surface_word("a man ran", "run") == "run"


def test_train_resume_exact_artefact_and_localization(mate_build, tmp_path):
    from models.mate import api, localization, train

    args = ["--data", str(mate_build), "--preset", "tiny", "--text-encoder", "clip-tiny", "--device", "cpu",
            "--quiet", "--batch-size", "8", "--set", "max_length=200"]
    assert train.main([*args, "--out", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    from models.mate.data import TripletDataset

    steps = len(TripletDataset(mate_build, "train", stats=None, options=train.data_options("humanml3d"))) // 8
    # interrupted after the first epoch (the cosine schedule is that of 2 epochs), then resumed
    assert train.main([*args, "--out", str(tmp_path / "resumed"), "--epochs", "2", "--max-steps", str(steps)]) == 0
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert train.main([*args, "--out", str(tmp_path / "resumed"), "--epochs", "2", "--resume"]) == 0
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("text.transformer") for k in a)  # frozen layers are not saved
    lines = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert {"self", "cross", "align", "sent", "rec"} <= set(lines[0])
    artefact = np.load(tmp_path / "straight" / "aligned_embeddings.npz")
    run = api.load(tmp_path / "straight", "cpu")
    table = run.model.text.embedding.weight.detach()
    base = make_text_tower("clip-tiny").embedding.weight.detach()
    changed = torch.nonzero((table != base).any(1)).flatten().numpy()
    assert len(changed) > 0 and np.array_equal(artefact["row_ids"], changed)
    assert np.array_equal(artefact["rows"], table[changed].numpy()) and str(artefact["base_encoder"]) == "clip-tiny"

    row = datasets.load_from_disk(str(mate_build))["train"][0]
    k = next(i for i, s in enumerate(row["subtexts"]) if len(s["texts"]) > 1)
    word = next(t for t in row["lemmas"][k] if t not in {"a", "the", "and", "then"})
    out = tmp_path / "att.png"
    assert localization.main(["--run", str(tmp_path / "straight"), "--data", str(mate_build), "--id", row["id"],
                              "--word", word, "--annotation", str(k), "--out", str(out), "--device", "cpu"]) == 0
    assert out.stat().st_size > 1000
    result = localization.localize(str(tmp_path / "straight"), str(mate_build), row["id"], word, k, "cpu")
    assert result["attention"].sum() == pytest.approx(1.0, abs=1e-4)
    assert result["prior"].max() == pytest.approx(1.0, abs=0.02) and result["segment"] is not None


# ----------------------------------------------------------------------------- the plug-in
def test_mate_run_changes_the_host_text_features_and_nothing_else(tmp_path):
    from datasets_build.text.encoders import TextEncoderError, load_text_encoder
    from models.mate.api import text_record, write_artefact
    from models.motiondiffuse.train import TrainConfig as HostConfig, PRESETS as HOST_PRESETS
    from models.motiondiffuse.model import MotionDiffuseConfig
    from models.training.config import parse_train_args

    tower = make_text_tower("clip-random")
    initial = tower.embedding.weight.detach().clone()
    walk = sorted(tower.token_ids(["walk"]))
    with torch.no_grad():
        tower.embedding.weight[walk] += 0.5  # what training does to the rows of its words
    write_artefact(tmp_path, tower, initial, text_record(tower, None))

    base, aligned = load_text_encoder("clip-random", device="cpu"), load_text_encoder(f"mate:{tmp_path}", device="cpu")
    assert aligned.identity != base.identity and aligned.name == f"mate:{tmp_path}"
    assert list(aligned.changed_rows) == walk
    aligned_state, base_state = aligned.model.state_dict(), base.model.state_dict()
    for name, value in base_state.items():
        if name != "token_embedding.weight" and not name.startswith("visual"):
            assert torch.equal(value, aligned_state[name]), name
    diff = (aligned_state["token_embedding.weight"] != base_state["token_embedding.weight"]).any(1)
    assert torch.nonzero(diff).flatten().tolist() == walk
    captions = ["a person walk forward", "someone jumps twice"]
    base_tokens, base_mask = base.encode_tokens(captions)
    new_tokens, new_mask = aligned.encode_tokens(captions)
    assert np.array_equal(base_mask, new_mask)
    assert not np.allclose(base_tokens[0], new_tokens[0]) and np.array_equal(base_tokens[1], new_tokens[1])
    assert not np.allclose(base.encode(captions)[0], aligned.encode(captions)[0])

    cfg = parse_train_args(["--data", "d", "--out", "o", "--preset", "tiny", "--text-encoder", f"mate:{tmp_path}"],
                           "motiondiffuse", "", HostConfig, MotionDiffuseConfig, HOST_PRESETS)
    assert cfg.text_encoder == f"mate:{tmp_path}"
    with pytest.raises(TextEncoderError, match="aligned_embeddings.npz"):
        load_text_encoder(f"mate:{tmp_path / 'nothing'}", device="cpu")
    with pytest.raises(ValueError, match="unknown text encoder"):
        load_text_encoder("mate:", device="cpu")


def test_distilbert_tower_trains_only_the_rows_of_its_batch(tmp_path):
    from datasets_build.text.torch_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "person", "does", "then", *WORDS, "##s"]
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(tmp_path))
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=len(vocab), dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    transformers.DistilBertModel(config).save_pretrained(str(tmp_path))
    tower = make_text_tower("distilbert", str(tmp_path))
    pieces, mask = tower.word_pieces(["walks"])
    assert pieces[mask].tolist() == [vocab.index("walk"), vocab.index("##s")]  # WE(w) averages both rows
    model = Mate(tiny_config(), tower)
    model.init_prototypes(WORDS)
    tower.set_trainable_rows(range(len(vocab)))
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    batch = triplets(4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.losses(batch)["loss"].backward()
    optimizer.step()
    table = "model.embeddings.word_embeddings.weight"
    changed = set(torch.nonzero((tower.embedding.weight != before[table]).any(1)).flatten().tolist())
    assert changed and changed <= tower.token_ids(batch["caption"] + batch["word"])
    assert all(torch.equal(p, before[n]) for n, p in tower.named_parameters() if n != table)
    with pytest.raises(ValueError, match="local model folder"):
        make_text_tower("distilbert")
