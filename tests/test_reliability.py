"""Edges, numerics guards, layer-level gradient checks, round trips and determinism
(docs/reliability.md maps every guarantee to its test)."""

from __future__ import annotations

import copy
import io
import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import reference
from batchnorm import BatchNormalization
from helpers import assert_unchanged, snapshot

# --------------------------------------------------------------------------------------
# Large means: no E[x²] − E[x]² cancellation on any path

LARGE_MEAN_PATHS = {
    "2d": ({}, (64, 6), None),
    "nchw": ({"axis": 1}, (8, 4, 6, 6), None),
    "nhwc": ({}, (8, 6, 6, 4), None),
    "multi-axis": ({"axis": [1, 3]}, (8, 3, 5, 4), None),
    "renorm": ({"renorm": True, "renorm_clipping": {"rmax": 2.0, "dmax": 1.0}}, (64, 6), None),
    "ghost-strided": ({"virtual_batch_size": 8, "axis": 1}, (32, 4, 5), None),
    "ghost-contiguous": ({"virtual_batch_size": 8, "ghost_grouping": "contiguous"}, (32, 6), None),
    "mask": ({}, (16, 10, 3), "mask"),
}


@pytest.mark.parametrize("path", list(LARGE_MEAN_PATHS))
def test_mean_1e4_std_1_in_float32_matches_float64(path, backend):
    """Normalized output within 1e-3 of the float64 reference, statistics to float32
    precision: the batch statistics never cancel."""
    kwargs, shape, kind = LARGE_MEAN_PATHS[path]
    layer = BatchNormalization(momentum=0.5, **kwargs)
    layer.build(shape)
    state = reference.state_of(layer)
    rng = np.random.default_rng(0)
    x = (rng.normal(0.0, 1.0, shape) + 1e4).astype(np.float32)
    dy = rng.normal(size=shape)
    mask = rng.random(shape[:-1]) < 0.7 if kind == "mask" else None
    options = reference.Options(
        momentum=0.5,
        epsilon=1e-3,
        bessel=layer._bessel,
        renorm=layer.renorm,
        clipping=dict(kwargs.get("renorm_clipping", {})),
        virtual_batch_size=kwargs.get("virtual_batch_size"),
        grouping=kwargs.get("ghost_grouping", "strided"),
    )
    y_ref, _, _, _, new = reference.train_step(x, dy, layer.axis, state, options, mask=mask)
    call = {"mask": torch.from_numpy(mask)} if mask is not None else {}
    y = layer(torch.from_numpy(x), training=True, **call)
    assert float(np.abs(y.detach().double().numpy() - y_ref).max()) <= 1e-3
    np.testing.assert_allclose(layer.moving_mean.detach().numpy(), new.moving_mean, rtol=1e-6)
    np.testing.assert_allclose(
        layer.moving_variance.detach().numpy(), new.moving_variance, rtol=1e-4, atol=1e-6
    )


