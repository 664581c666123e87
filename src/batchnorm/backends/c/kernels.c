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
 * Files: this one holds the view, the scratch memory and the per-channel algebra shared
 * by every type, and includes kernels/loops.h (conversions, element and four-row loops,
 * per type), kernels/stream.h (streaming stores for outputs past the cache),
 * kernels/items.h (the work split and the loop-structure macros) and, once per element
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

#include "kernels/items.h" /* work items, loop headers over rows and runs */

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
static inline void fold_renorm(double mu, double vr, double rmean, double rstd, double eps,
                               double rmin, double rmax, double dmax, double *slope,
                               double *intercept, double *a, double *b) {
    const double se = sqrt(eps), denom = rstd >= se || isnan(rstd) ? rstd : se;
    double r = sqrt(vr + eps) / denom, d = (mu - rmean) / denom;
    r = r < rmin ? rmin : r; /* (a NaN stays NaN) */
    r = r > rmax ? rmax : r;
    d = d < -dmax ? -dmax : d;
    d = d > dmax ? dmax : d;
    if (a != NULL) {
        *b = d * *a + *b;
        *a = r * *a;
    }
    *intercept = d * *slope + *intercept;
    *slope = r * *slope;
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
 * The kernels of each element type: kernels/typed.h, included once per type with the
 * parameters it lists defined before. Besides the whole passes each type exports the single
 * passes, for callers that combine them with other work between passes (the synchronized
 * path exchanges statistics across processes there).
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
