"""Converting a model to synchronized statistics: ``convert_sync_batchnorm``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..normalization import BatchNormalization
from .torch_nn import from_torch

__all__ = ["convert_sync_batchnorm"]


def convert_sync_batchnorm(
    module: nn.Module, process_group: Any = None, torch_batchnorm: bool = False
) -> nn.Module:
    """Switch every ``BatchNormalization`` in ``module`` to synchronized statistics over
    ``process_group`` (in place; weights and statistics are kept), with the rules of
    ``synchronized=True`` at construction: TensorFlow's non-fused ones, so a layer that
    follows TF's moving-variance rule feeds the biased variance from then on. With
    ``torch_batchnorm=True`` every ``torch.nn.BatchNorm*`` is first replaced by the
    equivalent ``BatchNormalization`` (``batchnorm.from_torch``). Returns the module
    (the replacement itself when ``module`` is a batch-norm module)."""
    if torch_batchnorm:
        module = from_torch(module)
    layers = [sub for sub in module.modules() if isinstance(sub, BatchNormalization)]
    fused = [layer.name for layer in layers if layer._fused_arg]
    if fused:  # checked for every layer before any changes
        raise ValueError(
            f"Layers {fused} have fused=True, which synchronized statistics do not support "
            "(TensorFlow's synchronized layer uses the non-fused rules); nothing was changed."
        )
    for layer in layers:
        layer._synchronize(process_group)
    return module
