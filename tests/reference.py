"""A float64 NumPy reference of TensorFlow's batch normalization, written from the
formulas (TF_SEMANTICS.md §3), with analytic gradients. It shares no code with
the library.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class State:
    """Parameters and statistics in parameter shape (float64)."""

    gamma: np.ndarray | None
    beta: np.ndarray | None
    moving_mean: np.ndarray
    moving_variance: np.ndarray


def _bshape(ndim: int, axes: list[int], param: np.ndarray) -> np.ndarray:
    """View a parameter so it broadcasts against an ``ndim`` input."""
    if param.ndim == ndim:
        return param
    shape = [1] * ndim
    shape[axes[0]] = param.size  # a single channel axis: parameters of shape (C,)
    return param.reshape(shape)


def _ema(var: np.ndarray, value: np.ndarray, momentum: float) -> np.ndarray:
    return var - (var - value) * (1.0 - momentum)


def train_step(
    x: np.ndarray,
    dy: np.ndarray,
    axes: list[int],
    state: State,
    momentum: float,
    epsilon: float,
    bessel: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, State]:
    """One training call: output, dL/dx, dL/dγ, dL/dβ for ``L = Σ y·dy``, and the new state."""
    x = x.astype(np.float64)
    dy = dy.astype(np.float64)
    red = tuple(d for d in range(x.ndim) if d not in axes)
    n = int(np.prod([x.shape[d] for d in red])) if red else 1
    mean = x.mean(axis=red, keepdims=True) if red else x.copy()
    centered = x - mean
    var = (centered**2).mean(axis=red, keepdims=True) if red else np.zeros_like(x)
    inv = 1.0 / np.sqrt(var + epsilon)
    xhat = centered * inv
    gamma = _bshape(x.ndim, axes, state.gamma) if state.gamma is not None else 1.0
    beta = _bshape(x.ndim, axes, state.beta) if state.beta is not None else 0.0
    y = xhat * gamma + beta

    def rsum(t: np.ndarray) -> np.ndarray:
        return t.sum(axis=red, keepdims=True) if red else t

    g = dy * gamma
    dx = inv * (g - rsum(g) / n - xhat * rsum(g * xhat) / n)
    pshape = state.moving_mean.shape
    dgamma = rsum(dy * xhat).reshape(pshape) if state.gamma is not None else None
    dbeta = rsum(dy).reshape(pshape) if state.beta is not None else None
    value = var * (n / max(n - 1, 1)) if bessel else var
    new = State(
        state.gamma,
        state.beta,
        _ema(state.moving_mean, mean.reshape(pshape), momentum),
        _ema(state.moving_variance, value.reshape(pshape), momentum),
    )
    return y, dx, dgamma, dbeta, new


def inference(x: np.ndarray, axes: list[int], state: State, epsilon: float) -> np.ndarray:
    """``(x − moving_mean)/√(moving_variance + ε)·γ + β``."""
    x = x.astype(np.float64)
    mean = _bshape(x.ndim, axes, state.moving_mean)
    var = _bshape(x.ndim, axes, state.moving_variance)
    gamma = _bshape(x.ndim, axes, state.gamma) if state.gamma is not None else 1.0
    beta = _bshape(x.ndim, axes, state.beta) if state.beta is not None else 0.0
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def tf_uses_bessel(
    rank: int,
    axes: list[int],
    fused: bool | None,
    unbiased: bool | None,
    float64: bool,
    features: bool = False,
) -> bool:
    """TF's moving-variance rule: Bessel-corrected exactly when its fused kernel runs
    (rank 4 with channel axis 1 or 3, rank 5 with 1 or 4, 16/32-bit, no renorm,
    virtual batches or adjustment); ``unbiased`` overrides it."""
    if unbiased is not None:
        return unbiased
    if fused is False or float64 or features:
        return False
    return (rank == 4 and axes in ([1], [3])) or (rank == 5 and axes in ([1], [4]))
