"""The Condition Mixture (paper §3.4, Eq. 6) and the sampler that uses it (MODELS.md §4.5).

Every denoising step runs the network on the batch four times, conditioned on (both, text, retrieval,
none) = cond_type (11, 1, 10, 0), and mixes the x0 predictions:

    S_hat = w1 S(both) + w2 S(text) + w3 S(retrieval) + w4 S(none),   w1 + w2 + w3 + w4 = 1   (Eq. 6)

Two coefficient schedules:
- `CodeMixture` (the default: the released code's `scale_func`): for an original timestep t > 100,
  w = (t / 1000) coarse_scale + 1 and, with probability 1/2 each, {both: w, retrieval: 1 - w} or
  {text: w, none: 1 - w}; for t <= 100 the learned fixed coefficients (none = 1 - the others).
  coarse_scale 6.5 (HumanML3D) / 4.0 (KIT-ML).
- `PaperMixture` (the paper's procedure, found by `tune.py`): fixed coefficients for the first
  `len - fine_steps` chain steps (w4 = 0 there) and learned ones for the last `fine_steps` (10).
The network's sampler is DDIM (eta 0) on the respaced chain "15,15,8,6,6" (50 steps).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from models.diffusion.schedule import GaussianDiffusion, mix, sample_loop

CONDITIONS = (11, 1, 10, 0)  # both, text, retrieval, none
# the released code's constants [code: configs/remodiffuse/remodiffuse_{t2m,kit}.py]
CODE_CONSTANTS = {
    "humanml3d": {"coarse_scale": 6.5, "fine": (0.52351, -0.28419, 2.39872)},
    "kitml": {"coarse_scale": 4.0, "fine": (0.78123, 0.39284, -0.12475)},
}
MIXTURE_FILE = "mixture.json"


def complete(w: Sequence[float]) -> tuple[float, float, float, float]:
    """(w1, w2, w3) -> (w1, w2, w3, 1 - w1 - w2 - w3): the coefficients always sum to 1."""
    w1, w2, w3 = (float(x) for x in w[:3])
    return w1, w2, w3, 1.0 - w1 - w2 - w3


@dataclass(frozen=True)
class CodeMixture:
    coarse_scale: float = 6.5
    fine: tuple[float, float, float] = CODE_CONSTANTS["humanml3d"]["fine"]
    threshold: int = 100

    @classmethod
    def for_dataset(cls, dataset: str) -> "CodeMixture":
        constants = CODE_CONSTANTS[dataset]
        return cls(constants["coarse_scale"], tuple(constants["fine"]))

    def coefficients(self, t: int, chain_index: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(both, text, retrieval, none) at ORIGINAL timestep t."""
        if t > self.threshold:
            w = t / 1000.0 * self.coarse_scale + 1.0
            return (w, 0.0, 1.0 - w, 0.0) if rng.random() < 0.5 else (0.0, w, 0.0, 1.0 - w)
        return complete(self.fine)


@dataclass(frozen=True)
class PaperMixture:
    coarse: tuple[float, float, float, float]
    fine: tuple[float, float, float, float]
    fine_steps: int = 10
    fid: float | None = None  # the training-split FID the search reached

    def coefficients(self, t: int, chain_index: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
        return self.fine if chain_index < self.fine_steps else self.coarse

    def save(self, run_dir: str | os.PathLike, info: dict | None = None) -> Path:
        path = Path(run_dir) / MIXTURE_FILE
        path.write_text(json.dumps({"kind": "paper", **asdict(self), **(info or {})}, indent=2) + "\n")
        return path


Mixture = CodeMixture | PaperMixture


def load_mixture(run_dir: str | os.PathLike, dataset: str, which: str = "auto") -> Mixture:
    """`code`: the released schedule; `paper`: RUN/mixture.json (tune-mixture); `auto`: paper when saved."""
    path = Path(run_dir) / MIXTURE_FILE
    if which == "code" or (which == "auto" and not path.is_file()):
        return CodeMixture.for_dataset(dataset)
    if not path.is_file():
        from datasets_build.core.errors import UserError

        raise UserError(f"{run_dir} has no {MIXTURE_FILE}: run `python -m models tune-mixture --run {run_dir} ...`")
    saved = json.loads(path.read_text())
    return PaperMixture(complete(saved["coarse"]), complete(saved["fine"]), int(saved["fine_steps"]), saved.get("fid"))


def mixed_denoiser(model: torch.nn.Module, diffusion: GaussianDiffusion, mask: torch.Tensor,
                   text: dict[str, torch.Tensor], retrieval: dict[str, torch.Tensor], mixture: Mixture,
                   rng: np.random.Generator,
                   override: Callable[[int], Sequence[float | torch.Tensor] | None] | None = None):
    """(x_t, original t) -> the mixed x0 prediction: one network call on the 4B batch per step."""
    B = mask.shape[0]
    cond = torch.tensor(CONDITIONS, device=mask.device).repeat_interleave(B)                  # (4B,)
    text4 = {k: v.repeat(4, *([1] * (v.dim() - 1))) for k, v in text.items()}
    retr4 = {k: v.repeat(4, *([1] * (v.dim() - 1))) for k, v in retrieval.items()}
    mask4 = mask.repeat(4, 1)
    chain = {int(t): i for i, t in enumerate(diffusion.timestep_map)}

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(x_t.repeat(4, 1, 1), t.repeat(4), mask4, text4, retr4, cond).chunk(4)
        index = chain[int(t[0])]
        weights = override(index) if override is not None else None
        if weights is None:
            weights = mixture.coefficients(int(t[0]), index, rng)
        return mix(list(out), list(weights))

    return denoise


def sample(model: torch.nn.Module, diffusion: GaussianDiffusion, mask: torch.Tensor, text: dict[str, torch.Tensor],
           retrieval: dict[str, torch.Tensor], mixture: Mixture, noise: torch.Tensor,
           generator: torch.Generator | None = None, seed: int = 0) -> torch.Tensor:
    """DDIM (eta 0) over the chain with the mixed prediction; returns x_0 (B, T, D)."""
    denoise = mixed_denoiser(model, diffusion, mask, text, retrieval, mixture, np.random.default_rng(seed))
    return sample_loop(diffusion, denoise, noise.shape, method="ddim", eta=0.0, generator=generator, noise=noise,
                       device=noise.device)


__all__ = ["CONDITIONS", "CODE_CONSTANTS", "CodeMixture", "MIXTURE_FILE", "Mixture", "PaperMixture", "complete",
           "load_mixture", "mixed_denoiser", "sample"]
