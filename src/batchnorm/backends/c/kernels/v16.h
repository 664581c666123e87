/* The 16-bit formats' scalar loads and stores in float32 vectors' shape, for one SUFFIX (bf16, f16).
   Included by loops.h with SUFFIX defined. */

static inline vecf_t CAT(vld_, SUFFIX)(const uint16_t *p) {
    float b[VLF];
    for (int j = 0; j < VLF; ++j) b[j] = CAT(sld_, SUFFIX)(p + j);
    return vld_f32(b);
}
static inline void CAT(vst_, SUFFIX)(uint16_t *q, vecf_t v) {
    float b[VLF];
    vst_f32(b, v);
    for (int j = 0; j < VLF; ++j) CAT(sst_, SUFFIX)(q + j, b[j]);
}

/* (its parameters end here: the next includer defines them again) */
#undef SUFFIX
