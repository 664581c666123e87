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
 * the backward, sums and dx) come from one sweep that reads the input from memory once.
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

/* bfloat16 <-> float32 (round to nearest even, NaN stays NaN) */
static inline float bf16_load(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint16_t bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet = (u >> 16) | 0x40u;
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? quiet : rounded);
}

/* float16 <-> float32, bit manipulation only (vectorizes without F16 hardware; exact,
 * round to nearest even, subnormals, Inf and NaN handled) */
static inline float f16_load(uint16_t h) {
    const uint32_t x = h;
    const uint32_t em = x & 0x7fffu;
    const uint32_t normal = (em << 13) + (112u << 23);
    const uint32_t infnan = (em << 13) | 0x7f800000u;
    const float sub = (float)em * 5.9604644775390625e-08f; /* subnormal: em * 2^-24 */
    uint32_t subbits;
    memcpy(&subbits, &sub, sizeof subbits);
    uint32_t r = em >= 0x7c00u ? infnan : (em < 0x0400u ? subbits : normal);
    r |= (x & 0x8000u) << 16;
    float f;
    memcpy(&f, &r, sizeof f);
    return f;
}
static inline uint16_t f16_store(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    const uint32_t normal = ((ax + 0xfffu + ((ax >> 13) & 1u)) >> 13) - (112u << 10);
    float fa;
    memcpy(&fa, &ax, sizeof fa);
    const float t = fa + 0.5f; /* the FPU rounds |f| < 2^-14 to a multiple of 2^-24 */
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    const uint32_t sub = tb - 0x3f000000u;
    const uint32_t h = ax > 0x7f800000u   ? 0x7e00u
                       : ax >= 0x477ff000u ? 0x7c00u
                       : ax < 0x38800000u  ? sub
                                           : normal;
    return (uint16_t)(h | sign);
}

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
/* rows of an item in sub-blocks of SUB_ROWS: float partial sums go to double after each */
#define SUB_ROWS 256
/* Short runs of adjacent channels (stride(C) == I, e.g. NCHW with a small H·W, or
 * multi-axis NCHW): CH channels' runs form one contiguous block of CH·I values, walked like
 * a row with per-channel values spread over their I positions. Work item = (g, chunk of
 * CH channels, segment of rows (a, m)). */
#define SHORT_BLOCKS(v) ((v).si == 1 && (v).sc == (v).I && (v).I > 1 && (v).I <= SHORT_RUN)
#define SHORT_ITEMS                                                                             \
    const i64 rows_per_g = v.A * v.M;                                                           \
    const i64 cchunk = v.C < BUF / v.I ? v.C : BUF / v.I;                                       \
    const i64 ncc = (v.C + cchunk - 1) / cchunk;                                                \
    i64 nseg = (4 * nt + v.G * ncc - 1) / (v.G * ncc);                                          \
    if (nseg > rows_per_g) nseg = rows_per_g;                                                   \
    if (nseg < 1) nseg = 1;                                                                     \
    const i64 seg_rows = (rows_per_g + nseg - 1) / nseg;                                        \
    const i64 items = v.G * ncc * nseg;
/* spread per-channel values src[k0 + c] over the I positions of each channel of a chunk */
#define SPREAD(dst, src) \
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

/*
 * Row buffers, for the loops that revisit a piece (plane statistics, the shift rows):
 * 32/64-bit data is read in place; 16-bit data is converted a row (or run piece) at a
 * time into a small float buffer. The streaming loops use the element loops below.
 */
#define BUF 1024 /* longest row piece: CCHUNK channels, or BUF values of a run */
#define ROW_IN_PLACE(p, n, buf) ((void)(buf), (p))

static inline const float *bf16_row(const uint16_t *restrict p, i64 n, float *restrict buf) {
    for (i64 i = 0; i < n; ++i) buf[i] = bf16_load(p[i]);
    return buf;
}
static inline const float *f16_row(const uint16_t *restrict p, i64 n, float *restrict buf) {
    i64 i = 0;
#ifdef __AVX512F__
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(buf + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i))));
#endif
#ifdef __F16C__
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i))));
#endif
    for (; i < n; ++i) buf[i] = f16_load(p[i]);
    return buf;
}

/*
 * Element loops shared by the passes: "run" forms take one channel's coefficients,
 * "row" forms one coefficient per element. 32/64-bit types are plain loops the
 * compiler vectorizes; 16-bit types convert 16 values at a time in registers
 * (AVX-512), with the scalar conversions for the tail and on other CPUs. Same
 * arithmetic, operation by operation, in every form.
 */
