"""Train the TMR-style retrieval model on a built dataset.

    python -m models.retrieval.train --data built/humanml3d --out runs/tmr [--text-encoder minilm]
        [--device cuda|cpu] [--epochs N] [--batch-size B] [--resume]

RUN_DIR receives `checkpoint.pt` (after every epoch), `config.json`, `stats.npz` (the model's own
mean/std, computed from the training split) and `log.jsonl` (one line per logged step and per
epoch, with validation retrieval metrics when the build has a `val` split). `--resume` continues
from the checkpoint's epoch count up to `--epochs`. On CUDA the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.training.data import DataOptions, MotionDataset, Normalizer, compute_stats, dataset_name, make_loader
from models.eval.metrics import retrieval_all
from models.retrieval.api import (
    CHECKPOINT, RetrievalEncoder, check_text_encoder, encoder_record, load_checkpoint, pick_device, save_checkpoint,
)
from models.retrieval.model import TMR, RetrievalConfig
from datasets_build.text.encoders import TextEncoder, load_text_encoder
from datasets_build.text.feature_cache import TextFeatureCache


@dataclass
class TrainConfig:
    data: str
    out: str
    split: str = "train"
    val_split: str | None = "val"  # skipped when the build has no such split
    text_encoder: str = "minilm"
    text_encoder_checkpoint: str | None = None
    device: str | None = None  # None: cuda when available
    epochs: int = 500  # TMR's schedule
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    num_workers: int = 2
    seed: int = 0
    stats: str = "train"  # "train": computed from the training split; or a .npz with mean/std
    resume: bool = False
    log_every: int = 20  # steps between step lines in log.jsonl
    progress: bool = True
    model: dict[str, Any] = field(default_factory=dict)  # RetrievalConfig overrides


def _load_stats(cfg: TrainConfig, dataset: str) -> Normalizer:
    if cfg.stats == "train":
        return compute_stats(cfg.data, cfg.split, block_average=dataset)
    with np.load(cfg.stats) as f:
        return Normalizer(f["mean"], f["std"])


def _has_split(data: str, split: str | None) -> bool:
    return split is not None and (Path(data) / split).is_dir()


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


@torch.no_grad()
def validate(model: TMR, stats: Normalizer, text_encoder: TextEncoder, device: torch.device,
             dataset: MotionDataset, limit: int = 2000) -> dict[str, float]:
    """Retrieval metrics ("all" protocol, first caption, whole sample) on up to `limit` samples."""
    n = min(len(dataset), limit)
    if n < 2:
        return {}
    encoder = RetrievalEncoder(model, stats, text_encoder, device)
    t = encoder.encode_text([dataset.captions(i)[0] for i in range(n)])
    m = encoder.encode_motion([dataset.raw_motion(i) for i in range(n)])
    model.train()
    return retrieval_all(t, m)


def train(cfg: TrainConfig, text_encoder: TextEncoder | None = None) -> Path:
    """Train (or resume) into cfg.out; returns the run folder. `text_encoder` injects a frozen
    encoder instead of loading `cfg.text_encoder` by name."""
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    state = None
    if (run_dir / CHECKPOINT).exists():
        if not cfg.resume:
            raise FileExistsError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, "
                                  "or choose another --out")
        state = load_checkpoint(run_dir)
    if text_encoder is None:
        name = state["text_encoder"]["name"] if state else cfg.text_encoder
        ckpt = state["text_encoder"]["checkpoint"] if state else cfg.text_encoder_checkpoint
        text_encoder = load_text_encoder(name, ckpt, str(device))
    dataset = dataset_name(cfg.data)
    if state:  # everything that defines the model comes from the checkpoint, not the new flags
        check_text_encoder(text_encoder, state["text_encoder"])
        stats = Normalizer.from_state_dict(state["stats"])
        model_cfg = RetrievalConfig(**state["model_config"])
        options = DataOptions(**state["data_options"])
    else:
        stats = _load_stats(cfg, dataset)
        model_cfg = RetrievalConfig(**{"motion_dim": len(stats.mean), "token_dim": text_encoder.token_dim,
                                       **cfg.model})
        options = DataOptions.for_dataset(dataset)
        np.savez(run_dir / "stats.npz", mean=stats.mean, std=stats.std)
    (run_dir / "config.json").write_text(json.dumps({"train": asdict(cfg), "model": asdict(model_cfg),
                                                     "data": asdict(options)}, indent=2))

    train_set = MotionDataset(cfg.data, cfg.split, stats=stats, options=options)
    if len(train_set) < 2:
        raise ValueError(f"split {cfg.split!r} of {cfg.data} has {len(train_set)} samples after the length filters")
    val_set = (MotionDataset(cfg.data, cfg.val_split, stats=stats, options=options)
               if _has_split(cfg.data, cfg.val_split) else None)
    cache = TextFeatureCache(text_encoder)
    cache.add([c for i in range(len(train_set)) for c in train_set.captions(i)], progress=cfg.progress)

    model = TMR(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, step = 0, 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"], state["step"]
    record = encoder_record(text_encoder, state["text_encoder"]["checkpoint"] if state else cfg.text_encoder_checkpoint)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    from tqdm import tqdm

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        sums: dict[str, float] = {}
        batches, started = 0, time.time()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        for batch in bar:
            length = int(batch["length"].max())  # drop the all-padding tail of this batch
            motion = batch["motion"][:, :length].to(device, non_blocking=True)
            mask = batch["mask"][:, :length].to(device, non_blocking=True)
            tokens, token_mask, pooled = cache.batch(batch["caption"], device)
            with autocast:
                losses = model.losses(motion, mask, tokens, token_mask, pooled)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(f"loss is {losses['loss'].item()} at epoch {epoch + 1} step {step}")
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step, batches = step + 1, batches + 1
            values = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            if step % cfg.log_every == 0:
                _log(run_dir, {"kind": "step", "epoch": epoch + 1, "step": step, **values})
        summary = {"kind": "epoch", "epoch": epoch + 1, "step": step, "seconds": round(time.time() - started, 3),
                   **{k: v / max(batches, 1) for k, v in sums.items()}}
        if val_set is not None:
            summary.update({f"val/{k}": v for k, v in validate(model, stats, text_encoder, device, val_set).items()})
        _log(run_dir, summary)
        if cfg.progress:
            shown = {k: round(v, 4) for k, v in summary.items() if k in ("loss", "val/t2m/R@1", "val/t2m/R@5")}
            print(f"epoch {epoch + 1}: {shown}", file=sys.stderr)
        save_checkpoint(run_dir, model=model, optimizer=optimizer, stats=stats, text_encoder=record,
                        epoch=epoch + 1, step=step, train_config=asdict(cfg), data_options=asdict(options))
    return run_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.retrieval.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="build folder (datasets.load_from_disk)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--text-encoder", default="minilm", help="clip, clip-random or minilm (default)")
    p.add_argument("--text-encoder-checkpoint", default=None, help="local weights for the text encoder")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="total epochs (resume counts on)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--num-workers", type=int, default=TrainConfig.num_workers)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--stats", default="train", help="'train' (computed) or a .npz with mean and std")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                   help="RetrievalConfig override, e.g. --model latent_dim=128 --model num_layers=4")
    return p


def _model_overrides(pairs: list[str]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(RetrievalConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--model {pair}: unknown key {key!r}; one of {sorted(types)}")
        kind = str(types[key])
        if value.lower() in ("none", "null"):
            out[key] = None
        elif "bool" in kind:
            out[key] = value.lower() in ("1", "true", "yes")
        elif "int" in kind:
            out[key] = int(value)
        else:
            out[key] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    cfg = TrainConfig(data=a.data, out=a.out, text_encoder=a.text_encoder,
                      text_encoder_checkpoint=a.text_encoder_checkpoint, device=a.device, epochs=a.epochs,
                      batch_size=a.batch_size, lr=a.lr, num_workers=a.num_workers, seed=a.seed, stats=a.stats,
                      resume=a.resume, progress=not a.quiet, model=_model_overrides(a.model))
    run_dir = train(cfg)
    print(f"trained {cfg.epochs} epochs into {run_dir}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
