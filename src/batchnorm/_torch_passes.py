"""The training and inference passes as PyTorch operations, and the composite formula
every path differentiates for a double backward.

``TorchTrainNorm``/``TorchAffineNorm`` give the same outputs and state as the C passes
(``_fused.Native*``) and run wherever those cannot (CUDA, no compiler, other dtypes):

    μ = s + mean(x − s),  σ² = mean((x − μ)²)   (s: one sample per channel)
    y = (x − μ)·k + o,    k = γ·slope/√(σ² + ε),  o = intercept·γ + β

with ``slope``/``intercept`` folding renorm's r, d and the adjustment. ``composite`` is
that output as differentiable operations; a backward under ``create_graph=True``
differentiates it (``composite_backward``), so ``gradgradcheck`` holds on every path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._layout import Geometry, Plan


def wants_grad(ctx: Any, index: int, t: torch.Tensor | None) -> bool:
    """Whether the gradient of input ``index`` (the tensor ``t``) is wanted."""
    return t is not None and ctx.needs_input_grad[index]


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


def _stats(x: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    dims = geo.reduce_dims
    if not dims:
        return x.double(), torch.zeros_like(x, dtype=torch.float64)
    shift = channel_sample(x, dims)
    centered = x - shift
    delta = centered.mean(dim=dims, keepdim=True)
    var = (centered - delta).square().mean(dim=dims, keepdim=True)
    return shift.double() + delta.double(), var.double()


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """r = clip(√(σ² + ε)/max(s_renorm, √ε)), d = clip((μ − μ_renorm)/max(s_renorm, √ε))."""
    stddev = torch.sqrt(variance + epsilon)
    denom = torch.clamp(renorm_stddev.to(stddev.dtype), min=epsilon**0.5)
    r = torch.clamp(stddev / denom, rmin, rmax)
    d = torch.clamp((mean - renorm_mean.to(mean.dtype)) / denom, -dmax, dmax)
    return r, d


@renorm_rd.register_fake
def _(mean, variance, renorm_mean, renorm_stddev, epsilon, rmin, rmax, dmax):
    shape = torch.broadcast_shapes(mean.shape, renorm_mean.shape)
    return mean.new_empty(shape), mean.new_empty(shape)


def slope_intercept(plan: Plan, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(x̂·r + d)·a_s + a_b = x̂·slope + intercept, per channel (float64)."""
    slope = torch.ones_like(var)
    intercept = torch.zeros_like(var)
    if plan.adjustment is not None:  # per parameter entry, or broadcastable to the input
        a_s, a_b = (
            (plan.stat(a) if a.numel() == plan.geo.params else a).double() for a in plan.adjustment
        )
        slope, intercept = slope * a_s, intercept + a_b
    if plan.renorm is not None:
        ghost = plan.geo.ghost_dim
        pooled = [t if ghost is None else t.mean(dim=ghost, keepdim=True) for t in (mean, var)]
        renorm_mean, renorm_stddev, clipping = plan.renorm
        inf = float("inf")
        r, d = renorm_rd(
            *pooled,
            plan.stat(renorm_mean).double(),
            plan.stat(renorm_stddev).double(),
            plan.epsilon,
            float(clipping.get("rmin", -inf)),
            float(clipping.get("rmax", inf)),
            float(clipping.get("dmax", inf)),
        )
        slope, intercept = slope * r, d * slope + intercept
    return slope, intercept


