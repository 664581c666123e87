"""The batch-normalization math, written once: moments, the fold of renorm, adjustment,
γ and β into per-channel coefficients, and the composite formula.

With ``N`` values (or summed mask weights) per channel:

- moments, shifted two-pass: ``s`` one sample per channel, ``μ = s + Σw(x − s)/Σw``,
  ``σ² = Σw(x − μ)²/Σw`` (exact for data whose mean is large against its spread);
- renorm: ``r = clip(√(σ² + ε)/ŝ, rmin, rmax)``, ``d = clip((μ − μ_renorm)/ŝ, ±dmax)``
  with ``ŝ = max(s_renorm, √ε)``, without gradient;
- the fold: ``(x̂·r + d)·a_s + a_b = x̂·slope + intercept``, then
  ``y = (x − μ)·k + o`` with ``k = γ·slope/√(σ² + ε)`` and ``o = intercept·γ + β``.

Every backend's training pass computes that output; its double backward differentiates
``composite``, and the torch backend, ``torch.compile`` and synchronized statistics
use these functions directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import _checks

__all__ = [
    "channel_sample",
    "clip_bounds",
    "coefficients",
    "composite",
    "composite_backward",
    "counts",
    "ghost_mean",
    "moments",
    "normalize",
    "plan_fold",
    "renorm_factors",
    "renorm_rd",
    "slope_intercept",
    "split_clipping",
    "wants_grad",
]

_INF = float("inf")


def wants_grad(ctx: Any, index: int, t: torch.Tensor | None) -> bool:
    """Whether the gradient of input ``index`` (the tensor ``t``) is wanted."""
    return t is not None and ctx.needs_input_grad[index]


def ghost_mean(t: torch.Tensor, ghost_dim: int | None) -> torch.Tensor:
    """The mean over the ghost-batch dimension (``t`` itself without one)."""
    return t if ghost_dim is None else t.mean(dim=ghost_dim, keepdim=True)


# ---------------------------------------------------------------------- moments
def channel_sample(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """One value of ``x`` per channel (reduced ``dims`` kept as size 1, detached): the
    shift ``s`` of the two-pass statistics ``μ = s + mean(x − s)``, whose sums then see
    the spread of the data rather than its mean (float32 data with mean 1e4 and std 1
    keeps its precision). Zeros where a reduced dimension is empty."""
    shift = x.detach()
    tracing = torch.jit.is_tracing()  # (a traced size is a tensor: assume it is not empty)
    for d in dims:
        nonempty = tracing or x.shape[d]
        shift = shift.narrow(d, 0, 1) if nonempty else shift.sum(dim=d, keepdim=True)
    return shift


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
    shift = channel_sample(x, dims)
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


def counts(x: torch.Tensor, dims: Sequence[int], weights: torch.Tensor | None) -> torch.Tensor:
    """Values (or summed mask weights) per channel, float64, reduced ``dims`` kept."""
    if weights is not None:
        w = torch.broadcast_to(weights, x.shape).double()
        return w.sum(dim=list(dims), keepdim=True) if dims else w
    count = 1
    for d in dims:
        count *= x.shape[d]
    shape = [1 if d in dims else n for d, n in enumerate(x.shape)]
    return torch.full(shape, float(count), dtype=torch.float64, device=x.device)


# ---------------------------------------------------------------------- the fold
def clip_bounds(clipping: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(rmin, rmax, dmax)`` of a renorm clipping mapping as floats, read on the host (the
    C backend's); a missing key leaves that side open (rmin −∞, rmax ∞, dmax ∞); values
    may be floats or 0-dim tensors. Device tensors, which ``check_host_clipping`` leaves
    to the device, are checked here since this reads them anyway."""
    if not all(map(_checks.on_host, clipping.values())):
        _checks.check_clipping_values(clipping)
    return (
        float(clipping.get("rmin", -_INF)),
        float(clipping.get("rmax", _INF)),
        float(clipping.get("dmax", _INF)),
    )


