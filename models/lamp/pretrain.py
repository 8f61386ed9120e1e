"""LaMP language-motion pretraining (../shared/docs/MODELS.md 5.2; LaMP paper 3.1): the Q-Former over
the frozen motion VQ-VAE encoder, and its four objectives, summed unweighted (LaMP code):

    L = L_ptc + L_ptm + L_lm + L_gen

- L_ptc, motion-text contrastive: the max over the N_q query features of their cosine with the text
  feature, times the multiplicative `temp` (initialised to log(1/0.07) = 2.659, as LaMP's code; BLIP-2
  divides by a temperature instead), cross-entropy both ways with label smoothing 0.1. Uni-modal: the
  query pass and the text pass are separate calls, so neither sees the other.
- L_ptm, matching: one hard negative motion per text and one negative text per motion drawn from the
  softmax of the contrastive logits with the positives masked (`mask_positives`); queries and text in
  one bidirectional pass that cross-attends to the motion; `itm_head` averaged over the queries.
- L_lm, motion-grounded text generation (paper's L_mgt): the text, first token replaced by `[DEC]`,
  read causally while attending to the cached keys/values of the query pass; shifted cross-entropy,
  label smoothing 0.1, pads ignored.
- L_gen, text-grounded motion generation (paper Eq. 1, L_tgm): the queries cross-attend to the text
  embeddings projected to the memory width; `motion_cls` predicts the VQ code of each of the n = N_q
  motion tokens, all positions at once (LaMP's code; the paper calls it autoregressive), label smoothing
  0.1, padding codes included.

The motion encoder is any module with `encode_features(x (B, T, D) normalised) -> (B, T/4, code_dim)`
and `encode(x) -> ids (B, T/4)` (models.vq's VQVAE); it stays frozen and in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datasets_build.core.errors import UserError
from datasets_build.core.flags import option
from models.lamp.qformer import KeyValue, QFormerLM, qformer_config


class QueryCountMismatch(UserError, ValueError):
    """N_q query tokens that do not match the motion tokens of L_gen."""


@dataclass
class LaMPConfig:
    """The pretraining model (defaults: LaMP's code, a BERT-base Q-Former)."""

    vocab_size: int = option(30523, "text vocabulary incl. [DEC] (set from the tokenizer)")
    bos_token_id: int = option(30522, "id of [DEC] (set from the tokenizer)")
    pad_token_id: int = option(0, "id of [PAD] (set from the tokenizer)")
    hidden_size: int = option(768, "Q-Former width (BERT-base)")
    num_layers: int = option(12, "Q-Former layers")
    num_heads: int = option(12, "attention heads")
    intermediate_size: int = option(3072, "feed-forward width")
    max_positions: int = option(512, "BERT position embeddings")
    dropout: float = option(0.1, "BERT's hidden and attention dropout")
    initializer_range: float = option(0.02, "std of the Q-Former's random initialisation (BERT's 0.02)")
    encoder_width: int = option(1408, "cross-attention memory width (BLIP-2's EVA width, kept by LaMP)")
    cross_attention_freq: int = option(2, "a cross-attention block in every N-th layer")
    num_query_tokens: int = option(49, "N_q; must equal the motion tokens (196 frames / 4) for L_gen")
    motion_width: int = option(512, "the VQ encoder's output width (set from the motion tokenizer)")
    codebook_size: int = option(512, "VQ codes, the classes of L_gen (set from the motion tokenizer)")
    embed_dim: int = option(512, "width of the contrastive features (text_proj, motion_proj)")
    max_text_length: int = option(32, "BERT tokens per caption (max_length padding, truncation)")
    max_motion_length: int = option(196, "frames every motion is zero-padded to (n = this / 4 motion tokens)")
    label_smoothing: float = option(0.1, "label smoothing of L_ptc, L_lm and L_gen (L_ptm has none)")
    temp_init: float = option(math.log(1 / 0.07), "initial multiplicative logit scale of L_ptc")
    mask_positives: bool = option(True, "[inferred] hard negatives never draw the positive itself; LaMP's code "
                                        "fills the diagonal of a temporary copy, so it can (False)")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: `weight_decay` on trained >= 2-D weights, none on biases, norms, 1-D parameters."""
    decay, plain = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else plain).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class LaMP(nn.Module):
    """The Q-Former (`qformer`), learned queries, projections and heads over a frozen motion encoder (`vq`)."""

    def __init__(self, cfg: LaMPConfig, motion_encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.vq = motion_encoder
        for param in self.vq.parameters():
            param.requires_grad_(False)
        self.vq.eval()
        self.qformer = QFormerLM(qformer_config(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                                                cfg.intermediate_size, cfg.encoder_width, cfg.cross_attention_freq,
                                                cfg.max_positions, cfg.dropout, cfg.pad_token_id,
                                                cfg.initializer_range))
        self.qformer.copy_query_ffn()
        H, W = cfg.hidden_size, cfg.encoder_width
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_query_tokens, H) * 0.02)
        self.motion_projection = nn.Parameter(torch.randn(cfg.motion_width, W) * W ** -0.5)   # 512 -> 1408
        self.text_projection = nn.Parameter(torch.randn(H, W) * W ** -0.5)                    # 768 -> 1408
        self.text_proj = nn.Linear(H, cfg.embed_dim)
        self.motion_proj = nn.Linear(H, cfg.embed_dim)
        self.itm_head = nn.Linear(H, 2)
        self.motion_cls = nn.Linear(H, cfg.codebook_size, bias=False)
        self.temp = nn.Parameter(torch.tensor(float(cfg.temp_init)))

    def train(self, mode: bool = True) -> "LaMP":
        super().train(mode)
        self.vq.eval()  # frozen: its dropout stays off
        return self

    # ------------------------------------------------------------------------- passes
    def motion_memory(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, T, D) normalised, zero-padded motion -> (B, n, encoder_width) cross-attention memory."""
        with torch.no_grad():
            features = self.vq.encode_features(motion)                                 # (B, n, motion_width)
        return features.to(self.motion_projection.dtype) @ self.motion_projection   # (B, n, 1408)

    def query_pass(self, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, list[KeyValue]]:
        """The queries alone, cross-attending to `memory`: (B, N_q, H) and the keys/values for L_lm."""
        queries = self.query_tokens.expand(memory.shape[0], -1, -1)
        return self.qformer.bert(query_embeds=queries, encoder_hidden_states=memory,
                                 encoder_attention_mask=memory_mask)

    def text_pass(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The text alone, bidirectional over its real tokens: (B, L, H)."""
        return self.qformer.bert(ids, mask)[0]

    def motion_features(self, motion: torch.Tensor) -> torch.Tensor:
        """f_m: (B, N_q, embed_dim) unit-norm query features."""
        hidden, _ = self.query_pass(self.motion_memory(motion))
        return F.normalize(self.motion_proj(hidden), dim=-1)

    def text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """f_t: (B, embed_dim) unit-norm feature of the text's [CLS]."""
        return F.normalize(self.text_proj(self.text_pass(ids, mask)[:, 0]), dim=-1)

    def retrieval_features(self, motion: torch.Tensor | None = None, ids: torch.Tensor | None = None,
                           mask: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
        """LaMP-Feat (MODELS.md 5.6): text_proj([CLS]) (B, E) of `ids`, or the query mean of
        motion_proj (B, E) of `motion`. `normalize`: the trainer's unit-norm version (mean of unit query
        features, renormalised); otherwise the evaluator wrapper's raw ones (Euclidean distances)."""
        if motion is not None:
            hidden, _ = self.query_pass(self.motion_memory(motion))
            per_query = self.motion_proj(hidden)                                       # (B, N_q, E)
            if normalize:
                return F.normalize(F.normalize(per_query, dim=-1).mean(1), dim=-1)
            return per_query.mean(1)
        cls = self.text_proj(self.text_pass(ids, mask)[:, 0])                          # (B, E)
        return F.normalize(cls, dim=-1) if normalize else cls

    # ------------------------------------------------------------------------- losses
    def forward(self, motion: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`losses` (a forward, so DistributedDataParallel averages the gradients)."""
        return self.losses(motion, ids, mask, targets)

    def contrastive_logits(self, f_m: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        """temp * max_q <f_m[i, q], f_t[j]>: (B_motion, B_text)."""
        return self.temp * torch.einsum("iqe,je->ijq", f_m, f_t).max(-1).values

    def hard_negatives(self, logits_m2t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a negative motion per text, a negative text per motion), drawn from the softmax of the logits."""
        with torch.no_grad():
            m2t, t2m = logits_m2t.float().clone(), logits_m2t.float().t().clone()
            if self.cfg.mask_positives:
                m2t.fill_diagonal_(-10000.0)
                t2m.fill_diagonal_(-10000.0)
            motion_for_text = torch.multinomial(F.softmax(t2m, dim=1), 1).squeeze(1)   # (B,)
            text_for_motion = torch.multinomial(F.softmax(m2t, dim=1), 1).squeeze(1)   # (B,)
        return motion_for_text, text_for_motion

    def losses(self, motion: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
               targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"loss", "ptc", "ptm", "lm", "gen"} of a batch: motion (B, T, D) normalised and zero-padded,
        ids / mask (B, L) BERT tokens of the captions, targets (B, n) VQ ids (default: encoded here)."""
        B, cfg = motion.shape[0], self.cfg
        if B < 2:
            raise ValueError("LaMP's contrastive and matching losses need at least 2 pairs per batch")
        mask = mask.bool()
        memory = self.motion_memory(motion)                                            # (B, n, 1408)
        query_hidden, past = self.query_pass(memory)                                   # (B, N_q, H)
        f_m = F.normalize(self.motion_proj(query_hidden), dim=-1)                      # (B, N_q, E)
        f_t = F.normalize(self.text_proj(self.text_pass(ids, mask)[:, 0]), dim=-1)     # (B, E)

        # L_ptc: contrastive, max over the queries
        logits = self.contrastive_logits(f_m, f_t)                                     # (B_m, B_t)
        labels = torch.arange(B, device=motion.device)
        ptc = (F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
               + F.cross_entropy(logits.t(), labels, label_smoothing=cfg.label_smoothing)) / 2

        # L_ptm: matching on (text, motion), (text, hard negative motion), (hard negative text, motion)
        neg_motion, neg_text = self.hard_negatives(logits)
        ids_all = torch.cat([ids, ids, ids[neg_text]])                                 # (3B, L)
        mask_all = torch.cat([mask, mask, mask[neg_text]])
        memory_all = torch.cat([memory, memory[neg_motion], memory])                   # (3B, n, 1408)
        queries = self.query_tokens.expand(3 * B, -1, -1)
        joint_mask = torch.cat([torch.ones(3 * B, cfg.num_query_tokens, dtype=torch.bool, device=mask.device),
                                mask_all], dim=1)
        joint, _ = self.qformer.bert(ids_all, joint_mask, query_embeds=queries, encoder_hidden_states=memory_all)
        itm_logits = self.itm_head(joint[:, :cfg.num_query_tokens]).mean(1)           # (3B, 2)
        itm_labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(motion.device)
        ptm = F.cross_entropy(itm_logits, itm_labels)

        # L_lm: causal text generation over the cached query keys/values
        decoder_ids = ids.clone()
        decoder_ids[:, 0] = cfg.bos_token_id
        lm_labels = decoder_ids.masked_fill(~mask, -100)
        lm_mask = torch.cat([torch.ones(B, cfg.num_query_tokens, dtype=torch.bool, device=mask.device), mask], 1)
        lm_logits = self.qformer(decoder_ids, lm_mask, past)                           # (B, L, vocab)
        lm = F.cross_entropy(lm_logits[:, :-1].flatten(0, 1), lm_labels[:, 1:].flatten(),
                             ignore_index=-100, label_smoothing=cfg.label_smoothing)

        # L_gen (Eq. 1): queries read the projected text embeddings and predict the VQ ids
        gen = self.motion_generation_loss(motion, decoder_ids, mask, targets)
        return {"loss": ptc + ptm + lm + gen, "ptc": ptc, "ptm": ptm, "lm": lm, "gen": gen}

    def motion_generation_logits(self, decoder_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N_q, codebook_size) code logits of the queries that cross-attend to the text embeddings."""
        text_memory = self.qformer.bert.embeddings(decoder_ids) @ self.text_projection  # (B, L, 1408)
        hidden, _ = self.query_pass(text_memory, mask)
        return self.motion_cls(hidden)

    def motion_generation_loss(self, motion: torch.Tensor, decoder_ids: torch.Tensor, mask: torch.Tensor,
                               targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None:
            with torch.no_grad():
                targets = self.vq.encode(motion)                                       # (B, n)
        if targets.dim() != 2 or targets.shape[1] != self.cfg.num_query_tokens:
            raise QueryCountMismatch(
                f"L_gen needs one query per motion token, but the model has {self.cfg.num_query_tokens} queries and "
                f"the motion has {tuple(targets.shape)[1:]} tokens: set num_query_tokens to max_motion_length / 4")
        logits = self.motion_generation_logits(decoder_ids, mask)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().long(),
                               label_smoothing=self.cfg.label_smoothing)


__all__ = ["LaMP", "LaMPConfig", "QueryCountMismatch", "decay_groups"]
