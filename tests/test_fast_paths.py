"""The fast paths: both implementations (C kernels and PyTorch operations) against
the float64 reference, gradient checks (first and second order) on every training
path, memory layouts, 16-bit conversions, and torch.compile."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import batchnorm
import reference
from batchnorm import BatchNormalization, backends
from batchnorm import functional as F
from batchnorm.backends import BackendError
from batchnorm.backends.c import build as _native
from helpers import CLIP, assert_unchanged, snapshot, step_options, weighted_layer


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


# ---------------------------------------------------------------------- layouts
LAYOUTS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(2, 3).contiguous().transpose(2, 3),
    "sliced": lambda t: torch.cat([t, t], dim=3)[..., ::2],
    "expanded-batch": lambda t: t[:1].expand_as(t),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(
    "config",
    [
        {"axis": 1},
        {"axis": -1},
        {"axis": [1, 2]},
        {"axis": [1, 3]},
        {"axis": 1, "virtual_batch_size": 2},
        {"axis": -1, "virtual_batch_size": 3, "ghost_grouping": "contiguous"},
        {"axis": [2, 1], "renorm": True},
    ],
    ids=[
        "nchw",
        "last",
        "multi-adjacent",
        "multi-split",
        "ghost",
        "ghost-contiguous",
        "multi-renorm",
    ],
)
def test_any_layout_matches_the_reference(layout, config, backend):
    rng = np.random.default_rng(0)
    leaf = torch.tensor(rng.normal(1.0, 2.0, (6, 3, 4, 5)), dtype=torch.float64)
    leaf.requires_grad_()
    x = LAYOUTS[layout](leaf)  # a differentiable view or copy with that memory layout
    dy = torch.tensor(rng.normal(size=(6, 3, 4, 5)))
    layer = BatchNormalization(momentum=0.5, **config)
    layer(x.detach().contiguous(), training=False)  # build
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    state = reference.state_of(layer)
    route = contextlib.nullcontext()
    if backend == "c" and layout == "channels_last" and isinstance(config["axis"], list):
        # channels out of the parameters' order in memory: the C kernels' view cannot
        # walk them, so the forced C backend refuses (PyTorch operations take it otherwise)
        before = snapshot(layer)
        with pytest.raises(BackendError, match=r"backend 'c' cannot take this call: the input"):
            layer(x, training=True)
        assert_unchanged(layer, before)
        route = backends.use(None)  # the default choice takes every layout
    with route:
        y = layer(x, training=True)
    (y * dy).sum().backward()
    options = reference.Options(
        momentum=0.5,
        epsilon=1e-3,
        bessel=layer._bessel,
        renorm=layer.renorm,
        renorm_momentum=0.99,
        virtual_batch_size=config.get("virtual_batch_size"),
        grouping=config.get("ghost_grouping", "strided"),
    )
    y_ref, dx_ref, dg_ref, _, new = reference.train_step(
        x.detach().numpy(), dy.numpy(), layer.axis, state, options
    )
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-10, atol=1e-10)
    if layout in ("contiguous", "channels_last", "transposed"):  # x holds leaf's values
        np.testing.assert_allclose(leaf.grad.numpy(), dx_ref, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(layer.gamma.grad.numpy(), dg_ref, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=1e-12)


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


# ---------------------------------------------------------------------- compile
def test_torch_compile_fullgraph_trains_and_infers_with_the_same_numbers():
    torch.manual_seed(0)

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(8, 16),
            BatchNormalization(momentum=0.9, renorm=True),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 4),
        )

    model, ref = make(), make()
    x = torch.randn(32, 8)
    model(x[:2])
    ref(x[:2])
    ref.load_state_dict(model.state_dict())
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    y_ref = ref(x)
    y_ref.square().sum().backward()
    assert torch.allclose(y, y_ref, atol=1e-5)
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)
    for name in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean"):
        assert torch.allclose(getattr(model[1], name), getattr(ref[1], name), atol=1e-6)
    model.eval()
    ref.eval()
    assert torch.allclose(compiled(x), ref(x), atol=1e-5)


def test_kernel_status_is_reported():
    assert isinstance(_native.status(), str) and _native.status()
    assert "batchnorm" in batchnorm.__name__


def _step_against_reference(x, dy, config, rng):
    """One training step (forward and backward) of a layer with momentum 0.5, ``config``
    and random γ/β, and the float64 reference step from the same state; returns the
    layer, its output, that state and ``reference.train_step``'s results."""
    layer = BatchNormalization(momentum=0.5, **config)
    layer(x.detach()[:2], training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    state = reference.state_of(layer)
    y = layer(x, training=True)
    y.backward(dy)
    options = reference.Options(
        momentum=0.5,
        epsilon=1e-3,
        bessel=layer._bessel,
        virtual_batch_size=config.get("virtual_batch_size"),
    )
    ref = reference.train_step(
        x.detach().double().numpy(), dy.double().numpy(), layer.axis, state, options
    )
    return layer, y, state, ref


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
    layer, y, _, (y_ref, dx_ref, dg_ref, db_ref, new) = _step_against_reference(x, dy, config, rng)
    eps = float(torch.finfo(dtype).eps)
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=2 * eps, atol=4 * eps)
    scale = np.abs(dx_ref).max()
    np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, rtol=4 * eps, atol=4 * eps * scale)
    np.testing.assert_allclose(layer.gamma.grad.double().numpy(), dg_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.beta.grad.double().numpy(), db_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape, config",
    [
        ((8, 1000), {"axis": -1}),  # a small batch: columns of channels and a tail of 8
        ((64, 37), {"axis": -1, "virtual_batch_size": 8}),  # columns wrap around 37 parameters
        ((96, 5), {"axis": -1, "virtual_batch_size": 32}),  # 32 rows, the most a column holds
        ((4, 3, 2, 50), {"axis": -1}),  # 24 rows of a 4-D input
        ((2, 70), {"axis": -1}),  # two rows
        ((33, 40), {"axis": -1}),  # one row too many: the row loops
    ],
    ids=["small-batch", "ghost-wrap", "ghost-32", "4d", "two-rows", "33-rows"],
)
@pytest.mark.parametrize("input_grad", [True, False], ids=["dx", "no-dx"])
def test_few_rows_match_float64(dtype, shape, config, input_grad, backend):
    """A few rows per channel (small batches, ghost batches) take the column loops, which
    hold a column of channels across all rows: statistics, output and gradients against
    the float64 reference, with and without the input's gradient."""
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(3.0, 2.0, shape)).to(dtype).requires_grad_(input_grad)
    dy = torch.tensor(rng.normal(size=shape)).to(dtype)
    layer, y, _, (y_ref, dx_ref, dg_ref, db_ref, new) = _step_against_reference(x, dy, config, rng)
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=tol, atol=tol)
    if input_grad:
        scale = np.abs(dx_ref).max()
        np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(layer.gamma.grad.double().numpy(), dg_ref, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(layer.beta.grad.double().numpy(), db_ref, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=tol)
    np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=tol)


