/*
 * How the passes split their work into items and walk rows (type-agnostic; included once
 * by kernels.c): row-mode chunks and row segments (ROW_ITEMS, ITEM_RANGE), the one-sweep
 * items (SWEEP_ITEMS with sweep_chunk, PLANE_SWEEP_ITEMS, SHORT_SWEEP_ITEMS), the
 * plane/generic run items (RUN_ITEMS), and the loop headers over blocks, rows and runs of
 * rows that the kernels' bodies sit in. Needs view_t, i64, CCHUNK, ROW_BLOCK_BYTES,
 * SHORT_RUN and PLANE_SWEEP_BYTES from kernels.c and BUF from loops.h.
 */
#ifndef BATCHNORM_KERNELS_ITEMS_H
#define BATCHNORM_KERNELS_ITEMS_H

/* Channels per row-mode work item: at most CCHUNK, in equal chunks (a multiple of 16 but
 * the last), so that no thread is left with a short remainder chunk. */
static inline i64 balanced_chunk(i64 C) {
    if (C <= CCHUNK) return C;
    const i64 n = (C + CCHUNK - 1) / CCHUNK;
    const i64 w = ((C + n - 1) / n + 15) / 16 * 16;
    return w < CCHUNK ? w : CCHUNK;
}

/* Row mode walks rows (a, m) of one channel group g in blocks of rows; inside a block the
 * rows are two nested loops whose addresses are affine in the loop counters, which is
 * what lets the compiler vectorize over channels without per-row checks. */
#define ROW_ITEMS_W(S, WIDTH)                                                                   \
    const i64 rows_per_g = v.A * v.M;                                                           \
    const i64 cchunk = (WIDTH);                                                                 \
    const i64 ncc = (v.C + cchunk - 1) / cchunk;                                                \
    i64 block = ROW_BLOCK_BYTES / (i64)sizeof(S) / cchunk;                                      \
    if (block < 16) block = 16;                                                                 \
    if (block > SUB_ROWS) block = SUB_ROWS; /* float sums over at most this many rows */        \
    const i64 nblk = (rows_per_g + block - 1) / block;                                          \
    i64 nseg = (4 * nt + v.G * ncc - 1) / (v.G * ncc);                                          \
    if (nseg > nblk) nseg = nblk;                                                               \
    if (nseg < 1) nseg = 1;                                                                     \
    const i64 seg_rows = ((nblk + nseg - 1) / nseg) * block;                                    \
    const i64 items = v.G * ncc * nseg;
#define ROW_ITEMS(S) ROW_ITEMS_W(S, balanced_chunk(v.C))
/* item it = (g, channel chunk, row segment); rows [seg0, seg1), channels [c0, c0 + cn) */
#define ITEM_RANGE                                                                              \
    const i64 s_ = it % nseg;                                                                   \
    const i64 g = it / (nseg * ncc);                                                            \
    const i64 c0 = ((it / nseg) % ncc) * cchunk;                                                \
    const i64 cn = v.C - c0 < cchunk ? v.C - c0 : cchunk;                                       \
    const i64 seg0 = s_ * seg_rows;                                                             \
    const i64 seg1 = seg0 + seg_rows < rows_per_g ? seg0 + seg_rows : rows_per_g;
/* The loop over a chunk's channels k0 .. k0 + cn − 1 in runs of consecutive parameters
 * p = k mod P, so each run vectorizes: the body sees its channel c and parameter p. */
#define PARAM_RUNS_BEGIN                                                                        \
    for (i64 c_ = 0, p_ = k0 % P; c_ < cn; p_ = 0) {                                            \
        const i64 len_ = cn - c_ < P - p_ ? cn - c_ : P - p_;                                   \
        for (i64 j_ = 0; j_ < len_; ++j_) {                                                     \
            const i64 c = c_ + j_, p = p_ + j_;
#define PARAM_RUNS_END                                                                          \
        }                                                                                       \
        c_ += len_;                                                                             \
    }

/* One sweep: a work item is (g, chunk of up to CCHUNK channels) with all its rows, when
 * those rows fit in ROW_BLOCK_BYTES (ghost batches, small batches): the rows are read from
 * memory once and revisited in cache. The chunk narrows (sweep_chunk) while its rows do not
 * fit or there are fewer chunks than threads, down to SWEEP_MIN_CHUNK channels: few wide
 * rows, such as 256 rows of 1,024 channels, then sweep too (0.8-0.9x the two passes'
 * time). Narrower pieces of rows measured slower than the two passes. Same names as
 * ROW_ITEMS (nseg = 1). */
