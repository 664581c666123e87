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
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX512F__)
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

#include "kernels_loops.h" /* conversions, element loops, four-row loops */

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
 * memory once and revisited in cache. (Narrower chunks, to fit more rows, measured slower
 * than the two-pass blocks: short strided row pieces.) Same names as ROW_ITEMS (nseg = 1). */
#define SWEEP_ITEMS(S)                                                                          \
    const i64 rows_per_g = v.A * v.M;                                                           \
    const i64 cchunk = balanced_chunk(v.C);                                                     \
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
#define DEFINE_COL_STEPS(S, T, NAME, VT, NV, L, LDV, STV, TLD, TST, SQRT)                       \
static inline void NAME##_fwd(const S *restrict x, S *restrict out, i64 c, i64 nr, i64 st,      \
                              double eps, const double *restrict gsx,                           \
                              const double *restrict gox, T *restrict mu, T *restrict ti,       \
                              double *restrict dv) {                                            \
    const VT zero = {0};                                                                        \
    const T inv_n = (T)1 / (T)nr;                                                               \
    const double inv_cnt = 1.0 / (double)nr;                                                    \
    VT xr[COL_ROWS][NV], f[NV], s[NV], q[NV], cs[NV], co[NV];                                   \
    T qa[NV * L], ca[NV * L], oa[NV * L];                                                       \
    for (int u = 0; u < NV; ++u) {                                                              \
        xr[0][u] = LDV(x + c + u * L);                                                          \
        f[u] = xr[0][u];                                                                        \
        s[u] = zero;                                                                            \
        q[u] = zero;                                                                            \
    }                                                                                           \
    for (i64 r = 1; r < nr; ++r)                                                                \
        for (int u = 0; u < NV; ++u) {                                                          \
            xr[r][u] = LDV(x + r * st + c + u * L);                                             \
            s[u] += xr[r][u] - f[u];                                                            \
        }                                                                                       \
    for (int u = 0; u < NV; ++u) s[u] = f[u] + s[u] * inv_n;                                    \
    for (i64 r = 0; r < nr; ++r)                                                                \
        for (int u = 0; u < NV; ++u) {                                                          \
            const VT d = xr[r][u] - s[u];                                                       \
            q[u] += d * d;                                                                      \
        }                                                                                       \
    for (int u = 0; u < NV; ++u) { TST(mu + c + u * L, s[u]); TST(qa + u * L, q[u]); }          \
    for (int j = 0; j < NV * L; ++j) {                                                          \
        const double vr = (double)qa[j] * inv_cnt;                                              \
        const T iv = (T)1 / SQRT((T)vr + (T)eps);                                               \
        ti[c + j] = iv;                                                                         \
        dv[c + j] = vr;                                                                         \
        ca[j] = (T)((double)iv * gsx[j]);                                                       \
        oa[j] = (T)gox[j];                                                                      \
    }                                                                                           \
    for (int u = 0; u < NV; ++u) { cs[u] = TLD(ca + u * L); co[u] = TLD(oa + u * L); }          \
    for (i64 r = 0; r < nr; ++r)                                                                \
        for (int u = 0; u < NV; ++u)                                                            \
            STV(out + r * st + c + u * L, (xr[r][u] - s[u]) * cs[u] + co[u]);                   \
}                                                                                               \
static inline void NAME##_bwd(const S *restrict dy, const S *restrict x, S *restrict dx, i64 c, \
                              i64 nr, i64 st, const T *restrict mean, const T *restrict inv,    \
                              const double *restrict gsx, double *restrict ss,                  \
                              double *restrict sp) {                                            \
    const VT zero = {0};                                                                        \
    const double inv_n = 1.0 / (double)nr;                                                      \
    VT g[COL_ROWS][NV], xc[COL_ROWS][NV], m[NV], a[NV], b[NV], a1[NV], a2[NV], a3[NV];          \
    T aa[NV * L], ba[NV * L], k1[NV * L], k2[NV * L], k3[NV * L];                               \
    for (int u = 0; u < NV; ++u) m[u] = TLD(mean + c + u * L);                                  \
    for (int u = 0; u < NV; ++u) { a[u] = zero; b[u] = zero; }                                  \
    for (i64 r = 0; r < nr; ++r)                                                                \
        for (int u = 0; u < NV; ++u) {                                                          \
            g[r][u] = LDV(dy + r * st + c + u * L);                                             \
            xc[r][u] = LDV(x + r * st + c + u * L) - m[u];                                      \
            a[u] += g[r][u];                                                                    \
            b[u] += g[r][u] * xc[r][u];                                                         \
        }                                                                                       \
    for (int u = 0; u < NV; ++u) { TST(aa + u * L, a[u]); TST(ba + u * L, b[u]); }              \
    for (int j = 0; j < NV * L; ++j) {                                                          \
        const double iv = (double)inv[c + j];                                                   \
        ss[c + j] = (double)aa[j];                                                              \
        sp[c + j] = (double)ba[j];                                                              \
        k1[j] = (T)(ss[c + j] * inv_n);                                                         \
        k2[j] = (T)(iv * iv * sp[c + j] * inv_n);                                               \
        k3[j] = (T)(iv * gsx[j]);                                                               \
    }                                                                                           \
    for (int u = 0; u < NV; ++u) {                                                              \
        a1[u] = TLD(k1 + u * L);                                                                \
        a2[u] = TLD(k2 + u * L);                                                                \
        a3[u] = TLD(k3 + u * L);                                                                \
    }                                                                                           \
    for (i64 r = 0; r < nr; ++r)                                                                \
        for (int u = 0; u < NV; ++u)                                                            \
            STV(dx + r * st + c + u * L, (g[r][u] - a1[u] - xc[r][u] * a2[u]) * a3[u]);         \
}

/* The n parameter values of consecutive channels from parameter p on (channel k uses
   p = k mod P): where they lie, or copied into buf when they wrap around the parameters. */
static inline const double *param_window(const double *v, i64 p, i64 P, i64 n, double *buf) {
    if (p + n <= P) return v + p;
    for (i64 j = 0; j < n; ++j) buf[j] = v[(p + j) % P];
    return buf;
}

/* The column loops over a chunk's cn channels k0 .. k0 + cn − 1: vector columns, then single
   channels, each with its parameters' values (gs, go) from param_window. */
#define DEFINE_COLUMNS(S, T, SUFFIX, VT, L, TSUF, SQRT)                                         \
DEFINE_COL_STEPS(S, T, colv_##SUFFIX, VT, 2, L, vld_##SUFFIX, vst_##SUFFIX, vld_##TSUF, vst_##TSUF, \
                 SQRT)                                                                          \
DEFINE_COL_STEPS(S, T, cols_##SUFFIX, T, 1, 1, sld_##SUFFIX, sst_##SUFFIX, sld_##TSUF, sst_##TSUF, \
                 SQRT)                                                                          \
static void col_stats_affine_##SUFFIX(const S *x, S *out, i64 cn, i64 nr, i64 st, i64 k0, i64 P, \
                                      double eps, const double *gs, const double *go, T *mu,    \
                                      T *ti, double *dv) {                                      \
    double wg[2 * L], wo[2 * L];                                                                \
    i64 c = 0, p = k0 % P;                                                                      \
    for (; c + 2 * L <= cn; c += 2 * L) {                                                       \
        colv_##SUFFIX##_fwd(x, out, c, nr, st, eps, param_window(gs, p, P, 2 * L, wg),          \
                            param_window(go, p, P, 2 * L, wo), mu, ti, dv);                     \
        for (p += 2 * L; p >= P;) p -= P;                                                       \
    }                                                                                           \
    for (; c < cn; ++c, p = p + 1 < P ? p + 1 : 0)                                              \
        cols_##SUFFIX##_fwd(x, out, c, nr, st, eps, gs + p, go + p, mu, ti, dv);                \
}                                                                                               \
static void col_reduce_dx_##SUFFIX(const S *dy, const S *x, S *dx, i64 cn, i64 nr, i64 st,      \
                                   i64 k0, i64 P, const T *mean, const T *inv, const double *gs, \
                                   double *ss, double *sp) {                                    \
    double wg[2 * L];                                                                           \
    i64 c = 0, p = k0 % P;                                                                      \
    for (; c + 2 * L <= cn; c += 2 * L) {                                                       \
        colv_##SUFFIX##_bwd(dy, x, dx, c, nr, st, mean, inv, param_window(gs, p, P, 2 * L, wg), \
                            ss, sp);                                                            \
        for (p += 2 * L; p >= P;) p -= P;                                                       \
    }                                                                                           \
    for (; c < cn; ++c, p = p + 1 < P ? p + 1 : 0)                                              \
        cols_##SUFFIX##_bwd(dy, x, dx, c, nr, st, mean, inv, gs + p, ss, sp);                   \
}

/*
 * DEFINE_PRIMITIVES: S storage type, T compute type, LD/ST element conversions (generic
 * layouts), ROW(p, n, buf) -> const T* of n values, SQRT the square root in T.
 */
#define DEFINE_PRIMITIVES(S, T, SUFFIX, LD, ST, ROW, SQRT)                                      \
                                                                                                \
/* Row layouts: the mean mu[c] and m2[c] = Σ(x − mu)² of the rows [r0, r1) of chunk             \
   (g, c0 .. c0 + cn − 1), in T: a shifted sum (shift: the range's first row, so a large        \
   mean does not swamp it), then the squared deviations from the mean. */                       \
