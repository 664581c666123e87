"""The backend conformance suite: every registered backend, forced, on every feature ×
layout × dtype, against the float64 reference (``reference.py``): one training step
(output, input and parameter gradients, every moving statistic) and one inference call.
The C backend runs with each of its autograd nodes (C++ and Python).

A backend added later is tested by registering it: the cases come from
``backends.names()``. Shapes stay tiny (a few hundred elements) so an interpreted
backend runs the suite in CI. A call a backend refuses (``supports`` gives a reason)
must raise ``BackendError`` naming it, and change nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from batchnorm import BatchNormalization, backends
from batchnorm._layout import Geometry, geometry, ghost_layout
from batchnorm.backends import BackendError
from helpers import CLIP, assert_unchanged, snapshot, step_options

FEATURES = {
    "plain": {},
    "renorm": {"renorm": True, "renorm_clipping": CLIP},
    "ghost": {"virtual_batch_size": 2},
    "ghost-contiguous": {"virtual_batch_size": 2, "ghost_grouping": "contiguous"},
    "renorm-ghost": {"renorm": True, "renorm_clipping": CLIP, "virtual_batch_size": 2},
    "no-center-scale": {"center": False, "scale": False},
    "frozen": {"trainable": False},
    "mask": {"mask": True},
    "mask-ghost": {"mask": True, "virtual_batch_size": 2},
}
LAYOUTS = {  # (shape, axis, memory format)
    "rows": ((8, 6), -1, None),
    "nchw": ((4, 3, 3, 5), 1, None),
    "nhwc": ((4, 3, 5, 3), -1, None),
    "nchw-channels-last": ((4, 3, 3, 5), 1, torch.channels_last),
    "multi-axis": ((4, 3, 2, 5), [1, 2], None),
}
DTYPES = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.float16: 4 * torch.finfo(torch.float16).eps,
    torch.bfloat16: 4 * torch.finfo(torch.bfloat16).eps,
}


def _device(name: str) -> str:
    """Where a backend's cases run: the Triton backend on the GPU when there is one (else
    in Triton's interpreter on CPU tensors), the others on the CPU."""
    from batchnorm.backends.triton import INTERPRET

    return "cuda" if name == "triton" and torch.cuda.is_available() and not INTERPRET else "cpu"


def _routes() -> list[tuple[str, str]]:
    """(backend, autograd node): both nodes where the backend has two."""
    return [
        (n, node) for n in backends.names() for node in (("cpp", "python") if n == "c" else ("-",))
    ]


@pytest.fixture(params=_routes(), ids=lambda r: f"{r[0]}-{r[1]}")
def route(request, monkeypatch):
    name, node = request.param
    chosen = backends.get(name)
    if chosen.unavailable() is not None:
        pytest.fail(f"the {name} backend is not available here: {chosen.unavailable()}")
    if name == "c":
        from batchnorm.backends import SHORT
        from batchnorm.backends.c import cxx

        if node == "cpp" and cxx.wait() is None:
            pytest.fail(f"the C++ autograd node did not build here: {cxx.status()}")
        if node == "python":
            monkeypatch.setattr(cxx, "_module", None)
            monkeypatch.setattr(SHORT, "infer", None)
    with backends.use(name):
        yield chosen


