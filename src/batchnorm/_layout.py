"""How a tensor meets the C kernels: dtypes, the canonical 5-D view, the plan of a pass.

``Geometry`` maps an input's shape and strides to per-channel statistics and, when the
memory allows, to the kernels' view [A, G, M, C, I] (reduce A, M, I; channel
k = g·C + c); ``ghost_layout`` gives the strides of the ghost-batch view without making
it; ``Plan`` carries what a pass needs besides the tensors.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import _native

SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}
PARAM_DTYPE = {  # the parameters' and statistics' dtype for each input dtype
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    torch.bfloat16: torch.float32,
    torch.float16: torch.float32,
}
_I64x5 = ctypes.c_int64 * 5
TRACED = (
    "torch.compile, torch.jit.trace or torch.func is running, which see PyTorch operations only"
)


def addr(t: torch.Tensor | None) -> int | None:
    """The data pointer of ``t`` (None for None), as the kernels take it."""
    return None if t is None else t.data_ptr()


# ---------------------------------------------------------------------- geometry
@dataclass
class NativeView:
    """The C kernels' 5-D view: sizes and element strides of [A, G, M, C, I]."""

    dims: Any
    strides: Any


class Geometry:
    """How an input maps to per-channel statistics.

    ``channel_dims`` are the dimensions statistics are kept for (the layer's
    axes, plus the ghost-group dimension of a ghost view, which must come
    first). ``stat_shape`` is the input shape with every other dimension 1;
    ``params`` is the number of parameter entries (the axes' sizes multiplied).
    ``native`` is set when the C kernels can walk the tensor with channel index
    ``k = ghost·params + p`` and ``p`` in the parameters' own (row-major) order.
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
            n for d, n in enumerate(shape) if d in self.channel_dims and d != ghost_dim
        )
        self.count = math.prod(shape) // max(1, self.channels)
        self.native = _canonical(shape, stride, self.channel_dims, ghost_dim)

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
    return _ghost_layout(tuple(x.shape), tuple(x.stride()), virtual_batch_size, grouping)


@functools.lru_cache(maxsize=256)
def _ghost_layout(
    shape: tuple[int, ...], stride: tuple[int, ...], vbs: int, grouping: str
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    groups = shape[0] // vbs
    if grouping == "strided":
        return (vbs, groups, *shape[1:]), (groups * stride[0], stride[0], *stride[1:]), 1
    return (groups, vbs, *shape[1:]), (vbs * stride[0], stride[0], *stride[1:]), 0


def _canonical(
    shape: Sequence[int],
    stride: Sequence[int],
    channel_dims: Sequence[int],
    ghost_dim: int | None,
) -> NativeView | None:
    """Describe a tensor as the kernels' 5-D view [A, G, M, C, I] (reduce A, M, I).

    Dimensions are ordered by stride, merged where memory allows, and matched
    from the innermost outward to the slot pattern R Ch R Ch R. Returns None
    when the layout does not fit, when channels would not come out in the
    parameters' order (ghost first, then the axes ascending), or when the
    tensor is empty; PyTorch operations handle those.
    """
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
    dims = [slot[0] if slot else 1 for slot in slots]
    strides = [slot[1] if slot else 0 for slot in slots]
    return NativeView(_I64x5(*dims), _I64x5(*strides))


@functools.lru_cache(maxsize=64)
def function(lib: Any, name: str, dtype: torch.dtype) -> Any:
    return getattr(lib, f"bn_{name}_{SUFFIX[dtype]}")


def native_library(x: torch.Tensor, geo: Geometry) -> Any:
    """The C library when it can run this input, else None."""
    if geo.native is None or x.dtype not in SUFFIX or x.device.type != "cpu":
        return None
    return _native.library()


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its memory is dense and non-overlapping, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return x
    return x if torch.empty_like(x).stride() == x.stride() else x.contiguous()


def like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly ``x``'s strides (what the C kernels expect of ``dy``)."""
    if t.stride() == x.stride():
        return t
    return torch.empty_like(x).copy_(t)


# ---------------------------------------------------------------------- the plan
@dataclass(slots=True)
class Plan:
    """Everything a pass needs besides the tensors.

    ``renorm`` is (renorm_mean, renorm_stddev, clipping) and ``adjustment`` is
    (a_s, a_b); both hold one value per parameter entry, in parameter layout.
    """

    geo: Geometry
    epsilon: float
    renorm: tuple[torch.Tensor, torch.Tensor, Mapping[str, Any]] | None = None
    adjustment: tuple[torch.Tensor, torch.Tensor] | None = None
    lib: Any = None
    moving: Any = None  # functional.MovingStatistics the C pass updates in place

    def fn(self, name: str, dtype: torch.dtype) -> Any:
        return function(self.lib, name, dtype)

    def stat(self, t: torch.Tensor) -> torch.Tensor:
        """A per-parameter tensor as a view that broadcasts against the input."""
        view = [1 if d == self.geo.ghost_dim else n for d, n in enumerate(self.geo.stat_shape)]
        return t.reshape(view)


def in_place(tensors: Sequence[torch.Tensor | None], dtype: torch.dtype) -> bool:
    """Whether the C passes can read and write these tensors (None: absent) through their
    data pointers as they are: ``dtype``, on the CPU, contiguous."""
    for t in tensors:
        if t is not None and (t.dtype != dtype or not t.is_cpu or not t.is_contiguous()):
            return False
    return True


def vector(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t`` as a contiguous tensor of ``dtype`` (itself when it already is one)."""
    if t is None or (t.dtype == dtype and t.is_contiguous()):
        return t
    return t.to(dtype).contiguous()
