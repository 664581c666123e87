"""Weight constraints with TensorFlow/Keras names and formulas.

A constraint maps a weight to a same-shaped projected value; it runs after an
optimizer step (``Layer.apply_constraints()``, or automatically with
``batchnorm.apply_constraints_on_step(optimizer, model)``). With
``n = √(Σ_axis w²)`` and ``ε = 1e-7``:

- ``MaxNorm(max_value=2, axis=0)``: ``w · clip(n, 0, max_value) / (ε + n)``
- ``NonNeg()``: ``w · (w ≥ 0)``
- ``UnitNorm(axis=0)``: ``w / (ε + n)``
- ``MinMaxNorm(min_value=0, max_value=1, rate=1, axis=0)``:
  ``w · (rate·clip(n, min, max) + (1 − rate)·n) / (ε + n)``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._utils import lookup, serialize

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "get", "serialize"]

EPSILON = 1e-7  # Keras' backend.epsilon()

Axis = int | Sequence[int]


def _norms(w: torch.Tensor, axis: Axis) -> torch.Tensor:
    dims = [axis] if isinstance(axis, int) else list(axis)
    return w.square().sum(dim=dims, keepdim=True).sqrt()


class Constraint:
    """Base class: ``__call__(w) -> projected w`` and ``get_config()``."""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Constraint:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MaxNorm(Constraint):
    """Rescale so that the norm along ``axis`` is at most ``max_value``."""

    def __init__(self, max_value: float = 2, axis: Axis = 0) -> None:
        self.max_value = max_value
        self.axis = axis

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        norms = _norms(w, self.axis)
        desired = norms.clamp(0, self.max_value)
        return w * (desired / (EPSILON + norms))

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Zero out negative entries."""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w * (w >= 0).to(w.dtype)


class UnitNorm(Constraint):
    """Rescale to unit norm along ``axis``."""

    def __init__(self, axis: Axis = 0) -> None:
        self.axis = axis

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w / (EPSILON + _norms(w, self.axis))

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Move the norm along ``axis`` toward ``[min_value, max_value]`` at ``rate``."""

    def __init__(
        self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis: Axis = 0
    ) -> None:
        self.min_value = min_value
        self.max_value = max_value
        self.rate = rate
        self.axis = axis

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        norms = _norms(w, self.axis)
        desired = self.rate * norms.clamp(self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (EPSILON + norms))

    def get_config(self) -> dict[str, Any]:
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "rate": self.rate,
            "axis": self.axis,
        }


_REGISTRY: dict[str, type] = {
    "max_norm": MaxNorm,
    "non_neg": NonNeg,
    "unit_norm": UnitNorm,
    "min_max_norm": MinMaxNorm,
}


def get(identifier: Any, argument: str | None = None) -> Callable[..., torch.Tensor] | None:
    """Resolve a constraint from a name, config dict, instance or callable (None stays None)."""
    return lookup("constraint", identifier, _REGISTRY, Constraint, argument)
