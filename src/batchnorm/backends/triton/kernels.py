"""The Triton kernels (the launches are ``launch.py``; both imported only when the backend
runs).

Every kernel walks the canonical 5-D view [A, G, M, C, I] of the input's memory
(``_layout.canonical``): channel ``k = g·C + c`` at offset ``g·s_G + c·s_C``, reduced
index ``r = (a·M + m)·I + i`` at ``a·s_A + m·s_M + i·s_I``, so NCHW, channels-last,
ghost-batch views and multi-axis inputs need no copy. A program owns a tile of
``BLOCK_R`` reduced positions × ``BLOCK_C`` channels; values are loaded as float32 and
results stored in the output's dtype. Offsets are 32-bit unless the view reaches past 2³¹
elements (``WIDE``). ``WEIGHTED`` kernels also read a mask's weights ``w`` through their
own five strides (zero on the channels: the weights broadcast over them).

- ``moments``: each program reduces ``tiles`` consecutive tiles of one channel block
  (one split of the reduced range): per tile the (weighted) mean and squared deviations
  of ``x − s`` (``s`` one value of each channel: the shift keeps float32 sums of data
  with a large mean exact), merged tile by tile with Chan's formula; ``merge`` then
  combines the splits' partials in float64, in split order. No atomics: bitwise
  reproducible.
- ``normalize``: ``y = ((x − μ_hi) − μ_lo)·k + o`` (the float64 mean read as a float32
  pair holding it to float64 precision; per-channel vectors are float64 in memory).
- ``grad_sums``: per split ``Σdy`` and ``Σdy·(x − μ)``, summed in split order.
- ``input_grad``: ``dx = (dy − w·(k₁ + (x − μ)·k₂))·k₃`` (``w = 1`` unweighted).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__: list[str] = []


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
def _weights(w_ptr, r, k, ok, n_m, n_i, n_c, w_a, w_g, w_m, w_c, w_i, WIDE: tl.constexpr):
    """A tile of the mask's weights (float32; 0 outside the tile's mask)."""
    off = _row_offsets(r, n_m, n_i, w_a, w_m, w_i, WIDE)[:, None]
    off = off + _channel_offsets(k, n_c, w_g, w_c, WIDE)[None, :]
    return tl.load(w_ptr + off, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _split(n_k, tiles, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr):
    """A reducing program's channels (grid: channel blocks × splits), their mask, and the
    first reduced position of its split."""
    k = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    start = tl.program_id(1) * tiles * BLOCK_R
    if WIDE:
        start = tl.program_id(1).to(tl.int64) * tiles * BLOCK_R
    return k, k < n_k, start


@triton.jit
def _split_tile(
    start, t, k_off, k_ok, n_r, n_m, n_i, s_a, s_m, s_i,
    BLOCK_R: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """Tile ``t`` of a split: its reduced positions, mask and offsets."""
    r = start + t * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = (r < n_r)[:, None] & k_ok[None, :]
    off = _row_offsets(r, n_m, n_i, s_a, s_m, s_i, WIDE)[:, None] + k_off[None, :]
    return r, ok, off


@triton.jit
def moments_kernel(
    x_ptr, w_ptr, mean_ptr, m2_ptr, count_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, w_a, w_g, w_m, w_c, w_i, tiles,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr, WEIGHTED: tl.constexpr,
):  # fmt: skip
    """Per split and channel: the (weighted) count, mean of ``x − s`` and M2."""
    k, k_ok, start = _split(n_k, tiles, BLOCK_R, BLOCK_C, WIDE)
    k_off = _channel_offsets(k, n_c, s_g, s_c, WIDE)
    shift = tl.load(x_ptr + k_off, mask=k_ok, other=0.0).to(tl.float32)  # x at r = 0
    count = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for t in range(0, tiles):
        r, ok, off = _split_tile(
            start, t, k_off, k_ok, n_r, n_m, n_i, s_a, s_m, s_i, BLOCK_R, WIDE
        )  # fmt: skip
        v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
        v = tl.where(ok, v - shift[None, :], 0.0)
        if WEIGHTED:
            w = _weights(w_ptr, r, k, ok, n_m, n_i, n_c, w_a, w_g, w_m, w_c, w_i, WIDE)
            n = tl.sum(w, axis=0)
            tile_mean = tl.sum(w * v, axis=0) / tl.where(n > 0, n, 1.0)
            d = tl.where(ok, v - tile_mean[None, :], 0.0)
            squares = tl.sum(w * d * d, axis=0)
        else:
            n = tl.sum(ok.to(tl.float32), axis=0)
            tile_mean = tl.sum(v, axis=0) / tl.maximum(n, 1.0)
            d = tl.where(ok, v - tile_mean[None, :], 0.0)
            squares = tl.sum(d * d, axis=0)
        total = count + n
        frac = n / tl.where(total > 0, total, 1.0)
        delta = tile_mean - mean
        mean = mean + delta * frac
        m2 = m2 + squares + delta * delta * count * frac
        count = total
    out = tl.program_id(1) * n_k + k
    tl.store(mean_ptr + out, mean, mask=k_ok)
    tl.store(m2_ptr + out, m2, mask=k_ok)
    if WEIGHTED:
        tl.store(count_ptr + out, count, mask=k_ok)


@triton.jit
def merge_kernel(
    x_ptr, means_ptr, m2s_ptr, counts_ptr, mean_ptr, m2_ptr, count_ptr,
    n_k, n_c, s_g, s_c, splits, per, last, n_r,
    BLOCK_C: tl.constexpr, WIDE: tl.constexpr, WEIGHTED: tl.constexpr,
):  # fmt: skip
    """The splits' (count nᵢ, mean of x − s, M2) merged in float64, in split order: the
    mean ``s + Σ nᵢ·meanᵢ/n`` and ``M2 = Σ M2ᵢ + Σ nᵢ·(meanᵢ − mean)²`` per channel.
    Unweighted, every split covers ``per`` positions, the last one ``last``; weighted,
    the counts are the splits' summed weights, and a channel of zero weight gets
    ``μ = M2 = 0``."""
    k = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    k_ok = k < n_k
    per64 = tl.zeros([BLOCK_C], dtype=tl.float64) + per  # (a scalar argument may be a
    last64 = tl.zeros([BLOCK_C], dtype=tl.float64) + last  # constexpr int: no .to on it)
    total = tl.zeros([BLOCK_C], dtype=tl.float64)
    weight = tl.zeros([BLOCK_C], dtype=tl.float64)
    for i in range(0, splits):
        if WEIGHTED:
            n = tl.load(counts_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64)
        else:
            n = tl.where(i == splits - 1, last64, per64)
        total += n * tl.load(means_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64)
        weight += n
    if not WEIGHTED:
        weight = tl.zeros([BLOCK_C], dtype=tl.float64) + n_r
    offset = total / tl.where(weight > 0, weight, 1.0)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float64)
    for i in range(0, splits):
        if WEIGHTED:
            n = tl.load(counts_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64)
        else:
            n = tl.where(i == splits - 1, last64, per64)
        d = tl.load(means_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64) - offset
        m2 += tl.load(m2s_ptr + i * n_k + k, mask=k_ok, other=0.0).to(tl.float64) + n * d * d
    off = _channel_offsets(k, n_c, s_g, s_c, WIDE)
    mean = tl.load(x_ptr + off, mask=k_ok, other=0.0).to(tl.float32).to(tl.float64) + offset
    if WEIGHTED:
        mean = tl.where(weight > 0, mean, 0.0)
        m2 = tl.where(weight > 0, m2, 0.0)
        tl.store(count_ptr + k, weight, mask=k_ok)
    tl.store(mean_ptr + k, mean, mask=k_ok)
    tl.store(m2_ptr + k, m2, mask=k_ok)


@triton.jit
def _tile(
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """An elementwise pass's tile (grid: reduced blocks × channel blocks): its channels,
    their mask, its reduced positions, the tile's mask and its offsets."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    if WIDE:
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    k_ok = k < n_k
    ok = (r < n_r)[:, None] & k_ok[None, :]
    off = _row_offsets(r, n_m, n_i, s_a, s_m, s_i, WIDE)[:, None]
    off = off + _channel_offsets(k, n_c, s_g, s_c, WIDE)[None, :]
    return k, k_ok, r, ok, off


