"""``torch.nn`` batch norm: ``from_torch`` and ``to_torch``.

PyTorch's batch norm is TensorFlow's with the channel on axis 1, ``momentum_tf =
1 − momentum_torch``, ``center = scale = affine`` and the Bessel-corrected
moving variance (``unbiased_moving_variance=True``); outputs and running
statistics then agree in training and in evaluation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .._module_protocols import seed_lazy_buffers
from ..normalization import BatchNormalization

__all__ = ["from_torch", "to_torch"]

_TORCH_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_LAZY_BN = (nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)
_RANKS = {nn.BatchNorm2d: 4, nn.BatchNorm3d: 5}


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
        momentum=_complement(bn.momentum),
        epsilon=bn.eps,
        center=bn.affine,
        scale=bn.affine,
        unbiased_moving_variance=True,
        synchronized=isinstance(bn, nn.SyncBatchNorm),
        process_group=getattr(bn, "process_group", None),
    )
    if isinstance(bn, _LAZY_BN) and bn.has_uninitialized_params():  # the first call builds it
        layer.train(bn.training)
        return layer
    values = [bn.weight, bn.bias] if bn.affine else []
    values += [bn.running_mean, bn.running_var]
    values = [v.detach() for v in values]
    kind = bn.cls_to_become if isinstance(bn, _LAZY_BN) else type(bn)  # (a loaded lazy one)
    rank = next((r for cls, r in _RANKS.items() if issubclass(kind, cls)), None)
    if rank is not None:  # BatchNorm2d/3d fix the input's rank: built at once
        if bn.running_mean.dtype == torch.float64:
            layer._inferred_dtype = torch.float64
        layer.build((None, bn.running_mean.numel(), *[None] * (rank - 2)))
        layer.set_weights(values)
    else:  # BatchNorm1d takes 2-D and 3-D input: real variables, the rank fixed by the call
        layer._load_weights(values)
    layer.to(bn.running_mean.device)
    layer.train(bn.training)
    return layer


def _complement(momentum: float) -> float:
    """``1 − momentum`` (TensorFlow's momentum from PyTorch's and back) as the shortest
    decimal that gives back ``momentum``: 0.1 ↔ 0.9, not 0.09999999999999998."""
    exact = 1.0 - momentum
    for digits in range(1, 18):
        short = float(f"{exact:.{digits}g}")
        if 1.0 - short == momentum:
            return short
    return exact


def from_torch(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``torch.nn.BatchNorm1d/2d/3d`` and ``SyncBatchNorm``
    replaced by an equivalent ``BatchNormalization`` with the same numbers: ``axis=1``,
    momentum ``1 − m``, ``eps``, the unbiased moving variance, and the weights and
    running statistics as real parameters and buffers from the start (an optimizer or
    checkpoint made right after the conversion holds them), on the module's device.
    ``BatchNorm2d``/``3d`` layers are built for 4-D/5-D input; a ``BatchNorm1d`` layer
    fixes its rank (2-D or 3-D) on its first call; a ``LazyBatchNorm*`` becomes an
    unbuilt layer while it holds placeholders, and a layer with its values once they were
    loaded. The copy keeps the model's sharing: a module registered
    twice (or a tied weight) is one object in the copy too, and a batch-norm module
    registered under several names becomes one layer. A batch-norm module itself is
    returned converted."""
    if isinstance(module, _TORCH_BN + _LAZY_BN):
        return _convert(module)
    module = copy.deepcopy(module, seed_lazy_buffers({}, module.buffers()))
    converted: dict[int, BatchNormalization] = {}
    for parent in list(module.modules()):
        for name, child in parent._modules.items():
            if isinstance(child, _TORCH_BN + _LAZY_BN):
                if id(child) not in converted:
                    converted[id(child)] = _convert(child)
                parent._modules[name] = converted[id(child)]
    return module


def to_torch(layer: BatchNormalization, inference_only: bool = False) -> nn.Module:
    """The ``torch.nn.BatchNorm{1,2,3}d`` equivalent of a layer holding its weights, for
    configurations PyTorch can express (channel axis 1, center == scale, no renorm,
    ghost batches or adjustment, and the unbiased moving variance unless
    ``inference_only``); ValueError naming the feature otherwise. A layer whose weights
    came before its first call (``from_torch`` of a ``BatchNorm1d``, a Keras file) and
    whose input rank is not fixed yet gives ``BatchNorm1d``, which takes 2-D and 3-D
    input (TensorFlow's rule for them is the biased moving variance)."""
    if not layer.built and layer._held_shape() is None:
        raise ValueError(
            f"Layer {layer.name} is not built and holds no weights yet (its variables are "
            "placeholders); call it once or build() it first."
        )
    rank = layer._input_rank if layer.built else None
    axis = layer.axis if layer.built else layer._config_axis
    bessel = layer._bessel if layer.built else bool(layer.unbiased_moving_variance)
    problems = {
        "axis": axis not in (1, [1]),
        "renorm": layer.renorm,
        "virtual_batch_size": layer.virtual_batch_size is not None,
        "adjustment": layer.adjustment is not None,
        "center != scale": layer.center != layer.scale,
        "biased moving variance (use inference_only=True)": not bessel and not inference_only,
        "rank": rank not in (None, 2, 3, 4, 5),
    }
    bad = [name for name, problem in problems.items() if problem]
    if bad:
        raise ValueError(f"torch.nn.BatchNorm cannot express {bad} of layer {layer.name}.")
    cls = {None: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d}
    cls.update({4: nn.BatchNorm2d, 5: nn.BatchNorm3d})
    channels = layer.moving_mean.numel()
    module = cls[rank](
        channels,
        eps=layer.epsilon,
        momentum=_complement(layer.momentum),
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
