"""Renorm clipping values on a device: checked when the layer is built, then read on the
device only (never on the host in a training step), while values on the host (numbers,
CPU tensors) are still checked on every call. A device is simulated on the CPU by
patching ``_checks.on_host``, the one place that decides where a value lives, and by
clipping tensors that fail any host read."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import reference
from batchnorm import BatchNormalization, _checks, _math, backends, functional
from helpers import assert_unchanged, snapshot, weighted_layer


class NoHostReads(torch.Tensor):
    """A 0-dim clipping value whose host reads (``float``, ``item``, ``bool``, ``tolist``)
    raise while ``armed``; torch operations see a plain tensor and return plain tensors."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    armed = False


def _guarded(name: str):
    def method(self, *args, **kwargs):
        if type(self).armed:
            raise AssertionError(f"a device clipping value was read on the host ({name})")
        return getattr(torch.Tensor, name)(self, *args, **kwargs)

    return method


for _name in ("__float__", "__int__", "__bool__", "item", "tolist"):
    setattr(NoHostReads, _name, _guarded(_name))


def device_value(value: float) -> NoHostReads:
    return torch.tensor(value).as_subclass(NoHostReads)


@pytest.fixture
def on_device(monkeypatch):
    """Tensors count as device-resident (numbers stay on the host)."""
    monkeypatch.setattr(_checks, "on_host", lambda value: not isinstance(value, torch.Tensor))


def _reference_step(layer, x, dy, clipping, vbs):
    options = reference.Options(
        momentum=0.5,
        bessel=layer._bessel,
        renorm=True,
        clipping=clipping,
        virtual_batch_size=vbs,
    )
    return reference.train_step(x, dy, [1], reference.state_of(layer), options)


