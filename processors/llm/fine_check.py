"""The pseudo-code compulsory check of FineHumanML3D answers (pure: text in, verdict out).

The published form has two paragraphs of numbered, titled steps:

    <step 1: standing>The person stands upright ...</step 1: standing> <step 2: ...>...</step 2: ...>
    <step 1: standing>stand(upright, arms down)</step 1: standing> <step 2: ...>...</step 2: ...>

The LLM is asked for the same steps as one JSON object (`FINE_STEPS_FORM`), which constrained
decoding can enforce and which makes the two paragraphs agree by construction:

    {"steps": [{"title": "standing", "description": "The person ...", "pseudo_code": "stand(upright)"}, ...]}

`check_fine_answer` renders such an answer into the tagged form and checks that, so both kinds of
answer go through one check. Small tag slips that even the published answers have
(`</step 2:taking a step>`, a closing tag without `/`, spacing, case) are normalised; what is
really inconsistent is rejected with reasons.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from datasets_build.llm.structured import Constraint

_TAG = re.compile(r"<\s*(/?)\s*step\s*(\d+)\s*:\s*([^<>]*?)\s*>", re.IGNORECASE)
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*[.;]?$", re.DOTALL)
_MUSCLE = re.compile(r"\bmuscl\w*|\bmuscular\b", re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
FIELDS = ("title", "description", "pseudo_code")


@dataclass(frozen=True)
class FineStep:
    index: int
    title: str
    description: str
    pseudo_code: str


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    steps: list[FineStep] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _norm_title(title: str) -> str:
    return " ".join(title.lower().split())


def _tagged_blocks(text: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(number, title, content) of every tagged block in order, and tag problems."""
    tags = list(_TAG.finditer(text))
    blocks, problems = [], []
    i = 0
    while i < len(tags):
        opening = tags[i]
        number, title = int(opening[2]), opening[3]
        if opening[1]:
            problems.append(f"closing tag {opening[0]!r} has no opening tag")
            i += 1
            continue
        if i + 1 >= len(tags):
            problems.append(f"tag {opening[0]!r} is never closed")
            break
        closing = tags[i + 1]
        # A closing tag without '/' repeats the opening tag: accept it as the close.
        if int(closing[2]) != number or _norm_title(closing[3]) != _norm_title(title):
            problems.append(f"tag {opening[0]!r} is closed by {closing[0]!r}")
            i += 1
            continue
        blocks.append((number, title.strip(), text[opening.end() : closing.start()].strip()))
        i += 2
    return blocks, problems


def _paragraphs(blocks: list[tuple[int, str, str]]) -> list[list[tuple[int, str, str]]]:
    """Split the blocks where the numbering starts again at 1."""
    paragraphs: list[list[tuple[int, str, str]]] = []
    for block in blocks:
        if block[0] == 1 or not paragraphs:
            paragraphs.append([])
        paragraphs[-1].append(block)
    return paragraphs


@functools.lru_cache(maxsize=8)
def fine_steps_constraint(min_steps: int = 2, max_steps: int = 8) -> Constraint:
    """The JSON answer form: `min_steps` to `max_steps` steps, each a title (letters first), a
    description without tags or line breaks, and one call `name(arguments)`. The grammar also
    bounds the lengths (a small model otherwise writes until its token limit)."""
    title, description = r"^[A-Za-z][A-Za-z0-9 ,'-]*$", r"^[^<>\n]*[^<>\n ][^<>\n]*$"
    call = r"^[a-z][a-z0-9_]*\([^<>()\n]*[^<>()\n ][^<>()\n]*\)$"
    step = {"type": "object", "additionalProperties": False, "required": list(FIELDS),
            "properties": {"title": {"type": "string", "pattern": title},
                           "description": {"type": "string", "pattern": description},
                           "pseudo_code": {"type": "string", "pattern": call}}}
    schema = {"type": "object", "additionalProperties": False, "required": ["steps"], "properties": {
        "steps": {"type": "array", "minItems": min_steps, "maxItems": max_steps, "items": step}}}
    grammar = rf"""
root ::= "{{" ws "\"steps\":" ws "[" ws step ("," ws step){{{min_steps - 1},{max_steps - 1}}} ws "]" ws "}}"
step ::= "{{" ws "\"title\":" ws title "," ws "\"description\":" ws description "," ws "\"pseudo_code\":" ws call ws "}}"
title ::= "\"" [a-zA-Z] [a-zA-Z0-9 ,'-]{{0,39}} "\""
description ::= "\"" [^"\\<>\n ] [^"\\<>\n]{{0,279}} "\""
call ::= "\"" [a-z] [a-z0-9_]{{0,31}} "(" [^"\\<>()\n ] [^"\\<>()\n]{{0,119}} ")" "\""
ws ::= [ \n]{{0,4}}
"""
    return Constraint.of(f"fine_steps.json.{min_steps}-{max_steps}", schema, grammar)


