"""Versioned LLM prompt templates: `<task>.v<N>.txt`, loaded with `load_prompt`.

A template file starts with `version: <task>.v<N>`, then `=== system ===` and `=== user ===`
sections; the user section holds `{placeholders}` (only the names given to `messages` are
replaced, so other braces, e.g. a JSON example, stay as written). The version is part of every
LLM cache key: editing a prompt means a new file and version, never a silent reuse of old answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Prompt:
    version: str
    system: str
    user: str

    def messages(self, **values: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), self.user)}]


def load_prompt(version: str) -> Prompt:
    """Load e.g. `fine_steps.v1` from prompts/fine_steps.v1.txt."""
    path = FOLDER / f"{version}.txt"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in FOLDER.glob("*.txt")))
        raise FileNotFoundError(f"no prompt {version!r} in {FOLDER} (available: {available})")
    header, _, rest = path.read_text(encoding="utf-8").partition("\n")
    if header.strip() != f"version: {version}":
        raise ValueError(f"{path}: first line must be 'version: {version}', found {header!r}")
    system, _, user = rest.partition("=== user ===")
    return Prompt(version, system.replace("=== system ===", "").strip(), user.strip())