static void block_moments_##SUFFIX(const S *x, view_t v, i64 g, i64 c0, i64 cn, i64 r0, i64 r1, \
                                   T *restrict mu, T *restrict m2) {                            \
    T fb[BUF];                                                                                  \
    const T *restrict first = ROW(x + (r0 / v.M) * v.sa + g * v.sg + (r0 % v.M) * v.sm + c0, cn, fb); \
    for (i64 c = 0; c < cn; ++c) { mu[c] = 0; m2[c] = 0; }                                      \
    ROW_RUNS_BEGIN(r0, r1)                                                                      \
        acc_shift_rows_##SUFFIX(x + off_ + c0, cn, nr_, v.sm, first, mu);                       \
    ROW_RUNS_END                                                                                \
    const T inv_n = (T)1 / (T)(r1 - r0);                                                        \
    for (i64 c = 0; c < cn; ++c) mu[c] = first[c] + mu[c] * inv_n;                              \
    ROW_RUNS_BEGIN(r0, r1)                                                                      \
        acc_sq_rows_##SUFFIX(x + off_ + c0, cn, nr_, v.sm, mu, m2);                             \
    ROW_RUNS_END                                                                                \
}                                                                                               \
                                                                                                \
/* mean and biased variance per channel (K = G*C outputs, double) */                            \
static void stats_##SUFFIX(const S *x, view_t v, double *mean, double *var, int nt) {           \
    const i64 K = v.G * v.C;                                                                    \
    double *acc = NULL; /* n, m, q per partial (thread or row segment) */                       \
    int parts = nt;                                                                             \
    if (v.si == 1 && v.I > 1 && v.I <= SHORT_RUN) {                                             \
        /* short runs (multi-axis with a small last dimension): like row mode, rows of a    */  \
        /* channel chunk whose entries are runs of I values; blocks of a merged per channel */  \
        const i64 rows_per_g = v.A * v.M;                                                       \
        const i64 cchunk = v.C < BUF / v.I ? v.C : (BUF / v.I > 0 ? BUF / v.I : 1);             \
        const i64 ncc = (v.C + cchunk - 1) / cchunk;                                            \
        i64 block = ROW_BLOCK_BYTES / (i64)sizeof(S) / (cchunk * v.I);                          \
        if (block < 1) block = 1;                                                               \
        const i64 nblk = (rows_per_g + block - 1) / block;                                      \
        const i64 items = v.G * ncc * nblk;                                                     \
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));                        \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;                 \
            T bs[BUF], bq[BUF], sh[BUF], xb[BUF], se[BUF], ae[BUF];                             \
            double dm[BUF], dq[BUF];                                                            \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                const i64 b = it % nblk, cc = (it / nblk) % ncc, g = it / (nblk * ncc);         \
                const i64 c0 = cc * cchunk, cn = v.C - c0 < cchunk ? v.C - c0 : cchunk;         \
                const i64 r0 = b * block, r1 = r0 + block < rows_per_g ? r0 + block : rows_per_g; \
                const S *first = x + (r0 / v.M) * v.sa + g * v.sg + (r0 % v.M) * v.sm;          \
                for (i64 c = 0; c < cn; ++c) {                                                  \
                    bs[c] = 0;                                                                  \
                    bq[c] = 0;                                                                  \
                    sh[c] = ROW(first + (c0 + c) * v.sc, 1, xb)[0];                             \
                }                                                                               \
                if (v.sc == v.I) { /* adjacent runs: one contiguous block, element-wise sums */ \
                    const i64 len = cn * v.I;                                                   \
                    for (i64 c = 0; c < cn; ++c)                                                \
                        for (i64 i = 0; i < v.I; ++i) { se[c * v.I + i] = sh[c]; ae[c * v.I + i] = 0; } \
                    ROWS_BEGIN(r0, r1)                                                          \
                        const T *restrict pv = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);         \
                        for (i64 e = 0; e < len; ++e) ae[e] += pv[e] - se[e];                   \
                    ROWS_END                                                                    \
                    const T inv_n = (T)1 / (T)((r1 - r0) * v.I);                                \
                    for (i64 c = 0; c < cn; ++c) {                                              \
                        T t = 0;                                                                \
                        for (i64 i = 0; i < v.I; ++i) t += ae[c * v.I + i];                     \
                        bs[c] = sh[c] + t * inv_n;                                              \
                        for (i64 i = 0; i < v.I; ++i) { se[c * v.I + i] = bs[c]; ae[c * v.I + i] = 0; } \
                    }                                                                           \
                    ROWS_BEGIN(r0, r1)                                                          \
                        const T *restrict pv = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);         \
                        for (i64 e = 0; e < len; ++e) { T d = pv[e] - se[e]; ae[e] += d * d; }  \
                    ROWS_END                                                                    \
                    for (i64 c = 0; c < cn; ++c) {                                              \
                        T t = 0;                                                                \
                        for (i64 i = 0; i < v.I; ++i) t += ae[c * v.I + i];                     \
                        bq[c] = t;                                                              \
                    }                                                                           \
                } else {                                                                        \
                    ROWS_BEGIN(r0, r1)                                                          \
                        for (i64 c = 0; c < cn; ++c) {                                          \
                            const T *restrict pv = ROW(x + ROW_OFFSET + (c0 + c) * v.sc, v.I, xb); \
                            bs[c] += sum_dev_##SUFFIX(pv, v.I, sh[c]);                          \
                        }                                                                       \
                    ROWS_END                                                                    \
                    const T inv_n = (T)1 / (T)((r1 - r0) * v.I);                                \
                    for (i64 c = 0; c < cn; ++c) bs[c] = sh[c] + bs[c] * inv_n;                 \
                    ROWS_BEGIN(r0, r1)                                                          \
                        for (i64 c = 0; c < cn; ++c) {                                          \
                            const T *restrict pv = ROW(x + ROW_OFFSET + (c0 + c) * v.sc, v.I, xb); \
                            const T mu = bs[c];                                                 \
                            bq[c] += sum_sq_dev_##SUFFIX(pv, v.I, mu);                          \
                        }                                                                       \
                    ROWS_END                                                                    \
                }                                                                               \
                for (i64 c = 0; c < cn; ++c) { dm[c] = (double)bs[c]; dq[c] = (double)bq[c]; }  \
                merge_block(tn + g * v.C + c0, tm + g * v.C + c0, tq + g * v.C + c0,            \
                            (double)((r1 - r0) * v.I), dm, dq, cn);                             \
            }                                                                                   \
        }                                                                                       \
    } else if (v.si == 1 && v.I > 1) {                                                          \
        /* short runs are taken rb at a time (same channel, consecutive a) */                   \
        const i64 rb = v.I >= BUF ? 1 : BUF / v.I;                                              \
        const i64 nab = (v.A + rb - 1) / rb;                                                    \
        const i64 items = nab * v.G * v.M * v.C;                                                \
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));                        \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;                 \
            T xb[BUF];                                                                          \
            const T *pr[BUF];                                                                   \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                i64 rest_ = it / nab;                                                           \
                const i64 c = rest_ % v.C;                                                      \
                rest_ /= v.C;                                                                   \
                const i64 m = rest_ % v.M, g = rest_ / v.M, k = g * v.C + c;                    \
                const i64 a0 = (it % nab) * rb, a1 = a0 + rb < v.A ? a0 + rb : v.A;             \
                const S *base = x + g * v.sg + m * v.sm + c * v.sc;                             \
                for (i64 i0 = 0; i0 < v.I; i0 += BUF) { /* one piece unless rb > 1 */           \
                    const i64 len = v.I - i0 < BUF ? v.I - i0 : BUF;                            \
                    const i64 runs = a1 - a0;                                                   \
                    T s = 0, shift = 0;                                                         \
                    for (i64 j = 0; j < runs; ++j) {                                            \
                        pr[j] = ROW(base + (a0 + j) * v.sa + i0, len, xb + j * len);            \
                        if (j == 0) shift = pr[0][0]; /* a large mean does not swamp the sum */ \
                        const T *restrict pv = pr[j];                                           \
                        s += sum_dev_##SUFFIX(pv, len, shift);                                  \
                    }                                                                           \
                    const double count = (double)(runs * len);                                  \
                    const T mu = shift + s / (T)count;                                          \
                    T ss = 0;                                                                   \
                    for (i64 j = 0; j < runs; ++j) {                                            \
                        const T *restrict pv = pr[j];                                           \
                        ss += sum_sq_dev_##SUFFIX(pv, len, mu);                                 \
                    }                                                                           \
                    const double bm = (double)mu, bq = (double)ss;                              \
                    merge_block(tn + k, tm + k, tq + k, count, &bm, &bq, 1);                    \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) {                                                         \
        ROW_ITEMS(S)                                                                            \
        if (nblk == 1) { /* every row of a chunk in one block: exact two-pass, no merge */      \
            _Pragma("omp parallel num_threads(nt)")                                             \
            {                                                                                   \
                T bs[BUF], bq[BUF];                                                             \
                _Pragma("omp for schedule(static)")                                             \
                for (i64 it = 0; it < items; ++it) {                                            \
                    ITEM_RANGE                                                                  \
                    block_moments_##SUFFIX(x, v, g, c0, cn, seg0, seg1, bs, bq);                \
                    double *om = mean + g * v.C + c0, *ov = var + g * v.C + c0;                 \
                    for (i64 c = 0; c < cn; ++c) {                                              \
                        om[c] = (double)bs[c];                                                  \
                        ov[c] = (double)bq[c] / (double)(seg1 - seg0);                          \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
            return;                                                                             \
        }                                                                                       \
        parts = (int)nseg;                                                                      \
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));                        \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            T bs[BUF], bq[BUF];                                                                 \
            double dm[BUF], dq[BUF];                                                            \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                ITEM_RANGE                                                                      \
                double *tn = acc + 3 * s_ * K + g * v.C + c0, *tm = tn + K, *tq = tm + K;       \
                BLOCKS_BEGIN                                                                    \
                    block_moments_##SUFFIX(x, v, g, c0, cn, r0, r1, bs, bq);                    \
                    for (i64 c = 0; c < cn; ++c) { dm[c] = (double)bs[c]; dq[c] = (double)bq[c]; } \
                    merge_block(tn, tm, tq, (double)(r1 - r0), dm, dq, cn);                     \
                BLOCKS_END                                                                      \
            }                                                                                   \
        }                                                                                       \
    } else {                                                                                    \
        RUN_ITEMS                                                                               \
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));                        \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;                 \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                RUN_ITEM_BEGIN                                                                  \
                double s = 0;                                                                   \
                for (i64 i = 0; i < v.I; ++i) s += (double)LD(x[off + i * v.si]);               \
                const double mu = s / (double)v.I;                                              \
                double q = 0;                                                                   \
                for (i64 i = 0; i < v.I; ++i) {                                                 \
                    const double d = (double)LD(x[off + i * v.si]) - mu;                        \
                    q += d * d;                                                                 \
                }                                                                               \
                merge_block(tn + k, tm + k, tq + k, (double)v.I, &mu, &q, 1);                   \
                RUN_ITEM_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    /* merge the partials; the first one holds the result */                                    \
    for (int t = 1; t < parts; ++t) {                                                           \
        const double *un = acc + 3 * t * K, *um = un + K, *uq = um + K;                         \
        for (i64 k = 0; k < K; ++k) {                                                           \
            if (un[k] > 0) merge_block(acc + k, acc + K + k, acc + 2 * K + k, un[k], um + k,    \
                                       uq + k, 1);                                              \
        }                                                                                       \
    }                                                                                           \
    for (i64 k = 0; k < K; ++k) {                                                               \
        const double n = acc[k];                                                                \
        mean[k] = n > 0 ? acc[K + k] : 0.0;                                                     \
        var[k] = n > 0 ? acc[2 * K + k] / n : 0.0;                                              \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* Row layouts whose rows fit in cache a chunk of channels at a time (small batches, ghost      \
   batches): statistics, per-channel coefficients and the output in one sweep that reads        \
   x from memory once. out = (x − μ[k])·inv[k]·gs[p] + go[p], k = g·C + c, p = k mod P;         \
   writes mean[k], inv[k] = 1/√(σ²[k] + ε) when mean is not NULL, and adds Σ_g μ and Σ_g σ²     \
   into pm/pv (per-thread partials in thread order). Sums run in T over at most SUB_ROWS        \
   rows, then in double (shifted by the chunk's first row, then centred on the mean).           \
   Returns 0 (nothing done) when the layout does not fit. */                                    \
static int stats_affine_##SUFFIX(const S *x, S *out, view_t v, i64 P, double eps,               \
                                 const double *gs, const double *go, T *mean,                   \
                                 T *inv, double *pm, double *pv, int nt) {                      \
    if (!(v.I == 1 && v.sc == 1)) return 0;                                                     \
    SWEEP_ITEMS(S)                                                                              \
    if (!sweep_ok) return 0;                                                                    \
    double *part = scratch_zero(0, (size_t)(2 * nt * P) * sizeof(double));                      \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
        T bs[BUF], fb[BUF], cs[BUF], co[BUF], mu[BUF], ti[BUF];                                 \
        double ds[BUF], dv[BUF], fm[BUF], fv[BUF];                                              \
        double *tm = part + 2 * thread_id() * P, *tv = tm + P;                                  \
        _Pragma("omp for schedule(static)")                                                     \
        for (i64 it = 0; it < items; ++it) {                                                    \
            ITEM_RANGE                                                                          \
            const i64 k0 = g * v.C + c0;                                                        \
            if (COL_ITEM(SUFFIX)) {                                                             \
                const i64 off0 = COL_ITEM_OFFSET;                                               \
                T *mo = mean != NULL ? mean + k0 : mu, *io = mean != NULL ? inv + k0 : ti;      \
                col_stats_affine_##SUFFIX(x + off0, out + off0, cn, seg1 - seg0, v.sm, k0, P, eps, \
                                          gs, go, mo, io, dv);                                  \
                FOLDED_PARAM_RUNS(SWEEP_SUMS, T, SQRT, fm, fv, tm, tv)                          \
                continue;                                                                       \
            }                                                                                   \
            if (seg1 - seg0 <= SUB_ROWS) { /* one sub-block: the sums stay in T */              \
                block_moments_##SUFFIX(x, v, g, c0, cn, seg0, seg1, mu, bs);                    \
                for (i64 c = 0; c < cn; ++c) dv[c] = (double)bs[c];                             \
            } else { /* T sums over SUB_ROWS rows, then double */                               \
                const T *restrict first = ROW(x + g * v.sg + c0, cn, fb);                       \
                for (i64 c = 0; c < cn; ++c) ds[c] = 0;                                         \
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) {                                \
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;                 \
                    for (i64 c = 0; c < cn; ++c) bs[c] = 0;                                     \
                    ROW_RUNS_BEGIN(r0, r1)                                                      \
                        acc_shift_rows_##SUFFIX(x + off_ + c0, cn, nr_, v.sm, first, bs);       \
                    ROW_RUNS_END                                                                \
                    for (i64 c = 0; c < cn; ++c) ds[c] += (double)bs[c];                        \
                }                                                                               \
                const double inv_cnt = 1.0 / (double)(seg1 - seg0);                             \
                for (i64 c = 0; c < cn; ++c) {                                                  \
                    mu[c] = (T)((double)first[c] + ds[c] * inv_cnt);                            \
                    dv[c] = 0;                                                                  \
                }                                                                               \
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) {                                \
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;                 \
                    for (i64 c = 0; c < cn; ++c) bs[c] = 0;                                     \
                    ROW_RUNS_BEGIN(r0, r1)                                                      \
                        acc_sq_rows_##SUFFIX(x + off_ + c0, cn, nr_, v.sm, mu, bs);             \
                    ROW_RUNS_END                                                                \
                    for (i64 c = 0; c < cn; ++c) dv[c] += (double)bs[c];                        \
                }                                                                               \
            }                                                                                   \
            const double inv_cnt = 1.0 / (double)(seg1 - seg0); /* dv: Σ(x − μ)² per channel */ \
            FOLDED_PARAM_RUNS(SWEEP_COEFFICIENTS, T, SQRT, fm, fv, tm, tv)                      \
            if (mean != NULL) { /* kept for the backward */                                     \
                for (i64 c = 0; c < cn; ++c) { mean[k0 + c] = mu[c]; inv[k0 + c] = ti[c]; }     \
            }                                                                                   \
            ROW_RUNS_BEGIN(seg0, seg1)                                                          \
                affine_rows_##SUFFIX(x + off_ + c0, out + off_ + c0, cn, nr_, v.sm,             \
                                     mu, cs, co);                                               \
            ROW_RUNS_END                                                                        \
        }                                                                                       \
    }                                                                                           \
    sum_partials(part, nt, P, pm, pv);                                                          \
    return 1;                                                                                   \
}                                                                                               \
                                                                                                \
