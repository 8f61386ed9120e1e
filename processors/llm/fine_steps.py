"""FineHumanML3D: each coarse caption expanded by an LLM into checked, step-by-step descriptions.

Per annotation: ask with the versioned prompt for the JSON form of the steps (`fine_check`:
title, description and pseudo-code call per step, constrained where the server supports it),
render it into the published two-paragraph tagged form, check that, and re-ask with the reasons
appended until it passes or `max_attempts` is spent (`processors.llm.ask`). Rows that still fail
keep their last answer, reasons and attempt count: nothing is dropped. A mirrored motion's
annotation asks about its un-mirrored caption and swaps left and right in the answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from datasets import Features, List, Value

from processors.base import Batch
from datasets_build.llm.structured import Constraint
from processors.llm.fine_check import CheckResult, FineStep, check_fine_answer, fine_steps_constraint
from processors.llm.ask import Ask, LLMProcessor, answer_features, regroup

FINE_STEP = {"index": Value("int32"), "title": Value("string"), "description": Value("string"),
             "pseudo_code": Value("string")}
FINE = answer_features("steps", List(FINE_STEP))
REASK = ("Your answer was rejected by the format check: {reasons}. Answer again with only the JSON object "
         '{"steps": [...]}: per step a "title", a "description" and one "pseudo_code" call name(arguments).')
NOTE = ("Fine-grained steps: `fine` holds, per annotation, the LLM's steps (title, description, pseudo-code "
        "call), asked as one JSON list of steps and rendered into FineHumanML3D's two tagged paragraphs, so that "
        "both paragraphs have the same steps and titles by construction; the pseudo-code check then rejects tag "
        "or numbering errors, step counts out of range, calls not of the form name(arguments), empty steps and "
        "any mention of muscles, and a rejected answer is asked again with the reasons.")


@dataclasses.dataclass(frozen=True)
class FineSteps(LLMProcessor):
    name: ClassVar[str] = "fine_steps"
    version: ClassVar[str] = "2"  # 2: the JSON answer form (prompt fine_steps.v2), constrained decoding
    cites: ClassVar[tuple[str, ...]] = ("finehumanml3d",)
    inputs: ClassVar[tuple[str, ...]] = ("mirrored", "annotations")
    outputs: ClassVar[Features] = Features({"fine": List(FINE)})
    reask: ClassVar[str] = REASK
    note: ClassVar[str] = NOTE
    prompt: str = "fine_steps.v2"
    min_steps: int = 2
    max_steps: int = 8

    def check(self, ask: Ask, answer: str) -> CheckResult:
        return check_fine_answer(answer, self.min_steps, self.max_steps)

    def constraint(self) -> Constraint:
        return fine_steps_constraint(self.min_steps, self.max_steps)

    def __call__(self, batch: Batch) -> Batch:
        asks, prompt_version = self.ask(batch)
        return {"fine": regroup([self._result(ask, prompt_version) for ask in asks], batch["annotations"])}

    def _result(self, ask: Ask, prompt_version: str) -> dict[str, Any]:
        steps = ask.check.steps if ask.check else []
        return self.record(ask, prompt_version, "steps", [
            {"index": s.index, "title": ask.swap(s.title), "description": ask.swap(s.description),
             "pseudo_code": ask.swap(s.pseudo_code)} for s in steps])


def steps_of(fine: dict[str, Any]) -> list[FineStep]:
    """The FineStep list of one stored `fine` struct."""
    return [FineStep(s["index"], s["title"], s["description"], s["pseudo_code"]) for s in fine["steps"]]
