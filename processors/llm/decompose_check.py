"""The check of an LLM caption decomposition (MATE's sub-texts); pure: answer in, verdict out.

An answer is a JSON list of N >= 1 non-empty strings, the caption's actions in time order:

    caption: "a person walks forward, turns around and sits down"
    answer:  ["a person walks forward", "turns around", "sits down"]

The sub-texts must use the caption's own words: every content word of a sub-text is one of the
caption's (`caption_actions`: by lemma stem, a typo's correction, a compound split or joined),
except pronoun resolutions ("he" -> "the man"), connectives ("then", "finally") and prepositions
such as "into", so an invented action is rejected (stop words too when they add or change an
action: "does it again", "five steps"). No action of the caption may be left out: its verbs (the
release's VERB tags, or the words that read as verbs in untagged text), a light verb counting as
kept when its noun is ("makes a right turn" -> "turns right"). The sub-texts keep the caption's
order, anchored on the actions they name (or on words the caption has once), unless the caption
reorders time itself ("sits down after walking"). A tagged caption with a single action is one
sub-text.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

from datasets_build.llm.structured import Constraint
from processors.llm.caption_actions import LIGHT_VERBS, CaptionWords, key

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
# Directions whose swap between parts of a caption makes another motion.
_OPPOSITES = [({"up"}, {"down"}), ({"left"}, {"right"}), ({"forward", "forwards"}, {"backward", "backwards", "back"}),
              ({"clockwise"}, {"counterclockwise"})]
OPPOSITE = {w: other for one, two in _OPPOSITES for side, other in ((one, two), (two, one)) for w in side}
# Words that open a clause: where the part of the caption of one action ends.
_CLAUSE_WORDS = frozenset({"and", "then", "or", "but", "while", "before", "after", "as"})
# Prepositions that say no more than "in", "on", "to": a sub-text may use them freely.
FREE_PREPOSITIONS = frozenset({"into", "onto", "toward", "towards", "upon", "within"})
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class DecompositionCheck:
    ok: bool
    texts: list[str] = field(default_factory=list)  # the parsed sub-texts (also when the check fails)
    reasons: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=8)
def subtexts_constraint(max_subtexts: int = 8) -> Constraint:
    """The answer's form: a JSON list of 1 to `max_subtexts` strings, each with a visible character
    and no line break (the grammar also bounds their length)."""
    schema = {"type": "array", "minItems": 1, "maxItems": max_subtexts,
              "items": {"type": "string", "pattern": "^[^\\n]*[^\\n ][^\\n]*$"}}
    grammar = rf"""
