"""What every LLM processor does with its annotations: ask, check, re-ask with the reasons.

Per annotation: send the prompt, check the answer with a pure check, and when it fails append the
answer and a re-ask message naming the reasons, until it passes or `max_attempts` is spent. Rows
that still fail keep their last answer and reasons; nothing is dropped. A mirrored motion's
annotation asks about its un-mirrored caption (the base motion's request, answered once, from the
cache) and the processor swaps left and right in the answer, so mirrors cost no request. A
processor may give its answer's form as a `Constraint`, which every request carries (constrained
decoding where the server supports it; the check still reads every answer).

Counters (the run summary): checked, failed, error (annotations), mirror_derived, `why: <reason>`
(failed and errored annotations by the kind of their last reason), and the engine's as llm_*.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol

from datasets import List, Value

from datasets_build.motion.captions import mirror_text
from datasets_build.llm.engine import ChatRequest, LLMConfig, LLMEngine
from datasets_build.llm.structured import Constraint, field_name
from processors.base import Batch, Processor, split_rows
from prompts import Prompt, load_prompt

def answer_features(name: str, feature: Any) -> dict[str, Any]:
    """The struct of one asked annotation: the bookkeeping every LLM processor keeps around the
    column `name` that its check parses out of the answer."""
    return {
        "status": Value("string"),  # checked | failed (check never passed) | error (no answer)
        "source": Value("string"),  # llm | mirror (derived from the un-mirrored caption's answer)
        "attempts": Value("int32"),
        name: feature,
        "reasons": List(Value("string")),  # why the last answer failed (empty when checked)
        "answer": Value("string"),  # the last raw answer
        "model": Value("string"),
        "prompt_version": Value("string"),
    }


class Verdict(Protocol):
    ok: bool
    reasons: list[str]


@dataclasses.dataclass
class Ask:
    caption: str  # what the LLM is asked about (the un-mirrored caption for a derived mirror)
    mirrored: bool  # derived from the base caption's answer: swap left/right in the result
    annotation: dict[str, Any]  # the annotation as stored (tokens, pos, frames)
    messages: list[tuple[str, str]]
    attempts: int = 0
    status: str = ""  # checked | failed (the check never passed) | error (no answer)
    answer: str = ""
    check: Any = None  # the last verdict
    error: str = ""

    def reasons(self) -> list[str]:
        return [self.error] if self.error else (list(self.check.reasons) if self.check else [])

    def swap(self, text: str) -> str:
        return mirror_text(text) if self.mirrored else text


def make_asks(batch: Batch, prompt: Prompt, mirror_from_base: bool) -> list[Ask]:
    """One Ask per annotation of the batch (columns `mirrored` and `annotations`), in row order."""
    asks = []
    for mirrored, row in zip(batch["mirrored"], batch["annotations"]):
        for annotation in row:
            derive = bool(mirrored) and mirror_from_base
            caption = mirror_text(annotation["caption"]) if derive else annotation["caption"]
            messages = [(m["role"], m["content"]) for m in prompt.messages(caption=caption)]
            asks.append(Ask(caption, derive, annotation, messages))
    return asks


def requests_of(asks: Iterable[Ask], prompt: Prompt, constraint: Constraint | None = None) -> list[ChatRequest]:
    """Each ask's next request (its messages so far)."""
    return [ChatRequest(tuple(ask.messages), prompt.version, constraint) for ask in asks]


def reason_kind(reason: str) -> str:
    """A reason without its values (quoted text, details in brackets, numbers, a list after ': '),
    so that reasons can be counted: "sub-text 2 ('x') uses words ...: jump" -> "sub-text N uses words ..."."""
    text = re.sub(r"<[^<>]*>", "<tag>", reason)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\([^()]*\)|\[[^\[\]]*\]", "", text).split(": ")[0]
    return " ".join(re.sub(r"\d+(\.\d+)?", "N", text).replace(",", " ").split())[:90]


def ask_until_checked(engine: LLMEngine, asks: list[Ask], prompt: Prompt, check: Callable[[Ask, str], Verdict],
                      reask: str, max_attempts: int, counters: Counter, constraint: Constraint | None = None) -> None:
    """Fill in every ask's status, answer, verdict and attempts (`reask` has a {reasons} slot)."""
    before = engine.counters.copy()
    for _ in range(max_attempts):
        active = [a for a in asks if not a.status]
        if not active:
            break
        for ask, answer in zip(active, engine.run(requests_of(active, prompt, constraint))):
            ask.attempts += 1
            if answer.error is not None:  # the engine already retried: keep the row, say why
                ask.status, ask.error = "error", answer.error
                continue
            ask.answer, ask.check = answer.text, check(ask, answer.text)
            if ask.check.ok:
                ask.status = "checked"
            else:
                ask.messages += [("assistant", answer.text),
                                 ("user", reask.replace("{reasons}", "; ".join(ask.check.reasons)))]
    for ask in asks:
        ask.status = ask.status or "failed"
        counters[ask.status] += 1
        counters["mirror_derived"] += ask.mirrored
        if ask.status != "checked":
            counters.update(f"why: {kind}" for kind in dict.fromkeys(map(reason_kind, ask.reasons())))
    counters.update({f"llm_{k}": v - before.get(k, 0) for k, v in engine.counters.items()})