@pytest.mark.parametrize("grouping", ["strided", "contiguous"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_ghost_layout_describes_the_ghost_view(grouping, layout):
    """The C passes read ghost batches through shape and strides computed from x's; they
    must be exactly those of functional.ghost_batches' view of the same memory."""
    from batchnorm import _layout

    base = torch.randn(12, 3, 4, 5)
    x = {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1),
    }[layout]
    view, ghost_dim = F.ghost_batches(x, 4, grouping)
    shape, stride, dim = _layout.ghost_layout(x, 4, grouping)
    assert (shape, stride, dim) == (tuple(view.shape), view.stride(), ghost_dim)
    assert view.data_ptr() == x.data_ptr()


@pytest.mark.parametrize(
    "shape, axis",
    [((300, 8, 7, 7), 1), ((40, 6, 5, 7), [1, 2]), ((3, 40, 4, 4), 1)],
    ids=["nchw-7x7-blocks", "multi-axis-short-runs", "many-channels"],
)
def test_short_runs_match_float64(shape, axis, backend):
    """NCHW with small planes (adjacent channel runs walked as one block) over several
    row blocks, against the float64 reference: forward, backward and moving statistics."""
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(5.0, 3.0, shape), dtype=torch.float32, requires_grad=True)
    dy = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    layer, _, state, (_, dx_ref, dg_ref, db_ref, new) = _step_against_reference(
        x, dy, {"axis": axis}, rng
    )
    with torch.no_grad():
        y = layer(x, training=False)
    np.testing.assert_allclose(x.grad.numpy(), dx_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.gamma.grad.numpy(), dg_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.beta.grad.numpy(), db_ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=1e-5)
    view = [1] * len(shape)
    for a in layer.axis:
        view[a] = shape[a]
    mean, var = (torch.tensor(t).reshape(view) for t in (new.moving_mean, new.moving_variance))
    gamma, beta = (torch.tensor(t).reshape(view) for t in (state.gamma, state.beta))
    y_ref = (x.detach().double() - mean) / torch.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)


