"""A TMR-style text-motion retrieval model in one file (Petrovich et al., ICCV 2023).

Two transformer encoders map a motion (normalised features [T, D]) and a caption (token features
from a FROZEN text encoder [L, token_dim]) to a shared latent space. Each encoder prepends learned
distribution tokens (mu, logvar when `vae`, else a single token) whose outputs are the latent.
Training combines
- a symmetric InfoNCE loss on cosine similarities with a temperature, where negatives whose
  captions are near-duplicates of the positive's are masked out (TMR's filtering: the pooled
  text embeddings' cosine, rescaled to [0, 1] as (1 + cos) / 2, above `filter_threshold`; TMR's
  0.8 therefore means cosine > 0.6);
- optionally (TMR's full model) a motion decoder reconstructing the motion from both latents,
  KL terms towards each other and N(0, I), and a latent-matching term.
At inference the latent is mu (no sampling), L2-normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets_build.core.flags import option


@dataclass
class RetrievalConfig:
    """Everything that defines the network and its losses; saved with the weights."""

    motion_dim: int = option(263, "motion feature width (set from the build)")
    token_dim: int = option(384, "the frozen text encoder's token width (set from the encoder)")
    latent_dim: int = option(256, "width of the transformers and of the shared latent space")
    ff_dim: int = option(1024, "feed-forward width of each transformer layer")
    num_layers: int = option(6, "transformer layers per encoder (and in the decoder)")
    num_heads: int = option(4, "attention heads")
    dropout: float = option(0.1, "dropout inside the transformers")
    vae: bool = option(True, "mu and logvar tokens with KL terms (TMR); false: a single latent token")
    reconstruction: bool = option(True, "the motion decoder branch with its latent and KL terms")
    temperature: float = option(0.1, "InfoNCE temperature")
    filter_threshold: float | None = option(0.8, "mask negatives whose pooled captions have (1 + cos) / 2 above "
                                                 "this; none: no filtering")
    w_contrastive: float = option(0.1, "weight of the contrastive loss")
    w_reconstruction: float = option(1.0, "weight of the reconstruction loss")
    w_kl: float = option(1e-5, "weight of the KL terms")
    w_latent: float = option(1e-5, "weight of the text-motion latent matching term")


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """[length, dim] fixed sinusoidal positions (any length: motions of any duration encode)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


def _encoder_stack(cfg: RetrievalConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.latent_dim, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                       activation="gelu", batch_first=True)
    return nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)