/* Plane layouts (runs of I > SHORT_RUN values) whose A·M runs of one channel fit in            \
   PLANE_SWEEP_BYTES, with at least a channel per thread: per channel, statistics,              \
   coefficients and output in one sweep that reads x from memory once and revisits the          \
   runs in L2. The mean is a sum shifted by the channel's first value (T per piece of at        \
   most BUF values, then double), the variance the squared deviations from that mean. With      \
   renorm (rm, rs given; no ghost batches: channel k is parameter k) r and d fold into          \
   the coefficients and into slope/intercept, as the two-pass driver does. Same outputs as      \
   stats_affine; returns 0 (nothing done) when the layout does not fit. */                      \
static int plane_stats_affine_##SUFFIX(const S *x, S *out, view_t v, i64 P, double eps,         \
                                       const double *gs, const double *go, double *slope,       \
                                       double *intercept, const T *rm, const T *rs,             \
                                       double rmin, double rmax, double dmax, T *mean,          \
                                       T *inv, double *pm, double *pv, int nt) {                \
    PLANE_SWEEP_ITEMS(S)                                                                        \
    if (!sweep_ok || (rm != NULL && items != P)) return 0;                                      \
    const double inv_cnt = 1.0 / (double)(runs * v.I);                                          \
    double *part = scratch_zero(0, (size_t)(2 * nt * P) * sizeof(double));                      \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
        T xb[BUF];                                                                              \
        double *tm = part + 2 * thread_id() * P, *tv = tm + P;                                  \
        _Pragma("omp for schedule(static)")                                                     \
        for (i64 k = 0; k < items; ++k) {                                                       \
            const i64 p = k % P, base = (k / v.C) * v.sg + (k % v.C) * v.sc;                    \
            const T shift = ROW(x + base, 1, xb)[0];                                            \
            double ds = 0, dq = 0;                                                              \
            CHANNEL_RUNS_BEGIN RUN_PIECES_BEGIN                                                 \
                ds += (double)sum_dev_##SUFFIX(ROW(x + off + i0, len, xb), len, shift);         \
            RUN_PIECES_END CHANNEL_RUNS_END                                                     \
            const double md = (double)shift + ds * inv_cnt;                                     \
            const T mu = (T)md;                                                                 \
            CHANNEL_RUNS_BEGIN RUN_PIECES_BEGIN                                                 \
                dq += (double)sum_sq_dev_##SUFFIX(ROW(x + off + i0, len, xb), len, mu);         \
            RUN_PIECES_END CHANNEL_RUNS_END                                                     \
            const double vr = dq * inv_cnt;                                                     \
            const T iv = (T)1 / SQRT((T)vr + (T)eps); /* in T like TensorFlow */                \
            double a = gs[p], b = go[p];                                                        \
            if (rm != NULL)                                                                     \
                fold_renorm(md, vr, (double)rm[p], (double)rs[p], eps, rmin, rmax, dmax,        \
                            &slope[p], &intercept[p], &a, &b);                                  \
            tm[p] += md;                                                                        \
            tv[p] += vr;                                                                        \
            if (mean != NULL) { mean[k] = mu; inv[k] = iv; }                                    \
            const T cs = (T)((double)iv * a), co = (T)b;                                        \
            CHANNEL_RUNS_BEGIN                                                                  \
                affine_run_##SUFFIX(x + off, out + off, v.I, mu, cs, co);                       \
            CHANNEL_RUNS_END                                                                    \
        }                                                                                       \
    }                                                                                           \
    sum_partials(part, nt, P, pm, pv);                                                          \
    return 1;                                                                                   \
}                                                                                               \
                                                                                                \
