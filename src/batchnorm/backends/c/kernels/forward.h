/* The training forward's fused sweeps (row, plane and short-block layouts) and the
   normalize pass y = (x − mean)·scale + shift.
   Part of the kernels of one element type (typed.h: S, T, SUFFIX, SQRT, VT, L, TSUF, LD,
   ST, ROW defined by the includer, kernels.c). */

/* A sweep's output coefficients for a channel with mean mu and biased variance vr and its
   parameter p, renorm's r and d folded into a = gs[p], b = go[p] and slope/intercept[p]:
   iv = 1/√(vr + ε) in T like TensorFlow (returned), cs = iv·a and co = b. */
static inline __attribute__((always_inline)) T CAT(renorm_channel_, SUFFIX)(
    double mu, double vr, i64 p, double eps, const double *gs, const double *go, double *slope,
    double *intercept, const T *rm, const T *rs, double rmin, double rmax, double dmax, T *cs,
    T *co) {
    const T iv = (T)1 / SQRT((T)vr + (T)eps);
    double a = gs[p], b = go[p];
    fold_renorm(mu, vr, (double)rm[p], (double)rs[p], eps, rmin, rmax, dmax, &slope[p],
                &intercept[p], &a, &b);
    *cs = (T)((double)iv * a);
    *co = (T)b;
    return iv;
}

/* The same without renorm when rm is NULL: cs = iv·gs[p], co = go[p]. */
static inline T CAT(channel_coefficients_, SUFFIX)(double mu, double vr, i64 p, double eps,
                                                   const double *gs, const double *go,
                                                   double *slope, double *intercept,
                                                   const T *rm, const T *rs, double rmin,
                                                   double rmax, double dmax, T *cs, T *co) {
    if (rm != NULL)
        return CAT(renorm_channel_, SUFFIX)(mu, vr, p, eps, gs, go, slope, intercept, rm, rs,
                                            rmin, rmax, dmax, cs, co);
    const T iv = (T)1 / SQRT((T)vr + (T)eps);
    *cs = (T)((double)iv * gs[p]);
    *co = (T)go[p];
    return iv;
}

/* renorm_channel for n channels whose parameters are p0 .. p0 + n − 1,
   from their means mu and Σ(x − μ)² m2 over the count 1/inv_cnt; adds each channel's mean
   and variance into tm, tv. Its own loop with unaliased arrays, so that it vectorizes:
   square roots and divisions one channel at a time cost (256, 1024) with one thread a
   tenth of its renorm forward pass. */
static void CAT(renorm_coefficients_, SUFFIX)(
    i64 n, i64 p0, const T *restrict mu, const double *restrict m2, double inv_cnt, double eps,
    const double *restrict gs, const double *restrict go, double *restrict slope,
    double *restrict intercept, const T *restrict rm, const T *restrict rs, double rmin,
    double rmax, double dmax, T *restrict ti, T *restrict cs, T *restrict co,
    double *restrict tm, double *restrict tv) {
    for (i64 c = 0; c < n; ++c) {
        const i64 p = p0 + c;
        const double vr = m2[c] * inv_cnt;
        ti[c] = CAT(renorm_channel_, SUFFIX)((double)mu[c], vr, p, eps, gs, go, slope,
                                             intercept, rm, rs, rmin, rmax, dmax, &cs[c],
                                             &co[c]);
        tm[p] += (double)mu[c];
        tv[p] += vr;
    }
}

/* Row layouts whose rows fit in cache a chunk of channels at a time (small batches, ghost
   batches): statistics, per-channel coefficients and the output in one sweep that reads
   x from memory once. out = (x − μ[k])·inv[k]·gs[p] + go[p], k = g·C + c, p = k mod P;
   writes mean[k], inv[k] = 1/√(σ²[k] + ε) when mean is not NULL, and adds Σ_g μ and Σ_g σ²
   into pm/pv (per-thread partials in thread order). Sums run in T over at most SUB_ROWS
   rows, then in double (shifted by the chunk's first row, then centred on the mean).
   With renorm (rm, rs given; no ghost batches, more than COL_ROWS rows: channel k is
   parameter k) r and d fold into the coefficients and into slope/intercept, as in
   plane_stats_affine. Returns 0 (nothing done) when the layout does not fit. */
