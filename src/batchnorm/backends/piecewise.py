"""The training and inference passes written once over a backend's four pieces.

A backend that provides ``moments``, ``normalize``, ``grad_sums`` and ``input_grad``
(``base.Backend``) and derives from ``PiecewiseBackend`` gets both passes, their
backward and double backward from here; only the pieces touch its kernels. Per call:

    forward:  (n, μ, M2) = moments(x);  σ² = M2/n
              slope, intercept = the fold of renorm's r, d and the adjustment (``_math``)
              y = normalize(x, μ, k, o),  k = γ·slope/√(σ² + ε),  o = intercept·γ + β
    backward: Σdy, Σdy·(x − μ) = grad_sums(dy, x, μ)
              dx = input_grad(dy, x, μ, (Σdy/n, Σdy·(x − μ)/(n·(σ² + ε)), k))
              dγ = slope·Σdy·(x − μ)/√(σ² + ε) + intercept·Σdy,  dβ = Σdy

    inference: y = normalize(x, μ, γ/√(σ² + ε), β);  dx = normalize(dy, 0, γ/√(σ² + ε), 0)

A mask's weights ``w`` (``plan.weights``, a backend with ``weighted`` set) weigh the
moments (n = Σw per channel, ``μ = Σwx/n``, ``σ² = Σw(x − μ)²/n``, both 0 where n = 0)
and the mean's and variance's terms of the input gradient:
``dx = (dy − w·(Σdy/n + (x − μ)·Σdy·(x − μ)/(n·(σ² + ε))))·k``.

with every per-channel quantity a float64 stat-shaped tensor (one value per channel of
the geometry: the ghost groups' channels included) computed on the tensor's device; the
pieces see only per-channel vectors. A double backward differentiates the composite
formula (``_math.composite_backward``), as the other backends do.
"""

from __future__ import annotations

from typing import Any

import torch

from .._layout import Geometry, Plan, like
from .._math import coefficients, composite_backward, plan_fold, wants_grad
from .base import Backend

__all__ = ["PiecewiseBackend"]


def _full(t: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """A per-channel coefficient broadcast to the geometry's stat shape."""
    return t if t.shape == geo.stat_shape else t.expand(geo.stat_shape)


def _param(t: torch.Tensor | None, plan: Plan) -> torch.Tensor | None:
    """A parameter-layout tensor as a float64 view that broadcasts against the stats."""
    return None if t is None else plan.stat(t.detach()).double()


def _param_grad(g: torch.Tensor, t: torch.Tensor, plan: Plan) -> torch.Tensor:
    """A per-channel gradient summed over the ghost groups, in ``t``'s shape and dtype."""
    return g.sum_to_size(plan.stat(t).shape).reshape(t.shape).to(t.dtype)


class _TrainNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, gamma, beta, plan: Plan, backend: Backend):  # type: ignore[override]
        geo = plan.geo
        weights = None if plan.weights is None else backend.prepare_weights(plan.weights, geo)
        if weights is None:
            n, mean, m2 = backend.moments(x, geo)
        else:
            n, mean, m2 = backend.moments(x, geo, weights=weights)  # n = Σw
        safe = torch.where(n > 0, n, 1.0)
        var = m2 / safe
        slope, intercept = plan_fold(plan, mean, var)
        g, b = _param(gamma, plan), _param(beta, plan)
        inv, scale, shift = coefficients(var, plan.epsilon, slope, intercept, g, b)
        y = backend.normalize(x, mean, _full(scale, geo), _full(shift, geo), geo)
        ctx.save_for_backward(x, gamma, beta)
        ctx.plan, ctx.backend, ctx.weights, ctx.positive = plan, backend, weights, n > 0
        ctx.stats = (safe, mean, inv, slope, intercept)
        ctx.mark_non_differentiable(mean, var, n)
        return y, mean, var, n

    @staticmethod
    def backward(ctx: Any, dy, _dmean, _dvar, _dn):  # type: ignore[override]
        x, gamma, beta = ctx.saved_tensors
        plan, backend = ctx.plan, ctx.backend
        n, mean, inv, slope, intercept = ctx.stats
        if torch.is_grad_enabled():
            return (*composite_backward(ctx, dy, x, gamma, beta, plan, slope, intercept), None)
        geo = plan.geo
        dy = like(dy, x)  # (once, for every piece that reads it through x's view)
        sdy, sdx = backend.grad_sums(dy, x, mean, geo)
        dx = dgamma = dbeta = None
        if ctx.needs_input_grad[0]:
            g = _param(gamma, plan)
            k3 = inv * slope * (g if g is not None else 1.0)
            if ctx.weights is None:
                k = (sdy / n, inv.square() * sdx / n, _full(k3, geo))
                dx = backend.input_grad(dy, x, mean, k, geo)
            else:  # (a channel weighing nothing, or less: μ = σ² = 0, constants)
                weigh = torch.where(ctx.positive, 1.0 / n, 0.0)
                k = (sdy * weigh, inv.square() * sdx * weigh, _full(k3, geo))
                dx = backend.input_grad(dy, x, mean, k, geo, weights=ctx.weights)
        if wants_grad(ctx, 1, gamma):
            dgamma = _param_grad(slope * inv * sdx + intercept * sdy, gamma, plan)
        if wants_grad(ctx, 2, beta):
            dbeta = _param_grad(sdy, beta, plan)
        return dx, dgamma, dbeta, None, None