/* Short blocks (SHORT_BLOCKS: multi-axis NCHW, small planes) whose rows of a chunk of          \
   channels fit in PLANE_SWEEP_BYTES, with at least a chunk per thread: the same sweep as       \
   plane_stats_affine, a chunk of channels (cn·I adjacent values per row) at a time, with       \
   element-wise sums (T over SUB_ROWS rows, then double per channel). */                        \
static int short_stats_affine_##SUFFIX(const S *x, S *out, view_t v, i64 P, double eps,         \
                                       const double *gs, const double *go, double *slope,       \
                                       double *intercept, const T *rm, const T *rs,             \
                                       double rmin, double rmax, double dmax, T *mean,          \
                                       T *inv, double *pm, double *pv, int nt) {                \
    if (!SHORT_BLOCKS(v)) return 0;                                                             \
    SHORT_SWEEP_ITEMS(S)                                                                        \
    if (!sweep_ok || (rm != NULL && v.G * v.C != P)) return 0;                                  \
    const double inv_cnt = 1.0 / (double)(rows_per_g * v.I);                                    \
    double *part = scratch_zero(0, (size_t)(2 * nt * P) * sizeof(double));                      \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
        T xb[BUF], ae[BUF], se[BUF], sh[BUF], mu[BUF], cs[BUF], co[BUF];                        \
        double ds[BUF];                                                                         \
        double *tm = part + 2 * thread_id() * P, *tv = tm + P;                                  \
        _Pragma("omp for schedule(static)")                                                     \
        for (i64 it = 0; it < items; ++it) {                                                    \
            const i64 g = it / ncc, c0 = (it % ncc) * cchunk;                                   \
            const i64 cn = v.C - c0 < cchunk ? v.C - c0 : cchunk, len = cn * v.I;               \
            const i64 k0 = g * v.C + c0;                                                        \
            const S *first = x + g * v.sg + c0 * v.I;                                           \
            for (i64 c = 0; c < cn; ++c) { sh[c] = ROW(first + c * v.I, 1, xb)[0]; ds[c] = 0; } \
            for (int pass = 0; pass < 2; ++pass) { /* shifted sums, then squared deviations */  \
                const T *center = pass == 0 ? sh : mu;                                          \
                for (i64 c = 0; c < cn; ++c)                                                    \
                    for (i64 i = 0; i < v.I; ++i) se[c * v.I + i] = center[c];                  \
                for (i64 r0 = 0; r0 < rows_per_g; r0 += SUB_ROWS) {                             \
                    const i64 r1 = r0 + SUB_ROWS < rows_per_g ? r0 + SUB_ROWS : rows_per_g;     \
                    for (i64 e = 0; e < len; ++e) ae[e] = 0;                                    \
                    if (pass == 0) {                                                            \
                        ROWS_BEGIN(r0, r1)                                                      \
                            const T *restrict pr = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);     \
                            for (i64 e = 0; e < len; ++e) ae[e] += pr[e] - se[e];               \
                        ROWS_END                                                                \
                    } else {                                                                    \
                        ROWS_BEGIN(r0, r1)                                                      \
                            const T *restrict pr = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);     \
                            for (i64 e = 0; e < len; ++e) {                                     \
                                const T d = pr[e] - se[e];                                      \
                                ae[e] += d * d;                                                 \
                            }                                                                   \
                        ROWS_END                                                                \
                    }                                                                           \
                    for (i64 c = 0; c < cn; ++c) {                                              \
                        T t = 0;                                                                \
                        for (i64 i = 0; i < v.I; ++i) t += ae[c * v.I + i];                     \
                        ds[c] += (double)t;                                                     \
                    }                                                                           \
                }                                                                               \
                if (pass == 0) { /* the mean; ds then collects Σ(x − μ)² */                     \
                    for (i64 c = 0; c < cn; ++c) {                                              \
                        const double md = (double)sh[c] + ds[c] * inv_cnt;                      \
                        mu[c] = (T)md;                                                          \
                        tm[(k0 + c) % P] += md;                                                 \
                        ds[c] = 0;                                                              \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
            for (i64 c = 0; c < cn; ++c) {                                                      \
                const i64 k = k0 + c, p = k % P;                                                \
                const double vr = ds[c] * inv_cnt;                                              \
                const T iv = (T)1 / SQRT((T)vr + (T)eps); /* in T like TensorFlow */            \
                double a = gs[p], b = go[p];                                                    \
                if (rm != NULL)                                                                 \
                    fold_renorm((double)mu[c], vr, (double)rm[p], (double)rs[p], eps, rmin,     \
                                rmax, dmax, &slope[p], &intercept[p], &a, &b);                  \
                tv[p] += vr;                                                                    \
                if (mean != NULL) { mean[k] = mu[c]; inv[k] = iv; }                             \
                cs[c] = (T)((double)iv * a);                                                    \
                co[c] = (T)b;                                                                   \
            }                                                                                   \
            for (i64 c = 0; c < cn; ++c)                                                        \
                for (i64 i = 0; i < v.I; ++i) {                                                 \
                    ae[c * v.I + i] = mu[c];                                                    \
                    se[c * v.I + i] = cs[c];                                                    \
                    xb[c * v.I + i] = co[c];                                                    \
                }                                                                               \
            ROW_RUNS_BEGIN(0, rows_per_g)                                                       \
                affine_rows_##SUFFIX(x + off_ + c0 * v.I, out + off_ + c0 * v.I, len, nr_, v.sm,\
                                     ae, se, xb);                                               \
            ROW_RUNS_END                                                                        \
        }                                                                                       \
    }                                                                                           \
    sum_partials(part, nt, P, pm, pv);                                                          \
    return 1;                                                                                   \
}                                                                                               \
                                                                                                \
