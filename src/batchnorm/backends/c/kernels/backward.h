/* The training backward: the fused sweeps (Σdy, Σdy·(x − μ) and dx per chunk), the
   reduce pass and the dx pass.
   Part of the kernels of one element type (typed.h: S, T, SUFFIX, SQRT, VT, L, TSUF, LD,
   ST, ROW defined by the includer, kernels.c). */

/* The training backward in one sweep for the layouts stats_affine takes: per chunk the
   sums Σdy and Σdy·(x − μ) (T over SUB_ROWS rows, then double), the dx coefficients, then
   dx while the rows are in cache; dγ/dβ partials per thread (thread order).
   gs[p] = slope[p]·γ[p]. Returns 0 when the layout does not fit. */
static int CAT(reduce_dx_, SUFFIX)(const S *dy, const S *x, S *dx, view_t v, i64 P,
                              const T *mean, const T *inv, const double *gs,
                              const double *slope, const double *intercept, double *dg,
                              double *db_, int nt) {
    if (!(v.I == 1 && v.sc == 1)) return 0;
    SWEEP_ITEMS(S)
    if (!sweep_ok) return 0;
    double *part = scratch_zero(4, (size_t)(2 * nt * P) * sizeof(double));
    _Pragma("omp parallel num_threads(nt)")
    {
        T mu[BUF], bs[BUF], bp[BUF], a1[BUF], a2[BUF], a3[BUF];
        double ss[BUF], sp[BUF], fg[BUF], fb[BUF];
        double *tg = part + 2 * thread_id() * P, *tb = tg + P;
        _Pragma("omp for schedule(static)")
        for (i64 it = 0; it < items; ++it) {
            ITEM_RANGE
            const i64 k0 = g * v.C + c0;
            const double inv_n = 1.0 / (double)(seg1 - seg0);
            if (dx != NULL && COL_ITEM(SUFFIX)) {
                const i64 off0 = COL_ITEM_OFFSET;
                CAT(col_reduce_dx_, SUFFIX)(dy + off0, x + off0, dx + off0, cn, seg1 - seg0, v.sm, k0, P,
                                       mean + k0, inv + k0, gs, ss, sp);
                FOLDED_PARAM_RUNS(DX_SUMS, T, SQRT, fg, fb, tg, tb)
                continue;
            }
            if (seg1 - seg0 <= SUB_ROWS) { /* one sub-block: the sums stay in T */
                for (i64 c = 0; c < cn; ++c) { mu[c] = mean[k0 + c]; bs[c] = 0; bp[c] = 0; }
                ROW_RUNS_BEGIN(seg0, seg1)
                    CAT(sum_grads_, SUFFIX)(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu, bs,
                                         bp);
                ROW_RUNS_END
                for (i64 c = 0; c < cn; ++c) { ss[c] = (double)bs[c]; sp[c] = (double)bp[c]; }
            } else { /* T sums over SUB_ROWS rows, then double */
                for (i64 c = 0; c < cn; ++c) { mu[c] = mean[k0 + c]; ss[c] = 0; sp[c] = 0; }
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) {
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;
                    for (i64 c = 0; c < cn; ++c) { bs[c] = 0; bp[c] = 0; }
                    ROW_RUNS_BEGIN(r0, r1)
                        CAT(sum_grads_, SUFFIX)(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu,
                                             bs, bp);
                    ROW_RUNS_END
                    for (i64 c = 0; c < cn; ++c) { ss[c] += (double)bs[c]; sp[c] += (double)bp[c]; }
                }
            }
            /* ss: Σdy, sp: Σdy·(x − μ) per channel; dγ/dβ partials per parameter */
            FOLDED_PARAM_RUNS(DX_COEFFICIENTS, T, SQRT, fg, fb, tg, tb)
            if (dx != NULL) {
                ROW_RUNS_BEGIN(seg0, seg1)
                    CAT(dx_rows_, SUFFIX)(dy + off_ + c0, x + off_ + c0, dx + off_ + c0, cn, nr_,
                                     v.sm, mu, a1, a2, a3);
                ROW_RUNS_END
            }
        }
    }
    sum_partials(part, nt, P, dg, db_);
    return 1;
}

/* The backward of the layouts plane_stats_affine takes, in one sweep per channel: Σdy and
   Σdy·(x − μ) (T per piece of at most BUF values, then double), the dx coefficients, then
   dx while the channel's runs of dy and x sit in L2; dγ/dβ partials per thread. */
