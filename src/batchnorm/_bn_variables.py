"""The variables of ``BatchNormalization``: their shape from the input (the build) or
from weights given before it, their creation, and the placeholders of an unbuilt layer.

Parameters have shape ``(C,)`` for one channel axis; for a list of axes, or with
``virtual_batch_size``, the input's rank with 1 in every reduced dimension (and a 1
inserted at index 1 for the ghost-batch dimension): TensorFlow's layout, so weights
exchange with tf_keras unchanged. Until the build, every variable the layer will create
is an ``UninitializedParameter`` / ``UninitializedBuffer`` (PyTorch's lazy convention),
materialized in place. Weights given before the build (``from_torch``, Keras files, a
state dict) create real variables at once; when their shape fixes the input's rank the
layer is built then, otherwise (``(C,)``) the first call builds it and keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from ._arguments import initial_value
from ._utils import ShapeLike, as_shape, param_dtype_for

STATISTICS = (
    "moving_mean",
    "moving_variance",
    "moving_stddev",
    "renorm_mean",
    "renorm_stddev",
)


class BatchNormVariables:
    """Build and variables of ``BatchNormalization`` (see the module docstring)."""

    name: str
    scale: bool
    center: bool
    renorm: bool
    virtual_batch_size: int | None
    _config_axis: int | list[int]
    _declared_dtype: torch.dtype | None
    _inferred_dtype: torch.dtype | None
    _trainable: bool
    _variables: dict[str, Any]

    def _declare_variables(self) -> None:
        """Placeholders for the variables the build will create (PyTorch's lazy
        convention: ``UninitializedParameter`` / ``UninitializedBuffer``, materialized in
        place); absent ones read as None (``layer.gamma is None`` with ``scale=False``)."""
        dtype = param_dtype_for(self._declared_dtype or torch.float32)
        for name, present in (("gamma", self.scale), ("beta", self.center)):
            placeholder = UninitializedParameter(requires_grad=self._trainable, dtype=dtype)
            self.register_parameter(name, placeholder if present else None)
        for name in STATISTICS:
            present = self.renorm or name in ("moving_mean", "moving_variance")
            self.register_buffer(name, UninitializedBuffer(dtype=dtype) if present else None)

    # ------------------------------------------------------------------ build
    def _validate_axes(self, rank: int) -> list[int]:
        if rank == 0:
            raise ValueError(
                "Input has undefined rank (a scalar): BatchNormalization needs at least one "
                "dimension."
            )
        raw = [self._config_axis] if isinstance(self._config_axis, int) else self._config_axis
        axes = []
        for a in raw:
            positive = a + rank if a < 0 else a
            if not 0 <= positive < rank:
                raise ValueError(
                    "Invalid value for `axis` argument. Expected 0 <= axis < inputs.rank (with "
                    f"inputs.rank={rank}). Received: axis={self._config_axis}"
                )
            axes.append(positive)
        duplicates = sorted({a for a in axes if axes.count(a) > 1})
        if duplicates:
            raise ValueError(
                f"Duplicate axis: {duplicates} (axis={self._config_axis}, rank={rank})."
            )
        if self.virtual_batch_size is not None and 0 in axes:
            raise ValueError(
                "When using `virtual_batch_size`, the batch dimension must be 0 and thus axis "
                f"cannot include 0. Received axis={self._config_axis}"
            )
        return axes

    def build(self, input_shape: ShapeLike) -> None:
        """Create gamma, beta and the moving statistics for ``input_shape``.

        Parameters have shape ``(C,)`` for one axis, and the input's rank (1 in
        every reduced dimension) for a list of axes or with ``virtual_batch_size``
        (TensorFlow's layout, so weights exchange with tf_keras unchanged).
        """
        if self.built:
            return
        shape = as_shape(input_shape)
        rank = len(shape)
        axes = self._validate_axes(rank)
        for a in axes:
            if shape[a] is None:
                raise ValueError(
                    f"Input has undefined `axis` dimension. Received input with shape {shape} "
                    f"and axis={self._config_axis}"
                )
        declared = self._declared_dtype or self._inferred_dtype or self._placeholder_dtype()
        compute = declared or torch.float32
        fused = self._resolve_fused(rank, axes, compute)
        param_shape = self._param_shape(shape, axes)
        held = self._held_shape()
        if held is not None and held != param_shape:
            raise ValueError(
                f"Layer {self.name} already holds weights of shape {held} (loaded or converted "
                f"before its build); an input of shape {shape} needs weights of shape "
                f"{param_shape}."
            )
        values = None
        if held is None:  # user code (initializers) runs before any change
            values = self._initial_values(param_shape, param_dtype_for(compute))

        self.fused = fused
        self._bessel = (
            fused if self.unbiased_moving_variance is None else (self.unbiased_moving_variance)
        )
        self._axes = axes
        self._input_rank = rank
        self._channel_sizes = {a: int(shape[a]) for a in axes}  # type: ignore[arg-type]
        if values is not None:
            self._create_variables(param_shape, values)
        self.axis = list(axes)
        super().build(shape)

    def _placeholder_dtype(self) -> torch.dtype | None:
        """float64 when the placeholders were cast to it before the build (``.double()``,
        ``.to(torch.float64)``, as a PyTorch lazy module follows); 16-bit casts keep
        float32 variables (TensorFlow's rule for 16-bit layers), so None otherwise."""
        mean = self._buffers.get("moving_mean")
        if mean is not None and is_lazy(mean) and mean.data.dtype == torch.float64:
            return torch.float64
        return None

    def _held_shape(self) -> tuple[int, ...] | None:
        """The shape of the variables the layer already holds, None while they are
        placeholders."""
        return tuple(self.moving_mean.shape) if self._variables else None

    def _create_variables(
        self, param_shape: tuple[int, ...], values: dict[str, torch.Tensor]
    ) -> None:
        """Create (materialize) every variable of ``param_shape`` with ``values``."""
        for name, value in values.items():
            trainable = name in ("gamma", "beta")
            self.add_weight(
                name,
                param_shape,
                value.dtype,
                lambda _shape, dtype=None, value=value: value,
                getattr(self, f"{name}_regularizer") if trainable else None,
                trainable,
                getattr(self, f"{name}_constraint") if trainable else None,
            )
        for name in ("gamma", "beta", *STATISTICS):  # placeholders of switched-off features
            slot = self._parameters if name in self._parameters else self._buffers
            if slot.get(name) is not None and name not in self._variables:
                slot[name] = None

    # ------------------------------------------------------------------ weights before build
    def _variable_names(self) -> list[str]:
        """The layer's variables in TensorFlow's ``weights`` order."""
        names = [n for n, on in (("gamma", self.scale), ("beta", self.center)) if on]
        names += ["moving_mean", "moving_variance"]
        if self.renorm:
            names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
        return names

    def _input_shape_for(self, param_shape: tuple[int, ...]) -> tuple[int | None, ...] | None:
        """The (partial) input shape that weights of ``param_shape`` imply: None when they
        do not fix the input's rank (one channel axis, no ghost batches: ``(C,)``);
        ValueError when they cannot belong to this layer's ``axis`` and
        ``virtual_batch_size``."""
        vbs = self.virtual_batch_size is not None
        single = isinstance(self._config_axis, int) or len(self._config_axis) == 1
        if single and not vbs:
            if len(param_shape) != 1:
                raise ValueError(
                    f"Layer {self.name} (axis={self._config_axis}) has weights of shape (C,); "
                    f"received weights of shape {param_shape}."
                )
            return None
        rank = len(param_shape) - (1 if vbs else 0)
        layout = "the input's rank with 1 in every reduced dimension" + (
            ", and a 1 inserted at index 1 for the ghost-batch dimension" if vbs else ""
        )
        problem = rank < 1 or (vbs and param_shape[1] != 1)
        axes: list[int] = []
        if not problem:
            try:
                axes = self._validate_axes(rank)
            except ValueError:
                problem = True
        dims = [param_shape[0], *param_shape[2:]] if vbs else list(param_shape)
        if problem or any(n != 1 for d, n in enumerate(dims) if d not in axes):
            raise ValueError(
                f"Layer {self.name} (axis={self._config_axis}, virtual_batch_size="
                f"{self.virtual_batch_size}) has weights of {layout}; received weights of shape "
                f"{param_shape}, which no input rank fits."
            )
        return tuple(dims[d] if d in axes else None for d in range(rank))

    def _materialize(self, param_shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Give an unbuilt layer real variables of ``param_shape`` (initial values) before
        its first call: built at once when the shape fixes the input's rank, else created
        and kept by the build, which checks the input against them."""
        input_shape = self._input_shape_for(param_shape)
        if self._declared_dtype is None and dtype == torch.float64:
            self._inferred_dtype = torch.float64
        if input_shape is not None:
            self.build(input_shape)
            return
        compute = self._declared_dtype or self._inferred_dtype or torch.float32
        self._create_variables(
            param_shape, self._initial_values(param_shape, param_dtype_for(compute))
        )

    def _materialize_from_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        if self._variables:
            return
        for name in self._variable_names():  # any of them: a checkpoint may hold a subset
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor) and not is_lazy(value):
                self._materialize(tuple(value.shape), value.dtype)
                return

    def _load_weights(self, values: Sequence[Any]) -> None:
        """``set_weights`` that also fills an unbuilt layer: its variables are first
        created with the values' shapes (``_materialize``), so they are real parameters
        and buffers at once. Every check runs before any change; a failure leaves the
        layer as it was."""
        if self._variables:
            self.set_weights(values)
            return
        values = list(values)
        names = self._variable_names()
        if len(values) != len(names):
            raise ValueError(
                f"Layer {self.name} expects {len(names)} weights ({', '.join(names)}); "
                f"received {len(values)}."
            )
        shapes = [tuple(v.shape) if hasattr(v, "shape") else np.shape(v) for v in values]
        if any(shape != shapes[0] for shape in shapes):
            raise ValueError(
                f"Layer {self.name}: every weight ({', '.join(names)}) has the same shape; "
                f"received shapes {shapes}."
            )
        wide = any(getattr(v, "dtype", None) in (torch.float64, np.float64) for v in values)
        checkpoint = self._checkpoint()
        try:
            self._materialize(shapes[0], torch.float64 if wide else torch.float32)
            self.set_weights(values)
        except BaseException:
            self._rollback(checkpoint)
            raise

    def _initial_values(
        self, shape: tuple[int, ...], dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        """Every variable's initial value, in TF's creation order (gamma, beta, moving
        mean and variance, then the renorm statistics); ``moving_stddev`` and
        ``renorm_stddev`` are ``√moving_variance_initializer(shape)``, as in TF."""
        specs: list[tuple[str, str, bool]] = []
        if self.scale:
            specs.append(("gamma", "gamma_initializer", False))
        if self.center:
            specs.append(("beta", "beta_initializer", False))
        specs += [
            ("moving_mean", "moving_mean_initializer", False),
            ("moving_variance", "moving_variance_initializer", False),
        ]
        if self.renorm:
            specs += [
                ("moving_stddev", "moving_variance_initializer", True),
                ("renorm_mean", "moving_mean_initializer", False),
                ("renorm_stddev", "moving_variance_initializer", True),
            ]
        values = {}
        for name, argument, sqrt in specs:
            value = initial_value(getattr(self, argument), shape, dtype, argument)
            values[name] = torch.sqrt(value) if sqrt else value
        return values

    def _param_shape(self, shape: tuple[int | None, ...], axes: list[int]) -> tuple[int, ...]:
        if len(axes) == 1 and self.virtual_batch_size is None:
            return (int(shape[axes[0]]),)  # type: ignore[arg-type]
        full = [int(shape[a]) if a in axes else 1 for a in range(len(shape))]  # type: ignore[arg-type]
        if self.virtual_batch_size is not None:
            full.insert(1, 1)
        return tuple(full)
