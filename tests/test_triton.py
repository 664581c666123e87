"""The Triton backend's own paths (the conformance suite covers every feature × layout ×
dtype): the split, multi-tile and merge paths forced on tiny shapes, precision on data
with a large mean, bitwise reproducibility, and where its calls go. Without a GPU the
kernels run in Triton's interpreter on CPU tensors (``conftest.py`` sets
``TRITON_INTERPRET=1``); a missing triton fails these tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import reference
from batchnorm import BatchNormalization, backends
from batchnorm._layout import Geometry
from batchnorm.backends.triton import INTERPRET, launch
from helpers import CLIP, step_options

pytestmark = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(), reason="needs a GPU or the interpreter"
)
DEVICE = "cpu" if INTERPRET else "cuda"


@pytest.fixture
def forced():
    reason = backends.get("triton").unavailable()
    if reason is not None:
        pytest.fail(f"the triton backend is not available here: {reason}")
    with backends.use("triton"):
        yield


@pytest.fixture
def tiles(request):
    """Force tile sizes and splits (``launch.FORCE``) for one test."""
    launch.FORCE.update(request.param)
    yield request.param
    launch.FORCE.clear()


def _strided(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in memory that is not dense (every other element of a buffer)."""
    buffer = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    buffer[..., ::2] = t
    return buffer[..., ::2]


CASES = {  # (shape, axis, memory format or a transform, layer options)
    "rows": ((13, 5), -1, None, {}),
    "ncl": ((5, 3, 7), 1, None, {}),
    "5-d channels-last": ((3, 3, 2, 3, 2), 1, torch.channels_last_3d, {}),
    "transposed": ((5, 3, 7), 1, lambda t: t.transpose(1, 2).contiguous().transpose(1, 2), {}),
    "not dense": ((5, 3, 7), 1, _strided, {}),
    "nchw": ((5, 3, 3, 3), 1, None, {}),
    "channels-last": ((5, 3, 3, 3), 1, torch.channels_last, {}),
    "nlc": ((5, 7, 3), -1, None, {}),
    "multi-axis": ((5, 3, 2, 3), [1, 2], None, {}),
    "ghost-renorm": ((6, 3, 5), 1, None, {"virtual_batch_size": 2, "renorm_clipping": CLIP}),
    "ghost-contiguous": (
        (6, 5, 3),
        -1,
        None,
        {"virtual_batch_size": 3, "ghost_grouping": "contiguous", "renorm_clipping": CLIP},
    ),
}
SPLITS = [
    {"block_r": 2, "block_c": 2, "splits": 3},  # several tiles per split, uneven last split
    {"block_r": 4, "block_c": 1, "splits": 2},
    {"block_r": 1, "block_c": 4, "splits": 7},  # one position per tile
]


