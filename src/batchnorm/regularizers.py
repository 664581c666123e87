"""Weight regularizers with TensorFlow/Keras names, formulas and configs.

A regularizer maps a weight tensor to a scalar penalty, differentiable with
respect to the weight:

- ``L1(l1=0.01)``: ``l1 · Σ|w|``
- ``L2(l2=0.01)``: ``l2 · Σw²`` (no factor ½, as in Keras)
- ``L1L2(l1=0, l2=0)``: the sum of both; ``l1_l2(l1=0.01, l2=0.01)`` builds one
- ``OrthogonalRegularizer(factor=0.01, mode='rows')``: for a 2-D ``w`` whose n rows
  (columns in ``'columns'`` mode) are L2-normalized to ``v_i = w_i / √max(Σw_i², 1e-12)``,
  ``factor · ½ · Σ_{i≠j} |v_i · v_j| / (n(n − 1)/2)``

``l1``, ``l2`` and ``orthogonal_regularizer`` are aliases of the classes, as in
``tf_keras.regularizers``; the string ``'l1_l2'`` gives ``l1_l2()``. ``get`` also takes a
tf_keras/Keras regularizer object and rebuilds ours from its ``get_config()``.

Differences from ``tf_keras.regularizers``: factors are kept as given (Keras rounds them
to float32, so its configs read ``0.10000000149011612`` for ``0.1``); a negative factor
raises ValueError and a non-number TypeError (Keras accepts negative factors and raises
ValueError); ``get`` instantiates a class it is given (Keras returns the class).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import _keras_objects

__all__ = [
    "L1",
    "L1L2",
    "L2",
    "OrthogonalRegularizer",
    "Regularizer",
    "deserialize",
    "get",
    "l1",
    "l1_l2",
    "l2",
    "orthogonal_regularizer",
    "serialize",
]


def _check_factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Regularizer factor `{name}` must be a number; received {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Regularizer factor `{name}` must be finite and >= 0; received {value!r}."
        )
    return float(value)


class Regularizer:
    """Base class: ``__call__(weight) -> scalar tensor`` (0 here) and ``get_config()``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Regularizer:
        """``cls(**config)``."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """``l1 · Σ|w| + l2 · Σw²`` (a factor of None means 0, as in Keras)."""

    def __init__(self, l1: float | None = 0.0, l2: float | None = 0.0) -> None:
        self.l1 = _check_factor("l1", 0.0 if l1 is None else l1)
        self.l2 = _check_factor("l2", 0.0 if l2 is None else l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        penalty = x.new_zeros(())
        if self.l1:
            penalty = penalty + self.l1 * x.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * x.square().sum()
        return penalty

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


def _legacy_factor(kwargs: dict[str, Any]) -> Any:
    """Keras' old keyword ``l`` for ``L1``/``L2``'s factor."""
    factor = kwargs.pop("l", None)
    if kwargs:
        raise TypeError(f"Argument(s) not recognized: {kwargs}.")
    return factor


class L1(Regularizer):
    """``l1 · Σ|w|`` (a factor of None means 0.01, as in Keras)."""

    def __init__(self, l1: float | None = 0.01, **kwargs: Any) -> None:
        legacy = _legacy_factor(kwargs)
        l1 = legacy if legacy is not None else l1
        self.l1 = _check_factor("l1", 0.01 if l1 is None else l1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1 * x.abs().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 · Σw²`` (a factor of None means 0.01, as in Keras)."""

    def __init__(self, l2: float | None = 0.01, **kwargs: Any) -> None:
        legacy = _legacy_factor(kwargs)
        l2 = legacy if legacy is not None else l2
        self.l2 = _check_factor("l2", 0.01 if l2 is None else l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2 * x.square().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Push the rows (``mode='rows'``) or columns (``'columns'``) of a 2-D weight toward
    orthogonality: with ``v_i`` the L2-normalized rows (columns) and n their number,
    ``factor · ½ · Σ_{i≠j} |v_i · v_j| / (n(n − 1)/2)``."""

    def __init__(self, factor: float = 0.01, mode: str = "rows") -> None:
        self.factor = _check_factor("factor", factor)
        if mode not in ("rows", "columns"):
            raise ValueError(f"`mode` must be 'rows' or 'columns'; received mode={mode!r}.")
        self.mode = mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"OrthogonalRegularizer needs a 2-D weight; received shape {tuple(x.shape)}."
            )
        vectors = x if self.mode == "rows" else x.T
        # tf.math.l2_normalize: v / sqrt(max(Σv², 1e-12))
        unit = vectors * vectors.square().sum(dim=1, keepdim=True).clamp_min(1e-12).rsqrt()
        product = unit @ unit.T
        n = unit.shape[0]
        off_diagonal = product * (1.0 - torch.eye(n, dtype=x.dtype, device=x.device))
        num_pairs = n * (n - 1.0) / 2.0
        return self.factor * 0.5 * off_diagonal.abs().sum() / num_pairs

    def get_config(self) -> dict[str, Any]:
        return {"factor": self.factor, "mode": self.mode}


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """``L1L2`` with Keras' shortcut defaults: ``l1 · Σ|w| + l2 · Σw²``, 0.01 each."""
    return L1L2(l1=l1, l2=l2)


l1 = L1
"""Alias of `L1` (Keras' lowercase name)."""
l2 = L2
"""Alias of `L2`."""
orthogonal_regularizer = OrthogonalRegularizer
"""Alias of `OrthogonalRegularizer`."""

_CLASSES: dict[str, type] = {cls.__name__: cls for cls in (L1, L1L2, L2, OrthogonalRegularizer)}
_REGISTRY: dict[str, Callable[..., Any]] = {
    **_CLASSES,
    "l1": L1,
    "l2": L2,
    "l1_l2": l1_l2,
    "orthogonal_regularizer": OrthogonalRegularizer,
}
_KIND = _keras_objects.Kind(
    "regularizer", _REGISTRY, _CLASSES, Regularizer, "(weight) -> scalar torch.Tensor"
)


def get(identifier: Any, argument: str | None = None) -> Callable[..., torch.Tensor] | None:
    """Resolve a regularizer (None stays None): a name, a config dict, one of our classes
    (instantiated) or instances, a tf_keras/Keras regularizer (converted through
    ``get_config()``; TypeError naming ``argument`` when there is no equivalent) or a
    callable ``(weight) -> scalar tensor``."""
    return _keras_objects.resolve(_KIND, identifier, argument)


def serialize(regularizer: Any, use_legacy_format: bool = False) -> Any:
    """Keras' config: ``{"module": "keras.regularizers", "class_name", "config",
    "registered_name": None}`` (``{"class_name", "config"}`` with ``use_legacy_format``),
    readable by ``tf_keras.regularizers.deserialize``."""
    return _keras_objects.serialize(_KIND, regularizer, use_legacy_format)


def deserialize(
    config: str | Mapping[str, Any],
    custom_objects: Mapping[str, Any] | None = None,
    use_legacy_format: bool = False,
) -> Callable[..., torch.Tensor]:
    """A regularizer from a name or a config dict in either Keras format (the output of
    ``serialize`` here or in tf_keras); ``custom_objects`` maps extra class names."""
    del use_legacy_format  # both formats are read
    return _keras_objects.deserialize(_KIND, config, custom_objects)
