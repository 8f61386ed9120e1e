"""models.diffusion: closed-form checks of the schedule, posterior, samplers and respacing."""

import numpy as np
import pytest
import torch

from models.diffusion.schedule import (
    GaussianDiffusion, ScheduleError, classifier_free, linear_betas, mix, sample_loop, space_timesteps,
)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_linear_betas_scale_with_steps():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000
    b = linear_betas(100)  # scale = 10
    assert b[0] == pytest.approx(1e-3) and b[-1] == pytest.approx(0.2)


def test_space_timesteps_counts():
    kept = space_timesteps(1000, "15,15,8,6,6")
    assert len(kept) == 50 and kept[0] == 0 and kept[-1] == 999 and kept == sorted(set(kept))
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(10, "") == list(range(10))
    assert space_timesteps(100, "5,5") == [0, 12, 24, 37, 49, 50, 62, 74, 87, 99]  # round() as Python rounds 24.5
    with pytest.raises(ScheduleError):
        space_timesteps(10, "6,6,6")
    with pytest.raises(ScheduleError):
        space_timesteps(10, "a,b")


def test_respaced_chain_keeps_alphas_cumprod_and_maps_to_original_steps():
    betas = linear_betas(100)
    full = GaussianDiffusion(betas)
    kept = space_timesteps(100, "5,5")
    spaced = GaussianDiffusion(betas, use_timesteps=kept)
    assert spaced.num_timesteps == 10
    np.testing.assert_allclose(spaced.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-12)
    t = torch.arange(10)
    assert spaced.model_timesteps(t).tolist() == kept


def test_q_sample_and_x0_from_eps_are_closed_form():
    d = GaussianDiffusion(linear_betas(50))
    x0, eps = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    t = torch.tensor([0, 4, 9])
    abar = np.cumprod(1 - linear_betas(50))
    xt = d.q_sample(x0, t, eps)
    for i, ti in enumerate(t.tolist()):
        want = np.sqrt(abar[ti]) * x0[i].numpy() + np.sqrt(1 - abar[ti]) * eps[i].numpy()
        np.testing.assert_allclose(xt[i].numpy(), want, rtol=1e-12)
    torch.testing.assert_close(d.predict_x0(xt, t, eps), x0)
    dx = GaussianDiffusion(linear_betas(50), prediction="x0")
    assert dx.predict_x0(xt, t, x0) is x0 and dx.target(x0, eps) is x0 and d.target(x0, eps) is eps


def test_posterior_and_variances_closed_form():
    betas = linear_betas(50)
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    small = GaussianDiffusion(betas, variance="fixed_small")
    large = GaussianDiffusion(betas, variance="fixed_large")
    post = betas * (1 - abar_prev) / (1 - abar)
    np.testing.assert_allclose(small.posterior_variance, post, rtol=1e-12)
    assert small.posterior_variance[0] == 0.0
    np.testing.assert_allclose(np.exp(small.model_log_variance[1:]), post[1:], rtol=1e-12)
    assert np.exp(small.model_log_variance[0]) == pytest.approx(post[1])  # clipped log at t = 0
    np.testing.assert_allclose(large.model_variance[1:], betas[1:])
    # mean: the posterior mean of the true x0 through x_t
    x0, xt = torch.ones(1, 2, dtype=torch.float64), torch.full((1, 2), 2.0, dtype=torch.float64)
    t = torch.tensor([5])
    c0 = betas[5] * np.sqrt(abar_prev[5]) / (1 - abar[5])
    ct = (1 - abar_prev[5]) * np.sqrt(1 - betas[5]) / (1 - abar[5])
    np.testing.assert_allclose(small.q_posterior_mean(x0, xt, t).numpy(), c0 * 1 + ct * 2, rtol=1e-12)


def test_ddpm_step_adds_fixed_variance_noise_except_at_zero():
    betas = linear_betas(50)
    d = GaussianDiffusion(betas)
    x, out, z = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    step = d.ddpm_step(out, x, torch.tensor([3, 0]), z)
    assert step[0, 0].item() == pytest.approx(np.sqrt(d.posterior_variance[3]))
    assert step[1].abs().max().item() == 0.0


def test_ddim_eta_zero_is_deterministic_and_exact_for_consistent_eps():
    """With the true eps, DDIM (eta 0) maps x_t to exactly q's mean path: x_{t-1} = sqrt(abar') x0 + sqrt(1-abar') eps."""
    d = GaussianDiffusion(linear_betas(100), use_timesteps=space_timesteps(100, "ddim10"))
    x0, eps = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    t = torch.tensor([5, 5])
    xt = d.q_sample(x0, t, eps)
    prev = d.ddim_step(eps, xt, t, torch.randn(2, 4, dtype=torch.float64), eta=0.0)
    torch.testing.assert_close(prev, d.q_sample(x0, t - 1, eps))
    # eta = 1: sigma^2 equals the DDPM posterior variance
    abar, abar_prev = d.alphas_cumprod[5], d.alphas_cumprod_prev[5]
    sigma2 = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    assert sigma2 == pytest.approx(d.posterior_variance[5])


def test_sample_loop_passes_original_timesteps_and_recovers_a_constant_x0():
    d = GaussianDiffusion(linear_betas(100), prediction="x0", use_timesteps=space_timesteps(100, "5,5"))
    seen = []
    target = torch.full((2, 3), 0.5)

    def denoise(x, t):
        seen.append(t[0].item())
        return target.expand_as(x)

    for method in ("ddpm", "ddim"):
        seen.clear()
        out = sample_loop(d, denoise, (2, 3), method=method, generator=torch.Generator().manual_seed(0))
        assert seen == list(reversed(space_timesteps(100, "5,5")))
        torch.testing.assert_close(out, target)


def test_guidance_hooks():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert classifier_free(c, u, 1.0).item() == 2.0 and classifier_free(c, u, 3.0).item() == 4.0
    assert mix([c, u], [3.0, -2.0]).item() == classifier_free(c, u, 3.0).item()
    with pytest.raises(ScheduleError):
        mix([c], [1.0, 2.0])
