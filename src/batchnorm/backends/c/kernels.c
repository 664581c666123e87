/*
 * CPU kernels for batchnorm's training and inference paths.
 *
 * Storage types: float32, float64, bfloat16 and float16; 16-bit data is
 * computed in float32. Every tensor is seen
 * through one canonical 5-D view [A, G, M, C, I] with element strides; the
 * statistics of channel k = g*C + c reduce over (a, m, i). Parameters have P
 * entries and channel k uses parameter p = k % P (ghost batches are the outer
 * part of k). Three layouts reach vectorized loops:
 *   - "row" mode:   I == 1 and stride(C) == 1, rows of C channels (NHWC, 2-D, ghost
 *     batches), in balanced chunks of up to 1,024 channels;
 *   - "short blocks": stride(I) == 1 and stride(C) == I with I <= 256 (NCHW with small
 *     planes, multi-axis NCHW): a chunk of channels' runs is one contiguous block, walked
 *     like a row with per-channel values spread over their positions;
 *   - "plane" mode: stride(I) == 1, runs of I values per (a, g, m, c) (NCHW);
 * anything else takes a generic strided loop (correct, slower).
 *
 * Statistics are stable without a second pass over memory: each cache-sized block
 * (at most 256 rows) is reduced with a shifted two-pass mean/M2 in T while it sits in
 * cache, and blocks are merged with Chan's parallel formula in double precision. When
 * all rows of a chunk fit in ROW_BLOCK_BYTES, statistics, coefficients and output (and in
 * the backward, sums and dx) come from one sweep that reads the input from memory once;
 * plane and short-block layouts do the same a channel (a chunk of channels) at a time
 * when its values fit in PLANE_SWEEP_BYTES, revisiting them in L2;
 * with at most COL_ROWS rows (ghost batches, small batches) the sweep goes a column of
 * channels at a time through all rows, each value loaded once.
 * 16-bit data is converted 16 values at a time in registers where AVX-512 is available.
 * The exported functions do a whole training or inference pass, including the
 * per-channel algebra (renorm r and d, adjustment, gamma, beta) in double.
 * All kernels use the OpenMP runtime PyTorch itself loaded. They return 0.
 *
 * Files: this one holds the view, the work split and the loop-structure macros, and
 * includes kernels/loops.h (conversions, element and four-row loops, per type),
 * kernels/stream.h (streaming stores for outputs past the cache) and, once per element
 * type with S, T, SUFFIX, ... defined, kernels/typed.h (columns.h, streamed.h, narrow.h,
 * stats.h, forward.h, backward.h, passes.h). Every kernel there is an ordinary C function of one
 * type, so compiler errors, sanitizers and gdb report its own lines; CAT pastes the
 * type's suffix onto its name.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX512F__) || defined(__SSE2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

#define ROW_BLOCK_BYTES (256 * 1024) /* a block of rows is read twice while it sits in L2 */
#define CCHUNK 1024                  /* channels per work item in row mode */
#define SHORT_RUN 256                /* plane runs up to this long are walked like rows */
#define PLANE_SWEEP_BYTES (512 * 1024) /* one channel's plane runs revisited in L2 */

typedef struct {
    i64 A, G, M, C, I;
    i64 sa, sg, sm, sc, si;
} view_t;

static view_t make_view(const i64 *dims, const i64 *strides) {
    view_t v = {dims[0], dims[1], dims[2], dims[3], dims[4],
                strides[0], strides[1], strides[2], strides[3], strides[4]};
    return v;
}

