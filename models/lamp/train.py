"""Pretrain LaMP (the language-motion Q-Former) on a built dataset over a trained motion VQ-VAE.

    python -m models train lamp --data built/humanml3d --tokenizer runs/vq --out runs/lamp
        [--preset tiny|paper] [--bert DIR] [--epochs N] [--batch-size B] [--lr LR] [--max-steps N]
        [--device cuda|cpu] [--resume] [--set num_layers=6 ...]

`--tokenizer` is the motion tokenizer (a `python -m models train vqvae` run): its frozen encoder feeds the
Q-Former, its code ids are L_gen's targets and its normalisation is the model's. `--bert DIR` is a local
bert-base-uncased folder (vocab.txt, and model.safetensors or pytorch_model.bin to initialise the Q-Former,
as the paper does); without it the vocabulary is the training captions' words and the Q-Former starts from
random weights. Schedule (MODELS.md 5.2): AdamW betas (0.9, 0.99), weight decay 0.05 on >= 2-D weights,
linear warm-up from 1e-6 over 2000 steps to the peak lr (the paper's 2e-4; LaMP's code uses 1e-4:
`--lr 1e-4`), then a per-epoch cosine to 1e-5 over `--epochs`; batch 64; bf16 autocast on CUDA.

RUN_DIR receives `checkpoint.pt` (every epoch), `best/checkpoint.pt` (the best validation R@1 of text
vs motion features in shuffled batches, LaMP's checkpoint selection), `config.json`, `vocab.txt` and
`log.jsonl`. Each epoch reseeds from (seed, epoch), so with `--num-workers 0` a resumed run repeats the
uninterrupted one exactly.
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets_build.core.errors import UserError
from datasets_build.core.flags import option
from models.base import config_from_dict, seed_everything
from models.lamp.api import BEST, FORMAT, VOCABULARY, build_from_state, save_checkpoint, tokenize
from models.lamp.pretrain import LaMP, LaMPConfig, QueryCountMismatch, decay_groups
from models.lamp.text import bert_folder_files, caption_vocabulary, load_tokenizer, read_bert_weights, write_vocabulary
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import DataError, DataOptions, MotionDataset, dataset_name, make_loader


class MissingTokenizer(UserError, ValueError):
    """No motion tokenizer run given."""


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with LaMP pretraining's schedule (MODELS.md 5.2)."""

    tokenizer: str | None = option(None, "the motion VQ-VAE run (`python -m models train vqvae`)", metavar="VQ_RUN")
    bert: str | None = option(None, "local bert-base-uncased folder (vocab.txt [+ weights]); default: the captions' "
                                    "vocabulary and a random Q-Former", metavar="DIR")
    epochs: int = option(200, "total epochs (the cosine's max_epoch)", metavar="N", positive=True)
    batch_size: int = option(64, "samples per optimizer step (LaMP's README command: 64)", metavar="B", positive=True)
    lr: float = option(2e-4, "peak AdamW learning rate (paper 2e-4; LaMP's code 1e-4)")
    min_lr: float = option(1e-5, "the cosine's final learning rate")
    warmup_lr: float = option(1e-6, "learning rate at step 0 of the linear warm-up")
    warmup_steps: int = option(2000, "linear warm-up steps", metavar="N")
    weight_decay: float = option(0.05, "AdamW weight decay on >= 2-D weights")
    grad_clip: float | None = option(0.0, "clip the gradient norm to this (0: none, as LaMP's code)")
    val_batches: int = option(20, "validation: shuffled batches of --batch-size averaged for R@1", metavar="N",
                              positive=True)


