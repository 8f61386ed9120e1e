"""What every model package shares: the checkpoint format of a run folder, device choice, seeding.

A run folder RUN_DIR holds
- `checkpoint.pt`, rewritten after every epoch: {"format": "models.<package>/<version>",
  "model": state dict, "model_config": the model's config dataclass as a dict, "train_config": the
  training config as a dict, "optimizer": state dict or None, "epoch": completed epochs, "step":
  optimizer steps, "rng": the python / numpy / torch (and CUDA) generator states, plus the package's
  own entries (its normalisation statistics, its text encoder record, ...)}. Plain containers and
  tensors only, so it loads with `torch.load(weights_only=True)`.
- `config.json`: the format tag and the same configs, human-readable (rewritten with the checkpoint).

    FORMAT = CheckpointFormat("retrieval", 1)
    save_checkpoint(run_dir, FORMAT, model=model, model_config=model.cfg, train_config=cfg, ...)
    state = load_checkpoint(run_dir, FORMAT)                      # the tag is checked
    model = TMR(config_from_dict(RetrievalConfig, state["model_config"], run_dir))  # no flags needed

Every file is written to a temporary file in the same folder and renamed over the old one, so a
crash mid-write leaves the previous checkpoint. A package bumps its version when a checkpoint of
the old layout can no longer be read; `reads` lists the older versions it still reads.

A model with a frozen text encoder keeps `text_encoder_record(encoder, checkpoint)` in its checkpoint and
calls `check_text_encoder(encoder, record)` before using an encoder with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import numpy as np
import torch

from datasets_build.core.device import pick_device as _pick_device
from datasets_build.core.errors import UserError

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
_RESERVED = {"format", "model", "model_config", "train_config", "optimizer", "epoch", "step", "rng"}

__all__ = ["CHECKPOINT", "CONFIG", "CheckpointError", "CheckpointFormat", "CheckpointNotFound", "DeviceError",
           "atomic_write",
           "checkpoint_path", "config_from_dict", "load_checkpoint", "pick_device", "restore_rng_state",
           "rng_state", "save_checkpoint", "seed_everything", "write_config"]


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: unreadable, or of another package or version."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No checkpoint file where one was expected."""


class DeviceError(UserError, RuntimeError):
    """A device that this machine does not have (`--device cuda` without CUDA, a bad name)."""


class TextEncoderMismatch(UserError, ValueError):
    """A text encoder other than the one the model was trained with."""


_ENCODER_WIDTHS = ("dim", "token_dim")  # pooled and per-token widths


def text_encoder_record(encoder: Any, checkpoint: str | None = None) -> dict[str, Any]:
    """What a checkpoint keeps of its frozen text encoder: name, identity (a weights checksum), the local
    checkpoint it was loaded from, and its widths."""
    return {"name": encoder.name, "identity": getattr(encoder, "identity", encoder.name), "checkpoint": checkpoint,
            **{k: int(getattr(encoder, k)) for k in _ENCODER_WIDTHS if hasattr(encoder, k)}}


def check_text_encoder(encoder: Any, record: Mapping[str, Any],
                       error: type[Exception] = TextEncoderMismatch) -> None:
    """A model's text branch only makes sense with the exact frozen encoder it was trained on: the same
    identity and the widths the record holds; otherwise `error` (the package's own class) in one sentence."""
    identity = getattr(encoder, "identity", encoder.name)
    widths = [k for k in _ENCODER_WIDTHS if k in record]
    if identity != record["identity"] or any(int(getattr(encoder, k, -1)) != int(record[k]) for k in widths):
        raise error(f"text encoder {encoder.name!r} ({identity}) is not the one this model was trained with: "
                    f"{record['name']!r} ({record['identity']})")


