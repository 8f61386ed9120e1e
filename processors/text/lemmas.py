"""Lemmas of every caption: HumanML3D's own rule on its `word/POS` tokens, spaCy's lookup table elsewhere.

`tagged_lemmas(tokens, pos)` follows HumanML3D's text processing with the given tags;
`text_lemmas(text)` applies the same rule to text without tags (fine-grained steps, LLM sub-texts,
user prompts) with spaCy's blank English tokenizer and the lookup lemmatizer of `spacy-lookups-data`
(no model download). Two small override tables keep the tables' known mistakes out of motion
captions. `is_stop_word` is spaCy's English stop-word list minus the words that carry direction or
position. `Lemmas` is the processor: per row, one list of lemmas per annotation. `LEMMA_RULE_DOC`
says all this in one paragraph for the dataset card.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Mapping, Sequence

from datasets import Features, List, Value

from processors.base import Batch, Processor

LEMMA_RULE_DOC = (
    "Lemmas: `lemmas` holds one list per annotation, in caption order. Where the release gives `word/POS` "
    "tokens (HumanML3D, KIT-ML), HumanML3D's own rule applies with the given tags: '-' is removed "
    "('t-pose' -> 'tpose', 'counter-clockwise' -> 'counterclockwise'), only alphabetic tokens are kept "
    "(digits such as '2' or '90' and punctuation are dropped; number words such as 'two' stay), words "
    "are lower-cased, and only NOUN and VERB tokens are lemmatized, 'left' never. The release wrote "
    "its tokens already lemmatized by spaCy's en_core_web_sm, so NOUN/VERB tokens go through the same "
    "English rule tables with their tag (from spacy-lookups-data), keeping only lemmas the tables know: "
    "the release's lemmas stay as they are and the few leftovers are reduced ('flexes' -> 'flex', "
    "'knelt' -> 'kneel', 'bent' as a VERB -> 'bend'); en_core_web_sm's artefacts are mapped to the "
    "word's lemma ('swinge' -> 'swing', 'outstretche' -> 'outstretch', 'legge' -> 'leg', 'crosse' -> "
    "'cross', 'pelvi' -> 'pelvis'). Text without tags (fine-grained steps, sub-texts, prompts) follows "
    "the same rule with spaCy's blank English tokenizer and the lookup lemmatizer of "
    "spacy-lookups-data (no model download), which lemmatizes every word whatever its part of speech; "
    "an override table keeps its mistakes out of motion captions: 'left' stays 'left' (not 'leave'), "
    "'ground' not 'grind', 'lower' not 'low', 'lay' not 'lie', 'drunk' not 'drink', 'bit' not 'bite', "
    "'does' -> 'do' (not 'doe'), 'swinging' -> 'swing' (not 'swinge'), 'calves' -> 'calf', and "
    "ordinals stay words ('second', not '2'). Without tags, adjectives, adverbs and -ing nouns are "
    "lemmatized too ('bent' -> 'bend', 'standing' -> 'stand', 'forwards' -> 'forward'), so untagged "
    "lemmas differ from tagged ones on about 1% of content words."
)

LEMMATIZED_POS = ("NOUN", "VERB")  # HumanML3D lemmatizes only these (and never "left")

# Evidence: the release's tokens per POS (HumanML3D/{nouns,verbs,adjs,advs}.txt in the official
# repository; counts over the base motions' captions in brackets) run through both tables, and the
# inflections of those lemmas run through the lookup table.

# Text without tags: where the POS-blind lookup table is wrong in a motion caption.
TEXT_OVERRIDES: dict[str, str] = {
    "left": "left",  # lookup: leave. A side or direction (NOUN x3008, ADJ x5052, ADV x136; VERB x1506 kept)
    "ground": "ground",  # lookup: grind ("on the ground": NOUN x969)
    "lower": "lower",  # lookup: low ("lowers his arms": VERB x801, "lower back": ADJ x50)
    "lay": "lay",  # lookup: lie, while "lays"/"laying" -> lay (VERB lay x101, lie x42)
    "saw": "saw",  # lookup: see; captions are in the present tense, and "saws"/"sawing" -> saw
    "bit": "bit",  # lookup: bite ("a bit": NOUN x119)
    "number": "number",  # lookup: numb (NOUN x13)
    "dive": "dive",  # lookup: diva (VERB x3)
    "drunk": "drunk",  # lookup: drink; walking drunk is not drinking (ADJ x41; drink VERB x201)
    "does": "do",  # lookup: doe
    "putting": "put",  # lookup: putt (put VERB x1708)
    "crosses": "cross",  # lookup: crosse (cross VERB x476)
    "swinging": "swing",  # lookup: swinge, another verb (to beat)
    "calves": "calf",  # lookup: calve; the body part
    "shelves": "shelf",  # lookup: shelve (shelf NOUN x110)
    "as": "as",  # lookup: a (ADV x51)
    "well": "well",  # lookup: good ("as well": ADV x40)
}

# Tagged NOUN/VERB tokens: where the rule tables are wrong for the release's tokens, and the
# en_core_web_sm artefacts among them (mapped to the lemma the text path gives their word).
TAGGED_OVERRIDES: dict[str, str] = {
    "left": "left",  # VERB exception: leave; HumanML3D's script never lemmatizes "left" (VERB x1506)
    "lay": "lay",  # VERB exception: lie ("lays down": VERB x101)
    "ground": "ground",  # VERB exception: grind (VERB x4)
    "saw": "saw",  # VERB exception: see; the release's "saw" comes from "saws"/"sawing" (VERB x2)
    "pass": "pass",  # NOUN rule: pas, a dance step ("makes a pass": NOUN x8)
    "swinge": "swing",  # from "swinging" (VERB x505, beside swing x547)
    "outstretche": "outstretch",  # from "outstretched" (VERB x169)
    "legge": "leg",  # from "legged" (VERB x15)
    "crosse": "cross",  # from "crosses" (NOUN x9)
    "pelvi": "pelvis",  # from "pelvis" (NOUN x6)
}

# spaCy's stop words that carry direction, position or movement in a motion caption ("walks back",
# "turns around", "moves up"): content words here. `is_stop_word(..., keep_motion_words=False)`
# gives spaCy's list unchanged.
MOTION_WORDS = frozenset({
    "above", "across", "against", "along", "around", "back", "behind", "below", "beside", "between",
    "bottom", "down", "front", "go", "into", "move", "off", "onto", "out", "over", "put", "side",
    "through", "together", "top", "toward", "towards", "under", "up",
})


class _Tables:
    """spaCy's blank English tokenizer, its lemma tables, and per-word caches (vocabularies are small)."""

    def __init__(self) -> None:
        import spacy
        from spacy.lookups import load_lookups

        nlp = spacy.blank("en")
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()  # loads `lemma_lookup` from spacy-lookups-data
        self.tokenizer = nlp.tokenizer
        self.lookup = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_lookup")
        # The English rule tables that en_core_web_sm's lemmatizer applies given a POS.
        rules = load_lookups("en", ["lemma_index", "lemma_exc", "lemma_rules"])
        index, exceptions, suffixes = (rules.get_table(n) for n in ("lemma_index", "lemma_exc", "lemma_rules"))
        self.index = {pos: frozenset(index[pos.lower()]) for pos in LEMMATIZED_POS}
        self.known = frozenset().union(*(index[pos] for pos in ("adj", "adv", "noun", "verb")))
        self.exceptions = {pos: dict(exceptions[pos.lower()]) for pos in LEMMATIZED_POS}
        self.suffixes = {pos: [tuple(rule) for rule in suffixes[pos.lower()]] for pos in LEMMATIZED_POS}
        self.words: dict[str, str] = {}
        self.tagged: dict[tuple[str, str], str] = {}

    def word(self, word: str) -> str:
        """The lemma of a lower-cased alphabetic word without a tag."""
        lemma = self.words.get(word)
        if lemma is None:
            lemma = TEXT_OVERRIDES.get(word) or self.lookup.get(word, word)
            if not lemma.isalpha():  # ordinals: "second" -> "2"; the rule keeps words
                lemma = word
            self.words[word] = lemma
        return lemma

    def tagged_word(self, word: str, pos: str) -> str:
        """The lemma of a lower-cased alphabetic NOUN/VERB token."""
        key = (word, pos)
        lemma = self.tagged.get(key)
        if lemma is None:
            lemma = TAGGED_OVERRIDES.get(word) or self._rule(word, pos)
            self.tagged[key] = lemma
        return lemma

    def _rule(self, word: str, pos: str) -> str:
        """spaCy's rule lemmatizer with the given POS, keeping only lemmas its tables know.

        As in spaCy: suffix rules whose result is in the lemma index ("flexes" -> flex, "arms" ->
        arm; the last matching rule first), irregular forms before them ("knelt" -> kneel). Unlike
        spaCy without a tagger's morphology, a token the tables cannot reduce to a known lemma stays
        as it is: the release's tokens are already lemmas ("tennis", "starting" as a NOUN), and
        words the tables do not know ("tpose", typos) are kept.
        """
        forms: list[str] = []
        for old, new in self.suffixes[pos]:
            if word.endswith(old):
                form = word[: len(word) - len(old)] + new
                if form and form in self.index[pos]:
                    forms.insert(0, form)
        for form in self.exceptions[pos].get(word, ()):
            if form not in forms:
                forms.insert(0, form)
        return forms[0] if forms and forms[0].isalpha() else word


