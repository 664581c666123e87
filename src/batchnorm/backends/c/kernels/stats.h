/* Statistics: block moments of row layouts and the per-channel mean and biased
   variance of any layout.
   Part of the kernels of one element type (typed.h: S, T, SUFFIX, SQRT, VT, L, TSUF, LD,
   ST, ROW defined by the includer, kernels.c). */

/* Row layouts: the mean mu[c] and m2[c] = Σ(x − mu)² of the rows [r0, r1) of chunk
   (g, c0 .. c0 + cn − 1), in T: a shifted sum (shift: the range's first row, so a large
   mean does not swamp it), then the squared deviations from the mean. */
static void CAT(block_moments_, SUFFIX)(const S *x, view_t v, i64 g, i64 c0, i64 cn, i64 r0, i64 r1,
                                   T *restrict mu, T *restrict m2) {
    T fb[BUF];
    const T *restrict first = ROW(x + (r0 / v.M) * v.sa + g * v.sg + (r0 % v.M) * v.sm + c0, cn, fb);
    for (i64 c = 0; c < cn; ++c) { mu[c] = 0; m2[c] = 0; }
    ROW_RUNS_BEGIN(r0, r1)
        CAT(sum_shifted_, SUFFIX)(x + off_ + c0, cn, nr_, v.sm, first, mu);
    ROW_RUNS_END
    const T inv_n = (T)1 / (T)(r1 - r0);
    for (i64 c = 0; c < cn; ++c) mu[c] = first[c] + mu[c] * inv_n;
    ROW_RUNS_BEGIN(r0, r1)
        CAT(sum_squares_, SUFFIX)(x + off_ + c0, cn, nr_, v.sm, mu, m2);
    ROW_RUNS_END
}