# --------------------------------------------------------------------------------------
# Edges


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 1, 1), (1, 1, 1, 3)])
def test_batch_of_one_trains_without_nan(shape, backend):
    """One value per channel: σ² = 0, so y = β exactly, and the Bessel factor is
    N/max(N − 1, 1) as TF's, giving a zero (not NaN) moving-variance contribution."""
    layer = BatchNormalization(axis=1 if shape[1] == 3 else -1, momentum=0.5)
    layer.build(shape)
    with torch.no_grad():
        layer.beta.copy_(torch.linspace(-1, 1, layer.beta.numel()).reshape(layer.beta.shape))
    x = torch.randn(shape) * 5 + 3
    y = layer(x, training=True)
    assert torch.isfinite(y).all()
    assert torch.equal(y.reshape(-1), layer.beta.detach().reshape(-1))
    assert torch.equal(layer.moving_variance, torch.full_like(layer.moving_variance, 0.5))
    assert torch.allclose(layer.moving_mean.reshape(-1), 0.5 * x.reshape(-1))


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [({}, (8, 3)), ({"axis": 1}, (8, 3, 2, 2)), ({"virtual_batch_size": 2}, (8, 3))],
)
def test_constant_input_gives_beta_and_zero_variance(kwargs, shape, backend):
    layer = BatchNormalization(momentum=0.0, **kwargs)
    layer.build(shape)
    with torch.no_grad():
        layer.beta.copy_(torch.tensor([1.0, -2.0, 0.5]).reshape(layer.beta.shape))
    x = torch.full(shape, 7.25)
    y = layer(x, training=True)
    view = [3 if d == layer.axis[0] else 1 for d in range(len(shape))]
    assert torch.equal(y, layer.beta.detach().reshape(view).expand(shape))
    assert torch.equal(layer.moving_mean.reshape(-1), torch.full((3,), 7.25))
    assert torch.equal(layer.moving_variance, torch.zeros_like(layer.moving_variance))
    x.requires_grad_()
    (layer(x, training=True) * torch.randn(shape)).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"axis": 1},
        # clipping r = 1, d = 0: the output is plain batch norm, the renorm statistics
        # (of values up to 6e4) must still stay finite
        {"renorm": True, "renorm_clipping": {"rmin": 1.0, "rmax": 1.0, "dmax": 0.0}},
    ],
)
def test_huge_16bit_values_do_not_overflow(dtype, kwargs, backend):
    """|x| up to 6e4 (x² overflows float16): statistics in float32, output finite and
    within 2 units in the last place of the float64 reference."""
    rng = np.random.default_rng(1)
    shape = (16, 4, 3, 3) if kwargs.get("axis") == 1 else (64, 4)
    x64 = np.clip(rng.normal(3e4, 2e4, shape), -6e4, 6e4)
    x = torch.from_numpy(x64).to(dtype)
    layer = BatchNormalization(momentum=0.5, **kwargs)
    layer.build(shape)
    assert layer.moving_mean.dtype == torch.float32
    y = layer(x, training=True)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert all(torch.isfinite(w).all() for w in layer.weights)
    xd = x.double().numpy()
    red = tuple(d for d in range(len(shape)) if d != layer.axis[0])
    mean, var = xd.mean(axis=red, keepdims=True), xd.var(axis=red, keepdims=True)
    ref = (xd - mean) / np.sqrt(var + 1e-3)
    ulp = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype]
    scale = 2.0 ** np.floor(np.log2(np.maximum(np.abs(ref), 2.0**-14))) * ulp
    assert float((np.abs(y.detach().double().numpy() - ref) / scale).max()) <= 2.0
    if not layer.renorm:
        n = x.numel() // var.size
        bessel = n / max(n - 1, 1) if layer._bessel else 1.0
        expected = 0.5 + 0.5 * var.reshape(-1) * bessel
        np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=1e-5)


# --------------------------------------------------------------------------------------
# NaN guard


@pytest.mark.parametrize(
    "kwargs", [{}, {"axis": 1}, {"renorm": True}, {"virtual_batch_size": 2}, {"axis": [1, 2]}]
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_numerics_raises_before_any_change(kwargs, bad, backend):
    layer = BatchNormalization(check_numerics=True, momentum=0.5, **kwargs)
    x = torch.randn(4, 3, 2, 2)
    layer(x, training=True)
    before = snapshot(layer)
    x[1, 2, 0, 1] = bad
    with pytest.raises(ValueError, match="NaN or Inf.*check_numerics"):
        layer(x, training=True)
    assert_unchanged(layer, before)
    y = layer(x, training=False)  # inference is not guarded: the value propagates
    assert not torch.isfinite(y[1, 2, 0, 1])


def test_without_check_numerics_nan_propagates_as_in_tensorflow():
    layer = BatchNormalization(momentum=0.5)
    x = torch.randn(6, 3)
    x[2, 1] = float("nan")
    y = layer(x, training=True)
    assert torch.isnan(y[:, 1]).all() and torch.isfinite(y[:, [0, 2]]).all()
    assert torch.isnan(layer.moving_mean[1]) and torch.isfinite(layer.moving_mean[[0, 2]]).all()


# --------------------------------------------------------------------------------------
# Gradient checks through the whole layer (the functional paths are checked one by one
# in test_gradients.py)

LAYER_GRADCHECKS = {
    "plain": ({}, (6, 3), None),
    "tf-fused-rule": ({"axis": 1, "unbiased_moving_variance": True}, (3, 2, 3, 2), None),
    "non-fused-rule": ({"axis": 1, "fused": False}, (3, 2, 3, 2), None),
    "multi-axis": ({"axis": [1, 3]}, (3, 2, 3, 2), None),
    "ghost": ({"virtual_batch_size": 2}, (6, 3), None),
    "mask": ({}, (6, 4, 3), "mask"),
    "adjustment": ({"adjustment": "fixed"}, (5, 3), None),
    "frozen": ({"trainable": False}, (5, 3), None),
    "inference": ({}, (5, 3), "inference"),
}


@pytest.mark.parametrize("path", list(LAYER_GRADCHECKS))
def test_layer_gradcheck_and_gradgradcheck(path, backend):
    kwargs, shape, kind = LAYER_GRADCHECKS[path]
    kwargs = dict(kwargs)
    if kwargs.get("adjustment") == "fixed":
        a = (torch.tensor([1.1, 0.9, 1.0], dtype=torch.float64), torch.full((3,), 0.1).double())
        kwargs["adjustment"] = lambda s: a
    layer = BatchNormalization(dtype="float64", **kwargs)
    layer.build(shape)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w in layer.weights:
            w.copy_(0.5 + torch.rand(w.shape, generator=g, dtype=torch.float64))
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    mask = torch.rand(shape[:-1], generator=g) < 0.7 if kind == "mask" else None
    training = kind != "inference"
    params = [p for p in (layer.gamma, layer.beta) if p.requires_grad]

    def f(x, *ps):
        return layer(x, training=training, **({"mask": mask} if mask is not None else {}))

    inputs = (x, *params)
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6)
    assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------
