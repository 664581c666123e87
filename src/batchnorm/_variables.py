"""The variables part of the TF layer contract, mixed into ``Layer``: ``add_weight`` /
``add_variable`` (Parameters for trainable variables, buffers otherwise, partitioned
variables), TF's ordering of the weight lists, ``trainable``, NumPy ``get_weights`` /
``set_weights``, ``count_params``, constraints and regularization ``losses``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import is_lazy

from . import constraints as constraints_lib
from . import initializers as initializers_lib
from . import regularizers as regularizers_lib
from . import symbolic
from ._utils import ShapeLike, as_dtype, as_shape
from .partitioners import PartitionedVariable, split_sizes


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


class _RegularizationLoss:
    """``regularizer(layer.<name>)``, looked up at call time so ``.to()`` is followed."""

    def __init__(self, layer: Any, name: str, regularizer: Callable[..., torch.Tensor]) -> None:
        self.layer = layer
        self.name = name
        self.regularizer = regularizer

    def __call__(self) -> torch.Tensor:
        return self.regularizer(getattr(self.layer, self.name))


class VariablesAPI:
    """Variables, weight lists, constraints and losses of ``Layer`` (see the module docstring)."""

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
        slot = self._parameters if name in self._parameters else self._buffers
        current = slot.get(name)
        lazy = current if current is not None and is_lazy(current) else None
        if name not in slot and hasattr(self, name):
            raise ValueError(f"{name!r} is already an attribute of {type(self).__name__}.")
        if name in slot and current is not None and lazy is None:
            raise ValueError(f"{name!r} is already a variable of {type(self).__name__}.")
        dtype = as_dtype(dtype) or self.dtype or torch.float32
        init = initializers_lib.get(initializer or "glorot_uniform", argument="initializer")
        reg = regularizers_lib.get(regularizer, argument="regularizer")
        cons = constraints_lib.get(constraint, argument="constraint")
        value = initializers_lib.initialize(init, shape, dtype)
        device = self._device() or (lazy.data.device if lazy is not None else None)
        if device is not None:
            value = value.to(device)
        if lazy is not None and isinstance(lazy, nn.Parameter) == bool(trainable):
            # the placeholder an optimizer or state_dict may already hold becomes the variable
            with torch.no_grad():
                lazy.materialize(shape, device=value.device, dtype=dtype)
                lazy.copy_(value)
            if trainable:
                lazy.requires_grad_(self._trainable)
        else:
            slot.pop(name, None)  # a declared-but-absent variable (None) is being created
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
