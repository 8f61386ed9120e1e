"""LaMP-T2M: masked motion-token prediction conditioned on the frozen LaMP Q-Former (../shared/docs/MODELS.md
5.3; LaMP paper 3.2 and 3.5; LaMP's code models/mask_transformer/transformer.py MaskTransformer).

Condition path (`LaMPCondition`): BERT tokens of the caption (max_length 49) go through the frozen
Q-Former's text path (B, 49, H); the new, trained `text2former` maps them to the cross-attention width
(B, 49, 1408); the frozen query tokens cross-attend to that memory (memory mask all ones, as the code)
and their outputs are averaged into `cond` (B, H). `cond_path="text"` averages the projected text
instead (an ablation file of the released code, the paper's Table 6 row without query tokens).

Token transformer (`MaskedTokenTransformer`): `[cond ; tokens]` of length n+1 through a post-norm
`nn.TransformerEncoder` (GELU), always with the key-padding mask. `attention_mask`:
- "causal_bool" (default, the paper 3.2.2): a true causal mask, output i sees cond and tokens <= i;
- "float_tril" (the released code): `tril(ones)` as a FLOAT mask, which PyTorch adds to the logits,
  i.e. a +1 bias on past positions and no causality at all (kept only to reproduce the code).

Training (`masking`, `forward`): r ~ U(0,1), gamma(r) = cos(pi r / 2) (paper 3.2.1); round(gamma * n) tokens
masked (min 1; the paper writes ceil: `mask_count_rounding`); BERT re-masking of the masked positions:
`remask_random` get a random code, `remask_mask` of the rest get [MASK], the others stay (code 10% / 88% of
90%: 10/79/11; the paper's 80/10/10 is remask_mask = 0.8889); cross-entropy on the masked positions (Eq. 2);
cond zeroed with p = cond_drop_prob.

Inference (`generate`): K steps of confidence-ordered re-masking with the cosine schedule, classifier-free
guidance (`guided_logits`: paper Eq. 4 `(1+a) l_c - a l_u` or the code's `l_u + s (l_c - l_u)`), top-k
filter (keep ceil((1 - thres) * codes) logits), categorical (or Gumbel) sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from datasets_build.core.flags import option
from models.nn.init import normal_init

AttentionMask = Literal["causal_bool", "float_tril"]
CfgForm = Literal["paper", "code"]
CondPath = Literal["queries", "text"]
IGNORE = -100


@dataclass
class T2MConfig:
    """LaMP-T2M's token transformer and sampling settings (defaults: the paper's 6 layers, 6 heads, 384 wide;
    the code's 8/8/512 is the `code` preset)."""

    codebook_size: int = option(512, "VQ codes (set from the LaMP run's motion tokenizer)")
    max_tokens: int = option(49, "n: motion tokens of the longest motion (196 frames / 4)")
    cond_width: int = option(768, "width of the Q-Former condition (set from the LaMP run)")
    memory_width: int = option(1408, "text2former output width, the Q-Former's cross-attention width (set from LaMP)")
    max_text_length: int = option(49, "BERT tokens of a caption for the condition (the code's max_length 49)")
    cond_path: CondPath = option("queries", "queries: frozen query tokens read the projected text (MODELS.md 5.3); "
                                            "text: mean of the projected text (an ablation file of the code)")
    token_dim: int = option(512, "token embedding width (the code's code_dim)")
    latent_dim: int = option(384, "transformer width (paper 384; code 512)")
    num_heads: int = option(6, "attention heads (paper 6; code 8)")
    num_layers: int = option(6, "transformer layers (paper 6; code 8)")
    ff_dim: int = option(1024, "feed-forward width (code)")
    dropout: float = option(0.2, "dropout (code)")
    attention_mask: AttentionMask = option("causal_bool", "causal_bool: true causal mask (paper); float_tril: the "
                                                          "code's additive tril(ones), not causal")
    cond_drop_prob: float = option(0.1, "probability of zeroing the condition in training (classifier-free guidance)")
    mask_count_rounding: Literal["round", "ceil"] = option("round", "masked count = round(gamma n) (code) or "
                                                                     "ceil(gamma n) (the paper's text)")
    mask_count_on_padded: bool = option(True, "count masked tokens on the padded n, then keep the valid ones (code); "
                                              "False: count on each motion's own length [inferred alternative]")
    remask_random: float = option(0.1, "share of masked positions given a random code (BERT re-masking)")
    remask_mask: float = option(0.88, "share of the remaining masked positions given [MASK] (code 0.88; paper 0.8889)")
    timesteps: int = option(10, "decoding iterations K (paper 10)")
    cfg_scale: float = option(4.0, "guidance scale (paper: 4 HumanML3D, 2 KIT; set from the dataset at training)")
    cfg_form: CfgForm = option("paper", "paper: (1+s) l_c - s l_u (Eq. 4); code: l_u + s (l_c - l_u), i.e. s-1 here")
    topk_filter_thres: float = option(0.9, "keep the top ceil((1 - thres) * codes) logits (code 0.9: 52 of 512)")
    temperature: float = option(1.0, "sampling temperature")
    gumbel_sample: bool = option(False, "argmax of Gumbel-perturbed logits, not categorical sampling (code option)")

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def pad_id(self) -> int:
        return self.codebook_size + 1


