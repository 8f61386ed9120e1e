"""One check for optional packages, with the exact command that installs them."""

from __future__ import annotations

import importlib.util
from typing import Mapping

from datasets_build.core.errors import MissingDependency


def install_command(extra: str) -> str:
    return f"pip install -e '.[{extra or 'all'}]'"


def missing_modules(modules: Mapping[str, str] | tuple[str, ...] | list[str]) -> list[str]:
    """The packages (names as pip knows them) of `modules` that cannot be imported here.
    `modules` maps module -> pip package, or lists modules whose package has the same name."""
    pairs = modules.items() if isinstance(modules, Mapping) else ((m, m) for m in modules)
    return [package for module, package in pairs if importlib.util.find_spec(module) is None]


def require(modules: Mapping[str, str] | tuple[str, ...] | list[str], what: str, extra: str = "",
            command: str | None = None) -> None:
    """Raise MissingDependency("<what> needs <packages>: <install command>") when any is missing."""
    missing = missing_modules(modules)
    if missing:
        raise MissingDependency(f"{what} needs {', '.join(missing)}: {command or install_command(extra)}")
