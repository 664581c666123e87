"""The description of the work every backend sees: how an input maps to per-channel
statistics, and the plan of a pass.

``Geometry`` maps an input's shape and strides (of a ghost-batch view, when there is
one) to per-channel statistics; ``ghost_layout`` gives the strides of the ghost-batch
view without making it; ``Plan`` carries what a pass needs besides the tensors;
``parameter_layout`` says whether an adjustment is per channel.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

PARAM_DTYPE = {  # the parameters' and statistics' dtype for each input dtype
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    torch.bfloat16: torch.float32,
    torch.float16: torch.float32,
}
TRACED = (
    "torch.compile, torch.jit.trace or torch.func is running, which see PyTorch operations only"
)


# ---------------------------------------------------------------------- geometry
class Geometry:
    """How an input maps to per-channel statistics.

    ``channel_dims`` are the dimensions statistics are kept for (the layer's
    axes, plus the ghost-group dimension of a ghost view, which must come
    first). ``stat_shape`` is the input shape with every other dimension 1;
    ``params`` is the number of parameter entries (the axes' sizes multiplied).
    Geometries are cached per (shape, strides, channel dims, ghost dim): a backend may
    key what it derives from one (the C kernels' view) on the object.
    """

    def __init__(
        self,
        shape: Sequence[int],
        stride: Sequence[int],
        channel_dims: Sequence[int],
        ghost_dim: int | None,
    ) -> None:
        self.shape = tuple(shape)
        self.ghost_dim = ghost_dim
        self.channel_dims = sorted(channel_dims)
        self.reduce_dims = [d for d in range(len(shape)) if d not in self.channel_dims]
        self.stat_shape = tuple(n if d in self.channel_dims else 1 for d, n in enumerate(shape))
        self.channels = math.prod(self.stat_shape)
        self.params = math.prod(
            [n for d, n in enumerate(shape) if d in self.channel_dims and d != ghost_dim]
        )
        self.count = math.prod(shape) // max(1, self.channels)
        self.stride = tuple(stride)

    @staticmethod
    def of(x: torch.Tensor, channel_dims: Sequence[int], ghost_dim: int | None = None) -> Geometry:
        """The (cached) geometry of ``x``'s shape and strides."""
        return geometry(tuple(x.shape), tuple(x.stride()), tuple(channel_dims), ghost_dim)


@functools.lru_cache(maxsize=256)
def geometry(
    shape: tuple[int, ...], stride: tuple[int, ...], dims: tuple[int, ...], ghost: int | None
) -> Geometry:
    return Geometry(shape, stride, dims, ghost)


def ghost_layout(
    x: torch.Tensor, virtual_batch_size: int, grouping: str
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Shape, strides and ghost dimension of ``functional.ghost_batches(x, …)``'s view,
    without making it: splitting the batch dimension (stride s) into (vbs, G) gives
    strides (G·s, s) for TF's strided grouping, into (G, vbs) gives (vbs·s, s)."""
    return ghost_layout_of(tuple(x.shape), tuple(x.stride()), virtual_batch_size, grouping)


@functools.lru_cache(maxsize=256)
def ghost_layout_of(
    shape: tuple[int, ...], stride: tuple[int, ...], vbs: int, grouping: str
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    groups = shape[0] // vbs
    if grouping == "strided":
        return (vbs, groups, *shape[1:]), (groups * stride[0], stride[0], *stride[1:]), 1
    return (groups, vbs, *shape[1:]), (vbs * stride[0], stride[0], *stride[1:]), 0


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its memory is dense and non-overlapping, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return x
    return x if torch.empty_like(x).stride() == x.stride() else x.contiguous()


def like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly ``x``'s strides (what the kernels, which read ``dy`` through
    ``x``'s view, expect of it)."""
    if t.stride() == x.stride():
        return t
    return torch.empty_like(x).copy_(t)


# ---------------------------------------------------------------------- the kernels' view
@functools.lru_cache(maxsize=256)
def canonical(geo: Geometry) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The kernels' 5-D view of a (cached) geometry: sizes and element strides of
    [A, G, M, C, I], reducing A, M and I, with channel ``k = g·C + c`` in the
    parameters' order (the C and Triton kernels both walk it); None when the memory
    does not fit it."""
    return _canonical(geo.shape, geo.stride, geo.channel_dims, geo.ghost_dim)


def _canonical(
    shape: Sequence[int],
    stride: Sequence[int],
    channel_dims: Sequence[int],
    ghost_dim: int | None,
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Describe a tensor as the kernels' 5-D view [A, G, M, C, I] (reduce A, M, I).

    Dimensions are ordered by stride, merged where memory allows, and matched
    from the innermost outward to the slot pattern R Ch R Ch R. Returns None
    when the layout does not fit, when channels would not come out in the
    parameters' order (ghost first, then the axes ascending), or when the
    tensor is empty (the backends refuse those).
    """
    slots = _slots(tuple(shape), tuple(stride), tuple(channel_dims), ghost_dim)
    if slots is None:
        return None
    dims = [slot[0] if slot else 1 for slot in slots]
    strides = [slot[1] if slot else 0 for slot in slots]
    return tuple(dims), tuple(strides)


@functools.lru_cache(maxsize=256)
def _slots(
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    channel_dims: tuple[int, ...],
    ghost_dim: int | None,
) -> tuple[tuple[int, int, bool, tuple[int, ...]] | None, ...] | None:
    """The 5-D view's slots (size, stride, whether channels, the merged dimensions from
    the outermost in), or None (see ``_canonical``)."""
    if 0 in shape:
        return None
    entries = sorted(
        (
            (n, s, d in channel_dims, [d])
            for d, (n, s) in enumerate(zip(shape, stride, strict=True))
            if n > 1
        ),
        key=lambda e: -e[1],
    )
    groups: list[list[Any]] = []
    for n, s, is_channel, dims in entries:
        last = groups[-1] if groups else None
        if last is not None and last[2] == is_channel and last[1] == s * n:
            last[0], last[1], last[3] = last[0] * n, s, last[3] + dims
        else:
            groups.append([n, s, is_channel, dims])
    slots: list[list[Any] | None] = [None] * 5  # A G M C I
    roles = [False, True, False, True, False]
    j = 4
    for group in reversed(groups):
        while j >= 0 and roles[j] != group[2]:
            j -= 1
        if j < 0:
            return None
        slots[j] = group
        j -= 1
    order = (slots[1][3] if slots[1] else []) + (slots[3][3] if slots[3] else [])
    wanted = [d for d in sorted(channel_dims) if d != ghost_dim and shape[d] > 1]
    if ghost_dim is not None and shape[ghost_dim] > 1:
        wanted = [ghost_dim, *wanted]
    if order != wanted:
        return None
    return tuple(None if s is None else (s[0], s[1], s[2], tuple(s[3])) for s in slots)


def canonical_strides(geo: Geometry, stride: Sequence[int]) -> tuple[int, ...] | None:
    """The 5-D strides, in ``canonical(geo)``'s slots, of another tensor of ``geo``'s shape
    whose strides are ``stride`` (a mask's weights broadcast against the input: zero
    strides on the channel dimensions), or None when its memory does not merge the
    dimensions the way the input's does (then it needs the input's strides)."""
    slots = _slots(geo.shape, geo.stride, tuple(geo.channel_dims), geo.ghost_dim)
    if slots is None:
        return None
    out = []
    for slot in slots:
        if slot is None:
            out.append(0)
            continue
        dims = slot[3]
        for outer, inner in itertools.pairwise(dims):  # merged from the outermost in
            if stride[outer] != stride[inner] * geo.shape[inner]:
                return None
        out.append(stride[dims[-1]])
    return tuple(out)


# ---------------------------------------------------------------------- the plan
@dataclass(slots=True)
class Plan:
    """Everything a pass needs besides the tensors.

    ``renorm`` is (renorm_mean, renorm_stddev, clipping) and ``adjustment`` is
    (a_s, a_b); both hold one value per parameter entry, in parameter layout.
    ``weights`` (a backend with ``weighted`` set) are a mask's per-element weights
    ``w`` broadcast to the geometry's shape: the moments become ``μ = Σwx/Σw``,
    ``σ² = Σw(x − μ)²/Σw`` (0 where ``Σw = 0``).
    """

    geo: Geometry
    epsilon: float
    renorm: tuple[torch.Tensor, torch.Tensor, Mapping[str, Any]] | None = None
    adjustment: tuple[torch.Tensor, torch.Tensor] | None = None
    lib: Any = None  # the backend's handle (the C library)
    moving: Any = None  # functional.MovingStatistics the C pass updates in place
    weights: torch.Tensor | None = None  # a mask's weights in ``geo.shape`` (a weighted pass)

    def stat(self, t: torch.Tensor) -> torch.Tensor:
        """A per-parameter tensor as a view that broadcasts against the input."""
        view = [1 if d == self.geo.ghost_dim else n for d, n in enumerate(self.geo.stat_shape)]
        return t.reshape(view)


# ---------------------------------------------------------------------- adjustments
def parameter_layout(
    adjustment: tuple[torch.Tensor, torch.Tensor], shape: Sequence[int], axes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The adjustment's (scale, bias) as values in parameter order (one per entry of the
    ``axes`` of ``shape``), or None when one varies over a reduced dimension or needs a
    gradient (the composite path handles those). A tensor whose sizes other than 1 all
    lie on ``axes`` already holds them in that order when it has one value per entry."""
    out = []
    for a in adjustment:
        if a.requires_grad:
            return None
        fits, expand = _per_channel(a.shape, tuple(shape), tuple(axes))
        if not fits:
            return None
        out.append(a if expand is None else torch.broadcast_to(a, expand))
    return out[0], out[1]


@functools.lru_cache(maxsize=256)  # asked on every call of a layer with an adjustment
def _per_channel(
    a_shape: tuple[int, ...], shape: tuple[int, ...], axes: tuple[int, ...]
) -> tuple[bool, list[int] | None]:
    """Whether an adjustment of ``a_shape`` varies only over ``axes`` of ``shape``, and the
    shape to broadcast it to when it does not hold one value per parameter entry."""
    offset = len(shape) - len(a_shape)
    if any(n != 1 and offset + i not in axes for i, n in enumerate(a_shape)):
        return False, None
    if math.prod(a_shape) == math.prod(shape[a] for a in axes):
        return True, None
    return True, [n if d in axes else 1 for d, n in enumerate(shape)]
