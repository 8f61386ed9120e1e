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

from dataclasses import dataclass

import torch
from torch import nn

from datasets_build.core.flags import option
from models.diffusion.schedule import DiffusionConfig, GaussianDiffusion, linear_betas
from models.nn.motion_transformer import BlockSizes, DecoderLayer, TextHead, timestep_embedding, zero_module


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

    def block_sizes(self) -> BlockSizes:
        return BlockSizes(self.latent_dim, self.num_heads, self.time_embed_dim, self.text_latent_dim, self.ff_dim,
                          self.dropout, self.efficient_attention)

    def diffusion(self, respacing: str = "") -> GaussianDiffusion:
        return GaussianDiffusion.from_config(DiffusionConfig(self.diffusion_steps, self.prediction, self.variance),
                                             respacing)


class MotionDiffuse(nn.Module):
    def __init__(self, cfg: MotionDiffuseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, e = cfg.latent_dim, cfg.time_embed_dim
        self.text = TextHead(cfg.token_dim, cfg.text_latent_dim, cfg.text_layers, cfg.text_heads, cfg.text_ff_dim, e)
        self.time_embed = nn.Sequential(nn.Linear(c, e), nn.SiLU(), nn.Linear(e, e))
        self.joint_embed = nn.Linear(cfg.motion_dim, c)
        self.sequence_embedding = nn.Parameter(torch.randn(cfg.max_length, c))
        self.layers = nn.ModuleList(DecoderLayer(cfg.block_sizes()) for _ in range(cfg.num_layers))
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
