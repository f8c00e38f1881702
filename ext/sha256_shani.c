/* SHA-256 kernels on the x86 SHA extensions (SHA-NI), four independent messages at a time.
 *
 * One compression is a chain of 32 sha256rnds2 steps, each waiting for the result of the one
 * before; a single message leaves the SHA unit idle most of each step's latency. Messages
 * interleaved step by step fill those gaps, so the batch kernels (records, Merkle levels,
 * headers) and the nonce scan hash several at once; a lone message (ts_shani_compress) is one
 * chain.
 *
 * Everything here is compiled with a function-level target attribute, so the object runs on
 * any x86-64 CPU: sha256.c calls it only after CPUID reports the extensions. */
#include "sha256_kernels.h"

#if TS_X86
#include <immintrin.h>
#include <string.h>

#define SHANI_TARGET __attribute__((target("sha,sse4.1,ssse3")))
#define SHANI_INLINE static inline __attribute__((always_inline)) SHANI_TARGET

/* The state a..h as the instructions want it: lanes (f, e, b, a) and (h, g, d, c). */
typedef struct {
    __m128i abef, cdgh;
} lane_state;

SHANI_INLINE __m128i byte_swap_words(__m128i x) {
    return _mm_shuffle_epi8(x, _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL));
}

SHANI_INLINE __m128i load_words(const uint8_t *p) {
    return byte_swap_words(_mm_loadu_si128((const __m128i *)p));
}

SHANI_INLINE __m128i round_constants(int group) {
    return _mm_loadu_si128((const __m128i *)&ts_sha256_k[4 * group]);
}

SHANI_INLINE lane_state state_load(const uint32_t state[8]) {
    __m128i cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[0]), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[4]), 0x1B);
    return (lane_state){_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0)};
}

/* Words (a, b, c, d) and (e, f, g, h) in lane order: the state as the next block's message. */
SHANI_INLINE void state_words(lane_state s, __m128i *abcd, __m128i *efgh) {
    *abcd = _mm_shuffle_epi32(_mm_unpackhi_epi64(s.cdgh, s.abef), 0x1B);
    *efgh = _mm_shuffle_epi32(_mm_unpacklo_epi64(s.cdgh, s.abef), 0x1B);
}

SHANI_INLINE void state_store(lane_state s, uint32_t state[8]) {
    __m128i abcd, efgh;
    state_words(s, &abcd, &efgh);
    _mm_storeu_si128((__m128i *)&state[0], abcd);
    _mm_storeu_si128((__m128i *)&state[4], efgh);
}

SHANI_INLINE void digest_store(lane_state s, uint8_t out[32]) {
    __m128i abcd, efgh;
    state_words(s, &abcd, &efgh);
    _mm_storeu_si128((__m128i *)out, byte_swap_words(abcd));
    _mm_storeu_si128((__m128i *)(out + 16), byte_swap_words(efgh));
}

SHANI_INLINE lane_state state_add(lane_state s, lane_state t) {
    return (lane_state){_mm_add_epi32(s.abef, t.abef), _mm_add_epi32(s.cdgh, t.cdgh)};
}

/* Next four schedule words from the previous sixteen (w0 oldest). */
SHANI_INLINE __m128i schedule(__m128i w0, __m128i w1, __m128i w2, __m128i w3) {
    __m128i sum = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
    return _mm_sha256msg2_epu32(sum, w3);
}

/* Lanes hashed side by side. Each lane is an independent chain of sha256rnds2 steps; more
 * lanes hide more of each step's latency, but beyond two the state and message words of all
 * lanes no longer fit the sixteen xmm registers the SHA instructions can address and some go
 * to the stack. Measured on AMD Zen 5, per CPU-second: 2 lanes 23.5 M nonces, 3 lanes 26.7,
 * 4 lanes 29.0 (about the sha256rnds2 throughput), so four it is. */
#define LANES_MAX 4
#ifndef TS_SHANI_LANES
#define TS_SHANI_LANES 4
#endif
#define LANES TS_SHANI_LANES

/* Round groups [from, to) of one block on each lane. w[l] holds lane l's last sixteen
 * schedule words, group g's in slot g % 4; groups from 4 on extend the schedule in place. */
SHANI_INLINE void groups(int n, lane_state s[], __m128i w[][4], int from, int to) {
#pragma GCC unroll 16
    for (int g = from; g < to; g++) {
        __m128i k = round_constants(g), wk[LANES_MAX];
#pragma GCC unroll 4
        for (int l = 0; l < n; l++) {
            if (g >= 4)
                w[l][g & 3] = schedule(w[l][g & 3], w[l][(g + 1) & 3], w[l][(g + 2) & 3],
                                       w[l][(g + 3) & 3]);
            wk[l] = _mm_add_epi32(w[l][g & 3], k);
        }
#pragma GCC unroll 4
        for (int l = 0; l < n; l++)
            s[l].cdgh = _mm_sha256rnds2_epu32(s[l].cdgh, s[l].abef, wk[l]);
#pragma GCC unroll 4
        for (int l = 0; l < n; l++)
            s[l].abef = _mm_sha256rnds2_epu32(s[l].abef, s[l].cdgh, _mm_shuffle_epi32(wk[l], 0x0E));
    }
}