static int CAT(plane_reduce_dx_, SUFFIX)(const S *dy, const S *x, S *dx, view_t v, i64 P,
                                    const T *mean, const T *inv, const double *gs,
                                    const double *slope, const double *intercept, double *dg,
                                    double *db_, int nt) {
    PLANE_SWEEP_ITEMS(S)
    if (!sweep_ok) return 0;
    const double inv_n = 1.0 / (double)(runs * v.I);
    double *part = scratch_zero(4, (size_t)(2 * nt * P) * sizeof(double));
    _Pragma("omp parallel num_threads(nt)")
    {
        double *tg = part + 2 * thread_id() * P, *tb = tg + P;
        _Pragma("omp for schedule(static)")
        for (i64 k = 0; k < items; ++k) {
            const i64 p = k % P, base = (k / v.C) * v.sg + (k % v.C) * v.sc;
            const T mu = mean[k];
            double ss = 0, sp = 0;
            CHANNEL_RUNS_BEGIN RUN_PIECES_BEGIN
                T s, q;
                CAT(reduce_run_, SUFFIX)(dy + off + i0, x + off + i0, len, mu, &s, &q);
                ss += (double)s;
                sp += (double)q;
            RUN_PIECES_END CHANNEL_RUNS_END
            const double iv = (double)inv[k];
            tg[p] += slope[p] * iv * sp + intercept[p] * ss;
            tb[p] += ss;
            if (dx == NULL) continue;
            const T a1 = (T)(ss * inv_n), a2 = (T)(iv * iv * sp * inv_n), a3 = (T)(iv * gs[p]);
            CHANNEL_RUNS_BEGIN
                CAT(dx_run_, SUFFIX)(dy + off, x + off, dx + off, v.I, mu, a1, a2, a3);
            CHANNEL_RUNS_END
        }
    }
    sum_partials(part, nt, P, dg, db_);
    return 1;
}

/* The same for the layouts short_stats_affine takes, a chunk of channels at a time. */
static int CAT(short_reduce_dx_, SUFFIX)(const S *dy, const S *x, S *dx, view_t v, i64 P,
                                    const T *mean, const T *inv, const double *gs,
                                    const double *slope, const double *intercept, double *dg,
                                    double *db_, int nt) {
    if (!SHORT_BLOCKS(v)) return 0;
    SHORT_SWEEP_ITEMS(S)
    if (!sweep_ok) return 0;
    const double inv_n = 1.0 / (double)(rows_per_g * v.I);
    double *part = scratch_zero(4, (size_t)(2 * nt * P) * sizeof(double));
    _Pragma("omp parallel num_threads(nt)")
    {
        T me[BUF], bs[BUF], bp[BUF], e1[BUF], e2[BUF], e3[BUF];
        double ss[BUF], sp[BUF];
        double *tg = part + 2 * thread_id() * P, *tb = tg + P;
        _Pragma("omp for schedule(static)")
        for (i64 it = 0; it < items; ++it) {
            const i64 g = it / ncc, c0 = (it % ncc) * cchunk;
            const i64 cn = v.C - c0 < cchunk ? v.C - c0 : cchunk, len = cn * v.I;
            const i64 k0 = g * v.C + c0, o0 = c0 * v.I;
            SPREAD(me, mean)
            for (i64 c = 0; c < cn; ++c) { ss[c] = 0; sp[c] = 0; }
            for (i64 r0 = 0; r0 < rows_per_g; r0 += SUB_ROWS) { /* T sums, then double */
                const i64 r1 = r0 + SUB_ROWS < rows_per_g ? r0 + SUB_ROWS : rows_per_g;
                for (i64 e = 0; e < len; ++e) { bs[e] = 0; bp[e] = 0; }
                ROW_RUNS_BEGIN(r0, r1)
                    CAT(sum_grads_, SUFFIX)(dy + off_ + o0, x + off_ + o0, len, nr_, v.sm, me, bs,
                                         bp);
                ROW_RUNS_END
                for (i64 c = 0; c < cn; ++c) {
                    T a = 0, b = 0;
                    for (i64 i = 0; i < v.I; ++i) {
                        a += bs[c * v.I + i];
                        b += bp[c * v.I + i];
                    }
                    ss[c] += (double)a;
                    sp[c] += (double)b;
                }
            }
            for (i64 c = 0; c < cn; ++c) {
                const i64 k = k0 + c, p = k % P;
                const double iv = (double)inv[k];
                tg[p] += slope[p] * iv * sp[c] + intercept[p] * ss[c];
                tb[p] += ss[c];
                const T a1 = (T)(ss[c] * inv_n), a2 = (T)(iv * iv * sp[c] * inv_n);
                const T a3 = (T)(iv * gs[p]);
                for (i64 i = 0; i < v.I; ++i) {
                    e1[c * v.I + i] = a1;
                    e2[c * v.I + i] = a2;
                    e3[c * v.I + i] = a3;
                }
            }
            if (dx == NULL) continue;
            ROW_RUNS_BEGIN(0, rows_per_g)
                CAT(dx_rows_, SUFFIX)(dy + off_ + o0, x + off_ + o0, dx + off_ + o0, len, nr_, v.sm,
                                 me, e1, e2, e3);
            ROW_RUNS_END
        }
    }
    sum_partials(part, nt, P, dg, db_);
    return 1;
}

