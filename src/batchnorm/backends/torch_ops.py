"""The PyTorch-operations backend: always available, on every device and dtype.

Its passes are ``TorchTrainNorm``/``TorchInferNorm``: the same outputs and state as
the C passes, as PyTorch operations:

    μ, σ² = moments(x)   (shifted two-pass, ``_math.moments``)
    y = (x − μ)·k + o,    k = γ·slope/√(σ² + ε),  o = intercept·γ + β

with ``slope``/``intercept`` folding renorm's r, d and the adjustment (``_math``). It
is also the backend of every traced call (``torch.compile``, ``torch.jit.trace``,
``torch.func``), where the layer computes the composite formula directly.
"""

from __future__ import annotations

from typing import Any

import torch

from .._layout import Geometry, Plan
from .._math import composite_backward, counts, moments, plan_fold, wants_grad
from .base import Backend

__all__ = ["TorchBackend", "TorchInferNorm", "TorchTrainNorm"]

_FULL = (torch.float32, torch.float64)


def _stats(x: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` (stat-shaped, float64)."""
    if not geo.reduce_dims:
        return x.double(), torch.zeros_like(x, dtype=torch.float64)
    mean, var = moments(x, geo.reduce_dims)
    return mean.double(), var.double()


class TorchTrainNorm(torch.autograd.Function):
    """Training-mode normalization as PyTorch operations; same outputs as
    ``NativeTrainNorm`` (the state rows are stat-shaped tensors here)."""

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, plan: Plan):  # type: ignore[override]
        mean, var = _stats(x, plan.geo)
        slope, intercept = plan_fold(plan, mean, var)
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


class TorchInferNorm(torch.autograd.Function):
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


class TorchBackend(Backend):
    """PyTorch operations (see the module docstring)."""

    name = "torch"
    takes = "any tensor, and every traced, exported and transformed call"
    traceable = True

    def supports(self, x: torch.Tensor, geo: Any) -> str | None:
        return None

    def train(
        self, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Any
    ) -> tuple[torch.Tensor, Any, bool]:
        geo = plan.geo
        xc = x if x.dtype in _FULL else x.float()  # 16-bit input: float32 math and output
        xc = xc if xc.shape == geo.shape else xc.reshape(geo.shape)
        g = None if gamma is None else plan.stat(gamma)
        b = None if beta is None else plan.stat(beta)
        y, state = TorchTrainNorm.apply(xc, g, b, plan)
        mean, var = state[0], state[1]
        if geo.ghost_dim is not None:
            mean, var = mean.mean(dim=geo.ghost_dim), var.mean(dim=geo.ghost_dim)
        return y, (mean.reshape(-1), var.reshape(-1)), False

    def infer(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        mean: torch.Tensor,
        var: torch.Tensor,
        plan: Any,
    ) -> torch.Tensor:
        xc = x if x.dtype in _FULL else x.float()
        stat = [None if t is None else plan.stat(t) for t in (gamma, beta, mean, var)]
        return TorchInferNorm.apply(xc, *stat, plan)

    # ------------------------------------------------------------------ pieces
    def moments(self, x: torch.Tensor, geo: Any) -> tuple[torch.Tensor, ...]:
        n = counts(x, geo.reduce_dims, None)
        mean, var = moments(x.double(), geo.reduce_dims)
        return n, mean, var * n

    def normalize(
        self,
        x: torch.Tensor,
        mean: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        geo: Any,
    ) -> torch.Tensor:
        xc = x if x.dtype in _FULL else x.float()
        dt = xc.dtype
        return ((xc - mean.to(dt)) * scale.to(dt) + shift.to(dt)).to(x.dtype)

    def grad_sums(
        self, dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, geo: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dims = geo.reduce_dims
        dyd = dy.double()
        centered = dyd * (x.double() - mean)
        if not dims:
            return dyd, centered
        return dyd.sum(dim=dims, keepdim=True), centered.sum(dim=dims, keepdim=True)

    def input_grad(
        self,
        dy: torch.Tensor,
        x: torch.Tensor,
        mean: torch.Tensor,
        k: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        geo: Any,
    ) -> torch.Tensor:
        dx = (dy.double() - k[0] - (x.double() - mean) * k[1]) * k[2]
        return dx.to(x.dtype)
