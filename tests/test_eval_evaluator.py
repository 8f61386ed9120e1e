"""Guo et al.'s evaluator (models.eval.evaluator): the word vectorizer (VIP POS one-hot, the 22-token
layout, GloVe files in the reference layout), the networks' shapes and reference key names, strict
loading of a checkpoint written with those names, the evaluator folder's files and their errors, the
order co_embed returns, padding, and a tiny matcher that overfits 16 pairs (MODELS.md section 8).

GloVe files are not available offline: the tests write small fake ones in the reference layout."""

import pickle

import numpy as np
import pytest
import torch

from datasets_build.core.errors import UserError
from models.eval.evaluator import (
    POS_ENUMERATOR, Evaluator, EvaluatorConfig, EvaluatorError, TextMotionMatcher, WordVectorizer, evaluator_stats,
    load_evaluator, token_layout,
)
from models.eval.train import MatchingModel
from models.training import loop

TINY = EvaluatorConfig(dim_movement_enc_hidden=16, dim_movement_dec_hidden=16, dim_movement_latent=16,
                       dim_text_hidden=16, dim_motion_hidden=32, dim_coemb_hidden=16)
WORDS = ["sos", "eos", "unk", "a", "person", "walk", "left", "hand", "wave", "the", "forward", "slowly", "jump"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def write_glove(folder, words=WORDS, dim=300, seed=0, numpy_ints=False):
    """Fake GloVe files in the reference layout: our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl."""
    folder.mkdir(parents=True, exist_ok=True)
    order = list(reversed(words))  # the index is a mapping, not the list order
    vectors = np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32)
    np.save(folder / "our_vab_data.npy", vectors)
    with open(folder / "our_vab_words.pkl", "wb") as f:
        pickle.dump(list(words), f)
    idx = {w: (np.int64(order.index(w)) if numpy_ints else order.index(w)) for w in words}
    with open(folder / "our_vab_idx.pkl", "wb") as f:
        pickle.dump(idx, f)
    return vectors, idx


