"""The Triton kernels' launches (``kernels.py``): tile sizes from the shape, grids,
outputs.

Tile sizes and the number of splits come from the shape (``tiles_for``); ``FORCE``
(tests only) overrides them so tiny shapes reach the split, multi-tile and merge paths.
A mask's weights come as ``(w, strides)``: ``w`` broadcast to the geometry's shape and
its five strides in the input's 5-D view (``_layout.canonical_strides``). ``wrap``
launches through ``torch.library.wrap_triton`` (inside the backend's ``triton_op``s,
which ``torch.compile`` traces: ``ops.py``); eager calls launch the kernels directly.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from triton.runtime.jit import JITFunction

from . import kernels as K

__all__ = ["FORCE", "grad_sums", "input_grad", "moments", "normalize", "tiles_for", "traceable"]

FORCE: dict[str, int] = {}  # tests only: block_r, block_c, splits
_GRID_Y = 65535  # CUDA's limit on the second grid dimension
_WIDE = 2**31 - 1 - 8192  # offsets past this need 64 bits
_INTERPRETED = not isinstance(K.moments_kernel, JITFunction)  # (TRITON_INTERPRET=1)


def _reach(sizes: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """The largest element offset a 5-D view reaches."""
    return sum((n - 1) * s for n, s in zip(sizes, strides, strict=True))


class _Shape:
    """The launch arguments of a canonical view: channels K, reduced positions R, the
    inner sizes M, I, C and the five strides (and a mask's five strides)."""

    __slots__ = ("args", "channels", "reduced", "w_args", "wide")

    def __init__(self, view: Any, weights: Any = None) -> None:
        (a, g, m, c, i), strides = view
        self.channels, self.reduced = g * c, a * m * i
        self.args = (self.channels, self.reduced, m, i, c, *strides)
        reach = _reach(view[0], strides)
        self.w_args: tuple[Any, ...] = (None, 0, 0, 0, 0, 0)
        if weights is not None:
            self.w_args = (weights[0], *weights[1])
            reach = max(reach, _reach(view[0], weights[1]))
        self.wide = max(reach, self.reduced, self.channels) >= _WIDE


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=16)
def _programs(device: torch.device) -> int:
    """Programs that fill the device: four per streaming multiprocessor (2 in the
    interpreter, where the grid runs one program at a time)."""
    if device.type != "cuda":
        return 2
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


def tiles_for(view: Any, device: torch.device) -> tuple[int, int, int, int]:
    """``(BLOCK_R, BLOCK_C, splits, tiles per split)`` from the shape: channel blocks
    across contiguous channels (channels-last, rows), long reduced tiles when the
    reduced positions are contiguous (NCHW); enough splits of the reduced range to fill
    the device."""
    return _tiles(view, _programs(device), tuple(sorted(FORCE.items())))


