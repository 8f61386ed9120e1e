"""Captioning metrics: known values on small examples, BertScore F1(x, x) = 1 with a tiny local BERT,
the paper's BertScore settings chosen from the folder name, and a clear skip without POS tags."""

import numpy as np
import pytest

from models.eval.captioning import (
    CaptionMetricError, bertscore_f1, bertscore_setup, bleu, caption_matching, caption_metrics, caption_words,
    cider, rouge_l,
)

REFS = [["a man walks forward slowly", "a person walks ahead"], ["someone jumps up twice", "a person jumps"],
        ["a man waves his right hand", "the person waves"]]


def test_words_drop_punctuation_and_case():
    assert caption_words("A man walks, then TURNS left.") == ["a", "man", "walks", "then", "turns", "left"]


def test_identical_captions_score_the_maximum_and_unrelated_ones_less():
    same = [refs[0] for refs in REFS]
    scores = caption_metrics(same, REFS)
    assert scores["bleu_1"] == pytest.approx(1.0) and scores["bleu_4"] == pytest.approx(1.0)
    assert scores["rouge_l"] == pytest.approx(1.0)
    unrelated = ["green tables sing", "blue chairs dance loudly", "red lamps sleep"]
    worse = caption_metrics(unrelated, REFS)
    assert worse["bleu_1"] == 0.0 and worse["rouge_l"] == 0.0 and worse["cider"] < scores["cider"]


def test_known_values():
    # ROUGE-L: LCS("a man walks forward", "a man walks") = 3: P = 3/4, R = 1, F = 2PR / (P + R) = 6/7
    assert rouge_l(["a man walks forward"], [["a man walks"]]) == pytest.approx(6 / 7)
    # BLEU@1: 3 of 4 unigrams match, the brevity penalty is 1 (4 >= the closest reference, 3)
    assert bleu(["a man walks forward"], [["a man walks"]], 1) == pytest.approx(0.75)
    # CIDEr-D rewards the reference's n-grams: the exact caption beats a partial one
    assert cider(["a man walks forward slowly", "someone jumps up twice", "a man waves"], REFS) > \
        cider(["a man", "someone", "a man"], REFS)


def test_mismatched_inputs_are_one_sentence():
    with pytest.raises(CaptionMetricError, match="2 predicted captions for 3 reference lists"):
        caption_metrics(["a", "b"], REFS)
    with pytest.raises(CaptionMetricError, match="motion 1 has no reference caption"):
        bleu(["a", "b"], [["a"], []], 1)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    import torch

    from datasets_build.text.torch_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    words = "a man person walks forward jumps waves hand the someone up twice green tables sing slowly".split()
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=512).save_pretrained(folder)
    return folder


def test_bertscore_of_a_caption_with_itself_is_one(tiny_bert):
    setup = bertscore_setup(tiny_bert)
    assert setup.num_layers == 2 and setup.baseline is None and "not rescaled" in setup.note
    same = bertscore_f1(["a man walks forward", "someone jumps up twice"],
                        ["a man walks forward", "someone jumps up twice"], setup, device="cpu")
    np.testing.assert_allclose(same, 1.0, atol=1e-5)
    other = bertscore_f1(["green tables sing"], [["a man walks forward", "someone waves"]], setup, device="cpu")
    assert other[0] < 0.999


def test_the_papers_bertscore_settings_follow_the_folder_name(tmp_path):
    folder = tmp_path / "roberta-large"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    setup = bertscore_setup(folder)
    assert setup.num_layers == 17 and setup.idf and setup.baseline and setup.baseline.endswith("roberta-large.tsv")
    with pytest.raises(CaptionMetricError, match="no config.json"):
        bertscore_setup(tmp_path / "missing")


def test_caption_matching_says_why_it_is_skipped():
    class NoTagger:
        pass

    reason = caption_matching(["a man walks"], [np.zeros((40, 263), np.float32)], evaluator=None, nlp=None) \
        if __import__("models.eval.captioning", fromlist=["pos_tagger"]).pos_tagger() is None else None
    if reason is not None:
        assert "en_core_web_sm" in reason and "not installed" in reason
    few = caption_matching(["a man walks"], [np.zeros((40, 263), np.float32)], evaluator=None, nlp=NoTagger())
    assert "fewer than one group of 32" in few
