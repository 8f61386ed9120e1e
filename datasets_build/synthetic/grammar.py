"""The caption grammar of the releases made here: word/lemma/POS tables, parsed into tokens.

Specs are "word/lemma/POS" or "word/POS" (lemma = word), with spaCy's universal tags; lemmas only
for NOUN/VERB as in HumanML3D's tokens, and "left" always stays "left". The procedural sample
release draws subjects, action phrases and joins from the first tables (one phrase list per
action); the noise release of the tests and benchmarks draws from its own short lists.
"""

from __future__ import annotations

from typing import Sequence

# "word/lemma/POS" or "word/POS" (lemma = word); spaCy universal tags; lemmas only for NOUN/VERB
# as in HumanML3D's tokens, and "left" always stays "left".
SUBJECTS = ["a/DET person/NOUN", "the/DET person/NOUN", "a/DET man/NOUN", "a/DET woman/NOUN",
            "someone/PRON", "the/DET man/NOUN"]
PHRASES = {
    "walk forward": ["walks/walk/VERB forward/ADV", "walks/walk/VERB straight/ADV ahead/ADV",
                     "takes/take/VERB a/DET few/ADJ steps/step/NOUN forward/ADV", "moves/move/VERB forward/ADV"],
    "walk backward": ["walks/walk/VERB backward/ADV", "walks/walk/VERB backwards/ADV",
                      "takes/take/VERB a/DET few/ADJ steps/step/NOUN backward/ADV", "steps/step/VERB back/ADV"],
    "turn {s}": ["turns/turn/VERB {s}/ADV", "turns/turn/VERB to/ADP the/DET {s}/NOUN",
                 "turns/turn/VERB ninety/NUM degrees/degree/NOUN to/ADP the/DET {s}/NOUN",
                 "pivots/pivot/VERB to/ADP the/DET {s}/NOUN"],
    "jump": ["jumps/jump/VERB", "jumps/jump/VERB up/ADP", "jumps/jump/VERB in/ADP place/NOUN",
             "jumps/jump/VERB into/ADP the/DET air/NOUN"],
    "wave {s} hand": ["waves/wave/VERB with/ADP the/DET {s}/ADJ hand/NOUN",
                      "waves/wave/VERB the/DET {s}/ADJ hand/NOUN",
                      "lifts/lift/VERB the/DET {s}/ADJ arm/NOUN to/PART wave/VERB"],
    "kick {s}": ["kicks/kick/VERB with/ADP the/DET {s}/ADJ leg/NOUN",
                 "kicks/kick/VERB with/ADP the/DET {s}/ADJ foot/NOUN",
                 "kicks/kick/VERB out/ADP with/ADP the/DET {s}/ADJ leg/NOUN",
                 "does/do/VERB a/DET kick/NOUN with/ADP the/DET {s}/ADJ leg/NOUN"],
    "sit down": ["sits/sit/VERB down/ADP", "sits/sit/VERB down/ADP slowly/ADV", "takes/take/VERB a/DET seat/NOUN"],
    "crouch": ["crouches/crouch/VERB down/ADP and/CCONJ stands/stand/VERB up/ADP again/ADV",
               "squats/squat/VERB down/ADP and/CCONJ rises/rise/VERB again/ADV",
               "crouches/crouch/VERB low/ADV and/CCONJ then/ADV stands/stand/VERB up/ADP"],
}
THEN = ["and/CCONJ then/ADV", ",/PUNCT then/ADV", "and/CCONJ afterwards/ADV"]
FINALLY = ["and/CCONJ finally/ADV", ",/PUNCT and/CCONJ then/ADV"]

Token = tuple[str, str, str]


def parse(spec: str) -> list[Token]:
    out = []
    for tok in spec.split():
        parts = tok.split("/")
        word, lemma, pos = (parts[0], parts[0], parts[1]) if len(parts) == 2 else parts
        out.append((word, lemma.lower(), pos))
    return out


# The noise release: a subject, an action, and half of the time "and then" a second action.
NOISE_SUBJECTS = ["a/DET person/NOUN", "the/DET man/NOUN", "a/DET woman/NOUN", "someone/PRON"]
NOISE_ACTIONS = ["walks/walk/VERB forward/ADV", "walks/walk/VERB backward/ADV", "turns/turn/VERB left/VERB",
                 "turns/turn/VERB right/ADV", "jumps/jump/VERB up/ADP",
                 "waves/wave/VERB with/ADP the/DET left/ADJ hand/NOUN",
                 "kicks/kick/VERB with/ADP the/DET right/ADJ leg/NOUN", "sits/sit/VERB down/ADP",
                 "crouches/crouch/VERB low/ADV", "spins/spin/VERB clockwise/ADV"]
NOISE_THEN = "and/CCONJ then/ADV"


def caption_text(tokens: Sequence[Token]) -> str:
    """The caption as text ("a person walks forward, then jumps")."""
    return " ".join(w for w, _, _ in tokens).replace(" ,", ",")


def caption_tokens(tokens: Sequence[Token]) -> str:
    """The release's token field: alphabetic tokens only, as lemma/POS."""
    return " ".join(f"{lemma}/{pos}" for w, lemma, pos in tokens if w.isalpha())
