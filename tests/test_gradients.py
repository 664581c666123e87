"""Gradient checks (first and second order, float64) on every training path and on
inference, on both implementations (C kernels and PyTorch operations), and the input
gradient of a frozen layer in a training model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from batchnorm import BatchNormalization
from batchnorm import functional as F
from helpers import (
    CLIP,
    weighted_layer,
)


# ---------------------------------------------------------------------- gradient checks
def _per_channel(shape, axes, seed):
    g = torch.Generator().manual_seed(seed)
    view = [n if d in axes else 1 for d, n in enumerate(shape)]
    scale = 0.9 + 0.2 * torch.rand(view, generator=g, dtype=torch.float64)
    bias = 0.1 * torch.randn(view, generator=g, dtype=torch.float64)
    return scale, bias


TRAIN_PATHS = {
    "plain-2d": ({}, (6, 3), [1]),
    "plain-nchw": ({}, (3, 2, 3, 2), [1]),
    "plain-nhwc": ({}, (3, 2, 2, 3), [3]),
    "multi-axis": ({}, (3, 2, 3, 2), [1, 3]),
    "renorm-clipped": ({"renorm": True}, (8, 3), [1]),
    "renorm-clipped-nhwc": ({"renorm": True}, (3, 2, 2, 3), [3]),
    "ghost-strided": ({"virtual_batch_size": 2}, (6, 3), [1]),
    "ghost-contiguous": ({"virtual_batch_size": 3, "grouping": "contiguous"}, (6, 2, 3), [1]),
    "ghost-renorm": ({"virtual_batch_size": 2, "renorm": True}, (6, 2, 2), [2]),
    "adjustment": ({"adjustment": "per-channel"}, (5, 3), [1]),
    "adjustment-per-example": ({"adjustment": "per-example"}, (5, 3), [1]),
    "mask": ({"mask": True}, (6, 3), [1]),
}


def _train_fn(config, shape, axes):
    g = torch.Generator().manual_seed(0)
    kwargs = {}
    if config.get("renorm"):
        pshape = (
            [shape[a] for a in axes]
            if len(axes) == 1
            else [n if d in axes else 1 for d, n in enumerate(shape)]
        )
        # far from the batch statistics, so that r sits at rmax and d at dmax
        renorm_mean = -5 + 0.3 * torch.randn(pshape, generator=g, dtype=torch.float64)
        renorm_stddev = 0.2 + 0.1 * torch.rand(pshape, generator=g, dtype=torch.float64)
        if config.get("virtual_batch_size"):
            pshape = [n if d in axes else 1 for d, n in enumerate(shape)]
            pshape.insert(1, 1)
            renorm_mean = renorm_mean.reshape(pshape)
            renorm_stddev = renorm_stddev.reshape(pshape)
        # r and d carry no gradient (TF's stop_gradient), so finite differences agree with
        # the analytic gradient only where the clipping holds them constant
        kwargs["renorm"] = (renorm_mean, renorm_stddev, CLIP)
    if config.get("virtual_batch_size"):
        kwargs["virtual_batch_size"] = config["virtual_batch_size"]
        kwargs["grouping"] = config.get("grouping", "strided")
    if config.get("adjustment") == "per-channel":
        kwargs["adjustment"] = _per_channel(shape, axes, 1)
    elif config.get("adjustment") == "per-example":
        kwargs["adjustment"] = (
            0.9 + 0.2 * torch.rand(shape[0], 1, generator=g, dtype=torch.float64),
            0.1 * torch.randn(shape, generator=g, dtype=torch.float64),
        )
    if config.get("mask"):
        mshape = [n for d, n in enumerate(shape) if d not in axes]
        mask = torch.rand(mshape, generator=g) < 0.7
        kwargs["mask"] = mask.double().reshape(
            [n if d not in axes else 1 for d, n in enumerate(shape)]
        )

    def f(x, gamma, beta):
        return F.train_forward(x, axes, gamma, beta, 1e-3, **kwargs)[0]

    return f


def _inputs(shape, axes, vbs=None):
    g = torch.Generator().manual_seed(1)
    pshape = (
        [shape[a] for a in axes]
        if len(axes) == 1 and not vbs
        else [n if d in axes else 1 for d, n in enumerate(shape)]
    )
    if vbs:
        pshape.insert(1, 1)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    gamma = (0.5 + torch.rand(pshape, generator=g, dtype=torch.float64)).requires_grad_()
    beta = torch.randn(pshape, generator=g, dtype=torch.float64).requires_grad_()
    return x, gamma, beta


@pytest.mark.parametrize("path", list(TRAIN_PATHS))
def test_gradcheck_and_gradgradcheck_training(path, backend):
    config, shape, axes = TRAIN_PATHS[path]
    f = _train_fn(config, shape, axes)
    inputs = _inputs(shape, axes, config.get("virtual_batch_size"))
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6)
    assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "axes"), [((5, 3), [1]), ((2, 3, 2, 2), [1]), ((2, 2, 3), [1, 2])]
)
def test_gradcheck_and_gradgradcheck_inference(shape, axes, backend):
    g = torch.Generator().manual_seed(2)
    pshape = (
        [shape[a] for a in axes]
        if len(axes) == 1
        else [n if d in axes else 1 for d, n in enumerate(shape)]
    )
    mean = torch.randn(pshape, generator=g, dtype=torch.float64)
    var = 0.5 + torch.rand(pshape, generator=g, dtype=torch.float64)

    def f(x, gamma, beta):
        return F.inference_forward(x, axes, gamma, beta, mean, var, 1e-3)

    inputs = _inputs(shape, axes)
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6)
    assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_frozen_layer_gradients_in_a_training_model(backend):
    layer = BatchNormalization(trainable=False, momentum=0.5)
    layer.build((None, 3))
    layer.double()
    with torch.no_grad():
        layer.moving_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        layer.moving_variance.copy_(torch.tensor([1.5, 0.5, 3.0]))
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: layer(t, training=True), (x,), eps=1e-6, atol=1e-6)
    assert gradgradcheck(lambda t: layer(t, training=True), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, axis", [((6, 5), -1), ((4, 3, 5, 6), 1)], ids=["rows", "nchw"])
def test_frozen_layer_input_gradient_ignores_non_finite_inputs(shape, axis, backend, node):
    """A frozen layer is affine in x: ∂y/∂x = γ/√(moving variance + ε) whatever x holds, so
    an infinite or NaN input gives an infinite or NaN output but a finite input gradient,
    as in TensorFlow; against float64."""
    rng = np.random.default_rng(6)
    layer = weighted_layer(shape, rng, axis=axis, trainable=False)
    x = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    x.view(-1)[[0, 7, 11]] = torch.tensor([float("inf"), float("nan"), -float("inf")])
    x.requires_grad_()
    dy = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    y = layer(x, training=True)
    y.backward(dy)
    assert not torch.isfinite(y.view(-1)[[0, 7, 11]]).any()
    view = [1] * len(shape)
    view[axis] = shape[axis]
    slope = layer.gamma.detach().double() / torch.sqrt(layer.moving_variance.double() + 1e-3)
    expected = dy.double() * slope.reshape(view)
    assert torch.isfinite(x.grad).all()
    np.testing.assert_allclose(x.grad.double().numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
