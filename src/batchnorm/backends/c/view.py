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

from ..._layout import canonical

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
    view = canonical(geo)
    return None if view is None else NativeView(_I64x5(*view[0]), _I64x5(*view[1]))


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
