"""Synchronized batch statistics across processes, on ``torch.distributed``.

With ``BatchNormalization(synchronized=True)`` a training call computes its
statistics over the global batch (every process of the group):

- forward: each process reduces its own data to per-channel ``(n, μ, M2)``
  (values, mean, sum of squared deviations); one ``all_gather`` shares them and
  every process merges them in rank order with Chan's parallel formula, so the
  global mean and variance are exact on large means, identical on every rank,
  and uneven (or empty) local batches weigh by their counts;
- backward: one ``all_reduce`` of the per-channel sums ``Σdy`` and
  ``Σdy·(x − μ)``; each process then computes its part of ``dx`` and its local
  contribution to ``dγ``/``dβ`` (summed over ranks — which data parallelism
  does — they equal the single-process gradient of the concatenated batch).

Ghost batches: every process must hold the same local batch; ghost batch ``g``
is the union of every process's local ghost batch ``g`` (``world_size·vbs``
examples). Errors that depend on the global batch (empty batch, NaN/Inf with
``check_numerics``, unequal batches with ghost batches) are decided after the
exchange, so every process raises together. A failed collective raises an error
naming the layer and leaves every variable unchanged. Inference and
``synchronized=False`` never touch the process group; without an initialized
group ``synchronized=True`` computes locally (with a one-time warning).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn

from . import _layout, _native, _torch_passes

__all__ = ["active_group", "check_batches", "convert_sync_batchnorm", "sync_train"]

_WARNED = [False]
# layer -> ids of the groups it has checked its channel layout with
_CHECKED: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


def active_group(process_group: Any) -> Any:
    """The group to synchronize over, or None (one-time warning) without an initialized
    default process group."""
    if dist.is_available() and dist.is_initialized():
        return process_group if process_group is not None else dist.group.WORLD
    if not _WARNED[0]:
        _WARNED[0] = True
        warnings.warn(
            "BatchNormalization(synchronized=True) without an initialized torch.distributed "
            "process group: statistics are computed on this process alone.",
            RuntimeWarning,
            stacklevel=4,
        )
    return None


class _Exchange:
    """The collectives of one layer call, with errors that name the layer."""

    def __init__(self, group: Any, layer: str) -> None:
        self.group = group
        self.layer = layer
        self.world = dist.get_world_size(group)

    def _fail(self, what: str, exc: BaseException) -> RuntimeError:
        return RuntimeError(
            f"Layer {self.layer}: {what} across {self.world} processes failed ({exc}). "
            "Every process must call the layer in training with the same channels; no "
            "variable was changed."
        )

    def gather(self, packed: torch.Tensor) -> list[torch.Tensor]:
        parts = [torch.empty_like(packed) for _ in range(self.world)]
        try:
            dist.all_gather(parts, packed.contiguous(), group=self.group)
        except Exception as exc:
            raise self._fail("exchanging batch statistics", exc) from exc
        return parts

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        except Exception as exc:
            raise self._fail("summing gradient statistics", exc) from exc
        return tensor


def _count_moments(
    x: torch.Tensor, dims: Sequence[int], weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel count, mean and sum of squared deviations ``(n, μ, M2)`` of ``x``
    over ``dims`` (kept as size 1), in float64 as differentiable torch operations;
    ``weights`` (a mask) broadcasts against ``x``, zero total weight gives μ = 0."""
    xd, dims = x.double(), list(dims)

    def total(t: torch.Tensor) -> torch.Tensor:
        return t.sum(dim=dims, keepdim=True) if dims else t

    if weights is None:
        count = 1
        for d in dims:
            count *= x.shape[d]
        shape = [1 if d in dims else n for d, n in enumerate(x.shape)]
        n = torch.full(shape, float(count), dtype=torch.float64, device=x.device)
        mean = total(xd) / max(count, 1)
        return n, mean, total((xd - mean).square())
    w = torch.broadcast_to(weights, x.shape).double()
    n = total(w)
    mean = total(w * xd) / torch.clamp(n, min=1)
    return n, mean, total(w * (xd - mean).square())