/* out = (x - mean[k]) * scale[k] + shift[k]; out has x's strides */                            \
static void affine_##SUFFIX(const S *x, S *out, view_t v, const T *mean, const T *scale,        \
                            const T *shift, int nt) {                                           \
    if (SHORT_BLOCKS(v)) {                                                                      \
        SHORT_ITEMS                                                                             \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            T me[BUF], se[BUF], oe[BUF];                                                        \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                ITEM_RANGE                                                                      \
                const i64 k0 = g * v.C + c0, len = cn * v.I;                                    \
                SPREAD(me, mean) SPREAD(se, scale) SPREAD(oe, shift)                            \
                ROW_RUNS_BEGIN(seg0, seg1)                                                      \
                    affine_rows_##SUFFIX(x + off_ + c0 * v.I, out + off_ + c0 * v.I, len,       \
                                         nr_, v.sm, me, se, oe);                                \
                ROW_RUNS_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    } else if (v.si == 1 && v.I > 1) {                                                          \
        RUN_ITEMS                                                                               \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                RUN_ITEM_BEGIN                                                                  \
                affine_run_##SUFFIX(x + off, out + off, v.I, mean[k], scale[k], shift[k]);      \
                RUN_ITEM_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) {                                                         \
        /* whole rows (nothing kept per channel chunk), unless too few rows to share */         \
        ROW_ITEMS_W(S, v.G * v.A * v.M >= 16 * nt ? v.C : balanced_chunk(v.C))                  \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                ITEM_RANGE                                                                      \
                const T *restrict mu = mean + g * v.C + c0;                                     \
                const T *restrict s = scale + g * v.C + c0;                                     \
                const T *restrict o = shift + g * v.C + c0;                                     \
                ROW_RUNS_BEGIN(seg0, seg1)                                                      \
                    affine_rows_##SUFFIX(x + off_ + c0, out + off_ + c0, cn, nr_, v.sm,         \
                                         mu, s, o);                                             \
                ROW_RUNS_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    } else {                                                                                    \
        RUN_ITEMS                                                                               \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 it = 0; it < items; ++it) {                                                    \
            RUN_ITEM_BEGIN                                                                      \
            for (i64 i = 0; i < v.I; ++i) {                                                     \
                const i64 e = off + i * v.si;                                                   \
                out[e] = ST((LD(x[e]) - mean[k]) * scale[k] + shift[k]);                        \
            }                                                                                   \
                RUN_ITEM_END                                                                    \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* The training backward in one sweep for the layouts stats_affine takes: per chunk the         \
   sums Σdy and Σdy·(x − μ) (T over SUB_ROWS rows, then double), the dx coefficients, then      \
   dx while the rows are in cache; dγ/dβ partials per thread (thread order).                    \
   gs[p] = slope[p]·γ[p]. Returns 0 when the layout does not fit. */                            \
static int reduce_dx_##SUFFIX(const S *dy, const S *x, S *dx, view_t v, i64 P,                  \
                              const T *mean, const T *inv, const double *gs,                    \
                              const double *slope, const double *intercept, double *dg,         \
                              double *db_, int nt) {                                            \
    if (!(v.I == 1 && v.sc == 1)) return 0;                                                     \
    SWEEP_ITEMS(S)                                                                              \
    if (!sweep_ok) return 0;                                                                    \
    double *part = scratch_zero(4, (size_t)(2 * nt * P) * sizeof(double));                      \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
        T mu[BUF], bs[BUF], bp[BUF], a1[BUF], a2[BUF], a3[BUF];                                 \
        double ss[BUF], sp[BUF], fg[BUF], fb[BUF];                                              \
        double *tg = part + 2 * thread_id() * P, *tb = tg + P;                                  \
        _Pragma("omp for schedule(static)")                                                     \
        for (i64 it = 0; it < items; ++it) {                                                    \
            ITEM_RANGE                                                                          \
            const i64 k0 = g * v.C + c0;                                                        \
            const double inv_n = 1.0 / (double)(seg1 - seg0);                                   \
            if (dx != NULL && COL_ITEM(SUFFIX)) {                                               \
                const i64 off0 = COL_ITEM_OFFSET;                                               \
                col_reduce_dx_##SUFFIX(dy + off0, x + off0, dx + off0, cn, seg1 - seg0, v.sm, k0, P, \
                                       mean + k0, inv + k0, gs, ss, sp);                        \
                FOLDED_PARAM_RUNS(DX_SUMS, T, SQRT, fg, fb, tg, tb)                             \
                continue;                                                                       \
            }                                                                                   \
            if (seg1 - seg0 <= SUB_ROWS) { /* one sub-block: the sums stay in T */              \
                for (i64 c = 0; c < cn; ++c) { mu[c] = mean[k0 + c]; bs[c] = 0; bp[c] = 0; }    \
                ROW_RUNS_BEGIN(seg0, seg1)                                                      \
                    reduce_rows_##SUFFIX(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu, bs,  \
                                         bp);                                                   \
                ROW_RUNS_END                                                                    \
                for (i64 c = 0; c < cn; ++c) { ss[c] = (double)bs[c]; sp[c] = (double)bp[c]; }  \
            } else { /* T sums over SUB_ROWS rows, then double */                               \
                for (i64 c = 0; c < cn; ++c) { mu[c] = mean[k0 + c]; ss[c] = 0; sp[c] = 0; }    \
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) {                                \
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;                 \
                    for (i64 c = 0; c < cn; ++c) { bs[c] = 0; bp[c] = 0; }                      \
                    ROW_RUNS_BEGIN(r0, r1)                                                      \
                        reduce_rows_##SUFFIX(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu,  \
                                             bs, bp);                                           \
                    ROW_RUNS_END                                                                \
                    for (i64 c = 0; c < cn; ++c) { ss[c] += (double)bs[c]; sp[c] += (double)bp[c]; } \
                }                                                                               \
            }                                                                                   \
            /* ss: Σdy, sp: Σdy·(x − μ) per channel; dγ/dβ partials per parameter */            \
            FOLDED_PARAM_RUNS(DX_COEFFICIENTS, T, SQRT, fg, fb, tg, tb)                         \
            if (dx != NULL) {                                                                   \
                ROW_RUNS_BEGIN(seg0, seg1)                                                      \
                    dx_rows_##SUFFIX(dy + off_ + c0, x + off_ + c0, dx + off_ + c0, cn, nr_,    \
                                     v.sm, mu, a1, a2, a3);                                     \
                ROW_RUNS_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    sum_partials(part, nt, P, dg, db_);                                                         \
    return 1;                                                                                   \
}                                                                                               \
                                                                                                \
/* The backward of the layouts plane_stats_affine takes, in one sweep per channel: Σdy and      \
   Σdy·(x − μ) (T per piece of at most BUF values, then double), the dx coefficients, then      \
   dx while the channel's runs of dy and x sit in L2; dγ/dβ partials per thread. */             \
static int plane_reduce_dx_##SUFFIX(const S *dy, const S *x, S *dx, view_t v, i64 P,            \
                                    const T *mean, const T *inv, const double *gs,              \
                                    const double *slope, const double *intercept, double *dg,   \
                                    double *db_, int nt) {                                      \
    PLANE_SWEEP_ITEMS(S)                                                                        \
    if (!sweep_ok) return 0;                                                                    \
    const double inv_n = 1.0 / (double)(runs * v.I);                                            \
    double *part = scratch_zero(4, (size_t)(2 * nt * P) * sizeof(double));                      \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
        double *tg = part + 2 * thread_id() * P, *tb = tg + P;                                  \
        _Pragma("omp for schedule(static)")                                                     \
        for (i64 k = 0; k < items; ++k) {                                                       \
            const i64 p = k % P, base = (k / v.C) * v.sg + (k % v.C) * v.sc;                    \
            const T mu = mean[k];                                                               \
            double ss = 0, sp = 0;                                                              \
            CHANNEL_RUNS_BEGIN RUN_PIECES_BEGIN                                                 \
                T s, q;                                                                         \
                reduce_run_##SUFFIX(dy + off + i0, x + off + i0, len, mu, &s, &q);              \
                ss += (double)s;                                                                \
                sp += (double)q;                                                                \
            RUN_PIECES_END CHANNEL_RUNS_END                                                     \
            const double iv = (double)inv[k];                                                   \
            tg[p] += slope[p] * iv * sp + intercept[p] * ss;                                    \
            tb[p] += ss;                                                                        \
            if (dx == NULL) continue;                                                           \
            const T a1 = (T)(ss * inv_n), a2 = (T)(iv * iv * sp * inv_n), a3 = (T)(iv * gs[p]); \
            CHANNEL_RUNS_BEGIN                                                                  \
                dx_run_##SUFFIX(dy + off, x + off, dx + off, v.I, mu, a1, a2, a3);              \
            CHANNEL_RUNS_END                                                                    \
        }                                                                                       \
    }                                                                                           \
    sum_partials(part, nt, P, dg, db_);                                                         \
    return 1;                                                                                   \
}                                                                                               \
                                                                                                \
/* The same for the layouts short_stats_affine takes, a chunk of channels at a time. */         \
static int short_reduce_dx_##SUFFIX(const S *dy, const S *x, S *dx, view_t v, i64 P,            \
                                    const T *mean, const T *inv, const double *gs,              \
                                    const double *slope, const double *intercept, double *dg,   \
                                    double *db_, int nt) {                                      \
    if (!SHORT_BLOCKS(v)) return 0;                                                             \
    SHORT_SWEEP_ITEMS(S)                                                                        \
    if (!sweep_ok) return 0;                                                                    \
    const double inv_n = 1.0 / (double)(rows_per_g * v.I);                                      \
    double *part = scratch_zero(4, (size_t)(2 * nt * P) * sizeof(double));                      \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
        T me[BUF], bs[BUF], bp[BUF], e1[BUF], e2[BUF], e3[BUF];                                 \
        double ss[BUF], sp[BUF];                                                                \
        double *tg = part + 2 * thread_id() * P, *tb = tg + P;                                  \
        _Pragma("omp for schedule(static)")                                                     \
        for (i64 it = 0; it < items; ++it) {                                                    \
            const i64 g = it / ncc, c0 = (it % ncc) * cchunk;                                   \
            const i64 cn = v.C - c0 < cchunk ? v.C - c0 : cchunk, len = cn * v.I;               \
            const i64 k0 = g * v.C + c0, o0 = c0 * v.I;                                         \
            SPREAD(me, mean)                                                                    \
            for (i64 c = 0; c < cn; ++c) { ss[c] = 0; sp[c] = 0; }                              \
            for (i64 r0 = 0; r0 < rows_per_g; r0 += SUB_ROWS) { /* T sums, then double */       \
                const i64 r1 = r0 + SUB_ROWS < rows_per_g ? r0 + SUB_ROWS : rows_per_g;         \
                for (i64 e = 0; e < len; ++e) { bs[e] = 0; bp[e] = 0; }                         \
                ROW_RUNS_BEGIN(r0, r1)                                                          \
                    reduce_rows_##SUFFIX(dy + off_ + o0, x + off_ + o0, len, nr_, v.sm, me, bs, \
                                         bp);                                                   \
                ROW_RUNS_END                                                                    \
                for (i64 c = 0; c < cn; ++c) {                                                  \
                    T a = 0, b = 0;                                                             \
                    for (i64 i = 0; i < v.I; ++i) {                                             \
                        a += bs[c * v.I + i];                                                   \
                        b += bp[c * v.I + i];                                                   \
                    }                                                                           \
                    ss[c] += (double)a;                                                         \
                    sp[c] += (double)b;                                                         \
                }                                                                               \
            }                                                                                   \
            for (i64 c = 0; c < cn; ++c) {                                                      \
                const i64 k = k0 + c, p = k % P;                                                \
                const double iv = (double)inv[k];                                               \
                tg[p] += slope[p] * iv * sp[c] + intercept[p] * ss[c];                          \
                tb[p] += ss[c];                                                                 \
                const T a1 = (T)(ss[c] * inv_n), a2 = (T)(iv * iv * sp[c] * inv_n);             \
                const T a3 = (T)(iv * gs[p]);                                                   \
                for (i64 i = 0; i < v.I; ++i) {                                                 \
                    e1[c * v.I + i] = a1;                                                       \
                    e2[c * v.I + i] = a2;                                                       \
                    e3[c * v.I + i] = a3;                                                       \
                }                                                                               \
            }                                                                                   \
            if (dx == NULL) continue;                                                           \
            ROW_RUNS_BEGIN(0, rows_per_g)                                                       \
                dx_rows_##SUFFIX(dy + off_ + o0, x + off_ + o0, dx + off_ + o0, len, nr_, v.sm, \
                                 me, e1, e2, e3);                                               \
            ROW_RUNS_END                                                                        \
        }                                                                                       \
    }                                                                                           \
    sum_partials(part, nt, P, dg, db_);                                                         \
    return 1;                                                                                   \
}                                                                                               \
                                                                                                \
