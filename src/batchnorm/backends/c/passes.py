"""The C backend's training pass: one statistics pass and one normalize pass over the
input, and an analytic backward of one reduce pass and one dx pass:

    μ, σ² per channel
    y = (x − μ)·k + o,   k = γ·r·a_s/√(σ² + ε),  o = (d·a_s + a_b)·γ + β

so renorm (r, d) and a per-channel adjustment (a_s, a_b) cost nothing extra; the
backward reads ``Σdy`` and ``Σdy·(x − μ)`` and computes
``dx = (dy − Σdy/n − (x − μ)·Σdy(x − μ)/(n(σ² + ε)))·k``, saving only the input and
per-channel vectors. Ghost batches are extra channels of a free view. The kernels may
update the moving statistics in place (``_moving.update_moving`` is the definition).

The node is C++ (``autograd.cpp``, loaded by ``cxx``) once that module is built: it
calls the same kernels without Python in the step, and its double backward calls
``double_backward`` here. ``NativeTrainNorm`` is the Python node used until then and
without a C++ compiler. A double backward (``create_graph=True``) differentiates the
composite formula (``_math.composite``), so ``gradgradcheck`` holds on every path.
"""

from __future__ import annotations

from typing import Any

import torch

from ..._layout import PARAM_DTYPE as _PARAM_DTYPE
from ..._layout import Plan, like
from ..._math import clip_bounds, composite_backward
from . import build
from .nodes import (
    NO_GRAD,
    Wanted,
    cxx_kernels,
    cxx_nodes,
    kept,
    needs_grad,
    param_grad,
    restrided,
)
from .view import addr as _addr
from .view import function, in_place, native, vector

__all__ = ["NativeTrainNorm", "double_backward", "train_native", "writable"]

_INF = float("inf")


class NativeTrainNorm(torch.autograd.Function):
    """Training-mode normalization in C; returns y and the state vector (float64): per
    parameter the batch mean and biased variance (averaged over ghost batches), the
    slope r·a_s and the intercept d·a_s + a_b; then, in the compute type (float32 for
    32- and 16-bit input), per channel the mean and 1/√(σ² + ε) the backward reads."""

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, plan: Plan):  # type: ignore[override]
        geo = plan.geo
        pdt = _PARAM_DTYPE[x.dtype]
        args = _forward_arguments(plan, pdt)
        g, b = vector(gamma, pdt), vector(beta, pdt)
        y = torch.empty_like(x)
        keep = ctx is not NO_GRAD  # a backward will read the per-channel part (2K in T)
        state = torch.empty(4 * geo.params + (kept(geo, pdt) if keep else 0), dtype=torch.float64)
        function(plan.lib, "train_forward", x.dtype)(
            x.data_ptr(),
            y.data_ptr(),
            native(geo).dims,
            native(geo).strides,
            geo.params,
            _addr(g),
            _addr(b),
            plan.epsilon,
            _addr(args[0]),
            _addr(args[1]),
            *args[2:5],
            _addr(args[5]),
            _addr(args[6]),
            state.data_ptr(),
            _addr(args[7]),
            _addr(args[8]),
            _addr(args[9]),
            *args[10:],
            int(keep),
            build.threads(x.numel()),
        )
        ctx.save_for_backward(x, gamma, beta)
        ctx.plan, ctx.state, ctx.x_stride = plan, state, x.stride()
        ctx.mark_non_differentiable(state)
        ctx.set_materialize_grads(False)  # no zeros for the state's (absent) gradient
        return y, state

    @staticmethod
    def backward(ctx: Any, dy, _dstate):  # type: ignore[override]
        if dy is None:  # y did not reach the loss
            return None, None, None, None
        x, gamma, beta = ctx.saved_tensors
        plan, state = ctx.plan, ctx.state
        geo = plan.geo
        if torch.is_grad_enabled():  # double backward: differentiate the composite formula
            return _composite_gradients(ctx, plan, state, dy, x, gamma, beta)
        x = restrided(x, ctx.x_stride)
        dy = like(dy, x)
        pdt = _PARAM_DTYPE[x.dtype]
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dgamma = param_grad(ctx, 1, gamma, pdt)
        dbeta = param_grad(ctx, 2, beta, pdt)
        g = vector(gamma, pdt)
        function(plan.lib, "train_backward", x.dtype)(
            dy.data_ptr(),
            x.data_ptr(),
            _addr(dx),
            native(geo).dims,
            native(geo).strides,
            geo.params,
            _addr(g),
            state.data_ptr(),
            _addr(dgamma),
            _addr(dbeta),
            build.threads(x.numel()),
        )
        return dx, dgamma, dbeta, None