@dataclasses.dataclass(frozen=True)
class LLMProcessor(Processor):
    """A processor that asks an LLM about every annotation and checks the answers: subclasses set
    the prompt, the re-ask message and `check`, and turn the finished asks into their column."""

    requires: ClassVar[tuple[str, ...]] = ("openai",)
    extra: ClassVar[str] = "llm"
    reask: ClassVar[str]  # the message after a failed check, with a {reasons} slot
    note: ClassVar[str] = ""  # the rule, for the dataset card (`card_note` adds the decoding)
    llm: LLMConfig = LLMConfig()
    prompt: str = ""  # a prompts/ version, e.g. "fine_steps.v1"
    max_attempts: int = 3
    mirror_from_base: bool = True

    def config(self) -> dict[str, Any]:
        return {**super().config(), "llm": self.llm.identity()}  # endpoint and limits change no answer

    def check(self, ask: Ask, answer: str) -> Verdict:
        raise NotImplementedError

    def constraint(self) -> Constraint | None:
        """The answer's form for constrained decoding (None: free text)."""
        return None

    @property
    def card_note(self) -> str:  # type: ignore[override]
        """This processor's rule for the dataset card, with the constrained decoding it used."""
        return f"{self.note} {self.decoding_note()}".strip()

    def decoding_note(self) -> str:
        constraint, mode, server = self.constraint(), self.llm.mode(), self.llm.server_kind()
        if constraint is None:
            return ""
        if mode == "off":
            return f"Decoding was not constrained (server kind: {server})."
        return (f"Answers were asked with constrained decoding: {mode}, sent to the {server} server as "
                f"`{field_name(mode, server)}`; every answer was checked all the same.")

    def describe(self, counters: Mapping[str, int]) -> str:
        """The run summary's lines for this processor: annotations checked / failed / errored, the
        requests, and when any failed, the commonest reasons."""
        done = {k: counters.get(k, 0) for k in ("checked", "failed", "error")}
        total = sum(done.values())
        mirrors = counters.get("mirror_derived", 0)
        lines = [f"{self.name}: {total:,} annotations: {done['checked']:,} checked, {done['failed']:,} failed, "
                 f"{done['error']:,} errors ({mirrors:,} of them mirrors answered from their base)"]
        llm = {k[4:]: v for k, v in counters.items() if k.startswith("llm_")}
        lines.append(f"  requests: {llm.get('sent', 0):,} sent ({llm.get('retries', 0):,} retries), "
                     f"{llm.get('cached', 0):,} answered from the cache, {llm.get('tokens_out', 0):,} tokens out; "
                     f"decoding: {self.llm.mode()} ({self.llm.server_kind()})")
        if llm.get("constraint_ignored"):
            lines.append(f"  {llm['constraint_ignored']:,} of {llm.get('constrained', 0):,} answers were not in the "
                         f"constrained form: the server seems to ignore the constraint")
        if llm.get("truncated"):
            lines.append(f"  {llm['truncated']:,} answers were cut at the token limit ({self.llm.max_tokens})")
        reasons = sorted(((v, k[5:]) for k, v in counters.items() if k.startswith("why: ")), reverse=True)
        if reasons:
            head = "most failed; why" if done["failed"] + done["error"] > total / 2 else "why the others failed"
            lines.append(f"  {head}: " + "; ".join(f"{kind} ({count:,})" for count, kind in reasons[:3]))
        return "\n".join(lines)

    def unfinished(self, row: dict[str, Any]) -> bool:
        """A row with an annotation that got no answer (status `error`: the endpoint was down, the
        request timed out): not cached, and asked again on the next run (answers received are in
        the answer cache, so only the missing ones are paid for)."""
        return any(isinstance(value, dict) and value.get("status") == "error"
                   for column in row.values() if isinstance(column, list) for value in column)

    def setup(self) -> None:
        self.engine()

    def engine(self) -> LLMEngine:
        """This worker's engine (its connections and the answer cache)."""
        return self.resource("engine", lambda: LLMEngine(self.llm))

    def first_requests(self, batch: Batch) -> list[ChatRequest]:
        """The first request of every annotation (what --dry-run counts and batch export writes)."""
        prompt = load_prompt(self.prompt)
        return requests_of(make_asks(batch, prompt, self.mirror_from_base), prompt, self.constraint())

    def record(self, ask: Ask, prompt_version: str, name: str, value: Any) -> dict[str, Any]:
        """One row of `answer_features(name, ...)` for a finished ask (mirrors: `value` already swapped)."""
        return {"status": ask.status, "source": "mirror" if ask.mirrored else "llm", "attempts": ask.attempts,
                name: value, "reasons": ask.reasons(), "answer": ask.swap(ask.answer), "model": self.llm.model,
                "prompt_version": prompt_version}

    def ask(self, batch: Batch) -> tuple[list[Ask], str]:
        """Every annotation of the batch asked and checked; the asks in row order, and the prompt version."""
        prompt = load_prompt(self.prompt)
        asks = make_asks(batch, prompt, self.mirror_from_base)
        ask_until_checked(self.engine(), asks, prompt, self.check, self.reask, self.max_attempts, self.counters,
                          self.constraint())
        return asks, prompt.version


def regroup(values: list[Any], annotations: list[list[Any]]) -> list[list[Any]]:
    """Per-annotation values (in `make_asks` order) back into one list per row."""
    return split_rows(values, [len(row) for row in annotations])
