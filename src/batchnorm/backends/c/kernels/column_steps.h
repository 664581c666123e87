/* One column-step implementation (kernels.c's column loops), included twice per element
   type by typed.h: vector columns (COL_NV = 2 vectors of COL_L lanes) and single
   channels (COL_NV = 1, COL_L = 1). Defined by the includer: S storage type, T compute
   type, SQRT; COL_NAME the functions' prefix, COL_VT the vector type, COL_LDV/COL_STV
   storage loads/stores, COL_TLD/COL_TST compute-type loads/stores.
   A column's coefficients are computed in T, as TensorFlow does: converting 32 lanes to
   double and back cost the ghost-batch passes 9 % (forward) and 4 % (backward) of their
   time. They can differ from the row loops' double formulas by about a unit in the last
   place of T (k2 = inv²·Σdy(x − μ)/n; the scale when γ·a_s is not a T value). */

static inline void CAT(COL_NAME, _fwd)(const S *restrict x, S *restrict out, i64 c, i64 nr, i64 st,
                              double eps, const double *restrict gsx,
                              const double *restrict gox, T *restrict mu, T *restrict ti,
                              double *restrict dv) {
    const COL_VT zero = {0};
    const T inv_n = (T)1 / (T)nr;
    COL_VT xr[COL_ROWS][COL_NV], f[COL_NV], s[COL_NV], q[COL_NV], cs[COL_NV], co[COL_NV];
    T qa[COL_NV * COL_L], ca[COL_NV * COL_L], oa[COL_NV * COL_L];
    for (int u = 0; u < COL_NV; ++u) {
        xr[0][u] = COL_LDV(x + c + u * COL_L);
        f[u] = xr[0][u];
        s[u] = zero;
        q[u] = zero;
    }
    for (i64 r = 1; r < nr; ++r)
        for (int u = 0; u < COL_NV; ++u) {
            xr[r][u] = COL_LDV(x + r * st + c + u * COL_L);
            s[u] += xr[r][u] - f[u];
        }
    for (int u = 0; u < COL_NV; ++u) s[u] = f[u] + s[u] * inv_n;
    for (i64 r = 0; r < nr; ++r)
        for (int u = 0; u < COL_NV; ++u) {
            const COL_VT d = xr[r][u] - s[u];
            q[u] += d * d;
        }
    for (int u = 0; u < COL_NV; ++u) { COL_TST(mu + c + u * COL_L, s[u]); COL_TST(qa + u * COL_L, q[u]); }
    for (int j = 0; j < COL_NV * COL_L; ++j) {
        const T vr = qa[j] * inv_n;
        const T iv = (T)1 / SQRT(vr + (T)eps);
        ti[c + j] = iv;
        dv[c + j] = (double)vr;
        ca[j] = iv * (T)gsx[j];
        oa[j] = (T)gox[j];
    }
    for (int u = 0; u < COL_NV; ++u) { cs[u] = COL_TLD(ca + u * COL_L); co[u] = COL_TLD(oa + u * COL_L); }
    for (i64 r = 0; r < nr; ++r)
        for (int u = 0; u < COL_NV; ++u)
            COL_STV(out + r * st + c + u * COL_L, (xr[r][u] - s[u]) * cs[u] + co[u]);
}
static inline void CAT(COL_NAME, _bwd)(const S *restrict dy, const S *restrict x, S *restrict dx, i64 c,
                              i64 nr, i64 st, const T *restrict mean, const T *restrict inv,
                              const double *restrict gsx, double *restrict ss,
                              double *restrict sp) {
    const COL_VT zero = {0};
    const T inv_n = (T)1 / (T)nr;
    COL_VT g[COL_ROWS][COL_NV], xc[COL_ROWS][COL_NV], m[COL_NV], a[COL_NV], b[COL_NV], a1[COL_NV], a2[COL_NV], a3[COL_NV];
    T aa[COL_NV * COL_L], ba[COL_NV * COL_L], k1[COL_NV * COL_L], k2[COL_NV * COL_L], k3[COL_NV * COL_L];
    for (int u = 0; u < COL_NV; ++u) m[u] = COL_TLD(mean + c + u * COL_L);
    for (int u = 0; u < COL_NV; ++u) { a[u] = zero; b[u] = zero; }
    for (i64 r = 0; r < nr; ++r)
        for (int u = 0; u < COL_NV; ++u) {
            g[r][u] = COL_LDV(dy + r * st + c + u * COL_L);
            xc[r][u] = COL_LDV(x + r * st + c + u * COL_L) - m[u];
            a[u] += g[r][u];
            b[u] += g[r][u] * xc[r][u];
        }
    for (int u = 0; u < COL_NV; ++u) { COL_TST(aa + u * COL_L, a[u]); COL_TST(ba + u * COL_L, b[u]); }
    for (int j = 0; j < COL_NV * COL_L; ++j) {
        const T iv = inv[c + j];
        ss[c + j] = (double)aa[j];
        sp[c + j] = (double)ba[j];
        k1[j] = aa[j] * inv_n;
        k2[j] = iv * iv * ba[j] * inv_n;
        k3[j] = iv * (T)gsx[j];
    }
    for (int u = 0; u < COL_NV; ++u) {
        a1[u] = COL_TLD(k1 + u * COL_L);
        a2[u] = COL_TLD(k2 + u * COL_L);
        a3[u] = COL_TLD(k3 + u * COL_L);
    }
    for (i64 r = 0; r < nr; ++r)
        for (int u = 0; u < COL_NV; ++u)
            COL_STV(dx + r * st + c + u * COL_L, (g[r][u] - a1[u] - xc[r][u] * a2[u]) * a3[u]);
}

/* (its parameters end here: the next includer defines them again) */
#undef COL_NAME
#undef COL_VT
#undef COL_NV
#undef COL_L
#undef COL_LDV
#undef COL_STV
#undef COL_TLD
#undef COL_TST
