"""ReMoDiffuse (Zhang et al. 2023, arXiv 2304.01116): retrieval-augmented x0-predicting motion diffusion.

Shapes: B batch, T frames, D motion features, L query text tokens, k retrieved samples, Tr retrieved
frames, n = ceil(Tr / stride) strided retrieval positions, C latent (512), E time embedding (2048),
Ct text latent (256), W frozen text-encoder token width (CLIP ln_final: 512), P retrieved-caption
token positions (CLIP: 77). Facts: MODELS.md §4.1 (configs/remodiffuse/remodiffuse_t2m.py,
mogen/models/transformers/remodiffuse.py, mogen/models/attentions/semantics_modulated.py).

    text:   CLIP tokens (B, L, W) -> Linear -> 2-layer TransformerEncoder -> LN = xf (B, L, Ct)
            (use_text_proj = False: no text term in the time embedding)
    emb     = MLP(sinusoid(t, C))                                                         (B, E)
    R^m     = stride(EncoderLayer x 2 (motion_proj(m_r) + pos))                            (B, k, n, C)
    R^t     = TransformerEncoder x 2 (CLIP tokens of the retrieved captions)[..., P-1]     (B, k, 1, W)
    h       = joint_embed(x_t) + sequence_embedding[:T]                                    (B, T, C)
    h       = [SMA(h, xf, R^m, R^t) -> FFN] x 4, each residual through a StylizationBlock(emb)
    x0_hat  = out(h), zero-initialised                                                     (B, T, D)

Semantics-modulated attention (paper §3.3): keys K = [f_motion, f_prompt, [R^m; R^t]], values
V = [f_motion, f_prompt, R^m], linear attention. Condition flags per sample (cond_type): text on when
cond_type % 10 > 0, retrieval on when cond_type // 10 > 0 (0 none, 1 text, 10 retrieval, 11 both).
A condition that is off has its keys pushed down by -1e6 before the key softmax (their weights are
exactly 0 in float32) and its values multiplied by 0, so the output is bitwise independent of it.

Our one change of the code (as in models.motiondiffuse): the query's frozen text features come trimmed
to its tokens (the feature cache), and their padding is masked like an off condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datasets_build.core.flags import option
from models.diffusion.schedule import DiffusionConfig, GaussianDiffusion
from models.nn.motion_transformer import (
    FFN, BlockSizes, StylizationBlock, TextHead, attend, timestep_embedding, zero_module,
)

TEXT, RETRIEVAL = 1, 10  # cond_type digits: 11 = both, 0 = none


@dataclass
class ReMoDiffuseConfig:
    motion_dim: int = option(263, "motion features D (263 HumanML3D, 251 KIT-ML)")
    max_length: int = option(196, "frames of the learned sequence embeddings (the longest motion)")
    latent_dim: int = option(512, "transformer width C")
    num_layers: int = option(4, "decoder layers (SMA + FFN each)")
    num_heads: int = option(8, "attention heads")
    ff_dim: int = option(1024, "FFN hidden width")
    time_embed_dim: int = option(2048, "time embedding width E")
    dropout: float = option(0.0, "dropout (the config's 0)")
    token_dim: int = option(512, "frozen text encoder's token width (CLIP ln_final: 512)")
    text_latent_dim: int = option(256, "query text head width Ct")
    text_layers: int = option(2, "query text head TransformerEncoder layers")
    text_heads: int = option(4, "query text head attention heads")
    text_ff_dim: int = option(2048, "query text head FFN width")
    num_retrieval: int = option(2, "k retrieved samples per query")
    retrieval_motion_layers: int = option(2, "retrieval motion encoder layers")
    retrieval_text_layers: int = option(2, "retrieval text encoder layers (over the retrieved captions' tokens)")
    retrieval_text_heads: int = option(8, "retrieval text encoder heads")
    retrieval_text_ff_dim: int = option(1024, "retrieval text encoder FFN width")
    stride: int = option(4, "temporal stride of the retrieved motion features")
    kinematic_coef: float = option(0.1, "lambda of the hybrid score cos * exp(-lambda |l - L| / max(l, L))")
    text_dropout: float = option(0.1, "probability of dropping the text condition in training")
    retrieval_dropout: float = option(0.1, "probability of dropping the retrieval condition (independent of text)")
    diffusion_steps: int = option(1000, "T, linear betas")
    prediction: str = option("x0", "x0 (the paper's) or epsilon")
    variance: str = option("fixed_large", "fixed_large (the code's) or fixed_small")
    respacing: str = option("15,15,8,6,6", "the sampling chain: 50 of the 1000 steps")
    feat_bias: float = option(5.0, "[inferred] std of root and foot-contact features divided by this: the code "
                                   "normalises with data/datasets/*/std.npy, most likely the evaluator's meta (5)")
    dataset: str = option("humanml3d", "humanml3d or kitml: picks the code's condition-mixture constants")

    def block_sizes(self) -> BlockSizes:
        return BlockSizes(self.latent_dim, self.num_heads, self.time_embed_dim, self.text_latent_dim, self.ff_dim,
                          self.dropout, True)

    def diffusion(self, respacing: str = "") -> GaussianDiffusion:
        return GaussianDiffusion.from_config(DiffusionConfig(self.diffusion_steps, self.prediction, self.variance),
                                             respacing)


def condition_flags(cond_type: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cond_type (B,) int -> (text_on, retrieval_on) (B,) bool: `% 10 > 0` and `// 10 > 0`."""
    return cond_type % 10 > 0, cond_type // 10 > 0


