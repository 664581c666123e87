"""The fast paths: one autograd Function for training, one for inference.

Training makes one statistics pass and one normalize pass over the input:

    μ, σ² per channel
    y = (x − μ)·k + o,   k = γ·r·a_s/√(σ² + ε),  o = (d·a_s + a_b)·γ + β

so renorm (r, d) and a per-channel adjustment (a_s, a_b) cost nothing extra.
The backward is analytic, two passes (reductions Σdy and Σdy·(x − μ), then
``dx = (dy − Σdy/n − (x − μ)·Σdy(x − μ)/(n(σ² + ε)))·k``) and saves only the
input and per-channel vectors. Ghost batches are extra channels of a free view.

Two implementations share that algebra:

- ``Native*``: whole passes in C (``kernels.c``) for CPU tensors of 32/64-bit
  and (with float32 parameters) 16-bit floats, when the library could be built;
- ``Torch*`` (``backends.torch_ops``): the same passes as PyTorch operations (CUDA,
  anything else).

A double backward (``create_graph=True``) differentiates the composite formula
instead (``batchnorm._math.composite``), so ``gradgradcheck`` holds on every path.

The training node of the C pass is C++ (``autograd.cpp``, loaded by ``cxx``) once
that module is built: it calls the same kernels without Python in the step, and its
double backward calls ``double_backward`` here. ``NativeTrainNorm`` is the Python node
used until then and without a C++ compiler.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

import torch

from ..._layout import PARAM_DTYPE as _PARAM_DTYPE
from ..._layout import Geometry, Plan, like
from ..._math import clip_bounds, composite_backward, wants_grad
from . import build, cxx
from .view import addr as _addr
from .view import function, in_place, native, vector

_INF = float("inf")


# ---------------------------------------------------------------------- native passes
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
        keep = ctx is not _NO_GRAD  # a backward will read the per-channel part (2K in T)
        state = torch.empty(4 * geo.params + (_kept(geo, pdt) if keep else 0), dtype=torch.float64)
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
        x = _restrided(x, ctx.x_stride)
        dy = like(dy, x)
        pdt = _PARAM_DTYPE[x.dtype]
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dgamma = _param_grad(ctx, 1, gamma, pdt)
        dbeta = _param_grad(ctx, 2, beta, pdt)
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


def _kept(geo: Geometry, pdt: torch.dtype) -> int:
    """float64 words of per-channel state (mean and 1/√(σ² + ε) in the compute type)
    that a backward reads."""
    return geo.channels * (1 if pdt == torch.float32 else 2)


def _composite_gradients(ctx: Any, plan: Plan, state: torch.Tensor, dy, x, gamma, beta):
    """The gradients of a training pass as a differentiable composite (double backward)."""
    geo = plan.geo
    p = geo.params
    slope = plan.stat(state[2 * p : 3 * p])
    intercept = plan.stat(state[3 * p : 4 * p])
    view = x.shape != geo.shape  # through the (ghost) view the pass used
    dy = dy.reshape(geo.shape) if view else dy
    return composite_backward(ctx, dy, x, gamma, beta, plan, slope, intercept, view=view)


class _Wanted:
    """The ``needs_input_grad`` of a C++ node's inputs, for ``composite_backward``."""

    __slots__ = ("needs_input_grad",)

    def __init__(self, wanted: tuple[bool, ...]) -> None:
        self.needs_input_grad = wanted


def double_backward(plan: Plan, dy, x, gamma, beta, state, need_x, need_g, need_b):
    """What the C++ node (``_autograd.cpp``) calls for a backward with
    ``create_graph=True``: the Python node's double-backward formula."""
    ctx = _Wanted((need_x, need_g, need_b, False))
    return _composite_gradients(ctx, plan, state, dy, x, gamma, beta)[:3]


def _affine_composite_gradients(ctx: Any, plan: Plan, dy, x, gamma, beta, mean, var):
    """The gradients of an inference pass as a differentiable composite."""
    one = torch.ones((), dtype=torch.float64)
    stats = plan.stat(mean), plan.stat(var)
    return composite_backward(ctx, dy, x, gamma, beta, plan, one, 0 * one, *stats)


def affine_double_backward(plan: Plan, dy, x, gamma, beta, mean, var, need_x, need_g, need_b):
    """The C++ inference node's backward with ``create_graph=True``."""
    ctx = _Wanted((need_x, need_g, need_b, False))
    return _affine_composite_gradients(ctx, plan, dy, x, gamma, beta, mean, var)[:3]