#define SWEEP_MIN_CHUNK 256
static inline i64 sweep_chunk(view_t v, int nt, i64 size) {
    const i64 rows = v.A * v.M;
    i64 chunk = balanced_chunk(v.C);
    for (i64 parts = 2 * ((v.C + chunk - 1) / chunk);; parts *= 2) {
        const int fits = rows * chunk * size <= ROW_BLOCK_BYTES;
        if (fits && v.G * ((v.C + chunk - 1) / chunk) >= nt) break;
        const i64 narrower = (v.C / parts + 15) / 16 * 16;
        if (narrower < SWEEP_MIN_CHUNK || narrower >= chunk) break;
        chunk = narrower;
    }
    return chunk;
}
#define SWEEP_ITEMS(S)                                                                          \
    const i64 rows_per_g = v.A * v.M;                                                           \
    const i64 cchunk = sweep_chunk(v, nt, (i64)sizeof(S));                                      \
    const int sweep_ok = rows_per_g * cchunk * (i64)sizeof(S) <= ROW_BLOCK_BYTES;               \
    const i64 ncc = (v.C + cchunk - 1) / cchunk, nseg = 1, seg_rows = rows_per_g;               \
    const i64 items = v.G * ncc;
/* The channel sweeps of plane layouts (stride(I) == 1, runs of I > SHORT_RUN values): a work
 * item is one channel k with its runs (a, m), when they fit in PLANE_SWEEP_BYTES and there is
 * a channel for every thread; the runs are revisited in L2. */
#define PLANE_SWEEP_ITEMS(S)                                                                    \
    const i64 runs = v.A * v.M, items = v.G * v.C;                                              \
    const int sweep_ok = v.si == 1 && v.I > SHORT_RUN && items >= nt &&                         \
                         runs * v.I * (i64)sizeof(S) <= PLANE_SWEEP_BYTES;
/* channel k's runs: the offset off of each (its first value), and each run in pieces of at
 * most BUF values [i0, i0 + len) */
