/* The commit kernel: applies a batch of 128-byte records to the account arrays in one pass and
 * gives each record a result code (docs/FORMAT.md). No Python, no allocation per record: the
 * caller grows every table before the call, so the loop never runs out of room. */
#ifndef TSUNAGI_COMMIT_KERNEL_H
#define TSUNAGI_COMMIT_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* Result codes: the values of tsunagi.core.codes.Result (a test checks they agree). */
enum {
    TS_OK = 0,
    TS_MALFORMED = 1,
    TS_WRONG_CHAIN = 2,
    TS_BAD_SIGNATURE = 3,
    TS_UNKNOWN_ACCOUNT = 4,
    TS_UNKNOWN_CREDIT_ACCOUNT = 5,
    TS_AMOUNT_ZERO = 6,
    TS_AMOUNT_OVERFLOW = 7,
    TS_INSUFFICIENT_FUNDS = 8,
    TS_SEQUENCE_USED = 9,
    TS_ALREADY_COMMITTED = 10,
    TS_LINKED_EVENT_FAILED = 11,
    TS_LINKED_GROUP_OPEN = 12,
    TS_SAME_ACCOUNT = 13,
    TS_NOT_ISSUER = 14,
    TS_KEY_SLOT_EMPTY = 15,
    TS_POLICY_RECIPIENT = 16,
    TS_POLICY_AMOUNT = 17,
    TS_POLICY_ALLOWANCE = 18,
    TS_POLICY_EXPIRED = 19,
    TS_POLICY_KIND = 20,
    TS_HOLD_NOT_FOUND = 21,
    TS_HOLD_EXPIRED = 22,
    TS_HOLD_ALREADY_POSTED = 23,
    TS_HOLD_ALREADY_VOIDED = 24,
    TS_NOT_HOLD_AUTHORITY = 25,
    TS_HASHLOCK_MISMATCH = 26,
    TS_POST_EXCEEDS_HOLD = 27,
    TS_HOLD_EXPIRY_PAST = 28,
    TS_UNKNOWN_AUTHORITY = 29,
    TS_BATCH_SIGNATURE_INVALID = 30,
    TS_BATCH_SIGNER_NOT_OWNER = 31,
    TS_BATCH_REJECTED = 32,
    TS_BAD_ACCOUNT_KEY = 33,
    TS_KEY_SLOT_INVALID = 34,
    TS_ACCOUNTS_FULL = 35,
    TS_HOLDS_FULL = 36,
    TS_POLICY_KEY_REPLACED = 37,
    TS_PAYLOAD_MISSING = 38, /* set by the engine (Python), which holds the payloads */
    TS_CALL_REFUSED = 39,    /* set by the contract layer (Python) */
    TS_CALL_FAILED = 40,     /* set by the contract layer (Python) */
};

enum {
    TS_KIND_OPEN_ACCOUNT = 1,
    TS_KIND_TRANSFER = 2,
    TS_KIND_MINT = 3,
    TS_KIND_BURN = 4,
    TS_KIND_HOLD = 5,
    TS_KIND_POST = 6,
    TS_KIND_VOID = 7,
    TS_KIND_SET_POLICY_KEY = 8,
    TS_KIND_CALL = 9,
};

#define TS_FLAG_LINKED 1u
#define TS_FLAG_BATCH_AUTHORIZED 2u
#define TS_FLAGS_KNOWN 3u
#define TS_KEY_SLOTS 8u
#define TS_ACCOUNT_ISSUER 1u /* account flag bit 0: may mint and burn */

/* Hold status; 0 is never stored. */
enum { TS_STATUS_OPEN = 1, TS_STATUS_POSTED = 2, TS_STATUS_VOIDED = 3, TS_STATUS_EXPIRED = 4 };

/* The record layout of docs/FORMAT.md on a little-endian machine. */
typedef struct {
    uint8_t kind;
    uint8_t flags;
    uint16_t key_slot;
    uint32_t chain_id;
    uint64_t sequence;
    uint64_t debit_account;
    uint64_t credit_account;
    uint64_t amount;
    uint64_t aux;
    uint8_t data[32];
    uint64_t aux2;
    uint64_t extra[4];
    uint64_t user_data;
} ts_record;

/* Balance and last sequence side by side: a transfer touches one cache line per account. */
typedef struct {
    uint64_t balance;
    uint64_t sequence;
} ts_account;

/* A hold, named by (payer, sequence): the first two fields are its key in the hold map. */
typedef struct {
    uint64_t payer;
    uint64_t sequence;
    uint64_t payee;
    uint64_t authority;
    uint64_t amount;
    uint64_t expiry_s;
    uint8_t hashlock[32];
    uint8_t status;
    uint8_t reserved[7];
} ts_hold;

/* A policy key of (account, slot): the first two fields are its key in the policy map. A zero
 * key is an empty (revoked) slot. allowance 0 means no limit; allowance_left is what remains. */
typedef struct {
    uint64_t account;
    uint64_t slot;
    uint64_t amount_max;
    uint64_t allowance;
    uint64_t allowance_left;
    uint64_t expiry_s;
    uint64_t recipients[4];
    uint8_t key[32];
} ts_policy;

/* Open addressing with linear probing over entries whose first two u64 fields are the key.
 * A slot holds entry index + 1 (0 is empty); capacity is a power of two. */