@triton.jit
def normalize_kernel(
    x_ptr, y_ptr, mean_ptr, scale_ptr, shift_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    k, k_ok, _, ok, off = _tile(
        n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, BLOCK_R, BLOCK_C, WIDE
    )  # fmt: skip
    hi, lo = _mean_pair(mean_ptr, k, k_ok)
    scale = _channel_vector(scale_ptr, k, k_ok)
    shift = _channel_vector(shift_ptr, k, k_ok)
    v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
    y = ((v - hi) - lo) * scale + shift
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def grad_sums_kernel(
    dy_ptr, x_ptr, mean_ptr, sdy_ptr, sdx_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, tiles,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    k, k_ok, start = _split(n_k, tiles, BLOCK_R, BLOCK_C, WIDE)
    k_off = _channel_offsets(k, n_c, s_g, s_c, WIDE)
    hi, lo = _mean_pair(mean_ptr, k, k_ok)
    sdy = tl.zeros([BLOCK_C], dtype=tl.float32)
    sdx = tl.zeros([BLOCK_C], dtype=tl.float32)
    for t in range(0, tiles):
        _, ok, off = _split_tile(
            start, t, k_off, k_ok, n_r, n_m, n_i, s_a, s_m, s_i, BLOCK_R, WIDE
        )  # fmt: skip
        g = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
        v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
        centered = tl.where(ok, (v - hi) - lo, 0.0)
        sdy = sdy + tl.sum(g, axis=0)
        sdx = sdx + tl.sum(g * centered, axis=0)
    out = tl.program_id(1) * n_k + k
    tl.store(sdy_ptr + out, sdy, mask=k_ok)
    tl.store(sdx_ptr + out, sdx, mask=k_ok)


@triton.jit
def input_grad_kernel(
    dy_ptr, x_ptr, w_ptr, dx_ptr, mean_ptr, k1_ptr, k2_ptr, k3_ptr,
    n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, w_a, w_g, w_m, w_c, w_i,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr, WEIGHTED: tl.constexpr,
):  # fmt: skip
    k, k_ok, r, ok, off = _tile(
        n_k, n_r, n_m, n_i, n_c, s_a, s_g, s_m, s_c, s_i, BLOCK_R, BLOCK_C, WIDE
    )  # fmt: skip
    hi, lo = _mean_pair(mean_ptr, k, k_ok)
    k1 = _channel_vector(k1_ptr, k, k_ok)
    k2 = _channel_vector(k2_ptr, k, k_ok)
    k3 = _channel_vector(k3_ptr, k, k_ok)
    g = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
    if WEIGHTED:
        w = _weights(w_ptr, r, k, ok, n_m, n_i, n_c, w_a, w_g, w_m, w_c, w_i, WIDE)
        dx = (g - w * (k1 + ((v - hi) - lo) * k2)) * k3
    else:
        dx = (g - k1 - ((v - hi) - lo) * k2) * k3
    tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=ok)
