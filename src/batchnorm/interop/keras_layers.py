"""tf_keras ``BatchNormalization`` layers: ``from_keras`` and ``to_keras``.

TensorFlow is imported only by ``to_keras``; ``from_keras`` reads a tf_keras layer it
is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..normalization import BatchNormalization

__all__ = ["from_keras", "to_keras"]

_KERAS_ONLY = ("module", "registered_name")


def _plain(value: Any) -> Any:
    """tf_keras configs hold ListWrapper/DictWrapper and NumPy scalars: plain Python."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items() if k not in _KERAS_ONLY}
    if isinstance(value, list | tuple) or type(value).__name__ == "ListWrapper":
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _keras_dtype(value: Any) -> str | None:
    """A tf_keras dtype or policy config as our ``dtype``: mixed policies keep float32
    variables, which is what ours does for 16-bit input with ``dtype=None``."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("name")
    name = str(value)
    if name.startswith("mixed_"):
        return None
    return name


def from_keras(
    keras_layer: Any, adjustment: Callable[..., Any] | None = None
) -> BatchNormalization:
    """An equivalent ``BatchNormalization`` of a tf_keras ``BatchNormalization``: its
    config (name, axis, momentum, epsilon, center/scale, initializers, regularizers,
    constraints, renorm with clipping and momentum, virtual_batch_size, fused,
    trainable) and, when it is built, its weights (built to the same input shape).

    An ``adjustment`` is a TensorFlow function and cannot be carried over: pass a
    PyTorch equivalent as ``adjustment``, or ValueError."""
    if type(keras_layer).__name__ not in ("BatchNormalization", "SyncBatchNormalization"):
        raise ValueError(
            "from_keras converts tf_keras BatchNormalization layers; received "
            f"{type(keras_layer).__name__}."
        )
    if getattr(keras_layer, "adjustment", None) is not None and adjustment is None:
        raise ValueError(
            f"Layer {keras_layer.name} has an `adjustment` function, which cannot cross "
            "frameworks; pass an equivalent PyTorch callable as `adjustment=`."
        )
    config = _plain(keras_layer.get_config())
    config["dtype"] = _keras_dtype(config.get("dtype"))
    if keras_layer.built and config.get("virtual_batch_size") is not None:
        # a built tf_keras layer reports its axes in the ghost view [vbs, B/vbs, ...]
        config["axis"] = [a - 1 for a in config["axis"]]
    fused = getattr(keras_layer, "_fused", None)
    if fused is None:
        fused = getattr(keras_layer, "fused", None)
    if getattr(keras_layer, "synchronized", False):
        config["synchronized"] = True
    elif fused is not None and not keras_layer.built:
        config["fused"] = fused
    if adjustment is not None:
        config["adjustment"] = adjustment
    built_axes = keras_layer.built
    layer = BatchNormalization(**config)
    if built_axes:
        shape = getattr(keras_layer, "_build_input_shape", None)
        if shape is None:
            raise ValueError(f"Layer {keras_layer.name} is built but its input shape is unknown.")
        layer.build(tuple(None if d is None else int(d) for d in shape))
        layer.set_weights([np.asarray(w) for w in keras_layer.get_weights()])
    return layer


def to_keras(layer: BatchNormalization, adjustment: Callable[..., Any] | None = None) -> Any:
    """The tf_keras ``BatchNormalization`` equivalent of ``layer`` (config and, when
    built, weights). Needs TensorFlow and tf_keras. Features TensorFlow lacks raise
    ValueError naming them: contiguous ghost batches, a Bessel-corrected moving
    variance outside TF's fused path (TF's rule is tied to its path, so ours is
    expressed through ``fused``); an ``adjustment`` needs a TensorFlow callable
    passed as ``adjustment``."""
    import tf_keras

    if layer.adjustment is not None and adjustment is None:
        raise ValueError(
            f"Layer {layer.name} has an `adjustment` callable, which cannot cross "
            "frameworks; pass an equivalent TensorFlow callable as `adjustment=`."
        )
    if layer.virtual_batch_size is not None and layer.ghost_grouping != "strided":
        raise ValueError(
            f"Layer {layer.name} uses ghost_grouping={layer.ghost_grouping!r}; TensorFlow "
            "groups ghost batches strided only."
        )
    if not layer.built and layer._held_shape() is not None:
        raise ValueError(
            f"Layer {layer.name} holds weights but its input rank is not fixed yet (it was "
            "converted or loaded before its first call), and a Keras layer is built for one "
            "rank: call it once or build(input_shape) it first."
        )
    config = layer.get_config()
    unbiased = config.pop("unbiased_moving_variance", None)
    for key in ("ghost_grouping", "check_numerics"):
        config.pop(key, None)
    # TF's moving-variance rule follows its path: Bessel-corrected when fused
    bessel = layer._bessel if layer.built else unbiased
    if bessel is not None:
        config["fused"] = bool(bessel)
    dtype = config.get("dtype")
    if dtype in ("float16", "bfloat16"):
        config["dtype"] = f"mixed_{dtype}"
    elif dtype is None:
        config["dtype"] = "float64" if layer.built and layer.dtype == torch.float64 else None
    if not config.get("synchronized"):
        config.pop("synchronized", None)
    if adjustment is not None:
        config["adjustment"] = adjustment
    try:
        keras_layer = tf_keras.layers.BatchNormalization(**config)
        if layer.built:
            keras_layer.build(layer._build_input_shape)
    except ValueError as exc:
        if bessel:
            raise ValueError(
                f"Layer {layer.name} updates a Bessel-corrected moving variance, which "
                "TensorFlow does only on its fused path (4-D input, channel axis 1 or -1, "
                f"no ghost batches, renorm or adjustment): {exc}"
            ) from exc
        raise
    if layer.built:
        keras_layer.set_weights([w.detach().cpu().numpy() for w in layer.weights])
    return keras_layer
