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
from .backends.c import build
from .backends.c.view import function, native

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
    x: torch.Tensor, geo: _layout.Geometry, weights: torch.Tensor | None, lib: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel (n, μ, M2) of this process's data (stat-shaped, float64): the C
    statistics pass where it applies, else ``count_moments``."""
    shape = geo.stat_shape
    if x.numel() == 0:
        zero = torch.zeros(shape, dtype=torch.float64, device=x.device)
        return zero, zero.clone(), zero.clone()
    if weights is not None or lib is None:
        return count_moments(x, geo.reduce_dims, weights)
    mean = torch.empty(geo.channels, dtype=torch.float64)
    var = torch.empty(geo.channels, dtype=torch.float64)
    function(lib, "stats", x.dtype)(
        x.data_ptr(),
        native(geo).dims,
        native(geo).strides,
        mean.data_ptr(),
        var.data_ptr(),
        build.threads(x.numel()),
    )
    n = torch.full(shape, float(geo.count), dtype=torch.float64)
    return n, mean.reshape(shape), var.reshape(shape) * n


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


class SyncTrainNorm(torch.autograd.Function):
    """Forward and backward with one collective each (see the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        plan: _layout.Plan,
        lib: Any,
        weights: torch.Tensor | None,
        exchange: Any,
        check_numerics: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """y and the global per-channel count, mean and biased variance; ``exchange``
        gathers every process's packed statistics (``_Exchange.gather``)."""
        geo = plan.geo
        k = geo.channels
        xs = x if x.dtype in (torch.float32, torch.float64) or lib is not None else x.float()
        n, mean, m2 = _local_moments(xs, geo, weights, lib)
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
        if lib is not None and scale.shape == geo.stat_shape and shift.shape == geo.stat_shape:
            pdt = _layout.PARAM_DTYPE[x.dtype]
            vec = [t.reshape(-1).to(pdt).contiguous() for t in (mean, scale, shift)]
            y = torch.empty_like(x)
            function(lib, "affine", x.dtype)(
                x.data_ptr(),
                y.data_ptr(),
                native(geo).dims,
                native(geo).strides,
                *(v.data_ptr() for v in vec),
                build.threads(x.numel()),
            )
        else:
            dt = xs.dtype
            y = ((xs - mean.to(dt)) * scale.to(dt) + shift.to(dt)).to(x.dtype)
        ctx.save_for_backward(x, gamma, beta)
        ctx.stats = (n, mean, inv, slope, intercept)
        ctx.plan, ctx.lib, ctx.weights, ctx.exchange = plan, lib, weights, exchange
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
        plan, lib, weights, exchange = ctx.plan, ctx.lib, ctx.weights, ctx.exchange
        geo = plan.geo
        dims = geo.reduce_dims

        def total(t: torch.Tensor) -> torch.Tensor:
            return t.sum(dim=dims, keepdim=True) if dims else t

        g = plan.stat(gamma.detach()).double() if gamma is not None else 1.0
        safe = torch.where(n > 0, n, torch.ones_like(n))
        stat = geo.stat_shape
        dx = None
        if lib is not None and slope.shape == stat and intercept.shape == stat:
            dyc = _layout.like(dy, x)
            pdt = _layout.PARAM_DTYPE[x.dtype]
            sdy = torch.empty(geo.channels, dtype=torch.float64)
            sdx = torch.empty(geo.channels, dtype=torch.float64)
            mean_v = mean.reshape(-1).to(pdt).contiguous()
            function(lib, "reduce", x.dtype)(
                dyc.data_ptr(),
                x.data_ptr(),
                native(geo).dims,
                native(geo).strides,
                mean_v.data_ptr(),
                sdy.data_ptr(),
                sdx.data_ptr(),
                build.threads(x.numel()),
            )
            sdy, sdx = sdy.reshape(stat), sdx.reshape(stat)
            sdy_g, sdx_g = exchange.sum(torch.stack([sdy, sdx]))
            if ctx.needs_input_grad[0]:
                k = (sdy_g / safe, inv.square() * sdx_g / safe, inv * slope * g)
                vec = [t.reshape(-1).to(pdt).contiguous() for t in (mean, *k)]
                dx = torch.empty_like(x)
                function(lib, "dx", x.dtype)(
                    dyc.data_ptr(),
                    x.data_ptr(),
                    dx.data_ptr(),
                    native(geo).dims,
                    native(geo).strides,
                    *(v.data_ptr() for v in vec),
                    build.threads(x.numel()),
                )
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