def pick_device(device: Any = None) -> torch.device:
    """The shared device rule (`datasets_build.core.device`), checked here so that `--device cuda`
    on a machine without CUDA is one sentence instead of a traceback deep inside torch."""
    try:
        chosen = _pick_device(device)
    except RuntimeError as error:  # torch.device("gpu"): "Expected one of cpu, cuda, ... device type"
        raise DeviceError(f"--device {device!r} is not a torch device (use cpu, cuda or cuda:N)") from error
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"--device {device} asks for CUDA, but this machine has no CUDA device "
                              "(use --device cpu)")
        if chosen.index is not None and chosen.index >= count:
            raise DeviceError(f"--device {device} asks for GPU {chosen.index}, but this machine has {count}")
    return chosen


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    package: str  # the model package's name: "retrieval"
    version: int
    reads: tuple[int, ...] = ()  # older versions this code still reads

    @property
    def tag(self) -> str:
        return f"models.{self.package}/{self.version}"

    def check(self, tag: Any, path: Path) -> None:
        package, _, version = str(tag).rpartition("/")
        if package != f"models.{self.package}":
            raise CheckpointError(f"{path} is a {tag!r} checkpoint, not a models.{self.package} one")
        if version not in {str(v) for v in (self.version, *self.reads)}:
            readable = ", ".join(str(v) for v in sorted({self.version, *self.reads}))
            raise CheckpointError(f"{path} is a {tag!r} checkpoint, but this code reads models.{self.package} "
                                  f"version {readable} only")


# ----------------------------------------------------------------------------- files


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR/checkpoint.pt, or the path itself when it is a file (a checkpoint given directly)."""
    path = Path(run_dir)
    return path if path.is_file() else path / CHECKPOINT


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(binary file)` on a temporary file beside `path`, then rename it over `path`:
    readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace never crosses disks
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def _records(configs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Further configs as plain values: dataclasses become dicts, anything else stays as given."""
    return {k: _as_dict(v) if dataclasses.is_dataclass(v) else v for k, v in (configs or {}).items()}


def write_config(run_dir: str | os.PathLike, fmt: CheckpointFormat, *, model_config: Any, train_config: Any = None,
                 configs: Mapping[str, Any] | None = None) -> Path:
    """RUN_DIR/config.json: the format tag, the model and training configs and `configs` (further
    plain-JSON records that define the run), as `save_checkpoint` stores them."""
    record = {"format": fmt.tag, "model_config": _as_dict(model_config), "train_config": _as_dict(train_config),
              **_records(configs)}
    text = json.dumps(record, indent=2) + "\n"
    return atomic_write(Path(run_dir) / CONFIG, lambda f: f.write(text.encode()))


def save_checkpoint(run_dir: str | os.PathLike, fmt: CheckpointFormat, *, model: torch.nn.Module, model_config: Any,
                    train_config: Any = None, optimizer: torch.optim.Optimizer | None = None, epoch: int = 0,
                    step: int = 0, configs: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write RUN_DIR/checkpoint.pt and RUN_DIR/config.json atomically; returns the checkpoint path.

    `configs` are plain-JSON records that define the run (saved in both files); `extra` holds the
    package's other entries (tensors: checkpoint only). Both land at the checkpoint's top level."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    configs = _records(configs)
    clash = sorted((set(configs) | set(extra or {})) & _RESERVED)
    if clash:
        raise ValueError(f"checkpoint entries {clash} are written by save_checkpoint itself")
    state = {"format": fmt.tag, "model": model.state_dict(), "model_config": _as_dict(model_config),
             "train_config": _as_dict(train_config),
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "epoch": int(epoch), "step": int(step), "rng": rng_state(), **configs, **(extra or {})}
    path = atomic_write(run_dir / CHECKPOINT, lambda f: torch.save(state, f))
    write_config(run_dir, fmt, model_config=model_config, train_config=train_config, configs=configs)
    return path


def load_checkpoint(run_dir: str | os.PathLike, fmt: CheckpointFormat,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint of RUN_DIR (or the checkpoint file itself), its format tag checked."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise CheckpointNotFound(f"no {fmt.package} checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, not a torch file, or pickled objects weights_only refuses
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({reason})") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a models checkpoint (it has no format tag)")
    fmt.check(state["format"], path)
    return state


def config_from_dict(cls: type, values: Mapping[str, Any], source: str | os.PathLike = "the checkpoint") -> Any:
    """`cls(**values)` for a config read back from a checkpoint. Fields added since it was written
    take their defaults; a setting `cls` no longer has is an error naming `source`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CheckpointError(f"{source} has {cls.__name__} settings {', '.join(map(repr, unknown))} that this "
                              "code does not know (was it written by a newer version?)")
    return cls(**values)


# ----------------------------------------------------------------------------- randomness


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CUDA included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states in weights_only-loadable form (about 8 KB)."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(), "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any] | None) -> None:
    """Put back what `rng_state` saved; parts that are missing (older checkpoints) are skipped."""
    if not state:
        return
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
