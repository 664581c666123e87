"""The C kernels' separate passes, which synchronized statistics combine around their
collectives: per-channel statistics (the kernels' ``stats`` export), the normalize pass
with given coefficients (``affine``), the backward's sums (``reduce``) and ``dx``.

Inputs are dense CPU tensors the kernels take (``view.takes``); per-channel tensors are
stat-shaped; sums and statistics come back in float64. Every tensor whose address a
kernel reads is held in a local until the kernel returns (a temporary made inside the
argument list could be freed before the call).
"""

from __future__ import annotations

from typing import Any

import torch

from ..._layout import PARAM_DTYPE, like
from . import build
from .view import function, native

__all__ = ["dx", "grad_sums", "moments", "normalize"]


def _vectors(dtype: torch.dtype, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel tensors as contiguous vectors of the kernels' parameter dtype."""
    pdt = PARAM_DTYPE[dtype]
    return [t.reshape(-1).to(pdt).contiguous() for t in tensors]


def moments(x: torch.Tensor, geo: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n, μ, M2)`` per channel from the kernels' two-pass statistics."""
    mean = torch.empty(geo.channels, dtype=torch.float64)
    var = torch.empty(geo.channels, dtype=torch.float64)
    view = native(geo)
    function(build.library(), "stats", x.dtype)(
        x.data_ptr(),
        view.dims,
        view.strides,
        mean.data_ptr(),
        var.data_ptr(),
        build.threads(x.numel()),
    )
    shape = geo.stat_shape
    n = torch.full(shape, float(geo.count), dtype=torch.float64)
    return n, mean.reshape(shape), var.reshape(shape) * n


def normalize(
    x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, geo: Any
) -> torch.Tensor:
    """``y = (x − μ)·k + o`` (the kernels' ``affine`` export)."""
    y = torch.empty_like(x)
    view = native(geo)
    vectors = _vectors(x.dtype, mean, scale, shift)  # (alive until the kernel returns)
    function(build.library(), "affine", x.dtype)(
        x.data_ptr(),
        y.data_ptr(),
        view.dims,
        view.strides,
        *(v.data_ptr() for v in vectors),
        build.threads(x.numel()),
    )
    return y


def grad_sums(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, geo: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σdy`` and ``Σdy·(x − μ)`` per channel."""
    sdy = torch.empty(geo.channels, dtype=torch.float64)
    sdx = torch.empty(geo.channels, dtype=torch.float64)
    view = native(geo)
    dy, (mean,) = like(dy, x), _vectors(x.dtype, mean)  # (alive until the kernel returns)
    function(build.library(), "reduce", x.dtype)(
        dy.data_ptr(),
        x.data_ptr(),
        view.dims,
        view.strides,
        mean.data_ptr(),
        sdy.data_ptr(),
        sdx.data_ptr(),
        build.threads(x.numel()),
    )
    return sdy.reshape(geo.stat_shape), sdx.reshape(geo.stat_shape)


def dx(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    k: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    geo: Any,
) -> torch.Tensor:
    """``dx = (dy − k₁ − (x − μ)·k₂)·k₃``."""
    out = torch.empty_like(x)
    view = native(geo)
    dy, vectors = like(dy, x), _vectors(x.dtype, mean, *k)  # (alive until the kernel returns)
    function(build.library(), "dx", x.dtype)(
        dy.data_ptr(),
        x.data_ptr(),
        out.data_ptr(),
        view.dims,
        view.strides,
        *(v.data_ptr() for v in vectors),
        build.threads(x.numel()),
    )
    return out