def _check_step(layer, rng, clipping, vbs, dtype, stale=None):
    """One training step (forward and backward) against the float64 reference with the
    float ``clipping``, whose output differs from the unclipped one (and from the one
    with the ``stale`` clipping when given)."""
    shape = (16, 3)
    x = rng.normal(2.0, 3.0, shape)
    dy = rng.normal(size=shape)
    y_ref, dx_ref, _, _, new = _reference_step(layer, x, dy, clipping, vbs)
    for other in ({}, stale) if stale is not None else ({},):
        assert not np.allclose(y_ref, _reference_step(layer, x, dy, other, vbs)[0])
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    with backends.use("torch"):
        y = layer(xt, training=True)
    y.backward(torch.tensor(dy, dtype=dtype))
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, **tol)
    np.testing.assert_allclose(xt.grad.double().numpy(), dx_ref, **tol)
    after = reference.state_of(layer)
    for name in ("moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"):
        np.testing.assert_allclose(getattr(after, name), getattr(new, name), **tol, err_msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("vbs", [None, 4])
def test_device_clipping_is_not_read_on_the_host_and_follows_in_place_changes(
    dtype, vbs, on_device, monkeypatch
):
    rmin, rmax, dmax = device_value(0.75), device_value(1.25), device_value(0.25)
    rng = np.random.default_rng(0)
    layer = weighted_layer(
        (16, 3),
        rng,
        renorm=True,
        renorm_clipping={"rmin": rmin, "rmax": rmax, "dmax": dmax},
        virtual_batch_size=vbs,
    ).to(dtype)
    monkeypatch.setattr(NoHostReads, "armed", True)
    with pytest.raises(AssertionError, match="read on the host"):
        float(rmax)  # (the guard works)
    before = {"rmin": 0.75, "rmax": 1.25, "dmax": 0.25}
    _check_step(layer, rng, before, vbs, dtype)
    rmax.fill_(1.5)  # a schedule relaxes the clipping in place
    dmax.fill_(0.5)
    _check_step(layer, rng, {"rmin": 0.75, "rmax": 1.5, "dmax": 0.5}, vbs, dtype, stale=before)


def test_mixed_host_and_device_bounds(on_device, monkeypatch):
    """rmin a float on the host, rmax and dmax on the device."""
    rmax, dmax = device_value(1.25), device_value(0.125)
    rng = np.random.default_rng(1)
    clipping = {"rmin": 0.5, "rmax": rmax, "dmax": dmax}
    layer = weighted_layer((16, 3), rng, renorm=True, renorm_clipping=clipping).double()
    monkeypatch.setattr(NoHostReads, "armed", True)
    _check_step(layer, rng, {"rmin": 0.5, "rmax": 1.25, "dmax": 0.125}, None, torch.float64)


def test_renorm_correction_takes_device_bounds(on_device, monkeypatch):
    rng = np.random.default_rng(2)
    mean, renorm_mean = (torch.tensor(rng.normal(0, 2, 5)) for _ in range(2))
    var, renorm_stddev = (torch.tensor(rng.uniform(0.1, 4, 5)) for _ in range(2))
    args = (mean, var, renorm_mean, renorm_stddev, 1e-3)
    floats = {"rmin": 0.75, "rmax": 1.5, "dmax": 0.5}
    tensors = {k: device_value(v) for k, v in floats.items()}
    monkeypatch.setattr(NoHostReads, "armed", True)
    r, d = functional.renorm_correction(*args, tensors)
    r_ref, d_ref = functional.renorm_correction(*args, floats)
    assert torch.equal(r, r_ref) and torch.equal(d, d_ref)
    assert type(r) is torch.Tensor and type(d) is torch.Tensor
    unclipped = functional.renorm_correction(*args, {})
    assert not torch.equal(r, unclipped[0]) and not torch.equal(d, unclipped[1])


# ---------------------------------------------------------------------- host values
INVALID = {  # the value a schedule sets, and the error it must raise
    "rmin": (-0.5, "must be >= 0; received rmin=-0.5"),
    "rmax": (0.5, r"rmax=0.5, rmin=0.75"),
    "dmax": (-1.0, "must be >= 0; received dmax=-1.0"),
    "nan": (math.nan, "must not be NaN"),
}


@pytest.mark.parametrize("backend", [None, "torch"])
@pytest.mark.parametrize("kind", ["float", "cpu-tensor"])
@pytest.mark.parametrize("case", list(INVALID))
def test_host_values_are_checked_on_every_call(case, kind, backend):
    wrap = float if kind == "float" else torch.tensor
    clipping = {"rmin": wrap(0.75), "rmax": wrap(1.25), "dmax": wrap(0.25)}
    layer = BatchNormalization(renorm=True, renorm_clipping=clipping)
    with backends.use(backend):
        layer(torch.randn(8, 3), training=True)
        key = "rmax" if case == "nan" else case
        value, message = INVALID[case]
        if kind == "float":  # a schedule of floats rewrites the layer's mapping
            layer.renorm_clipping[key] = value
        else:
            clipping[key].fill_(value)
        before = snapshot(layer)
        with pytest.raises(ValueError, match=message):
            layer(torch.randn(8, 3), training=True)
        assert_unchanged(layer, before)


def test_host_values_are_checked_beside_device_ones(on_device):
    layer = BatchNormalization(
        renorm=True, renorm_clipping={"rmin": 0.5, "rmax": torch.tensor(2.0)}
    )
    with backends.use("torch"):
        layer(torch.randn(8, 3), training=True)
        layer.renorm_clipping["rmin"] = -1.0
        before = snapshot(layer)
        with pytest.raises(ValueError, match="received rmin=-1.0"):
            layer(torch.randn(8, 3), training=True)
    assert_unchanged(layer, before)


# ---------------------------------------------------------------------- device values
@pytest.mark.parametrize(
    ("clipping", "message"),
    [
        ({"rmin": -0.5}, "received rmin=-0.5"),
        ({"rmin": 2.0, "rmax": 1.0}, "rmax=1.0, rmin=2.0"),
        ({"dmax": -1.0}, "received dmax=-1.0"),
        ({"rmax": math.nan}, "must not be NaN"),
    ],
)
def test_device_values_are_checked_at_construction(clipping, message, on_device):
    tensors = {k: torch.tensor(v) for k, v in clipping.items()}
    with pytest.raises(ValueError, match=message):
        BatchNormalization(renorm=True, renorm_clipping=tensors)
    with pytest.raises(ValueError, match=message):
        _checks.check_clipping(tensors)


def test_device_values_are_not_checked_per_call_but_host_reads_check_them(on_device):
    """``check_host_clipping`` leaves device tensors alone; ``clip_bounds`` (the C
    backend's, which reads every value on the host anyway) checks them."""
    clipping = {"rmin": torch.tensor(-1.0)}
    _checks.check_host_clipping(clipping)
    with pytest.raises(ValueError, match="received rmin=-1.0"):
        _math.clip_bounds(clipping)
    bounds, tensors = _math.split_clipping({"rmin": 0.5, "dmax": torch.tensor(1.0)})
    assert bounds == (0.5, math.inf, math.inf)
    assert tensors[:2] == (None, None) and float(tensors[2]) == 1.0


def test_clipping_tensors_compile_with_fullgraph_and_follow_in_place_changes():
    """Under torch.compile a clipping tensor is part of the graph (a CPU tensor too: its
    value is read on the device, never as a Python number that would break the graph),
    and a schedule's in-place change reaches the next compiled step."""
    rmax, dmax = torch.tensor(1.25), torch.tensor(0.25)
    rng = np.random.default_rng(4)
    clipping = {"rmin": 0.75, "rmax": rmax, "dmax": dmax}
    layer = weighted_layer((16, 3), rng, renorm=True, renorm_clipping=clipping).double()
    torch._dynamo.reset()
    step = torch.compile(lambda t: layer(t, training=True), fullgraph=True, backend="aot_eager")
    for bounds in (
        {"rmin": 0.75, "rmax": 1.25, "dmax": 0.25},
        {"rmin": 0.75, "rmax": 1.5, "dmax": 0.5},
    ):
        rmax.fill_(bounds["rmax"])
        dmax.fill_(bounds["dmax"])
        x, dy = rng.normal(2.0, 3.0, (16, 3)), rng.normal(size=(16, 3))
        y_ref, dx_ref, _, _, new = _reference_step(layer, x, dy, bounds, None)
        assert not np.allclose(y_ref, _reference_step(layer, x, dy, {}, None)[0])
        xt = torch.tensor(x, requires_grad=True)
        y = step(xt)
        y.backward(torch.tensor(dy))
        np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(xt.grad.numpy(), dx_ref, rtol=1e-10, atol=1e-10)
        after = reference.state_of(layer)
        np.testing.assert_allclose(after.renorm_mean, new.renorm_mean, rtol=1e-10, atol=1e-10)