def split_clipping(
    clipping: Mapping[str, Any],
) -> tuple[tuple[float, float, float], tuple[torch.Tensor | None, ...]]:
    """``(rmin, rmax, dmax)`` as floats for the values on the host (``_checks.on_host``:
    numbers, CPU tensors) and as detached 0-dim tensors for those on a device, which are
    never read on the host (their float is the open side: rmin −∞, rmax ∞, dmax ∞)."""
    floats, tensors = [], []
    for key, open_side in (("rmin", -_INF), ("rmax", _INF), ("dmax", _INF)):
        value = clipping.get(key)
        on_device = value is not None and not _checks.on_host(value)
        floats.append(open_side if value is None or on_device else float(value))
        tensors.append(value.detach() if on_device else None)
    return (floats[0], floats[1], floats[2]), tuple(tensors)


def _clamp(
    x: torch.Tensor,
    low: float,
    high: float,
    low_t: torch.Tensor | None,
    high_t: torch.Tensor | None,
) -> torch.Tensor:
    """``min(max(x, low), high)`` with the tensor bounds, when given, applied with their
    float side (NaN stays NaN, like ``torch.clamp``)."""
    if low_t is None and high_t is None:
        return torch.clamp(x, low, high)
    x = torch.clamp(x, min=low)
    if low_t is not None:
        x = torch.clamp(x, min=low_t.to(x))
    x = torch.clamp(x, max=high)
    if high_t is not None:
        x = torch.clamp(x, max=high_t.to(x))
    return x