static int thread_count(int requested) {
#ifdef _OPENMP
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/*
 * Per-thread scratch memory, grown on demand and reused by every later call:
 * large per-call mallocs would be fresh pages (page faults) each time.
 * Slots: 0 statistics partials, 1 backward partials, 2 and 3 per-channel vectors,
 * 4 parameter-gradient sums.
 */
#define SLOTS 5
static __thread void *scratch_ptr[SLOTS];
static __thread size_t scratch_size[SLOTS];

static void *scratch(int slot, size_t bytes) {
    if (bytes > scratch_size[slot]) {
        free(scratch_ptr[slot]);
        scratch_ptr[slot] = malloc(bytes);
        scratch_size[slot] = scratch_ptr[slot] ? bytes : 0;
    }
    return scratch_ptr[slot];
}

static void *scratch_zero(int slot, size_t bytes) {
    void *p = scratch(slot, bytes);
    memset(p, 0, bytes);
    return p;
}

/* Chan et al.: merge len channels of a block with nb values each into (n, m, q). */
static void merge_block(double *restrict n, double *restrict m, double *restrict q, double nb,
                        const double *restrict mb, const double *restrict qb, i64 len) {
    for (i64 c = 0; c < len; ++c) {
        const double total = n[c] + nb;
        const double w = nb / total;
        const double f = n[c] * w;
        const double delta = mb[c] - m[c];
        m[c] += delta * w;
        q[c] += qb[c] + delta * delta * f;
        n[c] = total;
    }
}

/* CAT(a, b): a and b pasted into one name after both are expanded (kernels/typed.h's
   names: CAT(stats_, SUFFIX) is stats_f32 for float32) */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#include "kernels/loops.h" /* conversions, element loops, four-row loops */
#include "kernels/stream.h" /* streaming stores, the reverse walk */

#define ID(v) (v)

/* every channel k = g*P + p with its parameter index p, without a division per k */
#define FOR_KP for (i64 gg_ = 0, k = 0; gg_ < K / P; ++gg_) for (i64 p = 0; p < P; ++p, ++k)

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

/* a[p] = Σ_t part[2tP + p], b[p] = Σ_t part[(2t + 1)P + p]: per-thread partials of the
 * one-sweep passes, summed in thread order. */
static void sum_partials(const double *part, int nt, i64 P, double *a, double *b) {
    for (i64 p = 0; p < P; ++p) { a[p] = 0; b[p] = 0; }
    for (int t = 0; t < nt; ++t)
        for (i64 p = 0; p < P; ++p) { a[p] += part[2 * t * P + p]; b[p] += part[(2 * t + 1) * P + p]; }
}

/* Batch renormalization for one parameter from its batch mean mu and variance vr: r =
 * √(vr + ε)/s and d = (mu − m)/s with s = max(renorm_stddev, √ε) (NaN kept), clipped to
 * [rmin, rmax] and [−dmax, dmax], folded into the per-parameter slope and intercept (which
 * the backward reads) and, when a is given, into the output coefficients a = slope·γ and
 * b = intercept·γ + β. */
static void fold_renorm(double mu, double vr, double rmean, double rstd, double eps,
                        double rmin, double rmax, double dmax, double *slope, double *intercept,
                        double *a, double *b) {
    double denom = rstd;
    if (!(denom >= sqrt(eps))) denom = isnan(denom) ? denom : sqrt(eps);
    double r = sqrt(vr + eps) / denom;
    double d = (mu - rmean) / denom;
    if (r < rmin) r = rmin;
    if (r > rmax) r = rmax;
    if (d < -dmax) d = -dmax;
    if (d > dmax) d = dmax;
    if (a != NULL) {
        *b = d * *a + *b;
        *a = r * *a;
    }
    *intercept = d * *slope + *intercept;
    *slope = r * *slope;
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

/* Per-channel coefficients of the one-sweep passes (stats_affine, reduce_dx), for channel c
   of an item with parameter p; M/V (G/B) receive the parameter's partial sums. */
#define SWEEP_COEFFICIENTS(T, SQRT, c, p, M, V)                                                 \
    const double vr = dv[c] * inv_cnt;                                                          \
    const T iv = (T)1 / SQRT((T)vr + (T)eps); /* in T like TensorFlow */                        \
    ti[c] = iv;                                                                                 \
    M += (double)mu[c];                                                                         \
    V += vr;                                                                                    \
    cs[c] = (T)((double)iv * gs[p]);                                                            \
    co[c] = (T)go[p];
#define DX_COEFFICIENTS(T, SQRT, c, p, G, B)                                                    \
    const double iv = (double)inv[k0 + c];                                                      \
    a1[c] = (T)(ss[c] * inv_n);                                                                 \
    a2[c] = (T)(iv * iv * sp[c] * inv_n);                                                       \
    a3[c] = (T)(iv * gs[p]);                                                                    \
    G += slope[p] * iv * sp[c] + intercept[p] * ss[c];                                          \
    B += ss[c];
/* the parameter partial sums alone, after the column loops computed the coefficients */
#define SWEEP_SUMS(T, SQRT, c, p, M, V)                                                         \
    M += (double)mo[c];                                                                         \
    V += dv[c];
#define DX_SUMS(T, SQRT, c, p, G, B)                                                            \
    G += slope[p] * (double)inv[k0 + c] * sp[c] + intercept[p] * ss[c];                         \
    B += ss[c];
/* COEF(T, SQRT, c, p, A, B) over an item's channels k0 .. k0 + cn − 1, adding the parameter
   partials A, B into ta[p], tb[p]. An item made of several whole parameter groups (ghost
   batches) sums them per item first, in fa and fb, then adds each parameter's once. */
#define FOLDED_PARAM_RUNS(COEF, T, SQRT, fa, fb, ta, tb)                                        \
    if (P <= BUF && cn % P == 0 && k0 % P == 0 && cn > P) {                                     \
        for (i64 q = 0; q < P; ++q) { fa[q] = 0; fb[q] = 0; }                                   \
        for (i64 j = 0; j < cn; j += P)                                                         \
            for (i64 q = 0; q < P; ++q) { COEF(T, SQRT, j + q, q, fa[q], fb[q]) }               \
        for (i64 q = 0; q < P; ++q) { ta[q] += fa[q]; tb[q] += fb[q]; }                         \
    } else {                                                                                    \
        PARAM_RUNS_BEGIN COEF(T, SQRT, c, p, ta[p], tb[p]) PARAM_RUNS_END                       \
    }

/*
 * Column loops for a few rows (ghost batches, small batches): NV vectors of channels at a
 * time through all nr <= COL_ROWS rows (row r at + r·st), each value loaded once and kept
 * in registers (or L1) from the statistics to the output. Same arithmetic, operation by
 * operation and in the same order, as the row loops of the sweeps (block_moments,
 * SWEEP_COEFFICIENTS, affine_row; reduce_row, DX_COEFFICIENTS, dx_row). NAME##_fwd does
 * channels c .. c + NV·L − 1 of stats_affine: mu, ti = 1/√(σ² + ε), dv = σ² (double) per
 * channel and out = (x − mu)·cs + co with cs = ti·gsx, co = gox. NAME##_bwd does those of
 * reduce_dx: ss = Σdy, sp = Σdy·(x − μ) per channel and dx. Instantiated once with vectors
 * and once with single values (NV = L = 1) for the channels left over.
 */
#define COL_ROWS 32 /* rows held per column; more rows take the row loops */
#define COLS_OK(SUFFIX) COLS_OK_##SUFFIX
/* a sweep item (rows [seg0, seg1) of chunk g, c0) the column loops take: few rows, one run of
   consecutive rows (one a), and its first value's offset */
#define COL_ITEM(SUFFIX)                                                                        \
    (COLS_OK(SUFFIX) && seg1 - seg0 <= COL_ROWS && seg0 / v.M == (seg1 - 1) / v.M)
#define COL_ITEM_OFFSET ((seg0 / v.M) * v.sa + g * v.sg + (seg0 % v.M) * v.sm + c0)
#define COLS_OK_f32 1
#define COLS_OK_f64 1
#define COLS_OK_bf16 COLS_16
#define COLS_OK_f16 COLS_16

/* The n parameter values of consecutive channels from parameter p on (channel k uses
   p = k mod P): where they lie, or copied into buf when they wrap around the parameters. */
static inline const double *param_window(const double *v, i64 p, i64 P, i64 n, double *buf) {
    if (p + n <= P) return v + p;
    for (i64 j = 0; j < n; ++j) buf[j] = v[(p + j) % P];
    return buf;
}

/* The column loops over a chunk's cn channels k0 .. k0 + cn − 1: vector columns, then single
   channels, each with its parameters' values (gs, go) from param_window. */

/*
 * DEFINE_PRIMITIVES: S storage type, T compute type, LD/ST element conversions (generic
 * layouts), ROW(p, n, buf) -> const T* of n values, SQRT the square root in T.
 */

/*
 * Whole passes. T is also the parameter type. `state` holds 4P + 2K doubles: per
 * parameter p the batch mean and biased variance averaged over ghost batches (what the
 * moving averages receive), the slope = r·a_s and the intercept = d·a_s + a_b; then per
 * channel k the mean and inv = 1/sqrt(var + eps). The training forward writes it; the
 * backward reads it. Per-channel loops run in parallel when there are many channels
 * (ghost batches of a wide layer: 32 ghost batches × 1024 channels).
 */
#define PAR_CHANNELS 8192

/*
 * The single passes, exported for callers that combine them with other work between
 * passes (the synchronized path exchanges statistics across processes there).
 */

#define S float
#define T float
#define SUFFIX f32
#define SQRT sqrtf
#define VT vecf_t
#define L VLF
#define TSUF f32
#define LD ID
#define ST ID
#define ROW ROW_IN_PLACE
#include "kernels/typed.h"

#define S double
#define T double
#define SUFFIX f64
#define SQRT sqrt
#define VT vecd_t
#define L VLD
#define TSUF f64
#define LD ID
#define ST ID
#define ROW ROW_IN_PLACE
#include "kernels/typed.h"

#define S uint16_t
#define T float
#define SUFFIX bf16
#define SQRT sqrtf
#define VT vecf_t
#define L VLF
#define TSUF f32
#define LD bf16_load
#define ST bf16_store
#define ROW bf16_row
#include "kernels/typed.h"

#define S uint16_t
#define T float
#define SUFFIX f16
#define SQRT sqrtf
#define VT vecf_t
#define L VLF
#define TSUF f32
#define LD f16_load
#define ST f16_store
#define ROW f16_row
#include "kernels/typed.h"


/* Version of this interface: the loader refuses a library with another one. */
int bn_abi_version(void) { return 10; }
