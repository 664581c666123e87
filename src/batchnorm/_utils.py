"""Small shared helpers: dtype names, registry lookup, snake-case names."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
}

SIXTEEN_BIT = (torch.float16, torch.bfloat16)


def as_dtype(value: Any, argument: str = "dtype") -> torch.dtype | None:
    """Return a floating ``torch.dtype`` for ``value`` (a dtype, its name, or None)."""
    if value is None:
        return None
    if isinstance(value, torch.dtype):
        dtype = value
    elif isinstance(value, str):
        name = value.removeprefix("torch.")
        if name not in _DTYPE_NAMES:
            raise ValueError(
                f"`{argument}` must be a floating torch.dtype or one of "
                f"{sorted(_DTYPE_NAMES)}; received {value!r}."
            )
        dtype = _DTYPE_NAMES[name]
    elif isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        name = np.dtype(value).name  # numpy dtypes and scalar types (np.float64, np.int32)
        if name not in _DTYPE_NAMES:
            raise ValueError(f"`{argument}` must be a floating dtype; received {name}.")
        return _DTYPE_NAMES[name]
    else:
        other_name = getattr(value, "name", None)  # dtypes of other libraries (tf.float32)
        if isinstance(other_name, str) and other_name in _DTYPE_NAMES:
            return _DTYPE_NAMES[other_name]
        raise TypeError(
            f"`{argument}` must be a torch.dtype or a dtype name; received {value!r} "
            f"of type {type(value).__name__}."
        )
    if not dtype.is_floating_point:
        raise ValueError(f"`{argument}` must be a floating dtype; received {dtype}.")
    return dtype


def param_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Variables of 16-bit layers are kept in float32 (as TensorFlow does)."""
    return torch.float32 if dtype in SIXTEEN_BIT else dtype


def to_snake_case(name: str) -> str:
    """``BatchNormalization`` -> ``batch_normalization`` (Keras' rule)."""
    intermediate = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()


def _registry_key(name: str) -> str:
    return name.replace("_", "").lower()


def _find(kind: str, what: str, name: str, registry: Mapping[str, Callable[..., Any]]) -> Any:
    """Exact name first, then a match ignoring case and underscores."""
    if name in registry:
        return registry[name]
    table = {_registry_key(k): v for k, v in registry.items()}
    found = table.get(_registry_key(name))
    if found is None:
        raise ValueError(
            f"Unknown {kind} {name!r} for {what}. Known names: {', '.join(sorted(registry))}."
        )
    return found


def lookup(
    kind: str,
    identifier: Any,
    registry: Mapping[str, Callable[..., Any]],
    base: type,
    argument: str | None = None,
) -> Callable[..., Any] | None:
    """Resolve ``identifier`` (None, a name, a Keras config dict, or a callable).

    Names are matched ignoring case and underscores, so ``'random_normal'`` and
    ``'RandomNormal'`` both work. Unknown names raise ValueError listing the
    known ones; objects that are not callable raise TypeError.
    """
    what = f"`{argument}`" if argument else kind
    if identifier is None:
        return None
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, str):
        return _find(kind, what, identifier, registry)()
    if isinstance(identifier, Mapping):
        if "class_name" not in identifier:
            article = "An" if kind[0] in "aeiou" else "A"
            raise ValueError(
                f"{article} {kind} config for {what} needs a 'class_name' key; "
                f"received {identifier!r}."
            )
        factory = _find(kind, what, str(identifier["class_name"]), registry)
        config = dict(identifier.get("config") or {})
        from_config = getattr(factory, "from_config", None)
        return from_config(config) if from_config is not None else factory(**config)
    if callable(identifier):
        return identifier
    raise TypeError(
        f"Could not interpret {kind} for {what}: expected None, a name, a config dict or "
        f"a callable; received {identifier!r} of type {type(identifier).__name__}."
    )


def serialize(obj: Any) -> Any:
    """Keras-style config of a registered object; a plain function gives its name."""
    if obj is None:
        return None
    if hasattr(obj, "get_config"):
        return {"class_name": type(obj).__name__, "config": obj.get_config()}
    name = getattr(obj, "__name__", None)
    if name is not None:
        return name
    raise ValueError(f"Cannot serialize {obj!r}: it has neither get_config() nor a name.")


ShapeLike = Sequence[int | None]


def as_shape(input_shape: Any, argument: str = "input_shape") -> tuple[int | None, ...]:
    """Normalize a shape (tuple, list, ``torch.Size``, or anything with ``.shape``).

    Raises TypeError when ``input_shape`` is not a sequence of ints and Nones.
    """
    if isinstance(input_shape, (torch.Tensor, np.ndarray)) or hasattr(input_shape, "_bn_node"):
        input_shape = input_shape.shape
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Iterable):
        raise TypeError(
            f"`{argument}` must be a shape (a tuple/list of ints or None); "
            f"received {input_shape!r}."
        )
    dims: list[int | None] = []
    for d in input_shape:
        if d is None:
            dims.append(None)
        elif isinstance(d, (int, np.integer, torch.SymInt)) and not isinstance(d, bool) and d >= 0:
            dims.append(int(d))  # (a symbolic size under torch.compile: specialized)
        else:
            raise TypeError(
                f"`{argument}` must be a shape (a tuple/list of non-negative ints or None); "
                f"received {input_shape!r}."
            )
    return tuple(dims)
