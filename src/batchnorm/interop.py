"""Interoperability: ``torch.nn`` batch norm, folding for deployment, tf_keras layers
and Keras weight files.

PyTorch's batch norm is TensorFlow's with the channel on axis 1, ``momentum_tf =
1 − momentum_torch``, ``center = scale = affine`` and the Bessel-corrected
moving variance (``unbiased_moving_variance=True``); outputs and running
statistics then agree in training and in evaluation.

Folding merges an inference-mode batch norm into the Linear/Conv before it:
with ``s = γ/√(moving_variance + ε)``, ``W' = W·s`` (per output channel) and
``b' = (b − moving_mean)·s + β``.

TensorFlow is imported only by ``to_keras``; ``from_keras`` reads a
tf_keras layer it is given, and ``load_keras_weights`` reads ``.h5`` files
with h5py alone.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .normalization import BatchNormalization

__all__ = [
    "fold",
    "fold_into",
    "from_keras",
    "from_torch",
    "load_keras_weights",
    "to_keras",
    "to_torch",
]

_TORCH_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _convert(bn: nn.modules.batchnorm._BatchNorm) -> BatchNormalization:
    if bn.momentum is None:
        raise ValueError(
            f"{type(bn).__name__} with momentum=None (a cumulative moving average) has no "
            "TensorFlow equivalent."
        )
    if not bn.track_running_stats:
        raise ValueError(
            f"{type(bn).__name__} with track_running_stats=False (batch statistics in "
            "evaluation too) has no TensorFlow equivalent."
        )
    layer = BatchNormalization(
        axis=1,
        momentum=1.0 - bn.momentum,
        epsilon=bn.eps,
        center=bn.affine,
        scale=bn.affine,
        unbiased_moving_variance=True,
        synchronized=isinstance(bn, nn.SyncBatchNorm),
        process_group=getattr(bn, "process_group", None),
    )
    values = [bn.weight, bn.bias] if bn.affine else []
    values += [bn.running_mean, bn.running_var]
    layer._pending_weights = [v.detach().clone() for v in values]
    layer.train(bn.training)
    return layer


def from_torch(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``torch.nn.BatchNorm1d/2d/3d`` and ``SyncBatchNorm``
    replaced by an equivalent ``BatchNormalization`` (weights and running statistics
    carried over; the layer builds on its first call). A batch-norm module itself is
    returned converted."""
    if isinstance(module, _TORCH_BN):
        return _convert(module)
    module = copy.deepcopy(module)
    for name, child in list(module.named_children()):
        module._modules[name] = from_torch(child)
    return module


def to_torch(layer: BatchNormalization, inference_only: bool = False) -> nn.Module:
    """The ``torch.nn.BatchNorm{1,2,3}d`` equivalent of a built layer, for
    configurations PyTorch can express (channel axis 1, center == scale, no renorm,
    ghost batches or adjustment, and the unbiased moving variance unless
    ``inference_only``); ValueError naming the feature otherwise."""
    if not layer.built:
        raise ValueError(f"Layer {layer.name} is not built; call it once or build() it first.")
    problems = {
        "axis": layer.axis != [1],
        "renorm": layer.renorm,
        "virtual_batch_size": layer.virtual_batch_size is not None,
        "adjustment": layer.adjustment is not None,
        "center != scale": layer.center != layer.scale,
        "biased moving variance (use inference_only=True)": not layer._bessel
        and not inference_only,
        "rank": layer._input_rank not in (2, 3, 4, 5),
    }
    bad = [name for name, problem in problems.items() if problem]
    if bad:
        raise ValueError(f"torch.nn.BatchNorm cannot express {bad} of layer {layer.name}.")
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
    channels = layer._channel_sizes[1]
    module = cls[layer._input_rank](
        channels,
        eps=layer.epsilon,
        momentum=1.0 - layer.momentum,
        affine=layer.scale,
        dtype=layer.moving_mean.dtype,
        device=layer.moving_mean.device,
    )
    with torch.no_grad():
        if layer.scale:
            module.weight.copy_(layer.gamma)
            module.bias.copy_(layer.beta)
        module.running_mean.copy_(layer.moving_mean)
        module.running_var.copy_(layer.moving_variance)
    module.train(layer.training)
    return module


# --------------------------------------------------------------------------------------
# Folding


