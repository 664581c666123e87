/* The element loops of a 16-bit type: SUFFIX (bf16, f16), LD/ST its float32 conversions.
   Included by loops.h with SUFFIX, LD, ST defined. */

static inline void CAT(affine_run_, SUFFIX)(const uint16_t *restrict p, uint16_t *restrict q, i64 n,
                                       float mu, float s, float o) {
    i64 i = 0;
    V16(const __m512 vm = _mm512_set1_ps(mu), vs = _mm512_set1_ps(s), vo = _mm512_set1_ps(o);
        for (; i + 16 <= n; i += 16) {
            const __m512 t = _mm512_mul_ps(_mm512_sub_ps(CAT(v16_ld_, SUFFIX)(p + i), vm), vs);
            CAT(v16_st_, SUFFIX)(q + i, _mm512_add_ps(t, vo));
        })
    for (; i < n; ++i) q[i] = ST((LD(p[i]) - mu) * s + o);
}
static inline void CAT(affine_row_, SUFFIX)(const uint16_t *restrict p, uint16_t *restrict q, i64 n,
                                       const float *restrict mu, const float *restrict s,
                                       const float *restrict o) {
    i64 c = 0;
    V16(for (; c + 16 <= n; c += 16) {
            const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(p + c), _mm512_loadu_ps(mu + c));
            const __m512 t = _mm512_mul_ps(d, _mm512_loadu_ps(s + c));
            CAT(v16_st_, SUFFIX)(q + c, _mm512_add_ps(t, _mm512_loadu_ps(o + c)));
        })
    for (; c < n; ++c) q[c] = ST((LD(p[c]) - mu[c]) * s[c] + o[c]);
}
/* four rows at once (p + j·st, q + j·st): the coefficients are loaded once per 16 channels */
static inline void CAT(affine_rows_, SUFFIX)(const uint16_t *p, uint16_t *q, i64 n, i64 rows,
                                        i64 st, const float *restrict mu,
                                        const float *restrict s,
                                        const float *restrict o) {
    i64 r = 0;
    V16(for (; r + 4 <= rows; r += 4, p += 4 * st, q += 4 * st) {
            i64 c = 0;
            for (; c + 16 <= n; c += 16) {
                const __m512 m = _mm512_loadu_ps(mu + c), k = _mm512_loadu_ps(s + c);
                const __m512 b = _mm512_loadu_ps(o + c);
                for (i64 j = 0; j < 4 * st; j += st) {
                    const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(p + j + c), m);
                    const __m512 t = _mm512_mul_ps(d, k);
                    CAT(v16_st_, SUFFIX)(q + j + c, _mm512_add_ps(t, b));
                }
            }
            for (i64 j = 0; j < 4 * st; j += st)
                for (i64 t = c; t < n; ++t)
                    q[j + t] = ST((LD(p[j + t]) - mu[t]) * s[t] + o[t]);
        })
    for (; r < rows; ++r, p += st, q += st) CAT(affine_row_, SUFFIX)(p, q, n, mu, s, o);
}
static inline void CAT(dx_run_, SUFFIX)(const uint16_t *restrict dy, const uint16_t *restrict x,
                                   uint16_t *restrict q, i64 n, float mu, float b1, float b2,
                                   float b3) {
    i64 i = 0;
    V16(const __m512 vm = _mm512_set1_ps(mu), v1 = _mm512_set1_ps(b1);
        const __m512 v2 = _mm512_set1_ps(b2), v3 = _mm512_set1_ps(b3);
        for (; i + 16 <= n; i += 16) {
            const __m512 xc = _mm512_mul_ps(_mm512_sub_ps(CAT(v16_ld_, SUFFIX)(x + i), vm), v2);
            const __m512 t = _mm512_sub_ps(_mm512_sub_ps(CAT(v16_ld_, SUFFIX)(dy + i), v1), xc);
            CAT(v16_st_, SUFFIX)(q + i, _mm512_mul_ps(t, v3));
        })
    for (; i < n; ++i) q[i] = ST((LD(dy[i]) - b1 - (LD(x[i]) - mu) * b2) * b3);
}
static inline void CAT(dx_row_, SUFFIX)(const uint16_t *restrict dy, const uint16_t *restrict x,
                                   uint16_t *restrict q, i64 n, const float *restrict mu,
                                   const float *restrict a1, const float *restrict a2,
                                   const float *restrict a3) {
    i64 c = 0;
    V16(for (; c + 16 <= n; c += 16) {
            const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(x + c), _mm512_loadu_ps(mu + c));
            const __m512 xc = _mm512_mul_ps(d, _mm512_loadu_ps(a2 + c));
            const __m512 g = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(dy + c), _mm512_loadu_ps(a1 + c));
            CAT(v16_st_, SUFFIX)(q + c, _mm512_mul_ps(_mm512_sub_ps(g, xc), _mm512_loadu_ps(a3 + c)));
        })
    for (; c < n; ++c) q[c] = ST((LD(dy[c]) - a1[c] - (LD(x[c]) - mu[c]) * a2[c]) * a3[c]);
}
static inline void CAT(reduce_run_, SUFFIX)(const uint16_t *restrict dy, const uint16_t *restrict x,
                                       i64 n, float mu, float *sum, float *dot) {
    i64 i = 0;
    float s = 0, d = 0;
    V16(__m512 vs = _mm512_setzero_ps(), vd = _mm512_setzero_ps();
        const __m512 vm = _mm512_set1_ps(mu);
        for (; i + 16 <= n; i += 16) {
            const __m512 g = CAT(v16_ld_, SUFFIX)(dy + i);
            vs = _mm512_add_ps(vs, g);
            vd = _mm512_add_ps(vd, _mm512_mul_ps(g, _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(x + i), vm)));
        }
        s = _mm512_reduce_add_ps(vs);
        d = _mm512_reduce_add_ps(vd);)
    for (; i < n; ++i) {
        const float g = LD(dy[i]);
        s += g;
        d += g * (LD(x[i]) - mu);
    }
    *sum = s;
    *dot = d;
}
static inline void CAT(acc_shift_row_, SUFFIX)(const uint16_t *restrict p, i64 n,
                                          const float *restrict sh, float *restrict acc) {
    i64 c = 0;
    V16(for (; c + 16 <= n; c += 16) {
            const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(p + c), _mm512_loadu_ps(sh + c));
            _mm512_storeu_ps(acc + c, _mm512_add_ps(_mm512_loadu_ps(acc + c), d));
        })
    for (; c < n; ++c) acc[c] += LD(p[c]) - sh[c];
}
static inline void CAT(acc_sq_row_, SUFFIX)(const uint16_t *restrict p, i64 n,
                                       const float *restrict mu, float *restrict acc) {
    i64 c = 0;
    V16(for (; c + 16 <= n; c += 16) {
            const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(p + c), _mm512_loadu_ps(mu + c));
            _mm512_storeu_ps(acc + c, _mm512_add_ps(_mm512_loadu_ps(acc + c), _mm512_mul_ps(d, d)));
        })
    for (; c < n; ++c) { const float d = LD(p[c]) - mu[c]; acc[c] += d * d; }
}
static inline void CAT(reduce_row_, SUFFIX)(const uint16_t *restrict dy, const uint16_t *restrict x,
                                       i64 n, const float *restrict mu, float *restrict bs,
                                       float *restrict bp) {
    i64 c = 0;
    V16(for (; c + 16 <= n; c += 16) {
            const __m512 g = CAT(v16_ld_, SUFFIX)(dy + c);
            const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(x + c), _mm512_loadu_ps(mu + c));
            _mm512_storeu_ps(bs + c, _mm512_add_ps(_mm512_loadu_ps(bs + c), g));
            _mm512_storeu_ps(bp + c, _mm512_add_ps(_mm512_loadu_ps(bp + c), _mm512_mul_ps(g, d)));
        })
    for (; c < n; ++c) {
        const float g = LD(dy[c]);
        bs[c] += g;
        bp[c] += g * (LD(x[c]) - mu[c]);
    }
}

/* (its parameters end here: the next includer defines them again) */
#undef SUFFIX
#undef LD
#undef ST
