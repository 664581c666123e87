/* The row sums for narrow rows: n channels with L <= n <= 4·L (up to 64 float32 channels
   with AVX-512, 32 float64), whose accumulators stay in registers through all the rows.
   The four-row loops (loops.h) keep them in memory between groups of four rows, which ties
   a row of a few vectors to the store-to-load latency. Each accumulator starts from the
   value in memory and adds the rows in order, as the four-row loops do (both in T, over
   at most a block of rows; the compiler may reassociate either, -fassociative-math). The
   sum_* functions take narrow rows here and the others (and the channels past a row's
   last whole vector) to the four-row loops.
   Part of the kernels of one element type (typed.h). */

#define NARROW_NV 4
#define NARROW(n) (CAT(COLS_OK_, SUFFIX) && (n) >= L && (n) <= NARROW_NV * L)

/* acc[c] += Σ_r (x[r][c] − sh[c]) over the first nv vectors of channels */
static inline __attribute__((always_inline)) void CAT(narrow_shifted_, SUFFIX)(
    const S *p, i64 rows, i64 st, const T *restrict sh, T *restrict acc, const int nv) {
    VT a[NARROW_NV], h[NARROW_NV];
    for (int u = 0; u < nv; ++u) {
        a[u] = CAT(vld_, TSUF)(acc + u * L);
        h[u] = CAT(vld_, TSUF)(sh + u * L);
    }
    for (i64 r = 0; r < rows; ++r, p += st)
        for (int u = 0; u < nv; ++u) a[u] += CAT(vld_, SUFFIX)(p + u * L) - h[u];
    for (int u = 0; u < nv; ++u) CAT(vst_, TSUF)(acc + u * L, a[u]);
}

/* acc[c] += Σ_r (x[r][c] − mu[c])² over the first nv vectors of channels */
static inline __attribute__((always_inline)) void CAT(narrow_squares_, SUFFIX)(
    const S *p, i64 rows, i64 st, const T *restrict mu, T *restrict acc, const int nv) {
    VT a[NARROW_NV], m[NARROW_NV];
    for (int u = 0; u < nv; ++u) {
        a[u] = CAT(vld_, TSUF)(acc + u * L);
        m[u] = CAT(vld_, TSUF)(mu + u * L);
    }
    for (i64 r = 0; r < rows; ++r, p += st)
        for (int u = 0; u < nv; ++u) {
            const VT d = CAT(vld_, SUFFIX)(p + u * L) - m[u];
            a[u] += d * d;
        }
    for (int u = 0; u < nv; ++u) CAT(vst_, TSUF)(acc + u * L, a[u]);
}

/* bs[c] += Σ_r dy, bp[c] += Σ_r dy·(x − mu[c]) over the first nv vectors of channels */
static inline __attribute__((always_inline)) void CAT(narrow_grads_, SUFFIX)(
    const S *dy, const S *x, i64 rows, i64 st, const T *restrict mu, T *restrict bs,
    T *restrict bp, const int nv) {
    VT a[NARROW_NV], b[NARROW_NV], m[NARROW_NV];
    for (int u = 0; u < nv; ++u) {
        a[u] = CAT(vld_, TSUF)(bs + u * L);
        b[u] = CAT(vld_, TSUF)(bp + u * L);
        m[u] = CAT(vld_, TSUF)(mu + u * L);
    }
    for (i64 r = 0; r < rows; ++r, dy += st, x += st)
        for (int u = 0; u < nv; ++u) {
            const VT g = CAT(vld_, SUFFIX)(dy + u * L);
            a[u] += g;
            b[u] += g * (CAT(vld_, SUFFIX)(x + u * L) - m[u]);
        }
    for (int u = 0; u < nv; ++u) {
        CAT(vst_, TSUF)(bs + u * L, a[u]);
        CAT(vst_, TSUF)(bp + u * L, b[u]);
    }
}

/* acc[c] += Σ (x − sh[c]) over rows rows of n channels (row r at p + r·st) */
static void CAT(sum_shifted_, SUFFIX)(const S *p, i64 n, i64 rows, i64 st, const T *restrict sh,
                                      T *restrict acc) {
    const i64 nv = NARROW(n) ? n / L : 0, c = nv * L;
    switch (nv) {
    case 4: CAT(narrow_shifted_, SUFFIX)(p, rows, st, sh, acc, 4); break;
    case 3: CAT(narrow_shifted_, SUFFIX)(p, rows, st, sh, acc, 3); break;
    case 2: CAT(narrow_shifted_, SUFFIX)(p, rows, st, sh, acc, 2); break;
    case 1: CAT(narrow_shifted_, SUFFIX)(p, rows, st, sh, acc, 1); break;
    default: break;
    }
    if (c < n) CAT(acc_shift_rows_, SUFFIX)(p + c, n - c, rows, st, sh + c, acc + c);
}

/* acc[c] += Σ (x − mu[c])² over rows rows of n channels (row r at p + r·st) */
static void CAT(sum_squares_, SUFFIX)(const S *p, i64 n, i64 rows, i64 st, const T *restrict mu,
                                      T *restrict acc) {
    const i64 nv = NARROW(n) ? n / L : 0, c = nv * L;
    switch (nv) {
    case 4: CAT(narrow_squares_, SUFFIX)(p, rows, st, mu, acc, 4); break;
    case 3: CAT(narrow_squares_, SUFFIX)(p, rows, st, mu, acc, 3); break;
    case 2: CAT(narrow_squares_, SUFFIX)(p, rows, st, mu, acc, 2); break;
    case 1: CAT(narrow_squares_, SUFFIX)(p, rows, st, mu, acc, 1); break;
    default: break;
    }
    if (c < n) CAT(acc_sq_rows_, SUFFIX)(p + c, n - c, rows, st, mu + c, acc + c);
}

/* bs[c] += Σ dy, bp[c] += Σ dy·(x − mu[c]) over rows rows of n channels (row r at + r·st) */
static void CAT(sum_grads_, SUFFIX)(const S *dy, const S *x, i64 n, i64 rows, i64 st,
                                    const T *restrict mu, T *restrict bs, T *restrict bp) {
    const i64 nv = NARROW(n) ? n / L : 0, c = nv * L;
    switch (nv) {
    case 4: CAT(narrow_grads_, SUFFIX)(dy, x, rows, st, mu, bs, bp, 4); break;
    case 3: CAT(narrow_grads_, SUFFIX)(dy, x, rows, st, mu, bs, bp, 3); break;
    case 2: CAT(narrow_grads_, SUFFIX)(dy, x, rows, st, mu, bs, bp, 2); break;
    case 1: CAT(narrow_grads_, SUFFIX)(dy, x, rows, st, mu, bs, bp, 1); break;
    default: break;
    }
    if (c < n) CAT(reduce_rows_, SUFFIX)(dy + c, x + c, n - c, rows, st, mu + c, bs + c, bp + c);
}

#undef NARROW
#undef NARROW_NV
