"""Train LaMP-T2M (masked motion-token generation conditioned on a frozen LaMP run, MODELS.md 5.3).

    python -m models train lamp-t2m --data built/humanml3d --lamp runs/lamp --out runs/t2m
        [--preset tiny|paper|code] [--epochs N] [--batch-size B] [--lr LR] [--max-steps N] [--resume]

`--lamp` is a `python -m models train lamp` run: its frozen Q-Former and query tokens make the condition,
its frozen motion VQ-VAE (trained with `--tokenizer`) gives the token targets and decodes generated ids,
its vocabulary tokenizes the captions (49 BERT tokens). A build made with `--motion-tokenizer` (the LaMP
run's VQ) is read from its `motion_tokens` column (models.lamp.t2m_data; `--set token_column=false` encodes
the motions instead). Schedule (LaMP's code): AdamW lr 2e-4, betas
(0.9, 0.99), weight decay 1e-5; linear warm-up over 2000 steps, then x0.05 at step 60 000; batch 64
(HumanML3D; the README uses 16 for KIT). The guidance scale is 4 for HumanML3D builds, 2 for KIT
(the paper), unless `--set cfg_scale=S`.

RUN_DIR receives `checkpoint.pt` (every epoch; self-contained: the trained transformer and text2former,
the frozen Q-Former, query tokens and VQ-VAE, the normalisation), `config.json`, `vocab.txt`, `log.jsonl`
(step losses; per epoch also `val_loss`, the validation split's masked-token loss with fixed masks).
Each epoch reseeds from (seed, epoch): with `--num-workers 0` a resumed run repeats the uninterrupted one.
`python -m models generate|evaluate --run RUN_DIR` sample it (models.lamp.t2m_api).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from datasets_build.core.errors import UserError
from datasets_build.core.flags import option
from models import base
from models.base import CheckpointFormat, config_from_dict, seed_everything
from models.lamp.api import FORMAT as LAMP_FORMAT, VOCABULARY, build_from_state, checkpoint_dir, tokenize
from models.lamp.pretrain import LaMPConfig
from models.lamp.qformer import QFormerBert, qformer_config
from models.lamp.t2m import LaMPT2M, T2MConfig
from models.lamp.t2m_data import TokenSamples, collate_tokens, has_token_columns
from models.lamp.text import load_tokenizer
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import (
    DataError, DataOptions, MotionDataset, Normalizer, collate, dataset_name, make_loader,
)
from models.vq.model import VQVAE, VQVAEConfig

FORMAT = CheckpointFormat("lamp-t2m", 1)
CFG_SCALE = {"humanml3d": 4.0, "kitml": 2.0, "kit": 2.0}  # paper 4.1


class MissingLaMP(UserError, ValueError):
    """No LaMP run given."""


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with LaMP-T2M's schedule (MODELS.md 5.3, LaMP's train_option.py)."""

    lamp: str | None = option(None, "the LaMP pretraining run (`python -m models train lamp`)", metavar="LAMP_RUN")
    epochs: int = option(2000, "total epochs (the code's max_epoch)", metavar="N", positive=True)
    batch_size: int = option(64, "samples per optimizer step (HumanML3D 64, KIT 16)", metavar="B", positive=True)
    lr: float = option(2e-4, "peak AdamW learning rate")
    weight_decay: float = option(1e-5, "AdamW weight decay")
    warmup_steps: int = option(2000, "linear warm-up steps", metavar="N")
    lr_milestone: int = option(60_000, "step at which the learning rate is multiplied by lr_gamma", metavar="N")
    lr_gamma: float = option(0.05, "the milestone's factor")
    grad_clip: float | None = option(0.0, "clip the gradient norm to this (0: none, as the code)")
    token_column: bool | None = option(None, "read the build's motion_tokens column instead of encoding the motions "
                                             "(default: when the build has it)")


