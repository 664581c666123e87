"""Folding an inference-mode batch norm into the Linear/Conv before it.

With ``s = γ/√(moving_variance + ε)``, ``W' = W·s`` (per output channel) and
``b' = (b − moving_mean)·s + β``, computed in float64.

``fold_into`` folds one pair; ``fold`` finds every pair of a model (``_fold_pairs``:
``torch.fx`` tracing, ``nn.Sequential`` neighbours as the fallback) and returns a copy
of the model with each pair's module folded and its batch norm replaced by
``nn.Identity``, and, on request, a ``FoldReport`` of what was folded and why the
other batch-norm layers were kept.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Literal, TypeVar, overload

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from ..normalization import BatchNormalization
from ._fold_pairs import FOLDABLE, find_pairs

__all__ = ["FoldReport", "fold", "fold_into"]

M = TypeVar("M", bound=nn.Module)


def _fold_problem(module: nn.Module, bn: BatchNormalization) -> str | None:
    """Why ``bn`` cannot fold into ``module`` (a Linear/Conv), or None.

    Foldable means real moving statistics (not the placeholders of an unbuilt layer; a
    layer converted by ``from_torch`` or loaded holds real ones before its build) and
    one channel axis that is the module's output channel: the last axis after a Linear,
    axis 1 after a Conv. Before the build the axis is the constructor's and the rank
    a Conv's batched output rank; after a Linear an unbuilt layer's axis 1 counts as
    the last axis (a 2-D ``(N, C)`` output, what torch's own Linear → BatchNorm1d
    fusion assumes: ``from_torch`` gives such layers)."""
    variables = [bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta]
    if any(v is not None and is_lazy(v) for v in variables):
        return (
            f"Layer {bn.name} is not built: its variables are placeholders until its first "
            "call (call the model once, build() the layer or load its weights first)."
        )
    linear = isinstance(module, nn.Linear)
    if bn.built:
        axes, rank = list(bn._axes), bn._input_rank
    else:
        axes = [bn.axis] if isinstance(bn.axis, int) else list(bn.axis)
        rank = 2 if linear else module.weight.dim()  # (N, C), or a Conv's batched output
    if len(axes) != 1:
        return (
            f"Layer {bn.name} normalizes over axes {bn.axis}; only a single channel axis "
            "folds into a Linear or Conv."
        )
    axis = axes[0]
    where = "the last axis" if linear else "axis 1"
    if (axis + rank if axis < 0 else axis) != (rank - 1 if linear else 1):
        return (
            f"Layer {bn.name} normalizes axis {bn.axis}; after a {type(module).__name__} the "
            f"channels are on {where}."
        )
    declared = bn._declared_dtype
    if declared is not None and declared != module.weight.dtype:
        return (
            f"Layer {bn.name} computes in {declared} (its dtype) while the "
            f"{type(module).__name__} before it outputs {module.weight.dtype}: folding would "
            "change the output's dtype."
        )
    channels = module.out_features if linear else module.out_channels
    if bn.moving_mean.numel() != channels:
        return (
            f"Layer {bn.name} has {bn.moving_mean.numel()} channels; the "
            f"{type(module).__name__} before it has {channels} outputs."
        )
    return None


def _fold_factors(bn: BatchNormalization) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (s, t) with ``bn(z) = z·s + t`` in inference, float64."""
    mean = bn.moving_mean.detach().double().reshape(-1)
    var = bn.moving_variance.detach().double().reshape(-1)
    inv = torch.rsqrt(var + bn.epsilon)
    gamma = bn.gamma.detach().double().reshape(-1) if bn.gamma is not None else 1.0
    beta = bn.beta.detach().double().reshape(-1) if bn.beta is not None else 0.0
    scale = inv * gamma
    return scale, beta - mean * scale


def fold_into(module: nn.Module, bn: BatchNormalization) -> nn.Module:
    """A copy of ``module`` (``nn.Linear`` or ``nn.Conv1d/2d/3d``) whose output equals
    ``bn(module(x))`` with ``bn`` in inference mode (moving statistics):

        W' = W·s,  b' = (b − moving_mean)·s + β,  s = γ/√(moving_variance + ε)

    per output channel, computed in float64 and stored in the module's dtype. ``bn``
    must hold real moving statistics (built, converted by ``from_torch`` or loaded) and
    normalize the module's output channel only: the last axis after a Linear, axis 1
    after a Conv. Renorm and ghost-batch layers fold too (their inference is plain
    batch norm). ValueError naming the problem otherwise; ``module`` and ``bn`` are
    left unchanged."""
    if not isinstance(module, FOLDABLE):
        raise ValueError(
            "`module` must be an nn.Linear or nn.Conv1d/2d/3d (fold_into folds into them); "
            f"received {type(module).__name__}."
        )
    if not isinstance(bn, BatchNormalization):
        raise ValueError(f"`bn` must be a BatchNormalization; received {type(bn).__name__}.")
    problem = _fold_problem(module, bn)
    if problem is not None:
        raise ValueError(problem)
    scale, shift = _fold_factors(bn)
    folded = copy.deepcopy(module)
    weight = folded.weight.detach().double()
    scale, shift = scale.to(weight.device), shift.to(weight.device)
    view = [-1] + [1] * (weight.dim() - 1)
    bias = module.bias.detach().double() if module.bias is not None else torch.zeros_like(scale)
    with torch.no_grad():
        folded.weight.copy_(weight * scale.reshape(view))
        new_bias = bias * scale + shift
        if folded.bias is None:
            folded.bias = nn.Parameter(new_bias.to(folded.weight.dtype))
        else:
            folded.bias.copy_(new_bias)
    return folded