#ifdef __AVX512F__
#define V16(...) __VA_ARGS__
static inline __m512 v16_ld_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline void v16_st_f16(uint16_t *q, __m512 v) {
    _mm256_storeu_si256((__m256i *)q, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline __m512 v16_ld_bf16(const uint16_t *p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline void v16_st_bf16(uint16_t *q, __m512 v) { /* as bf16_store, 16 at a time */
    const __m512i u = _mm512_castps_si512(v);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256((__m256i *)q, _mm512_cvtepi32_epi16(r));
}
#else
#define V16(...)
#endif

#define DEFINE_LOOPS_PLAIN(S, T, SUFFIX)                                                        \
static inline void affine_run_##SUFFIX(const S *restrict p, S *restrict q, i64 n, T mu, T s,    \
                                       T o) {                                                   \
    for (i64 i = 0; i < n; ++i) q[i] = (p[i] - mu) * s + o;                                     \
}                                                                                               \
static inline void affine_row_##SUFFIX(const S *restrict p, S *restrict q, i64 n,               \
                                       const T *restrict mu, const T *restrict s,               \
                                       const T *restrict o) {                                   \
    for (i64 c = 0; c < n; ++c) q[c] = (p[c] - mu[c]) * s[c] + o[c];                            \
}                                                                                               \
/* four rows at once (p + j·st, q + j·st): the coefficients are loaded once per channel */      \
static inline void affine_row4_##SUFFIX(const S *restrict p0, const S *restrict p1,             \
                                        const S *restrict p2, const S *restrict p3,             \
                                        S *restrict q0, S *restrict q1, S *restrict q2,         \
                                        S *restrict q3, i64 n, const T *restrict mu,            \
                                        const T *restrict s, const T *restrict o) {             \
    for (i64 c = 0; c < n; ++c) {                                                               \
        const T m = mu[c], k = s[c], b = o[c];                                                  \
        q0[c] = (p0[c] - m) * k + b;                                                            \
        q1[c] = (p1[c] - m) * k + b;                                                            \
        q2[c] = (p2[c] - m) * k + b;                                                            \
        q3[c] = (p3[c] - m) * k + b;                                                            \
    }                                                                                           \
}                                                                                               \
static inline void affine_rows_##SUFFIX(const S *p, S *q, i64 n, i64 rows, i64 st,              \
                                        const T *restrict mu, const T *restrict s,              \
                                        const T *restrict o) {                                  \
    i64 r = 0;                                                                                  \
    for (; r + 4 <= rows; r += 4, p += 4 * st, q += 4 * st)                                     \
        affine_row4_##SUFFIX(p, p + st, p + 2 * st, p + 3 * st, q, q + st, q + 2 * st,          \
                             q + 3 * st, n, mu, s, o);                                          \
    for (; r < rows; ++r, p += st, q += st) affine_row_##SUFFIX(p, q, n, mu, s, o);             \
}                                                                                               \
static inline void dx_run_##SUFFIX(const S *restrict dy, const S *restrict x, S *restrict q,    \
                                   i64 n, T mu, T b1, T b2, T b3) {                             \
    for (i64 i = 0; i < n; ++i) q[i] = (dy[i] - b1 - (x[i] - mu) * b2) * b3;                    \
}                                                                                               \
static inline void dx_row_##SUFFIX(const S *restrict dy, const S *restrict x, S *restrict q,    \
                                   i64 n, const T *restrict mu, const T *restrict a1,           \
                                   const T *restrict a2, const T *restrict a3) {                \
    for (i64 c = 0; c < n; ++c) q[c] = (dy[c] - a1[c] - (x[c] - mu[c]) * a2[c]) * a3[c];        \
}                                                                                               \
static inline void reduce_run_##SUFFIX(const S *restrict dy, const S *restrict x, i64 n, T mu,  \
                                       T *sum, T *dot) {                                        \
    T s = 0, d = 0;                                                                             \
    for (i64 i = 0; i < n; ++i) {                                                               \
        s += dy[i];                                                                             \
        d += dy[i] * (x[i] - mu);                                                               \
    }                                                                                           \
    *sum = s;                                                                                   \
    *dot = d;                                                                                   \
}                                                                                               \
static inline void acc_shift_row_##SUFFIX(const S *restrict p, i64 n, const T *restrict sh,     \
                                          T *restrict acc) {                                    \
    for (i64 c = 0; c < n; ++c) acc[c] += p[c] - sh[c];                                         \
}                                                                                               \
static inline void acc_sq_row_##SUFFIX(const S *restrict p, i64 n, const T *restrict mu,        \
                                       T *restrict acc) {                                       \
    for (i64 c = 0; c < n; ++c) { T d = p[c] - mu[c]; acc[c] += d * d; }                        \
}                                                                                               \
static inline void reduce_row_##SUFFIX(const S *restrict dy, const S *restrict x, i64 n,        \
                                       const T *restrict mu, T *restrict bs, T *restrict bp) {  \
    for (i64 c = 0; c < n; ++c) {                                                               \
        bs[c] += dy[c];                                                                         \
        bp[c] += dy[c] * (x[c] - mu[c]);                                                        \
    }                                                                                           \
}                                                                                               \

