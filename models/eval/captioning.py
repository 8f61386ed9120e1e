"""Motion-captioning metrics (MODELS.md §5.4, LaMP Table 4 after MotionGPT's M2T protocol) and BertScore.

    scores = caption_metrics(predicted, references)           # {"bleu_1", "bleu_4", "rouge_l", "cider"}
    f1 = bertscore_f1(predicted, references, model_dir)        # per caption, x100 when scaled
    table = caption_matching(predicted, motions, evaluator)    # R-precision top-1..3, MM-Dist (needs spaCy's
                                                               # English pipeline for POS tags; None without)

`references[i]` lists every ground-truth caption of motion i (the raw captions). Packages (the
`captioning` extra): nltk's corpus BLEU (no smoothing, as the NMT BLEU that nlgmetricverse wraps),
rouge-score's ROUGE-L F (best reference per caption), pycocoevalcap's CIDEr-D scorer (its PTB tokenizer
needs Java, so captions are tokenized here the way it treats plain captions: lower case, punctuation
dropped), bert-score from a LOCAL model folder (no hub): the paper's roberta-large at its layer 17
with idf weighting and the package's baseline rescaling when the folder is a model bert-score ships a
baseline for; any other folder uses its last layer without rescaling, which `BertScoreSetup.note` says.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datasets_build.core.errors import UserError
from datasets_build.text.torch_compat import ensure_torchvision_importable

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class CaptionMetricError(UserError, ValueError):
    """Inputs the captioning metrics cannot score (counts differ, no references, no model folder)."""


def caption_words(text: str) -> list[str]:
    """Lower-cased words with punctuation dropped: the tokens every n-gram metric here counts."""
    return _WORD.findall(text.lower())


def _check(predicted: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predicted) != len(references):
        raise CaptionMetricError(f"{len(predicted)} predicted captions for {len(references)} reference lists")
    if not predicted:
        raise CaptionMetricError("no captions to score")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise CaptionMetricError(f"motion {empty[0]} has no reference caption ({len(empty)} such)")


def bleu(predicted: Sequence[str], references: Sequence[Sequence[str]], order: int) -> float:
    """Corpus BLEU@order (uniform weights, no smoothing, brevity penalty against the closest reference)."""
    from nltk.translate.bleu_score import corpus_bleu

    _check(predicted, references)
    with warnings.catch_warnings():  # no n-gram overlap is a BLEU of 0, which nltk also warns about
        warnings.simplefilter("ignore", UserWarning)
        return float(corpus_bleu([[caption_words(r) for r in refs] for refs in references],
                                 [caption_words(p) for p in predicted], weights=(1.0 / order,) * order))


def rouge_l(predicted: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over captions of the ROUGE-L F-measure against its best reference."""
    from rouge_score.rouge_scorer import RougeScorer

    _check(predicted, references)
    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    return float(np.mean([scorer.score_multi(list(refs), pred)["rougeL"].fmeasure
                          for pred, refs in zip(predicted, references)]))


