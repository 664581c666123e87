/* The row passes' output written with streaming stores (stream.h), for one element type:
   the arithmetic of affine_row and dx_row, operation by operation, in vectors of L values
   stored with vnt (loops.h); the values before a row's first aligned vector and after its
   last whole one take those loops' ordinary stores. Part of the kernels of one element
   type (typed.h). */

/* the values of n at q before the first address a streaming store of L values accepts */
static inline i64 CAT(nt_head_, SUFFIX)(const S *q, i64 n) {
    const uintptr_t w = (uintptr_t)(L * sizeof(S)), a = (uintptr_t)q;
    if (a % sizeof(S) != 0) return n; /* (never for a tensor's elements) */
    const i64 h = (i64)((w - a % w) % w / sizeof(S));
    return h < n ? h : n;
}

/* Narrow rows (n = nv·L channels, nv <= 4, every row's output aligned): the coefficients
   stay in registers through all the rows. */
#define STREAM_NV 4
static inline __attribute__((always_inline)) void CAT(narrow_affine_nt_, SUFFIX)(
    const S *p, S *q, i64 rows, i64 st, const T *restrict mu, const T *restrict s,
    const T *restrict o, const int nv) {
    VT m[STREAM_NV], k[STREAM_NV], b[STREAM_NV];
    for (int u = 0; u < nv; ++u) {
        m[u] = CAT(vld_, TSUF)(mu + u * L);
        k[u] = CAT(vld_, TSUF)(s + u * L);
        b[u] = CAT(vld_, TSUF)(o + u * L);
    }
    for (i64 r = 0; r < rows; ++r, p += st, q += st)
        for (int u = 0; u < nv; ++u)
            CAT(vnt_, SUFFIX)(q + u * L, (CAT(vld_, SUFFIX)(p + u * L) - m[u]) * k[u] + b[u]);
}
static inline __attribute__((always_inline)) void CAT(narrow_dx_nt_, SUFFIX)(
    const S *dy, const S *x, S *q, i64 rows, i64 st, const T *restrict mu,
    const T *restrict a1, const T *restrict a2, const T *restrict a3, const int nv) {
    VT m[STREAM_NV], b1[STREAM_NV], b2[STREAM_NV], b3[STREAM_NV];
    for (int u = 0; u < nv; ++u) {
        m[u] = CAT(vld_, TSUF)(mu + u * L);
        b1[u] = CAT(vld_, TSUF)(a1 + u * L);
        b2[u] = CAT(vld_, TSUF)(a2 + u * L);
        b3[u] = CAT(vld_, TSUF)(a3 + u * L);
    }
    for (i64 r = 0; r < rows; ++r, dy += st, x += st, q += st)
        for (int u = 0; u < nv; ++u) {
            const VT g = CAT(vld_, SUFFIX)(dy + u * L) - b1[u];
            const VT d = CAT(vld_, SUFFIX)(x + u * L) - m[u];
            CAT(vnt_, SUFFIX)(q + u * L, (g - d * b2[u]) * b3[u]);
        }
}
/* how many vectors a narrow row of n channels at q (rows st apart) is; 0: not narrow */
static inline int CAT(narrow_nt_, SUFFIX)(const S *q, i64 n, i64 st) {
    const i64 w = L * (i64)sizeof(S);
    if (n % L != 0 || n > STREAM_NV * L || (st * (i64)sizeof(S)) % w != 0) return 0;
    return CAT(nt_head_, SUFFIX)(q, n) == 0 ? (int)(n / L) : 0;
}

/* q = (p − mu)·s + o over rows rows of n channels (row r at p + r·st, q + r·st) */
static void CAT(affine_rows_nt_, SUFFIX)(const S *p, S *q, i64 n, i64 rows, i64 st,
                                         const T *restrict mu, const T *restrict s,
                                         const T *restrict o) {
    switch (CAT(narrow_nt_, SUFFIX)(q, n, st)) {
    case 4: CAT(narrow_affine_nt_, SUFFIX)(p, q, rows, st, mu, s, o, 4); return;
    case 3: CAT(narrow_affine_nt_, SUFFIX)(p, q, rows, st, mu, s, o, 3); return;
    case 2: CAT(narrow_affine_nt_, SUFFIX)(p, q, rows, st, mu, s, o, 2); return;
    case 1: CAT(narrow_affine_nt_, SUFFIX)(p, q, rows, st, mu, s, o, 1); return;
    default: break;
    }
    for (i64 r = 0; r < rows; ++r, p += st, q += st) {
        const i64 h = CAT(nt_head_, SUFFIX)(q, n);
        CAT(affine_row_, SUFFIX)(p, q, h, mu, s, o);
        i64 c = h;
        for (; c + L <= n; c += L) {
            const VT d = CAT(vld_, SUFFIX)(p + c) - CAT(vld_, TSUF)(mu + c);
            CAT(vnt_, SUFFIX)(q + c, d * CAT(vld_, TSUF)(s + c) + CAT(vld_, TSUF)(o + c));
        }
        CAT(affine_row_, SUFFIX)(p + c, q + c, n - c, mu + c, s + c, o + c);
    }
}

/* q = (dy − a1 − (x − mu)·a2)·a3 over rows rows of n channels (row r at + r·st) */
static void CAT(dx_rows_nt_, SUFFIX)(const S *dy, const S *x, S *q, i64 n, i64 rows, i64 st,
                                     const T *restrict mu, const T *restrict a1,
                                     const T *restrict a2, const T *restrict a3) {
    switch (CAT(narrow_nt_, SUFFIX)(q, n, st)) {
    case 4: CAT(narrow_dx_nt_, SUFFIX)(dy, x, q, rows, st, mu, a1, a2, a3, 4); return;
    case 3: CAT(narrow_dx_nt_, SUFFIX)(dy, x, q, rows, st, mu, a1, a2, a3, 3); return;
    case 2: CAT(narrow_dx_nt_, SUFFIX)(dy, x, q, rows, st, mu, a1, a2, a3, 2); return;
    case 1: CAT(narrow_dx_nt_, SUFFIX)(dy, x, q, rows, st, mu, a1, a2, a3, 1); return;
    default: break;
    }
    for (i64 r = 0; r < rows; ++r, dy += st, x += st, q += st) {
        const i64 h = CAT(nt_head_, SUFFIX)(q, n);
        CAT(dx_row_, SUFFIX)(dy, x, q, h, mu, a1, a2, a3);
        i64 c = h;
        for (; c + L <= n; c += L) {
            const VT g = CAT(vld_, SUFFIX)(dy + c) - CAT(vld_, TSUF)(a1 + c);
            const VT d = CAT(vld_, SUFFIX)(x + c) - CAT(vld_, TSUF)(mu + c);
            CAT(vnt_, SUFFIX)(q + c, (g - d * CAT(vld_, TSUF)(a2 + c)) * CAT(vld_, TSUF)(a3 + c));
        }
        CAT(dx_row_, SUFFIX)(dy + c, x + c, q + c, n - c, mu + c, a1 + c, a2 + c, a3 + c);
    }
}

#undef STREAM_NV
