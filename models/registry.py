"""The models registry: every model package registers itself with a `MODEL = ModelEntry(...)` in its
`__init__.py`, which must stay light (no torch import at package import: the package exports its
classes lazily), so that listing the models imports no torch.

    MODEL = ModelEntry(
        name="retrieval", summary="TMR-style text-motion retrieval",
        commands={"train": "models.retrieval.train", "evaluate": "models.retrieval.evaluate"},
        checkpoint="retrieval",                 # the package of its checkpoints' format tag
        generator=None)                         # "module:function" whose function(run_dir, device) -> Generator

A package that holds several models (LaMP: pretraining, T2M, M2T) adds `MODELS = (entry, ...)`.
`discover()` imports every subpackage of `models` (not the modules inside it) and collects the
entries. `entry_for_run(run_dir)` reads a run folder's format tag ("models.<package>/<version>")
and returns the entry that writes it, which is how `generate --run` and `evaluate --run` find the
model of a run.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

from datasets_build.core.errors import UserError

COMMANDS = ("train", "generate", "evaluate")


class UnknownRun(UserError, ValueError):
    """A run folder that no registered model wrote."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    summary: str
    commands: dict[str, str] = field(default_factory=dict)  # command -> module with `main(argv, prog)`
    checkpoint: str | None = None  # the package name in its checkpoints' format tag
    generator: str | None = None  # "module:function": function(run_dir, device) -> an object with generate()


def discover() -> dict[str, ModelEntry]:
    """{name: entry} of every `models.<package>` whose `__init__` defines MODEL, by name."""
    import models

    found: dict[str, ModelEntry] = {}
    for info in sorted(pkgutil.iter_modules(models.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"models.{info.name}")
        for entry in (getattr(module, "MODEL", None), *getattr(module, "MODELS", ())):
            if isinstance(entry, ModelEntry):
                found[entry.name] = entry
    return found


def run_format(run_dir: str | Path) -> str:
    """The format tag of a run folder, read from its config.json (no torch needed)."""
    path = Path(run_dir)
    config = path / "config.json" if path.is_dir() else path.with_name("config.json")
    if not path.exists():
        raise UnknownRun(f"run folder {path} does not exist")
    try:
        return str(json.loads(config.read_text())["format"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UnknownRun(f"{path} is not a run folder written by `python -m models train` "
                         f"({config.name} with a format tag is missing or unreadable)") from None


def entry_for_run(run_dir: str | Path, registry: dict[str, ModelEntry] | None = None) -> ModelEntry:
    """The registered model whose checkpoints carry the format tag of `run_dir`."""
    tag = run_format(run_dir)
    package = tag.rpartition("/")[0].removeprefix("models.")
    for entry in (registry if registry is not None else discover()).values():
        if entry.checkpoint == package:
            return entry
    raise UnknownRun(f"{run_dir} holds a {tag!r} checkpoint, which no registered model writes")


def load_object(path: str) -> object:
    """The object `module:attribute` names (imported now)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


__all__ = ["COMMANDS", "ModelEntry", "UnknownRun", "discover", "entry_for_run", "load_object", "run_format"]
