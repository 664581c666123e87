"""The C backend: the C kernels (``kernels.c``) through ctypes, their optional C++
autograd nodes (``autograd.cpp``), and the layer's per-layout short call.

- ``build``: compiling and loading the kernel library, the argument table of its exports;
- ``view``: which tensors the kernels take;
- ``passes`` and ``infer``: the training and the inference pass as autograd Functions
  (Python nodes) and through the C++ nodes, sharing ``nodes``;
- ``pieces``: the kernels' separate passes that synchronized statistics combine;
- ``cxx``: building and loading the C++ nodes in the background;
- ``shortcut``: the layer's per-layout short call (``SHORT``), a cache of ``select``'s
  choice of this backend for one input layout.

It takes dense CPU tensors of float32, float64, float16 and bfloat16 (16-bit with
float32 parameters) whose memory fits the kernels' 5-D view [A, G, M, C, I], once the
library is built (``BATCHNORM_NATIVE=0`` or a missing compiler: unavailable, and
``select`` moves on to PyTorch operations).
"""

from __future__ import annotations

from typing import Any

import torch

from ..._layout import PARAM_DTYPE
from ..base import SHORT, Backend
from . import build, cxx, infer, passes, pieces, shortcut
from .view import takes

__all__ = ["CBackend"]

SHORT.call = shortcut.call  # the layer's short call is this backend's


def _configure(module: Any) -> None:
    """The C++ nodes' double backward: the Python composite formulas' gradients."""
    module.set_double_backward(passes.double_backward, infer.infer_double_backward)


cxx.on_load(_configure)


class CBackend(Backend):
    """The C kernels (see the module docstring)."""

    name = "c"
    takes = (
        "CPU tensors of float32, float64, float16 and bfloat16 whose memory fits its 5-D "
        "view; masks and per-example adjustments run the composite formula"
    )

    def unavailable(self) -> str | None:
        return None if build.library() is not None else build.status()

    def supports(self, x: torch.Tensor, geo: Any) -> str | None:
        return takes(x, geo)

    def train(
        self, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Any
    ) -> tuple[torch.Tensor, Any, bool]:
        plan.lib = build.library()
        if plan.moving is not None and not passes.writable(plan.moving, PARAM_DTYPE[x.dtype]):
            plan.moving = None  # (updated by the caller, from the returned statistics)
        y, state = passes.train_native(x, gamma, beta, plan)
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
        lib = build.library()
        return infer.infer_native(x, gamma, beta, mean, var, plan.geo, lib, plan.epsilon)

    # ------------------------------------------------------------------ pieces
    def moments(self, x: torch.Tensor, geo: Any) -> tuple[torch.Tensor, ...]:
        return pieces.moments(x, geo)

    def normalize(
        self,
        x: torch.Tensor,
        mean: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        geo: Any,
    ) -> torch.Tensor:
        return pieces.normalize(x, mean, scale, shift, geo)

    def grad_sums(
        self, dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, geo: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return pieces.grad_sums(dy, x, mean, geo)

    def input_grad(
        self,
        dy: torch.Tensor,
        x: torch.Tensor,
        mean: torch.Tensor,
        k: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        geo: Any,
    ) -> torch.Tensor:
        return pieces.dx(dy, x, mean, k, geo)
