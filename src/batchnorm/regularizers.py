"""Weight regularizers with TensorFlow/Keras names and formulas.

A regularizer maps a weight tensor to a scalar penalty, differentiable with
respect to the weight:

- ``L1(l1)``: ``l1 · Σ|w|``
- ``L2(l2)``: ``l2 · Σw²`` (no factor ½, as in Keras)
- ``L1L2(l1, l2)``: the sum of both

Names for ``get``: ``'l1'``, ``'l2'`` (factor 0.01) and ``'l1_l2'`` (0.01 each).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._utils import lookup, serialize

__all__ = ["L1", "L1L2", "L2", "Regularizer", "get", "l1_l2", "serialize"]


def _check_factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Regularizer factor `{name}` must be a number; received {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Regularizer factor `{name}` must be finite and >= 0; received {value!r}."
        )
    return float(value)


class Regularizer:
    """Base class: ``__call__(weight) -> scalar tensor`` and ``get_config()``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Regularizer:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """``l1 · Σ|w| + l2 · Σw²``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _check_factor("l1", l1)
        self.l2 = _check_factor("l2", l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        penalty = x.new_zeros(())
        if self.l1:
            penalty = penalty + self.l1 * x.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * x.square().sum()
        return penalty

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """``l1 · Σ|w|``."""

    def __init__(self, l1: float = 0.01) -> None:
        self.l1 = _check_factor("l1", l1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1 * x.abs().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 · Σw²``."""

    def __init__(self, l2: float = 0.01) -> None:
        self.l2 = _check_factor("l2", l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2 * x.square().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """``L1L2`` with Keras' shortcut defaults (0.01 each)."""
    return L1L2(l1=l1, l2=l2)


_REGISTRY: dict[str, Callable[..., Any]] = {
    "l1": L1,
    "l2": L2,
    "l1_l2": l1_l2,
    "L1": L1,
    "L2": L2,
    "L1L2": L1L2,
}


def get(identifier: Any, argument: str | None = None) -> Callable[..., torch.Tensor] | None:
    """Resolve a regularizer from a name, config dict, instance or callable (None stays None)."""
    return lookup("regularizer", identifier, _REGISTRY, Regularizer, argument)