@functools.lru_cache(maxsize=1)
def _tables() -> _Tables:
    """Made on first use in each process, never at import (the runner forks its workers)."""
    return _Tables()


def _normalize(word: str) -> str:
    """HumanML3D's normalization of one token: '-' removed, lower-cased ('' when not alphabetic)."""
    word = word.replace("-", "").lower()
    return word if word.isalpha() else ""


def tagged_lemmas(tokens: Sequence[str], pos: Sequence[str]) -> list[str]:
    """Lemmas of a caption's `word/POS` tokens (words and tags as two lists of equal length)."""
    if len(tokens) != len(pos):
        raise ValueError(f"{len(tokens)} tokens but {len(pos)} POS tags")
    tables = _tables()
    lemmas = []
    for token, tag in zip(tokens, pos):
        word = _normalize(token)
        if word:
            lemmas.append(tables.tagged_word(word, tag) if tag in LEMMATIZED_POS else word)
    return lemmas


def text_words(text: str) -> list[str]:
    """The words of text without tags as the rule keeps them ('-' removed, alphabetic, lower-cased),
    before lemmatizing: `text_lemmas(text)` are their lemmas, one for one."""
    return [word for word in (_normalize(token.text) for token in _tables().tokenizer(text.replace("-", ""))) if word]


