"""Train a MoMask stage on a built dataset over a trained residual VQ-VAE.

    python -m models train momask --data built/humanml3d --tokenizer runs/rvq --out runs/momask --stage mask
        [--preset tiny|paper] [--text-encoder clip|clip-random|mate:RUN] [--epochs N] [--batch-size B]
        [--max-steps N] [--device cuda|cpu] [--resume] [--set latent_dim=384 ...]
    python -m models train momask --data built/humanml3d --tokenizer runs/rvq --out runs/momask --stage residual

Both stages share one run folder: the mask transformer at RUN/checkpoint.pt, the residual transformer at
RUN/residual/checkpoint.pt (each with config.json and log.jsonl beside it); the stages are independent
and may train at the same time. Samples are MoMask's Text2MotionDataset crops (a multiple of 4 frames,
one unit shorter with probability 1/3, a random start, one random caption), normalised with the
tokenizer's own statistics, zero-padded to 196 frames and encoded by the frozen VQ-VAE per batch (as the
reference does): ids (B, 49, Q) with length // 4 valid tokens. The text condition is the frozen encoder's
pooled feature (CLIP encode_text), cached per caption. AdamW (betas 0.9, 0.99, weight decay 1e-5), linear
warm-up over `warmup_steps`, then lr * gamma at each milestone. `--resume` continues a stage with its own
settings, tokenizer and text encoder; each epoch reseeds from (seed, epoch) and the learning rate is a
function of the step, so a resumed run repeats the uninterrupted one exactly (`--num-workers 0`). Each
epoch's log line adds the validation split's loss and accuracy (`val_loss`, `val_acc`) when the build has it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from datasets_build.core.flags import option
from datasets_build.text.encoders import TextEncoder, load_text_encoder
from models.base import (
    check_text_encoder, config_from_dict, load_checkpoint, seed_everything, text_encoder_record, write_config,
)
from models.momask.api import (
    FORMAT, MoMaskError, PooledText, open_tokenizer, save_checkpoint, stage_dir, tokenizer_record,
)
from models.momask.data import TokenSamples, collate_tokens, stored_tokens_match
from models.momask.model import MaskTransformer, MoMaskConfig, ResidualTransformer
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import DataError, DataOptions, MotionDataset, collate, dataset_name, make_loader
from models.vq.api import load as load_vq
from models.vq.model import VQVAE


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with MoMask's transformer schedule (MODELS.md §6.6)."""

    tokenizer: str | None = option(None, "the residual VQ-VAE run folder (`python -m models train vqvae --preset "
                                         "momask`); a resumed stage keeps its own", metavar="VQ_RUN")
    stage: Literal["mask", "residual"] = option("mask", "mask: the base-layer masked transformer (RUN); residual: "
                                                        "the residual transformer (RUN/residual)")
    epochs: int = option(500, "total epochs (max_epoch 500)", metavar="N", positive=True)
    batch_size: int = option(64, "samples per optimizer step (HumanML3D 64, KIT-ML 16)", metavar="B", positive=True)
    lr: float = option(2e-4, "AdamW learning rate after the warm-up")
    weight_decay: float = option(1e-5, "AdamW weight decay")
    grad_clip: float | None = option(None, "clip the gradient norm to this (the reference does not clip)")
    warmup_steps: int = option(2000, "optimizer steps of the linear learning-rate warm-up", metavar="N")
    milestones: str = option("50000", "optimizer steps at which the learning rate is multiplied by gamma")
    gamma: float = option(0.1, "learning-rate decay at each milestone")
    text_encoder: str = option("clip", "the frozen text encoder (clip: ViT-B/32; clip-random: offline tests; "
                                       "mate:RUN: a MATE run's motion-aligned CLIP)")
    text_encoder_checkpoint: str | None = option(None, "local weights for the text encoder", metavar="PATH")
    stored_tokens: Literal["auto", "never"] = option(
        "auto", "auto: read the build's motion_tokens when the same tokenizer made them (cropped in token space, "
                "[inferred]); never: encode each batch's motions, as the reference does")


