/* SHA-256 compression in two paths and the hashes built on it.
 *
 * The SHA-NI path is compiled with a function-level target attribute, so the object runs on
 * any x86-64 CPU: it is only called after CPUID says the extensions are there. */
#include "sha256.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define TS_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static const uint32_t IV256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void compress_portable(uint32_t state[8], const uint8_t *data, size_t block_count) {
    uint32_t w[64];
    while (block_count--) {
        for (int t = 0; t < 16; t++) w[t] = load_be32(data + 4 * t);
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) +
                          K256[t] + w[t];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
        data += 64;
    }
}

#ifdef TS_X86
/* Four rounds: add the round constants to four schedule words and run two rnds2 steps. */
#define SHANI_ROUNDS(i, msg)                                                        \
    do {                                                                            \
        __m128i m_ = _mm_add_epi32((msg), _mm_loadu_si128((const __m128i *)&K256[4 * (i)])); \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m_);                               \
        m_ = _mm_shuffle_epi32(m_, 0x0E);                                           \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, m_);                               \
    } while (0)

/* Next four schedule words from the previous sixteen (w0 oldest). */
#define SHANI_SCHEDULE(w0, w1, w2, w3) \
    _mm_sha256msg2_epu32(              \
        _mm_add_epi32(_mm_sha256msg1_epu32((w0), (w1)), _mm_alignr_epi8((w3), (w2), 4)), (w3))

__attribute__((target("sha,sse4.1,ssse3"))) static void compress_shani(uint32_t state[8],
                                                                      const uint8_t *data,
                                                                      size_t block_count) {
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&state[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    while (block_count--) {
        __m128i abef_saved = abef, cdgh_saved = cdgh;
        __m128i w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 0)), byte_swap);
        __m128i w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16)), byte_swap);
        __m128i w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 32)), byte_swap);
        __m128i w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 48)), byte_swap);
        SHANI_ROUNDS(0, w0);
        SHANI_ROUNDS(1, w1);
        SHANI_ROUNDS(2, w2);
        SHANI_ROUNDS(3, w3);
        for (int i = 4; i < 16; i += 4) {
            w0 = SHANI_SCHEDULE(w0, w1, w2, w3);
            SHANI_ROUNDS(i, w0);
            w1 = SHANI_SCHEDULE(w1, w2, w3, w0);
            SHANI_ROUNDS(i + 1, w1);
            w2 = SHANI_SCHEDULE(w2, w3, w0, w1);
            SHANI_ROUNDS(i + 2, w2);
            w3 = SHANI_SCHEDULE(w3, w0, w1, w2);
            SHANI_ROUNDS(i + 3, w3);
        }
        abef = _mm_add_epi32(abef, abef_saved);
        cdgh = _mm_add_epi32(cdgh, cdgh_saved);
        data += 64;
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}

static int cpu_has_shani(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    int sse41 = (ecx >> 19) & 1, ssse3 = (ecx >> 9) & 1;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    return sse41 && ssse3 && ((ebx >> 29) & 1);
}
#else
static int cpu_has_shani(void) { return 0; }
#endif

typedef void (*compress_fn)(uint32_t state[8], const uint8_t *data, size_t block_count);
static compress_fn active_compress = compress_portable;
static int active_backend = -1;

int ts_sha256_select_backend(void) {
    const char *forced = getenv("TSUNAGI_SHA256_PORTABLE");
    int portable = forced != NULL && forced[0] != '\0' && strcmp(forced, "0") != 0;
    active_backend = TS_BACKEND_PORTABLE;
    active_compress = compress_portable;
#ifdef TS_X86
    if (!portable && cpu_has_shani()) {
        active_backend = TS_BACKEND_SHANI;
        active_compress = compress_shani;
    }
#endif
    return active_backend;
}

int ts_sha256_backend(void) {
    if (active_backend < 0) ts_sha256_select_backend();
    return active_backend;
}

void ts_sha256_compress(uint32_t state[8], const uint8_t *blocks, size_t block_count) {
    active_compress(state, blocks, block_count);
}

static void state_to_bytes(const uint32_t state[8], uint8_t out[32]) {
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, state[i]);
}

