"""The layer on CUDA tensors (PyTorch's operations): training steps, inference and
synchronized statistics against the float64 reference computed on the CPU. Runs only
where PyTorch sees a CUDA device."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist

import reference
from helpers import CLIP, step_options, weighted_layer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASES = {
    "nchw": ((8, 6, 5, 4), {"axis": 1}),
    "nhwc": ((8, 5, 4, 6), {}),
    "renorm-ghost": ((16, 6), {"renorm": True, "renorm_clipping": CLIP, "virtual_batch_size": 4}),
    "multi-axis": ((6, 3, 5, 4), {"axis": [1, 3]}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_training_step_on_cuda_matches_float64(name):
    shape, config = CASES[name]
    rng = np.random.default_rng(0)
    layer = weighted_layer(shape, rng, "cuda", **config)
    assert layer.gamma.is_cuda and layer.moving_mean.is_cuda
    state = reference.state_of(layer)
    x64 = rng.normal(2.0, 3.0, shape)
    dy64 = rng.normal(size=shape)
    x = torch.tensor(x64, dtype=torch.float32, device="cuda", requires_grad=True)
    y = layer(x, training=True)
    y.backward(torch.tensor(dy64, dtype=torch.float32, device="cuda"))
    ref = reference.train_step(x64, dy64, layer._axes, state, step_options(layer, config))
    np.testing.assert_allclose(y.detach().cpu().double().numpy(), ref[0], rtol=1e-5, atol=1e-5)
    scale = np.abs(ref[1]).max()
    np.testing.assert_allclose(x.grad.cpu().double().numpy(), ref[1], atol=1e-5 * scale)
    np.testing.assert_allclose(layer.gamma.grad.cpu().double().numpy(), ref[2], rtol=1e-4)
    new = ref[4]
    np.testing.assert_allclose(layer.moving_mean.cpu().numpy(), new.moving_mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.cpu().numpy(), new.moving_variance, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_inference_on_cuda_matches_float64(dtype):
    shape, config = CASES["nchw"]
    rng = np.random.default_rng(1)
    layer = weighted_layer(shape, rng, "cuda", **config)
    state = reference.state_of(layer)
    x = torch.tensor(rng.normal(2.0, 3.0, shape), device="cuda").to(dtype)
    with torch.no_grad():
        y = layer(x, training=False)
    assert y.dtype == dtype and y.is_cuda
    ref = reference.inference(x.cpu().double().numpy(), [1], state, layer.epsilon)
    tol = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    np.testing.assert_allclose(y.cpu().double().numpy(), ref, rtol=tol, atol=tol)


@pytest.mark.skipif(not dist.is_nccl_available(), reason="needs NCCL")
def test_synchronized_training_on_one_nccl_process_matches_float64():
    """Every exchanged tensor lives on the input's device (NCCL takes CUDA tensors only);
    with one process the global batch is the local one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        shape, config = CASES["nchw"]
        rng = np.random.default_rng(2)
        layer = weighted_layer(
            shape, rng, "cuda", **{**config, "synchronized": True, "check_numerics": True}
        )
        state = reference.state_of(layer)
        x64, dy64 = rng.normal(2.0, 3.0, shape), rng.normal(size=shape)
        x = torch.tensor(x64, dtype=torch.float32, device="cuda", requires_grad=True)
        y = layer(x, training=True)
        y.backward(torch.tensor(dy64, dtype=torch.float32, device="cuda"))
        ref = reference.train_step(x64, dy64, [1], state, step_options(layer, config))
        np.testing.assert_allclose(y.detach().cpu().numpy(), ref[0], rtol=1e-5, atol=1e-5)
        scale = np.abs(ref[1]).max()
        np.testing.assert_allclose(x.grad.cpu().double().numpy(), ref[1], atol=1e-5 * scale)
        np.testing.assert_allclose(layer.moving_mean.cpu().numpy(), ref[4].moving_mean, rtol=1e-5)
    finally:
        dist.destroy_process_group()
