"""Memory layouts on both implementations against the float64 reference: any layout and
configuration, few rows (the column loops), ghost views, short runs, and the channel
sweeps with their fallbacks."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import reference
from batchnorm import BatchNormalization, backends
from batchnorm import functional as F
from batchnorm.backends import BackendError
from helpers import (
    CLIP,
    assert_unchanged,
    snapshot,
    step_against_reference,
    step_options,
    weighted_layer,
)

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
    layer, y, _, (y_ref, dx_ref, dg_ref, db_ref, new) = step_against_reference(x, dy, config, rng)
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
    layer, _, state, (_, dx_ref, dg_ref, db_ref, new) = step_against_reference(
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