PRESETS = {
    "tiny": Preset("the CPU test size (2 layers, 32 wide)",
                   model={"latent_dim": 32, "num_heads": 2, "num_layers": 2, "ff_dim": 64, "token_dim": 32},
                   train={"epochs": 10, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10, "num_workers": 0}),
    "paper": Preset("the paper's transformer (the defaults: 6 layers, 6 heads, 384 wide; AdamW 2e-4, batch 64)"),
    "code": Preset("the released code's transformer (8 layers, 8 heads, 512 wide)",
                   model={"latent_dim": 512, "num_heads": 8, "num_layers": 8}),
}


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The code's warm-up (lr * (step+1) / (warmup+1)), then MultiStepLR at `lr_milestone`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    return cfg.lr * (cfg.lr_gamma if step >= cfg.lr_milestone else 1.0)


def qformer_bert(lamp_cfg: LaMPConfig) -> QFormerBert:
    """An empty Q-Former `bert` of a LaMP run's config (weights loaded afterwards)."""
    return QFormerBert(qformer_config(lamp_cfg.vocab_size, lamp_cfg.hidden_size, lamp_cfg.num_layers,
                                      lamp_cfg.num_heads, lamp_cfg.intermediate_size, lamp_cfg.encoder_width,
                                      lamp_cfg.cross_attention_freq, lamp_cfg.max_positions, lamp_cfg.dropout,
                                      lamp_cfg.pad_token_id, lamp_cfg.initializer_range))


def from_lamp_run(lamp_run: str | os.PathLike, model_values: dict[str, Any], dataset: str | None
                  ) -> tuple[LaMPT2M, VQVAE, LaMPConfig, str | None]:
    """A fresh LaMP-T2M over the frozen parts of a LaMP run (its best checkpoint), that run's VQ-VAE and the
    VQ's fingerprint."""
    folder = checkpoint_dir(lamp_run)
    state = base.load_checkpoint(folder, LAMP_FORMAT)
    lamp = build_from_state(state, base.checkpoint_path(folder))
    values = {"cfg_scale": CFG_SCALE.get(dataset or "", 4.0), **model_values,
              "codebook_size": lamp.vq.cfg.nb_code, "cond_width": lamp.cfg.hidden_size,
              "memory_width": lamp.cfg.encoder_width,
              "max_tokens": lamp.cfg.max_motion_length // lamp.vq.cfg.downsampling}
    model = LaMPT2M(T2MConfig(**values), lamp.qformer.bert, lamp.query_tokens.data)
    return model, lamp.vq, lamp.cfg, state.get("vq_fingerprint")


def rebuild(state: dict[str, Any], source: str | os.PathLike) -> tuple[LaMPT2M, VQVAE, Normalizer]:
    """(model, frozen VQ-VAE with `.stats`, stats) of a LaMP-T2M checkpoint, weights loaded."""
    lamp_cfg = config_from_dict(LaMPConfig, state["lamp_config"], source)
    cfg = config_from_dict(T2MConfig, state["model_config"], source)
    model = LaMPT2M(cfg, qformer_bert(lamp_cfg), torch.zeros(1, lamp_cfg.num_query_tokens, lamp_cfg.hidden_size))
    model.load_state_dict(state["model"])
    vq = VQVAE(config_from_dict(VQVAEConfig, state["vq_config"], source))
    vq.load_state_dict(state["vq"])
    vq.requires_grad_(False).eval()
    vq.stats = Normalizer.from_state_dict(state["stats"])
    return model, vq, vq.stats


def save_checkpoint(run_dir: str | os.PathLike, *, model: LaMPT2M, vq: VQVAE, lamp_cfg: LaMPConfig,
                    optimizer: torch.optim.Optimizer | None, epoch: int, step: int, train_config: Any,
                    data_options: Any, lamp_run: str | None, vq_fingerprint: str | None) -> Path:
    return base.save_checkpoint(run_dir, FORMAT, model=model, model_config=model.cfg, train_config=train_config,
                                optimizer=optimizer, epoch=epoch, step=step,
                                configs={"lamp_config": lamp_cfg, "vq_config": vq.cfg, "data_options": data_options,
                                         "lamp_run": lamp_run, "vq_fingerprint": vq_fingerprint},
                                extra={"stats": vq.stats.state_dict(), "vq": vq.state_dict()})


def token_targets(vq: VQVAE, motion: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, n), lengths in tokens (B,)) of normalised zero-padded motions (B, T, D), as the code:
    the padded motion encoded, positions past length // 4 become pads in `masking`."""
    with torch.no_grad():
        ids = vq.encode(motion)
    return ids.long(), torch.div(length, vq.cfg.downsampling, rounding_mode="floor").clamp(min=1)


