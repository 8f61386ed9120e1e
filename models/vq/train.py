"""Train the motion VQ-VAE on a built dataset.

    python -m models train vqvae --data built/humanml3d --out runs/vq [--preset tiny|paper|momask]
        [--window-size 64] [--epochs N] [--batch-size B] [--max-steps N] [--device cuda|cpu] [--resume]
        [--set quantizer=residual --set num_quantizers=6 ...]

Samples are every window of `window_size` frames of every whole motion of the split (LaMP's and
MoMask's MotionDataset: motions shorter than the window are skipped; the reference counts T - window
starts per motion and so never draws the last one, nor a motion of exactly `window` frames: we use all
T - window + 1), normalised with fb5 statistics
(the block-averaged std with root and foot contact divided by 5: the evaluator's meta; the build's
release Mean/Std when it has them). AdamW with a linear warm-up over `warmup_steps` optimizer steps,
then the learning rate times `gamma` at each of `milestones` (MODELS.md §5.1 / §6.6).

RUN_DIR receives `checkpoint.pt` (every epoch; `models.base`'s format "models.vq/1"), `config.json`,
`stats.npz` and `log.jsonl`. `--resume` continues with the checkpoint's own settings and statistics;
each epoch reseeds from (seed, epoch) and the learning rate is a function of the step, so a resumed
run repeats the uninterrupted one exactly (in-process loading, `--num-workers 0`).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from datasets_build.core.flags import option
from datasets_build.formats.built import load_release_stats
from datasets_build.motion.normalizer import Normalizer
from models.base import atomic_write, config_from_dict, load_checkpoint, seed_everything, write_config
from models.eval.evaluator import FEAT_BIAS, evaluator_stats
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import DataError, MotionWindows, compute_stats, dataset_name, make_loader
from models.vq.api import FORMAT, save_checkpoint
from models.vq.model import VQVAE, VQVAEConfig


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with the VQ-VAE schedule of LaMP's code (MODELS.md §5.1)."""

    epochs: int = option(50, "total epochs (passes over every window of the split)", metavar="N", positive=True)
    batch_size: int = option(256, "windows per optimizer step", metavar="B", positive=True)
    lr: float = option(5e-4, "AdamW learning rate after the warm-up (LaMP 5e-4; MoMask 2e-4)")
    beta2: float = option(0.99, "AdamW beta2 (beta1 0.9)")
    grad_clip: float | None = option(None, "clip the gradient norm to this (the reference does not clip)")
    warmup_steps: int = option(2000, "optimizer steps of the linear learning-rate warm-up", metavar="N")
    milestones: str = option("37500,62500", "optimizer steps at which the learning rate is multiplied by gamma")
    gamma: float = option(0.1, "learning-rate decay at each milestone (LaMP's README passes 0.05)")
    window_size: int = option(196, "frames per training window (LaMP 196, MoMask 64); a multiple of 4",
                              metavar="FRAMES", positive=True)
    stats: Literal["release", "train"] = option("release", "normalisation: release (the build's Mean/Std, else the split's block-averaged "
                                   "statistics) or train (always the split's), root and foot contact std / feat_bias")
    feat_bias: float = option(FEAT_BIAS, "root and foot-contact std are divided by this (fb5: the evaluator meta)")


PRESETS = {
    "tiny": Preset("the CPU test size (MODELS.md §8)",
                   model={"width": 32, "code_dim": 32, "nb_code": 16, "depth": 1, "dilation_growth": 3},
                   train={"epochs": 4, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10, "milestones": "",
                          "window_size": 32, "num_workers": 0, "log_every": 5}),
    "paper": Preset("LaMP's code: one 512 x 512 EMA codebook, width 512, window 196, AdamW 5e-4, batch 256, "
                    "50 epochs (the defaults)"),
    "momask": Preset("MoMask's RVQ-VAE (MATE's host): 6 residual layers, quantizer dropout 0.2, window 64, lr 2e-4, "
                     "milestones 150k/250k, gamma 0.05",
                     model={"quantizer": "residual", "num_quantizers": 6, "quantizer_dropout": 0.2},
                     train={"window_size": 64, "lr": 2e-4, "milestones": "150000,250000", "gamma": 0.05}),
}


def milestone_steps(text: str) -> list[int]:
    return sorted(int(part) for part in str(text).replace(" ", "").split(",") if part)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): lr (step + 1) / warmup during the warm-up
    (T2M-GPT's update_lr_warm_up), then lr gamma^(milestones passed)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * cfg.gamma ** sum(step >= m for m in milestone_steps(cfg.milestones))


def training_stats(cfg: TrainConfig, dataset: str) -> tuple[Normalizer, str]:
    """fb5 statistics: the build's release Mean/Std (when `stats="release"` and present), else the split's."""
    if cfg.stats == "release":
        try:
            mean, std = load_release_stats(cfg.data)
            return evaluator_stats(mean, std, cfg.feat_bias), f"release Mean/Std, feat_bias {cfg.feat_bias}"
        except FileNotFoundError:
            pass
    stats = compute_stats(cfg.data, cfg.split, block_average=dataset)
    return (evaluator_stats(stats.mean, stats.std, cfg.feat_bias),
            f"block-averaged statistics of the {cfg.split!r} split, feat_bias {cfg.feat_bias}")


def windows(data: str, split: str, stats: Normalizer, window: int) -> MotionWindows:
    if window % 4:
        raise DataError(f"--window-size {window} is not a multiple of 4 (the VQ-VAE downsamples by 4)")
    found = MotionWindows(data, split, stats=stats, window=window)
    if len(found) == 0:
        raise DataError(f"split {split!r} of {data} has no motion of {window} frames or more: pass a smaller "
                        "--window-size")
    return found


def collate_windows(items: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))                                    # (B, window, D)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) into cfg.out."""
    run_dir = Path(cfg.out)
    with loop.run_folder(run_dir):
        return _train(cfg, run_dir)


