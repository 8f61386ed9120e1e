"""MATE's caption decomposition: each caption split by an LLM into N >= 1 sub-texts in time order.

Per annotation: ask with the versioned prompt (`prompts/decompose.v1.txt`), check the answer
(`decompose_check`: a JSON list, the caption's own words and order, no action left out or
invented), re-ask with the reasons until it passes or `max_attempts` is spent. Failed rows keep
their last answer, sub-texts and reasons. Mirrored motions ask their un-mirrored caption (the
base's request, from the cache) and swap left and right in the sub-texts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from datasets import Features, List, Value

from datasets_build.motion.captions import mirror_text
from processors.base import Batch
from processors.llm.decompose_check import DecompositionCheck, check_decomposition
from processors.llm.ask import Ask, LLMProcessor, answer_features, regroup

# the sub-texts in time order (the last answer's, even when it failed its check)
SUBTEXTS = answer_features("texts", List(Value("string")))
REASK = ("Your answer was rejected: {reasons}. Answer again with only a JSON list of strings: the "
         "caption's actions in time order, in its own words.")


def caption_words(annotation: dict[str, Any], mirrored: bool) -> tuple[list[str], list[str] | None]:
    """(lemmas, verb lemmas or None) of the caption the LLM was asked about: the release's
    `word/POS` tokens when present (swapped back for a derived mirror), else the untagged text."""
    from processors.text.lemmas import has_tags, tagged_lemmas, text_lemmas

    caption = mirror_text(annotation["caption"]) if mirrored else annotation["caption"]
    if not has_tags(annotation):
        return text_lemmas(caption), None
    tokens, pos = list(annotation["tokens"]), list(annotation["pos"])
    if mirrored:
        tokens = [mirror_text(token) for token in tokens]
    verbs = [t for t, p in zip(tokens, pos) if p == "VERB"]
    lemmas = tagged_lemmas(tokens, pos)
    # Sub-texts are lemmatized without tags: where the lookup lemma of a caption word differs,
    # it counts as the caption's too (appended, so that the tagged order stays intact).
    known = set(lemmas)
    return lemmas + [w for w in dict.fromkeys(text_lemmas(caption)) if w not in known], \
        tagged_lemmas(verbs, ["VERB"] * len(verbs))


@dataclasses.dataclass(frozen=True)
class Decompose(LLMProcessor):
    name: ClassVar[str] = "decompose"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("mirrored", "annotations")
    outputs: ClassVar[Features] = Features({"subtexts": List(SUBTEXTS)})
    requires: ClassVar[tuple[str, ...]] = ("openai", "spacy")
    extra: ClassVar[str] = "all"
    reask: ClassVar[str] = REASK
    card_note: ClassVar[str] = (
        "Sub-texts: `subtexts` splits each caption, by an LLM, into N >= 1 sub-texts in time order (a JSON "
        "list). The check rejects anything but a list of non-empty strings, too many sub-texts, words that are "
        "not the caption's (pronoun resolution and connectives aside: no invented action), a changed order, a "
        "tagged caption verb left out, and more than one sub-text for a one-verb caption; a failed answer is "
        "asked again with the reasons. `status` is checked, failed (the last answer and its reasons are kept) or "
        "error (no answer); mirrored motions take their base caption's answer with left and right swapped.")
    prompt: str = "decompose.v1"
    max_subtexts: int = 8

    def check(self, ask: Ask, answer: str) -> DecompositionCheck:
        lemmas, verbs = caption_words(ask.annotation, ask.mirrored)
        return check_decomposition(answer, lemmas, verbs, self.max_subtexts)

    def __call__(self, batch: Batch) -> Batch:
        asks, prompt_version = self.ask(batch)
        for ask in asks:
            self.counters[f"N={len(ask.check.texts)}" if ask.check and ask.check.texts else "N=none"] += 1
        return {"subtexts": regroup([self._result(ask, prompt_version) for ask in asks], batch["annotations"])}

    def _result(self, ask: Ask, prompt_version: str) -> dict[str, Any]:
        texts = ask.check.texts if ask.check else []
        return self.record(ask, prompt_version, "texts", [ask.swap(text) for text in texts])