/* mean and biased variance per channel (K = G*C outputs, double) */
static void CAT(stats_, SUFFIX)(const S *x, view_t v, double *mean, double *var, int nt) {
    const i64 K = v.G * v.C;
    double *acc = NULL; /* n, m, q per partial (thread or row segment) */
    int parts = nt;
    if (v.si == 1 && v.I > 1 && v.I <= SHORT_RUN) {
        /* short runs (multi-axis with a small last dimension): like row mode, rows of a    */
        /* channel chunk whose entries are runs of I values; blocks of a merged per channel */
        const i64 rows_per_g = v.A * v.M;
        const i64 cchunk = v.C < BUF / v.I ? v.C : (BUF / v.I > 0 ? BUF / v.I : 1);
        const i64 ncc = (v.C + cchunk - 1) / cchunk;
        i64 block = ROW_BLOCK_BYTES / (i64)sizeof(S) / (cchunk * v.I);
        if (block < 1) block = 1;
        const i64 nblk = (rows_per_g + block - 1) / block;
        const i64 items = v.G * ncc * nblk;
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));
        _Pragma("omp parallel num_threads(nt)")
        {
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;
            T bs[BUF], bq[BUF], sh[BUF], xb[BUF], se[BUF], ae[BUF];
            double dm[BUF], dq[BUF];
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                const i64 b = it % nblk, cc = (it / nblk) % ncc, g = it / (nblk * ncc);
                const i64 c0 = cc * cchunk, cn = v.C - c0 < cchunk ? v.C - c0 : cchunk;
                const i64 r0 = b * block, r1 = r0 + block < rows_per_g ? r0 + block : rows_per_g;
                const S *first = x + (r0 / v.M) * v.sa + g * v.sg + (r0 % v.M) * v.sm;
                for (i64 c = 0; c < cn; ++c) {
                    bs[c] = 0;
                    bq[c] = 0;
                    sh[c] = ROW(first + (c0 + c) * v.sc, 1, xb)[0];
                }
                if (v.sc == v.I) { /* adjacent runs: one contiguous block, element-wise sums */
                    const i64 len = cn * v.I;
                    for (i64 c = 0; c < cn; ++c)
                        for (i64 i = 0; i < v.I; ++i) { se[c * v.I + i] = sh[c]; ae[c * v.I + i] = 0; }
                    ROWS_BEGIN(r0, r1)
                        const T *restrict pv = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);
                        for (i64 e = 0; e < len; ++e) ae[e] += pv[e] - se[e];
                    ROWS_END
                    const T inv_n = (T)1 / (T)((r1 - r0) * v.I);
                    for (i64 c = 0; c < cn; ++c) {
                        T t = 0;
                        for (i64 i = 0; i < v.I; ++i) t += ae[c * v.I + i];
                        bs[c] = sh[c] + t * inv_n;
                        for (i64 i = 0; i < v.I; ++i) { se[c * v.I + i] = bs[c]; ae[c * v.I + i] = 0; }
                    }
                    ROWS_BEGIN(r0, r1)
                        const T *restrict pv = ROW(x + ROW_OFFSET + c0 * v.I, len, xb);
                        for (i64 e = 0; e < len; ++e) { T d = pv[e] - se[e]; ae[e] += d * d; }
                    ROWS_END
                    for (i64 c = 0; c < cn; ++c) {
                        T t = 0;
                        for (i64 i = 0; i < v.I; ++i) t += ae[c * v.I + i];
                        bq[c] = t;
                    }
                } else {
                    ROWS_BEGIN(r0, r1)
                        for (i64 c = 0; c < cn; ++c) {
                            const T *restrict pv = ROW(x + ROW_OFFSET + (c0 + c) * v.sc, v.I, xb);
                            bs[c] += CAT(sum_dev_, SUFFIX)(pv, v.I, sh[c]);
                        }
                    ROWS_END
                    const T inv_n = (T)1 / (T)((r1 - r0) * v.I);
                    for (i64 c = 0; c < cn; ++c) bs[c] = sh[c] + bs[c] * inv_n;
                    ROWS_BEGIN(r0, r1)
                        for (i64 c = 0; c < cn; ++c) {
                            const T *restrict pv = ROW(x + ROW_OFFSET + (c0 + c) * v.sc, v.I, xb);
                            const T mu = bs[c];
                            bq[c] += CAT(sum_sq_dev_, SUFFIX)(pv, v.I, mu);
                        }
                    ROWS_END
                }
                for (i64 c = 0; c < cn; ++c) { dm[c] = (double)bs[c]; dq[c] = (double)bq[c]; }
                merge_block(tn + g * v.C + c0, tm + g * v.C + c0, tq + g * v.C + c0,
                            (double)((r1 - r0) * v.I), dm, dq, cn);
            }
        }
    } else if (v.si == 1 && v.I > 1) {
        /* short runs are taken rb at a time (same channel, consecutive a) */
        const i64 rb = v.I >= BUF ? 1 : BUF / v.I;
        const i64 nab = (v.A + rb - 1) / rb;
        const i64 items = nab * v.G * v.M * v.C;
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));
        _Pragma("omp parallel num_threads(nt)")
        {
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;
            T xb[BUF];
            const T *pr[BUF];
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                i64 rest_ = it / nab;
                const i64 c = rest_ % v.C;
                rest_ /= v.C;
                const i64 m = rest_ % v.M, g = rest_ / v.M, k = g * v.C + c;
                const i64 a0 = (it % nab) * rb, a1 = a0 + rb < v.A ? a0 + rb : v.A;
                const S *base = x + g * v.sg + m * v.sm + c * v.sc;
                for (i64 i0 = 0; i0 < v.I; i0 += BUF) { /* one piece unless rb > 1 */
                    const i64 len = v.I - i0 < BUF ? v.I - i0 : BUF;
                    const i64 runs = a1 - a0;
                    T s = 0, shift = 0;
                    for (i64 j = 0; j < runs; ++j) {
                        pr[j] = ROW(base + (a0 + j) * v.sa + i0, len, xb + j * len);
                        if (j == 0) shift = pr[0][0]; /* a large mean does not swamp the sum */
                        const T *restrict pv = pr[j];
                        s += CAT(sum_dev_, SUFFIX)(pv, len, shift);
                    }
                    const double count = (double)(runs * len);
                    const T mu = shift + s / (T)count;
                    T ss = 0;
                    for (i64 j = 0; j < runs; ++j) {
                        const T *restrict pv = pr[j];
                        ss += CAT(sum_sq_dev_, SUFFIX)(pv, len, mu);
                    }
                    const double bm = (double)mu, bq = (double)ss;
                    merge_block(tn + k, tm + k, tq + k, count, &bm, &bq, 1);
                }
            }
        }
    } else if (v.I == 1 && v.sc == 1) {
        ROW_ITEMS(S)
        if (nblk == 1) { /* every row of a chunk in one block: exact two-pass, no merge */
            _Pragma("omp parallel num_threads(nt)")
            {
                T bs[BUF], bq[BUF];
                _Pragma("omp for schedule(static)")
                for (i64 it = 0; it < items; ++it) {
                    ITEM_RANGE
                    CAT(block_moments_, SUFFIX)(x, v, g, c0, cn, seg0, seg1, bs, bq);
                    double *om = mean + g * v.C + c0, *ov = var + g * v.C + c0;
                    for (i64 c = 0; c < cn; ++c) {
                        om[c] = (double)bs[c];
                        ov[c] = (double)bq[c] / (double)(seg1 - seg0);
                    }
                }
            }
            return;
        }
        parts = (int)nseg;
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));
        _Pragma("omp parallel num_threads(nt)")
        {
            T bs[BUF], bq[BUF];
            double dm[BUF], dq[BUF];
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                ITEM_RANGE
                double *tn = acc + 3 * s_ * K + g * v.C + c0, *tm = tn + K, *tq = tm + K;
                BLOCKS_BEGIN
                    CAT(block_moments_, SUFFIX)(x, v, g, c0, cn, r0, r1, bs, bq);
                    for (i64 c = 0; c < cn; ++c) { dm[c] = (double)bs[c]; dq[c] = (double)bq[c]; }
                    merge_block(tn, tm, tq, (double)(r1 - r0), dm, dq, cn);
                BLOCKS_END
            }
        }
    } else {
        RUN_ITEMS
        acc = scratch_zero(0, (size_t)(3 * parts * K) * sizeof(double));
        _Pragma("omp parallel num_threads(nt)")
        {
            double *tn = acc + 3 * thread_id() * K, *tm = tn + K, *tq = tm + K;
            _Pragma("omp for schedule(static)")
            for (i64 it = 0; it < items; ++it) {
                RUN_ITEM_BEGIN
                double s = 0;
                for (i64 i = 0; i < v.I; ++i) s += (double)LD(x[off + i * v.si]);
                const double mu = s / (double)v.I;
                double q = 0;
                for (i64 i = 0; i < v.I; ++i) {
                    const double d = (double)LD(x[off + i * v.si]) - mu;
                    q += d * d;
                }
                merge_block(tn + k, tm + k, tq + k, (double)v.I, &mu, &q, 1);
                RUN_ITEM_END
            }
        }
    }
    /* merge the partials; the first one holds the result */
    for (int t = 1; t < parts; ++t) {
        const double *un = acc + 3 * t * K, *um = un + K, *uq = um + K;
        for (i64 k = 0; k < K; ++k) {
            if (un[k] > 0) merge_block(acc + k, acc + K + k, acc + 2 * K + k, un[k], um + k,
                                       uq + k, 1);
        }
    }
    for (i64 k = 0; k < K; ++k) {
        const double n = acc[k];
        mean[k] = n > 0 ? acc[K + k] : 0.0;
        var[k] = n > 0 ? acc[2 * K + k] / n : 0.0;
    }
}
