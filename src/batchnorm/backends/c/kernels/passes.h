/* The whole passes (training forward and backward, inference forward and backward) and
   the single passes exported for the synchronized path.
   Part of the kernels of one element type (typed.h: S, T, SUFFIX, SQRT, VT, L, TSUF, LD,
   ST, ROW defined by the includer, kernels.c). */

/* TF's moving averages from the batch means pm and variances pv (Bessel's factor applied to
   the variance): m <- m − (m − value)·decay. With renorm (moving_stddev given) the moving
   standard deviation averages √(value + ε), the moving variance is derived from it, and
   renorm's own averages take rdecay. A loop per case over unaliased arrays, so that it
   vectorizes (a square root per parameter one at a time was a tenth of renorm's forward
   pass on (256, 1024) with one thread). */
static void CAT(moving_averages_, SUFFIX)(i64 P, const double *restrict pm,
                                          const double *restrict pv, double decay,
                                          double rdecay, double factor, double eps,
                                          T *restrict moving_mean, T *restrict moving_var,
                                          T *restrict moving_stddev, T *restrict renorm_mean,
                                          T *restrict renorm_stddev) {
    if (moving_stddev == NULL) {
        for (i64 p = 0; p < P; ++p) {
            moving_mean[p] = (T)((double)moving_mean[p] - ((double)moving_mean[p] - pm[p]) * decay);
            moving_var[p] = (T)((double)moving_var[p] - ((double)moving_var[p] - pv[p] * factor) * decay);
        }
        return;
    }
    for (i64 p = 0; p < P; ++p) {
        const double mu = pm[p], vr = pv[p], value = vr * factor;
        moving_mean[p] = (T)((double)moving_mean[p] - ((double)moving_mean[p] - mu) * decay);
        const double sd = (double)moving_stddev[p];
        moving_stddev[p] = (T)(sd - (sd - sqrt(value + eps)) * decay);
        const double mv = (double)moving_stddev[p] * (double)moving_stddev[p] - eps;
        moving_var[p] = (T)(isnan(mv) || mv > 0 ? mv : 0.0);
        const double rm = (double)renorm_mean[p], rs = (double)renorm_stddev[p];
        renorm_mean[p] = (T)(rm - (rm - mu) * rdecay);
        renorm_stddev[p] = (T)(rs - (rs - sqrt(vr + eps)) * rdecay);
    }
}

