"""LaMP's Q-Former: a BERT whose layers also serve learned query tokens (BLIP-2's design, written here
on `transformers.BertConfig` and with BERT's parameter names, so a local `bert-base-uncased` state
dict loads into it; ../shared/docs/MODELS.md 5.2, LaMP paper 3.1.2).

What it adds to BERT:
- `query_embeds` (B, N_q, H) are prepended to the text embeddings (no position embeddings for them);
- every `cross_attention_freq`-th layer (layer index % freq == 0) has a cross-attention block, randomly
  initialised, whose keys/values come from an `encoder_width`-wide memory (1408: BLIP-2's EVA width)
  and which only the query positions use;
- the query positions have their own feed-forward copy (`intermediate_query` / `output_query`),
  initialised from the text feed-forward weights (`copy_query_ffn`);
- a pass can return each layer's self-attention keys/values (`use_cache`) and a later text pass can
  attend to them (`past_key_values`): the motion-grounded text generation reads the query pass that way.

HF's own `BertLMHeadModel` cannot do this (its cross-attention needs encoder width = hidden size and it
has no query path), hence this module. `QFormerLM` is `bert` + `cls` (BERT's masked-LM head, decoder
tied to the word embeddings), the names of `BertLMHeadModel`.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig

from models.nn.init import normal_init

KeyValue = tuple[torch.Tensor, torch.Tensor]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Lq, Lk) or (B, Lk) bool -> (B, 1, Lq|1, Lk) additive mask: 0 where allowed, a large negative elsewhere."""
    if allowed.dim() == 2:
        allowed = allowed[:, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed.bool(), torch.finfo(dtype).min)[:, None]


# ----------------------------------------------------------------------------- small modules
class Embeddings(nn.Module):
    """Word + absolute position embeddings of the text, queries prepended; LayerNorm and dropout over both."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Optional[torch.Tensor] = None,
                query_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        parts = []
        if query_embeds is not None:
            parts.append(query_embeds)                                                 # (B, N_q, H)
        if input_ids is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            parts.append(self.word_embeddings(input_ids) + self.position_embeddings(positions)[None])  # (B, L, H)
        return self.dropout(self.LayerNorm(torch.cat(parts, dim=1)))                  # (B, N_q + L, H)


class Attention(nn.Module):
    """BERT's `attention.self` (query/key/value); keys/values read `kv_width`-wide inputs (cross-attention)."""

    def __init__(self, config: BertConfig, kv_width: int) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_width, config.hidden_size)
        self.value = nn.Linear(kv_width, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)  # (B, heads, L, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, memory: Optional[torch.Tensor] = None,
                past: Optional[KeyValue] = None) -> tuple[torch.Tensor, KeyValue]:
        source = hidden if memory is None else memory
        q, k, v = self.split(self.query(hidden)), self.split(self.key(source)), self.split(self.value(source))
        if past is not None:                                                           # cached query positions first
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        mask = mask.to(q.dtype).clamp(min=torch.finfo(q.dtype).min)                   # finite under bf16 autocast
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return out.transpose(1, 2).flatten(2), (k, v)                                  # (B, L, H)


class ResidualOutput(nn.Module):
    """BERT's `output` blocks: dense, dropout, LayerNorm(x + residual)."""

    def __init__(self, config: BertConfig, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class AttentionBlock(nn.Module):
    """`attention` / `crossattention`: `self` (the attention) and `output`."""

    def __init__(self, config: BertConfig, kv_width: int) -> None:
        super().__init__()
        self.self = Attention(config, kv_width)
        self.output = ResidualOutput(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, memory: Optional[torch.Tensor] = None,
                past: Optional[KeyValue] = None) -> tuple[torch.Tensor, KeyValue]:
        attended, present = self.self(hidden, mask, memory, past)
        return self.output(attended, hidden), present


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """Self-attention over [queries ; text], cross-attention of the queries to the memory (some layers),
    then a feed-forward copy per kind of position."""

    def __init__(self, config: BertConfig, index: int) -> None:
        super().__init__()
        self.attention = AttentionBlock(config, config.hidden_size)
        self.has_cross_attention = index % config.cross_attention_freq == 0
        if self.has_cross_attention:
            self.crossattention = AttentionBlock(config, config.encoder_width)
        self.intermediate, self.output = Intermediate(config), ResidualOutput(config, config.intermediate_size)
        self.intermediate_query = Intermediate(config)
        self.output_query = ResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, query_length: int,
                memory: Optional[torch.Tensor], memory_mask: Optional[torch.Tensor],
                past: Optional[KeyValue]) -> tuple[torch.Tensor, KeyValue]:
        attended, present = self.attention(hidden, mask, past=past)                    # (B, N_q + L, H)
        queries, text = attended[:, :query_length], attended[:, query_length:]
        parts = []
        if query_length:
            if self.has_cross_attention:
                if memory is None:
                    raise ValueError("query tokens need a memory (encoder_hidden_states) to cross-attend to")
                queries, _ = self.crossattention(queries, memory_mask, memory)         # (B, N_q, H)
            parts.append(self.output_query(self.intermediate_query(queries), queries))
        if text.shape[1]:
            parts.append(self.output(self.intermediate(text), text))
        return torch.cat(parts, dim=1), present


