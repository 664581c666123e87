"""The training pass's autograd node: the C++ one (``backends/c/autograd.cpp``) and the Python
``torch.autograd.Function`` it replaces behave the same way towards autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd import gradcheck, gradgradcheck

import reference
from batchnorm import functional as F
from batchnorm.backends.c import cxx as _cxx
from helpers import CLIP, CPP_NAME, step_options, weighted_layer

STEPS = {
    "rows": ((48, 20), {}),
    "nchw": ((4, 6, 5, 3), {"axis": 1}),
    "renorm-ghost": ((32, 6), {"renorm": True, "renorm_clipping": CLIP, "virtual_batch_size": 8}),
    "no-gamma-beta": ((24, 5), {"center": False, "scale": False}),
}


@pytest.mark.parametrize("name", list(STEPS))
def test_partial_gradients_match_float64(name, node):
    """Only some inputs want a gradient (x alone, γ alone, a subset through
    ``autograd.grad``): the node computes exactly those, each against float64."""
    shape, config = STEPS[name]
    rng = np.random.default_rng(3)
    layer = weighted_layer(shape, rng, **config)
    options = step_options(layer, config)
    params = [p for p in (layer.gamma, layer.beta) if p is not None]
    for wanted in ("x", "gamma", "grad-x"):
        x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32)
        dy = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
        state = reference.state_of(layer)
        for p in params:
            p.requires_grad_(wanted != "x")
            p.grad = None
        x.requires_grad_(wanted != "gamma")
        if wanted == "gamma" and not params:
            continue  # nothing requires a gradient: no node at all
        y = layer(x, training=True)
        assert (y.grad_fn.name() == CPP_NAME) == (node == "cpp")
        ref = reference.train_step(
            x.detach().double().numpy(), dy.double().numpy(), layer.axis, state, options
        )
        if wanted == "grad-x":
            (dx,) = torch.autograd.grad(y, [x], dy)
            assert all(p.grad is None for p in params)
        else:
            y.backward(dy)
            dx = x.grad
        if wanted == "gamma":
            assert dx is None
        else:
            scale = np.abs(ref[1]).max()
            np.testing.assert_allclose(dx.double().numpy(), ref[1], rtol=1e-5, atol=1e-5 * scale)
        if wanted == "gamma":
            np.testing.assert_allclose(layer.gamma.grad.double().numpy(), ref[2], rtol=1e-4)
            np.testing.assert_allclose(layer.beta.grad.double().numpy(), ref[3], rtol=1e-4)
    for p in params:
        p.requires_grad_(True)


@pytest.mark.parametrize("name", list(STEPS))
def test_training_pass_without_a_graph(name, node, monkeypatch):
    """A training call that autograd does not record (under ``no_grad``, e.g. a pass that
    recalibrates the moving statistics) goes through the C++ module without a node when it
    is built, through the Python pass otherwise: output and moving statistics against
    float64 either way."""
    from batchnorm.backends.c import passes

    if node == "cpp":  # the C++ module must take the call: the Python pass would raise
        monkeypatch.setattr(passes.NativeTrainNorm, "forward", None)
    shape, config = STEPS[name]
    rng = np.random.default_rng(5)
    layer = weighted_layer(shape, rng, **config)
    options = step_options(layer, config)
    for _ in range(2):
        x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32)
        state = reference.state_of(layer)
        with torch.no_grad():
            y = layer(x, training=True)
        assert y.grad_fn is None
        ref = reference.train_step(x.double().numpy(), np.zeros(shape), layer.axis, state, options)
        np.testing.assert_allclose(y.double().numpy(), ref[0], rtol=1e-5, atol=1e-5)
        new = ref[4]
        np.testing.assert_allclose(layer.moving_mean.numpy(), new.moving_mean, rtol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), new.moving_variance, rtol=1e-5)


@pytest.mark.parametrize("name", list(STEPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_inference_pass_without_a_graph(name, dtype, node, monkeypatch):
    """An inference call that autograd does not record (under ``no_grad``, or with
    nothing that requires a gradient) goes through the C++ module without a node when it
    is built, through ctypes otherwise: the layer's call and ``inference_forward`` with
    statistics of another dtype, against float64."""
    from batchnorm.backends.c import infer

    if node == "cpp":  # the C++ module must take the call: the ctypes route would raise
        monkeypatch.setattr(infer, "_infer_ctypes", None)
    shape, config = STEPS[name]
    config = {k: v for k, v in config.items() if k != "virtual_batch_size"}
    rng = np.random.default_rng(6)
    layer = weighted_layer(shape, rng, **config)
    if dtype == torch.float64:
        layer.double()
    state = reference.state_of(layer)
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=dtype)
    ref = reference.inference(x.double().numpy(), layer._axes, state, layer.epsilon)
    tol = {torch.float16: 4e-3, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            for p in layer.trainable_weights:
                p.requires_grad_(False)
            y = layer(x, training=False)
        assert y.grad_fn is None and y.dtype == dtype
        np.testing.assert_allclose(y.double().numpy(), ref, rtol=tol, atol=tol)
    gamma, beta, mean, var = (
        None if w is None else torch.tensor(w)
        for w in (state.gamma, state.beta, state.moving_mean, state.moving_variance)
    )
    with torch.no_grad():  # variables in float64, whatever x's dtype
        y = F.inference_forward(x, layer._axes, gamma, beta, mean, var, layer.epsilon)
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=tol, atol=tol)


PATHS = {
    "plain": ({}, (6, 3), [1]),
    "renorm-ghost": ({"renorm": True, "virtual_batch_size": 2}, (6, 2, 2), [2]),
    "adjustment": ({"adjustment": True}, (5, 3), [1]),
    "multi-axis": ({}, (3, 2, 3, 2), [1, 3]),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_gradgradcheck_on_either_node(path, node):
    """Finite differences agree with the first and second derivatives; the C++ node's
    double backward goes through the Python composite formula."""
    config, shape, axes = PATHS[path]
    g = torch.Generator().manual_seed(0)
    vbs = config.get("virtual_batch_size")
    pshape = [n if d in axes else 1 for d, n in enumerate(shape)]
    if vbs:
        pshape.insert(1, 1)
    kwargs = {}
    if config.get("renorm"):
        far = -5 + 0.3 * torch.randn(pshape, generator=g, dtype=torch.float64)
        kwargs["renorm"] = (far, 0.2 + 0.1 * torch.rand(pshape, generator=g, dtype=torch.float64))
        kwargs["renorm"] += (CLIP,)
        kwargs["virtual_batch_size"] = vbs
    if config.get("adjustment"):
        kwargs["adjustment"] = (
            0.9 + 0.2 * torch.rand(pshape, generator=g, dtype=torch.float64),
            0.1 * torch.randn(pshape, generator=g, dtype=torch.float64),
        )
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    gamma = (0.5 + torch.rand(pshape, generator=g, dtype=torch.float64)).requires_grad_()
    beta = torch.randn(pshape, generator=g, dtype=torch.float64).requires_grad_()

    def f(x, gamma, beta):
        return F.train_forward(x, axes, gamma, beta, 1e-3, **kwargs)[0]

    assert (f(x, gamma, beta).grad_fn.name() == CPP_NAME) == (node == "cpp")
    assert gradcheck(f, (x, gamma, beta), eps=1e-6, atol=1e-6)
    assert gradgradcheck(f, (x, gamma, beta), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("frozen", [False, True], ids=["inference", "frozen-training"])
def test_inference_node_gradients_match_float64(frozen, node):
    """A layer in inference mode (or frozen, in a training call) inside a model that
    trains: ``dx = dy·γ/√(σ² + ε)``, ``dγ = Σ dy·(x − μ)/√(σ² + ε)``, ``dβ = Σ dy`` with
    the moving statistics, against float64, for all inputs and for x alone."""
    rng = np.random.default_rng(4)
    shape = (4, 5, 3, 3)
    layer = weighted_layer(shape, rng, axis=1, trainable=not frozen)
    mean, var, gamma = (
        getattr(layer, n).detach().double().reshape(1, 5, 1, 1)
        for n in ("moving_mean", "moving_variance", "gamma")
    )
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32, requires_grad=True)
    dy = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    y = layer(x, training=frozen)
    assert (y.grad_fn.name() == "BatchNormAffineBackward") == (node == "cpp")
    y.backward(dy)
    xhat = (x.detach().double() - mean) / torch.sqrt(var + 1e-3)
    dyd = dy.double()
    torch.testing.assert_close(x.grad.double(), dyd * gamma / torch.sqrt(var + 1e-3))
    if not frozen:
        dg_ref, db_ref = (dyd * xhat).sum((0, 2, 3)), dyd.sum((0, 2, 3))
        torch.testing.assert_close(layer.gamma.grad.double(), dg_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.beta.grad.double(), db_ref, rtol=1e-5, atol=1e-5)
    (dx,) = torch.autograd.grad(layer(x, training=frozen), [x], dy)
    torch.testing.assert_close(dx, x.grad)


@pytest.mark.parametrize("shape, axes", [((5, 3), [1]), ((2, 2, 3), [1, 2])])
def test_inference_gradgradcheck_on_either_node(shape, axes, node):
    """First and second derivatives of the inference pass with given statistics."""
    g = torch.Generator().manual_seed(2)
    pshape = [n if d in axes else 1 for d, n in enumerate(shape)]
    mean = torch.randn(pshape, generator=g, dtype=torch.float64)
    var = 0.5 + torch.rand(pshape, generator=g, dtype=torch.float64)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    gamma = (0.5 + torch.rand(pshape, generator=g, dtype=torch.float64)).requires_grad_()
    beta = torch.randn(pshape, generator=g, dtype=torch.float64).requires_grad_()

    def f(x, gamma, beta):
        return F.inference_forward(x, axes, gamma, beta, mean, var, 1e-3)

    assert (f(x, gamma, beta).grad_fn.name() == "BatchNormAffineBackward") == (node == "cpp")
    assert gradcheck(f, (x, gamma, beta), eps=1e-6, atol=1e-6)
    assert gradgradcheck(f, (x, gamma, beta), eps=1e-6, atol=1e-6)


def test_autograd_bookkeeping(node):
    """What autograd promises of any node: a saved input modified in place is an error,
    a second backward needs ``retain_graph`` (and then accumulates), saved-tensor hooks
    see the saved tensors, gradients of any strides (``sum()``'s expanded one) work, and
    a forward-mode tangent is refused rather than silently dropped."""
    layer = weighted_layer((16, 4), np.random.default_rng(0))
    x = torch.randn(16, 4, requires_grad=True)
    xc = x.detach().clone().requires_grad_()
    y = layer(xc, training=True)
    y.sum().backward(retain_graph=True)
    first = xc.grad.clone()
    y.sum().backward()
    torch.testing.assert_close(xc.grad, 2 * first)
    with pytest.raises(RuntimeError, match="second time"):
        y.sum().backward()

    z = x * 1.0
    y = layer(z, training=True)
    z.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()

    packed = []

    def pack(t):
        packed.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x, training=True)
    assert (16, 4) in packed
    dy = torch.randn(4).expand(16, 4)  # stride 0 along the batch
    (dx,) = torch.autograd.grad(y, [x], dy)
    (dx_dense,) = torch.autograd.grad(layer(x, training=True), [x], dy.contiguous())
    assert torch.isfinite(dx).all() and dx.abs().max() > 0
    ref = reference.train_step(
        x.detach().double().numpy(),
        dy.double().numpy(),
        [1],
        reference.state_of(layer),
        reference.Options(momentum=0.5, bessel=layer._bessel),
    )[1]
    np.testing.assert_allclose(dx.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx_dense.double().numpy(), ref, rtol=1e-5, atol=1e-5)

    with fwAD.dual_level(), pytest.raises(RuntimeError, match="jvp"):
        layer(fwAD.make_dual(x.detach(), torch.ones(16, 4)).requires_grad_(), training=True)
    mean, var = torch.zeros(4), torch.ones(4)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="jvp"):  # a tangent on μ
        F.inference_forward(x, [1], None, None, fwAD.make_dual(mean, torch.ones(4)), var, 1e-3)


@pytest.mark.parametrize("frozen", [False, True], ids=["training", "frozen"])
def test_saved_tensor_hooks_may_change_the_layout(frozen, node):
    """A pack hook that saves a channels-last input as a contiguous copy: the backward
    reads it with its forward strides and matches float64."""
    rng = np.random.default_rng(6)
    shape = (4, 6, 5, 3)
    layer = weighted_layer(shape, rng, axis=1, trainable=not frozen)
    state = reference.state_of(layer)
    x = torch.tensor(rng.normal(1.0, 2.0, shape), dtype=torch.float32)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    dy = torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.contiguous(), lambda t: t):
        y = layer(x, training=True)
    y.backward(dy)
    xd, dyd = x.detach().double().numpy(), dy.double().numpy()
    if frozen:
        inv = (state.gamma / np.sqrt(state.moving_variance + 1e-3)).reshape(1, 6, 1, 1)
        dx_ref = dyd * inv
    else:
        dx_ref = reference.train_step(xd, dyd, [1], state, step_options(layer, {}))[1]
    np.testing.assert_allclose(x.grad.double().numpy(), dx_ref, rtol=1e-5, atol=1e-5)


def test_saved_tensors_keep_the_python_nodes_order(node):
    """Both nodes save x, γ, β (then the statistics) in that order: a non-reentrant
    checkpoint matches recomputed tensors by position, whichever node recomputes."""
    x = torch.randn(8, 3, requires_grad=True)
    gamma, beta = torch.rand(3, requires_grad=True), torch.randn(3, requires_grad=True)
    mean, var = torch.randn(3), torch.rand(3) + 0.5
    order = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: order.append(t.data_ptr()) or t, lambda t: t
    ):
        y = F.inference_forward(x, [1], gamma, beta, mean, var, 1e-3)
        z = F.train_forward(x, [1], gamma, beta, 1e-3)[0]
    assert (y.grad_fn.name() == "BatchNormAffineBackward") == (node == "cpp")
    assert (z.grad_fn.name() == CPP_NAME) == (node == "cpp")
    expected = [t.data_ptr() for t in (x, gamma, beta, mean, var, x, gamma, beta)]
    assert order == expected


def test_concurrent_backwards_on_one_graph(node):
    """Two threads run backward on the same graph, one keeping it and one freeing it:
    each gets the right gradient or PyTorch's "second time" error, never wrong numbers."""
    import threading

    layer = weighted_layer((256, 4096), np.random.default_rng(0))
    x = torch.randn(256, 4096, requires_grad=True)
    dy = torch.randn(256, 4096)
    (ref,) = torch.autograd.grad(layer(x, training=True), x, dy)
    outcomes = []
    for _ in range(10):
        y = layer(x, training=True)
        start = threading.Barrier(2)

        def keep(y=y, start=start):
            start.wait()
            try:
                (dx,) = torch.autograd.grad(y, x, dy, retain_graph=True)
                outcomes.append(bool(torch.allclose(dx, ref, rtol=1e-4, atol=1e-4)))
            except RuntimeError as exc:
                outcomes.append("second time" in str(exc))

        def free(y=y, start=start):
            start.wait()
            torch.autograd.grad(y, x, dy)

        threads = [threading.Thread(target=keep), threading.Thread(target=free)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert outcomes == [True] * 10


def test_compiled_autograd_takes_the_python_node():
    """Compiled autograd traces Python nodes only: with it configured, the C++ node is
    not used."""
    import torch._dynamo.compiled_autograd
    import torch._dynamo.config

    if _cxx.wait() is None:
        pytest.skip(f"no C++ node here: {_cxx.status()}")
    layer = weighted_layer((8, 3), np.random.default_rng(0))
    x = torch.randn(8, 3, requires_grad=True)
    assert layer(x, training=True).grad_fn.name() == CPP_NAME
    with torch._dynamo.config.patch(compiled_autograd=True):
        assert layer(x, training=True).grad_fn.name() == "NativeTrainNormBackward"
    assert layer(x, training=True).grad_fn.name() == CPP_NAME
