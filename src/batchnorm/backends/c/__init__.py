"""The C backend: the C kernels (``_kernels.c``) through ctypes, their optional C++
autograd nodes (``_autograd.cpp``), and the layer's per-layout short call.

It takes dense CPU tensors of float32, float64, float16 and bfloat16 (16-bit with
float32 parameters) whose memory fits the kernels' 5-D view [A, G, M, C, I], once the
library is built (``BATCHNORM_NATIVE=0`` or a missing compiler: unavailable, and
``select`` moves on to PyTorch operations).
"""

from __future__ import annotations

from typing import Any

import torch

from ... import _fused, _native
from ..._layout import PARAM_DTYPE, SUFFIX
from ..base import Backend

__all__ = ["CBackend"]


class CBackend(Backend):
    """The C kernels (see the module docstring)."""

    name = "c"

    def unavailable(self) -> str | None:
        return None if _native.library() is not None else _native.status()

    def supports(self, x: torch.Tensor, geo: Any) -> str | None:
        if x.device.type != "cpu":
            return f"it takes CPU tensors, not {x.device.type} ones"
        if x.dtype not in SUFFIX:
            return f"it takes float32, float64, float16 and bfloat16 tensors, not {x.dtype}"
        if geo.native is None:
            return (
                "the input's memory does not fit the kernels' 5-D view (empty, or channels "
                "out of the parameters' order)"
            )
        return None

    def train(
        self, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Any
    ) -> tuple[torch.Tensor, Any, bool]:
        plan.lib = _native.library()
        if plan.moving is not None and not _fused.writable(plan.moving, PARAM_DTYPE[x.dtype]):
            plan.moving = None  # (updated by the caller, from the returned statistics)
        y, state = _fused.train_native(x, gamma, beta, plan)
        return y, state, plan.moving is not None

    def infer(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        mean: torch.Tensor,
        var: torch.Tensor,
        plan: Any,
    ) -> torch.Tensor:
        lib = _native.library()
        return _fused.infer_native(x, gamma, beta, mean, var, plan.geo, lib, plan.epsilon)
