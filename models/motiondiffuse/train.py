"""Train MotionDiffuse on a built dataset.

    python -m models train motiondiffuse --data built/humanml3d --out runs/md [--preset tiny|paper]
        [--text-encoder clip|clip-random] [--text-encoder-checkpoint PATH] [--epochs N] [--times N]
        [--batch-size B] [--max-steps N] [--device cuda|cpu] [--resume] [--set feat_bias=5 ...]

RUN_DIR receives `checkpoint.pt` (every epoch; `models.base`'s format), `config.json` (the model
config with its `feat_bias` normalisation preset, the training config, the text encoder record),
`stats.npz` (the normalisation the model lives in) and `log.jsonl`. `--resume` continues the
checkpoint with its own model settings, statistics and text encoder (weights and Adam moments restored;
each epoch reseeds from (seed, epoch), so with `--num-workers 0` the continued run is bit-identical to
the uninterrupted one; persistent loader workers keep their own crop RNG, which a resume restarts).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from datasets_build.core.flags import option
from datasets_build.text.encoders import ENCODERS, TextEncoder, load_text_encoder
from datasets_build.text.feature_cache import TextFeatureCache
from models.base import (
    CheckpointFormat, atomic_write, check_text_encoder, config_from_dict, seed_everything, text_encoder_record,
    write_config,
)
from models.motiondiffuse.api import FORMAT, feat_bias_stats, fill_from_build, save_checkpoint
from models.motiondiffuse.model import MotionDiffuse, MotionDiffuseConfig, masked_loss
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import DataError, DataOptions, MotionDataset, Normalizer, compute_stats, dataset_name, make_loader

EncoderName = Literal[ENCODERS]


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with MotionDiffuse's schedule (MODELS.md §2.3)."""

    epochs: int = option(50, "total epochs", metavar="N", positive=True)
    times: int = option(25, "passes over the training set per epoch (the code's --times: 25 for 1 GPU)",
                        metavar="N", positive=True)
    batch_size: int = option(128, "samples per optimizer step (per GPU)", metavar="B", positive=True)
    lr: float = option(2e-4, "Adam learning rate (constant)")
    grad_clip: float | None = option(0.5, "clip the gradient norm to this (0: no clipping)")
    text_encoder: str = option("clip", "the frozen text encoder (clip: ViT-B/32; clip-random: offline tests; "
                                       "mate:RUN: a MATE run's motion-aligned CLIP)")
    text_encoder_checkpoint: str | None = option(None, "local weights for the text encoder", metavar="PATH")
    token_features: bool = option(False, "read the build's precomputed CLIP token features (a build made with "
                                         "--token-features by the same encoder) instead of running the encoder")


PRESETS = {
    "tiny": Preset("the CPU test size",
                   model={"latent_dim": 32, "num_heads": 2, "num_layers": 2, "ff_dim": 64, "time_embed_dim": 128,
                          "text_latent_dim": 16, "text_heads": 2, "text_layers": 1, "text_ff_dim": 32,
                          "diffusion_steps": 100},
                   train={"epochs": 20, "times": 1, "batch_size": 16, "lr": 1e-3, "num_workers": 0,
                          "text_encoder": "clip-random"}),
    "paper": Preset("MotionDiffuse's settings (the defaults: 8 layers, 512 wide, T = 1000, Adam 2e-4, batch 128)"),
}


def data_options(dataset: str) -> DataOptions:
    """MotionDiffuse's crops: the whole motion (a random 196-frame window when longer), zero-padded."""
    return DataOptions.for_dataset(dataset, unit_length=1, shorter_crop_prob=0.0)


def setup_run(cfg: TrainConfig, model_cls: type, config_cls: type, fmt, text_encoder: TextEncoder | None):
    """Open (or resume) the run: (state, device, dist, text encoder, its record, stats, model cfg, options)."""
    run_dir = Path(cfg.out)
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    dataset = dataset_name(cfg.data)
    state = loop.open_run(run_dir, fmt, cfg.resume)
    if state:
        loop.check_epochs(int(state["epoch"]), cfg.epochs, run_dir)
    record = state["text_encoder"] if state else {"name": cfg.text_encoder, "checkpoint": cfg.text_encoder_checkpoint}
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    if state:
        check_text_encoder(text_encoder, state["text_encoder"])
        stats = Normalizer.from_state_dict(state["stats"])
        model_cfg = config_from_dict(config_cls, state["model_config"], run_dir)
        options = config_from_dict(DataOptions, state["data_options"], run_dir)
    else:
        widths = {"token_dim": text_encoder.token_dim}
        if "pooled_dim" in {f.name for f in fields(config_cls)}:  # a model that also reads pooled features
            widths["pooled_dim"] = int(getattr(text_encoder, "dim", text_encoder.token_dim))
        model_cfg = config_cls(**{"motion_dim": 0, **widths, **cfg.model})
        model_cfg.motion_dim = int(compute_stats(cfg.data, cfg.split).mean.shape[0])
        stats = feat_bias_stats(compute_stats(cfg.data, cfg.split, block_average=dataset), model_cfg.feat_bias)
        options = data_options(dataset)
        if dist.is_main:
            atomic_write(run_dir / "stats.npz", lambda f: np.savez(f, mean=stats.mean, std=stats.std))
    record = text_encoder_record(text_encoder, record["checkpoint"])
    if dist.is_main:
        write_config(run_dir, fmt, model_config=model_cfg, train_config=cfg,
                     configs={"text_encoder": record, "data_options": options})
    return state, device, dist, text_encoder, record, stats, model_cfg, options