/* sum_dy[k] = Σ dy, sum_dyxc[k] = Σ dy·(x − mean[k]); dy has x's strides */                    \
static void reduce_##SUFFIX(const S *dy, const S *x, view_t v, const T *mean, double *sum_dy,   \
                            double *sum_dyxc, int nt) {                                         \
    const i64 K = v.G * v.C;                                                                    \
    double *acc = NULL; /* Σdy, Σdy·(x − μ) per partial (thread or row segment) */              \
    int parts = nt;                                                                             \
    if (SHORT_BLOCKS(v)) {                                                                      \
        SHORT_ITEMS                                                                             \
        acc = scratch_zero(1, (size_t)(2 * parts * K) * sizeof(double));                        \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *ts = acc + 2 * thread_id() * K, *tp = ts + K;                               \
            T me[BUF], bs[BUF], bp[BUF];                                                        \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                ITEM_RANGE                                                                      \
                const i64 k0 = g * v.C + c0, len = cn * v.I, o0 = c0 * v.I;                     \
                SPREAD(me, mean)                                                                \
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) { /* T sums, then double */      \
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;                 \
                    for (i64 e = 0; e < len; ++e) { bs[e] = 0; bp[e] = 0; }                     \
                    ROW_RUNS_BEGIN(r0, r1)                                                      \
                        reduce_rows_##SUFFIX(dy + off_ + o0, x + off_ + o0, len, nr_, v.sm, me, \
                                             bs, bp);                                           \
                    ROW_RUNS_END                                                                \
                    for (i64 c = 0; c < cn; ++c) {                                              \
                        T a = 0, b = 0;                                                         \
                        for (i64 i = 0; i < v.I; ++i) { a += bs[c * v.I + i]; b += bp[c * v.I + i]; } \
                        ts[k0 + c] += (double)a;                                                \
                        tp[k0 + c] += (double)b;                                                \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) {                                                         \
        ROW_ITEMS(S)                                                                            \
        if (nblk == 1) { /* every row of a chunk in one block: write the sums directly */       \
            _Pragma("omp parallel num_threads(nt)")                                             \
            {                                                                                   \
                T bs[BUF], bp[BUF];                                                             \
                _Pragma("omp for schedule(static)")                                             \
                for (i64 it = 0; it < items; ++it) {                                            \
                    ITEM_RANGE                                                                  \
                    const T *restrict mu = mean + g * v.C + c0;                                 \
                    for (i64 c = 0; c < cn; ++c) { bs[c] = 0; bp[c] = 0; }                      \
                    ROW_RUNS_BEGIN(seg0, seg1)                                                  \
                        reduce_rows_##SUFFIX(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu,  \
                                             bs, bp);                                           \
                    ROW_RUNS_END                                                                \
                    double *os = sum_dy + g * v.C + c0, *op = sum_dyxc + g * v.C + c0;          \
                    for (i64 c = 0; c < cn; ++c) { os[c] = (double)bs[c]; op[c] = (double)bp[c]; } \
                }                                                                               \
            }                                                                                   \
            return;                                                                             \
        }                                                                                       \
        parts = (int)nseg;                                                                      \
        acc = scratch_zero(1, (size_t)(2 * parts * K) * sizeof(double));                        \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            T bs[BUF], bp[BUF];                                                                 \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                ITEM_RANGE                                                                      \
                double *ts = acc + 2 * s_ * K + g * v.C + c0, *tp = ts + K;                     \
                const T *restrict mu = mean + g * v.C + c0;                                     \
                BLOCKS_BEGIN                                                                    \
                    for (i64 c = 0; c < cn; ++c) { bs[c] = 0; bp[c] = 0; }                      \
                    ROW_RUNS_BEGIN(r0, r1)                                                      \
                        reduce_rows_##SUFFIX(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu,  \
                                             bs, bp);                                           \
                    ROW_RUNS_END                                                                \
                    for (i64 c = 0; c < cn; ++c) {                                              \
                        ts[c] += (double)bs[c];                                                 \
                        tp[c] += (double)bp[c];                                                 \
                    }                                                                           \
                BLOCKS_END                                                                      \
            }                                                                                   \
        }                                                                                       \
    } else {                                                                                    \
        RUN_ITEMS                                                                               \
        const int contiguous = v.si == 1;                                                       \
        acc = scratch_zero(1, (size_t)(2 * parts * K) * sizeof(double));                        \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *ts = acc + 2 * thread_id() * K, *tp = ts + K;                               \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                RUN_ITEM_BEGIN                                                                  \
                const T mu = mean[k];                                                           \
                if (contiguous) {                                                               \
                    for (i64 i0 = 0; i0 < v.I; i0 += BUF) {                                     \
                        const i64 len = v.I - i0 < BUF ? v.I - i0 : BUF;                        \
                        T s, q;                                                                 \
                        reduce_run_##SUFFIX(dy + off + i0, x + off + i0, len, mu, &s, &q);      \
                        ts[k] += (double)s;                                                     \
                        tp[k] += (double)q;                                                     \
                    }                                                                           \
                } else {                                                                        \
                    double s = 0, q = 0;                                                        \
                    for (i64 i = 0; i < v.I; ++i) {                                             \
                        const double dd = (double)LD(dy[off + i * v.si]);                       \
                        s += dd;                                                                \
                        q += dd * ((double)LD(x[off + i * v.si]) - (double)mu);                 \
                    }                                                                           \
                    ts[k] += s;                                                                 \
                    tp[k] += q;                                                                 \
                }                                                                               \
                RUN_ITEM_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    for (i64 k = 0; k < K; ++k) { sum_dy[k] = 0; sum_dyxc[k] = 0; }                             \
    for (int t = 0; t < parts; ++t) {                                                           \
        const double *ts = acc + 2 * t * K, *tp = ts + K;                                       \
        for (i64 k = 0; k < K; ++k) { sum_dy[k] += ts[k]; sum_dyxc[k] += tp[k]; }               \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* dx = (dy − k1[k] − (x − mean[k])·k2[k])·k3[k]; dy and dx have x's strides */                 \
static void dx_##SUFFIX(const S *dy, const S *x, S *dx, view_t v, const T *mean, const T *k1,   \
                        const T *k2, const T *k3, int nt) {                                     \
    if (SHORT_BLOCKS(v)) {                                                                      \
        SHORT_ITEMS                                                                             \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            T me[BUF], e1[BUF], e2[BUF], e3[BUF];                                               \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                ITEM_RANGE                                                                      \
                const i64 k0 = g * v.C + c0, len = cn * v.I, o0 = c0 * v.I;                     \
                SPREAD(me, mean) SPREAD(e1, k1) SPREAD(e2, k2) SPREAD(e3, k3)                   \
                ROW_RUNS_BEGIN(seg0, seg1)                                                      \
                    dx_rows_##SUFFIX(dy + off_ + o0, x + off_ + o0, dx + off_ + o0, len, nr_,   \
                                     v.sm, me, e1, e2, e3);                                     \
                ROW_RUNS_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) {                                                         \
        /* whole rows (nothing kept per channel chunk), unless too few rows to share */         \
        ROW_ITEMS_W(S, v.G * v.A * v.M >= 16 * nt ? v.C : balanced_chunk(v.C))                  \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                ITEM_RANGE                                                                      \
                const T *restrict mu = mean + g * v.C + c0;                                     \
                const T *restrict a1 = k1 + g * v.C + c0;                                       \
                const T *restrict a2 = k2 + g * v.C + c0;                                       \
                const T *restrict a3 = k3 + g * v.C + c0;                                       \
                ROW_RUNS_BEGIN(seg0, seg1)                                                      \
                    dx_rows_##SUFFIX(dy + off_ + c0, x + off_ + c0, dx + off_ + c0, cn, nr_,    \
                                     v.sm, mu, a1, a2, a3);                                     \
                ROW_RUNS_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    } else {                                                                                    \
        RUN_ITEMS                                                                               \
        const int contiguous = v.si == 1;                                                       \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 it = 0; it < items; ++it) {                                                \
                RUN_ITEM_BEGIN                                                                  \
                const T mu = mean[k], b1 = k1[k], b2 = k2[k], b3 = k3[k];                       \
                if (contiguous) {                                                               \
                    dx_run_##SUFFIX(dy + off, x + off, dx + off, v.I, mu, b1, b2, b3);          \
                } else {                                                                        \
                    for (i64 i = 0; i < v.I; ++i) {                                             \
                        const i64 e = off + i * v.si;                                           \
                        dx[e] = ST((LD(dy[e]) - b1 - (LD(x[e]) - mu) * b2) * b3);               \
                    }                                                                           \
                }                                                                               \
                RUN_ITEM_END                                                                    \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
}

/*
 * Whole passes. T is also the parameter type. `state` holds 4P + 2K doubles: per
 * parameter p the batch mean and biased variance averaged over ghost batches (what the
 * moving averages receive), the slope = r·a_s and the intercept = d·a_s + a_b; then per
 * channel k the mean and inv = 1/sqrt(var + eps). The training forward writes it; the
 * backward reads it. Per-channel loops run in parallel when there are many channels
 * (ghost batches of a wide layer: 32 ghost batches × 1024 channels).
 */
#define PAR_CHANNELS 8192
#define DEFINE_PASSES(S, T, SUFFIX)                                                             \
                                                                                                \
int bn_train_forward_##SUFFIX(                                                                  \
    const S *x, S *y, const i64 *dims, const i64 *strides, i64 P, const T *gamma,               \
    const T *beta, double eps, T *renorm_mean, T *renorm_stddev, double rmin, double rmax,      \
    double dmax, const T *adj_scale, const T *adj_bias, double *state, T *moving_mean,          \
    T *moving_var, T *moving_stddev, double momentum, double renorm_momentum, int bessel,       \
    int keep, int threads) {                                                                    \
    const view_t v = make_view(dims, strides);                                                  \
    const int nt = thread_count(threads);                                                       \
    const i64 K = v.G * v.C, groups = K / P;                                                    \
    const int par = K >= PAR_CHANNELS ? nt : 1;                                                 \
    double *pm = state, *pv = state + P, *slope = state + 2 * P, *intercept = state + 3 * P;    \
    /* per channel, in T: in the state when a backward will read it (keep), else scratch */     \
    T *cmean = keep ? (T *)(state + 4 * P) : NULL, *cinv = keep ? cmean + K : NULL;             \
    { /* slope and intercept up to renorm's r and d: maybe one sweep */                         \
        double *gs = scratch(3, (size_t)(2 * P) * sizeof(double)), *go = gs + P;                \
        for (i64 p = 0; p < P; ++p) {                                                           \
            const double g = gamma ? (double)gamma[p] : 1.0;                                    \
            slope[p] = adj_scale != NULL ? (double)adj_scale[p] : 1.0;                          \
            intercept[p] = adj_bias != NULL ? (double)adj_bias[p] : 0.0;                        \
            gs[p] = slope[p] * g;                                                               \
            go[p] = intercept[p] * g + (beta ? (double)beta[p] : 0.0);                          \
        }                                                                                       \
        if ((renorm_mean == NULL &&                                                             \
             stats_affine_##SUFFIX(x, y, v, P, eps, gs, go, cmean, cinv, pm, pv, nt)) ||        \
            plane_stats_affine_##SUFFIX(x, y, v, P, eps, gs, go, slope, intercept, renorm_mean, \
                                        renorm_stddev, rmin, rmax, dmax, cmean, cinv, pm, pv,   \
                                        nt) ||                                                  \
            short_stats_affine_##SUFFIX(x, y, v, P, eps, gs, go, slope, intercept, renorm_mean, \
                                        renorm_stddev, rmin, rmax, dmax, cmean, cinv, pm, pv,   \
                                        nt)) {                                                  \
            for (i64 p = 0; p < P; ++p) { pm[p] /= (double)groups; pv[p] /= (double)groups; }   \
            goto moving;                                                                        \
        }                                                                                       \
    }                                                                                           \
    double *mean = scratch(1, (size_t)(2 * K) * sizeof(double)), *inv = mean + K;               \
    if (!keep) { cmean = scratch(4, (size_t)(2 * K) * sizeof(T)); cinv = cmean + K; }           \
    stats_##SUFFIX(x, v, mean, inv, nt); /* inv holds the variance until below */               \
    for (i64 p = 0; p < P; ++p) { pm[p] = 0; pv[p] = 0; }                                       \
    for (i64 gg = 0, k = 0; gg < groups; ++gg)                                                  \
        for (i64 p = 0; p < P; ++p, ++k) { pm[p] += mean[k]; pv[p] += inv[k]; }                 \
    for (i64 p = 0; p < P; ++p) { pm[p] /= (double)groups; pv[p] /= (double)groups; }           \
    _Pragma("omp parallel for num_threads(par) schedule(static)")                               \
    for (i64 k = 0; k < K; ++k) {                                                               \
        cmean[k] = (T)mean[k];                                                                  \
        cinv[k] = (T)(1.0 / sqrt(inv[k] + eps));                                                \
    }                                                                                           \
    for (i64 p = 0; p < P; ++p) {                                                               \
        slope[p] = adj_scale != NULL ? (double)adj_scale[p] : 1.0;                              \
        intercept[p] = adj_bias != NULL ? (double)adj_bias[p] : 0.0;                            \
    }                                                                                           \
    if (renorm_mean != NULL) { /* r, d from the ghost-averaged statistics */                    \
        for (i64 p = 0; p < P; ++p) {                                                           \
            fold_renorm(pm[p], pv[p], (double)renorm_mean[p], (double)renorm_stddev[p], eps,    \
                        rmin, rmax, dmax, &slope[p], &intercept[p], NULL, NULL);                \
        }                                                                                       \
    }                                                                                           \
    T *coef = scratch(2, (size_t)(3 * K) * sizeof(T));                                          \
    T *cm = coef, *cs = coef + K, *co = coef + 2 * K;                                           \
    double *gs = scratch(3, (size_t)(2 * P) * sizeof(double)), *go = gs + P;                    \
    for (i64 p = 0; p < P; ++p) {                                                               \
        const double g = gamma ? (double)gamma[p] : 1.0;                                        \
        gs[p] = slope[p] * g;                                                                   \
        go[p] = intercept[p] * g + (beta ? (double)beta[p] : 0.0);                              \
    }                                                                                           \
    _Pragma("omp parallel for num_threads(par) schedule(static)")                               \
    for (i64 gg = 0; gg < groups; ++gg) {                                                       \
        for (i64 p = 0, k = gg * P; p < P; ++p, ++k) {                                          \
            cm[k] = cmean[k];                                                                   \
            cs[k] = (T)((double)cinv[k] * gs[p]);                                               \
            co[k] = (T)go[p];                                                                   \
        }                                                                                       \
    }                                                                                           \
    affine_##SUFFIX(x, y, v, cm, cs, co, nt);                                                   \