typedef struct {
    uint32_t *slots;
    uint64_t capacity;
    const uint8_t *entries;
    size_t entry_bytes;
} ts_map;

#define TS_NOT_FOUND UINT64_MAX

uint64_t ts_map_find(const ts_map *map, uint64_t key_a, uint64_t key_b);
void ts_map_insert(ts_map *map, uint64_t index);
void ts_map_delete(ts_map *map, uint64_t index);
/* Clears the slots and inserts entries 0..count-1 (after the caller grew the slots). */
void ts_map_rebuild(ts_map *map, uint64_t count);

typedef struct {
    ts_account *accounts;     /* [account_capacity], index 0 unused */
    uint8_t *owner_keys;      /* [account_capacity][32] */
    uint8_t *account_flags;   /* [account_capacity] */
    uint64_t account_capacity;
    uint64_t account_count;   /* accounts are 1..account_count */
    uint64_t accounts_max;
    ts_hold *holds;
    uint64_t hold_capacity;
    uint64_t hold_count;
    uint64_t holds_max;
    ts_map hold_map;
    uint64_t *expiry_heap;    /* [hold_capacity][2]: (expiry_s, hold index), a min-heap */
    uint64_t heap_count;
    ts_policy *policies;
    uint64_t policy_capacity;
    uint64_t policy_count;
    ts_map policy_map;
    unsigned __int128 minted;
    unsigned __int128 burned;
} ts_state;

/* What a batch changed, so that a copy of the state (the readers' durable view) can be brought
 * up to date with the batch's block alone, and so that the block can be undone.
 *
 * accounts holds rows of TS_JOURNAL_ROW_WORDS words, (account, balance, sequence, balance
 * before, sequence before), in the order the kernel wrote them, each with the account's values
 * right after a change (a rollback's restorations included) and right before it: laid over a
 * copy in that order, the first three leave it as the batch left the state (rows of accounts
 * past the final count, opens a rollback took back, are left out then); laid in reverse order,
 * the account and the last two give every account back its values from before the batch.
 * holds and policies list the indices of the entries the batch changed (an index may repeat):
 * the copy takes those entries' values after the batch. policies_before (may be NULL) gets, for
 * each policy index listed, the entry as it was right before that change. A hold listed that
 * existed before the batch was open then (only open holds change).
 *
 * The caller gives room for TS_JOURNAL_ROWS_PER_RECORD rows, one hold and one policy index per
 * record, and one policies_before entry per record that can touch a policy (a set_policy_key,
 * or a record with a key slot). */
typedef struct {
    uint64_t *accounts;
    size_t account_length;
    uint64_t *holds;
    size_t hold_length;
    uint64_t *policies;
    size_t policy_length;
    ts_policy *policies_before;
} ts_journal;

#define TS_JOURNAL_ROW_WORDS 5

/* Rows one record can add: its debit's (kept up to date in place), a post's payee and payer,
 * an open's new account; and, when its unit rolls back, one for each of the (at most 4) undo
 * entries it logged. */
#define TS_JOURNAL_ROWS_PER_RECORD 8

/* Applies count records. genesis lets mint records come from account 0 (genesis itself, no
 * issuer flag, no sequence). pre_codes (may be NULL) marks records rejected by an earlier stage;
 * join_next (may be NULL) joins record i and i + 1 into one storage unit (a batch stored
 * whole). Writes codes, the account number each open_account got (else 0) and whether each
 * record is stored in the block; journal (may be NULL) gets what changed. Returns 0, or -1 when
 * memory ran out (nothing was applied past the unit that needed it; the caller raises
 * MemoryError). */
int ts_apply_batch(ts_state *state, const ts_record *records, size_t count,
                   const uint8_t *pre_codes, const uint8_t *join_next, uint64_t now_s,
                   int genesis, uint8_t *codes, uint64_t *opened, uint8_t *stored,
                   ts_journal *journal);

/* Expires open holds with expiry_s <= now_s, earliest (expiry, index) first, returning each
 * amount to its payer. Writes up to capacity hold indices to out; returns how many. Call again
 * while it returns capacity. */
size_t ts_expire_holds(ts_state *state, uint64_t now_s, uint64_t *out, size_t capacity);

/* Takes back the newest entries: accounts, holds and policies past the given counts leave their
 * maps (newest first) and their rows are zeroed. */
void ts_truncate(ts_state *state, uint64_t account_count, uint64_t hold_count,
                 uint64_t policy_count);

/* Pushes every open hold onto the expiry heap (after the tables were loaded). */
void ts_rebuild_heap(ts_state *state);

/* Stage-one checks that need no state: kind, flags, chain, key slot, fields that must be 0.
 * check_chain 0 skips the chain. */
uint8_t ts_check_fields(const ts_record *record, uint32_t chain_id, int check_chain);

/* The key each record must be signed with (owner or policy key, or the new key of an
 * open_account), written to keys[i]; records with a nonzero code are skipped, and a record
 * whose account or key slot cannot be resolved gets its code. Returns 0 or -1 (memory). */
int ts_resolve_signers(const ts_state *state, const ts_record *records, size_t count,
                       uint8_t *codes, uint8_t *keys);

#endif
