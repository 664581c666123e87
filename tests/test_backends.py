"""The dispatch point: the registry, ``select``, ``BATCHNORM_BACKEND`` and
``backends.use``. What each backend computes is checked by the suites parametrized
over every registered backend (the ``backend`` fixture of ``conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import batchnorm
import reference as R
from batchnorm import backends
from batchnorm._layout import Geometry
from batchnorm.backends import BackendError
from helpers import assert_unchanged, snapshot


def geo(x: torch.Tensor) -> Geometry:
    return Geometry.of(x, [x.dim() - 1])


def test_registry_lists_the_backends_available_here():
    """The C kernels, the Triton kernels (on CUDA, or in Triton's interpreter, which the
    tests use without a GPU), PyTorch operations."""
    assert backends.names() == ["c", "triton", "torch"]
    rows = [(name, ok) for name, ok, _ in backends.status()]
    assert rows == [("c", True), ("triton", True), ("torch", True)]
    with pytest.raises(ValueError, match=r"Unknown backend 'cuda'; the backends are \['c', "):
        backends.get("cuda")


def test_select_takes_the_best_backend_that_supports_the_tensor():
    x = torch.randn(4, 3)
    assert backends.select(x, geo(x)).name == "c"
    meta = torch.empty(4, 3, device="meta")  # (no CUDA here: another device the C one refuses)
    assert backends.select(meta, geo(meta)).name == "torch"
    ints = torch.zeros(4, 3, dtype=torch.int64)
    assert backends.select(ints, geo(ints)).name == "torch"
    with backends.use("torch") as forced:
        assert forced.name == "torch" and backends.select(x, geo(x)).name == "torch"
        with backends.use("c"):
            assert backends.select(x, geo(x)).name == "c"
        with backends.use(None) as default:  # the default choice again, inside the block
            assert default is None and backends.forced() is None and backends.short_calls()
            assert backends.select(x, geo(x)).name == "c"
        assert backends.forced() == "torch" and not backends.short_calls()
    assert backends.forced() is None and backends.short_calls()


def test_a_forced_backend_that_cannot_take_a_call_says_which_and_why():
    meta = torch.empty(4, 3, device="meta")
    with backends.use("c"), pytest.raises(BackendError, match=r"'c' .*takes CPU tensors"):
        backends.select(meta, geo(meta))
    layer = batchnorm.BatchNormalization(axis=[1, 2], momentum=0.5)
    x = torch.randn(4, 3, 5, 2).contiguous(memory_format=torch.channels_last)
    layer(x.contiguous(), training=False)
    before = snapshot(layer)
    with backends.use("c"), pytest.raises(BackendError, match=r"'c' .*5-D view"):
        layer(x, training=True)  # channels out of the parameters' order in memory
    assert_unchanged(layer, before)
    layer(x, training=True)  # unforced: PyTorch operations take it


def test_traced_calls_run_pytorch_operations_even_with_a_backend_forced():
    layer = batchnorm.BatchNormalization(momentum=0.5)
    x = torch.randn(6, 3, dtype=torch.float64) * 2 + 1
    layer(x, training=False)
    with backends.use("c"):
        traced = torch.jit.trace(layer.eval(), x)
    assert "aten::rsqrt" in str(traced.graph)  # PyTorch operations, not an opaque C call
    expected = x / torch.sqrt(torch.tensor(1 + 1e-3, dtype=torch.float64))
    torch.testing.assert_close(traced(x), expected)


def test_the_same_call_gives_the_float64_reference_on_every_backend():
    """One training step and one inference call per backend, forced, against float64
    (in float32 on a backend that takes no float64 tensors)."""
    dy = np.random.default_rng(0).normal(size=(8, 3, 4, 4))
    for name in backends.names():
        probe = torch.zeros(4, 3, dtype=torch.float64)
        full = backends.get(name).supports(probe, geo(probe)) is None
        dtype, tol = (torch.float64, 1e-10) if full else (torch.float32, 1e-5)
        x = torch.tensor(np.random.default_rng(0).normal(2.0, 3.0, (8, 3, 4, 4))).to(dtype)
        layer = batchnorm.BatchNormalization(axis=1, momentum=0.5, renorm=True).to(dtype)
        with backends.use(name):
            y = layer(x, training=True)
            y_infer = layer(x, training=False)
        state = R.State(
            np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), np.ones(3), np.zeros(3), np.ones(3)
        )
        options = R.Options(momentum=0.5, renorm=True)
        xd = x.double().numpy()
        y_ref, _, _, _, new = R.train_step(xd, dy, [1], state, options)
        np.testing.assert_allclose(y.detach().double().numpy(), y_ref, atol=tol, err_msg=name)
        got = layer.moving_mean.double().numpy()
        np.testing.assert_allclose(got, new.moving_mean, atol=tol / 100, err_msg=name)
        y_inf_ref = R.inference(xd, [1], new, 1e-3)
        np.testing.assert_allclose(y_infer.detach().double().numpy(), y_inf_ref, atol=tol)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_the_environment_variable_forces_a_backend_from_import():
    result = _run(
        """
        import torch, batchnorm
        from batchnorm import backends
        from batchnorm.backends.c import build as _native
        layer = batchnorm.BatchNormalization()
        y = layer(torch.randn(8, 3) * 2 + 1, training=True)
        print(backends.forced(), backends.short_calls(), _native._tried)
        print(float(y.mean().abs()) < 1e-6, float(y.var(0, unbiased=False).mean()))
        """,
        BATCHNORM_BACKEND="torch",
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "torch False False"  # the C library was never even loaded
    assert second.startswith("True 0.99")
    bad = _run("import batchnorm", BATCHNORM_BACKEND="gpu")
    assert bad.returncode != 0
    names = "['c', 'triton', 'torch']"
    assert f"BATCHNORM_BACKEND='gpu' names no backend; the backends are {names}" in bad.stderr


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="Unknown backend 'tpu'"), backends.use("tpu"):
        pass
    assert backends.forced() is None


@pytest.fixture(scope="module")
def one_process_group(tmp_path_factory):
    import torch.distributed as dist

    store = tmp_path_factory.mktemp("group") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("name", backends.names())
@pytest.mark.parametrize("config", [{}, {"renorm": True, "virtual_batch_size": 2}], ids=str)
def test_synchronized_statistics_run_on_every_backends_pieces(one_process_group, name, config):
    """Synchronized statistics are written once over the backends' pieces (moments,
    normalize, grad_sums, input_grad): each backend, forced, on one gloo process, against
    the float64 reference (output, input and parameter gradients, statistics)."""
    rng = np.random.default_rng(1)
    probe = torch.zeros(4, 3, dtype=torch.float64)
    full = backends.get(name).supports(probe, geo(probe)) is None  # takes float64 CPU tensors
    dtype, tol = (torch.float64, 1e-9) if full else (torch.float32, 2e-5)
    x = torch.tensor(rng.normal(1.0, 2.0, (4, 3, 5, 5)), dtype=dtype, requires_grad=True)
    dy = rng.normal(size=(4, 3, 5, 5))
    layer = batchnorm.BatchNormalization(axis=1, momentum=0.5, synchronized=True, **config)
    layer(x.detach(), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    state = R.state_of(layer)
    with backends.use(name):
        y = layer(x, training=True)
        (y * torch.from_numpy(dy).to(dtype)).sum().backward()
    options = R.Options(
        momentum=0.5,
        renorm=layer.renorm,
        virtual_batch_size=config.get("virtual_batch_size"),
    )
    xd = x.detach().double().numpy()
    y_ref, dx_ref, dg_ref, db_ref, new = R.train_step(xd, dy, [1], state, options)
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, atol=tol / 10)
    np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, atol=tol)
    grads = layer.gamma.grad, layer.beta.grad
    for got, want in zip(grads, (dg_ref, db_ref), strict=True):
        np.testing.assert_allclose(got.double().numpy().reshape(want.shape), want, atol=tol * 5)
    np.testing.assert_allclose(layer.moving_mean.double().numpy(), new.moving_mean, atol=tol / 100)
    np.testing.assert_allclose(
        layer.moving_variance.double().numpy(), new.moving_variance, atol=tol / 100
    )


def test_a_layer_moved_to_another_device_after_its_first_calls():
    """The short call's per-layout cache keys on the device: a CPU layout's entry never
    sees another device's memory (the meta device stands in for a GPU here). Input on
    another device than the layer gets the clear error; moved along with it, the layer
    runs there, and back on the CPU gives the float64 reference again."""
    layer = batchnorm.BatchNormalization(axis=1, momentum=0.5)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    for training in (True, False, True):  # cached entries for both modes
        layer(x, training=training)
    meta = torch.empty(4, 3, 5, dtype=torch.float64, device="meta")
    before = snapshot(layer)
    with pytest.raises(ValueError, match="is on meta but the layer's variables are on cpu"):
        layer(meta, training=False)
    assert_unchanged(layer, before)
    state = R.state_of(layer)
    layer.to("meta")
    assert layer(meta, training=True).device.type == "meta"
    assert layer(meta, training=False).device.type == "meta"
    layer.to_empty(device="cpu")  # (meta held no values) and the state from before
    layer.set_weights(
        [getattr(state, n) for n in ("gamma", "beta", "moving_mean", "moving_variance")]
    )
    y = layer(x, training=False)
    want = R.inference(x.numpy(), [1], R.state_of(layer), 1e-3)
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-10, atol=1e-10)
