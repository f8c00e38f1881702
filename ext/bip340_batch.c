#include "bip340_batch.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "parallel.h"
#include "schnorr_batch.h"

/* libsecp256k1 0.2.0 as one unit with this file, so its internal functions (field, group,
 * scalar, ecmult_multi) are callable. Its public functions stay hidden inside this module:
 * coincurve's copy of the library, loaded in the same process, keeps its own. */
#define SECP256K1_API __attribute__((visibility("hidden")))
#define ENABLE_MODULE_EXTRAKEYS 1
#define ENABLE_MODULE_SCHNORRSIG 1
#define ECMULT_WINDOW_SIZE 15 /* the library's default tables */
#define ECMULT_GEN_PREC_BITS 4
#include <limits.h> /* the C library's headers first, outside the hidden region below */
#include <stdio.h>
#pragma GCC visibility push(hidden) /* its tables too, which the API macro does not mark */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include "vendor/secp256k1/src/secp256k1.c"
#include "vendor/secp256k1/src/precomputed_ecmult.c"
#include "vendor/secp256k1/src/precomputed_ecmult_gen.c"
#pragma GCC diagnostic pop
#pragma GCC visibility pop

/* Signatures in one multi-scalar multiplication. Pippenger's cost per point falls as the
 * group grows (measured here: 30 us a signature in groups of 1,000, 23 in groups of 8,000,
 * against 46 verifying each alone); larger groups only add memory (~300 bytes a signature
 * plus Pippenger's scratch, about 2 MB at this size). */
#define GROUP_MAX 8192
/* A failing range at most this long is settled by checking each signature alone. */
#define SINGLE_MAX 4

/* One signature, decoded and weighted: a_i random, and the check is
 * sum(a_i s_i) G - sum(a_i e_i P_i) - sum(a_i R_i) == infinity. */
typedef struct {
    secp256k1_ge nonce;            /* R_i = lift_x(r) */
    secp256k1_scalar s;            /* the signature's s */
    secp256k1_scalar e;            /* the challenge hash */
    secp256k1_scalar weighted_s;   /* a_i s_i */
    secp256k1_scalar key_scalar;   /* -a_i e_i */
    secp256k1_scalar nonce_scalar; /* -a_i */
    size_t index;                  /* position in the caller's arrays */
    uint32_t key;                  /* its key among the group's distinct keys */
} decoded;

/* A distinct key of a group. Signatures under one key share its point in the sum: its
 * scalars add up first, so a signer with many signatures in a batch costs one point, not many,
 * and its x is lifted to a point once. */
typedef struct {
    secp256k1_ge point;     /* P = lift_x(key) */
    secp256k1_scalar sum;   /* of key_scalar over the range being settled */
    const uint8_t *bytes;   /* the key's 32 bytes, in the caller's array */
    uint32_t epoch;         /* the range `sum` belongs to */
} distinct_key;

typedef struct {
    const uint8_t *messages, *keys, *signatures;
    uint8_t *out;
} batch_job;

/* One group's working set. */
typedef struct {
    const batch_job *job;
    decoded *items;
    distinct_key *keys;
    uint32_t key_count;
    uint32_t *slots;        /* open addressing: key number + 1, or 0 for empty */
    size_t slot_mask;
    uint32_t *touched;      /* keys in the range being settled */
    uint32_t touched_count;
    uint32_t epoch;
    uint64_t hash_seed;     /* from the group's random bytes */
    int failures_left;      /* failing batch checks before the rest is checked one by one */
    secp256k1_scratch *scratch;
} group_state;

/* The multi-scalar multiplication's points: the range's distinct keys, then its nonces. */
typedef struct {
    const group_state *group;
    const decoded *items;
} range_points;

static int points_of(secp256k1_scalar *scalar, secp256k1_ge *point, size_t index, void *data) {
    const range_points *range = data;
    const group_state *group = range->group;
    if (index < group->touched_count) {
        const distinct_key *key = &group->keys[group->touched[index]];
        *point = key->point;
        *scalar = key->sum;
    } else {
        const decoded *item = &range->items[index - group->touched_count];
        *point = item->nonce;
        *scalar = item->nonce_scalar;
    }
    return 1;
}

