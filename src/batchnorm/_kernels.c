/*
 * CPU kernels for batchnorm's training and inference paths.
 *
 * Storage types: float32, float64, bfloat16 and (where the compiler has
 * _Float16) float16; 16-bit data is computed in float32. Every tensor is seen
 * through one canonical 5-D view [A, G, M, C, I] with element strides; the
 * statistics of channel k = g*C + c reduce over (a, m, i). Parameters have P
 * entries and channel k uses parameter p = k % P (ghost batches are the outer
 * part of k). Two layouts reach vectorized loops:
 *   - "plane" mode: stride(I) == 1, runs of I values per (a, g, m, c) (NCHW);
 *   - "row" mode:   I == 1 and stride(C) == 1, rows of C channels (NHWC, 2-D);
 * anything else takes a generic strided loop (correct, slower).
 *
 * Statistics are stable without a second pass over memory: each cache-sized
 * block is reduced with a shifted two-pass mean/M2 while it sits in cache, and
 * blocks are merged with Chan's parallel formula in double precision.
 * The exported functions do a whole training or inference pass, including the
 * per-channel algebra (renorm r and d, adjustment, gamma, beta) in double.
 * All kernels use the OpenMP runtime PyTorch itself loaded. They return 0.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

#define ROW_BLOCK_BYTES (256 * 1024) /* a block of rows is read twice while it sits in L2 */
#define RUN_CHUNK 4096               /* values reduced in the compute type before a double merge */

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

#define ID(v) (v)

/* Row mode walks rows (a, m) of one channel group g in blocks of rows; inside a block the
 * rows are two nested loops whose addresses are affine in the loop counters, which is
 * what lets the compiler vectorize over channels without per-row checks. */
#define ROW_BLOCKS(S)                                                                          \
    const i64 rows_per_g = v.A * v.M;                                                          \
    i64 block = ROW_BLOCK_BYTES / (i64)sizeof(S) / (v.C > 0 ? v.C : 1);                        \
    if (block < 1) block = 1;                                                                  \
    const i64 nblocks_g = (rows_per_g + block - 1) / block;                                    \
    const i64 nblocks = nblocks_g * v.G;
#define BLOCK_RANGE                                                                            \
    const i64 g = b / nblocks_g;                                                               \
    const i64 r0 = (b % nblocks_g) * block;                                                    \
    const i64 r1 = r0 + block < rows_per_g ? r0 + block : rows_per_g;
#define ROWS_BEGIN(first_row, end_row)                                                         \
    for (i64 r_ = (first_row), ra_ = (first_row) / v.M, m0_ = (first_row) % v.M;               \
         r_ < (end_row); ++ra_, m0_ = 0) {                                                     \
        const i64 m1_ = m0_ + ((end_row) - r_) < v.M ? m0_ + ((end_row) - r_) : v.M;          \
        const i64 base_ = ra_ * v.sa + g * v.sg;                                               \
        r_ += m1_ - m0_;                                                                       \
        for (i64 rm_ = m0_; rm_ < m1_; ++rm_) {
#define ROW_OFFSET (base_ + rm_ * v.sm)
#define ROWS_END                                                                               \
        }                                                                                      \
    }
/* plane/generic modes: run r = flattened (a, g, m, c) */
#define RUN_INDEX                                                                              \
    const i64 c = r % v.C;                                                                     \
    i64 rest_ = r / v.C;                                                                       \
    const i64 m = rest_ % v.M;                                                                 \
    rest_ /= v.M;                                                                              \
    const i64 g = rest_ % v.G, a = rest_ / v.G;                                                \
    const i64 off = a * v.sa + g * v.sg + m * v.sm + c * v.sc;                                 \
    const i64 k = g * v.C + c;

/*
 * DEFINE_PRIMITIVES(S, T, SUFFIX, LD, ST): S storage type, T compute type.
 */
#define DEFINE_PRIMITIVES(S, T, SUFFIX, LD, ST)                                                 \
                                                                                                \