@torch.no_grad()
def validation_loss(model: LaMPT2M, vq: VQVAE, tokenizer: Any, data: str, split: str | None, options: DataOptions,
                    batch_size: int, device: torch.device, seed: int = 0) -> float | None:
    """Mean masked-token cross-entropy on the validation split (first caption, no random crop, masks drawn from
    a fixed generator, condition kept): None without that split. The global RNG is left untouched."""
    if not split:
        return None
    try:
        dataset = MotionDataset(data, split, stats=vq.stats, options=dataclasses.replace(
            options, random_crop=False, caption="first"))
    except DataError:
        return None
    if len(dataset) == 0:
        return None
    was_training = model.training
    model.eval()  # no dropout, no condition dropout
    generator = torch.Generator(device=device).manual_seed(seed)
    total, count = 0.0, 0
    for batch in make_loader(dataset, min(batch_size, len(dataset)), shuffle=False, drop_last=False):
        ids, lengths = token_targets(vq, batch["motion"].to(device), batch["length"].to(device))
        text_ids, text_mask = tokenize(tokenizer, batch["caption"], model.cfg.max_text_length, device)
        total += float(model(ids, lengths, text_ids, text_mask, generator)["loss"]) * len(ids)
        count += len(ids)
    model.train(was_training)
    return total / count


def train(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.out)
    with loop.run_folder(run_dir):
        return _train(cfg, run_dir)


def _open(cfg: TrainConfig, run_dir: Path, dist: loop.Dist):
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    if state:
        model, vq, _ = rebuild(state, run_dir)
        lamp_cfg = config_from_dict(LaMPConfig, state["lamp_config"], run_dir)
        return state, model, vq, lamp_cfg, config_from_dict(DataOptions, state["data_options"], run_dir), \
            state.get("lamp_run"), state.get("vq_fingerprint")
    if not cfg.lamp:
        raise MissingLaMP("LaMP-T2M needs a LaMP run: pass --lamp LAMP_RUN (`python -m models train lamp`)")
    dataset = dataset_name(cfg.data)
    model, vq, lamp_cfg, fingerprint = from_lamp_run(cfg.lamp, cfg.model, dataset)
    if dist.is_main:
        shutil.copyfile(Path(cfg.lamp) / VOCABULARY, run_dir / VOCABULARY)
    options = DataOptions.for_dataset(dataset, max_motion_length=lamp_cfg.max_motion_length)
    return None, model, vq, lamp_cfg, options, str(cfg.lamp), fingerprint


