"""Training configs as dataclasses, and the command lines derived from them (each default written once).

`TrainOptions` holds the settings every model's training shares. A model's `TrainConfig` subclasses
it, redeclares a field to change its default, and adds its own fields. Its command line comes from
the dataclasses through `datasets_build.core.flags`: one flag per field, plus `--quiet` (the
`progress` field, inverted) and `--model KEY=VALUE` (repeatable, typed by the model's config
dataclass, collected into the `model` field):

    parser = train_parser("python -m models train retrieval", __doc__, TrainConfig, RetrievalConfig)
    cfg = train_config_from_args(TrainConfig, RetrievalConfig, parser.parse_args(argv))

`run_command` is the one place that turns a `UserError` into `error: <message>` and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Callable

from datasets_build.core.errors import UserError
from datasets_build.core.flags import add_options, from_args, option, parse_overrides


@dataclasses.dataclass
class TrainOptions:
    """Settings shared by every model's training run."""

    data: str = option(help="build folder (datasets.load_from_disk)", metavar="BUILT_DIR")
    out: str = option(help="run folder: checkpoint.pt, config.json, log.jsonl", metavar="RUN_DIR")
    split: str = option("train", "training split")
    val_split: str | None = option("val", "validation split (skipped when the build has none)")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")
    epochs: int = option(100, "total epochs; a resumed run counts on from its checkpoint", metavar="N",
                         positive=True)
    batch_size: int = option(32, "samples per optimizer step", metavar="B", positive=True)
    lr: float = option(1e-4, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float | None = option(1.0, "clip the gradient norm to this (0: no clipping)")
    num_workers: int = option(2, "DataLoader worker processes", metavar="N")
    seed: int = option(0, "seed of python, numpy and torch")
    resume: bool = option(False, "continue the checkpoint in the run folder up to --epochs")
    log_every: int = option(20, "optimizer steps between step lines in log.jsonl", metavar="N", positive=True)
    progress: bool = option(True, "progress bars and a line per epoch (the command line's --quiet turns them off)")
    model: dict[str, Any] = option(default_factory=dict, help="model config overrides, by field name")


# fields whose flags are written here rather than derived: --quiet and --model KEY=VALUE
_HAND_WRITTEN = ("progress", "model")


def model_overrides(model_cls: type, pairs: list[str]) -> dict[str, Any]:
    """`["latent_dim=128", "vae=false"]` -> typed values of `model_cls`'s fields (OptionError otherwise)."""
    return parse_overrides(model_cls, pairs, "model setting")


def settings_help(cls: type) -> str:
    """One line per field of the config dataclass `cls`: KEY=DEFAULT and its help text."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        rows.append((f"{f.name}={default}", f"{kind}; {f.metadata.get('help', '')}".rstrip("; ")))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"  {key.ljust(width)}  {text}" for key, text in rows)


def train_parser(prog: str, description: str, train_cls: type, model_cls: type) -> argparse.ArgumentParser:
    """The training command line of a model: flags from `train_cls`, `--model KEY=VALUE` typed by
    `model_cls` (its settings listed in the help)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"model settings ({model_cls.__name__}; --model KEY=VALUE, repeatable; a resumed run keeps "
               f"the settings it was trained with):\n{settings_help(model_cls)}")
    add_options(parser, train_cls, exclude=_HAND_WRITTEN)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="a model setting (listed below), e.g. --model latent_dim=128 --model num_layers=4")
    return parser


def train_config_from_args(train_cls: type, model_cls: type, args: argparse.Namespace) -> Any:
    """The `train_cls` instance of parsed `train_parser` flags."""
    return from_args(train_cls, args, progress=not args.quiet, model=model_overrides(model_cls, args.model))


def run_command(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """`main(argv)`, with a UserError printed as `error: <message>` (exit status 1, no traceback)."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (a training run continues from its last finished epoch with --resume)", file=sys.stderr)
        return 130
