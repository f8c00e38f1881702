/* Batch kernels on vector lanes: LANES_N independent messages, one in each 32-bit lane of a
 * GCC vector, hashed by the plain SHA-256 rounds written on whole vectors.
 *
 * Included by sha256.c once per width, with
 *   LANES_N      lanes per vector: 4 (128-bit: SSE2, NEON, or scalar code elsewhere), 8, 16
 *   LANES_TARGET the function attribute that enables the instructions (may be empty)
 *   LANES_NAME   how to suffix the names: LANES_NAME(nonce_scan) -> nonce_scan_16
 * The compiler turns the vector expressions into AVX-512, AVX2 or SSE2 code (rotates and
 * three-input logic included where the ISA has them); no intrinsics, so one source serves
 * every width, and the 4-lane build runs on any CPU the compiler targets. */

typedef uint32_t LANES_NAME(vec) __attribute__((vector_size(4 * LANES_N)));
#define VEC LANES_NAME(vec)
#define LANES_INLINE static inline __attribute__((always_inline)) LANES_TARGET

LANES_INLINE VEC LANES_NAME(splat)(uint32_t x) { return (VEC){0} + x; }

LANES_INLINE VEC LANES_NAME(byte_swap)(VEC x) {
    return (x >> 24) | ((x >> 8) & 0xff00) | ((x << 8) & 0xff0000) | (x << 24);
}

/* Schedule words [from, to) of each lane. */
LANES_INLINE void LANES_NAME(schedule)(VEC w[64], int from, int to) {
#pragma GCC unroll 48
    for (int t = from; t < to; t++)
        w[t] = SMALL_SIGMA1(w[t - 2]) + w[t - 7] + SMALL_SIGMA0(w[t - 15]) + w[t - 16];
}

/* Rounds [from, to) on the working variables; k is the round constants, or a block's
 * precomputed W + K with w all zero (the compiler drops the zero additions). */
