"""The paper's Condition Mixture search (§3.4), saved into the run as RUN/mixture.json.

    python -m models tune-mixture --run RUN --data BUILT --evaluator DIR [--split train] [--samples 64]
        [--grid-min -5 --grid-max 5 --grid-step 0.5] [--fine-steps 10] [--learn-steps 1000] [--lr 0.01]

Phase 1 (the first 50 - fine_steps chain steps): grid search of w1, w2 in [grid_min, grid_max] with
w4 = 0 and w3 = 1 - w1 - w2, minimising FID on the training split (the last steps meanwhile use the
code's learned coefficients). Phase 2 (the last fine_steps steps): w1, w2, w3 learned with Adam,
w4 = 1 - w1 - w2 - w3, minimising a differentiable FID (Fréchet distance through eigendecompositions)
of the evaluator's motion embeddings, back-propagated through the network's last steps (the network
frozen). The paper's settings are the defaults; `--grid-step`, `--samples` and `--learn-steps` make it
small. Training-split queries retrieve from the build's neighbour lists, so never their own motion.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from datasets_build.core.flags import add_options, from_args, option
from models.diffusion.schedule import GaussianDiffusion
from models.eval.metrics import fid
from models.remodiffuse.mixture import CodeMixture, PaperMixture, complete, mixed_denoiser


@dataclass(frozen=True)
class TuneOptions:
    run: str = option(help="a ReMoDiffuse run folder (receives mixture.json)", metavar="RUN")
    data: str = option(help="build folder (the run's remodiffuse build)", metavar="BUILT_DIR")
    evaluator: str = option(help="evaluator folder or `python -m models train evaluator` run", metavar="DIR_OR_RUN")
    split: str = option("train", "split whose FID is minimised (the paper: the training split)")
    samples: int = option(64, "generated motions per FID", metavar="N", positive=True)
    grid_min: float = option(-5.0, "smallest w1, w2 of the grid")
    grid_max: float = option(5.0, "largest w1, w2 of the grid")
    grid_step: float = option(0.5, "grid spacing (the paper's 0.5: 441 points)")
    fine_steps: int = option(10, "last chain steps whose coefficients are learned", metavar="N", positive=True)
    learn_steps: int = option(1000, "Adam steps of the learned phase", metavar="N", positive=True)
    lr: float = option(0.01, "[inferred] Adam learning rate of the learned phase (not published)")
    seed: int = option(0, "seed of the samples, captions and noise")
    glove: str | None = option(None, "GloVe our_vab folder when it is not inside the evaluator folder", metavar="DIR")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")


def chain_steps(diffusion: GaussianDiffusion, denoise, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """DDIM (eta 0) over chain indices first, first - 1, ..., last."""
    for i in range(first, last - 1, -1):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x = diffusion.ddim_step(denoise(x, diffusion.model_timesteps(t)), x, t, torch.zeros_like(x))
    return x


def embed(evaluator, motions: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Differentiable evaluator motion embeddings of raw motions (B, T, D) at `lengths`."""
    unit, d = evaluator.cfg.unit_length, evaluator.cfg.dim_pose - 4
    mean = torch.as_tensor(evaluator.stats.mean[:d], device=motions.device)
    std = torch.as_tensor(evaluator.stats.std[:d], device=motions.device)
    order = np.argsort(-np.asarray(lengths), kind="stable")
    frames = min(evaluator.cfg.max_motion_length, max(lengths) // unit * unit + unit)
    rows = []
    for i in order:
        x = (motions[i, :lengths[i], :d] - mean) / std
        rows.append(torch.nn.functional.pad(x, (0, 0, 1, frames + 1 - lengths[i])))
    emb = evaluator.matcher.encode_movement_input(torch.stack(rows), torch.as_tensor(np.asarray(lengths)[order]))
    out = torch.empty_like(emb)
    out[torch.as_tensor(order, device=emb.device)] = emb
    return out


def frechet(real_mu: torch.Tensor, real_sqrt: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r^1/2 S_g S_r^1/2)^1/2), differentiable in `generated`."""
    mu = generated.mean(0)
    centred = generated - mu
    cov = centred.T @ centred / (len(generated) - 1)
    inner = torch.linalg.eigvalsh(real_sqrt @ cov @ real_sqrt).clamp(min=1e-10).sqrt().sum()
    return ((real_mu - mu) ** 2).sum() + torch.trace(real_sqrt @ real_sqrt) + torch.trace(cov) - 2 * inner


def main(argv: list[str] | None = None, prog: str = "python -m models tune-mixture") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_options(parser, TuneOptions)
    a = from_args(TuneOptions, parser.parse_args(argv))
    from models.base import pick_device
    from models.eval.evaluator import load_evaluator
    from models.remodiffuse.api import load
    from models.remodiffuse.train import sample_keys
    from models.training.data import DataOptions, MotionDataset

    device = pick_device(a.device)
    started = time.perf_counter()
    gen = load(a.run, device, data=a.data, mixture="code")
    model, db, cfg, stats = gen.model, gen.database, gen.model.cfg, gen.stats
    for p in model.parameters():
        p.requires_grad_(False)
    evaluator = load_evaluator(a.evaluator, a.glove, device)
    split = MotionDataset(a.data, a.split, stats=None, options=DataOptions.for_dataset(cfg.dataset, random_crop=False))
    unit = evaluator.cfg.unit_length
    real = [np.asarray(split.raw_motion(i)[:cfg.max_length // unit * unit], np.float32) for i in range(len(split))]
    real = [m[:len(m) // unit * unit] for m in real]
    real_emb = evaluator.embed_motions(real)
    rng = np.random.default_rng(a.seed)
    picked = rng.choice(len(split), min(a.samples, len(split)), replace=False)
    pick_caption = torch.as_tensor([int(rng.integers(split.ann_ptr[i + 1] - split.ann_ptr[i])) for i in picked])
    captions = [split.captions(int(i))[int(c)] for i, c in zip(picked, pick_caption)]
    lengths = [len(real[i]) for i in picked]
    keys = sample_keys(split, torch.as_tensor(picked), pick_caption)
    entries = db.training_neighbours(keys, lengths, cfg.num_retrieval, cfg.kinematic_coef, random.Random(a.seed))
    with torch.no_grad():
        tokens, mask_t, _ = gen.cache.batch(captions, device)
        text = model.encode_text(tokens, mask_t)
        retrieval = model.encode_retrieval(*db.fetch(entries, stats, device))
    T = max(lengths)
    mask = torch.arange(T, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    noise = torch.randn(len(captions), T, cfg.motion_dim, generator=torch.Generator().manual_seed(a.seed)).to(device)
    diffusion, code = gen.diffusion, CodeMixture.for_dataset(cfg.dataset)
    steps, fine = diffusion.num_timesteps, min(a.fine_steps, diffusion.num_timesteps - 1)
    mean, std = (torch.as_tensor(v, device=device) for v in (stats.mean, stats.std))

    def raw(x: torch.Tensor) -> torch.Tensor:
        return x * std + mean

    def score(coarse, fine_w) -> float:
        """Training-split FID with these coefficients (None: the code's schedule)."""
        override = None if coarse is None else (lambda i: fine_w if i < fine else coarse)
        denoise = mixed_denoiser(model, diffusion, mask, text, retrieval, code, np.random.default_rng(a.seed),
                                 override)
        with torch.no_grad():
            x = raw(chain_steps(diffusion, denoise, noise, steps - 1, 0)).cpu().numpy()
        return fid(real_emb, evaluator.embed_motions([x[i, :n] for i, n in enumerate(lengths)]))

    baseline = score(None, None)
    print(f"the code's schedule: FID {baseline:.4f} on {len(captions)} {a.split} samples", file=sys.stderr)
    grid = np.round(np.arange(a.grid_min, a.grid_max + 1e-9, a.grid_step), 6)
    code_fine = complete(code.fine)
    results = []
    for w1 in grid:
        for w2 in grid:
            results.append((score((w1, w2, 1 - w1 - w2, 0.0), code_fine), float(w1), float(w2)))
    best_fid, w1, w2 = min(results)
    coarse = (w1, w2, 1 - w1 - w2, 0.0)
    print(f"phase 1: {len(results)} grid points, best w1={w1:g} w2={w2:g} (w3={1 - w1 - w2:g}, w4=0): "
          f"FID {best_fid:.4f}", file=sys.stderr)

    denoise = mixed_denoiser(model, diffusion, mask, text, retrieval, code, np.random.default_rng(a.seed),
                             lambda i: coarse)
    with torch.no_grad():
        x_mid = chain_steps(diffusion, denoise, noise, steps - 1, fine)
    real_t = torch.as_tensor(real_emb, dtype=torch.float64, device=device)
    real_mu = real_t.mean(0)
    centred = real_t - real_mu
    values, vectors = torch.linalg.eigh(centred.T @ centred / max(len(real_t) - 1, 1))
    real_sqrt = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    w = torch.nn.Parameter(torch.tensor(code.fine, dtype=torch.float32, device=device))
    optimizer = torch.optim.Adam([w], lr=a.lr)
    history = []
    for step in range(a.learn_steps):
        weights = (w[0], w[1], w[2], 1 - w.sum())
        learned = mixed_denoiser(model, diffusion, mask, text, retrieval, code, np.random.default_rng(a.seed),
                                 lambda i: weights)
        x = raw(chain_steps(diffusion, learned, x_mid, fine - 1, 0))
        loss = frechet(real_mu, real_sqrt, embed(evaluator, x, lengths).double())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    fine_w = complete(w.detach().cpu().tolist())
    final = score(coarse, fine_w)
    print(f"phase 2: {a.learn_steps} Adam steps, w = {', '.join(f'{v:.4f}' for v in fine_w)}: differentiable FID "
          f"{history[0]:.4f} -> {history[-1]:.4f}; FID {final:.4f}", file=sys.stderr)
    path = PaperMixture(coarse, fine_w, fine, final).save(a.run, {
        "split": a.split, "samples": len(captions), "grid": [a.grid_min, a.grid_max, a.grid_step],
        "grid_best_fid": best_fid, "code_mixture_fid": baseline,
        "learn_steps": a.learn_steps, "lr": a.lr, "learned_fid": [history[0], history[-1]],
        "seconds": round(time.perf_counter() - started, 1)})
    print(f"wrote {path}: coarse {coarse}, fine {tuple(round(v, 5) for v in fine_w)} (each sums to 1)")
    return 0


if __name__ == "__main__":
    from models.training.config import run_command

    sys.exit(run_command(main))
