"""MotionDiffuse (Zhang et al. 2022): a text-conditioned epsilon-predicting motion transformer.

Shapes: B batch, T frames (<= max_length), D motion features (263 / 251), L text tokens, C latent
(512), E time-embedding width (4C = 2048), Ct text latent (256). Facts from MODELS.md §2 (the official
code, text2motion/models/transformer.py); the diffusion math is `models.diffusion`.

    text:   CLIP ln_final tokens (B, L, 512) -> Linear -> 4-layer TransformerEncoder -> LN = xf (B, L, Ct)
            xf_proj = Linear(Ct -> E)(xf at the end-of-text token)                              (B, E)
    emb     = MLP(sinusoid(t, C)) + xf_proj                                                      (B, E)
    h       = joint_embed(x_t) + sequence_embedding[:T]                                          (B, T, C)
    h       = [LinearSelfAttn -> LinearCrossAttn(xf) -> FFN] x N, each residual through a
              StylizationBlock(emb) whose last Linear starts at zero
    eps_hat = out(h), zero-initialised                                                           (B, T, D)

Our one change of the code: the frozen text features come trimmed to each caption's tokens (the
feature cache), so the text head and the cross-attention mask padded tokens (the code attends to
CLIP's 77 positions, padding included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datasets_build.core.flags import option
from models.diffusion.schedule import DiffusionConfig, GaussianDiffusion, linear_betas


@dataclass
class MotionDiffuseConfig:
    motion_dim: int = option(263, "motion features D (263 HumanML3D, 251 KIT-ML)")
    max_length: int = option(196, "frames of the learned sequence embedding (the longest motion)")
    latent_dim: int = option(512, "transformer width C")
    num_layers: int = option(8, "decoder layers")
    num_heads: int = option(8, "attention heads")
    ff_dim: int = option(1024, "FFN hidden width")
    time_embed_dim: int = option(2048, "time/text embedding width E (4 C in the paper)")
    dropout: float = option(0.0, "dropout (the code's MotionTransformer default)")
    efficient_attention: bool = option(True, "linear attention (False: the code's no_eff softmax attention)")
    token_dim: int = option(512, "frozen text encoder's token width (CLIP ln_final: 512)")
    text_latent_dim: int = option(256, "text head width Ct")
    text_layers: int = option(4, "text head TransformerEncoder layers")
    text_heads: int = option(4, "text head attention heads")
    text_ff_dim: int = option(2048, "text head FFN width")
    diffusion_steps: int = option(1000, "T, linear betas scaled by 1000/T")
    prediction: str = option("epsilon", "epsilon or x0")
    variance: str = option("fixed_small", "fixed_small or fixed_large")
    feat_bias: float = option(25.0, "std of root and foot-contact features divided by this (25: the paper's "
                                    "code; 5: the evaluator's meta)")

    def diffusion(self, respacing: str = "") -> GaussianDiffusion:
        return GaussianDiffusion.from_config(DiffusionConfig(self.diffusion_steps, self.prediction, self.variance),
                                             respacing)


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


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, heads: int,
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


class TemporalSelfAttention(nn.Module):
    def __init__(self, cfg: MotionDiffuseConfig) -> None:
        super().__init__()
        c = cfg.latent_dim
        self.heads, self.efficient = cfg.num_heads, cfg.efficient_attention
        self.norm = nn.LayerNorm(c)
        self.query, self.key, self.value = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.proj_out = StylizationBlock(c, cfg.time_embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        y = _attend(self.query(h), self.key(h), self.value(h), mask, self.heads, self.efficient)
        return x + self.proj_out(y, emb)


class TemporalCrossAttention(nn.Module):
    def __init__(self, cfg: MotionDiffuseConfig) -> None:
        super().__init__()
        c, ct = cfg.latent_dim, cfg.text_latent_dim
        self.heads, self.efficient = cfg.num_heads, cfg.efficient_attention
        self.norm, self.text_norm = nn.LayerNorm(c), nn.LayerNorm(ct)
        self.query, self.key, self.value = nn.Linear(c, c), nn.Linear(ct, c), nn.Linear(ct, c)
        self.proj_out = StylizationBlock(c, cfg.time_embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, xf: torch.Tensor, xf_mask: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        t = self.text_norm(xf)
        y = _attend(self.query(self.norm(x)), self.key(t), self.value(t), xf_mask, self.heads, self.efficient)
        return x + self.proj_out(y, emb)


class FFN(nn.Module):
    def __init__(self, cfg: MotionDiffuseConfig) -> None:
        super().__init__()
        self.linear1 = nn.Linear(cfg.latent_dim, cfg.ff_dim)
        self.linear2 = zero_module(nn.Linear(cfg.ff_dim, cfg.latent_dim))
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj_out = StylizationBlock(cfg.latent_dim, cfg.time_embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return x + self.proj_out(self.linear2(self.dropout(F.gelu(self.linear1(x)))), emb)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: MotionDiffuseConfig) -> None:
        super().__init__()
        self.sa_block, self.ca_block, self.ffn = TemporalSelfAttention(cfg), TemporalCrossAttention(cfg), FFN(cfg)

    def forward(self, x, xf, xf_mask, emb, mask):
        return self.ffn(self.ca_block(self.sa_block(x, emb, mask), xf, xf_mask, emb), emb)


class TextHead(nn.Module):
    """Frozen-encoder tokens (B, L, token_dim) -> xf (B, L, Ct), xf_proj (B, E) at the end-of-text token."""

    def __init__(self, cfg: MotionDiffuseConfig) -> None:
        super().__init__()
        self.text_pre_proj = nn.Linear(cfg.token_dim, cfg.text_latent_dim)
        layer = nn.TransformerEncoderLayer(cfg.text_latent_dim, cfg.text_heads, cfg.text_ff_dim, dropout=0.0,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.text_ln = nn.LayerNorm(cfg.text_latent_dim)
        self.text_proj = nn.Linear(cfg.text_latent_dim, cfg.time_embed_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xf = self.text_ln(self.encoder(self.text_pre_proj(tokens), src_key_padding_mask=~mask))  # (B, L, Ct)
        eot = mask.long().sum(1).clamp(min=1) - 1              # the end token is the last real token
        return xf, self.text_proj(xf[torch.arange(len(xf), device=xf.device), eot])


class MotionDiffuse(nn.Module):
    def __init__(self, cfg: MotionDiffuseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, e = cfg.latent_dim, cfg.time_embed_dim
        self.text = TextHead(cfg)
        self.time_embed = nn.Sequential(nn.Linear(c, e), nn.SiLU(), nn.Linear(e, e))
        self.joint_embed = nn.Linear(cfg.motion_dim, c)
        self.sequence_embedding = nn.Parameter(torch.randn(cfg.max_length, c))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.out = zero_module(nn.Linear(c, cfg.motion_dim))

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The text memory the decoder attends to: xf (B, L, Ct), xf_mask (B, L), xf_proj (B, E)."""
        xf, xf_proj = self.text(tokens, mask)
        return {"xf": xf, "xf_mask": mask, "xf_proj": xf_proj}

    def embedding(self, t: torch.Tensor, xf_proj: torch.Tensor) -> torch.Tensor:
        """emb = time_embed(sinusoid(t)) + xf_proj                                          (B, E)"""
        return self.time_embed(timestep_embedding(t, self.cfg.latent_dim)) + xf_proj

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, text: dict[str, torch.Tensor]) -> torch.Tensor:
        """x_t (B, T, D), ORIGINAL timesteps t (B,), frame mask (B, T) bool, text from encode_text -> (B, T, D)."""
        T = x.shape[1]
        emb = self.embedding(t, text["xf_proj"])
        h = self.joint_embed(x) + self.sequence_embedding[None, :T]
        for layer in self.layers:
            h = layer(h, text["xf"], text["xf_mask"], emb, mask)
        return self.out(h)


def masked_loss(diffusion: GaussianDiffusion, model: nn.Module, x0: torch.Tensor, mask: torch.Tensor,
                text: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """t ~ U{0..T-1}, eps ~ N(0, I); loss = sum_frames(mean_feat((out - target)^2) mask) / sum(mask)."""
    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    x_t = diffusion.q_sample(x0, t, noise)
    out = model(x_t, diffusion.model_timesteps(t), mask, text)
    per_frame = ((out - diffusion.target(x0, noise)) ** 2).mean(-1)          # (B, T)
    m = mask.to(per_frame.dtype)
    return {"loss": (per_frame * m).sum() / m.sum().clamp(min=1)}


__all__ = ["MotionDiffuse", "MotionDiffuseConfig", "linear_betas", "masked_loss", "timestep_embedding"]
