"""What the Triton backend's tests share: the device they run on (the GPU when there is
one, else CPU tensors in Triton's interpreter), the layouts and options of the split and
mask cases, the tile overrides that reach the split, multi-tile and merge paths, and a
training step built and checked against the float64 reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import reference
from batchnorm import BatchNormalization, backends
from batchnorm.backends.triton import INTERPRET
from helpers import CLIP, step_options

DEVICE = "cpu" if INTERPRET else "cuda"
NEEDS = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(), reason="needs a GPU or the interpreter"
)


def strided(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in memory that is not dense (every other element of a buffer)."""
    buffer = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    buffer[..., ::2] = t
    return buffer[..., ::2]


CASES = {  # (shape, axis, memory format or a transform, layer options)
    "rows": ((13, 5), -1, None, {}),
    "ncl": ((5, 3, 7), 1, None, {}),
    "5-d channels-last": ((3, 3, 2, 3, 2), 1, torch.channels_last_3d, {}),
    "transposed": ((5, 3, 7), 1, lambda t: t.transpose(1, 2).contiguous().transpose(1, 2), {}),
    "not dense": ((5, 3, 7), 1, strided, {}),
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


def layer_and_input(
    shape: tuple[int, ...], config: dict[str, Any], rng: np.random.Generator, memory: Any = None
) -> tuple[BatchNormalization, torch.Tensor]:
    """A float32 layer of ``config`` on DEVICE, built, with weights drawn from ``rng``,
    and an input of ``shape`` that requires a gradient, in the memory format (or through
    the transform) ``memory``."""
    layer = BatchNormalization(momentum=0.5, **config).to(DEVICE)
    with backends.use(None):
        layer(torch.zeros(shape, device=DEVICE), training=False)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    x = torch.tensor(rng.normal(2.0, 3.0, shape), dtype=torch.float32, device=DEVICE)
    if callable(memory):
        x = memory(x)
    elif memory is not None:
        x = x.contiguous(memory_format=memory)
    return layer, x.requires_grad_()


def check_step(
    layer: BatchNormalization,
    x: torch.Tensor,
    y: torch.Tensor,
    dy: np.ndarray,
    state: Any,
    config: dict[str, Any],
    mask: np.ndarray | None = None,
    dx_atol: float = 2e-5,
    scaled: bool = False,
) -> None:
    """A training step ``y = layer(x)`` with gradient ``dy`` from ``state``: y, dx, dγ, dβ
    and the moving statistics against the float64 reference (y's and dx's absolute
    tolerances scaled by max(1, |dx|) when ``scaled``)."""
    opts = step_options(layer, config)
    opts.grouping = config.get("ghost_grouping", "strided")
    xd = x.detach().double().cpu().numpy()
    y_ref, dx_ref, dg_ref, db_ref, new = reference.train_step(
        xd, dy, layer.axis, state, opts, mask=mask
    )
    scale = max(1.0, np.abs(dx_ref).max()) if scaled else 1.0
    got_y = y.detach().double().cpu().numpy()
    np.testing.assert_allclose(got_y, y_ref, atol=2e-5 * scale, rtol=2e-5)
    got_dx = x.grad.double().cpu().numpy()
    np.testing.assert_allclose(got_dx, dx_ref, atol=dx_atol * scale, rtol=2e-5)
    got_dg = layer.gamma.grad.double().cpu().numpy().reshape(dg_ref.shape)
    np.testing.assert_allclose(got_dg, dg_ref, atol=5e-5, rtol=2e-5)
    got_db = layer.beta.grad.double().cpu().numpy().reshape(db_ref.shape)
    np.testing.assert_allclose(got_db, db_ref, atol=5e-5, rtol=2e-5)
    for name in ("moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"):
        want = getattr(new, name)
        if want is not None:
            got = getattr(layer, name).double().cpu().numpy()
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
