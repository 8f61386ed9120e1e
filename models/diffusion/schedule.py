"""Gaussian diffusion: schedule, posterior, DDPM and DDIM steps, respacing (no weights, no network).

Notation (Ho et al. 2020, "DDPM"; Song et al. 2021, "DDIM"; Nichol & Dhariwal 2021 for respacing):
    beta_t, alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s                       (DDPM Eq. 4)
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                                 (DDPM Eq. 4)
    x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                                  (DDPM Eq. 15)
    q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, beta~_t),  beta~_t = (1-abar_{t-1})/(1-abar_t) beta_t
        c0 = beta_t sqrt(abar_{t-1}) / (1 - abar_t),  ct = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)  (DDPM Eq. 7)
    fixed-small variance: beta~_t; fixed-large: beta_t (with beta~_1 at t = 0)           (DDPM §3.2)
    DDIM: x_{t-1} = sqrt(abar_{t-1}) x_0 + sqrt(1 - abar_{t-1} - s^2) eps + s z,
          s = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})    (DDIM Eq. 12, 16)
Timesteps are 0-based (t = 0 is the first noising step); abar_{-1} = 1.

A respaced chain keeps a subset S of the original steps and recomputes beta'_i = 1 - abar_{S_i} /
abar_{S_{i-1}}, so that abar' on the chain equals abar at the kept steps; `timestep_map[i] = S_i` is
what the network receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from datasets_build.core.errors import UserError

Prediction = Literal["epsilon", "x0"]
Variance = Literal["fixed_small", "fixed_large"]


class ScheduleError(UserError, ValueError):
    """A diffusion setting that cannot make a schedule (respacing string, step counts)."""


def linear_betas(steps: int) -> np.ndarray:
    """(steps,) float64: linear from scale*1e-4 to scale*0.02 with scale = 1000/steps (improved-diffusion's
    `get_named_beta_schedule("linear")`, which MotionDiffuse uses)."""
    if steps < 1:
        raise ScheduleError(f"diffusion steps must be positive, got {steps}")
    scale = 1000.0 / steps
    if scale * 0.02 >= 1.0:
        raise ScheduleError(f"{steps} diffusion steps make the last beta {scale * 0.02:g} >= 1 (use at least 21)")
    return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
    """Sorted original step indices kept by a respacing. `"15,15,8,6,6"` splits the chain into 5 equal
    sections and keeps that many evenly strided steps in each; `"ddimN"` keeps N steps with a constant
    integer stride (DDIM's); "" keeps every step."""
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if not text:
            return list(range(num_timesteps))
        if text.startswith("ddim"):
            try:
                desired = int(text[len("ddim"):])
            except ValueError:
                raise ScheduleError(f"respacing {section_counts!r}: expected ddimN") from None
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ScheduleError(f"cannot keep exactly {desired} of {num_timesteps} steps with an integer stride")
        try:
            counts = [int(x) for x in text.split(",")]
        except ValueError:
            raise ScheduleError(f"respacing {section_counts!r}: expected comma-separated step counts") from None
    else:
        counts = [int(x) for x in section_counts]
    size, extra = divmod(num_timesteps, len(counts))
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if count > section or count < 1:
            raise ScheduleError(f"respacing {section_counts!r}: cannot keep {count} steps of a {section}-step section")
        stride = (section - 1) / (count - 1) if count > 1 else 1.0
        position = 0.0
        for _ in range(count):  # accumulated like improved-diffusion's respace.py, so the sets match
            kept.add(start + round(position))
            position += stride
        start += section
    return sorted(kept)


def _take(values: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] (B,) broadcast to like's shape (B, ...), in like's dtype."""
    out = torch.as_tensor(values, device=t.device)[t].to(like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion settings a generator's config embeds (MotionDiffuse: 1000, epsilon, fixed_small)."""

    steps: int = 1000
    prediction: Prediction = "epsilon"
    variance: Variance = "fixed_small"


class GaussianDiffusion:
    """The (possibly respaced) chain: buffers are float64 numpy, results in the input's dtype."""

    def __init__(self, betas: np.ndarray, prediction: Prediction = "epsilon", variance: Variance = "fixed_small",
                 use_timesteps: Sequence[int] | None = None) -> None:
        betas = np.asarray(betas, np.float64)
        if prediction not in ("epsilon", "x0") or variance not in ("fixed_small", "fixed_large"):
            raise ScheduleError(f"unknown parameterisation {prediction!r} / variance {variance!r}")
        self.original_steps = len(betas)
        if use_timesteps is not None:  # respacing: beta'_i = 1 - abar_{S_i} / abar_{S_{i-1}}
            kept = sorted(set(int(t) for t in use_timesteps))
            if not kept or kept[0] < 0 or kept[-1] >= len(betas):
                raise ScheduleError(f"respaced steps must lie in [0, {len(betas)})")
            abar = np.cumprod(1.0 - betas)
            betas = 1.0 - abar[kept] / np.append(1.0, abar[kept][:-1])
            self.timestep_map = np.asarray(kept, np.int64)
        else:
            self.timestep_map = np.arange(len(betas), dtype=np.int64)
        self.prediction, self.variance = prediction, variance
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # DDPM Eq. 7
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        first = self.posterior_variance[1] if len(betas) > 1 else betas[0]
        if variance == "fixed_small":  # beta~_t, its log clipped at t = 0 (beta~_0 = 0)
            self.model_variance = self.posterior_variance
            self.model_log_variance = np.log(np.append(first, self.posterior_variance[1:]))
        else:  # fixed_large: beta_t, with beta~_1 in place of beta_0 (a better log-likelihood)
            self.model_variance = np.append(first, betas[1:])
            self.model_log_variance = np.log(self.model_variance)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig, respacing: str = "") -> "GaussianDiffusion":
        betas = linear_betas(cfg.steps)
        kept = space_timesteps(cfg.steps, respacing) if respacing else None
        return cls(betas, cfg.prediction, cfg.variance, kept)

    # ------------------------------------------------------------------ training
    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Chain indices -> the original indices the network receives."""
        return torch.as_tensor(self.timestep_map, device=t.device)[t]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                                 (DDPM Eq. 4)"""
        return _take(self.sqrt_alphas_cumprod, t, x0) * x0 + _take(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network regresses: eps (epsilon) or x_0 (x0)."""
        return noise if self.prediction == "epsilon" else x0

    # ------------------------------------------------------------------ sampling
    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.prediction == "x0":
            return out
        return _take(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _take(self.sqrt_recipm1_alphas_cumprod, t, x_t) * out

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (_take(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / _take(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def q_posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """c0 x_0 + ct x_t                                                                 (DDPM Eq. 7)"""
        return _take(self.posterior_mean_coef1, t, x_t) * x0 + _take(self.posterior_mean_coef2, t, x_t) * x_t

    def ddpm_step(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  clip_x0: float | None = None) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} (no noise at t = 0)."""
        x0 = self.predict_x0(x_t, t, out)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        mean = self.q_posterior_mean(x0, x_t, t)
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return mean + nonzero * torch.exp(0.5 * _take(self.model_log_variance, t, x_t)) * noise

    def ddim_step(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  eta: float = 0.0, clip_x0: float | None = None) -> torch.Tensor:
        """One DDIM step x_t -> x_{t-1} on this chain                                (DDIM Eq. 12)"""
        x0 = self.predict_x0(x_t, t, out)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        eps = self.predict_eps(x_t, t, x0)
        abar, abar_prev = _take(self.alphas_cumprod, t, x_t), _take(self.alphas_cumprod_prev, t, x_t)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)  # (DDIM Eq. 16)
        mean = torch.sqrt(abar_prev) * x0 + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return mean + nonzero * sigma * noise


