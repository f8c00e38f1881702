#include "bip340_batch.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "parallel.h"

/* libsecp256k1 0.2.0 as one unit with this file, so its internal functions (field, group,
 * scalar, ecmult_multi) are callable. Its public functions stay hidden inside this module:
 * coincurve's copy of the library, loaded in the same process, keeps its own. */
#define SECP256K1_API __attribute__((visibility("hidden")))
#define ENABLE_MODULE_EXTRAKEYS 1
#define ENABLE_MODULE_SCHNORRSIG 1
#define ECMULT_WINDOW_SIZE 15 /* the library's default tables */
#define ECMULT_GEN_PREC_BITS 4
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include "vendor/secp256k1/src/secp256k1.c"
#include "vendor/secp256k1/src/precomputed_ecmult.c"
#include "vendor/secp256k1/src/precomputed_ecmult_gen.c"
#pragma GCC diagnostic pop

/* Signatures in one multi-scalar multiplication. Pippenger's cost per point falls as the
 * group grows (measured here: 30 us a signature in groups of 1,000, 23 in groups of 8,000,
 * against 46 verifying each alone); larger groups only add memory (~340 bytes a signature
 * plus Pippenger's scratch, about 2 MB at this size). */
#define GROUP_MAX 8192
/* A failing range at most this long is settled by checking each signature alone. */
#define SINGLE_MAX 4

/* One signature, decoded and weighted: a_i random, and the check is
 * sum(a_i s_i) G - sum(a_i e_i P_i) - sum(a_i R_i) == infinity. */
typedef struct {
    secp256k1_ge key;        /* P_i = lift_x(key) */
    secp256k1_ge nonce;      /* R_i = lift_x(r) */
    secp256k1_scalar s;      /* the signature's s */
    secp256k1_scalar e;      /* the challenge hash */
    secp256k1_scalar weighted_s;      /* a_i s_i */
    secp256k1_scalar key_scalar;      /* -a_i e_i */
    secp256k1_scalar nonce_scalar;    /* -a_i */
    size_t index;            /* position in the caller's arrays */
} decoded;

typedef struct {
    const uint8_t *messages, *keys, *signatures;
    uint8_t *out;
} batch_job;

static int points_of(secp256k1_scalar *scalar, secp256k1_ge *point, size_t index, void *data) {
    const decoded *items = data;
    const decoded *item = &items[index / 2];
    if (index % 2 == 0) {
        *point = item->key;
        *scalar = item->key_scalar;
    } else {
        *point = item->nonce;
        *scalar = item->nonce_scalar;
    }
    return 1;
}

/* Decodes signature i into item with weight a; 0 when it is invalid on its face (a key or r
 * that is no curve point's x, an s at or above the group order): verifying it alone fails
 * for the same reason. `previous` (or NULL) is the last decoded item, whose key is reused when
 * the key repeats, as keys in one batch often do. */
static int decode(const batch_job *job, size_t i, const uint8_t random[32], decoded *item,
                  const decoded *previous) {
    const uint8_t *key = job->keys + 32 * i, *signature = job->signatures + 64 * i;
    secp256k1_fe x;
    int overflow;
    if (previous && memcmp(job->keys + 32 * previous->index, key, 32) == 0) {
        item->key = previous->key;
    } else if (!secp256k1_fe_set_b32(&x, key) || !secp256k1_ge_set_xo_var(&item->key, &x, 0)) {
        return 0;
    }
    if (!secp256k1_fe_set_b32(&x, signature) || !secp256k1_ge_set_xo_var(&item->nonce, &x, 0))
        return 0;
    secp256k1_scalar_set_b32(&item->s, signature + 32, &overflow);
    if (overflow) return 0;
    secp256k1_schnorrsig_challenge(&item->e, signature, job->messages + 32 * i, 32, key);

    /* a_i = SHA256(random || i): unknown to whoever made the signatures, which is all the
     * batch equation needs (BIP340 allows any CSPRNG). */
    secp256k1_sha256 sha;
    unsigned char weight_bytes[32];
    uint64_t counter = i;
    secp256k1_scalar weight;
    secp256k1_sha256_initialize(&sha);
    secp256k1_sha256_write(&sha, random, 32);
    secp256k1_sha256_write(&sha, (const unsigned char *)&counter, sizeof counter);
    secp256k1_sha256_finalize(&sha, weight_bytes);
    secp256k1_scalar_set_b32(&weight, weight_bytes, NULL);
    if (secp256k1_scalar_is_zero(&weight)) secp256k1_scalar_set_int(&weight, 1);
    secp256k1_scalar_mul(&item->weighted_s, &item->s, &weight);
    secp256k1_scalar_mul(&item->key_scalar, &item->e, &weight);
    secp256k1_scalar_negate(&item->key_scalar, &item->key_scalar);
    secp256k1_scalar_negate(&item->nonce_scalar, &weight);
    item->index = i;
    return 1;
}

