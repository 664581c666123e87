/*
 * batchnorm C kernels, part 2 of 2 (included by kernels.c): 16-bit conversions and the
 * element loops every pass is built from: "run" loops (one channel's coefficients over
 * contiguous values), "row" loops (one coefficient per element), and the same row loops
 * four rows at a time. Needs i64 and, with AVX-512, <immintrin.h> from kernels.c.
 */
#ifndef BATCHNORM_KERNELS_LOOPS_H
#define BATCHNORM_KERNELS_LOOPS_H

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
#if defined(__AVX512BF16__) && defined(__AVX512DQ__)
    /* the instruction rounds as bf16_store does but reads subnormals as zero: those take
     * the integer path below */
    if (!_mm512_fpclass_ps_mask(v, 0x20)) {
        _mm256_storeu_si256((__m256i *)q, (__m256i)_mm512_cvtneps_pbh(v));
        return;
    }
#endif
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

/*
 * Vectors of the widest registers the compiler targets (GCC/Clang vector extensions) for
 * the column loops of a few rows: vld/vst load and store one vector of a storage type in
 * its compute type, sld/sst one value (the same loops run one channel at a time for the
 * tail). 16-bit data converts 16 values in registers with AVX-512; without it the column
 * loops are not used for 16-bit data (COLS_16 is 0).
 */
#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define VLF (VBYTES / 4) /* float lanes */
#define VLD (VBYTES / 8) /* double lanes */
typedef float vecf_t __attribute__((vector_size(VBYTES)));
typedef double vecd_t __attribute__((vector_size(VBYTES)));
static inline vecf_t vld_f32(const float *p) { vecf_t v; memcpy(&v, p, sizeof v); return v; }
static inline void vst_f32(float *q, vecf_t v) { memcpy(q, &v, sizeof v); }
static inline vecd_t vld_f64(const double *p) { vecd_t v; memcpy(&v, p, sizeof v); return v; }
static inline void vst_f64(double *q, vecd_t v) { memcpy(q, &v, sizeof v); }
static inline float sld_f32(const float *p) { return *p; }
static inline void sst_f32(float *q, float v) { *q = v; }
static inline double sld_f64(const double *p) { return *p; }
static inline void sst_f64(double *q, double v) { *q = v; }
static inline float sld_bf16(const uint16_t *p) { return bf16_load(*p); }
static inline void sst_bf16(uint16_t *q, float v) { *q = bf16_store(v); }
static inline float sld_f16(const uint16_t *p) { return f16_load(*p); }
static inline void sst_f16(uint16_t *q, float v) { *q = f16_store(v); }
#ifdef __AVX512F__
#define COLS_16 1
static inline vecf_t vld_bf16(const uint16_t *p) { return (vecf_t)v16_ld_bf16(p); }
static inline void vst_bf16(uint16_t *q, vecf_t v) { v16_st_bf16(q, (__m512)v); }
static inline vecf_t vld_f16(const uint16_t *p) { return (vecf_t)v16_ld_f16(p); }
static inline void vst_f16(uint16_t *q, vecf_t v) { v16_st_f16(q, (__m512)v); }
#else
#define COLS_16 0
#define DEFINE_V16_SCALAR(SUFFIX)                                                               \
static inline vecf_t vld_##SUFFIX(const uint16_t *p) {                                          \
    float b[VLF];                                                                               \
    for (int j = 0; j < VLF; ++j) b[j] = sld_##SUFFIX(p + j);                                   \
    return vld_f32(b);                                                                          \
}                                                                                               \
static inline void vst_##SUFFIX(uint16_t *q, vecf_t v) {                                        \
    float b[VLF];                                                                               \
    vst_f32(b, v);                                                                              \
    for (int j = 0; j < VLF; ++j) sst_##SUFFIX(q + j, b[j]);                                    \
}
DEFINE_V16_SCALAR(bf16)
DEFINE_V16_SCALAR(f16)
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

/*
 * Sums over one run of converted values: Σ (p[i] − shift) and Σ (p[i] − μ)², each kept
 * in W partial sums (four 512-bit registers' worth) so that the additions overlap
 * instead of waiting on one another; the partials are added in a fixed order, so
 * results stay deterministic.
 */
#define DEFINE_SUMS(T, SUFFIX, W)                                                               \
static inline T sum_dev_##SUFFIX(const T *restrict p, i64 n, T shift) {                         \
    T acc[W] = {0}, t = 0;                                                                      \
    i64 i = 0;                                                                                  \
    for (; i + W <= n; i += W)                                                                  \
        for (int j = 0; j < W; ++j) acc[j] += p[i + j] - shift;                                 \
    for (; i < n; ++i) t += p[i] - shift;                                                       \
    for (int j = 0; j < W; ++j) t += acc[j];                                                    \
    return t;                                                                                   \
}                                                                                               \
static inline T sum_sq_dev_##SUFFIX(const T *restrict p, i64 n, T mu) {                         \
    T acc[W] = {0}, t = 0;                                                                      \
    i64 i = 0;                                                                                  \
    for (; i + W <= n; i += W)                                                                  \
        for (int j = 0; j < W; ++j) { const T d = p[i + j] - mu; acc[j] += d * d; }             \
    for (; i < n; ++i) { const T d = p[i] - mu; t += d * d; }                                   \
    for (int j = 0; j < W; ++j) t += acc[j];                                                    \
    return t;                                                                                   \
}                                                                                               \

DEFINE_SUMS(float, f32, 64)
DEFINE_SUMS(double, f64, 32)
DEFINE_SUMS(float, bf16, 64)
DEFINE_SUMS(float, f16, 64)
DEFINE_LOOPS_PLAIN(float, float, f32)
DEFINE_LOOPS_PLAIN(double, double, f64)
DEFINE_LOOPS_16(bf16, bf16_load, bf16_store)
DEFINE_LOOPS_16(f16, f16_load, f16_store)
DEFINE_ROWS_PLAIN(float, float, f32)
DEFINE_ROWS_PLAIN(double, double, f64)
DEFINE_ROWS_16(bf16, bf16_load, bf16_store)
DEFINE_ROWS_16(f16, f16_load, f16_store)

#endif /* BATCHNORM_KERNELS_LOOPS_H */
