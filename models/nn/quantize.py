"""Vector quantizers shared by the token models (the LaMP / T2M-GPT VQ-VAE, MoMask's residual VQ-VAE).

Shapes: N vectors of width C (the encoder's code_dim), K codes, Q residual layers.

`EMACodebook` (MODELS.md §5.1; the code's QuantizeEMAReset):
    ids      = argmin_k ||z - e_k||^2                                              (N,)
    z_q      = e_ids;  straight-through: z + sg(z_q - z) carries the decoder's gradient to z
    commit   = MSE(z, sg(z_q))
    training: count_k <- mu count_k + (1 - mu) n_k,  sum_k <- mu sum_k + (1 - mu) sum_{ids=k} z,
              e_k = sum_k / count_k; a code whose EMA count is < 1 is reset to a random encoder output
    the codebook starts as the first training batch's encoder outputs (tiled with noise of std
    0.01/sqrt(C) when the batch has fewer than K vectors)

`ResidualQuantizer` (MODELS.md §6.6; MoMask's RVQ): Q codebooks, layer q quantises the residual left
by layers < q; with probability `dropout` during training every layer above a uniformly drawn index
is dropped (`force_dropout_index` fixes that index: 0 keeps layer 0 only).

The codebook state lives in buffers, so it travels with `state_dict()` and is not touched by the optimizer.
Under DistributedDataParallel each process updates its own EMA and the buffers are broadcast from rank 0 at
every forward (DDP's default), so rank 0's codebook is the one kept (the references train on one GPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code by L2: z (N, C), codebook (K, C) -> (N,) long."""
    distance = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ codebook.t()
                + codebook.pow(2).sum(-1)[None])                                  # (N, K)
    return distance.argmin(-1)


