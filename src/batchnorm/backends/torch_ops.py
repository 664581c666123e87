"""The PyTorch-operations backend: always available, on every device and dtype.

Its passes are ``TorchTrainNorm``/``TorchAffineNorm`` (``_torch_passes``): the same
outputs and state as the C passes, as PyTorch operations. It is also the backend of
every traced call (``torch.compile``, ``torch.jit.trace``, ``torch.func``), where the
layer computes the composite formula directly, and the differentiable reference that
every backend's double backward differentiates.
"""

from __future__ import annotations

from typing import Any

import torch

from .._torch_passes import TorchAffineNorm, TorchTrainNorm
from .base import Backend

__all__ = ["TorchBackend"]

_FULL = (torch.float32, torch.float64)


class TorchBackend(Backend):
    """PyTorch operations (see the module docstring)."""

    name = "torch"
    traceable = True

    def supports(self, x: torch.Tensor, geo: Any) -> str | None:
        return None

    def train(
        self, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Any
    ) -> tuple[torch.Tensor, Any, bool]:
        geo = plan.geo
        xc = x if x.dtype in _FULL else x.float()  # 16-bit input: float32 math and output
        xc = xc if xc.shape == geo.shape else xc.reshape(geo.shape)
        g = None if gamma is None else plan.stat(gamma)
        b = None if beta is None else plan.stat(beta)
        y, state = TorchTrainNorm.apply(xc, g, b, plan)
        mean, var = state[0], state[1]
        if geo.ghost_dim is not None:
            mean, var = mean.mean(dim=geo.ghost_dim), var.mean(dim=geo.ghost_dim)
        return y, (mean.reshape(-1), var.reshape(-1)), False

    def infer(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        mean: torch.Tensor,
        var: torch.Tensor,
        plan: Any,
    ) -> torch.Tensor:
        xc = x if x.dtype in _FULL else x.float()
        stat = [None if t is None else plan.stat(t) for t in (gamma, beta, mean, var)]
        return TorchAffineNorm.apply(xc, *stat, plan)
