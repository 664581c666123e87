"""How a ``Layer`` takes part in PyTorch's module protocols: lazy build, state dicts,
rollback of a failed first call, copies and pickles.

- Lazy build (``LazyModuleMixin``, as ``nn.LazyBatchNorm2d``): until built, every
  variable is an ``UninitializedParameter`` / ``UninitializedBuffer`` placeholder that
  the build materializes in place; ``torch.compile`` builds the layer through
  ``_infer_parameters`` before tracing it.
- State dicts carry a small int64 ``_extra_state`` recording how the layer was built, so
  a checkpoint builds an unbuilt layer on load (``weights_only=True`` works).
- A first call that raises restores every attribute and container, and turns the
  placeholders it materialized back into placeholders.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from . import symbolic
from ._utils import as_dtype

_DTYPE_CODES = ("float16", "bfloat16", "float32", "float64")


def seed_lazy_buffers(memo: dict[int, Any], buffers: Iterable[Any]) -> dict[int, Any]:
    """Fresh placeholders in a ``copy.deepcopy`` memo for every ``UninitializedBuffer``
    among ``buffers``: torch's cannot deepcopy themselves (``nn.LazyBatchNorm2d`` fails)."""
    for buffer in buffers:
        if buffer is not None and is_lazy(buffer) and id(buffer) not in memo:
            memo[id(buffer)] = type(buffer)(
                buffer.requires_grad, buffer.data.device, buffer.data.dtype
            )
    return memo


