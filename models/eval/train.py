"""Train Guo et al.'s evaluator on a built dataset (a KIT-ML, HumanML3D or FineHumanML3D evaluator).

    python -m models train evaluator --data built/kitml --out runs/eval-kit [--glove glove/] [--preset tiny|paper]

Two stages, as ../shared/docs/MODELS.md 1.3 says [code: text-to-motion train_decomp_v3.py,
train_tex_mot_match.py, networks/trainers.py]:
1. the movement autoencoder (`--decomp-epochs`, 270): every 40-frame window of the training motions,
   L1(reconstruction, x) + 0.001 mean|z| + 0.001 L1(z[1:], z[:-1]), Adam 1e-4, batch 128, no clipping;
2. the matching stage (`--epochs`, 300): the movement encoder frozen (eval mode, outputs detached),
   text and motion encoders with an Adam each (1e-4), batch 32, each encoder's gradient norm clipped
   to 0.5, the margin-contrastive loss mean(d(t, m)^2) + mean(max(0, 10 - d(t, m_shift))^2) with the
   batch's motions cyclically shifted by randint(0, B-1) (a shift of 0 makes the "negatives"
   positives: the reference's quirk, kept); `finest.tar` is the epoch with the lowest validation loss.

Motions are normalised with the evaluator's own statistics: the build's release Mean/Std (or, with
`--stats train`, the training split's block-averaged ones) with the root and foot-contact std
divided by 5. Word vectors are GloVe's `our_vab` files from `--glove DIR`; without it the run makes
its own vocabulary from the training captions with random 300-d vectors, and says so in
config.json, evaluator.json and every evaluation table made with it.

RUN_DIR is laid out like the reference checkpoints, so `--evaluator RUN_DIR` works the same as an
official folder: `text_mot_match/model/{finest,latest}.tar`, `Decomp_SP001_SM001_H512/model/latest.tar`,
`meta/{mean,std}.npy`, `glove/our_vab_*`, `evaluator.json`; plus `checkpoint.pt` (resume state),
`config.json` and `log.jsonl`. `--max-steps N` caps each stage at N steps (a quick check).
The evaluator trains in float32 (no bf16 autocast: its GRUs are the metric).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets_build.core.flags import option
from datasets_build.formats.built import load_release_stats
from models.base import CheckpointFormat, atomic_write, config_from_dict, save_checkpoint, seed_everything, write_config
from models.eval.evaluator import (
    GLOVE_PREFIX, MATCHER_CHECKPOINT, RECORD, SPECIAL_WORDS, EvaluatorConfig, MovementConvDecoder, TextMotionMatcher,
    WordVectorizer, caption_tokens, evaluator_stats,
)
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import (
    DataError, DataOptions, MotionDataset, MotionWindows, Normalizer, compute_stats, dataset_name, make_loader,
)

__all__ = ["FORMAT", "MatchingModel", "MovementAutoencoder", "PRESETS", "TrainConfig", "build_vocabulary",
           "contrastive", "main", "train"]

FORMAT = CheckpointFormat("evaluator", 1)
DECOMP_CHECKPOINT = Path("Decomp_SP001_SM001_H512") / "model" / "latest.tar"
RANDOM_VECTOR_STD = 0.35  # [inferred] about GloVe-300's vector norms (~6) for random word vectors


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with the matching stage's schedule [code: TrainTexMotMatchOptions], the movement
    autoencoder's (decomp_*) [code: TrainDecompOptions], word vectors and statistics."""

    epochs: int = option(300, "matching-stage epochs", metavar="N", positive=True)
    batch_size: int = option(32, "matching-stage batch size", metavar="B", positive=True)
    lr: float = option(1e-4, "Adam learning rate of the text and motion encoders")
    grad_clip: float | None = option(0.5, "clip each encoder's gradient norm to this (0: no clipping)")
    negative_margin: float = option(10.0, "margin of the contrastive loss on shifted (negative) pairs")
    decomp_epochs: int = option(270, "movement-autoencoder epochs", metavar="N", positive=True)
    decomp_batch_size: int = option(128, "movement-autoencoder batch size", metavar="B", positive=True)
    decomp_lr: float = option(1e-4, "movement-autoencoder Adam learning rate")
    window_size: int = option(40, "movement-autoencoder window (frames)", metavar="FRAMES", positive=True)
    lambda_sparsity: float = option(0.001, "weight of mean |z| in the autoencoder loss")
    lambda_smooth: float = option(0.001, "weight of L1(z[1:], z[:-1]) in the autoencoder loss")
    feat_bias: float = option(5.0, "root and foot-contact std are divided by this")
    stats: Literal["release", "train"] = option("release", "statistics: the build's release Mean/Std, or the "
                                                           "training split's (block-averaged)")
    glove: str | None = option(None, "folder with GloVe's our_vab_data.npy / our_vab_words.pkl / our_vab_idx.pkl "
                                     "(default: a vocabulary of the training captions with random vectors)",
                               metavar="DIR")
    min_word_count: int = option(1, "without --glove: keep training words seen at least N times", metavar="N",
                                 positive=True)


