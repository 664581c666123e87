"""The layer's short call: from ``__call__`` straight to the C passes.

A built ``BatchNormalization`` called eagerly on a dense CPU tensor whose dtype the
kernels take, with nothing the general path exists for (hooks, a mask, NumPy or
symbolic input, an activity regularizer, synchronized statistics, ``check_numerics``,
tracing or compiling, a subclass's own ``call``), runs the same passes as
``call`` with a fraction of its Python: what depends only on the input's shape,
strides and dtype and on the mode (the kernels' view, the ghost-batch strides) is
worked out once per layout and kept on the layer, and everything that can change
between calls (the variables and their dtype, training mode, grad mode, the
renorm clipping, the adjustment's values) is read on every call. Whenever a call
is not of that kind, ``call`` returns None before touching anything and the
layer takes its general path, which gives the same numbers
(``tests/test_fast_paths.py::test_short_call_matches_general_path``).

Once the C++ module is loaded, ``__call__`` first tries its ``short_infer``
(``short_call.h``, compiled into ``autograd.cpp``'s module): the same checks for inference
calls that autograd does not record, made in C++ (on large inputs the Python between two
passes runs with cold caches).
``call`` here stays the reference: it takes every call ``short_infer`` leaves, and
creates the layout entries both use
(``tests/test_cpp_module.py::test_cpp_short_call_takes_exactly_the_eligible_inference_calls``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.modules import module as _module

from ..._checks import check_host_clipping
from ..._layout import (
    PARAM_DTYPE,
    Geometry,
    Plan,
    dense,
    geometry,
    ghost_layout,
    parameter_layout,
)
from ..base import SHORT
from . import build, cxx, infer, nodes, passes
from .view import in_place, takes

_MISSING = object()
is_compiling = torch.compiler.is_compiling  # (bound once: fewer lookups on each call)
_tracing_state = torch._C._get_tracing_state
_transforms_active = torch._C._are_functorch_transforms_active  # torch.func: vmap, grad, …
_MAX_ENTRIES = 64  # layouts kept per layer; beyond that the cache starts over


class Entry:
    """What a layer's passes need of one input layout (shape, strides, dtype, mode)."""

    __slots__ = ("axes", "geo", "kernels", "lib", "pdt", "vshape")

    def __init__(
        self, geo: Geometry, lib: Any, dtype: torch.dtype, vshape: tuple[int, ...], axes: list[int]
    ) -> None:
        self.geo, self.lib, self.vshape, self.axes = geo, lib, tuple(vshape), tuple(axes)
        self.pdt = PARAM_DTYPE[dtype]
        self.kernels = None  # the C++ module's inference kernels, once it is loaded

    def infer(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        mean: torch.Tensor,
        var: torch.Tensor,
        epsilon: float,
    ) -> torch.Tensor:
        """The inference pass without an autograd node (see ``infer.infer_pass``)."""
        if self.kernels is None:
            module = cxx.module()
            if module is not None:
                self.kernels = nodes.cxx_kernels(module, self.geo, self.lib, x.dtype, "infer")
        return infer.infer_pass(
            self.geo, self.lib, x, gamma, beta, mean, var, epsilon, self.kernels
        )


_ELIGIBLE_TYPES: dict[type, bool] = {}  # (read by the C++ short call too)
_REFERENCE: list[Any] = []  # BatchNormalization.call and Layer.forward (``eligible_methods``)


def eligible_methods(call: Any, forward: Any) -> None:
    """The ``call`` and ``forward`` a layer class must have for its calls to be short:
    BatchNormalization's own (a subclass that overrides them takes the general path)."""
    _REFERENCE[:] = [call, forward]
    _ELIGIBLE_TYPES.clear()


def _eligible_type(cls: type) -> bool:
    """Whether ``cls`` computes with BatchNormalization's own ``call``/``forward``."""
    known = _ELIGIBLE_TYPES.get(cls)
    if known is None:
        known = cls.call is _REFERENCE[0] and cls.forward is _REFERENCE[1]
        _ELIGIBLE_TYPES[cls] = known
    return known


