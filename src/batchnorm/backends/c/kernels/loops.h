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
static inline __m256i v16_pack_f16(__m512 v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
static inline void v16_st_f16(uint16_t *q, __m512 v) {
    _mm256_storeu_si256((__m256i *)q, v16_pack_f16(v));
}
static inline __m512 v16_ld_bf16(const uint16_t *p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline __m256i v16_pack_bf16(__m512 v) { /* as bf16_store, 16 at a time */
    const __m512i u = _mm512_castps_si512(v);
#if defined(__AVX512BF16__) && defined(__AVX512DQ__)
    /* the instruction rounds as bf16_store does but reads subnormals as zero: those take
     * the integer path below */
    if (!_mm512_fpclass_ps_mask(v, 0x20)) return (__m256i)_mm512_cvtneps_pbh(v);
#endif
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}
static inline void v16_st_bf16(uint16_t *q, __m512 v) {
    _mm256_storeu_si256((__m256i *)q, v16_pack_bf16(v));
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
#define SUFFIX bf16
#include "v16.h"
#define SUFFIX f16
#include "v16.h"
#endif

/* vnt: vst with a streaming store (stream.h), at an address aligned to the vector's size
   in storage, L·sizeof(S) bytes; without such an instruction, vst itself */
#if defined(__AVX512F__)
static inline void vnt_f32(float *q, vecf_t v) { _mm512_stream_ps(q, (__m512)v); }
static inline void vnt_f64(double *q, vecd_t v) { _mm512_stream_pd(q, (__m512d)v); }
static inline void vnt_bf16(uint16_t *q, vecf_t v) {
    _mm256_stream_si256((__m256i *)q, v16_pack_bf16((__m512)v));
}
static inline void vnt_f16(uint16_t *q, vecf_t v) {
    _mm256_stream_si256((__m256i *)q, v16_pack_f16((__m512)v));
}
#else
#if defined(__AVX__)
static inline void vnt_f32(float *q, vecf_t v) { _mm256_stream_ps(q, (__m256)v); }
static inline void vnt_f64(double *q, vecd_t v) { _mm256_stream_pd(q, (__m256d)v); }
#elif defined(__SSE2__)
static inline void vnt_f32(float *q, vecf_t v) { _mm_stream_ps(q, (__m128)v); }
static inline void vnt_f64(double *q, vecd_t v) { _mm_stream_pd(q, (__m128d)v); }
#else
static inline void vnt_f32(float *q, vecf_t v) { vst_f32(q, v); }
static inline void vnt_f64(double *q, vecd_t v) { vst_f64(q, v); }
#endif
static inline void vnt_bf16(uint16_t *q, vecf_t v) { vst_bf16(q, v); }
static inline void vnt_f16(uint16_t *q, vecf_t v) { vst_f16(q, v); }
#endif

/* Four rows at a time (row j at p + j·st): per-channel coefficients are loaded and
   accumulators updated once per four rows; each row's values enter in row order, as in
   the one-row loops. *_rows(..., rows, st, ...) walk a run of rows this way. */
/*
 * Sums over one run of converted values: Σ (p[i] − shift) and Σ (p[i] − μ)², each kept
 * in W partial sums (four 512-bit registers' worth) so that the additions overlap
 * instead of waiting on one another; the partials are added in a fixed order, so
 * results stay deterministic.
 */
#define T float
#define SUFFIX f32
#define W 64
#include "sums.h"
#define T double
#define SUFFIX f64
#define W 32
#include "sums.h"
#define T float
#define SUFFIX bf16
#define W 64
#include "sums.h"
#define T float
#define SUFFIX f16
#define W 64
#include "sums.h"
#define S float
#define T float
#define SUFFIX f32
#include "loops_plain.h"
#define S double
#define T double
#define SUFFIX f64
#include "loops_plain.h"
#define SUFFIX bf16
#define LD bf16_load
#define ST bf16_store
#include "loops_16.h"
#define SUFFIX f16
#define LD f16_load
#define ST f16_store
#include "loops_16.h"
#define S float
#define T float
#define SUFFIX f32
#include "rows_plain.h"
#define S double
#define T double
#define SUFFIX f64
#include "rows_plain.h"
#define SUFFIX bf16
#define LD bf16_load
#define ST bf16_store
#include "rows_16.h"
#define SUFFIX f16
#define LD f16_load
#define ST f16_store
#include "rows_16.h"

#endif /* BATCHNORM_KERNELS_LOOPS_H */