class ModuleProtocols(LazyModuleMixin):
    """PyTorch-module behaviour of ``Layer`` (see the module docstring)."""

    built: bool
    dtype: Any
    _build_input_shape: tuple[int | None, ...] | None
    _declared_dtype: torch.dtype | None
    _inferred_dtype: torch.dtype | None

    # ------------------------------------------------------------------ lazy-module protocol
    def _drop_lazy_hooks(self) -> None:
        """Remove ``LazyModuleMixin``'s build-on-first-call and load hooks (a built layer
        needs neither; without hooks its calls take the short path)."""
        for attribute in ("_initialize_hook", "_load_hook"):
            handle = self.__dict__.pop(attribute, None)
            if handle is not None:
                handle.remove()

    def _infer_parameters(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> None:
        """``LazyModuleMixin``'s hook: build from the first positional input. Runs as a
        forward pre-hook, and is what ``torch.compile`` calls before tracing an unbuilt
        layer (with fake tensors, whose shape, dtype and device are all the build reads)."""
        if not self.built and args:
            self.initialize_parameters(*args, **(kwargs or {}))
        self._drop_lazy_hooks()

    def initialize_parameters(self, inputs: Any = None, *args: Any, **kwargs: Any) -> None:
        """Build the layer for ``inputs`` (a tensor or NumPy array) if it is not built;
        a build that raises leaves the layer as it was."""
        if self.built or inputs is None or symbolic.is_symbolic(inputs):
            return
        if isinstance(inputs, (np.ndarray, np.generic)):
            inputs = self._from_numpy(inputs)
        checkpoint = self._checkpoint()
        try:
            self._build_from(inputs)
        except BaseException:
            self._rollback(checkpoint)
            raise

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        # LazyModuleMixin's version keeps placeholders as they are but drops the extra
        # state, which records how the layer was built.
        LazyModuleMixin._save_to_state_dict(self, destination, prefix, keep_vars)
        destination[prefix + "_extra_state"] = self.get_extra_state()

    # ------------------------------------------------------------------ state_dict
    def get_extra_state(self) -> torch.Tensor:
        """How the layer was built, as a small int64 tensor ``[1, built, dtype code,
        rank, *input_shape]`` (unknown dims −1): a tensor, so checkpoints load with
        ``weights_only=True`` and ``torch.jit.trace``/``torch.onnx.export`` accept the
        state dict. Lets ``load_state_dict`` build an unbuilt layer."""
        if not self.built or self._build_input_shape is None:
            return torch.tensor([1, 0, -1, 0], dtype=torch.int64)
        shape = [-1 if d is None else int(d) for d in self._build_input_shape]
        code = _DTYPE_CODES.index(str(self.dtype).removeprefix("torch."))
        return torch.tensor([1, 1, code, len(shape), *shape], dtype=torch.int64)

    def set_extra_state(self, state: Any) -> None:
        """Counterpart of ``get_extra_state``; the build itself happens on load."""

    @staticmethod
    def _decode_extra_state(state: Any) -> tuple[tuple[int | None, ...], str] | None:
        """(input shape, dtype name) of a built layer's extra state, else None."""
        if isinstance(state, dict):  # checkpoints written by batchnorm 0.1.0 pre-releases
            if state.get("built"):
                return tuple(state["input_shape"]), str(state.get("dtype"))
            return None
        if not isinstance(state, torch.Tensor) or state.dim() != 1 or state.numel() < 4:
            return None
        values = [int(v) for v in state.tolist()]
        if values[0] != 1 or not values[1] or len(values) != 4 + values[3]:
            return None
        shape = tuple(None if d < 0 else d for d in values[4:])
        return shape, _DTYPE_CODES[values[2]]

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        info = self._decode_extra_state(state_dict.get(prefix + "_extra_state"))
        checkpoint = None if self.built else self._checkpoint()
        errors = len(error_msgs)
        if not self.built and info is not None:
            if self._declared_dtype is None:
                self._inferred_dtype = as_dtype(info[1])
            self.build(info[0])
        elif not self.built:
            self._materialize_from_state(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if checkpoint is not None and len(error_msgs) > errors:  # (load_state_dict raises)
            self._rollback(checkpoint)

    def _lazy_load_hook(self, *args: Any, **kwargs: Any) -> None:
        """(``LazyModuleMixin``'s load hook materializes placeholders outside the layer's
        variables; ``_load_from_state_dict`` creates them through the layer instead.)"""

    def _replicate_for_data_parallel(self) -> Any:
        """``nn.DataParallel`` replicas: refused while placeholders remain (PyTorch's
        lazy-module error), as for any module once the layer holds real variables."""
        if self.has_uninitialized_params():
            return LazyModuleMixin._replicate_for_data_parallel(self)
        return torch.nn.Module._replicate_for_data_parallel(self)  # type: ignore[arg-type]

    def _materialize_from_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Create an unbuilt layer's variables from the shapes in ``state_dict`` (a state
        saved before the build, with real values); the base layer has none."""

    def _checkpoint(self) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        """The module's attributes, the contents of its containers (variables, hooks,
        loss lists) and its lazy placeholders: what ``_rollback`` restores after a failed
        first call (a build materializes the placeholders in place)."""
        attributes = dict(self.__dict__)
        contents = {
            key: copy.copy(value)
            for key, value in attributes.items()
            if isinstance(value, (dict, list, set))
        }
        placeholders = [
            (t, type(t), t.data, t.requires_grad)
            for t in (*self._parameters.values(), *self._buffers.values())
            if t is not None and is_lazy(t)
        ]
        return attributes, contents, placeholders

    def _rollback(self, checkpoint: tuple[dict[str, Any], dict[str, Any], list[Any]]) -> None:
        attributes, contents, placeholders = checkpoint
        for tensor, cls, data, requires_grad in placeholders:
            if type(tensor) is cls:
                continue  # not materialized
            with torch.no_grad():  # uninitialized again
                tensor.data = data
            tensor.requires_grad_(requires_grad)
            tensor.__class__ = cls
        for key, saved in contents.items():  # the same container objects, refilled
            container = attributes[key]
            container.clear()
            if isinstance(container, list):
                container.extend(saved)
            else:
                container.update(saved)
        self.__dict__.clear()
        self.__dict__.update(attributes)

    # Graph-mode state (the graph, inbound nodes, recorded updates and losses) belongs to
    # the graph the layer was called in: a copy is a new, unconnected layer with equal
    # weights, the same name and the same graph; pickles drop the graph.
    _GRAPH_STATE = ("_inbound_nodes", "_unconditional_updates", "_symbolic_losses")

    def __deepcopy__(self, memo: dict[int, Any]) -> ModuleProtocols:
        cls = type(self)
        clone = cls.__new__(cls)
        memo[id(self)] = clone
        seed_lazy_buffers(memo, self._buffers.values())
        for key, value in self.__dict__.items():
            if key == "_graph":
                clone.__dict__[key] = value
            elif key in self._GRAPH_STATE:
                clone.__dict__[key] = []
            elif key == "_called_eagerly":
                clone.__dict__[key] = False
            else:
                clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state = dict(state)
        state["_graph"] = None
        for key in self._GRAPH_STATE:
            state[key] = []
        state["_called_eagerly"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self.__dict__.get("_graph") is None:
            self._graph = symbolic.get_default_graph()