static int CAT(stats_affine_, SUFFIX)(const S *x, S *out, view_t v, i64 P, double eps,
                                 const double *gs, const double *go, double *slope,
                                 double *intercept, const T *rm, const T *rs, double rmin,
                                 double rmax, double dmax, T *mean, T *inv, double *pm,
                                 double *pv, int nt) {
    if (!(v.I == 1 && v.sc == 1)) return 0;
    SWEEP_ITEMS(S)
    if (!sweep_ok || (rm != NULL && (v.G * v.C != P || rows_per_g <= COL_ROWS))) return 0;
    double *part = scratch_zero(0, (size_t)(2 * nt * P) * sizeof(double));
    _Pragma("omp parallel num_threads(nt)")
    {
        T bs[BUF], fb[BUF], cs[BUF], co[BUF], mu[BUF], ti[BUF];
        double ds[BUF], dv[BUF], fm[BUF], fv[BUF];
        double *tm = part + 2 * thread_id() * P, *tv = tm + P;
        _Pragma("omp for schedule(static)")
        for (i64 it = 0; it < items; ++it) {
            ITEM_RANGE
            const i64 k0 = g * v.C + c0;
            if (COL_ITEM(SUFFIX)) {
                const i64 off0 = COL_ITEM_OFFSET;
                T *mo = mean != NULL ? mean + k0 : mu, *io = mean != NULL ? inv + k0 : ti;
                CAT(col_stats_affine_, SUFFIX)(x + off0, out + off0, cn, seg1 - seg0, v.sm, k0, P, eps,
                                          gs, go, mo, io, dv);
                FOLDED_PARAM_RUNS(SWEEP_SUMS, T, SQRT, fm, fv, tm, tv)
                continue;
            }
            if (seg1 - seg0 <= SUB_ROWS) { /* one sub-block: the sums stay in T */
                CAT(block_moments_, SUFFIX)(x, v, g, c0, cn, seg0, seg1, mu, bs);
                for (i64 c = 0; c < cn; ++c) dv[c] = (double)bs[c];
            } else { /* T sums over SUB_ROWS rows, then double */
                const T *restrict first = ROW(x + g * v.sg + c0, cn, fb);
                for (i64 c = 0; c < cn; ++c) ds[c] = 0;
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) {
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;
                    for (i64 c = 0; c < cn; ++c) bs[c] = 0;
                    ROW_RUNS_BEGIN(r0, r1)
                        CAT(sum_shifted_, SUFFIX)(x + off_ + c0, cn, nr_, v.sm, first, bs);
                    ROW_RUNS_END
                    for (i64 c = 0; c < cn; ++c) ds[c] += (double)bs[c];
                }
                const double inv_cnt = 1.0 / (double)(seg1 - seg0);
                for (i64 c = 0; c < cn; ++c) {
                    mu[c] = (T)((double)first[c] + ds[c] * inv_cnt);
                    dv[c] = 0;
                }
                for (i64 r0 = seg0; r0 < seg1; r0 += SUB_ROWS) {
                    const i64 r1 = r0 + SUB_ROWS < seg1 ? r0 + SUB_ROWS : seg1;
                    for (i64 c = 0; c < cn; ++c) bs[c] = 0;
                    ROW_RUNS_BEGIN(r0, r1)
                        CAT(sum_squares_, SUFFIX)(x + off_ + c0, cn, nr_, v.sm, mu, bs);
                    ROW_RUNS_END
                    for (i64 c = 0; c < cn; ++c) dv[c] += (double)bs[c];
                }
            }
            const double inv_cnt = 1.0 / (double)(seg1 - seg0); /* dv: Σ(x − μ)² per channel */
            if (rm != NULL) { /* channel k0 + c is parameter k0 + c */
                CAT(renorm_coefficients_, SUFFIX)(cn, k0, mu, dv, inv_cnt, eps, gs, go, slope,
                                                  intercept, rm, rs, rmin, rmax, dmax, ti, cs,
                                                  co, tm, tv);
            } else {
                FOLDED_PARAM_RUNS(SWEEP_COEFFICIENTS, T, SQRT, fm, fv, tm, tv)
            }
            if (mean != NULL) { /* kept for the backward */
                for (i64 c = 0; c < cn; ++c) { mean[k0 + c] = mu[c]; inv[k0 + c] = ti[c]; }
            }
            ROW_RUNS_BEGIN(seg0, seg1)
                CAT(affine_rows_, SUFFIX)(x + off_ + c0, out + off_ + c0, cn, nr_, v.sm,
                                     mu, cs, co);
            ROW_RUNS_END
        }
    }
    sum_partials(part, nt, P, pm, pv);
    return 1;
}

/* Plane layouts (runs of I > SHORT_RUN values) whose A·M runs of one channel fit in
   PLANE_SWEEP_BYTES, with at least a channel per thread: per channel, statistics,
   coefficients and output in one sweep that reads x from memory once and revisits the
   runs in L2. The mean is a sum shifted by the channel's first value (T per piece of at
   most BUF values, then double), the variance the squared deviations from that mean. With
   renorm (rm, rs given; no ghost batches: channel k is parameter k) r and d fold into
   the coefficients and into slope/intercept, as the two-pass driver does. Same outputs as
   stats_affine; returns 0 (nothing done) when the layout does not fit. */