# ---------------------------------------------------------------------- guidance hook
def classifier_free(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + s (cond - uncond): s = 1 returns the conditional prediction."""
    return unconditional + scale * (conditional - unconditional)


def mix(outputs: Sequence[torch.Tensor], coefficients: Sequence[float | torch.Tensor]) -> torch.Tensor:
    """sum_k w_k out_k: a condition mixture (ReMoDiffuse's four conditions, or CFG as (s, 1 - s))."""
    if len(outputs) != len(coefficients) or not outputs:
        raise ScheduleError(f"{len(outputs)} outputs and {len(coefficients)} coefficients")
    total = outputs[0] * coefficients[0]
    for out, w in zip(outputs[1:], coefficients[1:]):
        total = total + out * w
    return total


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, original t) -> network output


@torch.no_grad()
def sample_loop(diffusion: GaussianDiffusion, denoise: Denoiser, shape: Sequence[int], *, method: str = "ddpm",
                eta: float = 0.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                noise: torch.Tensor | None = None, clip_x0: float | None = None) -> torch.Tensor:
    """x_T ~ N(0, I), then for t = T-1 .. 0: out = denoise(x_t, original t); x_{t-1} = step(out).
    `denoise` is the hook: a guided or mixed prediction is a denoiser that calls the network several
    times and combines with `classifier_free` / `mix`."""
    if method not in ("ddpm", "ddim"):
        raise ScheduleError(f"unknown sampler {method!r} (ddpm or ddim)")
    x = noise if noise is not None else torch.randn(*shape, generator=generator, device=device)
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        out = denoise(x, diffusion.model_timesteps(t))
        z = torch.randn(x.shape, generator=generator, device=device).to(x.device) if i > 0 else torch.zeros_like(x)
        x = (diffusion.ddpm_step(out, x, t, z, clip_x0) if method == "ddpm"
             else diffusion.ddim_step(out, x, t, z, eta, clip_x0))
    return x


__all__ = ["DiffusionConfig", "GaussianDiffusion", "ScheduleError", "classifier_free", "linear_betas", "mix",
           "sample_loop", "space_timesteps"]
