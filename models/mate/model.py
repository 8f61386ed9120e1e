"""MATE (Motion-Aligned Text Encoding): word embeddings fine-tuned so words align with the motion
frames they describe. Facts from MODELS.md section 6 (the paper; its code is not public).

Shapes: B batch, T frames, D_pose motion features, d motion-feature width, E token-embedding width,
S sentence-feature width, K prototypes (vocabulary lemmas).

    F^m, f^m   = MotionEncoder(m)                           (B, T, d) frames, (B, d) [CLS]
    q          = Proj(WE(w))                                (B, d)            Eq. 3 query; also f^e_w (Eq. 6)
    prior_t    = exp(-(t - c_n)^2 / (2 sigma_n^2))          (B, T)            Eq. 4, n = w's sub-text
    K          = (1 + lambda * prior) * F^m, V = F^m                          Eq. 3
    f^m_w      = MultiHead(q, K, V)                         (B, d)            Eq. 2
    L_self     = CE(cos(f^m_w, prototypes) / tau, lemma)    logits (B, K)     Eq. 5
    L_cross    = mean |cos| over negative pairs                               Eq. 6
    L_align    = symmetric InfoNCE(f^e_w, f^m_w), same-lemma pairs masked      Eq. 6
    L_sent     = symmetric InfoNCE(SentProj(f^t), f^m)
    L_rec      = smooth-L1(Decoder(f^m), m) over real frames
    L_all      = w_rec L_rec + lambda1 (L_self + L_cross + L_align) + lambda2 L_sent    Eq. 7-8

Every setting the paper leaves open is a config field whose help says [inferred].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from datasets_build.core.flags import option
from models.mate.text import TextTower

PRIORS = ("gaussian", "gaussian_inside", "binary", "none")  # Table 6's four variants


@dataclass
class MateConfig:
    motion_dim: int = option(263, "motion features D_pose (263 HumanML3D, 251 KIT-ML)")
    max_length: int = option(196, "longest motion in frames")
    latent_dim: int = option(256, "motion-feature width d [inferred: TMR's width; the paper does not say]")
    encoder_layers: int = option(4, "motion encoder transformer layers [inferred: TMR-style, not in the paper]")
    decoder_layers: int = option(4, "motion decoder transformer layers [inferred: TMR-style, not in the paper]")
    num_heads: int = option(4, "heads of the motion encoder/decoder [inferred: not in the paper]")
    ff_dim: int = option(1024, "FFN width of the motion encoder/decoder [inferred: 4 d, not in the paper]")
    dropout: float = option(0.1, "dropout in the motion encoder/decoder [inferred: not in the paper]")
    word_heads: int = option(4, "heads of the word-to-motion attention (Eq. 2) [inferred: not in the paper]")
    prior: Literal[PRIORS] = option("gaussian", "attention prior (Eq. 4, Table 6): gaussian over all frames (the paper's best), "
                                    "gaussian_inside (zero outside the segment), binary (1 inside), none")
    prior_weight: float = option(1.0, "lambda of Eq. 3, K = (1 + lambda prior) F^m [inferred: not in the paper]")
    temperature: float = option(0.07, "tau of every InfoNCE [inferred: the CLIP/TMR convention, not in the paper]")
    word_weight: float = option(1.0, "lambda1 of Eq. 8 (L_word) [inferred: not in the paper]")
    sentence_weight: float = option(1.0, "lambda2 of Eq. 8 (L_sent) [inferred: not in the paper]")
    reconstruction_weight: float = option(1.0, "weight of L_rec (1 in Eq. 8)")
    self_weight: float = option(1.0, "weight of L_self inside L_word (1 in Eq. 7)")
    cross_weight: float = option(1.0, "weight of L_cross inside L_word (1 in Eq. 7)")
    align_weight: float = option(1.0, "weight of L_align inside L_word (1 in Eq. 7)")
    num_prototypes: int = option(0, "K, the vocabulary size (set from the build's vocabulary)")
    token_width: int = option(512, "the text encoder's token-embedding width E (set from the encoder)")
    sentence_width: int = option(512, "the text encoder's sentence-feature width S (set from the encoder)")


# ----------------------------------------------------------------------------- helpers
def sinusoid(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sinusoidal positions (length, dim)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


def attention_prior(start: torch.Tensor, end: torch.Tensor, frames: int, kind: str = "gaussian",
                    has_segment: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4 over frames 0..frames-1 for segments [start, end) (B,): c = (s+e)/2, sigma = (e-s)/2
    (at least half a frame, so an empty segment gives no division by zero).

    gaussian: exp(-(t-c)^2 / (2 sigma^2)) everywhere; gaussian_inside: zero outside [s, e]; binary:
    1 inside [s, e]; none: 0. Samples without a segment (`has_segment` False) get 0 (no prior)."""
    if kind not in PRIORS:
        raise ValueError(f"unknown attention prior {kind!r}; choose one of {', '.join(PRIORS)}")
    start, end = start.float()[:, None], end.float()[:, None]
    t = torch.arange(frames, device=start.device, dtype=torch.float32)[None]              # (1, T)
    center, sigma = (start + end) / 2, ((end - start) / 2).clamp(min=0.5)
    inside = (t >= start) & (t <= end)
    if kind == "none":
        prior = torch.zeros(len(start), frames, device=start.device)
    elif kind == "binary":
        prior = inside.float()
    else:
        prior = torch.exp(-(t - center) ** 2 / (2 * sigma ** 2))                           # (B, T)
        if kind == "gaussian_inside":
            prior = prior * inside
    if has_segment is not None:
        prior = prior * has_segment.float()[:, None]
    return prior


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, same: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of matched rows a_i <-> b_i (B, d); `same` (B, B) marks off-diagonal pairs
    that are not negatives (same lemma / same caption), removed from both softmaxes."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature              # (B, B)
    if same is not None:
        off = same & ~torch.eye(len(a), dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(off, float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def cross_loss(own: torch.Tensor, word_on_motion: torch.Tensor, not_in_caption: torch.Tensor) -> torch.Tensor:
    """Eq. 6 L_cross. own (B, d) = f^{m_i}_{w_i}; word_on_motion (B, B, d) = f^{m_i}_{w_j} (motion i,
    word j); not_in_caption (B, B) bool = w_j's lemma is not in t_i (the negative pairs N)."""
    own_n, grid = F.normalize(own, dim=-1), F.normalize(word_on_motion, dim=-1)
    other_word = (own_n[:, None] * grid).sum(-1).abs()       # |cos(f^{m_i}_{w_i}, f^{m_i}_{w_j})|  (B, B)
    other_motion = (own_n[None] * grid).sum(-1).abs()       # [j, i] = |cos(f^{m_i}_{w_i}, f^{m_j}_{w_i})|
    first = not_in_caption.float()                           # w_j not in t_i
    second = not_in_caption.float()                          # [j, i]: w_i not in t_j
    eye = torch.eye(len(own), device=own.device)
    first, second = first * (1 - eye), second * (1 - eye)
    total = (other_word * first).sum() + (other_motion * second).sum()
    return total / (first.sum() + second.sum()).clamp(min=1)


# ----------------------------------------------------------------------------- modules
class MotionEncoder(nn.Module):
    """Linear(D_pose -> d) + sinusoidal positions, a learned [CLS] token, a transformer encoder:
    f^m = the [CLS] output (B, d), F^m = the frame outputs (B, T, d) [inferred: TMR-style]."""

    def __init__(self, cfg: MateConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.motion_dim, cfg.latent_dim)
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.latent_dim) * 0.02)
        self.register_buffer("positions", sinusoid(cfg.max_length + 1, cfg.latent_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(cfg.latent_dim, cfg.num_heads, cfg.ff_dim, cfg.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, enable_nested_tensor=False)

    def forward(self, motion: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = motion.shape
        x = torch.cat([self.cls.expand(B, -1, -1), self.embed(motion)], 1) + self.positions[: T + 1]  # (B, 1+T, d)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=mask.device), mask], 1)
        x = self.encoder(x, src_key_padding_mask=~keep)
        return x[:, 0], x[:, 1:]                                                            # f^m, F^m


class MotionDecoder(nn.Module):
    """Sinusoidal time queries cross-attend to f^m through a transformer decoder -> Linear(d -> D_pose)
    [inferred: TMR-style; the paper only says m is reconstructed from f^m]."""

    def __init__(self, cfg: MateConfig) -> None:
        super().__init__()
        self.register_buffer("queries", sinusoid(cfg.max_length, cfg.latent_dim), persistent=False)
        layer = nn.TransformerDecoderLayer(cfg.latent_dim, cfg.num_heads, cfg.ff_dim, cfg.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers)
        self.out = nn.Linear(cfg.latent_dim, cfg.motion_dim)

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T = mask.shape
        queries = self.queries[:T][None].expand(B, -1, -1)
        h = self.decoder(queries, sequence[:, None], tgt_key_padding_mask=~mask)
        return self.out(h)                                                                  # (B, T, D_pose)


class WordAttention(nn.Module):
    """Eq. 2-3: f^m_w = MultiHead(q, (1 + lambda prior) F^m, F^m), the padded frames masked."""

    def __init__(self, cfg: MateConfig) -> None:
        super().__init__()
        self.prior_weight = cfg.prior_weight
        self.attention = nn.MultiheadAttention(cfg.latent_dim, cfg.word_heads, batch_first=True)

    def keys(self, frames: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        """K = (1 + lambda prior) * F^m (B, T, d); F^m itself without a prior."""
        return frames if prior is None else (1 + self.prior_weight * prior)[..., None] * frames

    def forward(self, query: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Q, d) against motion b's frames (B, T, d) -> (B, Q, d), weights (B, Q, T)."""
        out, weights = self.attention(query, self.keys(frames, prior), frames, key_padding_mask=~mask,
                                      need_weights=True, average_attn_weights=True)
        return out, weights


class Mate(nn.Module):
    def __init__(self, cfg: MateConfig, text: TextTower) -> None:
        super().__init__()
        if cfg.num_prototypes < 1:
            raise ValueError("MateConfig.num_prototypes must be the vocabulary size K >= 1")
        self.cfg, self.text = cfg, text
        self.motion_encoder = MotionEncoder(cfg)
        self.motion_decoder = MotionDecoder(cfg)
        self.proj = nn.Linear(cfg.token_width, cfg.latent_dim)            # Proj: WE(w) -> motion space
        self.sentence_proj = nn.Linear(cfg.sentence_width, cfg.latent_dim)  # f^t -> d [inferred]
        self.word_attention = WordAttention(cfg)
        self.prototypes = nn.Parameter(torch.zeros(cfg.num_prototypes, cfg.latent_dim))

    @torch.no_grad()
    def init_prototypes(self, lemmas: list[str]) -> None:
        """f^p_k = Proj(WE(lemma_k)) at step 0, then free [inferred: the paper initialises prototypes
        from the LM's word embeddings; they must live in d to meet motion features]."""
        if len(lemmas) != self.cfg.num_prototypes:
            raise ValueError(f"{len(lemmas)} lemmas for {self.cfg.num_prototypes} prototypes")
        for lo in range(0, len(lemmas), 512):
            chunk = lemmas[lo:lo + 512]
            self.prototypes[lo:lo + len(chunk)] = self.proj(self.text.word_embeddings(chunk))

    def trainable_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(the embedding table, everything else that trains): two learning rates."""
        table = self.text.embedding.weight
        rest = [p for n, p in self.named_parameters() if p.requires_grad and p is not table]
        return [table], rest

    def prototype_logits(self, word_motion: torch.Tensor) -> torch.Tensor:
        """cos(f^m_w, f^p_k) / tau: (B, K)."""
        protos = F.normalize(self.prototypes, dim=-1)
        return F.normalize(word_motion, dim=-1) @ protos.T / self.cfg.temperature

    def attend(self, words: list[str], motion: torch.Tensor, mask: torch.Tensor, start: torch.Tensor,
               end: torch.Tensor, has_segment: torch.Tensor) -> dict[str, torch.Tensor]:
        """Motion features and every word's attention on its own motion (with the prior)."""
        sequence, frames = self.motion_encoder(motion, mask)                                # (B, d), (B, T, d)
        query = self.proj(self.text.word_embeddings(words))                                # (B, d) = f^e_w
        prior = attention_prior(start, end, motion.shape[1], self.cfg.prior, has_segment)  # (B, T)
        own, weights = self.word_attention(query[:, None], frames, mask, prior)            # (B, 1, d)
        return {"sequence": sequence, "frames": frames, "query": query, "prior": prior,
                "word_motion": own[:, 0], "weights": weights[:, 0]}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """The losses of a triplet batch (a forward, so DistributedDataParallel can wrap the model)."""
        return self.losses(batch)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg, device = self.cfg, self.prototypes.device
        motion, mask = batch["motion"].to(device), batch["mask"].to(device)
        out = self.attend(batch["word"], motion, mask, batch["seg_start"].to(device), batch["seg_end"].to(device),
                          batch["has_segment"].to(device))
        lemma = batch["lemma"].to(device)
        own, query = out["word_motion"], out["query"]
        l_self = F.cross_entropy(self.prototype_logits(own), lemma)                        # Eq. 5
        # f^{m_i}_{w_j}: every word on every motion, without a prior (w_j is not motion i's word)
        B = len(own)
        grid, _ = self.word_attention(query[None].expand(B, -1, -1), out["frames"], mask)  # (B_m, B_w, d)
        grid = grid.clone()
        grid[torch.arange(B), torch.arange(B)] = own                                       # diagonal: with prior
        l_cross = cross_loss(own, grid, ~batch["contains"].to(device))                     # Eq. 6
        same_lemma = lemma[:, None] == lemma[None]
        l_align = info_nce(query, own, cfg.temperature, same_lemma)                        # Eq. 6
        ids, text_mask = self.text.tokenize(batch["caption"])
        sentence = self.sentence_proj(self.text.sentence(ids, text_mask))                  # (B, d)
        l_sent = info_nce(sentence, out["sequence"], cfg.temperature, batch["same_caption"].to(device))
        recon = self.motion_decoder(out["sequence"], mask)
        per_frame = F.smooth_l1_loss(recon, motion, reduction="none").mean(-1)             # (B, T)
        l_rec = (per_frame * mask).sum() / mask.sum().clamp(min=1)
        l_word = cfg.self_weight * l_self + cfg.cross_weight * l_cross + cfg.align_weight * l_align   # Eq. 7
        loss = cfg.reconstruction_weight * l_rec + cfg.word_weight * l_word + cfg.sentence_weight * l_sent  # Eq. 8
        return {"loss": loss, "word": l_word, "self": l_self, "cross": l_cross, "align": l_align,
                "sent": l_sent, "rec": l_rec}


__all__ = ["PRIORS", "Mate", "MateConfig", "MotionDecoder", "MotionEncoder", "WordAttention", "attention_prior",
           "cross_loss", "info_nce", "sinusoid"]