SHANI_INLINE void compress_lanes(int n, lane_state s[], __m128i w[][4]) {
    lane_state saved[LANES_MAX];
#pragma GCC unroll 4
    for (int l = 0; l < n; l++) saved[l] = s[l];
    groups(n, s, w, 0, 16);
#pragma GCC unroll 4
    for (int l = 0; l < n; l++) s[l] = state_add(s[l], saved[l]);
}

/* One block that is the same for every lane and scheduled in advance (wk = W + K). */
SHANI_INLINE void compress_fixed(int n, lane_state s[], const uint32_t wk[64]) {
    lane_state saved[LANES_MAX];
#pragma GCC unroll 4
    for (int l = 0; l < n; l++) saved[l] = s[l];
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
        __m128i m = _mm_loadu_si128((const __m128i *)&wk[4 * g]);
        __m128i m_high = _mm_shuffle_epi32(m, 0x0E);
#pragma GCC unroll 4
        for (int l = 0; l < n; l++) s[l].cdgh = _mm_sha256rnds2_epu32(s[l].cdgh, s[l].abef, m);
#pragma GCC unroll 4
        for (int l = 0; l < n; l++)
            s[l].abef = _mm_sha256rnds2_epu32(s[l].abef, s[l].cdgh, m_high);
    }
#pragma GCC unroll 4
    for (int l = 0; l < n; l++) s[l] = state_add(s[l], saved[l]);
}

/* The padding words of a 32-byte message: 0x80 after the digest, then its length, 256 bits. */
SHANI_INLINE void digest_padding(__m128i w[4]) {
    w[2] = _mm_set_epi32(0, 0, 0, (int)0x80000000);
    w[3] = _mm_set_epi32(256, 0, 0, 0);
}

/* Replaces each lane's state by the SHA-256 of its 32-byte digest: the second pass of
 * SHA-256d, fed from registers without going through memory. */
SHANI_INLINE void hash_digests(int n, lane_state s[]) {
    __m128i w[LANES_MAX][4];
#pragma GCC unroll 4
    for (int l = 0; l < n; l++) {
        state_words(s[l], &w[l][0], &w[l][1]);
        digest_padding(w[l]);
        s[l] = state_load(ts_sha256_iv);
    }
    compress_lanes(n, s, w);
}

SHANI_TARGET void ts_shani_compress(uint32_t state[8], const uint8_t *blocks,
                                    size_t block_count) {
    lane_state s[1] = {state_load(state)};
    for (; block_count; block_count--, blocks += 64) {
        __m128i w[1][4];
        for (int g = 0; g < 4; g++) w[0][g] = load_words(blocks + 16 * g);
        compress_lanes(1, s, w);
    }
    state_store(s[0], state);
}

/* What every record of one size shares: its padding, and the partial block's padding as
 * message words. */
typedef struct {
    ts_record_padding pad;
    __m128i tail_words[4];         /* pad.tail_template as message words */
} record_shape;

static void shape_init(record_shape *shape, size_t record_size) {
    ts_record_padding_init(&shape->pad, record_size);
}

SHANI_TARGET static void shape_tail_words(record_shape *shape) {
    for (int g = 0; g < 4; g++)
        shape->tail_words[g] = load_words(shape->pad.tail_template + 16 * g);
}

/* The partial last block of a record as message words: whole 16-byte groups are loaded from
 * the record, the group the record ends in is assembled, later groups are padding. */
SHANI_INLINE void tail_block(const record_shape *shape, const uint8_t *tail, __m128i w[4]) {
    for (size_t g = 0; g < 4; g++) {
        size_t start = 16 * g;
        if (start + 16 <= shape->pad.rest) {
            w[g] = load_words(tail + start);
        } else if (start >= shape->pad.rest) {
            w[g] = shape->tail_words[g];
        } else {
            uint8_t group[16];
            memcpy(group, shape->pad.tail_template + start, 16);
            memcpy(group, tail + start, shape->pad.rest - start);
            w[g] = load_words(group);
        }
    }
}

/* SHA-256d of n records at once. All are read before any digest is written, so an output
 * may overlap the records (the Merkle levels hash in place). */
SHANI_INLINE void hash_records(int n, const record_shape *shape, const uint8_t *records,
                               size_t record_size, uint8_t *out) {
    lane_state s[LANES_MAX];
    __m128i w[LANES_MAX][4];
#pragma GCC unroll 4
    for (int l = 0; l < n; l++) s[l] = state_load(ts_sha256_iv);
    for (size_t block = 0; block < shape->pad.whole_blocks; block++) {
#pragma GCC unroll 4
        for (int l = 0; l < n; l++)
            for (int g = 0; g < 4; g++)
                w[l][g] = load_words(records + l * record_size + 64 * block + 16 * g);
        compress_lanes(n, s, w);
    }
    if (shape->pad.rest) {
#pragma GCC unroll 4
        for (int l = 0; l < n; l++)
            tail_block(shape, records + l * record_size + 64 * shape->pad.whole_blocks, w[l]);
        compress_lanes(n, s, w);
    }
    if (shape->pad.has_fixed_block) compress_fixed(n, s, shape->pad.fixed_wk);
    hash_digests(n, s);
#pragma GCC unroll 4
    for (int l = 0; l < n; l++) digest_store(s[l], out + 32 * l);
}

