"""The Triton backend's pieces as ``torch.library.triton_op``s: what ``torch.compile``
sees of them, so a compiled model runs the same kernels (Inductor schedules them among
its own; AOTAutograd traces the launches through ``wrap_triton``).

Each op is the eager launch function (``launch.py``) with ``wrap=True``; its arguments
are tensors and the 5-D view's sizes and strides as integer lists (``int[]`` in the
schema). Eager calls never go through them: a ``triton_op`` call costs ~8 µs of host time
that the direct launch does not.

Under Triton's interpreter (``TRITON_INTERPRET=1``, the tests on CPU) the launches hand
``wrap_triton`` kernels that trace like compiled ones and run in the interpreter
(``launch.traceable``), so ``torch.compile(backend="aot_eager")`` and ``make_fx`` run
these ops on CPU tensors (Inductor cannot: it generates GPU code).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.library import triton_op

from . import launch

__all__ = ["grad_sums", "input_grad", "moments", "normalize"]


def _view(sizes: list[int], strides: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(int(n) for n in sizes), tuple(int(s) for s in strides)


def _weights(w: torch.Tensor | None, strides: list[int]) -> Any:
    return None if w is None else (w, tuple(int(s) for s in strides))


@triton_op("batchnorm::triton_moments", mutates_args=())
def moments(
    x: torch.Tensor,
    sizes: list[int],
    strides: list[int],
    w: torch.Tensor | None,
    w_strides: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``launch.moments``: per-channel mean, M2 and count (float64 vectors)."""
    view = _view(sizes, strides)
    mean, m2, n = launch.moments(x, view, _weights(w, w_strides), wrap=True)
    if not isinstance(n, torch.Tensor):
        n = torch.full_like(mean, n)
    return mean, m2, n


@triton_op("batchnorm::triton_normalize", mutates_args=())
def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    sizes: list[int],
    strides: list[int],
) -> torch.Tensor:
    """``launch.normalize``: ``y = (x − μ)·k + o``."""
    return launch.normalize(x, mean, scale, shift, _view(sizes, strides), wrap=True)


@triton_op("batchnorm::triton_grad_sums", mutates_args=())
def grad_sums(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, sizes: list[int], strides: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``launch.grad_sums``: per-channel ``Σdy`` and ``Σdy·(x − μ)``."""
    return launch.grad_sums(dy, x, mean, _view(sizes, strides), wrap=True)


@triton_op("batchnorm::triton_input_grad", mutates_args=())
def input_grad(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    k3: torch.Tensor,
    sizes: list[int],
    strides: list[int],
    w: torch.Tensor | None,
    w_strides: list[int],
) -> torch.Tensor:
    """``launch.input_grad``: ``dx = (dy − w·(k₁ + (x − μ)·k₂))·k₃``."""
    view, weights = _view(sizes, strides), _weights(w, w_strides)
    return launch.input_grad(dy, x, mean, (k1, k2, k3), view, weights, wrap=True)