PRESETS = {
    "tiny": Preset("the CPU test size (MODELS.md section 8)",
                   model={"dim_movement_enc_hidden": 16, "dim_movement_dec_hidden": 16, "dim_movement_latent": 16,
                          "dim_text_hidden": 16, "dim_motion_hidden": 32, "dim_coemb_hidden": 16},
                   train={"epochs": 20, "decomp_epochs": 1, "lr": 3e-3, "decomp_lr": 3e-3, "num_workers": 0}),
    "paper": Preset("Guo et al.'s settings (the defaults)"),
}


# ----------------------------------------------------------------------------- losses as modules
class MovementAutoencoder(nn.Module):
    """The autoencoder stage: windows [B, W, D] -> losses (movement encoder + decoder)."""

    def __init__(self, matcher: TextMotionMatcher, decoder: MovementConvDecoder, cfg: TrainConfig) -> None:
        super().__init__()
        self.encoder, self.decoder = matcher.movement_encoder, decoder
        self.lambda_sparsity, self.lambda_smooth = cfg.lambda_sparsity, cfg.lambda_smooth

    def forward(self, motions: torch.Tensor) -> dict[str, torch.Tensor]:
        latents = self.encoder(motions[..., :-4])  # [B, W/4, latent]
        recon = self.decoder(latents)  # [B, W, D]
        out = {"reconstruction": F.l1_loss(recon, motions), "sparsity": latents.abs().mean(),
               "smooth": F.l1_loss(latents[:, 1:], latents[:, :-1])}
        out["loss"] = (out["reconstruction"] + self.lambda_sparsity * out["sparsity"]
                       + self.lambda_smooth * out["smooth"])
        return out


def contrastive(a: torch.Tensor, b: torch.Tensor, negative: bool, margin: float) -> torch.Tensor:
    """Guo et al.'s ContrastiveLoss: mean d^2 for positives, mean max(0, margin - d)^2 for negatives
    (d: F.pairwise_distance, which adds 1e-6 to the difference)."""
    d = F.pairwise_distance(a, b, keepdim=True)
    return (torch.clamp(margin - d, min=0.0) ** 2).mean() if negative else (d ** 2).mean()


