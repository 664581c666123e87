"""Moving statistics: what a training step feeds them and TensorFlow's update rules.

``m ← m − (m − v)·(1 − momentum)`` (``tf.compat.v1.assign_moving_average`` without
debiasing) for the moving mean and variance; with renorm, the moving standard
deviation and the renorm statistics too (``MovingStatistics``). A backend may apply the
update inside its training pass; ``update_moving`` is the definition it is tested
against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "BatchStatistics",
    "MovingStatistics",
    "assign_moving_average",
    "moving_average",
    "update_moving",
]


def moving_average(
    variable: torch.Tensor, value: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """TensorFlow's EMA step ``variable − (variable − value)·(1 − momentum)`` (a new tensor)."""
    return torch.lerp(variable, value.to(variable.dtype), 1.0 - momentum)


def assign_moving_average(
    variable: torch.Tensor, value: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """The same EMA step in place (``tf.compat.v1.assign_moving_average`` without debiasing)."""
    return variable.lerp_(value.to(variable.dtype), 1.0 - momentum)


class BatchStatistics:
    """What a training step feeds the moving averages (in parameter layout).

    ``mean``/``variance`` are the batch statistics (averaged over ghost batches)
    and ``unbiased_variance`` the variance with Bessel's factor ``n/max(n − 1, 1)``
    applied per ghost batch before averaging (``n``: values, or summed mask
    weights, per channel and ghost batch); it is computed on first use when only
    the common factor is given. ``packed`` (a float64 vector whose first ``2·P``
    entries are the mean and the variance, reshaped to ``shape`` on first use)
    stands in for both when the values come from the C pass.
    """

    def __init__(
        self,
        mean: torch.Tensor | None,
        variance: torch.Tensor | None,
        unbiased_variance: torch.Tensor | None = None,
        bessel_factor: float = 1.0,
        *,
        packed: torch.Tensor | None = None,
        shape: Sequence[int] | None = None,
    ) -> None:
        self._mean = mean
        self._variance = variance
        self._unbiased = unbiased_variance
        self._factor = bessel_factor
        self._packed = packed
        self._shape = shape

    def _unpack(self) -> None:
        shape = list(self._shape)
        params = math.prod(shape)
        self._mean = self._packed[:params].view(shape)
        self._variance = self._packed[params : 2 * params].view(shape)
        self._packed = None

    @property
    def mean(self) -> torch.Tensor:
        if self._mean is None:
            self._unpack()
        return self._mean

    @mean.setter
    def mean(self, value: torch.Tensor) -> None:
        if self._mean is None and self._packed is not None:
            self._unpack()
        self._mean = value

    @property
    def variance(self) -> torch.Tensor:
        if self._variance is None:
            self._unpack()
        return self._variance

    @variance.setter
    def variance(self, value: torch.Tensor) -> None:
        if self._variance is None and self._packed is not None:
            self._unpack()
        self._variance = value

    @property
    def unbiased_variance(self) -> torch.Tensor:
        if self._unbiased is None:
            self._unbiased = self.variance * self._factor
        return self._unbiased


@dataclass(slots=True)
class MovingStatistics:
    """The variables a training step updates in place (parameter layout).

    ``mean ← EMA(mean, μ)`` and, without renorm, ``variance ← EMA(variance, v)``
    with ``v = σ²·n/max(n − 1, 1)`` when ``unbiased`` else ``σ²``. With renorm
    (``stddev`` given): ``stddev ← EMA(stddev, √(v + ε))``, ``variance =
    max(stddev² − ε, 0)``, ``renorm_mean ← EMA(renorm_mean, μ)`` and
    ``renorm_stddev ← EMA(renorm_stddev, √(σ² + ε))`` with ``renorm_momentum``.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    momentum: float
    unbiased: bool = False
    stddev: torch.Tensor | None = None
    renorm_mean: torch.Tensor | None = None
    renorm_stddev: torch.Tensor | None = None
    renorm_momentum: float = 0.99


def update_moving(moving: MovingStatistics, stats: BatchStatistics, epsilon: float) -> None:
    """Apply one training step's updates to ``moving`` in place (TensorFlow's rules).

    Under a ``torch.func`` transform the moving statistics must be inputs of the
    transformed function (``torch.func.functional_call(layer, (params, buffers), x)``),
    as for ``torch.nn.BatchNorm``: functorch refuses in-place updates of captured
    tensors with transformed values, which this reports as a RuntimeError naming the
    fix, before any variable changes.
    """
    if torch._C._are_functorch_transforms_active():
        try:  # (TF's own subtraction: functorch has no batching rule for lerp_)
            _update_moving(moving, stats, epsilon, _assign_sub)
        except RuntimeError as error:
            raise RuntimeError(
                "training under a torch.func transform (grad, vmap, jacrev, ...) updates "
                "the moving statistics in place, so they must be inputs of the "
                "transformed function, not captured by it: pass the layer's buffers in, "
                "e.g. torch.func.functional_call(layer, (parameters, buffers), x) with "
                "buffers batched like x under vmap, or call the layer with "
                f"training=False. PyTorch said: {error}"
            ) from error
        return
    _update_moving(moving, stats, epsilon)


def _assign_sub(
    variable: torch.Tensor, value: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """``assign_moving_average`` as TensorFlow writes it: ``variable −= (variable −
    value)·(1 − momentum)``."""
    return variable.sub_((variable - value.to(variable.dtype)) * (1.0 - momentum))


def _update_moving(
    moving: MovingStatistics,
    stats: BatchStatistics,
    epsilon: float,
    assign_moving_average: Callable[..., torch.Tensor] = assign_moving_average,
) -> None:
    value = stats.unbiased_variance if moving.unbiased else stats.variance
    assign_moving_average(moving.mean, stats.mean, moving.momentum)
    if moving.stddev is not None:
        stddev = assign_moving_average(moving.stddev, torch.sqrt(value + epsilon), moving.momentum)
        moving.variance.copy_(torch.relu(stddev.square() - epsilon))
        assign_moving_average(moving.renorm_mean, stats.mean, moving.renorm_momentum)
        assign_moving_average(
            moving.renorm_stddev, torch.sqrt(stats.variance + epsilon), moving.renorm_momentum
        )
    else:
        assign_moving_average(moving.variance, value, moving.momentum)