class TorchTrainNorm(torch.autograd.Function):
    """Training-mode normalization as PyTorch operations; same outputs as
    ``NativeTrainNorm`` (the state rows are stat-shaped tensors here)."""

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, plan: Plan):  # type: ignore[override]
        mean, var = _stats(x, plan.geo)
        slope, intercept = slope_intercept(plan, mean, var)
        inv = torch.rsqrt(var + plan.epsilon)
        g = gamma.detach().double() if gamma is not None else 1.0
        b = beta.detach().double() if beta is not None else 0.0
        dt = x.dtype
        y = (x - mean.to(dt)) * (inv * slope * g).to(dt) + (intercept * g + b).to(dt)
        state = torch.stack(torch.broadcast_tensors(mean, var, inv, slope, intercept))
        ctx.save_for_backward(x, gamma, beta)
        ctx.plan, ctx.state = plan, state
        ctx.mark_non_differentiable(state)
        return y, state

    @staticmethod
    def backward(ctx: Any, dy, _dstate):  # type: ignore[override]
        x, gamma, beta = ctx.saved_tensors
        plan, state = ctx.plan, ctx.state
        mean, _, inv, slope, intercept = state
        if torch.is_grad_enabled():
            return composite_backward(ctx, dy, x, gamma, beta, plan, slope, intercept)
        dims, n, dt = plan.geo.reduce_dims, plan.geo.count, x.dtype
        centered = x - mean.to(dt)
        sdy = dy.sum(dim=dims, keepdim=True, dtype=torch.float64) if dims else dy.double()
        sdx = (
            (dy * centered).sum(dim=dims, keepdim=True, dtype=torch.float64)
            if dims
            else (dy * centered).double()
        )
        dx = None
        if ctx.needs_input_grad[0]:
            g = gamma.detach().double() if gamma is not None else 1.0
            k1, k2, k3 = sdy / n, inv.square() * sdx / n, inv * slope * g
            dx = (dy - k1.to(dt) - centered * k2.to(dt)) * k3.to(dt)
        dgamma = dbeta = None
        if wants_grad(ctx, 1, gamma):
            dgamma = (slope * inv * sdx + intercept * sdy).sum_to_size(gamma.shape).to(gamma.dtype)
        if wants_grad(ctx, 2, beta):
            dbeta = sdy.sum_to_size(beta.shape).to(beta.dtype)
        return dx, dgamma, dbeta, None


class TorchAffineNorm(torch.autograd.Function):
    """Inference-mode normalization as PyTorch operations (double backward included)."""

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, mean, var, plan: Plan):  # type: ignore[override]
        inv = torch.rsqrt(var.double() + plan.epsilon)
        g = gamma.detach().double() if gamma is not None else 1.0
        b = beta.detach().double() if beta is not None else 0.0
        dt = x.dtype
        ctx.save_for_backward(x, gamma, beta, mean, var)
        ctx.plan = plan
        return (x - mean.to(dt)) * (inv * g).to(dt) + torch.as_tensor(b).to(dt)

    @staticmethod
    def backward(ctx: Any, dy):  # type: ignore[override]
        x, gamma, beta, mean, var = ctx.saved_tensors
        plan = ctx.plan
        one = torch.ones((), dtype=torch.float64)
        if torch.is_grad_enabled():
            grads = composite_backward(ctx, dy, x, gamma, beta, plan, one, 0 * one, mean, var)
            return (*grads[:3], None, None, None)
        dims, dt = plan.geo.reduce_dims, x.dtype
        inv = torch.rsqrt(var.double() + plan.epsilon)
        g = gamma.detach().double() if gamma is not None else 1.0
        dx = dy * (inv * g).to(dt) if ctx.needs_input_grad[0] else None
        dgamma = dbeta = None
        if wants_grad(ctx, 1, gamma):
            xhat = (x - mean.to(dt)) * inv.to(dt)
            dgamma = (dy * xhat).sum(dim=dims, keepdim=True, dtype=torch.float64)
            dgamma = dgamma.sum_to_size(gamma.shape).to(gamma.dtype)
        if wants_grad(ctx, 2, beta):
            dbeta = dy.sum(dim=dims, keepdim=True, dtype=torch.float64)
            dbeta = dbeta.sum_to_size(beta.shape).to(beta.dtype)
        return dx, dgamma, dbeta, None, None, None


# ---------------------------------------------------------------------- double backward
def composite(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    plan: Plan,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    mean: torch.Tensor | None = None,
    var: torch.Tensor | None = None,
) -> torch.Tensor:
    """The output as differentiable PyTorch operations, with ``slope``/``intercept``
    (r, d, adjustment) held constant; ``mean``/``var`` given means inference."""
    dt = x.dtype
    if mean is None:
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
    wanted = list(zip((x, gamma, beta), ctx.needs_input_grad[:3], strict=True))
    inputs = [t for t, need in wanted if need and t is not None]
    with torch.enable_grad():
        xv = x.reshape(plan.geo.shape) if view else x
        y = composite(xv, gamma, beta, plan, slope, intercept, mean, var)
        grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
    return (*(next(grads) if need and t is not None else None for t, need in wanted), None)
