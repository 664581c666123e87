"""float16 and bfloat16 on both implementations: exact round trips and PyTorch's rounding
for every value, training in float32 arithmetic, and a training step against float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchnorm import BatchNormalization
from helpers import (
    step_against_reference,
)


# ---------------------------------------------------------------------- 16-bit
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["rows", "planes"])
def test_16bit_round_trip_is_exact_for_every_value(dtype, layout, backend):
    """Identity normalization (mean 0, variance 1, ε 0) must return every 16-bit value
    unchanged: subnormals, infinities and NaNs included (−0 comes back as +0, as
    (−0 − 0)·1 + 0 does in IEEE arithmetic)."""
    bits = torch.arange(65536, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype)
    x = values.reshape(64, 1024) if layout == "rows" else values.reshape(64, 1, 1024)
    layer = BatchNormalization(axis=1, epsilon=0.0)
    layer(x[:2], training=False)
    with torch.no_grad():
        layer.moving_variance.fill_(1.0)
    y = layer(x, training=False)
    assert y.dtype == dtype
    same = (y.view(torch.int16) == x.view(torch.int16)) | (torch.isnan(y) & torch.isnan(x))
    same |= (x == 0) & (y == 0)
    assert bool(same.all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["rows", "planes"])
def test_16bit_rounding_matches_torch_for_every_value(dtype, layout, backend):
    """With mean 0, variance 1, ε 0 and γ 1 the float32 result is exactly x + β, so the
    stored 16-bit value must be PyTorch's own rounding of it (nearest, ties to even)
    bit for bit: every 16-bit x against offsets that round up, round down, tie, carry
    into the exponent, overflow, and land on subnormals or zero."""
    tiny = float(torch.finfo(dtype).tiny)
    offsets = [0.0, 1 / 3, -1 / 3, 1e-3, -7.5, 0.5 * tiny, -0.75 * tiny, 3 * tiny, 1e4, -65504.0]
    torch.manual_seed(0)
    channels = 1024 if layout == "rows" else 16
    beta = torch.tensor(offsets)[torch.randint(len(offsets), (channels,))]
    beta[:3] = torch.randn(3)  # arbitrary offsets
    bits = torch.arange(65536, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype)
    x = x.reshape(64, 1024) if layout == "rows" else x[torch.randperm(65536)].reshape(4, 16, 1024)
    layer = BatchNormalization(axis=1, epsilon=0.0)
    layer(x[:2], training=False)
    with torch.no_grad():
        layer.moving_variance.fill_(1.0)
        layer.beta.copy_(beta)
    y = layer(x, training=False)
    shaped = beta if layout == "rows" else beta.reshape(16, 1)
    expected = (x.float() + shaped).to(dtype)
    same = (y.view(torch.int16) == expected.view(torch.int16)) | (
        torch.isnan(y) & torch.isnan(expected)
    )
    same |= (y == 0) & (expected == 0)  # −0 against +0: x − 0 + (−0) is +0 in IEEE
    assert bool(same.all()), y.view(torch.int16)[~same][:8]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_training_matches_float32_math(dtype, backend):
    torch.manual_seed(0)
    x = (torch.randn(16, 5, 7, 3) * 3 + 2).to(dtype)
    layer = BatchNormalization(momentum=0.5)
    y = layer(x, training=True)
    x32 = x.float()
    ref = (x32 - x32.mean((0, 1, 2))) / torch.sqrt(x32.var((0, 1, 2), unbiased=False) + 1e-3)
    assert y.dtype == dtype
    assert torch.allclose(
        y.float(), ref.to(dtype).float(), atol=2 * float(torch.finfo(dtype).eps) * 8
    )
    n = 16 * 5 * 7
    expected = 0.5 + 0.5 * x32.var((0, 1, 2), unbiased=False) * n / (n - 1)
    assert torch.allclose(layer.moving_variance, expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, config",
    [
        ((64, 48), {"axis": -1}),  # rows: whole 16-wide vectors and a tail
        ((6, 5, 12, 12), {"axis": 1}),  # planes: runs of 144
        ((64, 40), {"axis": -1, "virtual_batch_size": 8}),  # one-sweep ghost batches
        ((5000, 40), {"axis": -1}),  # rows over several cache blocks
        ((67, 37), {"axis": -1}),  # rows in fours and three more; 16-wide vectors and a tail
        ((16, 37), {"axis": -1}),  # few rows: one column of 32 channels and five single ones
    ],
    ids=["rows", "planes", "ghost", "blocks", "odd-rows", "few-rows"],
)
def test_16bit_training_step_matches_float64(dtype, shape, config, backend):
    """Forward and backward of 16-bit input against the float64 reference on the same
    (16-bit) values: within a few units in the last place of the 16-bit output."""
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(3.0, 2.0, shape)).to(dtype).requires_grad_()
    dy = torch.tensor(rng.normal(size=shape)).to(dtype)
    layer, y, _, (y_ref, dx_ref, dg_ref, db_ref, new) = step_against_reference(x, dy, config, rng)
    eps = float(torch.finfo(dtype).eps)
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=2 * eps, atol=4 * eps)
    scale = np.abs(dx_ref).max()
    np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, rtol=4 * eps, atol=4 * eps * scale)
    np.testing.assert_allclose(layer.gamma.grad.double().numpy(), dg_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.beta.grad.double().numpy(), db_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=1e-5)
