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

import torch

from . import distributed
from . import functional as F
from ._arguments import (
    constructor_arguments,
    fused_problem,
    resolve_fused,
)
from ._bn_config import BatchNormConfig
from ._bn_variables import STATISTICS, BatchNormVariables
from ._call_inputs import CallInputs
from ._checks import check_host_clipping
from .backends import SHORT, ShortCache
from .backends.c.shortcut import eligible_methods
from .layer import Layer, ShapeLike, as_shape
from .symbolic import Update

__all__ = ["BatchNormalization"]

_is_compiling = torch.compiler.is_compiling
_NOT_ARGUMENTS = ("self", "kwargs", "trainable", "name", "__class__")


class BatchNormalization(CallInputs, BatchNormVariables, BatchNormConfig, Layer):
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
        raw = {k: v for k, v in locals().items() if k not in _NOT_ARGUMENTS}
        a = constructor_arguments({**raw, "dtype": kwargs.get("dtype")})
        super().__init__(trainable=trainable, name=name, **kwargs)
        self._config_axis = a.pop("config_axis")
        self.axis: int | list[int] = self._config_axis
        for key in ("initializers", "regularizers", "constraints"):
            for k, v in a.pop(key).items():
                setattr(self, k, v)
        fused = a.pop("fused")
        for k, v in a.items():  # momentum, epsilon, center, scale, renorm, …
            setattr(self, k, v)
        self._fused_arg = fused
        if fused is None and not self._fused_can_be_used():
            fused = False
        self.fused: bool | None = fused
        self._axes: list[int] = []
        self._input_rank = 0
        self._channel_sizes: dict[int, int] = {}
        self._bessel = False
        self._short_entries = ShortCache()  # the short call's per-layout entries
        self._declare_variables()
        if self._batch_input_shape is not None:
            self.build(self._batch_input_shape)

    # ------------------------------------------------------------------ fused rules
    def _fused_can_be_used(self) -> bool:
        """Whether TF's fused rules can apply to this configuration (any input)."""
        args = (self.renorm, self.axis, self.virtual_batch_size, self.adjustment)
        return fused_problem(*args, self._declared_dtype) is None

    def _resolve_fused(self, rank: int, axes: list[int], dtype: torch.dtype) -> bool:
        """TF V2's build-time choice (``_arguments.resolve_fused``)."""
        return resolve_fused(self.fused, rank, axes, dtype, self._config_axis)

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
        if not args and type(inputs) is torch.Tensor and SHORT.enabled:
            infer = SHORT.infer  # the backend's inference short call, checks in C++
            if infer is not None and not _is_compiling():
                y = infer(self, inputs, kwargs)
                if y is not None:
                    return y
            y = SHORT.call(self, inputs, kwargs)
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
        moving = [b for b in (self._buffers[n] for n in STATISTICS) if b is not None]
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
        checked = group is None and not torch.jit.is_tracing()  # (traced sizes are tensors)
        if checked and 0 in [x.shape[d] for d in dims]:  # synchronized: decided globally
            raise ValueError(
                f"Layer {self.name} received an empty batch (shape {tuple(x.shape)}) in "
                "training: batch statistics are undefined. Use training=False for empty input."
            )
        vbs = self.virtual_batch_size
        if vbs is not None and checked and x.shape[0] % vbs:  # synchronized: globally
            raise ValueError(
                f"Layer {self.name}: the batch size {x.shape[0]} is not divisible by "
                f"virtual_batch_size={vbs}; in training every ghost batch needs {vbs} examples."
            )
        renorm = None
        if self.renorm:
            # a schedule may have changed them: host values are checked on every call, device
            # tensors only when built (reading them here would synchronize the host)
            check_host_clipping(self.renorm_clipping)
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

    def _synchronize(self, process_group: Any) -> None:
        """Switch to synchronized statistics over ``process_group`` with the rules of
        ``synchronized=True`` at construction: TensorFlow's non-fused ones (the biased
        moving variance, unless ``unbiased_moving_variance`` says otherwise). ValueError
        for ``fused=True``, which the constructor refuses with ``synchronized=True``."""
        if self._fused_arg:
            raise ValueError(
                f"Layer {self.name} has fused=True, which synchronized statistics do not "
                "support (TensorFlow's synchronized layer uses the non-fused rules)."
            )
        self.synchronized = True
        self.process_group = process_group
        self._fused_arg = self.fused = False
        if self.built:
            self._bessel = bool(self.unbiased_moving_variance)

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


eligible_methods(BatchNormalization.call, Layer.forward)  # the short call's reference