def tile_vectors(z: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """At least `count` rows: z (N, C) repeated with noise of std 0.01/sqrt(C) when N < count (the code's
    _tile), then `count` rows drawn without replacement."""
    n, width = z.shape
    if n < count:
        repeats = math.ceil(count / n)
        z = z.repeat(repeats, 1)
        z = z + torch.randn(z.shape, device=z.device, generator=generator).to(z.dtype) * (0.01 / math.sqrt(width))
    order = torch.randperm(z.shape[0], device="cpu", generator=generator)[:count].to(z.device)
    return z[order]


class EMACodebook(nn.Module):
    """One codebook of `num_codes` x `code_dim`, EMA-updated with dead-code reset (no learned weights)."""

    def __init__(self, num_codes: int, code_dim: int, decay: float = 0.99, restart_reset: bool = True,
                 reset_threshold: float = 1.0) -> None:
        super().__init__()
        self.num_codes, self.code_dim, self.decay, self.reset_threshold = num_codes, code_dim, decay, reset_threshold
        self.restart_reset = restart_reset
        self.register_buffer("codebook", torch.zeros(num_codes, code_dim))
        self.register_buffer("code_sum", torch.zeros(num_codes, code_dim))
        self.register_buffer("code_count", torch.zeros(num_codes))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def init_from(self, z: torch.Tensor) -> None:
        """The codebook starts as encoder outputs of the first training batch: z (N, C)."""
        codes = tile_vectors(z.float(), self.num_codes)
        self.codebook.copy_(codes)
        self.code_sum.copy_(codes)
        self.code_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """One EMA step with z (N, C) assigned to ids (N,); dead codes (EMA count < threshold) are
        reset to random rows of z. Returns the perplexity of this batch's code usage."""
        z = z.float()
        onehot = F.one_hot(ids, self.num_codes).to(z.dtype)                       # (N, K)
        counts = onehot.sum(0)                                                    # (K,)
        sums = onehot.t() @ z                                                     # (K, C)
        self.code_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.code_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        alive = (self.code_count >= self.reset_threshold).to(z.dtype)[:, None]    # (K, 1)
        updated = self.code_sum / self.code_count.clamp(min=1e-7)[:, None]
        replacement = tile_vectors(z, self.num_codes)
        self.codebook.copy_(alive * updated + (1 - alive) * replacement)
        if self.restart_reset:
            # a reset code restarts its EMA at count 1 with its new vector as the sum; QuantizeEMAReset
            # (restart_reset=False) replaces only the codebook row and keeps the stale sum and count
            self.code_sum.copy_(alive * self.code_sum + (1 - alive) * replacement)
            self.code_count.copy_(alive[:, 0] * self.code_count + (1 - alive[:, 0]))
        probs = counts / counts.sum().clamp(min=1)
        return torch.exp(-(probs * torch.log(probs + 1e-7)).sum())

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors of ids (...,) -> (..., C)."""
        return F.embedding(ids, self.codebook)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code ids of z (..., C) -> (...,)."""
        return nearest_codes(z.reshape(-1, self.code_dim).float(), self.codebook).reshape(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, C) -> (straight-through z_q (N, C), ids (N,), commit loss, perplexity). In training
        mode the first call initialises the codebook from z, and every call updates it by EMA."""
        flat = z.float()
        if self.training and not bool(self.initialised):
            self.init_from(flat.detach())
        ids = nearest_codes(flat.detach(), self.codebook)
        if self.training:
            perplexity = self.ema_update(flat.detach(), ids)
        else:
            perplexity = self._perplexity(ids)
        z_q = self.lookup(ids).to(z.dtype)
        commit = F.mse_loss(z, z_q.detach())
        return z + (z_q - z).detach(), ids, commit, perplexity

    def _perplexity(self, ids: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(ids, minlength=self.num_codes).float()
        probs = counts / counts.sum().clamp(min=1)
        return torch.exp(-(probs * torch.log(probs + 1e-7)).sum())


class ResidualQuantizer(nn.Module):
    """Q EMA codebooks (not shared) applied to successive residuals, with quantizer dropout."""

    def __init__(self, num_quantizers: int, num_codes: int, code_dim: int, dropout: float = 0.2,
                 decay: float = 0.99, restart_reset: bool = True) -> None:
        super().__init__()
        self.num_quantizers, self.dropout = num_quantizers, dropout
        self.layers = nn.ModuleList(EMACodebook(num_codes, code_dim, decay, restart_reset)
                                    for _ in range(num_quantizers))

    def active_layers(self, force_dropout_index: int | None) -> int:
        """How many layers quantise this batch: all; in training with probability `dropout`, 1 + a uniform
        index in [0, Q-1] (MoMask: layers above the index are dropped); `force_dropout_index` = i keeps i + 1."""
        if force_dropout_index is not None:
            if not 0 <= force_dropout_index < self.num_quantizers:
                raise ValueError(f"force_dropout_index {force_dropout_index} is outside [0, {self.num_quantizers})")
            return force_dropout_index + 1
        if self.training and self.dropout > 0 and torch.rand(()) < self.dropout:
            return int(torch.randint(0, self.num_quantizers, ())) + 1
        return self.num_quantizers

    def forward(self, z: torch.Tensor, force_dropout_index: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, C) -> (straight-through sum of the used layers' codes (N, C), ids (N, Q) with -1 on
        dropped layers, mean commit loss of the used layers, mean perplexity)."""
        used = self.active_layers(force_dropout_index)
        residual = z
        total = torch.zeros_like(z)
        ids = torch.full((z.shape[0], self.num_quantizers), -1, dtype=torch.long, device=z.device)
        commits, perplexities = [], []
        for q, layer in enumerate(self.layers[:used]):
            z_q, layer_ids, commit, perplexity = layer(residual)  # commit = MSE(residual_q, sg(codes_q))
            residual = residual - z_q.detach()
            total = total + z_q.detach()
            ids[:, q] = layer_ids
            commits.append(commit)
            perplexities.append(perplexity)
        quantized = z + (total - z).detach()                                      # straight-through (N, C)
        return quantized, ids, torch.stack(commits).mean(), torch.stack(perplexities).mean()

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Sum of the code vectors of ids (..., Q) over the layers; ids -1 (dropped) add nothing -> (..., C)."""
        total = None
        for q, layer in enumerate(self.layers):
            layer_ids = ids[..., q]
            vectors = layer.lookup(layer_ids.clamp(min=0)) * (layer_ids >= 0)[..., None]
            total = vectors if total is None else total + vectors
        return total

    def quantize(self, z: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        """Ids of z (..., C) in every layer (or the first `layers`, the rest -1) -> (..., Q)."""
        shape = z.shape[:-1]
        residual = z.reshape(-1, z.shape[-1]).float()
        ids = torch.full((residual.shape[0], self.num_quantizers), -1, dtype=torch.long, device=z.device)
        for q, layer in enumerate(self.layers[:layers or self.num_quantizers]):
            ids[:, q] = nearest_codes(residual, layer.codebook)
            residual = residual - layer.lookup(ids[:, q])
        return ids.reshape(*shape, self.num_quantizers)


__all__ = ["EMACodebook", "ResidualQuantizer", "nearest_codes", "tile_vectors"]
