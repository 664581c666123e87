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
- ``RadialConstraint()``: each square ``(h, h)`` filter of a 4-D ``(h, h, in, out)``
  kernel becomes constant on each ring around its centre, taking values from its diagonal
  exactly as tf_keras does (see the class)

``max_norm``, ``non_neg``, ``unit_norm``, ``min_max_norm`` and ``radial_constraint`` are
aliases of the classes, as in ``tf_keras.constraints``. ``get`` also takes a
tf_keras/Keras constraint object and rebuilds ours from its ``get_config()``.

Differences from ``tf_keras.constraints``: ``NonNeg`` keeps the weight's dtype (Keras
casts the mask to float32); ``RadialConstraint`` raises ValueError for a non-square or
1×1 filter (TensorFlow fails inside a reshape); ``get`` instantiates a class it is given
(Keras returns the class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import _keras_objects

__all__ = [
    "Constraint",
    "MaxNorm",
    "MinMaxNorm",
    "NonNeg",
    "RadialConstraint",
    "UnitNorm",
    "deserialize",
    "get",
    "max_norm",
    "min_max_norm",
    "non_neg",
    "radial_constraint",
    "serialize",
    "unit_norm",
]

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
    """``w · clip(n, 0, max_value) / (ε + n)``: the norm along ``axis`` at most ``max_value``."""

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
    """``w · (w ≥ 0)``: zero out negative entries."""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w * (w >= 0).to(w.dtype)


class UnitNorm(Constraint):
    """``w / (ε + n)``: unit norm along ``axis``."""

    def __init__(self, axis: Axis = 0) -> None:
        self.axis = axis

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w / (EPSILON + _norms(w, self.axis))

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """``w · (rate·clip(n, min_value, max_value) + (1 − rate)·n) / (ε + n)``: move the norm
    along ``axis`` toward ``[min_value, max_value]`` at ``rate``."""

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


class RadialConstraint(Constraint):
    """Make each ``(h, h)`` filter of a 4-D ``(h, h, in, out)`` kernel constant on each
    ring around its centre (Chebyshev distance k from the centre: k = 0 is the centre
    pixel for odd h, the central 2×2 block for even h). With ``s = h // 2`` and d the
    filter's diagonal, ring k takes ``d[s + k − 1]`` for odd h; for even h the centre
    block takes ``d[s − 1]`` and ring k ≥ 1 takes ``d[s + k]``: tf_keras' values (its
    docstring's picture differs from what its code computes; we follow the code)."""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        if w.dim() != 4:
            raise ValueError(
                f"RadialConstraint needs a 4-D weight (h, h, in, out); received shape "
                f"{tuple(w.shape)}."
            )
        h = w.shape[0]
        if w.shape[1] != h or h < 2:
            raise ValueError(
                f"RadialConstraint needs square filters of size >= 2; received shape "
                f"{tuple(w.shape)}."
            )
        s = h // 2
        i = torch.arange(h, device=w.device)
        ring = (i - s).abs() if h % 2 else torch.where(i >= s, i - s, s - 1 - i)
        k = torch.maximum(ring[:, None], ring[None, :])
        source = s + k - 1 if h % 2 else torch.where(k == 0, s - 1, s + k)
        return w[i, i][source]


max_norm = MaxNorm
"""Alias of `MaxNorm` (Keras' lowercase name)."""
non_neg = NonNeg
"""Alias of `NonNeg`."""
unit_norm = UnitNorm
"""Alias of `UnitNorm`."""
min_max_norm = MinMaxNorm
"""Alias of `MinMaxNorm`."""
radial_constraint = RadialConstraint
"""Alias of `RadialConstraint`."""

_CLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (MaxNorm, MinMaxNorm, NonNeg, RadialConstraint, UnitNorm)
}
_REGISTRY: dict[str, type] = {
    "max_norm": MaxNorm,
    "non_neg": NonNeg,
    "unit_norm": UnitNorm,
    "min_max_norm": MinMaxNorm,
    "radial_constraint": RadialConstraint,
}
_KIND = _keras_objects.Kind(
    "constraint", _REGISTRY, _CLASSES, Constraint, "(weight) -> projected torch.Tensor"
)


def get(identifier: Any, argument: str | None = None) -> Callable[..., torch.Tensor] | None:
    """Resolve a constraint (None stays None): a name, a config dict, one of our classes
    (instantiated) or instances, a tf_keras/Keras constraint (converted through
    ``get_config()``; TypeError naming ``argument`` when there is no equivalent) or a
    callable ``(weight) -> projected weight``."""
    return _keras_objects.resolve(_KIND, identifier, argument)


def serialize(constraint: Any, use_legacy_format: bool = False) -> Any:
    """Keras' config: ``{"module": "keras.constraints", "class_name", "config",
    "registered_name": None}`` (``{"class_name", "config"}`` with ``use_legacy_format``),
    readable by ``tf_keras.constraints.deserialize``."""
    return _keras_objects.serialize(_KIND, constraint, use_legacy_format)


def deserialize(
    config: str | Mapping[str, Any],
    custom_objects: Mapping[str, Any] | None = None,
    use_legacy_format: bool = False,
) -> Callable[..., torch.Tensor]:
    """A constraint from a name or a config dict in either Keras format (the output of
    ``serialize`` here or in tf_keras); ``custom_objects`` maps extra class names."""
    del use_legacy_format  # both formats are read
    return _keras_objects.deserialize(_KIND, config, custom_objects)