def draw_conditions(batch: int, text_dropout: float, retrieval_dropout: float, device: torch.device,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Training cond_type (B,): text kept with 1 - text_dropout, retrieval with 1 - retrieval_dropout,
    independently (paper §3.5)."""
    u = torch.rand(2, batch, generator=generator).to(device)
    return TEXT * (u[0] >= text_dropout).long() + RETRIEVAL * (u[1] >= retrieval_dropout).long()


# ------------------------------------------------------------------------------------------ retrieval encoders
class PlainFFN(nn.Module):
    """x + zero-Linear(Dropout(GELU(Linear(x)))): the retrieval encoder's FFN (no stylisation)."""

    def __init__(self, latent: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(latent, ff_dim), zero_module(nn.Linear(ff_dim, latent))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear2(self.dropout(F.gelu(self.linear1(x))))


class RetrievalMotionLayer(nn.Module):
    """EfficientSelfAttention with a plain residual, then PlainFFN (the code's EncoderLayer)."""

    def __init__(self, cfg: ReMoDiffuseConfig) -> None:
        super().__init__()
        c = cfg.latent_dim
        self.heads = cfg.num_heads
        self.norm = nn.LayerNorm(c)
        self.query, self.key, self.value = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.ffn = PlainFFN(c, cfg.ff_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (N, Tr, C), (N, Tr) bool
        h = self.norm(x)
        return self.ffn(x + attend(self.query(h), self.key(h), self.value(h), mask, self.heads, True))


def last_position(encoder: nn.TransformerEncoder, x: torch.Tensor) -> torch.Tensor:
    """encoder(x)[:, -1:] (N, 1, W), with the last (post-norm) layer computed for that position only:
    its query is the last token, its keys and values every token (the same numbers, less work)."""
    for layer in encoder.layers[:-1]:
        x = layer(x)
    layer, q = encoder.layers[-1], x[:, -1:]
    h = layer.norm1(q + layer.dropout1(layer.self_attn(q, x, x, need_weights=False)[0]))
    return layer.norm2(h + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(h))))))


