/* SHA-256 kernels on the x86 SHA extensions (SHA-NI), two independent messages at a time.
 *
 * One compression is a chain of 32 sha256rnds2 steps, each waiting for the result of the one
 * before; a single message leaves the SHA unit idle most of each step's latency. Two messages
 * interleaved step by step fill those gaps, so the batch kernels (records, Merkle levels,
 * headers) and the nonce search always hash in pairs.
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

/* Four rounds on each lane; wka and wkb hold W + K of those rounds. */
SHANI_INLINE void rounds4_x2(lane_state *a, lane_state *b, __m128i wka, __m128i wkb) {
    a->cdgh = _mm_sha256rnds2_epu32(a->cdgh, a->abef, wka);
    b->cdgh = _mm_sha256rnds2_epu32(b->cdgh, b->abef, wkb);
    a->abef = _mm_sha256rnds2_epu32(a->abef, a->cdgh, _mm_shuffle_epi32(wka, 0x0E));
    b->abef = _mm_sha256rnds2_epu32(b->abef, b->cdgh, _mm_shuffle_epi32(wkb, 0x0E));
}

/* Round groups [from, to) of one block on each lane. wa and wb hold the last sixteen schedule
 * words, group g's words in slot g % 4; groups from 4 on extend the schedule in place. */
SHANI_INLINE void groups_x2(lane_state *a, lane_state *b, __m128i wa[4], __m128i wb[4],
                            int from, int to) {
#pragma GCC unroll 16
    for (int g = from; g < to; g++) {
        if (g >= 4) {
            wa[g & 3] = schedule(wa[g & 3], wa[(g + 1) & 3], wa[(g + 2) & 3], wa[(g + 3) & 3]);
            wb[g & 3] = schedule(wb[g & 3], wb[(g + 1) & 3], wb[(g + 2) & 3], wb[(g + 3) & 3]);
        }
        __m128i k = round_constants(g);
        rounds4_x2(a, b, _mm_add_epi32(wa[g & 3], k), _mm_add_epi32(wb[g & 3], k));
    }
}

SHANI_INLINE void compress_x2(lane_state *a, lane_state *b, __m128i wa[4], __m128i wb[4]) {
    lane_state a0 = *a, b0 = *b;
    groups_x2(a, b, wa, wb, 0, 16);
    *a = state_add(*a, a0);
    *b = state_add(*b, b0);
}

/* One block that is the same for both lanes and scheduled in advance (wk = W + K). */
SHANI_INLINE void compress_fixed_x2(lane_state *a, lane_state *b, const uint32_t wk[64]) {
    lane_state a0 = *a, b0 = *b;
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
        __m128i m = _mm_loadu_si128((const __m128i *)&wk[4 * g]);
        rounds4_x2(a, b, m, m);
    }
    *a = state_add(*a, a0);
    *b = state_add(*b, b0);
}

/* The padding words of a 32-byte message: 0x80 after the digest, then its length, 256 bits. */
SHANI_INLINE void digest_padding(__m128i w[4]) {
    w[2] = _mm_set_epi32(0, 0, 0, (int)0x80000000);
    w[3] = _mm_set_epi32(256, 0, 0, 0);
}

/* Replaces each lane's state by the SHA-256 of its 32-byte digest: the second pass of
 * SHA-256d, fed from registers without going through memory. */
SHANI_INLINE void hash_digest_x2(lane_state *a, lane_state *b) {
    __m128i wa[4], wb[4];
    state_words(*a, &wa[0], &wa[1]);
    state_words(*b, &wb[0], &wb[1]);
    digest_padding(wa);
    digest_padding(wb);
    *a = *b = state_load(ts_sha256_iv);
    compress_x2(a, b, wa, wb);
}