def _train(cfg: TrainConfig, run_dir: Path) -> Path:
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    dataset = dataset_name(cfg.data)
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    if state:
        loop.check_epochs(int(state["epoch"]), cfg.epochs, run_dir)
        stats = Normalizer.from_state_dict(state["stats"])
        model_cfg = config_from_dict(VQVAEConfig, state["model_config"], run_dir)
        options = dict(state["data_options"])  # a resumed run keeps its window
    else:
        stats, source = training_stats(cfg, dataset)
        model_cfg = VQVAEConfig(**{**cfg.model, "motion_dim": int(stats.mean.shape[0])})
        options = {"window_size": cfg.window_size, "stats": source, "dataset": dataset}
        if dist.is_main:
            atomic_write(run_dir / "stats.npz", lambda f: np.savez(f, mean=stats.mean, std=stats.std))
    train_set = windows(cfg.data, cfg.split, stats, int(options["window_size"]))
    if dist.is_main:
        write_config(run_dir, FORMAT, model_config=model_cfg, train_config=cfg, configs={"data_options": options})

    model = VQVAE(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    start_epoch, step = loop.restore(state, model, optimizer)
    net = loop.distribute(model, dist, device)
    sampler = loop.shard(train_set, dist, cfg.seed)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", sampler=sampler, collate_fn=collate_windows)
    book = loop.Bookkeeping(run_dir, device, dist, step=step, log_every=cfg.log_every, max_steps=cfg.max_steps,
                            progress=cfg.progress, shown=("loss", "perplexity"))
    book.announce(f"vqvae ({len(train_set)} windows)", model, len(loader), cfg.epochs - start_epoch)

    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 100_003 + epoch)  # shuffle and quantizer dropout: resumable exactly
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x in book.batches(loader, epoch, cfg.epochs):
            x = x.to(device, non_blocking=True)
            lr = learning_rate(cfg, book.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with loop.autocast(device):
                _, losses, _ = net(x)
            if book.optimize(losses, model, optimizer, cfg.grad_clip, lr=lr):
                break
        summary = book.end_epoch()
        if dist.is_main:
            if cfg.progress:
                print(f"epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f} "
                      f"recon {summary.get('recon', float('nan')):.4f} "
                      f"perplexity {summary.get('perplexity', float('nan')):.1f}", file=sys.stderr)
            save_checkpoint(run_dir, model=model, optimizer=optimizer, stats=stats, epoch=epoch + 1, step=book.step,
                            train_config=cfg, data_options=options)
        loop.barrier(dist)
        if book.finished:
            break
    book.finish()
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train vqvae") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, VQVAEConfig, PRESETS)
    first = 0
    if cfg.resume and (Path(cfg.out) / "checkpoint.pt").is_file():
        first = int(load_checkpoint(cfg.out, FORMAT)["epoch"])
    run_dir = train(cfg)
    if loop.Dist().is_main:
        state = load_checkpoint(run_dir, FORMAT)
        print(loop.epochs_done_line(run_dir, first, int(state["epoch"]), int(state["step"])))
    return 0


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`."""
    train_defaults = {**asdict(TrainConfig(data=data, out="")), **PRESETS[preset].train}
    cfg = TrainConfig(**{**train_defaults, "batch_size": batch_size})
    stats, _ = training_stats(cfg, dataset_name(data))
    model = VQVAE(VQVAEConfig(**{**PRESETS[preset].model, "motion_dim": len(stats.mean)})).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2))
    # a small build may have no motion as long as the window: shorter windows zero-padded to it cost the same
    longest = int(max(np.asarray(MotionWindows(data, "train", stats=None, window=4).source["length"])))
    dataset = windows(data, "train", stats, min(cfg.window_size, longest // 4 * 4))

    def padded(items: list[np.ndarray]) -> torch.Tensor:
        x = collate_windows(items)
        return torch.nn.functional.pad(x, (0, 0, 0, cfg.window_size - x.shape[1]))

    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0, collate_fn=padded)
    model.train()

    def step(x: torch.Tensor) -> None:
        with loop.autocast(device):
            _, losses, _ = model(x.to(device))
        loop.optimizer_step(losses["loss"], model, optimizer, None)

    return step, loader


if __name__ == "__main__":
    sys.exit(run_command(main))
