"""Keras weight files: ``load_keras_weights`` reads ``.h5`` files with h5py alone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from ..normalization import BatchNormalization

__all__ = ["load_keras_weights"]

_BN_GROUP = re.compile(r"^batch_normalization(?:_(\d+))?$")


def _legacy_groups(root: Any) -> dict[str, list[np.ndarray]]:
    """Layer name → weights (in the file's ``weight_names`` order) of an HDF5 file
    written by Keras 2 (``model.save('m.h5')`` or ``save_weights('w.h5')``)."""
    layers: dict[str, list[np.ndarray]] = {}
    for name in _h5_strings(root.attrs["layer_names"]):
        group = root[name]
        names = _h5_strings(group.attrs["weight_names"])
        if names:
            layers[name] = [np.asarray(group[n]) for n in names]
    return layers


def _v3_groups(root: Any, prefix: str = "") -> list[tuple[str, list[np.ndarray]]]:
    """(path, weights) of every ``batch_normalization[_k]`` layer of a Keras 3-format
    ``.weights.h5`` file, in layer order within each container."""
    found: list[tuple[str, list[np.ndarray]]] = []
    layers = root.get("layers")
    if layers is None:
        return found

    def order(name: str) -> tuple[int, str]:
        match = _BN_GROUP.match(name)
        return (int(match.group(1) or 0) if match else -1, name)

    for name in sorted(layers, key=order):
        group = layers[name]
        path = f"{prefix}{name}"
        if _BN_GROUP.match(name) and "vars" in group:
            variables = group["vars"]
            found.append((path, [np.asarray(variables[k]) for k in sorted(variables, key=int)]))
        found.extend(_v3_groups(group, path + "/"))
    return found


def load_keras_weights(module: nn.Module, path: str, by_name: bool = True) -> list[str]:
    """Load BatchNormalization weights from a Keras HDF5 file into the
    ``BatchNormalization`` layers of ``module`` (or ``module`` itself); returns the
    names of the layers loaded. Needs h5py, not TensorFlow.

    - Keras 2 ``.h5`` files (``model.save``, ``save_weights``): with ``by_name`` each
      layer takes the weights of the file's layer with its ``name`` (layers absent
      from the file are left alone); otherwise the file's batch-norm layers are
      matched in order (those whose weight names end in ``gamma``/``beta``/
      ``moving_mean``/``moving_variance``).
    - Keras 3-format ``.weights.h5`` files name layers by class and position
      (``batch_normalization``, ``batch_normalization_1``, …), not by layer name:
      their batch-norm layers are matched to ours in order.

    Weights come in TensorFlow's order and shapes (``get_weights``); unbuilt layers
    take them on their first build. Every shape is checked before any layer changes."""
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("load_keras_weights needs h5py: pip install h5py") from exc
    ours = [m for m in module.modules() if isinstance(m, BatchNormalization)]
    if not ours:
        raise ValueError("`module` holds no BatchNormalization layer.")
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        if "layer_names" in root.attrs:
            stored = _legacy_groups(root)
            if by_name:
                pairs = [(layer, stored[layer.name]) for layer in ours if layer.name in stored]
                if not pairs:
                    raise ValueError(
                        f"None of the layer names {[m.name for m in ours]} is in {path} "
                        f"(its layers: {list(stored)})."
                    )
            else:
                bn = [
                    values
                    for name, values in stored.items()
                    if len(values) in (2, 3, 4, 5, 6, 7) and _looks_like_bn(root[name])
                ]
                pairs = _in_order(ours, bn, path)
        elif "layers" in root:
            pairs = _in_order(ours, [values for _, values in _v3_groups(root)], path)
        else:
            raise ValueError(f"{path} is not a Keras weights file (no layer_names, no layers).")
    for layer, values in pairs:  # every check before any change
        if layer.built:
            wanted = [tuple(w.shape) for w in layer.weights]
            got = [tuple(v.shape) for v in values]
            if wanted != got:
                raise ValueError(
                    f"Layer {layer.name} has weights of shapes {wanted}; {path} holds {got}."
                )
    for layer, values in pairs:
        layer._load_weights(values)
    return [layer.name for layer, _ in pairs]


def _h5_strings(values: Any) -> list[str]:
    """An HDF5 string-array attribute (bytes or str entries) as Python strings."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _looks_like_bn(group: Any) -> bool:
    names = _h5_strings(group.attrs["weight_names"])
    return any(n.rsplit("/", 1)[-1].startswith("moving_mean") for n in names)


def _in_order(
    ours: Sequence[BatchNormalization], stored: Sequence[list[np.ndarray]], path: str
) -> list[tuple[BatchNormalization, list[np.ndarray]]]:
    if len(stored) != len(ours):
        raise ValueError(
            f"{path} holds {len(stored)} BatchNormalization layers; the module has "
            f"{len(ours)} ({[m.name for m in ours]}). Matching in order needs equal counts."
        )
    return list(zip(ours, stored, strict=True))