SHANI_TARGET void ts_shani_compress(uint32_t state[8], const uint8_t *blocks,
                                    size_t block_count) {
    /* A lone message: lane b repeats lane a's work and is dropped. */
    lane_state a = state_load(state), b = a;
    for (; block_count; block_count--, blocks += 64) {
        __m128i wa[4], wb[4];
        for (int g = 0; g < 4; g++) wa[g] = wb[g] = load_words(blocks + 16 * g);
        compress_x2(&a, &b, wa, wb);
    }
    state_store(a, state);
}

/* What every record of one size shares: its whole-block count and its padding. */
typedef struct {
    size_t whole_blocks;
    size_t rest;                   /* bytes in the last, partial block (0: none) */
    uint8_t tail_template[64];     /* the partial block's padding, message bytes zero */
    __m128i tail_words[4];         /* tail_template as message words */
    int has_fixed_block;           /* a last block of padding only */
    uint32_t fixed_wk[64];         /* that block, scheduled */
} record_shape;

static void shape_init(record_shape *shape, size_t record_size) {
    uint8_t padding[128] = {0};
    shape->whole_blocks = record_size / 64;
    shape->rest = record_size % 64;
    size_t padded = shape->rest + 9 <= 64 ? 64 : 128;
    padding[shape->rest] = 0x80;
    uint64_t bits = (uint64_t)record_size * 8;
    for (int i = 0; i < 8; i++) padding[padded - 1 - i] = (uint8_t)(bits >> (8 * i));
    memcpy(shape->tail_template, padding, 64);
    /* With no partial block, or one too full for the length, a block of padding alone ends
     * every record, and it is the same block each time. */
    shape->has_fixed_block = shape->rest == 0 || padded == 128;
    if (shape->has_fixed_block)
        ts_sha256_block_wk(shape->rest == 0 ? padding : padding + 64, shape->fixed_wk);
}

SHANI_TARGET static void shape_tail_words(record_shape *shape) {
    for (int g = 0; g < 4; g++) shape->tail_words[g] = load_words(shape->tail_template + 16 * g);
}

/* The partial last block of a record as message words: whole 16-byte groups are loaded from
 * the record, the group the record ends in is assembled, later groups are padding. */
SHANI_INLINE void tail_block(const record_shape *shape, const uint8_t *tail, __m128i w[4]) {
    for (size_t g = 0; g < 4; g++) {
        size_t start = 16 * g;
        if (start + 16 <= shape->rest) {
            w[g] = load_words(tail + start);
        } else if (start >= shape->rest) {
            w[g] = shape->tail_words[g];
        } else {
            uint8_t group[16];
            memcpy(group, shape->tail_template + start, 16);
            memcpy(group, tail + start, shape->rest - start);
            w[g] = load_words(group);
        }
    }
}

/* SHA-256d of two records of the shape. Both are read before either digest is written, so
 * out_a may overlap record_a (the Merkle levels hash in place). */
SHANI_TARGET static void hash_record_pair(const record_shape *shape, const uint8_t *record_a,
                                          const uint8_t *record_b, uint8_t *out_a,
                                          uint8_t *out_b) {
    lane_state a = state_load(ts_sha256_iv), b = a;
    __m128i wa[4], wb[4];
    for (size_t block = 0; block < shape->whole_blocks; block++) {
        for (int g = 0; g < 4; g++) {
            wa[g] = load_words(record_a + 64 * block + 16 * g);
            wb[g] = load_words(record_b + 64 * block + 16 * g);
        }
        compress_x2(&a, &b, wa, wb);
    }
    if (shape->rest) {
        tail_block(shape, record_a + 64 * shape->whole_blocks, wa);
        tail_block(shape, record_b + 64 * shape->whole_blocks, wb);
        compress_x2(&a, &b, wa, wb);
    }
    if (shape->has_fixed_block) compress_fixed_x2(&a, &b, shape->fixed_wk);
    hash_digest_x2(&a, &b);
    digest_store(a, out_a);
    digest_store(b, out_b);
}