class MatchingModel(nn.Module):
    """The matching stage: a collated batch -> losses, embeddings in the reference's order."""

    def __init__(self, matcher: TextMotionMatcher, margin: float) -> None:
        super().__init__()
        self.matcher, self.margin = matcher, margin

    def forward(self, word_embs: torch.Tensor, pos_ohot: torch.Tensor, cap_lens: torch.Tensor, motions: torch.Tensor,
                m_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        text, motion = self.matcher.co_embed(word_embs, pos_ohot, cap_lens, motions, m_lens)  # [B, coemb] each
        b = text.shape[0]
        shift = int(np.random.randint(0, b - 1)) if b > 1 else 0  # randint(0, B-1): 0 .. B-2 [code]
        shifted = motion[(torch.arange(b, device=motion.device) + shift) % b]
        out = {"positive": contrastive(text, motion, False, self.margin),
               "negative": contrastive(text, shifted, True, self.margin)}
        out["loss"] = out["positive"] + out["negative"]
        out["text"], out["motion"] = text.detach(), motion.detach()
        return out


class MatchingCollate:
    """Items of a MotionDataset (normalised, padded) + their chosen captions' tokens -> the
    reference batch, sorted by caption length descending (its collate_fn)."""

    def __init__(self, dataset: MotionDataset, vectorizer: WordVectorizer, max_text_len: int) -> None:
        self.dataset, self.vectorizer, self.max_text_len = dataset, vectorizer, max_text_len

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = []
        for it in items:
            tokens = self.dataset.word_tokens(it["index"])[it["annotation"]] or caption_tokens(it["caption"])
            encoded.append(self.vectorizer.encode(tokens, self.max_text_len))
        order = sorted(range(len(items)), key=lambda i: encoded[i][2], reverse=True)  # stable, as list.sort
        return {"word_embs": torch.from_numpy(np.stack([encoded[i][0] for i in order])),
                "pos_ohot": torch.from_numpy(np.stack([encoded[i][1] for i in order])),
                "cap_lens": torch.tensor([encoded[i][2] for i in order], dtype=torch.long),
                "motions": torch.from_numpy(np.stack([items[i]["motion"] for i in order])),
                "m_lens": torch.tensor([items[i]["length"] for i in order], dtype=torch.long)}


# ----------------------------------------------------------------------------- run setup
def _meta_stats(cfg: TrainConfig, dataset: str) -> tuple[Normalizer, str]:
    if cfg.stats == "release":
        try:
            mean, std = load_release_stats(cfg.data)
            source = f"release Mean/Std of {cfg.data}, feat_bias {cfg.feat_bias}"
            return evaluator_stats(mean, std, cfg.feat_bias), source
        except FileNotFoundError:
            pass  # a build without release statistics: fall back to the training split's
    stats = compute_stats(cfg.data, cfg.split, block_average=dataset)
    return (evaluator_stats(stats.mean, stats.std, cfg.feat_bias),
            f"block-averaged statistics of the {cfg.split!r} split of {cfg.data}, feat_bias {cfg.feat_bias}")


def build_vocabulary(dataset: MotionDataset, min_count: int, dim: int, seed: int) -> tuple[WordVectorizer, dict]:
    """A vocabulary of the split's caption words (count >= min_count, plus sos/eos/unk) with random
    normal vectors (std RANDOM_VECTOR_STD), for runs without GloVe."""
    counts: Counter[str] = Counter()
    for i in range(len(dataset)):
        for tokens, caption in zip(dataset.word_tokens(i), dataset.captions(i)):
            counts.update(t.rpartition("/")[0] for t in (tokens or caption_tokens(caption)))
    words = list(SPECIAL_WORDS) + sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIAL_WORDS),
                                         key=lambda w: (-counts[w], w))
    vectors = np.random.default_rng(seed).normal(0.0, RANDOM_VECTOR_STD, (len(words), dim)).astype(np.float32)
    record = {"source": "random", "vocabulary": f"the training captions' words (count >= {min_count})",
              "size": len(words), "dim": dim, "std": RANDOM_VECTOR_STD, "seed": seed}
    return WordVectorizer(vectors, words, {w: i for i, w in enumerate(words)}, source="random"), record