int CAT(bn_train_forward_, SUFFIX)(
    const S *x, S *y, const i64 *dims, const i64 *strides, i64 P, const T *gamma,
    const T *beta, double eps, T *renorm_mean, T *renorm_stddev, double rmin, double rmax,
    double dmax, const T *adj_scale, const T *adj_bias, double *state, T *moving_mean,
    T *moving_var, T *moving_stddev, double momentum, double renorm_momentum, int bessel,
    int keep, int threads) {
    const view_t v = make_view(dims, strides);
    const int nt = thread_count(threads);
    const i64 K = v.G * v.C, groups = K / P;
    const int par = K >= PAR_CHANNELS ? nt : 1;
    double *pm = state, *pv = state + P, *slope = state + 2 * P, *intercept = state + 3 * P;
    /* per channel, in T: in the state when a backward will read it (keep), else scratch */
    T *cmean = keep ? (T *)(state + 4 * P) : NULL, *cinv = keep ? cmean + K : NULL;
    { /* slope and intercept up to renorm's r and d: maybe one sweep */
        double *gs = scratch(3, (size_t)(2 * P) * sizeof(double)), *go = gs + P;
        for (i64 p = 0; p < P; ++p) {
            const double g = gamma ? (double)gamma[p] : 1.0;
            slope[p] = adj_scale != NULL ? (double)adj_scale[p] : 1.0;
            intercept[p] = adj_bias != NULL ? (double)adj_bias[p] : 0.0;
            gs[p] = slope[p] * g;
            go[p] = intercept[p] * g + (beta ? (double)beta[p] : 0.0);
        }
        if (CAT(stats_affine_, SUFFIX)(x, y, v, P, eps, gs, go, slope, intercept, renorm_mean,
                                       renorm_stddev, rmin, rmax, dmax, cmean, cinv, pm, pv,
                                       nt) ||
            CAT(plane_stats_affine_, SUFFIX)(x, y, v, P, eps, gs, go, slope, intercept, renorm_mean,
                                        renorm_stddev, rmin, rmax, dmax, cmean, cinv, pm, pv,
                                        nt) ||
            CAT(short_stats_affine_, SUFFIX)(x, y, v, P, eps, gs, go, slope, intercept, renorm_mean,
                                        renorm_stddev, rmin, rmax, dmax, cmean, cinv, pm, pv,
                                        nt)) {
            for (i64 p = 0; p < P; ++p) { pm[p] /= (double)groups; pv[p] /= (double)groups; }
            goto moving;
        }
    }
    double *mean = scratch(1, (size_t)(2 * K) * sizeof(double)), *inv = mean + K;
    if (!keep) { cmean = scratch(4, (size_t)(2 * K) * sizeof(T)); cinv = cmean + K; }
    CAT(stats_, SUFFIX)(x, v, mean, inv, nt); /* inv holds the variance until below */
    for (i64 p = 0; p < P; ++p) { pm[p] = 0; pv[p] = 0; }
    for (i64 gg = 0, k = 0; gg < groups; ++gg)
        for (i64 p = 0; p < P; ++p, ++k) { pm[p] += mean[k]; pv[p] += inv[k]; }
    for (i64 p = 0; p < P; ++p) { pm[p] /= (double)groups; pv[p] /= (double)groups; }
    _Pragma("omp parallel for num_threads(par) schedule(static)")
    for (i64 k = 0; k < K; ++k) {
        cmean[k] = (T)mean[k];
        cinv[k] = (T)(1.0 / sqrt(inv[k] + eps));
    }
    for (i64 p = 0; p < P; ++p) {
        slope[p] = adj_scale != NULL ? (double)adj_scale[p] : 1.0;
        intercept[p] = adj_bias != NULL ? (double)adj_bias[p] : 0.0;
    }
    if (renorm_mean != NULL) { /* r, d from the ghost-averaged statistics */
        for (i64 p = 0; p < P; ++p) {
            fold_renorm(pm[p], pv[p], (double)renorm_mean[p], (double)renorm_stddev[p], eps,
                        rmin, rmax, dmax, &slope[p], &intercept[p], NULL, NULL);
        }
    }
    T *coef = scratch(2, (size_t)(3 * K) * sizeof(T));
    T *cm = coef, *cs = coef + K, *co = coef + 2 * K;
    double *gs = scratch(3, (size_t)(2 * P) * sizeof(double)), *go = gs + P;
    for (i64 p = 0; p < P; ++p) {
        const double g = gamma ? (double)gamma[p] : 1.0;
        gs[p] = slope[p] * g;
        go[p] = intercept[p] * g + (beta ? (double)beta[p] : 0.0);
    }
    _Pragma("omp parallel for num_threads(par) schedule(static)")
    for (i64 gg = 0; gg < groups; ++gg) {
        for (i64 p = 0, k = gg * P; p < P; ++p, ++k) {
            cm[k] = cmean[k];
            cs[k] = (T)((double)cinv[k] * gs[p]);
            co[k] = (T)go[p];
        }
    }
    CAT(affine_, SUFFIX)(x, y, v, cm, cs, co, nt);
moving:
    if (moving_mean != NULL) {
        const double n = (double)(v.A * v.M * v.I);
        CAT(moving_averages_, SUFFIX)(P, pm, pv, 1.0 - momentum, 1.0 - renorm_momentum,
                                      bessel ? n / (n > 1 ? n - 1 : 1) : 1.0, eps, moving_mean,
                                      moving_var, moving_stddev, renorm_mean, renorm_stddev);
    }
    return 0;
}