def text_lemmas(text: str) -> list[str]:
    """Lemmas of text without tags: the same rule, with the blank English tokenizer and the lookup table."""
    tables = _tables()
    return [tables.word(word) for word in text_words(text)]


def lemma_of(word: str) -> str:
    """The lemma of one lower-cased alphabetic word without a tag (as `text_lemmas` gives it)."""
    return _tables().word(word)


def is_known_word(word: str) -> bool:
    """Whether the English tables know a lower-cased word (an inflection or a lemma of any part of
    speech); "stumples", "timerelated" are not known."""
    tables = _tables()
    return word in tables.lookup or word in tables.known


def is_verb_lemma(lemma: str) -> bool:
    """Whether the English tables know `lemma` as a verb ("walk", "arm", "hand": many nouns are too)."""
    return lemma in _tables().index["VERB"]


def is_stop_word(lemma: str, keep_motion_words: bool = True) -> bool:
    """Whether a lemma is one of spaCy's English stop words (by default not the `MOTION_WORDS`)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    lemma = lemma.lower()
    return lemma in STOP_WORDS and not (keep_motion_words and lemma in MOTION_WORDS)


def has_tags(annotation: Mapping[str, Any]) -> bool:
    """Whether an annotation carries usable `word/POS` tokens: one non-empty tag per token."""
    tokens, pos = annotation.get("tokens") or [], annotation.get("pos") or []
    return bool(pos) and len(pos) == len(tokens) and all(pos)


def annotation_lemmas(annotation: Mapping[str, Any]) -> list[str]:
    """Tagged lemmas where the annotation has tags, else the lemmas of its caption."""
    if has_tags(annotation):
        return tagged_lemmas(annotation["tokens"], annotation["pos"])
    return text_lemmas(annotation["caption"])


@dataclasses.dataclass(frozen=True)
class Lemmas(Processor):
    """Per row, one list of lemmas per annotation (`LEMMA_RULE_DOC`)."""

    name: ClassVar[str] = "lemmas"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("annotations",)
    outputs: ClassVar[Features] = Features({"lemmas": List(List(Value("string")))})
    requires: ClassVar[tuple[str, ...]] = ("spacy", "spacy_lookups_data")
    extra: ClassVar[str] = "text"
    preload: ClassVar[tuple[str, ...]] = ("spacy",)
    card_note: ClassVar[str] = LEMMA_RULE_DOC

    def __call__(self, batch: Batch) -> Batch:
        rows = []
        for row_annotations in batch["annotations"]:
            row = []
            for annotation in row_annotations:
                lemmas = annotation_lemmas(annotation)
                if has_tags(annotation):
                    self.counters["tagged"] += 1
                    # release tokens whose lemma is not the token itself (leftovers, artefacts)
                    words = [w for w in map(_normalize, annotation["tokens"]) if w]
                    self.counters["tagged_relemmatized"] += sum(w != lemma for w, lemma in zip(words, lemmas))
                else:
                    self.counters["untagged"] += 1
                self.counters["lemmas"] += len(lemmas)
                self.counters["no_lemmas"] += not lemmas
                row.append(lemmas)
            rows.append(row)
        return {"lemmas": rows}
