"""The Triton kernels and their launches (imported only when the backend runs).

Every kernel walks the canonical 5-D view [A, G, M, C, I] of the input's memory
(``_layout.canonical``): channel ``k = g·C + c`` at offset ``g·s_G + c·s_C``, reduced
index ``r = (a·M + m)·I + i`` at ``a·s_A + m·s_M + i·s_I``, so NCHW, channels-last,
ghost-batch views and multi-axis inputs need no copy. A program owns a tile of
``BLOCK_R`` reduced positions × ``BLOCK_C`` channels; values are loaded as float32 and
results stored in the output's dtype. Offsets are 32-bit unless the view reaches past 2³¹
elements (``WIDE``).

- ``moments``: each program reduces ``tiles`` consecutive tiles of one channel block
  (one split of the reduced range): per tile the mean and squared deviations of
  ``x − s`` (``s`` one value of each channel: the shift keeps float32 sums of data with
  a large mean exact), merged tile by tile with Chan's formula; ``merge`` then
  combines the splits' partials in float64, in split order. No atomics: bitwise
  reproducible.
- ``normalize``: ``y = ((x − μ_hi) − μ_lo)·k + o`` (the float64 mean read as a float32
  pair holding it to float64 precision; per-channel vectors are float64 in memory).
- ``grad_sums``: per split ``Σdy`` and ``Σdy·(x − μ)``, summed in split order.
- ``input_grad``: ``dx = (dy − k₁ − (x − μ)·k₂)·k₃``.

Tile sizes and the number of splits come from the shape (``tiles_for``); ``FORCE``
(tests only) overrides them so tiny shapes reach the split, multi-tile and merge paths.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl

__all__ = ["FORCE", "grad_sums", "input_grad", "moments", "normalize", "tiles_for"]

FORCE: dict[str, int] = {}  # tests only: block_r, block_c, splits
_GRID_Y = 65535  # CUDA's limit on the second grid dimension


@triton.jit
def _row_offsets(r, n_m, n_i, s_a, s_m, s_i, WIDE: tl.constexpr):
    if WIDE:  # (32-bit division is several times cheaper: only when offsets need 64 bits)
        r = r.to(tl.int64)
    return (r // (n_m * n_i)) * s_a + ((r // n_i) % n_m) * s_m + (r % n_i) * s_i


@triton.jit
def _channel_offsets(k, n_c, s_g, s_c, WIDE: tl.constexpr):
    if WIDE:
        k = k.to(tl.int64)
    return (k // n_c) * s_g + (k % n_c) * s_c


@triton.jit
def _mean_pair(mean_ptr, k, k_ok):
    """The float64 means of channels ``k`` as float32 ``(hi, lo)``, hi + lo = the mean to
    float64 precision (row vectors)."""
    m = tl.load(mean_ptr + k, mask=k_ok, other=0.0)
    hi = m.to(tl.float32)
    lo = (m - hi.to(tl.float64)).to(tl.float32)
    return hi[None, :], lo[None, :]


@triton.jit
def _channel_vector(ptr, k, k_ok):
    """A per-channel float64 vector as a float32 row."""
    return tl.load(ptr + k, mask=k_ok, other=0.0).to(tl.float32)[None, :]


@triton.jit
def _moments_kernel(
    x_ptr, mean_ptr, m2_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, tiles,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(1)
    k_ok = k < n_k
    k_off = _channel_offsets(k, n_c, s_g, s_c, WIDE)
    shift = tl.load(x_ptr + k_off, mask=k_ok, other=0.0).to(tl.float32)  # x at r = 0
    count = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    start = split * tiles * BLOCK_R
    if WIDE:
        start = split.to(tl.int64) * tiles * BLOCK_R
    for t in range(0, tiles):
        r = start + t * BLOCK_R + tl.arange(0, BLOCK_R)
        ok = (r < n_r)[:, None] & k_ok[None, :]
        off = _row_offsets(r, n_m, n_i, s_a, s_m, s_i, WIDE)[:, None] + k_off[None, :]
        v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
        v = tl.where(ok, v - shift[None, :], 0.0)
        n = tl.sum(ok.to(tl.float32), axis=0)
        tile_mean = tl.sum(v, axis=0) / tl.maximum(n, 1.0)
        d = tl.where(ok, v - tile_mean[None, :], 0.0)
        total = count + n
        frac = n / tl.maximum(total, 1.0)
        delta = tile_mean - mean
        mean = mean + delta * frac
        m2 = m2 + tl.sum(d * d, axis=0) + delta * delta * count * frac
        count = total
    out = split * n_k + k
    tl.store(mean_ptr + out, mean, mask=k_ok)
    tl.store(m2_ptr + out, m2, mask=k_ok)


@triton.jit
def _merge_kernel(
    x_ptr, means_ptr, m2s_ptr, mean_ptr, m2_ptr,
    n_k, n_c, s_g, s_c, splits, per, last, n_r,
    BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """The splits' (mean of x − s, M2) merged in float64, in split order: the mean
    ``s + Σ nᵢ·meanᵢ/n`` and ``M2 = Σ M2ᵢ + Σ nᵢ·(meanᵢ − mean)²`` per channel (every
    split covers ``per`` positions, the last one ``last``)."""
    k = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    k_ok = k < n_k
    per64 = tl.zeros([BLOCK_C], dtype=tl.float64) + per  # (a scalar argument may be a
    last64 = tl.zeros([BLOCK_C], dtype=tl.float64) + last  # constexpr int: no .to on it)
    total = tl.zeros([BLOCK_C], dtype=tl.float64)
    for i in range(0, splits):
        n = tl.where(i == splits - 1, last64, per64)
        total += n * tl.load(means_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64)
    offset = total / (tl.zeros([BLOCK_C], dtype=tl.float64) + n_r)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float64)
    for i in range(0, splits):
        n = tl.where(i == splits - 1, last64, per64)
        d = tl.load(means_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64) - offset
        m2 += tl.load(m2s_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64) + n * d * d
    off = _channel_offsets(k, n_c, s_g, s_c, WIDE)
    shift = tl.load(x_ptr + off, mask=k_ok, other=0.0).to(tl.float32).to(tl.float64)
    tl.store(mean_ptr + k, shift + offset, mask=k_ok)
    tl.store(m2_ptr + k, m2, mask=k_ok)


@triton.jit
def _tile(
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """An elementwise pass's tile (grid: reduced blocks × channel blocks): its channels,
    their mask, the tile's mask and its offsets."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    if WIDE:
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    k_ok = k < n_k
    ok = (r < n_r)[:, None] & k_ok[None, :]
    off = _row_offsets(r, n_m, n_i, s_a, s_m, s_i, WIDE)[:, None]
    off = off + _channel_offsets(k, n_c, s_g, s_c, WIDE)[None, :]
    return k, k_ok, ok, off


