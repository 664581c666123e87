"""Keras weight files: ``load_keras_weights`` reads them with h5py alone (no TensorFlow).

Three formats, each read into the file's batch-norm layers in the Keras model's layer
order (depth-first through nested models):

- Keras 2 HDF5 (``model.save('m.h5')``, ``save_weights('w.h5')``): the root (or its
  ``model_weights`` group) lists the top-level layers in ``layer_names``; a layer's group
  lists its datasets in ``weight_names`` as ``<layer>/<variable>:0``. A nested model's
  group holds the weights of all its layers, each named by its own layer, trainable
  ones first: they are regrouped by layer and put in TensorFlow's order.
- Keras 3 format (``save_weights('w.weights.h5')``): ``layers/<class>[_k]/vars/<i>``,
  nested per container, without layer names. Keras writes the layers in the model's
  layer order, depth-first, which the positions of their raw data in the file keep
  (group names sort alphabetically, which would put a nested model's layers ahead of
  later top-level ones, and ``_10`` before ``_2``); Keras' per-container numbering is
  checked against that order.
- ``.keras`` archives: a zip of ``config.json`` (layer names and nesting) and
  ``model.weights.h5`` (the Keras 3 format); the config names the layers.

Layers are matched by name where the file has names and ``by_name`` is set, else in
order (``module.modules()`` order against the file's). Every layer is checked (count,
dtype and shape of its weights) before any layer changes; a layout that differs only by
where its one channel dimension sits (a channels-last ghost-batch layer's
``(1, 1, 1, 1, C)`` into an ``axis=1`` one's ``(1, 1, C, 1, 1)``, or into ``(C,)``) is
converted, any other difference refused.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from .._bn_variables import STATISTICS
from ..normalization import BatchNormalization

__all__ = ["load_keras_weights"]

_ORDER = ("gamma", "beta", *STATISTICS)  # TensorFlow's weights order
_BN_GROUP = re.compile(r"^(sync_)?batch_normalization(_\d+)?$")
_BN_CLASSES = ("BatchNormalization", "SyncBatchNormalization")


@dataclass
class Stored:
    """One batch-norm layer of a file: its name (None where the format has none), where
    it sits in the file, and its weights in TensorFlow's order."""

    name: str | None
    where: str
    values: list[np.ndarray]
    attribute: bool = False  # saved under an attribute of a subclassed model (Keras 3 format)