PRESETS = {
    "tiny": Preset("the CPU test size (MODELS.md §8)",
                   model={"latent_dim": 32, "num_heads": 2, "num_layers": 2, "ff_dim": 64, "dropout": 0.1},
                   train={"epochs": 20, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10, "milestones": "",
                          "num_workers": 0, "text_encoder": "clip-random", "log_every": 5}),
    "paper": Preset("MoMask's settings (the defaults: 8 layers, 384 wide, 6 heads, ff 1024, AdamW 2e-4, batch 64, "
                    "warm-up 2000, milestone 50k x 0.1, 500 epochs)"),
}


class StageLoss(torch.nn.Module):
    """forward = the stage's training loss, so that DistributedDataParallel wraps the call that trains."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.loss(ids, lengths, cond)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """lr (step + 1) / warmup during the warm-up, then lr gamma^(milestones passed)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    milestones = [int(m) for m in str(cfg.milestones).replace(" ", "").split(",") if m]
    return cfg.lr * cfg.gamma ** sum(step >= m for m in milestones)


def data_options(dataset: str) -> DataOptions:
    """MoMask's Text2MotionDataset crops: unit 4, the 1/3 shorter crop, a random start, padded to 196."""
    return DataOptions.for_dataset(dataset)


def network(stage: str, cfg: MoMaskConfig) -> torch.nn.Module:
    return MaskTransformer(cfg) if stage == "mask" else ResidualTransformer(cfg)


def model_config(vq: VQVAE, text_dim: int, overrides: dict[str, Any], stage: str) -> MoMaskConfig:
    """The widths the tokenizer and the text encoder fix, then the preset and --set values."""
    if stage == "residual" and not vq.residual:
        raise MoMaskError(f"the tokenizer {vq.run_dir} has one codebook: the residual stage needs a residual "
                          "VQ-VAE (`python -m models train vqvae --preset momask`)")
    quantizers = vq.cfg.num_quantizers if vq.residual else 1
    fixed = {"nb_code": vq.cfg.nb_code, "code_dim": vq.cfg.code_dim, "num_quantizers": quantizers,
             "text_dim": int(text_dim)}
    clash = {k for k in fixed if k in overrides and overrides[k] != fixed[k]}
    if clash:
        raise MoMaskError(f"--set {', '.join(sorted(clash))} is fixed by the tokenizer and the text encoder")
    return MoMaskConfig(**{**overrides, **fixed})


def batch_ids(vq: VQVAE, motion: torch.Tensor, length: torch.Tensor, stage: str,
              ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, n) base layer or (B, n, Q), token lengths (B,)) of normalised motions (B, T, D), or of
    stored `ids` (B, n, Q) when given."""
    ids = vq.encode(motion) if ids is None else ids
    if ids.dim() == 2:
        ids = ids[..., None]
    return (ids[..., 0] if stage == "mask" else ids), length // vq.cfg.downsampling


def validation_loader(cfg: TrainConfig, vq: VQVAE, options: DataOptions) -> torch.utils.data.DataLoader | None:
    """The validation split's samples (motions encoded per batch), or None when the build has no such split."""
    if not cfg.val_split or not (Path(cfg.data) / cfg.val_split).is_dir():
        return None
    val_set = MotionDataset(cfg.data, cfg.val_split, stats=vq.stats, options=options)
    if len(val_set) == 0:
        return None
    return make_loader(val_set, min(cfg.batch_size, len(val_set)), shuffle=False, num_workers=0, drop_last=False)


@torch.no_grad()
def validate(model: torch.nn.Module, loader: torch.utils.data.DataLoader, vq: VQVAE, text: PooledText, stage: str,
             device: torch.device) -> dict[str, float]:
    """Mean masked-token loss and accuracy on the validation split (eval mode; the reference also computes a
    validation FID with the evaluator to pick its best checkpoint, which this loop does not)."""
    model.eval()
    means = loop.Means()
    for batch in loader:
        ids, lengths = batch_ids(vq, batch["motion"].to(device), batch["length"].to(device), stage)
        means.add(model.loss(ids, lengths, text(batch["caption"], device)))
    model.train()
    return {f"val_{k}": v for k, v in means.means().items()}