@pytest.mark.parametrize("tiles", SPLITS, indirect=True, ids=lambda t: str(list(t.values())))
@pytest.mark.parametrize("case", list(CASES))
def test_split_and_merge_paths_match_float64(forced, tiles, case):
    shape, axis, memory, options = CASES[case]
    config = {"axis": axis, **options}
    config["renorm"] = "renorm_clipping" in config  # (the reference clips with CLIP)
    rng = np.random.default_rng(3)
    layer = BatchNormalization(momentum=0.5, **config).to(DEVICE)
    with backends.use(None):
        layer(torch.zeros(shape, device=DEVICE), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32, device=DEVICE)
    if callable(memory):
        x = memory(x)
    elif memory is not None:
        x = x.contiguous(memory_format=memory)
    x.requires_grad_()
    dy = rng.normal(size=shape)
    state = reference.state_of(layer)
    y = layer(x, training=True)
    (y * torch.tensor(dy, dtype=torch.float32, device=DEVICE)).sum().backward()
    opts = step_options(layer, config)
    opts.grouping = config.get("ghost_grouping", "strided")
    xd = x.detach().double().cpu().numpy()
    y_ref, dx_ref, dg_ref, db_ref, new = reference.train_step(xd, dy, layer.axis, state, opts)
    np.testing.assert_allclose(y.detach().double().cpu().numpy(), y_ref, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(x.grad.double().cpu().numpy(), dx_ref, atol=2e-5, rtol=2e-5)
    got_dg = layer.gamma.grad.double().cpu().numpy().reshape(dg_ref.shape)
    np.testing.assert_allclose(got_dg, dg_ref, atol=5e-5, rtol=2e-5)
    got_db = layer.beta.grad.double().cpu().numpy().reshape(db_ref.shape)
    np.testing.assert_allclose(got_db, db_ref, atol=5e-5, rtol=2e-5)
    for name in ("moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"):
        want = getattr(new, name)
        if want is not None:
            got = getattr(layer, name).double().cpu().numpy()
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("tiles", [{}, SPLITS[0]], indirect=True, ids=["shape", "forced"])
@pytest.mark.parametrize("case", list(CASES))
def test_masks_weigh_the_moments_and_the_gradient(forced, tiles, case, monkeypatch):
    """A mask's weights (boolean, or real) through the weighted kernels: a ghost batch (or
    the first example) weighing nothing gets μ = σ² = 0, the others the weighted moments;
    dx, dγ, dβ and the moving statistics against float64."""
    shape, axis, memory, options = CASES[case]
    config = {"axis": axis, **options}
    config["renorm"] = "renorm_clipping" in config
    rng = np.random.default_rng(11)
    layer = BatchNormalization(momentum=0.5, **config).to(DEVICE)
    with backends.use(None):
        layer(torch.zeros(shape, device=DEVICE), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32, device=DEVICE)
    if callable(memory):
        x = memory(x)
    elif memory is not None:
        x = x.contiguous(memory_format=memory)
    x.requires_grad_()
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
    opts = step_options(layer, config)
    opts.grouping = config.get("ghost_grouping", "strided")
    xd = x.detach().double().cpu().numpy()
    y_ref, dx_ref, dg_ref, db_ref, new = reference.train_step(
        xd, dy, layer.axis, state, opts, mask=mask
    )
    tol = 2e-5 * max(1.0, np.abs(dx_ref).max())
    np.testing.assert_allclose(y.detach().double().cpu().numpy(), y_ref, atol=tol, rtol=2e-5)
    np.testing.assert_allclose(x.grad.double().cpu().numpy(), dx_ref, atol=tol, rtol=2e-5)
    got_dg = layer.gamma.grad.double().cpu().numpy().reshape(dg_ref.shape)
    np.testing.assert_allclose(got_dg, dg_ref, atol=5e-5, rtol=2e-5)
    got_db = layer.beta.grad.double().cpu().numpy().reshape(db_ref.shape)
    np.testing.assert_allclose(got_db, db_ref, atol=5e-5, rtol=2e-5)
    for name in ("moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"):
        want = getattr(new, name)
        if want is not None:
            got = getattr(layer, name).double().cpu().numpy()
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_a_mask_that_needs_a_gradient_or_another_dtype_runs_the_composite(forced):
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


def test_weights_summing_to_nothing_or_less_give_every_backends_gradient(forced):
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


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_double_backward_matches_float64(forced, masked):
    """A second derivative (the composite formula, weighted by a mask's weights when there
    is one) against the same derivative of the float64 PyTorch-operations backend."""
    rng = np.random.default_rng(4)
    shape = (6, 3, 4)
    x64 = torch.tensor(rng.normal(1.0, 2.0, shape))
    dy, v = (torch.tensor(rng.normal(size=shape)) for _ in range(2))
    mask = torch.tensor(rng.uniform(size=(6, 4)) > 0.3) if masked else None
    grads = {}
    for name, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        layer = BatchNormalization(axis=1, virtual_batch_size=3).to(DEVICE, dtype)
        with backends.use(None):
            layer(torch.zeros(shape, device=DEVICE, dtype=dtype), training=False)
        x = x64.to(DEVICE, dtype).requires_grad_()
        with backends.use(name):
            y = layer(x, training=True, mask=mask)
            (gx,) = torch.autograd.grad(y, x, dy.to(DEVICE, dtype), create_graph=True)
            (gx * v.to(DEVICE, dtype)).sum().backward()
        grads[name] = (gx.detach().double().cpu(), x.grad.double().cpu())
    for got, want in zip(grads["triton"], grads["torch"], strict=True):
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got, want, atol=1e-5 * scale, rtol=1e-5)