#define DEFINE_LOOPS_16(SUFFIX, LD, ST)                                                         \
static inline void affine_run_##SUFFIX(const uint16_t *restrict p, uint16_t *restrict q, i64 n, \
                                       float mu, float s, float o) {                            \
    i64 i = 0;                                                                                  \
    V16(const __m512 vm = _mm512_set1_ps(mu), vs = _mm512_set1_ps(s), vo = _mm512_set1_ps(o);   \
        for (; i + 16 <= n; i += 16) {                                                          \
            const __m512 t = _mm512_mul_ps(_mm512_sub_ps(v16_ld_##SUFFIX(p + i), vm), vs);      \
            v16_st_##SUFFIX(q + i, _mm512_add_ps(t, vo));                                       \
        })                                                                                      \
    for (; i < n; ++i) q[i] = ST((LD(p[i]) - mu) * s + o);                                      \
}                                                                                               \
static inline void affine_row_##SUFFIX(const uint16_t *restrict p, uint16_t *restrict q, i64 n, \
                                       const float *restrict mu, const float *restrict s,       \
                                       const float *restrict o) {                               \
    i64 c = 0;                                                                                  \
    V16(for (; c + 16 <= n; c += 16) {                                                          \
            const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(p + c), _mm512_loadu_ps(mu + c));    \
            const __m512 t = _mm512_mul_ps(d, _mm512_loadu_ps(s + c));                          \
            v16_st_##SUFFIX(q + c, _mm512_add_ps(t, _mm512_loadu_ps(o + c)));                   \
        })                                                                                      \
    for (; c < n; ++c) q[c] = ST((LD(p[c]) - mu[c]) * s[c] + o[c]);                             \
}                                                                                               \
/* four rows at once (p + j·st, q + j·st): the coefficients are loaded once per 16 channels */  \
static inline void affine_rows_##SUFFIX(const uint16_t *p, uint16_t *q, i64 n, i64 rows,        \
                                        i64 st, const float *restrict mu,                       \
                                        const float *restrict s,                                \
                                        const float *restrict o) {                              \
    i64 r = 0;                                                                                  \
    V16(for (; r + 4 <= rows; r += 4, p += 4 * st, q += 4 * st) {                               \
            i64 c = 0;                                                                          \
            for (; c + 16 <= n; c += 16) {                                                      \
                const __m512 m = _mm512_loadu_ps(mu + c), k = _mm512_loadu_ps(s + c);           \
                const __m512 b = _mm512_loadu_ps(o + c);                                        \
                for (i64 j = 0; j < 4 * st; j += st) {                                          \
                    const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(p + j + c), m);              \
                    const __m512 t = _mm512_mul_ps(d, k);                                       \
                    v16_st_##SUFFIX(q + j + c, _mm512_add_ps(t, b));                            \
                }                                                                               \
            }                                                                                   \
            for (i64 j = 0; j < 4 * st; j += st)                                                \
                for (i64 t = c; t < n; ++t)                                                     \
                    q[j + t] = ST((LD(p[j + t]) - mu[t]) * s[t] + o[t]);                        \
        })                                                                                      \
    for (; r < rows; ++r, p += st, q += st) affine_row_##SUFFIX(p, q, n, mu, s, o);             \
}                                                                                               \
static inline void dx_run_##SUFFIX(const uint16_t *restrict dy, const uint16_t *restrict x,     \
                                   uint16_t *restrict q, i64 n, float mu, float b1, float b2,   \
                                   float b3) {                                                  \
    i64 i = 0;                                                                                  \
    V16(const __m512 vm = _mm512_set1_ps(mu), v1 = _mm512_set1_ps(b1);                          \
        const __m512 v2 = _mm512_set1_ps(b2), v3 = _mm512_set1_ps(b3);                          \
        for (; i + 16 <= n; i += 16) {                                                          \
            const __m512 xc = _mm512_mul_ps(_mm512_sub_ps(v16_ld_##SUFFIX(x + i), vm), v2);     \
            const __m512 t = _mm512_sub_ps(_mm512_sub_ps(v16_ld_##SUFFIX(dy + i), v1), xc);     \
            v16_st_##SUFFIX(q + i, _mm512_mul_ps(t, v3));                                       \
        })                                                                                      \
    for (; i < n; ++i) q[i] = ST((LD(dy[i]) - b1 - (LD(x[i]) - mu) * b2) * b3);                 \
}                                                                                               \
static inline void dx_row_##SUFFIX(const uint16_t *restrict dy, const uint16_t *restrict x,     \
                                   uint16_t *restrict q, i64 n, const float *restrict mu,       \
                                   const float *restrict a1, const float *restrict a2,          \
                                   const float *restrict a3) {                                  \
    i64 c = 0;                                                                                  \
    V16(for (; c + 16 <= n; c += 16) {                                                          \
            const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(x + c), _mm512_loadu_ps(mu + c));    \
            const __m512 xc = _mm512_mul_ps(d, _mm512_loadu_ps(a2 + c));                        \
            const __m512 g = _mm512_sub_ps(v16_ld_##SUFFIX(dy + c), _mm512_loadu_ps(a1 + c));   \
            v16_st_##SUFFIX(q + c, _mm512_mul_ps(_mm512_sub_ps(g, xc), _mm512_loadu_ps(a3 + c))); \
        })                                                                                      \
    for (; c < n; ++c) q[c] = ST((LD(dy[c]) - a1[c] - (LD(x[c]) - mu[c]) * a2[c]) * a3[c]);     \
}                                                                                               \
static inline void reduce_run_##SUFFIX(const uint16_t *restrict dy, const uint16_t *restrict x, \
                                       i64 n, float mu, float *sum, float *dot) {               \
    i64 i = 0;                                                                                  \
    float s = 0, d = 0;                                                                         \
    V16(__m512 vs = _mm512_setzero_ps(), vd = _mm512_setzero_ps();                              \
        const __m512 vm = _mm512_set1_ps(mu);                                                   \
        for (; i + 16 <= n; i += 16) {                                                          \
            const __m512 g = v16_ld_##SUFFIX(dy + i);                                           \
            vs = _mm512_add_ps(vs, g);                                                          \
            vd = _mm512_add_ps(vd, _mm512_mul_ps(g, _mm512_sub_ps(v16_ld_##SUFFIX(x + i), vm))); \
        }                                                                                       \
        s = _mm512_reduce_add_ps(vs);                                                           \
        d = _mm512_reduce_add_ps(vd);)                                                          \
    for (; i < n; ++i) {                                                                        \
        const float g = LD(dy[i]);                                                              \
        s += g;                                                                                 \
        d += g * (LD(x[i]) - mu);                                                               \
    }                                                                                           \
    *sum = s;                                                                                   \
    *dot = d;                                                                                   \
}                                                                                               \
static inline void acc_shift_row_##SUFFIX(const uint16_t *restrict p, i64 n,                    \
                                          const float *restrict sh, float *restrict acc) {      \
    i64 c = 0;                                                                                  \
    V16(for (; c + 16 <= n; c += 16) {                                                          \
            const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(p + c), _mm512_loadu_ps(sh + c));    \
            _mm512_storeu_ps(acc + c, _mm512_add_ps(_mm512_loadu_ps(acc + c), d));              \
        })                                                                                      \
    for (; c < n; ++c) acc[c] += LD(p[c]) - sh[c];                                              \
}                                                                                               \
static inline void acc_sq_row_##SUFFIX(const uint16_t *restrict p, i64 n,                       \
                                       const float *restrict mu, float *restrict acc) {         \
    i64 c = 0;                                                                                  \
    V16(for (; c + 16 <= n; c += 16) {                                                          \
            const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(p + c), _mm512_loadu_ps(mu + c));    \
            _mm512_storeu_ps(acc + c, _mm512_add_ps(_mm512_loadu_ps(acc + c), _mm512_mul_ps(d, d))); \
        })                                                                                      \
    for (; c < n; ++c) { const float d = LD(p[c]) - mu[c]; acc[c] += d * d; }                   \
}                                                                                               \
static inline void reduce_row_##SUFFIX(const uint16_t *restrict dy, const uint16_t *restrict x, \
                                       i64 n, const float *restrict mu, float *restrict bs,     \
                                       float *restrict bp) {                                    \
    i64 c = 0;                                                                                  \
    V16(for (; c + 16 <= n; c += 16) {                                                          \
            const __m512 g = v16_ld_##SUFFIX(dy + c);                                           \
            const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(x + c), _mm512_loadu_ps(mu + c));    \
            _mm512_storeu_ps(bs + c, _mm512_add_ps(_mm512_loadu_ps(bs + c), g));                \
            _mm512_storeu_ps(bp + c, _mm512_add_ps(_mm512_loadu_ps(bp + c), _mm512_mul_ps(g, d))); \
        })                                                                                      \
    for (; c < n; ++c) {                                                                        \
        const float g = LD(dy[c]);                                                              \
        bs[c] += g;                                                                             \
        bp[c] += g * (LD(x[c]) - mu[c]);                                                        \
    }                                                                                           \
}                                                                                               \

