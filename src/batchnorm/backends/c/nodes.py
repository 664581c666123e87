"""What the C backend's training and inference passes share: whether a pass is
recorded, the C++ module's use (its nodes and its description of a layout's kernels),
the context a pass runs with when autograd records nothing, and gradient buffers."""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

import torch

from ..._layout import PARAM_DTYPE as _PARAM_DTYPE
from ..._layout import Geometry
from ..._math import wants_grad
from . import cxx
from .view import function, native

__all__ = [
    "NO_GRAD",
    "Wanted",
    "cxx_kernels",
    "cxx_nodes",
    "kept",
    "needs_grad",
    "param_grad",
    "restrided",
]


def kept(geo: Geometry, pdt: torch.dtype) -> int:
    """float64 words of per-channel state (mean and 1/√(σ² + ε) in the compute type)
    that a backward reads."""
    return geo.channels * (1 if pdt == torch.float32 else 2)


class Wanted:
    """The ``needs_input_grad`` of a C++ node's inputs, for ``composite_backward``."""

    __slots__ = ("needs_input_grad",)

    def __init__(self, wanted: tuple[bool, ...]) -> None:
        self.needs_input_grad = wanted


def cxx_nodes() -> Any:
    """The C++ nodes' module when it is loaded and may record this pass, else None: not
    under functorch transforms, and not when compiled autograd is on or configured (it
    traces Python nodes only). A backward that enables compiled autograd after a
    forward recorded a C++ node fails: set ``BATCHNORM_CPP=0`` for that."""
    module = cxx.module()
    if module is None or torch._C._are_functorch_transforms_active():
        return None
    compiled = sys.modules.get("torch._dynamo.compiled_autograd")
    if compiled is None:
        return module
    config = sys.modules.get("torch._dynamo.config")
    if getattr(compiled, "compiled_autograd_enabled", False) or getattr(
        config, "compiled_autograd", False
    ):
        return None
    return module


@functools.lru_cache(maxsize=256)
def cxx_kernels(module: Any, geo: Geometry, lib: Any, dtype: torch.dtype, kind: str) -> Any:
    """The C++ module's description of one layout's ``kind`` ("train" or "infer")
    passes (made once per layout)."""
    pdt = _PARAM_DTYPE[dtype]
    return module.Kernels(
        ctypes.cast(function(lib, f"{kind}_forward", dtype), ctypes.c_void_p).value,
        ctypes.cast(function(lib, f"{kind}_backward", dtype), ctypes.c_void_p).value,
        list(native(geo).dims),
        list(native(geo).strides),
        geo.params,
        kept(geo, pdt),
        pdt == torch.float64,
    )


def restrided(x: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """A saved x with its forward strides, which the kernels' view assumes (a
    saved-tensor hook may have returned another layout)."""
    if x.stride() == stride:
        return x
    return torch.empty_strided(x.shape, stride, dtype=x.dtype).copy_(x)


def param_grad(
    ctx: Any, index: int, param: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """An output buffer for a parameter's gradient, when one is wanted."""
    if not wants_grad(ctx, index, param):
        return None
    return torch.empty_like(param, dtype=dtype, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------- entry points
def needs_grad(x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None) -> bool:
    """Whether autograd records this call: grad mode on and some input requires grad."""
    return torch.is_grad_enabled() and (
        x.requires_grad
        or (gamma is not None and gamma.requires_grad)
        or (beta is not None and beta.requires_grad)
    )


class _NoGradContext:
    """Stands in for an autograd context when a pass runs without a graph."""

    @staticmethod
    def save_for_backward(*tensors: Any) -> None:
        pass

    @staticmethod
    def mark_non_differentiable(*tensors: Any) -> None:
        pass

    @staticmethod
    def set_materialize_grads(value: bool) -> None:
        pass


NO_GRAD = _NoGradContext()