SWEEPS = {
    # one sweep per channel (runs of 576 values, 36 KiB a channel) on two threads
    "planes": ((16, 4, 24, 24), {"axis": 1}, torch.float32),
    "planes-renorm": ((16, 4, 24, 24), {"axis": 1, "renorm": True}, torch.float32),
    "planes-ghost": ((16, 4, 24, 24), {"axis": 1, "virtual_batch_size": 4}, torch.float32),
    "planes-float16": ((16, 4, 24, 24), {"axis": 1}, torch.float16),
    "planes-bfloat16": ((16, 4, 24, 24), {"axis": 1}, torch.bfloat16),
    "planes-odd-float16": ((16, 4, 17, 19), {"axis": 1}, torch.float16),  # 323: a vector tail
    # renorm with ghost batches: r and d need every ghost's statistics first (two passes)
    "planes-renorm-ghost": (
        (16, 4, 24, 24),
        {"axis": 1, "renorm": True, "virtual_batch_size": 4},
        torch.float32,
    ),
    # a channel's runs over 512 KiB, and one channel for two threads: two passes
    "planes-large": ((4, 2, 200, 200), {"axis": 1}, torch.float32),
    "one-channel": ((16, 1, 48, 48), {"axis": 1}, torch.float32),
    # short blocks (multi-axis NCHW): chunks of 85 channels × 12 values, 64 rows
    "short-blocks": ((64, 16, 12, 12), {"axis": [1, 2]}, torch.float32),
    "short-renorm": ((64, 16, 12, 12), {"axis": [1, 2], "renorm": True}, torch.float32),
    "short-bfloat16": ((64, 16, 12, 12), {"axis": [1, 2]}, torch.bfloat16),
}


