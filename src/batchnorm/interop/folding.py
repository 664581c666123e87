"""Folding an inference-mode batch norm into the Linear/Conv before it.

With ``s = γ/√(moving_variance + ε)``, ``W' = W·s`` (per output channel) and
``b' = (b − moving_mean)·s + β``.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from ..normalization import BatchNormalization

__all__ = ["fold", "fold_into"]

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