/* The number of `key` among the group's distinct keys, lifting it on first sight; -1 when
 * it is no curve point's x. */
static long key_number(group_state *group, const uint8_t *key) {
    /* all 32 bytes, mixed with the group's secret: keys can be chosen by whoever sends them,
     * and keys made to collide would turn the table into a list */
    uint64_t hash = group->hash_seed, word;
    for (int part = 0; part < 4; part++) {
        memcpy(&word, key + 8 * part, sizeof word);
        hash = (hash ^ word) * 0x9E3779B97F4A7C15ull;
        hash ^= hash >> 29;
    }
    size_t slot = (size_t)hash & group->slot_mask;
    for (;; slot = (slot + 1) & group->slot_mask) {
        uint32_t entry = group->slots[slot];
        if (entry == 0) break;
        if (memcmp(group->keys[entry - 1].bytes, key, 32) == 0) return entry - 1;
    }
    distinct_key *fresh = &group->keys[group->key_count];
    secp256k1_fe x;
    if (!secp256k1_fe_set_b32(&x, key) || !secp256k1_ge_set_xo_var(&fresh->point, &x, 0))
        return -1;
    fresh->bytes = key;
    fresh->epoch = 0;
    group->slots[slot] = ++group->key_count;
    return group->key_count - 1;
}

/* Decodes signature i into item; 0 when it is invalid on its face (a key or r that is no
 * curve point's x, an s at or above the group order): verifying it alone fails for the same
 * reason. */
static int decode(group_state *group, size_t i, const uint8_t random[32], decoded *item) {
    const batch_job *job = group->job;
    const uint8_t *key = job->keys + 32 * i, *signature = job->signatures + 64 * i;
    secp256k1_fe x;
    int overflow;
    long number = key_number(group, key);
    if (number < 0) return 0;
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
    item->key = (uint32_t)number;
    return 1;
}

/* One signature alone, from its decoded parts: s G - e P must be R (whose y is even). */
static int check_one(const group_state *group, const decoded *item) {
    secp256k1_gej key, sum;
    secp256k1_scalar minus_e;
    secp256k1_ge minus_nonce;
    secp256k1_scalar_negate(&minus_e, &item->e);
    secp256k1_gej_set_ge(&key, &group->keys[item->key].point);
    secp256k1_ecmult(&sum, &key, &minus_e, &item->s);
    secp256k1_ge_neg(&minus_nonce, &item->nonce);
    secp256k1_gej_add_ge_var(&sum, &sum, &minus_nonce, NULL);
    return secp256k1_gej_is_infinity(&sum);
}

/* Whether items[0, count) pass the batch equation together. */
static int range_passes(group_state *group, const decoded *items, size_t count) {
    secp256k1_scalar g_scalar;
    secp256k1_gej sum;
    secp256k1_scalar_set_int(&g_scalar, 0);
    group->epoch++;
    group->touched_count = 0;
    for (size_t i = 0; i < count; i++) {
        distinct_key *key = &group->keys[items[i].key];
        secp256k1_scalar_add(&g_scalar, &g_scalar, &items[i].weighted_s);
        if (key->epoch != group->epoch) {
            key->epoch = group->epoch;
            key->sum = items[i].key_scalar;
            group->touched[group->touched_count++] = items[i].key;
        } else {
            secp256k1_scalar_add(&key->sum, &key->sum, &items[i].key_scalar);
        }
    }
    range_points range = {group, items};
    return secp256k1_ecmult_multi_var(&secp256k1_context_static->error_callback,
                                      group->scratch, &sum, &g_scalar, points_of, &range,
                                      group->touched_count + count) &&
           secp256k1_gej_is_infinity(&sum);
}

