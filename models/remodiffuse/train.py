"""Train ReMoDiffuse on a `remodiffuse` build (its train split is the retrieval database).

    python -m models train remodiffuse --data built/rmd --out runs/rmd [--preset tiny|paper]
        [--text-encoder clip|clip-random] [--text-encoder-checkpoint PATH] [--iterations N | --epochs N]
        [--batch-size B] [--database t2m_text_train.npz] [--reference-retrieval] [--max-steps N]
        [--device cuda|cpu] [--resume] [--set KEY=VALUE ...]

RUN_DIR receives `checkpoint.pt` (every epoch), `config.json`, `stats.npz` and `log.jsonl`. Schedule
(MODELS.md §4.4): Adam 2e-4, cosine annealing per iteration down to 2e-5 of it, no gradient clipping,
batch 128 on one GPU for the paper's 200k (HumanML3D) / 40k (KIT-ML) iterations. `--resume`
continues the checkpoint: the learning rate is a function of the step and every epoch reseeds from
(seed, epoch), so with `--num-workers 0` the continued run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from datasets_build.core.flags import option
from datasets_build.formats.built import processor_config
from datasets_build.text.encoders import ENCODERS, TextEncoder, load_text_encoder
from datasets_build.text.feature_cache import TextFeatureCache
from models.base import (
    atomic_write, check_text_encoder, config_from_dict, seed_everything, text_encoder_record, write_config,
)
from models.eval.evaluator import evaluator_stats
from models.remodiffuse.api import FORMAT, save_checkpoint
from models.remodiffuse.database import DatabaseError, RetrievalDatabase, load_database
from models.remodiffuse.model import ReMoDiffuse, ReMoDiffuseConfig, draw_conditions, masked_loss
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import (
    DataError, DataOptions, MotionDataset, Normalizer, compute_stats, dataset_name, make_loader,
)

EncoderName = Literal[ENCODERS]
PAPER_ITERATIONS = {"humanml3d": 200_000, "kitml": 40_000}  # paper §4.2 (1 V100, batch 128)


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with ReMoDiffuse's schedule (MODELS.md §4.4)."""

    epochs: int | None = option(None, "total epochs (default: as many as --iterations needs)", metavar="N",
                                positive=True)
    iterations: int | None = option(None, "total optimizer steps of the cosine schedule (default: the paper's 200k "
                                          "HumanML3D / 40k KIT-ML, or --epochs full epochs)", metavar="N",
                                    positive=True)
    batch_size: int = option(128, "samples per optimizer step (per GPU)", metavar="B", positive=True)
    lr: float = option(2e-4, "Adam learning rate at the start of the cosine schedule")
    min_lr_ratio: float = option(2e-5, "the cosine schedule's final learning rate / lr")
    grad_clip: float | None = option(None, "clip the gradient norm to this (the code: no clipping)")
    text_encoder: EncoderName = option("clip", "the frozen text encoder (clip: ViT-B/32; clip-random: offline tests)")
    text_encoder_checkpoint: str | None = option(None, "local weights for the text encoder", metavar="PATH")
    database: str | None = option(None, "a reference retrieval database (.npz of export-remodiffuse) instead of "
                                        "the build's", metavar="FILE")
    reference_retrieval: bool = option(False, "the reference's training retrieval: online top-k skipping candidates "
                                              "of the query's length (default: the build's neighbour lists, which "
                                              "exclude the query's own motion)")


PRESETS = {
    "tiny": Preset("the CPU test size",
                   model={"latent_dim": 32, "num_heads": 2, "num_layers": 2, "ff_dim": 64, "time_embed_dim": 128,
                          "text_latent_dim": 16, "text_heads": 2, "text_layers": 1, "text_ff_dim": 32,
                          "retrieval_motion_layers": 1, "retrieval_text_layers": 1, "retrieval_text_heads": 2,
                          "retrieval_text_ff_dim": 64, "diffusion_steps": 100, "respacing": "5,5"},
                   train={"epochs": 20, "batch_size": 16, "lr": 1e-3, "num_workers": 0, "text_encoder": "clip-random"}),
    "paper": Preset("ReMoDiffuse's settings (the defaults: 4 SMA layers, 512 wide, k = 2, stride 4, T = 1000, "
                    "Adam 2e-4 cosine, batch 128, 200k / 40k iterations)"),
}


def data_options(dataset: str) -> DataOptions:
    """[inferred] the mmcv port's crops: the whole motion (a random 196-frame window when longer), zero-padded."""
    return DataOptions.for_dataset(dataset, unit_length=1, shorter_crop_prob=0.0)


