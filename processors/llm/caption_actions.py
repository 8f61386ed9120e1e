"""What a caption says, for the check of its decompositions (pure): its words in order, every form
a sub-text may write them in, and its actions, which no decomposition may leave out or reorder.

Words are compared by `key`, a light stem of their lemma, so that a release artefact and the text
lemmatizer's lemma of the same word agree ("timerelate" from "time-related" and "timerelated").
A caption word that no dictionary knows is a typo, and a near word stands for it ("stumples" ->
"stumbles"); compounds may be split or joined ("backup" -> "back up", "sit ups" -> "sit-ups").

Actions, with the release's `word/POS` tags: the VERB tokens, and AUX tokens used as main verbs
("does/AUX a squat"). A light verb ("makes a right turn", "does a flying kick") is kept when its
noun is ("turns right"). Participles that only describe ("a flying kick", "into a standing
position", "the standing person kicks") are no action of their own. Without tags, the actions are
the words that read as verbs: a verb lemma inflected as one ("walks", "turning"; "to wave"), not
after a determiner or a preposition ("his arms", "with both hands").
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

LIGHT_VERBS = frozenset({"do", "make", "take", "give", "perform", "have"})
# Verbs whose participle describes a pose rather than an action ("the standing person kicks").
STATE_VERBS = frozenset({"stand", "sit", "kneel", "lie", "lay", "rest", "remain", "stay", "seat", "lean", "crouch",
                         "squat"})
PARTICLES = frozenset({"up", "down", "back", "over", "out", "off", "around", "away", "forward", "forwards",
                       "backward", "backwards"})
# Words after which an -s word is a noun ("his arms", "two steps", "with both hands").
_NOUN_MARKERS = frozenset({
    "a", "an", "the", "his", "her", "their", "its", "my", "your", "our", "both", "each", "either", "this", "that",
    "these", "those", "some", "several", "few", "many", "other", "another", "left", "right", "of", "with", "in", "on",
    "at", "by", "for", "from", "into", "onto", "to", "over", "under", "above", "below", "behind", "front", "two",
    "three", "four", "five", "six", "seven", "eight", "nine", "ten", "couple", "few", "several", "small", "big",
    "large", "little", "quick", "short", "long", "slow", "fast", "more"})
_ATTRIBUTIVE_BEFORE = frozenset({"DET", "ADJ", "NUM", "PRON"})
_MAIN_VERB_AUX = frozenset({"do", "have", "get"})
_CLAUSE = frozenset({"and", "or", "then", "while", "before", "after", "until", "as", "but"})
# Never actions without tags: auxiliaries, sides, directions and particles that are verb lemmas too.
_NOT_VERBS = frozenset({"be", "left", "right", "up", "down", "back", "out", "over", "off", "round", "forward",
                        "side", "front", "top", "bottom", "still"})
_JOIN_PARTICLES = ("ups", "up", "downs", "down", "backs", "back", "out", "over", "off", "around", "away")


def key(lemma: str) -> str:
    """A light stem of a lemma: "stumble"/"stumbl", "timerelated"/"timerelate", "situps"/"situp" agree."""
    for suffix in ("ing", "ed", "es", "s", "e"):
        if lemma.endswith(suffix) and len(lemma) - len(suffix) >= 3:
            return lemma[: -len(suffix)]
    return lemma


def near(a: str, b: str) -> bool:
    """Whether two keys differ by a typo: one edit (two from 8 letters), transpositions included."""
    limit = 2 if min(len(a), len(b)) >= 8 else 1
    if abs(len(a) - len(b)) > limit or min(len(a), len(b)) < 4:
        return False
    previous, row = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if previous is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous[j - 2] + 1)
        previous, row = row, current
    return row[-1] <= limit


@dataclass(frozen=True)
class Action:
    position: int  # in CaptionWords.lemmas
    lemma: str
    forms: frozenset[str]  # keys that name it
    nominal: frozenset[str] = frozenset()  # a light verb: keys of the nouns it governs ("make a turn": turn)

    def named_by(self, keys: set[str] | frozenset[str], typos: tuple[str, ...] = ()) -> bool:
        names = self.forms | self.nominal
        return bool(names & keys) or any(near(k, n) for k in keys for n in names if n in typos)


@dataclass(frozen=True)
class CaptionWords:
    lemmas: tuple[str, ...]  # the caption's lemmas in order (the tagged tokens', else the text's)
    forms: tuple[frozenset[str], ...]  # per position: keys of every form of that word
    extra: frozenset[str]  # keys of compound parts and joins ("backup": back, up; "sit ups": situp)
    typos: tuple[str, ...]  # keys of the caption's words that no dictionary knows
    actions: tuple[Action, ...]
    tagged: bool
    light: bool = False  # has a light verb: the light verbs are interchangeable ("does" / "performs")

    @cached_property
    def keys(self) -> frozenset[str]:
        return frozenset().union(*self.forms, self.extra)

    def knows(self, word_key: str) -> bool:
        """Whether a sub-text word (by key) is one of the caption's, or a typo's correction."""
        return word_key in self.keys or any(near(word_key, typo) for typo in self.typos)


def caption_words(caption: str, annotation: Mapping[str, Any] | None = None) -> CaptionWords:
    """The words and actions of a caption; with `annotation`'s `tokens`/`pos` (the release's tags,
    for the same caption) when it has them."""
    from processors.text.lemmas import has_tags, text_words

    words = text_words(caption)
    if annotation is not None and has_tags(annotation):
        return _tagged(words, list(annotation["tokens"]), list(annotation["pos"]))
    return _untagged(words)


def _text_forms(words: list[str]) -> tuple[list[str], list[frozenset[str]], frozenset[str], tuple[str, ...]]:
    """(lemmas, forms per word, compound keys, typo keys) of surface words."""
    from processors.text.lemmas import is_known_word, is_stop_word, lemma_of

    lemmas = [lemma_of(w) for w in words]
    forms = [frozenset({key(lemma), key(word)}) for word, lemma in zip(words, lemmas)]
    extra = set()
    for first, second in zip(words, words[1:]):  # "sit ups" -> "situps"
        if not (is_stop_word(first) or is_stop_word(second)):
            extra |= {key(first + second), key(lemma_of(first + second))}
    for word in words:  # "backup" -> "back", "up"
        for particle in _JOIN_PARTICLES:
            if word.endswith(particle) and len(word) - len(particle) >= 2 and is_known_word(word[: -len(particle)]):
                extra |= {key(lemma_of(word[: -len(particle)])), key(lemma_of(particle))}
    typos = tuple(sorted({key(w) for w in words if len(w) >= 4 and not is_known_word(w)}))
    return lemmas, forms, frozenset(extra), typos


def _tagged(words: list[str], tokens: list[str], pos: list[str]) -> CaptionWords:
    from processors.text.lemmas import tagged_lemmas

    kept = [(t.replace("-", "").lower(), p) for t, p in zip(tokens, pos) if t.replace("-", "").isalpha()]
    tags = [p for _, p in kept]
    lemmas = tagged_lemmas([t for t, _ in kept], tags)
    text_lemmas, text_forms, extra, typos = _text_forms(words)
    surface = [t for t, _ in kept]
    forms = [{key(lemma)} for lemma in lemmas]
    matcher = difflib.SequenceMatcher(a=lemmas, b=text_lemmas, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():  # the same words, one for one, where they line up
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for i, j in zip(range(i1, i2), range(j1, j2)):
                forms[i] |= text_forms[j]
                surface[i] = words[j]
    typos = tuple(sorted(set(typos) | {key(lemma) for lemma, f in zip(lemmas, forms) if any(t in f for t in typos)}))
    candidates = []  # (position, lemma, forms, nominal, a pose participle)
    for i, (lemma, tag) in enumerate(zip(lemmas, tags)):
        before, after = (tags[i - 1] if i else ""), (tags[i + 1] if i + 1 < len(tags) else "")
        if tag == "AUX" and lemma in _MAIN_VERB_AUX and (
                after in ("DET", "NOUN", "ADJ", "NUM", "PRON") or after == "VERB" and surface[i + 1].endswith("ing")):
            tag = "VERB"  # "does/AUX a squat", "does/AUX jumping jacks": a main verb
        if tag != "VERB":
            continue
        participle = surface[i].endswith(("ing", "ed"))
        if participle and after == "NOUN" and (before in _ATTRIBUTIVE_BEFORE or i and lemmas[i - 1] in LIGHT_VERBS):
            continue  # "a flying kick", "a standing position", "does jumping jacks": part of a noun
        nominal = frozenset()
        if lemma in LIGHT_VERBS:  # the nouns of its object: up to the next clause
            end = min(i + 5, len(lemmas))
            end = next((j for j in range(i + 1, end) if tags[j] in ("CCONJ", "SCONJ") or lemmas[j] in _CLAUSE), end)
            nominal = frozenset(key(lemmas[j]) for j in range(i + 1, end) if tags[j] in ("NOUN", "VERB"))
        pose = participle and lemma in STATE_VERBS and (lemmas[i + 1] if i + 1 < len(lemmas) else "") not in PARTICLES
        candidates.append((i, lemma, frozenset(forms[i]), nominal, pose))
    return _words(lemmas, forms, extra, typos, candidates, tagged=True)


def _words(lemmas, forms, extra, typos, candidates, tagged: bool) -> CaptionWords:
    """The caption's words, with a pose participle ("standing", "sitting still") as no action of its
    own when the caption has another action."""
    actions = [Action(i, lemma, f, nominal) for i, lemma, f, nominal, pose in candidates
               if not (pose and any(not other[4] for other in candidates))]
    return CaptionWords(tuple(lemmas), tuple(frozenset(f) for f in forms), frozenset(extra), tuple(typos),
                        tuple(actions), tagged, any(a.lemma in LIGHT_VERBS for a in actions))


def _untagged(words: list[str]) -> CaptionWords:
    from processors.text.lemmas import is_verb_lemma

    lemmas, forms, extra, typos = _text_forms(words)
    candidates = []
    for i, (word, lemma) in enumerate(zip(words, lemmas)):
        before = words[i - 1] if i else ""
        following = lemmas[i + 1] if i + 1 < len(lemmas) else ""
        typo = key(word) in typos
        if lemma in _NOT_VERBS or not (is_verb_lemma(lemma) or typo):
            continue
        inflected = (word.endswith("ing") or (word.endswith("s") and (word != lemma or typo))
                     or (before == "to" and word == lemma))
        if not inflected or (word.endswith("s") and before in _NOUN_MARKERS):
            continue
        if word.endswith("ing") and before in ("a", "an", "the", "his", "her", "their", "its"):
            continue  # "a flying kick": part of a noun
        nominal = frozenset()
        if lemma in LIGHT_VERBS:  # the words of its object: up to the next clause
            window = []
            for j in range(i + 1, min(i + 5, len(lemmas))):
                if lemmas[j] in _CLAUSE:
                    break
                window.append(j)
            nominal = frozenset(key(lemmas[j]) for j in window if lemmas[j] not in _NOUN_MARKERS)
        pose = word.endswith("ing") and lemma in STATE_VERBS and following not in PARTICLES
        candidates.append((i, lemma, forms[i], nominal, pose))
    return _words(lemmas, forms, extra, typos, candidates, tagged=False)