def reference_state(cfg: EvaluatorConfig, seed: int = 0) -> dict:
    """A finest.tar written key by key with the reference's names and shapes (not from our modules)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    def gru(prefix, h, i):
        out = {}
        for suffix in ("", "_reverse"):
            out.update({f"gru.weight_ih_l0{suffix}": t(3 * h, i), f"gru.weight_hh_l0{suffix}": t(3 * h, h),
                        f"gru.bias_ih_l0{suffix}": t(3 * h), f"gru.bias_hh_l0{suffix}": t(3 * h)})
        return out

    def head(h, o):
        return {"output_net.0.weight": t(h, 2 * h), "output_net.0.bias": t(h), "output_net.1.weight": 1 + t(h),
                "output_net.1.bias": t(h), "output_net.3.weight": t(o, h), "output_net.3.bias": t(o),
                "hidden": t(2, 1, h)}

    d, hid, lat = cfg.dim_pose, cfg.dim_movement_enc_hidden, cfg.dim_movement_latent
    th, mh, co = cfg.dim_text_hidden, cfg.dim_motion_hidden, cfg.dim_coemb_hidden
    return {
        "movement_encoder": {"main.0.weight": t(hid, d - 4, 4), "main.0.bias": t(hid), "main.3.weight": t(lat, hid, 4),
                             "main.3.bias": t(lat), "out_net.weight": t(lat, lat), "out_net.bias": t(lat)},
        "text_encoder": {"pos_emb.weight": t(cfg.dim_word, 15), "pos_emb.bias": t(cfg.dim_word),
                         "input_emb.weight": t(th, cfg.dim_word), "input_emb.bias": t(th), **gru("", th, th),
                         **head(th, co)},
        "motion_encoder": {"input_emb.weight": t(mh, lat), "input_emb.bias": t(mh), **gru("", mh, mh), **head(mh, co)},
        "opt_text_encoder": {"state": {}, "param_groups": []}, "opt_motion_encoder": {"state": {}, "param_groups": []},
        "epoch": 12, "iter": 3456,
    }


def write_evaluator_folder(root, cfg=TINY, meta="meta", glove="glove", seed=0):
    """An evaluator folder laid out like the reference checkpoints (checkpoints/t2m)."""
    (root / "text_mot_match" / "model").mkdir(parents=True)
    state = reference_state(cfg, seed)
    torch.save(state, root / "text_mot_match" / "model" / "finest.tar")
    (root / meta).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.save(root / meta / "mean.npy", rng.normal(size=cfg.dim_pose).astype(np.float32))
    np.save(root / meta / "std.npy", rng.uniform(0.5, 2.0, cfg.dim_pose).astype(np.float32))
    write_glove(root / glove if glove else root.parent.parent / "glove")
    return state


# ----------------------------------------------------------------------------- words
def test_pos_one_hot_of_vip_words(tmp_path):
    vectors, idx = write_glove(tmp_path / "glove")
    v = WordVectorizer.load(tmp_path / "glove")

    def check(token, vector_word, pos_index):
        vec, ohot = v[token]
        np.testing.assert_array_equal(vec, vectors[idx[vector_word]])
        assert ohot.shape == (15,) and ohot.sum() == 1 and ohot[pos_index] == 1, (token, ohot)

    check("left/ADV", "left", 9)  # Loc_VIP overrides its spaCy POS
    check("walk/VERB", "walk", 12)  # Act_VIP
    check("hand/NOUN", "hand", 10)  # Body_VIP
    check("slowly/ADV", "slowly", 13)  # Desc_VIP
    check("forward/ADV", "forward", 9)
    check("person/NOUN", "person", POS_ENUMERATOR["NOUN"])  # in the vocabulary, not a VIP word
    check("the/DET", "the", 2)
    check("a/XYZ", "a", 14)  # an unknown POS tag is OTHER
    check("zebra/NOUN", "unk", 14)  # an unknown word: unk's vector and OTHER
    check("kick/VERB", "unk", 14)  # a VIP word missing from the vocabulary is still unknown
    assert len(POS_ENUMERATOR) == 15 and POS_ENUMERATOR["Loc_VIP"] == 9 and POS_ENUMERATOR["OTHER"] == 14


def test_the_22_token_layout():
    five = [f"w{i}/NOUN" for i in range(5)]
    laid, cap_len = token_layout(five)
    assert len(laid) == 22 and cap_len == 7
    assert laid[0] == "sos/OTHER" and laid[1:6] == five and laid[6] == "eos/OTHER" and set(laid[7:]) == {"unk/OTHER"}
    laid, cap_len = token_layout(five[:1] * 19)
    assert (len(laid), cap_len, laid[-2:]) == (22, 21, ["eos/OTHER", "unk/OTHER"])
    long = [f"w{i}/NOUN" for i in range(25)]
    laid, cap_len = token_layout(long)  # 20 tokens or more: cropped to 20, cap_len 22
    assert cap_len == 22 and laid == ["sos/OTHER", *long[:20], "eos/OTHER"]
    assert token_layout(long[:20])[1] == 22


def test_vectorizer_encodes_a_caption_and_reads_numpy_indices(tmp_path):
    vectors, idx = write_glove(tmp_path / "glove", numpy_ints=True)
    v = WordVectorizer.load(tmp_path / "glove")
    words, pos, cap_len = v.encode(["a/DET", "person/NOUN", "walk/VERB", "forward/ADV"])
    assert words.shape == (22, 300) and pos.shape == (22, 15) and cap_len == 6
    np.testing.assert_array_equal(words[0], vectors[idx["sos"]])
    np.testing.assert_array_equal(words[5], vectors[idx["eos"]])
    np.testing.assert_array_equal(words[6:], np.repeat(vectors[idx["unk"]][None], 16, 0))
    assert pos[3].argmax() == 12 and pos[4].argmax() == 9 and (pos[6:].argmax(1) == 14).all()
    batch = v.encode_batch([["a/DET"], ["person/NOUN", "jump/VERB"]])
    assert batch[0].shape == (2, 22, 300) and batch[2].tolist() == [3, 4]
    # our own runs write the same three files back
    v.save(tmp_path / "copy")
    again = WordVectorizer.load(tmp_path / "copy")
    np.testing.assert_array_equal(again["walk/VERB"][0], v["walk/VERB"][0])


def test_vocabulary_files_cannot_run_code(tmp_path):
    write_glove(tmp_path / "glove")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "glove" / "our_vab_idx.pkl", "wb") as f:
        pickle.dump({"unk": Evil()}, f)
    with pytest.raises(EvaluatorError, match="our_vab_idx.pkl cannot be read.*not allowed"):
        WordVectorizer.load(tmp_path / "glove")


# ----------------------------------------------------------------------------- networks and checkpoints
def test_module_shapes_and_reference_key_names():
    torch.manual_seed(0)
    matcher = TextMotionMatcher(TINY).eval()
    b, t = 16, 64
    words, pos = torch.randn(b, 22, 300), torch.zeros(b, 22, 15)
    pos[..., 14] = 1
    cap_lens = torch.arange(22, 22 - b, -1)
    motions, m_lens = torch.randn(b, t, 263), torch.full((b,), t)
    text, motion = matcher.co_embed(words, pos, cap_lens, motions, m_lens)
    assert text.shape == (16, 16) and motion.shape == (16, 16)
    assert matcher.movement_encoder(motions[..., :-4]).shape == (b, t // 4, 16)
    state = matcher.reference_state()
    assert {"main.0.weight", "main.3.weight", "out_net.weight"} <= state["movement_encoder"].keys()
    for name in ("text_encoder", "motion_encoder"):
        assert {"gru.weight_ih_l0_reverse", "output_net.3.weight", "output_net.1.weight", "hidden",
                "input_emb.weight"} <= state[name].keys()
    assert "pos_emb.weight" in state["text_encoder"] and state["motion_encoder"]["hidden"].shape == (2, 1, 32)
    paper = TextMotionMatcher(EvaluatorConfig())
    assert paper.motion_encoder.gru.hidden_size == 1024 and paper.text_encoder.input_emb.in_features == 300
    assert paper.movement_encoder.main[0].in_channels == 259  # foot contact dropped


def test_a_reference_checkpoint_loads_strictly(tmp_path):
    state = write_evaluator_folder(tmp_path / "checkpoints" / "t2m")
    evaluator = load_evaluator(tmp_path / "checkpoints" / "t2m")
    assert evaluator.cfg.dim_text_hidden == 16 and evaluator.cfg.dim_motion_hidden == 32 and evaluator.dim == 16
    loaded = evaluator.matcher.reference_state()
    for name in ("text_encoder", "motion_encoder", "movement_encoder"):
        assert loaded[name].keys() == state[name].keys()
        for key, value in state[name].items():
            assert torch.equal(loaded[name][key], value), (name, key)
    assert "GloVe our_vab" in evaluator.describe() and evaluator.dataset == "humanml3d"
    # a key of another name does not load
    broken = tmp_path / "broken"
    write_evaluator_folder(broken)
    state["text_encoder"]["gru.weight_ih_l0_backward"] = state["text_encoder"].pop("gru.weight_ih_l0_reverse")
    torch.save(state, broken / "text_mot_match" / "model" / "finest.tar")
    with pytest.raises(EvaluatorError, match="finest.tar: its text_encoder does not fit"):
        load_evaluator(broken)


def test_the_reference_repository_layout_is_found(tmp_path):
    root = tmp_path / "repo" / "checkpoints" / "kit"
    write_evaluator_folder(root, EvaluatorConfig(**{**TINY.__dict__, "dim_pose": 251}), meta="Comp_v6_KLD005/meta",
                           glove=None)  # GloVe at the repository root: checkpoints/kit/../../glove
    evaluator = load_evaluator(root)
    assert evaluator.dataset == "kitml" and evaluator.record["glove"] == str(tmp_path / "repo" / "glove")


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "text_mot_match" / "model" / "finest.tar").unlink(),
     "evaluator checkpoint .*finest.tar is missing"),
    (lambda r: (r / "meta" / "std.npy").unlink(), "evaluator statistics .*meta/std.npy are missing"),
    (lambda r: (r / "glove" / "our_vab_idx.pkl").unlink(), "word vector file .*our_vab_idx.pkl is missing"),
    (lambda r: np.save(r / "meta" / "mean.npy", np.zeros(7)), r"mean.npy have shape \(7,\); the checkpoint needs"),
    (lambda r: (r / "text_mot_match" / "model" / "finest.tar").write_bytes(b"not a torch file"),
     "evaluator checkpoint .*finest.tar cannot be read"),
    (lambda r: (r / "glove" / "our_vab_words.pkl").write_bytes(b"\x80\x04truncated"),
     "our_vab_words.pkl cannot be read"),
])
def test_a_missing_or_malformed_file_is_one_sentence_naming_it(tmp_path, damage, message):
    root = tmp_path / "eval"
    write_evaluator_folder(root)
    damage(root)
    with pytest.raises(EvaluatorError, match=message) as error:
        load_evaluator(root)
    assert isinstance(error.value, UserError) and "\n" not in str(error.value)
    with pytest.raises(EvaluatorError, match="evaluator folder .*nowhere does not exist"):
        load_evaluator(tmp_path / "nowhere")


def test_feature_bias_statistics():
    stats = evaluator_stats(np.zeros(263), np.full(263, 2.0))
    assert np.allclose(stats.std[:4], 0.4) and np.allclose(stats.std[-4:], 0.4) and np.allclose(stats.std[4:-4], 2.0)


# ----------------------------------------------------------------------------- embedding order and padding
@pytest.fixture
def evaluator(tmp_path):
    write_evaluator_folder(tmp_path / "eval")
    return load_evaluator(tmp_path / "eval")


def test_co_embed_returns_rows_by_motion_length(evaluator):
    """The collate sorts by cap_len (descending); the wrapper re-orders both embeddings by m_len
    (descending): row k of its output is input row align[k], align = reversed stable argsort."""
    rng = np.random.default_rng(0)
    tokens = [[f"{w}/NOUN" for w in rng.choice(WORDS[3:], n)] for n in (9, 7, 7, 4, 2)]
    lengths = [48, 64, 40, 64, 52]
    motions = [rng.normal(size=(n, 263)).astype(np.float32) for n in lengths]
    words, pos, cap_lens = evaluator.vectorizer.encode_batch(tokens)
    assert list(cap_lens) == sorted(cap_lens, reverse=True)  # already in the collate's order
    batch, m_lens = evaluator.normalise_motions(motions)
    with torch.no_grad():
        text, motion = evaluator.matcher.co_embed(torch.from_numpy(words), torch.from_numpy(pos),
                                                  torch.from_numpy(cap_lens), torch.from_numpy(batch),
                                                  torch.from_numpy(m_lens))
    align = [3, 1, 4, 0, 2]  # lengths 64 (row 3 before row 1: ties reversed), 64, 52, 48, 40
    np.testing.assert_allclose(text.numpy(), evaluator.embed_texts(tokens)[align], atol=1e-5)
    np.testing.assert_allclose(motion.numpy(), evaluator.embed_motions(motions)[align], atol=1e-5)


def test_motion_embeddings_do_not_depend_on_padding_or_batching(evaluator):
    rng = np.random.default_rng(1)
    lengths = [196, 195, 40, 41, 43, 64, 99, 150, 4, 7]
    motions = [rng.normal(size=(n, 263)).astype(np.float32) for n in lengths]
    ours = evaluator.embed_motions(motions)
    alone = np.concatenate([evaluator.embed_motions([m]) for m in motions])
    np.testing.assert_allclose(ours, alone, atol=1e-5)
    for motion, embedded in zip(motions, ours):  # the reference: normalise, pad to 196, read T // 4 tokens
        padded = np.zeros((1, 196, 263), np.float32)
        padded[0, :len(motion)] = (motion - evaluator.stats.mean) / evaluator.stats.std
        with torch.no_grad():
            ref = evaluator.matcher.encode_motion(torch.from_numpy(padded), torch.tensor([len(motion)]))
        np.testing.assert_allclose(embedded, ref[0].numpy(), atol=1e-5)
    with pytest.raises(EvaluatorError, match="motion 0 has 200 frames"):
        evaluator.embed_motions([np.zeros((200, 263), np.float32)])
    with pytest.raises(EvaluatorError, match=r"motion 0 has shape \(50, 10\)"):
        evaluator.embed_motions([np.zeros((50, 10), np.float32)])


def test_the_fast_movement_encoder_is_the_same_function():
    torch.manual_seed(0)
    encoder = TextMotionMatcher(EvaluatorConfig()).movement_encoder.eval()  # the paper's widths
    x = torch.randn(3, 96, 259)
    with torch.no_grad():
        np.testing.assert_allclose(encoder.forward_eval(x).numpy(), encoder(x).numpy(), atol=2e-5, rtol=1e-4)


def test_a_tiny_matcher_overfits_16_pairs():
    """MODELS.md 8 (5): Adam 1e-3, margin 10, 16 pairs (150 steps suffice here): the positive
    distance falls and every text finds its own motion."""
    torch.manual_seed(0)
    np.random.seed(0)
    matcher = TextMotionMatcher(EvaluatorConfig(**{**TINY.__dict__, "max_motion_length": 64}))
    matcher.movement_encoder.eval().requires_grad_(False)
    model = MatchingModel(matcher, 10.0)
    g = torch.Generator().manual_seed(0)
    words, pos = torch.randn(16, 22, 300, generator=g), torch.zeros(16, 22, 15)
    pos[..., 14] = 1
    cap_lens = torch.tensor(sorted(np.random.default_rng(0).integers(5, 22, 16), reverse=True))
    motions = torch.randn(16, 64, 263, generator=g)
    m_lens = torch.tensor(np.random.default_rng(1).choice([40, 48, 56, 64], 16))
    optimizers = [torch.optim.Adam(matcher.text_encoder.parameters(), 1e-3),
                  torch.optim.Adam(matcher.motion_encoder.parameters(), 1e-3)]
    first = None
    for _ in range(150):
        out = model(words, pos, cap_lens, motions, m_lens)
        first = first if first is not None else float(out["positive"].detach())
        loop.optimizer_step(out["loss"], [matcher.text_encoder, matcher.motion_encoder], optimizers, 0.5)
    with torch.no_grad():
        out = model(words, pos, cap_lens, motions, m_lens)
    assert float(out["positive"]) < 0.3 * first
    hits = (torch.cdist(out["text"], out["motion"]).argmin(1) == torch.arange(16)).float().mean()
    assert hits >= 0.8


def test_the_evaluator_checks_its_parts(evaluator):
    with pytest.raises(EvaluatorError, match="word vectors .* are 300-d; the evaluator needs 200-d"):
        Evaluator(TextMotionMatcher(EvaluatorConfig(**{**TINY.__dict__, "dim_word": 200})), evaluator.vectorizer,
                  evaluator.stats)
