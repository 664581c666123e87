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
exchange, so every process raises together. A failed collective raises a
``RuntimeError`` naming the layer that says whether the process group failed (a peer
process died or exited, a connection was closed or reset, the group's timeout passed)
or the processes called the layer differently, and leaves every variable
unchanged. Inference and ``synchronized=False`` never touch the process group;
without an initialized group ``synchronized=True`` computes locally (with a
one-time warning).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

from . import _layout, backends
from ._sync_norm import SyncTrainNorm, count_moments

__all__ = ["active_group", "check_batches", "sync_train"]

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


# How torch's backends word a failure of the process group itself, lower case: gloo
# ("Connection closed by peer", "Read error ...: Connection reset by peer", "Timed out
# waiting 3000ms for recv operation to complete", "Application timeout caused pair
# closure"), NCCL ("remote process exited or there was a network error", "Watchdog caught
# collective operation timeout", "NCCL communicator was aborted") and the TCP store.
_TIMEOUT_MARKERS = ("timed out", "timeout")
_PEER_LOST_MARKERS = (
    "closed by peer",
    "reset by peer",
    "connection closed",
    "connection reset",
    "connection refused",
    "broken pipe",
    "remote process exited",
    "network error",
    "ncclremoteerror",
    "communicator was aborted",
)


def _group_failure(exc: BaseException) -> str | None:
    """What a failed collective says about the process group: a sentence when the group
    itself failed (a peer process died or exited, a connection was closed or reset, the
    group's timeout passed), None for anything else (such as mismatched calls)."""
    text = str(exc).lower()
    if any(m in text for m in _TIMEOUT_MARKERS):
        return (
            "a peer process of the group failed, exited or did not reach this exchange "
            "within the process group's timeout"
        )
    if isinstance(exc, dist.DistNetworkError) or any(m in text for m in _PEER_LOST_MARKERS):
        return "a peer process of the group failed or exited (its connection was lost)"
    return None


class _Exchange:
    """The collectives of one layer call, with errors that name the layer and say whether
    the process group failed (a peer died, a connection closed, a timeout) or the processes
    called the layer differently."""

    def __init__(self, group: Any, layer: str) -> None:
        self.group = group
        self.layer = layer
        self.world = dist.get_world_size(group)

    def _fail(self, what: str, exc: BaseException, kept: str) -> RuntimeError:
        failed = f"Layer {self.layer}: {what} across {self.world} processes failed"
        cause = _group_failure(exc)
        if cause is not None:
            return RuntimeError(f"{failed}: {cause} ({exc}); {kept}.")
        return RuntimeError(
            f"{failed} ({exc}). Every process must call the layer in training with the same "
            f"channels; {kept}."
        )

    def gather(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Every process's ``packed`` (same size everywhere), in rank order."""
        parts = [torch.empty_like(packed) for _ in range(self.world)]
        try:
            dist.all_gather(parts, packed.contiguous(), group=self.group)
        except Exception as exc:
            raise self._fail("exchanging batch statistics", exc, "no variable was changed") from exc
        return parts

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the processes (a new contiguous tensor or ``tensor``
        itself when already contiguous, summed in place)."""
        tensor = tensor.contiguous()
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        except Exception as exc:
            raise self._fail(
                "summing gradient statistics", exc, "no gradient was computed"
            ) from exc
        return tensor


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
    backend = backends.select(x, geo) if weights is None else None  # a mask: the composite
    exchange = _Exchange(group, layer)
    y, n, mean, var = SyncTrainNorm.apply(
        x, gamma, beta, plan, backend, weights, exchange, check_numerics
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
    n, mean, m2 = count_moments(x, dims, weights)
    stat = mean.shape
    parts = _GatherStats.apply(torch.stack([n, mean, m2]).reshape(-1), group)
    parts = parts.reshape(-1, 3, *stat)
    n_r, mean_r, m2_r = parts[:, 0], parts[:, 1], parts[:, 2]
    total = n_r.sum(0)
    safe = torch.clamp(total, min=1)
    mean = (n_r * mean_r).sum(0) / safe
    var = (m2_r.sum(0) + (n_r * (mean_r - mean).square()).sum(0)) / safe
    return total, mean, var