PRESETS = {
    # tiny's initializer_range 0.2 [inferred]: a 32-wide Q-Former at BERT's 0.02 starts with every [CLS] and
    # query feature at cosine 0.9999 to every other and sits on the L_ptc = ln(B) plateau for hundreds of
    # steps (LaMP itself starts from pretrained BERT, whose features are already distinct)
    "tiny": Preset("the CPU test size (a 2-layer, 32-wide Q-Former)",
                   model={"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                          "encoder_width": 48, "embed_dim": 32, "max_text_length": 16, "initializer_range": 0.2},
                   train={"epochs": 10, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10, "num_workers": 0,
                          "val_batches": 4}),
    "paper": Preset("LaMP's settings (the defaults: BERT-base Q-Former, 49 queries, batch 64, 200 epochs, "
                    "lr 2e-4 peak; pass --bert for BERT's weights)"),
}


# the random VQ-VAE of `benchmark_step`: MODELS.md 8's tiny VQ, and LaMP's (the VQVAEConfig defaults)
BENCHMARK_VQ = {"tiny": {"width": 32, "code_dim": 32, "nb_code": 16, "depth": 1}, "paper": {}}


def learning_rate(cfg: TrainConfig, epoch: int, step: int) -> float:
    """LaMP's LinearWarmupCosineLRScheduler: warm-up in the first epoch and for `warmup_steps` steps,
    then a cosine over epochs from lr to min_lr."""
    if epoch == 0 or step < cfg.warmup_steps:
        return min(cfg.lr, cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / max(cfg.warmup_steps, 1))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def data_options(dataset: str, max_motion_length: int) -> DataOptions:
    """LaMP's crops: a multiple of 4 frames (one unit shorter with probability 1/3), a random start,
    zero-padded to 196 frames."""
    return DataOptions.for_dataset(dataset, max_motion_length=max_motion_length)


def model_config(cfg: TrainConfig, vq, tokenizer) -> LaMPConfig:
    """The LaMPConfig of a fresh run: the preset's and --set values, then what the tokenizers fix."""
    values = {**cfg.model, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
              "pad_token_id": tokenizer.pad_token_id, "motion_width": vq.cfg.code_dim, "codebook_size": vq.cfg.nb_code}
    model_cfg = LaMPConfig(**values)
    tokens = model_cfg.max_motion_length // vq.cfg.downsampling
    if tokens != model_cfg.num_query_tokens:
        raise QueryCountMismatch(f"{model_cfg.max_motion_length} frames give {tokens} motion tokens but the model has "
                                 f"{model_cfg.num_query_tokens} queries: --set num_query_tokens={tokens}")
    return model_cfg


def open_model(cfg: TrainConfig, state, run_dir: Path, dist: loop.Dist):
    """(model, tokenizer, stats, data options, VQ fingerprint) of a fresh or resumed run."""
    if state:
        model = build_from_state(state, run_dir)
        options = config_from_dict(DataOptions, state["data_options"], run_dir)
        return model, load_tokenizer(run_dir / VOCABULARY), model.vq.stats, options, state.get("vq_fingerprint")
    if not cfg.tokenizer:
        raise MissingTokenizer("LaMP pretraining needs the motion tokenizer: pass --tokenizer VQ_RUN "
                               "(a `python -m models train vqvae` run)")
    from models.vq.api import load as load_vq

    vq = load_vq(cfg.tokenizer, "cpu")
    weights = None
    if cfg.bert:
        vocab, weights = bert_folder_files(cfg.bert)
        if dist.is_main:
            shutil.copyfile(vocab, run_dir / VOCABULARY)
    elif dist.is_main:
        captions = MotionDataset(cfg.data, cfg.split, stats=None)
        write_vocabulary(caption_vocabulary(c for i in range(len(captions)) for c in captions.captions(i)),
                         run_dir / VOCABULARY)
    loop.barrier(dist)  # the vocabulary is written before every process reads it
    tokenizer = load_tokenizer(run_dir / VOCABULARY)
    model = LaMP(model_config(cfg, vq, tokenizer), vq)
    if weights is not None:
        report = model.qformer.load_bert(read_bert_weights(weights))
        if dist.is_main and cfg.progress:
            print(f"Q-Former initialised from {weights} ({len(report['missing'])} tensors left random: "
                  "cross-attention and new rows)", file=sys.stderr)
    options = data_options(dataset_name(cfg.data), model.cfg.max_motion_length)
    return model, tokenizer, vq.stats, options, getattr(vq, "fingerprint", None)


@torch.no_grad()
def validation_r1(model: LaMP, dataset: MotionDataset, tokenizer, batch_size: int, batches: int,
                  device: torch.device, seed: int) -> float | None:
    """Mean in-batch text->motion R@1 of unit-norm text and query-mean motion features (None: too few samples)."""
    size = min(batch_size, len(dataset))
    if size < 2:
        return None
    rng = np.random.default_rng(seed)
    model.eval()
    hits = []
    for _ in range(batches):
        idx = rng.choice(len(dataset), size, replace=False)
        items = [dataset[int(i)] for i in idx]
        motion = torch.from_numpy(np.stack([it["motion"] for it in items])).to(device)
        ids, mask = tokenize(tokenizer, [it["caption"] for it in items], model.cfg.max_text_length, device)
        with loop.autocast(device):
            t = model.retrieval_features(ids=ids, mask=mask, normalize=True).float()
            m = model.retrieval_features(motion=motion, normalize=True).float()
        hits.append(float((torch.argmax(t @ m.t(), dim=1) == torch.arange(size, device=device)).float().mean()))
    model.train()
    return float(np.mean(hits))


def train(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.out)
    with loop.run_folder(run_dir):
        return _train(cfg, run_dir)


def _train(cfg: TrainConfig, run_dir: Path) -> Path:
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    model, tokenizer, stats, options, fingerprint = open_model(cfg, state, run_dir, dist)
    train_set = MotionDataset(cfg.data, cfg.split, stats=stats, options=options)
    if len(train_set) < 2:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has {len(train_set)} samples after the length filters; "
                        "LaMP's contrastive loss needs batches of at least 2")
    val_set = None
    if cfg.val_split:
        try:
            val_set = MotionDataset(cfg.data, cfg.val_split, stats=stats,
                                    options=DataOptions(**{**options.__dict__, "random_crop": False}))
        except DataError:
            val_set = None  # no validation split in this build
    model.to(device)
    optimizer = torch.optim.AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    start_epoch, step = loop.restore(state, model, optimizer)
    best = float(state.get("best_r1", -1.0)) if state else -1.0
    net = loop.distribute(model, dist, device)
    sampler = loop.shard(train_set, dist, cfg.seed)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", sampler=sampler)
    book = loop.Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                            progress=cfg.progress)
    book.announce("lamp", model, len(loader), cfg.epochs - start_epoch)

    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 100_003 + epoch)  # shuffle, crops, captions, hard negatives, dropout
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in book.batches(loader, epoch, cfg.epochs):
            lr = learning_rate(cfg, epoch, book.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            motion = batch["motion"].to(device, non_blocking=True)
            ids, mask = tokenize(tokenizer, batch["caption"], model.cfg.max_text_length, device)
            with loop.autocast(device):
                losses = net(motion, ids, mask)
            if book.optimize({**losses, "temp": model.temp.detach()}, model, optimizer, cfg.grad_clip, lr=lr):
                break
        book.meter.pause()  # validation is not training time
        r1 = None
        if dist.is_main and val_set is not None:
            r1 = validation_r1(model, val_set, tokenizer, cfg.batch_size, cfg.val_batches, device, cfg.seed + epoch)
        summary = book.end_epoch(lr=lr, **{"val_t2m_R@1": r1})
        if dist.is_main:
            improved = r1 is not None and r1 > best
            best = r1 if improved else best
            if cfg.progress:
                parts = " ".join(f"{k} {summary[k]:.3f}" for k in ("loss", "ptc", "ptm", "lm", "gen"))
                print(f"epoch {epoch + 1}: {parts}" + ("" if r1 is None else f" val R@1 {r1:.3f}"), file=sys.stderr)
            record = dict(model=model, stats=stats, epoch=epoch + 1, step=book.step, train_config=cfg,
                          data_options=options, vq_fingerprint=fingerprint, extra={"best_r1": best})
            save_checkpoint(run_dir, optimizer=optimizer, **record)
            if improved:
                save_checkpoint(run_dir / BEST, optimizer=None, **record)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish()
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train lamp") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, LaMPConfig, PRESETS)
    run_dir = train(cfg)
    print(f"trained LaMP into {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`: a random VQ-VAE of the
    preset's size (models.vq's tiny or paper defaults) and a caption vocabulary stand in for the trained ones."""
    import tempfile

    from models.training.data import compute_stats
    from models.vq.model import VQVAE, VQVAEConfig

    stats = compute_stats(data, "train")
    vq = VQVAE(VQVAEConfig(**{**BENCHMARK_VQ[preset], "motion_dim": len(stats.mean)}))
    vq.stats = stats
    dataset = MotionDataset(data, "train", stats=stats, options=data_options(dataset_name(data), 196))
    with tempfile.TemporaryDirectory() as tmp:
        words = caption_vocabulary(c for i in range(len(dataset)) for c in dataset.captions(i))
        tokenizer = load_tokenizer(write_vocabulary(words, Path(tmp) / VOCABULARY))
    cfg = TrainConfig(data=data, out="", model=dict(PRESETS[preset].model))
    model = LaMP(model_config(cfg, vq, tokenizer), vq).to(device)
    optimizer = torch.optim.AdamW(decay_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.99))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0)

    def step(batch: dict) -> None:
        ids, mask = tokenize(tokenizer, batch["caption"], model.cfg.max_text_length, device)
        with loop.autocast(device):
            losses = model.losses(batch["motion"].to(device), ids, mask)
        loop.optimizer_step(losses["loss"], model, optimizer, 0.0)

    return step, loader