/* Marks items[0, count) valid in out when they pass together; halves a failing range.
 * Returns whether all of them are valid. ``failing`` says the range is known to fail (its
 * sibling passed, their parent did not), so its check is skipped. A few bad signatures cost a
 * few halvings each; many would cost more halvings than checking each alone, so once the
 * group's budget of failing checks is spent the rest is checked one by one. */
static int settle(group_state *group, const decoded *items, size_t count, int failing) {
    uint8_t *out = group->job->out;
    if (count <= SINGLE_MAX || group->failures_left <= 0) {
        int all = 1;
        for (size_t i = 0; i < count; i++) {
            out[items[i].index] = (uint8_t)check_one(group, &items[i]);
            all &= out[items[i].index];
        }
        return all;
    }
    if (!failing && range_passes(group, items, count)) {
        for (size_t i = 0; i < count; i++) out[items[i].index] = 1;
        return 1;
    }
    group->failures_left--;
    size_t half = count / 2;
    int left_passed = settle(group, items, half, 0);
    return settle(group, items + half, count - half, left_passed) && left_passed;
}

static void free_group(group_state *group) {
    free(group->items);
    free(group->keys);
    free(group->slots);
    free(group->touched);
    if (group->scratch) secp256k1_scratch_space_destroy(secp256k1_context_static, group->scratch);
}

/* Allocates a group's working set for `count` signatures; 0 when memory ran out. */
static int alloc_group(group_state *group, const batch_job *job, size_t count) {
    size_t slots = 16, points = 2 * count;
    while (slots < 2 * count) slots *= 2;
    memset(group, 0, sizeof *group);
    group->job = job;
    group->slot_mask = slots - 1;
    group->items = malloc(count * sizeof *group->items);
    group->keys = malloc(count * sizeof *group->keys);
    group->slots = calloc(slots, sizeof *group->slots);
    group->touched = malloc(count * sizeof *group->touched);
    if (group->items && group->keys && group->slots && group->touched) {
        size_t scratch_bytes = secp256k1_pippenger_scratch_size(
            points, secp256k1_pippenger_bucket_window(points)) +
            PIPPENGER_SCRATCH_OBJECTS * ALIGNMENT;
        group->scratch = secp256k1_scratch_space_create(secp256k1_context_static,
                                                        scratch_bytes);
    }
    return group->scratch != NULL;
}

/* The vendored library's own verify and key parse, for schnorr_batch.c's one-by-one loop. */
static int vendored_verify(const void *context, const unsigned char *signature64,
                           const unsigned char *message, size_t message_length,
                           const void *public_key) {
    return secp256k1_schnorrsig_verify(context, signature64, message, message_length,
                                       public_key);
}

static int vendored_parse(const void *context, void *public_key, const unsigned char *input32) {
    return secp256k1_xonly_pubkey_parse(context, public_key, input32);
}

static void verify_group(void *context, size_t first, size_t end, int worker) {
    (void)worker;
    batch_job *job = context;
    size_t count = end - first;
    group_state group;
    uint8_t random[32];
    if (!alloc_group(&group, job, count) ||
        getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) {
        /* no memory for the batch (or no randomness): each alone, which needs neither */
        const ts_secp vendored = {secp256k1_context_static, vendored_verify, vendored_parse};
        free_group(&group);
        ts_verify_batch(&vendored, job->messages + 32 * first, job->keys + 32 * first,
                        job->signatures + 64 * first, count, 1, job->out + first);
        return;
    }
    memcpy(&group.hash_seed, random, sizeof group.hash_seed);
    /* failing checks enough to find one or two bad signatures by halving (log2 n + 2) */
    group.failures_left = 2;
    for (size_t n = count; n > 1; n /= 2) group.failures_left++;
    size_t decoded_count = 0;
    for (size_t i = first; i < end; i++) {
        job->out[i] = 0;
        if (decode(&group, i, random, &group.items[decoded_count])) decoded_count++;
    }
    settle(&group, group.items, decoded_count, 0);
    free_group(&group);
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
