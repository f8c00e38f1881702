#include "commit_kernel.h"

#include <stdlib.h>
#include <string.h>

#include "sha256.h"

_Static_assert(sizeof(ts_record) == 128, "a record is 128 bytes");
_Static_assert(sizeof(ts_hold) == 88, "HOLD_DTYPE in state.py mirrors ts_hold");
_Static_assert(sizeof(ts_policy) == 112, "POLICY_DTYPE in state.py mirrors ts_policy");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "records are little-endian");

#define U64_MAX UINT64_MAX

/* Prefetching this many records ahead hides most of a cache miss on large account arrays:
 * one batch-authorized unit of 65,536 transfers between random accounts of 10 million applied
 * in 1.59-2.71 ms 16 ahead, 2.14-3.08 ms 8 ahead, 1.78-2.93 ms 32 ahead (alternated builds,
 * /tmp/apply_t.py of session 5). */
#define PREFETCH_AHEAD 16
/* Resolving a signer does a few nanoseconds of work a record, so it looks further ahead: 65,536
 * random debit accounts of 10 million (owner keys 320 MB) resolved in 0.99-1.01 ms 32 ahead,
 * 1.04-1.13 ms 8 ahead (alternated builds, /tmp/resolve_t.py of session 5). */
#define RESOLVE_PREFETCH_AHEAD 32

/* GCC 12's dead-code elimination drops __builtin_prefetch inside these loops (the kernel ran
 * 3x slower at 10 million accounts), so x86 gets the instruction itself. */
static inline void prefetch(const void *address) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)address));
#else
    __builtin_prefetch(address);
#endif
}

/* ---------------------------------------------------------------- hash map */

static inline uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0xBF58476D1CE4E5B9ull);
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline const uint64_t *entry_key(const ts_map *map, uint64_t index) {
    return (const uint64_t *)(map->entries + index * map->entry_bytes);
}

static inline uint64_t home_of(const ts_map *map, uint64_t index) {
    const uint64_t *key = entry_key(map, index);
    return mix(key[0], key[1]) & (map->capacity - 1);
}

uint64_t ts_map_find(const ts_map *map, uint64_t key_a, uint64_t key_b) {
    if (map->capacity == 0) return TS_NOT_FOUND;
    uint64_t mask = map->capacity - 1;
    for (uint64_t i = mix(key_a, key_b) & mask;; i = (i + 1) & mask) {
        uint32_t slot = map->slots[i];
        if (slot == 0) return TS_NOT_FOUND;
        const uint64_t *key = entry_key(map, slot - 1);
        if (key[0] == key_a && key[1] == key_b) return slot - 1;
    }
}

void ts_map_insert(ts_map *map, uint64_t index) {
    uint64_t mask = map->capacity - 1;
    uint64_t i = home_of(map, index);
    while (map->slots[i]) i = (i + 1) & mask;
    map->slots[i] = (uint32_t)(index + 1);
}

