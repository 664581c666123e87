"""The initializer classes of ``batchnorm.initializers`` (which adds Keras' lowercase
aliases, ``get``, ``serialize`` and ``deserialize``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._utils import as_dtype

Shape = Sequence[int]


def _resolve(shape: Shape, dtype: Any) -> tuple[tuple[int, ...], torch.dtype]:
    resolved = as_dtype(dtype) or torch.get_default_dtype()
    return tuple(int(d) for d in shape), resolved


class Initializer:
    """Base class: ``__call__(shape, dtype=None) -> Tensor`` and ``get_config()``."""

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Initializer:
        """``cls(**config)``; a ``dtype`` key (TensorFlow's configs) is dropped, as Keras does."""
        config = dict(config)
        config.pop("dtype", None)
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """``w = 0``."""

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        return torch.zeros(shape, dtype=dtype)


class Ones(Initializer):
    """``w = 1``."""

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        return torch.ones(shape, dtype=dtype)


class Constant(Initializer):
    """Every element equal to ``value``: a number, or an array with one element or as
    many elements as the shape (reshaped to it), as ``tf.constant(value, shape=shape)``."""

    def __init__(self, value: Any = 0) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (numbers.Real, np.ndarray, torch.Tensor, list, tuple)
        ):
            raise TypeError(
                f"Constant `value` must be a number or an array of numbers; received {value!r}."
            )
        self.value = value

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        value = torch.as_tensor(self.value, dtype=dtype)
        if value.numel() == 1:
            return torch.full(shape, value.item(), dtype=dtype)
        if value.numel() != math.prod(shape):
            raise ValueError(
                f"Constant `value` has {value.numel()} elements; the shape {shape} needs 1 "
                f"or {math.prod(shape)}."
            )
        return value.reshape(shape).clone()

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


class _Random(Initializer):
    """Random initializers draw from a private generator when seeded (the same values on
    every call) and from torch's global generator otherwise (new values on every call)."""

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (
            isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
        ):
            raise TypeError(f"`seed` must be an int or None; received {seed!r}.")
        self.seed = None if seed is None else int(seed)

    def _generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(self.seed)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


class RandomNormal(_Random):
    """``w ~ N(mean, stddev²)``."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean = mean
        self.stddev = stddev

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        out = torch.empty(shape, dtype=dtype)
        return torch.nn.init.normal_(out, self.mean, self.stddev, generator=self._generator())

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(_Random):
    """``w ~ U[minval, maxval)``."""

    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None
    ) -> None:
        super().__init__(seed)
        self.minval = minval
        self.maxval = maxval

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        out = torch.empty(shape, dtype=dtype)
        return torch.nn.init.uniform_(out, self.minval, self.maxval, generator=self._generator())

    def get_config(self) -> dict[str, Any]:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class TruncatedNormal(_Random):
    """``w ~ N(mean, stddev²)`` re-drawn outside ``mean ± 2·stddev`` (Keras' rule)."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean = mean
        self.stddev = stddev

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        out = torch.empty(shape, dtype=dtype)
        lo, hi = self.mean - 2 * self.stddev, self.mean + 2 * self.stddev
        return torch.nn.init.trunc_normal_(
            out, self.mean, self.stddev, lo, hi, generator=self._generator()
        )

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _compute_fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """Keras' fan rule: 1-D uses the length, 2-D (in, out), N-D a receptive field."""
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


class VarianceScaling(_Random):
    """Samples with variance ``s = scale / max(1, n)``, n = fan_in, fan_out or their mean.

    ``distribution`` is ``'truncated_normal'`` (``N(0, (√s/0.8796)²)`` cut at two
    standard deviations, so that the variance is ``s``; ``'normal'`` is accepted for it),
    ``'untruncated_normal'`` (``N(0, s)``) or ``'uniform'`` (``U[±√(3·s)]``). Fans follow
    Keras: a 1-D shape ``(n,)`` has both fans n, 2-D ``(in, out)``, N-D
    ``(..., in, out)`` multiplies both by the product of the leading dimensions.
    """

    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not scale > 0.0:
            raise ValueError(f"`scale` must be a positive float; received scale={scale!r}.")
        if mode not in self._MODES:
            raise ValueError(f"`mode` must be one of {self._MODES}; received {mode!r}.")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in self._DISTRIBUTIONS:
            raise ValueError(
                f"`distribution` must be one of {self._DISTRIBUTIONS}; received {distribution!r}."
            )
        self.scale = scale
        self.mode = mode
        self.distribution = distribution

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        fan_in, fan_out = _compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        out = torch.empty(shape, dtype=dtype)
        gen = self._generator()
        if self.distribution == "truncated_normal":
            std = math.sqrt(scale) / 0.87962566103423978
            return torch.nn.init.trunc_normal_(out, 0.0, std, -2 * std, 2 * std, generator=gen)
        if self.distribution == "untruncated_normal":
            return torch.nn.init.normal_(out, 0.0, math.sqrt(scale), generator=gen)
        limit = math.sqrt(3.0 * scale)
        return torch.nn.init.uniform_(out, -limit, limit, generator=gen)

    def get_config(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


class _Scaling(VarianceScaling):
    """A VarianceScaling preset: subclasses fix (scale, mode, distribution)."""

    PRESET: tuple[float, str, str] = (1.0, "fan_in", "truncated_normal")

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(*self.PRESET, seed=seed)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


class GlorotUniform(_Scaling):
    """``VarianceScaling(1, 'fan_avg', 'uniform')``: ``w ~ U[±√(6/(fan_in + fan_out))]``."""

    PRESET = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Scaling):
    """``VarianceScaling(1, 'fan_avg')``: truncated normal, variance ``2/(fan_in + fan_out)``."""

    PRESET = (1.0, "fan_avg", "truncated_normal")


class HeNormal(_Scaling):
    """``VarianceScaling(2, 'fan_in')``: truncated normal, variance ``2/fan_in``."""

    PRESET = (2.0, "fan_in", "truncated_normal")


class HeUniform(_Scaling):
    """``VarianceScaling(2, 'fan_in', 'uniform')``: ``w ~ U[±√(6/fan_in)]``."""

    PRESET = (2.0, "fan_in", "uniform")


class LecunNormal(_Scaling):
    """``VarianceScaling(1, 'fan_in')``: truncated normal, variance ``1/fan_in``."""

    PRESET = (1.0, "fan_in", "truncated_normal")


class LecunUniform(_Scaling):
    """``VarianceScaling(1, 'fan_in', 'uniform')``: ``w ~ U[±√(3/fan_in)]``."""

    PRESET = (1.0, "fan_in", "uniform")


class Orthogonal(_Random):
    """``gain · Q``: Q (semi-)orthogonal, from the QR decomposition of a normal matrix, over
    the shape flattened to ``(∏ shape[:-1], shape[-1])``."""

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        if len(shape) < 2:
            raise ValueError(
                f"The Orthogonal initializer needs a shape of rank >= 2; received {shape}."
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        flat = torch.empty((rows, cols), dtype=dtype)
        torch.nn.init.orthogonal_(flat, self.gain, generator=self._generator())
        return flat.reshape(shape)

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only)."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def __call__(self, shape: Shape, dtype: Any = None) -> torch.Tensor:
        shape, dtype = _resolve(shape, dtype)
        if len(shape) != 2:
            raise ValueError(f"The Identity initializer needs a 2-D shape; received {shape}.")
        return self.gain * torch.eye(*shape, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain}