@pytest.mark.parametrize("name", list(SWEEPS))
def test_channel_sweeps_and_their_fallbacks_match_float64(name, backend):
    """NCHW planes and multi-axis short blocks whose channels fit in L2 are normalized,
    and differentiated, a channel at a time in one sweep; renorm with ghost batches, large
    channels and too few channels take two passes. Output, input and parameter gradients
    and every moving statistic against the float64 reference, on data with mean 1e3."""
    shape, config, dtype = SWEEPS[name]
    if config.get("renorm"):
        config = {**config, "renorm_clipping": CLIP}
    rng = np.random.default_rng(5)
    layer = weighted_layer(shape, rng, **config)
    state = reference.state_of(layer)
    x = torch.tensor(rng.normal(1e3, 2.0, shape)).to(dtype)
    x64 = x.double().numpy()
    dy = torch.tensor(rng.normal(size=shape)).to(dtype)
    x.requires_grad_()
    y = layer(x, training=True)
    y.backward(dy)
    y_ref, dx_ref, dg_ref, db_ref, new = reference.train_step(
        x64, dy.double().numpy(), layer._axes, state, step_options(layer, config)
    )
    tol = 1e-4 if dtype == torch.float32 else 4 * float(torch.finfo(dtype).eps)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=tol, atol=tol)
    scale = np.abs(dx_ref).max()
    np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, atol=tol * scale)
    np.testing.assert_allclose(layer.gamma.grad.double().numpy(), dg_ref, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(layer.beta.grad.double().numpy(), db_ref, rtol=1e-4, atol=1e-3)
    for key in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev"):
        if getattr(new, key) is not None:
            np.testing.assert_allclose(
                getattr(layer, key).double().numpy(), getattr(new, key), rtol=1e-5, err_msg=key
            )


SHORT_CALLS = {
    "rows": ((64, 24), {"axis": -1}, torch.float32),
    "nchw": ((6, 5, 4, 3), {"axis": 1}, torch.float32),
    "multi-axis": ((6, 5, 4, 3), {"axis": [1, 3]}, torch.float32),
    "renorm": ((32, 7), {"renorm": True, "renorm_clipping": CLIP}, torch.float32),
    "ghost-strided": ((32, 3, 5), {"virtual_batch_size": 8}, torch.float32),
    "ghost-contiguous": (
        (32, 5),
        {"virtual_batch_size": 4, "ghost_grouping": "contiguous"},
        torch.float32,
    ),
    "float64": ((20, 6), {"axis": -1}, torch.float64),
    "float16": ((63, 40), {"axis": -1}, torch.float16),  # rows in fours and three more
    "frozen": ((16, 6), {"trainable": False}, torch.float32),
}


@pytest.mark.parametrize("route", ["short", "general"])
@pytest.mark.parametrize("name", list(SHORT_CALLS))
def test_short_call_matches_general_path(name, route, node):
    """A built layer's later calls skip the general path (the C backend's short call); a
    forward hook sends them through it. Both routes, with either autograd node, two
    training steps (the second reuses what the first worked out for the layout) and an
    inference call, against the float64 reference."""
    shape, config, dtype = SHORT_CALLS[name]
    rng = np.random.default_rng(5)
    layer = BatchNormalization(momentum=0.5, **config)
    layer(torch.zeros((2, *shape[1:]), dtype=dtype), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    calls = []
    if route == "general":
        layer.register_forward_hook(lambda *args: calls.append(1))
    frozen = not layer.trainable
    options = reference.Options(
        momentum=0.5,
        bessel=layer._bessel,
        renorm=layer.renorm,
        clipping=CLIP,
        virtual_batch_size=config.get("virtual_batch_size"),
        grouping=config.get("ghost_grouping", "strided"),
    )
    eps = 1e-5 if dtype != torch.float16 else 4 * float(torch.finfo(dtype).eps)
    for _ in range(2):  # the second step reuses the layout entry
        x = torch.tensor(rng.normal(4.0, 2.0, shape)).to(dtype).requires_grad_()
        dy = torch.tensor(rng.normal(size=shape)).to(dtype)
        state = reference.state_of(layer)
        y = layer(x, training=True)
        if not frozen:
            cpp = y.grad_fn.name() == "BatchNormTrainBackward"
            assert cpp == (node == "cpp"), y.grad_fn.name()
        y.backward(dy)
        xd, dyd = x.detach().double().numpy(), dy.double().numpy()
        if frozen:  # inference arithmetic; nothing updated
            inv = state.gamma / np.sqrt(state.moving_variance + 1e-3)
            y_ref, dx_ref, new = reference.inference(xd, layer.axis, state, 1e-3), dyd * inv, state
        else:
            y_ref, dx_ref, dg_ref, db_ref, new = reference.train_step(
                xd, dyd, layer.axis, state, options
            )
            np.testing.assert_allclose(layer.gamma.grad.double().numpy(), dg_ref, rtol=1e-3)
            np.testing.assert_allclose(layer.beta.grad.double().numpy(), db_ref, rtol=1e-3)
            layer.gamma.grad = layer.beta.grad = None
        np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=eps, atol=eps)
        scale = np.abs(dx_ref).max()
        np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, rtol=eps, atol=eps * scale)
        for field in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean"):
            if getattr(new, field) is not None:
                got = getattr(layer, field).double().numpy()
                np.testing.assert_allclose(got, getattr(new, field), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        x = torch.tensor(rng.normal(4.0, 2.0, shape)).to(dtype)
        y = layer(x, training=False)
    y_ref = reference.inference(x.double().numpy(), layer.axis, reference.state_of(layer), 1e-3)
    np.testing.assert_allclose(y.double().numpy(), y_ref, rtol=eps, atol=eps)
    if route == "short":  # the layouts were worked out once and the C passes ran
        assert any(entry is not None for entry in layer._short_entries.values())
    else:
        assert len(calls) == 3 and not layer._short_entries


def test_short_call_follows_changes_to_the_layer():
    """What the short call keeps per layout never outlives a change to the layer: new
    variable values, a dtype change, a hook registered later (the layer's or a global
    one), freezing, eval mode; an input with other strides has its own layout."""
    rng = np.random.default_rng(7)
    layer = BatchNormalization(momentum=0.5)
    x = torch.tensor(rng.normal(1.0, 2.0, (32, 6)), dtype=torch.float32)
    layer(x, training=True)
    layer(x, training=True)  # a layout entry now exists
    assert any(entry is not None for entry in layer._short_entries.values())

    def expect_inference(y, x):
        state = reference.state_of(layer)
        ref = reference.inference(x.double().numpy(), [1], state, 1e-3)
        np.testing.assert_allclose(y.detach().double().numpy(), ref, rtol=1e-5, atol=1e-5)

    # new values in place (load_state_dict copies into the same tensors)
    values = {
        k: torch.tensor(rng.uniform(0.5, 1.5, v.shape)) for k, v in layer.state_dict().items()
    }
    layer.load_state_dict(values)
    expect_inference(layer(x, training=False), x)
    # a dtype change: float64 input runs in float64; float32 input is computed in float64
    # and returned in its own dtype (the general path's rule)
    layer.double()
    y64 = layer(x.double(), training=False)
    assert y64.dtype == torch.float64
    expect_inference(y64, x)
    y32 = layer(x, training=False)
    assert y32.dtype == torch.float32
    expect_inference(y32, x)
    # a hook registered after the entries exist is called
    calls = []
    handle = layer.register_forward_hook(lambda *args: calls.append(1))
    layer(x.double(), training=False)
    assert calls == [1]
    handle.remove()
    # so are PyTorch's global module hooks, and a non-contiguous input of a seen shape
    # gets its own layout entry
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: calls.append(2))
    layer(x.double(), training=False)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: calls.append(3))
    layer(x.double(), training=False)
    handle.remove()
    assert calls == [1, 2, 3]
    strided = torch.tensor(rng.normal(1.0, 2.0, (6, 32))).t()
    expect_inference(layer(strided, training=False), strided)
    expect_inference(layer(strided.contiguous(), training=False), strided)
    # frozen: training=True runs the inference arithmetic and updates nothing
    layer.trainable = False
    before = layer.moving_mean.clone()
    expect_inference(layer(x.double(), training=True), x)
    assert torch.equal(layer.moving_mean, before)
    # eval mode with training=None is inference; train mode with None trains
    layer.trainable = True
    layer.eval()
    expect_inference(layer(x.double()), x)
    layer.train()
    state = reference.state_of(layer)
    y = layer(x.double())
    options = reference.Options(momentum=0.5, bessel=layer._bessel)
    dy = np.zeros(x.shape)
    y_ref, _, _, _, new = reference.train_step(x.double().numpy(), dy, [1], state, options)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=1e-10)