#define CHANNEL_RUNS_BEGIN                                                                      \
    for (i64 r_ = 0; r_ < runs; ++r_) {                                                         \
        const i64 off = base + (r_ / v.M) * v.sa + (r_ % v.M) * v.sm;
#define CHANNEL_RUNS_END }
#define RUN_PIECES_BEGIN                                                                        \
    for (i64 i0 = 0; i0 < v.I; i0 += BUF) {                                                     \
        const i64 len = v.I - i0 < BUF ? v.I - i0 : BUF;
#define RUN_PIECES_END }
/* rows of an item in sub-blocks of SUB_ROWS: float partial sums go to double after each */
#define SUB_ROWS 256
/* Short runs of adjacent channels (stride(C) == I, e.g. NCHW with a small H·W, or
 * multi-axis NCHW): CH channels' runs form one contiguous block of CH·I values, walked like
 * a row with per-channel values spread over their I positions. Work item = (g, chunk of
 * CH channels, segment of rows (a, m)). */
#define SHORT_BLOCKS(v) ((v).si == 1 && (v).sc == (v).I && (v).I > 1 && (v).I <= SHORT_RUN)
#define SHORT_CHUNK(v) ((v).C < BUF / (v).I ? (v).C : BUF / (v).I) /* channels per block */
#define SHORT_ITEMS                                                                             \
    const i64 rows_per_g = v.A * v.M;                                                           \
    const i64 cchunk = SHORT_CHUNK(v);                                                          \
    const i64 ncc = (v.C + cchunk - 1) / cchunk;                                                \
    i64 nseg = (4 * nt + v.G * ncc - 1) / (v.G * ncc);                                          \
    if (nseg > rows_per_g) nseg = rows_per_g;                                                   \
    if (nseg < 1) nseg = 1;                                                                     \
    const i64 seg_rows = (rows_per_g + nseg - 1) / nseg;                                        \
    const i64 items = v.G * ncc * nseg;
/* The same for short blocks, on SHORT_BLOCKS layouts only (I <= SHORT_RUN, so a chunk holds
 * a channel): a work item is a chunk of cchunk channels (as in SHORT_ITEMS) with all its rows. */
#define SHORT_SWEEP_ITEMS(S)                                                                    \
    const i64 rows_per_g = v.A * v.M;                                                           \
    const i64 cchunk = SHORT_CHUNK(v);                                                          \
    const i64 ncc = (v.C + cchunk - 1) / cchunk, items = v.G * ncc;                             \
    const int sweep_ok =                                                                        \
        items >= nt && rows_per_g * cchunk * v.I * (i64)sizeof(S) <= PLANE_SWEEP_BYTES;
/* spread per-channel values src[k0 + c] over the I positions of each channel of a chunk */
#define SPREAD(dst, src)                                                                        \
    for (i64 c = 0; c < cn; ++c) for (i64 i = 0; i < v.I; ++i) (dst)[c * v.I + i] = (src)[k0 + c];
#define BLOCKS_BEGIN                                                                            \
    for (i64 r0 = seg0; r0 < seg1; r0 += block) {                                               \
        const i64 r1 = r0 + block < seg1 ? r0 + block : seg1;
#define BLOCKS_END }
/* the same blocks last to first */
#define BLOCKS_REVERSED_BEGIN                                                                   \
    for (i64 r1 = seg1, r0; r1 > seg0; r1 = r0) {                                               \
        r0 = seg0 + (r1 - seg0 - 1) / block * block;
/* The row-mode output passes (normalize, dx): whole rows (nothing kept per channel chunk)
 * unless too few rows to share; each thread's items last to first and each item's blocks
 * of rows last to first (stream.h); nts says whether the output is streamed. The body runs
 * once per run of nr_ rows at offset off_ of chunk g, channels c0 .. c0 + cn − 1 (k0 the
 * first one's per-channel index). */
#define OUTPUT_ROWS_BEGIN(S)                                                                    \
    ROW_ITEMS_W(S, v.G * v.A * v.M >= 16 * nt ? v.C : balanced_chunk(v.C))                      \
    const int nts = streams(v.A * v.G * v.M * v.C * (i64)sizeof(S));                            \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
        i64 lo_, hi_;                                                                           \
        static_range(items, &lo_, &hi_);                                                        \
        for (i64 it = hi_ - 1; it >= lo_; --it) {                                               \
            ITEM_RANGE                                                                          \
            const i64 k0 = g * v.C + c0;                                                        \
            BLOCKS_REVERSED_BEGIN                                                               \
                ROW_RUNS_BEGIN(r0, r1)
#define OUTPUT_ROWS_END                                                                         \
                ROW_RUNS_END                                                                    \
            BLOCKS_END                                                                          \
        }                                                                                       \
        if (nts) stream_fence();                                                                \
    }
#define ROWS_BEGIN(first_row, end_row)                                                          \
    for (i64 r_ = (first_row), ra_ = (first_row) / v.M, m0_ = (first_row) % v.M;                \
         r_ < (end_row); ++ra_, m0_ = 0) {                                                      \
        const i64 m1_ = m0_ + ((end_row) - r_) < v.M ? m0_ + ((end_row) - r_) : v.M;            \
        const i64 base_ = ra_ * v.sa + g * v.sg;                                                \
        r_ += m1_ - m0_;                                                                        \
        for (i64 rm_ = m0_; rm_ < m1_; ++rm_) {
#define ROW_OFFSET (base_ + rm_ * v.sm)
#define ROWS_END                                                                                \
        }                                                                                       \
    }
/* the same rows as runs of consecutive m (one a): nr_ rows from offset off_, stride v.sm */    \
#define ROW_RUNS_BEGIN(first_row, end_row)                                                      \
    for (i64 r_ = (first_row), ra_ = (first_row) / v.M, m0_ = (first_row) % v.M;                \
         r_ < (end_row); ++ra_, m0_ = 0) {                                                      \
        const i64 m1_ = m0_ + ((end_row) - r_) < v.M ? m0_ + ((end_row) - r_) : v.M;            \
        const i64 off_ = ra_ * v.sa + g * v.sg + m0_ * v.sm, nr_ = m1_ - m0_;                   \
        r_ += nr_;
#define ROW_RUNS_END }
/* plane/generic modes: run r = flattened (a, g, m, c) */
/* plane/generic modes: work item = (a, g, m, chunk of up to RUN_CSTEP channels), so the
 * index divisions happen once per item, not once per run */
#define RUN_CSTEP 64
#define RUN_ITEMS                                                                               \
    const i64 cstep_ = v.C < RUN_CSTEP ? v.C : RUN_CSTEP;                                       \
    const i64 nc_ = (v.C + cstep_ - 1) / cstep_;                                                \
    const i64 items = v.A * v.G * v.M * nc_;
#define RUN_ITEM_BEGIN                                                                          \
    {                                                                                           \
        const i64 c0_ = (it % nc_) * cstep_;                                                    \
        const i64 c1_ = c0_ + cstep_ < v.C ? c0_ + cstep_ : v.C;                                \
        i64 rest_ = it / nc_;                                                                   \
        const i64 m = rest_ % v.M;                                                              \
        rest_ /= v.M;                                                                           \
        const i64 g = rest_ % v.G, a = rest_ / v.G;                                             \
        const i64 base_ = a * v.sa + g * v.sg + m * v.sm;                                       \
        for (i64 c = c0_; c < c1_; ++c) {                                                       \
            const i64 off = base_ + c * v.sc;                                                   \
            const i64 k = g * v.C + c;
#define RUN_ITEM_END                                                                            \
        }                                                                                       \
    }

#endif
