/*
 * CPU kernels for batchnorm's training and inference paths (float32 / float64).
 *
 * Every tensor is described by one canonical 5-D view [A, G, M, C, I] with
 * element strides; the statistics of channel (g, c) reduce over (a, m, i).
 * Layouts reach the fast loops when the innermost dimension is contiguous:
 *   - "plane" mode: stride(I) == 1, runs of I values per (a, g, m, c) (NCHW);
 *   - "row" mode:   I == 1 and stride(C) == 1, rows of C channels (NHWC, 2-D);
 * anything else takes a generic strided loop (correct, slower).
 *
 * Statistics are numerically stable without a second pass over memory: each
 * cache-sized block is reduced with a two-pass mean/M2 while it sits in cache,
 * and blocks are merged with Chan's parallel formula in double precision.
 * All kernels use the OpenMP runtime PyTorch itself loaded.
 *
 * Exported functions return 0.
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
#define RUN_CHUNK 4096 /* values reduced in the input dtype before a double-precision merge */

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

/* Chan et al.: merge (nb, mb, qb) into (n, m, q). */
static inline void chan_merge(double *n, double *m, double *q, double nb, double mb, double qb) {
    if (nb <= 0) return;
    if (*n <= 0) {
        *n = nb; *m = mb; *q = qb;
        return;
    }
    double total = *n + nb;
    double delta = mb - *m;
    *m += delta * (nb / total);
    *q += qb + delta * delta * (*n * nb / total);
    *n = total;
}

/* Merge per-thread partials [T][K] into mean/var outputs of length K. */
static void finish_stats(int T, i64 K, const double *pn, const double *pm, const double *pq,
                         double *mean, double *var) {
    for (i64 k = 0; k < K; ++k) {
        double n = 0, m = 0, q = 0;
        for (int t = 0; t < T; ++t) chan_merge(&n, &m, &q, pn[t * K + k], pm[t * K + k], pq[t * K + k]);
        mean[k] = n > 0 ? m : 0.0;
        var[k] = n > 0 ? q / n : 0.0;
    }
}


/* Row mode walks rows (a, m) of one channel group g in blocks of rows; inside a block
 * the rows are two nested loops whose addresses are affine in the loop counters,
 * which is what lets the compiler vectorize over channels without per-row checks. */
#define ROW_BLOCKS(T)                                                                          \
    const i64 rows_per_g = v.A * v.M;                                                          \
    i64 block = ROW_BLOCK_BYTES / (i64)sizeof(T) / (v.C > 0 ? v.C : 1);                        \
    if (block < 1) block = 1;                                                                  \
    const i64 nblocks_g = (rows_per_g + block - 1) / block;                                    \
    const i64 nblocks = nblocks_g * v.G;
#define BLOCK_RANGE                                                                            \
    const i64 g = b / nblocks_g;                                                               \
    const i64 r0 = (b % nblocks_g) * block;                                                    \
    const i64 r1 = r0 + block < rows_per_g ? r0 + block : rows_per_g;
#define ROWS_BEGIN(first_row, end_row)                                                         \
    for (i64 r_ = (first_row), ra_ = (first_row) / v.M, m0_ = (first_row) % v.M; r_ < (end_row); \
         ++ra_, m0_ = 0) {                                                                     \
        const i64 m1_ = m0_ + ((end_row) - r_) < v.M ? m0_ + ((end_row) - r_) : v.M;          \
        const i64 base_ = ra_ * v.sa + g * v.sg;                                               \
        r_ += m1_ - m0_;                                                                       \
        for (i64 rm_ = m0_; rm_ < m1_; ++rm_) {
#define ROW_OFFSET (base_ + rm_ * v.sm)
#define ROWS_END                                                                               \
        }                                                                                      \
    }

#define DEFINE_KERNELS(T, SUFFIX)                                                               \
                                                                                                \
/* mean and M2 of n contiguous values: two passes over data in cache, the first */          \
/* shifted by p[0] so that a large mean does not swamp the sum */                               \
static inline void run_moments_##SUFFIX(const T *restrict p, i64 n, double *mean, double *q) { \
    const T shift = p[0];                                                                       \
    T s = 0;                                                                                    \
    for (i64 i = 0; i < n; ++i) s += p[i] - shift;                                              \
    const T mu = shift + s / (T)n;                                                              \
    T ss = 0;                                                                                   \
    for (i64 i = 0; i < n; ++i) { T d = p[i] - mu; ss += d * d; }                               \
    *mean = (double)mu;                                                                         \
    *q = (double)ss;                                                                            \
}                                                                                               \
                                                                                                \
