#include "schnorr_batch.h"

#include <stdatomic.h>
#include <string.h>

#include "parallel.h"

/* Items a thread claims at once: ~1.5 ms of verification, so a thread slowed by a neighbour on
 * a shared machine leaves its share to the others instead of finishing last. */
#define CLAIM 64

typedef struct {
    const ts_secp *secp;
    const uint8_t *messages;
    const uint8_t *keys;
    const uint8_t *signatures;
    size_t count;
    uint8_t *out;
    atomic_size_t next;
} verify_job;

typedef struct {
    unsigned char data[64];
} xonly_key;

static void verify_worker(void *context, int worker) {
    (void)worker;
    verify_job *job = context;
    const ts_secp *secp = job->secp;
    xonly_key parsed;
    const uint8_t *parsed_from = NULL; /* key bytes `parsed` holds: batches repeat keys */
    int parsed_ok = 0;
    for (;;) {
        size_t first = atomic_fetch_add(&job->next, CLAIM);
        if (first >= job->count) return;
        size_t end = first + CLAIM < job->count ? first + CLAIM : job->count;
        for (size_t i = first; i < end; i++) {
            const uint8_t *key = job->keys + 32 * i;
            if (!parsed_from || memcmp(parsed_from, key, 32) != 0) {
                parsed_ok = secp->parse(secp->context, &parsed, key);
                parsed_from = key;
            }
            job->out[i] = parsed_ok && secp->verify(secp->context, job->signatures + 64 * i,
                                                    job->messages + 32 * i, 32, &parsed) == 1;
        }
    }
}

void ts_verify_batch(const ts_secp *secp, const uint8_t *messages, const uint8_t *keys,
                     const uint8_t *signatures, size_t count, int threads, uint8_t *out) {
    verify_job job = {secp, messages, keys, signatures, count, out, 0};
    atomic_init(&job.next, 0);
    size_t useful = (count + CLAIM - 1) / CLAIM;
    if ((size_t)threads > useful) threads = useful ? (int)useful : 1;
    ts_parallel_run(threads, verify_worker, &job);
}

void ts_check_keys(const ts_secp *secp, const uint8_t *keys, size_t count, uint8_t *out) {
    xonly_key parsed;
    for (size_t i = 0; i < count; i++) {
        out[i] = secp->parse(secp->context, &parsed, keys + 32 * i) == 1;
    }
}