# ----------------------------------------------------------------------------- helpers
def cosine_schedule(r: torch.Tensor) -> torch.Tensor:
    """gamma(r) = cos(pi r / 2): the share of tokens masked (paper 3.2.1, MoMask's schedule)."""
    return torch.cos(r * math.pi * 0.5)


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float, form: CfgForm) -> torch.Tensor:
    """Classifier-free guidance: paper Eq. 4 `(1+s) l_c - s l_u`, or the code's `l_u + s (l_c - l_u)`
    (code s = paper s + 1; code s = 1 returns l_c)."""
    if form == "paper":
        return (1.0 + scale) * cond - scale * uncond
    if form == "code":
        return uncond + scale * (cond - uncond)
    raise ValueError(f"cfg_form must be 'paper' or 'code', not {form!r}")


def top_k_filter(logits: torch.Tensor, thres: float) -> torch.Tensor:
    """Keep the ceil((1 - thres) * V) largest logits of the last axis, -inf elsewhere."""
    k = max(1, math.ceil((1.0 - thres) * logits.shape[-1]))
    values, index = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter_(-1, index, values)


def masking(ids: torch.Tensor, valid: torch.Tensor, cfg: T2MConfig, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, labels, masked) of a training batch: ids (B, n) codes (pads any value), valid (B, n) bool.
    labels are the codes on masked positions, IGNORE elsewhere; pads are never masked and get pad_id."""
    B, n = ids.shape
    device = ids.device
    ids = torch.where(valid, ids, torch.full_like(ids, cfg.pad_id))
    r = torch.rand(B, device=device, generator=generator)
    base = torch.full((B,), float(n), device=device) if cfg.mask_count_on_padded else valid.sum(1).float()
    share = cosine_schedule(r) * base
    count = (share.ceil() if cfg.mask_count_rounding == "ceil" else share.round()).clamp(min=1)   # (B,)
    noise = torch.rand(B, n, device=device, generator=generator)
    if not cfg.mask_count_on_padded:
        noise = noise.masked_fill(~valid, 2.0)                                     # pads rank last
    rank = noise.argsort(dim=1).argsort(dim=1)                                     # a random permutation
    masked = (rank < count[:, None]) & valid                                       # (B, n)
    labels = torch.where(masked, ids, torch.full_like(ids, IGNORE))

    # BERT re-masking: random codes, then [MASK] on a share of the rest, the others kept
    to_random = masked & (torch.rand(B, n, device=device, generator=generator) < cfg.remask_random)
    random_ids = torch.randint(0, cfg.codebook_size, (B, n), device=device, generator=generator)
    inputs = torch.where(to_random, random_ids, ids)
    to_mask = masked & ~to_random & (torch.rand(B, n, device=device, generator=generator) < cfg.remask_mask)
    inputs = torch.where(to_mask, torch.full_like(ids, cfg.mask_id), inputs)
    return inputs, labels, masked


def sinusoidal_table(length: int, width: int) -> torch.Tensor:
    """(length, width) sine/cosine position encodings (Vaswani et al.)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: width // 2])
    return table


# ----------------------------------------------------------------------------- modules
class LaMPCondition(nn.Module):
    """The frozen LaMP text path and query tokens, with the trained `text2former`: (ids, mask) -> cond (B, H)."""

    def __init__(self, bert: nn.Module, query_tokens: torch.Tensor, memory_width: int, cond_path: CondPath) -> None:
        super().__init__()
        self.bert = bert.requires_grad_(False)                                     # LaMP's Qformer.bert
        self.query_tokens = nn.Parameter(query_tokens.detach().clone(), requires_grad=False)   # (1, N_q, H)
        self.text2former = nn.Linear(query_tokens.shape[-1], memory_width)
        self.cond_path = cond_path

    def train(self, mode: bool = True) -> "LaMPCondition":
        super().train(mode)
        self.bert.eval()  # frozen: its dropout stays off
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            text, _ = self.bert(ids, mask.bool())                                  # (B, L, H)
        memory = self.text2former(text)                                            # (B, L, 1408)
        if self.cond_path == "text":
            return memory.mean(1)
        queries = self.query_tokens.expand(ids.shape[0], -1, -1)
        hidden, _ = self.bert(query_embeds=queries, encoder_hidden_states=memory)  # (B, N_q, H), memory mask all ones
        return hidden.mean(1)                                                      # (B, H)


