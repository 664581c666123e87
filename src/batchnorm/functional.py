"""Stateless batch-normalization math, usable without a layer.

Notation: ``x`` is the input, ``axes`` the normalized (channel) axes, and the
statistics reduce over every other axis. With ``N`` the number of reduced
elements per channel (or the sum of mask weights):

- ``μ = Σx / N`` and ``σ² = Σ(x − μ)² / N`` (biased; two passes, so no
  cancellation on data with a large mean);
- ``y = (x − μ) · (γ / √(σ² + ε)) + β``;
- batch renormalization: ``s = √(σ² + ε)``, ``r = s / max(s_renorm, √ε)``,
  ``d = (μ − μ_renorm) / max(s_renorm, √ε)``, each clipped, without gradient,
  and ``y = ((x̂·r + d)·a_s + a_b)·γ + β`` with the adjustment ``(a_s, a_b)``;
- ghost batches: the batch is split into groups of ``virtual_batch_size``
  examples, each normalized with its own statistics; the moving statistics
  receive the mean of the ghost means and of the ghost variances.

Moving statistics follow TensorFlow's update ``m ← m − (m − v)·(1 − momentum)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import _layout, backends, distributed
from ._backend_train import backend_train
from ._math import ghost_mean, moments, normalize, renorm_factors, slope_intercept
from ._moving import (
    BatchStatistics,
    MovingStatistics,
    assign_moving_average,
    moving_average,
    update_moving,
)

__all__ = [
    "BatchStatistics",
    "MovingStatistics",
    "assign_moving_average",
    "broadcast_shape",
    "ghost_batches",
    "inference_forward",
    "moments",
    "moving_average",
    "normalize",
    "reduction_dims",
    "renorm_correction",
    "train_forward",
    "update_moving",
]


def reduction_dims(ndim: int, axes: Sequence[int]) -> list[int]:
    """The dimensions statistics reduce over: every dimension not in ``axes``."""
    return [d for d in range(ndim) if d not in axes]


def broadcast_shape(ndim: int, axes: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """Shape with ``sizes`` on ``axes`` and 1 elsewhere (how parameters broadcast)."""
    shape = [1] * ndim
    for axis, size in zip(axes, sizes, strict=True):
        shape[axis] = size
    return shape


def ghost_batches(
    x: torch.Tensor, virtual_batch_size: int, grouping: str = "strided"
) -> tuple[torch.Tensor, int]:
    """View ``x`` (batch first) as ghost batches; returns the view and its ghost dimension.

    ``'strided'`` (TensorFlow): ``[B, …] → [vbs, G, …]``, so ghost batch ``g``
    holds examples ``g, g+G, g+2G, …`` (ghost dimension 1). ``'contiguous'``:
    ``[B, …] → [G, vbs, …]``, consecutive chunks (ghost dimension 0). The
    examples of one ghost batch lie along the other of the two leading dims.
    """
    batch = x.shape[0]
    groups = batch // virtual_batch_size
    if grouping == "strided":
        return x.reshape(virtual_batch_size, groups, *x.shape[1:]), 1
    return x.reshape(groups, virtual_batch_size, *x.shape[1:]), 0


def renorm_correction(
    mean: torch.Tensor,
    variance: torch.Tensor,
    renorm_mean: torch.Tensor,
    renorm_stddev: torch.Tensor,
    epsilon: float,
    clipping: Mapping[str, float | torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch renormalization's ``r`` and ``d`` (detached), from the pre-update renorm statistics.

    ``s = √(σ² + ε)``, ``ŝ = max(s_renorm, √ε)``, ``r = clip(s/ŝ, rmin, rmax)``,
    ``d = clip((μ − μ_renorm)/ŝ, −dmax, dmax)``; a missing key leaves that side open.
    Values on the host are used as floats; tensors on a device are read on the device only.
    """
    args = (mean.detach(), variance.detach(), renorm_mean.detach(), renorm_stddev.detach())
    return renorm_factors(*args, epsilon, clipping)