def epoch_loader(train_set, cfg: TrainConfig, dist, device):
    sampler = loop.shard(train_set, dist, cfg.seed)
    if sampler is None and cfg.times > 1:  # --times: several shuffled passes per epoch
        sampler = torch.utils.data.RandomSampler(train_set, num_samples=len(train_set) * cfg.times)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", sampler=sampler)
    return sampler, loader


class CoarseText:
    """The text condition of a batch: the frozen encoder's cached token features of its captions."""

    def __init__(self, cfg: TrainConfig, train_set: MotionDataset, text_encoder: TextEncoder, model_cfg: Any,
                 announce: bool) -> None:
        self.cache = TextFeatureCache(text_encoder)
        if cfg.token_features:
            fill_from_build(self.cache, cfg.data, cfg.split)
        self.cache.add([c for i in range(len(train_set)) for c in train_set.captions(i)], progress=cfg.progress)

    def __call__(self, model: MotionDiffuse, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        tokens, token_mask, _ = self.cache.batch(batch["caption"], device)
        return model.encode_text(tokens, token_mask)


def train(cfg: TrainConfig, text_encoder: TextEncoder | None = None, *, model_cls: type = MotionDiffuse,
          config_cls: type = MotionDiffuseConfig, fmt: CheckpointFormat = FORMAT,
          condition: Callable[..., Any] = CoarseText) -> Path:
    """Train (or resume) into cfg.out; `text_encoder` injects a frozen encoder instead of loading it by name.
    A model that extends MotionDiffuse (FineMotionDiffuse) passes its classes, checkpoint format and
    `condition(cfg, train_set, text_encoder, model_cfg, announce)`, which maps a batch to its text memory.
    A fresh run that fails leaves no folder."""
    with loop.run_folder(cfg.out):
        return _train(cfg, text_encoder, model_cls, config_cls, fmt, condition)


def _train(cfg: TrainConfig, text_encoder: TextEncoder | None, model_cls: type, config_cls: type,
           fmt: CheckpointFormat, condition: Callable[..., Any]) -> Path:
    run_dir = Path(cfg.out)
    state, device, dist, text_encoder, record, stats, model_cfg, options = setup_run(
        cfg, model_cls, config_cls, fmt, text_encoder)
    train_set = MotionDataset(cfg.data, cfg.split, stats=stats, options=options)
    if len(train_set) < 1:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has no samples after the length filters")
    text_of = condition(cfg, train_set, text_encoder, model_cfg, dist.is_main and cfg.progress)

    model = model_cls(model_cfg).to(device)
    diffusion = model_cfg.diffusion()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start_epoch, step = loop.restore(state, model, optimizer)
    net = loop.distribute(model, dist, device)
    sampler, loader = epoch_loader(train_set, cfg, dist, device)
    book = loop.Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                            progress=cfg.progress)
    book.announce(model_cls.__name__, model, len(loader), cfg.epochs - start_epoch)

    for epoch in range(start_epoch, cfg.epochs):
        # every epoch draws from its own seed (shuffle, crops, captions, t, noise): a resumed run
        # repeats the uninterrupted one exactly with in-process loading (num_workers 0)
        seed_everything(cfg.seed * 100_003 + epoch)
        model.train()
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)
        for batch in book.batches(loader, epoch, cfg.epochs):
            length = int(batch["length"].max())  # padded frames change neither the loss nor valid outputs
            x0 = batch["motion"][:, :length].to(device, non_blocking=True)
            mask = batch["mask"][:, :length].to(device, non_blocking=True)
            with loop.autocast(device):
                losses = masked_loss(diffusion, net, x0, mask, text_of(model, batch, device))
            if book.optimize(losses, model, optimizer, cfg.grad_clip):
                break
        summary = book.end_epoch()
        if dist.is_main:
            if cfg.progress:
                print(f"epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f}", file=sys.stderr)
            save_checkpoint(run_dir, fmt, model=model, optimizer=optimizer, stats=stats, text_encoder=record,
                            epoch=epoch + 1, step=book.step, train_config=cfg, data_options=options)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish()
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train motiondiffuse") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, MotionDiffuseConfig, PRESETS)
    run_dir = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {cfg.epochs} epochs into {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`; random token features
    replace the frozen text encoder."""
    stats = compute_stats(data, "train")
    cfg = MotionDiffuseConfig(**{**PRESETS[preset].model, "motion_dim": len(stats.mean)})
    model = MotionDiffuse(cfg).to(device)
    diffusion = cfg.diffusion()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    dataset = MotionDataset(data, "train", stats=stats, options=data_options(dataset_name(data)))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0)

    def step(batch: dict) -> None:
        length = int(batch["length"].max())
        x0 = batch["motion"][:, :length].to(device)
        mask = batch["mask"][:, :length].to(device)
        tokens = loop.random_token_features(batch["caption"], cfg.token_dim, device)
        with loop.autocast(device):
            losses = masked_loss(diffusion, model, x0, mask, model.encode_text(*tokens))
        loop.optimizer_step(losses["loss"], model, optimizer, 0.5)

    return step, loader
