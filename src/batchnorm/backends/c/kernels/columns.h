/* The column loops: short columns of contiguous channels (channels-last rows) a chunk
   at a time, vector columns then single channels (column_steps.h, twice).
   Part of the kernels of one element type (typed.h: S, T, SUFFIX, SQRT, VT, L, TSUF, LD,
   ST, ROW defined by the includer, kernels.c). */

#define COL_NAME CAT(colv_, SUFFIX)
#define COL_VT VT
#define COL_NV 2
#define COL_L L
#define COL_LDV CAT(vld_, SUFFIX)
#define COL_STV CAT(vst_, SUFFIX)
#define COL_TLD CAT(vld_, TSUF)
#define COL_TST CAT(vst_, TSUF)
#include "column_steps.h"
#define COL_NAME CAT(cols_, SUFFIX)
#define COL_VT T
#define COL_NV 1
#define COL_L 1
#define COL_LDV CAT(sld_, SUFFIX)
#define COL_STV CAT(sst_, SUFFIX)
#define COL_TLD CAT(sld_, TSUF)
#define COL_TST CAT(sst_, TSUF)
#include "column_steps.h"
/* The vector columns of a chunk's cn channels (parameter p on), nr rows; returns the first
   channel left for single columns. Always inlined, so that col_stats_affine/col_reduce_dx
   pass the common ghost batch sizes as literals: the row loops then unroll and a column's
   values stay in registers (8 rows: forward 0.81x, backward 0.88-0.91x the time). */
static inline __attribute__((always_inline)) i64 CAT(colv_stats_affine_, SUFFIX)(
    const S *x, S *out, i64 cn, const i64 nr, i64 st, i64 *pp, i64 P, double eps,
    const double *gs, const double *go, T *mu, T *ti, double *dv) {
    double wg[2 * L], wo[2 * L];
    i64 c = 0, p = *pp;
    for (; c + 2 * L <= cn; c += 2 * L) {
        CAT(CAT(colv_, SUFFIX), _fwd)(x, out, c, nr, st, eps, param_window(gs, p, P, 2 * L, wg),
                                      param_window(go, p, P, 2 * L, wo), mu, ti, dv);
        for (p += 2 * L; p >= P;) p -= P;
    }
    *pp = p;
    return c;
}
static inline __attribute__((always_inline)) i64 CAT(colv_reduce_dx_, SUFFIX)(
    const S *dy, const S *x, S *dx, i64 cn, const i64 nr, i64 st, i64 *pp, i64 P,
    const T *mean, const T *inv, const double *gs, double *ss, double *sp) {
    double wg[2 * L];
    i64 c = 0, p = *pp;
    for (; c + 2 * L <= cn; c += 2 * L) {
        CAT(CAT(colv_, SUFFIX), _bwd)(dy, x, dx, c, nr, st, mean, inv,
                                      param_window(gs, p, P, 2 * L, wg), ss, sp);
        for (p += 2 * L; p >= P;) p -= P;
    }
    *pp = p;
    return c;
}
static void CAT(col_stats_affine_, SUFFIX)(const S *x, S *out, i64 cn, i64 nr, i64 st, i64 k0, i64 P,
                                      double eps, const double *gs, const double *go, T *mu,
                                      T *ti, double *dv) {
    i64 p = k0 % P, c;
#define COLV_FWD(rows) CAT(colv_stats_affine_, SUFFIX)(x, out, cn, rows, st, &p, P, eps, gs, go, mu, ti, dv)
    switch (nr) {
    case 4: c = COLV_FWD(4); break;
    case 8: c = COLV_FWD(8); break;
    case 16: c = COLV_FWD(16); break;
    default: c = COLV_FWD(nr); break;
    }
#undef COLV_FWD
    for (; c < cn; ++c, p = p + 1 < P ? p + 1 : 0)
        CAT(CAT(cols_, SUFFIX), _fwd)(x, out, c, nr, st, eps, gs + p, go + p, mu, ti, dv);
}
static void CAT(col_reduce_dx_, SUFFIX)(const S *dy, const S *x, S *dx, i64 cn, i64 nr, i64 st,
                                   i64 k0, i64 P, const T *mean, const T *inv, const double *gs,
                                   double *ss, double *sp) {
    i64 p = k0 % P, c;
#define COLV_BWD(rows) CAT(colv_reduce_dx_, SUFFIX)(dy, x, dx, cn, rows, st, &p, P, mean, inv, gs, ss, sp)
    switch (nr) {
    case 4: c = COLV_BWD(4); break;
    case 8: c = COLV_BWD(8); break;
    case 16: c = COLV_BWD(16); break;
    default: c = COLV_BWD(nr); break;
    }
#undef COLV_BWD
    for (; c < cn; ++c, p = p + 1 < P ? p + 1 : 0)
        CAT(CAT(cols_, SUFFIX), _bwd)(dy, x, dx, c, nr, st, mean, inv, gs + p, ss, sp);
}