def train_forward(
    x: torch.Tensor,
    axes: Sequence[int],
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    epsilon: float,
    *,
    virtual_batch_size: int | None = None,
    grouping: str = "strided",
    mask: torch.Tensor | None = None,
    adjustment: tuple[torch.Tensor, torch.Tensor] | None = None,
    renorm: tuple[torch.Tensor, torch.Tensor, Mapping[str, float | torch.Tensor]] | None = None,
    param_shape: Sequence[int] | None = None,
    moving: MovingStatistics | None = None,
    group: Any = None,
    name: str = "batch_normalization",
    check_numerics: bool = False,
    sync_key: Any = None,
) -> tuple[torch.Tensor, BatchStatistics]:
    """One training-mode normalization of ``x``; returns ``y`` and the batch statistics,
    and updates ``moving`` in place when given (like ``F.batch_norm``'s running stats).
    With a ``torch.distributed`` ``group`` the statistics are those of the global
    batch (``batchnorm.distributed``; ``name`` labels its errors; a layer passes
    itself as ``sync_key`` so its channel layout is checked across processes once).

    ``gamma``/``beta`` and the renorm statistics in ``renorm = (renorm_mean,
    renorm_stddev, clipping)`` are in parameter layout; ``mask`` is a weight tensor
    broadcastable to ``x``; ``adjustment`` is ``(a_s, a_b)`` broadcastable to ``x``.
    16-bit ``x`` is computed in float32 and returned in float32 or its own dtype.
    The output is

        y = (((x − μ)/√(σ² + ε)·r + d)·a_s + a_b)·γ + β
    """
    compiling = backends.tracing()
    if group is None:  # the fast passes, if they fit (compiling: a backend that compiles)
        fast = backend_train(
            x,
            axes,
            gamma,
            beta,
            epsilon,
            virtual_batch_size,
            grouping,
            adjustment,
            renorm,
            param_shape,
            moving,
            mask,
            compiling,
        )
        if fast is not None:
            return fast
    if group is not None and not compiling:  # host-side decisions; see distributed.py
        distributed.check_batches(
            x, axes, virtual_batch_size, group, name, check_numerics, sync_key
        )
    v = _Viewed.of(x, axes, virtual_batch_size, grouping, mask)
    if renorm is not None:  # parameter layout -> broadcastable per channel
        renorm = (renorm[0].reshape(v.view), renorm[1].reshape(v.view), renorm[2])
    if group is None:
        y, stats = _composite_step(v, gamma, beta, epsilon, renorm, adjustment, param_shape)
    else:
        if compiling:
            y, n, mean, var = _traced_sync(v, gamma, beta, epsilon, group, renorm, adjustment)
        else:
            y, n, mean, var = distributed.sync_train(
                v.x,
                v.axes,
                v.ghost_dim,
                gamma,
                beta,
                epsilon,
                group,
                name,
                v.weights,
                renorm,
                adjustment,
                check_numerics,
            )
        stats = _global_statistics(n, mean, var, v.ghost_dim, param_shape, v.view)
    if moving is not None:
        update_moving(moving, stats, epsilon)
    return y.reshape(x.shape), stats