# An opaque operator: under torch.compile, AOTAutograd's partitioner could otherwise
# recompute r and d in the backward from the renorm buffers after the step updated them
# in place (silently wrong gradients, pytorch#197039); custom operators are never
# recomputed, so r and d are saved.
@torch.library.custom_op("batchnorm::renorm_rd", mutates_args=())
def renorm_rd(
    mean: torch.Tensor,
    variance: torch.Tensor,
    renorm_mean: torch.Tensor,
    renorm_stddev: torch.Tensor,
    epsilon: float,
    rmin: float,
    rmax: float,
    dmax: float,
    rmin_t: torch.Tensor | None = None,
    rmax_t: torch.Tensor | None = None,
    dmax_t: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r = clip(√(σ² + ε)/max(s_renorm, √ε), rmin, rmax)``,
    ``d = clip((μ − μ_renorm)/max(s_renorm, √ε), −dmax, dmax)``; the optional 0-dim
    tensors ``rmin_t``/``rmax_t``/``dmax_t`` are bounds kept on the device (applied
    besides the float ones, which are then the open side)."""
    stddev = torch.sqrt(variance + epsilon)
    denom = torch.clamp(renorm_stddev.to(stddev.dtype), min=epsilon**0.5)
    r = _clamp(stddev / denom, rmin, rmax, rmin_t, rmax_t)
    neg_dmax_t = None if dmax_t is None else torch.neg(dmax_t)
    d = _clamp((mean - renorm_mean.to(mean.dtype)) / denom, -dmax, dmax, neg_dmax_t, dmax_t)
    return r, d


@renorm_rd.register_fake
def _(mean, variance, renorm_mean, renorm_stddev, *bounds, **tensor_bounds):
    shape = torch.broadcast_shapes(mean.shape, renorm_mean.shape)
    return mean.new_empty(shape), mean.new_empty(shape)


def renorm_factors(
    mean: torch.Tensor,
    var: torch.Tensor,
    renorm_mean: torch.Tensor,
    renorm_stddev: torch.Tensor,
    epsilon: float,
    clipping: Mapping[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Renorm's ``r`` and ``d`` (``renorm_rd``) for a clipping mapping: host values
    (numbers, CPU tensors) as float bounds, device tensors as tensor bounds read on the
    device only (no host synchronization; ``split_clipping``)."""
    bounds, tensors = split_clipping(clipping)
    return renorm_rd(mean, var, renorm_mean, renorm_stddev, float(epsilon), *bounds, *tensors)


def slope_intercept(
    mean: torch.Tensor,
    var: torch.Tensor,
    epsilon: float,
    renorm: tuple[torch.Tensor, torch.Tensor, Mapping[str, Any]] | None,
    adjustment: tuple[torch.Tensor, torch.Tensor] | None,
    ghost_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x̂·r + d)·a_s + a_b = x̂·slope + intercept``: renorm's r and d (from the ghost
    batches' pooled statistics, without gradient) and the adjustment ``(a_s, a_b)``,
    which may vary per example; everything broadcastable against ``mean``."""
    slope = torch.ones_like(var)
    intercept = torch.zeros_like(var)
    if adjustment is not None:
        a_s, a_b = adjustment
        slope, intercept = slope * a_s, intercept + a_b
    if renorm is not None:
        renorm_mean, renorm_stddev, clipping = renorm
        pooled = (ghost_mean(mean.detach(), ghost_dim), ghost_mean(var.detach(), ghost_dim))
        r, d = renorm_factors(
            *pooled,
            renorm_mean.detach().to(pooled[0].dtype),
            renorm_stddev.detach().to(pooled[0].dtype),
            epsilon,
            clipping,
        )
        slope, intercept = slope * r, d * slope + intercept
    return slope, intercept


def plan_fold(plan: Any, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``slope_intercept`` for a pass's ``plan``: its adjustment (per parameter entry, or
    broadcastable to the input) and renorm statistics (parameter layout) as views that
    broadcast against the stat-shaped float64 ``mean``/``var``."""
    adjustment = renorm = None
    if plan.adjustment is not None:
        adjustment = tuple(
            (plan.stat(a) if a.numel() == plan.geo.params else a).double() for a in plan.adjustment
        )
    if plan.renorm is not None:
        renorm_mean, renorm_stddev, clipping = plan.renorm
        renorm = (plan.stat(renorm_mean), plan.stat(renorm_stddev), clipping)
    return slope_intercept(mean, var, plan.epsilon, renorm, adjustment, plan.geo.ghost_dim)


def coefficients(
    var: torch.Tensor,
    epsilon: float,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``1/√(σ² + ε)``, ``k = γ·slope/√(σ² + ε)`` and ``o = intercept·γ + β``, so that
    ``y = (x − μ)·k + o``; γ/β broadcast against ``var`` (None: 1 and 0)."""
    inv = torch.rsqrt(var + epsilon)
    g = gamma if gamma is not None else 1.0
    b = beta if beta is not None else 0.0
    return inv, inv * slope * g, intercept * g + b


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


# ---------------------------------------------------------------------- double backward
def composite(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    plan: Any,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    mean: torch.Tensor | None = None,
    var: torch.Tensor | None = None,
) -> torch.Tensor:
    """The output as differentiable PyTorch operations, with ``slope``/``intercept``
    (r, d, adjustment) held constant; ``mean``/``var`` given means inference; a plan's
    mask weights weigh the training moments."""
    dt = x.dtype
    weights = getattr(plan, "weights", None)  # a mask's (a weighted pass)
    if mean is None and weights is not None:
        mean, var = moments(x, plan.geo.reduce_dims, weights.to(dt))
    elif mean is None:
        dims = plan.geo.reduce_dims
        mean = x.mean(dim=dims, keepdim=True) if dims else x
        var = (x - mean).square().mean(dim=dims, keepdim=True) if dims else torch.zeros_like(x)
    y = (x - mean.to(dt)) * torch.rsqrt(var.to(dt) + plan.epsilon) * slope.to(dt)
    y = y + intercept.to(dt)
    if gamma is not None:  # parameter layout or already broadcastable: same elements
        y = y * plan.stat(gamma).to(dt)
    if beta is not None:
        y = y + plan.stat(beta).to(dt)
    return y


def composite_backward(
    ctx, dy, x, gamma, beta, plan, slope, intercept, mean=None, var=None, view=False
):
    """The gradients of ``composite`` with a graph (``create_graph=True``): what every
    pass's backward returns when autograd asks for a double backward."""
    wanted = list(zip((x, gamma, beta), ctx.needs_input_grad[:3], strict=True))
    inputs = [t for t, need in wanted if need and t is not None]
    with torch.enable_grad():
        xv = x.reshape(plan.geo.shape) if view else x
        y = composite(xv, gamma, beta, plan, slope, intercept, mean, var)
        grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
    return (*(next(grads) if need and t is not None else None for t, need in wanted), None)
