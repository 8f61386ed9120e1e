"""MATE's caption decomposition: each caption split by an LLM into N >= 1 sub-texts in time order.

Per annotation: ask with the versioned prompt (`prompts/decompose.v1.txt`), check the answer
(`decompose_check`: a JSON list, the caption's own words and order, no action left out or
invented; the list is asked with constrained decoding where the server supports it), re-ask with
the reasons until it passes or `max_attempts` is spent. Failed rows keep
their last answer, sub-texts and reasons. Mirrored motions ask their un-mirrored caption (the
base's request, from the cache) and swap left and right in the sub-texts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from datasets import Features, List, Value

from datasets_build.motion.captions import mirror_text
from processors.base import Batch
from datasets_build.llm.structured import Constraint
from processors.llm.caption_actions import CaptionWords
from processors.llm.caption_actions import caption_words as words_of
from processors.llm.decompose_check import DecompositionCheck, check_decomposition, subtexts_constraint
from processors.llm.ask import Ask, LLMProcessor, answer_features, regroup

# the sub-texts in time order (the last answer's, even when it failed its check)
SUBTEXTS = answer_features("texts", List(Value("string")))
REASK = ("Your answer was rejected: {reasons}. Answer again with only a JSON list of strings: the "
         "caption's actions in time order, in its own words.")


def caption_words(annotation: dict[str, Any], mirrored: bool) -> CaptionWords:
    """The words and actions of the caption the LLM was asked about: with the release's `word/POS`
    tokens when present (swapped back for a derived mirror), else of the untagged text."""
    if not mirrored:
        return words_of(annotation["caption"], annotation)
    tokens = [mirror_text(token) for token in annotation.get("tokens") or []]
    return words_of(mirror_text(annotation["caption"]), {**annotation, "tokens": tokens})


@dataclasses.dataclass(frozen=True)
class Decompose(LLMProcessor):
    name: ClassVar[str] = "decompose"
    version: ClassVar[str] = "2"  # 2: JSON-list constraint; the check's fixes (lemma artefacts, light verbs, order)
    cites: ClassVar[tuple[str, ...]] = ("mate",)
    inputs: ClassVar[tuple[str, ...]] = ("mirrored", "annotations")
    outputs: ClassVar[Features] = Features({"subtexts": List(SUBTEXTS)})
    requires: ClassVar[tuple[str, ...]] = ("openai", "spacy")
    extra: ClassVar[str] = "all"
    reask: ClassVar[str] = REASK
    note: ClassVar[str] = (
        "Sub-texts: `subtexts` splits each caption, by an LLM, into N >= 1 sub-texts in time order (a JSON "
        "list). The check rejects anything but a list of non-empty strings, too many sub-texts, words that are "
        "not the caption's (compared by lemma stem, so release artefacts, corrected typos and split or joined "
        "compounds count as the caption's; pronoun resolution, connectives and light-verb swaps aside: no "
        "invented action), an action of the caption left out (its verbs, from the release's tags or, for "
        "untagged text, the words that read as verbs; a light verb is kept with its noun, 'makes a right turn' "
        "-> 'turns right'; participles that only describe a pose or a noun, 'the standing person', 'a flying "
        "kick', are no action), sub-texts out of the caption's order (anchored on the actions they name), a "
        "direction swapped between parts of the caption, and more than one sub-text for a one-action caption; "
        "a failed answer is asked again with the reasons. `status` is checked, failed (the last answer and its "
        "reasons are kept) or error (no answer); mirrored motions take their base caption's answer with left "
        "and right swapped.")
    prompt: str = "decompose.v1"
    max_subtexts: int = 8

    def constraint(self) -> Constraint:
        return subtexts_constraint(self.max_subtexts)

    def check(self, ask: Ask, answer: str) -> DecompositionCheck:
        return check_decomposition(answer, caption_words(ask.annotation, ask.mirrored), self.max_subtexts)

    def __call__(self, batch: Batch) -> Batch:
        asks, prompt_version = self.ask(batch)
        for ask in asks:
            self.counters[f"N={len(ask.check.texts)}" if ask.check and ask.check.texts else "N=none"] += 1
        return {"subtexts": regroup([self._result(ask, prompt_version) for ask in asks], batch["annotations"])}

    def _result(self, ask: Ask, prompt_version: str) -> dict[str, Any]:
        texts = ask.check.texts if ask.check else []
        return self.record(ask, prompt_version, "texts", [ask.swap(text) for text in texts])
