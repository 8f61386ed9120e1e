"""Train MATE on a `mate` build (lemmas, vocabulary, sub-texts, segmentation).

    python -m models train mate --data built/mate --out runs/mate [--preset tiny|paper]
        [--text-encoder clip|clip-random|distilbert] [--text-encoder-checkpoint PATH] [--epochs N]
        [--batch-size B] [--max-steps N] [--device cuda|cpu] [--resume] [--set prior=binary ...]

RUN_DIR receives `checkpoint.pt` and `aligned_embeddings.npz` (the artefact: the word-embedding
rows that changed; `--text-encoder mate:RUN_DIR` plugs it into a host) every epoch, `config.json`,
`stats.npz` (the dataset's block-averaged statistics the motions are normalised with) and
`log.jsonl`. `--resume` continues with the run's own settings; each epoch reseeds from (seed, epoch),
so with `--num-workers 0` a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets_build.core.flags import option
from models.base import atomic_write, config_from_dict, restore_rng_state, seed_everything, write_config
from models.mate.api import FORMAT, build_tower, load_trainable, save_checkpoint, text_record, write_artefact
from models.mate.data import TripletDataset, collate_triplets, read_vocabulary
from models.mate.model import Mate, MateConfig
from models.mate.text import make_text_tower
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import DataError, DataOptions, Normalizer, compute_stats, dataset_name, make_loader


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with MATE's schedule (MODELS.md 6.4: all [inferred], the paper gives none)."""

    epochs: int = option(100, "total epochs [inferred: 100 on HumanML3D, 300 on KIT; not in the paper]",
                         metavar="N", positive=True)
    batch_size: int = option(128, "triplets per optimizer step [inferred: not in the paper]", metavar="B",
                             positive=True)
    lr: float = option(1e-4, "AdamW lr of the motion encoder/decoder, Proj and prototypes [inferred]")
    embedding_lr: float = option(1e-5, "Adam lr of the word-embedding rows [inferred: not in the paper]")
    warmup_steps: int = option(1000, "linear warm-up steps before the cosine decay [inferred]", metavar="N")
    text_encoder: str = option("clip", "the language model: clip (ViT-B/32, a local --text-encoder-checkpoint file), "
                                       "clip-random (offline), distilbert (a local folder), clip-tiny (tests)")
    text_encoder_checkpoint: str | None = option(None, "local weights of the text encoder (clip-random: the seed)",
                                                 metavar="PATH")
    skip_stop_words: bool = option(True, "never sample stop-word lemmas as the word w (when the caption has "
                                         "another) [inferred: the paper samples 'a word token of t']")


PRESETS = {
    "tiny": Preset("the CPU test size (ViT-B/32 random CLIP, so the artefact fits the tiny hosts)",
                   model={"latent_dim": 32, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 2, "ff_dim": 64,
                          "word_heads": 2, "dropout": 0.0},
                   train={"epochs": 4, "batch_size": 16, "lr": 1e-3, "embedding_lr": 1e-3, "warmup_steps": 0,
                          "num_workers": 0, "text_encoder": "clip-random", "log_every": 1}),
    "paper": Preset("MODELS.md 6.4's recommended settings (the defaults; the paper states none)"),
}


