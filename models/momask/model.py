"""MoMask's token transformers over a residual VQ-VAE's ids (MODELS.md §6.6; momask-codes
models/mask_transformer/transformer.py, read for facts only).

Shapes: B batch, n tokens (T / 4; padded to `max_tokens` = 49 in training), K codes per layer, C code_dim,
Q residual layers, L latent width, E the text encoder's pooled width (CLIP ViT-B/32: 512).

    MaskTransformer (base layer, ids q = 0):
        [cond_emb(text) ; PE(Linear(Embedding(K + 2, C)(ids)))]  (B, 1 + n, L)   mask_id = K, pad_id = K + 1
        -> bidirectional TransformerEncoder with the key-padding mask -> drop token 0
        -> OutputHead: Linear(L, L), GELU, LayerNorm, Linear(L, K)          (B, n, K) logits
        training: r ~ U(0, 1), mask round(cos(pi r / 2) n) positions (>= 1) of the non-pad ones; of the
        masked, 10% get a random id, 88% of the rest [MASK], the others keep their id (BERT re-masking);
        cross-entropy on masked positions; the text is zeroed with probability cond_drop (0.1).
    ResidualTransformer (layers q = 1 .. Q-1):
        input: sum over layers j < q of E_j(ids_j)  (per-layer embeddings (Q-1, K + 1, C), row K = pad)
        [cond_emb(text) ; quant_emb(onehot(q, Q)) ; PE(Linear(C, L)(input))]  (B, 2 + n, L)
        -> TransformerEncoder -> drop 2 tokens -> OutputProcess Linear, GELU, LN, Linear(L, C)
        -> logits = out . W_q^T + b_q with W_q (K, C) the layer's output projection (B, n, K);
        share_weight: W_q = E_q[:K] for q < Q-1 (the next layer's token embedding); q ~ q_schedule.

Sampling (`generate`) is `sampling.py`'s: iterative unmasking with guidance, then the residual layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datasets_build.core.flags import option
from models.nn.init import normal_init


@dataclass
class MoMaskConfig:
    """One config for both stages (each checkpoint stores the whole of it); widths from the tokenizer."""

    nb_code: int = option(512, "codes K per quantizer layer (the tokenizer's nb_code)")
    code_dim: int = option(512, "token embedding width C (MoMask: the tokenizer's code_dim)")
    num_quantizers: int = option(6, "residual layers Q of the tokenizer")
    text_dim: int = option(512, "width E of the pooled text feature (CLIP ViT-B/32: 512)")
    latent_dim: int = option(384, "transformer width L")
    num_heads: int = option(6, "attention heads")
    num_layers: int = option(8, "transformer layers (the code's default and released run; LaMP's paraphrase says 6)")
    ff_dim: int = option(1024, "feed-forward width")
    dropout: float = option(0.2, "dropout in the transformer and after the positional encoding")
    max_tokens: int = option(49, "token positions of a training sequence (196 frames / 4); the mask count uses it")
    cond_drop_mask: float = option(0.1, "probability of a zeroed text condition, mask transformer")
    cond_drop_residual: float = option(0.2, "probability of a zeroed text condition, residual transformer")
    remask_random: float = option(0.1, "share of masked positions given a random id (BERT re-masking)")
    remask_token: float = option(0.88, "share of the other masked positions given [MASK] (code: 0.88; paper 80/10/10)")
    share_weight: bool = option(True, "residual output projection of layer q = token embedding of layer q "
                                      "(MoMask README trains with --share_weight)")
    label_smoothing: float = option(0.0, "cross-entropy label smoothing (the code's default 0)")


# ----------------------------------------------------------------------------- helpers
def lengths_to_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) token counts -> (B, width) bool, True on valid positions."""
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]


def cosine_schedule(t: torch.Tensor) -> torch.Tensor:
    """gamma(t) = cos(pi t / 2): the masked share at time t in [0, 1]."""
    return torch.cos(t * math.pi * 0.5)


def q_schedule(batch: int, low: int, high: int, device: torch.device | None = None) -> torch.Tensor:
    """Target layers q in [low, high - 1] (B,), drawn as round((1 - cos(pi u / 2)) (high - low - 1)) + low,
    u ~ U(0, 1): later layers are rarer (ResidualTransformer.q_schedule)."""
    u = torch.rand(batch, device=device)
    return (torch.round((1 - cosine_schedule(u)) * (high - low - 1)) + low).long()


def subset(mask: torch.Tensor, prob: float) -> torch.Tensor:
    """A random subset of the True positions of `mask`, each kept with probability `prob`."""
    return (torch.rand(mask.shape, device=mask.device) < prob) & mask