class RetrievalEncoder(nn.Module):
    """Retrieved motions and captions -> R^m (B, k, n, C) with its mask (B, k, n), R^t (B, k, 1, W).
    The code builds the caption encoder with d_model = latent_dim, which works because CLIP's width equals
    it (512); ours runs at the token width W, the same network whenever they are equal."""

    def __init__(self, cfg: ReMoDiffuseConfig) -> None:
        super().__init__()
        self.stride = cfg.stride
        self.motion_proj = nn.Linear(cfg.motion_dim, cfg.latent_dim)
        self.motion_pos_embedding = nn.Parameter(torch.randn(cfg.max_length, cfg.latent_dim))
        self.motion_encoder = nn.ModuleList(RetrievalMotionLayer(cfg) for _ in range(cfg.retrieval_motion_layers))
        layer = nn.TransformerEncoderLayer(cfg.token_dim, cfg.retrieval_text_heads, cfg.retrieval_text_ff_dim,
                                           dropout=0.0, activation="gelu", batch_first=True)
        self.text_encoder = nn.TransformerEncoder(layer, cfg.retrieval_text_layers, enable_nested_tensor=False)

    def forward(self, motions: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """motions (B, k, Tr, D) normalised, lengths (B, k), tokens (B, k, P, W) of the retrieved captions."""
        B, k, Tr, _ = motions.shape
        mask = torch.arange(Tr, device=motions.device)[None] < lengths.reshape(-1, 1)          # (Bk, Tr)
        h = self.motion_proj(motions.reshape(B * k, Tr, -1)) + self.motion_pos_embedding[None, :Tr]
        for layer in self.motion_encoder:
            h = layer(h, mask)
        h, mask = h[:, ::self.stride], mask[:, ::self.stride]                                    # (Bk, n, C)
        text = last_position(self.text_encoder, tokens.reshape(B * k, tokens.shape[2], -1))    # (Bk, 1, W)
        return {"motion": h.reshape(B, k, h.shape[1], -1), "mask": mask.reshape(B, k, -1),
                "text": text.reshape(B, k, 1, -1)}


# ------------------------------------------------------------------------------------------ the decoder
class SemanticsModulatedAttention(nn.Module):
    """Linear attention of the motion queries over [text tokens, retrieved features, motion tokens]."""

    def __init__(self, cfg: ReMoDiffuseConfig) -> None:
        super().__init__()
        c, ct, w = cfg.latent_dim, cfg.text_latent_dim, cfg.token_dim
        self.heads = cfg.num_heads
        self.norm, self.text_norm = nn.LayerNorm(c), nn.LayerNorm(ct)
        self.retr_norm1, self.retr_norm2 = nn.LayerNorm(c + w), nn.LayerNorm(c)
        self.query = nn.Linear(c, c)
        self.key_text, self.value_text = nn.Linear(ct, c), nn.Linear(ct, c)
        self.key_retr, self.value_retr = nn.Linear(c + w, c), zero_module(nn.Linear(c, c))
        self.key_motion, self.value_motion = nn.Linear(c, c), nn.Linear(c, c)
        self.proj_out = StylizationBlock(c, cfg.time_embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor, xf: torch.Tensor, xf_mask: torch.Tensor, retrieval: dict[str, torch.Tensor],
                emb: torch.Tensor, src_mask: torch.Tensor, text_on: torch.Tensor,
                retr_on: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        h, t = self.norm(x), self.text_norm(xf)
        r_m = retrieval["motion"]                                                            # (B, k, n, C)
        r_t = retrieval["text"].expand(-1, -1, r_m.shape[2], -1)                             # (B, k, n, W)
        r_key = self.key_retr(self.retr_norm1(torch.cat([r_m, r_t], -1))).reshape(B, -1, r_m.shape[-1])
        r_value = self.value_retr(self.retr_norm2(r_m)).reshape(B, -1, r_m.shape[-1])        # (B, k n, C)
        keys = torch.cat([self.key_text(t), r_key, self.key_motion(h)], 1)                   # (B, N, C)
        values = torch.cat([self.value_text(t), r_value, self.value_motion(h)], 1)
        # per condition: -1e6 on the keys of an off condition / padding, its values times 0 (`attend`)
        key_mask = torch.cat([xf_mask & text_on[:, None], retrieval["mask"].reshape(B, -1) & retr_on[:, None],
                              src_mask], 1)                                                  # (B, N)
        y = attend(self.query(h), keys, values, key_mask, self.heads, True)
        return x + self.proj_out(y, emb)


class SMADecoderLayer(nn.Module):
    def __init__(self, cfg: ReMoDiffuseConfig) -> None:
        super().__init__()
        self.sa_block, self.ffn = SemanticsModulatedAttention(cfg), FFN(cfg.block_sizes())

    def forward(self, x, xf, xf_mask, retrieval, emb, src_mask, text_on, retr_on):
        return self.ffn(self.sa_block(x, xf, xf_mask, retrieval, emb, src_mask, text_on, retr_on), emb)


class ReMoDiffuse(nn.Module):
    def __init__(self, cfg: ReMoDiffuseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, e = cfg.latent_dim, cfg.time_embed_dim
        # text_proj of the shared head stays unused (use_text_proj = False): emb carries no text term
        self.text = TextHead(cfg.token_dim, cfg.text_latent_dim, cfg.text_layers, cfg.text_heads, cfg.text_ff_dim, e)
        self.text.text_proj.requires_grad_(False)
        self.retrieval = RetrievalEncoder(cfg)
        self.time_embed = nn.Sequential(nn.Linear(c, e), nn.SiLU(), nn.Linear(e, e))
        self.joint_embed = nn.Linear(cfg.motion_dim, c)
        self.sequence_embedding = nn.Parameter(torch.randn(cfg.max_length, c))
        self.layers = nn.ModuleList(SMADecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.out = zero_module(nn.Linear(c, cfg.motion_dim))

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """xf (B, L, Ct) and its mask (B, L) from the frozen encoder's tokens."""
        xf, _ = self.text(tokens, mask)
        return {"xf": xf, "xf_mask": mask}

    def encode_retrieval(self, motions: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        return self.retrieval(motions, lengths, tokens)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, text: dict[str, torch.Tensor],
                retrieval: dict[str, torch.Tensor], cond_type: torch.Tensor) -> torch.Tensor:
        """x_t (B, T, D), ORIGINAL t (B,), frame mask (B, T) bool, cond_type (B,) -> x0_hat (B, T, D)."""
        T = x.shape[1]
        text_on, retr_on = condition_flags(cond_type)
        emb = self.time_embed(timestep_embedding(t, self.cfg.latent_dim))                   # (B, E), time only
        h = self.joint_embed(x) + self.sequence_embedding[None, :T]
        for layer in self.layers:
            h = layer(h, text["xf"], text["xf_mask"], retrieval, emb, mask, text_on, retr_on)
        return self.out(h)


def masked_loss(diffusion: GaussianDiffusion, model: nn.Module, x0: torch.Tensor, mask: torch.Tensor,
                text: dict[str, torch.Tensor], retrieval: dict[str, torch.Tensor], cond_type: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Paper Eq. 2: t ~ U{0..T-1}; loss = sum_frames(mean_feat((x0_hat - x0)^2) mask) / sum(mask)."""
    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = diffusion.q_sample(x0, t, noise)
    out = model(x_t, diffusion.model_timesteps(t), mask, text, retrieval, cond_type)
    per_frame = ((out - diffusion.target(x0, noise)) ** 2).mean(-1)                        # (B, T)
    m = mask.to(per_frame.dtype)
    return {"loss": (per_frame * m).sum() / m.sum().clamp(min=1)}


__all__ = ["RETRIEVAL", "TEXT", "ReMoDiffuse", "ReMoDiffuseConfig", "RetrievalEncoder", "SemanticsModulatedAttention",
           "condition_flags", "draw_conditions", "masked_loss"]
