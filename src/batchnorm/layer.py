"""``Layer``: TensorFlow's layer contract on a ``torch.nn.Module``.

A layer builds its variables on the first call (or an explicit
``build(input_shape)``), keeps them in TensorFlow's order (trainable ones
first, each list in creation order), exposes the Keras weight lists, NumPy
``get_weights``/``set_weights``, regularization ``losses``, an
``activity_regularizer`` and constraints, and is otherwise an ordinary
``nn.Module``: ``state_dict``, ``.to(device)``, optimizers and DDP work as usual.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import constraints as constraints_lib
from . import initializers as initializers_lib
from . import regularizers as regularizers_lib
from . import symbolic
from ._graph_api import GraphAPI
from ._utils import as_dtype, param_dtype_for, to_snake_case
from .partitioners import PartitionedVariable, split_sizes

_DTYPE_CODES = ("float16", "bfloat16", "float32", "float64")

__all__ = ["Layer", "apply_constraints_on_step", "clear_session"]

ShapeLike = Sequence[int | None]

_BASE_KWARGS = ("input_shape", "batch_input_shape", "batch_size")


def clear_session() -> None:
    """Start a fresh default ``Graph``, as ``tf.keras.backend.clear_session()`` does:
    the next unnamed ``BatchNormalization`` is called ``batch_normalization`` again."""
    symbolic.reset_default_graph()


def as_shape(input_shape: Any, argument: str = "input_shape") -> tuple[int | None, ...]:
    """Normalize a shape (tuple, list, ``torch.Size``, or anything with ``.shape``).

    Raises TypeError when ``input_shape`` is not a sequence of ints and Nones.
    """
    if isinstance(input_shape, (torch.Tensor, np.ndarray)) or hasattr(input_shape, "_bn_node"):
        input_shape = input_shape.shape
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Iterable):
        raise TypeError(
            f"`{argument}` must be a shape (a tuple/list of ints or None); "
            f"received {input_shape!r}."
        )
    dims: list[int | None] = []
    for d in input_shape:
        if d is None:
            dims.append(None)
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0:
            dims.append(int(d))
        else:
            raise TypeError(
                f"`{argument}` must be a shape (a tuple/list of non-negative ints or None); "
                f"received {input_shape!r}."
            )
    return tuple(dims)


def _tf_variable_name(name: str) -> str:
    """``kernel_part_0`` → ``kernel/part_0`` (TF's names of partitions)."""
    base, sep, index = name.rpartition("_part_")
    return f"{base}/part_{index}" if sep and index.isdigit() else name


@dataclass
class _Variable:
    """What the layer remembers about each variable besides its tensor."""

    name: str
    trainable: bool
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None
    constraint: Callable[[torch.Tensor], torch.Tensor] | None


class Layer(GraphAPI, nn.Module):
    """Base class of batchnorm's layers: the TensorFlow layer contract on ``nn.Module``.

    Subclasses implement ``build(input_shape)`` (creating variables with
    ``add_weight``) and ``call(inputs, ...)``. ``__call__`` converts NumPy
    input, builds on first use, runs ``call`` through ``nn.Module`` (so hooks
    work), rejects a ``None`` result and records activity regularization.
    """

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
        self._pending_weights: list[torch.Tensor] | None = None  # loaded on the first build
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

    # ------------------------------------------------------------------ variables
    def add_weight(
        self,
        name: str,
        shape: ShapeLike,
        dtype: Any = None,
        initializer: Any = None,
        regularizer: Any = None,
        trainable: bool = True,
        constraint: Any = None,
        partitioner: Any = None,
    ) -> torch.Tensor | PartitionedVariable:
        """Create (or return the existing) variable ``name``.

        Trainable variables are ``nn.Parameter``s, the others buffers; both are
        registered under ``name`` (``layer.gamma``, ``state_dict()['gamma']``).
        A second call with the same name returns the existing variable when the
        shape matches and raises ValueError otherwise. The initializer defaults
        to ``glorot_uniform`` for floating variables, as in Keras.

        With a ``partitioner`` (e.g. ``batchnorm.fixed_size_partitioner(2)``) the
        variable is created whole, split into shards ``name_part_0``, … (each its
        own parameter, in the weight lists) and a ``PartitionedVariable`` that
        concatenates them is returned. A regularizer on a partitioned variable
        needs symbolic mode (RuntimeError in eager, as TF1).
        """
        if partitioner is not None:
            return self._add_partitioned(
                name, shape, dtype, initializer, regularizer, trainable, constraint, partitioner
            )
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"`name` must be a Python identifier; received {name!r}.")
        shape = tuple(as_shape(shape, "shape"))
        if any(d is None for d in shape):
            raise ValueError(f"Variable {name!r} needs a fully defined shape; received {shape}.")
        if name in self._partitioned:
            raise ValueError(
                f"Variable {self.name}/{name} already exists as a partitioned variable."
            )
        if name in self._variables:
            existing = getattr(self, name)
            if tuple(existing.shape) != shape:
                raise ValueError(
                    f"Variable {self.name}/{name} already exists with shape "
                    f"{tuple(existing.shape)}; requested shape {shape}."
                )
            return existing
        placeholder = self._parameters.get(name, 0) is None or self._buffers.get(name, 0) is None
        if placeholder:  # a declared-but-absent variable (``None``) is being created
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
        elif hasattr(self, name):
            raise ValueError(f"{name!r} is already an attribute of {type(self).__name__}.")
        dtype = as_dtype(dtype) or self.dtype or torch.float32
        init = initializers_lib.get(initializer or "glorot_uniform", argument="initializer")
        reg = regularizers_lib.get(regularizer, argument="regularizer")
        cons = constraints_lib.get(constraint, argument="constraint")
        value = initializers_lib.initialize(init, shape, dtype)
        device = self._device()
        if device is not None:
            value = value.to(device)
        if trainable:
            self.register_parameter(name, nn.Parameter(value, requires_grad=self._trainable))
        else:
            self.register_buffer(name, value)
        self._variables[name] = _Variable(name, bool(trainable), reg, cons)
        if reg is not None:
            self._callable_losses.append(_RegularizationLoss(self, name, reg))
        return getattr(self, name)

    add_variable = add_weight

    def _add_partitioned(
        self,
        name: str,
        shape: ShapeLike,
        dtype: Any,
        initializer: Any,
        regularizer: Any,
        trainable: bool,
        constraint: Any,
        partitioner: Any,
    ) -> PartitionedVariable:
        if name in self._partitioned:
            existing = self._partitioned[name]
            if tuple(existing.shape) != tuple(as_shape(shape, "shape")):
                raise ValueError(
                    f"Variable {self.name}/{name} already exists with shape "
                    f"{tuple(existing.shape)}; requested shape {tuple(shape)}."
                )
            return existing
        if regularizer is not None and not self._building_symbolically:
            raise RuntimeError(
                f"Partitioned variable regularization is not supported in eager mode (layer "
                f"{self.name}, variable {name}); create it during a symbolic call."
            )
        shape = tuple(as_shape(shape, "shape"))
        dtype = as_dtype(dtype) or self.dtype or torch.float32
        parts = list(partitioner(shape, dtype))
        axes = [i for i, n in enumerate(parts) if n > 1]
        if len(parts) != len(shape) or len(axes) > 1:
            raise ValueError(
                f"A partitioner must return one count per dimension, with at most one above 1; "
                f"returned {parts} for shape {shape}."
            )
        axis = axes[0] if axes else 0
        count = parts[axis] if axes else 1
        init = initializers_lib.get(initializer or "glorot_uniform", argument="initializer")
        full = initializers_lib.initialize(init, shape, dtype)
        shards = torch.split(full, split_sizes(shape[axis], count), dim=axis) if shape else [full]
        names = []
        for i, shard in enumerate(shards):
            part = f"{name}_part_{i}"
            value = shard.contiguous()
            self.add_weight(
                part,
                tuple(value.shape),
                dtype,
                lambda s, dtype=None, v=value: v,
                regularizer,
                trainable,
                constraint,
            )
            names.append(part)
        handle = PartitionedVariable(self, name, names, axis)
        self._partitioned[name] = handle
        return handle

    def _device(self) -> torch.device | None:
        for spec in self._variables.values():
            return getattr(self, spec.name).device
        return None

    def _tensors(self, trainable: bool) -> list[torch.Tensor]:
        return [getattr(self, v.name) for v in self._variables.values() if v.trainable is trainable]

    @property
    def trainable(self) -> bool:
        """Whether the layer trains. Setting it moves weights between the lists and
        toggles ``requires_grad`` of its parameters."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"`trainable` must be a bool; received {value!r}.")
        self._trainable = bool(value)
        for tensor in self._tensors(True):
            tensor.requires_grad_(self._trainable)

    @property
    def trainable_weights(self) -> list[torch.Tensor]:
        """Trainable variables in creation order ([] when the layer is frozen)."""
        return self._tensors(True) if self._trainable else []

    @property
    def non_trainable_weights(self) -> list[torch.Tensor]:
        """Non-trainable variables; all variables when the layer is frozen."""
        if self._trainable:
            return self._tensors(False)
        return self._tensors(True) + self._tensors(False)

    @property
    def weights(self) -> list[torch.Tensor]:
        """``trainable_weights + non_trainable_weights`` (TensorFlow's order)."""
        return self.trainable_weights + self.non_trainable_weights

    @property
    def weight_names(self) -> list[str]:
        """TensorFlow names of ``weights``, e.g. ``batch_normalization/gamma``."""
        names = [v.name for v in self._variables.values() if v.trainable]
        others = [v.name for v in self._variables.values() if not v.trainable]
        return [f"{self.scope_prefix}{_tf_variable_name(n)}" for n in names + others]

    @property
    def scope_prefix(self) -> str:
        """``scope/``: the variable scope of the layer's variable names."""
        return f"{self._scope or self.name}/"

    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights
    variables = weights

    def get_weights(self) -> list[np.ndarray]:
        """Copies of ``weights`` as NumPy arrays."""
        return [w.detach().cpu().numpy().copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Load NumPy arrays (or tensors) in ``weights`` order.

        Every value is checked first (count, floating dtype, exact shape); only
        then are all of them copied, cast to each variable's dtype, so a bad
        list changes nothing.
        """
        targets = self.weights
        if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Iterable):
            raise TypeError(
                f"Layer {self.name}: `set_weights` expects a list of arrays in `weights` order "
                f"({', '.join(self.weight_names) or 'none: it is not built'}); received "
                f"{type(weights).__name__}."
            )
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(
                f"Layer {self.name} expects {len(targets)} weights "
                f"({', '.join(self.weight_names) or 'none: it is not built'}); "
                f"received {len(weights)}."
            )
        values = []
        for target, tname, value in zip(targets, self.weight_names, weights, strict=True):
            if isinstance(value, torch.Tensor):
                if value.device.type == "meta":
                    raise ValueError(
                        f"Weight {tname} received a meta tensor, which holds no values."
                    )
                array = value.detach().cpu()
                floating = array.is_floating_point()
            else:
                try:
                    array = np.asarray(value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"Weight {tname} must be a floating-point array; received "
                        f"{type(value).__name__}, which is not an array ({exc})."
                    ) from exc
                floating = np.issubdtype(array.dtype, np.floating)
                if floating and array.dtype not in (np.float16, np.float32, np.float64):
                    array = array.astype(np.float64)  # e.g. longdouble, which torch lacks
            if not floating:
                raise TypeError(
                    f"Weight {tname} must be a floating-point array; received dtype {array.dtype}."
                )
            if tuple(array.shape) != tuple(target.shape):
                raise ValueError(
                    f"Weight {tname} has shape {tuple(target.shape)}; received an array of "
                    f"shape {tuple(array.shape)}."
                )
            values.append(torch.as_tensor(array))
        with torch.no_grad():
            for target, value in zip(targets, values, strict=True):
                target.copy_(value)

    def count_params(self) -> int:
        """Total number of scalars in ``weights``; ValueError before build."""
        if not self.built:
            raise ValueError(
                f"You tried to call `count_params` on {self.name}, but the layer isn't built. "
                f"You can build it manually via: `{self.name}.build(batch_input_shape)`."
            )
        return sum(w.numel() for w in self.weights)

    # ------------------------------------------------------------------ constraints
    def apply_constraints(self) -> None:
        """Project every constrained variable in place: ``w ← constraint(w)``.

        Every constraint runs (and its result is checked) before any variable is
        written, so a constraint that raises changes nothing."""
        with torch.no_grad():
            updates = []
            for spec in self._variables.values():
                if spec.constraint is not None:
                    tensor = getattr(self, spec.name)
                    projected = spec.constraint(tensor)
                    where = f"The constraint of {self.scope_prefix}{spec.name}"
                    if not isinstance(projected, torch.Tensor):
                        raise TypeError(
                            f"{where} must return a tensor; returned {type(projected).__name__}."
                        )
                    if tuple(projected.shape) != tuple(tensor.shape):
                        raise ValueError(
                            f"{where} returned shape {tuple(projected.shape)}; expected "
                            f"{tuple(tensor.shape)}."
                        )
                    if projected.is_complex():
                        raise TypeError(f"{where} returned complex values ({projected.dtype}).")
                    updates.append((tensor, projected))
            for tensor, projected in updates:
                tensor.copy_(projected)

    # ------------------------------------------------------------------ losses
    @property
    def losses(self) -> list[torch.Tensor]:
        """Regularization penalties, computed afresh on every read (differentiable),
        then the losses of the latest call (activity regularization, ``add_loss``)."""
        return [loss() for loss in self._callable_losses] + list(self._call_losses)

    def add_loss(self, losses: Any, inputs: Any = None) -> None:
        """Add losses. Eager: zero-argument callables are kept and evaluated on every
        read of ``losses``; tensors last until the layer's next call. Symbolic (the
        layer has inbound nodes, or ``inputs`` are symbolic): recorded, conditional on
        ``inputs`` when given, and returned by ``get_losses_for``."""
        for loss in losses if isinstance(losses, (list, tuple)) else [losses]:
            if not (callable(loss) or isinstance(loss, torch.Tensor)):
                raise TypeError(
                    f"add_loss expects tensors or zero-argument callables; received {loss!r}."
                )
            if self._inbound_nodes or symbolic.is_symbolic(inputs):
                self._record_symbolic_loss(loss, inputs)
                continue
            if callable(loss):
                self._callable_losses.append(loss)
            else:
                self._call_losses.append(loss)

    # ------------------------------------------------------------------ build / call
    def build(self, input_shape: ShapeLike) -> None:
        """Create the layer's variables for ``input_shape``; subclasses create their
        variables, then call this, which marks the layer built."""
        shape = as_shape(input_shape)
        self._build_input_shape = (None, *shape[1:]) if shape else shape
        self.built = True

    def _infer_dtype(self, inputs: torch.Tensor) -> None:
        """Fix the variable dtype from the first input when none was declared:
        float64 input gives float64 variables, anything else float32."""
        if self._declared_dtype is None and inputs.dtype == torch.float64:
            self._inferred_dtype = torch.float64

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
        if not self.built and info is not None:
            if self._declared_dtype is None:
                self._inferred_dtype = as_dtype(info[1])
            self.build(info[0])
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int | None, ...]:
        """Output shape for ``input_shape``; the base layer keeps it unchanged."""
        return as_shape(input_shape)

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """The layer's computation; the base layer is the identity."""
        return inputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
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

    def _checkpoint(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The module's attributes and the contents of its containers (variables, hooks,
        loss lists): what ``_rollback`` restores after a failed first call."""
        attributes = dict(self.__dict__)
        contents = {
            key: copy.copy(value)
            for key, value in attributes.items()
            if isinstance(value, (dict, list, set))
        }
        return attributes, contents

    def _rollback(self, checkpoint: tuple[dict[str, Any], dict[str, Any]]) -> None:
        attributes, contents = checkpoint
        for key, saved in contents.items():  # the same container objects, refilled
            container = attributes[key]
            container.clear()
            if isinstance(container, list):
                container.extend(saved)
            else:
                container.update(saved)
        self.__dict__.clear()
        self.__dict__.update(attributes)

    def _eager_call(
        self, inputs: torch.Tensor, numpy_in: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._call_losses:
            self._call_losses.clear()  # losses of the previous call (``losses`` copies the list)
        if self.activity_regularizer is not None:
            saved = {name: b.clone() for name, b in self.named_buffers() if b is not None}
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
        if self._pending_weights is not None:  # e.g. from batchnorm.from_torch
            self.set_weights(self._pending_weights)
            self._pending_weights = None
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

    # Graph-mode state (the graph, inbound nodes, recorded updates and losses) belongs to
    # the graph the layer was called in: a copy is a new, unconnected layer with equal
    # weights, the same name and the same graph; pickles drop the graph.
    _GRAPH_STATE = ("_inbound_nodes", "_unconditional_updates", "_symbolic_losses")

    def __deepcopy__(self, memo: dict[int, Any]) -> Layer:
        cls = type(self)
        clone = cls.__new__(cls)
        memo[id(self)] = clone
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


class _RegularizationLoss:
    """``regularizer(layer.<name>)``, looked up at call time so ``.to()`` is followed."""

    def __init__(self, layer: Layer, name: str, regularizer: Callable[..., torch.Tensor]) -> None:
        self.layer = layer
        self.name = name
        self.regularizer = regularizer

    def __call__(self) -> torch.Tensor:
        return self.regularizer(getattr(self.layer, self.name))


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