/* Four rows at a time (row j at p + j·st): per-channel coefficients are loaded and
   accumulators updated once per four rows; each row's values enter in row order, as in
   the one-row loops. *_rows(..., rows, st, ...) walk a run of rows this way. */
#define DEFINE_ROWS_PLAIN(S, T, SUFFIX)                                                         \
static inline void acc_shift_row4_##SUFFIX(const S *restrict p0, const S *restrict p1,          \
                                           const S *restrict p2, const S *restrict p3, i64 n,   \
                                           const T *restrict sh, T *restrict acc) {             \
    for (i64 c = 0; c < n; ++c) {                                                               \
        const T v = sh[c];                                                                      \
        T t = acc[c];                                                                           \
        t += p0[c] - v;                                                                         \
        t += p1[c] - v;                                                                         \
        t += p2[c] - v;                                                                         \
        t += p3[c] - v;                                                                         \
        acc[c] = t;                                                                             \
    }                                                                                           \
}                                                                                               \
static inline void acc_sq_row4_##SUFFIX(const S *restrict p0, const S *restrict p1,             \
                                        const S *restrict p2, const S *restrict p3, i64 n,      \
                                        const T *restrict mu, T *restrict acc) {                \
    for (i64 c = 0; c < n; ++c) {                                                               \
        const T m = mu[c], d0 = p0[c] - m, d1 = p1[c] - m, d2 = p2[c] - m, d3 = p3[c] - m;      \
        T t = acc[c];                                                                           \
        t += d0 * d0;                                                                           \
        t += d1 * d1;                                                                           \
        t += d2 * d2;                                                                           \
        t += d3 * d3;                                                                           \
        acc[c] = t;                                                                             \
    }                                                                                           \
}                                                                                               \
static inline void reduce_row4_##SUFFIX(const S *restrict g0, const S *restrict g1,             \
                                        const S *restrict g2, const S *restrict g3,             \
                                        const S *restrict x0, const S *restrict x1,             \
                                        const S *restrict x2, const S *restrict x3, i64 n,      \
                                        const T *restrict mu, T *restrict bs, T *restrict bp) { \
    for (i64 c = 0; c < n; ++c) {                                                               \
        const T m = mu[c];                                                                      \
        T a = bs[c], b = bp[c];                                                                 \
        a += g0[c];                                                                             \
        b += g0[c] * (x0[c] - m);                                                               \
        a += g1[c];                                                                             \
        b += g1[c] * (x1[c] - m);                                                               \
        a += g2[c];                                                                             \
        b += g2[c] * (x2[c] - m);                                                               \
        a += g3[c];                                                                             \
        b += g3[c] * (x3[c] - m);                                                               \
        bs[c] = a;                                                                              \
        bp[c] = b;                                                                              \
    }                                                                                           \
}                                                                                               \
static inline void dx_row4_##SUFFIX(const S *restrict g0, const S *restrict g1,                 \
                                    const S *restrict g2, const S *restrict g3,                 \
                                    const S *restrict x0, const S *restrict x1,                 \
                                    const S *restrict x2, const S *restrict x3, S *restrict q0, \
                                    S *restrict q1, S *restrict q2, S *restrict q3, i64 n,      \
                                    const T *restrict mu, const T *restrict a1,                 \
                                    const T *restrict a2, const T *restrict a3) {               \
    for (i64 c = 0; c < n; ++c) {                                                               \
        const T m = mu[c], b1 = a1[c], b2 = a2[c], b3 = a3[c];                                  \
        q0[c] = (g0[c] - b1 - (x0[c] - m) * b2) * b3;                                           \
        q1[c] = (g1[c] - b1 - (x1[c] - m) * b2) * b3;                                           \
        q2[c] = (g2[c] - b1 - (x2[c] - m) * b2) * b3;                                           \
        q3[c] = (g3[c] - b1 - (x3[c] - m) * b2) * b3;                                           \
    }                                                                                           \
}                                                                                               \
static inline void acc_shift_rows_##SUFFIX(const S *p, i64 n, i64 rows, i64 st,                 \
                                           const T *restrict sh, T *restrict acc) {             \
    i64 r = 0;                                                                                  \
    for (; r + 4 <= rows; r += 4, p += 4 * st)                                                  \
        acc_shift_row4_##SUFFIX(p, p + st, p + 2 * st, p + 3 * st, n, sh, acc);                 \
    for (; r < rows; ++r, p += st) acc_shift_row_##SUFFIX(p, n, sh, acc);                       \
}                                                                                               \
static inline void acc_sq_rows_##SUFFIX(const S *p, i64 n, i64 rows, i64 st,                    \
                                        const T *restrict mu, T *restrict acc) {                \
    i64 r = 0;                                                                                  \
    for (; r + 4 <= rows; r += 4, p += 4 * st)                                                  \
        acc_sq_row4_##SUFFIX(p, p + st, p + 2 * st, p + 3 * st, n, mu, acc);                    \
    for (; r < rows; ++r, p += st) acc_sq_row_##SUFFIX(p, n, mu, acc);                          \
}                                                                                               \
static inline void reduce_rows_##SUFFIX(const S *dy, const S *x, i64 n, i64 rows, i64 st,       \
                                        const T *restrict mu, T *restrict bs, T *restrict bp) { \
    i64 r = 0;                                                                                  \
    for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st)                                    \
        reduce_row4_##SUFFIX(dy, dy + st, dy + 2 * st, dy + 3 * st, x, x + st, x + 2 * st,      \
                             x + 3 * st, n, mu, bs, bp);                                        \
    for (; r < rows; ++r, dy += st, x += st) reduce_row_##SUFFIX(dy, x, n, mu, bs, bp);         \
}                                                                                               \
static inline void dx_rows_##SUFFIX(const S *dy, const S *x, S *q, i64 n, i64 rows, i64 st,     \
                                    const T *restrict mu, const T *restrict a1,                 \
                                    const T *restrict a2, const T *restrict a3) {               \
    i64 r = 0;                                                                                  \
    for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st, q += 4 * st)                       \
        dx_row4_##SUFFIX(dy, dy + st, dy + 2 * st, dy + 3 * st, x, x + st, x + 2 * st,          \
                         x + 3 * st, q, q + st, q + 2 * st, q + 3 * st, n, mu, a1, a2, a3);     \
    for (; r < rows; ++r, dy += st, x += st, q += st)                                           \
        dx_row_##SUFFIX(dy, x, q, n, mu, a1, a2, a3);                                           \
}                                                                                               \