def _entry(layer: Any, x: torch.Tensor, training: bool) -> Entry | None:
    """The layout's entry, or None when the general path must run for it."""
    if x.dtype not in PARAM_DTYPE or not x.is_cpu or dense(x) is not x:
        return None
    declared = layer._declared_dtype
    if declared is not None and x.dtype != declared:
        return None
    shape = tuple(x.shape)
    if len(shape) != layer._input_rank or any(
        shape[a] != n for a, n in layer._channel_sizes.items()
    ):
        return None  # the general path raises its error
    axes, stride, ghost_dim, vshape = list(layer._axes), tuple(x.stride()), None, shape
    if training:
        vbs = layer.virtual_batch_size
        if 0 in [n for d, n in enumerate(shape) if d not in axes]:
            return None
        if vbs is not None:
            if shape[0] % vbs:
                return None
            vshape, stride, ghost_dim = ghost_layout(x, vbs, layer.ghost_grouping)
            axes = [a + 1 for a in axes]
    channel_dims = (*axes,) if ghost_dim is None else (ghost_dim, *axes)
    geo = geometry(vshape, stride, channel_dims, ghost_dim)
    lib = build.library()
    if lib is None or takes(x, geo) is not None:  # select() would not choose the C kernels
        return None
    return Entry(geo, lib, x.dtype, vshape, axes)


def _hooked(layer: Any) -> bool:
    return bool(
        layer._forward_hooks
        or layer._forward_pre_hooks
        or layer._backward_hooks
        or layer._backward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
        or layer._compiled_call_impl is not None
    )


def _variable(layer: Any, name: str) -> torch.Tensor | None:
    value = layer._parameters.get(name)
    return value if value is not None else layer._buffers.get(name)


def call(layer: Any, x: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``layer(x, **kwargs)`` through the C passes, or None (nothing done) when the
    call needs the general path."""
    training = None
    if kwargs:
        training = kwargs.get("training", _MISSING) if len(kwargs) == 1 else _MISSING
        if training is not None and training is not True and training is not False:
            return None
    if (
        not SHORT.enabled
        or not layer.built
        or layer._scope is None
        or not _eligible_type(type(layer))
        or layer.activity_regularizer is not None
        or layer.synchronized
        or layer.check_numerics
        or _hooked(layer)
        or getattr(x, "_keras_mask", None) is not None
        or is_compiling()
        or _tracing_state()
        or _transforms_active()
    ):
        return None
    if not layer._trainable:
        training = False
    elif training is None:
        training = layer.training
    key = (  # (the device too: a CPU layout's entry must never see another device's memory)
        x.shape,
        x.stride(),
        x.dtype,
        x.is_cpu,
        training,
        layer.virtual_batch_size,
        layer.ghost_grouping,
    )
    cache = layer._short_entries
    entry = cache.get(key, _MISSING)
    if entry is _MISSING:
        if len(cache) >= _MAX_ENTRIES:
            cache.clear()
        entry = cache[key] = _entry(layer, x, training)
    if entry is None:
        return None
    gamma, beta = _variable(layer, "gamma"), _variable(layer, "beta")
    buffers = layer._buffers
    mean, variance = buffers["moving_mean"], buffers["moving_variance"]
    pdt = entry.pdt
    if not in_place((gamma, beta, mean, variance), pdt):
        return None
    if layer._call_losses:
        layer._call_losses.clear()
    if not training:
        if nodes.needs_grad(x, gamma, beta):
            return infer.infer_native(
                x, gamma, beta, mean, variance, entry.geo, entry.lib, layer.epsilon
            )
        return entry.infer(x, gamma, beta, mean, variance, layer.epsilon)
    renorm = None
    if layer.renorm:
        stddev, rmean = buffers["moving_stddev"], buffers["renorm_mean"]
        rstd = buffers["renorm_stddev"]
        if not in_place((stddev, rmean, rstd), pdt):
            return None
        check_host_clipping(layer.renorm_clipping)  # a schedule may have changed them
        renorm = (rmean, rstd, layer.renorm_clipping)
    per_channel = None
    if layer.adjustment is not None:
        values = layer._adjustment_values(x)
        per_channel = parameter_layout(values, entry.vshape, entry.axes)
        if per_channel is None:  # varies over a reduced dimension: the composite pass
            return layer._train(x, None, adjustment=values)
    plan = Plan(entry.geo, layer.epsilon, renorm, per_channel, entry.lib, layer._moving())
    return passes.train_native(x, gamma, beta, plan)[0]


def _setup(module: Any) -> None:
    module.setup_short_infer(_ELIGIBLE_TYPES, _module, build)
    SHORT.infer = module.short_infer


cxx.on_load(_setup)