@dataclass
class FoldReport:
    """What ``fold(model, report=True)`` did; names are those of
    ``model.named_modules()``.

    - ``folded``: ``(module name, batch-norm name)`` of every merged pair, in the
      order of the forward (of the ``nn.Sequential`` walk in the fallback).
    - ``unfolded``: ``{batch-norm name: reason}`` for every ``BatchNormalization``
      kept as it was (it then runs in eval mode in the returned model).
    - ``traced``: True when ``torch.fx`` traced the model; False when tracing failed
      and only neighbours in an ``nn.Sequential`` were considered, ``trace_error``
      then naming the error.

    ``str(report)`` lists all of it, one line each."""

    folded: list[tuple[str, str]] = field(default_factory=list)
    unfolded: dict[str, str] = field(default_factory=dict)
    traced: bool = True
    trace_error: str | None = None

    def __str__(self) -> str:
        how = "torch.fx" if self.traced else f"nn.Sequential walk ({self.trace_error})"
        lines = [f"fold ({how}): {len(self.folded)} folded, {len(self.unfolded)} kept"]
        lines += [f"  folded {bn!r} into {module!r}" for module, bn in self.folded]
        lines += [f"  kept {bn!r}: {reason}" for bn, reason in self.unfolded.items()]
        return "\n".join(lines)


@overload
def fold(model: M, *, report: Literal[False] = False) -> M: ...


@overload
def fold(model: M, *, report: Literal[True]) -> tuple[M, FoldReport]: ...


def fold(model: M, *, report: bool = False) -> M | tuple[M, FoldReport]:
    """A copy of ``model`` for inference (in eval mode) in which every
    ``BatchNormalization`` that directly follows an ``nn.Linear`` or
    ``nn.Conv1d/2d/3d`` is merged into it (``fold_into``) and replaced by
    ``nn.Identity``, in any module structure; the copy is of the model's own class
    (a deep copy with those submodules replaced), and ``model`` is left unchanged.

    How pairs are found: ``torch.fx`` traces the model (a batchnorm layer is one call)
    and a pair is a Linear/Conv call whose output feeds nothing but one batch-norm
    call on it alone, each module called once and registered under one name. When
    the model cannot be traced (data-dependent control flow, non-traceable code), a
    ``UserWarning`` names the error and only neighbours inside an ``nn.Sequential``
    are folded. A batch norm is kept (in eval mode) when anything else reads the
    module's output, it follows anything else (an activation, an addition), either
    module is called more than once, the layer is not built, or its axis is not the
    module's channel axis.

    With ``report=True`` returns ``(folded_model, FoldReport)``: the folded pairs and
    each kept layer with its reason (``print(report)`` lists them)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; received {type(model).__name__}.")
    if not isinstance(report, bool):
        raise TypeError(f"`report` must be a bool; received {report!r}.")
    result = copy.deepcopy(model).eval()
    pairs, reasons, trace_error = find_pairs(result)
    if trace_error is not None:
        warnings.warn(
            f"batchnorm.fold: torch.fx could not trace {type(model).__name__} "
            f"({trace_error}); only Linear/Conv → BatchNormalization pairs next to each "
            "other in an nn.Sequential are folded (fold(model, report=True) lists the "
            "layers kept).",
            UserWarning,
            stacklevel=2,
        )
    modules = dict(result.named_modules())
    folded: list[tuple[str, str]] = []
    for module_name, bn_name in pairs:
        module, bn = modules[module_name], modules[bn_name]
        problem = _fold_problem(module, bn)
        if problem is not None:
            reasons[bn_name] = problem
            continue
        _replace(result, module_name, fold_into(module, bn))
        _replace(result, bn_name, nn.Identity())
        folded.append((module_name, bn_name))
    result.eval()
    if not report:
        return result
    unfolded = {name: reasons[name] for name in modules if name in reasons}
    return result, FoldReport(folded, unfolded, trace_error is None, trace_error)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where submodule ``name`` (dotted) is registered."""
    *path, last = name.split(".")
    parent = root.get_submodule(".".join(path)) if path else root
    parent._modules[last] = new
