"""The Triton backend: GPU kernels (``kernels.py``) for CUDA tensors.

Its passes are ``PiecewiseBackend``'s, over four kernels (``kernels.py``, launched by
``launch.py``): per-channel moments (one read pass, deterministic split merge; weighted
by a mask's weights when there is one), normalize, the backward sums and the input
gradient.
It takes float32, float16 and bfloat16 CUDA tensors whose memory fits the kernels' 5-D
view (``_layout.canonical``: NCHW, channels-last, rows, ghost-batch views, multi-axis);
statistics are float32 in the kernels and merged in float64, outputs come in the
input's dtype and memory format. Everything else goes to PyTorch operations through
``supports``: float64, a per-example adjustment (the composite formula), layouts
outside the view, traced calls other than a compiled training call (whose pieces are
``triton_op``s: ``ops.py``), ROCm (untested) and GPUs older than Volta (bfloat16:
Ampere).

``triton`` is imported only when a call runs here: ``unavailable`` looks for it
without importing it. With ``TRITON_INTERPRET=1`` in the environment when this module
is imported, Triton's interpreter runs the same kernels on CPU tensors, which the
backend then takes when it is forced (``BATCHNORM_BACKEND=triton``,
``backends.use("triton")``): how the kernels are tested without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from typing import Any

import torch

from ..._layout import canonical, canonical_strides, like
from ..base import FORCED
from ..piecewise import PiecewiseBackend

__all__ = ["INTERPRET", "TritonBackend"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_UNFIT = (
    "the input's memory does not fit the kernels' 5-D view (empty, or channels out of "
    "the parameters' order)"
)


def _kernels() -> Any:
    from . import launch  # (imports triton: only once a call runs here)

    return launch


def _ops() -> Any:
    from . import ops  # (registers the custom operators on first use)

    return ops


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _exporting() -> bool:
    exporting = getattr(torch.compiler, "is_exporting", None)
    return exporting is None or exporting()


def _ints(t: Any) -> list[int]:
    return [int(v) for v in t]


@functools.lru_cache(maxsize=16)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _on(x: torch.Tensor) -> Any:
    """Launch on ``x``'s device (Triton launches on the current one)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class TritonBackend(PiecewiseBackend):
    """Triton kernels on CUDA tensors (see the module docstring)."""

    name = "triton"
    takes = (
        "CUDA tensors of float32, float16 and bfloat16 whose memory fits its 5-D view, "
        "masks included, on GPUs from Volta (bfloat16: Ampere), and compiled training "
        "calls (torch >= 2.6); leaves float64, per-example adjustments, ROCm, "
        "torch.export and compiled inference to PyTorch operations"
    )
    weighted = True
    # tests only: compile on CPU tensors in the interpreter (``backend="aot_eager"``;
    # Inductor generates GPU code, which the interpreter cannot run)
    compile_interpreted = False
    max_examples = 3 if INTERPRET else None  # property tests: the interpreter is slow

    def __init__(self) -> None:
        # (found when registered, without importing triton: a call that Dynamo traces
        # then reads a settled value rather than filling a cache it would guard on)
        self._why: list[str | None] = [self._reason()]

    def unavailable(self) -> str | None:
        if not self._why:
            self._why.append(self._reason())
        return self._why[0]

    @staticmethod
    def _reason() -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (it ships with PyTorch's Linux CUDA wheels)"
        if INTERPRET:
            return None
        if torch.version.hip is not None:
            return "ROCm is untested"
        if not torch.cuda.is_available():
            return (
                "no CUDA device here (with TRITON_INTERPRET=1 its kernels run on CPU "
                "tensors when it is forced)"
            )
        return None

    def supports(self, x: torch.Tensor, geo: Any) -> str | None:
        if x.device.type == "cuda":
            if INTERPRET:
                return "Triton's interpreter (TRITON_INTERPRET=1) runs on CPU tensors only"
            major = _capability(x.device.index or 0)[0]
            if major < 7 or (major < 8 and x.dtype == torch.bfloat16):
                return "it takes GPUs from Volta on (bfloat16: from Ampere on)"
        elif not (INTERPRET and x.device.type == "cpu" and FORCED[-1] == self.name):
            return f"it takes CUDA tensors, not {x.device.type} ones" + (
                " (CPU tensors in Triton's interpreter when forced)" if INTERPRET else ""
            )
        if x.dtype not in _DTYPES:
            return f"it takes float32, float16 and bfloat16 tensors, not {x.dtype}"
        if canonical(geo) is None:
            return _UNFIT
        return None

    def compiles(self, x: torch.Tensor, geo: Any = None) -> bool:
        """Under ``torch.compile`` with static shapes (torch ≥ 2.6, not exporting): the
        pieces become ``triton_op``s (``ops.py``) that Inductor schedules."""
        if x.device.type != "cuda" and not self.compile_interpreted:
            return False
        if not hasattr(torch.library, "triton_op") or _exporting():
            return False
        if not all(isinstance(n, int) for n in (*x.shape, *x.stride())):
            return False  # (symbolic sizes outside Dynamo, which specializes them itself)
        if self.unavailable() is not None:
            return False
        return geo is None or self.supports(x, geo) is None

    # ------------------------------------------------------------------ pieces
    def prepare_weights(self, weights: torch.Tensor, geo: Any) -> Any:
        """A mask's weights as the kernels read them: ``(w, strides)``, ``w`` broadcast to
        the geometry's shape and its strides in the input's 5-D view (a copy in the
        input's strides when its memory does not merge like the input's)."""
        w = torch.broadcast_to(weights, geo.shape)
        strides = canonical_strides(geo, w.stride())
        if strides is None:
            dense = torch.empty_strided(geo.shape, geo.stride, dtype=w.dtype, device=w.device)
            w, strides = dense.copy_(w), canonical(geo)[1]
        return w, strides

    def moments(self, x: torch.Tensor, geo: Any, weights: Any = None) -> tuple[torch.Tensor, ...]:
        view = canonical(geo)
        if _compiling():
            w, ws = (None, ()) if weights is None else weights
            mean, m2, n = _ops().moments(x, _ints(view[0]), _ints(view[1]), w, _ints(ws))
        else:
            with _on(x):
                mean, m2, n = _kernels().moments(x, view, weights)
        shape = geo.stat_shape
        if isinstance(n, torch.Tensor):  # the summed weights
            count = n.reshape(shape)
        else:
            count = torch.full(shape, n, dtype=torch.float64, device=x.device)
        return count, mean.reshape(shape), m2.reshape(shape)

    def normalize(
        self,
        x: torch.Tensor,
        mean: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        geo: Any,
    ) -> torch.Tensor:
        view = canonical(geo)
        if _compiling():
            return _ops().normalize(x, mean, scale, shift, _ints(view[0]), _ints(view[1]))
        with _on(x):
            return _kernels().normalize(x, mean, scale, shift, view)

    def grad_sums(
        self, dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, geo: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        view, dy = canonical(geo), like(dy, x)
        if _compiling():
            sdy, sdx = _ops().grad_sums(dy, x, mean, _ints(view[0]), _ints(view[1]))
        else:
            with _on(x):
                sdy, sdx = _kernels().grad_sums(dy, x, mean, view)
        return sdy.reshape(geo.stat_shape), sdx.reshape(geo.stat_shape)

    def input_grad(
        self,
        dy: torch.Tensor,
        x: torch.Tensor,
        mean: torch.Tensor,
        k: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        geo: Any,
        weights: Any = None,
    ) -> torch.Tensor:
        k = tuple(t.expand(geo.stat_shape) for t in k)
        view, dy = canonical(geo), like(dy, x)
        if _compiling():
            w, ws = (None, ()) if weights is None else weights
            sizes, strides = _ints(view[0]), _ints(view[1])
            return _ops().input_grad(dy, x, mean, *k, sizes, strides, w, _ints(ws))
        with _on(x):
            return _kernels().input_grad(dy, x, mean, k, view, weights)
