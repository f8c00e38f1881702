#include "pow.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "sha256.h"

static const uint32_t IV256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

struct ts_search {
    uint32_t midstate[8];   /* state after the header's first 64 bytes */
    uint8_t tail[64];       /* header bytes 64..79 and the padding; nonce at offset 12 */
    uint8_t target[32];
    uint64_t end;           /* one past the last nonce */
    uint64_t chunk;         /* nonces a thread claims at once */
    atomic_uint_fast64_t next;
    atomic_uint_fast64_t best;
    atomic_uint_fast64_t hashes;
    atomic_int cancelled;
    int bits_valid;
};

static void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

ts_search *ts_search_new(const uint8_t header[80], uint64_t first, uint64_t count,
                         uint64_t chunk) {
    ts_search *search = calloc(1, sizeof *search);
    if (!search) return NULL;
    memcpy(search->midstate, IV256, sizeof IV256);
    ts_sha256_compress(search->midstate, header, 1);
    memcpy(search->tail, header + 64, 16);
    search->tail[16] = 0x80;
    search->tail[62] = 0x02; /* 640 bits */
    search->tail[63] = 0x80;
    uint32_t bits = (uint32_t)header[72] | (uint32_t)header[73] << 8 |
                    (uint32_t)header[74] << 16 | (uint32_t)header[75] << 24;
    search->bits_valid = ts_bits_to_target(bits, search->target) == 0;
    search->end = first + count;
    search->chunk = chunk ? chunk : 1 << 16;
    atomic_init(&search->next, first);
    atomic_init(&search->best, TS_NONCE_NONE);
    atomic_init(&search->hashes, 0);
    atomic_init(&search->cancelled, 0);
    return search;
}

void ts_search_free(ts_search *search) { free(search); }
void ts_search_cancel(ts_search *search) { atomic_store(&search->cancelled, 1); }
int ts_search_cancelled(ts_search *search) { return atomic_load(&search->cancelled); }
uint64_t ts_search_hashes(ts_search *search) { return atomic_load(&search->hashes); }

static void record_best(ts_search *search, uint64_t nonce) {
    uint64_t seen = atomic_load(&search->best);
    while (nonce < seen && !atomic_compare_exchange_weak(&search->best, &seen, nonce)) {
    }
}

/* Chunks are claimed in increasing order, so when a thread finds a nonce every lower chunk is
 * already claimed and will be finished: the lowest qualifying nonce wins whatever the timing. */
static void search_worker(void *context, int worker) {
    (void)worker;
    ts_search *search = context;
    uint8_t block[64], second[64] = {0};
    memcpy(block, search->tail, 64);
    second[32] = 0x80;
    second[62] = 0x01; /* 256 bits */
    uint32_t target_top = (uint32_t)search->target[28] | (uint32_t)search->target[29] << 8 |
                          (uint32_t)search->target[30] << 16 |
                          (uint32_t)search->target[31] << 24;
    while (!atomic_load_explicit(&search->cancelled, memory_order_relaxed)) {
        uint64_t first = atomic_fetch_add(&search->next, search->chunk);
        if (first >= search->end || first >= atomic_load(&search->best)) break;
        uint64_t end = first + search->chunk < search->end ? first + search->chunk : search->end;
        uint64_t nonce = first;
        for (; nonce < end; nonce++) {
            block[12] = (uint8_t)nonce;
            block[13] = (uint8_t)(nonce >> 8);
            block[14] = (uint8_t)(nonce >> 16);
            block[15] = (uint8_t)(nonce >> 24);
            uint32_t state[8];
            memcpy(state, search->midstate, sizeof state);
            ts_sha256_compress(state, block, 1);
            for (int i = 0; i < 8; i++) store_be32(second + 4 * i, state[i]);
            memcpy(state, IV256, sizeof state);
            ts_sha256_compress(state, second, 1);
            /* The hash's most significant little-endian word is state[7] byte-swapped. */
            if (__builtin_bswap32(state[7]) > target_top) continue;
            uint8_t hash[32];
            for (int i = 0; i < 8; i++) store_be32(hash + 4 * i, state[i]);
            if (ts_hash_meets_target(hash, search->target)) {
                record_best(search, nonce);
                nonce++;
                break;
            }
        }
        atomic_fetch_add(&search->hashes, nonce - first);
    }
}

