"""How a ``Layer`` meets PyTorch's tracers: ``torch.fx`` and ``torch.jit.trace``.

- ``torch.fx`` (``symbolic_trace``, custom ``Tracer`` subclasses, the tools built on
  them): a layer called on a ``Proxy`` records one ``call_module`` node, through the
  tracer's own ``call_module`` (so a tracer's scope and module-stack bookkeeping run),
  whatever the tracer's ``is_leaf_module`` says. The layer is a leaf, as
  ``nn.BatchNorm2d`` is: the ``GraphModule`` calls the real layer, which reads its
  ``training`` flag at run time (a module traced in train mode and switched to
  ``eval()`` normalizes with the moving statistics) and builds on its first real call.
  Layers that only wrap a module or a function (``Wrap``, ``Lambda``: ``fx_leaf =
  False``) are traced like any module, so the tracer sees what they hold (``fold``
  finds a Conv → batch-norm pair inside a ``Wrap``).
- ``torch.jit.trace``: a layer that holds real variables but is not built yet (after
  ``from_torch`` or loaded weights, whose rank the first call fixes) builds with
  tracing suspended, so the build reads the input's shape as integers and records
  nothing; the call itself is traced as usual. A layer whose variables are still
  placeholders cannot be traced, as no PyTorch lazy module can: ``torch.jit.trace``
  refuses it with PyTorch's own "uninitialized parameters" error before any call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Proxy

__all__ = ["traced_call"]

_tracing_state = torch._C._get_tracing_state
_set_tracing_state = torch._C._set_tracing_state


def _first_proxy(inputs: Any) -> Proxy | None:
    """The ``torch.fx.Proxy`` in ``inputs`` (a proxy, or a list/tuple holding one)."""
    if isinstance(inputs, Proxy):
        return inputs
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            if isinstance(item, Proxy):
                return item
    return None


def traced_call(
    layer: torch.nn.Module, inputs: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """What ``Layer.__call__`` does first: under ``torch.fx`` the ``Proxy`` of one
    ``call_module`` node for this call; under ``torch.jit.trace`` the build of an
    unbuilt layer (tracing suspended) and None; otherwise None (an ordinary call)."""
    if type(inputs) is not torch.Tensor:
        proxy = _first_proxy(inputs)
        if proxy is not None:
            return _record_call(layer, proxy.tracer, inputs, args, kwargs)
    if not layer.built and _tracing_state() is not None:
        _build_untraced(layer, inputs)
    return None


def _record_call(
    layer: torch.nn.Module,
    tracer: Any,
    inputs: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """One ``call_module`` node for ``layer(inputs, *args, **kwargs)``.

    The tracer's ``call_module`` runs (scopes, ``nn_module_stack`` metadata, custom
    overrides); the forward it is given records the node too, so a tracer that does
    not take the layer as a leaf still gets one node instead of a trace of its
    internals (which would bake ``self.training`` and the build into the graph)."""
    call_module = getattr(tracer, "call_module", None)
    path_of_module = getattr(tracer, "path_of_module", None)
    if call_module is None or path_of_module is None:
        raise TypeError(
            f"Layer {layer.name} received a torch.fx Proxy from a {type(tracer).__name__}, "
            "which cannot record module calls; trace the model that holds the layer with "
            "torch.fx.symbolic_trace or a torch.fx.Tracer."
        )
    if not getattr(layer, "fx_leaf", True):  # a wrapper: the tracer decides, as for any module
        return call_module(layer, layer.forward, (inputs, *args), kwargs)
    target = path_of_module(layer)  # torch's NameError when not a submodule of the root

    def leaf(*call_args: Any, **call_kwargs: Any) -> Any:
        return tracer.create_proxy("call_module", target, call_args, call_kwargs)

    return call_module(layer, leaf, (inputs, *args), kwargs)


def _build_untraced(layer: Any, inputs: Any) -> None:
    """Build ``layer`` for ``inputs`` with ``torch.jit`` tracing suspended: under
    tracing, sizes read as tensors and the build's tensors would become constants."""
    state = _tracing_state()
    _set_tracing_state(None)
    try:
        layer.initialize_parameters(inputs)
    finally:
        _set_tracing_state(state)