def _compiled(fn, graphs: list[list[str]]):
    """``torch.compile(fn, fullgraph=True)`` through AOTAutograd without Inductor (which
    generates GPU code the interpreter cannot run), keeping each graph's call targets."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.debugging import aot_eager

    def keep(gm, inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    return torch.compile(
        fn, fullgraph=True, backend=lambda g, i: aot_eager(g, i, fw_compiler=keep, bw_compiler=keep)
    )


COMPILED = {  # (layer options, masked)
    "plain": ({}, False),
    "renorm-ghost": ({"virtual_batch_size": 2, "renorm": True, "renorm_clipping": CLIP}, False),
    "mask": ({}, True),
}


@pytest.mark.parametrize("variant", list(COMPILED))
def test_torch_compile_runs_the_kernels_as_custom_operators(forced, variant, monkeypatch):
    """Under torch.compile the training pass's pieces are ``triton_op``s: the forward graph
    launches the moments, merge and normalize kernels, the backward graph the sums and
    the input gradient, and the step matches float64 (on CPU: the interpreter, with
    AOTAutograd but not Inductor)."""
    monkeypatch.setattr(backends.get("triton"), "compile_interpreted", True)
    options, masked = COMPILED[variant]
    shape, config = (6, 3, 4), {"axis": 1, **options}
    rng = np.random.default_rng(8)
    layer = BatchNormalization(momentum=0.5, **config).to(DEVICE)
    with backends.use(None):
        layer(torch.zeros(shape, device=DEVICE), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    mask = rng.uniform(size=(6, 4)) > 0.3 if masked else None
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32, device=DEVICE)
    x.requires_grad_()
    dy = rng.normal(size=shape)
    state = reference.state_of(layer)
    graphs: list[list[str]] = []
    kwargs = {} if mask is None else {"mask": torch.tensor(mask, device=DEVICE)}
    step = _compiled(lambda t: layer(t, training=True, **kwargs), graphs)
    y = step(x)
    (y * torch.tensor(dy, dtype=torch.float32, device=DEVICE)).sum().backward()
    launches = [g.count("triton_kernel_wrapper_functional") for g in graphs]
    assert launches == [3, 2], graphs  # forward: moments, merge, normalize; backward: 2
    opts = step_options(layer, config)
    xd = x.detach().double().cpu().numpy()
    y_ref, dx_ref, dg_ref, _, new = reference.train_step(xd, dy, layer.axis, state, opts, mask=mask)
    np.testing.assert_allclose(y.detach().double().cpu().numpy(), y_ref, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(x.grad.double().cpu().numpy(), dx_ref, atol=5e-5, rtol=2e-5)
    got_dg = layer.gamma.grad.double().cpu().numpy().reshape(dg_ref.shape)
    np.testing.assert_allclose(got_dg, dg_ref, atol=5e-5, rtol=2e-5)
    for name in ("moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"):
        want = getattr(new, name)
        if want is not None:
            got = getattr(layer, name).double().cpu().numpy()
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_export_and_inference_trace_pytorch_operations_dynamic_shapes_specialize(
    forced, monkeypatch
):
    """What stays the composite formula under tracing: torch.export (portable graphs) and
    inference (one pointwise pass, which Inductor fuses with its neighbours). A compiled
    training call with ``dynamic=True`` specializes on the shape (the kernels' view and
    tiles come from it) and still runs the kernels."""
    monkeypatch.setattr(backends.get("triton"), "compile_interpreted", True)
    layer = BatchNormalization(axis=1).to(DEVICE)
    x = torch.randn(6, 3, 4, device=DEVICE) * 2 + 1
    layer(x, training=False)
    graphs: list[list[str]] = []
    y = _compiled(lambda t: layer(t, training=False), graphs)(x)
    assert graphs and not any("triton" in t for g in graphs for t in g)
    torch.testing.assert_close(y, layer(x, training=False))
    torch._dynamo.reset()
    seen: list[str] = []

    def keep(gm, inputs):  # (the autograd.Function's graphs are submodules)
        graphs = [m.graph for m in gm.modules() if isinstance(m, torch.fx.GraphModule)]
        seen.extend(str(n.target) for g in graphs for n in g.nodes)
        return gm.forward

    f = torch.compile(lambda t: layer(t, training=True), backend=keep, dynamic=True)
    x4 = torch.randn(6, 3, 4, 2, device=DEVICE) * 2 + 1  # (every size symbolic)
    built, unbuilt = BatchNormalization(axis=1).to(DEVICE), BatchNormalization(axis=1)
    built(x4, training=False)
    f4 = torch.compile(lambda t: built(t, training=True), backend=keep, dynamic=True)
    f5 = torch.compile(lambda t: unbuilt(t, training=True), backend=keep, dynamic=True)
    cases = ((f, x[:6]), (f, x[:5]), (f4, x4), (f4, x4[:4]), (f5, x4), (f5, x4[:4]))
    for step, t in cases:
        xd, dims = t.double(), [0, *range(2, t.dim())]
        want = (xd - xd.mean(dims, keepdim=True)) / torch.sqrt(xd.var(dims, False, True) + 1e-3)
        torch.testing.assert_close(step(t).double(), want, atol=1e-5, rtol=1e-5)
    assert seen.count("batchnorm.triton_moments.default") == len(cases)  # (a graph a shape)

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = layer

        def forward(self, t):
            return self.bn(t, training=True)

    exported = torch.export.export(Step(), (x,))
    assert not any("triton" in str(n.target) for n in exported.graph.nodes)


def test_tiles_come_from_the_shape_and_fill_the_grid():
    """Channel blocks over contiguous channels, long tiles over contiguous positions,
    splits until the programs fill the device, never more splits than tiles."""
    cpu = torch.device("cpu")
    nhwc = ((1, 1, 32 * 56 * 56, 64, 1), (0, 0, 64, 1, 0))  # [A, G, M, C, I]
    block_r, block_c, splits, per = launch.tiles_for(nhwc, cpu)
    assert (block_r, block_c) == (64, 64) and splits * per * block_r >= 32 * 56 * 56
    nchw = ((32, 1, 1, 64, 3136), (64 * 3136, 0, 0, 3136, 1))
    assert launch.tiles_for(nchw, cpu)[:2] == (1024, 1)
    tiny = ((1, 1, 3, 2, 1), (0, 0, 2, 1, 0))
    assert launch.tiles_for(tiny, cpu)[2:] == (1, 1)
    wide = ((2, 1, 1, 200_000, 1), (200_000, 0, 0, 1, 0))
    assert -(-200_000 // launch.tiles_for(wide, cpu)[1]) <= 65535


def test_data_with_a_large_mean_keeps_its_precision(forced):
    """float32 data with mean 1e4 and std 1: the shifted moments and the mean held as a
    float32 pair keep the output within 1e-3 of float64 (the target) and far better."""
    rng = np.random.default_rng(5)
    x64 = rng.normal(1e4, 1.0, (64, 4, 5, 5))
    layer = BatchNormalization(axis=1, momentum=0.5, epsilon=1e-5).to(DEVICE)
    x = torch.tensor(x64, dtype=torch.float32, device=DEVICE)
    y = layer(x, training=True).detach().double().cpu().numpy()
    xf = x.double().cpu().numpy()  # the float32 values, exactly
    mean = xf.mean(axis=(0, 2, 3), keepdims=True)
    want = (xf - mean) / np.sqrt(xf.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert np.abs(y - want).max() < 1e-4
    np.testing.assert_allclose(
        layer.moving_mean.double().cpu().numpy(), 0.5 * mean.ravel(), rtol=1e-7
    )


@pytest.mark.parametrize("tiles", [{}, SPLITS[0]], indirect=True, ids=["shape", "forced"])
def test_two_runs_are_bitwise_equal(forced, tiles):
    rng = np.random.default_rng(9)
    x = torch.tensor(rng.normal(1.0, 2.0, (16, 6, 4, 4)), dtype=torch.float32, device=DEVICE)
    x = x.contiguous(memory_format=torch.channels_last)
    runs = []
    for _ in range(2):
        layer = BatchNormalization(axis=1, renorm=True).to(DEVICE)
        xi = x.clone().requires_grad_()
        y = layer(xi, training=True)
        y.square().sum().backward()
        runs.append((y.detach(), xi.grad, layer.gamma.grad, layer.moving_variance.clone()))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_input_with_16bit_parameters(forced, dtype):
    """``model.half()`` / ``.to(torch.bfloat16)``: 16-bit input and parameters, float32
    statistics, output and gradients in the input's dtype and memory format."""
    rng = np.random.default_rng(2)
    x64 = rng.normal(1.0, 2.0, (8, 3, 4, 4))
    layer = BatchNormalization(axis=1, momentum=0.5).to(DEVICE)
    with backends.use(None):
        layer(torch.zeros(2, 3, 4, 4, device=DEVICE), training=False)
    layer = layer.to(dtype)
    x = torch.tensor(x64, device=DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = layer(x, training=True)
    y.float().square().sum().backward()
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert x.grad.dtype == dtype and layer.gamma.grad.dtype == dtype
    xd = x.detach().double().cpu().numpy()
    mean = xd.mean(axis=(0, 2, 3), keepdims=True)
    want = (xd - mean) / np.sqrt(xd.var(axis=(0, 2, 3), keepdims=True) + 1e-3)
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(y.detach().double().cpu().numpy(), want, atol=8 * eps, rtol=4 * eps)


def test_calls_it_cannot_take_go_elsewhere_or_say_why(forced):
    x = torch.randn(4, 3, dtype=torch.float64, device=DEVICE)
    reason = backends.get("triton").supports(x, Geometry.of(x, [1]))
    assert reason == "it takes float32, float16 and bfloat16 tensors, not torch.float64"
    meta = torch.empty(4, 3, device="meta")
    assert "takes CUDA tensors, not meta ones" in backends.get("triton").supports(
        meta, Geometry.of(meta, [1])
    )
    layer = BatchNormalization()
    with pytest.raises(backends.BackendError, match="'triton' cannot take this call"):
        layer(x, training=True)
    with backends.use(None):  # unforced, CPU calls never reach it (C or PyTorch operations)
        y = torch.randn(4, 3)
        assert backends.select(y, Geometry.of(y, [1])).name != "triton"


def test_info_finds_triton_without_importing_it():
    code = """
        import sys, batchnorm
        from batchnorm import backends
        rows = {name: ok for name, ok, _ in backends.status()}
        print(rows["triton"], "triton" in sys.modules)
    """
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_autocast_gives_the_output_dtype_nn_batchnorm2d_gives(forced, dtype):
    """Under ``torch.autocast`` (bfloat16) the layer's output dtype is the one
    ``nn.BatchNorm2d`` gives for the same input, training and inference."""
    kind = "cuda" if DEVICE == "cuda" else "cpu"
    x = torch.randn(4, 3, 5, 5, device=DEVICE).to(dtype)
    ours = BatchNormalization(axis=1).to(DEVICE)
    with backends.use(None):
        ours(torch.zeros(2, 3, 5, 5, device=DEVICE), training=False)
    theirs = torch.nn.BatchNorm2d(3).to(DEVICE)
    for training in (True, False):
        theirs.train(training)
        with torch.autocast(kind, dtype=torch.bfloat16):
            want = theirs(x)
            got = ours(x, training=training)
        assert got.dtype == want.dtype, (training, got.dtype, want.dtype)
        assert torch.isfinite(got.float()).all()