/* Hashes the whole blocks, then pads the tail; total_length counts every byte hashed. */
static void sha256_finish(uint32_t state[8], const uint8_t *data, size_t length,
                          uint64_t total_length, uint8_t out[32]) {
    size_t whole = length / 64;
    if (whole) active_compress(state, data, whole);
    uint8_t tail[128];
    size_t rest = length - whole * 64;
    memcpy(tail, data + whole * 64, rest);
    tail[rest] = 0x80;
    size_t tail_length = rest + 9 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, tail_length - rest - 1);
    uint64_t bits = total_length * 8;
    for (int i = 0; i < 8; i++) tail[tail_length - 1 - i] = (uint8_t)(bits >> (8 * i));
    active_compress(state, tail, tail_length / 64);
    state_to_bytes(state, out);
}

void ts_sha256(const uint8_t *data, size_t length, uint8_t out[32]) {
    uint32_t state[8];
    memcpy(state, IV256, sizeof state);
    sha256_finish(state, data, length, length, out);
}

/* Second pass of SHA-256d: hash of a 32-byte digest, one block. */
static void sha256_of_digest(const uint8_t digest[32], uint8_t out[32]) {
    uint8_t block[64];
    memcpy(block, digest, 32);
    block[32] = 0x80;
    memset(block + 33, 0, 29);
    block[62] = 0x01; /* 256 bits */
    block[63] = 0x00;
    uint32_t state[8];
    memcpy(state, IV256, sizeof state);
    active_compress(state, block, 1);
    state_to_bytes(state, out);
}

void ts_sha256d(const uint8_t *data, size_t length, uint8_t out[32]) {
    uint8_t first[32];
    ts_sha256(data, length, first);
    sha256_of_digest(first, out);
}

void ts_sha256d_records(const uint8_t *buffer, size_t record_count, size_t record_size,
                        uint8_t *out) {
    for (size_t i = 0; i < record_count; i++)
        ts_sha256d(buffer + i * record_size, record_size, out + 32 * i);
}

void ts_merkle_parents(const uint8_t *in, size_t count, uint8_t *out) {
    /* The padding block of a 64-byte message never changes. */
    static const uint8_t pad64[64] = {0x80, [62] = 0x02, [63] = 0x00};
    uint8_t pair[64], first[32];
    for (size_t i = 0; i < count; i += 2) {
        const uint8_t *left = in + 32 * i;
        const uint8_t *right = i + 1 < count ? left + 32 : left;
        memcpy(pair, left, 32);
        memcpy(pair + 32, right, 32);
        uint32_t state[8];
        memcpy(state, IV256, sizeof state);
        active_compress(state, pair, 1);
        active_compress(state, pad64, 1);
        state_to_bytes(state, first);
        sha256_of_digest(first, out + 32 * (i / 2));
    }
}

void ts_header_hash(const uint8_t header[80], uint8_t out[32]) { ts_sha256d(header, 80, out); }

int ts_bits_to_target(uint32_t bits, uint8_t target[32]) {
    memset(target, 0, 32);
    uint32_t exponent = bits >> 24;
    uint32_t mantissa = bits & 0x007fffff;
    if (mantissa == 0) return 2;
    if (bits & 0x00800000) return 1;
    /* target = mantissa * 256^(exponent - 3) */
    for (int i = 0; i < 3; i++) {
        int position = (int)exponent - 3 + i;
        uint8_t byte = (uint8_t)(mantissa >> (8 * i));
        if (position < 0) {
            continue;
        }
        if (position >= 32) {
            if (byte) return 3;
            continue;
        }
        target[position] = byte;
    }
    if (exponent < 3) {
        uint32_t shifted = mantissa >> (8 * (3 - exponent));
        memset(target, 0, 32);
        for (int i = 0; i < 3; i++) target[i] = (uint8_t)(shifted >> (8 * i));
        if (shifted == 0) return 2;
    }
    return 0;
}

int ts_hash_meets_target(const uint8_t hash[32], const uint8_t target[32]) {
    for (int i = 31; i >= 0; i--) {
        if (hash[i] != target[i]) return hash[i] < target[i];
    }
    return 1;
}