_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fold_factors(bn: BatchNormalization, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (s, t) with ``bn(z) = z·s + t`` in inference, float64."""
    if not bn.built:
        raise ValueError(f"Layer {bn.name} is not built; call it once or build() it first.")
    if len(bn._axes) != 1:
        raise ValueError(
            f"Layer {bn.name} normalizes over axes {bn.axis}; only a single channel axis "
            "folds into a Linear or Conv."
        )
    mean = bn.moving_mean.detach().double().reshape(-1)
    var = bn.moving_variance.detach().double().reshape(-1)
    if mean.numel() != channels:
        raise ValueError(
            f"Layer {bn.name} has {mean.numel()} channels; the layer before it has "
            f"{channels} outputs."
        )
    inv = torch.rsqrt(var + bn.epsilon)
    gamma = bn.gamma.detach().double().reshape(-1) if bn.gamma is not None else 1.0
    beta = bn.beta.detach().double().reshape(-1) if bn.beta is not None else 0.0
    scale = inv * gamma
    return scale, beta - mean * scale


def fold_into(module: nn.Module, bn: BatchNormalization) -> nn.Module:
    """A copy of ``module`` (``nn.Linear`` or ``nn.Conv1d/2d/3d``) whose output equals
    ``bn(module(x))`` with ``bn`` in inference mode (moving statistics):

        W' = W·s,  b' = (b − moving_mean)·s + β,  s = γ/√(moving_variance + ε)

    per output channel. ``bn`` must normalize the module's output channel only: the
    last axis after a Linear, axis 1 after a Conv. Renorm and ghost-batch layers fold
    too (their inference is plain batch norm). ValueError otherwise."""
    if not isinstance(module, _FOLDABLE):
        raise ValueError(
            f"fold_into folds into nn.Linear or nn.Conv1d/2d/3d; received {type(module).__name__}."
        )
    if not isinstance(bn, BatchNormalization):
        raise ValueError(f"`bn` must be a BatchNormalization; received {type(bn).__name__}.")
    linear = isinstance(module, nn.Linear)
    channels = module.out_features if linear else module.out_channels
    if bn.built:
        rank = bn._input_rank
        axis = bn._axes[0] if len(bn._axes) == 1 else None
        wanted = rank - 1 if linear else 1
        if axis is not None and axis != wanted:
            where = "the last axis" if linear else "axis 1"
            raise ValueError(
                f"Layer {bn.name} normalizes axis {bn.axis}; after a {type(module).__name__} "
                f"the channels are on {where}."
            )
    scale, shift = _fold_factors(bn, channels)
    folded = copy.deepcopy(module)
    weight = folded.weight.detach().double()
    view = [-1] + [1] * (weight.dim() - 1)
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        raise ValueError("fold_into does not fold transposed convolutions.")
    bias = module.bias.detach().double() if module.bias is not None else torch.zeros_like(scale)
    with torch.no_grad():
        folded.weight.copy_(weight * scale.reshape(view))
        new_bias = bias * scale + shift
        if folded.bias is None:
            folded.bias = nn.Parameter(new_bias.to(folded.weight.dtype))
        else:
            folded.bias.copy_(new_bias)
    return folded


def fold(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference in which every ``BatchNormalization`` that
    directly follows an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` inside an
    ``nn.Sequential`` (at any depth) is merged into it (``fold_into``) and
    replaced by ``nn.Identity``. Other batch-norm layers are kept; the copy is in
    eval mode."""
    model = copy.deepcopy(model)

    def visit(module: nn.Module) -> None:
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for before, after in itertools.pairwise(names):
                first, second = module._modules[before], module._modules[after]
                if (
                    isinstance(first, _FOLDABLE)
                    and isinstance(second, BatchNormalization)
                    and second.built
                    and len(second._axes) == 1
                ):
                    module._modules[before] = fold_into(first, second)
                    module._modules[after] = nn.Identity()
        for child in module.children():
            visit(child)

    visit(model)
    return model.eval()


# --------------------------------------------------------------------------------------
# tf_keras layers

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


# --------------------------------------------------------------------------------------
# Keras weight files

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
        if layer.built:
            layer.set_weights(values)
        else:
            layer._pending_weights = [torch.as_tensor(v) for v in values]
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
