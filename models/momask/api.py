"""MoMask checkpoints and the generator other code uses.

A run folder holds both stages: the mask transformer at RUN/checkpoint.pt (format "models.momask/1",
`stage: "mask"`) and the residual transformer at RUN/residual/checkpoint.pt (same format, `stage:
"residual"`), so `python -m models generate|evaluate --run RUN` finds the model through RUN/config.json.
Each checkpoint also records `text_encoder` (name, identity, checkpoint, width), `tokenizer` (the VQ run
folder and its fingerprint, checked at load) and `data_options`.

    generator = load("runs/momask")                    # no flags; a run without residual/ decodes the base layer
    motions = generator.generate(["a person walks"], [120], seed=0)     # [120, D] raw features each
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from datasets_build.core.errors import UserError
from datasets_build.text.encoders import TextEncoder, load_text_encoder
from models import base
from models.base import CheckpointFormat, check_text_encoder, config_from_dict, pick_device
from models.eval.protocol import generation_request
from models.momask.model import MaskTransformer, MoMaskConfig, ResidualTransformer
from models.momask.sampling import SamplingSettings, base_only, generate_base, generate_residual
from models.vq.api import load as load_tokenizer
from models.vq.model import VQVAE

FORMAT = CheckpointFormat("momask", 1)
STAGES = ("mask", "residual")


class MoMaskError(UserError, ValueError):
    """A run, tokenizer or generation request that does not fit (missing stage, other tokenizer, lengths)."""


def stage_dir(run_dir: str | os.PathLike, stage: str) -> Path:
    """Where a stage's checkpoint lives: RUN (mask) or RUN/residual."""
    return Path(run_dir) if stage == "mask" else Path(run_dir) / "residual"


def tokenizer_record(vq: VQVAE) -> dict[str, Any]:
    return {"run_dir": str(Path(vq.run_dir).resolve()), "fingerprint": vq.fingerprint,
            "num_quantizers": int(vq.cfg.num_quantizers), "nb_code": int(vq.cfg.nb_code)}


def open_tokenizer(record: dict[str, Any], device: torch.device | str | None, override: str | None = None) -> VQVAE:
    """The frozen VQ-VAE a stage was trained on (or `override`), its fingerprint checked."""
    path = override or record["run_dir"]
    if not (Path(path) / "checkpoint.pt").is_file():
        raise MoMaskError(f"the tokenizer run {path} is missing: pass tokenizer=RUN_DIR (--set tokenizer=...) with "
                          "the VQ-VAE this model was trained on")
    vq = load_tokenizer(path, device)
    if vq.fingerprint != record["fingerprint"]:
        raise MoMaskError(f"the tokenizer at {path} (fingerprint {vq.fingerprint}) is not the one this model was "
                          f"trained on ({record['fingerprint']}): retrain the stage or pass the right VQ run")
    return vq


def save_checkpoint(run_dir: str | os.PathLike, *, stage: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, text_encoder: dict[str, Any], tokenizer: dict[str, Any],
                    epoch: int, step: int, train_config: Any, data_options: Any) -> Path:
    return base.save_checkpoint(stage_dir(run_dir, stage), FORMAT, model=model, model_config=model.cfg,
                                train_config=train_config, optimizer=optimizer, epoch=epoch, step=step,
                                configs={"stage": stage, "text_encoder": text_encoder, "tokenizer": tokenizer,
                                         "data_options": data_options})


def load_stage(run_dir: str | os.PathLike, stage: str) -> tuple[torch.nn.Module, dict[str, Any]] | None:
    """(the stage's network with its weights, its checkpoint) or None when the stage was not trained."""
    folder = stage_dir(run_dir, stage)
    if not (folder / base.CHECKPOINT).is_file():
        return None
    state = base.load_checkpoint(folder, FORMAT)
    if state.get("stage") != stage:
        raise MoMaskError(f"{folder} holds the {state.get('stage')!r} stage, not {stage!r}")
    cfg = config_from_dict(MoMaskConfig, state["model_config"], folder)
    model = (MaskTransformer if stage == "mask" else ResidualTransformer)(cfg)
    model.load_state_dict(state["model"])
    return model, state


