"""Masks on the Triton backend: the weighted kernels (weighted moments, the weights' term
in the input gradient) against float64 on every layout of the split cases, the weights'
own strides, and the calls that keep the composite formula (weights needing a gradient,
of another dtype, summing to nothing or less)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from batchnorm import BatchNormalization, backends
from batchnorm._layout import Geometry
from batchnorm.backends.triton import launch
from triton_cases import CASES, DEVICE, NEEDS, SPLITS, check_step, layer_and_input

pytestmark = NEEDS


@pytest.mark.parametrize("triton_tiles", [{}, SPLITS[0]], indirect=True, ids=["shape", "forced"])
@pytest.mark.parametrize("case", list(CASES))
def test_masks_weigh_the_moments_and_the_gradient(triton_forced, triton_tiles, case, monkeypatch):
    """A mask's weights (boolean, or real) through the weighted kernels: a ghost batch (or
    the first example) weighing nothing gets μ = σ² = 0, the others the weighted moments;
    dx, dγ, dβ and the moving statistics against float64."""
    shape, axis, memory, options = CASES[case]
    config = {"axis": axis, **options}
    config["renorm"] = "renorm_clipping" in config
    rng = np.random.default_rng(11)
    layer, x = layer_and_input(shape, config, rng, memory)
    mshape = [n for d, n in enumerate(shape) if d not in layer._axes]
    mask = rng.uniform(0.5, 2.0, mshape)  # real weights, several per ghost batch
    mask[0 if layer.ghost_grouping == "strided" else slice(0, 3)] = 0.0  # one weighs nothing
    if case == "nchw":
        mask = mask > 1.0  # a boolean mask
    weighted = []
    moments = launch.moments
    monkeypatch.setattr(
        launch, "moments", lambda x, v, w=None: weighted.append(w is not None) or moments(x, v, w)
    )
    dy = rng.normal(size=shape)
    state = reference.state_of(layer)
    y = layer(x, training=True, mask=torch.tensor(mask, device=DEVICE))
    (y * torch.tensor(dy, dtype=torch.float32, device=DEVICE)).sum().backward()
    assert weighted == [True]
    check_step(layer, x, y, dy, state, config, mask=mask, scaled=True)


def test_a_mask_that_needs_a_gradient_or_another_dtype_runs_the_composite(triton_forced):
    """Real weights that need a gradient get it (the composite formula differentiates
    them), and weights of another dtype than x give the dtype PyTorch's type promotion
    gives, as on every backend: neither goes to the weighted kernels."""
    from batchnorm import functional as F

    rng = np.random.default_rng(6)
    x64 = torch.tensor(rng.normal(1.0, 2.0, (6, 3, 4)), device=DEVICE)
    w64 = torch.tensor(rng.uniform(0.5, 1.5, (6, 1, 4)), device=DEVICE)
    weigh = torch.arange(72.0, device=DEVICE).reshape(6, 3, 4)
    results = {}
    for name, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        with backends.use(name):
            x, w = x64.to(dtype), w64.to(dtype).requires_grad_()
            y, _ = F.train_forward(x, [1], None, None, 1e-3, mask=w)
            (y.square() * weigh.to(dtype)).sum().backward()
            promoted = F.train_forward(x, [1], None, None, 1e-3, mask=w64)[0]
            results[name] = (y.detach(), w.grad, promoted)
    (y, grad, promoted), (want_y, want_grad, want) = results["triton"], results["torch"]
    assert grad is not None and promoted.dtype == torch.float64  # (float32 x, float64 w)
    torch.testing.assert_close(y.double(), want_y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad.double(), want_grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(promoted, want, atol=1e-6, rtol=1e-6)


def test_weights_summing_to_nothing_or_less_give_every_backends_gradient(triton_forced):
    """A channel whose weights sum to 0 or less has μ = σ² = 0 as constants: dx is dy's
    term alone, as the composite formula's (float64) gives."""
    rng = np.random.default_rng(9)
    x64 = torch.tensor(rng.normal(1.0, 2.0, (4, 2)), device=DEVICE)
    dy = torch.tensor(rng.normal(size=(4, 2)), device=DEVICE)
    grads = {}
    for name, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        for mask in (-torch.ones(4), torch.tensor([1.0, -1.0, 0.5, -0.5])):
            layer = BatchNormalization(axis=1).to(DEVICE, dtype)
            x = x64.to(dtype, copy=True).requires_grad_()
            with backends.use(name):
                y = layer(x, training=True, mask=mask.to(DEVICE, dtype))
            y.backward(dy.to(dtype))
            grads.setdefault(name, []).append((y.detach().double(), x.grad.double()))
    for got, want in zip(grads["triton"], grads["torch"], strict=True):
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], want[1], atol=1e-4, rtol=1e-5)


def test_a_mask_is_read_through_its_own_strides_when_they_merge():
    """The weights broadcast over the channels (zero strides) are read in place when their
    memory merges like the input's; otherwise (NCHW ghost batches: the ghost and channel
    dimensions merge in x, not in the weights) a copy in the input's strides."""
    from batchnorm._layout import canonical, geometry, ghost_layout

    triton = backends.get("triton")
    x = torch.empty(8, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    mask = torch.ones(8, 1, 4, 5)
    geo = Geometry.of(x, [1])
    w, strides = triton.prepare_weights(mask, geo)
    assert w.data_ptr() == mask.data_ptr() and strides == (0, 0, 1, 0, 0)
    assert canonical(geo) == ((1, 1, 160, 3, 1), (0, 0, 3, 1, 0))
    nchw = torch.empty(8, 3, 4, 5)
    shape, stride, ghost = ghost_layout(nchw, 2, "strided")
    geo = geometry(shape, stride, (ghost, 2), ghost)
    ghosts = mask.reshape(2, 4, 1, 4, 5)
    w, strides = triton.prepare_weights(ghosts, geo)
    assert w.stride() == stride and strides == canonical(geo)[1]
    assert torch.equal(w, ghosts.expand(shape))
