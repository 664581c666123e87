/* The four-row loops of a 16-bit type: SUFFIX (bf16, f16), LD/ST its float32 conversions.
   Included by loops.h with SUFFIX, LD, ST defined. */

static inline void CAT(acc_shift_rows_, SUFFIX)(const uint16_t *p, i64 n, i64 rows, i64 st,
                                           const float *restrict sh, float *restrict acc) {
    i64 r = 0;
    V16(for (; r + 4 <= rows; r += 4, p += 4 * st) {
            i64 c = 0;
            for (; c + 16 <= n; c += 16) {
                const __m512 v = _mm512_loadu_ps(sh + c);
                __m512 t = _mm512_loadu_ps(acc + c);
                for (i64 j = 0; j < 4 * st; j += st)
                    t = _mm512_add_ps(t, _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(p + j + c), v));
                _mm512_storeu_ps(acc + c, t);
            }
            for (i64 j = 0; j < 4 * st; j += st)
                for (i64 e = c; e < n; ++e) acc[e] += LD(p[j + e]) - sh[e];
        })
    for (; r < rows; ++r, p += st) CAT(acc_shift_row_, SUFFIX)(p, n, sh, acc);
}
static inline void CAT(acc_sq_rows_, SUFFIX)(const uint16_t *p, i64 n, i64 rows, i64 st,
                                        const float *restrict mu, float *restrict acc) {
    i64 r = 0;
    V16(for (; r + 4 <= rows; r += 4, p += 4 * st) {
            i64 c = 0;
            for (; c + 16 <= n; c += 16) {
                const __m512 m = _mm512_loadu_ps(mu + c);
                __m512 t = _mm512_loadu_ps(acc + c);
                for (i64 j = 0; j < 4 * st; j += st) {
                    const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(p + j + c), m);
                    t = _mm512_add_ps(t, _mm512_mul_ps(d, d));
                }
                _mm512_storeu_ps(acc + c, t);
            }
            for (i64 j = 0; j < 4 * st; j += st)
                for (i64 e = c; e < n; ++e) {
                    const float d = LD(p[j + e]) - mu[e];
                    acc[e] += d * d;
                }
        })
    for (; r < rows; ++r, p += st) CAT(acc_sq_row_, SUFFIX)(p, n, mu, acc);
}
static inline void CAT(reduce_rows_, SUFFIX)(const uint16_t *dy, const uint16_t *x, i64 n, i64 rows,
                                        i64 st, const float *restrict mu, float *restrict bs,
                                        float *restrict bp) {
    i64 r = 0;
    V16(for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st) {
            i64 c = 0;
            for (; c + 16 <= n; c += 16) {
                const __m512 m = _mm512_loadu_ps(mu + c);
                __m512 a = _mm512_loadu_ps(bs + c), b = _mm512_loadu_ps(bp + c);
                for (i64 j = 0; j < 4 * st; j += st) {
                    const __m512 g = CAT(v16_ld_, SUFFIX)(dy + j + c);
                    const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(x + j + c), m);
                    a = _mm512_add_ps(a, g);
                    b = _mm512_add_ps(b, _mm512_mul_ps(g, d));
                }
                _mm512_storeu_ps(bs + c, a);
                _mm512_storeu_ps(bp + c, b);
            }
            for (i64 j = 0; j < 4 * st; j += st)
                for (i64 e = c; e < n; ++e) {
                    const float g = LD(dy[j + e]);
                    bs[e] += g;
                    bp[e] += g * (LD(x[j + e]) - mu[e]);
                }
        })
    for (; r < rows; ++r, dy += st, x += st) CAT(reduce_row_, SUFFIX)(dy, x, n, mu, bs, bp);
}
static inline void CAT(dx_rows_, SUFFIX)(const uint16_t *dy, const uint16_t *x, uint16_t *q, i64 n,
                                    i64 rows, i64 st, const float *restrict mu,
                                    const float *restrict a1, const float *restrict a2,
                                    const float *restrict a3) {
    i64 r = 0;
    V16(for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st, q += 4 * st) {
            i64 c = 0;
            for (; c + 16 <= n; c += 16) {
                const __m512 m = _mm512_loadu_ps(mu + c), b1 = _mm512_loadu_ps(a1 + c);
                const __m512 b2 = _mm512_loadu_ps(a2 + c), b3 = _mm512_loadu_ps(a3 + c);
                for (i64 j = 0; j < 4 * st; j += st) {
                    const __m512 d = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(x + j + c), m);
                    const __m512 xc = _mm512_mul_ps(d, b2);
                    const __m512 g = _mm512_sub_ps(CAT(v16_ld_, SUFFIX)(dy + j + c), b1);
                    CAT(v16_st_, SUFFIX)(q + j + c, _mm512_mul_ps(_mm512_sub_ps(g, xc), b3));
                }
            }
            for (i64 j = 0; j < 4 * st; j += st)
                for (i64 e = c; e < n; ++e)
                    q[j + e] = ST((LD(dy[j + e]) - a1[e] - (LD(x[j + e]) - mu[e]) * a2[e]) *
                                  a3[e]);
        })
    for (; r < rows; ++r, dy += st, x += st, q += st)
        CAT(dx_row_, SUFFIX)(dy, x, q, n, mu, a1, a2, a3);
}

/* (its parameters end here: the next includer defines them again) */
#undef SUFFIX
#undef LD
#undef ST