@triton.jit
def _normalize_kernel(
    x_ptr, y_ptr, mean_ptr, scale_ptr, shift_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    k, k_ok, ok, off = _tile(
        n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, BLOCK_R, BLOCK_C, WIDE
    )  # fmt: skip
    hi, lo = _mean_pair(mean_ptr, k, k_ok)
    scale = _channel_vector(scale_ptr, k, k_ok)
    shift = _channel_vector(shift_ptr, k, k_ok)
    v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
    y = ((v - hi) - lo) * scale + shift
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _grad_sums_kernel(
    dy_ptr, x_ptr, mean_ptr, sdy_ptr, sdx_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, tiles,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(1)
    k_ok = k < n_k
    k_off = _channel_offsets(k, n_c, s_g, s_c, WIDE)
    hi, lo = _mean_pair(mean_ptr, k, k_ok)
    sdy = tl.zeros([BLOCK_C], dtype=tl.float32)
    sdx = tl.zeros([BLOCK_C], dtype=tl.float32)
    start = split * tiles * BLOCK_R
    if WIDE:
        start = split.to(tl.int64) * tiles * BLOCK_R
    for t in range(0, tiles):
        r = start + t * BLOCK_R + tl.arange(0, BLOCK_R)
        ok = (r < n_r)[:, None] & k_ok[None, :]
        off = _row_offsets(r, n_m, n_i, s_a, s_m, s_i, WIDE)[:, None] + k_off[None, :]
        g = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
        v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
        centered = tl.where(ok, (v - hi) - lo, 0.0)
        sdy = sdy + tl.sum(g, axis=0)
        sdx = sdx + tl.sum(g * centered, axis=0)
    out = split * n_k + k
    tl.store(sdy_ptr + out, sdy, mask=k_ok)
    tl.store(sdx_ptr + out, sdx, mask=k_ok)


@triton.jit
def _input_grad_kernel(
    dy_ptr, x_ptr, dx_ptr, mean_ptr, k1_ptr, k2_ptr, k3_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    k, k_ok, ok, off = _tile(
        n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, BLOCK_R, BLOCK_C, WIDE
    )  # fmt: skip
    hi, lo = _mean_pair(mean_ptr, k, k_ok)
    k1 = _channel_vector(k1_ptr, k, k_ok)
    k2 = _channel_vector(k2_ptr, k, k_ok)
    k3 = _channel_vector(k3_ptr, k, k_ok)
    g = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
    dx = (g - k1 - ((v - hi) - lo) * k2) * k3
    tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------- launches
class _Shape:
    """The launch arguments of a canonical view: channels K, reduced positions R, the
    inner sizes M, I, C and the five strides."""

    __slots__ = ("args", "channels", "reduced", "wide")

    def __init__(self, view: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
        (a, g, m, c, i), strides = view
        self.channels, self.reduced = g * c, a * m * i
        self.args = (self.channels, self.reduced, m, i, c, *strides)
        reach = sum((n - 1) * s for n, s in zip(view[0], strides, strict=True))
        self.wide = max(reach, self.reduced, self.channels) >= 2**31 - 1 - 8192


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


def _vector(t: torch.Tensor) -> torch.Tensor:
    """A per-channel float64 tensor as the contiguous vector the kernels read."""
    return t.reshape(-1).to(torch.float64).contiguous()


def moments(x: torch.Tensor, view: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-channel mean (float64) and sum of squared deviations (float64) of ``x``, and
    the count per channel."""
    shape = _Shape(view)
    block_r, block_c, splits, per = tiles_for(view, x.device)
    k = shape.channels
    means = torch.empty((splits, k), dtype=torch.float32, device=x.device)
    m2s = torch.empty_like(means)
    _moments_kernel[(-(-k // block_c), splits)](
        x, means, m2s, *shape.args, per,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide,
    )  # fmt: skip
    mean = torch.empty(k, dtype=torch.float64, device=x.device)
    m2 = torch.empty_like(mean)
    (_, _, _, c, _), (_, s_g, _, s_c, _) = view
    covered = per * block_r  # positions per split
    last = shape.reduced - (splits - 1) * covered
    _merge_kernel[(-(-k // 64),)](
        x, means, m2s, mean, m2, k, c, s_g, s_c, splits, covered, last, shape.reduced,
        BLOCK_C=64, WIDE=shape.wide,
    )  # fmt: skip
    return mean, m2, float(shape.reduced)


def normalize(
    x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, view: Any
) -> torch.Tensor:
    """``y = (x − μ)·k + o`` per channel (float64 vectors), y in x's dtype and strides."""
    shape = _Shape(view)
    block_r, block_c, _, _ = tiles_for(view, x.device)
    y = torch.empty_like(x)
    mean = _vector(mean)
    grid = (-(-shape.reduced // block_r), -(-shape.channels // block_c))
    _normalize_kernel[grid](
        x, y, mean, _vector(scale), _vector(shift), *shape.args,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide,
    )  # fmt: skip
    return y


def grad_sums(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, view: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``Σdy`` and ``Σdy·(x − μ)`` (float64 vectors); dy has x's strides."""
    shape = _Shape(view)
    block_r, block_c, splits, per = tiles_for(view, x.device)
    k = shape.channels
    sdy = torch.empty((splits, k), dtype=torch.float32, device=x.device)
    sdx = torch.empty_like(sdy)
    mean = _vector(mean)
    grid = (-(-k // block_c), splits)
    _grad_sums_kernel[grid](
        dy, x, mean, sdy, sdx, *shape.args, per,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide,
    )  # fmt: skip
    return sdy.double().sum(0), sdx.double().sum(0)


def input_grad(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, k: Any, view: Any
) -> torch.Tensor:
    """``dx = (dy − k₁ − (x − μ)·k₂)·k₃`` per channel, dx in x's dtype and strides."""
    shape = _Shape(view)
    block_r, block_c, _, _ = tiles_for(view, x.device)
    dx = torch.empty_like(x)
    mean = _vector(mean)
    grid = (-(-shape.reduced // block_r), -(-shape.channels // block_c))
    _input_grad_kernel[grid](
        dy, x, dx, mean, *(_vector(t) for t in k), *shape.args,
        BLOCK_R=block_r, BLOCK_C=block_c, WIDE=shape.wide,
    )  # fmt: skip
    return dx