class OutputHead(nn.Module):
    """The code's OutputProcess_Bert: Linear, GELU, LayerNorm(eps 1e-12), Linear to the codes."""

    def __init__(self, latent: int, codes: int) -> None:
        super().__init__()
        self.dense = nn.Linear(latent, latent)
        self.norm = nn.LayerNorm(latent, eps=1e-12)
        self.out = nn.Linear(latent, codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(F.gelu(self.dense(x))))


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer (nn.TransformerEncoderLayer's parameter names, GELU) that takes one
    additive float mask (B, 1, L, L). Written out because PyTorch's inference fast path mishandles float masks
    with non-zero allowed entries (the code-compat `float_tril`): it returns NaN there."""

    def __init__(self, width: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout_p = heads, dropout
        self.self_attn = nn.Module()
        self.self_attn.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.self_attn.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.self_attn.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.self_attn.in_proj_weight)
        self.linear1, self.linear2 = nn.Linear(width, ff_dim), nn.Linear(ff_dim, width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def attend(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, W = x.shape
        q, k, v = F.linear(x, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.view(B, L, self.heads, W // self.heads).transpose(1, 2) for t in (q, k, v))   # (B, h, L, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype),
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return self.self_attn.out_proj(out.transpose(1, 2).reshape(B, L, W))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attend(x, mask)))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x))))))


class MaskedTokenTransformer(nn.Module):
    """Token embedding (codes + [MASK] + [PAD]), input projection, positions, [cond ; tokens], encoder, head."""

    def __init__(self, cfg: T2MConfig, cond_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_emb = nn.Embedding(cfg.codebook_size + 2, cfg.token_dim)
        self.input_process = nn.Linear(cfg.token_dim, cfg.latent_dim)
        self.register_buffer("positions", sinusoidal_table(cfg.max_tokens, cfg.latent_dim), persistent=False)
        self.position_dropout = nn.Dropout(cfg.dropout)
        self.cond_emb = nn.Linear(cond_width, cfg.latent_dim)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(cfg.latent_dim, cfg.num_heads, cfg.ff_dim, cfg.dropout)
                                            for _ in range(cfg.num_layers))
        self.head = OutputHead(cfg.latent_dim, cfg.codebook_size)
        self.apply(normal_init)

    def attention_mask(self, padding: torch.Tensor) -> torch.Tensor:
        """The additive mask (B, 1, n+1, n+1) of [cond ; tokens]: the chosen attention mask plus the key-padding
        mask (-inf on pad keys; the cond key is always readable, so no row is empty); padding (B, n) True = pad."""
        B, n = padding.shape
        pads = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=padding.device), padding], dim=1)
        blocked = pads[:, None, None, :].expand(B, 1, n + 1, n + 1)
        if self.cfg.attention_mask == "causal_bool":
            later = torch.ones(n + 1, n + 1, dtype=torch.bool, device=padding.device).triu(1)
            return torch.zeros(B, 1, n + 1, n + 1, device=padding.device).masked_fill(blocked | later, float("-inf"))
        if self.cfg.attention_mask == "float_tril":  # the released code: an additive +1 on past keys, not causal
            tril = torch.tril(torch.ones(n + 1, n + 1, device=padding.device))
            return tril.expand(B, 1, n + 1, n + 1).masked_fill(blocked, float("-inf"))
        raise ValueError(f"attention_mask must be 'causal_bool' or 'float_tril', not {self.cfg.attention_mask!r}")

    def forward(self, ids: torch.Tensor, cond: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """ids (B, n) with mask/pad ids, cond (B, cond_width), padding (B, n) True = pad -> logits (B, n, codes)."""
        n = ids.shape[1]
        x = self.input_process(self.token_emb(ids))                                # (B, n, latent)
        x = self.position_dropout(x + self.positions[:n])
        x = torch.cat([self.cond_emb(cond)[:, None], x], dim=1)                     # (B, n+1, latent)
        mask = self.attention_mask(padding)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.head(x[:, 1:])                                                 # (B, n, codes)


class LaMPT2M(nn.Module):
    """The condition path over a frozen LaMP Q-Former and the masked token transformer."""

    def __init__(self, cfg: T2MConfig, bert: nn.Module, query_tokens: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.condition = LaMPCondition(bert, query_tokens, cfg.memory_width, cfg.cond_path)
        self.transformer = MaskedTokenTransformer(cfg, query_tokens.shape[-1])

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.condition(ids, mask)                                           # (B, H)

    def logits(self, ids: torch.Tensor, cond: torch.Tensor, padding: torch.Tensor, drop_cond: bool = False
               ) -> torch.Tensor:
        if drop_cond:
            cond = torch.zeros_like(cond)
        return self.transformer(ids, cond, padding)

    def guided(self, ids: torch.Tensor, cond: torch.Tensor, padding: torch.Tensor, scale: float,
               form: CfgForm) -> torch.Tensor:
        """Guided logits (B, n, codes); the conditional ones alone where guidance is the identity."""
        cond_logits = self.logits(ids, cond, padding)
        if (form == "code" and scale == 1.0) or (form == "paper" and scale == 0.0):
            return cond_logits
        return guided_logits(cond_logits, self.logits(ids, cond, padding, drop_cond=True), scale, form)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The masked-token loss of a batch: ids (B, n) codes, lengths (B,) in tokens."""
        n = ids.shape[1]
        valid = torch.arange(n, device=ids.device)[None] < lengths[:, None]       # (B, n)
        inputs, labels, _ = masking(ids, valid, self.cfg, generator)
        cond = self.encode_text(text_ids, text_mask)
        if self.training and self.cfg.cond_drop_prob > 0:
            keep = torch.rand(cond.shape[0], device=cond.device, generator=generator) >= self.cfg.cond_drop_prob
            cond = cond * keep[:, None].to(cond.dtype)
        logits = self.transformer(inputs, cond, ~valid)                           # (B, n, codes)
        targets = (labels != IGNORE).sum().clamp(min=1)   # a batch can mask no real token (the code's count on n)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                               reduction="sum") / targets
        hits = (logits.argmax(-1) == labels) & (labels != IGNORE)
        accuracy = hits.sum() / targets
        return {"loss": loss, "accuracy": accuracy.detach()}

    @torch.no_grad()
    def generate(self, text_ids: torch.Tensor, text_mask: torch.Tensor, lengths: torch.Tensor,
                 timesteps: int | None = None, cfg_scale: float | None = None, cfg_form: CfgForm | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Token ids (B, max(lengths)): codes on valid positions, pad_id on pads (lengths in tokens)."""
        cfg = self.cfg
        K = timesteps or cfg.timesteps
        scale = cfg.cfg_scale if cfg_scale is None else cfg_scale
        form = cfg_form or cfg.cfg_form
        n, device = int(lengths.max()), lengths.device
        padding = torch.arange(n, device=device)[None] >= lengths[:, None]          # (B, n)
        cond = self.encode_text(text_ids, text_mask)
        ids = torch.where(padding, cfg.pad_id, cfg.mask_id)
        scores = torch.where(padding, 1e5, 0.0)
        for t in torch.linspace(0, 1, K).tolist():
            count = (cosine_schedule(torch.tensor(t)) * lengths.float()).round().clamp(min=1)
            ranks = scores.argsort(dim=1).argsort(dim=1)
            is_mask = ranks < count[:, None]                                       # the lowest scores
            ids = torch.where(is_mask, cfg.mask_id, ids)
            logits = self.guided(ids, cond, padding, scale, form).float()          # (B, n, codes)
            filtered = top_k_filter(logits, cfg.topk_filter_thres)
            if cfg.gumbel_sample:
                u = torch.rand(filtered.shape, device=device, generator=generator).clamp(1e-20, 1.0)
                sampled = (filtered / max(cfg.temperature, 1e-10) - torch.log(-torch.log(u))).argmax(-1)
            else:
                probs = F.softmax(filtered / cfg.temperature, dim=-1)
                sampled = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(ids.shape)
            ids = torch.where(is_mask, sampled, ids)
            confidence = F.softmax(logits, dim=-1).gather(2, sampled[..., None]).squeeze(-1)
            scores = confidence.masked_fill(~is_mask, 1e5)
        return torch.where(padding, cfg.pad_id, ids)


__all__ = ["LaMPCondition", "LaMPT2M", "MaskedTokenTransformer", "T2MConfig", "cosine_schedule", "guided_logits",
           "masking", "top_k_filter"]
