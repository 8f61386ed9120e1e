"""The motion VQ-VAE (T2M-GPT / LaMP stage 1; MoMask's RVQ-VAE with `quantizer="residual"`).

Shapes: B batch, T frames (a multiple of 4), D motion features (263 / 251), W width (512), C code_dim
(512), n = T / 2^down_t tokens (T/4), K codes (512), Q residual layers. Facts from MODELS.md §5.1 and §6.6
(LaMP models/vq/encdec.py, resnet.py, quantize_cnn.py, vq_trainer.py; momask-codes models/vq/*).

    encoder:  Conv1d(D->W, k3) ReLU, down_t x [Conv1d(W->W, k4, s2, p1), Resnet1D(W)], Conv1d(W->C, k3)
              (B, T, D) -> (B, n, C)
    Resnet1D: `depth` residual blocks with dilations growth^0..growth^(depth-1), in reversed order
              (9, 3, 1): x + Dropout(Conv1d_k1(ReLU(Conv1d_k3,dilation(ReLU(x)))))
    quantize: one EMA codebook (LaMP, T2M-GPT) or Q residual ones with quantizer dropout (MoMask)
    decoder:  Conv1d(C->W, k3) ReLU, down_t x [Resnet1D(W), Upsample x2 (nearest), Conv1d(W->W, k3)],
              Conv1d(W->W, k3) ReLU, Conv1d(W->D, k3)            (B, n, C) -> (B, 2^down_t n, D)
    loss     = SmoothL1(x_hat, x) + 0.5 SmoothL1(x_hat[pos], x[pos]) + 0.02 commit
              where pos = the local joint positions x[..., 4 : 4 + 3(J-1)] (the code's `loss_vel`)

The paper (LaMP §4.1) describes MoMask's 6-layer RVQ while its §2/§3.1.1 and the code use one codebook
(MODELS.md §9.2): the default is the code's single codebook, the RVQ is `quantizer="residual"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from datasets_build.core.flags import option
from models.nn.quantize import EMACodebook, ResidualQuantizer


@dataclass
class VQVAEConfig:
    motion_dim: int = option(263, "motion features D (263 HumanML3D, 251 KIT-ML)")
    width: int = option(512, "channels W of the encoder and decoder convolutions")
    code_dim: int = option(512, "width C of the encoder output and of each code")
    nb_code: int = option(512, "codes K per codebook")
    down_t: int = option(2, "stride-2 downsampling stages (2: T/4 tokens)")
    depth: int = option(3, "residual blocks per Resnet1D")
    dilation_growth: int = option(3, "dilation growth rate (depth 3: dilations 9, 3, 1)")
    reverse_dilation: bool = option(True, "largest dilation first (the code's default)")
    dropout: float = option(0.2, "dropout at the end of each residual block (LaMP/MoMask resnet.py)")
    quantizer: Literal["single", "residual"] = option("single", "single: one EMA codebook (LaMP code, T2M-GPT); "
                                                      "residual: MoMask's RVQ")
    num_quantizers: int = option(6, "residual layers Q (quantizer=residual; MoMask's README: 6)")
    quantizer_dropout: float = option(0.2, "probability of dropping the layers above a random index (residual)")
    ema_decay: float = option(0.99, "EMA decay mu of the codebooks")
    codebook_reset: Literal["restart", "code"] = option(
        "restart", "restart: a reset dead code restarts its EMA at count 1 (no code is left with count < 1, "
                   "MODELS.md §8); code: only the vector is replaced, as QuantizeEMAReset does [inferred]")
    commit_weight: float = option(0.02, "weight of the commitment loss")
    position_weight: float = option(0.5, "weight of the smooth-L1 on the local joint positions (the code's loss_vel)")
    joints: int = option(0, "joints J of the feature layout (0: from motion_dim, D = 12 J - 1)")

    @property
    def downsampling(self) -> int:
        return 2 ** self.down_t

    def joint_count(self) -> int:
        if self.joints:
            return self.joints
        if (self.motion_dim + 1) % 12:
            raise ValueError(f"motion_dim {self.motion_dim} is not a HumanML3D-style layout (12 J - 1): set joints")
        return (self.motion_dim + 1) // 12

    def position_slice(self) -> slice:
        """The local joint positions (ric) in the feature layout: [4, 4 + 3 (J - 1))."""
        return slice(4, 4 + 3 * (self.joint_count() - 1))


# ----------------------------------------------------------------------------- conv blocks
class ResConv1DBlock(nn.Module):
    """x + Dropout(Conv1d_k1(ReLU(Conv1d_k3,d(ReLU(x)))))                                (B, W, T)"""

    def __init__(self, width: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.conv2(F.relu(self.conv1(F.relu(x)))))


class Resnet1D(nn.Sequential):
    def __init__(self, width: int, depth: int, growth: int, reverse: bool, dropout: float) -> None:
        dilations = [growth ** d for d in range(depth)]
        super().__init__(*(ResConv1DBlock(width, d, dropout) for d in (dilations[::-1] if reverse else dilations)))


class Encoder(nn.Module):
    """(B, D, T) -> (B, C, T / 2^down_t)"""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        w = cfg.width
        layers: list[nn.Module] = [nn.Conv1d(cfg.motion_dim, w, 3, padding=1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers += [nn.Sequential(nn.Conv1d(w, w, 4, stride=2, padding=1),
                                     Resnet1D(w, cfg.depth, cfg.dilation_growth, cfg.reverse_dilation, cfg.dropout))]
        layers.append(nn.Conv1d(w, cfg.code_dim, 3, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Decoder(nn.Module):
    """(B, C, n) -> (B, D, 2^down_t n)"""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        w = cfg.width
        layers: list[nn.Module] = [nn.Conv1d(cfg.code_dim, w, 3, padding=1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers += [nn.Sequential(Resnet1D(w, cfg.depth, cfg.dilation_growth, cfg.reverse_dilation, cfg.dropout),
                                     nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(w, w, 3, padding=1))]
        layers += [nn.Conv1d(w, w, 3, padding=1), nn.ReLU(), nn.Conv1d(w, cfg.motion_dim, 3, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


# ----------------------------------------------------------------------------- the model
class VQVAE(nn.Module):
    """Motion tokenizer over NORMALISED features (the run's `stats`; `api.load` attaches them)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.quantizer == "single":
            self.quantizer: nn.Module = EMACodebook(cfg.nb_code, cfg.code_dim, cfg.ema_decay,
                                                    restart_reset=cfg.codebook_reset == "restart")
        elif cfg.quantizer == "residual":
            self.quantizer = ResidualQuantizer(cfg.num_quantizers, cfg.nb_code, cfg.code_dim, cfg.quantizer_dropout,
                                               cfg.ema_decay, restart_reset=cfg.codebook_reset == "restart")
        else:
            raise ValueError(f"quantizer {cfg.quantizer!r} is neither 'single' nor 'residual'")
        # set by api.load: the run's Normalizer (raw <-> normalised features), checkpoint hash, folder
        self.stats = None
        self.fingerprint: str | None = None
        self.run_dir: str | None = None

    @property
    def residual(self) -> bool:
        return self.cfg.quantizer == "residual"

    def _check_length(self, x: torch.Tensor) -> None:
        if x.shape[1] % self.cfg.downsampling:
            raise ValueError(f"{x.shape[1]} frames is not a multiple of {self.cfg.downsampling} (crop the motion)")

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output before quantization: x (B, T, D) normalised -> (B, n, C)."""
        self._check_length(x)
        return self.encoder(x.transpose(1, 2)).transpose(1, 2)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code ids: x (B, T, D) normalised -> (B, n) for one codebook, (B, n, Q) for the residual one."""
        return self.quantizer.quantize(self.encode_features(x))

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors of ids (B, n) or (B, n, Q) (-1 = a dropped layer) -> (B, n, C)."""
        return self.quantizer.lookup(ids)

    def decode_codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, n, C) quantized vectors -> (B, 2^down_t n, D) normalised features."""
        return self.decoder(z.transpose(1, 2)).transpose(1, 2)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, n) or (B, n, Q) -> (B, 4n, D) normalised features (the code's forward_decoder, batched)."""
        return self.decode_codes(self.codes(ids))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, force_dropout_index: int | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """x (B, T, D) normalised, optional frame mask (B, T) -> (x_hat (B, T, D), losses, ids (B, n)[, Q]).

        losses: "loss" = recon + position_weight * position + commit_weight * commit, and each term
        and the codebook perplexity. A mask restricts the reconstruction terms to valid frames (the
        reference trains on full windows, where it is all true); the encoder still sees the zero padding."""
        z = self.encode_features(x)                                              # (B, n, C)
        flat = z.reshape(-1, z.shape[-1])
        if self.residual:
            z_q, ids, commit, perplexity = self.quantizer(flat, force_dropout_index)
            ids = ids.reshape(*z.shape[:2], -1)
        else:
            z_q, ids, commit, perplexity = self.quantizer(flat)
            ids = ids.reshape(z.shape[:2])
        x_hat = self.decode_codes(z_q.reshape(z.shape))                          # (B, T, D)
        pos = self.cfg.position_slice()
        recon = masked_smooth_l1(x_hat, x, mask)
        position = masked_smooth_l1(x_hat[..., pos], x[..., pos], mask)
        loss = recon + self.cfg.position_weight * position + self.cfg.commit_weight * commit
        return x_hat, {"loss": loss, "recon": recon, "position": position, "commit": commit,
                       "perplexity": perplexity.detach()}, ids


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean smooth-L1 (beta 1) over the valid frames (all frames without a mask)."""
    if mask is None:
        return F.smooth_l1_loss(pred, target)
    per_frame = F.smooth_l1_loss(pred, target, reduction="none").mean(-1)       # (B, T)
    m = mask.to(per_frame.dtype)
    return (per_frame * m).sum() / m.sum().clamp(min=1)


__all__ = ["Decoder", "Encoder", "ResConv1DBlock", "Resnet1D", "VQVAE", "VQVAEConfig", "masked_smooth_l1"]
