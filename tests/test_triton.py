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
from batchnorm.backends.triton import launch
from triton_cases import CASES, DEVICE, NEEDS, SPLITS, check_step, layer_and_input

pytestmark = NEEDS


@pytest.mark.parametrize("triton_tiles", SPLITS, indirect=True, ids=lambda t: str(list(t.values())))
@pytest.mark.parametrize("case", list(CASES))
def test_split_and_merge_paths_match_float64(triton_forced, triton_tiles, case):
    shape, axis, memory, options = CASES[case]
    config = {"axis": axis, **options}
    config["renorm"] = "renorm_clipping" in config  # (the reference clips with CLIP)
    rng = np.random.default_rng(3)
    layer, x = layer_and_input(shape, config, rng, memory)
    dy = rng.normal(size=shape)
    state = reference.state_of(layer)
    y = layer(x, training=True)
    (y * torch.tensor(dy, dtype=torch.float32, device=DEVICE)).sum().backward()
    check_step(layer, x, y, dy, state, config)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_double_backward_matches_float64(triton_forced, masked):
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


def test_data_with_a_large_mean_keeps_its_precision(triton_forced):
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


@pytest.mark.parametrize("triton_tiles", [{}, SPLITS[0]], indirect=True, ids=["shape", "forced"])
def test_two_runs_are_bitwise_equal(triton_forced, triton_tiles):
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
def test_16bit_input_with_16bit_parameters(triton_forced, dtype):
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


def test_calls_it_cannot_take_go_elsewhere_or_say_why(triton_forced):
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
def test_autocast_gives_the_output_dtype_nn_batchnorm2d_gives(triton_forced, dtype):
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
