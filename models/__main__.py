"""The models' command line: `python -m models train|generate|evaluate NAME [options]`.

    python -m models --help                                   # the models and their commands
    python -m models train retrieval --help                   # that command's options
    python -m models train retrieval --data built/humanml3d --out runs/tmr --model latent_dim=128
    python -m models evaluate retrieval --run runs/tmr --data built/humanml3d --split test

`MODELS` maps a model's name to the module of each command it supports; a module is imported only
when its command runs (listing the models imports no torch), and exposes `main(argv, prog) -> int`.
A `UserError` prints `error: <message>` and exits with status 1.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from models.training.config import run_command

COMMANDS = ("train", "generate", "evaluate")


@dataclass(frozen=True)
class ModelEntry:
    summary: str
    commands: dict[str, str]  # command -> module path with `main(argv, prog)`


MODELS: dict[str, ModelEntry] = {
    "retrieval": ModelEntry("TMR-style text-motion retrieval (text and motion encoders, shared latent space)",
                            {"train": "models.retrieval.train", "evaluate": "models.retrieval.evaluate"}),
}

USAGE = "usage: python -m models {train,generate,evaluate} NAME [options]"


def overview() -> str:
    width = max(len(name) for name in MODELS)
    rows = [f"  {name.ljust(width)}  {', '.join(c for c in COMMANDS if c in entry.commands):<24}  {entry.summary}"
            for name, entry in MODELS.items()]
    return "\n".join([
        USAGE, "",
        "Train, sample from and evaluate text-to-motion models on datasets built by `python -m datasets_build`.",
        "", "models (name, commands, what it is):", *rows, "",
        "`python -m models COMMAND NAME --help` lists that command's options.",
    ])


def _usage_error(message: str) -> int:
    print(f"{USAGE}\npython -m models: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _usage_error(f"unknown command {command!r} (choose from {', '.join(COMMANDS)})")
    if not rest or rest[0].startswith("-"):
        return _usage_error(f"{command} needs a model name: {', '.join(MODELS)}")
    name, options = rest[0], rest[1:]
    if name not in MODELS:
        return _usage_error(f"no model named {name!r} (models: {', '.join(MODELS)})")
    if command not in MODELS[name].commands:
        return _usage_error(f"{name} has no {command} command (it has {', '.join(MODELS[name].commands)})")
    module = importlib.import_module(MODELS[name].commands[command])
    return run_command(lambda args: module.main(args, prog=f"python -m models {command} {name}"), options)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers warn after the loader forks
    sys.exit(main())
