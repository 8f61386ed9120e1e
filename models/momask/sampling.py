"""MoMask inference (MODELS.md §6.6; momask-codes MaskTransformer.generate, ResidualTransformer.generate):

1. Base layer, K = `steps` rounds: every valid position starts as [MASK] (pads pad_id, score 1e5). At round
   k with t_k = linspace(0, 1, K)[k], the round(cos(pi t_k / 2) len) lowest-scored positions (>= 1) are
   (re)masked; guided logits l = l_u + s (l_c - l_u) (s = `cond_scale`, l_u with the text zeroed); only the
   top ceil((1 - topk_filter_thres) K) logits are kept; an id is drawn (Gumbel-max at `temperature`, or
   categorical); its score is softmax(l)[id]; positions not masked this round keep score 1e5.
2. Residual layers q = 1..Q-1 in order: logits of layer q given the sum of the embeddings of layers < q,
   guided with `res_cond_scale`, filtered and drawn the same way.
3. Pads are -1 in the returned ids (B, n, Q); `vq.decode` turns them into (B, 4n, D) features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.momask.model import MaskTransformer, ResidualTransformer, cosine_schedule, lengths_to_mask


@dataclass
class SamplingSettings:
    steps: int = 10                   # unmasking rounds (time_steps)
    cond_scale: float = 4.0           # guidance of the base layer (HumanML3D 4, KIT-ML 2)
    res_cond_scale: float = 5.0       # guidance of the residual layers (eval_t2m res_cond_scale)
    temperature: float = 1.0
    topk_filter_thres: float = 0.9    # keep the top 10% of the logits
    gumbel: bool = True               # Gumbel-max sampling (the README's --gumbel_sample); else categorical
    res_gumbel: bool = True           # the residual generate draws with Gumbel noise too


def top_k_filter(logits: torch.Tensor, thres: float) -> torch.Tensor:
    """Logits (..., K) with all but the top ceil((1 - thres) K) set to -inf."""
    k = max(1, math.ceil((1 - thres) * logits.shape[-1]))
    values, index = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, index, values)


def draw(logits: torch.Tensor, temperature: float, gumbel: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Ids (...) drawn from filtered logits (..., K): Gumbel-max at `temperature`, or softmax(l / T) sampling."""
    uniform = torch.rand(logits.shape, generator=generator, device="cpu").to(logits.device)
    if gumbel:
        neg_log = (-torch.log(uniform.clamp(min=1e-20))).clamp(min=1e-20)
        noise = -torch.log(neg_log)                                                 # Gumbel(0, 1)
        return (logits / max(temperature, 1e-10) + noise).argmax(dim=-1)
    probs = torch.softmax(logits / max(temperature, 1e-10), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1]).cpu()
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1]).to(logits.device)


def guided(forward, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: l_u + scale (l_c - l_u); scale 1 is the conditional logits alone."""
    if scale == 1:
        return forward(cond, False)
    return torch.lerp(forward(cond, True), forward(cond, False), scale)


@torch.no_grad()
def generate_base(model: MaskTransformer, cond: torch.Tensor, lengths: torch.Tensor, settings: SamplingSettings,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Base-layer ids (B, n = max(lengths)) of text features cond (B, E), -1 on pads."""
    width = int(lengths.max())
    pad = ~lengths_to_mask(lengths, width)
    ids = torch.where(pad, model.pad_id, model.mask_id)
    scores = torch.where(pad, 1e5, 0.0)
    for t in torch.linspace(0, 1, settings.steps):
        count = torch.round(cosine_schedule(t) * lengths).clamp(min=1)              # (B,)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        masked = ranks < count[:, None]
        ids = torch.where(masked, model.mask_id, ids)
        logits = guided(lambda c, uncond: model(ids, c, pad, uncond), cond, settings.cond_scale)   # (B, n, K)
        picked = draw(top_k_filter(logits, settings.topk_filter_thres), settings.temperature, settings.gumbel,
                      generator)
        ids = torch.where(masked, picked, ids)
        confidence = logits.softmax(-1).gather(-1, picked[..., None])[..., 0]
        scores = confidence.masked_fill(~masked, 1e5)
    return torch.where(pad, -1, ids)


@torch.no_grad()
def generate_residual(model: ResidualTransformer, base: torch.Tensor, cond: torch.Tensor, lengths: torch.Tensor,
                      settings: SamplingSettings, generator: torch.Generator | None = None) -> torch.Tensor:
    """All Q layers (B, n, Q) from base ids (B, n) (-1 on pads), layer by layer; -1 on pads."""
    pad = ~lengths_to_mask(lengths, base.shape[1])
    layers = [torch.where(pad, model.pad_id, base)]
    for q in range(1, model.cfg.num_quantizers):
        q_ids = torch.full((base.shape[0],), q, dtype=torch.long, device=base.device)
        history = model.history(torch.stack(layers, -1), q_ids)
        logits = guided(lambda c, uncond: model(history, q_ids, c, pad, uncond), cond, settings.res_cond_scale)
        picked = draw(top_k_filter(logits, settings.topk_filter_thres), settings.temperature, settings.res_gumbel,
                      generator)
        layers.append(torch.where(pad, model.pad_id, picked))
    ids = torch.stack(layers, -1)
    return torch.where(pad[..., None], -1, ids)


def base_only(base: torch.Tensor, num_quantizers: int) -> torch.Tensor:
    """(B, n) base ids -> (B, n, Q) with the residual layers dropped (-1): a run without its residual stage."""
    out = torch.full((*base.shape, num_quantizers), -1, dtype=base.dtype, device=base.device)
    out[..., 0] = base
    return out


__all__ = ["SamplingSettings", "base_only", "draw", "generate_base", "generate_residual", "guided", "top_k_filter"]
