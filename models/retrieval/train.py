"""Train the TMR-style retrieval model on a built dataset.

    python -m models train retrieval --data built/humanml3d --out runs/tmr [--text-encoder minilm]
        [--preset tiny|paper] [--device cuda|cpu] [--epochs N] [--batch-size B] [--max-steps N] [--resume]
        [--set latent_dim=128 ...]

RUN_DIR receives `checkpoint.pt` (after every epoch; `models.base`'s format), `config.json`,
`stats.npz` (the model's own mean/std, computed from the training split) and `log.jsonl` (one line
per logged step and per epoch, with validation retrieval metrics when the build has a `val`
split). `--resume` continues from the checkpoint's epoch count up to `--epochs`, with the model
settings, statistics, text encoder and data options of the checkpoint. On CUDA the forward pass
runs under bf16 autocast; under torchrun each GPU runs a process (`models.training.loop`).
`python -m models.retrieval.train` is an alias kept for one release.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from datasets_build.core.flags import option
from datasets_build.text.encoders import ENCODERS, TextEncoder, load_text_encoder
from datasets_build.text.feature_cache import TextFeatureCache
from models.base import (
    atomic_write, check_text_encoder, config_from_dict, seed_everything, text_encoder_record, write_config,
)
from models.eval.metrics import retrieval_all
from models.retrieval.api import FORMAT, RetrievalEncoder, run_configs, save_checkpoint
from models.retrieval.model import TMR, RetrievalConfig
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import (
    DataError, DataOptions, MotionDataset, Normalizer, compute_stats, dataset_name, make_loader,
)

EncoderName = Literal[ENCODERS]


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with TMR's schedule, plus the frozen text encoder and the statistics source."""

    epochs: int = option(500, "total epochs (TMR's schedule); a resumed run counts on from its checkpoint",
                         metavar="N", positive=True)
    text_encoder: EncoderName = option("minilm", "the frozen text encoder")
    text_encoder_checkpoint: str | None = option(None, "local weights for the text encoder", metavar="PATH")
    stats: str = option("train", "'train' (computed from the training split) or a .npz with mean and std",
                        metavar="train|FILE")


PRESETS = {
    "tiny": Preset("the CPU test size", model={"latent_dim": 64, "ff_dim": 128, "num_layers": 1, "num_heads": 4,
                                               "dropout": 0.0, "vae": False, "reconstruction": False},
                   train={"epochs": 8, "lr": 3e-3, "num_workers": 0}),
    "paper": Preset("TMR's settings (the defaults)"),
}


def _load_stats(cfg: TrainConfig, dataset: str) -> Normalizer:
    if cfg.stats == "train":
        return compute_stats(cfg.data, cfg.split, block_average=dataset)
    try:
        with np.load(cfg.stats) as f:
            return Normalizer(f["mean"], f["std"])
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"statistics file {cfg.stats} cannot be used ({error})") from None


def _has_split(data: str, split: str | None) -> bool:
    return bool(split) and (Path(data) / split).is_dir()


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
    encoder instead of loading `cfg.text_encoder` by name. A fresh run that fails leaves no folder."""
    with loop.run_folder(cfg.out):
        return _train(cfg, text_encoder)


def _train(cfg: TrainConfig, text_encoder: TextEncoder | None) -> Path:
    run_dir = Path(cfg.out)
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    dataset = dataset_name(cfg.data)  # before the run folder is made: a wrong path leaves nothing behind
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    if state:
        loop.check_epochs(int(state["epoch"]), cfg.epochs, run_dir)
    record = state["text_encoder"] if state else {"name": cfg.text_encoder,
                                                   "checkpoint": cfg.text_encoder_checkpoint}
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    if state:  # everything that defines the model comes from the checkpoint, not the new flags
        check_text_encoder(text_encoder, state["text_encoder"])
        stats = Normalizer.from_state_dict(state["stats"])
        model_cfg = config_from_dict(RetrievalConfig, state["model_config"], run_dir)
        options = config_from_dict(DataOptions, state["data_options"], run_dir)
    else:
        stats = _load_stats(cfg, dataset)
        model_cfg = RetrievalConfig(**{"motion_dim": len(stats.mean), "token_dim": text_encoder.token_dim,
                                       **cfg.model})
        options = DataOptions.for_dataset(dataset)
        if dist.is_main:
            atomic_write(run_dir / "stats.npz", lambda f: np.savez(f, mean=stats.mean, std=stats.std))
    record = text_encoder_record(text_encoder, record["checkpoint"])
    if dist.is_main:
        write_config(run_dir, FORMAT, model_config=model_cfg, train_config=cfg, configs=run_configs(record, options))

    train_set = MotionDataset(cfg.data, cfg.split, stats=stats, options=options)
    if len(train_set) < 2:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has {len(train_set)} samples after the length filters")
    val_set = (MotionDataset(cfg.data, cfg.val_split, stats=stats, options=options)
               if _has_split(cfg.data, cfg.val_split) else None)
    cache = TextFeatureCache(text_encoder)
    cache.add([c for i in range(len(train_set)) for c in train_set.captions(i)], progress=cfg.progress)

    model = TMR(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, step = loop.restore(state, model, optimizer)
    net = loop.distribute(model, dist, device)  # call `net(...)`: DDP averages the gradients
    sampler = loop.shard(train_set, dist, cfg.seed)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", sampler=sampler)
    book = loop.Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                            progress=cfg.progress)
    book.announce("TMR", model, len(loader), cfg.epochs - start_epoch)
    first_epoch, epoch = start_epoch, start_epoch

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in book.batches(loader, epoch, cfg.epochs):
            length = int(batch["length"].max())  # drop the all-padding tail of this batch
            motion = batch["motion"][:, :length].to(device, non_blocking=True)
            mask = batch["mask"][:, :length].to(device, non_blocking=True)
            tokens, token_mask, pooled = cache.batch(batch["caption"], device)
            with loop.autocast(device):
                losses = net(motion, mask, tokens, token_mask, pooled)
            if book.optimize(losses, model, optimizer, cfg.grad_clip):
                break
        book.meter.pause()  # validation is not training time
        val = ({f"val/{k}": v for k, v in validate(model, stats, text_encoder, device, val_set).items()}
               if dist.is_main and val_set is not None else {})
        summary = book.end_epoch(**val)
        if dist.is_main:
            if cfg.progress:
                shown = {k: round(v, 4) for k, v in summary.items() if k in ("loss", "val/t2m/R@1", "val/t2m/R@5")}
                print(f"epoch {epoch + 1}: {shown}", file=sys.stderr)
            save_checkpoint(run_dir, model=model, optimizer=optimizer, stats=stats, text_encoder=record,
                            epoch=epoch + 1, step=book.step, train_config=cfg, data_options=options)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish(first_epoch=first_epoch, epoch=epoch + 1, step=book.step)
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train retrieval") -> int:
    """The training command line (flags derived from TrainConfig and RetrievalConfig)."""
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, RetrievalConfig, PRESETS)
    run_dir = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: one line, not one per process
        last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])  # the "run" line of this call
        print(loop.epochs_done_line(run_dir, last["first_epoch"], last["epoch"], last["step"]))
    return 0


if __name__ == "__main__":  # the alias `python -m models.retrieval.train`, kept for one release
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print("note: this command is now `python -m models train retrieval` (same options)", file=sys.stderr)
    sys.exit(run_command(lambda argv: main(argv, prog="python -m models.retrieval.train")))