/* sum_dy[k] = Σ dy, sum_dyxc[k] = Σ dy·(x − mean[k]); dy has x's strides */
static void CAT(reduce_, SUFFIX)(const S *dy, const S *x, view_t v, const T *mean, double *sum_dy,
                            double *sum_dyxc, int nt) {
    const i64 K = v.G * v.C;
    double *acc = NULL; /* Σdy, Σdy·(x − μ) per partial (thread or row segment) */
    int parts = nt;
    if (SHORT_BLOCKS(v)) {
        SHORT_ITEMS
        acc = scratch_zero(1, (size_t)(2 * parts * K) * sizeof(double));
        _Pragma("omp parallel num_threads(nt)")
        {
            double *ts = acc + 2 * thread_id() * K, *tp = ts + K;
            T me[BUF], bs[BUF], bp[BUF];
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                ITEM_RANGE
                const i64 k0 = g * v.C + c0, len = cn * v.I, o0 = c0 * v.I;
                SPREAD(me, mean)
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) { /* T sums, then double */
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;
                    for (i64 e = 0; e < len; ++e) { bs[e] = 0; bp[e] = 0; }
                    ROW_RUNS_BEGIN(r0, r1)
                        CAT(sum_grads_, SUFFIX)(dy + off_ + o0, x + off_ + o0, len, nr_, v.sm, me,
                                             bs, bp);
                    ROW_RUNS_END
                    for (i64 c = 0; c < cn; ++c) {
                        T a = 0, b = 0;
                        for (i64 i = 0; i < v.I; ++i) { a += bs[c * v.I + i]; b += bp[c * v.I + i]; }
                        ts[k0 + c] += (double)a;
                        tp[k0 + c] += (double)b;
                    }
                }
            }
        }
    } else if (v.I == 1 && v.sc == 1) {
        ROW_ITEMS(S)
        if (nblk == 1) { /* every row of a chunk in one block: write the sums directly */
            _Pragma("omp parallel num_threads(nt)")
            {
                T bs[BUF], bp[BUF];
                _Pragma("omp for schedule(static)")
                for (i64 it = 0; it < items; ++it) {
                    ITEM_RANGE
                    const T *restrict mu = mean + g * v.C + c0;
                    for (i64 c = 0; c < cn; ++c) { bs[c] = 0; bp[c] = 0; }
                    ROW_RUNS_BEGIN(seg0, seg1)
                        CAT(sum_grads_, SUFFIX)(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu,
                                             bs, bp);
                    ROW_RUNS_END
                    double *os = sum_dy + g * v.C + c0, *op = sum_dyxc + g * v.C + c0;
                    for (i64 c = 0; c < cn; ++c) { os[c] = (double)bs[c]; op[c] = (double)bp[c]; }
                }
            }
            return;
        }
        parts = (int)nseg;
        acc = scratch_zero(1, (size_t)(2 * parts * K) * sizeof(double));
        _Pragma("omp parallel num_threads(nt)")
        {
            T bs[BUF], bp[BUF];
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                ITEM_RANGE
                double *ts = acc + 2 * s_ * K + g * v.C + c0, *tp = ts + K;
                const T *restrict mu = mean + g * v.C + c0;
                BLOCKS_BEGIN
                    for (i64 c = 0; c < cn; ++c) { bs[c] = 0; bp[c] = 0; }
                    ROW_RUNS_BEGIN(r0, r1)
                        CAT(sum_grads_, SUFFIX)(dy + off_ + c0, x + off_ + c0, cn, nr_, v.sm, mu,
                                             bs, bp);
                    ROW_RUNS_END
                    for (i64 c = 0; c < cn; ++c) {
                        ts[c] += (double)bs[c];
                        tp[c] += (double)bp[c];
                    }
                BLOCKS_END
            }
        }
    } else {
        RUN_ITEMS
        const int contiguous = v.si == 1;
        acc = scratch_zero(1, (size_t)(2 * parts * K) * sizeof(double));
        _Pragma("omp parallel num_threads(nt)")
        {
            double *ts = acc + 2 * thread_id() * K, *tp = ts + K;
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                RUN_ITEM_BEGIN
                const T mu = mean[k];
                if (contiguous) {
                    for (i64 i0 = 0; i0 < v.I; i0 += BUF) {
                        const i64 len = v.I - i0 < BUF ? v.I - i0 : BUF;
                        T s, q;
                        CAT(reduce_run_, SUFFIX)(dy + off + i0, x + off + i0, len, mu, &s, &q);
                        ts[k] += (double)s;
                        tp[k] += (double)q;
                    }
                } else {
                    double s = 0, q = 0;
                    for (i64 i = 0; i < v.I; ++i) {
                        const double dd = (double)LD(dy[off + i * v.si]);
                        s += dd;
                        q += dd * ((double)LD(x[off + i * v.si]) - (double)mu);
                    }
                    ts[k] += s;
                    tp[k] += q;
                }
                RUN_ITEM_END
            }
        }
    }
    for (i64 k = 0; k < K; ++k) { sum_dy[k] = 0; sum_dyxc[k] = 0; }
    for (int t = 0; t < parts; ++t) {
        const double *ts = acc + 2 * t * K, *tp = ts + K;
        for (i64 k = 0; k < K; ++k) { sum_dy[k] += ts[k]; sum_dyxc[k] += tp[k]; }
    }
}