@functools.lru_cache(maxsize=256)
def _tiles(view: Any, programs: int, force: tuple[tuple[str, int], ...]) -> tuple[int, ...]:
    forced = dict(force)
    shape = _Shape(view)
    k, r = shape.channels, shape.reduced
    strides = view[1]
    channel_inner = min((s for s in (strides[1], strides[3]) if s > 0), default=1) < min(
        (s for s in (strides[0], strides[2], strides[4]) if s > 0), default=1 << 62
    )
    if channel_inner:
        block_c = min(_pow2(k), 64)
        block_r = max(1, min(_pow2(r), 4096 // block_c))
    else:
        block_c = 1
        block_r = min(_pow2(r), 1024)
    block_c = max(block_c, _pow2(-(-k // _GRID_Y)))  # the channel blocks fit the grid
    block_r = forced.get("block_r", block_r)
    block_c = forced.get("block_c", block_c)
    tiles = -(-r // block_r)
    blocks = -(-k // block_c)
    splits = forced.get("splits", max(1, min(tiles, -(-programs // blocks), _GRID_Y)))
    per_split = -(-tiles // min(splits, tiles))
    return block_r, block_c, -(-tiles // per_split), per_split


def _kernel(kernel: Any, wrap: bool) -> Any:
    """The kernel to launch: itself, or traceable by ``torch.compile`` (``ops.py``)."""
    return traceable(kernel) if wrap else kernel


class _Interpreted(JITFunction):
    """A kernel ``wrap_triton`` traces as a compiled one, run by Triton's interpreter
    (``wrap_triton`` leaves interpreted kernels untraced)."""

    def __init__(self, interpreted: Any) -> None:
        super().__init__(interpreted.fn)
        self._interpreted = interpreted

    def run(self, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        return self._interpreted.run(*args, grid=grid, warmup=warmup, **kwargs)

    @property
    def cache_key(self) -> str:  # (JITFunction's walks the helpers, interpreted here)
        return f"{self.fn.__module__}.{self.fn.__qualname__}"


@functools.cache
def traceable(kernel: Any) -> Any:
    """``wrap_triton(kernel)``: the launch ``torch.compile`` traces (torch ≥ 2.6)."""
    from torch.library import wrap_triton

    return wrap_triton(_Interpreted(kernel) if _INTERPRETED else kernel)


def _vector(t: torch.Tensor) -> torch.Tensor:
    """A per-channel float64 tensor as the contiguous vector the kernels read."""
    return t.reshape(-1).to(torch.float64).contiguous()


def moments(
    x: torch.Tensor, view: Any, weights: Any = None, wrap: bool = False
) -> tuple[torch.Tensor, torch.Tensor, float | torch.Tensor]:
    """Per-channel mean and sum of squared (weighted) deviations of ``x`` (float64
    vectors), and the count per channel (the summed weights: a float64 vector)."""
    shape = _Shape(view, weights)
    block_r, block_c, splits, per = tiles_for(view, x.device)
    k, weighted = shape.channels, weights is not None
    means = torch.empty((splits, k), dtype=torch.float32, device=x.device)
    m2s = torch.empty_like(means)
    counts = torch.empty_like(means) if weighted else x  # (unweighted: never written)
    w_ptr, *w_strides = shape.w_args
    _kernel(K.moments_kernel, wrap)[(-(-k // block_c), splits)](
        x, x if w_ptr is None else w_ptr, means, m2s, counts, *shape.args, *w_strides, per,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide, WEIGHTED=weighted,
    )  # fmt: skip
    mean = torch.empty(k, dtype=torch.float64, device=x.device)
    m2 = torch.empty_like(mean)
    count = torch.empty_like(mean) if weighted else x
    (_, _, _, c, _), (_, s_g, _, s_c, _) = view
    covered = per * block_r  # positions per split
    last = shape.reduced - (splits - 1) * covered
    _kernel(K.merge_kernel, wrap)[(-(-k // 64),)](
        x, means, m2s, counts, mean, m2, count, k, c, s_g, s_c, splits, covered, last,
        shape.reduced, BLOCK_C=64, WIDE=shape.wide, WEIGHTED=weighted,
    )  # fmt: skip
    return mean, m2, (count if weighted else float(shape.reduced))


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    view: Any,
    wrap: bool = False,
) -> torch.Tensor:
    """``y = (x − μ)·k + o`` per channel (float64 vectors), y in x's dtype and strides."""
    shape = _Shape(view)
    block_r, block_c, _, _ = tiles_for(view, x.device)
    y = torch.empty_like(x)
    mean = _vector(mean)
    grid = (-(-shape.reduced // block_r), -(-shape.channels // block_c))
    _kernel(K.normalize_kernel, wrap)[grid](
        x, y, mean, _vector(scale), _vector(shift), *shape.args,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide,
    )  # fmt: skip
    return y


def grad_sums(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, view: Any, wrap: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``Σdy`` and ``Σdy·(x − μ)`` (float64 vectors); dy has x's strides."""
    shape = _Shape(view)
    block_r, block_c, splits, per = tiles_for(view, x.device)
    k = shape.channels
    sdy = torch.empty((splits, k), dtype=torch.float32, device=x.device)
    sdx = torch.empty_like(sdy)
    mean = _vector(mean)
    grid = (-(-k // block_c), splits)
    _kernel(K.grad_sums_kernel, wrap)[grid](
        dy, x, mean, sdy, sdx, *shape.args, per,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide,
    )  # fmt: skip
    return sdy.double().sum(0), sdx.double().sum(0)


def input_grad(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    k: Any,
    view: Any,
    weights: Any = None,
    wrap: bool = False,
) -> torch.Tensor:
    """``dx = (dy − w·(k₁ + (x − μ)·k₂))·k₃`` per channel (``w`` a mask's weights, else 1),
    dx in x's dtype and strides."""
    shape = _Shape(view, weights)
    block_r, block_c, _, _ = tiles_for(view, x.device)
    dx = torch.empty_like(x)
    mean = _vector(mean)
    w_ptr, *w_strides = shape.w_args
    grid = (-(-shape.reduced // block_r), -(-shape.channels // block_c))
    _kernel(K.input_grad_kernel, wrap)[grid](
        dy, x, x if w_ptr is None else w_ptr, dx, mean, *(_vector(t) for t in k),
        *shape.args, *w_strides,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide, WEIGHTED=weights is not None,
    )  # fmt: skip
    return dx
