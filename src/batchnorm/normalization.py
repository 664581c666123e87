"""``BatchNormalization``: TensorFlow's batch normalization layer on PyTorch.

Training (per channel, statistics over every non-channel axis, ``N`` values):

    μ = Σx/N,  σ² = Σ(x − μ)²/N,  y = (x − μ)·γ/√(σ² + ε) + β
    moving_mean     ← moving_mean − (moving_mean − μ)·(1 − momentum)
    moving_variance ← moving_variance − (moving_variance − v)·(1 − momentum)

where ``v = σ²·N/max(N − 1, 1)`` on TensorFlow's fused path (4-D/5-D input,
channel axis 1 or last) and ``v = σ²`` otherwise; ``unbiased_moving_variance``
overrides that rule. Inference uses the moving statistics in the same formula.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from . import _cxx, _shortcut, distributed
from . import functional as F
from ._arguments import (
    constructor_arguments,
    fused_problem,
    initial_value,
    resolve_fused,
)
from ._call_inputs import CallInputs
from ._checks import check_clipping_values
from ._utils import param_dtype_for, serialize
from .layer import Layer, ShapeLike, as_shape
from .symbolic import Update

__all__ = ["BatchNormalization"]

_STATISTICS = (
    "moving_mean",
    "moving_variance",
    "moving_stddev",
    "renorm_mean",
    "renorm_stddev",
)


class BatchNormalization(CallInputs, Layer):
    """Batch normalization with every argument of TensorFlow's layer.

    Training normalizes each channel with the batch statistics and updates the
    moving statistics in place; inference (``training=False``, ``.eval()``, or a
    frozen layer) uses the moving statistics:

        y = (x − μ)·γ/√(σ² + ε) + β

    Arguments follow ``tf.keras.layers.BatchNormalization`` (momentum 0.99 is
    TF's decay, i.e. PyTorch momentum 0.01; epsilon defaults to 1e-3). Extras:

    - ``unbiased_moving_variance``: None follows TensorFlow (Bessel-corrected
      variance in the moving average on the fused path, biased otherwise);
      True/False forces one (True is PyTorch's rule).
    - ``ghost_grouping``: ``'strided'`` (TensorFlow: ghost batch g holds examples
      g, g+G, g+2G, …) or ``'contiguous'`` (consecutive chunks of
      ``virtual_batch_size`` examples).

    ``training=None`` follows the module's ``train()``/``eval()`` flag; a new
    layer is in train mode like every ``nn.Module`` (TensorFlow's bare call is
    inference: pass ``training=False`` or call ``.eval()`` for that).
    """

    def __init__(
        self,
        axis: int | Sequence[int] = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        renorm: bool = False,
        renorm_clipping: Mapping[str, float | torch.Tensor] | None = None,
        renorm_momentum: float = 0.99,
        fused: bool | None = None,
        trainable: bool = True,
        virtual_batch_size: int | None = None,
        adjustment: Callable[[torch.Size], tuple[Any, Any]] | None = None,
        name: str | None = None,
        synchronized: bool = False,
        *,
        process_group: Any = None,
        unbiased_moving_variance: bool | None = None,
        ghost_grouping: str = "strided",
        check_numerics: bool = False,
        **kwargs: Any,
    ) -> None:
        a = constructor_arguments(
            axis,
            momentum,
            epsilon,
            center,
            scale,
            beta_initializer,
            gamma_initializer,
            moving_mean_initializer,
            moving_variance_initializer,
            beta_regularizer,
            gamma_regularizer,
            beta_constraint,
            gamma_constraint,
            renorm,
            renorm_clipping,
            renorm_momentum,
            fused,
            virtual_batch_size,
            adjustment,
            synchronized,
            process_group,
            unbiased_moving_variance,
            ghost_grouping,
            check_numerics,
            kwargs.get("dtype"),
        )
        super().__init__(trainable=trainable, name=name, **kwargs)
        self._config_axis = a["config_axis"]
        self.axis: int | list[int] = a["config_axis"]
        for key in ("initializers", "regularizers", "constraints"):
            for k, v in a[key].items():
                setattr(self, k, v)
        for k in (
            "momentum",
            "epsilon",
            "center",
            "scale",
            "renorm",
            "renorm_clipping",
            "renorm_momentum",
            "virtual_batch_size",
            "adjustment",
            "unbiased_moving_variance",
            "ghost_grouping",
            "synchronized",
            "process_group",
            "check_numerics",
        ):
            setattr(self, k, a[k])
        fused = a["fused"]
        self._fused_arg = fused
        if fused is None and not self._fused_can_be_used():
            fused = False
        self.fused: bool | None = fused
        self._axes: list[int] = []
        self._input_rank = 0
        self._channel_sizes: dict[int, int] = {}
        self._bessel = False
        self._short_entries = _shortcut.Entries()  # the short call's per-layout entries
        self._declare_variables()
        if self._batch_input_shape is not None:
            self.build(self._batch_input_shape)

    def _declare_variables(self) -> None:
        """Placeholders for the variables the build will create (PyTorch's lazy
        convention: ``UninitializedParameter`` / ``UninitializedBuffer``, materialized in
        place); absent ones read as None (``layer.gamma is None`` with ``scale=False``)."""
        dtype = param_dtype_for(self._declared_dtype or torch.float32)
        for name, present in (("gamma", self.scale), ("beta", self.center)):
            placeholder = UninitializedParameter(requires_grad=self._trainable, dtype=dtype)
            self.register_parameter(name, placeholder if present else None)
        for name in _STATISTICS:
            present = self.renorm or name in ("moving_mean", "moving_variance")
            self.register_buffer(name, UninitializedBuffer(dtype=dtype) if present else None)

    # ------------------------------------------------------------------ fused rules
    def _raise_if_fused_cannot_be_used(self) -> None:
        problem = fused_problem(
            self.renorm, self.axis, self.virtual_batch_size, self.adjustment, self._declared_dtype
        )
        if problem is not None:
            raise ValueError(problem)

    def _fused_can_be_used(self) -> bool:
        return (
            fused_problem(
                self.renorm,
                self.axis,
                self.virtual_batch_size,
                self.adjustment,
                self._declared_dtype,
            )
            is None
        )

    def _resolve_fused(self, rank: int, axes: list[int], dtype: torch.dtype) -> bool:
        """TF V2's build-time choice (``_arguments.resolve_fused``)."""
        return resolve_fused(self.fused, rank, axes, dtype, self._config_axis)

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
        declared = self._declared_dtype or self._inferred_dtype
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
        for name in ("gamma", "beta", *_STATISTICS):  # placeholders of switched-off features
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
        value = state_dict.get(prefix + "moving_mean")
        if not self._variables and isinstance(value, torch.Tensor) and not is_lazy(value):
            self._materialize(tuple(value.shape), value.dtype)

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

    # ------------------------------------------------------------------ shapes
    def compute_output_shape(self, input_shape: ShapeLike) -> tuple[int | None, ...]:
        """The input shape, unchanged; TypeError for a non-shape, ValueError when it
        does not fit the built layer (rank or channel sizes)."""
        shape = as_shape(input_shape)
        if self.built:
            self._check_shape(shape)
        else:
            self._validate_axes(len(shape))
        return shape

    # ------------------------------------------------------------------ call
    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and type(inputs) is torch.Tensor:
            module = _cxx._module  # once loaded: its inference short call, checks in C++
            if module is not None and not _shortcut.is_compiling():
                y = module.short_infer(self, inputs, kwargs)
                if y is not None:
                    return y
            y = _shortcut.call(self, inputs, kwargs)
            if y is not None:
                return y
        return super().__call__(inputs, *args, **kwargs)

    def call(
        self, inputs: torch.Tensor, training: Any = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalize ``inputs``; training updates the moving statistics in place.

        ``mask`` (boolean, the input's shape without the channel axes) restricts
        the batch statistics to the ``True`` positions; every position is
        normalized. It is honoured on every path, including TF's fused one.
        """
        x, out_dtype = self._prepare(inputs)
        is_training = self._training_flag(training)
        weights = self._mask_weights(mask, x) if mask is not None else None
        if isinstance(is_training, torch.Tensor):  # a tensor flag under torch.compile
            y = self._train_or_infer(x, weights, is_training)
        else:
            y = self._train(x, weights) if is_training else self._infer(x)
        return y if y.dtype == out_dtype else y.to(out_dtype)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: the moving statistics in the normalize formula."""
        gamma, beta, mean, var = self.gamma, self.beta, self.moving_mean, self.moving_variance
        dtype = x.dtype
        if not (
            mean.dtype == dtype
            and (gamma is None or gamma.dtype == dtype)
            and (beta is None or beta.dtype == dtype)
        ):  # 16-bit input: float32 variables
            gamma, beta, mean, var = (self._param(t, x) for t in (gamma, beta, mean, var))
        return F.inference_forward(x, self._axes, gamma, beta, mean, var, self.epsilon)

    def _train_or_infer(
        self, x: torch.Tensor, weights: torch.Tensor | None, flag: torch.Tensor
    ) -> torch.Tensor:
        """A 0-dim tensor ``training`` flag while compiling: both branches run and
        ``torch.where(flag, ·, ·)`` selects the output and the moving statistics, so
        the graph has no data-dependent branch (one graph serves both values). The
        training branch's checks (empty batch, ghost-batch divisibility) apply either way."""
        moving = [b for b in (self._buffers[n] for n in _STATISTICS) if b is not None]
        before = [b.clone() for b in moving]
        inferred = self._infer(x)  # reads the statistics before the update
        trained = self._train(x, weights)
        flag = flag.to(device=x.device, dtype=torch.bool).reshape(())
        with torch.no_grad():
            for buffer, old in zip(moving, before, strict=True):
                buffer.copy_(torch.where(flag, buffer, old))
        return torch.where(flag, trained, inferred.to(trained.dtype))

    def _train(
        self,
        x: torch.Tensor,
        weights: torch.Tensor | None,
        adjustment: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Training step: every check first, then the output, then all updates at once.
        ``adjustment``: the values this call's ``adjustment(shape)`` already returned."""
        group = distributed.active_group(self.process_group) if self.synchronized else None
        dims = F.reduction_dims(x.dim(), self._axes)
        if group is None and 0 in [x.shape[d] for d in dims]:  # synchronized: decided globally
            raise ValueError(
                f"Layer {self.name} received an empty batch (shape {tuple(x.shape)}) in "
                "training: batch statistics are undefined. Use training=False for empty input."
            )
        vbs = self.virtual_batch_size
        if vbs is not None and group is None and x.shape[0] % vbs:  # synchronized: globally
            raise ValueError(
                f"Layer {self.name}: the batch size {x.shape[0]} is not divisible by "
                f"virtual_batch_size={vbs}; in training every ghost batch needs {vbs} examples."
            )
        renorm = None
        if self.renorm:
            check_clipping_values(self.renorm_clipping)  # a schedule may have changed them
            renorm = (
                self._param(self.renorm_mean, x),
                self._param(self.renorm_stddev, x),
                self.renorm_clipping,
            )
        if self.check_numerics and group is None and not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"Layer {self.name}: the training batch holds NaN or Inf (check_numerics=True); "
                "nothing was updated."
            )
        if adjustment is None and self.adjustment is not None:
            adjustment = self._adjustment_values(x)
        gamma, beta = self._param(self.gamma, x), self._param(self.beta, x)
        y, _ = F.train_forward(
            x,
            self._axes,
            gamma,
            beta,
            self.epsilon,
            virtual_batch_size=vbs,
            grouping=self.ghost_grouping,
            mask=weights,
            adjustment=adjustment,
            renorm=renorm,
            param_shape=self.moving_mean.shape,
            moving=self._moving(),
            group=group,
            name=self.name,
            check_numerics=self.check_numerics,
            sync_key=self,
        )
        return y

    def _symbolic_updates(self, node: Any, training: Any) -> list[Any]:
        """A symbolic call records TF1's two updates (moving mean and variance),
        conditional on its inputs, unless it cannot train (``training=False`` or a
        frozen layer)."""
        if training is False or not self.trainable:
            return []
        return [
            Update(self, f"{self.scope_prefix}{name}", node, None)
            for name in ("moving_mean", "moving_variance")
        ]

    def _moving(self) -> F.MovingStatistics:
        """The variables a training step updates, and TF's rules for them."""
        buffers = self._buffers  # direct reads: this runs on every training call
        if self.renorm:
            return F.MovingStatistics(
                buffers["moving_mean"],
                buffers["moving_variance"],
                self.momentum,
                self._bessel,
                buffers["moving_stddev"],
                buffers["renorm_mean"],
                buffers["renorm_stddev"],
                self.renorm_momentum,
            )
        return F.MovingStatistics(
            buffers["moving_mean"], buffers["moving_variance"], self.momentum, self._bessel
        )

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Keras-style constructor arguments (JSON-serializable where the callables
        have names or configs); ``axis`` is what was passed to the constructor."""
        config: dict[str, Any] = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": str(self._declared_dtype).removeprefix("torch.")
            if self._declared_dtype
            else None,
            "axis": self._config_axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }
        for key in (
            "beta_initializer",
            "gamma_initializer",
            "moving_mean_initializer",
            "moving_variance_initializer",
            "beta_regularizer",
            "gamma_regularizer",
            "beta_constraint",
            "gamma_constraint",
        ):
            config[key] = serialize(getattr(self, key))
        config.update(
            renorm=self.renorm,
            fused=self._fused_arg,
            virtual_batch_size=self.virtual_batch_size,
            unbiased_moving_variance=self.unbiased_moving_variance,
            ghost_grouping=self.ghost_grouping,
            synchronized=self.synchronized,
            check_numerics=self.check_numerics,
        )
        if self.renorm:
            config["renorm_clipping"] = {k: float(v) for k, v in self.renorm_clipping.items()}
            config["renorm_momentum"] = self.renorm_momentum
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = serialize(self.activity_regularizer)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BatchNormalization:
        """Inverse of ``get_config`` (an ``adjustment`` callable is not part of it)."""
        return cls(**dict(config))

    def extra_repr(self) -> str:
        """``name``, ``axis``, ``momentum`` and ``epsilon``, then every constructor argument
        that differs from its default (an ``adjustment`` and a ``process_group`` too)."""
        parts = [
            f"name={self.name!r}",
            f"axis={self._config_axis}",
            f"momentum={self.momentum}",
            f"epsilon={self.epsilon}",
        ]
        defaults = _default_config()
        for key, value in self.get_config().items():
            if key in ("name", "axis", "momentum", "epsilon") or value == defaults.get(key):
                continue
            if key.endswith(("_initializer", "_regularizer", "_constraint")):
                value = getattr(self, key)  # the object's repr, not its config
            parts.append(f"{key}={value!r}")
        if self.adjustment is not None:
            parts.append(f"adjustment={self.adjustment!r}")
        if self.process_group is not None:
            parts.append(f"process_group={self.process_group!r}")
        return ", ".join(parts)


_DEFAULT_CONFIG: dict[str, Any] = {}


def _default_config() -> dict[str, Any]:
    """``get_config()`` of a layer made with every default (the renorm entries of one
    with ``renorm=True``), made once."""
    if not _DEFAULT_CONFIG:
        config = BatchNormalization(name="defaults", renorm=True).get_config()
        config["renorm"] = False
        _DEFAULT_CONFIG.update(config)
    return _DEFAULT_CONFIG