class PooledText:
    """caption -> the frozen encoder's pooled feature (not normalised: CLIP's encode_text), cached."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder, self.cache = encoder, {}

    def add(self, captions: Sequence[str]) -> None:
        todo = sorted({c for c in captions if c not in self.cache})
        if todo:
            for caption, feature in zip(todo, np.asarray(self.encoder.encode(todo), np.float32)):
                self.cache[caption] = feature

    def __call__(self, captions: Sequence[str], device: torch.device) -> torch.Tensor:
        """(B, E) float32 on `device`."""
        self.add(captions)
        return torch.from_numpy(np.stack([self.cache[c] for c in captions])).to(device)


class MoMaskGenerator:
    """generate(captions, lengths, seed) -> raw motions [length_i, D]: base ids by iterative unmasking,
    residual layers, `vq.decode`, the tokenizer's de-normalisation. A length that is not a multiple of
    4 decodes ceil(length / 4) tokens and is cropped."""

    def __init__(self, mask: MaskTransformer, residual: ResidualTransformer | None, vq: VQVAE,
                 text_encoder: TextEncoder, device: torch.device, settings: SamplingSettings,
                 batch_size: int = 32) -> None:
        self.mask = mask.to(device).eval()
        self.residual = residual.to(device).eval() if residual is not None else None
        self.vq, self.device, self.settings, self.batch_size = vq.to(device).eval(), device, settings, batch_size
        self.text = PooledText(text_encoder)
        self.downsampling = vq.cfg.downsampling

    @torch.no_grad()
    def generate_ids(self, captions: Sequence[str], token_lengths: Sequence[int], seed: int) -> torch.Tensor:
        """(B, n, Q) ids with -1 on pads."""
        generator = torch.Generator().manual_seed(int(seed))
        lengths = torch.tensor([int(n) for n in token_lengths], device=self.device)
        cond = self.text(list(captions), self.device)
        ids = generate_base(self.mask, cond, lengths, self.settings, generator)
        if not self.vq.residual:  # a single-codebook tokenizer: the base layer is all there is
            return ids[..., None]
        if self.residual is None:
            return base_only(ids, self.vq.cfg.num_quantizers)
        return generate_residual(self.residual, ids, cond, lengths, self.settings, generator)

    @torch.no_grad()
    def generate(self, captions: Sequence[str], lengths: Sequence[int], seed: int) -> list[np.ndarray]:
        captions, lengths = generation_request(captions, lengths, self.mask.cfg.max_tokens * self.downsampling,
                                               MoMaskError)
        out: list[np.ndarray] = []
        for lo in range(0, len(captions), self.batch_size):
            caps, lens = captions[lo:lo + self.batch_size], lengths[lo:lo + self.batch_size]
            tokens = [-(-n // self.downsampling) for n in lens]
            ids = self.generate_ids(caps, tokens, seed + lo)                           # (b, n, Q)
            codes = ids if self.vq.residual else ids[..., 0].clamp(min=0)          # pads are cropped below
            x = self.vq.decode(codes).float().cpu().numpy()                            # (b, 4n, D)
            out.extend(self.vq.stats.denormalize(x[i, :n]).astype(np.float32) for i, n in enumerate(lens))
        return out


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None,
         text_encoder: TextEncoder | None = None, steps: int = 10, cond_scale: float = 4.0,
         res_cond_scale: float = 5.0, temperature: float = 1.0, topk_filter_thres: float = 0.9,
         gumbel: bool = True, residual: bool = True, tokenizer: str | None = None) -> MoMaskGenerator:
    """The generator of RUN_DIR (MODELS.md §6.6 defaults: 10 steps, guidance 4 (KIT-ML: 2) and 5 for the
    residual layers, top 10%, Gumbel sampling; gumbel=false: categorical). `residual=False` decodes the
    base layer alone; `tokenizer` points at the VQ run when it moved (its fingerprint must match)."""
    device = pick_device(device)
    found = load_stage(run_dir, "mask")
    if found is None:
        raise MoMaskError(f"{run_dir} has no mask-transformer stage: train it with "
                          f"`python -m models train momask --stage mask --out {run_dir} ...`")
    mask, state = found
    res = load_stage(run_dir, "residual") if residual else None
    if res is not None and res[1]["tokenizer"]["fingerprint"] != state["tokenizer"]["fingerprint"]:
        raise MoMaskError(f"the two stages of {run_dir} were trained on different tokenizers")
    if res is not None and res[1]["text_encoder"]["identity"] != state["text_encoder"]["identity"]:
        raise MoMaskError(f"the two stages of {run_dir} were trained with different text encoders")
    record = state["text_encoder"]
    if text_encoder is None:
        text_encoder = load_text_encoder(record["name"], record["checkpoint"], str(device))
    check_text_encoder(text_encoder, record, MoMaskError)
    vq = open_tokenizer(state["tokenizer"], device, tokenizer)
    settings = SamplingSettings(steps=steps, cond_scale=cond_scale, res_cond_scale=res_cond_scale,
                                temperature=temperature, topk_filter_thres=topk_filter_thres, gumbel=gumbel,
                                res_gumbel=gumbel)
    return MoMaskGenerator(mask, res[0] if res else None, vq, text_encoder, device, settings)


__all__ = ["FORMAT", "MoMaskError", "MoMaskGenerator", "PooledText", "STAGES", "load", "load_stage",
           "save_checkpoint", "stage_dir"]
