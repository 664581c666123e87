"""``Layer``: TensorFlow's layer contract on a ``torch.nn.Module``.

A layer builds its variables on the first call (or an explicit
``build(input_shape)``, or as soon as loaded weights give their shapes), keeps them in
TensorFlow's order (trainable ones first, each list in creation order), exposes the
Keras weight lists, NumPy
``get_weights``/``set_weights``, regularization ``losses``, an
``activity_regularizer`` and constraints, and is otherwise an ordinary
``nn.Module``: ``state_dict``, ``.to(device)``, optimizers and DDP work as usual.

Until it is built, a layer follows PyTorch's lazy-module convention
(``LazyModuleMixin``, as ``nn.LazyBatchNorm2d``): every variable it will create is an
``UninitializedParameter`` / ``UninitializedBuffer`` placeholder, materialized in place
by the build, so an optimizer or ``state_dict`` taken before the first call holds the
objects that then train, DDP refuses the layer with PyTorch's own error, and
``torch.compile`` builds it before tracing (``_module_protocols``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import is_lazy

from . import regularizers as regularizers_lib
from . import symbolic
from ._graph_api import GraphAPI
from ._module_protocols import ModuleProtocols
from ._tracing import traced_call
from ._utils import ShapeLike, as_dtype, as_shape, param_dtype_for, to_snake_case
from ._variables import VariablesAPI, _Variable
from .partitioners import PartitionedVariable

__all__ = ["Layer", "apply_constraints_on_step", "clear_session"]

_BASE_KWARGS = ("input_shape", "batch_input_shape", "batch_size")


def clear_session() -> None:
    """Start a fresh default ``Graph``, as ``tf.keras.backend.clear_session()`` does:
    the next unnamed ``BatchNormalization`` is called ``batch_normalization`` again."""
    symbolic.reset_default_graph()


class Layer(GraphAPI, VariablesAPI, ModuleProtocols, nn.Module):
    """Base class of batchnorm's layers: the TensorFlow layer contract on ``nn.Module``.

    Subclasses implement ``build(input_shape)`` (creating variables with
    ``add_weight``) and ``call(inputs, ...)``. ``__call__`` converts NumPy
    input, builds on first use, runs ``call`` through ``nn.Module`` (so hooks
    work), rejects a ``None`` result and records activity regularization.
    """

    fx_leaf = True  # torch.fx records a call as one call_module node (``_tracing``)

    def __init__(
        self,
        trainable: bool = True,
        name: str | None = None,
        dtype: Any = None,
        activity_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - set(_BASE_KWARGS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {unknown}; "
                f"allowed base-layer keywords are {list(_BASE_KWARGS)}."
            )
        if not isinstance(trainable, (bool, np.bool_)):
            raise TypeError(f"`trainable` must be a bool; received {trainable!r}.")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` must be a string or None; received {name!r}.")
        if name == "":
            raise ValueError("`name` must not be empty.")
        # every argument is checked before a default name is taken
        declared_dtype = as_dtype(dtype)
        activity_regularizer = regularizers_lib.get(
            activity_regularizer, argument="activity_regularizer"
        )
        batch_input_shape = self._batch_shape_from_kwargs(kwargs)
        super().__init__()
        self._trainable = bool(trainable)
        self._graph = symbolic.get_default_graph()
        self._name = (
            name
            if name is not None
            else self._graph.unique_name(to_snake_case(type(self).__name__))
        )
        self._scope: str | None = None
        self._inbound_nodes: list[symbolic.Node] = []
        self._called_eagerly = False
        self._building_symbolically = False
        self._unconditional_updates: list[symbolic.Update] = []
        self._symbolic_losses: list[symbolic.Loss] = []
        self._partitioned: dict[str, PartitionedVariable] = {}
        self._declared_dtype = declared_dtype
        self.activity_regularizer = activity_regularizer
        self.built = False
        self._inferred_dtype: torch.dtype | None = None
        self._build_input_shape: tuple[int | None, ...] | None = None
        self._variables: dict[str, _Variable] = {}
        self._callable_losses: list[Callable[[], torch.Tensor]] = []
        self._call_losses: list[torch.Tensor] = []
        self._batch_input_shape = batch_input_shape

    @staticmethod
    def _batch_shape_from_kwargs(kwargs: dict[str, Any]) -> tuple[int | None, ...] | None:
        if "batch_input_shape" in kwargs:
            return as_shape(kwargs["batch_input_shape"], "batch_input_shape")
        if "input_shape" in kwargs:
            batch = kwargs.get("batch_size")
            if batch is not None and (
                not isinstance(batch, (int, np.integer))
                or isinstance(batch, (bool, np.bool_))
                or batch < 0
            ):
                raise TypeError(f"`batch_size` must be a non-negative int; received {batch!r}.")
            batch = None if batch is None else int(batch)
            return (batch, *as_shape(kwargs["input_shape"], "input_shape"))
        return None

    # ------------------------------------------------------------------ names, dtype
    @property
    def name(self) -> str:
        """The layer's name (``batch_normalization``, ``batch_normalization_1``, ... by default)."""
        return self._name

    @property
    def dtype(self) -> torch.dtype | None:
        """dtype of the layer's variables (float32 for 16-bit layers), None if not known yet."""
        for spec in self._variables.values():
            return getattr(self, spec.name).dtype
        return param_dtype_for(self._declared_dtype) if self._declared_dtype else None

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """The dtype inputs are cast to before the layer's math, when one was given."""
        return self._declared_dtype

    # ------------------------------------------------------------------ build / call
    def build(self, input_shape: ShapeLike) -> None:
        """Create the layer's variables for ``input_shape``; subclasses create their
        variables, then call this, which marks the layer built."""
        shape = as_shape(input_shape)
        self._build_input_shape = (None, *shape[1:]) if shape else shape
        self.built = True
        self._drop_lazy_hooks()

    def _infer_dtype(self, inputs: torch.Tensor) -> None:
        """Fix the variable dtype from the first input when none was declared:
        float64 input gives float64 variables, anything else float32."""
        if self._declared_dtype is None and inputs.dtype == torch.float64:
            self._inferred_dtype = torch.float64

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int | None, ...]:
        """Output shape for ``input_shape``; the base layer keeps it unchanged."""
        return as_shape(input_shape)

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """The layer's computation; the base layer is the identity."""
        return inputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        traced = traced_call(self, inputs, args, kwargs)  # torch.fx node / jit.trace build
        if traced is not None:
            return traced
        scope = kwargs.pop("scope", None)  # TF's reserved keyword: the variable scope
        if self._scope is None:
            if scope is not None and not isinstance(scope, str):
                raise TypeError(f"`scope` must be a string; received {scope!r}.")
            self._scope = scope or self.name
        if not isinstance(inputs, torch.Tensor) and symbolic.is_symbolic(inputs):
            return symbolic.call_symbolic(self, inputs, args, kwargs)
        if not self._called_eagerly:
            self._called_eagerly = True
        numpy_in = isinstance(inputs, (np.ndarray, np.generic))
        if numpy_in:
            inputs = self._from_numpy(inputs)
        in_mask = getattr(inputs, "_keras_mask", None)
        if in_mask is not None and "mask" not in kwargs and self._accepts("mask"):
            kwargs["mask"] = in_mask  # the previous layer's output mask
        if self.built:
            return self._eager_call(inputs, numpy_in, args, kwargs)
        # A first call that raises leaves the layer unbuilt, as it was.
        checkpoint = self._checkpoint()
        try:
            self._build_from(inputs)
            return self._eager_call(inputs, numpy_in, args, kwargs)
        except BaseException:
            self._rollback(checkpoint)
            raise

    def _from_numpy(self, array: np.ndarray | np.generic) -> torch.Tensor:
        """A tensor of a NumPy array or scalar (shape kept, also for 0-dim input)."""
        array = np.asarray(array)
        try:
            return torch.from_numpy(np.ascontiguousarray(array).reshape(array.shape))
        except TypeError as exc:
            raise TypeError(
                f"Layer {self.name} expects numeric input; received a NumPy array of dtype "
                f"{array.dtype}."
            ) from exc

    def _eager_call(
        self, inputs: torch.Tensor, numpy_in: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._call_losses:
            self._call_losses.clear()  # losses of the previous call (``losses`` copies the list)
        if self.activity_regularizer is not None:
            saved = {  # (a child's placeholders hold nothing to restore)
                name: b.clone() for name, b in self.named_buffers() if not is_lazy(b)
            }
        outputs = super().__call__(inputs, *args, **kwargs)
        if outputs is None:
            raise ValueError(
                f"The `call` method of layer {self.name} ({type(self).__name__}) returned None; "
                "it must return a tensor."
            )
        if self.activity_regularizer is not None:
            batch = outputs.shape[0] if outputs.dim() else 1
            try:
                penalty = self.activity_regularizer(outputs)
            except BaseException:
                with torch.no_grad():  # undo the call's updates (moving statistics)
                    for name, buffer in self.named_buffers():
                        if name in saved:
                            buffer.copy_(saved[name])
                raise
            self._call_losses.append(penalty / batch if batch else penalty * 0)
        if numpy_in:
            return outputs.detach().cpu().numpy()
        if kwargs.get("mask") is not None and isinstance(outputs, torch.Tensor):
            outputs._keras_mask = kwargs["mask"]  # masks pass through batch normalization
        return outputs

    def _accepts(self, name: str) -> bool:
        """Whether ``call`` takes keyword ``name`` (``training``, ``mask``)."""
        cls = type(self)
        cache = cls.__dict__.get("_accepts_cache")
        if cache is None:
            cache = {}
            cls._accepts_cache = cache
        if name not in cache:
            cache[name] = symbolic._accepts(cls.call, name)
        return cache[name]

    def _build_symbolic(self, inputs: Any, graph: symbolic.Graph) -> None:
        """Build from symbolic inputs; TF1 puts the new variables and their
        regularization losses in the graph's collections."""
        first = symbolic.flatten(inputs)[0]
        if self._declared_dtype is None and first.dtype == torch.float64:
            self._inferred_dtype = torch.float64
        self._building_symbolically = True
        try:
            self.build(
                inputs.shape
                if isinstance(inputs, symbolic.SymbolicTensor)
                else [t.shape for t in symbolic.flatten(inputs)]
            )
        finally:
            self._building_symbolically = False
        for weight in self.trainable_weights:
            graph.add_to_collection("trainable_variables", weight)
        for loss in self._unconditional_losses():
            graph.add_to_collection("regularization_losses", loss)

    def _output_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        """dtype of the output for a (symbolic) input dtype."""
        if self._declared_dtype is not None:
            return self._declared_dtype
        return input_dtype if input_dtype.is_floating_point else torch.float32

    def _build_from(self, inputs: Any) -> None:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(
                f"Layer {self.name} expects a torch.Tensor or NumPy array as input; received "
                f"{type(inputs).__name__}."
            )
        self._infer_dtype(inputs)
        self.build(tuple(inputs.shape))
        if inputs.device.type != "cpu":
            self.to(inputs.device)

    def apply(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """TF's alias of ``__call__``.

        ``nn.Module.apply(fn)`` keeps working: a callable that is not a tensor or
        array is applied to every submodule and the layer, returning the layer.
        """
        if (
            callable(inputs)
            and not isinstance(inputs, (torch.Tensor, np.ndarray))
            and not (hasattr(inputs, "_bn_node"))
        ):
            return super().apply(inputs)
        return self(inputs, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def apply_constraints_on_step(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> torch.utils.hooks.RemovableHandle:
    """Make ``optimizer`` project every constrained batchnorm variable of ``model``
    after each ``step()``. Returns the hook's handle (``.remove()`` undoes it).

    ``batchnorm.apply_constraints_on_step(opt, model)`` is the one-line equivalent
    of Keras applying ``gamma_constraint``/``beta_constraint`` after each update.
    """

    def hook(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        for module in model.modules():
            if isinstance(module, Layer):
                module.apply_constraints()

    return optimizer.register_step_post_hook(hook)
