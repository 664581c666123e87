"""What a ``BatchNormalization`` call accepts: the input's shape, type, device and dtype,
the ``training`` flag, the ``mask`` and the values ``adjustment(shape)`` returns.

Mixed into ``BatchNormalization``; every check raises before anything changes, with a
message naming the argument and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._arguments import broadcasts_to, is_complex
from ._checks import is_bool
from ._utils import SIXTEEN_BIT

TRAINING_FORMS = (
    "None (follow the module's train()/eval() mode), a Python or NumPy bool, an integer "
    "(nonzero means training), or a one-element bool or integer tensor"
)


class CallInputs:
    """The input checks of ``BatchNormalization`` (see the module docstring)."""

    name: str
    _input_rank: int
    _channel_sizes: dict[int, int]
    _axes: list[int]
    _declared_dtype: torch.dtype | None
    _trainable: bool
    training: bool
    adjustment: Any
    moving_mean: torch.Tensor

    def _expected_shape(self) -> tuple[int | None, ...]:
        return tuple(self._channel_sizes.get(a) for a in range(self._input_rank))

    def _check_shape(self, shape: Sequence[int | None]) -> None:
        if torch.jit.is_tracing():  # traced sizes are tensors; the layout is fixed by build
            return
        fits = len(shape) == self._input_rank
        if fits:
            for a, size in self._channel_sizes.items():
                if shape[a] is not None and shape[a] != size:
                    fits = False
        if not fits:
            raise ValueError(
                f"Input 0 of layer {self.name} is incompatible with the layer: expected shape "
                f"{self._expected_shape()} (rank {self._input_rank}, None = any size), "
                f"received shape {tuple(shape)}."
            )

    def _prepare(self, inputs: Any) -> tuple[torch.Tensor, torch.dtype]:
        """Validate the input; return it in the dtype the passes read (16-bit input
        stays 16-bit, the math runs in float32) and the output dtype."""
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(
                f"Layer {self.name} expects a torch.Tensor or NumPy array; received "
                f"{type(inputs).__name__}."
            )
        self._check_shape(inputs.shape)
        if inputs.is_complex():
            raise TypeError(
                f"Layer {self.name} does not support complex input (received {inputs.dtype})."
            )
        moving_mean = self.moving_mean
        var_dtype, device = moving_mean.dtype, moving_mean.device
        if inputs.is_cpu != moving_mean.is_cpu or (not inputs.is_cpu and inputs.device != device):
            raise ValueError(
                f"Input of layer {self.name} is on {inputs.device} but the layer's variables are "
                f"on {device}; move one of them (e.g. `layer.to({str(inputs.device)!r})`)."
            )
        declared = self._declared_dtype
        if declared is not None and inputs.dtype != declared:
            inputs = inputs.to(declared)
        elif not inputs.is_floating_point():
            inputs = inputs.to(var_dtype)
        out_dtype = inputs.dtype
        if out_dtype == var_dtype or (out_dtype in SIXTEEN_BIT and var_dtype == torch.float32):
            return inputs, out_dtype
        return inputs.to(torch.promote_types(out_dtype, var_dtype)), out_dtype

    def _training_flag(self, training: Any) -> bool | torch.Tensor:
        """The call's mode: a bool, or (a 0-dim tensor while ``torch.compile`` traces)
        the checked tensor itself, which the layer then selects with."""
        if not self._trainable:
            return False
        if training is None:
            return self.training
        if training is True or training is False:
            return training
        if isinstance(training, torch.Tensor):
            if training.numel() != 1:
                raise ValueError(
                    f"`training` must be {TRAINING_FORMS}; received a tensor of shape "
                    f"{tuple(training.shape)}."
                )
            if training.is_floating_point() or training.is_complex():
                raise TypeError(
                    f"`training` must be {TRAINING_FORMS}; received a {training.dtype} tensor."
                )
            if training.device.type == "meta":
                raise ValueError("`training` is a meta tensor, which holds no value.")
            if torch.compiler.is_compiling():
                return training
            return bool(training)
        if is_bool(training) or isinstance(training, (int, np.integer)):
            return bool(training)
        raise TypeError(
            f"`training` must be {TRAINING_FORMS}; received {training!r} of type "
            f"{type(training).__name__}."
        )

    @staticmethod
    def _param(value: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """A variable in the parameter dtype of the passes for ``x``."""
        dtype = torch.float32 if x.dtype in SIXTEEN_BIT else x.dtype
        if value is None or value.dtype == dtype:
            return value
        return value.to(dtype)

    def _mask_weights(self, mask: Any, x: torch.Tensor) -> torch.Tensor:
        """Check ``mask`` (input shape without the channel axes) and return float
        weights that broadcast against ``x``."""
        if isinstance(mask, np.ndarray):
            if mask.dtype.kind not in "biufc":
                raise TypeError(
                    f"`mask` must be a boolean tensor or array; received a NumPy array of dtype "
                    f"{mask.dtype}."
                )
            mask = torch.from_numpy(np.ascontiguousarray(mask).reshape(mask.shape))
        if not isinstance(mask, torch.Tensor):
            raise TypeError(
                f"`mask` must be a boolean tensor or None; received {type(mask).__name__}."
            )
        expected = tuple(n for d, n in enumerate(x.shape) if d not in self._axes)
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"`mask` of layer {self.name} must have the input's shape without its channel "
                f"axis {self._axes}: expected {expected}, received {tuple(mask.shape)}."
            )
        if mask.device != x.device:
            raise ValueError(f"`mask` is on {mask.device} but the input is on {x.device}.")
        if mask.is_complex():
            raise TypeError("`mask` must be boolean (or real weights); received complex values.")
        weights = mask.to(x.dtype)
        for axis in self._axes:
            weights = weights.unsqueeze(axis)
        return weights

    def _adjustment_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Call ``adjustment(x.shape)`` and check that (scale, bias) broadcast to ``x``."""
        shape = x.shape
        result = self.adjustment(shape)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ValueError(
                f"`adjustment` must return a pair (scale, bias); returned {type(result).__name__}."
            )
        dtype = torch.float32 if x.dtype in SIXTEEN_BIT else x.dtype
        scale, bias = result
        return (
            _adjustment_tensor("scale", scale, shape, dtype, x.device),
            _adjustment_tensor("bias", bias, shape, dtype, x.device),
        )


def _adjustment_tensor(
    what: str, value: Any, shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """One value an adjustment returned, as a real tensor of ``dtype`` on ``device`` that
    broadcasts to ``shape`` (asked on every call: a ready tensor is only checked)."""
    if not (isinstance(value, torch.Tensor) and value.dtype == dtype and value.device == device):
        if is_complex(value):
            raise TypeError(f"`adjustment` returned a complex {what}; expected real values.")
        try:
            value = torch.as_tensor(value, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"`adjustment` must return real tensors (scale, bias); returned a "
                f"{what} of type {type(value).__name__}."
            ) from exc
    if not broadcasts_to(value.shape, shape):
        raise ValueError(
            f"`adjustment` returned a {what} of shape {tuple(value.shape)}, which does "
            f"not broadcast to the input shape {tuple(shape)}."
        )
    return value
