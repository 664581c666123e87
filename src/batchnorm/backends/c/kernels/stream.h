/*
 * Output passes over tensors larger than the cache: streaming stores and the reverse walk.
 * Type-agnostic; included once by kernels.c.
 *
 * A pass that writes its output with ordinary stores first reads every output line into
 * the cache (read for ownership), then writes it back: three transfers per element of a
 * copy-like pass instead of two, and the output evicts the input the next pass wants.
 * Above stream_min bytes of output, the row passes (normalize, dx) write their vectors
 * with non-temporal (streaming) stores (vnt_*, loops.h), which skip that read and
 * bypass the cache.
 *
 * The same passes walk each thread's rows last to first: the pass before them (the
 * statistics, the backward's sums, or the layer before) walked them first to last, so
 * what it touched last, and what the cache still holds, is read first.
 */
#ifndef BATCHNORM_KERNELS_STREAM_H
#define BATCHNORM_KERNELS_STREAM_H

/* output bytes from which passes stream (set by bn_stream_bytes: the loader sets it from
   the machine's last-level cache; 16 MiB until then) */
static i64 stream_min = 16L << 20;

/* Set the streaming threshold to `bytes` when it is >= 0; returns the threshold in use. */
i64 bn_stream_bytes(i64 bytes) {
    if (bytes >= 0) stream_min = bytes;
    return stream_min;
}

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#define STREAM_STORES 1
#else
#define STREAM_STORES 0 /* no streaming stores: ordinary stores everywhere */
#endif

static inline int streams(i64 out_bytes) { return STREAM_STORES && out_bytes >= stream_min; }

/* streaming stores are weakly ordered: each thread fences its own before the pass ends */
static inline void stream_fence(void) {
#if STREAM_STORES
    _mm_sfence();
#endif
}

/* This thread's items [lo, hi) of `items`, as OpenMP's schedule(static) deals them (the
   pass before took them the same way, so each thread revisits its own rows). */
static inline void static_range(i64 items, i64 *lo, i64 *hi) {
#ifdef _OPENMP
    const i64 t = omp_get_thread_num(), n = omp_get_num_threads();
#else
    const i64 t = 0, n = 1;
#endif
    i64 q = items / n, r = items % n;
    if (t < r) {
        ++q;
        r = 0;
    }
    *lo = q * t + r;
    *hi = *lo + q;
}

#endif
