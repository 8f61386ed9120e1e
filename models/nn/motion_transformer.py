"""MotionDiffuse's decoder blocks (Zhang et al. 2022; MODELS.md §2.1), shared by MotionDiffuse,
FineMotionDiffuse and ReMoDiffuse (whose FFN and stylization are the same).

Shapes: B batch, T frames, C latent, E time-embedding width, N keys, Ct text-memory width.

    StylizationBlock   h = LN(y)(1 + scale) + shift, (scale, shift) from emb; out = zero-Linear(SiLU(h))
    attend             linear attention (softmax of q over features, of k over the sequence) or softmax
    decoder layer      x -> x + SA(x) -> x + CA(x, xf) -> x + FFN(x), each residual through a stylization
    TextHead           frozen tokens (B, L, token_dim) -> xf (B, L, Ct), xf_proj (B, E) at the end token

Parameter names are those of the official code, so state dicts keep its keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim): [cos(t w_k) | sin(t w_k)], w_k = max_period^(-k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    out = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(out, (0, dim % 2))


class StylizationBlock(nn.Module):
    """h = LN(y)(1 + scale) + shift, (scale, shift) = Linear(SiLU(emb)); out = zero-Linear(Dropout(SiLU(h)))."""

    def __init__(self, latent: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * latent))
        self.norm = nn.LayerNorm(latent)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_module(nn.Linear(latent, latent)))

    def forward(self, y: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # (B, T, C), (B, E)
        scale, shift = self.emb_layers(emb)[:, None].chunk(2, dim=-1)       # (B, 1, C) each
        return self.out_layers(self.norm(y) * (1 + scale) + shift)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, heads: int,
            efficient: bool) -> torch.Tensor:
    """q (B, T, C), k/v (B, N, C), key_mask (B, N) bool -> (B, T, C)."""
    B, T, C = q.shape
    N = k.shape[1]
    q, k, v = q.view(B, T, heads, -1), k.view(B, N, heads, -1), v.view(B, N, heads, -1)
    if efficient:
        q = q.softmax(dim=-1)                                              # over features in a head
        k = (k + (~key_mask)[:, :, None, None] * -1e6).softmax(dim=1)     # over the sequence
        v = v * key_mask[:, :, None, None]
        context = torch.einsum("bnhd,bnhl->bhdl", k, v)                    # (B, H, C/H, C/H)
        return torch.einsum("bnhd,bhdl->bnhl", q, context).reshape(B, T, C)
    scores = torch.einsum("bthd,bnhd->bhtn", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~key_mask[:, None, None, :], -1e6)
    return torch.einsum("bhtn,bnhd->bthd", scores.softmax(-1), v).reshape(B, T, C)


@dataclass(frozen=True)
class BlockSizes:
    """The widths every decoder block needs: latent C, heads, time embedding E, text memory Ct."""

    latent_dim: int
    num_heads: int
    time_embed_dim: int
    text_latent_dim: int
    ff_dim: int
    dropout: float = 0.0
    efficient_attention: bool = True


class TemporalSelfAttention(nn.Module):
    def __init__(self, cfg: BlockSizes) -> None:
        super().__init__()
        c = cfg.latent_dim
        self.heads, self.efficient = cfg.num_heads, cfg.efficient_attention
        self.norm = nn.LayerNorm(c)
        self.query, self.key, self.value = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.proj_out = StylizationBlock(c, cfg.time_embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        y = attend(self.query(h), self.key(h), self.value(h), mask, self.heads, self.efficient)
        return x + self.proj_out(y, emb)


class TemporalCrossAttention(nn.Module):
    def __init__(self, cfg: BlockSizes) -> None:
        super().__init__()
        c, ct = cfg.latent_dim, cfg.text_latent_dim
        self.heads, self.efficient = cfg.num_heads, cfg.efficient_attention
        self.norm, self.text_norm = nn.LayerNorm(c), nn.LayerNorm(ct)
        self.query, self.key, self.value = nn.Linear(c, c), nn.Linear(ct, c), nn.Linear(ct, c)
        self.proj_out = StylizationBlock(c, cfg.time_embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, xf: torch.Tensor, xf_mask: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        t = self.text_norm(xf)
        y = attend(self.query(self.norm(x)), self.key(t), self.value(t), xf_mask, self.heads, self.efficient)
        return x + self.proj_out(y, emb)


class FFN(nn.Module):
    def __init__(self, cfg: BlockSizes) -> None:
        super().__init__()
        self.linear1 = nn.Linear(cfg.latent_dim, cfg.ff_dim)
        self.linear2 = zero_module(nn.Linear(cfg.ff_dim, cfg.latent_dim))
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj_out = StylizationBlock(cfg.latent_dim, cfg.time_embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return x + self.proj_out(self.linear2(self.dropout(F.gelu(self.linear1(x)))), emb)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: BlockSizes) -> None:
        super().__init__()
        self.sa_block, self.ca_block, self.ffn = TemporalSelfAttention(cfg), TemporalCrossAttention(cfg), FFN(cfg)

    def forward(self, x, xf, xf_mask, emb, mask):
        return self.ffn(self.ca_block(self.sa_block(x, emb, mask), xf, xf_mask, emb), emb)


class TextHead(nn.Module):
    """Frozen-encoder tokens (B, L, token_dim) -> xf (B, L, Ct), xf_proj (B, E) at the end-of-text token."""

    def __init__(self, token_dim: int, latent: int, layers: int, heads: int, ff_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.text_pre_proj = nn.Linear(token_dim, latent)
        layer = nn.TransformerEncoderLayer(latent, heads, ff_dim, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.text_ln = nn.LayerNorm(latent)
        self.text_proj = nn.Linear(latent, emb_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xf = self.text_ln(self.encoder(self.text_pre_proj(tokens), src_key_padding_mask=~mask))  # (B, L, Ct)
        eot = mask.long().sum(1).clamp(min=1) - 1              # the end token is the last real token
        return xf, self.text_proj(xf[torch.arange(len(xf), device=xf.device), eot])
