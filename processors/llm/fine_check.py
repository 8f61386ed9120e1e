"""The pseudo-code compulsory check of FineHumanML3D answers (pure: text in, verdict out).

An answer has two paragraphs of numbered, titled steps:

    <step 1: standing>The person stands upright ...</step 1: standing> <step 2: ...>...</step 2: ...>
    <step 1: standing>stand(upright, arms down)</step 1: standing> <step 2: ...>...</step 2: ...>

Small tag slips that even the published answers have (`</step 2:taking a step>`, a closing tag
without `/`, spacing, case) are normalised; what is really inconsistent is rejected with reasons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TAG = re.compile(r"<\s*(/?)\s*step\s*(\d+)\s*:\s*([^<>]*?)\s*>", re.IGNORECASE)
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*[.;]?$", re.DOTALL)
_MUSCLE = re.compile(r"\bmuscl\w*|\bmuscular\b", re.IGNORECASE)


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


def check_fine_answer(text: str, min_steps: int = 2, max_steps: int = 8) -> CheckResult:
    """Parse and check one answer; `ok` only when every check passes."""
    blocks, reasons = _tagged_blocks(text)
    if not blocks:
        return CheckResult(False, [], reasons or ["no <step N: title>...</step N: title> tags found"])
    paragraphs = _paragraphs(blocks)
    if len(paragraphs) != 2:
        reasons.append(f"expected 2 paragraphs of steps (description, then pseudo-code), found {len(paragraphs)}")
        return CheckResult(False, [], reasons)
    described, coded = paragraphs
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
