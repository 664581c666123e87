/* The element loops of a plain type: S storage = T compute type (float, double), SUFFIX its names' suffix.
   Included by loops.h with S, T, SUFFIX defined. */

static inline void CAT(affine_run_, SUFFIX)(const S *restrict p, S *restrict q, i64 n, T mu, T s,
                                       T o) {
    for (i64 i = 0; i < n; ++i) q[i] = (p[i] - mu) * s + o;
}
static inline void CAT(affine_row_, SUFFIX)(const S *restrict p, S *restrict q, i64 n,
                                       const T *restrict mu, const T *restrict s,
                                       const T *restrict o) {
    for (i64 c = 0; c < n; ++c) q[c] = (p[c] - mu[c]) * s[c] + o[c];
}
/* four rows at once (p + j·st, q + j·st): the coefficients are loaded once per channel */
static inline void CAT(affine_row4_, SUFFIX)(const S *restrict p0, const S *restrict p1,
                                        const S *restrict p2, const S *restrict p3,
                                        S *restrict q0, S *restrict q1, S *restrict q2,
                                        S *restrict q3, i64 n, const T *restrict mu,
                                        const T *restrict s, const T *restrict o) {
    for (i64 c = 0; c < n; ++c) {
        const T m = mu[c], k = s[c], b = o[c];
        q0[c] = (p0[c] - m) * k + b;
        q1[c] = (p1[c] - m) * k + b;
        q2[c] = (p2[c] - m) * k + b;
        q3[c] = (p3[c] - m) * k + b;
    }
}
static inline void CAT(affine_rows_, SUFFIX)(const S *p, S *q, i64 n, i64 rows, i64 st,
                                        const T *restrict mu, const T *restrict s,
                                        const T *restrict o) {
    i64 r = 0;
    for (; r + 4 <= rows; r += 4, p += 4 * st, q += 4 * st)
        CAT(affine_row4_, SUFFIX)(p, p + st, p + 2 * st, p + 3 * st, q, q + st, q + 2 * st,
                             q + 3 * st, n, mu, s, o);
    for (; r < rows; ++r, p += st, q += st) CAT(affine_row_, SUFFIX)(p, q, n, mu, s, o);
}
static inline void CAT(dx_run_, SUFFIX)(const S *restrict dy, const S *restrict x, S *restrict q,
                                   i64 n, T mu, T b1, T b2, T b3) {
    for (i64 i = 0; i < n; ++i) q[i] = (dy[i] - b1 - (x[i] - mu) * b2) * b3;
}
static inline void CAT(dx_row_, SUFFIX)(const S *restrict dy, const S *restrict x, S *restrict q,
                                   i64 n, const T *restrict mu, const T *restrict a1,
                                   const T *restrict a2, const T *restrict a3) {
    for (i64 c = 0; c < n; ++c) q[c] = (dy[c] - a1[c] - (x[c] - mu[c]) * a2[c]) * a3[c];
}
static inline void CAT(reduce_run_, SUFFIX)(const S *restrict dy, const S *restrict x, i64 n, T mu,
                                       T *sum, T *dot) {
    T s = 0, d = 0;
    for (i64 i = 0; i < n; ++i) {
        s += dy[i];
        d += dy[i] * (x[i] - mu);
    }
    *sum = s;
    *dot = d;
}
static inline void CAT(acc_shift_row_, SUFFIX)(const S *restrict p, i64 n, const T *restrict sh,
                                          T *restrict acc) {
    for (i64 c = 0; c < n; ++c) acc[c] += p[c] - sh[c];
}
static inline void CAT(acc_sq_row_, SUFFIX)(const S *restrict p, i64 n, const T *restrict mu,
                                       T *restrict acc) {
    for (i64 c = 0; c < n; ++c) { T d = p[c] - mu[c]; acc[c] += d * d; }
}
static inline void CAT(reduce_row_, SUFFIX)(const S *restrict dy, const S *restrict x, i64 n,
                                       const T *restrict mu, T *restrict bs, T *restrict bp) {
    for (i64 c = 0; c < n; ++c) {
        bs[c] += dy[c];
        bp[c] += dy[c] * (x[c] - mu[c]);
    }
}

/* (its parameters end here: the next includer defines them again) */
#undef S
#undef T
#undef SUFFIX
