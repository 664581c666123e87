/* The four-row loops of a plain type: S = T (float, double), SUFFIX its names' suffix.
   Included by loops.h with S, T, SUFFIX defined. */

static inline void CAT(acc_shift_row4_, SUFFIX)(const S *restrict p0, const S *restrict p1,
                                           const S *restrict p2, const S *restrict p3, i64 n,
                                           const T *restrict sh, T *restrict acc) {
    for (i64 c = 0; c < n; ++c) {
        const T v = sh[c];
        T t = acc[c];
        t += p0[c] - v;
        t += p1[c] - v;
        t += p2[c] - v;
        t += p3[c] - v;
        acc[c] = t;
    }
}
static inline void CAT(acc_sq_row4_, SUFFIX)(const S *restrict p0, const S *restrict p1,
                                        const S *restrict p2, const S *restrict p3, i64 n,
                                        const T *restrict mu, T *restrict acc) {
    for (i64 c = 0; c < n; ++c) {
        const T m = mu[c], d0 = p0[c] - m, d1 = p1[c] - m, d2 = p2[c] - m, d3 = p3[c] - m;
        T t = acc[c];
        t += d0 * d0;
        t += d1 * d1;
        t += d2 * d2;
        t += d3 * d3;
        acc[c] = t;
    }
}
static inline void CAT(reduce_row4_, SUFFIX)(const S *restrict g0, const S *restrict g1,
                                        const S *restrict g2, const S *restrict g3,
                                        const S *restrict x0, const S *restrict x1,
                                        const S *restrict x2, const S *restrict x3, i64 n,
                                        const T *restrict mu, T *restrict bs, T *restrict bp) {
    for (i64 c = 0; c < n; ++c) {
        const T m = mu[c];
        T a = bs[c], b = bp[c];
        a += g0[c];
        b += g0[c] * (x0[c] - m);
        a += g1[c];
        b += g1[c] * (x1[c] - m);
        a += g2[c];
        b += g2[c] * (x2[c] - m);
        a += g3[c];
        b += g3[c] * (x3[c] - m);
        bs[c] = a;
        bp[c] = b;
    }
}
static inline void CAT(dx_row4_, SUFFIX)(const S *restrict g0, const S *restrict g1,
                                    const S *restrict g2, const S *restrict g3,
                                    const S *restrict x0, const S *restrict x1,
                                    const S *restrict x2, const S *restrict x3, S *restrict q0,
                                    S *restrict q1, S *restrict q2, S *restrict q3, i64 n,
                                    const T *restrict mu, const T *restrict a1,
                                    const T *restrict a2, const T *restrict a3) {
    for (i64 c = 0; c < n; ++c) {
        const T m = mu[c], b1 = a1[c], b2 = a2[c], b3 = a3[c];
        q0[c] = (g0[c] - b1 - (x0[c] - m) * b2) * b3;
        q1[c] = (g1[c] - b1 - (x1[c] - m) * b2) * b3;
        q2[c] = (g2[c] - b1 - (x2[c] - m) * b2) * b3;
        q3[c] = (g3[c] - b1 - (x3[c] - m) * b2) * b3;
    }
}
static inline void CAT(acc_shift_rows_, SUFFIX)(const S *p, i64 n, i64 rows, i64 st,
                                           const T *restrict sh, T *restrict acc) {
    i64 r = 0;
    for (; r + 4 <= rows; r += 4, p += 4 * st)
        CAT(acc_shift_row4_, SUFFIX)(p, p + st, p + 2 * st, p + 3 * st, n, sh, acc);
    for (; r < rows; ++r, p += st) CAT(acc_shift_row_, SUFFIX)(p, n, sh, acc);
}
static inline void CAT(acc_sq_rows_, SUFFIX)(const S *p, i64 n, i64 rows, i64 st,
                                        const T *restrict mu, T *restrict acc) {
    i64 r = 0;
    for (; r + 4 <= rows; r += 4, p += 4 * st)
        CAT(acc_sq_row4_, SUFFIX)(p, p + st, p + 2 * st, p + 3 * st, n, mu, acc);
    for (; r < rows; ++r, p += st) CAT(acc_sq_row_, SUFFIX)(p, n, mu, acc);
}
static inline void CAT(reduce_rows_, SUFFIX)(const S *dy, const S *x, i64 n, i64 rows, i64 st,
                                        const T *restrict mu, T *restrict bs, T *restrict bp) {
    i64 r = 0;
    for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st)
        CAT(reduce_row4_, SUFFIX)(dy, dy + st, dy + 2 * st, dy + 3 * st, x, x + st, x + 2 * st,
                             x + 3 * st, n, mu, bs, bp);
    for (; r < rows; ++r, dy += st, x += st) CAT(reduce_row_, SUFFIX)(dy, x, n, mu, bs, bp);
}
static inline void CAT(dx_rows_, SUFFIX)(const S *dy, const S *x, S *q, i64 n, i64 rows, i64 st,
                                    const T *restrict mu, const T *restrict a1,
                                    const T *restrict a2, const T *restrict a3) {
    i64 r = 0;
    for (; r + 4 <= rows; r += 4, dy += 4 * st, x += 4 * st, q += 4 * st)
        CAT(dx_row4_, SUFFIX)(dy, dy + st, dy + 2 * st, dy + 3 * st, x, x + st, x + 2 * st,
                         x + 3 * st, q, q + st, q + 2 * st, q + 3 * st, n, mu, a1, a2, a3);
    for (; r < rows; ++r, dy += st, x += st, q += st)
        CAT(dx_row_, SUFFIX)(dy, x, q, n, mu, a1, a2, a3);
}

/* (its parameters end here: the next includer defines them again) */
#undef S
#undef T
#undef SUFFIX
