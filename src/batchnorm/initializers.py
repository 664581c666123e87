"""Initializers with TensorFlow/Keras names, defaults and configs.

Every initializer is called as ``init(shape, dtype=None)`` and returns a new
``torch.Tensor``. Keras' lowercase names (``he_normal``, ``zeros``, ...) are aliases of
the classes, as in ``tf_keras.initializers``. ``get(identifier)`` resolves a name
(``'zeros'``, ``'random_normal'``, ``'GlorotUniform'``, ...), a Keras config dict, one of
our classes or instances, a tf_keras/Keras/TensorFlow initializer (rebuilt from its
``get_config()``) or any callable with that signature.

Differences from ``tf_keras.initializers``:

- Random values come from torch's generators, so a seed gives the same values on every
  call but not Keras' values; an unseeded initializer draws new values on every call
  (Keras returns the same values again, with a warning).
- ``__call__`` takes no ``partition_shape``/``partition_offset``/``layout`` keywords:
  they serve TensorFlow's partitioned variables and DTensor.
- ``get`` raises TypeError, not ValueError, for an identifier of the wrong type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import _keras_objects
from ._initializers_classes import (
    Constant,
    GlorotNormal,
    GlorotUniform,
    HeNormal,
    HeUniform,
    Identity,
    Initializer,
    LecunNormal,
    LecunUniform,
    Ones,
    Orthogonal,
    RandomNormal,
    RandomUniform,
    Shape,
    TruncatedNormal,
    VarianceScaling,
    Zeros,
)
from ._utils import to_snake_case

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Identity",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "constant",
    "deserialize",
    "get",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "identity",
    "lecun_normal",
    "lecun_uniform",
    "ones",
    "orthogonal",
    "random_normal",
    "random_uniform",
    "serialize",
    "truncated_normal",
    "variance_scaling",
    "zeros",
]

zeros = Zeros
"""Alias of `Zeros` (Keras' lowercase name)."""
ones = Ones
"""Alias of `Ones`."""
constant = Constant
"""Alias of `Constant`."""
random_normal = RandomNormal
"""Alias of `RandomNormal`."""
random_uniform = RandomUniform
"""Alias of `RandomUniform`."""
truncated_normal = TruncatedNormal
"""Alias of `TruncatedNormal`."""
variance_scaling = VarianceScaling
"""Alias of `VarianceScaling`."""
glorot_normal = GlorotNormal
"""Alias of `GlorotNormal`."""
glorot_uniform = GlorotUniform
"""Alias of `GlorotUniform`."""
he_normal = HeNormal
"""Alias of `HeNormal`."""
he_uniform = HeUniform
"""Alias of `HeUniform`."""
lecun_normal = LecunNormal
"""Alias of `LecunNormal`."""
lecun_uniform = LecunUniform
"""Alias of `LecunUniform`."""
orthogonal = Orthogonal
"""Alias of `Orthogonal`."""
identity = Identity
"""Alias of `Identity`."""

_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Zeros,
        Ones,
        Constant,
        RandomNormal,
        RandomUniform,
        TruncatedNormal,
        VarianceScaling,
        GlorotNormal,
        GlorotUniform,
        HeNormal,
        HeUniform,
        LecunNormal,
        LecunUniform,
        Orthogonal,
        Identity,
    )
}
# Keras' names for strings and configs (matched ignoring case and underscores)
_REGISTRY: dict[str, type] = {
    **{to_snake_case(name): cls for name, cls in _CLASSES.items()},
    "normal": RandomNormal,
    "uniform": RandomUniform,
    "one": Ones,
    "zero": Zeros,
}

_KIND = _keras_objects.Kind(
    "initializer",
    _REGISTRY,
    # Keras 3 names two of its classes differently
    {**_CLASSES, "IdentityInitializer": Identity, "OrthogonalInitializer": Orthogonal},
    Initializer,
    "(shape, dtype=None) -> torch.Tensor",
)


def get(identifier: Any, argument: str | None = None) -> Callable[..., torch.Tensor] | None:
    """Resolve an initializer (None stays None): a name, a config dict, one of our classes
    (instantiated) or instances, a tf_keras/Keras/TensorFlow initializer (converted through
    ``get_config()``; TypeError naming ``argument`` when there is no equivalent) or a
    callable ``(shape, dtype=None) -> Tensor``."""
    return _keras_objects.resolve(_KIND, identifier, argument)


def serialize(initializer: Any, use_legacy_format: bool = False) -> Any:
    """Keras' config: ``{"module": "keras.initializers", "class_name", "config",
    "registered_name": None}`` (``{"class_name", "config"}`` with ``use_legacy_format``),
    readable by ``tf_keras.initializers.deserialize``."""
    return _keras_objects.serialize(_KIND, initializer, use_legacy_format)


def deserialize(
    config: str | Mapping[str, Any],
    custom_objects: Mapping[str, Any] | None = None,
    use_legacy_format: bool = False,
) -> Callable[..., torch.Tensor]:
    """An initializer from a name or a config dict in either Keras format (the output of
    ``serialize`` here or in tf_keras); ``custom_objects`` maps extra class names."""
    del use_legacy_format  # both formats are read
    return _keras_objects.deserialize(_KIND, config, custom_objects)


def initialize(
    initializer: Callable[..., Any], shape: Shape, dtype: torch.dtype, argument: str = "initializer"
) -> torch.Tensor:
    """Run ``initializer(shape, dtype=dtype)`` and check that it returned the requested shape."""
    value = initializer(tuple(shape), dtype=dtype)
    value = torch.as_tensor(value, dtype=dtype)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"`{argument}` returned a value of shape {tuple(value.shape)}; "
            f"expected shape {tuple(shape)}."
        )
    return value