# ----------------------------------------------------------------------------- the model
class QFormerBert(nn.Module):
    """`bert`: embeddings and encoder layers (no pooler)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Layer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                query_embeds: Optional[torch.Tensor] = None, encoder_hidden_states: Optional[torch.Tensor] = None,
                encoder_attention_mask: Optional[torch.Tensor] = None, causal: bool = False,
                past_key_values: Optional[list[KeyValue]] = None) -> tuple[torch.Tensor, list[KeyValue]]:
        """(hidden states (B, N_q + L, H), per-layer self-attention keys/values).

        `attention_mask` (B, past + N_q + L) marks real positions (default all); `causal` makes the text
        positions see only earlier text (and every query or cached position). Queries and text in one
        call attend to each other (the matching pass); separate calls keep them apart (uni-modal)."""
        hidden = self.embeddings(input_ids, query_embeds)
        B, L = hidden.shape[:2]
        query_length = 0 if query_embeds is None else query_embeds.shape[1]
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        keys = past_length + L
        if attention_mask is None:
            attention_mask = torch.ones(B, keys, dtype=torch.bool, device=hidden.device)
        allowed = attention_mask.bool()[:, None, :].expand(B, L, keys)                 # (B, L, past + L)
        if causal:
            rows = torch.arange(L, device=hidden.device)[:, None]
            cols = torch.arange(keys, device=hidden.device)[None, :] - past_length
            earlier = (cols < query_length) | (cols <= rows)                           # text sees no later text
            allowed = allowed & earlier[None]
        mask = additive_mask(allowed, hidden.dtype)
        memory_mask = None
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], dtype=torch.bool,
                                                    device=hidden.device)
            memory_mask = additive_mask(encoder_attention_mask, hidden.dtype)         # (B, 1, 1, M)
        presents = []
        for i, layer in enumerate(self.encoder.layer):
            hidden, present = layer(hidden, mask, query_length, encoder_hidden_states, memory_mask,
                                    None if past_key_values is None else past_key_values[i])
            presents.append(present)
        return hidden, presents


class PredictionHead(nn.Module):
    """`cls.predictions`: transform (dense, gelu, LayerNorm), decoder tied to the word embeddings, bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.transform.LayerNorm(F.gelu(self.transform.dense(hidden)))
        return self.decoder(x) + self.bias                                             # (B, L, vocab)


class QFormerLM(nn.Module):
    """`bert` + `cls`: the Q-Former with BERT's LM head (parameter names of HF's BertLMHeadModel)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = QFormerBert(config)
        self.cls = nn.Module()
        self.cls.predictions = PredictionHead(config, self.bert.embeddings.word_embeddings)
        self.apply(partial(normal_init, std=self.config.initializer_range))

    def copy_query_ffn(self) -> None:
        """Initialise every `*_query` feed-forward from its text twin (BLIP-2's copy)."""
        state = self.state_dict()
        with torch.no_grad():
            for name, param in self.named_parameters():
                if "_query" in name:
                    param.copy_(state[name.replace("_query", "")])

    def load_bert(self, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
        """Load a BERT (or BertForPreTraining) state dict: rows of the word embeddings / LM bias beyond its
        vocabulary (the added `[DEC]`) keep their initialisation; cross-attention stays random; the query
        feed-forward copies are then taken from the loaded text ones. Returns the missing/unused keys."""
        renamed = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
                   for k, v in state.items()}
        own = self.state_dict()
        usable, unused = {}, []
        for key, value in renamed.items():
            target = own.get(key)
            if key == "cls.predictions.decoder.bias":
                continue  # HF's alias of cls.predictions.bias
            if target is None:
                unused.append(key)
            elif target.shape == value.shape:
                usable[key] = value
            elif target.dim() == value.dim() and value.shape[0] < target.shape[0] and target.shape[1:] == value.shape[1:]:
                grown = target.clone()
                grown[:value.shape[0]] = value
                usable[key] = grown
            else:
                raise ValueError(f"BERT weight {key} has shape {tuple(value.shape)}, the Q-Former {tuple(target.shape)}")
        missing = sorted(set(own) - set(usable) - {"cls.predictions.decoder.weight"})
        self.load_state_dict({**own, **usable})
        self.copy_query_ffn()
        return {"missing": [k for k in missing if "_query" not in k], "unused": sorted(unused)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_key_values: list[KeyValue]) -> torch.Tensor:
        """Causal text pass over cached query keys/values: logits (B, L, vocab)."""
        hidden, _ = self.bert(input_ids, attention_mask, causal=True, past_key_values=past_key_values)
        return self.cls.predictions(hidden)


def qformer_config(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                   encoder_width: int, cross_attention_freq: int, max_positions: int = 512,
                   dropout: float = 0.1, pad_token_id: int = 0, initializer_range: float = 0.02) -> BertConfig:
    """A BertConfig carrying the Q-Former's extra fields (encoder_width, cross_attention_freq)."""
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_positions, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, pad_token_id=pad_token_id,
                        initializer_range=initializer_range,
                        add_cross_attention=True, is_decoder=True)
    config.encoder_width = encoder_width
    config.cross_attention_freq = cross_attention_freq
    if hidden_size % num_heads:
        raise ValueError(f"hidden size {hidden_size} is not a multiple of {num_heads} heads")
    return config


__all__ = ["QFormerBert", "QFormerLM", "additive_mask", "qformer_config"]
