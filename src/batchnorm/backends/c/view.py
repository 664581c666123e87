"""How a tensor meets the C kernels: which tensors they take (dense CPU tensors of
float32, float64, float16 and bfloat16 whose memory fits their 5-D view), the view
itself ([A, G, M, C, I]: reduce A, M, I; channel k = g·C + c, in the parameters'
order), the exported function of a pass for a dtype, and the pointer helpers."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SUFFIX", "NativeView", "addr", "function", "in_place", "native", "takes", "vector"]

SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}
_I64x5 = ctypes.c_int64 * 5


def addr(t: torch.Tensor | None) -> int | None:
    """The data pointer of ``t`` (None for None), as the kernels take it."""
    return None if t is None else t.data_ptr()


@dataclass
class NativeView:
    """The C kernels' 5-D view: sizes and element strides of [A, G, M, C, I]."""

    dims: Any
    strides: Any


@functools.lru_cache(maxsize=256)
def native(geo: Any) -> NativeView | None:
    """The kernels' view of a (cached) geometry, None when its memory does not fit it."""
    return _canonical(geo.shape, geo.stride, geo.channel_dims, geo.ghost_dim)


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


def takes(x: torch.Tensor, geo: Any) -> str | None:
    """Why the C kernels cannot take ``x`` laid out as ``geo`` (None: they can)."""
    if x.device.type != "cpu":
        return f"it takes CPU tensors, not {x.device.type} ones"
    if x.dtype not in SUFFIX:
        return f"it takes float32, float64, float16 and bfloat16 tensors, not {x.dtype}"
    if native(geo) is None:
        return (
            "the input's memory does not fit the kernels' 5-D view (empty, or channels out "
            "of the parameters' order)"
        )
    return None