def _cxx_nodes() -> Any:
    """The C++ nodes' module when it is loaded and may record this pass, else None: not
    under functorch transforms, and not when compiled autograd is on or configured (it
    traces Python nodes only). A backward that enables compiled autograd after a
    forward recorded a C++ node fails: set ``BATCHNORM_CPP=0`` for that."""
    module = cxx.module()
    if module is None or torch._C._are_functorch_transforms_active():
        return None
    compiled = sys.modules.get("torch._dynamo.compiled_autograd")
    if compiled is None:
        return module
    config = sys.modules.get("torch._dynamo.config")
    if getattr(compiled, "compiled_autograd_enabled", False) or getattr(
        config, "compiled_autograd", False
    ):
        return None
    return module


@functools.lru_cache(maxsize=256)
def cxx_kernels(module: Any, geo: Geometry, lib: Any, dtype: torch.dtype, kind: str) -> Any:
    """The C++ module's description of one layout's ``kind`` ("train" or "infer")
    passes (made once per layout)."""
    pdt = _PARAM_DTYPE[dtype]
    return module.Kernels(
        ctypes.cast(function(lib, f"{kind}_forward", dtype), ctypes.c_void_p).value,
        ctypes.cast(function(lib, f"{kind}_backward", dtype), ctypes.c_void_p).value,
        list(native(geo).dims),
        list(native(geo).strides),
        geo.params,
        _kept(geo, pdt),
        pdt == torch.float64,
    )


class NativeAffineNorm(torch.autograd.Function):
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
            grads = _affine_composite_gradients(ctx, plan, dy, x, gamma, beta, mean, var)
            return (*grads[:3], None, None, None)
        x = _restrided(x, ctx.x_stride)
        dy = like(dy, x)
        pdt = _PARAM_DTYPE[x.dtype]
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dgamma = _param_grad(ctx, 1, gamma, pdt)
        dbeta = _param_grad(ctx, 2, beta, pdt)
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


def _restrided(x: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """A saved x with its forward strides, which the kernels' view assumes (a
    saved-tensor hook may have returned another layout)."""
    if x.stride() == stride:
        return x
    return torch.empty_strided(x.shape, stride, dtype=x.dtype).copy_(x)


def _param_grad(
    ctx: Any, index: int, param: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """An output buffer for a parameter's gradient, when one is wanted."""
    if not wants_grad(ctx, index, param):
        return None
    return torch.empty_like(param, dtype=dtype, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------- entry points
def needs_grad(x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None) -> bool:
    """Whether autograd records this call: grad mode on and some input requires grad."""
    return torch.is_grad_enabled() and (
        x.requires_grad
        or (gamma is not None and gamma.requires_grad)
        or (beta is not None and beta.requires_grad)
    )


class _NoGradContext:
    """Stands in for an autograd context when a pass runs without a graph."""

    @staticmethod
    def save_for_backward(*tensors: Any) -> None:
        pass

    @staticmethod
    def mark_non_differentiable(*tensors: Any) -> None:
        pass

    @staticmethod
    def set_materialize_grads(value: bool) -> None:
        pass


_NO_GRAD = _NoGradContext()


def train_native(
    x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, plan: Plan
) -> tuple[torch.Tensor, torch.Tensor]:
    """The C training pass for a plan with a library: y and the state vector. Through the
    C++ module once it is built (``cxx``): with its autograd node when something needs
    a gradient, else the bare pass (no Python between the call and the kernel). Else, and
    under functorch transforms or with forward-mode tangents, ``NativeTrainNorm`` (which
    refuses tangents with PyTorch's own error)."""
    record = needs_grad(x, gamma, beta)
    module = _cxx_nodes()
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
    return NativeTrainNorm.forward(_NO_GRAD, x, gamma, beta, plan)


def writable(moving: Any, dtype: torch.dtype) -> bool:
    """Whether the C pass can update these variables in place."""
    return in_place(
        (moving.mean, moving.variance, moving.stddev, moving.renorm_mean, moving.renorm_stddev),
        dtype,
    )


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
    module = _cxx_nodes()
    if module is not None:
        kernels = cxx_kernels(module, geo, lib, x.dtype, "infer")
        threads = build.threads(x.numel())
        y = module.affine(kernels, plan, x, gamma, beta, mean, var, epsilon, threads, True)
        if y is not None:  # None: an input carries a forward-mode tangent
            return y
    return NativeAffineNorm.apply(x, gamma, beta, mean, var, plan)


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


def _configure(module: Any) -> None:
    module.set_double_backward(double_backward, affine_double_backward)


cxx.on_load(_configure)