def _local_moments(
    x: torch.Tensor, geo: _layout.Geometry, weights: torch.Tensor | None, lib: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel (n, μ, M2) of this process's data (stat-shaped, float64): the C
    statistics pass where it applies, else ``_count_moments``."""
    shape = geo.stat_shape
    if x.numel() == 0:
        zero = torch.zeros(shape, dtype=torch.float64, device=x.device)
        return zero, zero.clone(), zero.clone()
    if weights is not None or lib is None:
        return _count_moments(x, geo.reduce_dims, weights)
    mean = torch.empty(geo.channels, dtype=torch.float64)
    var = torch.empty(geo.channels, dtype=torch.float64)
    _layout.function(lib, "stats", x.dtype)(
        x.data_ptr(),
        geo.native.dims,
        geo.native.strides,
        mean.data_ptr(),
        var.data_ptr(),
        _native.threads(x.numel()),
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


def check_batches(
    x: torch.Tensor,
    axes: Sequence[int],
    virtual_batch_size: int | None,
    group: Any,
    layer: str,
    check_numerics: bool = False,
    key: Any = None,
) -> None:
    """The fixed-size exchange that makes every size-dependent error global.

    Every process shares ``[batch, channels, NaN/Inf flag, indivisible flag]`` (32
    bytes) and all raise the same error together if channel counts differ, a batch
    holds NaN/Inf (``check_numerics``) or, with ghost batches, a batch is not
    divisible by ``virtual_batch_size`` or the local batches differ. Without ghost
    batches the payload size depends only on the channels, so a layer (``key``)
    runs this check once per group; with ghost batches it runs on every call (the
    number of ghost batches depends on the local batch)."""
    ghost = virtual_batch_size is not None
    if not ghost and key is not None:
        try:
            if id(group) in _CHECKED.get(key, ()):
                return
        except TypeError:  # not weak-referenceable: check every call
            key = None
    exchange = _Exchange(group, layer)
    channels = 1
    for a in axes:
        channels *= x.shape[a]
    nonfinite = bool(check_numerics) and not bool(torch.isfinite(x).all())
    indivisible = ghost and x.shape[0] % virtual_batch_size != 0
    header = torch.tensor(  # on x's device: NCCL exchanges CUDA tensors only
        [float(x.shape[0]), float(channels), float(nonfinite), float(indivisible)],
        dtype=torch.float64,
        device=x.device,
    )
    parts = exchange.gather(header)
    batches = [int(p[0]) for p in parts]
    counts = [int(p[1]) for p in parts]
    if len(set(counts)) > 1:
        raise ValueError(
            f"Layer {layer}: the processes hold different channel counts {counts} (one per "
            "rank); every process must run the same model. Nothing was updated."
        )
    bad = [r for r, p in enumerate(parts) if p[2] > 0]
    if bad:
        raise ValueError(
            f"Layer {layer}: a training batch holds NaN or Inf on process(es) {bad} "
            "(check_numerics=True); nothing was updated."
        )
    if ghost:
        if any(p[3] > 0 for p in parts):
            raise ValueError(
                f"Layer {layer}: local batch sizes {batches} (one per rank) must all be "
                f"divisible by virtual_batch_size={virtual_batch_size}; nothing was updated."
            )
        if len(set(batches)) > 1:
            raise ValueError(
                f"Layer {layer}: with virtual_batch_size every process must hold the same "
                f"local batch size; received {batches} (one per rank). Nothing was updated."
            )
        if batches[0] == 0:
            raise ValueError(
                f"Layer {layer}: the global training batch is empty on all "
                f"{exchange.world} processes; batch statistics are undefined."
            )
    elif key is not None:
        _CHECKED.setdefault(key, set()).add(id(group))


def sync_train(
    x: torch.Tensor,
    axes: Sequence[int],
    ghost_dim: int | None,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    epsilon: float,
    group: Any,
    layer: str,
    weights: torch.Tensor | None = None,
    renorm: Any = None,
    adjustment: Any = None,
    check_numerics: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training pass with statistics over the process group (after
    ``check_batches``). ``x`` is the (ghost view of the) local input;
    gamma/beta/renorm in parameter layout; ``weights`` (a mask) and ``adjustment``
    broadcast against ``x``. Returns y and the global per-channel count, mean and
    biased variance (stat-shaped, per ghost batch)."""
    channel_dims = [*axes] if ghost_dim is None else [ghost_dim, *axes]
    x = _layout.dense(x)
    geo = _layout.Geometry.of(x, channel_dims, ghost_dim)
    plan = _layout.Plan(geo, epsilon, renorm, adjustment)
    lib = _layout.native_library(x, geo) if weights is None else None
    exchange = _Exchange(group, layer)
    y, n, mean, var = SyncTrainNorm.apply(
        x, gamma, beta, plan, lib, weights, exchange, check_numerics
    )
    return y, n, mean, var


class _GatherStats(torch.autograd.Function):
    """``all_gather`` of per-channel statistics as a traceable functional collective
    (the ``torch.compile`` path); its backward sums every process's gradient for this
    process's slot (one ``all_reduce``)."""

    @staticmethod
    def forward(ctx: Any, packed: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        return funcol.all_gather_tensor(packed, 0, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        total = funcol.all_reduce(grad.contiguous(), "sum", ctx.group)
        size = total.shape[0] // dist.get_world_size(ctx.group)
        start = dist.get_rank(ctx.group) * size
        return total[start : start + size], None


def gathered_moments(
    x: torch.Tensor, dims: Sequence[int], weights: torch.Tensor | None, group: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global per-channel count, mean and biased variance as differentiable torch
    operations around one traceable collective (what ``torch.compile`` fuses):

        N = Σ_r n_r,  μ = Σ_r n_r·μ_r / N,  σ² = (Σ_r M2_r + Σ_r n_r·(μ_r − μ)²) / N

    with every process's ``(n_r, μ_r, M2_r)`` computed in float64 around its own mean,
    so large means do not cancel. Results are float64, reduced dims kept."""
    n, mean, m2 = _count_moments(x, dims, weights)
    stat = mean.shape
    parts = _GatherStats.apply(torch.stack([n, mean, m2]).reshape(-1), group)
    parts = parts.reshape(-1, 3, *stat)
    n_r, mean_r, m2_r = parts[:, 0], parts[:, 1], parts[:, 2]
    total = n_r.sum(0)
    safe = torch.clamp(total, min=1)
    mean = (n_r * mean_r).sum(0) / safe
    var = (m2_r.sum(0) + (n_r * (mean_r - mean).square()).sum(0)) / safe
    return total, mean, var


class SyncTrainNorm(torch.autograd.Function):
    """Forward and backward with one collective each (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, plan, lib, weights, exchange, check_numerics):  # type: ignore[override]
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
        slope, intercept = _torch_passes.slope_intercept(plan, mean, var)
        inv = torch.rsqrt(var + plan.epsilon)
        g = plan.stat(gamma.detach()).double() if gamma is not None else 1.0
        b = plan.stat(beta.detach()).double() if beta is not None else 0.0
        scale, shift = inv * slope * g, intercept * g + b
        if lib is not None and scale.shape == geo.stat_shape and shift.shape == geo.stat_shape:
            pdt = _layout.PARAM_DTYPE[x.dtype]
            vec = [t.reshape(-1).to(pdt).contiguous() for t in (mean, scale, shift)]
            y = torch.empty_like(x)
            _layout.function(lib, "affine", x.dtype)(
                x.data_ptr(),
                y.data_ptr(),
                geo.native.dims,
                geo.native.strides,
                *(v.data_ptr() for v in vec),
                _native.threads(x.numel()),
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
    def backward(ctx: Any, dy, _dn, _dmean, _dvar):  # type: ignore[override]
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
            _layout.function(lib, "reduce", x.dtype)(
                dyc.data_ptr(),
                x.data_ptr(),
                geo.native.dims,
                geo.native.strides,
                mean_v.data_ptr(),
                sdy.data_ptr(),
                sdx.data_ptr(),
                _native.threads(x.numel()),
            )
            sdy, sdx = sdy.reshape(stat), sdx.reshape(stat)
            sdy_g, sdx_g = exchange.sum(torch.stack([sdy, sdx]))
            if ctx.needs_input_grad[0]:
                k = (sdy_g / safe, inv.square() * sdx_g / safe, inv * slope * g)
                vec = [t.reshape(-1).to(pdt).contiguous() for t in (mean, *k)]
                dx = torch.empty_like(x)
                _layout.function(lib, "dx", x.dtype)(
                    dyc.data_ptr(),
                    x.data_ptr(),
                    dx.data_ptr(),
                    geo.native.dims,
                    geo.native.strides,
                    *(v.data_ptr() for v in vec),
                    _native.threads(x.numel()),
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


def convert_sync_batchnorm(
    module: nn.Module, process_group: Any = None, torch_batchnorm: bool = False
) -> nn.Module:
    """Switch every ``BatchNormalization`` in ``module`` to synchronized statistics over
    ``process_group`` (in place; weights and statistics are kept). With
    ``torch_batchnorm=True`` every ``torch.nn.BatchNorm*`` is first replaced by the
    equivalent ``BatchNormalization`` (``batchnorm.from_torch``). Returns the module
    (the replacement itself when ``module`` is a batch-norm module)."""
    from .normalization import BatchNormalization

    if torch_batchnorm:
        from .interop import from_torch

        module = from_torch(module)
    for sub in module.modules():
        if isinstance(sub, BatchNormalization):
            sub.synchronized = True
            sub.process_group = process_group
    return module
