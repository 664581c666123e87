"""The C backend's inference pass: ``y = (x − μ)·γ/√(σ² + ε) + β`` with given (moving)
statistics in one pass, differentiable in x, γ and β (a frozen layer inside a training
model): ``dx = dy·γ/√(σ² + ε)`` and ``dγ, dβ`` from one reduce pass. Through the C++
nodes once they are built, through ctypes otherwise; without a node when autograd
records nothing.
"""

from __future__ import annotations

from typing import Any

import torch

from ..._layout import PARAM_DTYPE as _PARAM_DTYPE
from ..._layout import Geometry, Plan, like
from ..._math import composite_backward
from . import build, cxx
from .nodes import Wanted, cxx_kernels, cxx_nodes, needs_grad, param_grad, restrided
from .view import addr as _addr
from .view import function, native, vector

__all__ = ["NativeInferNorm", "infer_double_backward", "infer_native", "infer_pass"]


def _composite_gradients(ctx: Any, plan: Plan, dy, x, gamma, beta, mean, var):
    """The gradients of an inference pass as a differentiable composite."""
    one = torch.ones((), dtype=torch.float64)
    stats = plan.stat(mean), plan.stat(var)
    return composite_backward(ctx, dy, x, gamma, beta, plan, one, 0 * one, *stats)


def infer_double_backward(plan: Plan, dy, x, gamma, beta, mean, var, need_x, need_g, need_b):
    """The C++ inference node's backward with ``create_graph=True``."""
    ctx = Wanted((need_x, need_g, need_b, False))
    return _composite_gradients(ctx, plan, dy, x, gamma, beta, mean, var)[:3]


class NativeInferNorm(torch.autograd.Function):
    """Inference-mode normalization in C with given (moving) statistics,
    differentiable in x, γ and β (a frozen layer inside a training model)."""

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, mean, var, plan: Plan):  # type: ignore[override]
        geo = plan.geo
        pdt = _PARAM_DTYPE[x.dtype]
        vec = [vector(t, pdt) for t in (mean, var, gamma, beta)]
        y = torch.empty_like(x)
        function(plan.lib, "infer_forward", x.dtype)(
            x.data_ptr(),
            y.data_ptr(),
            native(geo).dims,
            native(geo).strides,
            geo.params,
            *(_addr(v) for v in vec),
            plan.epsilon,
            build.threads(x.numel()),
        )
        ctx.save_for_backward(x, gamma, beta, mean, var)
        ctx.plan, ctx.x_stride = plan, x.stride()
        return y

    @staticmethod
    def backward(ctx: Any, dy):  # type: ignore[override]
        x, gamma, beta, mean, var = ctx.saved_tensors
        plan = ctx.plan
        geo = plan.geo
        if torch.is_grad_enabled():
            grads = _composite_gradients(ctx, plan, dy, x, gamma, beta, mean, var)
            return (*grads[:3], None, None, None)
        x = restrided(x, ctx.x_stride)
        dy = like(dy, x)
        pdt = _PARAM_DTYPE[x.dtype]
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dgamma = param_grad(ctx, 1, gamma, pdt)
        dbeta = param_grad(ctx, 2, beta, pdt)
        vec = [vector(t, pdt) for t in (mean, var, gamma)]
        function(plan.lib, "infer_backward", x.dtype)(
            dy.data_ptr(),
            x.data_ptr(),
            _addr(dx),
            native(geo).dims,
            native(geo).strides,
            geo.params,
            *(_addr(v) for v in vec),
            plan.epsilon,
            _addr(dgamma),
            _addr(dbeta),
            build.threads(x.numel()),
        )
        return dx, dgamma, dbeta, None, None, None


def infer_native(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    geo: Geometry,
    lib: Any,
    epsilon: float,
) -> torch.Tensor:
    """The C inference pass (``native(geo)`` set, ``lib`` loaded); through the autograd
    node only when something needs a gradient."""
    if not needs_grad(x, gamma, beta):
        pdt = _PARAM_DTYPE[x.dtype]
        m, v, g, b = vector(mean, pdt), vector(var, pdt), vector(gamma, pdt), vector(beta, pdt)
        return infer_pass(geo, lib, x, g, b, m, v, epsilon)
    plan = Plan(geo, epsilon, lib=lib)
    module = cxx_nodes()
    if module is not None:
        kernels = cxx_kernels(module, geo, lib, x.dtype, "infer")
        threads = build.threads(x.numel())
        # (the C++ module's ``affine``: its inference node)
        y = module.affine(kernels, plan, x, gamma, beta, mean, var, epsilon, threads, True)
        if y is not None:  # None: an input carries a forward-mode tangent
            return y
    return NativeInferNorm.apply(x, gamma, beta, mean, var, plan)


def infer_pass(
    geo: Geometry,
    lib: Any,
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    epsilon: float,
    kernels: Any = None,
) -> torch.Tensor:
    """The inference pass without an autograd node, on variables that are already
    contiguous CPU tensors of the parameter dtype: through the C++ module once it is
    built (``kernels``: its description of this layout, when the caller keeps one),
    else through ctypes."""
    threads = build.threads(x.numel())
    module = cxx.module()
    if module is not None:
        if kernels is None:
            kernels = cxx_kernels(module, geo, lib, x.dtype, "infer")
        y = module.affine(kernels, None, x, gamma, beta, mean, var, epsilon, threads, False)
        if y is not None:  # None: an input carries a forward-mode tangent
            return y
    return _infer_ctypes(geo, lib, x, gamma, beta, mean, var, epsilon, threads)


def _infer_ctypes(
    geo: Geometry,
    lib: Any,
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    epsilon: float,
    threads: int,
) -> torch.Tensor:
    """``infer_pass`` through the library's ctypes function."""
    y = torch.empty_like(x)
    function(lib, "infer_forward", x.dtype)(
        x.data_ptr(),
        y.data_ptr(),
        native(geo).dims,
        native(geo).strides,
        geo.params,
        mean.data_ptr(),
        var.data_ptr(),
        None if gamma is None else gamma.data_ptr(),
        None if beta is None else beta.data_ptr(),
        epsilon,
        threads,
    )
    return y