def cosine_lr(step: int, total: int, lr: float, min_ratio: float) -> float:
    """CosineAnnealing per iteration: lr_min + (lr - lr_min)(1 + cos(pi step / total)) / 2."""
    lr_min = lr * min_ratio
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * min(step, total) / max(total, 1))) / 2


def sample_keys(dataset: MotionDataset, index: torch.Tensor, annotation: torch.Tensor) -> list[str]:
    """`<id>#<annotation>` of each batch sample's chosen caption (the dataset-level sample index)."""
    out = []
    for i, a in zip(index.tolist(), annotation.tolist()):
        row = int(dataset.rows[i])
        out.append(f"{dataset.arrow.motion_id(row)}#{int(dataset.ann_index[dataset.ann_ptr[i] + a])}")
    return out


def check_build_encoder(data: str, encoder: TextEncoder, database: str | None) -> None:
    """The retrieved captions' token features (the build's) must come from the model's text encoder."""
    if database:
        return
    for config in processor_config(data, "text_features"):
        if config.get("column", "text_features") == "text_features" and config.get("encoder") != encoder.name:
            raise DatabaseError(f"{data} holds {config.get('encoder')!r} text features but the model uses "
                                f"{encoder.name!r}: pass --text-encoder {config.get('encoder')} or rebuild with "
                                f"--text-encoder {encoder.name}")


def setup_run(cfg: TrainConfig, text_encoder: TextEncoder | None):
    """Open (or resume) the run: (state, device, dist, text encoder, its record, stats, model cfg, options)."""
    run_dir = Path(cfg.out)
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    dataset = dataset_name(cfg.data)
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    record = state["text_encoder"] if state else {"name": cfg.text_encoder, "checkpoint": cfg.text_encoder_checkpoint}
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    if state:
        check_text_encoder(text_encoder, state["text_encoder"])
        stats = Normalizer.from_state_dict(state["stats"])
        model_cfg = config_from_dict(ReMoDiffuseConfig, state["model_config"], run_dir)
        options = config_from_dict(DataOptions, state["data_options"], run_dir)
    else:
        model_cfg = ReMoDiffuseConfig(**{"motion_dim": 0, "token_dim": text_encoder.token_dim, "dataset": dataset,
                                         **cfg.model})
        plain = compute_stats(cfg.data, cfg.split, block_average=dataset)
        model_cfg.motion_dim = int(plain.mean.shape[0])
        stats = evaluator_stats(plain.mean, plain.std, model_cfg.feat_bias)
        options = data_options(dataset)
        if dist.is_main:
            atomic_write(run_dir / "stats.npz", lambda f: np.savez(f, mean=stats.mean, std=stats.std))
    record = text_encoder_record(text_encoder, record["checkpoint"])
    retrieval = {"data": str(Path(cfg.data).resolve()),
                 "database": str(Path(cfg.database).resolve()) if cfg.database else None,
                 "reference_retrieval": cfg.reference_retrieval}
    if dist.is_main:
        write_config(run_dir, FORMAT, model_config=model_cfg, train_config=cfg,
                     configs={"text_encoder": record, "data_options": options, "retrieval": retrieval})
    return state, device, dist, text_encoder, record, stats, model_cfg, options, retrieval


def retrieval_batch(model: ReMoDiffuse, db: RetrievalDatabase, train_set: MotionDataset, batch: dict,
                    stats: Normalizer, rng: random.Random, reference: bool, device: torch.device,
                    pooled: torch.Tensor | None = None) -> dict:
    """The encoded retrieval (R^m, its mask, R^t) of a training batch (`pooled`: the captions' text
    features, the queries of `reference` retrieval)."""
    keys = sample_keys(train_set, batch["index"], batch["annotation"])
    entries = db.training_neighbours(keys, batch["length"].tolist(), model.cfg.num_retrieval,
                                     model.cfg.kinematic_coef, rng, reference,
                                     None if pooled is None else pooled.cpu().numpy())
    return model.encode_retrieval(*db.fetch(entries, stats, device))


def train(cfg: TrainConfig, text_encoder: TextEncoder | None = None) -> Path:
    """Train (or resume) into cfg.out; `text_encoder` injects a frozen encoder instead of loading it by name."""
    with loop.run_folder(cfg.out) as run_dir:
        return _train(cfg, run_dir, text_encoder)