/* Backward-shift deletion (Knuth's algorithm R): no tombstones, so lookups stay short. */
void ts_map_delete(ts_map *map, uint64_t index) {
    uint64_t mask = map->capacity - 1;
    uint64_t hole = home_of(map, index);
    while (map->slots[hole] != (uint32_t)(index + 1)) hole = (hole + 1) & mask;
    for (uint64_t j = (hole + 1) & mask; map->slots[j]; j = (j + 1) & mask) {
        uint64_t home = home_of(map, map->slots[j] - 1);
        /* The entry at j may move into the hole unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            map->slots[hole] = map->slots[j];
            hole = j;
        }
    }
    map->slots[hole] = 0;
}

void ts_map_rebuild(ts_map *map, uint64_t count) {
    memset(map->slots, 0, map->capacity * sizeof *map->slots);
    for (uint64_t i = 0; i < count; i++) ts_map_insert(map, i);
}

/* ---------------------------------------------------------------- expiry heap */

static inline int heap_less(const uint64_t *heap, uint64_t a, uint64_t b) {
    return heap[2 * a] < heap[2 * b] ||
           (heap[2 * a] == heap[2 * b] && heap[2 * a + 1] < heap[2 * b + 1]);
}

static inline void heap_swap(uint64_t *heap, uint64_t a, uint64_t b) {
    uint64_t e = heap[2 * a], i = heap[2 * a + 1];
    heap[2 * a] = heap[2 * b];
    heap[2 * a + 1] = heap[2 * b + 1];
    heap[2 * b] = e;
    heap[2 * b + 1] = i;
}

static void heap_push(ts_state *s, uint64_t expiry_s, uint64_t index) {
    uint64_t *heap = s->expiry_heap;
    uint64_t at = s->heap_count++;
    heap[2 * at] = expiry_s;
    heap[2 * at + 1] = index;
    while (at && heap_less(heap, at, (at - 1) / 2)) {
        heap_swap(heap, at, (at - 1) / 2);
        at = (at - 1) / 2;
    }
}

static void heap_pop(ts_state *s) {
    uint64_t *heap = s->expiry_heap;
    uint64_t n = --s->heap_count;
    heap[0] = heap[2 * n];
    heap[1] = heap[2 * n + 1];
    for (uint64_t at = 0;;) {
        uint64_t least = at, left = 2 * at + 1, right = left + 1;
        if (left < n && heap_less(heap, left, least)) least = left;
        if (right < n && heap_less(heap, right, least)) least = right;
        if (least == at) break;
        heap_swap(heap, at, least);
        at = least;
    }
}

void ts_rebuild_heap(ts_state *s) {
    s->heap_count = 0;
    for (uint64_t i = 0; i < s->hold_count; i++) {
        if (s->holds[i].status == TS_STATUS_OPEN) heap_push(s, s->holds[i].expiry_s, i);
    }
}

size_t ts_expire_holds(ts_state *s, uint64_t now_s, uint64_t *out, size_t capacity) {
    size_t n = 0;
    while (n < capacity && s->heap_count && s->expiry_heap[0] <= now_s) {
        uint64_t index = s->expiry_heap[1];
        heap_pop(s);
        ts_hold *hold = &s->holds[index];
        if (hold->status != TS_STATUS_OPEN) continue; /* posted or voided since it was pushed */
        hold->status = TS_STATUS_EXPIRED;
        /* Cannot wrap: the payer's balance plus its hold is part of the supply, a u64. */
        s->accounts[hold->payer].balance += hold->amount;
        out[n++] = index;
    }
    return n;
}

/* ---------------------------------------------------------------- field checks */

enum {
    F_DEBIT = 1, F_CREDIT = 2, F_AMOUNT = 4, F_AUX = 8, F_DATA = 16, F_AUX2 = 32, F_EXTRA = 64,
};

/* Fields each kind requires to be zero (docs/FORMAT.md, table of kinds). */
static const uint8_t ZERO_FIELDS[10] = {
    0,
    F_DEBIT | F_CREDIT | F_AMOUNT | F_AUX | F_AUX2 | F_EXTRA, /* open_account */
    F_AUX | F_DATA | F_AUX2 | F_EXTRA,                        /* transfer */
    F_AUX | F_DATA | F_AUX2 | F_EXTRA,                        /* mint */
    F_CREDIT | F_AUX | F_DATA | F_AUX2 | F_EXTRA,             /* burn */
    F_EXTRA,                                                  /* hold */
    F_AUX2 | F_EXTRA,                                         /* post */
    F_AMOUNT | F_DATA | F_AUX2 | F_EXTRA,                     /* void */
    F_CREDIT,                                                 /* set_policy_key */
    F_CREDIT | F_AMOUNT | F_EXTRA,                            /* call */
};

static inline int is_zero32(const uint8_t *bytes) {
    uint64_t words[4];
    memcpy(words, bytes, 32);
    return (words[0] | words[1] | words[2] | words[3]) == 0;
}

static uint8_t nonzero_fields(const ts_record *r) {
    return (r->debit_account ? F_DEBIT : 0) | (r->credit_account ? F_CREDIT : 0) |
           (r->amount ? F_AMOUNT : 0) | (r->aux ? F_AUX : 0) | (is_zero32(r->data) ? 0 : F_DATA) |
           (r->aux2 ? F_AUX2 : 0) |
           ((r->extra[0] | r->extra[1] | r->extra[2] | r->extra[3]) ? F_EXTRA : 0);
}

uint8_t ts_check_fields(const ts_record *r, uint32_t chain_id, int check_chain) {
    if (r->kind < TS_KIND_OPEN_ACCOUNT || r->kind > TS_KIND_CALL) return TS_MALFORMED;
    if (r->flags & ~TS_FLAGS_KNOWN) return TS_MALFORMED;
    if (check_chain && r->chain_id != chain_id) return TS_WRONG_CHAIN;
    if (r->key_slot >= TS_KEY_SLOTS) return TS_KEY_SLOT_INVALID;
    if (r->kind == TS_KIND_SET_POLICY_KEY && r->key_slot == 0) return TS_KEY_SLOT_INVALID;
    if (r->kind == TS_KIND_OPEN_ACCOUNT && r->key_slot != 0) return TS_KEY_SLOT_INVALID;
    if (nonzero_fields(r) & ZERO_FIELDS[r->kind]) return TS_MALFORMED;
    return TS_OK;
}

/* ---------------------------------------------------------------- policies */

static ts_policy *live_policy(const ts_state *s, uint64_t account, uint64_t slot) {
    uint64_t index = ts_map_find(&s->policy_map, account, slot);
    if (index == TS_NOT_FOUND || is_zero32(s->policies[index].key)) return NULL;
    return &s->policies[index];
}

/* Small set of (account, slot) pairs for one resolve_signers call. */
typedef struct {
    uint64_t *pairs; /* [capacity][2], (0, 0) empty: account 0 never exists */
    uint64_t capacity;
} pair_set;

static int pair_set_has(const pair_set *set, uint64_t a, uint64_t b, int add) {
    if (!set->capacity) return 0;
    uint64_t mask = set->capacity - 1;
    for (uint64_t i = mix(a, b) & mask;; i = (i + 1) & mask) {
        uint64_t *p = &set->pairs[2 * i];
        if (p[0] == a && p[1] == b) return 1;
        if (p[0] == 0) {
            if (add) {
                p[0] = a;
                p[1] = b;
            }
            return 0;
        }
    }
}

static uint8_t resolve_one(const ts_state *s, const ts_record *r, uint8_t *key,
                           pair_set *replaced) {
    if (r->kind == TS_KIND_OPEN_ACCOUNT) {
        memcpy(key, r->data, 32);
        return TS_OK;
    }
    uint64_t debit = r->debit_account;
    if (debit == 0 || debit > s->account_count) return TS_UNKNOWN_ACCOUNT;
    if (r->key_slot == 0 || r->kind == TS_KIND_SET_POLICY_KEY) {
        memcpy(key, s->owner_keys + 32 * debit, 32);
        if (r->kind == TS_KIND_SET_POLICY_KEY) pair_set_has(replaced, debit, r->key_slot, 1);
        return TS_OK;
    }
    const ts_policy *policy = live_policy(s, debit, r->key_slot);
    if (!policy) return TS_KEY_SLOT_EMPTY;
    memcpy(key, policy->key, 32);
    /* The key was checked against the slot as the batch began; a reset earlier in the same
     * batch may change it before this record applies, so the record cannot be trusted. */
    if (pair_set_has(replaced, debit, r->key_slot, 0)) return TS_POLICY_KEY_REPLACED;
    return TS_OK;
}

int ts_resolve_signers(const ts_state *s, const ts_record *records, size_t count,
                       uint8_t *codes, uint8_t *keys) {
    pair_set replaced = {NULL, 0};
    size_t setters = 0;
    for (size_t i = 0; i < count; i++) {
        setters += !codes[i] && records[i].kind == TS_KIND_SET_POLICY_KEY;
    }
    if (setters) {
        replaced.capacity = 16;
        while (replaced.capacity < 2 * setters) replaced.capacity *= 2;
        replaced.pairs = calloc(replaced.capacity, 2 * sizeof(uint64_t));
        if (!replaced.pairs) return -1;
    }
    for (size_t i = 0; i < count; i++) {
        /* Owner keys of millions of accounts are far out of cache: fetch a few records ahead. */
        if (i + RESOLVE_PREFETCH_AHEAD < count) {
            uint64_t ahead = records[i + RESOLVE_PREFETCH_AHEAD].debit_account;
            if (ahead <= s->account_count) prefetch(s->owner_keys + 32 * ahead);
        }
        memset(keys + 32 * i, 0, 32);
        if (!codes[i]) codes[i] = resolve_one(s, &records[i], keys + 32 * i, &replaced);
    }
    free(replaced.pairs);
    return 0;
}

/* Entries past the counts are the newest: drop them from their maps, newest first, and zero
 * their rows, so the tables are as they were before those entries were made. */
void ts_truncate(ts_state *s, uint64_t account_count, uint64_t hold_count,
                 uint64_t policy_count) {
    while (s->hold_count > hold_count) {
        ts_map_delete(&s->hold_map, --s->hold_count);
        memset(&s->holds[s->hold_count], 0, sizeof(ts_hold));
    }
    while (s->policy_count > policy_count) {
        ts_map_delete(&s->policy_map, --s->policy_count);
        memset(&s->policies[s->policy_count], 0, sizeof(ts_policy));
    }
    for (; s->account_count > account_count; s->account_count--) {
        uint64_t n = s->account_count;
        s->accounts[n] = (ts_account){0, 0};
        memset(s->owner_keys + 32 * n, 0, 32);
        s->account_flags[n] = 0;
    }
}

/* ---------------------------------------------------------------- undo log */

enum { UNDO_BALANCE = 1, UNDO_SEQUENCE, UNDO_HOLD_STATUS, UNDO_ALLOWANCE, UNDO_POLICY };

typedef struct {
    uint64_t type;
    uint64_t index;
    uint64_t value;
} undo_entry;

/* What a rollback returns to: the log length and every counter the effects move. */
typedef struct {
    size_t undo_length;
    size_t saved_length;
    uint64_t account_count;
    uint64_t hold_count;
    uint64_t policy_count;
    unsigned __int128 minted;
    unsigned __int128 burned;
} mark;

typedef struct {
    ts_state *state;
    const ts_record *records;
    size_t count;
    uint64_t now_s;
    int genesis;
    int logging; /* off for one-record units: they check everything before changing anything */
    undo_entry *undo;
    size_t undo_length;
    size_t undo_capacity;
    ts_policy *saved; /* policies as they were before a set_policy_key changed them */
    size_t saved_length;
    size_t saved_capacity;
    uint8_t *codes;
    uint64_t *opened;
    uint8_t *stored;
    ts_journal *journal;      /* may be NULL */
    uint64_t journaled_debit; /* the debit account authorize() listed last, or 0 */
    size_t debit_row;         /* ... and its row in the journal, kept up to date in place */
} kernel;

/* Most log entries one record can write: sequence, allowance and two balances. */
#define UNDO_PER_RECORD 4

/* Room for the undo log of records [first, end): before the unit, never during it. */
static int reserve_log(kernel *k, size_t first, size_t end) {
    size_t need = UNDO_PER_RECORD * (end - first), setters = 0;
    if (need > k->undo_capacity) {
        undo_entry *grown = realloc(k->undo, need * sizeof *grown);
        if (!grown) return -1;
        k->undo = grown;
        k->undo_capacity = need;
    }
    for (size_t i = first; i < end; i++) {
        setters += k->records[i].kind == TS_KIND_SET_POLICY_KEY;
    }
    if (setters > k->saved_capacity) {
        ts_policy *grown = realloc(k->saved, setters * sizeof *grown);
        if (!grown) return -1;
        k->saved = grown;
        k->saved_capacity = setters;
    }
    return 0;
}

static inline void log_change(kernel *k, uint64_t type, uint64_t index, uint64_t value) {
    if (!k->logging) return;
    k->undo[k->undo_length++] = (undo_entry){type, index, value};
}

/* The journal of what changed (see ts_journal), called after each change of an account: a row
 * of its balance and sequence as they are now, written while its cache line is at hand. The
 * record that authorize() has just listed keeps its debit account's row up to date in place
 * instead of adding one for each change of that balance. */
static inline void journal_account(kernel *k, uint64_t account, ts_account before) {
    ts_journal *j = k->journal;
    if (!j) return;
    uint64_t *out;
    if (account == k->journaled_debit) {
        out = j->accounts + TS_JOURNAL_ROW_WORDS * k->debit_row; /* keeps its first before */
    } else {
        out = j->accounts + TS_JOURNAL_ROW_WORDS * j->account_length++;
        out[3] = before.balance;
        out[4] = before.sequence;
    }
    const ts_account *a = &k->state->accounts[account];
    out[0] = account;
    out[1] = a->balance;
    out[2] = a->sequence;
}

static inline void journal_hold(kernel *k, uint64_t index) {
    if (k->journal) k->journal->holds[k->journal->hold_length++] = index;
}

/* Called before the policy at index changes: its index, and the entry as it is now. */
static inline void journal_policy(kernel *k, uint64_t index) {
    ts_journal *j = k->journal;
    if (!j) return;
    if (j->policies_before) j->policies_before[j->policy_length] = k->state->policies[index];
    j->policies[j->policy_length++] = index;
}

static void save_policy(kernel *k, uint64_t index) {
    journal_policy(k, index);
    if (!k->logging) return;
    k->saved[k->saved_length] = k->state->policies[index];
    log_change(k, UNDO_POLICY, index, k->saved_length++);
}

static mark take_mark(const kernel *k) {
    const ts_state *s = k->state;
    return (mark){k->undo_length, k->saved_length, s->account_count, s->hold_count,
                  s->policy_count, s->minted, s->burned};
}

static void undo_one(kernel *k, const undo_entry *e) {
    ts_state *s = k->state;
    switch (e->type) {
    case UNDO_BALANCE: {
        ts_account before = s->accounts[e->index];
        s->accounts[e->index].balance = e->value;
        journal_account(k, e->index, before);
        break;
    }
    case UNDO_SEQUENCE: {
        ts_account before = s->accounts[e->index];
        s->accounts[e->index].sequence = e->value;
        journal_account(k, e->index, before);
        break;
    }
    case UNDO_HOLD_STATUS: s->holds[e->index].status = (uint8_t)e->value; break;
    case UNDO_ALLOWANCE: s->policies[e->index].allowance_left = e->value; break;
    case UNDO_POLICY: s->policies[e->index] = k->saved[e->value]; break;
    }
}

static void rollback(kernel *k, const mark *m) {
    ts_state *s = k->state;
    k->journaled_debit = 0; /* the rows of what it restores come after that row */
    while (k->undo_length > m->undo_length) undo_one(k, &k->undo[--k->undo_length]);
    k->saved_length = m->saved_length;
    ts_truncate(s, m->account_count, m->hold_count, m->policy_count);
    s->minted = m->minted;
    s->burned = m->burned;
}

/* ---------------------------------------------------------------- effects of one record */

static inline int account_exists(const ts_state *s, uint64_t account) {
    return account != 0 && account <= s->account_count;
}

static inline void set_balance(kernel *k, uint64_t account, uint64_t balance) {
    ts_account before = k->state->accounts[account];
    log_change(k, UNDO_BALANCE, account, before.balance);
    k->state->accounts[account].balance = balance;
    journal_account(k, account, before);
}

static uint8_t apply_open(kernel *k, const ts_record *r, size_t i) {
    ts_state *s = k->state;
    if (s->account_count >= s->accounts_max) return TS_ACCOUNTS_FULL;
    uint64_t n = ++s->account_count;
    s->accounts[n] = (ts_account){0, 0};
    journal_account(k, n, (ts_account){0, 0});
    memcpy(s->owner_keys + 32 * n, r->data, 32);
    s->account_flags[n] = 0;
    k->opened[i] = n;
    return TS_OK;
}

/* A transfer signed with a policy key: its limits, checked before anything changes. */
static uint8_t check_policy(kernel *k, const ts_record *r, ts_policy **out) {
    ts_policy *p = live_policy(k->state, r->debit_account, r->key_slot);
    /* Only an earlier record of its own linked group can have emptied the slot: revoked. */
    if (!p) return TS_POLICY_EXPIRED;
    if (p->expiry_s && k->now_s >= p->expiry_s) return TS_POLICY_EXPIRED;
    if (p->recipients[0] | p->recipients[1] | p->recipients[2] | p->recipients[3]) {
        uint64_t c = r->credit_account;
        if (c != p->recipients[0] && c != p->recipients[1] && c != p->recipients[2] &&
            c != p->recipients[3]) {
            return TS_POLICY_RECIPIENT;
        }
    }
    if (p->amount_max && r->amount > p->amount_max) return TS_POLICY_AMOUNT;
    if (p->allowance && r->amount > p->allowance_left) return TS_POLICY_ALLOWANCE;
    *out = p;
    return TS_OK;
}

static uint8_t apply_transfer(kernel *k, const ts_record *r) {
    ts_state *s = k->state;
    uint64_t debit = r->debit_account, credit = r->credit_account, amount = r->amount;
    if (!account_exists(s, credit)) return TS_UNKNOWN_CREDIT_ACCOUNT;
    if (credit == debit) return TS_SAME_ACCOUNT;
    if (amount == 0) return TS_AMOUNT_ZERO;
    ts_policy *policy = NULL;
    if (r->key_slot) {
        uint8_t code = check_policy(k, r, &policy);
        if (code) return code;
    }
    uint64_t from = s->accounts[debit].balance, to = s->accounts[credit].balance;
    if (from < amount) return TS_INSUFFICIENT_FUNDS;
    if (to > U64_MAX - amount) return TS_AMOUNT_OVERFLOW;
    if (policy && policy->allowance) {
        journal_policy(k, (uint64_t)(policy - s->policies));
        log_change(k, UNDO_ALLOWANCE, (uint64_t)(policy - s->policies), policy->allowance_left);
        policy->allowance_left -= amount;
    }
    set_balance(k, debit, from - amount);
    set_balance(k, credit, to + amount);
    return TS_OK;
}

static uint8_t apply_mint(kernel *k, const ts_record *r) {
    ts_state *s = k->state;
    uint64_t credit = r->credit_account, amount = r->amount;
    /* Genesis mints its allocations from account 0, genesis itself. */
    int from_genesis = k->genesis && r->debit_account == 0;
    if (!from_genesis && !(s->account_flags[r->debit_account] & TS_ACCOUNT_ISSUER)) {
        return TS_NOT_ISSUER;
    }
    if (!account_exists(s, credit)) return TS_UNKNOWN_CREDIT_ACCOUNT;
    if (amount == 0) return TS_AMOUNT_ZERO;
    /* The supply stays a u64, so no balance or hold can ever pass 2**64 - 1. */
    if (s->minted - s->burned + amount > (unsigned __int128)U64_MAX) return TS_AMOUNT_OVERFLOW;
    uint64_t to = s->accounts[credit].balance;
    if (to > U64_MAX - amount) return TS_AMOUNT_OVERFLOW;
    set_balance(k, credit, to + amount);
    s->minted += amount;
    return TS_OK;
}

static uint8_t apply_burn(kernel *k, const ts_record *r) {
    ts_state *s = k->state;
    uint64_t debit = r->debit_account, amount = r->amount;
    if (!(s->account_flags[debit] & TS_ACCOUNT_ISSUER)) return TS_NOT_ISSUER;
    if (amount == 0) return TS_AMOUNT_ZERO;
    uint64_t from = s->accounts[debit].balance;
    if (from < amount) return TS_INSUFFICIENT_FUNDS;
    set_balance(k, debit, from - amount);
    s->burned += amount;
    return TS_OK;
}

static uint8_t apply_hold(kernel *k, const ts_record *r) {
    ts_state *s = k->state;
    uint64_t debit = r->debit_account, credit = r->credit_account, amount = r->amount;
    if (!account_exists(s, credit)) return TS_UNKNOWN_CREDIT_ACCOUNT;
    if (credit == debit) return TS_SAME_ACCOUNT;
    if (amount == 0) return TS_AMOUNT_ZERO;
    if (!account_exists(s, r->aux2)) return TS_UNKNOWN_AUTHORITY;
    if (r->aux <= k->now_s) return TS_HOLD_EXPIRY_PAST;
    uint64_t from = s->accounts[debit].balance;
    if (from < amount) return TS_INSUFFICIENT_FUNDS;
    if (s->hold_count >= s->holds_max) return TS_HOLDS_FULL;
    set_balance(k, debit, from - amount);
    uint64_t index = s->hold_count++;
    journal_hold(k, index);
    ts_hold *hold = &s->holds[index];
    *hold = (ts_hold){.payer = debit, .sequence = r->sequence, .payee = credit,
                      .authority = r->aux2, .amount = amount, .expiry_s = r->aux,
                      .status = TS_STATUS_OPEN};
    memcpy(hold->hashlock, r->data, 32);
    ts_map_insert(&s->hold_map, index);
    return TS_OK;
}

/* The hold a post or void names, if its authority may still resolve it now. */
static uint8_t find_open_hold(kernel *k, const ts_record *r, ts_hold **out) {
    ts_state *s = k->state;
    uint64_t index = ts_map_find(&s->hold_map, r->credit_account, r->aux);
    if (index == TS_NOT_FOUND) return TS_HOLD_NOT_FOUND;
    ts_hold *hold = &s->holds[index];
    if (r->debit_account != hold->authority) return TS_NOT_HOLD_AUTHORITY;
    switch (hold->status) {
    case TS_STATUS_POSTED: return TS_HOLD_ALREADY_POSTED;
    case TS_STATUS_VOIDED: return TS_HOLD_ALREADY_VOIDED;
    case TS_STATUS_EXPIRED: return TS_HOLD_EXPIRED;
    }
    /* Expired by the clock but not yet swept by expire_holds: it is no longer the authority's. */
    if (k->now_s >= hold->expiry_s) return TS_HOLD_EXPIRED;
    *out = hold;
    return TS_OK;
}

static void set_hold_status(kernel *k, ts_hold *hold, uint8_t status) {
    journal_hold(k, (uint64_t)(hold - k->state->holds));
    log_change(k, UNDO_HOLD_STATUS, (uint64_t)(hold - k->state->holds), hold->status);
    hold->status = status;
}

static uint8_t apply_post(kernel *k, const ts_record *r) {
    ts_state *s = k->state;
    ts_hold *hold = NULL;
    uint8_t code = find_open_hold(k, r, &hold);
    if (code) return code;
    uint64_t amount = r->amount;
    if (amount == 0) return TS_AMOUNT_ZERO;
    if (amount > hold->amount) return TS_POST_EXCEEDS_HOLD;
    if (!is_zero32(hold->hashlock)) {
        uint8_t digest[32];
        ts_sha256(r->data, 32, digest);
        if (memcmp(digest, hold->hashlock, 32) != 0) return TS_HASHLOCK_MISMATCH;
    }
    uint64_t rest = hold->amount - amount;
    uint64_t payee = s->accounts[hold->payee].balance, payer = s->accounts[hold->payer].balance;
    if (payee > U64_MAX - amount || payer > U64_MAX - rest) return TS_AMOUNT_OVERFLOW;
    set_hold_status(k, hold, TS_STATUS_POSTED);
    set_balance(k, hold->payee, payee + amount);
    set_balance(k, hold->payer, payer + rest);
    return TS_OK;
}

static uint8_t apply_void(kernel *k, const ts_record *r) {
    ts_state *s = k->state;
    ts_hold *hold = NULL;
    uint8_t code = find_open_hold(k, r, &hold);
    if (code) return code;
    uint64_t payer = s->accounts[hold->payer].balance;
    if (payer > U64_MAX - hold->amount) return TS_AMOUNT_OVERFLOW;
    set_hold_status(k, hold, TS_STATUS_VOIDED);
    set_balance(k, hold->payer, payer + hold->amount);
    return TS_OK;
}

static uint8_t apply_set_policy(kernel *k, const ts_record *r) {
    ts_state *s = k->state;
    for (int j = 0; j < 4; j++) {
        if (r->extra[j] && !account_exists(s, r->extra[j])) return TS_UNKNOWN_CREDIT_ACCOUNT;
    }
    uint64_t index = ts_map_find(&s->policy_map, r->debit_account, r->key_slot);
    if (is_zero32(r->data)) { /* revoke: clear the slot, keep its entry */
        if (index != TS_NOT_FOUND && !is_zero32(s->policies[index].key)) {
            save_policy(k, index);
            s->policies[index] = (ts_policy){.account = r->debit_account, .slot = r->key_slot};
        }
        return TS_OK;
    }
    if (index == TS_NOT_FOUND) {
        index = s->policy_count++;
        journal_policy(k, index);
        s->policies[index] = (ts_policy){.account = r->debit_account, .slot = r->key_slot};
        ts_map_insert(&s->policy_map, index);
    } else {
        save_policy(k, index);
    }
    ts_policy *p = &s->policies[index];
    p->amount_max = r->amount;
    p->expiry_s = r->aux;
    p->allowance = p->allowance_left = r->aux2;
    memcpy(p->recipients, r->extra, sizeof p->recipients);
    memcpy(p->key, r->data, 32);
    return TS_OK;
}

static uint8_t apply_record(kernel *k, size_t i) {
    const ts_record *r = &k->records[i];
    if (r->key_slot && r->kind != TS_KIND_TRANSFER && r->kind != TS_KIND_SET_POLICY_KEY) {
        return TS_POLICY_KIND;
    }
    switch (r->kind) {
    case TS_KIND_OPEN_ACCOUNT: return apply_open(k, r, i);
    case TS_KIND_TRANSFER: return apply_transfer(k, r);
    case TS_KIND_MINT: return apply_mint(k, r);
    case TS_KIND_BURN: return apply_burn(k, r);
    case TS_KIND_HOLD: return apply_hold(k, r);
    case TS_KIND_POST: return apply_post(k, r);
    case TS_KIND_VOID: return apply_void(k, r);
    case TS_KIND_SET_POLICY_KEY: return apply_set_policy(k, r);
    /* A call changes no balance: it uses its sequence (authorize did), and the contract
     * layer runs it after the batch (tsunagi.contracts), in block order. */
    case TS_KIND_CALL: return TS_OK;
    }
    return TS_MALFORMED; /* unreachable: authorize checked the kind */
}

/* ---------------------------------------------------------------- units and groups */

/* Starts loading the accounts of the record PREFETCH_AHEAD places on. */
static inline void prefetch_ahead(const kernel *k, size_t i) {
    if (i + PREFETCH_AHEAD >= k->count) return;
    const ts_state *s = k->state;
    const ts_record *r = &k->records[i + PREFETCH_AHEAD];
    if (r->debit_account <= s->account_count) prefetch(&s->accounts[r->debit_account]);
    if (r->credit_account <= s->account_count) prefetch(&s->accounts[r->credit_account]);
}

/* What makes a record storable: well-formed, its debit account and key slot exist, its
 * sequence is new. Changes nothing. */
static uint8_t check_authorized(const kernel *k, const ts_record *r) {
    uint8_t code = ts_check_fields(r, 0, 0);
    if (code || r->kind == TS_KIND_OPEN_ACCOUNT) return code;
    const ts_state *s = k->state;
    uint64_t debit = r->debit_account;
    if (k->genesis && debit == 0 && r->kind == TS_KIND_MINT) return TS_OK; /* no sequence */
    if (!account_exists(s, debit)) return TS_UNKNOWN_ACCOUNT;
    if (r->key_slot && r->kind != TS_KIND_SET_POLICY_KEY && !live_policy(s, debit, r->key_slot)) {
        return TS_KEY_SLOT_EMPTY;
    }
    if (r->sequence <= s->accounts[debit].sequence) return TS_SEQUENCE_USED;
    return TS_OK;
}

/* check_authorized, then the record uses its sequence, even if its effects fail later. */
static uint8_t authorize(kernel *k, const ts_record *r) {
    uint8_t code = check_authorized(k, r);
    if (code || r->kind == TS_KIND_OPEN_ACCOUNT) return code;
    uint64_t debit = r->debit_account;
    if (k->genesis && debit == 0) return TS_OK;
    ts_account *account = &k->state->accounts[debit], before = *account;
    log_change(k, UNDO_SEQUENCE, debit, account->sequence);
    account->sequence = r->sequence;
    if (k->journal) {
        k->journaled_debit = 0;
        journal_account(k, debit, before);
        k->journaled_debit = debit;
        k->debit_row = k->journal->account_length - 1;
    }
    return TS_OK;
}

static inline int is_linked(const kernel *k, size_t i) {
    return k->records[i].flags & TS_FLAG_LINKED;
}

static size_t group_end(const kernel *k, size_t first, size_t end) {
    size_t last = first;
    while (last + 1 < end && is_linked(k, last)) last++;
    return last + 1;
}

/* A unit that will not be stored (the state is as before it): records with a code keep it;
 * a record that would fail authorization on its own gets that code (a resent batch answers
 * sequence_used for every record, which the ledger turns into already_committed); of the
 * rest, those in a group with a failure get linked_event_failed, those in an open tail group
 * linked_group_open, the others batch_rejected. */
static void reject_unit(kernel *k, size_t first, size_t end, int open_tail) {
    for (size_t g = first; g < end;) {
        size_t g_end = group_end(k, g, end);
        int failing = 0;
        for (size_t i = g; i < g_end; i++) failing |= k->codes[i] != 0;
        uint8_t others = open_tail && g_end == end ? TS_LINKED_GROUP_OPEN
                         : failing                 ? TS_LINKED_EVENT_FAILED
                                                   : TS_BATCH_REJECTED;
        for (size_t i = g; i < g_end; i++) {
            if (!k->codes[i]) k->codes[i] = check_authorized(k, &k->records[i]);
            if (!k->codes[i]) k->codes[i] = others;
            k->opened[i] = 0;
            k->stored[i] = 0;
        }
        g = g_end;
    }
}

/* Applies one linked group. Returns 0 when the group is stored (each record's code is set,
 * effects all or nothing), or the code of the record *failed_at that makes it unstorable. */
static uint8_t apply_group(kernel *k, size_t first, size_t end, size_t *failed_at) {
    for (size_t i = first; i < end; i++) {
        prefetch_ahead(k, i);
        uint8_t code = authorize(k, &k->records[i]);
        if (code) {
            *failed_at = i;
            return code;
        }
    }
    mark effects = take_mark(k);
    for (size_t i = first; i < end; i++) {
        uint8_t code = apply_record(k, i);
        k->codes[i] = code;
        if (code) {
            rollback(k, &effects); /* the sequences stay used */
            for (size_t j = first; j < end; j++) {
                if (j != i) k->codes[j] = TS_LINKED_EVENT_FAILED;
                k->opened[j] = 0;
            }
            return TS_OK;
        }
    }
    return TS_OK;
}

static int apply_unit(kernel *k, size_t first, size_t end) {
    if (reserve_log(k, first, end) < 0) return -1;
    k->logging = 1;
    mark unit = take_mark(k);
    for (size_t g = first; g < end;) {
        size_t g_end = group_end(k, g, end), failed_at = g;
        uint8_t code = apply_group(k, g, g_end, &failed_at);
        if (code) {
            rollback(k, &unit);
            memset(k->codes + first, 0, end - first);
            k->codes[failed_at] = code;
            reject_unit(k, first, end, 0);
            return 0;
        }
        g = g_end;
    }
    memset(k->stored + first, 1, end - first);
    k->undo_length = 0;
    k->saved_length = 0;
    return 0;
}

/* One record alone: authorize and apply_record change nothing before their checks pass. */
static void apply_single(kernel *k, size_t i) {
    prefetch_ahead(k, i);
    uint8_t code = authorize(k, &k->records[i]);
    if (code) {
        k->codes[i] = code;
        return;
    }
    k->codes[i] = apply_record(k, i);
    k->stored[i] = 1;
}


/* Where the storage unit starting at first ends: linked records and join_next chain on. */
static size_t unit_end(const kernel *k, size_t first, size_t count, const uint8_t *join_next) {
    size_t end = first + 1;
    while (end < count && (is_linked(k, end - 1) || (join_next && join_next[end - 1]))) end++;
    return end;
}

static void push_new_holds(ts_state *s, uint64_t first) {
    for (uint64_t i = first; i < s->hold_count; i++) {
        if (s->holds[i].status == TS_STATUS_OPEN) heap_push(s, s->holds[i].expiry_s, i);
    }
}

int ts_apply_batch(ts_state *state, const ts_record *records, size_t count,
                   const uint8_t *pre_codes, const uint8_t *join_next, uint64_t now_s,
                   int genesis, uint8_t *codes, uint64_t *opened, uint8_t *stored,
                   ts_journal *journal) {
    kernel k = {.state = state, .records = records, .count = count, .now_s = now_s,
                .genesis = genesis,
                .codes = codes, .opened = opened, .stored = stored, .journal = journal};
    memset(codes, 0, count);
    memset(opened, 0, count * sizeof *opened);
    memset(stored, 0, count);
    uint64_t holds_before = state->hold_count;
    int status = 0;
    for (size_t first = 0; first < count;) {
        size_t end = unit_end(&k, first, count, join_next);
        int open_tail = end == count && is_linked(&k, count - 1);
        int rejected = open_tail;
        for (size_t i = first; i < end && pre_codes; i++) rejected |= pre_codes[i] != 0;
        if (rejected) {
            if (pre_codes) memcpy(codes + first, pre_codes + first, end - first);
            reject_unit(&k, first, end, open_tail);
        } else if (end - first == 1) {
            k.logging = 0;
            apply_single(&k, first);
        } else if (apply_unit(&k, first, end) < 0) {
            status = -1;
            break;
        }
        first = end;
    }
    push_new_holds(state, holds_before);
    free(k.undo);
    free(k.saved);
    return status;
}