int bn_stats_##SUFFIX(const T *x, const i64 *dims, const i64 *strides, double *mean,           \
                      double *var, int threads) {                                               \
    view_t v = make_view(dims, strides);                                                        \
    const i64 K = v.G * v.C;                                                                    \
    const int nt = thread_count(threads);                                                       \
    double *pn = calloc((size_t)(nt * K), sizeof(double));                                      \
    double *pm = calloc((size_t)(nt * K), sizeof(double));                                      \
    double *pq = calloc((size_t)(nt * K), sizeof(double));                                      \
    if (v.si == 1 && v.I > 1) { /* plane mode: a run of I values per (a, g, m, c) */             \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            const int t = thread_id();                                                          \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 r = 0; r < runs; ++r) {                                                    \
                i64 c = r % v.C, rest = r / v.C;                                                \
                i64 m = rest % v.M; rest /= v.M;                                                \
                i64 g = rest % v.G, a = rest / v.G;                                             \
                const T *p = x + a * v.sa + g * v.sg + m * v.sm + c * v.sc;                     \
                const i64 k = g * v.C + c;                                                      \
                for (i64 i0 = 0; i0 < v.I; i0 += RUN_CHUNK) {                                   \
                    const i64 len = v.I - i0 < RUN_CHUNK ? v.I - i0 : RUN_CHUNK;                \
                    double rm, rq;                                                              \
                    run_moments_##SUFFIX(p + i0, len, &rm, &rq);                                \
                    chan_merge(&pn[t * K + k], &pm[t * K + k], &pq[t * K + k], (double)len, rm, rq); \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) { /* row mode: rows of C contiguous channels */           \
        ROW_BLOCKS(T)                                                                           \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            const int t = thread_id();                                                          \
            T *restrict bsum = malloc((size_t)v.C * sizeof(T));                                 \
            T *restrict bq = malloc((size_t)v.C * sizeof(T));                                   \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 b = 0; b < nblocks; ++b) {                                                 \
                BLOCK_RANGE                                                                     \
                /* shifted by the block's first row so a large mean does not swamp the sum */ \
                const T *restrict first = x + (r0 / v.M) * v.sa + g * v.sg + (r0 % v.M) * v.sm; \
                memset(bsum, 0, (size_t)v.C * sizeof(T));                                       \
                memset(bq, 0, (size_t)v.C * sizeof(T));                                         \
                ROWS_BEGIN(r0, r1)                                                              \
                    const T *restrict p = x + ROW_OFFSET;                                       \
                    for (i64 c = 0; c < v.C; ++c) bsum[c] += p[c] - first[c];                   \
                ROWS_END                                                                        \
                const T inv_n = (T)1 / (T)(r1 - r0);                                            \
                for (i64 c = 0; c < v.C; ++c) bsum[c] = first[c] + bsum[c] * inv_n;             \
                ROWS_BEGIN(r0, r1)                                                              \
                    const T *restrict p = x + ROW_OFFSET;                                       \
                    for (i64 c = 0; c < v.C; ++c) { T d = p[c] - bsum[c]; bq[c] += d * d; }     \
                ROWS_END                                                                        \
                for (i64 c = 0; c < v.C; ++c) {                                                 \
                    i64 k = g * v.C + c;                                                        \
                    chan_merge(&pn[t * K + k], &pm[t * K + k], &pq[t * K + k],                  \
                               (double)(r1 - r0), (double)bsum[c], (double)bq[c]);              \
                }                                                                               \
            }                                                                                   \
            free(bsum);                                                                         \
            free(bq);                                                                           \
        }                                                                                       \
    } else { /* generic strided layout: one (a, g, m, c) run at a time */                       \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            const int t = thread_id();                                                          \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 r = 0; r < runs; ++r) {                                                    \
                i64 c = r % v.C, rest = r / v.C;                                                \
                i64 m = rest % v.M; rest /= v.M;                                                \
                i64 g = rest % v.G, a = rest / v.G;                                             \
                const T *p = x + a * v.sa + g * v.sg + m * v.sm + c * v.sc;                     \
                double s = 0;                                                                   \
                for (i64 i = 0; i < v.I; ++i) s += (double)p[i * v.si];                         \
                double mu = s / (double)v.I, q = 0;                                             \
                for (i64 i = 0; i < v.I; ++i) { double d = (double)p[i * v.si] - mu; q += d * d; } \
                i64 k = g * v.C + c;                                                            \
                chan_merge(&pn[t * K + k], &pm[t * K + k], &pq[t * K + k], (double)v.I, mu, q); \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    finish_stats(nt, K, pn, pm, pq, mean, var);                                                 \
    free(pn); free(pm); free(pq);                                                               \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
/* out = (x - mean[k]) * scale[k] + shift[k]  (k = g*C + c); out has x's strides */             \
int bn_affine_##SUFFIX(const T *x, T *out, const i64 *dims, const i64 *strides,                \
                       const T *mean, const T *scale, const T *shift, int threads) {            \
    view_t v = make_view(dims, strides);                                                        \
    const int nt = thread_count(threads);                                                       \
    if (v.si == 1 && v.I > 1) {                                                                 \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 r = 0; r < runs; ++r) {                                                        \
            i64 c = r % v.C, rest = r / v.C;                                                    \
            i64 m = rest % v.M; rest /= v.M;                                                    \
            i64 g = rest % v.G, a = rest / v.G;                                                 \
            const i64 off = a * v.sa + g * v.sg + m * v.sm + c * v.sc;                          \
            const T *restrict p = x + off;                                                      \
            T *restrict q = out + off;                                                          \
            const i64 k = g * v.C + c;                                                          \
            const T mu = mean[k], s = scale[k], o = shift[k];                                   \
            for (i64 i = 0; i < v.I; ++i) q[i] = (p[i] - mu) * s + o;                           \
        }                                                                                       \
    } else if (v.I == 1 && v.sc == 1) {                                                         \
        ROW_BLOCKS(T)                                                                           \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 b = 0; b < nblocks; ++b) {                                                     \
            BLOCK_RANGE                                                                         \
            const T *restrict mu = mean + g * v.C;                                              \
            const T *restrict s = scale + g * v.C;                                              \
            const T *restrict o = shift + g * v.C;                                              \
            ROWS_BEGIN(r0, r1)                                                                  \
                const T *restrict p = x + ROW_OFFSET;                                           \
                T *restrict q = out + ROW_OFFSET;                                               \
                for (i64 c = 0; c < v.C; ++c) q[c] = (p[c] - mu[c]) * s[c] + o[c];              \
            ROWS_END                                                                            \
        }                                                                                       \
    } else {                                                                                    \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 r = 0; r < runs; ++r) {                                                        \
            i64 c = r % v.C, rest = r / v.C;                                                    \
            i64 m = rest % v.M; rest /= v.M;                                                    \
            i64 g = rest % v.G, a = rest / v.G;                                                 \
            const i64 off = a * v.sa + g * v.sg + m * v.sm + c * v.sc;                          \
            const i64 k = g * v.C + c;                                                          \
            for (i64 i = 0; i < v.I; ++i)                                                       \
                out[off + i * v.si] = (x[off + i * v.si] - mean[k]) * scale[k] + shift[k];      \
        }                                                                                       \
    }                                                                                           \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