uint64_t ts_search_run(ts_search *search, int threads) {
    if (!search->bits_valid) return TS_NONCE_NONE;
    ts_parallel_run(threads, search_worker, search);
    return atomic_load(&search->best);
}

typedef struct {
    const uint8_t *headers;
    size_t count;
    const uint8_t *prev_hash;
    atomic_size_t first_bad;
    int reasons[TS_THREADS_MAX];
    size_t bad_index[TS_THREADS_MAX];
} validation;

static int check_header(const uint8_t *header, const uint8_t *expected_prev, uint8_t hash[32]) {
    if (expected_prev && memcmp(header + 4, expected_prev, 32) != 0) return TS_HEADER_BAD_LINK;
    uint32_t bits = (uint32_t)header[72] | (uint32_t)header[73] << 8 |
                    (uint32_t)header[74] << 16 | (uint32_t)header[75] << 24;
    uint8_t target[32];
    if (ts_bits_to_target(bits, target) != 0) return TS_HEADER_BAD_BITS;
    ts_header_hash(header, hash);
    if (!ts_hash_meets_target(hash, target)) return TS_HEADER_BAD_POW;
    return TS_HEADER_OK;
}

static void validate_range(void *context, size_t first, size_t end, int worker) {
    validation *v = context;
    uint8_t previous[32], hash[32];
    const uint8_t *expected = v->prev_hash;
    if (first > 0) {
        ts_header_hash(v->headers + (first - 1) * TS_HEADER_BYTES, previous);
        expected = previous;
    }
    v->bad_index[worker] = v->count;
    for (size_t i = first; i < end; i++) {
        if (i % 4096 == 0 && atomic_load_explicit(&v->first_bad, memory_order_relaxed) < i) return;
        int reason = check_header(v->headers + i * TS_HEADER_BYTES, expected, hash);
        if (reason != TS_HEADER_OK) {
            v->reasons[worker] = reason;
            v->bad_index[worker] = i;
            size_t seen = atomic_load(&v->first_bad);
            while (i < seen && !atomic_compare_exchange_weak(&v->first_bad, &seen, i)) {
            }
            return;
        }
        memcpy(previous, hash, 32);
        expected = previous;
    }
}

size_t ts_validate_headers(const uint8_t *headers, size_t count, const uint8_t *prev_hash,
                           int threads, int *reason) {
    validation *v = calloc(1, sizeof *v);
    if (!v) {
        *reason = -1;
        return 0;
    }
    v->headers = headers;
    v->count = count;
    v->prev_hash = prev_hash;
    atomic_init(&v->first_bad, count);
    if (threads < 1) threads = 1;
    if (threads > TS_THREADS_MAX) threads = TS_THREADS_MAX;
    for (int i = 0; i < TS_THREADS_MAX; i++) v->bad_index[i] = count;
    ts_parallel_for(count, threads, validate_range, v);
    size_t first_bad = count;
    *reason = TS_HEADER_OK;
    for (int i = 0; i < TS_THREADS_MAX; i++) {
        if (v->bad_index[i] < first_bad) {
            first_bad = v->bad_index[i];
            *reason = v->reasons[i];
        }
    }
    free(v);
    return first_bad;
}

typedef struct {
    const uint8_t *buffer;
    size_t record_size;
    uint8_t *out;
} record_job;

static void hash_records_range(void *context, size_t first, size_t end, int worker) {
    (void)worker;
    record_job *job = context;
    ts_sha256d_records(job->buffer + first * job->record_size, end - first, job->record_size,
                       job->out + 32 * first);
}

void ts_sha256d_records_parallel(const uint8_t *buffer, size_t record_count,
                                 size_t record_size, uint8_t *out, int threads) {
    record_job job = {buffer, record_size, out};
    ts_parallel_for(record_count, threads, hash_records_range, &job);
}
