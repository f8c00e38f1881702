/* SHA-256 core: the portable backend, the run-time choice between it and SHA-NI
 * (sha256_shani.c), and the fixed-shape hashes built on the chosen backend.
 *
 * A backend is a compression function plus the batch kernels that dominate the ledger's work
 * (SHA-256d of equal-size records, the nonce scan). Batch kernels exist because a call per
 * compression through a function pointer, with the digest stored as bytes and reloaded between
 * the two passes of SHA-256d, costs more than the compression itself on SHA-NI. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "sha256.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sha256_kernels.h"

#if TS_X86
#include <cpuid.h>
#endif

const uint32_t ts_sha256_k[64] = {
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

const uint32_t ts_sha256_iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define BIG_SIGMA0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define BIG_SIGMA1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define SMALL_SIGMA0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define SMALL_SIGMA1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))
#define INLINE static inline __attribute__((always_inline))

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Schedule words [from, to), each from the sixteen before it. */
INLINE void schedule_portable(uint32_t w[64], int from, int to) {
#pragma GCC unroll 48
    for (int t = from; t < to; t++)
        w[t] = SMALL_SIGMA1(w[t - 2]) + w[t - 7] + SMALL_SIGMA0(w[t - 15]) + w[t - 16];
}

/* Rounds [from, to) on the working variables s = a..h (no final addition). */
INLINE void rounds_portable(uint32_t s[8], const uint32_t w[64], int from, int to) {
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma GCC unroll 64
    for (int t = from; t < to; t++) {
        uint32_t t1 = h + BIG_SIGMA1(e) + (g ^ (e & (f ^ g))) + ts_sha256_k[t] + w[t];
        uint32_t t2 = BIG_SIGMA0(a) + ((a & b) | (c & (a | b)));
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

INLINE void compress_words(uint32_t state[8], uint32_t w[64]) {
    uint32_t s[8];
    schedule_portable(w, 16, 64);
    memcpy(s, state, sizeof s);
    rounds_portable(s, w, 0, 64);
    for (int i = 0; i < 8; i++) state[i] += s[i];
}

static void compress_portable(uint32_t state[8], const uint8_t *data, size_t block_count) {
    uint32_t w[64];
    for (; block_count; block_count--, data += 64) {
        for (int t = 0; t < 16; t++) w[t] = load_be32(data + 4 * t);
        compress_words(state, w);
    }
}

void ts_sha256_block_wk(const uint8_t block[64], uint32_t wk[64]) {
    for (int t = 0; t < 16; t++) wk[t] = load_be32(block + 4 * t);
    schedule_portable(wk, 16, 64);
    for (int t = 0; t < 64; t++) wk[t] += ts_sha256_k[t];
}

static void state_to_bytes(const uint32_t state[8], uint8_t out[32]) {
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, state[i]);
}

typedef void (*compress_fn)(uint32_t state[8], const uint8_t *data, size_t block_count);

/* Hashes the whole blocks, then pads the tail; total_length counts every byte hashed. */
static void sha256_finish(compress_fn compress, uint32_t state[8], const uint8_t *data,
                          size_t length, uint64_t total_length) {
    size_t whole = length / 64;
    if (whole) compress(state, data, whole);
    uint8_t tail[128];
    size_t rest = length - whole * 64;
    memcpy(tail, data + whole * 64, rest);
    tail[rest] = 0x80;
    size_t tail_length = rest + 9 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, tail_length - rest - 1);
    uint64_t bits = total_length * 8;
    for (int i = 0; i < 8; i++) tail[tail_length - 1 - i] = (uint8_t)(bits >> (8 * i));
    compress(state, tail, tail_length / 64);
}

void ts_record_padding_init(ts_record_padding *padding, size_t record_size) {
    uint8_t blocks[128] = {0};
    padding->whole_blocks = record_size / 64;
    padding->rest = record_size % 64;
    size_t padded = padding->rest + 9 <= 64 ? 64 : 128;
    blocks[padding->rest] = 0x80;
    uint64_t bits = (uint64_t)record_size * 8;
    for (int i = 0; i < 8; i++) blocks[padded - 1 - i] = (uint8_t)(bits >> (8 * i));
    memcpy(padding->tail_template, blocks, 64);
    /* With no partial block, or one too full for the length, a block of padding alone ends
     * every record, and it is the same block each time. */
    padding->has_fixed_block = padding->rest == 0 || padded == 128;
    if (padding->has_fixed_block)
        ts_sha256_block_wk(padding->rest == 0 ? blocks : blocks + 64, padding->fixed_wk);
}

/* What the lane kernels share for records of one size: the padding, and its words. */
typedef struct {
    ts_record_padding pad;
    size_t record_size;
    uint32_t tail_words[16];   /* the partial block's padding as words, message bytes zero */
} lane_shape;