def steps_from_json(text: str) -> tuple[list[FineStep], list[str]]:
    """(steps, reasons) of a JSON answer `{"steps": [{title, description, pseudo_code}, ...]}`
    (a ```json fence around it is fine); the steps are numbered 1..n in order."""
    fenced = _FENCE.match(text.strip())
    try:
        value: Any = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as exc:
        return [], [f"the answer is not JSON ({exc.msg} at character {exc.pos})"]
    steps = value.get("steps") if isinstance(value, dict) else value
    if not isinstance(steps, list) or not steps:
        return [], ['the answer is not an object {"steps": [...]} with a non-empty list of steps']
    parsed, reasons = [], []
    for number, step in enumerate(steps, start=1):
        if not isinstance(step, dict):
            reasons.append(f"step {number} is not an object with {', '.join(FIELDS)}")
            continue
        missing = [name for name in FIELDS if not isinstance(step.get(name), str)]
        if missing:
            reasons.append(f"step {number} has no {', '.join(missing)} text")
        values = [" ".join(str(step.get(name) or "").split()) for name in FIELDS]
        parsed.append(FineStep(number, *values))
    return parsed, reasons


def is_json_answer(text: str) -> bool:
    stripped = text.lstrip()
    return stripped.startswith(("{", "[", "```"))


def check_fine_answer(text: str, min_steps: int = 2, max_steps: int = 8) -> CheckResult:
    """Parse and check one answer (the JSON form, rendered into the tagged form, or the tagged form
    itself); `ok` only when every check passes."""
    if is_json_answer(text):
        steps, problems = steps_from_json(text)
        if not steps:
            return CheckResult(False, [], problems)
        if any("<" in value or ">" in value for s in steps for value in (s.title, s.description, s.pseudo_code)):
            result = check_fine_answer(render_answer(steps), min_steps, max_steps)  # tags inside: check the text
        else:  # the rendered paragraphs would hold exactly these blocks
            result = _check_paragraphs([(s.index, s.title, s.description) for s in steps],
                                       [(s.index, s.title, s.pseudo_code) for s in steps], text, [], min_steps,
                                       max_steps)
        return CheckResult(result.ok and not problems, result.steps, problems + result.reasons)
    blocks, reasons = _tagged_blocks(text)
    if not blocks:
        return CheckResult(False, [], reasons or ["no <step N: title>...</step N: title> tags found"])
    paragraphs = _paragraphs(blocks)
    if len(paragraphs) != 2:
        reasons.append(f"expected 2 paragraphs of steps (description, then pseudo-code), found {len(paragraphs)}")
        return CheckResult(False, [], reasons)
    return _check_paragraphs(*paragraphs, text, reasons, min_steps, max_steps)


def _check_paragraphs(described: list[tuple[int, str, str]], coded: list[tuple[int, str, str]], text: str,
                      reasons: list[str], min_steps: int, max_steps: int) -> CheckResult:
    """The checks of the two paragraphs' (number, title, content) blocks."""
    for name, paragraph in (("description", described), ("pseudo-code", coded)):
        numbers = [number for number, _, _ in paragraph]
        if numbers != list(range(1, len(paragraph) + 1)):
            reasons.append(f"{name} steps are numbered {numbers}, not 1..{len(paragraph)} in order")
    if len(described) != len(coded):
        reasons.append(f"the description has {len(described)} steps but the pseudo-code {len(coded)}")
    elif [_norm_title(t) for _, t, _ in described] != [_norm_title(t) for _, t, _ in coded]:
        reasons.append("the step titles of the description and the pseudo-code differ")
    if not min_steps <= len(described) <= max_steps:
        reasons.append(f"{len(described)} steps; expected {min_steps} to {max_steps}")
    for number, title, content in described:
        if not content:
            reasons.append(f"step {number} ({title}) has an empty description")
        if not title:
            reasons.append(f"step {number} has no title")
    for number, title, content in coded:
        call = _CALL.match(content)
        if not call:
            reasons.append(f"pseudo-code step {number} is not of the form name(arguments): {content[:60]!r}")
        elif not call[2].strip():
            reasons.append(f"pseudo-code step {number} calls {call[1]}() with no arguments")
    muscle = _MUSCLE.search(text)
    if muscle:
        reasons.append(f"mentions muscles ({muscle[0]!r}); describe positions and movements only")
    steps = [FineStep(n, t, d, c) for (n, t, d), (_, _, c) in zip(described, coded)]
    return CheckResult(not reasons, steps, reasons)


def format_steps(steps: list[FineStep], pseudo_code: bool = False) -> str:
    """The steps as one line of tagged text (FineHumanML3D's published format)."""
    return " ".join(
        f"<step {s.index}: {s.title}>{s.pseudo_code if pseudo_code else s.description}</step {s.index}: {s.title}>"
        for s in steps
    )


def render_answer(steps: list[FineStep]) -> str:
    """Both paragraphs, descriptions then pseudo-code: the answer in the published tagged form."""
    return format_steps(steps) + "\n" + format_steps(steps, pseudo_code=True)
