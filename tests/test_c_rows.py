"""The C kernels' row layouts (channels last): the narrow-row sums, whose accumulators stay
in registers (``kernels/narrow.h``), the output passes that write with streaming stores
and walk the rows last to first (``kernels/stream.h``), and the one-sweep passes of few
wide rows in narrowed chunks (``sweep_chunk``), against the float64 reference.
Streaming is forced on these small tensors, and switched off, with ``bn_stream_bytes``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchnorm import backends
from batchnorm.backends.c import build
from helpers import CLIP, step_against_reference

OFF = 1 << 62  # no tensor is that large: ordinary stores


@pytest.fixture(params=["ordinary", "streamed"])
def stores(request):
    """The C backend forced, with streaming stores forced on (threshold 0) or off."""
    lib = build.library()
    if lib is None:
        pytest.skip(f"C kernels unavailable: {build.status()}")
    before = lib.bn_stream_bytes(-1)
    lib.bn_stream_bytes(0 if request.param == "streamed" else OFF)
    try:
        with backends.use("c"):
            yield request.param
    finally:
        lib.bn_stream_bytes(before)


CASES = {
    # (shape, layer options): what each exercises with AVX-512 (16 float32 lanes)
    "64": ((3000, 64), {}),  # four whole float32 vectors, blocks of 256 rows, 2-pass
    "40": ((3000, 40), {}),  # two vectors and a tail of 8 channels
    "16": ((3000, 16), {}),  # one vector
    "72": ((2000, 72), {}),  # wider than four float32 vectors: the four-row loops
    "33-nhwc": ((12, 16, 16, 33), {}),  # rows that start unaligned: heads and tails
    "renorm": ((3000, 48), {"renorm": True}),
    "ghost": ((3000, 64), {"virtual_batch_size": 600}),  # ghost batches of 600 rows
    # ghost batches of 4, 8 and 16 rows: the column loops with the row count a literal
    "ghost-4": ((512, 48), {"virtual_batch_size": 4}),
    "ghost-8": ((1024, 37), {"virtual_batch_size": 8}),  # 37 channels: single columns too
    "ghost-16": ((512, 64), {"virtual_batch_size": 16}),
    "wide": ((256, 1024), {}),  # one sweep in chunks of 256 channels (sweep_chunk)
    "wider": ((96, 2050), {}),  # five chunks of 352 channels and one of 290
    "wide-renorm": ((256, 1024), {"renorm": True, "renorm_clipping": CLIP}),  # r, d in the sweep
    "renorm-sweep": ((200, 40), {"renorm": True}),  # rows that fit one sweep
}


def _inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(3.0, 2.0, shape)).to(dtype)
    dy = torch.tensor(rng.normal(size=shape)).to(dtype)
    return rng, x, dy


def _step(x, dy, config, rng):
    """A training step and an inference call of a layer with random γ/β, and the float64
    reference of both from the same state."""
    xg = x.clone().requires_grad_()
    layer, y, _, ref = step_against_reference(xg, dy, {"axis": -1, **config}, rng)
    with torch.no_grad():
        inferred = layer(x, training=False)
    mm, mv, gamma, beta = (
        t.detach().double().reshape(-1).numpy()  # (ghost batches keep TF's (1, 1, C) shape)
        for t in (layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta)
    )
    inferred_ref = (x.double().numpy() - mm) / np.sqrt(mv + 1e-3) * gamma + beta
    return layer, y, xg.grad, ref, inferred, inferred_ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", list(CASES))
def test_row_layouts_match_float64(case, dtype, stores):
    """Training output, input and parameter gradients, moving statistics and the inference
    output against float64, with either kind of store."""
    shape, config = CASES[case]
    rng, x, dy = _inputs(shape, dtype, 3)
    layer, y, dx, (y_ref, dx_ref, dg_ref, db_ref, new), inferred, inferred_ref = _step(
        x, dy, config, rng
    )
    if dtype in (torch.float16, torch.bfloat16):
        eps = float(torch.finfo(dtype).eps)
        tol, out_rtol, out_atol, sum_tol = 4 * eps, 2 * eps, 4 * eps, 1e-3
    else:
        tol = 2e-5 if dtype == torch.float32 else 1e-10
        out_rtol = out_atol = sum_tol = tol

    def close(actual, desired, rtol, atol):
        np.testing.assert_allclose(actual.detach().double().numpy(), desired, rtol=rtol, atol=atol)

    close(y, y_ref, out_rtol, out_atol)
    close(dx, dx_ref, tol, tol * np.abs(dx_ref).max())
    close(layer.gamma.grad, dg_ref, sum_tol, sum_tol * 10)
    close(layer.beta.grad, db_ref, sum_tol, sum_tol * 10)
    close(layer.moving_mean, new.moving_mean, 1e-5, 1e-6)
    close(layer.moving_variance, new.moving_variance, 1e-5, 0)
    close(inferred, inferred_ref, out_rtol, out_atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streaming_stores_write_the_same_values(dtype):
    """The kind of store changes where a value goes, never the value: a training step and
    an inference call give identical tensors with streaming forced on and switched off."""
    lib = build.library()
    if lib is None:
        pytest.skip(f"C kernels unavailable: {build.status()}")
    before = lib.bn_stream_bytes(-1)
    results = []
    try:
        for threshold in (OFF, 0):
            lib.bn_stream_bytes(threshold)
            rng, x, dy = _inputs((2000, 37), dtype, 4)
            with backends.use("c"):
                layer, y, dx, *_, inferred, _ = _step(x, dy, {}, rng)
            results.append((y.detach(), dx, layer.gamma.grad, inferred))
    finally:
        lib.bn_stream_bytes(before)
    for ordinary, streamed in zip(*results, strict=True):
        assert torch.equal(ordinary, streamed)


def test_stream_threshold_is_half_the_last_level_cache(monkeypatch):
    monkeypatch.delenv("BATCHNORM_STREAM_BYTES", raising=False)
    cache = build.last_level_cache()
    assert cache is None or cache >= 1 << 20  # a real cache, in bytes
    assert build.stream_threshold() == (cache or 32 << 20) // 2
    monkeypatch.setenv("BATCHNORM_STREAM_BYTES", "1048576")
    assert build.stream_threshold() == 1 << 20


@pytest.mark.parametrize("value", ["-1", "16M", ""])
def test_a_bad_stream_threshold_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("BATCHNORM_STREAM_BYTES", value)
    with pytest.raises(ValueError, match="BATCHNORM_STREAM_BYTES must be a number of bytes"):
        build.stream_threshold()