SHANI_TARGET static void hash_records_lanes(const record_shape *shape, const uint8_t *records,
                                            size_t record_size, uint8_t *out) {
    hash_records(LANES, shape, records, record_size, out);
}

/* The records left over after the last full group of lanes, one at a time. */
SHANI_TARGET static void hash_record_alone(const record_shape *shape, const uint8_t *record,
                                           uint8_t *out) {
    hash_records(1, shape, record, 0, out);
}

SHANI_TARGET void ts_shani_sha256d_records(const uint8_t *buffer, size_t record_count,
                                           size_t record_size, uint8_t *out) {
    record_shape shape;
    shape_init(&shape, record_size);
    shape_tail_words(&shape);
    size_t i = 0;
    for (; i + LANES <= record_count; i += LANES)
        hash_records_lanes(&shape, buffer + i * record_size, record_size, out + 32 * i);
    for (; i < record_count; i++) hash_record_alone(&shape, buffer + i * record_size, out + 32 * i);
}

/* Rounds 2..63 of the header's second block for LANES nonces, from the state after rounds 0
 * and 1 (which read only words every nonce shares), then the midstate added. */
SHANI_INLINE void nonce_block(lane_state s[LANES], __m128i w[LANES][4], lane_state midstate,
                              __m128i after_two) {
    __m128i k = round_constants(0);
#pragma GCC unroll 4
    for (int l = 0; l < LANES; l++) {
        __m128i wk = _mm_shuffle_epi32(_mm_add_epi32(w[l][0], k), 0x0E);
        s[l].cdgh = after_two;
        s[l].abef = _mm_sha256rnds2_epu32(midstate.abef, after_two, wk);
    }
    groups(LANES, s, w, 1, 16);
#pragma GCC unroll 4
    for (int l = 0; l < LANES; l++) s[l] = state_add(s[l], midstate);
}

/* The top little-endian word of each lane's SHA-256 of its digest. Only the hash's last word
 * decides a candidate, and it is final after round 61: rounds 62 and 63 only shift it from f
 * to h. So the last two rounds are skipped. */
SHANI_INLINE void digest_tops(lane_state s[LANES], uint32_t top[LANES]) {
    __m128i w[LANES][4];
#pragma GCC unroll 4
    for (int l = 0; l < LANES; l++) {
        state_words(s[l], &w[l][0], &w[l][1]);
        digest_padding(w[l]);
        s[l] = state_load(ts_sha256_iv);
    }
    groups(LANES, s, w, 0, 15);
    __m128i k = round_constants(15);
#pragma GCC unroll 4
    for (int l = 0; l < LANES; l++) {
        w[l][3] = schedule(w[l][3], w[l][0], w[l][1], w[l][2]);
        __m128i abef = _mm_sha256rnds2_epu32(s[l].cdgh, s[l].abef, _mm_add_epi32(w[l][3], k));
        /* Lane 0 holds f after round 61, which is h after round 63. */
        top[l] = __builtin_bswap32((uint32_t)_mm_cvtsi128_si32(abef) + ts_sha256_iv[7]);
    }
}

static inline uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

SHANI_TARGET uint64_t ts_shani_nonce_scan(const uint32_t midstate_words[8],
                                          const uint8_t tail[12], uint64_t first, uint64_t end,
                                          uint32_t target_top) {
    const lane_state midstate = state_load(midstate_words);
    const __m128i fixed = _mm_set_epi32(0, (int)load_be32(tail + 8), (int)load_be32(tail + 4),
                                        (int)load_be32(tail));
    const __m128i after_two = _mm_sha256rnds2_epu32(
        midstate.cdgh, midstate.abef, _mm_add_epi32(fixed, round_constants(0)));
    for (uint64_t nonce = first; nonce < end; nonce += LANES) {
        lane_state s[LANES];
        __m128i w[LANES][4];
        uint32_t top[LANES];
#pragma GCC unroll 4
        for (int l = 0; l < LANES; l++) {
            /* Words 4..15 of the block are padding: 0x80, zeros, then the length, 640 bits. */
            w[l][0] = _mm_insert_epi32(fixed, (int)__builtin_bswap32((uint32_t)nonce + l), 3);
            w[l][1] = _mm_set_epi32(0, 0, 0, (int)0x80000000);
            w[l][2] = _mm_setzero_si128();
            w[l][3] = _mm_set_epi32(640, 0, 0, 0);
        }
        nonce_block(s, w, midstate, after_two);
        digest_tops(s, top);
        for (int l = 0; l < LANES; l++)
            if (top[l] <= target_top && nonce + l < end) return nonce + l;
    }
    return end;
}

#endif
