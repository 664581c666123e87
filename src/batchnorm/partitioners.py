"""Partitioned variables, as TF1's ``add_variable(..., partitioner=...)``.

A partitioner maps ``(shape, dtype)`` to the number of partitions along each
dimension. A partitioned variable is stored as separate parameters (shards,
each in the layer's weight lists and trained on its own); the
``PartitionedVariable`` handle concatenates them whenever it is used as a
tensor. Shards follow TF's split: along the partitioned axis of size ``D`` in
``n`` shards, each gets ``D // n`` entries and the first ``D % n`` one more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "PartitionedVariable",
    "fixed_size_partitioner",
    "min_max_variable_partitioner",
    "variable_axis_size_partitioner",
]

Partitioner = Callable[[Sequence[int], torch.dtype], list[int]]


def _check_axis(shape: Sequence[int], axis: int) -> None:
    if not 0 <= axis < len(shape):
        raise ValueError(f"Partitioner axis {axis} is out of range for shape {tuple(shape)}.")


def fixed_size_partitioner(num_shards: int, axis: int = 0) -> Partitioner:
    """``num_shards`` partitions along ``axis`` (fewer if the axis is shorter)."""
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"`num_shards` must be a positive int; received {num_shards!r}.")

    def partitioner(shape: Sequence[int], dtype: torch.dtype) -> list[int]:
        _check_axis(shape, axis)
        parts = [1] * len(shape)
        parts[axis] = max(1, min(num_shards, shape[axis]))
        return parts

    return partitioner


def variable_axis_size_partitioner(
    max_shard_bytes: int,
    axis: int = 0,
    bytes_per_string_element: int = 16,
    max_shards: int | None = None,
) -> Partitioner:
    """As few partitions along ``axis`` as keep every shard within ``max_shard_bytes``
    (at most ``max_shards``)."""
    if max_shard_bytes < 1 or bytes_per_string_element < 1:
        raise ValueError(
            "Both max_shard_bytes and bytes_per_string_element must be positive; received "
            f"max_shard_bytes={max_shard_bytes}, "
            f"bytes_per_string_element={bytes_per_string_element}."
        )
    if max_shards is not None and max_shards < 1:
        raise ValueError(f"max_shards must be positive; received {max_shards}.")

    def partitioner(shape: Sequence[int], dtype: torch.dtype) -> list[int]:
        _check_axis(shape, axis)
        element = torch.empty((), dtype=dtype).element_size()
        slice_bytes = element * math.prod(d for i, d in enumerate(shape) if i != axis)
        slices_per_shard = max(1, max_shard_bytes // max(1, slice_bytes))
        shards = max(1, math.ceil(shape[axis] / slices_per_shard))
        if max_shards is not None:
            shards = min(shards, max_shards)
        parts = [1] * len(shape)
        parts[axis] = min(shards, max(1, shape[axis]))
        return parts

    return partitioner


def min_max_variable_partitioner(
    max_partitions: int = 1,
    axis: int = 0,
    min_slice_size: int = 256 << 10,
    bytes_per_string_element: int = 16,
) -> Partitioner:
    """Partitions of at least ``min_slice_size`` bytes, at most ``max_partitions``."""
    if max_partitions < 1 or min_slice_size < 1:
        raise ValueError(
            "max_partitions and min_slice_size must be positive; received "
            f"max_partitions={max_partitions}, min_slice_size={min_slice_size}."
        )

    def partitioner(shape: Sequence[int], dtype: torch.dtype) -> list[int]:
        _check_axis(shape, axis)
        element = torch.empty((), dtype=dtype).element_size()
        total = element * math.prod(shape)
        slices = max(1, min(max_partitions, math.ceil(total / min_slice_size), shape[axis]))
        parts = [1] * len(shape)
        parts[axis] = int(slices)
        return parts

    return partitioner


def split_sizes(size: int, parts: int) -> list[int]:
    """TF's shard sizes: ``size // parts`` each, the first ``size % parts`` one larger."""
    base, extra = divmod(size, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class PartitionedVariable:
    """The handle of a partitioned variable: its shards (parameters of ``layer``)
    concatenated along ``axis`` whenever it is used as a tensor."""

    def __init__(self, layer: Any, name: str, shard_names: list[str], axis: int) -> None:
        self._layer = layer
        self.name = name
        self._shard_names = shard_names
        self.axis = axis

    @property
    def shards(self) -> list[torch.Tensor]:
        return [getattr(self._layer, n) for n in self._shard_names]

    def as_tensor(self) -> torch.Tensor:
        """The full variable (a differentiable concatenation of the shards)."""
        return torch.cat(self.shards, dim=self.axis)

    def __len__(self) -> int:
        return len(self._shard_names)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.shards)

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self.as_tensor()[index]

    @property
    def shape(self) -> torch.Size:
        return self.as_tensor().shape

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    @property
    def device(self) -> torch.device:
        return self.shards[0].device

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        def unwrap(value: Any) -> Any:
            if isinstance(value, PartitionedVariable):
                return value.as_tensor()
            if isinstance(value, (list, tuple)):
                return type(value)(unwrap(v) for v in value)
            return value

        return func(*unwrap(args), **{k: unwrap(v) for k, v in (kwargs or {}).items()})

    def _binary(name: str):  # type: ignore[no-untyped-def]  # noqa: N805
        def op(self: PartitionedVariable, other: Any) -> torch.Tensor:
            other = other.as_tensor() if isinstance(other, PartitionedVariable) else other
            return getattr(self.as_tensor(), name)(other)

        return op

    __add__, __radd__ = _binary("__add__"), _binary("__radd__")
    __sub__, __rsub__ = _binary("__sub__"), _binary("__rsub__")
    __mul__, __rmul__ = _binary("__mul__"), _binary("__rmul__")
    __truediv__, __rtruediv__ = _binary("__truediv__"), _binary("__rtruediv__")
    __matmul__, __rmatmul__ = _binary("__matmul__"), _binary("__rmatmul__")
    __pow__ = _binary("__pow__")
    del _binary

    def __neg__(self) -> torch.Tensor:
        return -self.as_tensor()

    def __repr__(self) -> str:
        return (
            f"PartitionedVariable(name={self.name!r}, shape={tuple(self.shape)}, "
            f"shards={len(self)}, axis={self.axis})"
        )
