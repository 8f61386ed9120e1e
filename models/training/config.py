"""Training configs as dataclasses, and the command lines derived from them (each default written once).

`TrainOptions` holds the settings every model's training shares. A model's `TrainConfig` subclasses
it, redeclares a field to change its default, and adds its own fields. Its command line comes from
the dataclasses through `datasets_build.core.flags`: one flag per field, plus `--quiet` (the
`progress` field, inverted), `--set KEY=VALUE` (alias `--model`; repeatable, typed by the model's
config dataclass, collected into the `model` field; a key that only the training config has sets
that field) and `--preset NAME` (a model's named `Preset`s: `tiny`, the CPU test size, and
`paper`, the published settings; a preset changes defaults, explicit flags still win):

    cfg = parse_train_args(argv, "python -m models train retrieval", __doc__, TrainConfig, RetrievalConfig,
                           PRESETS)

`run_command` is the one place that turns a `UserError` into `error: <message>` and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Callable

from datasets_build.core.errors import UserError
from datasets_build.core.flags import OptionError, add_options, option, parse_overrides, values_for


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
    max_steps: int | None = option(None, "stop after N optimizer steps in all (a quick check; the epoch it stops "
                                         "in counts as done)", metavar="N", positive=True)
    preset: str | None = option(None, "the named preset whose defaults this run started from")
    progress: bool = option(True, "progress bars and a line per epoch (the command line's --quiet turns them off)")
    model: dict[str, Any] = option(default_factory=dict, help="model config overrides, by field name")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Named defaults of a model: its model config overrides and its training config overrides."""

    summary: str
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)


# fields whose flags are written here rather than derived: --quiet, --preset and --set/--model KEY=VALUE
_HAND_WRITTEN = ("progress", "model", "preset")


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


def _presets_help(presets: dict[str, Preset]) -> str:
    rows = []
    for name, preset in presets.items():
        values = ", ".join(f"{k}={v}" for k, v in {**preset.train, **preset.model}.items()) or "the defaults"
        rows.append(f"  {name}: {preset.summary} ({values})")
    return "\n".join(rows)


def train_parser(prog: str, description: str, train_cls: type, model_cls: type,
                 presets: dict[str, Preset] | None = None, defaults: Any = None) -> argparse.ArgumentParser:
    """The training command line of a model: flags from `train_cls` (their defaults from the
    `defaults` instance when given), `--set KEY=VALUE` (alias `--model`) typed by `model_cls` (its
    settings listed in the help) and, with `presets`, `--preset NAME`."""
    epilog = (f"model settings ({model_cls.__name__}; --set KEY=VALUE, repeatable, alias --model; a resumed run "
              f"keeps the settings it was trained with):\n{settings_help(model_cls)}")
    if presets:
        epilog = f"presets (--preset NAME; explicit flags and --set win):\n{_presets_help(presets)}\n\n{epilog}"
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, train_cls, exclude=_HAND_WRITTEN, defaults=defaults)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    if presets:
        parser.add_argument("--preset", choices=list(presets), default=None,
                            help="start from a named preset's defaults (listed below)")
    parser.add_argument("--set", "--model", dest="model", action="append", default=[], metavar="KEY=VALUE",
                        help="a model setting (listed below), e.g. --set latent_dim=128 --set num_layers=4; "
                             "a key only the training config has sets that training field")
    return parser


def split_overrides(train_cls: type, model_cls: type, pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model settings, training settings) of `KEY=VALUE` pairs: a key of `model_cls` is a model
    setting, a key that only `train_cls` has sets that training field."""
    model_names = {f.name for f in dataclasses.fields(model_cls)}
    train_names = {f.name for f in dataclasses.fields(train_cls)} - set(_HAND_WRITTEN)
    model_pairs, train_pairs = [], []
    for pair in pairs:
        key = pair.partition("=")[0].strip()
        if key in model_names or key not in train_names:
            model_pairs.append(pair)  # unknown keys get the model setting's message
        else:
            train_pairs.append(pair)
    return model_overrides(model_cls, model_pairs), parse_overrides(train_cls, train_pairs, "training setting")


def train_config_from_args(train_cls: type, model_cls: type, args: argparse.Namespace,
                           presets: dict[str, Preset] | None = None) -> Any:
    """The `train_cls` instance of parsed `train_parser` flags (a preset's model settings first,
    then --set/--model)."""
    preset_name = getattr(args, "preset", None)
    preset = (presets or {}).get(preset_name) if preset_name else None
    model, train = split_overrides(train_cls, model_cls, args.model)
    values = {**values_for(train_cls, args), **train}
    return train_cls(**{**values, "progress": not args.quiet, "preset": preset_name,
                        "model": {**(preset.model if preset else {}), **model}})


def parse_train_args(argv: list[str] | None, prog: str, description: str, train_cls: type, model_cls: type,
                     presets: dict[str, Preset] | None = None) -> Any:
    """Parse a training command line: the `--preset` first (its training values become the flags'
    defaults), then everything else; returns the `train_cls` instance."""
    defaults = None
    if presets:
        early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        early.add_argument("--preset", choices=list(presets), default=None)
        known, _ = early.parse_known_args(argv)
        if known.preset:
            try:
                defaults = train_cls(**{f.name: "" for f in dataclasses.fields(train_cls)
                                        if f.default is dataclasses.MISSING
                                        and f.default_factory is dataclasses.MISSING},
                                     **presets[known.preset].train)
            except TypeError as error:
                raise OptionError(f"preset {known.preset!r} does not fit {train_cls.__name__} ({error})") from None
    parser = train_parser(prog, description, train_cls, model_cls, presets, defaults)
    return train_config_from_args(train_cls, model_cls, parser.parse_args(argv), presets)


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