root ::= "[" ws item ("," ws item){{0,{max_subtexts - 1}}} ws "]"
item ::= "\"" [^"\\\n ] [^"\\\n]{{0,199}} "\""
ws ::= [ \n]{{0,2}}
"""
    return Constraint.of("subtexts.json", schema, grammar)


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


def check_decomposition(answer: str, caption: CaptionWords, max_subtexts: int = 8) -> DecompositionCheck:
    """Check an answer against its caption (`caption_actions.caption_words`)."""
    from processors.text.lemmas import text_lemmas

    texts, reasons = parse_subtexts(answer)
    if reasons:
        return DecompositionCheck(False, texts, reasons)
    if len(texts) > max_subtexts:
        reasons.append(f"{len(texts)} sub-texts; at most {max_subtexts}")
    if caption.tagged and len(caption.actions) <= 1 and len(texts) > 1:
        reasons.append(f"the caption is one action (one verb), so the answer is one sub-text; got {len(texts)}")
    subs = [_words(text_lemmas(text), caption) for text in texts]
    for i, (text, (content, words)) in enumerate(zip(texts, subs), start=1):
        invented = [w for w in dict.fromkeys(content) if not caption.knows(key(w))
                    and not _joined_into(w, words, caption)]
        if invented:
            reasons.append(f"sub-text {i} ({text!r}) uses words that are not in the caption: {', '.join(invented)}")
    named = set().union(*(words for _, words in subs))
    left_out = [a.lemma for a in caption.actions if not a.named_by(named, caption.typos)]
    if left_out:
        reasons.append(f"the sub-texts leave out the caption's action(s): {', '.join(dict.fromkeys(left_out))}")
    anchors = _anchors(caption, [(words, {key(w) for w in content}) for content, words in subs])
    if not REORDERING & set(caption.lemmas):
        out_of_order = next((i for i, anchor in enumerate(anchors, start=1) if anchor == "back"), None)
        if out_of_order:
            reasons.append(f"sub-text {out_of_order} comes before an earlier one in the caption; "
                           "keep the caption's order")
    for i, (anchor, (content, _)) in enumerate(zip(anchors, subs), start=1):
        if isinstance(anchor, range):
            clause = set().union(*(caption.forms[p] for p in anchor))
            swapped = [w for w in dict.fromkeys(content) if w in OPPOSITE and key(w) not in clause
                       and {key(o) for o in OPPOSITE[w]} & clause]
            if swapped:
                reasons.append(f"sub-text {i} says {', '.join(swapped)} where its part of the caption says the "
                               f"opposite")
    return DecompositionCheck(not reasons, texts, reasons)


def _words(lemmas: list[str], caption: CaptionWords) -> tuple[list[str], set[str]]:
    """(content lemmas, keys of all its words and of adjacent pairs joined: "back up" -> "backup")."""
    from processors.text.lemmas import is_stop_word

    content = [w for w in lemmas if not _free(w, caption, is_stop_word)]
    return content, {key(w) for w in lemmas} | {key(a + b) for a, b in zip(lemmas, lemmas[1:])}


def _joined_into(word: str, words: set[str], caption: CaptionWords) -> bool:
    """Whether a word is half of a caption word written in two ("back up" for "backup")."""
    return any(k in caption.keys and key(word) in k and len(k) > len(key(word)) for k in words)


def _free(lemma: str, caption: CaptionWords, is_stop_word) -> bool:
    """A word any sub-text may use: the subject, a connective, a function word, a free preposition,
    a light verb where the caption has one ("does" for "performs"), or a describing participle."""
    if lemma in SUBJECT_WORDS or lemma in CONNECTIVES or lemma in FREE_PREPOSITIONS:
        return True
    if lemma in LIGHT_VERBS and caption.light:
        return True
    return is_stop_word(lemma) and lemma not in MEANINGFUL_STOP_WORDS


def _anchors(caption: CaptionWords, subtexts: list[tuple[set[str], set[str]]]) -> list[range | int | str | None]:
    """Where each sub-text (all its keys, its content keys) sits in the caption: the clauses (a range
    of positions) of the actions it names (where the caption repeats an action, the occurrence whose
    clause shares most of its content: "walks forward ... walks back"), else the position of the
    first of its words that the caption has once, None when neither, or "back" when it would go
    back before the previous sub-text."""
    positions = [a.position for a in caption.actions]
    once = {k for k in caption.keys if sum(k in f for f in caption.forms) == 1}
    starts = [0] + [next((p for p in range(a + 1, b) if caption.lemmas[p] in _CLAUSE_WORDS), b)
                    for a, b in zip(positions, positions[1:])]
    clauses = {p: range(start, end) for p, start, end in zip(positions, starts, starts[1:] + [len(caption.forms)])}
    anchors: list[range | int | str | None] = []
    cursor = 0
    for words, content in subtexts:
        actions = [a for a in caption.actions if a.named_by(words, caption.typos)]
        places = [p for p, f in enumerate(caption.forms) if f & content & once]
        later = [a for a in actions if a.position >= cursor] if actions else [p for p in places if p >= cursor]
        if not (actions or places):
            anchors.append(None)
        elif not later:
            anchors.append("back")
        elif actions:  # per action it names, the best occurrence from the cursor on
            chosen = []
            for lemma in dict.fromkeys(a.lemma for a in later):
                occurrences = [a for a in later if a.lemma == lemma]
                chosen.append(max(occurrences, key=lambda a: (
                    sum(bool(content & caption.forms[p]) for p in clauses[a.position]), -a.position)))
            cursor = max(a.position for a in chosen)
            anchors.append(range(min(clauses[a.position].start for a in chosen),
                                 max(clauses[a.position].stop for a in chosen)))
        else:
            cursor = later[0]
            anchors.append(cursor)
    return anchors