def _train(cfg: TrainConfig, run_dir: Path) -> Path:
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    state, model, vq, lamp_cfg, options, lamp_run, fingerprint = _open(cfg, run_dir, dist)
    loop.barrier(dist)
    tokenizer = load_tokenizer(run_dir / VOCABULARY)
    use_tokens = has_token_columns(cfg.data, cfg.split) if cfg.token_column is None else cfg.token_column
    if use_tokens:
        train_set = TokenSamples(cfg.data, cfg.split, options, model.cfg.max_tokens, vq.cfg.downsampling, fingerprint)
    else:
        train_set = MotionDataset(cfg.data, cfg.split, stats=vq.stats, options=options)
    if len(train_set) < 1:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has no samples after the length filters")
    model.to(device)
    vq.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.99),
                                  weight_decay=cfg.weight_decay)
    start_epoch, step = loop.restore(state, model, optimizer)
    net = loop.distribute(model, dist, device)
    sampler = loop.shard(train_set, dist, cfg.seed)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", sampler=sampler,
                         collate_fn=collate_tokens if use_tokens else collate)
    book = loop.Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                            progress=cfg.progress)
    book.announce("lamp-t2m", model, len(loader), cfg.epochs - start_epoch)
    if dist.is_main and cfg.progress and use_tokens:
        print(f"reading the motion_tokens column of {cfg.data}", file=sys.stderr)

    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 100_003 + epoch)  # shuffle, crops, captions, masks, condition dropout
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        lr = learning_rate(cfg, book.step)
        for batch in book.batches(loader, epoch, cfg.epochs):
            lr = learning_rate(cfg, book.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if use_tokens:
                ids, lengths = batch["ids"].to(device), batch["token_length"].to(device)
            else:
                motion = batch["motion"].to(device, non_blocking=True)
                ids, lengths = token_targets(vq, motion, batch["length"].to(device))
            text_ids, text_mask = tokenize(tokenizer, batch["caption"], model.cfg.max_text_length, device)
            with loop.autocast(device):
                losses = net(ids, lengths, text_ids, text_mask)
            if book.optimize(losses, model, optimizer, cfg.grad_clip, lr=lr):
                break
        book.meter.pause()  # validation is not training time
        val = ({"val_loss": validation_loss(model, vq, tokenizer, cfg.data, cfg.val_split, options, cfg.batch_size,
                                            device, cfg.seed)} if dist.is_main else {})
        summary = book.end_epoch(lr=lr, **val)
        if dist.is_main:
            if cfg.progress:
                print(f"epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f} "
                      f"accuracy {summary.get('accuracy', float('nan')):.3f}", file=sys.stderr)
            save_checkpoint(run_dir, model=model, vq=vq, lamp_cfg=lamp_cfg, optimizer=optimizer, epoch=epoch + 1,
                            step=book.step, train_config=cfg, data_options=options, lamp_run=lamp_run,
                            vq_fingerprint=fingerprint)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish()
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train lamp-t2m") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, T2MConfig, PRESETS)
    run_dir = train(cfg)
    print(f"trained LaMP-T2M into {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`: a random LaMP (the lamp
    preset's Q-Former: tiny, or BERT-base for paper) and random VQ-VAE stand in for the trained ones."""
    from models.lamp.pretrain import LaMP
    from models.lamp.train import BENCHMARK_VQ, PRESETS as LAMP_PRESETS
    from models.training.data import compute_stats

    stats = compute_stats(data, "train")
    vq = VQVAE(VQVAEConfig(**{**BENCHMARK_VQ.get(preset, {}), "motion_dim": len(stats.mean)})).requires_grad_(False)
    vq.stats = stats
    lamp_model = dict(LAMP_PRESETS["tiny" if preset == "tiny" else "paper"].model)
    lamp = LaMP(LaMPConfig(**{**lamp_model, "vocab_size": 64, "bos_token_id": 63, "motion_width": vq.cfg.code_dim,
                              "codebook_size": vq.cfg.nb_code}), vq)
    model = LaMPT2M(T2MConfig(**{**PRESETS[preset].model, "codebook_size": vq.cfg.nb_code,
                                 "cond_width": lamp.cfg.hidden_size, "memory_width": lamp.cfg.encoder_width}),
                    lamp.qformer.bert, lamp.query_tokens.data).to(device)
    vq.to(device).eval()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, betas=(0.9, 0.99),
                                  weight_decay=1e-5)
    dataset = MotionDataset(data, "train", stats=stats, options=DataOptions.for_dataset(dataset_name(data)))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0)

    def step(batch: dict) -> None:
        ids, lengths = token_targets(vq, batch["motion"].to(device), batch["length"].to(device))
        g = torch.Generator().manual_seed(len(batch["caption"]))
        text_ids = torch.randint(1, 63, (len(ids), model.cfg.max_text_length), generator=g).to(device)
        text_mask = torch.ones_like(text_ids, dtype=torch.bool)
        model.train()
        with loop.autocast(device):
            losses = model(ids, lengths, text_ids, text_mask)
        loop.optimizer_step(losses["loss"], model, optimizer, 0.0)

    return step, loader
