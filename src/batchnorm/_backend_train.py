"""The training step through a backend's training pass: the input's geometry (the
ghost-batch view's, without making it), the plan, the backend ``select`` chooses (a
masked call: ``select_weighted``; under ``torch.compile``: one whose pass compiles), and
the batch statistics in parameter layout for the moving averages. The composite formula
in ``functional`` covers what it declines."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

import torch

from . import _layout, backends
from ._moving import BatchStatistics, MovingStatistics, update_moving

__all__ = ["backend_train"]


def backend_train(
    x: torch.Tensor,
    axes: Sequence[int],
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    epsilon: float,
    virtual_batch_size: int | None,
    grouping: str,
    adjustment: tuple[torch.Tensor, torch.Tensor] | None,
    renorm: tuple[torch.Tensor, torch.Tensor, Mapping[str, float | torch.Tensor]] | None,
    param_shape: Sequence[int] | None,
    moving: MovingStatistics | None,
    mask: torch.Tensor | None = None,
    compiling: bool = False,
) -> tuple[torch.Tensor, BatchStatistics] | None:
    """``functional.train_forward`` through the selected backend's training pass (no
    process group; under ``torch.compile`` only a backend whose pass compiles); None, for
    the composite path, when the adjustment varies over a reduced dimension or needs a
    gradient, when the mask needs a gradient or is not of x's dtype (or boolean), or no
    backend weighs it, or (``compiling``: ``backends.tracing()``, which the caller asked)
    no backend's pass compiles."""
    if compiling and not backends.compiled_kernels(x):
        return None
    if mask is not None and (mask.requires_grad or mask.dtype not in (x.dtype, torch.bool)):
        return None  # (the composite formula differentiates it, and promotes x's dtype)
    shape = x.shape
    x = _layout.dense(x)
    sizes, strides = tuple(x.shape), tuple(x.stride())
    if compiling:  # specialized (Dynamo guards on ``operator.index``; ``int`` stays symbolic):
        # the kernels' view and tiles come from the static shape
        sizes = tuple(operator.index(n) for n in sizes)
        strides = tuple(operator.index(s) for s in strides)
    layout, vshape, ghost_dim = None, sizes, None
    if virtual_batch_size is not None:  # the ghost view's layout; the pass reads x itself
        layout = _layout.ghost_layout_of(sizes, strides, virtual_batch_size, grouping)
        vshape, ghost_dim = layout[0], layout[2]
        axes = [a + 1 for a in axes]
    per_channel = None if adjustment is None else _layout.parameter_layout(adjustment, vshape, axes)
    if adjustment is not None and per_channel is None:
        return None
    vstride = strides if layout is None else layout[1]
    channel_dims = (*axes,) if ghost_dim is None else (ghost_dim, *axes)
    geo = _layout.geometry(tuple(vshape), vstride, channel_dims, ghost_dim)
    weights = None
    if mask is None:
        backend = backends.select(x, geo)
        if compiling and backend.traceable:
            return None
    else:
        backend = backends.select_weighted(x, geo)
        if backend is None:
            return None
        weights = torch.broadcast_to(mask, shape).reshape(vshape)  # (a view: the ghost one)
    plan = _layout.Plan(geo, epsilon, renorm, per_channel, moving=moving, weights=weights)
    y, pair, updated = backend.train(x, gamma, beta, plan)
    n = geo.count
    if param_shape is None:
        param_shape = [size if d in axes else 1 for d, size in enumerate(vshape)]
    factor = n / max(n - 1, 1)
    if isinstance(pair, tuple):
        unbiased = pair[2].view(param_shape) if len(pair) == 3 else None  # (weighted)
        stats = BatchStatistics(
            pair[0].view(param_shape), pair[1].view(param_shape), unbiased, factor
        )
    else:
        stats = BatchStatistics(None, None, None, factor, packed=pair, shape=param_shape)
    if moving is not None and not updated:
        update_moving(moving, stats, epsilon)
    return (y if y.shape == shape else y.reshape(shape)), stats