def cider(predicted: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D (pycocoevalcap), document frequencies from these references."""
    from pycocoevalcap.cider.cider import Cider

    _check(predicted, references)
    gts = {i: [" ".join(caption_words(r)) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(caption_words(p))] for i, p in enumerate(predicted)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def caption_metrics(predicted: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU@1, BLEU@4, ROUGE-L and CIDEr of predicted captions against each motion's references."""
    return {"bleu_1": bleu(predicted, references, 1), "bleu_4": bleu(predicted, references, 4),
            "rouge_l": rouge_l(predicted, references), "cider": cider(predicted, references)}


# ----------------------------------------------------------------------------- BertScore
@dataclass(frozen=True)
class BertScoreSetup:
    """How bert-score runs on a local model folder: the layer, idf weighting and baseline rescaling."""

    model_dir: str
    num_layers: int
    idf: bool
    baseline: str | None  # the package's baseline file for this model, or None: no rescaling

    @property
    def note(self) -> str:
        scaled = "rescaled with bert-score's baseline" if self.baseline else "not rescaled (no baseline file)"
        return (f"BertScore F1 of {Path(self.model_dir).name} layer {self.num_layers}, "
                f"{'idf-weighted' if self.idf else 'no idf'}, {scaled}")


def bertscore_setup(model_dir: str | os.PathLike, num_layers: int | None = None, idf: bool = True,
                    rescale: bool = True) -> BertScoreSetup:
    """The paper's settings where they apply: a folder named like a model bert-score knows (roberta-large:
    layer 17) takes that layer and its baseline; another folder its last layer, unscaled."""
    ensure_torchvision_importable()
    import bert_score
    from bert_score.utils import model2layers

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise CaptionMetricError(f"{folder} is not a local transformers model folder (no config.json): BertScore "
                                 f"needs one, e.g. a saved roberta-large")
    name = folder.name
    if num_layers is None:
        if name in model2layers:
            num_layers = int(model2layers[name])
        else:
            import json

            num_layers = int(json.loads((folder / "config.json").read_text()).get("num_hidden_layers", 1))
    baseline = Path(bert_score.__file__).parent / "rescale_baseline" / "en" / f"{name}.tsv"
    return BertScoreSetup(str(folder), num_layers, idf, str(baseline) if rescale and baseline.is_file() else None)


def bertscore_f1(predicted: Sequence[str], references: Sequence[str | Sequence[str]], setup: BertScoreSetup,
                 batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """Per-caption BertScore F1 (best reference where several are given), in [0, 1] (x100 for tables)."""
    ensure_torchvision_importable()
    import bert_score

    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    _check(predicted, refs)
    _, _, f1 = bert_score.score(list(predicted), refs, model_type=setup.model_dir, num_layers=setup.num_layers,
                                idf=setup.idf, rescale_with_baseline=setup.baseline is not None,
                                baseline_path=setup.baseline, lang="en", batch_size=batch_size, device=device,
                                verbose=False)
    return f1.numpy().astype(np.float64)


# ----------------------------------------------------------------------------- captions vs motions
SPACY_MODEL = "en_core_web_sm"


def pos_tagger(name: str = SPACY_MODEL) -> Any | None:
    """spaCy's English pipeline for `word/POS` tokens, or None when it is not installed."""
    try:
        import spacy
    except ImportError:
        return None
    if not spacy.util.is_package(name):
        return None
    return spacy.load(name, disable=["ner", "parser"])


def tag_captions(captions: Sequence[str], nlp: Any) -> list[list[str]]:
    """HumanML3D's text processing: `word/POS` per token, lemmas for nouns and verbs (but "left")."""
    out = []
    for doc in nlp.pipe([c.replace("-", "") for c in captions]):
        out.append([f"{(t.lemma_ if t.pos_ in ('NOUN', 'VERB') and t.text.lower() != 'left' else t.text).lower()}"
                    f"/{t.pos_}" for t in doc if not t.is_punct and not t.is_space])
    return out


def caption_matching(predicted: Sequence[str], motions: Sequence[np.ndarray], evaluator: Any, nlp: Any | None = None,
                     batch_size: int = 32, seed: int = 0) -> dict[str, float] | str:
    """R-precision top-1..3 and MM-Dist of predicted captions against their ground-truth motions under
    Guo's evaluator (groups of 32), or a sentence saying why they cannot be computed."""
    nlp = nlp if nlp is not None else pos_tagger()
    if nlp is None:
        return (f"caption R-precision and MM-Dist skipped: they need POS tags from spaCy's {SPACY_MODEL} pipeline, "
                f"which is not installed")
    if len(predicted) < batch_size:
        return f"caption R-precision and MM-Dist skipped: {len(predicted)} captions, fewer than one group of {batch_size}"
    from models.eval.metrics import r_precision

    text = evaluator.embed_texts(tag_captions(predicted, nlp))
    motion = evaluator.embed_motions(list(motions))
    top, mm_dist = r_precision(text, motion, batch_size, 3, np.random.default_rng(seed))
    return {"r_precision_top1": float(top[0]), "r_precision_top2": float(top[1]),
            "r_precision_top3": float(top[2]), "mm_dist": float(mm_dist)}