def _h5_strings(values: Any) -> list[str]:
    """An HDF5 string-array attribute (bytes or str entries) as Python strings."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _legacy_layers(root: Any) -> list[Stored]:
    """The batch-norm layers of a Keras 2 HDF5 file, nested models included."""
    found: list[Stored] = []
    for top in _h5_strings(root.attrs["layer_names"]):
        group = root[top]
        by_layer: dict[str, dict[str, np.ndarray]] = {}
        for weight in _h5_strings(group.attrs["weight_names"]):
            parts = weight.split("/")
            layer = parts[-2] if len(parts) > 1 else top
            variable = parts[-1].split(":")[0]
            by_layer.setdefault(layer, {})[variable] = np.asarray(group[weight])
        for layer, variables in by_layer.items():
            if {"moving_mean", "moving_variance"} <= set(variables) <= set(_ORDER):
                values = [variables[v] for v in _ORDER if v in variables]
                found.append(Stored(layer, f"{top}/{layer}" if layer != top else top, values))
    return found


def _is_bn_group(name: str, group: Any) -> bool:
    """A Keras 3-format group holding a batch-norm layer's variables: named after the
    class (``batch_normalization_3``), or (an attribute of a subclassed model, the
    ``layer`` of a wrapper) holding 3 to 7 variables of one shape."""
    import h5py

    variables = group.get("vars")
    if not isinstance(variables, h5py.Group) or not len(variables):
        return False
    if _BN_GROUP.match(name):
        return True
    shapes = {variables[k].shape for k in variables}
    return 3 <= len(variables) <= 7 and len(shapes) == 1


def _written_at(group: Any) -> int:
    """Where the raw data of a group's first variable lies in the file. Raw data is
    allocated in the order it is written and never freed in a file Keras writes, so
    this orders the layers as Keras saved them (object-header addresses do not: freed
    metadata space is reused)."""
    import h5py

    first = group["vars"][sorted(group["vars"], key=int)[0]]
    offset = first.id.get_offset()
    return h5py.h5o.get_info(first.id).addr if offset is None else offset


def _v3_groups(group: Any, path: str = "") -> Iterator[tuple[int, str, Any]]:
    """(write position, path, group) of every batch-norm group under ``group``."""
    import h5py

    for name, child in group.items():
        if not isinstance(child, h5py.Group):
            continue
        where = f"{path}/{name}" if path else name
        if _is_bn_group(name, child):
            yield _written_at(child), where, child
        else:
            yield from _v3_groups(child, where)


def _check_order(groups: list[tuple[int, str, Any]], path: str) -> None:
    """Within each container, Keras numbers same-class layers in order
    (``batch_normalization``, ``…_1``, …): the write order must agree with it."""
    seen: dict[str, int] = {}
    for _, where, _group in groups:
        parent, _, name = where.rpartition("/")
        match = _BN_GROUP.match(name)
        if match is None:
            continue
        index = int(match.group(2)[1:]) if match.group(2) else 0
        key = f"{parent}/{match.group(1) or ''}"
        if seen.get(key, -1) >= index:
            raise ValueError(
                f"Cannot tell the order of the BatchNormalization layers in {path} (the "
                f"file's write order disagrees with Keras' numbering at {where}); load a "
                ".keras or Keras 2 .h5 file, which name the layers."
            )
        seen[key] = index


def _v3_layers(root: Any, path: str, names: list[str] | None = None) -> list[Stored]:
    """The batch-norm layers of a Keras 3-format file in the order Keras wrote them,
    named by ``names`` (from a ``.keras`` config, in the same order) when given."""
    groups = sorted(_v3_groups(root), key=lambda g: g[0])
    _check_order(groups, path)
    if names is not None and len(names) != len(groups):
        raise ValueError(
            f"The archive's config lists {len(names)} BatchNormalization layers ({names}) "
            f"but its weights hold {len(groups)}; the file is inconsistent."
        )
    found = []
    for i, (_, where, group) in enumerate(groups):
        variables = group["vars"]
        values = [np.asarray(variables[k]) for k in sorted(variables, key=int)]
        name = None if names is None else names[i]
        found.append(Stored(name, where, values, attribute=not _under_layers(where)))
    return found


def _config_names(config: dict[str, Any]) -> list[str]:
    """Names of the batch-norm layers of a Keras model config, depth-first in layer
    order (the order Keras saves them in), wrapped layers (``TimeDistributed``) included."""
    inner = config.get("config") or {}
    names: list[str] = []
    for layer in [*(inner.get("layers") or []), *([inner["layer"]] if "layer" in inner else [])]:
        if layer.get("class_name") in _BN_CLASSES:
            names.append(layer["config"]["name"])
        else:
            names.extend(_config_names(layer))
    return names


def _read(path: str) -> list[Stored]:
    """The batch-norm layers of a Keras weights file, in model order."""
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("load_keras_weights needs h5py: pip install h5py") from exc
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            if not {"config.json", "model.weights.h5"} <= members:
                raise ValueError(
                    f"{path} is a zip archive but not a .keras model (it lacks config.json or "
                    "model.weights.h5)."
                )
            config = json.loads(archive.read("config.json"))
            data = io.BytesIO(archive.read("model.weights.h5"))
        names = _config_names(config) if "layers" in (config.get("config") or {}) else None
        with h5py.File(data, "r") as f:
            return _v3_layers(f, path, names)
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        if "layer_names" in root.attrs:
            return _legacy_layers(root)
        if "layers" in root:
            return _v3_layers(root, path)
    raise ValueError(f"{path} is not a Keras weights file (no layer_names, no layers).")


# --------------------------------------------------------------------------------------
# Matching and layouts


def _match(
    ours: list[BatchNormalization], stored: list[Stored], by_name: bool, path: str
) -> tuple[list[tuple[BatchNormalization, Stored]], list[str]]:
    """Pairs of (our layer, file layer) and a description of every layer left out: a
    name on one side only, or a name several layers share on either side."""
    if by_name and all(s.name is not None for s in stored):
        theirs = [s.name for s in stored]
        names = [m.name for m in ours]
        if not set(names) & set(theirs):
            raise ValueError(
                f"None of the layer names {names} is in {path} (its BatchNormalization "
                f"layers: {theirs}); pass by_name=False to match them in order."
            )
        shared = {n for n in theirs if theirs.count(n) > 1} | {
            n for n in names if names.count(n) > 1
        }
        table = {s.name: s for s in stored}
        pairs = [(m, table[m.name]) for m in ours if m.name in table and m.name not in shared]
        left = [f"{n} (ours: not in the file)" for n in names if n not in table]
        left += [f"{n} (the file's: not in the module)" for n in theirs if n not in names]
        left += [
            f"{n} (the name of {names.count(n)} of ours and {theirs.count(n)} of the file's "
            "layers: match them in order, by_name=False)"
            for n in sorted(shared)
        ]
        return pairs, left
    if len(ours) != len(stored):  # (as Keras: a count mismatch is never skipped)
        raise ValueError(
            f"{path} holds {len(stored)} BatchNormalization layers "
            f"({[s.name or s.where for s in stored]}); the module has {len(ours)} "
            f"({[m.name for m in ours]}). Matching in order needs equal counts."
        )
    if any(s.attribute for s in stored):
        warnings.warn(
            f"{path} comes from a subclassed Keras model and names no layers: they are "
            "matched in order, but Keras saves attribute layers in its own order (reverse "
            "alphabetical before the `layers` list). Check the result, or load a Keras 2 "
            ".h5 file, which names the layers.",
            UserWarning,
            stacklevel=3,
        )
    return list(zip(ours, stored, strict=True)), []


def _under_layers(where: str) -> bool:
    """Whether a Keras 3-format path is a chain of ``layers`` containers (the layer
    lists of Functional and Sequential models, or a wrapper's ``layer``), not attributes."""
    parts = where.split("/")
    return all(p in ("layers", "layer") for p in parts[0:-1:2]) and parts[0] == "layers"


def _non_unit(shape: Sequence[int]) -> list[int]:
    return [n for n in shape if n != 1]


def _target_shape(layer: BatchNormalization, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape ``layer`` holds its weights in, for file weights of ``shape``: its own
    when it holds variables; else ``shape`` itself when it fits the layer's axes, or the
    layer's layout of the file's one channel dimension (None when there is none)."""
    held = layer._held_shape()
    if held is not None:
        return held
    try:
        layer._input_shape_for(shape)
        return shape
    except ValueError:
        pass
    channels = _non_unit(shape)
    if len(channels) > 1 or len(layer.axis if isinstance(layer.axis, list) else [0]) > 1:
        return None
    size = channels[0] if channels else 1
    if layer.virtual_batch_size is None:
        return (size,)
    for rank in (len(shape) - 1, len(shape)):  # a ghost-batch layout, or a multi-axis one
        try:
            axes = layer._validate_axes(rank)
        except ValueError:
            continue
        return layer._param_shape(tuple(size if d in axes else None for d in range(rank)), axes)
    return None


def _fit(layer: BatchNormalization, item: Stored) -> tuple[list[np.ndarray] | None, str]:
    """The file's weights laid out for ``layer``, or None and the reason they cannot be."""
    names = layer._variable_names()
    values = item.values
    label = f"{layer.name} <- {item.name or item.where}"
    if len(values) != len(names):
        return None, (
            f"{label}: the file has {len(values)} weights, the layer expects {len(names)} "
            f"({', '.join(names)})"
        )
    if any(not np.issubdtype(v.dtype, np.floating) for v in values):
        return None, f"{label}: the file's weights are not floating point"
    shapes = {v.shape for v in values}
    if len(shapes) != 1:
        return None, f"{label}: the file's weights have different shapes {sorted(shapes)}"
    shape = values[0].shape
    target = _target_shape(layer, shape)
    if target == shape:
        return values, ""
    if target is not None and _non_unit(target) == _non_unit(shape):
        return [v.reshape(target) for v in values], ""
    wanted = (
        f"{target}"
        if target
        else "a layout its axes fit (build it first, layer.build(input_shape), so that the "
        "file's weights can be laid out for it)"
    )
    return None, (
        f"{label}: the weight shapes differ: the file's are {shape}, layer {layer.name} "
        f"(axis={layer.axis}, virtual_batch_size={layer.virtual_batch_size}) needs {wanted}"
    )


def load_keras_weights(
    module: nn.Module, path: str, by_name: bool = True, skip_mismatch: bool = False
) -> list[str]:
    """Load the weights of a Keras file's ``BatchNormalization`` layers into the
    ``BatchNormalization`` layers of ``module`` (or ``module`` itself); returns the names
    of the layers loaded. Needs h5py, not TensorFlow.

    Reads Keras 2 ``.h5`` files (``model.save``, ``save_weights``), Keras 3-format
    ``.weights.h5`` files and ``.keras`` archives, nested models included (see the
    module docstring). With ``by_name`` (and a format that stores names: ``.h5`` and
    ``.keras``) each layer takes the weights of the file's layer of its ``name``;
    otherwise the file's batch-norm layers are matched to ``module``'s in order
    (depth-first layer order against ``module.modules()`` order).

    Every layer of either side must find its counterpart, with weights that fit it,
    before anything changes: otherwise ValueError listing every mismatch. With
    ``skip_mismatch=True`` (as in Keras) the mismatches are skipped with a warning
    listing them, and the rest is loaded. An unbuilt layer gets real parameters and
    buffers at once (built when the weights fix its input's rank)."""
    ours = [m for m in module.modules() if isinstance(m, BatchNormalization)]
    if not ours:
        raise ValueError("`module` holds no BatchNormalization layer.")
    pairs, problems = _match(ours, _read(str(path)), by_name, str(path))
    loads = []
    for layer, item in pairs:
        values, problem = _fit(layer, item)
        if values is None:
            problems.append(problem)
        else:
            loads.append((layer, values))
    if problems:
        message = f"{path} does not match the module: " + "; ".join(problems) + "."
        if not skip_mismatch:
            raise ValueError(message + " Nothing was loaded (skip_mismatch=True loads the rest).")
        warnings.warn(message + " These were skipped.", UserWarning, stacklevel=2)
    _load_all(loads)
    return [layer.name for layer, _ in loads]


def _load_all(loads: list[tuple[BatchNormalization, list[np.ndarray]]]) -> None:
    """Load every layer, or (should one still fail) restore the ones loaded before it."""
    saved = [
        (layer, layer._checkpoint(), [w.detach().clone() for w in layer.weights])
        for layer, _ in loads
    ]
    try:
        for layer, values in loads:
            layer._load_weights(values)
    except BaseException:
        for layer, checkpoint, weights in saved:
            if weights:
                layer.set_weights(weights)
            layer._rollback(checkpoint)
        raise
