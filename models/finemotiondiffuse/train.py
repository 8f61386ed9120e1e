"""Train FineMotionDiffuse on a `finehumanml3d` build.

    python -m models train finemotiondiffuse --data built/finehumanml3d --out runs/fmd [--preset tiny|paper]
        [--text-encoder clip|clip-random] [--text-encoder-checkpoint PATH] [--epochs N] [--times N]
        [--batch-size B] [--max-steps N] [--device cuda|cpu] [--resume] [--set fusion_layers=2 ...]

MotionDiffuse's training (`models.motiondiffuse.train`: the same run folder, checkpoints, exact resume,
log) with the fine branch: each sample's picked caption brings its checked fine steps from the build's
`fine` column, encoded once by the same frozen text encoder; captions whose steps are not `checked`
train coarse-only (counted at start).
"""

from __future__ import annotations

import os
import sys

import torch

from models.finemotiondiffuse.api import FORMAT
from models.finemotiondiffuse.data import FineText
from models.finemotiondiffuse.model import FineMotionDiffuse, FineMotionDiffuseConfig
from models.motiondiffuse import train as md
from models.training import loop
from models.training.config import Preset, parse_train_args, run_command
from models.training.data import MotionDataset, compute_stats, dataset_name, make_loader

TrainConfig = md.TrainConfig

PRESETS = {
    "tiny": Preset("the CPU test size (MODELS.md §8: MotionDiffuse tiny, 4 steps, 1 step and 1 fusion layer)",
                   model={**md.PRESETS["tiny"].model, "max_steps": 4, "step_layers": 1, "step_heads": 2,
                          "step_ff_dim": 32, "fusion_layers": 1},
                   train=dict(md.PRESETS["tiny"].train)),
    "paper": Preset("MotionDiffuse's settings with MODELS.md §3.3's fine branch (2 step layers, 1 fusion layer)"),
}


def train(cfg: TrainConfig, text_encoder=None):
    """Train (or resume) into cfg.out; `text_encoder` injects a frozen encoder instead of loading it by name."""
    return md.train(cfg, text_encoder, model_cls=FineMotionDiffuse, config_cls=FineMotionDiffuseConfig, fmt=FORMAT,
                    condition=FineText)


def main(argv: list[str] | None = None, prog: str = "python -m models train finemotiondiffuse") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, FineMotionDiffuseConfig, PRESETS)
    run_dir = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {cfg.epochs} epochs into {run_dir}")
    return 0


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`: random token features
    replace the frozen encoder for the caption, and every sample gets `max_steps` random pooled steps."""
    stats = compute_stats(data, "train")
    cfg = FineMotionDiffuseConfig(**{**PRESETS[preset].model, "motion_dim": len(stats.mean)})
    model = FineMotionDiffuse(cfg).to(device)
    diffusion = cfg.diffusion()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    dataset = MotionDataset(data, "train", stats=stats, options=md.data_options(dataset_name(data)))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0)

    def step(batch: dict) -> None:
        length = int(batch["length"].max())
        x0, mask = batch["motion"][:, :length].to(device), batch["mask"][:, :length].to(device)
        tokens = loop.random_token_features(batch["caption"], cfg.token_dim, device)
        steps = torch.randn(len(batch["caption"]), cfg.max_steps, cfg.pooled_dim, device=device)
        step_mask = torch.ones(steps.shape[:2], dtype=torch.bool, device=device)
        with loop.autocast(device):
            text = model.encode_text(*tokens, steps=steps, step_mask=step_mask)
            losses = md.masked_loss(diffusion, model, x0, mask, text)
        loop.optimizer_step(losses["loss"], model, optimizer, 0.5)

    return step, loader


__all__ = ["PRESETS", "TrainConfig", "benchmark_step", "main", "train"]

if __name__ == "__main__":
    sys.exit(run_command(main))
