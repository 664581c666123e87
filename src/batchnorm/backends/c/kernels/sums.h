/* The blocked sums of one compute type T, SUFFIX its names' suffix, W the block width.
   Included by loops.h with T, SUFFIX, W defined. */

static inline T CAT(sum_dev_, SUFFIX)(const T *restrict p, i64 n, T shift) {
    T acc[W] = {0}, t = 0;
    i64 i = 0;
    for (; i + W <= n; i += W)
        for (int j = 0; j < W; ++j) acc[j] += p[i + j] - shift;
    for (; i < n; ++i) t += p[i] - shift;
    for (int j = 0; j < W; ++j) t += acc[j];
    return t;
}
static inline T CAT(sum_sq_dev_, SUFFIX)(const T *restrict p, i64 n, T mu) {
    T acc[W] = {0}, t = 0;
    i64 i = 0;
    for (; i + W <= n; i += W)
        for (int j = 0; j < W; ++j) { const T d = p[i + j] - mu; acc[j] += d * d; }
    for (; i < n; ++i) { const T d = p[i] - mu; t += d * d; }
    for (int j = 0; j < W; ++j) t += acc[j];
    return t;
}

/* (its parameters end here: the next includer defines them again) */
#undef T
#undef SUFFIX
#undef W
