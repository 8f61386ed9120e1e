"""FineHumanML3D: each coarse caption expanded by an LLM into checked, step-by-step descriptions.

Per annotation: ask with the versioned prompt, check the answer (`fine_check`), and re-ask with
the reasons appended until it passes or `max_attempts` is spent. Rows that still fail keep their
last answer, reasons and attempt count: nothing is dropped. A mirrored motion's annotation asks
about its un-mirrored caption (the base motion's request, answered once, from the cache) and swaps
left and right in the answer, so mirrors cost no request of their own.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

from datasets import Features, List, Value

from datasets_build.captions import mirror_text
from datasets_build.llm import ChatRequest, LLMConfig, LLMEngine
from processors.base import Batch, Processor
from processors.fine_check import CheckResult, FineStep, check_fine_answer
from prompts import load_prompt

FINE_STEP = {"index": Value("int32"), "title": Value("string"), "description": Value("string"),
             "pseudo_code": Value("string")}
FINE = {
    "status": Value("string"),  # checked | failed (check never passed) | error (no answer)
    "source": Value("string"),  # llm | mirror (derived from the un-mirrored caption's answer)
    "attempts": Value("int32"),
    "steps": List(FINE_STEP),
    "reasons": List(Value("string")),  # why the last answer failed (empty when checked)
    "answer": Value("string"),  # the last raw answer
    "model": Value("string"),
    "prompt_version": Value("string"),
}
REASK = ("Your answer was rejected by the format check: {reasons}. Answer again: two paragraphs of "
         "<step N: title>...</step N: title> tags, descriptions first, then one pseudo-code call per step.")
_ENGINES: dict[tuple[int, LLMConfig], LLMEngine] = {}


def engine_for(config: LLMConfig) -> LLMEngine:
    """One engine per process and configuration, made on first use (never before a fork)."""
    key = (os.getpid(), config)
    if key not in _ENGINES:
        _ENGINES[key] = LLMEngine(config)
    return _ENGINES[key]


@dataclasses.dataclass
class _Ask:
    caption: str  # what the LLM is asked about
    mirrored: bool
    messages: list[tuple[str, str]]
    attempts: int = 0
    status: str = ""
    answer: str = ""
    check: CheckResult | None = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class FineSteps(Processor):
    name: ClassVar[str] = "fine_steps"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("mirrored", "annotations")
    outputs: ClassVar[Features] = Features({"fine": List(FINE)})
    requires: ClassVar[tuple[str, ...]] = ("openai",)
    extra: ClassVar[str] = "llm"
    llm: LLMConfig = LLMConfig()
    prompt: str = "fine_steps.v1"
    max_attempts: int = 3
    min_steps: int = 2
    max_steps: int = 8
    mirror_from_base: bool = True

    def config(self) -> dict[str, Any]:
        return {**super().config(), "llm": self.llm.identity()}  # endpoint and limits change no answer

    def first_requests(self, batch: Batch) -> list[ChatRequest]:
        """The first request of every annotation (what --dry-run counts and batch export writes)."""
        prompt = load_prompt(self.prompt)
        return [ChatRequest(tuple((m["role"], m["content"]) for m in prompt.messages(caption=ask.caption)),
                            prompt.version) for ask in self._asks(batch, prompt)]

    def _asks(self, batch: Batch, prompt) -> list[_Ask]:
        asks = []
        for mirrored, row in zip(batch["mirrored"], batch["annotations"]):
            for annotation in row:
                derive = bool(mirrored) and self.mirror_from_base
                caption = mirror_text(annotation["caption"]) if derive else annotation["caption"]
                messages = [(m["role"], m["content"]) for m in prompt.messages(caption=caption)]
                asks.append(_Ask(caption, derive, messages))
        return asks

    def __call__(self, batch: Batch) -> Batch:
        prompt = load_prompt(self.prompt)
        engine = engine_for(self.llm)
        before = engine.counters.copy()
        asks = self._asks(batch, prompt)
        for _ in range(self.max_attempts):
            active = [a for a in asks if not a.status]
            if not active:
                break
            answers = engine.run([ChatRequest(tuple(a.messages), prompt.version) for a in active])
            for ask, answer in zip(active, answers):
                ask.attempts += 1
                if answer.error is not None:  # the engine already retried: keep the row, say why
                    ask.status, ask.error = "error", answer.error
                    continue
                ask.answer, ask.check = answer.text, check_fine_answer(answer.text, self.min_steps, self.max_steps)
                if ask.check.ok:
                    ask.status = "checked"
                else:
                    ask.messages += [("assistant", answer.text),
                                     ("user", REASK.format(reasons="; ".join(ask.check.reasons)))]
        for ask in asks:
            ask.status = ask.status or "failed"
            self.counters[ask.status] += 1
            self.counters["mirror_derived"] += ask.mirrored
        self.counters.update({f"llm_{k}": v - before.get(k, 0) for k, v in engine.counters.items()})
        results = iter(self._result(ask, prompt.version) for ask in asks)
        return {"fine": [[next(results) for _ in row] for row in batch["annotations"]]}

    def _result(self, ask: _Ask, prompt_version: str) -> dict[str, Any]:
        swap = mirror_text if ask.mirrored else (lambda text: text)
        steps = ask.check.steps if ask.check else []
        return {
            "status": ask.status,
            "source": "mirror" if ask.mirrored else "llm",
            "attempts": ask.attempts,
            "steps": [{"index": s.index, "title": swap(s.title), "description": swap(s.description),
                       "pseudo_code": swap(s.pseudo_code)} for s in steps],
            "reasons": [ask.error] if ask.error else (ask.check.reasons if ask.check else []),
            "answer": swap(ask.answer),
            "model": self.llm.model,
            "prompt_version": prompt_version,
        }


def steps_of(fine: dict[str, Any]) -> list[FineStep]:
    """The FineStep list of one stored `fine` struct."""
    return [FineStep(s["index"], s["title"], s["description"], s["pseudo_code"]) for s in fine["steps"]]