/* One signature alone, from its decoded parts: s G - e P must be R (whose y is even). */
static int check_one(const decoded *item) {
    secp256k1_gej key, sum;
    secp256k1_scalar minus_e;
    secp256k1_ge minus_nonce;
    secp256k1_scalar_negate(&minus_e, &item->e);
    secp256k1_gej_set_ge(&key, &item->key);
    secp256k1_ecmult(&sum, &key, &minus_e, &item->s);
    secp256k1_ge_neg(&minus_nonce, &item->nonce);
    secp256k1_gej_add_ge_var(&sum, &sum, &minus_nonce, NULL);
    return secp256k1_gej_is_infinity(&sum);
}

/* Marks items[0, count) valid in out when they pass together; halves a failing range. */
static void settle(const batch_job *job, secp256k1_scratch *scratch, decoded *items,
                   size_t count) {
    if (count == 0) return;
    if (count > SINGLE_MAX) {
        secp256k1_scalar g_scalar;
        secp256k1_gej sum;
        secp256k1_scalar_set_int(&g_scalar, 0);
        for (size_t i = 0; i < count; i++)
            secp256k1_scalar_add(&g_scalar, &g_scalar, &items[i].weighted_s);
        if (secp256k1_ecmult_multi_var(&secp256k1_context_static->error_callback, scratch, &sum,
                                       &g_scalar, points_of, items, 2 * count) &&
            secp256k1_gej_is_infinity(&sum)) {
            for (size_t i = 0; i < count; i++) job->out[items[i].index] = 1;
            return;
        }
        settle(job, scratch, items, count / 2);
        settle(job, scratch, items + count / 2, count - count / 2);
        return;
    }
    for (size_t i = 0; i < count; i++) job->out[items[i].index] = (uint8_t)check_one(&items[i]);
}

static void verify_group(void *context, size_t first, size_t end, int worker) {
    (void)worker;
    batch_job *job = context;
    size_t count = end - first, points = 2 * count;
    decoded *items = malloc(count * sizeof *items);
    size_t scratch_bytes = secp256k1_pippenger_scratch_size(
        points, secp256k1_pippenger_bucket_window(points)) +
        PIPPENGER_SCRATCH_OBJECTS * ALIGNMENT;
    secp256k1_scratch *scratch = items ? secp256k1_scratch_space_create(
        secp256k1_context_static, scratch_bytes) : NULL;
    uint8_t random[32];
    if (!scratch || getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) {
        /* no memory for the batch (or no randomness): each alone, which needs none */
        if (items) free(items);
        if (scratch) secp256k1_scratch_space_destroy(secp256k1_context_static, scratch);
        ts_bip340_verify_each(job->messages + 32 * first, job->keys + 32 * first,
                              job->signatures + 64 * first, count, job->out + first);
        return;
    }
    size_t decoded_count = 0;
    for (size_t i = first; i < end; i++) {
        job->out[i] = 0;
        const decoded *previous = decoded_count ? &items[decoded_count - 1] : NULL;
        if (decode(job, i, random, &items[decoded_count], previous)) decoded_count++;
    }
    settle(job, scratch, items, decoded_count);
    secp256k1_scratch_space_destroy(secp256k1_context_static, scratch);
    free(items);
}

void ts_bip340_verify_batched(const uint8_t *messages, const uint8_t *keys,
                              const uint8_t *signatures, size_t count, int threads, uint8_t *out) {
    batch_job job = {messages, keys, signatures, out};
    if (count == 0) return;
    if (threads < 1) threads = 1;
    /* as many groups as threads (larger groups verify faster), none above GROUP_MAX */
    size_t group = (count + (size_t)threads - 1) / (size_t)threads;
    if (group > GROUP_MAX) group = GROUP_MAX;
    /* a thread that cannot start leaves its groups to the others: answers are whole anyway */
    ts_parallel_claim(count, group, threads, verify_group, &job);
}

void ts_bip340_verify_each(const uint8_t *messages, const uint8_t *keys,
                           const uint8_t *signatures, size_t count, uint8_t *out) {
    secp256k1_xonly_pubkey key;
    const uint8_t *parsed_from = NULL;
    int parsed = 0;
    for (size_t i = 0; i < count; i++) {
        if (!parsed_from || memcmp(parsed_from, keys + 32 * i, 32) != 0) {
            parsed = secp256k1_xonly_pubkey_parse(secp256k1_context_static, &key, keys + 32 * i);
            parsed_from = keys + 32 * i;
        }
        out[i] = parsed && secp256k1_schnorrsig_verify(secp256k1_context_static,
                                                       signatures + 64 * i, messages + 32 * i,
                                                       32, &key) == 1;
    }
}