def data_options(dataset: str) -> DataOptions:
    """The whole motion (cropped to a multiple of 4 frames, never the shorter crop), so segments keep
    their meaning [inferred]."""
    return DataOptions.for_dataset(dataset, shorter_crop_prob=0.0)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 [inferred: MODELS.md 6.4]."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: Mate, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: the embedding table without weight decay (rows outside the mask must never move)."""
    table, rest = model.trainable_groups()
    return torch.optim.AdamW([{"params": table, "lr": cfg.embedding_lr, "weight_decay": 0.0, "base_lr": cfg.embedding_lr},
                              {"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr}])


def trainable_rows(tower, train_set: TripletDataset) -> int:
    """Allow the rows of every token of the training captions and of the vocabulary's lemmas."""
    texts = sorted({c for i in range(len(train_set)) for c in train_set.captions(i)} | set(train_set.lemmas))
    ids: set[int] = set()
    for lo in range(0, len(texts), 1024):
        ids |= tower.token_ids(texts[lo:lo + 1024])
    return tower.set_trainable_rows(sorted(ids))


def setup(cfg: TrainConfig):
    """(state, device, dist, model, stats, options, text record, lemmas, train set, initial table)."""
    run_dir = Path(cfg.out)
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    dataset = dataset_name(cfg.data)
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    if state:
        tower = build_tower(state["text_encoder"])
        record, lemmas = state["text_encoder"], list(state["lemmas"])
        stats = Normalizer.from_state_dict(state["stats"])
        model_cfg = config_from_dict(MateConfig, state["model_config"], run_dir)
        options = config_from_dict(DataOptions, state["data_options"], run_dir)
    else:
        tower = make_text_tower(cfg.text_encoder, cfg.text_encoder_checkpoint)
        record = text_record(tower, cfg.text_encoder_checkpoint)
        lemmas, _ = read_vocabulary(cfg.data)
        stats = compute_stats(cfg.data, cfg.split, block_average=dataset)
        model_cfg = MateConfig(**{**cfg.model, "motion_dim": int(stats.mean.shape[0]), "num_prototypes": len(lemmas),
                                  "token_width": tower.width, "sentence_width": tower.sentence_dim})
        options = data_options(dataset)
        if dist.is_main:
            atomic_write(run_dir / "stats.npz", lambda f: np.savez(f, mean=stats.mean, std=stats.std))
    train_set = TripletDataset(cfg.data, cfg.split, stats=stats, options=options, skip_stop_words=cfg.skip_stop_words)
    if len(train_set) < 1:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has no samples after the length filters")
    if train_set.lemmas != lemmas:
        raise DataError(f"the vocabulary of {cfg.data} is not the one this run was trained with")
    initial = tower.embedding.weight.detach().clone()
    model = Mate(model_cfg, tower)
    if not state:
        model.init_prototypes(lemmas)
    if dist.is_main:
        write_config(run_dir, FORMAT, model_config=model_cfg, train_config=cfg,
                     configs={"text_encoder": record, "data_options": options, "lemmas": lemmas})
    return state, device, dist, model.to(device), stats, options, record, lemmas, train_set, initial


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) into cfg.out; a fresh run that fails before its first checkpoint leaves no folder."""
    with loop.run_folder(cfg.out):
        return _train(cfg)


def _train(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.out)
    state, device, dist, model, stats, options, record, lemmas, train_set, initial = setup(cfg)
    rows = trainable_rows(model.text, train_set)
    optimizer = make_optimizer(model, cfg)
    start_epoch, step = 0, 0
    if state:
        load_trainable(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state.get("rng"))
        start_epoch, step = int(state["epoch"]), int(state["step"])
        loop.check_epochs(start_epoch, cfg.epochs, run_dir)
    batch_size = min(cfg.batch_size, len(train_set))
    steps_per_epoch = max(1, len(train_set) // (batch_size * dist.world_size))
    total = steps_per_epoch * cfg.epochs  # the schedule's length (--max-steps only stops early: resumable)
    net = loop.distribute(model, dist, device)
    sampler = loop.shard(train_set, dist, cfg.seed)
    book = loop.Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                            progress=cfg.progress, shown=("loss", "word", "sent"))
    book.announce("mate", model, steps_per_epoch, cfg.epochs - start_epoch)
    if cfg.progress and dist.is_main:
        print(f"{rows} word-embedding rows may change, K = {len(lemmas)} prototypes", file=sys.stderr)
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 100_003 + epoch)  # a resumed run repeats the uninterrupted one (num_workers 0)
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = make_loader(train_set, batch_size, shuffle=True, num_workers=cfg.num_workers, sampler=sampler,
                             collate_fn=collate_triplets, pin_memory=device.type == "cuda")
        for batch in book.batches(loader, epoch, cfg.epochs):
            length = int(batch["length"].max())
            batch["motion"], batch["mask"] = batch["motion"][:, :length], batch["mask"][:, :length]
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(book.step, total, cfg.warmup_steps)
            with loop.autocast(device):
                losses = net(batch)
            if book.optimize(losses, model, optimizer, cfg.grad_clip):
                break
        summary = book.end_epoch()
        if dist.is_main:
            if cfg.progress:
                print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()
                                                         if k not in ("kind", "epoch", "step", "seconds")),
                      file=sys.stderr)
            save_checkpoint(run_dir, model=model, optimizer=optimizer, stats=stats, text=record, lemmas=lemmas,
                            epoch=epoch + 1, step=book.step, train_config=cfg, data_options=options)
            write_artefact(run_dir, model.text, initial, record)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish()
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train mate") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, MateConfig, PRESETS)
    run_dir = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained MATE into {run_dir}; plug it into a host with --text-encoder mate:{run_dir}")
    return 0


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a triplet batch, its loader) for `benchmarks/train_step.py`; the full
    frozen language model runs forward and backward (its embedding rows train), as in training."""
    chosen = PRESETS[preset]
    stats = compute_stats(data, "train")
    lemmas, _ = read_vocabulary(data)
    kind = chosen.train.get("text_encoder", "clip-random")  # paper: random ViT-B/32 weights (same cost)
    tower = make_text_tower("clip-random" if kind == "clip" else kind)
    cfg = MateConfig(**{**chosen.model, "motion_dim": len(stats.mean), "num_prototypes": len(lemmas),
                        "token_width": tower.width, "sentence_width": tower.sentence_dim})
    dataset = TripletDataset(data, "train", stats=stats, options=data_options(dataset_name(data)))
    model = Mate(cfg, tower).to(device)
    model.init_prototypes(lemmas)
    trainable_rows(model.text, dataset)
    optimizer = make_optimizer(model, TrainConfig(data=data, out=""))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0, collate_fn=collate_triplets)

    def step(batch: dict) -> None:
        length = int(batch["length"].max())
        batch = {**batch, "motion": batch["motion"][:, :length], "mask": batch["mask"][:, :length]}
        with loop.autocast(device):
            losses = model.losses(batch)
        loop.optimizer_step(losses["loss"], model, optimizer, 1.0)

    return step, loader


if __name__ == "__main__":
    sys.exit(run_command(main))