class SinusoidalPositions(nn.Module):
    """x + PE[:n] (sin on even, cos on odd channels), then dropout.                      (B, n, L)"""

    def __init__(self, width: int, dropout: float, max_len: int = 5000) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
        pe = torch.zeros(max_len, width)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)[:, : width // 2]
        self.register_buffer("pe", pe, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[: x.shape[1]])


class OutputHead(nn.Sequential):
    """Linear(L, L), GELU, LayerNorm(eps 1e-12), Linear(L, out): OutputProcess(_Bert)."""

    def __init__(self, width: int, out: int) -> None:
        super().__init__(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width, eps=1e-12), nn.Linear(width, out))


def encoder_stack(cfg: MoMaskConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.latent_dim, cfg.num_heads, cfg.ff_dim, cfg.dropout, activation="gelu",
                                       batch_first=True)
    return nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)


def drop_condition(cond: torch.Tensor, prob: float, training: bool, force: bool) -> torch.Tensor:
    """The text feature zeroed for the whole batch (`force`: the unconditional pass) or, in training,
    per sample with probability `prob` (classifier-free guidance training)."""
    if force:
        return torch.zeros_like(cond)
    if training and prob > 0:
        keep = (torch.rand(cond.shape[0], device=cond.device) >= prob).to(cond.dtype)
        return cond * keep[:, None]
    return cond


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0
                         ) -> dict[str, torch.Tensor]:
    """CE over positions with labels >= 0 (B, n, K), (B, n) -> {"loss", "acc"}."""
    valid = labels >= 0
    if not valid.any():
        zero = logits.sum() * 0.0
        return {"loss": zero, "acc": zero.detach()}
    picked, target = logits[valid].float(), labels[valid]
    loss = F.cross_entropy(picked, target, label_smoothing=smoothing)
    acc = (picked.argmax(-1) == target).float().mean()
    return {"loss": loss, "acc": acc.detach()}