static void lane_shape_init(lane_shape *shape, size_t record_size) {
    ts_record_padding_init(&shape->pad, record_size);
    shape->record_size = record_size;
    for (int t = 0; t < 16; t++) shape->tail_words[t] = load_be32(shape->pad.tail_template + 4 * t);
}

/* Word t of a record's partial last block: message bytes from the record, the rest padding. */
static inline uint32_t tail_word(const lane_shape *shape, const uint8_t *tail, int t) {
    size_t start = 4 * (size_t)t;
    if (start + 4 <= shape->pad.rest) return load_be32(tail + start);
    uint32_t word = shape->tail_words[t];
    for (size_t i = start; i < shape->pad.rest; i++)
        word |= (uint32_t)tail[i] << (24 - 8 * (i - start));
    return word;
}

/* What every nonce of one header shares: the block with the nonce word unset and schedule
 * words 16 and 17 (they do not read word 3), and the state after rounds 0..2. */
typedef struct {
    uint32_t block[64];
    uint32_t after_three[8];
} nonce_shared;

static void nonce_shared_init(nonce_shared *shared, const uint32_t midstate[8],
                              const uint8_t tail[12]) {
    memset(shared->block, 0, sizeof shared->block);
    for (int t = 0; t < 3; t++) shared->block[t] = load_be32(tail + 4 * t);
    shared->block[4] = 0x80000000;
    shared->block[15] = 640; /* bits in the header */
    memcpy(shared->after_three, midstate, sizeof shared->after_three);
    rounds_portable(shared->after_three, shared->block, 0, 3);
    schedule_portable(shared->block, 16, 18);
}

#define LANES_N 4
#define LANES_TARGET
#define LANES_NAME(name) name##_4
#include "sha256_lanes.h"
#undef LANES_N
#undef LANES_TARGET
#undef LANES_NAME

#if TS_X86
#define LANES_N 8
#define LANES_TARGET __attribute__((target("avx2")))
#define LANES_NAME(name) name##_8
#include "sha256_lanes.h"
#undef LANES_N
#undef LANES_TARGET
#undef LANES_NAME

#define LANES_N 16
#define LANES_TARGET __attribute__((target("avx512f,avx512vl,avx512bw")))
#define LANES_NAME(name) name##_16
#include "sha256_lanes.h"
#undef LANES_N
#undef LANES_TARGET
#undef LANES_NAME
#endif

typedef void (*records_fn)(const uint8_t *buffer, size_t record_count, size_t record_size,
                           uint8_t *out);
typedef uint64_t (*scan_fn)(const uint32_t midstate[8], const uint8_t tail[12], uint64_t first,
                            uint64_t end, uint32_t target_top);

/* A family of batch kernels: SHA-256d of records and the nonce scan. */
typedef struct {
    const char *name;
    records_fn sha256d_records;
    scan_fn nonce_scan;
} batch_kernels;

static const batch_kernels lanes_4 = {"lanes-4", sha256d_records_4, nonce_scan_4};

#if TS_X86
static const batch_kernels lanes_8 = {"lanes-8", sha256d_records_8, nonce_scan_8};
static const batch_kernels lanes_16 = {"lanes-16", sha256d_records_16, nonce_scan_16};
static const batch_kernels shani_lanes = {"shani-4", ts_shani_sha256d_records,
                                          ts_shani_nonce_scan};

/* XCR0: which register states the operating system saves on a context switch. */
static uint64_t os_saved_state(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1)) return 0; /* OSXSAVE */
    uint32_t low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return (uint64_t)high << 32 | low;
}

static int cpu_has_shani(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    int sse41 = (ecx >> 19) & 1, ssse3 = (ecx >> 9) & 1;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    return sse41 && ssse3 && ((ebx >> 29) & 1);
}

static int cpu_has_avx2(void) {
    unsigned int eax, ebx, ecx, edx;
    if ((os_saved_state() & 0x6) != 0x6) return 0; /* xmm and ymm state */
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    return (ebx >> 5) & 1;
}

static int cpu_has_avx512(void) {
    unsigned int eax, ebx, ecx, edx;
    if ((os_saved_state() & 0xE6) != 0xE6) return 0; /* xmm, ymm, opmask and zmm state */
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    return ((ebx >> 16) & 1) && ((ebx >> 30) & 1) && ((ebx >> 31) & 1); /* F, BW, VL */
}
#endif

/* The widest lane kernels the CPU and the lane cap allow. */
static const batch_kernels *widest_lanes(long cap) {
#if TS_X86
    if (cap >= 16 && cpu_has_avx512()) return &lanes_16;
    if (cap >= 8 && cpu_has_avx2()) return &lanes_8;
#endif
    (void)cap;
    return &lanes_4;
}

#if TS_X86
static double thread_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* CPU time of a short nonce scan, best of three after a warm-up: thread time, so another
 * process taking the core meanwhile does not count. */
