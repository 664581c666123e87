"""Any ``nn.Module`` or tensor function as a ``Layer``, so it can join a symbolic graph.

``Wrap(nn.Linear(8, 4))`` and ``Lambda(torch.relu)`` behave like their module or
function on real tensors; on symbolic tensors they record nodes, with output
shapes found by running the module (a copy, without gradients) on small probes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from . import symbolic
from ._utils import to_snake_case
from .layer import Layer, ShapeLike, as_shape

__all__ = ["Lambda", "Wrap"]


class Wrap(Layer):
    """A ``Layer`` around any ``nn.Module``: ``Wrap(module)(x) == module(x)``.

    The module is a submodule (its parameters train with the model); its
    parameters are listed as the layer's weights.
    """

    fx_leaf = False  # torch.fx traces into the module, as into any container

    def __init__(self, module: nn.Module, name: str | None = None, **kwargs: Any) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"`module` must be a torch.nn.Module; received {module!r}.")
        if name is None:
            base = f"wrap_{to_snake_case(type(module).__name__)}"
            name = symbolic.get_default_graph().unique_name(base)
        super().__init__(name=name, **kwargs)
        self.module = module

    def _accepts(self, name: str) -> bool:  # type: ignore[override]
        return symbolic._accepts(self.module.forward, name)

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.module(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int | None, ...]:
        probe = copy.deepcopy(self.module).eval()
        return symbolic.probe_shape(probe, as_shape(input_shape), self._probe_dtype())

    def _probe_dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            return p.dtype
        return torch.float32

    @property
    def trainable_weights(self) -> list[torch.Tensor]:
        if not self.trainable:
            return []
        return [p for p in self.module.parameters() if p.requires_grad and not is_lazy(p)]

    @property
    def non_trainable_weights(self) -> list[torch.Tensor]:
        """The module's frozen parameters and its buffers (placeholders of unbuilt
        layers inside it are not weights yet)."""
        params = [p for p in self.module.parameters() if not is_lazy(p)]
        frozen = params if not self.trainable else [p for p in params if not p.requires_grad]
        return frozen + [b for b in self.module.buffers() if not is_lazy(b)]

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        Layer.trainable.fset(self, value)  # type: ignore[attr-defined]
        for p in self.module.parameters():
            p.requires_grad_(bool(value))


class Lambda(Layer):
    """A ``Layer`` around a tensor function: ``Lambda(torch.relu)(x) == torch.relu(x)``.

    ``output_shape`` (per example, or a function of the input shape) skips the
    shape probe for functions that cannot run on zeros.
    """

    fx_leaf = False  # torch.fx traces the function, as it would inline

    def __init__(
        self,
        function: Callable[..., torch.Tensor],
        output_shape: Sequence[int | None] | Callable[..., Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(function):
            raise TypeError(f"`function` must be callable; received {function!r}.")
        super().__init__(name=name, **kwargs)
        self.function = function
        self.output_shape_spec = output_shape

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.function(inputs, *args, **kwargs)

    def _accepts(self, name: str) -> bool:  # type: ignore[override]
        return symbolic._accepts(self.function, name)

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int | None, ...]:
        shape = as_shape(input_shape)
        spec = self.output_shape_spec
        if callable(spec):
            return as_shape(spec(shape))
        if spec is not None:
            return (shape[0], *as_shape(spec))
        return symbolic.probe_shape(self.function, shape, torch.float32)
