"""FineMotionDiffuse (Wei et al., LREC-COLING 2024): MotionDiffuse whose text memory also holds the
fine-grained, step-by-step description of the caption (FineHumanML3D).

Only the paper's summary is public to us (MODELS.md §3, §9.4): the modules are the paper's, their
sizes and wiring are MODELS.md §3.3's recommendation, and every such choice is a config field marked
[inferred]. Shapes: B batch, S steps (<= max_steps), L coarse tokens, Ct text latent, P pooled width.

    coarse:  MotionDiffuse's text head       tokens (B, L, 512) -> xf (B, L, Ct), xf_proj (B, E)
    fine:    frozen CLIP per step            steps (B, S, P) pooled      [or (B, S, Lt, 512) tokens]
             step embedding                  Linear(P -> Ct)             [tokens: the text head at EOT]
             + hard sinusoidal PE over the step index                              (B, S, Ct)
             step-aware self-attention       TransformerEncoder x step_layers      (B, S, Ct)
             fine-coarse cross-attention     [self-attn over steps, cross-attn to xf, FFN] x fusion_layers
    memory:  xf' = [fused steps ; xf]        (B, S + L, Ct), mask [step_mask ; token mask]
             xf_proj stays the coarse end-token projection: emb = time_emb + xf_proj (as MotionDiffuse)

A caption without checked fine steps (S = 0 for that row) is coarse-only: its memory is xf, exactly
MotionDiffuse's. Padded steps never reach the decoder (their keys are masked and values zeroed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from datasets_build.core.flags import option
from models.motiondiffuse.model import MotionDiffuse, MotionDiffuseConfig


@dataclass
class FineMotionDiffuseConfig(MotionDiffuseConfig):
    max_steps: int = option(8, "S_max: fine steps kept per caption (the recipe's check allows 2..8) [inferred]")
    step_feature: str = option("pooled", "per-step encoding: pooled (CLIP's projected end token, P wide) or "
                                         "tokens (the step's tokens through the coarse text head, its end "
                                         "position) [inferred: MODELS.md §3.3 names both]")
    pooled_dim: int = option(512, "P: the frozen encoder's pooled width (CLIP ViT-B/32: 512)")
    step_layers: int = option(2, "step-aware self-attention layers [inferred]")
    step_heads: int = option(4, "heads of the step and fusion attention [inferred]")
    step_ff_dim: int = option(1024, "FFN width of the step and fusion layers [inferred]")
    fusion_layers: int = option(1, "fine-coarse cross-attention layers (queries: steps; keys: coarse tokens) "
                                   "[inferred]")
    drop_first_last: bool = option(False, "at inference, drop the first and last step (beginning and end pose) "
                                          "when more than two remain [paper: an option]")


def step_positions(num_steps: int, width: int, device: torch.device) -> torch.Tensor:
    """The paper's "hard" positional embedding over step index k: [sin(k w_i) | cos(k w_i)]   (S, width)."""
    k = torch.arange(num_steps, dtype=torch.float32, device=device)[:, None]
    w = torch.exp(-math.log(10000.0) * torch.arange(0, width, 2, dtype=torch.float32, device=device) / width)
    pe = torch.zeros(num_steps, width, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(k * w), torch.cos(k * w[: width // 2])
    return pe


class FineMotionDiffuse(MotionDiffuse):
    def __init__(self, cfg: FineMotionDiffuseConfig) -> None:
        super().__init__(cfg)
        ct = cfg.text_latent_dim
        if cfg.step_feature not in ("pooled", "tokens"):
            raise ValueError(f"step_feature must be pooled or tokens, not {cfg.step_feature!r}")
        self.step_embed = nn.Linear(cfg.pooled_dim if cfg.step_feature == "pooled" else ct, ct)
        layer = nn.TransformerEncoderLayer(ct, cfg.step_heads, cfg.step_ff_dim, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True)
        self.step_attention = nn.TransformerEncoder(layer, cfg.step_layers, enable_nested_tensor=False)
        self.fusion = nn.ModuleList(
            nn.TransformerDecoderLayer(ct, cfg.step_heads, cfg.step_ff_dim, dropout=cfg.dropout, activation="gelu",
                                       batch_first=True) for _ in range(cfg.fusion_layers))
        self.fine_ln = nn.LayerNorm(ct)

    def embed_steps(self, steps: torch.Tensor, step_token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-step features -> (B, S, Ct): pooled (B, S, P), or tokens (B, S, Lt, 512) with their mask."""
        if self.cfg.step_feature == "pooled":
            return self.step_embed(steps)
        B, S, Lt, _ = steps.shape
        flat_mask = step_token_mask.reshape(B * S, Lt).clone()
        flat_mask[:, 0] = True                                    # padded steps: one dummy token, no NaN
        xf, _ = self.text(steps.reshape(B * S, Lt, -1), flat_mask)
        end = flat_mask.long().sum(1) - 1
        return self.step_embed(xf[torch.arange(B * S, device=xf.device), end].reshape(B, S, -1))

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor, steps: torch.Tensor | None = None,
                    step_mask: torch.Tensor | None = None,
                    step_token_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Coarse tokens (B, L, 512) + mask (B, L); fine steps (see embed_steps) + step_mask (B, S) ->
        the decoder's memory {xf (B, S+L, Ct), xf_mask, xf_proj (B, E)}. No steps: MotionDiffuse's memory."""
        text = super().encode_text(tokens, mask)
        if steps is None or step_mask is None or steps.shape[1] == 0 or not bool(step_mask.any()):
            return text
        S = steps.shape[1]
        # rows without steps attend to one dummy step inside the branch (an all-masked softmax is NaN);
        # the decoder never sees it: xf_mask keeps the real step mask
        safe = step_mask.clone()
        safe[:, 0] |= ~step_mask.any(1)
        s = self.embed_steps(steps, step_token_mask) + step_positions(S, self.cfg.text_latent_dim, steps.device)
        s = self.step_attention(s, src_key_padding_mask=~safe)                          # step-aware SA
        for layer in self.fusion:                                                        # fine-coarse CA
            s = layer(s, text["xf"], tgt_key_padding_mask=~safe, memory_key_padding_mask=~mask)
        s = self.fine_ln(s) * step_mask[..., None]
        return {"xf": torch.cat([s, text["xf"]], 1), "xf_mask": torch.cat([step_mask, mask], 1),
                "xf_proj": text["xf_proj"]}


__all__ = ["FineMotionDiffuse", "FineMotionDiffuseConfig", "step_positions"]