def _mask(x: torch.Tensor, layer: BatchNormalization) -> torch.Tensor:
    """A mask (the input's shape without the channel axes) that drops the first ghost
    batch (the first example without ghost batches) and a quarter of the other positions.
    Each ghost batch keeps none or several values per channel: one alone has σ² = 0,
    where dx is ill-conditioned (the masked values' Σdy·(x − μ) times 1/ε multiplies the
    float32 rounding of x − μ)."""
    shape = [n for d, n in enumerate(x.shape) if d not in layer._axes]
    batch, vbs = shape[0], layer.virtual_batch_size
    b = torch.arange(batch)
    if vbs is None:
        first = b == 0
    elif layer.ghost_grouping == "strided":
        first = b % (batch // vbs) == 0
    else:
        first = b < vbs
    mask = ~first.reshape(-1, *[1] * (len(shape) - 1)).expand(shape).clone()
    if len(shape) > 1:
        rest = torch.arange(mask[0].numel()).reshape(shape[1:])
        mask &= (rest % 4 != 1).expand(shape)
    return mask.to(x.device)


def _refusal(backend, x: torch.Tensor, layer: BatchNormalization, training: bool) -> str | None:
    """Why ``backend`` refuses this layer's call on ``x`` (None: it takes it)."""
    axes = list(layer._axes)
    if not training or layer.virtual_batch_size is None:
        return backend.supports(x, Geometry.of(x, axes))
    shape, stride, ghost = ghost_layout(x, layer.virtual_batch_size, layer.ghost_grouping)
    return backend.supports(x, geometry(shape, stride, (ghost, *[a + 1 for a in axes]), ghost))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("feature", list(FEATURES))
def test_a_training_step_and_inference_match_float64(route, feature, layout, dtype):
    shape, axis, memory = LAYOUTS[layout]
    config = {**FEATURES[feature], "axis": axis}
    rng = np.random.default_rng(7)
    frozen = config.pop("trainable", True) is False
    masked = config.pop("mask", False)
    layer = BatchNormalization(momentum=0.5, **config)
    with backends.use(None):  # build in float64 (which a GPU backend leaves to another)
        layer(torch.zeros(shape, dtype=torch.float64), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    layer = layer.float() if dtype != torch.float64 else layer
    layer.trainable = not frozen
    device = _device(route.name)
    layer = layer.to(device)
    x = torch.tensor(rng.normal(2.0, 3.0, shape)).to(device, dtype)
    if memory is not None:
        x = x.contiguous(memory_format=memory)
    x.requires_grad_()
    dy = torch.tensor(rng.normal(size=shape)).to(device, dtype)
    state = reference.state_of(layer)
    before = snapshot(layer)
    mask = _mask(x, layer) if masked else None
    reason = _refusal(route, x.detach(), layer, training=not frozen)
    if masked and not route.weighted:  # (masked calls then run the composite formula)
        reason = None
    if reason is not None:
        with pytest.raises(BackendError, match=f"'{route.name}' cannot take this call"):
            layer(x, training=True, mask=mask)
        assert_unchanged(layer, before)
        return
    y = layer(x, training=True, mask=mask)
    (y * dy).sum().backward()
    tol = DTYPES[dtype]
    xd = x.detach().double().cpu().numpy()
    if frozen:  # inference statistics, no update, γ/β without gradient
        y_ref = reference.inference(xd, layer.axis, state, 1e-3)
        assert layer.gamma is None or layer.gamma.grad is None
        assert_unchanged(layer, before)
    else:
        options = step_options(layer, config)
        options.grouping = config.get("ghost_grouping", "strided")
        y_ref, dx_ref, dg_ref, db_ref, new = reference.train_step(
            xd,
            dy.double().cpu().numpy(),
            layer.axis,
            state,
            options,
            mask=None if mask is None else mask.cpu().numpy(),
        )
        scale = max(1.0, np.abs(dx_ref).max())
        np.testing.assert_allclose(
            x.grad.double().cpu().numpy(), dx_ref, rtol=tol, atol=tol * scale
        )
        if layer.gamma is not None:
            ptol = tol if dtype in (torch.float32, torch.float64) else 1e-3
            grads = (layer.gamma.grad, layer.beta.grad)
            for got, want in zip(grads, (dg_ref, db_ref), strict=True):
                want_scale = max(1.0, np.abs(want).max())
                np.testing.assert_allclose(
                    got.double().cpu().numpy(), want, rtol=ptol, atol=ptol * want_scale
                )
        stol = tol if dtype == torch.float64 else 2e-5
        for name in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean"):
            want = getattr(new, name)
            if want is not None:
                got = getattr(layer, name).double().cpu().numpy()
                np.testing.assert_allclose(got, want, rtol=stol, atol=stol)
        state = reference.state_of(layer)
    assert y.dtype == dtype
    y_scale = max(1.0, np.abs(y_ref).max())
    np.testing.assert_allclose(
        y.detach().double().cpu().numpy(), y_ref, rtol=tol, atol=tol * y_scale
    )
    if _refusal(route, x.detach(), layer, training=False) is not None:
        with pytest.raises(BackendError, match=f"'{route.name}' cannot take this call"):
            layer(x.detach(), training=False)
        return
    y_inf = layer(x.detach(), training=False).detach()
    y_inf_ref = reference.inference(xd, layer.axis, state, 1e-3)
    inf_scale = max(1.0, np.abs(y_inf_ref).max())
    np.testing.assert_allclose(
        y_inf.double().cpu().numpy(), y_inf_ref, rtol=tol, atol=tol * inf_scale
    )