#define DEFINE_ROWS_16(SUFFIX, LD, ST)                                                          \
static inline void acc_shift_rows_##SUFFIX(const uint16_t *p, i64 n, i64 rows, i64 st,          \
                                           const float *restrict sh, float *restrict acc) {     \
    i64 r = 0;                                                                                  \
    V16(for (; r + 4 <= rows; r += 4, p += 4 * st) {                                            \
            i64 c = 0;                                                                          \
            for (; c + 16 <= n; c += 16) {                                                      \
                const __m512 v = _mm512_loadu_ps(sh + c);                                       \
                __m512 t = _mm512_loadu_ps(acc + c);                                            \
                for (i64 j = 0; j < 4 * st; j += st)                                            \
                    t = _mm512_add_ps(t, _mm512_sub_ps(v16_ld_##SUFFIX(p + j + c), v));         \
                _mm512_storeu_ps(acc + c, t);                                                   \
            }                                                                                   \
            for (i64 j = 0; j < 4 * st; j += st)                                                \
                for (i64 e = c; e < n; ++e) acc[e] += LD(p[j + e]) - sh[e];                     \
        })                                                                                      \
    for (; r < rows; ++r, p += st) acc_shift_row_##SUFFIX(p, n, sh, acc);                       \
}                                                                                               \
static inline void acc_sq_rows_##SUFFIX(const uint16_t *p, i64 n, i64 rows, i64 st,             \
                                        const float *restrict mu, float *restrict acc) {        \
    i64 r = 0;                                                                                  \
    V16(for (; r + 4 <= rows; r += 4, p += 4 * st) {                                            \
            i64 c = 0;                                                                          \
            for (; c + 16 <= n; c += 16) {                                                      \
                const __m512 m = _mm512_loadu_ps(mu + c);                                       \
                __m512 t = _mm512_loadu_ps(acc + c);                                            \
                for (i64 j = 0; j < 4 * st; j += st) {                                          \
                    const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(p + j + c), m);              \
                    t = _mm512_add_ps(t, _mm512_mul_ps(d, d));                                  \
                }                                                                               \
                _mm512_storeu_ps(acc + c, t);                                                   \
            }                                                                                   \
            for (i64 j = 0; j < 4 * st; j += st)                                                \
                for (i64 e = c; e < n; ++e) {                                                   \
                    const float d = LD(p[j + e]) - mu[e];                                       \
                    acc[e] += d * d;                                                            \
                }                                                                               \
        })                                                                                      \
    for (; r < rows; ++r, p += st) acc_sq_row_##SUFFIX(p, n, mu, acc);                          \
}                                                                                               \
static inline void reduce_rows_##SUFFIX(const uint16_t *dy, const uint16_t *x, i64 n, i64 rows, \
                                        i64 st, const float *restrict mu, float *restrict bs,   \
                                        float *restrict bp) {                                   \
    i64 r = 0;                                                                                  \
    V16(for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st) {                              \
            i64 c = 0;                                                                          \
            for (; c + 16 <= n; c += 16) {                                                      \
                const __m512 m = _mm512_loadu_ps(mu + c);                                       \
                __m512 a = _mm512_loadu_ps(bs + c), b = _mm512_loadu_ps(bp + c);                \
                for (i64 j = 0; j < 4 * st; j += st) {                                          \
                    const __m512 g = v16_ld_##SUFFIX(dy + j + c);                               \
                    const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(x + j + c), m);              \
                    a = _mm512_add_ps(a, g);                                                    \
                    b = _mm512_add_ps(b, _mm512_mul_ps(g, d));                                  \
                }                                                                               \
                _mm512_storeu_ps(bs + c, a);                                                    \
                _mm512_storeu_ps(bp + c, b);                                                    \
            }                                                                                   \
            for (i64 j = 0; j < 4 * st; j += st)                                                \
                for (i64 e = c; e < n; ++e) {                                                   \
                    const float g = LD(dy[j + e]);                                              \
                    bs[e] += g;                                                                 \
                    bp[e] += g * (LD(x[j + e]) - mu[e]);                                        \
                }                                                                               \
        })                                                                                      \
    for (; r < rows; ++r, dy += st, x += st) reduce_row_##SUFFIX(dy, x, n, mu, bs, bp);         \
}                                                                                               \
static inline void dx_rows_##SUFFIX(const uint16_t *dy, const uint16_t *x, uint16_t *q, i64 n,  \
                                    i64 rows, i64 st, const float *restrict mu,                 \
                                    const float *restrict a1, const float *restrict a2,         \
                                    const float *restrict a3) {                                 \
    i64 r = 0;                                                                                  \
    V16(for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st, q += 4 * st) {                 \
            i64 c = 0;                                                                          \
            for (; c + 16 <= n; c += 16) {                                                      \
                const __m512 m = _mm512_loadu_ps(mu + c), b1 = _mm512_loadu_ps(a1 + c);         \
                const __m512 b2 = _mm512_loadu_ps(a2 + c), b3 = _mm512_loadu_ps(a3 + c);        \
                for (i64 j = 0; j < 4 * st; j += st) {                                          \
                    const __m512 d = _mm512_sub_ps(v16_ld_##SUFFIX(x + j + c), m);              \
                    const __m512 xc = _mm512_mul_ps(d, b2);                                     \
                    const __m512 g = _mm512_sub_ps(v16_ld_##SUFFIX(dy + j + c), b1);            \
                    v16_st_##SUFFIX(q + j + c, _mm512_mul_ps(_mm512_sub_ps(g, xc), b3));        \
                }                                                                               \
            }                                                                                   \
            for (i64 j = 0; j < 4 * st; j += st)                                                \
                for (i64 e = c; e < n; ++e)                                                     \
                    q[j + e] = ST((LD(dy[j + e]) - a1[e] - (LD(x[j + e]) - mu[e]) * a2[e]) *    \
                                  a3[e]);                                                       \
        })                                                                                      \
    for (; r < rows; ++r, dy += st, x += st, q += st)                                           \
        dx_row_##SUFFIX(dy, x, q, n, mu, a1, a2, a3);                                           \
}                                                                                               \

DEFINE_LOOPS_PLAIN(float, float, f32)
DEFINE_LOOPS_PLAIN(double, double, f64)
DEFINE_LOOPS_16(bf16, bf16_load, bf16_store)
DEFINE_LOOPS_16(f16, f16_load, f16_store)
DEFINE_ROWS_PLAIN(float, float, f32)
DEFINE_ROWS_PLAIN(double, double, f64)
DEFINE_ROWS_16(bf16, bf16_load, bf16_store)
DEFINE_ROWS_16(f16, f16_load, f16_store)

/* Per-channel coefficients of the one-sweep passes (stats_affine, reduce_dx), for channel c
   of an item with parameter p; M/V (G/B) receive the parameter's partial sums. Items made of
   whole parameter groups sum them per item first (fm/fv, fg/fb), then once into the
   thread's partials. */
#define SWEEP_COEFFICIENTS(T, SQRT, c, p, M, V)                                                 \
    const double vr = dv[c] * inv_cnt;                                                          \
    const T iv = (T)1 / SQRT((T)vr + (T)eps); /* in T like TensorFlow */                        \
    ti[c] = iv;                                                                                 \
    M += (double)mu[c];                                                                         \
    V += vr;                                                                                    \
    cs[c] = (T)((double)iv * gs[p]);                                                            \
    co[c] = (T)go[p];
#define DX_COEFFICIENTS(T, c, p, G, B)                                                          \
    const double iv = (double)inv[k0 + c];                                                      \
    a1[c] = (T)(ss[c] * inv_n);                                                                 \
    a2[c] = (T)(iv * iv * sp[c] * inv_n);                                                       \
    a3[c] = (T)(iv * gs[p]);                                                                    \
    G += slope[p] * iv * sp[c] + intercept[p] * ss[c];                                          \
    B += ss[c];

/*
 * DEFINE_PRIMITIVES: S storage type, T compute type, LD/ST element conversions (generic
 * layouts), ROW(p, n, buf) -> const T* of n values, SQRT the square root in T.
 */
#define DEFINE_PRIMITIVES(S, T, SUFFIX, LD, ST, ROW, SQRT)                          \
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
                            T s = 0;                                                            \
                            for (i64 i = 0; i < v.I; ++i) s += pv[i] - sh[c];                   \
                            bs[c] += s;                                                         \
                        }                                                                       \
                    ROWS_END                                                                    \
                    const T inv_n = (T)1 / (T)((r1 - r0) * v.I);                                \
                    for (i64 c = 0; c < cn; ++c) bs[c] = sh[c] + bs[c] * inv_n;                 \
                    ROWS_BEGIN(r0, r1)                                                          \
                        for (i64 c = 0; c < cn; ++c) {                                          \
                            const T *restrict pv = ROW(x + ROW_OFFSET + (c0 + c) * v.sc, v.I, xb); \
                            const T mu = bs[c];                                                 \
                            T q = 0;                                                            \
                            for (i64 i = 0; i < v.I; ++i) { T d = pv[i] - mu; q += d * d; }     \
                            bq[c] += q;                                                         \
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
                        for (i64 i = 0; i < len; ++i) s += pv[i] - shift;                       \
                    }                                                                           \
                    const double count = (double)(runs * len);                                  \
                    const T mu = shift + s / (T)count;                                          \
                    T ss = 0;                                                                   \
                    for (i64 j = 0; j < runs; ++j) {                                            \
                        const T *restrict pv = pr[j];                                           \
                        for (i64 i = 0; i < len; ++i) { T d = pv[i] - mu; ss += d * d; }        \
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
            if (P <= BUF && cn % P == 0 && k0 % P == 0) { /* whole parameter groups: */         \
                for (i64 q = 0; q < P; ++q) { fm[q] = 0; fv[q] = 0; } /* summed per item */     \
                for (i64 j = 0; j < cn; j += P)                                                 \
                    for (i64 q = 0; q < P; ++q) { SWEEP_COEFFICIENTS(T, SQRT, j + q, q, fm[q], fv[q]) }  \
                for (i64 q = 0; q < P; ++q) { tm[q] += fm[q]; tv[q] += fv[q]; }                 \
            } else {                                                                            \
                PARAM_RUNS_BEGIN SWEEP_COEFFICIENTS(T, SQRT, c, p, tm[p], tv[p]) PARAM_RUNS_END          \
            }                                                                                   \
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
        ROW_ITEMS_W(S, v.C) /* whole rows: nothing kept per channel chunk */                    \
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
            if (P <= BUF && cn % P == 0 && k0 % P == 0) { /* whole parameter groups: */         \
                for (i64 q = 0; q < P; ++q) { fg[q] = 0; fb[q] = 0; } /* summed per item */     \
                for (i64 j = 0; j < cn; j += P)                                                 \
                    for (i64 q = 0; q < P; ++q) { DX_COEFFICIENTS(T, j + q, q, fg[q], fb[q]) }     \
                for (i64 q = 0; q < P; ++q) { tg[q] += fg[q]; tb[q] += fb[q]; }                 \
            } else {                                                                            \
                PARAM_RUNS_BEGIN DX_COEFFICIENTS(T, c, p, tg[p], tb[p]) PARAM_RUNS_END             \
            }                                                                                   \
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
        ROW_ITEMS_W(S, v.C) /* whole rows: nothing kept per channel chunk */                    \
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
    if (renorm_mean == NULL) { /* slope and intercept known up front: maybe one sweep */        \
        double *gs = scratch(3, (size_t)(2 * P) * sizeof(double)), *go = gs + P;                \
        for (i64 p = 0; p < P; ++p) {                                                           \
            const double g = gamma ? (double)gamma[p] : 1.0;                                    \
            slope[p] = adj_scale != NULL ? (double)adj_scale[p] : 1.0;                          \
            intercept[p] = adj_bias != NULL ? (double)adj_bias[p] : 0.0;                        \
            gs[p] = slope[p] * g;                                                               \
            go[p] = intercept[p] * g + (beta ? (double)beta[p] : 0.0);                          \
        }                                                                                       \
        if (stats_affine_##SUFFIX(x, y, v, P, eps, gs, go, cmean, cinv, pm, pv, nt)) {          \
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
            const double mu = pm[p], vr = pv[p];                                                \
            double denom = (double)renorm_stddev[p];                                            \
            if (!(denom >= sqrt(eps))) denom = isnan(denom) ? denom : sqrt(eps);                \
            double r = sqrt(vr + eps) / denom;                                                  \
            double d = (mu - (double)renorm_mean[p]) / denom;                                   \
            if (r < rmin) r = rmin;                                                             \
            if (r > rmax) r = rmax;                                                             \
            if (d < -dmax) d = -dmax;                                                           \
            if (d > dmax) d = dmax;                                                             \
            intercept[p] = d * slope[p] + intercept[p];                                         \
            slope[p] = r * slope[p];                                                            \
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
    if (reduce_dx_##SUFFIX(dy, x, dx, v, P, mean, inv, gs, slope, intercept, sdy, sdx, nt)) {   \
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
    if (dx != NULL) dx_##SUFFIX(dy, x, dx, v, cm, zero, zero, cs, nt);                          \
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

DEFINE_PRIMITIVES(float, float, f32, ID, ID, ROW_IN_PLACE, sqrtf)
DEFINE_PASSES(float, float, f32)
DEFINE_EXPORTS(float, float, f32)
DEFINE_PRIMITIVES(double, double, f64, ID, ID, ROW_IN_PLACE, sqrt)
DEFINE_PASSES(double, double, f64)
DEFINE_EXPORTS(double, double, f64)
DEFINE_PRIMITIVES(uint16_t, float, bf16, bf16_load, bf16_store, bf16_row, sqrtf)
DEFINE_PASSES(uint16_t, float, bf16)
DEFINE_EXPORTS(uint16_t, float, bf16)
DEFINE_PRIMITIVES(uint16_t, float, f16, f16_load, f16_store, f16_row, sqrtf)
DEFINE_PASSES(uint16_t, float, f16)
DEFINE_EXPORTS(uint16_t, float, f16)

/* Version of this interface: the loader refuses a library with another one. */
int bn_abi_version(void) { return 9; }