# ----------------------------------------------------------------------------- base layer
class MaskTransformer(nn.Module):
    """Bidirectional masked transformer over base-layer ids, conditioned on the pooled text feature."""

    def __init__(self, cfg: MoMaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mask_id, self.pad_id = cfg.nb_code, cfg.nb_code + 1
        self.token_emb = nn.Embedding(cfg.nb_code + 2, cfg.code_dim)
        self.input_process = nn.Linear(cfg.code_dim, cfg.latent_dim)
        self.position = SinusoidalPositions(cfg.latent_dim, cfg.dropout)
        self.cond_emb = nn.Linear(cfg.text_dim, cfg.latent_dim)
        self.encoder = encoder_stack(cfg)
        self.head = OutputHead(cfg.latent_dim, cfg.nb_code)
        self.apply(normal_init)

    def forward(self, ids: torch.Tensor, cond: torch.Tensor, pad: torch.Tensor, force_uncond: bool = False
                ) -> torch.Tensor:
        """ids (B, n) in [0, K + 2), cond (B, E), pad (B, n) True on pads -> logits (B, n, K)."""
        cond = drop_condition(cond, self.cfg.cond_drop_mask, self.training, force_uncond)
        x = self.position(self.input_process(self.token_emb(ids)))                  # (B, n, L)
        x = torch.cat([self.cond_emb(cond)[:, None], x], dim=1)                      # (B, 1 + n, L)
        key_pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        return self.head(self.encoder(x, src_key_padding_mask=key_pad)[:, 1:])

    def mask_inputs(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training inputs of ids (B, n) with `lengths` (B,) valid tokens: (inputs (B, n) with [MASK],
        random and kept ids on the masked positions and pad_id on pads, labels (B, n) = the ids on masked
        positions and -1 elsewhere, pad mask (B, n))."""
        batch, width = ids.shape
        valid = lengths_to_mask(lengths, width)
        ids = torch.where(valid, ids, torch.full_like(ids, self.pad_id))
        # the count is taken over the padded width n (the code's ntokens), then restricted to valid positions
        count = torch.round(cosine_schedule(torch.rand(batch, device=ids.device)) * width).clamp(min=1)
        ranks = torch.rand(batch, width, device=ids.device).argsort(dim=-1)
        masked = (ranks < count[:, None]) & valid
        labels = torch.where(masked, ids, torch.full_like(ids, -1))
        inputs = ids.clone()
        random_ids = subset(masked, self.cfg.remask_random)
        inputs = torch.where(random_ids, torch.randint_like(ids, self.cfg.nb_code), inputs)
        to_mask = subset(masked & ~random_ids, self.cfg.remask_token)
        inputs = torch.where(to_mask, torch.full_like(ids, self.mask_id), inputs)
        return inputs, labels, ~valid

    def loss(self, ids: torch.Tensor, lengths: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masked-token cross-entropy of base ids (B, n) with token lengths (B,) under text cond (B, E)."""
        inputs, labels, pad = self.mask_inputs(ids, lengths)
        return masked_cross_entropy(self(inputs, cond, pad), labels, self.cfg.label_smoothing)


# ----------------------------------------------------------------------------- residual layers
class ResidualTransformer(nn.Module):
    """Predicts residual layer q from the summed embeddings of layers < q."""

    def __init__(self, cfg: MoMaskConfig) -> None:
        super().__init__()
        if cfg.num_quantizers < 2:
            raise ValueError("the residual transformer needs a tokenizer with 2 or more quantizer layers")
        self.cfg = cfg
        self.pad_id = cfg.nb_code
        layers = cfg.num_quantizers - 1
        self.token_embed_weight = nn.Parameter(torch.randn(layers, cfg.nb_code + 1, cfg.code_dim) * 0.02)
        if cfg.share_weight:  # layers 1..Q-2 reuse their token embedding; the last layer has its own
            self.last_proj_weight = nn.Parameter(torch.randn(1, cfg.nb_code, cfg.code_dim) * 0.02)
        else:
            self.output_proj_weight = nn.Parameter(torch.randn(layers, cfg.nb_code, cfg.code_dim) * 0.02)
        self.output_proj_bias = nn.Parameter(torch.zeros(layers, cfg.nb_code))
        self.input_process = nn.Linear(cfg.code_dim, cfg.latent_dim)
        self.position = SinusoidalPositions(cfg.latent_dim, cfg.dropout)
        self.cond_emb = nn.Linear(cfg.text_dim, cfg.latent_dim)
        self.quant_emb = nn.Linear(cfg.num_quantizers, cfg.latent_dim)
        self.encoder = encoder_stack(cfg)
        self.head = OutputHead(cfg.latent_dim, cfg.code_dim)
        for module in (self.input_process, self.cond_emb, self.quant_emb, self.encoder, self.head):
            module.apply(normal_init)

    def output_weights(self) -> torch.Tensor:
        """(Q-1, K, C): the output projection of target layers 1..Q-1."""
        if self.cfg.share_weight:
            return torch.cat([self.token_embed_weight[1:, : self.cfg.nb_code], self.last_proj_weight], dim=0)
        return self.output_proj_weight

    def history(self, ids: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Sum of the embeddings of layers j < q: ids (B, n, Q') with pad_id on pads, q (B,) -> (B, n, C)."""
        layers = min(ids.shape[-1], self.cfg.num_quantizers - 1)
        codes = torch.stack([F.embedding(ids[..., j], self.token_embed_weight[j]) for j in range(layers)], -1)
        used = (torch.arange(layers, device=ids.device)[None] < q[:, None]).to(codes.dtype)   # (B, Q')
        return (codes * used[:, None, None]).sum(-1)                                           # (B, n, C)

    def forward(self, history: torch.Tensor, q: torch.Tensor, cond: torch.Tensor, pad: torch.Tensor,
                force_uncond: bool = False) -> torch.Tensor:
        """history (B, n, C), q (B,) in [1, Q-1], cond (B, E), pad (B, n) -> logits of layer q (B, n, K)."""
        cond = drop_condition(cond, self.cfg.cond_drop_residual, self.training, force_uncond)
        x = self.position(self.input_process(history))                                        # (B, n, L)
        q_emb = self.quant_emb(F.one_hot(q, self.cfg.num_quantizers).to(x.dtype))            # (B, L)
        x = torch.cat([self.cond_emb(cond)[:, None], q_emb[:, None], x], dim=1)             # (B, 2 + n, L)
        key_pad = torch.cat([torch.zeros_like(pad[:, :2]), pad], dim=1)
        out = self.head(self.encoder(x, src_key_padding_mask=key_pad)[:, 2:])               # (B, n, C)
        weight = self.output_weights()[q - 1]                                                 # (B, K, C)
        return torch.einsum("bnc,bkc->bnk", out, weight) + self.output_proj_bias[q - 1][:, None]

    def loss(self, ids: torch.Tensor, lengths: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """CE of layer q ~ q_schedule given layers < q: ids (B, n, Q), token lengths (B,), cond (B, E)."""
        batch, width, _ = ids.shape
        valid = lengths_to_mask(lengths, width)
        inputs = torch.where(valid[..., None], ids, torch.full_like(ids, self.pad_id))
        q = q_schedule(batch, 1, self.cfg.num_quantizers, ids.device)
        target = ids.gather(2, q[:, None, None].expand(batch, width, 1))[..., 0]
        labels = torch.where(valid, target, torch.full_like(target, -1))
        logits = self(self.history(inputs, q), q, cond, ~valid)
        return masked_cross_entropy(logits, labels, self.cfg.label_smoothing)


__all__ = ["MaskTransformer", "MoMaskConfig", "ResidualTransformer", "cosine_schedule", "lengths_to_mask",
           "q_schedule"]