def setup(cfg: TrainConfig, state: dict[str, Any] | None, device: torch.device,
          text_encoder: TextEncoder | None) -> tuple[VQVAE, TextEncoder, dict[str, Any], MoMaskConfig]:
    """(tokenizer, text encoder, its record, model config) of a fresh or resumed stage."""
    record = state["text_encoder"] if state else {"name": cfg.text_encoder, "checkpoint": cfg.text_encoder_checkpoint}
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    if state:
        check_text_encoder(text_encoder, state["text_encoder"], MoMaskError)
        vq = open_tokenizer(state["tokenizer"], device, cfg.tokenizer)
        model_cfg = config_from_dict(MoMaskConfig, state["model_config"], stage_dir(cfg.out, cfg.stage))
    else:
        if not cfg.tokenizer:
            raise MoMaskError("--tokenizer VQ_RUN is required: the residual VQ-VAE run whose ids the model predicts")
        vq = load_vq(cfg.tokenizer, device)
        model_cfg = model_config(vq, text_encoder.dim, cfg.model, cfg.stage)
    other = stage_dir(cfg.out, "mask" if cfg.stage == "residual" else "residual")
    if (other / "checkpoint.pt").is_file():  # the two stages of a run must share tokenizer and text encoder
        sibling = load_checkpoint(other, FORMAT)
        if sibling["tokenizer"]["fingerprint"] != vq.fingerprint:
            raise MoMaskError(f"{other} was trained on another tokenizer: use the same --tokenizer or another --out")
        check_text_encoder(text_encoder, sibling["text_encoder"], MoMaskError)
    return vq, text_encoder, text_encoder_record(text_encoder, record["checkpoint"]), model_cfg


def train(cfg: TrainConfig, text_encoder: TextEncoder | None = None) -> Path:
    """Train (or resume) cfg.stage into cfg.out; `text_encoder` injects a frozen encoder (tests)."""
    folder = stage_dir(cfg.out, cfg.stage)
    with loop.run_folder(folder):
        return _train(cfg, folder, text_encoder)


