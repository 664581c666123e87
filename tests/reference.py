"""A float64 NumPy reference of TensorFlow's batch normalization, written from the
formulas (TF_SEMANTICS.md §3), with analytic gradients. It shares no code with
the library: ghost batches are explicit index sets looped over in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class State:
    """Parameters and statistics in parameter shape (float64); renorm ones may be None."""

    gamma: np.ndarray | None
    beta: np.ndarray | None
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    moving_stddev: np.ndarray | None = None
    renorm_mean: np.ndarray | None = None
    renorm_stddev: np.ndarray | None = None


@dataclass
class Options:
    """Everything besides the state that decides a training step."""

    momentum: float = 0.99
    epsilon: float = 1e-3
    bessel: bool = False
    renorm: bool = False
    clipping: dict[str, float] = field(default_factory=dict)
    renorm_momentum: float = 0.99
    virtual_batch_size: int | None = None
    grouping: str = "strided"


def _channel_view(ndim: int, axes: list[int], param: np.ndarray) -> np.ndarray:
    """View a parameter so it broadcasts against an ``ndim`` input."""
    if param.ndim == ndim:
        return param
    if param.ndim == ndim + 1:  # TF's ghost-batch layout [1, 1, ...]
        return param.reshape(param.shape[1:])
    shape = [1] * ndim
    shape[axes[0]] = param.size  # a single channel axis: parameters of shape (C,)
    return param.reshape(shape)


def _ema(var: np.ndarray, value: np.ndarray, momentum: float) -> np.ndarray:
    return var - (var - value) * (1.0 - momentum)


def ghost_index_sets(batch: int, vbs: int | None, grouping: str) -> list[np.ndarray]:
    """Example indices of each ghost batch (one set holding everything without vbs)."""
    if vbs is None:
        return [np.arange(batch)]
    groups = batch // vbs
    if grouping == "strided":  # TF: ghost g holds g, g+G, g+2G, ...
        return [np.arange(g, batch, groups) for g in range(groups)]
    return [np.arange(g * vbs, (g + 1) * vbs) for g in range(groups)]


def train_step(
    x: np.ndarray,
    dy: np.ndarray,
    axes: list[int],
    state: State,
    options: Options,
    mask: np.ndarray | None = None,
    adjustment: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, State]:
    """One training call: y, dL/dx, dL/dγ, dL/dβ for ``L = Σ y·dy``, and the new state.

    ``mask`` has the input's shape without the channel axes; ``adjustment`` is
    ``(a_s, a_b)`` broadcastable to ``x``.
    """
    o = options
    x = x.astype(np.float64)
    dy = dy.astype(np.float64)
    nd = x.ndim
    red = tuple(d for d in range(nd) if d not in axes)  # includes the batch dim 0
    w = np.ones_like(x)
    if mask is not None:
        w = w * np.expand_dims(mask.astype(np.float64), tuple(axes))
    pshape = state.moving_mean.shape
    chan = lambda p: _channel_view(nd, axes, p)  # noqa: E731

    def rsum(t: np.ndarray) -> np.ndarray:
        return t.sum(axis=red, keepdims=True) if red else t

    groups = ghost_index_sets(x.shape[0], o.virtual_batch_size, o.grouping)
    means, variances, unbiased = [], [], []
    for idx in groups:
        xg, wg = x[idx], w[idx]
        total = rsum(wg)
        mean = np.where(total > 0, rsum(wg * xg) / np.where(total > 0, total, 1), 0.0)
        var = np.where(total > 0, rsum(wg * (xg - mean) ** 2) / np.where(total > 0, total, 1), 0.0)
        means.append(mean)
        variances.append(var)
        unbiased.append(var * total / np.maximum(total - 1, 1))
    batch_mean = np.mean(means, axis=0)
    batch_var = np.mean(variances, axis=0)
    batch_unbiased = np.mean(unbiased, axis=0)

    r = np.ones_like(batch_mean)
    d = np.zeros_like(batch_mean)
    if o.renorm:
        s = np.sqrt(batch_var + o.epsilon)
        denom = np.maximum(chan(state.renorm_stddev), np.sqrt(o.epsilon))
        r = s / denom
        d = (batch_mean - chan(state.renorm_mean)) / denom
        if "rmin" in o.clipping:
            r = np.maximum(r, o.clipping["rmin"])
        if "rmax" in o.clipping:
            r = np.minimum(r, o.clipping["rmax"])
        if "dmax" in o.clipping:
            d = np.clip(d, -o.clipping["dmax"], o.clipping["dmax"])
    a_s, a_b = adjustment if adjustment is not None else (1.0, 0.0)
    gamma = chan(state.gamma) if state.gamma is not None else 1.0
    beta = chan(state.beta) if state.beta is not None else 0.0
    scale = r * a_s * gamma  # y = x̂·scale + offset
    offset = (d * a_s + a_b) * gamma + beta

    y = np.empty_like(x)
    dx = np.empty_like(x)
    xhat_all = np.empty_like(x)
    for idx, mean, var in zip(groups, means, variances, strict=True):
        inv = 1.0 / np.sqrt(var + o.epsilon)
        xhat = (x[idx] - mean) * inv
        xhat_all[idx] = xhat
        # scale/offset vary only per channel across ghost batches (adjustment, which may
        # vary per example, cannot be combined with virtual batches)
        y[idx] = xhat * scale + offset
        g = dy[idx] * scale
        wg = w[idx]
        total = rsum(wg)
        frac = np.where(total > 0, wg / np.where(total > 0, total, 1), 0.0)
        dx[idx] = inv * (g - frac * (rsum(g) + xhat * rsum(g * xhat)))
    # dγ = Σ dy·(x̂·r·a_s + d·a_s + a_b), dβ = Σ dy, summed to the parameter shape
    dgamma = None
    if state.gamma is not None:
        contrib = dy * (xhat_all * r * a_s + d * a_s + a_b)
        dgamma = rsum(contrib).reshape(pshape)
    dbeta = rsum(dy).reshape(pshape) if state.beta is not None else None

    value = batch_unbiased if o.bessel else batch_var
    new = replace(
        state, moving_mean=_ema(state.moving_mean, batch_mean.reshape(pshape), o.momentum)
    )
    if o.renorm:
        stddev = _ema(state.moving_stddev, np.sqrt(value + o.epsilon).reshape(pshape), o.momentum)
        new.moving_stddev = stddev
        new.moving_variance = np.maximum(stddev**2 - o.epsilon, 0.0)
        new.renorm_mean = _ema(state.renorm_mean, batch_mean.reshape(pshape), o.renorm_momentum)
        new.renorm_stddev = _ema(
            state.renorm_stddev, np.sqrt(batch_var + o.epsilon).reshape(pshape), o.renorm_momentum
        )
    else:
        new.moving_variance = _ema(state.moving_variance, value.reshape(pshape), o.momentum)
    return y, dx, dgamma, dbeta, new


def inference(x: np.ndarray, axes: list[int], state: State, epsilon: float) -> np.ndarray:
    """``(x − moving_mean)/√(moving_variance + ε)·γ + β``."""
    x = x.astype(np.float64)
    nd = x.ndim
    mean = _channel_view(nd, axes, state.moving_mean)
    var = _channel_view(nd, axes, state.moving_variance)
    gamma = _channel_view(nd, axes, state.gamma) if state.gamma is not None else 1.0
    beta = _channel_view(nd, axes, state.beta) if state.beta is not None else 0.0
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


def state_of(layer: Any) -> State:
    """A layer's variables as a float64 reference state."""

    def get(name: str) -> np.ndarray | None:
        value = getattr(layer, name, None)
        return None if value is None else value.detach().double().cpu().numpy().copy()

    names = (
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
        "moving_stddev",
        "renorm_mean",
        "renorm_stddev",
    )
    return State(*[get(n) for n in names])