moving:                                                                                         \
    if (moving_mean != NULL) { /* TF's moving averages: m <- m - (m - value)(1 - momentum) */   \
        const double decay = 1.0 - momentum, rdecay = 1.0 - renorm_momentum;                    \
        const double n = (double)(v.A * v.M * v.I);                                             \
        const double factor = bessel ? n / (n > 1 ? n - 1 : 1) : 1.0;                           \
        for (i64 p = 0; p < P; ++p) {                                                           \
            const double mu = pm[p], vr = pv[p], value = vr * factor;                           \
            moving_mean[p] = (T)((double)moving_mean[p] - ((double)moving_mean[p] - mu) * decay); \
            if (moving_stddev != NULL) { /* renorm: variance derived from the stddev */         \
                const double sd = (double)moving_stddev[p];                                     \
                moving_stddev[p] = (T)(sd - (sd - sqrt(value + eps)) * decay);                  \
                const double mv = (double)moving_stddev[p] * (double)moving_stddev[p] - eps;    \
                moving_var[p] = (T)(isnan(mv) || mv > 0 ? mv : 0.0);                            \
                const double rm = (double)renorm_mean[p], rs = (double)renorm_stddev[p];        \
                renorm_mean[p] = (T)(rm - (rm - mu) * rdecay);                                  \
                renorm_stddev[p] = (T)(rs - (rs - sqrt(vr + eps)) * rdecay);                    \
            } else {                                                                            \
                moving_var[p] = (T)((double)moving_var[p] - ((double)moving_var[p] - value) * decay); \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
int bn_train_backward_##SUFFIX(                                                                 \
    const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides, i64 P,                 \
    const T *gamma, const double *state, T *dgamma, T *dbeta, int threads) {                    \
    const view_t v = make_view(dims, strides);                                                  \
    const int nt = thread_count(threads);                                                       \
    const i64 K = v.G * v.C, groups = K / P;                                                    \
    const int par = K >= PAR_CHANNELS ? nt : 1;                                                 \
    const double n = (double)(v.A * v.M * v.I);                                                 \
    const double *slope = state + 2 * P, *intercept = state + 3 * P;                            \
    const T *mean = (const T *)(state + 4 * P), *inv = mean + K; /* per channel, in T */        \
    double *sums = scratch(3, (size_t)(2 * K + P) * sizeof(double));                            \
    double *sdy = sums, *sdx = sums + K, *gs = sums + 2 * K;                                    \
    for (i64 p = 0; p < P; ++p) gs[p] = slope[p] * (gamma ? (double)gamma[p] : 1.0);            \
    if (reduce_dx_##SUFFIX(dy, x, dx, v, P, mean, inv, gs, slope, intercept, sdy, sdx, nt) ||   \
        plane_reduce_dx_##SUFFIX(dy, x, dx, v, P, mean, inv, gs, slope, intercept, sdy, sdx,    \
                                 nt) ||                                                         \
        short_reduce_dx_##SUFFIX(dy, x, dx, v, P, mean, inv, gs, slope, intercept, sdy, sdx,    \
                                 nt)) {                                                         \
        for (i64 p = 0; p < P; ++p) {                                                           \
            if (dgamma) dgamma[p] = (T)sdy[p];                                                  \
            if (dbeta) dbeta[p] = (T)sdx[p];                                                    \
        }                                                                                       \
        return 0;                                                                               \
    }                                                                                           \
    T *coef = scratch(2, (size_t)(3 * K) * sizeof(T));                                          \
    const T *cm = mean;                                                                         \
    T *c1 = coef, *c2 = coef + K, *c3 = coef + 2 * K;                                           \
    reduce_##SUFFIX(dy, x, v, cm, sdy, sdx, nt);                                                \
    if (dx != NULL) {                                                                           \
        _Pragma("omp parallel for num_threads(par) schedule(static)")                           \
        for (i64 gg = 0; gg < groups; ++gg) {                                                   \
            for (i64 p = 0, k = gg * P; p < P; ++p, ++k) {                                      \
                c1[k] = (T)(sdy[k] / n);                                                        \
                const double iv = (double)inv[k];                                               \
                c2[k] = (T)(iv * iv * sdx[k] / n);                                              \
                c3[k] = (T)(iv * gs[p]);                                                        \
            }                                                                                   \
        }                                                                                       \
        dx_##SUFFIX(dy, x, dx, v, cm, c1, c2, c3, nt);                                          \
    }                                                                                           \
    if (dgamma != NULL || dbeta != NULL) { /* summed over ghost batches in double */            \
        _Pragma("omp parallel for num_threads(par) schedule(static)")                           \
        for (i64 p = 0; p < P; ++p) {                                                           \
            double ag = 0, ab = 0;                                                              \
            for (i64 gg = 0, k = p; gg < groups; ++gg, k += P) {                                \
                ag += slope[p] * (double)inv[k] * sdx[k] + intercept[p] * sdy[k];               \
                ab += sdy[k];                                                                   \
            }                                                                                   \
            if (dgamma) dgamma[p] = (T)ag;                                                      \
            if (dbeta) dbeta[p] = (T)ab;                                                        \
        }                                                                                       \
    }                                                                                           \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
/* inference: y = (x − mean[p])·γ[p]/√(var[p] + ε) + β[p], with K == P */                       \
/* inference coefficients per parameter: the mean, γ/√(var + ε) (double, then T) and β;         \
   separate loops without branches, so each vectorizes */                                       \
static void infer_coefficients_##SUFFIX(i64 P, const T *restrict mean, const T *restrict var,   \
                                        const T *restrict gamma, const T *restrict beta,        \
                                        double eps, T *restrict cm, T *restrict cs,             \
                                        T *restrict co) {                                       \
    for (i64 p = 0; p < P; ++p) cm[p] = mean[p];                                                \
    if (gamma)                                                                                  \
        for (i64 p = 0; p < P; ++p) cs[p] = (T)((double)gamma[p] / sqrt((double)var[p] + eps)); \
    else                                                                                        \
        for (i64 p = 0; p < P; ++p) cs[p] = (T)(1.0 / sqrt((double)var[p] + eps));              \
    if (beta)                                                                                   \
        for (i64 p = 0; p < P; ++p) co[p] = beta[p];                                            \
    else                                                                                        \
        for (i64 p = 0; p < P; ++p) co[p] = (T)0;                                               \
}                                                                                               \
                                                                                                \
