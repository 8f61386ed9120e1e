"""Configuration dataclasses as command-line flags, and typed `KEY=VALUE` overrides: written once.

A recipe's options and a model's config are plain dataclasses (usable from Python without
argparse). Their command lines are derived from them, so each default and help text is written
once, next to the field:

    @dataclass(frozen=True)
    class VocabularyOptions:
        vocab_min_count: int = option(1, "keep lemmas seen at least N times", metavar="N", positive=True)

    add_options(parser, VocabularyOptions)          # --vocab-min-count N
    VocabularyOptions(**values_for(VocabularyOptions, args))

Field types map to flags: bool -> `--x/--no-x` (or `--x` when the default is False), int / float /
str (optionally `| None`) -> a typed value, `Literal[...]` -> choices. Fields whose type is none of
these (dicts, nested configs) get no flag. The field's metadata may set `flag` (another name),
`metavar`, `positive` (an int >= 1) and `help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal

from datasets_build.core.errors import UserError


class OptionError(UserError, ValueError):
    """A `KEY=VALUE` override or option value that does not fit the configuration."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, metavar: str | None = None,
           positive: bool = False, negatable: bool = False, repr: bool = True, aliases: tuple[str, ...] = (),
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with the help text (and flag details) of its command-line option.
    `negatable`: a bool that defaults to False still gets `--no-x`; `repr=False` for secrets;
    `aliases`: older names of the flag that keep working."""
    metadata = {"help": help, "flag": flag, "metavar": metavar, "positive": positive, "negatable": negatable,
                "aliases": aliases}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, repr=repr)
    return dataclasses.field(default=default, metadata=metadata, repr=repr)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                exclude: tuple[str, ...] = (), defaults: Any = None) -> None:
    """One flag per field of the dataclass `cls` (see the module docstring); `defaults`, an instance
    of `cls`, overrides the class's defaults (a recipe that wants other defaults for a group)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.init:
            continue
        kind, optional = _base_type(hints[field.name])
        default = None if field.default is dataclasses.MISSING else field.default
        if defaults is not None:
            default = getattr(defaults, field.name)
        text = field.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": field.name, "default": default}
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        if kind is bool:
            if default or field.metadata.get("negatable"):
                kwargs["action"] = argparse.BooleanOptionalAction
                text += " (default: on)" if default else " (default: off)"
            else:
                kwargs["action"] = "store_true"
            kwargs.pop("metavar", None)
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
            text += " (default: %(default)s)" if default is not None else ""
        elif kind in (int, float, str):
            kwargs["type"] = positive_int if (kind is int and field.metadata.get("positive")) else kind
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                kwargs["required"] = True
                kwargs.pop("default")
            elif default is not None:
                text += " (default: %(default)s)"
        else:
            continue  # dicts, tuples, nested configs: set from Python or with KEY=VALUE overrides
        parser.add_argument(flag_name(field), *field.metadata.get("aliases", ()), help=text or None, **kwargs)


def values_for(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of `cls`'s flags, by field name (fields without a flag are left out)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: value for name, value in vars(args).items() if name in names}


def from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """An instance of `cls` from the parsed flags plus `extra` fields."""
    return cls(**{**values_for(cls, args), **extra})


def parse_value(text: str, annotation: Any, what: str) -> Any:
    """`text` as a value of `annotation` (bool, int, float, str, their `| None`, Literal)."""
    kind, optional = _base_type(annotation)
    if text.lower() in ("none", "null"):
        if optional:
            return None
        raise OptionError(f"{what}: None is not allowed here")
    try:
        if kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return text.lower() in ("1", "true", "yes", "on")
        if typing.get_origin(kind) is Literal:
            choices = typing.get_args(kind)
            if text not in choices:
                raise ValueError
            return text
        if kind in (int, float, str):
            return kind(text)
    except ValueError:
        raise OptionError(f"{what}: {text!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    raise OptionError(f"{what}: this setting cannot be given as text")


def parse_overrides(cls: type, pairs: list[str], what: str = "override") -> dict[str, Any]:
    """`["latent_dim=128", "dropout=0.1"]` -> {"latent_dim": 128, "dropout": 0.1}, typed by the fields
    of the dataclass `cls`; an unknown key or a value of the wrong type is one clear sentence."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep:
            raise OptionError(f"{what} {pair!r}: expected KEY=VALUE")
        if key not in names:
            raise OptionError(f"{what} {pair!r}: {cls.__name__} has no setting {key!r}; "
                              f"its settings are {', '.join(sorted(names))}")
        out[key] = parse_value(value.strip(), hints[key], f"{what} {pair!r}")
    return out