def _train(cfg: TrainConfig, folder: Path, text_encoder: TextEncoder | None) -> Path:
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    state = loop.open_run(folder, FORMAT, cfg.resume)
    if state:
        loop.check_epochs(int(state["epoch"]), cfg.epochs, folder)
    vq, text_encoder, record, model_cfg = setup(cfg, state, device, text_encoder)
    options = data_options(dataset_name(cfg.data))
    train_set = MotionDataset(cfg.data, cfg.split, stats=vq.stats, options=options)
    if len(train_set) < 1:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has no samples after the length filters")
    stored = cfg.stored_tokens == "auto" and stored_tokens_match(cfg.data, vq.fingerprint)
    samples = TokenSamples(train_set, vq.cfg.downsampling, model_cfg.max_tokens) if stored else train_set
    if options.max_motion_length // vq.cfg.downsampling != model_cfg.max_tokens:
        raise MoMaskError(f"max_tokens {model_cfg.max_tokens} does not match {options.max_motion_length} frames")
    tokenizer = tokenizer_record(vq)
    if dist.is_main:
        write_config(folder, FORMAT, model_config=model_cfg, train_config=cfg,
                     configs={"stage": cfg.stage, "text_encoder": record, "tokenizer": tokenizer,
                              "data_options": options})
    text = PooledText(text_encoder)
    text.add([c for i in range(len(train_set)) for c in train_set.captions(i)])  # every caption encoded once

    model = network(cfg.stage, model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    start_epoch, step = loop.restore(state, model, optimizer)
    net = loop.distribute(StageLoss(model), dist, device)  # DDP averages gradients through forward
    sampler = loop.shard(train_set, dist, cfg.seed)
    loader = make_loader(samples, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", sampler=sampler,
                         collate_fn=collate_tokens if stored else collate)
    val_loader = validation_loader(cfg, vq, options)
    book = loop.Bookkeeping(folder, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                            progress=cfg.progress, shown=("loss", "acc"))
    name = f"momask {cfg.stage}"
    book.announce(name, model, len(loader), cfg.epochs - start_epoch,
                  line=loop.parameter_line(name, model, len(loader), cfg.epochs - start_epoch)
                  + (" (the build's stored motion_tokens)" if stored else " (motions encoded per batch)"))

    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 100_003 + epoch)  # shuffle, crops, captions, masks, q: resumable exactly
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in book.batches(loader, epoch, cfg.epochs, label=f"{cfg.stage} "):
            motion = None if stored else batch["motion"].to(device, non_blocking=True)
            ids, lengths = batch_ids(vq, motion, batch["length"].to(device), cfg.stage,
                                     batch["ids"].to(device) if stored else None)
            cond = text(batch["caption"], device)
            lr = learning_rate(cfg, book.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with loop.autocast(device):
                losses = net(ids, lengths, cond)
            if book.optimize(losses, model, optimizer, cfg.grad_clip, lr=lr):
                break
        book.meter.pause()  # validation is not training time
        scores = (validate(model, val_loader, vq, text, cfg.stage, device)
                  if val_loader is not None and dist.is_main else {})
        summary = book.end_epoch(**scores)
        if dist.is_main:
            if cfg.progress:
                val = (f" (val loss {summary['val_loss']:.4f} acc {summary['val_acc']:.3f})"
                       if "val_loss" in summary else "")
                print(f"{cfg.stage} epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f} "
                      f"acc {summary.get('acc', float('nan')):.3f}{val}", file=sys.stderr)
            save_checkpoint(cfg.out, stage=cfg.stage, model=model, optimizer=optimizer, text_encoder=record,
                            tokenizer=tokenizer, epoch=epoch + 1, step=book.step, train_config=cfg,
                            data_options=options)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish()
    loop.finish(dist)
    return folder


def main(argv: list[str] | None = None, prog: str = "python -m models train momask") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, MoMaskConfig, PRESETS)
    folder = stage_dir(cfg.out, cfg.stage)
    first = int(load_checkpoint(folder, FORMAT)["epoch"]) if cfg.resume and (folder / "checkpoint.pt").is_file() else 0
    run_dir = train(cfg)
    if loop.Dist().is_main:
        state = load_checkpoint(run_dir, FORMAT)
        print(loop.epochs_done_line(run_dir, first, int(state["epoch"]), int(state["step"])))
    return 0


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`: preset "tiny" or "paper"
    times a step of both stages on the same batch, "PRESET:mask" or "PRESET:residual" one stage. A random
    residual VQ-VAE of the momask shape (6 x 512 codes; the tiny one 3 x 16) encodes the motions; random
    pooled features stand in for the frozen text encoder."""
    from datasets_build.motion.normalizer import Normalizer
    from models.training.data import compute_stats
    from models.vq.model import VQVAEConfig

    name, _, only = preset.partition(":")
    stages = [only] if only else ["mask", "residual"]
    stats = compute_stats(data, "train")
    tiny = {"width": 32, "code_dim": 32, "nb_code": 16, "depth": 1, "num_quantizers": 3} if name == "tiny" else {}
    vq = VQVAE(VQVAEConfig(**{"quantizer": "residual", "motion_dim": len(stats.mean), **tiny})).to(device).eval()
    vq.stats, vq.run_dir, vq.fingerprint = Normalizer(stats.mean, stats.std), "", ""
    cfg = model_config(vq, 512, PRESETS[name].model, "residual")
    models = {s: network(s, cfg).to(device).train() for s in stages}
    optimizers = {s: torch.optim.AdamW(m.parameters(), lr=2e-4, betas=(0.9, 0.99)) for s, m in models.items()}
    dataset = MotionDataset(data, "train", stats=vq.stats, options=data_options(dataset_name(data)))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0)

    def step(batch: dict) -> None:
        motion, length = batch["motion"].to(device), batch["length"].to(device)
        cond = torch.randn(len(length), 512, generator=torch.Generator().manual_seed(0)).to(device)
        for stage, model in models.items():
            ids, lengths = batch_ids(vq, motion, length, stage)
            with loop.autocast(device):
                losses = model.loss(ids, lengths, cond)
            loop.optimizer_step(losses["loss"], model, optimizers[stage], None)

    return step, loader


if __name__ == "__main__":
    sys.exit(run_command(main))
