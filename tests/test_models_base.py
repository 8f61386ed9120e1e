"""models.base: the shared checkpoint format (atomic writes, format tags, configs beside the weights,
resume state), config round trips and RNG states; models.training.loop's run folder rules."""

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets_build.core.errors import UserError
from models import base
from models.base import CheckpointError, CheckpointFormat, CheckpointNotFound, config_from_dict
from models.training import loop

REPO = Path(__file__).resolve().parents[1]
FORMAT = CheckpointFormat("tiny", 2, reads=(1,))


@dataclass
class TinyConfig:
    width: int = 4
    bias: bool = True


class Tiny(torch.nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        self.layer = torch.nn.Linear(3, cfg.width, bias=cfg.bias)


def _save(run, epoch, model=None, **kwargs):
    model = model or Tiny(TinyConfig())
    optimizer = torch.optim.AdamW(model.parameters())
    model.layer.weight.sum().backward()
    optimizer.step()
    return base.save_checkpoint(run, FORMAT, model=model, model_config=model.cfg, train_config={"lr": 0.1},
                                optimizer=optimizer, epoch=epoch, step=10 * epoch,
                                configs={"data_options": {"min_length": 40}}, extra={"stats": torch.ones(3)}, **kwargs)


def test_a_run_folder_loads_with_nothing_but_its_path(tmp_path):
    model = Tiny(TinyConfig(width=6, bias=False))
    path = _save(tmp_path / "run", 3, model)
    assert path == tmp_path / "run" / "checkpoint.pt"
    state = base.load_checkpoint(tmp_path / "run", FORMAT)
    assert state["format"] == "models.tiny/2" and state["epoch"] == 3 and state["step"] == 30
    assert state["optimizer"]["state"] and torch.equal(state["stats"], torch.ones(3))
    assert {"python", "numpy", "torch"} <= state["rng"].keys()
    rebuilt = Tiny(config_from_dict(TinyConfig, state["model_config"]))  # the config travels with the weights
    rebuilt.load_state_dict(state["model"])
    assert rebuilt.cfg == model.cfg and torch.equal(rebuilt.layer.weight, model.layer.weight)
    readable = json.loads((tmp_path / "run" / "config.json").read_text())
    assert readable == {"format": "models.tiny/2", "model_config": {"width": 6, "bias": False},
                        "train_config": {"lr": 0.1}, "data_options": {"min_length": 40}}
    assert base.load_checkpoint(path, FORMAT)["epoch"] == 3  # the file itself works too


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _save(run, 1)

    def half_then_fail(obj, f):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(base.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        _save(run, 2)
    assert base.load_checkpoint(run, FORMAT)["epoch"] == 1
    assert json.loads((run / "config.json").read_text())["format"] == "models.tiny/2"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json"]  # no temporary left


def test_a_killed_process_leaves_the_previous_checkpoint(tmp_path):
    """A real crash: the writing process dies (os._exit, no cleanup) halfway through the file."""
    run = tmp_path / "run"
    _save(run, 1)
    script = f"""
import os, torch
from models import base
def die(obj, f):
    f.write(b"PK\\x03\\x04 half a zip file"); f.flush(); os._exit(9)
base.torch.save = die
base.save_checkpoint({str(run)!r}, base.CheckpointFormat("tiny", 2), model=torch.nn.Linear(3, 4), model_config={{}},
                     epoch=2)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr[-2000:]
    assert base.load_checkpoint(run, FORMAT)["epoch"] == 1
    assert any(p.name.endswith(".tmp") for p in run.iterdir())  # the half-written temporary, never renamed


def test_missing_unreadable_and_foreign_checkpoints_are_user_errors_naming_the_file(tmp_path):
    missing = tmp_path / "none" / "checkpoint.pt"
    with pytest.raises(CheckpointNotFound, match=re.escape(f"no tiny checkpoint at {missing}") + "$") as e:
        base.load_checkpoint(tmp_path / "none", FORMAT)
    assert isinstance(e.value, UserError) and isinstance(e.value, FileNotFoundError)
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=re.escape(f"{bad} cannot be read as a checkpoint")):
        base.load_checkpoint(bad, FORMAT)
    path = _save(tmp_path / "run", 1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt cannot be read"):
        base.load_checkpoint(truncated, FORMAT)
    foreign = f"{path} is a 'models.tiny/2' checkpoint, not a models.other one"
    with pytest.raises(CheckpointError, match=re.escape(foreign)):
        base.load_checkpoint(path, CheckpointFormat("other", 2))
    with pytest.raises(CheckpointError, match="reads models.tiny version 3 only"):
        base.load_checkpoint(path, CheckpointFormat("tiny", 3))
    assert base.load_checkpoint(path, CheckpointFormat("tiny", 3, reads=(2,)))["epoch"] == 1  # an older, readable one
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    with pytest.raises(CheckpointError, match="has no format tag"):
        base.load_checkpoint(plain, FORMAT)


def test_config_from_dict_defaults_new_fields_and_refuses_unknown_ones(tmp_path):
    assert config_from_dict(TinyConfig, {"width": 8}) == TinyConfig(width=8, bias=True)
    with pytest.raises(CheckpointError, match=r"run/checkpoint.pt has TinyConfig settings 'depth'"):
        config_from_dict(TinyConfig, {"width": 8, "depth": 2}, "run/checkpoint.pt")


def test_reserved_entries_cannot_be_overwritten(tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        base.save_checkpoint(tmp_path, FORMAT, model=Tiny(TinyConfig()), model_config=TinyConfig(),
                             extra={"epoch": 5})


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    base.seed_everything(3)
    _save(tmp_path / "run", 1)
    draws = (np.random.rand(3), torch.rand(3), __import__("random").random())
    base.seed_everything(99)
    base.restore_rng_state(base.load_checkpoint(tmp_path / "run", FORMAT)["rng"])
    again = (np.random.rand(3), torch.rand(3), __import__("random").random())
    assert np.array_equal(draws[0], again[0]) and torch.equal(draws[1], again[1]) and draws[2] == again[2]
    base.restore_rng_state(None)  # checkpoints from before RNG states were saved


def test_open_run_never_overwrites_and_restore_resumes(tmp_path):
    run = tmp_path / "run"
    assert loop.open_run(run, FORMAT, resume=False) is None and run.is_dir()
    assert loop.open_run(run, FORMAT, resume=True) is None  # nothing saved yet: a fresh start
    model = Tiny(TinyConfig())
    _save(run, 4, model)
    with pytest.raises(loop.RunExistsError, match="--resume") as e:
        loop.open_run(run, FORMAT, resume=False)
    assert isinstance(e.value, FileExistsError) and isinstance(e.value, UserError)
    state = loop.open_run(run, FORMAT, resume=True)
    fresh = Tiny(TinyConfig())
    optimizer = torch.optim.AdamW(fresh.parameters())
    assert loop.restore(state, fresh, optimizer) == (4, 40)
    assert torch.equal(fresh.layer.weight, model.layer.weight) and optimizer.state_dict()["state"]
    assert loop.restore(None, fresh, optimizer) == (0, 0)


def test_loop_pieces():
    model = Tiny(TinyConfig())
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = model.layer.weight.detach().clone()
    loss = (model.layer(torch.ones(1, 3)) * 1e6).sum()
    loop.optimizer_step(loss, model, optimizer, grad_clip=1.0)
    assert (model.layer.weight - before).norm() <= 1.0 + 1e-5  # clipped to norm 1, lr 1
    with pytest.raises(loop.DivergedError, match="nan at epoch 2 step 7"):
        loop.check_finite(torch.tensor(float("nan")), 2, 7)
    assert isinstance(loop.autocast(torch.device("cpu")), type(__import__("contextlib").nullcontext()))
    means = loop.Means()
    assert means.add({"loss": torch.tensor(1.0)}) == {"loss": 1.0}
    means.add({"loss": 3.0})
    assert means.means() == {"loss": 2.0}


def test_loop_pieces_for_one_process():
    """Without torchrun the distributed helpers are no-ops; optimizer_step clips each module on its own."""
    dist, device = loop.init_distributed("cpu")
    assert (dist.rank, dist.world_size, dist.is_main, dist.enabled, device.type) == (0, 1, True, False, "cpu")
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    assert loop.distribute(a, dist, device) is a and loop.unwrap(a) is a
    assert loop.shard(list(range(10)), dist, seed=0) is None
    assert loop.mean_across({"loss": 2.0}, dist, device) == {"loss": 2.0}
    loop.barrier(dist), loop.finish(dist)
    opts = [torch.optim.SGD(a.parameters(), lr=0.0), torch.optim.SGD(b.parameters(), lr=0.0)]
    loss = (a(torch.ones(1, 3)) * 1000).sum() + (b(torch.ones(1, 3)) * 0.001).sum()
    loop.optimizer_step(loss, [a, b], opts, 1.0)
    norm = lambda m: torch.cat([p.grad.flatten() for p in m.parameters()]).norm()  # noqa: E731
    assert norm(a) == pytest.approx(1.0, rel=1e-4) and norm(b) < 0.01  # clipped separately, not jointly
    assert loop.reached(5, 5) and not loop.reached(4, 5) and not loop.reached(10**6, None)
    meter = loop.Throughput(device)
    meter.resume(), meter.step(4), meter.pause()
    summary = meter.summary()
    assert summary["kind"] == "run" and summary["steps"] == 4 and summary["peak_memory_mb"] is None
    with loop.autocast(torch.device("cuda"), enabled=False):
        assert not torch.is_autocast_enabled()