@dataclass
class _Viewed:
    """The input as the statistics see it: the ghost-batch view (and the mask's) when
    there are ghost batches, its channel ``axes`` and ``ghost_dim`` there, the reduced
    ``dims`` and ``view``, the per-channel shape with the ghost batches pooled."""

    x: torch.Tensor
    weights: torch.Tensor | None
    axes: list[int]
    ghost_dim: int | None
    dims: list[int]
    view: list[int]

    @classmethod
    def of(
        cls,
        x: torch.Tensor,
        axes: Sequence[int],
        vbs: int | None,
        grouping: str,
        weights: torch.Tensor | None,
    ) -> _Viewed:
        axes, ghost_dim = list(axes), None
        if vbs is not None:
            if weights is not None:
                weights = ghost_batches(torch.broadcast_to(weights, x.shape), vbs, grouping)[0]
            x, ghost_dim = ghost_batches(x, vbs, grouping)
            axes = [a + 1 for a in axes]
        channel_dims = [*axes] if ghost_dim is None else [*axes, ghost_dim]
        dims = reduction_dims(x.dim(), channel_dims)
        view = [n if d in axes else 1 for d, n in enumerate(x.shape)]
        return cls(x, weights, axes, ghost_dim, dims, view)

    def per_channel(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """A parameter-layout tensor broadcastable against the viewed input."""
        return None if t is None else t.reshape(self.view)


def _composite_step(
    v: _Viewed,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    epsilon: float,
    renorm: Any,
    adjustment: Any,
    param_shape: Sequence[int] | None,
) -> tuple[torch.Tensor, BatchStatistics]:
    """This process's training step as PyTorch operations (masks, per-example
    adjustments, traced calls): output and the statistics the moving averages take,
    with Bessel's factor from each channel's count (summed mask weights)."""
    x = v.x if v.x.dtype in (torch.float32, torch.float64) else v.x.float()
    mean, var = moments(x, v.dims, v.weights)
    g, b = v.per_channel(gamma), v.per_channel(beta)
    y = _composite_train(x, mean, var, g, b, epsilon, v.ghost_dim, renorm, adjustment)
    if v.weights is None and torch.jit.is_tracing():  # the count stays traced
        n = (torch._shape_as_tensor(x).prod() / torch._shape_as_tensor(mean).prod()).to(var)
        unbiased = var * (n / torch.clamp(n - 1, min=1))
    elif v.weights is None:
        n = x.numel() // max(1, mean.numel())
        unbiased = var * (n / max(n - 1, 1))
    else:
        n = torch.broadcast_to(v.weights, x.shape)
        n = (n.sum(dim=v.dims, keepdim=True) if v.dims else n).to(var.dtype)
        unbiased = var * (n / torch.clamp(n - 1, min=1))
    pshape = list(param_shape) if param_shape is not None else v.view
    stats = BatchStatistics(
        *(ghost_mean(t.detach(), v.ghost_dim).reshape(pshape) for t in (mean, var, unbiased))
    )
    return y, stats


def _traced_sync(
    v: _Viewed,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    epsilon: float,
    group: Any,
    renorm: Any,
    adjustment: Any,
) -> tuple[torch.Tensor, ...]:
    """Synchronized statistics under ``torch.compile``: the composite formula around one
    traceable collective (``distributed.gathered_moments``)."""
    xs = v.x if v.x.dtype in (torch.float32, torch.float64) else v.x.float()
    n, mean, var = distributed.gathered_moments(xs, v.dims, v.weights, group)
    g, b = v.per_channel(gamma), v.per_channel(beta)
    dt = xs.dtype
    y = _composite_train(
        xs, mean.to(dt), var.to(dt), g, b, epsilon, v.ghost_dim, renorm, adjustment
    )
    return y, n, mean.detach(), var.detach()


def inference_forward(
    x: torch.Tensor,
    axes: Sequence[int],
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    mean: torch.Tensor,
    variance: torch.Tensor,
    epsilon: float,
) -> torch.Tensor:
    """``y = (x − mean)·γ/√(variance + ε) + β`` with given (moving) statistics in one
    pass; ``gamma``, ``beta``, ``mean`` and ``variance`` are in parameter layout."""
    if backends.tracing():
        view = [n if d in axes else 1 for d, n in enumerate(x.shape)]
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        g, b, m, v = (None if t is None else t.reshape(view) for t in (gamma, beta, mean, variance))
        return normalize(x, m, v, b, g, epsilon)
    x = _layout.dense(x)
    geo = _layout.geometry(tuple(x.shape), tuple(x.stride()), tuple(axes), None)
    plan = _layout.Plan(geo, epsilon)
    return backends.select(x, geo).infer(x, gamma, beta, mean, variance, plan)


def _global_statistics(
    n: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    ghost_dim: int | None,
    param_shape: Sequence[int] | None,
    view: Sequence[int],
) -> BatchStatistics:
    """Batch statistics in parameter layout from the global per-channel count, mean
    and biased variance of a synchronized pass (ghost batches averaged)."""
    unbiased = var * (n / torch.clamp(n - 1, min=1))
    pshape = list(param_shape) if param_shape is not None else list(view)
    return BatchStatistics(
        *(ghost_mean(t, ghost_dim).reshape(pshape) for t in (mean, var, unbiased))
    )


def _composite_train(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    epsilon: float,
    ghost_dim: int | None,
    renorm: tuple[torch.Tensor, torch.Tensor, Mapping[str, float | torch.Tensor]] | None,
    adjustment: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """The training output as plain differentiable operations (masks, per-example
    adjustments, and ``torch.compile``, which fuses it): ``_math``'s fold, then
    ``y = (x − μ)·k + o``."""
    slope, intercept = slope_intercept(mean, var, epsilon, renorm, adjustment, ghost_dim)
    scale = slope if gamma is None else slope * gamma
    offset = intercept if gamma is None else intercept * gamma
    return normalize(x, mean, var, offset if beta is None else offset + beta, scale, epsilon)