int bn_infer_forward_##SUFFIX(                                                                  \
    const S *x, S *y, const i64 *dims, const i64 *strides, i64 P, const T *mean,                \
    const T *var, const T *gamma, const T *beta, double eps, int threads) {                     \
    const view_t v = make_view(dims, strides);                                                  \
    const i64 K = v.G * v.C;                                                                    \
    T *coef = scratch(2, (size_t)(3 * K) * sizeof(T));                                          \
    T *cm = coef, *cs = coef + K, *co = coef + 2 * K;                                           \
    infer_coefficients_##SUFFIX(P, mean, var, gamma, beta, eps, cm, cs, co);                    \
    for (i64 k = P; k < K; k += P) { /* further channel groups repeat the parameters */         \
        memcpy(cm + k, cm, (size_t)P * sizeof(T));                                              \
        memcpy(cs + k, cs, (size_t)P * sizeof(T));                                              \
        memcpy(co + k, co, (size_t)P * sizeof(T));                                              \
    }                                                                                           \
    affine_##SUFFIX(x, y, v, cm, cs, co, thread_count(threads));                                \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
int bn_infer_backward_##SUFFIX(                                                                 \
    const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides, i64 P,                 \
    const T *mean, const T *var, const T *gamma, double eps, T *dgamma, T *dbeta,               \
    int threads) {                                                                              \
    const view_t v = make_view(dims, strides);                                                  \
    const int nt = thread_count(threads);                                                       \
    const i64 K = v.G * v.C;                                                                    \
    T *coef = scratch(2, (size_t)(4 * K) * sizeof(T));                                          \
    T *cm = coef, *zero = coef + K, *cs = coef + 2 * K;                                         \
    double *inv = scratch(3, (size_t)(3 * K) * sizeof(double));                                 \
    double *sdy = inv + K, *sdx = inv + 2 * K;                                                  \
    FOR_KP {                                                                                    \
        inv[k] = 1.0 / sqrt((double)var[p] + eps);                                              \
        cm[k] = mean[p];                                                                        \
        zero[k] = 0;                                                                            \
        cs[k] = (T)(inv[k] * (gamma ? (double)gamma[p] : 1.0));                                 \
    }                                                                                           \
    if (dx != NULL) affine_##SUFFIX(dy, dx, v, zero, cs, zero, nt); /* dx = dy·γ/√(σ² + ε) */   \
    if (dgamma != NULL || dbeta != NULL) {                                                      \
        reduce_##SUFFIX(dy, x, v, cm, sdy, sdx, nt);                                            \
        for (i64 k = 0; k < K; ++k) { /* K == P in inference */                                 \
            if (dgamma) dgamma[k] = (T)(inv[k] * sdx[k]);                                       \
            if (dbeta) dbeta[k] = (T)sdy[k];                                                    \
        }                                                                                       \
    }                                                                                           \
    return 0;                                                                                   \
}

/*
 * The single passes, exported for callers that combine them with other work between
 * passes (the synchronized path exchanges statistics across processes there).
 */
#define DEFINE_EXPORTS(S, T, SUFFIX)                                                            \
int bn_stats_##SUFFIX(const S *x, const i64 *dims, const i64 *strides, double *mean,            \
                      double *var, int threads) {                                               \
    stats_##SUFFIX(x, make_view(dims, strides), mean, var, thread_count(threads));              \
    return 0;                                                                                   \
}                                                                                               \
int bn_affine_##SUFFIX(const S *x, S *y, const i64 *dims, const i64 *strides, const T *mean,    \
                       const T *scale, const T *shift, int threads) {                           \
    affine_##SUFFIX(x, y, make_view(dims, strides), mean, scale, shift, thread_count(threads)); \
    return 0;                                                                                   \
}                                                                                               \
int bn_reduce_##SUFFIX(const S *dy, const S *x, const i64 *dims, const i64 *strides,            \
                       const T *mean, double *sum_dy, double *sum_dyxc, int threads) {          \
    reduce_##SUFFIX(dy, x, make_view(dims, strides), mean, sum_dy, sum_dyxc,                    \
                    thread_count(threads));                                                     \
    return 0;                                                                                   \
}                                                                                               \
int bn_dx_##SUFFIX(const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides,         \
                   const T *mean, const T *k1, const T *k2, const T *k3, int threads) {         \
    dx_##SUFFIX(dy, x, dx, make_view(dims, strides), mean, k1, k2, k3, thread_count(threads));  \
    return 0;                                                                                   \
}

DEFINE_COLUMNS(float, float, f32, vecf_t, VLF, f32, sqrtf)
DEFINE_PRIMITIVES(float, float, f32, ID, ID, ROW_IN_PLACE, sqrtf)
DEFINE_PASSES(float, float, f32)
DEFINE_EXPORTS(float, float, f32)
DEFINE_COLUMNS(double, double, f64, vecd_t, VLD, f64, sqrt)
DEFINE_PRIMITIVES(double, double, f64, ID, ID, ROW_IN_PLACE, sqrt)
DEFINE_PASSES(double, double, f64)
DEFINE_EXPORTS(double, double, f64)
DEFINE_COLUMNS(uint16_t, float, bf16, vecf_t, VLF, f32, sqrtf)
DEFINE_PRIMITIVES(uint16_t, float, bf16, bf16_load, bf16_store, bf16_row, sqrtf)
DEFINE_PASSES(uint16_t, float, bf16)
DEFINE_EXPORTS(uint16_t, float, bf16)
DEFINE_COLUMNS(uint16_t, float, f16, vecf_t, VLF, f32, sqrtf)
DEFINE_PRIMITIVES(uint16_t, float, f16, f16_load, f16_store, f16_row, sqrtf)
DEFINE_PASSES(uint16_t, float, f16)
DEFINE_EXPORTS(uint16_t, float, f16)

/* Version of this interface: the loader refuses a library with another one. */
int bn_abi_version(void) { return 9; }