def _train(cfg: TrainConfig, run_dir: Path, text_encoder: TextEncoder | None) -> Path:
    state, device, dist, text_encoder, record, stats, model_cfg, options, retrieval = setup_run(cfg, text_encoder)
    check_build_encoder(cfg.data, text_encoder, cfg.database)
    db = load_database(cfg.data, cfg.database, model_cfg.max_length)
    train_set = MotionDataset(cfg.data, cfg.split, stats=stats, options=options)
    if len(train_set) < 1:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has no samples after the length filters")
    cache = TextFeatureCache(text_encoder)
    cache.add([c for i in range(len(train_set)) for c in train_set.captions(i)], progress=cfg.progress)

    model = ReMoDiffuse(model_cfg).to(device)
    diffusion = model_cfg.diffusion()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    start_epoch, step = loop.restore(state, model, optimizer)
    net = loop.distribute(model, dist, device)
    sampler = loop.shard(train_set, dist, cfg.seed)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", sampler=sampler)
    per_epoch = len(loader)
    total = cfg.iterations or (cfg.epochs * per_epoch if cfg.epochs else PAPER_ITERATIONS[model_cfg.dataset])
    epochs = cfg.epochs or math.ceil(total / per_epoch)
    loop.check_epochs(start_epoch, epochs, run_dir)
    book = loop.Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every,
                            max_steps=min(total, cfg.max_steps or total), progress=cfg.progress)
    book.announce("remodiffuse", model, per_epoch, epochs - start_epoch)

    for epoch in range(start_epoch, epochs):
        seed_everything(cfg.seed * 100_003 + epoch)  # shuffle, crops, captions, retrieval order, t, noise, dropout
        rng = random.Random(cfg.seed * 100_003 + epoch)
        model.train()
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)
        for batch in book.batches(loader, epoch, epochs):
            lr = cosine_lr(book.step, total, cfg.lr, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            length = int(batch["length"].max())
            x0 = batch["motion"][:, :length].to(device, non_blocking=True)
            mask = batch["mask"][:, :length].to(device, non_blocking=True)
            tokens, token_mask, pooled = cache.batch(batch["caption"], device)
            cond = draw_conditions(len(x0), model_cfg.text_dropout, model_cfg.retrieval_dropout, device)
            with loop.autocast(device):
                retr = retrieval_batch(model, db, train_set, batch, stats, rng, cfg.reference_retrieval, device,
                                       pooled)
                losses = masked_loss(diffusion, net, x0, mask, model.encode_text(tokens, token_mask), retr, cond)
            if book.optimize(losses, model, optimizer, cfg.grad_clip, lr=lr):
                break
        summary = book.end_epoch()
        if dist.is_main:
            if cfg.progress:
                print(f"epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f}", file=sys.stderr)
            save_checkpoint(run_dir, model=model, optimizer=optimizer, stats=stats, text_encoder=record,
                            epoch=epoch + 1, step=book.step, train_config=cfg, data_options=options,
                            retrieval=retrieval)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish()
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train remodiffuse") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, ReMoDiffuseConfig, PRESETS)
    run_dir = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained into {run_dir}")
    return 0


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`: random token features
    replace the frozen text encoder for the query; retrieval reads the build's database."""
    plain = compute_stats(data, "train")
    cfg = ReMoDiffuseConfig(**{**PRESETS[preset].model, "motion_dim": len(plain.mean),
                               "token_dim": 512, "dataset": dataset_name(data)})
    model = ReMoDiffuse(cfg).to(device)
    diffusion = cfg.diffusion()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    db = load_database(data, None, cfg.max_length)
    dataset = MotionDataset(data, "train", stats=plain, options=data_options(cfg.dataset))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0)
    rng = random.Random(0)

    def step(batch: dict) -> None:
        length = int(batch["length"].max())
        x0 = batch["motion"][:, :length].to(device)
        mask = batch["mask"][:, :length].to(device)
        tokens = loop.random_token_features(batch["caption"], cfg.token_dim, device)
        cond = draw_conditions(len(x0), cfg.text_dropout, cfg.retrieval_dropout, device)
        with loop.autocast(device):
            retr = retrieval_batch(model, db, dataset, batch, plain, rng, False, device)
            losses = masked_loss(diffusion, model, x0, mask, model.encode_text(*tokens), retr, cond)
        loop.optimizer_step(losses["loss"], model, optimizer, None)

    return step, loader


if __name__ == "__main__":
    sys.exit(run_command(main))