def _save_reference(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def _opt_states(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    return {name: opt.state_dict() for name, opt in optimizers.items()}


def _validate_matching(model: MatchingModel, loader: Any, device: torch.device) -> dict[str, float]:
    """Mean matching losses over the validation batches, and R@1 / R@3 inside each batch."""
    means, hits1, hits3, count = loop.Means(), 0, 0, 0
    with torch.no_grad():
        for batch in loader:
            out = model(**{k: v.to(device) for k, v in batch.items()})
            means.add({k: out[k] for k in ("loss", "positive", "negative")})
            dist = torch.cdist(out["text"].double(), out["motion"].double())  # [B, B]
            rank = (dist < dist.diagonal()[:, None]).sum(1)
            hits1, hits3, count = hits1 + int((rank < 1).sum()), hits3 + int((rank < 3).sum()), count + len(rank)
    return {**means.means(), "R@1": hits1 / max(count, 1), "R@3": hits3 / max(count, 1)} if count else {}


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) an evaluator into cfg.out; returns the run folder."""
    run_dir = Path(cfg.out)
    dist, device = loop.init_distributed(cfg.device)
    seed_everything(cfg.seed)
    dataset = dataset_name(cfg.data)  # before the run folder is made: a wrong path leaves nothing behind
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    options = DataOptions.for_dataset(dataset)
    train_set = MotionDataset(cfg.data, cfg.split, stats=None, options=options)
    if len(train_set) < 2:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has {len(train_set)} samples after the length filters")
    if state:  # everything that defines the evaluator comes from the run
        model_cfg = config_from_dict(EvaluatorConfig, state["model_config"], run_dir)
        stats = Normalizer.from_state_dict(state["stats"])
        vectorizer = WordVectorizer.load(run_dir / "glove")
        record = json.loads((run_dir / RECORD).read_text())
    else:
        stats, stats_source = _meta_stats(cfg, dataset)
        if cfg.glove:
            vectorizer = WordVectorizer.load(cfg.glove)
            words = {"source": f"GloVe {GLOVE_PREFIX} from {cfg.glove}", "size": len(vectorizer), "dim": vectorizer.dim}
        else:
            vectorizer, words = build_vocabulary(train_set, cfg.min_word_count, EvaluatorConfig.dim_word, cfg.seed)
        model_cfg = EvaluatorConfig(**{"dim_pose": len(stats.mean), "dim_word": vectorizer.dim, **cfg.model})
        record = {"trained_by": "python -m models train evaluator", "data": cfg.data, "dataset": dataset,
                  "word_vectors": words, "stats": stats_source}
        if dist.is_main:
            vectorizer.save(run_dir / "glove")
            (run_dir / "meta").mkdir(exist_ok=True)
            np.save(run_dir / "meta" / "mean.npy", stats.mean)
            np.save(run_dir / "meta" / "std.npy", stats.std)
            atomic_write(run_dir / RECORD, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))
    configs = {"word_vectors": record["word_vectors"], "data_options": options}
    if dist.is_main:
        write_config(run_dir, FORMAT, model_config=model_cfg, train_config=cfg, configs=configs)

    matcher = TextMotionMatcher(model_cfg).to(device)
    decoder = MovementConvDecoder(model_cfg.dim_movement_latent, model_cfg.dim_movement_dec_hidden,
                                  model_cfg.dim_pose).to(device)
    holder = nn.ModuleDict({"matcher": matcher, "decoder": decoder})  # what checkpoint.pt's "model" holds
    optimizers = {"movement_enc": torch.optim.Adam(matcher.movement_encoder.parameters(), lr=cfg.decomp_lr),
                  "movement_dec": torch.optim.Adam(decoder.parameters(), lr=cfg.decomp_lr),
                  "text_encoder": torch.optim.Adam(matcher.text_encoder.parameters(), lr=cfg.lr,
                                                   weight_decay=cfg.weight_decay),
                  "motion_encoder": torch.optim.Adam(matcher.motion_encoder.parameters(), lr=cfg.lr,
                                                     weight_decay=cfg.weight_decay)}
    epoch_done, step = loop.restore(state, holder)
    progress_state = {"movement_epochs": 0, "matching_epochs": 0, "best_val": None, "best_epoch": None}
    if state:
        for name, opt_state in state["optimizers"].items():
            optimizers[name].load_state_dict(opt_state)
        progress_state.update(state["progress"])
    log = loop.JsonlLog(run_dir / "log.jsonl")
    meter = loop.Throughput(device)

    def checkpoint(epochs: int) -> None:
        if dist.is_main:
            save_checkpoint(run_dir, FORMAT, model=holder, model_config=model_cfg, train_config=cfg, epoch=epochs,
                            step=step, configs=configs,
                            extra={"stats": stats.state_dict(), "optimizers": _opt_states(optimizers),
                                   "progress": dict(progress_state)})

    # -- stage 1: the movement autoencoder
    windows = MotionWindows(cfg.data, cfg.split, stats=stats, window=cfg.window_size)
    if progress_state["movement_epochs"] < cfg.decomp_epochs and len(windows) < 1:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has no motion of {cfg.window_size} frames or more")
    autoencoder = loop.distribute(MovementAutoencoder(matcher, decoder, cfg), dist, device)
    sampler = loop.shard(windows, dist, cfg.seed)
    loader = make_loader(windows, max(1, min(cfg.decomp_batch_size, len(windows))), shuffle=True, sampler=sampler,
                         num_workers=cfg.num_workers, collate_fn=None, pin_memory=device.type == "cuda")
    stage_steps = 0
    for epoch in range(progress_state["movement_epochs"], cfg.decomp_epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        matcher.movement_encoder.train(), decoder.train()
        means, started = loop.Means(), time.time()
        meter.resume()
        for x in loop.progress(loader, f"autoencoder {epoch + 1}/{cfg.decomp_epochs}", cfg.progress and dist.is_main):
            losses = autoencoder(x.to(device, non_blocking=True))
            loop.check_finite(losses["loss"], epoch + 1, step)
            loop.optimizer_step(losses["loss"], [matcher.movement_encoder, decoder],
                                [optimizers["movement_enc"], optimizers["movement_dec"]], None)  # no clipping [code]
            step, stage_steps = step + 1, stage_steps + 1
            meter.step()
            means.add(losses)
            if loop.reached(stage_steps, cfg.max_steps):
                break
        meter.pause()
        progress_state["movement_epochs"] = epoch + 1
        epoch_done += 1
        summary = {"kind": "epoch", "stage": "autoencoder", "epoch": epoch + 1, "step": step,
                   "seconds": round(time.time() - started, 3), **loop.mean_across(means.means(), dist, device)}
        if dist.is_main:
            log.write(summary)
            _save_reference(run_dir / DECOMP_CHECKPOINT, {
                "movement_enc": matcher.movement_encoder.state_dict(), "movement_dec": decoder.state_dict(),
                "opt_movement_enc": optimizers["movement_enc"].state_dict(),
                "opt_movement_dec": optimizers["movement_dec"].state_dict(), "ep": epoch + 1, "total_it": step})
            if cfg.progress:
                print(f"autoencoder epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f}", file=sys.stderr)
        checkpoint(epoch_done)
        loop.barrier(dist)  # the other processes wait for the validation and the checkpoint
        if loop.reached(stage_steps, cfg.max_steps):
            break

    # -- stage 2: matching, the movement encoder frozen
    matcher.movement_encoder.eval().requires_grad_(False)
    train_set.stats = stats
    val_set = None
    if cfg.val_split and (Path(cfg.data) / cfg.val_split).is_dir():
        val_set = MotionDataset(cfg.data, cfg.val_split, stats=stats, options=options)
        val_set = val_set if len(val_set) >= 2 else None
    collate = MatchingCollate(train_set, vectorizer, model_cfg.max_text_len)
    matching = MatchingModel(matcher, cfg.negative_margin)
    wrapped = loop.distribute(matching, dist, device)
    sampler = loop.shard(train_set, dist, cfg.seed)
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, sampler=sampler,
                         num_workers=cfg.num_workers, collate_fn=collate, pin_memory=device.type == "cuda")
    stage_steps = 0
    for epoch in range(progress_state["matching_epochs"], cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        matcher.text_encoder.train(), matcher.motion_encoder.train()
        means, started = loop.Means(), time.time()
        meter.resume()
        for batch in loop.progress(loader, f"matching {epoch + 1}/{cfg.epochs}", cfg.progress and dist.is_main):
            losses = wrapped(**{k: v.to(device, non_blocking=True) for k, v in batch.items()})
            loop.check_finite(losses["loss"], epoch_done + 1, step)
            loop.optimizer_step(losses["loss"], [matcher.text_encoder, matcher.motion_encoder],
                                [optimizers["text_encoder"], optimizers["motion_encoder"]], cfg.grad_clip)
            step, stage_steps = step + 1, stage_steps + 1
            meter.step()
            means.add({k: losses[k] for k in ("loss", "positive", "negative")})
            if step % cfg.log_every == 0 and dist.is_main:
                log.write({"kind": "step", "stage": "matching", "epoch": epoch + 1, "step": step,
                           "loss": float(losses["loss"].detach())})
            if loop.reached(stage_steps, cfg.max_steps):
                break
        meter.pause()
        progress_state["matching_epochs"] = epoch + 1
        epoch_done += 1
        summary = {"kind": "epoch", "stage": "matching", "epoch": epoch + 1, "step": step,
                   "seconds": round(time.time() - started, 3), **loop.mean_across(means.means(), dist, device)}
        if dist.is_main:
            source = val_set if val_set is not None else train_set
            val_collate = MatchingCollate(source, vectorizer, model_cfg.max_text_len)
            val_loader = make_loader(source, min(cfg.batch_size, len(source)), shuffle=True, collate_fn=val_collate)
            val = _validate_matching(matching, val_loader, device)
            summary.update({f"val/{k}": v for k, v in val.items()})
            summary["val/split"] = cfg.val_split if val_set is not None else cfg.split
            log.write(summary)
            reference = {**matcher.reference_state(),
                         "opt_text_encoder": optimizers["text_encoder"].state_dict(),
                         "opt_motion_encoder": optimizers["motion_encoder"].state_dict(),
                         "epoch": epoch + 1, "iter": step}
            _save_reference(run_dir / MATCHER_CHECKPOINT.with_name("latest.tar"), reference)
            best = progress_state["best_val"]
            if val and (best is None or val["loss"] < best):
                progress_state.update(best_val=val["loss"], best_epoch=epoch + 1)
                _save_reference(run_dir / MATCHER_CHECKPOINT, reference)  # finest.tar: lowest validation loss
                record.update(best_epoch=epoch + 1, best_val_loss=val["loss"], best_val_split=summary["val/split"])
                atomic_write(run_dir / RECORD, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))
            if cfg.progress:
                print(f"matching epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f} "
                      f"val loss {val.get('loss', float('nan')):.4f} val R@1 {val.get('R@1', float('nan')):.3f}",
                      file=sys.stderr)
        checkpoint(epoch_done)
        loop.barrier(dist)  # the other processes wait for the validation and the checkpoint
        if loop.reached(stage_steps, cfg.max_steps):
            break
    if dist.is_main:
        log.write(meter.summary())
    loop.finish(dist)
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train evaluator") -> int:
    """The training command line (flags derived from TrainConfig and EvaluatorConfig)."""
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, EvaluatorConfig, PRESETS)
    run_dir = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: one line, not one per process
        print(f"trained an evaluator into {run_dir} (use it with --evaluator {run_dir})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run_command(main))

