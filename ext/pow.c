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
    uint32_t target_top;    /* the target's most significant little-endian word */
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
    search->target_top = (uint32_t)search->target[28] | (uint32_t)search->target[29] << 8 |
                         (uint32_t)search->target[30] << 16 | (uint32_t)search->target[31] << 24;
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

/* The full hash of one nonce, for a candidate the scan reported. */
static void nonce_hash(const ts_search *search, uint64_t nonce, uint8_t hash[32]) {
    uint8_t block[64];
    uint32_t state[8];
    memcpy(block, search->tail, 64);
    block[12] = (uint8_t)nonce;
    block[13] = (uint8_t)(nonce >> 8);
    block[14] = (uint8_t)(nonce >> 16);
    block[15] = (uint8_t)(nonce >> 24);
    memcpy(state, search->midstate, sizeof state);
    ts_sha256_compress(state, block, 1);
    uint8_t first[32];
    for (int i = 0; i < 8; i++) store_be32(first + 4 * i, state[i]);
    ts_sha256(first, 32, hash);
}

/* Searches [first, end) of one claimed chunk; returns one past the last nonce hashed. The
 * cancel flag is read every SCAN_STEP nonces (under a millisecond on any of the kernels here),
 * whatever the chunk size. */
#define SCAN_STEP 4096
static uint64_t search_chunk(ts_search *search, uint64_t first, uint64_t end) {
    uint64_t nonce = first;
    while (nonce < end) {
        if (atomic_load_explicit(&search->cancelled, memory_order_relaxed)) return nonce;
        uint64_t step_end = end - nonce > SCAN_STEP ? nonce + SCAN_STEP : end;
        uint64_t candidate =
            ts_nonce_scan(search->midstate, search->tail, nonce, step_end, search->target_top);
        if (candidate == step_end) {
            nonce = step_end;
            continue;
        }
        uint8_t hash[32];
        nonce_hash(search, candidate, hash);
        nonce = candidate + 1;
        if (ts_hash_meets_target(hash, search->target)) {
            record_best(search, candidate);
            break;
        }
    }
    return nonce;
}

/* Chunks are claimed in increasing order, so when a thread finds a nonce every lower chunk is
 * already claimed and will be finished: the lowest qualifying nonce wins whatever the timing. */
static void search_worker(void *context, int worker) {
    (void)worker;
    ts_search *search = context;
    while (!atomic_load_explicit(&search->cancelled, memory_order_relaxed)) {
        uint64_t first = atomic_fetch_add(&search->next, search->chunk);
        if (first >= search->end || first >= atomic_load(&search->best)) break;
        uint64_t end = first + search->chunk < search->end ? first + search->chunk : search->end;
        uint64_t done = search_chunk(search, first, end);
        atomic_fetch_add(&search->hashes, done - first);
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

/* Headers hashed per batch kernel call: many times the lane count of any kernel (4 or 16),
 * few enough that a failure found by another thread stops this range soon. */
#define VALIDATE_BATCH 512

/* The target of compact bits, recomputed only when the bits change (they rarely do). */
typedef struct {
    uint32_t bits;
    int reason;
    uint8_t target[32];
} target_cache;

static int check_header(const uint8_t *header, const uint8_t *expected_prev,
                        const uint8_t hash[32], target_cache *cache) {
    if (expected_prev && memcmp(header + 4, expected_prev, 32) != 0) return TS_HEADER_BAD_LINK;
    uint32_t bits = (uint32_t)header[72] | (uint32_t)header[73] << 8 |
                    (uint32_t)header[74] << 16 | (uint32_t)header[75] << 24;
    if (bits != cache->bits) {
        cache->bits = bits;
        cache->reason = ts_bits_to_target(bits, cache->target);
    }
    if (cache->reason != 0) return TS_HEADER_BAD_BITS;
    if (!ts_hash_meets_target(hash, cache->target)) return TS_HEADER_BAD_POW;
    return TS_HEADER_OK;
}

static void record_bad(validation *v, int worker, size_t index, int reason) {
    v->reasons[worker] = reason;
    v->bad_index[worker] = index;
    size_t seen = atomic_load(&v->first_bad);
    while (index < seen && !atomic_compare_exchange_weak(&v->first_bad, &seen, index)) {
    }
}

static void validate_range(void *context, size_t first, size_t end, int worker) {
    validation *v = context;
    /* hashes[0] is the previous header's hash, hashes[1 + j] that of header batch + j. */
    uint8_t hashes[(VALIDATE_BATCH + 1) * 32];
    const uint8_t *expected = v->prev_hash;
    if (first > 0) {
        ts_header_hash(v->headers + (first - 1) * TS_HEADER_BYTES, hashes);
        expected = hashes;
    }
    target_cache cache = {0, 0, {0}};
    cache.reason = ts_bits_to_target(0, cache.target);
    v->bad_index[worker] = v->count;
    for (size_t batch = first; batch < end; batch += VALIDATE_BATCH) {
        if (atomic_load_explicit(&v->first_bad, memory_order_relaxed) < batch) return;
        size_t n = end - batch < VALIDATE_BATCH ? end - batch : VALIDATE_BATCH;
        const uint8_t *headers = v->headers + batch * TS_HEADER_BYTES;
        ts_sha256d_records(headers, n, TS_HEADER_BYTES, hashes + 32);
        for (size_t j = 0; j < n; j++) {
            int reason = check_header(headers + j * TS_HEADER_BYTES, expected,
                                      hashes + 32 * (j + 1), &cache);
            if (reason != TS_HEADER_OK) {
                record_bad(v, worker, batch + j, reason);
                return;
            }
            expected = hashes + 32 * (j + 1);
        }
        memcpy(hashes, hashes + 32 * n, 32);
        expected = hashes;
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
    /* Chunks of 4,096 records (~0.2 ms each): few claims, and a thread slowed by a busy core
     * hands the rest to the others (static halves ran slower than one thread then). */
    ts_parallel_claim(record_count, 4096, threads, hash_records_range, &job);
}

/* Below this many pairs a level is hashed on the calling thread: starting a thread costs about
 * as much as hashing a few thousand pairs. */
#define MERKLE_PARALLEL_PAIRS_MIN 2048

void ts_merkle_parents_parallel(const uint8_t *in, size_t count, uint8_t *out, int threads) {
    size_t pairs = count / 2;
    if (threads <= 1 || pairs < MERKLE_PARALLEL_PAIRS_MIN) {
        ts_merkle_parents(in, count, out);
        return;
    }
    /* Threads write parents while others still read children, so out must not overlap in. */
    ts_sha256d_records_parallel(in, pairs, 64, out, threads);
    if (count % 2) {
        uint8_t pair[64];
        memcpy(pair, in + 32 * (count - 1), 32);
        memcpy(pair + 32, pair, 32);
        ts_sha256d(pair, 64, out + 32 * pairs);
    }
}