/* dx = (dy − k1[k] − (x − mean[k])·k2[k])·k3[k]; dy and dx have x's strides */
static void CAT(dx_, SUFFIX)(const S *dy, const S *x, S *dx, view_t v, const T *mean, const T *k1,
                        const T *k2, const T *k3, int nt) {
    if (SHORT_BLOCKS(v)) {
        SHORT_ITEMS
        _Pragma("omp parallel num_threads(nt)")
        {
            T me[BUF], e1[BUF], e2[BUF], e3[BUF];
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                ITEM_RANGE
                const i64 k0 = g * v.C + c0, len = cn * v.I, o0 = c0 * v.I;
                SPREAD(me, mean) SPREAD(e1, k1) SPREAD(e2, k2) SPREAD(e3, k3)
                ROW_RUNS_BEGIN(seg0, seg1)
                    CAT(dx_rows_, SUFFIX)(dy + off_ + o0, x + off_ + o0, dx + off_ + o0, len, nr_,
                                     v.sm, me, e1, e2, e3);
                ROW_RUNS_END
            }
        }
    } else if (v.I == 1 && v.sc == 1) {
        OUTPUT_ROWS_BEGIN(S)
            if (nts)
                CAT(dx_rows_nt_, SUFFIX)(dy + off_ + c0, x + off_ + c0, dx + off_ + c0, cn, nr_,
                                         v.sm, mean + k0, k1 + k0, k2 + k0, k3 + k0);
            else
                CAT(dx_rows_, SUFFIX)(dy + off_ + c0, x + off_ + c0, dx + off_ + c0, cn, nr_,
                                      v.sm, mean + k0, k1 + k0, k2 + k0, k3 + k0);
        OUTPUT_ROWS_END
    } else {
        RUN_ITEMS
        const int contiguous = v.si == 1;
        _Pragma("omp parallel num_threads(nt)")
        {
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                RUN_ITEM_BEGIN
                const T mu = mean[k], b1 = k1[k], b2 = k2[k], b3 = k3[k];
                if (contiguous) {
                    CAT(dx_run_, SUFFIX)(dy + off, x + off, dx + off, v.I, mu, b1, b2, b3);
                } else {
                    for (i64 i = 0; i < v.I; ++i) {
                        const i64 e = off + i * v.si;
                        dx[e] = ST((LD(dy[e]) - b1 - (LD(x[e]) - mu) * b2) * b3);
                    }
                }
                RUN_ITEM_END
            }
        }
    }
}