def _forward_arguments(plan: Plan, pdt: torch.dtype) -> tuple[Any, ...]:
    """The C forward's renorm, adjustment and moving-statistics arguments, tensors as
    tensors: (r_mean, r_stddev, rmin, rmax, dmax, a_s, a_b, moving mean, variance,
    stddev, momentum, renorm momentum, Bessel)."""
    rm = rs = a_s = a_b = None
    rmin, rmax, dmax = -_INF, _INF, _INF
    mv = plan.moving
    if plan.renorm is not None:
        if mv is None or mv.stddev is None:  # else the moving ones below, updated in place
            rm, rs = vector(plan.renorm[0], pdt), vector(plan.renorm[1], pdt)
        rmin, rmax, dmax = clip_bounds(plan.renorm[2])
    if plan.adjustment is not None:
        a_s, a_b = vector(plan.adjustment[0], pdt), vector(plan.adjustment[1], pdt)
    if mv is None:
        return rm, rs, rmin, rmax, dmax, a_s, a_b, None, None, None, 1.0, 1.0, 0
    if mv.stddev is not None:  # the renorm statistics are updated too
        rm, rs = mv.renorm_mean, mv.renorm_stddev
    return (
        rm,
        rs,
        rmin,
        rmax,
        dmax,
        a_s,
        a_b,
        mv.mean,
        mv.variance,
        mv.stddev,
        float(mv.momentum),
        float(mv.renorm_momentum),
        int(mv.unbiased),
    )


def _composite_gradients(ctx: Any, plan: Plan, state: torch.Tensor, dy, x, gamma, beta):
    """The gradients of a training pass as a differentiable composite (double backward)."""
    geo = plan.geo
    p = geo.params
    slope = plan.stat(state[2 * p : 3 * p])
    intercept = plan.stat(state[3 * p : 4 * p])
    view = x.shape != geo.shape  # through the (ghost) view the pass used
    dy = dy.reshape(geo.shape) if view else dy
    return composite_backward(ctx, dy, x, gamma, beta, plan, slope, intercept, view=view)


def double_backward(plan: Plan, dy, x, gamma, beta, state, need_x, need_g, need_b):
    """What the C++ node (``autograd.cpp``) calls for a backward with
    ``create_graph=True``: the Python node's double-backward formula."""
    ctx = Wanted((need_x, need_g, need_b, False))
    return _composite_gradients(ctx, plan, state, dy, x, gamma, beta)[:3]


def train_native(
    x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Plan
) -> tuple[torch.Tensor, torch.Tensor]:
    """The C training pass for a plan with a library: y and the state vector. Through the
    C++ module once it is built (``cxx``): with its autograd node when something needs
    a gradient, else the bare pass (no Python between the call and the kernel). Else, and
    under functorch transforms or with forward-mode tangents, ``NativeTrainNorm`` (which
    refuses tangents with PyTorch's own error)."""
    record = needs_grad(x, gamma, beta)
    module = cxx_nodes()
    if module is not None:
        kernels = cxx_kernels(module, plan.geo, plan.lib, x.dtype, "train")
        out = module.train(
            kernels,
            plan,
            x,
            gamma,
            beta,
            plan.epsilon,
            *_forward_arguments(plan, _PARAM_DTYPE[x.dtype]),
            build.threads(x.numel()),
            record,
        )
        if out is not None:  # None: an input carries a forward-mode tangent
            return out
    if record:
        return NativeTrainNorm.apply(x, gamma, beta, plan)
    return NativeTrainNorm.forward(NO_GRAD, x, gamma, beta, plan)


def writable(moving: Any, dtype: torch.dtype) -> bool:
    """Whether the C pass can update these variables in place."""
    return in_place(
        (moving.mean, moving.variance, moving.stddev, moving.renorm_mean, moving.renorm_stddev),
        dtype,
    )