int CAT(bn_train_backward_, SUFFIX)(
    const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides, i64 P,
    const T *gamma, const double *state, T *dgamma, T *dbeta, int threads) {
    const view_t v = make_view(dims, strides);
    const int nt = thread_count(threads);
    const i64 K = v.G * v.C, groups = K / P;
    const int par = K >= PAR_CHANNELS ? nt : 1;
    const double n = (double)(v.A * v.M * v.I);
    const double *slope = state + 2 * P, *intercept = state + 3 * P;
    const T *mean = (const T *)(state + 4 * P), *inv = mean + K; /* per channel, in T */
    double *sums = scratch(3, (size_t)(2 * K + P) * sizeof(double));
    double *sdy = sums, *sdx = sums + K, *gs = sums + 2 * K;
    for (i64 p = 0; p < P; ++p) gs[p] = slope[p] * (gamma ? (double)gamma[p] : 1.0);
    if (CAT(reduce_dx_, SUFFIX)(dy, x, dx, v, P, mean, inv, gs, slope, intercept, sdy, sdx, nt) ||
        CAT(plane_reduce_dx_, SUFFIX)(dy, x, dx, v, P, mean, inv, gs, slope, intercept, sdy, sdx,
                                 nt) ||
        CAT(short_reduce_dx_, SUFFIX)(dy, x, dx, v, P, mean, inv, gs, slope, intercept, sdy, sdx,
                                 nt)) {
        for (i64 p = 0; p < P; ++p) {
            if (dgamma) dgamma[p] = (T)sdy[p];
            if (dbeta) dbeta[p] = (T)sdx[p];
        }
        return 0;
    }
    T *coef = scratch(2, (size_t)(3 * K) * sizeof(T));
    const T *cm = mean;
    T *c1 = coef, *c2 = coef + K, *c3 = coef + 2 * K;
    CAT(reduce_, SUFFIX)(dy, x, v, cm, sdy, sdx, nt);
    if (dx != NULL) {
        _Pragma("omp parallel for num_threads(par) schedule(static)")
        for (i64 gg = 0; gg < groups; ++gg) {
            for (i64 p = 0, k = gg * P; p < P; ++p, ++k) {
                c1[k] = (T)(sdy[k] / n);
                const double iv = (double)inv[k];
                c2[k] = (T)(iv * iv * sdx[k] / n);
                c3[k] = (T)(iv * gs[p]);
            }
        }
        CAT(dx_, SUFFIX)(dy, x, dx, v, cm, c1, c2, c3, nt);
    }
    if (dgamma != NULL || dbeta != NULL) { /* summed over ghost batches in double */
        _Pragma("omp parallel for num_threads(par) schedule(static)")
        for (i64 p = 0; p < P; ++p) {
            double ag = 0, ab = 0;
            for (i64 gg = 0, k = p; gg < groups; ++gg, k += P) {
                ag += slope[p] * (double)inv[k] * sdx[k] + intercept[p] * sdy[k];
                ab += sdy[k];
            }
            if (dgamma) dgamma[p] = (T)ag;
            if (dbeta) dbeta[p] = (T)ab;
        }
    }
    return 0;
}

/* inference: y = (x − mean[p])·γ[p]/√(var[p] + ε) + β[p], with K == P */
/* inference coefficients per parameter: the mean, γ/√(var + ε) (double, then T) and β;
   separate loops without branches, so each vectorizes */
static void CAT(infer_coefficients_, SUFFIX)(i64 P, const T *restrict mean, const T *restrict var,
                                        const T *restrict gamma, const T *restrict beta,
                                        double eps, T *restrict cm, T *restrict cs,
                                        T *restrict co) {
    for (i64 p = 0; p < P; ++p) cm[p] = mean[p];
    if (gamma)
        for (i64 p = 0; p < P; ++p) cs[p] = (T)((double)gamma[p] / sqrt((double)var[p] + eps));
    else
        for (i64 p = 0; p < P; ++p) cs[p] = (T)(1.0 / sqrt((double)var[p] + eps));
    if (beta)
        for (i64 p = 0; p < P; ++p) co[p] = beta[p];
    else
        for (i64 p = 0; p < P; ++p) co[p] = (T)0;
}

