"""The check of an LLM caption decomposition (MATE's sub-texts); pure: answer in, verdict out.

An answer is a JSON list of N >= 1 non-empty strings, the caption's actions in time order:

    caption: "a person walks forward, turns around and sits down"
    answer:  ["a person walks forward", "turns around", "sits down"]

The sub-texts must use the caption's own words: every content lemma of a sub-text occurs in the
caption, except pronoun resolutions ("he" -> "the man") and connectives ("then", "finally"), so an
invented action is rejected (stop words too when they add or change an action: "does it again",
"five steps"). They keep the caption's order, unless the caption reorders time itself ("sits
down after walking"). With the release's POS tags the check
also knows the caption's verbs: none may be left out, and a caption with a single verb is one
action, so N = 1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

# Who does the motion: an LLM may name the subject where the caption says "he" or "they".
SUBJECT_WORDS = frozenset({"person", "man", "woman", "someone", "somebody", "human", "figure", "individual",
                           "subject", "character", "people", "guy", "lady", "boy", "girl", "he", "she", "they"})
# Words that only order the actions.
CONNECTIVES = frozenset({"then", "finally", "first", "firstly", "lastly", "later", "afterwards", "afterward",
                         "next", "meanwhile", "subsequently", "eventually", "initially", "while"})
# spaCy stop words that would add an action or change one ("does it again", "five steps"): they
# must be the caption's too.
MEANINGFUL_STOP_WORDS = frozenset({
    "again", "do", "make", "get", "give", "take", "keep", "show", "see", "say", "call", "become", "use",
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "fifteen", "twenty", "forty", "fifty", "sixty", "hundred", "twice", "third", "fourth", "fifth",
})
# With these the caption's word order need not be the time order ("sits down after walking").
REORDERING = frozenset({"before", "after", "until", "prior", "previously"})
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class DecompositionCheck:
    ok: bool
    texts: list[str] = field(default_factory=list)  # the parsed sub-texts (also when the check fails)
    reasons: list[str] = field(default_factory=list)


def parse_subtexts(answer: str) -> tuple[list[str], list[str]]:
    """(sub-texts, reasons): the JSON list of an answer (a ```json fence around it is fine)."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [f"the answer is not JSON ({exc.msg} at character {exc.pos}); write only a JSON list of strings"]
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        value = next(iter(value.values()))  # {"subtexts": [...]}: the list is what was asked for
    if not isinstance(value, list) or not value:
        return [], ["the answer is not a non-empty JSON list"]
    if not all(isinstance(item, str) for item in value):
        return [], ["every item of the list must be a string"]
    texts = [" ".join(item.split()) for item in value]
    empty = [i for i, item in enumerate(texts, start=1) if not item]
    return texts, [f"sub-text {i} is empty" for i in empty]


def check_decomposition(answer: str, caption_lemmas: Sequence[str], verb_lemmas: Sequence[str] | None,
                        max_subtexts: int = 8) -> DecompositionCheck:
    """Check an answer against its caption.

    caption_lemmas: the caption's lemmas in order (`processors.text.lemmas`); verb_lemmas: the lemmas of
    the caption's VERB tokens when the release tags them, None for untagged text.
    """
    from processors.text.lemmas import is_stop_word, text_lemmas

    texts, reasons = parse_subtexts(answer)
    if reasons:
        return DecompositionCheck(False, texts, reasons)
    if len(texts) > max_subtexts:
        reasons.append(f"{len(texts)} sub-texts; at most {max_subtexts}")
    if verb_lemmas is not None and len(verb_lemmas) <= 1 and len(texts) > 1:
        reasons.append(f"the caption is one action (one verb), so the answer is one sub-text; got {len(texts)}")
    in_caption = set(caption_lemmas)
    sub_lemmas = [text_lemmas(text) for text in texts]
    for i, (text, lemmas) in enumerate(zip(texts, sub_lemmas), start=1):
        invented = [w for w in dict.fromkeys(lemmas) if w not in in_caption and not _free(w, is_stop_word)]
        if invented:
            reasons.append(f"sub-text {i} ({text!r}) uses words that are not in the caption: {', '.join(invented)}")
    if verb_lemmas is not None:
        used = {w for lemmas in sub_lemmas for w in lemmas}
        left_out = [v for v in dict.fromkeys(verb_lemmas) if v not in used]
        if left_out:
            reasons.append(f"the sub-texts leave out the caption's action(s): {', '.join(left_out)}")
    content = [[w for w in lemmas if not _free(w, is_stop_word)] for lemmas in sub_lemmas]
    out_of_order = None if in_caption & REORDERING else _out_of_order(list(caption_lemmas), content)
    if out_of_order:
        reasons.append(f"sub-text {out_of_order} comes before an earlier one in the caption; keep the caption's order")
    return DecompositionCheck(not reasons, texts, reasons)


def _free(lemma: str, is_stop_word) -> bool:
    """A word any sub-text may use: the subject, a connective, or a function word."""
    return lemma in SUBJECT_WORDS or lemma in CONNECTIVES or (is_stop_word(lemma) and lemma not in MEANINGFUL_STOP_WORDS)


def _out_of_order(caption: list[str], subtexts: list[list[str]]) -> int | None:
    """The first sub-text (1-based) none of whose content words occur in the caption at or after
    the previous sub-text's first match: a swap of actions. Repeated words ("walks, turns, walks
    back") pass."""
    cursor = 0
    for i, lemmas in enumerate(subtexts, start=1):
        words = {w for w in lemmas if w in caption}
        if not words:
            continue
        later = [p for p in range(cursor, len(caption)) if caption[p] in words]
        if not later:
            return i
        cursor = later[0]
    return None
