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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import _layout, _torch_passes, backends

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


def moments(
    x: torch.Tensor, dims: Sequence[int], weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of ``x`` over ``dims`` (kept as size-1 dimensions).

    ``μ = Σwx/Σw``, ``σ² = Σw(x − μ)²/Σw`` with ``w = 1`` when ``weights`` is
    None (``weights`` broadcasts against ``x``). A shifted two-pass computation
    (``μ = s + Σw(x − s)/Σw`` with ``s`` one sample per channel), exact for data
    whose mean is large compared with its spread; zero total weight gives
    ``μ = σ² = 0`` (TensorFlow's ``div_no_nan``).
    """
    dims = list(dims)
    if not dims:  # every axis is a channel axis: each value is its own batch
        if weights is None:
            return x, torch.zeros_like(x)
        w = torch.broadcast_to(weights, x.shape)
        return torch.where(w > 0, x, 0.0), torch.zeros_like(x)
    shift = _torch_passes.channel_sample(x, dims)
    centered = x - shift
    if weights is None:
        delta = centered.mean(dim=dims, keepdim=True)
        var = (centered - delta).square().mean(dim=dims, keepdim=True)
        return shift + delta, var
    total = torch.broadcast_to(weights, x.shape).sum(dim=dims, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    delta = (weights * centered).sum(dim=dims, keepdim=True) / safe
    var = (weights * (centered - delta).square()).sum(dim=dims, keepdim=True)
    var = torch.where(total > 0, var / safe, 0.0)
    return torch.where(total > 0, shift + delta, 0.0), var


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    variance: torch.Tensor,
    offset: torch.Tensor | None,
    scale: torch.Tensor | None,
    epsilon: float,
) -> torch.Tensor:
    """``y = (x − mean) · (scale / √(variance + ε)) + offset``.

    All tensors broadcast against ``x``; ``scale``/``offset`` may be None
    (meaning 1 and 0). Subtracting the mean first keeps large-mean inputs exact,
    unlike the ``x·inv + (β − μ·inv)`` form.
    """
    inv = torch.rsqrt(variance + epsilon)
    if scale is not None:
        inv = inv * scale
    y = (x - mean) * inv
    if offset is not None:
        y = y + offset
    return y


def moving_average(
    variable: torch.Tensor, value: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """TensorFlow's EMA step ``variable − (variable − value)·(1 − momentum)`` (a new tensor)."""
    return torch.lerp(variable, value.to(variable.dtype), 1.0 - momentum)


def assign_moving_average(
    variable: torch.Tensor, value: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """The same EMA step in place (``tf.compat.v1.assign_moving_average`` without debiasing)."""
    return variable.lerp_(value.to(variable.dtype), 1.0 - momentum)


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
    """
    inf = float("inf")
    bounds = (
        float(clipping.get("rmin", -inf)),
        float(clipping.get("rmax", inf)),
        float(clipping.get("dmax", inf)),
    )
    args = (mean.detach(), variance.detach(), renorm_mean.detach(), renorm_stddev.detach())
    return _torch_passes.renorm_rd(*args, float(epsilon), *bounds)


def _compose(
    scale: torch.Tensor | None,
    offset: torch.Tensor | None,
    then_scale: torch.Tensor | None,
    then_offset: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(v·s + o)·ts + to`` as one affine map ``v·(s·ts) + (o·ts + to)``."""
    if then_scale is not None:
        scale = then_scale if scale is None else scale * then_scale
        offset = None if offset is None else offset * then_scale
    if then_offset is not None:
        offset = then_offset if offset is None else offset + then_offset
    return scale, offset


class BatchStatistics:
    """What a training step feeds the moving averages (in parameter layout).

    ``mean``/``variance`` are the batch statistics (averaged over ghost batches)
    and ``unbiased_variance`` the variance with Bessel's factor ``n/max(n − 1, 1)``
    applied per ghost batch before averaging (``n``: values, or summed mask
    weights, per channel and ghost batch); it is computed on first use when only
    the common factor is given. ``packed`` (a float64 vector whose first ``2·P``
    entries are the mean and the variance, reshaped to ``shape`` on first use)
    stands in for both when the values come from the C pass.
    """

    def __init__(
        self,
        mean: torch.Tensor | None,
        variance: torch.Tensor | None,
        unbiased_variance: torch.Tensor | None = None,
        bessel_factor: float = 1.0,
        *,
        packed: torch.Tensor | None = None,
        shape: Sequence[int] | None = None,
    ) -> None:
        self._mean = mean
        self._variance = variance
        self._unbiased = unbiased_variance
        self._factor = bessel_factor
        self._packed = packed
        self._shape = shape

    def _unpack(self) -> None:
        shape = list(self._shape)
        params = math.prod(shape)
        self._mean = self._packed[:params].view(shape)
        self._variance = self._packed[params : 2 * params].view(shape)
        self._packed = None

    @property
    def mean(self) -> torch.Tensor:
        if self._mean is None:
            self._unpack()
        return self._mean

    @mean.setter
    def mean(self, value: torch.Tensor) -> None:
        if self._mean is None and self._packed is not None:
            self._unpack()
        self._mean = value

    @property
    def variance(self) -> torch.Tensor:
        if self._variance is None:
            self._unpack()
        return self._variance

    @variance.setter
    def variance(self, value: torch.Tensor) -> None:
        if self._variance is None and self._packed is not None:
            self._unpack()
        self._variance = value

    @property
    def unbiased_variance(self) -> torch.Tensor:
        if self._unbiased is None:
            self._unbiased = self.variance * self._factor
        return self._unbiased


@dataclass(slots=True)
class MovingStatistics:
    """The variables a training step updates in place (parameter layout).

    ``mean ← EMA(mean, μ)`` and, without renorm, ``variance ← EMA(variance, v)``
    with ``v = σ²·n/max(n − 1, 1)`` when ``unbiased`` else ``σ²``. With renorm
    (``stddev`` given): ``stddev ← EMA(stddev, √(v + ε))``, ``variance =
    max(stddev² − ε, 0)``, ``renorm_mean ← EMA(renorm_mean, μ)`` and
    ``renorm_stddev ← EMA(renorm_stddev, √(σ² + ε))`` with ``renorm_momentum``.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    momentum: float
    unbiased: bool = False
    stddev: torch.Tensor | None = None
    renorm_mean: torch.Tensor | None = None
    renorm_stddev: torch.Tensor | None = None
    renorm_momentum: float = 0.99


def update_moving(moving: MovingStatistics, stats: BatchStatistics, epsilon: float) -> None:
    """Apply one training step's updates to ``moving`` in place (TensorFlow's rules).

    Under a ``torch.func`` transform the moving statistics must be inputs of the
    transformed function (``torch.func.functional_call(layer, (params, buffers), x)``),
    as for ``torch.nn.BatchNorm``: functorch refuses in-place updates of captured
    tensors with transformed values, which this reports as a RuntimeError naming the
    fix, before any variable changes.
    """
    if torch._C._are_functorch_transforms_active():
        try:  # (TF's own subtraction: functorch has no batching rule for lerp_)
            _update_moving(moving, stats, epsilon, _assign_sub)
        except RuntimeError as error:
            raise RuntimeError(
                "training under a torch.func transform (grad, vmap, jacrev, ...) updates "
                "the moving statistics in place, so they must be inputs of the "
                "transformed function, not captured by it: pass the layer's buffers in, "
                "e.g. torch.func.functional_call(layer, (parameters, buffers), x) with "
                "buffers batched like x under vmap, or call the layer with "
                f"training=False. PyTorch said: {error}"
            ) from error
        return
    _update_moving(moving, stats, epsilon)


def _assign_sub(
    variable: torch.Tensor, value: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """``assign_moving_average`` as TensorFlow writes it: ``variable −= (variable −
    value)·(1 − momentum)``."""
    return variable.sub_((variable - value.to(variable.dtype)) * (1.0 - momentum))


def _update_moving(
    moving: MovingStatistics,
    stats: BatchStatistics,
    epsilon: float,
    assign_moving_average: Callable[..., torch.Tensor] = assign_moving_average,
) -> None:
    value = stats.unbiased_variance if moving.unbiased else stats.variance
    assign_moving_average(moving.mean, stats.mean, moving.momentum)
    if moving.stddev is not None:
        stddev = assign_moving_average(moving.stddev, torch.sqrt(value + epsilon), moving.momentum)
        moving.variance.copy_(torch.relu(stddev.square() - epsilon))
        assign_moving_average(moving.renorm_mean, stats.mean, moving.renorm_momentum)
        assign_moving_average(
            moving.renorm_stddev, torch.sqrt(stats.variance + epsilon), moving.renorm_momentum
        )
    else:
        assign_moving_average(moving.variance, value, moving.momentum)


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
    shape = x.shape
    weights = mask
    ghost_dim = None
    compiling = backends.tracing()
    if group is None and weights is None and not compiling:  # the fast passes, if they fit
        fast = _fast_train(
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
        )
        if fast is not None:
            return fast
    if group is not None and not compiling:  # host-side decisions; see distributed.py
        from .distributed import check_batches

        check_batches(x, axes, virtual_batch_size, group, name, check_numerics, sync_key)
    if virtual_batch_size is not None:
        x, ghost_dim = ghost_batches(x, virtual_batch_size, grouping)
        if weights is not None:
            weights = ghost_batches(
                torch.broadcast_to(weights, shape), virtual_batch_size, grouping
            )[0]
        axes = [a + 1 for a in axes]
    channel_dims = [*axes] if ghost_dim is None else [*axes, ghost_dim]
    dims = reduction_dims(x.dim(), channel_dims)
    view = [n if d in axes else 1 for d, n in enumerate(x.shape)]  # per-channel, ghosts pooled
    if group is not None and compiling:
        from .distributed import gathered_moments

        xs = x if x.dtype in (torch.float32, torch.float64) else x.float()
        n, mean, var = gathered_moments(xs, dims, weights, group)
        g, b = (None if t is None else t.reshape(view) for t in (gamma, beta))
        if renorm is not None:
            renorm = (renorm[0].reshape(view), renorm[1].reshape(view), renorm[2])
        y = _composite_train(
            xs, mean.to(xs.dtype), var.to(xs.dtype), g, b, epsilon, ghost_dim, renorm, adjustment
        )
        stats = _global_statistics(n, mean.detach(), var.detach(), ghost_dim, param_shape, view)
        if moving is not None:
            update_moving(moving, stats, epsilon)
        return y.reshape(shape), stats
    if group is not None:
        from .distributed import sync_train

        y, n, mean, var = sync_train(
            x,
            axes,
            ghost_dim,
            gamma,
            beta,
            epsilon,
            group,
            name,
            weights,
            renorm,
            adjustment,
            check_numerics,
        )
        stats = _global_statistics(n, mean, var, ghost_dim, param_shape, view)
        if moving is not None:
            update_moving(moving, stats, epsilon)
        return y.reshape(shape), stats
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    mean, var = moments(x, dims, weights)
    g, b = (None if t is None else t.reshape(view) for t in (gamma, beta))
    if renorm is not None:
        renorm = (renorm[0].reshape(view), renorm[1].reshape(view), renorm[2])
    y = _composite_train(x, mean, var, g, b, epsilon, ghost_dim, renorm, adjustment)
    if weights is None and torch.jit.is_tracing():  # the count stays traced, not a constant
        n = (torch._shape_as_tensor(x).prod() / torch._shape_as_tensor(mean).prod()).to(var)
        unbiased = var * (n / torch.clamp(n - 1, min=1))
    elif weights is None:
        n = x.numel() // max(1, mean.numel())
        unbiased = var * (n / max(n - 1, 1))
    else:
        n = torch.broadcast_to(weights, x.shape)
        n = (n.sum(dim=dims, keepdim=True) if dims else n).to(var.dtype)
        unbiased = var * (n / torch.clamp(n - 1, min=1))
    pshape = list(param_shape) if param_shape is not None else view
    stats = BatchStatistics(
        *(_ghost_mean(t.detach(), ghost_dim).reshape(pshape) for t in (mean, var, unbiased))
    )
    if moving is not None:
        update_moving(moving, stats, epsilon)
    return y.reshape(shape), stats


def _fast_train(
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
) -> tuple[torch.Tensor, BatchStatistics] | None:
    """``train_forward`` through the selected backend's training pass (no mask, no process
    group, not tracing); None when the adjustment varies over a reduced dimension or needs a
    gradient, which the composite path handles."""
    shape = x.shape
    x = _layout.dense(x)
    layout, vshape, ghost_dim = None, shape, None
    if virtual_batch_size is not None:  # the ghost view's layout; the pass reads x itself
        layout = _layout.ghost_layout(x, virtual_batch_size, grouping)
        vshape, ghost_dim = layout[0], layout[2]
        axes = [a + 1 for a in axes]
    per_channel = None if adjustment is None else _layout.parameter_layout(adjustment, vshape, axes)
    if adjustment is not None and per_channel is None:
        return None
    vstride = tuple(x.stride()) if layout is None else layout[1]
    channel_dims = (*axes,) if ghost_dim is None else (ghost_dim, *axes)
    geo = _layout.geometry(tuple(vshape), vstride, channel_dims, ghost_dim)
    plan = _layout.Plan(geo, epsilon, renorm, per_channel, moving=moving)
    y, pair, updated = backends.select(x, geo).train(x, gamma, beta, plan)
    n = geo.count
    if param_shape is None:
        param_shape = [size if d in axes else 1 for d, size in enumerate(vshape)]
    factor = n / max(n - 1, 1)
    if isinstance(pair, tuple):
        stats = BatchStatistics(pair[0].view(param_shape), pair[1].view(param_shape), None, factor)
    else:
        stats = BatchStatistics(None, None, None, factor, packed=pair, shape=param_shape)
    if moving is not None and not updated:
        update_moving(moving, stats, epsilon)
    return (y if y.shape == shape else y.reshape(shape)), stats


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
        *(_ghost_mean(t, ghost_dim).reshape(pshape) for t in (mean, var, unbiased))
    )


def _ghost_mean(t: torch.Tensor, ghost_dim: int | None) -> torch.Tensor:
    return t if ghost_dim is None else t.mean(dim=ghost_dim, keepdim=True)


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
    adjustments, and ``torch.compile``, which fuses it)."""
    scale, offset = gamma, beta
    if adjustment is not None:
        scale, offset = _compose(adjustment[0], adjustment[1], scale, offset)
    if renorm is not None:
        r, d = renorm_correction(
            _ghost_mean(mean, ghost_dim),
            _ghost_mean(var, ghost_dim),
            *renorm[:2],
            epsilon,
            renorm[2],
        )
        scale, offset = _compose(r, d, scale, offset)
    return normalize(x, mean, var, offset, scale, epsilon)