SHANI_TARGET void ts_shani_sha256d_records(const uint8_t *buffer, size_t record_count,
                                           size_t record_size, uint8_t *out) {
    record_shape shape;
    shape_init(&shape, record_size);
    shape_tail_words(&shape);
    size_t i = 0;
    for (; i + 1 < record_count; i += 2) {
        const uint8_t *record = buffer + i * record_size;
        hash_record_pair(&shape, record, record + record_size, out + 32 * i, out + 32 * i + 32);
    }
    if (i < record_count) {
        uint8_t unused[32];
        const uint8_t *record = buffer + i * record_size;
        hash_record_pair(&shape, record, record, out + 32 * i, unused);
    }
}

/* Rounds 2..63 of the header's second block for two nonces, from the state after rounds 0
 * and 1 (which read only words every nonce shares), then the midstate added. */
SHANI_INLINE void nonce_block_x2(lane_state *a, lane_state *b, __m128i wa[4], __m128i wb[4],
                                 lane_state midstate, __m128i after_two) {
    __m128i k = round_constants(0);
    __m128i wka = _mm_shuffle_epi32(_mm_add_epi32(wa[0], k), 0x0E);
    __m128i wkb = _mm_shuffle_epi32(_mm_add_epi32(wb[0], k), 0x0E);
    a->cdgh = b->cdgh = after_two;
    a->abef = _mm_sha256rnds2_epu32(midstate.abef, after_two, wka);
    b->abef = _mm_sha256rnds2_epu32(midstate.abef, after_two, wkb);
    groups_x2(a, b, wa, wb, 1, 16);
    *a = state_add(*a, midstate);
    *b = state_add(*b, midstate);
}

/* The top little-endian word of each lane's SHA-256 of its digest. Only the hash's last word
 * decides a candidate, and it is final after round 61: rounds 62 and 63 only shift it from f
 * to h. So the last two rounds are skipped. */
SHANI_INLINE void digest_top_x2(lane_state a, lane_state b, uint32_t *top_a, uint32_t *top_b) {
    __m128i wa[4], wb[4];
    state_words(a, &wa[0], &wa[1]);
    state_words(b, &wb[0], &wb[1]);
    digest_padding(wa);
    digest_padding(wb);
    a = b = state_load(ts_sha256_iv);
    groups_x2(&a, &b, wa, wb, 0, 15);
    wa[3] = schedule(wa[3], wa[0], wa[1], wa[2]);
    wb[3] = schedule(wb[3], wb[0], wb[1], wb[2]);
    __m128i k = round_constants(15);
    __m128i abef_a = _mm_sha256rnds2_epu32(a.cdgh, a.abef, _mm_add_epi32(wa[3], k));
    __m128i abef_b = _mm_sha256rnds2_epu32(b.cdgh, b.abef, _mm_add_epi32(wb[3], k));
    /* Lane 0 holds f after round 61, which is h after round 63. */
    *top_a = __builtin_bswap32((uint32_t)_mm_cvtsi128_si32(abef_a) + ts_sha256_iv[7]);
    *top_b = __builtin_bswap32((uint32_t)_mm_cvtsi128_si32(abef_b) + ts_sha256_iv[7]);
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
    for (uint64_t nonce = first; nonce < end; nonce += 2) {
        /* Words 4..15 of the block are padding: 0x80, zeros, then the length, 640 bits. */
        __m128i wa[4] = {_mm_insert_epi32(fixed, (int)__builtin_bswap32((uint32_t)nonce), 3),
                         _mm_set_epi32(0, 0, 0, (int)0x80000000), _mm_setzero_si128(),
                         _mm_set_epi32(640, 0, 0, 0)};
        __m128i wb[4] = {_mm_insert_epi32(fixed, (int)__builtin_bswap32((uint32_t)nonce + 1), 3),
                         wa[1], wa[2], wa[3]};
        lane_state a, b;
        nonce_block_x2(&a, &b, wa, wb, midstate, after_two);
        uint32_t top_a, top_b;
        digest_top_x2(a, b, &top_a, &top_b);
        if (top_a <= target_top) return nonce;
        if (top_b <= target_top && nonce + 1 < end) return nonce + 1;
    }
    return end;
}

#endif
