"""The motion VQ-VAE and its quantizers: the CPU tests of MODELS.md §8 ("LaMP VQ-VAE" row, tiny config:
width 32, code_dim 32, nb_code 16, down_t 2, depth 1, dilation 3; T = 64) plus the RVQ path MoMask uses."""

import math

import pytest
import torch

from models.nn.quantize import EMACodebook, ResidualQuantizer, nearest_codes
from models.vq.model import VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

TINY = dict(width=32, code_dim=32, nb_code=16, down_t=2, depth=1, dilation_growth=3)
D, T = 263, 64


def smooth_motions(b: int = 16, t: int = T, seed: int = 0, channels: int = 4) -> torch.Tensor:
    """(b, t, D): a few slow sinusoids mixed into the D features by a fixed projection (structured and
    compressible like motion, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    time = torch.linspace(0, 1, t)[None, :, None]
    freq = torch.rand(b, 1, channels, generator=g) * 2 + 0.5
    phase = torch.rand(b, 1, channels, generator=g) * 2 * math.pi
    mix = torch.randn(channels, D, generator=torch.Generator().manual_seed(99)) / math.sqrt(channels)
    return torch.sin(2 * math.pi * freq * time + phase) @ mix


def test_encode_gives_ids_in_range_and_decode_restores_the_shape():
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(**TINY))
    x = smooth_motions(4)
    vq.train()
    vq(x)  # the first training batch initialises the codebook
    vq.eval()
    ids = vq.encode(x)
    assert ids.shape == (4, T // 4) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < 16
    assert vq.decode(ids).shape == (4, T, D)
    assert vq.encode_features(x).shape == (4, T // 4, 32)
    _, _, forward_ids = vq(x)  # eval mode: forward uses the same nearest codes as encode
    assert torch.equal(forward_ids, ids)
    with pytest.raises(ValueError, match="multiple of 4"):
        vq.encode(x[:, :62])


def test_straight_through_gradients_reach_the_encoder():
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(**TINY))
    _, losses, _ = vq(smooth_motions(4))
    recon_only = losses["recon"]  # no commit term: only the straight-through path reaches the encoder
    recon_only.backward()
    first_conv = vq.encoder.model[0].weight.grad
    assert first_conv is not None and float(first_conv.abs().sum()) > 0
    assert not any(p.requires_grad for p in vq.quantizer.buffers())  # the codebook is not trained by gradients


def test_the_position_term_is_the_local_joint_positions():
    cfg = VQVAEConfig(**TINY)
    assert cfg.position_slice() == slice(4, 4 + 3 * 21)  # HumanML3D: J = 22
    assert VQVAEConfig(motion_dim=251).position_slice() == slice(4, 4 + 3 * 20)  # KIT-ML: J = 21
    torch.manual_seed(0)
    vq = VQVAE(cfg)
    _, losses, _ = vq(smooth_motions(2))
    total = losses["recon"] + 0.5 * losses["position"] + 0.02 * losses["commit"]
    assert torch.allclose(losses["loss"], total)


def test_no_dead_code_after_one_ema_update_on_200_random_vectors():
    torch.manual_seed(0)
    codebook = EMACodebook(16, 32)
    codebook.train()
    codebook.init_from(torch.randn(200, 32))
    shifted = torch.randn(200, 32) * 0.1 + 5.0  # far from every code: most codes get no vector
    counts = torch.bincount(nearest_codes(shifted, codebook.codebook), minlength=16)
    assert int((counts == 0).sum()) > 0  # the update below really has dead codes to reset
    codebook.ema_update(shifted, nearest_codes(shifted, codebook.codebook))
    assert float(codebook.code_count.min()) >= 1.0
    dead = counts == 0
    # each reset code is one of the batch's vectors (plus at most the tiling noise): near the data now
    assert float(torch.cdist(codebook.codebook[dead], shifted).min(1).values.max()) < 0.05
    # the reference's bookkeeping (only the vector replaced) leaves their counts below 1
    code_style = EMACodebook(16, 32, restart_reset=False)
    code_style.init_from(torch.randn(200, 32))
    code_style.ema_update(shifted, nearest_codes(shifted, code_style.codebook))
    assert float(code_style.code_count.min()) < 1.0


def test_the_codebook_starts_from_the_first_batch():
    torch.manual_seed(0)
    codebook = EMACodebook(16, 8).train()
    few = torch.randn(5, 8)  # fewer vectors than codes: tiled with noise of std 0.01 / sqrt(8)
    codebook(few)
    distance = torch.cdist(codebook.codebook, few).min(1).values
    assert bool(codebook.initialised) and float(distance.max()) < 0.1


def test_total_loss_falls_on_16_sequences():
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(**TINY, dropout=0.0))
    x = smooth_motions(16)
    opt = torch.optim.AdamW(vq.parameters(), lr=2e-3, betas=(0.9, 0.99))
    losses = []
    for _ in range(40):
        _, parts, _ = vq(x)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, (losses[:5], losses[-5:])


def test_residual_quantizer_with_forced_dropout_index_0_uses_layer_0_only():
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(**TINY, quantizer="residual", num_quantizers=3, quantizer_dropout=0.2)).train()
    x = smooth_motions(4)
    x_hat, losses, ids = vq(x, force_dropout_index=0)
    assert ids.shape == (4, T // 4, 3)
    assert bool((ids[..., 0] >= 0).all()) and bool((ids[..., 1:] == -1).all())
    layers = vq.quantizer.layers
    assert bool(layers[0].initialised) and not bool(layers[1].initialised) and not bool(layers[2].initialised)
    vq.eval()
    with torch.no_grad():  # the reconstruction is the decoder of layer 0's codes alone
        expected = vq.decode_codes(layers[0].lookup(ids[..., 0]))
        assert torch.allclose(vq.decode(ids), expected, atol=1e-6)
    _, _, all_ids = vq.train()(x)  # no forced index: all layers (dropout p = 0.2 may drop some)
    assert all_ids.shape == (4, T // 4, 3)
    vq.eval()
    full = vq.encode(x)
    assert bool((full >= 0).all()) and int(full.max()) < 16 and vq.decode(full).shape == (4, T, D)


def test_quantizer_dropout_draws_the_kept_layers_uniformly():
    torch.manual_seed(0)
    rvq = ResidualQuantizer(3, 16, 8, dropout=1.0).train()
    kept = [rvq.active_layers(None) for _ in range(600)]
    assert set(kept) == {1, 2, 3} and all(150 < kept.count(k) < 250 for k in (1, 2, 3))
    assert rvq.eval().active_layers(None) == 3  # never in evaluation
    with pytest.raises(ValueError):
        rvq.active_layers(3)


def test_residual_layers_reduce_the_error():
    torch.manual_seed(0)
    rvq = ResidualQuantizer(3, 16, 8, dropout=0.0).train()
    z = torch.randn(400, 8)
    for _ in range(5):
        rvq(z)
    rvq.eval()
    errors = [float((rvq.lookup(rvq.quantize(z, layers=q)) - z).pow(2).mean()) for q in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2], errors