LANES_INLINE void LANES_NAME(rounds)(VEC s[8], const VEC w[64], const uint32_t k[64], int from,
                                     int to) {
    VEC a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma GCC unroll 64
    for (int t = from; t < to; t++) {
        VEC t1 = h + BIG_SIGMA1(e) + (g ^ (e & (f ^ g))) + k[t] + w[t];
        VEC t2 = BIG_SIGMA0(a) + ((a & b) | (c & (a | b)));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s[0] = a, s[1] = b, s[2] = c, s[3] = d, s[4] = e, s[5] = f, s[6] = g, s[7] = h;
}

/* One block per lane: w[0..15] hold the message words; the schedule is built in w. */
LANES_INLINE void LANES_NAME(compress)(VEC state[8], VEC w[64]) {
    VEC s[8];
    LANES_NAME(schedule)(w, 16, 64);
    for (int i = 0; i < 8; i++) s[i] = state[i];
    LANES_NAME(rounds)(s, w, ts_sha256_k, 0, 64);
    for (int i = 0; i < 8; i++) state[i] += s[i];
}

/* The same padding-only block on every lane, scheduled once per call (wk = W + K). */
LANES_INLINE void LANES_NAME(compress_fixed)(VEC state[8], const uint32_t wk[64]) {
    VEC s[8], zero[64];
    for (int t = 0; t < 64; t++) zero[t] = LANES_NAME(splat)(0);
    for (int i = 0; i < 8; i++) s[i] = state[i];
    LANES_NAME(rounds)(s, zero, wk, 0, 64);
    for (int i = 0; i < 8; i++) state[i] += s[i];
}

/* Replaces each lane's state by the SHA-256 of its 32-byte digest (SHA-256d's second pass). */
LANES_INLINE void LANES_NAME(hash_digest)(VEC state[8]) {
    VEC w[64];
    for (int i = 0; i < 8; i++) w[i] = state[i];
    w[8] = LANES_NAME(splat)(0x80000000);
    for (int i = 9; i < 15; i++) w[i] = LANES_NAME(splat)(0);
    w[15] = LANES_NAME(splat)(256);
    for (int i = 0; i < 8; i++) state[i] = LANES_NAME(splat)(ts_sha256_iv[i]);
    LANES_NAME(compress)(state, w);
}

/* SHA-256d of LANES_N records starting at index `first`; lanes past the last record repeat
 * it and write nothing. Every lane is read before any digest is written, so out may overlap
 * the records of this group (the Merkle levels hash in place). */
LANES_TARGET static void LANES_NAME(hash_group)(const lane_shape *shape, const uint8_t *buffer,
                                                size_t first, size_t count, uint8_t *out) {
    const uint8_t *records[LANES_N];
    for (size_t l = 0; l < LANES_N; l++)
        records[l] = buffer + (first + l < count ? first + l : count - 1) * shape->record_size;
    VEC state[8], w[64];
    for (int i = 0; i < 8; i++) state[i] = LANES_NAME(splat)(ts_sha256_iv[i]);
    for (size_t block = 0; block < shape->pad.whole_blocks; block++) {
        for (int t = 0; t < 16; t++)
            for (size_t l = 0; l < LANES_N; l++)
                w[t][l] = load_be32(records[l] + 64 * block + 4 * t);
        LANES_NAME(compress)(state, w);
    }
    if (shape->pad.rest) {
        /* Whole message words load like a full block, words past the message are the same
         * padding on every lane; only the word the message ends in is assembled per lane. */
        size_t tail = 64 * shape->pad.whole_blocks;
        for (int t = 0; t < 16; t++) {
            if (4 * (size_t)t + 4 <= shape->pad.rest) {
                for (size_t l = 0; l < LANES_N; l++) w[t][l] = load_be32(records[l] + tail + 4 * t);
            } else if (4 * (size_t)t >= shape->pad.rest) {
                w[t] = LANES_NAME(splat)(shape->tail_words[t]);
            } else {
                for (size_t l = 0; l < LANES_N; l++)
                    w[t][l] = tail_word(shape, records[l] + tail, t);
            }
        }
        LANES_NAME(compress)(state, w);
    }
    if (shape->pad.has_fixed_block) LANES_NAME(compress_fixed)(state, shape->pad.fixed_wk);
    LANES_NAME(hash_digest)(state);
    for (int i = 0; i < 8; i++) state[i] = LANES_NAME(byte_swap)(state[i]);
    size_t lanes = count - first < LANES_N ? count - first : LANES_N;
    for (size_t l = 0; l < lanes; l++) {
        uint32_t digest[8];
        for (int i = 0; i < 8; i++) digest[i] = state[i][l];
        memcpy(out + 32 * (first + l), digest, 32);
    }
}

LANES_TARGET static void LANES_NAME(sha256d_records)(const uint8_t *buffer, size_t record_count,
                                                     size_t record_size, uint8_t *out) {
    lane_shape shape;
    lane_shape_init(&shape, record_size);
    for (size_t first = 0; first < record_count; first += LANES_N)
        LANES_NAME(hash_group)(&shape, buffer, first, record_count, out);
}

/* As the scalar scan: rounds 0..2 and schedule words 16 and 17 are shared by every nonce, and
 * of the final hash only e after round 60 (its top word) is computed. */
LANES_TARGET static uint64_t LANES_NAME(nonce_scan)(const uint32_t midstate[8],
                                                    const uint8_t tail[12], uint64_t first,
                                                    uint64_t end, uint32_t target_top) {
    nonce_shared shared;
    nonce_shared_init(&shared, midstate, tail);
    VEC lane;
    for (uint32_t l = 0; l < LANES_N; l++) lane[l] = l;
    for (uint64_t nonce = first; nonce < end; nonce += LANES_N) {
        VEC w[64], s[8];
        for (int t = 0; t < 18; t++) w[t] = LANES_NAME(splat)(shared.block[t]);
        w[3] = LANES_NAME(byte_swap)(LANES_NAME(splat)((uint32_t)nonce) + lane);
        LANES_NAME(schedule)(w, 18, 64);
        for (int i = 0; i < 8; i++) s[i] = LANES_NAME(splat)(shared.after_three[i]);
        LANES_NAME(rounds)(s, w, ts_sha256_k, 3, 64);
        for (int i = 0; i < 8; i++) w[i] = s[i] + midstate[i];
        w[8] = LANES_NAME(splat)(0x80000000);
        for (int i = 9; i < 15; i++) w[i] = LANES_NAME(splat)(0);
        w[15] = LANES_NAME(splat)(256);
        LANES_NAME(schedule)(w, 16, 61);
        for (int i = 0; i < 8; i++) s[i] = LANES_NAME(splat)(ts_sha256_iv[i]);
        LANES_NAME(rounds)(s, w, ts_sha256_k, 0, 61);
        VEC top = LANES_NAME(byte_swap)(s[4] + ts_sha256_iv[7]);
        VEC hit = (VEC)(top <= target_top);
        for (uint32_t l = 0; l < LANES_N; l++)
            if (hit[l] && nonce + l < end) return nonce + l;
    }
    return end;
}

#undef VEC
#undef LANES_INLINE