/* sum_dy[k] = Σ dy, sum_dyxc[k] = Σ dy·(x − mean[k]); dy has x's strides */                    \
int bn_backward_reduce_##SUFFIX(const T *dy, const T *x, const i64 *dims, const i64 *strides,  \
                                const T *mean, double *sum_dy, double *sum_dyxc, int threads) { \
    view_t v = make_view(dims, strides);                                                        \
    const i64 K = v.G * v.C;                                                                    \
    const int nt = thread_count(threads);                                                       \
    double *ps = calloc((size_t)(nt * K), sizeof(double));                                      \
    double *pp = calloc((size_t)(nt * K), sizeof(double));                                      \
    if (v.I == 1 && v.sc == 1) {                                                                \
        ROW_BLOCKS(T)                                                                           \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            const int t = thread_id();                                                          \
            T *restrict bs = malloc((size_t)v.C * sizeof(T));                                   \
            T *restrict bp = malloc((size_t)v.C * sizeof(T));                                   \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 b = 0; b < nblocks; ++b) {                                                 \
                BLOCK_RANGE                                                                     \
                const T *restrict mu = mean + g * v.C;                                          \
                memset(bs, 0, (size_t)v.C * sizeof(T));                                         \
                memset(bp, 0, (size_t)v.C * sizeof(T));                                         \
                ROWS_BEGIN(r0, r1)                                                              \
                    const T *restrict d = dy + ROW_OFFSET;                                      \
                    const T *restrict p = x + ROW_OFFSET;                                       \
                    for (i64 c = 0; c < v.C; ++c) {                                             \
                        bs[c] += d[c];                                                          \
                        bp[c] += d[c] * (p[c] - mu[c]);                                         \
                    }                                                                           \
                ROWS_END                                                                        \
                for (i64 c = 0; c < v.C; ++c) {                                                 \
                    ps[t * K + g * v.C + c] += (double)bs[c];                                   \
                    pp[t * K + g * v.C + c] += (double)bp[c];                                   \
                }                                                                               \
            }                                                                                   \
            free(bs);                                                                           \
            free(bp);                                                                           \
        }                                                                                       \
    } else {                                                                                    \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        const int contiguous = v.si == 1;                                                       \
        _Pragma("omp parallel num_threads(nt)")                                                 \
        {                                                                                       \
            const int t = thread_id();                                                          \
            _Pragma("omp for schedule(static)")                                                 \
            for (i64 r = 0; r < runs; ++r) {                                                    \
                i64 c = r % v.C, rest = r / v.C;                                                \
                i64 m = rest % v.M; rest /= v.M;                                                \
                i64 g = rest % v.G, a = rest / v.G;                                             \
                const i64 off = a * v.sa + g * v.sg + m * v.sm + c * v.sc;                      \
                const i64 k = g * v.C + c;                                                      \
                const T mu = mean[k];                                                           \
                if (contiguous) {                                                               \
                    for (i64 i0 = 0; i0 < v.I; i0 += RUN_CHUNK) {                               \
                        const i64 len = v.I - i0 < RUN_CHUNK ? v.I - i0 : RUN_CHUNK;            \
                        const T *restrict d = dy + off + i0;                                    \
                        const T *restrict p = x + off + i0;                                     \
                        T s = 0, q = 0;                                                         \
                        for (i64 i = 0; i < len; ++i) { s += d[i]; q += d[i] * (p[i] - mu); }   \
                        ps[t * K + k] += (double)s;                                             \
                        pp[t * K + k] += (double)q;                                             \
                    }                                                                           \
                } else {                                                                        \
                    double s = 0, q = 0;                                                        \
                    for (i64 i = 0; i < v.I; ++i) {                                             \
                        double dd = (double)dy[off + i * v.si];                                 \
                        s += dd;                                                                \
                        q += dd * ((double)x[off + i * v.si] - (double)mu);                     \
                    }                                                                           \
                    ps[t * K + k] += s;                                                         \
                    pp[t * K + k] += q;                                                         \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    for (i64 k = 0; k < K; ++k) {                                                               \
        double s = 0, q = 0;                                                                    \
        for (int t = 0; t < nt; ++t) { s += ps[t * K + k]; q += pp[t * K + k]; }                \
        sum_dy[k] = s;                                                                          \
        sum_dyxc[k] = q;                                                                        \
    }                                                                                           \
    free(ps); free(pp);                                                                         \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
/* dx = (dy − k1[k] − (x − mean[k])·k2[k])·k3[k]; dy and dx have x's strides */                 \
int bn_backward_dx_##SUFFIX(const T *dy, const T *x, T *dx, const i64 *dims,                   \
                            const i64 *strides, const T *mean, const T *k1, const T *k2,        \
                            const T *k3, int threads) {                                         \
    view_t v = make_view(dims, strides);                                                        \
    const int nt = thread_count(threads);                                                       \
    if (v.I == 1 && v.sc == 1) {                                                                \
        ROW_BLOCKS(T)                                                                           \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 b = 0; b < nblocks; ++b) {                                                     \
            BLOCK_RANGE                                                                         \
            const T *restrict mu = mean + g * v.C;                                              \
            const T *restrict a1 = k1 + g * v.C;                                                \
            const T *restrict a2 = k2 + g * v.C;                                                \
            const T *restrict a3 = k3 + g * v.C;                                                \
            ROWS_BEGIN(r0, r1)                                                                  \
                const T *restrict d = dy + ROW_OFFSET;                                          \
                const T *restrict p = x + ROW_OFFSET;                                           \
                T *restrict q = dx + ROW_OFFSET;                                                \
                for (i64 c = 0; c < v.C; ++c) q[c] = (d[c] - a1[c] - (p[c] - mu[c]) * a2[c]) * a3[c]; \
            ROWS_END                                                                            \
        }                                                                                       \
    } else {                                                                                    \
        const i64 runs = v.A * v.G * v.M * v.C;                                                 \
        const int contiguous = v.si == 1;                                                       \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                            \
        for (i64 r = 0; r < runs; ++r) {                                                        \
            i64 c = r % v.C, rest = r / v.C;                                                    \
            i64 m = rest % v.M; rest /= v.M;                                                    \
            i64 g = rest % v.G, a = rest / v.G;                                                 \
            const i64 off = a * v.sa + g * v.sg + m * v.sm + c * v.sc;                          \
            const i64 k = g * v.C + c;                                                          \
            const T mu = mean[k], b1 = k1[k], b2 = k2[k], b3 = k3[k];                           \
            if (contiguous) {                                                                   \
                const T *restrict d = dy + off;                                                 \
                const T *restrict p = x + off;                                                  \
                T *restrict q = dx + off;                                                       \
                for (i64 i = 0; i < v.I; ++i) q[i] = (d[i] - b1 - (p[i] - mu) * b2) * b3;       \
            } else {                                                                            \
                for (i64 i = 0; i < v.I; ++i) {                                                 \
                    const i64 e = off + i * v.si;                                               \
                    dx[e] = (dy[e] - b1 - (x[e] - mu) * b2) * b3;                               \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    return 0;                                                                                   \
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)

/* Version of this interface: the loader refuses a library with another one. */
int bn_abi_version(void) { return 1; }