static int CAT(plane_stats_affine_, SUFFIX)(const S *x, S *out, view_t v, i64 P, double eps,
                                       const double *gs, const double *go, double *slope,
                                       double *intercept, const T *rm, const T *rs,
                                       double rmin, double rmax, double dmax, T *mean,
                                       T *inv, double *pm, double *pv, int nt) {
    PLANE_SWEEP_ITEMS(S)
    if (!sweep_ok || (rm != NULL && items != P)) return 0;
    const double inv_cnt = 1.0 / (double)(runs * v.I);
    double *part = scratch_zero(0, (size_t)(2 * nt * P) * sizeof(double));
    _Pragma("omp parallel num_threads(nt)")
    {
        T xb[BUF];
        double *tm = part + 2 * thread_id() * P, *tv = tm + P;
        _Pragma("omp for schedule(static)")
        for (i64 k = 0; k < items; ++k) {
            const i64 p = k % P, base = (k / v.C) * v.sg + (k % v.C) * v.sc;
            const T shift = ROW(x + base, 1, xb)[0];
            double ds = 0, dq = 0;
            CHANNEL_RUNS_BEGIN RUN_PIECES_BEGIN
                ds += (double)CAT(sum_dev_, SUFFIX)(ROW(x + off + i0, len, xb), len, shift);
            RUN_PIECES_END CHANNEL_RUNS_END
            const double md = (double)shift + ds * inv_cnt;
            const T mu = (T)md;
            CHANNEL_RUNS_BEGIN RUN_PIECES_BEGIN
                dq += (double)CAT(sum_sq_dev_, SUFFIX)(ROW(x + off + i0, len, xb), len, mu);
            RUN_PIECES_END CHANNEL_RUNS_END
            const double vr = dq * inv_cnt;
            T cs, co;
            const T iv = CAT(channel_coefficients_, SUFFIX)(md, vr, p, eps, gs, go, slope,
                                                          intercept, rm, rs, rmin, rmax, dmax,
                                                          &cs, &co);
            tm[p] += md;
            tv[p] += vr;
            if (mean != NULL) { mean[k] = mu; inv[k] = iv; }
            CHANNEL_RUNS_BEGIN
                CAT(affine_run_, SUFFIX)(x + off, out + off, v.I, mu, cs, co);
            CHANNEL_RUNS_END
        }
    }
    sum_partials(part, nt, P, pm, pv);
    return 1;
}

/* Short blocks (SHORT_BLOCKS: multi-axis NCHW, small planes) whose rows of a chunk of
   channels fit in PLANE_SWEEP_BYTES, with at least a chunk per thread: the same sweep as
   plane_stats_affine, a chunk of channels (cn·I adjacent values per row) at a time, with
   element-wise sums (T over SUB_ROWS rows, then double per channel). */