@pytest.mark.default_grain
@pytest.mark.parametrize("shape", [(40, 24), (300, 200)], ids=["one-thread", "threads"])
def test_small_inputs_run_on_one_thread(shape, backend):
    """Inputs below _native.GRAIN elements run on one thread, larger ones on PyTorch's
    thread count; a training step and an inference call match float64 either way."""
    numel = shape[0] * shape[1]
    expected = 1 if numel < _native.GRAIN else torch.get_num_threads()
    assert _native.threads(numel) == expected
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32, requires_grad=True)
    dy = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    layer, y, _, (y_ref, dx_ref, dg_ref, db_ref, new) = _step_against_reference(
        x, dy, {"axis": -1}, rng
    )
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), dx_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.gamma.grad.numpy(), dg_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.beta.grad.numpy(), db_ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=1e-5)
    with torch.no_grad():
        y = layer(x, training=False)
    state = reference.state_of(layer)
    np.testing.assert_allclose(
        y.numpy(), reference.inference(x.detach().numpy(), [1], state, 1e-3), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("ghost", [None, 2], ids=["plain", "ghost"])
def test_train_forward_batch_statistics(ghost, backend):
    """functional.train_forward's BatchStatistics (unpacked from the C pass's state on
    first use there) hold the ghost-averaged mean, biased and Bessel-corrected variance
    in parameter layout, and can be replaced."""
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.normal(2.0, 3.0, (8, 5, 3)))
    _, stats = F.train_forward(x, [2], None, None, 1e-3, virtual_batch_size=ghost, param_shape=(3,))
    xs = x.numpy().reshape(ghost, -1, 5, 3) if ghost else x.numpy()[None]
    groups = (
        xs.reshape(xs.shape[0], -1, 3)
        if not ghost
        else np.stack([xs[:, g].reshape(-1, 3) for g in range(xs.shape[1])])
    )
    mean = groups.mean(axis=1).mean(axis=0)
    var = groups.var(axis=1).mean(axis=0)
    count = groups.shape[1]
    np.testing.assert_allclose(stats.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(stats.variance.numpy(), var, rtol=1e-12)
    np.testing.assert_allclose(
        stats.unbiased_variance.numpy(), var * count / (count - 1), rtol=1e-12
    )
    assert stats.mean.shape == (3,)
    stats.variance = torch.zeros(3, dtype=torch.float64)
    assert float(stats.variance.abs().sum()) == 0.0
    np.testing.assert_allclose(stats.mean.numpy(), mean, rtol=1e-12)
