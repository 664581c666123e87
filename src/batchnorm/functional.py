"""Stateless batch-normalization math, usable without a layer.

Notation: ``x`` is the input, ``axes`` the normalized (channel) axes, and the
statistics reduce over every other axis. With ``N`` the number of reduced
elements per channel:

- ``μ = Σx / N`` and ``σ² = Σ(x − μ)² / N`` (biased; two passes, so no
  cancellation on data with a large mean);
- ``y = (x − μ) · (γ / √(σ² + ε)) + β``.

Moving statistics follow TensorFlow's update ``m ← m − (m − v)·(1 − momentum)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "broadcast_shape",
    "moments",
    "moving_average",
    "normalize",
    "reduction_dims",
]


def reduction_dims(ndim: int, axes: Sequence[int]) -> list[int]:
    """The dimensions statistics reduce over: every dimension not in ``axes``."""
    return [d for d in range(ndim) if d not in axes]


def broadcast_shape(ndim: int, axes: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """Shape with ``sizes`` on ``axes`` and 1 elsewhere (how parameters broadcast)."""
    shape = [1] * ndim
    for axis, size in zip(axes, sizes, strict=True):
        shape[axis] = size
    return shape


def moments(x: torch.Tensor, dims: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of ``x`` over ``dims`` (kept as size-1 dimensions).

    ``μ = Σx/N``, ``σ² = Σ(x − μ)²/N``: a two-pass computation, exact for data
    whose mean is large compared with its spread.
    """
    dims = list(dims)
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square().mean(dim=dims, keepdim=True)
    return mean, var


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    variance: torch.Tensor,
    offset: torch.Tensor | None,
    scale: torch.Tensor | None,
    epsilon: float,
) -> torch.Tensor:
    """``y = (x − mean) · (scale / √(variance + ε)) + offset``.

    All tensors broadcast against ``x``; ``scale``/``offset`` may be None
    (meaning 1 and 0). Subtracting the mean first keeps large-mean inputs exact,
    unlike the ``x·inv + (β − μ·inv)`` form.
    """
    inv = torch.rsqrt(variance + epsilon)
    if scale is not None:
        inv = inv * scale
    y = (x - mean) * inv
    if offset is not None:
        y = y + offset
    return y


def moving_average(
    variable: torch.Tensor, value: torch.Tensor, momentum: float | torch.Tensor
) -> torch.Tensor:
    """TensorFlow's EMA step ``variable − (variable − value)·(1 − momentum)`` (not in place)."""
    decay = 1.0 - momentum
    return variable - (variable - value.to(variable.dtype)) * decay