class _InferNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, gamma, beta, mean, var, plan: Plan, backend: Backend):  # type: ignore[override]
        geo = plan.geo
        inv = torch.rsqrt(_param(var, plan) + plan.epsilon)
        g, b = _param(gamma, plan), _param(beta, plan)
        scale = inv * g if g is not None else inv
        shift = b if b is not None else torch.zeros_like(inv)
        m = _full(_param(mean, plan), geo)
        y = backend.normalize(x, m, _full(scale, geo), _full(shift, geo), geo)
        ctx.save_for_backward(x, gamma, beta, mean, var)
        ctx.plan, ctx.backend, ctx.coefficients = plan, backend, (m, inv, scale)
        return y

    @staticmethod
    def backward(ctx: Any, dy):  # type: ignore[override]
        x, gamma, beta, mean, var = ctx.saved_tensors
        plan, backend = ctx.plan, ctx.backend
        if torch.is_grad_enabled():
            one = torch.ones((), dtype=torch.float64, device=x.device)
            mean, var = plan.stat(mean), plan.stat(var)
            grads = composite_backward(ctx, dy, x, gamma, beta, plan, one, 0 * one, mean, var)
            return (*grads[:3], None, None, None, None)
        geo = plan.geo
        m, inv, scale = ctx.coefficients
        dy = like(dy, x)  # (once, for every piece that reads it through x's view)
        dx = dgamma = dbeta = None
        if ctx.needs_input_grad[0]:
            zero = torch.zeros_like(m)
            dx = backend.normalize(dy, zero, _full(scale, geo), zero, geo)
        if wants_grad(ctx, 1, gamma) or wants_grad(ctx, 2, beta):
            sdy, sdx = backend.grad_sums(dy, x, m, geo)
            if wants_grad(ctx, 1, gamma):
                dgamma = _param_grad(sdx * inv, gamma, plan)
            if wants_grad(ctx, 2, beta):
                dbeta = _param_grad(sdy, beta, plan)
        return dx, dgamma, dbeta, None, None, None, None


class PiecewiseBackend(Backend):
    """A backend whose passes are written over its pieces (see the module docstring):
    it implements ``supports`` and the four pieces, on a dense ``x`` in the geometry's
    shape (a ghost-batch view of the caller's tensor included). A ``weighted`` one also
    takes ``weights=`` (what its ``prepare_weights`` made of ``plan.weights``) in
    ``moments`` (returning the summed weights as the count) and ``input_grad``."""

    def prepare_weights(self, weights: torch.Tensor, geo: Geometry) -> Any:
        """A mask's weights (broadcastable to ``geo.shape``) as the pieces read them."""
        return weights

    def train(
        self, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Any
    ) -> tuple[torch.Tensor, Any, bool]:
        geo = plan.geo
        xv = x if x.shape == geo.shape else x.reshape(geo.shape)  # (a view: a split batch)
        y, mean, var, n = _TrainNorm.apply(xv, gamma, beta, plan, self)
        stats = [mean, var]
        if plan.weights is not None:  # Bessel's factor from each channel's summed weights
            stats.append(var * (n / torch.clamp(n - 1, min=1)))
        if geo.ghost_dim is not None:
            stats = [t.mean(dim=geo.ghost_dim) for t in stats]
        return y, tuple(t.reshape(-1) for t in stats), False

    def infer(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        mean: torch.Tensor,
        var: torch.Tensor,
        plan: Any,
    ) -> torch.Tensor:
        return _InferNorm.apply(x, gamma, beta, mean, var, plan, self)