/* mean and biased variance per channel (K = G*C outputs, double) */                            \
static void stats_##SUFFIX(const S *x, view_t v, double *mean, double *var, int nt) {          \
    const i64 K = v.G * v.C;                                                                    \
    double *acc = calloc((size_t)(3 * nt * K), sizeof(double)); /* n, m, q per thread */        \
    if (v.si == 1 && v.I > 1) {                                                                 \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;                 \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 r = 0; r < runs; ++r) {                                                    \
                RUN_INDEX                                                                       \
                for (i64 i0 = 0; i0 < v.I; i0 += RUN_CHUNK) {                                   \
                    const i64 len = v.I - i0 < RUN_CHUNK ? v.I - i0 : RUN_CHUNK;                \
                    const S *restrict p = x + off + i0;                                         \
                    const T shift = LD(p[0]);                                                   \
                    T s = 0;                                                                    \
                    for (i64 i = 0; i < len; ++i) s += LD(p[i]) - shift;                        \
                    const T mu = shift + s / (T)len;                                            \
                    T ss = 0;                                                                   \
                    for (i64 i = 0; i < len; ++i) { T d = LD(p[i]) - mu; ss += d * d; }         \
                    const double bm = (double)mu, bq = (double)ss;                              \
                    merge_block(tn + k, tm + k, tq + k, (double)len, &bm, &bq, 1);              \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) {                                                         \
        ROW_BLOCKS(S)                                                                           \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;                 \
            T *restrict bs = malloc((size_t)v.C * sizeof(T));                                   \
            T *restrict bq = malloc((size_t)v.C * sizeof(T));                                   \
            double *restrict dm = malloc((size_t)v.C * sizeof(double));                         \
            double *restrict dq = malloc((size_t)v.C * sizeof(double));                         \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 b = 0; b < nblocks; ++b) {                                                 \
                BLOCK_RANGE                                                                     \
                /* shifted by the block's first row: a large mean does not swamp the sum */     \
                const S *restrict first = x + (r0 / v.M) * v.sa + g * v.sg + (r0 % v.M) * v.sm; \
                for (i64 c = 0; c < v.C; ++c) { bs[c] = 0; bq[c] = 0; }                         \
                ROWS_BEGIN(r0, r1)                                                              \
                    const S *restrict p = x + ROW_OFFSET;                                       \
                    for (i64 c = 0; c < v.C; ++c) bs[c] += LD(p[c]) - LD(first[c]);             \
                ROWS_END                                                                        \
                const T inv_n = (T)1 / (T)(r1 - r0);                                            \
                for (i64 c = 0; c < v.C; ++c) bs[c] = LD(first[c]) + bs[c] * inv_n;             \
                ROWS_BEGIN(r0, r1)                                                              \
                    const S *restrict p = x + ROW_OFFSET;                                       \
                    for (i64 c = 0; c < v.C; ++c) { T d = LD(p[c]) - bs[c]; bq[c] += d * d; }   \
                ROWS_END                                                                        \
                for (i64 c = 0; c < v.C; ++c) { dm[c] = (double)bs[c]; dq[c] = (double)bq[c]; } \
                merge_block(tn + g * v.C, tm + g * v.C, tq + g * v.C, (double)(r1 - r0), dm, dq, \
                            v.C);                                                               \
            }                                                                                   \
            free(bs); free(bq); free(dm); free(dq);                                             \
        }                                                                                       \
    } else {                                                                                    \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;                 \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 r = 0; r < runs; ++r) {                                                    \
                RUN_INDEX                                                                       \
                double s = 0;                                                                   \
                for (i64 i = 0; i < v.I; ++i) s += (double)LD(x[off + i * v.si]);               \
                const double mu = s / (double)v.I;                                              \
                double q = 0;                                                                   \
                for (i64 i = 0; i < v.I; ++i) {                                                 \
                    const double d = (double)LD(x[off + i * v.si]) - mu;                        \
                    q += d * d;                                                                 \
                }                                                                               \
                merge_block(tn + k, tm + k, tq + k, (double)v.I, &mu, &q, 1);                   \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    /* merge the threads; thread 0's accumulators hold the result */                            \
    for (int t = 1; t < nt; ++t) {                                                              \
        const double *un = acc + 3 * t * K, *um = un + K, *uq = um + K;                         \
        for (i64 k = 0; k < K; ++k) {                                                           \
            if (un[k] > 0) merge_block(acc + k, acc + K + k, acc + 2 * K + k, un[k], um + k,     \
                                       uq + k, 1);                                              \
        }                                                                                       \
    }                                                                                           \
    for (i64 k = 0; k < K; ++k) {                                                               \
        const double n = acc[k];                                                                \
        mean[k] = n > 0 ? acc[K + k] : 0.0;                                                     \
        var[k] = n > 0 ? acc[2 * K + k] / n : 0.0;                                              \
    }                                                                                           \
    free(acc);                                                                                  \
}                                                                                               \
                                                                                                \
