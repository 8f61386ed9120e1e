"""MATE's text encoder: a frozen language model of which only the word (token) embedding rows train.

    tower = make_text_tower("clip-random")            # or "clip" (+ checkpoint), "clip-tiny", "distilbert"
    tower.set_trainable_rows(row_ids)                 # the rows of tokens in the training text
    ids, mask = tower.tokenize(captions)              # (B, L) long, (B, L) bool
    pooled = tower.sentence(ids, mask)                # f^t: (B, sentence_dim)
    we = tower.word_embeddings(["walks", "wave"])     # WE(w): (B, E), mean of each word's sub-token rows

Kinds (MODELS.md 6.2):
- "clip": open_clip ViT-B/32 (QuickGELU, OpenAI's architecture) from a local checkpoint file, the
  text tower the MotionDiffuse and MoMask hosts load; "clip-random": the same architecture from a seed
  (offline). Both come from `datasets_build.text.encoders` (deep-copied: its cached, shared encoder
  is never trained), so a MATE run and the host agree on the base weights (`base_identity`).
- "clip-tiny": a CLIP text tower with the real tokenizer and vocabulary (49,408 rows) but width 32
  and one layer: unit tests only, its artefact fits no host.
- "distilbert": `transformers.DistilBertModel` with its tokenizer, from a local folder (no hub here);
  the sentence feature f^t is the mean of the last hidden states over real tokens [inferred: the
  paper does not say how DistilBERT's sentence feature is pooled].

Only `embedding.weight` requires a gradient, and a hook multiplies its gradient by a row mask: the
rows of the tokens of the training text (special tokens excluded, [inferred]). Every other parameter
is frozen (requires_grad False, eval mode), so the optimiser never touches it.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from datasets_build.core.errors import UserError
from datasets_build.text.encoders import load_text_encoder
from datasets_build.text.torch_compat import ensure_torchvision_importable, import_open_clip

CLIP_KINDS = ("clip", "clip-random", "clip-tiny")
KINDS = (*CLIP_KINDS, "distilbert")


class TextTowerError(UserError, ValueError):
    """A text encoder MATE cannot build (unknown kind, missing local weights)."""


class TextTower(nn.Module):
    """Common part: the trainable embedding table, its row mask and WE(w)."""

    kind: str
    base_identity: str  # the base encoder's identity (name + weights checksum), "" for test towers
    special_ids: tuple[int, ...]

    @property
    def embedding(self) -> nn.Embedding:
        raise NotImplementedError

    def freeze(self) -> None:
        """Every parameter frozen except the embedding table, whose gradient passes the row mask."""
        self.requires_grad_(False)
        weight = self.embedding.weight
        weight.requires_grad_(True)
        self.register_buffer("row_mask", torch.zeros(weight.shape[0], 1), persistent=False)
        weight.register_hook(lambda grad: grad * self.row_mask.to(grad.dtype))
        self.train(False)

    def train(self, mode: bool = True) -> "TextTower":
        super().train(False)  # the frozen language model always runs in eval mode (no dropout)
        return self

    def set_trainable_rows(self, row_ids: Sequence[int] | torch.Tensor) -> int:
        """Let exactly these rows train (special tokens never); returns how many rows may change."""
        ids = torch.as_tensor(list(row_ids) if not isinstance(row_ids, torch.Tensor) else row_ids, dtype=torch.long)
        mask = torch.zeros_like(self.row_mask)
        if ids.numel():
            mask[ids.unique()] = 1.0
        mask[list(self.special_ids)] = 0.0
        self.row_mask.copy_(mask)
        return int(mask.sum())

    def token_ids(self, texts: Sequence[str]) -> set[int]:
        ids, mask = self.tokenize(list(texts))
        return set(ids[mask].unique().tolist()) - set(self.special_ids)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def word_pieces(self, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) sub-token ids of each word alone (no special tokens), (B, P) mask."""
        raise NotImplementedError

    def word_embeddings(self, words: list[str]) -> torch.Tensor:
        """WE(w) (B, E): the mean of the word's sub-token rows, so every piece gets a gradient
        [inferred: MODELS.md 6.2, the paper leaves multi-piece words open]."""
        pieces, mask = self.word_pieces(words)
        pieces, mask = pieces.to(self.embedding.weight.device), mask.to(self.embedding.weight.device)
        rows = self.embedding(pieces) * mask[..., None]                                   # (B, P, E)
        return rows.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    def sentence(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ClipTower(TextTower):
    """CLIP's text transformer: token rows + positions -> causal transformer -> ln_final -> the
    end-token feature @ text_projection (f^t, what `encode_text` returns)."""

    def __init__(self, model: nn.Module, kind: str, base_identity: str = "") -> None:
        super().__init__()
        open_clip = import_open_clip()
        self.kind, self.base_identity = kind, base_identity
        self.token_embedding, self.positional_embedding = model.token_embedding, model.positional_embedding
        self.transformer, self.ln_final, self.text_projection = model.transformer, model.ln_final, model.text_projection
        self.register_buffer("attn_mask", model.attn_mask.clone(), persistent=False)
        self.tokenizer = open_clip.get_tokenizer("ViT-B-32-quickgelu")
        self.special_ids = (0, int(self.tokenizer.sot_token_id), int(self.tokenizer.eot_token_id))
        self.width = int(self.token_embedding.weight.shape[1])
        self.sentence_dim = int(self.text_projection.shape[1] if isinstance(self.text_projection, nn.Parameter)
                                else self.text_projection.out_features)
        self.freeze()

    @property
    def embedding(self) -> nn.Embedding:
        return self.token_embedding

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(list(texts))                                                  # (B, 77)
        length = int((ids != 0).sum(1).max())
        ids = ids[:, :length]  # causal mask: positions after the end token never reach it
        return ids, ids != 0

    def word_pieces(self, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(words)
        inner = mask & (ids != self.tokenizer.sot_token_id) & (ids != self.tokenizer.eot_token_id)
        return ids, inner

    def sentence(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.token_embedding.weight.device)
        L = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:L]                    # (B, L, W)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:L, :L]))
        x = x[torch.arange(len(x), device=x.device), ids.argmax(dim=-1)]                  # end token (B, W)
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj                       # (B, S)


class DistilBertTower(TextTower):
    """DistilBERT: word embeddings (+ positions, LayerNorm) -> 6 layers; f^t = masked mean."""

    def __init__(self, model: nn.Module, tokenizer, base_identity: str = "") -> None:
        super().__init__()
        self.kind, self.base_identity, self.model, self.tokenizer = "distilbert", base_identity, model, tokenizer
        self.special_ids = tuple(sorted({int(i) for i in tokenizer.all_special_ids}))
        self.width = self.sentence_dim = int(model.config.dim)
        self.freeze()

    @property
    def embedding(self) -> nn.Embedding:
        return self.model.embeddings.word_embeddings

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"].bool()

    def word_pieces(self, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(words), padding=True, add_special_tokens=False, return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"].bool()

    def sentence(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        device = self.embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, W)
        m = mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def make_text_tower(kind: str, checkpoint: str | None = None) -> TextTower:
    """The text tower `kind` (KINDS), with random weights (clip-random: `checkpoint` is the seed;
    clip-tiny) or local ones (clip: a CLIP state dict file; distilbert: a model folder)."""
    if kind in ("clip", "clip-random"):
        encoder = load_text_encoder(kind, checkpoint, "cpu")  # the data side's loader and its checks
        return ClipTower(copy.deepcopy(encoder.model), kind, encoder.identity)
    if kind == "clip-tiny":
        import_open_clip()  # behind the torchvision guard
        from open_clip.transformer import QuickGELU, TextTransformer

        seed = int(checkpoint or 0)
        with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
            torch.manual_seed(seed)
            tower = TextTransformer(context_length=77, vocab_size=49408, width=32, heads=2, layers=1, output_dim=32,
                                    act_layer=QuickGELU)
        return ClipTower(tower, kind, f"clip-tiny:{seed}")
    if kind == "distilbert":
        if not checkpoint:
            raise TextTowerError("the distilbert text encoder needs a local model folder (config, weights and "
                                 "tokenizer files): pass --text-encoder-checkpoint DIR")
        ensure_torchvision_importable()
        import transformers

        try:
            model = transformers.DistilBertModel.from_pretrained(checkpoint, local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        except (OSError, ValueError) as error:
            raise TextTowerError(f"the DistilBERT folder {checkpoint} cannot be loaded ({error})") from None
        return DistilBertTower(model, tokenizer, f"distilbert:{checkpoint}")
    raise TextTowerError(f"unknown MATE text encoder {kind!r}; choose one of {', '.join(KINDS)}")


__all__ = ["CLIP_KINDS", "KINDS", "ClipTower", "DistilBertTower", "TextTower", "TextTowerError", "make_text_tower"]
