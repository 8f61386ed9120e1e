"""MotionDiffuse checkpoints and the generator other code uses.

    generator = load("runs/md")                        # no flags: config, stats, text encoder from the run
    motions = generator.generate(["a person walks"], [120], seed=0)   # [120, D] raw features each

RUN_DIR/checkpoint.pt has `models.base`'s layout (format "models.motiondiffuse/1") plus `stats`
(the fb25/fb5 Normalizer the model was trained in), `text_encoder` (name, identity, checkpoint,
widths) and `data_options`. Sampling is `models.diffusion`'s loop: predict, then step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from datasets_build.motion.normalizer import Normalizer
from datasets_build.text.encoders import TextEncoder, load_text_encoder
from models import base
from models.base import CheckpointFormat, check_text_encoder, config_from_dict, pick_device
from models.diffusion.schedule import sample_loop
from models.eval.protocol import GenerationError, generation_request
from models.motiondiffuse.model import MotionDiffuse, MotionDiffuseConfig

FORMAT = CheckpointFormat("motiondiffuse", 1)


def feat_bias_stats(stats: Normalizer, feat_bias: float) -> Normalizer:
    """MotionDiffuse's normalisation: std of the root (first 4) and foot-contact (last 4) features / feat_bias."""
    std = stats.std.copy()
    std[:4] /= feat_bias
    std[-4:] /= feat_bias
    return Normalizer(stats.mean.copy(), std)


def save_checkpoint(run_dir: str | os.PathLike, fmt: CheckpointFormat, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, stats: Normalizer, text_encoder: dict[str, Any],
                    epoch: int, step: int, train_config: Any, data_options: Any,
                    extra: dict[str, Any] | None = None) -> Path:
    return base.save_checkpoint(run_dir, fmt, model=model, model_config=model.cfg, train_config=train_config,
                                optimizer=optimizer, epoch=epoch, step=step,
                                configs={"text_encoder": text_encoder, "data_options": data_options},
                                extra={"stats": stats.state_dict(), **(extra or {})})


def text_batch(encoder: TextEncoder, captions: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask = encoder.encode_tokens(list(captions))
    return (torch.as_tensor(np.asarray(tokens, np.float32), device=device),
            torch.as_tensor(np.asarray(mask, bool), device=device))


class DiffusionGenerator:
    """generate(captions, lengths, seed) -> raw motions [length_i, D]: DDPM (or DDIM) over the model's
    chain, respaced by `respacing` ("" = all steps, the paper's 1000-step ancestral sampling)."""

    def __init__(self, model: MotionDiffuse, stats: Normalizer, text_encoder: TextEncoder, device: torch.device,
                 encode: Callable[[Sequence[str]], dict[str, torch.Tensor]] | None = None, respacing: str = "",
                 method: str = "ddpm", eta: float = 0.0, batch_size: int = 32) -> None:
        self.model, self.stats, self.text_encoder, self.device = model.to(device).eval(), stats, text_encoder, device
        self.encode = encode or (lambda captions: model.encode_text(*text_batch(text_encoder, captions, device)))
        self.diffusion = model.cfg.diffusion(respacing)
        self.method, self.eta, self.batch_size = method, eta, batch_size

    @torch.no_grad()
    def generate(self, captions: Sequence[str], lengths: Sequence[int], seed: int) -> list[np.ndarray]:
        captions, lengths = generation_request(captions, lengths, self.model.cfg.max_length)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        out: list[np.ndarray] = []
        for lo in range(0, len(captions), self.batch_size):
            caps, lens = captions[lo:lo + self.batch_size], lengths[lo:lo + self.batch_size]
            T = max(lens)
            mask = torch.arange(T, device=self.device)[None] < torch.tensor(lens, device=self.device)[:, None]
            text = self.encode(caps)
            noise = torch.randn(len(caps), T, self.model.cfg.motion_dim, generator=generator).to(self.device)
            x = sample_loop(self.diffusion, lambda x_t, t: self.model(x_t, t, mask, text), noise.shape,
                            method=self.method, eta=self.eta, generator=generator, noise=noise)
            x = x.float().cpu().numpy()
            out.extend(self.stats.denormalize(x[i, :n]).astype(np.float32) for i, n in enumerate(lens))
        return out


def load_state(run_dir: str | os.PathLike, fmt: CheckpointFormat = FORMAT) -> dict[str, Any]:
    return base.load_checkpoint(run_dir, fmt, "cpu")


def load_parts(run_dir: str | os.PathLike, device: torch.device, text_encoder: TextEncoder | None = None,
               fmt: CheckpointFormat = FORMAT, model_cls: type = MotionDiffuse,
               config_cls: type = MotionDiffuseConfig) -> tuple[Any, Normalizer, TextEncoder]:
    """(the trained network, its Normalizer, its frozen text encoder) of RUN_DIR; the encoder is loaded by
    name unless given, and must be the trained one. Models that extend MotionDiffuse pass their classes."""
    state = load_state(run_dir, fmt)
    model = model_cls(config_from_dict(config_cls, state["model_config"], base.checkpoint_path(run_dir)))
    model.load_state_dict(state["model"])
    record = state["text_encoder"]
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    check_text_encoder(text_encoder, record)
    return model, Normalizer.from_state_dict(state["stats"]), text_encoder


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None,
         text_encoder: TextEncoder | None = None, respacing: str = "", method: str = "ddpm") -> DiffusionGenerator:
    """The generator of RUN_DIR (its text encoder loaded by name unless given; it must be the trained one)."""
    device = pick_device(device)
    model, stats, text_encoder = load_parts(run_dir, device, text_encoder)
    return DiffusionGenerator(model, stats, text_encoder, device, respacing=respacing, method=method)


def fill_from_build(cache: Any, data: str | os.PathLike, split: str, column: str = "text_token_features") -> int:
    """Put a build's precomputed token features (`--token-features`: CLIP ln_final, 77 x 512 float16,
    with `text_token_lengths`) into a TextFeatureCache, trimmed to each caption's real tokens, so
    training runs no text encoder forward. Returns the number of captions added."""
    import datasets
    import pyarrow as pa

    from models.training.data import DataError

    try:
        table = datasets.load_from_disk(str(data))[split].data.table
    except (FileNotFoundError, KeyError) as error:
        raise DataError(f"{data} has no split {split!r} ({error})") from None
    lengths_column = column.removesuffix("_token_features") + "_token_lengths"
    if column not in table.column_names or lengths_column not in table.column_names:
        raise DataError(f"{data} has no {column!r} column: build it with --token-features (and the same text "
                        f"encoder as the model's)")
    width, added = int(cache.encoder.token_dim), 0
    for batch in table.to_batches():
        tokens = batch.column(column)
        per_ann = tokens.flatten()                                        # one entry per annotation
        per_token = per_ann.flatten()                                     # one entry per token position
        values = np.asarray(per_token.flatten().to_numpy(zero_copy_only=False), np.float16)
        if values.size % width:
            raise DataError(f"{column} of {data} is not {width} wide (the model's text encoder)")
        values = values.reshape(-1, width)
        starts = per_ann.offsets.to_numpy() - per_ann.offsets.to_numpy()[0]
        lengths = pa.concat_arrays([batch.column(lengths_column).flatten()]).to_numpy(zero_copy_only=False)
        captions = batch.column("annotations").flatten().field("caption").to_pylist()
        for k, caption in enumerate(captions):
            if caption not in cache.tokens:
                cache.tokens[caption] = values[starts[k]:starts[k] + int(lengths[k])]
                cache.pooled[caption] = np.zeros(int(getattr(cache.encoder, "dim", width)), np.float32)
                added += 1
    return added