/* out = (x - mean[k]) * scale[k] + shift[k]; out has x's strides */                            \
static void affine_##SUFFIX(const S *x, S *out, view_t v, const T *mean, const T *scale,       \
                            const T *shift, int nt) {                                           \
    if (v.si == 1 && v.I > 1) {                                                                 \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 r = 0; r < runs; ++r) {                                                        \
            RUN_INDEX                                                                           \
            const S *restrict p = x + off;                                                      \
            S *restrict q = out + off;                                                          \
            const T mu = mean[k], s = scale[k], o = shift[k];                                   \
            for (i64 i = 0; i < v.I; ++i) q[i] = ST((LD(p[i]) - mu) * s + o);                   \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) {                                                         \
        ROW_BLOCKS(S)                                                                           \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 b = 0; b < nblocks; ++b) {                                                     \
            BLOCK_RANGE                                                                         \
            const T *restrict mu = mean + g * v.C;                                              \
            const T *restrict s = scale + g * v.C;                                              \
            const T *restrict o = shift + g * v.C;                                              \
            ROWS_BEGIN(r0, r1)                                                                  \
                const S *restrict p = x + ROW_OFFSET;                                           \
                S *restrict q = out + ROW_OFFSET;                                               \
                for (i64 c = 0; c < v.C; ++c) q[c] = ST((LD(p[c]) - mu[c]) * s[c] + o[c]);      \
            ROWS_END                                                                            \
        }                                                                                       \
    } else {                                                                                    \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 r = 0; r < runs; ++r) {                                                        \
            RUN_INDEX                                                                           \
            for (i64 i = 0; i < v.I; ++i) {                                                     \
                const i64 e = off + i * v.si;                                                   \
                out[e] = ST((LD(x[e]) - mean[k]) * scale[k] + shift[k]);                        \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* sum_dy[k] = Σ dy, sum_dyxc[k] = Σ dy·(x − mean[k]); dy has x's strides */                    \
static void reduce_##SUFFIX(const S *dy, const S *x, view_t v, const T *mean, double *sum_dy,  \
                            double *sum_dyxc, int nt) {                                         \
    const i64 K = v.G * v.C;                                                                    \
    double *acc = calloc((size_t)(2 * nt * K), sizeof(double));                                 \
    if (v.I == 1 && v.sc == 1) {                                                                \
        ROW_BLOCKS(S)                                                                           \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *ts = acc + 2 * thread_id() * K, *tp = ts + K;                               \
            T *restrict bs = malloc((size_t)v.C * sizeof(T));                                   \
            T *restrict bp = malloc((size_t)v.C * sizeof(T));                                   \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 b = 0; b < nblocks; ++b) {                                                 \
                BLOCK_RANGE                                                                     \
                const T *restrict mu = mean + g * v.C;                                          \
                for (i64 c = 0; c < v.C; ++c) { bs[c] = 0; bp[c] = 0; }                         \
                ROWS_BEGIN(r0, r1)                                                              \
                    const S *restrict d = dy + ROW_OFFSET;                                      \
                    const S *restrict p = x + ROW_OFFSET;                                       \
                    for (i64 c = 0; c < v.C; ++c) {                                             \
                        const T dd = LD(d[c]);                                                  \
                        bs[c] += dd;                                                            \
                        bp[c] += dd * (LD(p[c]) - mu[c]);                                       \
                    }                                                                           \
                ROWS_END                                                                        \
                for (i64 c = 0; c < v.C; ++c) {                                                 \
                    ts[g * v.C + c] += (double)bs[c];                                           \
                    tp[g * v.C + c] += (double)bp[c];                                           \
                }                                                                               \
            }                                                                                   \
            free(bs); free(bp);                                                                 \
        }                                                                                       \
    } else {                                                                                    \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        const int contiguous = v.si == 1;                                                       \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            double *ts = acc + 2 * thread_id() * K, *tp = ts + K;                               \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 r = 0; r < runs; ++r) {                                                    \
                RUN_INDEX                                                                       \
                const T mu = mean[k];                                                           \
                if (contiguous) {                                                               \
                    for (i64 i0 = 0; i0 < v.I; i0 += RUN_CHUNK) {                               \
                        const i64 len = v.I - i0 < RUN_CHUNK ? v.I - i0 : RUN_CHUNK;            \
                        const S *restrict d = dy + off + i0;                                    \
                        const S *restrict p = x + off + i0;                                     \
                        T s = 0, q = 0;                                                         \
                        for (i64 i = 0; i < len; ++i) {                                         \
                            const T dd = LD(d[i]);                                              \
                            s += dd;                                                            \
                            q += dd * (LD(p[i]) - mu);                                          \
                        }                                                                       \
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
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    for (i64 k = 0; k < K; ++k) { sum_dy[k] = 0; sum_dyxc[k] = 0; }                             \
    for (int t = 0; t < nt; ++t) {                                                              \
        const double *ts = acc + 2 * t * K, *tp = ts + K;                                       \
        for (i64 k = 0; k < K; ++k) { sum_dy[k] += ts[k]; sum_dyxc[k] += tp[k]; }               \
    }                                                                                           \
    free(acc);                                                                                  \
}                                                                                               \
                                                                                                \
/* dx = (dy − k1[k] − (x − mean[k])·k2[k])·k3[k]; dy and dx have x's strides */                 \
static void dx_##SUFFIX(const S *dy, const S *x, S *dx, view_t v, const T *mean, const T *k1,  \
                        const T *k2, const T *k3, int nt) {                                     \
    if (v.I == 1 && v.sc == 1) {                                                                \
        ROW_BLOCKS(S)                                                                           \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 b = 0; b < nblocks; ++b) {                                                     \
            BLOCK_RANGE                                                                         \
            const T *restrict mu = mean + g * v.C;                                              \
            const T *restrict a1 = k1 + g * v.C;                                                \
            const T *restrict a2 = k2 + g * v.C;                                                \
            const T *restrict a3 = k3 + g * v.C;                                                \
            ROWS_BEGIN(r0, r1)                                                                  \
                const S *restrict d = dy + ROW_OFFSET;                                          \
                const S *restrict p = x + ROW_OFFSET;                                           \
                S *restrict q = dx + ROW_OFFSET;                                                \
                for (i64 c = 0; c < v.C; ++c)                                                   \
                    q[c] = ST((LD(d[c]) - a1[c] - (LD(p[c]) - mu[c]) * a2[c]) * a3[c]);         \
            ROWS_END                                                                            \
        }                                                                                       \
    } else {                                                                                    \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        const int contiguous = v.si == 1;                                                       \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 r = 0; r < runs; ++r) {                                                        \
            RUN_INDEX                                                                           \
            const T mu = mean[k], b1 = k1[k], b2 = k2[k], b3 = k3[k];                           \
            if (contiguous) {                                                                   \
                const S *restrict d = dy + off;                                                 \
                const S *restrict p = x + off;                                                  \
                S *restrict q = dx + off;                                                       \
                for (i64 i = 0; i < v.I; ++i)                                                   \
                    q[i] = ST((LD(d[i]) - b1 - (LD(p[i]) - mu) * b2) * b3);                     \
            } else {                                                                            \
                for (i64 i = 0; i < v.I; ++i) {                                                 \
                    const i64 e = off + i * v.si;                                               \
                    dx[e] = ST((LD(dy[e]) - b1 - (LD(x[e]) - mu) * b2) * b3);                   \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
}

/*
 * Whole passes. T is also the parameter type. `state` holds 5 rows of K doubles:
 * mean, biased variance, inv = 1/sqrt(var + eps), slope = r·a_s, intercept = d·a_s + a_b
 * (the training forward writes it; the backward reads it).
 */
#define DEFINE_PASSES(S, T, SUFFIX)                                                             \
                                                                                                \
int bn_train_forward_##SUFFIX(                                                                  \
    const S *x, S *y, const i64 *dims, const i64 *strides, i64 P, const T *gamma,              \
    const T *beta, double eps, const T *renorm_mean, const T *renorm_stddev, double rmin,       \
    double rmax, double dmax, const T *adj_scale, const T *adj_bias, double *state,             \
    int threads) {                                                                              \
    const view_t v = make_view(dims, strides);                                                  \
    const int nt = thread_count(threads);                                                       \
    const i64 K = v.G * v.C, groups = K / P;                                                    \
    double *mean = state, *var = state + K, *inv = state + 2 * K;                               \
    double *slope = state + 3 * K, *intercept = state + 4 * K;                                  \
    stats_##SUFFIX(x, v, mean, var, nt);                                                        \
    for (i64 k = 0; k < K; ++k) {                                                               \
        inv[k] = 1.0 / sqrt(var[k] + eps);                                                      \
        slope[k] = 1.0;                                                                         \
        intercept[k] = 0.0;                                                                     \
    }                                                                                           \
    if (adj_scale != NULL) {                                                                    \
        for (i64 k = 0; k < K; ++k) {                                                           \
            slope[k] = (double)adj_scale[k % P];                                                \
            intercept[k] = (double)adj_bias[k % P];                                             \
        }                                                                                       \
    }                                                                                           \
    if (renorm_mean != NULL) { /* r, d from the ghost-averaged statistics */                    \
        for (i64 p = 0; p < P; ++p) {                                                           \
            double mu = 0, vr = 0;                                                              \
            for (i64 gg = 0; gg < groups; ++gg) { mu += mean[gg * P + p]; vr += var[gg * P + p]; } \
            mu /= (double)groups;                                                               \
            vr /= (double)groups;                                                               \
            double denom = (double)renorm_stddev[p];                                            \
            if (!(denom >= sqrt(eps))) denom = isnan(denom) ? denom : sqrt(eps);                \
            double r = sqrt(vr + eps) / denom;                                                  \
            double d = (mu - (double)renorm_mean[p]) / denom;                                   \
            if (r < rmin) r = rmin;                                                             \
            if (r > rmax) r = rmax;                                                             \
            if (d < -dmax) d = -dmax;                                                           \
            if (d > dmax) d = dmax;                                                             \
            for (i64 gg = 0; gg < groups; ++gg) {                                               \
                const i64 k = gg * P + p;                                                       \
                intercept[k] = d * slope[k] + intercept[k];                                     \
                slope[k] = r * slope[k];                                                        \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    T *coef = malloc((size_t)(3 * K) * sizeof(T));                                              \
    T *cm = coef, *cs = coef + K, *co = coef + 2 * K;                                           \
    for (i64 k = 0; k < K; ++k) {                                                               \
        const double g = gamma ? (double)gamma[k % P] : 1.0;                                    \
        const double bb = beta ? (double)beta[k % P] : 0.0;                                     \
        cm[k] = (T)mean[k];                                                                     \
        cs[k] = (T)(inv[k] * slope[k] * g);                                                     \
        co[k] = (T)(intercept[k] * g + bb);                                                     \
    }                                                                                           \
    affine_##SUFFIX(x, y, v, cm, cs, co, nt);                                                   \
    free(coef);                                                                                 \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
int bn_train_backward_##SUFFIX(                                                                 \
    const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides, i64 P,                 \
    const T *gamma, const double *state, double *dgamma, double *dbeta, int threads) {          \
    const view_t v = make_view(dims, strides);                                                  \
    const int nt = thread_count(threads);                                                       \
    const i64 K = v.G * v.C;                                                                    \
    const double n = (double)(v.A * v.M * v.I);                                                 \
    const double *mean = state, *inv = state + 2 * K;                                           \
    const double *slope = state + 3 * K, *intercept = state + 4 * K;                            \
    double *sums = malloc((size_t)(2 * K) * sizeof(double));                                    \
    double *sdy = sums, *sdx = sums + K;                                                        \
    T *coef = malloc((size_t)(4 * K) * sizeof(T));                                              \
    T *cm = coef, *c1 = coef + K, *c2 = coef + 2 * K, *c3 = coef + 3 * K;                       \
    for (i64 k = 0; k < K; ++k) cm[k] = (T)mean[k];                                             \
    reduce_##SUFFIX(dy, x, v, cm, sdy, sdx, nt);                                                \
    if (dx != NULL) {                                                                           \
        for (i64 k = 0; k < K; ++k) {                                                           \
            const double g = gamma ? (double)gamma[k % P] : 1.0;                                \
            c1[k] = (T)(sdy[k] / n);                                                            \
            c2[k] = (T)(inv[k] * inv[k] * sdx[k] / n);                                          \
            c3[k] = (T)(inv[k] * slope[k] * g);                                                 \
        }                                                                                       \
        dx_##SUFFIX(dy, x, dx, v, cm, c1, c2, c3, nt);                                          \
    }                                                                                           \
    if (dgamma != NULL || dbeta != NULL) {                                                      \
        for (i64 p = 0; p < P; ++p) {                                                           \
            if (dgamma) dgamma[p] = 0;                                                          \
            if (dbeta) dbeta[p] = 0;                                                            \
        }                                                                                       \
        for (i64 k = 0; k < K; ++k) {                                                           \
            if (dgamma) dgamma[k % P] += slope[k] * inv[k] * sdx[k] + intercept[k] * sdy[k];    \
            if (dbeta) dbeta[k % P] += sdy[k];                                                  \
        }                                                                                       \
    }                                                                                           \
    free(sums);                                                                                 \
    free(coef);                                                                                 \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
/* inference: y = (x − mean[p])·γ[p]/√(var[p] + ε) + β[p], with K == P */                       \
int bn_infer_forward_##SUFFIX(                                                                  \
    const S *x, S *y, const i64 *dims, const i64 *strides, i64 P, const T *mean,               \
    const T *var, const T *gamma, const T *beta, double eps, int threads) {                     \
    const view_t v = make_view(dims, strides);                                                  \
    const i64 K = v.G * v.C;                                                                    \
    T *coef = malloc((size_t)(3 * K) * sizeof(T));                                              \
    T *cm = coef, *cs = coef + K, *co = coef + 2 * K;                                           \
    for (i64 k = 0; k < K; ++k) {                                                               \
        const i64 p = k % P;                                                                    \
        cm[k] = mean[p];                                                                        \
        cs[k] = (T)((gamma ? (double)gamma[p] : 1.0) / sqrt((double)var[p] + eps));             \
        co[k] = beta ? beta[p] : (T)0;                                                          \
    }                                                                                           \
    affine_##SUFFIX(x, y, v, cm, cs, co, thread_count(threads));                                \
    free(coef);                                                                                 \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
int bn_infer_backward_##SUFFIX(                                                                 \
    const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides, i64 P,                 \
    const T *mean, const T *var, const T *gamma, double eps, double *dgamma, double *dbeta,    \
    int threads) {                                                                              \
    const view_t v = make_view(dims, strides);                                                  \
    const int nt = thread_count(threads);                                                       \
    const i64 K = v.G * v.C;                                                                    \
    T *coef = malloc((size_t)(4 * K) * sizeof(T));                                              \
    T *cm = coef, *zero = coef + K, *cs = coef + 2 * K;                                         \
    double *inv = malloc((size_t)(3 * K) * sizeof(double));                                     \
    double *sdy = inv + K, *sdx = inv + 2 * K;                                                  \
    for (i64 k = 0; k < K; ++k) {                                                               \
        const i64 p = k % P;                                                                    \
        inv[k] = 1.0 / sqrt((double)var[p] + eps);                                              \
        cm[k] = mean[p];                                                                        \
        zero[k] = 0;                                                                            \
        cs[k] = (T)(inv[k] * (gamma ? (double)gamma[p] : 1.0));                                 \
    }                                                                                           \
    if (dx != NULL) dx_##SUFFIX(dy, x, dx, v, cm, zero, zero, cs, nt);                          \
    if (dgamma != NULL || dbeta != NULL) {                                                      \
        reduce_##SUFFIX(dy, x, v, cm, sdy, sdx, nt);                                            \
        for (i64 p = 0; p < P; ++p) {                                                           \
            if (dgamma) dgamma[p] = 0;                                                          \
            if (dbeta) dbeta[p] = 0;                                                            \
        }                                                                                       \
        for (i64 k = 0; k < K; ++k) {                                                           \
            if (dgamma) dgamma[k % P] += inv[k] * sdx[k];                                       \
            if (dbeta) dbeta[k % P] += sdy[k];                                                  \
        }                                                                                       \
    }                                                                                           \
    free(coef);                                                                                 \
    free(inv);                                                                                  \
    return 0;                                                                                   \
}

DEFINE_PRIMITIVES(float, float, f32, ID, ID)
DEFINE_PASSES(float, float, f32)
DEFINE_PRIMITIVES(double, double, f64, ID, ID)
DEFINE_PASSES(double, double, f64)
DEFINE_PRIMITIVES(uint16_t, float, bf16, bf16_load, bf16_store)
DEFINE_PASSES(uint16_t, float, bf16)
#if defined(__FLT16_MANT_DIG__)
#define F16_LOAD(h) ((float)(h))
#define F16_STORE(f) ((_Float16)(f))
DEFINE_PRIMITIVES(_Float16, float, f16, F16_LOAD, F16_STORE)
DEFINE_PASSES(_Float16, float, f16)
int bn_has_f16(void) { return 1; }
#else
int bn_has_f16(void) { return 0; }
#endif

/* Version of this interface: the loader refuses a library with another one. */
int bn_abi_version(void) { return 2; }