class SequenceEncoder(nn.Module):
    """[B, T, input_dim] + valid mask [B, T] -> (mu [B, latent], logvar [B, latent] or None)."""

    def __init__(self, input_dim: int, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.project = nn.Linear(input_dim, cfg.latent_dim)
        self.tokens = nn.Parameter(torch.randn(2 if cfg.vae else 1, cfg.latent_dim) * 0.02)
        self.transformer = _encoder_stack(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n = x.shape[0], self.tokens.shape[0]
        h = torch.cat([self.tokens.expand(b, -1, -1).to(x.dtype), self.project(x)], dim=1)
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device).to(h.dtype)
        valid = torch.cat([torch.ones(b, n, dtype=torch.bool, device=mask.device), mask], dim=1)
        out = self.transformer(h, src_key_padding_mask=~valid)
        return out[:, 0], (out[:, 1] if self.cfg.vae else None)


class MotionDecoder(nn.Module):
    """latent [B, latent] -> motion [B, T, motion_dim]: positional queries attend to the latent."""

    def __init__(self, cfg: RetrievalConfig) -> None:
        super().__init__()
        layer = nn.TransformerDecoderLayer(cfg.latent_dim, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                           activation="gelu", batch_first=True)
        self.transformer = nn.TransformerDecoder(layer, cfg.num_layers)
        self.out = nn.Linear(cfg.latent_dim, cfg.motion_dim)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = mask.shape
        queries = sinusoidal_positions(t, z.shape[-1], z.device).to(z.dtype).expand(b, -1, -1)
        h = self.transformer(queries, z[:, None], tgt_key_padding_mask=~mask)
        return self.out(h) * mask[..., None]


def info_nce(text_z: torch.Tensor, motion_z: torch.Tensor, temperature: float,
             text_emb: torch.Tensor | None = None, threshold: float | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched pairs, near-duplicate negatives masked (TMR)."""
    sim = F.normalize(text_z.float(), dim=-1) @ F.normalize(motion_z.float(), dim=-1).T / temperature
    if text_emb is not None and threshold is not None:
        e = F.normalize(text_emb.float(), dim=-1)
        selfsim = e @ e.T
        too_close = (selfsim > 2 * threshold - 1) & ~torch.eye(len(e), dtype=torch.bool, device=e.device)
        sim = sim.masked_fill(too_close, float("-inf"))
    labels = torch.arange(len(sim), device=sim.device)
    return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)) / 2


def kl_divergence(q: tuple[torch.Tensor, torch.Tensor], p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean KL(N(mu_q, var_q) || N(mu_p, var_p)) over batch and dimensions."""
    (mu_q, logvar_q), (mu_p, logvar_p) = q, p
    ratio = logvar_q - logvar_p
    return 0.5 * (ratio.exp() + (mu_p - mu_q).pow(2) / logvar_p.exp() - 1 - ratio).mean()


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_frame = F.smooth_l1_loss(pred.float(), target.float(), reduction="none").mean(-1)
    return (per_frame * mask).sum() / mask.sum().clamp(min=1)


class TMR(nn.Module):
    def __init__(self, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.motion_encoder = SequenceEncoder(cfg.motion_dim, cfg)
        self.text_encoder = SequenceEncoder(cfg.token_dim, cfg)
        self.decoder = MotionDecoder(cfg) if cfg.reconstruction else None

    def _latent(self, mu: torch.Tensor, logvar: torch.Tensor | None, sample: bool) -> torch.Tensor:
        if logvar is None or not sample:
            return mu
        return mu + torch.randn_like(mu) * (0.5 * logvar.float()).exp().to(mu.dtype)

    def encode_motion(self, motion: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, motion_dim] normalised features, valid mask [B, T] -> unit latents [B, latent]."""
        return F.normalize(self.motion_encoder(motion, mask)[0].float(), dim=-1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, token_dim] frozen token features, mask [B, L] -> unit latents [B, latent]."""
        return F.normalize(self.text_encoder(tokens, mask)[0].float(), dim=-1)

    def losses(self, motion: torch.Tensor, motion_mask: torch.Tensor, tokens: torch.Tensor,
               token_mask: torch.Tensor, text_emb: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training losses of one batch of matched (motion, caption) pairs; "loss" is the total."""
        cfg = self.cfg
        t_mu, t_logvar = self.text_encoder(tokens, token_mask)
        m_mu, m_logvar = self.motion_encoder(motion, motion_mask)
        t_z = self._latent(t_mu, t_logvar, self.training)
        m_z = self._latent(m_mu, m_logvar, self.training)
        out = {"contrastive": info_nce(t_z, m_z, cfg.temperature, text_emb, cfg.filter_threshold)}
        total = cfg.w_contrastive * out["contrastive"]
        if self.decoder is not None:
            out["reconstruction"] = (masked_smooth_l1(self.decoder(t_z, motion_mask), motion, motion_mask)
                                     + masked_smooth_l1(self.decoder(m_z, motion_mask), motion, motion_mask))
            out["latent"] = F.smooth_l1_loss(t_z.float(), m_z.float())
            total = total + cfg.w_reconstruction * out["reconstruction"] + cfg.w_latent * out["latent"]
            if cfg.vae:
                t, m = (t_mu.float(), t_logvar.float()), (m_mu.float(), m_logvar.float())
                ref = (torch.zeros_like(t[0]), torch.zeros_like(t[1]))
                out["kl"] = kl_divergence(t, m) + kl_divergence(m, t) + kl_divergence(m, ref) + kl_divergence(t, ref)
                total = total + cfg.w_kl * out["kl"]
        elif cfg.vae:  # without a decoder the VAE keeps only its prior terms
            ref = (torch.zeros_like(t_mu.float()), torch.zeros_like(t_mu.float()))
            out["kl"] = kl_divergence((m_mu.float(), m_logvar.float()), ref) + kl_divergence(
                (t_mu.float(), t_logvar.float()), ref)
            total = total + cfg.w_kl * out["kl"]
        out["loss"] = total
        return out

    def forward(self, motion: torch.Tensor, motion_mask: torch.Tensor, tokens: torch.Tensor,
                token_mask: torch.Tensor, text_emb: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training losses (`losses`): calling the model (or its DistributedDataParallel
        wrapper) is what averages gradients across processes."""
        return self.losses(motion, motion_mask, tokens, token_mask, text_emb)