static double scan_seconds(scan_fn scan) {
    static const uint8_t tail[12] = {0};
    double best = 1e9;
    for (int trial = 0; trial < 4; trial++) {
        double start = thread_seconds();
        scan(ts_sha256_iv, tail, 0, 8192, 0);
        double spent = thread_seconds() - start;
        if (trial > 0 && spent < best) best = spent;
    }
    return best;
}

/* SHA-NI lanes or vector lanes for the batch work of the SHA-NI backend. Which is faster
 * depends on the CPU (on AMD Zen 5 sixteen AVX-512 lanes beat four SHA-NI lanes by about a
 * quarter; where sha256rnds2 issues every cycle SHA-NI wins), so it is measured, once per
 * process. Both compute the same digests: only the speed depends on the choice. */
static const batch_kernels *fastest_batch(const batch_kernels *lanes) {
    static const batch_kernels *chosen[3] = {NULL, NULL, NULL};
    int slot = lanes == &lanes_16 ? 2 : lanes == &lanes_8 ? 1 : 0;
    if (!chosen[slot]) {
        double shani = scan_seconds(ts_shani_nonce_scan);
        chosen[slot] = scan_seconds(lanes->nonce_scan) < shani ? lanes : &shani_lanes;
    }
    return chosen[slot];
}
#endif

static int active_backend = TS_BACKEND_PORTABLE;
static compress_fn active_compress = compress_portable;
static const batch_kernels *active_batch = &lanes_4;
static int selected = 0;

/* TSUNAGI_SHA256_LANES, when set, caps the lane width of the batch kernels (4, 8 or 16) and
 * turns off the measured choice; 0 makes the SHA-NI backend batch with SHA-NI lanes. */
static long lanes_cap(int *given) {
    const char *text = getenv("TSUNAGI_SHA256_LANES");
    *given = text != NULL && text[0] != '\0';
    return *given ? strtol(text, NULL, 10) : 16;
}

int ts_sha256_select_backend(void) {
    const char *forced = getenv("TSUNAGI_SHA256_PORTABLE");
    int portable = forced != NULL && forced[0] != '\0' && strcmp(forced, "0") != 0;
    int cap_given;
    long cap = lanes_cap(&cap_given);
    const batch_kernels *lanes = widest_lanes(cap);
    active_backend = TS_BACKEND_PORTABLE;
    active_compress = compress_portable;
    active_batch = lanes;
#if TS_X86
    if (!portable && cpu_has_shani()) {
        active_backend = TS_BACKEND_SHANI;
        active_compress = ts_shani_compress;
        active_batch = !cap_given ? fastest_batch(lanes) : cap <= 0 ? &shani_lanes : lanes;
    }
#endif
    selected = 1;
    return active_backend;
}

/* Every entry point selects on first use, so a module that links this core but never calls
 * ts_sha256_select_backend still gets the fast paths. */
static inline void ensure_selected(void) {
    if (__builtin_expect(!selected, 0)) ts_sha256_select_backend();
}

const char *ts_sha256_batch_kernels(void) {
    ensure_selected();
    return active_batch->name;
}

int ts_sha256_backend(void) {
    ensure_selected();
    return active_backend;
}

void ts_sha256_compress(uint32_t state[8], const uint8_t *blocks, size_t block_count) {
    ensure_selected();
    active_compress(state, blocks, block_count);
}

void ts_sha256(const uint8_t *data, size_t length, uint8_t out[32]) {
    uint32_t state[8];
    ensure_selected();
    memcpy(state, ts_sha256_iv, sizeof state);
    sha256_finish(active_compress, state, data, length, length);
    state_to_bytes(state, out);
}

void ts_sha256d(const uint8_t *data, size_t length, uint8_t out[32]) {
    uint8_t first[32];
    ts_sha256(data, length, first);
    ts_sha256(first, 32, out);
}

void ts_sha256d_records(const uint8_t *buffer, size_t record_count, size_t record_size,
                        uint8_t *out) {
    ensure_selected();
    active_batch->sha256d_records(buffer, record_count, record_size, out);
}

void ts_merkle_parents(const uint8_t *in, size_t count, uint8_t *out) {
    /* Each parent hashes the 64 contiguous bytes of its two children: a batch of 64-byte
     * records. The odd last child, paired with itself, is copied before anything is written
     * (out may equal in). */
    uint8_t pair[64];
    ensure_selected();
    if (count % 2) {
        memcpy(pair, in + 32 * (count - 1), 32);
        memcpy(pair + 32, pair, 32);
    }
    active_batch->sha256d_records(in, count / 2, 64, out);
    if (count % 2) ts_sha256d(pair, 64, out + 32 * (count / 2));
}

void ts_header_hash(const uint8_t header[80], uint8_t out[32]) { ts_sha256d(header, 80, out); }

uint64_t ts_nonce_scan(const uint32_t midstate[8], const uint8_t tail[12], uint64_t first,
                       uint64_t end, uint32_t target_top) {
    ensure_selected();
    return active_batch->nonce_scan(midstate, tail, first, end, target_top);
}

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