int CAT(bn_infer_forward_, SUFFIX)(
    const S *x, S *y, const i64 *dims, const i64 *strides, i64 P, const T *mean,
    const T *var, const T *gamma, const T *beta, double eps, int threads) {
    const view_t v = make_view(dims, strides);
    const i64 K = v.G * v.C;
    T *coef = scratch(2, (size_t)(3 * K) * sizeof(T));
    T *cm = coef, *cs = coef + K, *co = coef + 2 * K;
    CAT(infer_coefficients_, SUFFIX)(P, mean, var, gamma, beta, eps, cm, cs, co);
    for (i64 k = P; k < K; k += P) { /* further channel groups repeat the parameters */
        memcpy(cm + k, cm, (size_t)P * sizeof(T));
        memcpy(cs + k, cs, (size_t)P * sizeof(T));
        memcpy(co + k, co, (size_t)P * sizeof(T));
    }
    CAT(affine_, SUFFIX)(x, y, v, cm, cs, co, thread_count(threads));
    return 0;
}

int CAT(bn_infer_backward_, SUFFIX)(
    const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides, i64 P,
    const T *mean, const T *var, const T *gamma, double eps, T *dgamma, T *dbeta,
    int threads) {
    const view_t v = make_view(dims, strides);
    const int nt = thread_count(threads);
    const i64 K = v.G * v.C;
    T *coef = scratch(2, (size_t)(4 * K) * sizeof(T));
    T *cm = coef, *zero = coef + K, *cs = coef + 2 * K;
    double *inv = scratch(3, (size_t)(3 * K) * sizeof(double));
    double *sdy = inv + K, *sdx = inv + 2 * K;
    FOR_KP {
        inv[k] = 1.0 / sqrt((double)var[p] + eps);
        cm[k] = mean[p];
        zero[k] = 0;
        cs[k] = (T)(inv[k] * (gamma ? (double)gamma[p] : 1.0));
    }
    if (dx != NULL) CAT(affine_, SUFFIX)(dy, dx, v, zero, cs, zero, nt); /* dx = dy·γ/√(σ² + ε) */
    if (dgamma != NULL || dbeta != NULL) {
        CAT(reduce_, SUFFIX)(dy, x, v, cm, sdy, sdx, nt);
        for (i64 k = 0; k < K; ++k) { /* K == P in inference */
            if (dgamma) dgamma[k] = (T)(inv[k] * sdx[k]);
            if (dbeta) dbeta[k] = (T)sdy[k];
        }
    }
    return 0;
}

/* ---- the single passes, exported */
int CAT(bn_stats_, SUFFIX)(const S *x, const i64 *dims, const i64 *strides, double *mean,
                      double *var, int threads) {
    CAT(stats_, SUFFIX)(x, make_view(dims, strides), mean, var, thread_count(threads));
    return 0;
}
int CAT(bn_affine_, SUFFIX)(const S *x, S *y, const i64 *dims, const i64 *strides, const T *mean,
                       const T *scale, const T *shift, int threads) {
    CAT(affine_, SUFFIX)(x, y, make_view(dims, strides), mean, scale, shift, thread_count(threads));
    return 0;
}
int CAT(bn_reduce_, SUFFIX)(const S *dy, const S *x, const i64 *dims, const i64 *strides,
                       const T *mean, double *sum_dy, double *sum_dyxc, int threads) {
    CAT(reduce_, SUFFIX)(dy, x, make_view(dims, strides), mean, sum_dy, sum_dyxc,
                    thread_count(threads));
    return 0;
}
int CAT(bn_dx_, SUFFIX)(const S *dy, const S *x, S *dx, const i64 *dims, const i64 *strides,
                   const T *mean, const T *k1, const T *k2, const T *k3, int threads) {
    CAT(dx_, SUFFIX)(dy, x, dx, make_view(dims, strides), mean, k1, k2, k3, thread_count(threads));
    return 0;
}