# Round trips preserve behaviour (hypothesis)


@st.composite
def layer_configs(draw):
    rank = draw(st.integers(2, 4))
    shape = [draw(st.integers(1, 3)) for _ in range(rank)]
    axis = draw(st.sampled_from([-1, 1, [1, rank - 1]] if rank > 2 else [-1, 1]))
    kwargs = {
        "axis": axis,
        "momentum": draw(st.sampled_from([0.0, 0.5, 0.99])),
        "center": draw(st.booleans()),
        "scale": draw(st.booleans()),
        "unbiased_moving_variance": draw(st.sampled_from([None, True, False])),
    }
    if draw(st.booleans()):
        kwargs["renorm"] = True
        kwargs["renorm_clipping"] = {"rmax": draw(st.sampled_from([1.5, 3.0]))}
        kwargs["renorm_momentum"] = draw(st.sampled_from([0.5, 0.9]))
    vbs = draw(st.sampled_from([None, None, 2]))
    if vbs and axis != 0:
        kwargs["virtual_batch_size"] = vbs
        kwargs["ghost_grouping"] = draw(st.sampled_from(["strided", "contiguous"]))
        shape[0] = 2 * draw(st.integers(1, 2))
    if draw(st.booleans()):
        kwargs["gamma_regularizer"] = {"class_name": "L2", "config": {"l2": 0.01}}
        kwargs["beta_constraint"] = "non_neg"
    kind = draw(st.sampled_from(["state_dict", "deepcopy", "pickle", "get_config"]))
    seed = draw(st.integers(0, 2**16))
    return tuple(shape), kwargs, kind, seed


def _clone(layer: BatchNormalization, kind: str, fresh_kwargs: dict) -> BatchNormalization:
    if kind == "deepcopy":
        return copy.deepcopy(layer)
    if kind == "pickle":
        return pickle.loads(pickle.dumps(layer))
    if kind == "get_config":
        clone = BatchNormalization.from_config(json.loads(json.dumps(layer.get_config())))
        clone.build(layer._build_input_shape)
        clone.set_weights(layer.get_weights())
        return clone
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    clone = BatchNormalization(**fresh_kwargs)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    return clone


@settings(max_examples=60)
@given(case=layer_configs())
def test_round_trips_preserve_behaviour(case):
    """After a training step, a copy made by state_dict (weights_only), deepcopy,
    pickle or JSON get_config + weights behaves exactly like the original: the same
    outputs, gradients, losses and statistics over further training and inference."""
    shape, kwargs, kind, seed = case
    g = torch.Generator().manual_seed(seed)
    layer = BatchNormalization(**kwargs)
    layer(torch.randn(shape, generator=g) * 2 + 1, training=True)
    clone = _clone(layer, kind, kwargs)
    for training in (True, True, False):
        x = torch.randn(shape, generator=g) * 2 + 1
        outs = []
        for bn in (layer, clone):
            xg = x.clone().requires_grad_()
            y = bn(xg, training=training)
            (y * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
            outs.append((y.detach(), xg.grad, [w.detach().clone() for w in bn.weights]))
        assert torch.equal(outs[0][0], outs[1][0])
        assert torch.equal(outs[0][1], outs[1][1])
        for a, b in zip(outs[0][2], outs[1][2], strict=True):
            assert torch.equal(a, b)
        losses = [sum(bn.losses, torch.tensor(0.0)) for bn in (layer, clone)]
        assert torch.equal(losses[0].detach(), losses[1].detach())


# --------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"axis": 1}, {"renorm": True}, {"virtual_batch_size": 8}, {"axis": [1, 3]}],
)
def test_bitwise_deterministic_across_runs(kwargs, backend):
    """Large enough for the multi-threaded kernels to split the work: two runs of the
    same steps give bitwise identical outputs, gradients and statistics."""

    def run() -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        layer = BatchNormalization(momentum=0.9, **kwargs)
        results = []
        for _ in range(3):
            x = (torch.randn(64, 16, 12, 8, generator=g) * 3 + 2).requires_grad_()
            y = layer(x, training=True)
            y.backward(torch.randn(y.shape, generator=g))
            results += [y.detach(), x.grad, *(w.detach().clone() for w in layer.weights)]
            results += [layer.gamma.grad.clone()]
            layer.gamma.grad = None
        results.append(layer(x.detach(), training=False))
        return results

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