static int CAT(short_stats_affine_, SUFFIX)(const S *x, S *out, view_t v, i64 P, double eps,
                                       const double *gs, const double *go, double *slope,
                                       double *intercept, const T *rm, const T *rs,
                                       double rmin, double rmax, double dmax, T *mean,
                                       T *inv, double *pm, double *pv, int nt) {
    if (!SHORT_BLOCKS(v)) return 0;
    SHORT_SWEEP_ITEMS(S)
    if (!sweep_ok || (rm != NULL && v.G * v.C != P)) return 0;
    const double inv_cnt = 1.0 / (double)(rows_per_g * v.I);
    double *part = scratch_zero(0, (size_t)(2 * nt * P) * sizeof(double));
    _Pragma("omp parallel num_threads(nt)")
    {
        T xb[BUF], ae[BUF], se[BUF], sh[BUF], mu[BUF], cs[BUF], co[BUF];
        double ds[BUF];
        double *tm = part + 2 * thread_id() * P, *tv = tm + P;
        _Pragma("omp for schedule(static)")
        for (i64 it = 0; it < items; ++it) {
            const i64 g = it / ncc, c0 = (it % ncc) * cchunk;
            const i64 cn = v.C - c0 < cchunk ? v.C - c0 : cchunk, len = cn * v.I;
            const i64 k0 = g * v.C + c0;
            const S *first = x + g * v.sg + c0 * v.I;
            for (i64 c = 0; c < cn; ++c) { sh[c] = ROW(first + c * v.I, 1, xb)[0]; ds[c] = 0; }
            for (int pass = 0; pass < 2; ++pass) { /* shifted sums, then squared deviations */
                const T *center = pass == 0 ? sh : mu;
                for (i64 c = 0; c < cn; ++c)
                    for (i64 i = 0; i < v.I; ++i) se[c * v.I + i] = center[c];
                for (i64 r0 = 0; r0 < rows_per_g; r0 += SUB_ROWS) {
                    const i64 r1 = r0 + SUB_ROWS < rows_per_g ? r0 + SUB_ROWS : rows_per_g;
                    for (i64 e = 0; e < len; ++e) ae[e] = 0;
                    if (pass == 0) {
                        ROWS_BEGIN(r0, r1)
                            const T *restrict pr = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);
                            for (i64 e = 0; e < len; ++e) ae[e] += pr[e] - se[e];
                        ROWS_END
                    } else {
                        ROWS_BEGIN(r0, r1)
                            const T *restrict pr = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);
                            for (i64 e = 0; e < len; ++e) {
                                const T d = pr[e] - se[e];
                                ae[e] += d * d;
                            }
                        ROWS_END
                    }
                    for (i64 c = 0; c < cn; ++c) {
                        T t = 0;
                        for (i64 i = 0; i < v.I; ++i) t += ae[c * v.I + i];
                        ds[c] += (double)t;
                    }
                }
                if (pass == 0) { /* the mean; ds then collects Σ(x − μ)² */
                    for (i64 c = 0; c < cn; ++c) {
                        const double md = (double)sh[c] + ds[c] * inv_cnt;
                        mu[c] = (T)md;
                        tm[(k0 + c) % P] += md;
                        ds[c] = 0;
                    }
                }
            }
            for (i64 c = 0; c < cn; ++c) {
                const i64 k = k0 + c, p = k % P;
                const double vr = ds[c] * inv_cnt;
                const T iv = CAT(channel_coefficients_, SUFFIX)((double)mu[c], vr, p, eps, gs, go,
                                                              slope, intercept, rm, rs, rmin,
                                                              rmax, dmax, &cs[c], &co[c]);
                tv[p] += vr;
                if (mean != NULL) { mean[k] = mu[c]; inv[k] = iv; }
            }
            for (i64 c = 0; c < cn; ++c)
                for (i64 i = 0; i < v.I; ++i) {
                    ae[c * v.I + i] = mu[c];
                    se[c * v.I + i] = cs[c];
                    xb[c * v.I + i] = co[c];
                }
            ROW_RUNS_BEGIN(0, rows_per_g)
                CAT(affine_rows_, SUFFIX)(x + off_ + c0 * v.I, out + off_ + c0 * v.I, len, nr_, v.sm,
                                     ae, se, xb);
            ROW_RUNS_END
        }
    }
    sum_partials(part, nt, P, pm, pv);
    return 1;
}

/* out = (x - mean[k]) * scale[k] + shift[k]; out has x's strides */
static void CAT(affine_, SUFFIX)(const S *x, S *out, view_t v, const T *mean, const T *scale,
                            const T *shift, int nt) {
    if (SHORT_BLOCKS(v)) {
        SHORT_ITEMS
        _Pragma("omp parallel num_threads(nt)")
        {
            T me[BUF], se[BUF], oe[BUF];
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                ITEM_RANGE
                const i64 k0 = g * v.C + c0, len = cn * v.I;
                SPREAD(me, mean) SPREAD(se, scale) SPREAD(oe, shift)
                ROW_RUNS_BEGIN(seg0, seg1)
                    CAT(affine_rows_, SUFFIX)(x + off_ + c0 * v.I, out + off_ + c0 * v.I, len,
                                         nr_, v.sm, me, se, oe);
                ROW_RUNS_END
            }
        }
    } else if (v.si == 1 && v.I > 1) {
        RUN_ITEMS
        _Pragma("omp parallel num_threads(nt)")
        {
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                RUN_ITEM_BEGIN
                CAT(affine_run_, SUFFIX)(x + off, out + off, v.I, mean[k], scale[k], shift[k]);
                RUN_ITEM_END
            }
        }
    } else if (v.I == 1 && v.sc == 1) {
        OUTPUT_ROWS_BEGIN(S)
            if (nts)
                CAT(affine_rows_nt_, SUFFIX)(x + off_ + c0, out + off_ + c0, cn, nr_, v.sm,
                                             mean + k0, scale + k0, shift + k0);
            else
                CAT(affine_rows_, SUFFIX)(x + off_ + c0, out + off_ + c0, cn, nr_, v.sm,
                                          mean + k0, scale + k0, shift + k0);
        OUTPUT_ROWS_END
    } else {
        RUN_ITEMS
        _Pragma("omp parallel for num_threads(nt) schedule(static)")
        for (i64 it = 0; it < items; ++it) {
            RUN_ITEM_BEGIN
            for (i64 i = 0; i < v.I; ++i) {
                const i64 e = off + i * v.si;
                out[e] = ST((LD(x[e]) - mean[k]) * scale[k] + shift[k]);
            }
                RUN_ITEM_END
        }
    }
}
