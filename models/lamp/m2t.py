"""LaMP-M2T: motion captioning with a causal language model read through LaMP's query tokens
(../shared/docs/MODELS.md 5.4; LaMP paper 3.4; LaMP's code models/m2t/m2t_trans.py).

    motion (B, 196, D) -> frozen VQ encoder -> motion_projection -> Q-Former query pass (B, N_q, H)
        -> opt_proj Linear(H -> LM embedding width) = a prefix of N_q (49) embeddings
    training:   [prefix ; LM embed(caption + "\n")], labels -100 on the prefix and the pads, LM loss
    inference:  [prefix ; LM embed("a man is")], beam search 5, EOS = the token of "\n"

The LM is any `transformers` causal LM from a local folder (the paper: OPT-2.7b); its weights stay frozen
and LoRA adapters (`peft`: r 16, alpha 32, dropout 0.05, no bias; no target modules given, so peft's
default for the model type: OPT's q_proj and v_proj) are trained with `opt_proj`. The Q-Former is frozen
by default [inferred: the BLIP-2 recipe, MODELS.md 5.4's recommendation; LaMP's code trains it:
`train_qformer=True`]. No text prompt in training (the code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from datasets_build.core.flags import option
from datasets_build.text.torch_compat import ensure_torchvision_importable
from models.lamp.pretrain import LaMP

IGNORE = -100


@dataclass
class M2TConfig:
    """LaMP-M2T's adapters and decoding (defaults: LaMP's code)."""

    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha (scale alpha / r)")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_targets: str = option("", "comma-separated LM module names for LoRA; empty: peft's default for the model "
                                    "type (OPT: q_proj,v_proj, as the code's LoraConfig without target_modules)")
    train_qformer: bool = option(False, "[inferred] train the Q-Former, query tokens and motion_projection too "
                                        "(LaMP's code does; frozen is the BLIP-2 recipe MODELS.md recommends)")
    max_caption_length: int = option(32, "LM tokens of a training caption (padding longest, truncation)")
    eos_text: str = option("\n", "appended to training captions; its token ends generation (the code: newline)")
    prompt: str = option("a man is", "text after the motion prefix at generation (the code)")
    caption_with_prompt: bool = option(True, "[inferred] the returned caption starts with the prompt (the "
                                             "continuation alone when False)")
    num_beams: int = option(5, "beam search width")
    max_new_tokens: int = option(100, "generated tokens at most (the code's max_length with inputs_embeds)")
    min_length: int = option(1, "generated tokens at least")
    repetition_penalty: float = option(1.0, "generate()'s repetition penalty")
    length_penalty: float = option(1.0, "beam search length penalty")
    nucleus_sampling: bool = option(False, "sample with top_p instead of beam search (off in the code)")
    top_p: float = option(0.9, "nucleus mass when nucleus_sampling")


def lora_model(lm: nn.Module, cfg: M2TConfig) -> nn.Module:
    """The LM wrapped with peft LoRA adapters; every base weight frozen."""
    ensure_torchvision_importable()
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()] or None
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                        target_modules=targets)
    return get_peft_model(lm, config)


class LaMPM2T(nn.Module):
    """A LaMP run's motion path as the prefix of a LoRA-adapted causal LM."""

    def __init__(self, cfg: M2TConfig, lamp: LaMP, lm: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.lamp = lamp.requires_grad_(False)
        if cfg.train_qformer:
            for module in (lamp.qformer.bert,):
                module.requires_grad_(True)
            lamp.query_tokens.requires_grad_(True)
            lamp.motion_projection.requires_grad_(True)
        self.lm = lora_model(lm, cfg)
        self.opt_proj = nn.Linear(lamp.cfg.hidden_size, self.embeddings.embedding_dim)
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        self.eos_token_id = tokenizer(cfg.eos_text, add_special_tokens=False)["input_ids"][-1]

    @property
    def embeddings(self) -> nn.Embedding:
        return self.lm.get_input_embeddings()

    def train(self, mode: bool = True) -> "LaMPM2T":
        super().train(mode)
        if not self.cfg.train_qformer:
            self.lamp.eval()  # frozen: its dropout stays off
        self.lamp.vq.eval()
        return self

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def prefix(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, T, D) normalised, zero-padded motions -> (B, N_q, E) LM input embeddings, in the LM's dtype."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_qformer):
            hidden, _ = self.lamp.query_pass(self.lamp.motion_memory(motion))         # (B, N_q, H)
        prefix = self.opt_proj(hidden.to(self.opt_proj.weight.dtype))                # (B, N_q, E)
        return prefix.to(self.embeddings.weight.dtype)  # a bf16/fp16 LM reads a cast prefix (BLIP-2)

    def training_inputs(self, prefix: torch.Tensor, captions: Sequence[str]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs_embeds (B, N_q + L, E), attention mask, labels (-100 on the prefix and the pads))."""
        tokens = self.tokenizer([c + self.cfg.eos_text for c in captions], padding="longest", truncation=True,
                                max_length=self.cfg.max_caption_length, return_tensors="pt")
        ids = tokens["input_ids"].to(prefix.device)                                 # (B, L)
        mask = tokens["attention_mask"].to(prefix.device).bool()
        text = self.embeddings(ids).to(prefix.dtype)                                 # (B, L, E)
        B, Q = prefix.shape[:2]
        ones = torch.ones(B, Q, dtype=torch.bool, device=prefix.device)
        labels = torch.cat([torch.full((B, Q), IGNORE, device=prefix.device), ids.masked_fill(~mask, IGNORE)], dim=1)
        return torch.cat([prefix, text], dim=1), torch.cat([ones, mask], dim=1).long(), labels

    def forward(self, motion: torch.Tensor, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """The LM loss of (motion, caption) pairs."""
        inputs, mask, labels = self.training_inputs(self.prefix(motion), captions)
        out = self.lm(inputs_embeds=inputs, attention_mask=mask, labels=labels)
        return {"loss": out.loss}

    @torch.no_grad()
    def generate(self, motion: torch.Tensor) -> list[str]:
        """One caption per motion (B, T, D normalised, zero-padded): beam search after the prompt."""
        prefix = self.prefix(motion)
        B = prefix.shape[0]
        prompt = self.tokenizer([self.cfg.prompt] * B, return_tensors="pt", padding="longest")
        prompt_ids = prompt["input_ids"].to(prefix.device)
        inputs = torch.cat([prefix, self.embeddings(prompt_ids).to(prefix.dtype)], dim=1)
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
                          prompt["attention_mask"].to(prefix.device)], dim=1)
        decoding = (dict(do_sample=True, top_p=self.cfg.top_p, num_beams=1) if self.cfg.nucleus_sampling
                    else dict(do_sample=False, num_beams=self.cfg.num_beams))
        out = self.lm.generate(inputs_embeds=inputs, attention_mask=mask, max_new_tokens=self.cfg.max_new_tokens,
                               min_new_tokens=self.cfg.min_length, eos_token_id=self.eos_token_id,
                               pad_token_id=self.tokenizer.pad_token_id, repetition_penalty=self.cfg.repetition_penalty,
                               length_penalty=self.cfg.length_penalty, **decoding)
        texts = [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        if self.cfg.caption_with_prompt:
            texts = [f"{self.cfg.prompt} {t}".strip() for t in texts]
        return texts


__all__ = ["IGNORE", "LaMPM2T", "M2TConfig", "lora_model"]
