"""The autograd Function of synchronized batch statistics and its per-channel math.

``SyncTrainNorm`` runs a training forward with one ``all_gather`` of every process's
per-channel ``(n, μ, M2)`` (merged in rank order with Chan's parallel formula) and a
backward with one ``all_reduce`` of the per-channel sums; the collectives go through an
exchange object (``batchnorm.distributed._Exchange``) that turns their failures into
errors naming the layer. ``batchnorm.distributed`` is the public entry point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import _layout
from ._math import coefficients, counts, moments, plan_fold

__all__ = ["SyncTrainNorm", "count_moments"]


def count_moments(
    x: torch.Tensor, dims: Sequence[int], weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel count, mean and sum of squared deviations ``(n, μ, M2)`` of ``x``
    over ``dims`` (kept as size 1), in float64 as differentiable torch operations;
    ``weights`` (a mask) broadcasts against ``x``, zero total weight gives μ = 0."""
    n = counts(x, dims, weights)
    mean, var = moments(x.double(), dims, weights)
    return n, mean, var * n


def _local_moments(
    x: torch.Tensor, geo: _layout.Geometry, weights: torch.Tensor | None, backend: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel (n, μ, M2) of this process's data (stat-shaped, float64): the
    backend's moments, or ``count_moments`` with a mask (``backend`` None)."""
    shape = geo.stat_shape
    if x.numel() == 0:
        zero = torch.zeros(shape, dtype=torch.float64, device=x.device)
        return zero, zero.clone(), zero.clone()
    if backend is None:
        xs = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return count_moments(xs, geo.reduce_dims, weights)
    return backend.moments(x, geo)


def _merge(parts: list[torch.Tensor], k: int, shape: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Chan's merge of every process's (n, μ, M2), in rank order."""
    n = mean = m2 = None
    for part in parts:
        nb, mb, qb = part[4 : 4 + k], part[4 + k : 4 + 2 * k], part[4 + 2 * k : 4 + 3 * k]
        if n is None:
            n, mean, m2 = nb.clone(), mb.clone(), qb.clone()
            continue
        total = n + nb
        safe = torch.where(total > 0, total, torch.ones_like(total))
        delta = mb - mean
        mean = mean + delta * (nb / safe)
        m2 = m2 + qb + delta.square() * (n * nb / safe)
        n = total
    return n.reshape(shape), mean.reshape(shape), m2.reshape(shape)


def _per_channel(backend: Any, geo: _layout.Geometry, *coefficients: torch.Tensor) -> bool:
    """Whether the backend's pieces apply: no mask (``backend`` set) and per-channel
    coefficients (an adjustment may vary per example)."""
    return backend is not None and all(c.shape == geo.stat_shape for c in coefficients)


class SyncTrainNorm(torch.autograd.Function):
    """Forward and backward with one collective each (see the module docstring), through
    the selected backend's pieces (``backends.base.Backend``: moments, normalize,
    grad_sums, input_grad), or the composite formula with a mask (``backend`` None)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        plan: _layout.Plan,
        backend: Any,
        weights: torch.Tensor | None,
        exchange: Any,
        check_numerics: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """y and the global per-channel count, mean and biased variance; ``exchange``
        gathers every process's packed statistics (``_Exchange.gather``)."""
        geo = plan.geo
        k = geo.channels
        n, mean, m2 = _local_moments(x, geo, weights, backend)
        flag = float(bool(check_numerics) and not bool(torch.isfinite(x).all()))
        header = torch.tensor(
            [float(x.shape[0]), flag, float(k), 0.0], dtype=torch.float64, device=x.device
        )
        packed = torch.cat([header, n.reshape(-1), mean.reshape(-1), m2.reshape(-1)])
        parts = exchange.gather(packed)
        if any(p[1] > 0 for p in parts):  # a check_batches that ran on an earlier call
            raise ValueError(
                f"Layer {exchange.layer}: a training batch holds NaN or Inf on process(es) "
                f"{[r for r, p in enumerate(parts) if p[1] > 0]} (check_numerics=True); "
                "nothing was updated."
            )
        n, mean, m2 = _merge(parts, k, geo.stat_shape)
        if float(n.sum()) == 0:
            raise ValueError(
                f"Layer {exchange.layer}: the global training batch is empty on all "
                f"{exchange.world} processes; batch statistics are undefined."
            )
        var = torch.where(n > 0, m2 / torch.where(n > 0, n, 1), 0)
        slope, intercept = plan_fold(plan, mean, var)
        g = plan.stat(gamma.detach()).double() if gamma is not None else None
        b = plan.stat(beta.detach()).double() if beta is not None else None
        inv, scale, shift = coefficients(var, plan.epsilon, slope, intercept, g, b)
        if _per_channel(backend, geo, scale, shift):
            y = backend.normalize(x, mean, scale, shift, geo)
        else:  # a mask or an adjustment that varies per example: the composite formula
            xs = x if x.dtype in (torch.float32, torch.float64) else x.float()
            dt = xs.dtype
            y = ((xs - mean.to(dt)) * scale.to(dt) + shift.to(dt)).to(x.dtype)
        ctx.save_for_backward(x, gamma, beta)
        ctx.stats = (n, mean, inv, slope, intercept)
        ctx.plan, ctx.backend, ctx.weights, ctx.exchange = plan, backend, weights, exchange
        ctx.mark_non_differentiable(n, mean, var)
        return y, n, mean, var

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dy: torch.Tensor, _dn: Any, _dmean: Any, _dvar: Any
    ) -> tuple[torch.Tensor | None, ...]:
        """dx = inv·(g − (w/n)·(ΣG + (x − μ)·inv²·ΣG(x − μ))) with g = dy·r·a_s·γ and the
        sums over the global batch (one all_reduce); dγ, dβ of the local data."""
        if torch.is_grad_enabled():
            raise RuntimeError(
                "Double backward through synchronized batch statistics is not supported."
            )
        x, gamma, beta = ctx.saved_tensors
        n, mean, inv, slope, intercept = ctx.stats
        plan, backend, weights, exchange = ctx.plan, ctx.backend, ctx.weights, ctx.exchange
        geo = plan.geo
        dims = geo.reduce_dims

        def total(t: torch.Tensor) -> torch.Tensor:
            return t.sum(dim=dims, keepdim=True) if dims else t

        g = plan.stat(gamma.detach()).double() if gamma is not None else 1.0
        safe = torch.where(n > 0, n, torch.ones_like(n))
        dx = None
        if _per_channel(backend, geo, slope, intercept):
            sdy, sdx = backend.grad_sums(dy, x, mean, geo)
            sdy_g, sdx_g = exchange.sum(torch.stack([sdy, sdx]))
            if ctx.needs_input_grad[0]:
                k = (sdy_g / safe, inv.square() * sdx_g / safe, inv * slope * g)
                dx = backend.input_grad(dy, x, mean, k, geo)
            dgamma = slope * inv * sdx + intercept * sdy
            dbeta = sdy
        else:
            xd, dyd = x.double(), dy.double()
            centered = xd - mean
            gs = dyd * slope * g
            sg, sgx = exchange.sum(
                torch.stack(torch.broadcast_tensors(total(gs), total(gs * centered)))
            )
            if ctx.needs_input_grad[0]:
                w = 1.0 if weights is None else torch.broadcast_to(weights, x.shape).double()
                dx = inv * (gs - (w / safe) * (sg + centered * inv.square() * sgx))
                dx = dx.to(x.dtype)
            dgamma = total(dyd * (centered * inv * slope + intercept))
            dbeta = total(dyd)
        if gamma is not None and ctx.needs_input_grad[1]:
            dgamma = dgamma.sum_to_size(plan.stat(gamma).shape).reshape(gamma.shape)
            dgamma = dgamma.to(gamma.dtype)
        else:
            dgamma = None
        if beta is not None and ctx.needs_input_grad[2]:
            dbeta = dbeta.sum_to_size(plan.stat(beta).shape).reshape(beta.shape).to(beta.dtype)
        else:
            dbeta = None
        return dx, dgamma, dbeta, None, None, None, None, None
