# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native commit kernel: field checks, signer keys and the one-pass apply of a batch.

One call per batch, never per record. The state object is tsunagi.ledger.state.State (duck
typed: its numpy arrays are read here as raw buffers); every table is grown by the caller's
``reserve`` before the loop runs, so the loop never allocates per record.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

from tsunagi.errors import EncodingError

import numpy as np

cdef extern from "commit_kernel.h" nogil:
    ctypedef struct ts_record:
        uint8_t kind
        uint8_t flags
    ctypedef struct ts_account:
        pass
    ctypedef struct ts_hold:
        pass
    ctypedef struct ts_policy:
        pass
    ctypedef struct ts_map:
        uint32_t *slots
        uint64_t capacity
        const uint8_t *entries
        size_t entry_bytes
    ctypedef unsigned long long u128 "unsigned __int128"
    ctypedef struct ts_state:
        ts_account *accounts
        uint8_t *owner_keys
        uint8_t *account_flags
        uint64_t account_capacity
        uint64_t account_count
        uint64_t accounts_max
        ts_hold *holds
        uint64_t hold_capacity
        uint64_t hold_count
        uint64_t holds_max
        ts_map hold_map
        uint64_t *expiry_heap
        uint64_t heap_count
        ts_policy *policies
        uint64_t policy_capacity
        uint64_t policy_count
        ts_map policy_map
        u128 minted
        u128 burned
    ctypedef struct ts_journal:
        uint64_t *accounts
        size_t account_length
        uint64_t *holds
        size_t hold_length
        uint64_t *policies
        size_t policy_length
        ts_policy *policies_before
    int TS_JOURNAL_ROW_WORDS
    void ts_truncate(ts_state *state, uint64_t account_count, uint64_t hold_count,
                     uint64_t policy_count)
    int TS_KIND_OPEN_ACCOUNT, TS_KIND_HOLD, TS_KIND_SET_POLICY_KEY
    int TS_JOURNAL_ROWS_PER_RECORD
    int TS_KIND_TRANSFER, TS_KIND_MINT, TS_KIND_BURN, TS_KIND_POST, TS_KIND_VOID, TS_KIND_CALL
    int TS_FLAG_LINKED, TS_FLAG_BATCH_AUTHORIZED, TS_FLAGS_KNOWN, TS_KEY_SLOTS, TS_ACCOUNT_ISSUER
    int TS_STATUS_OPEN, TS_STATUS_POSTED, TS_STATUS_VOIDED, TS_STATUS_EXPIRED
    void ts_map_rebuild(ts_map *map, uint64_t count)
    int ts_apply_batch(ts_state *state, const ts_record *records, size_t count,
                       const uint8_t *pre_codes, const uint8_t *join_next, uint64_t now_s,
                       int genesis, uint8_t *codes, uint64_t *opened, uint8_t *stored,
                       ts_journal *journal)
    size_t ts_expire_holds(ts_state *state, uint64_t now_s, uint64_t *out, size_t capacity)
    void ts_rebuild_heap(ts_state *state)
    uint8_t ts_check_fields(const ts_record *record, uint32_t chain_id, int check_chain)
    int ts_resolve_signers(const ts_state *state, const ts_record *records, size_t count,
                           uint8_t *codes, uint8_t *keys)

cdef extern from *:
    """
    #include "commit_kernel.h"
    static size_t ts_sizeof_record(void) { return sizeof(ts_record); }
    static size_t ts_sizeof_hold(void) { return sizeof(ts_hold); }
    static size_t ts_sizeof_policy(void) { return sizeof(ts_policy); }
    static void ts_set_u128(unsigned __int128 *out, uint64_t lo, uint64_t hi) {
        *out = (unsigned __int128)hi << 64 | lo;
    }
    static uint64_t ts_u128_lo(unsigned __int128 v) { return (uint64_t)v; }
    static inline void ts_prefetch_write(void *p) { __builtin_prefetch(p, 1, 1); }
    static uint64_t ts_u128_hi(unsigned __int128 v) { return (uint64_t)(v >> 64); }
    """
    size_t ts_sizeof_record()
    size_t ts_sizeof_hold()
    size_t ts_sizeof_policy()
    void ts_set_u128(u128 *out, uint64_t lo, uint64_t hi)
    uint64_t ts_u128_lo(u128 v)
    void ts_prefetch_write(void *p) nogil
    uint64_t ts_u128_hi(u128 v)

cdef enum:
    RECORD_SIZE = 128

RECORD_BYTES = RECORD_SIZE
HOLD_BYTES = ts_sizeof_hold()
POLICY_BYTES = ts_sizeof_policy()

# The layout facts and codes the kernel was compiled with, by their names here and in
# commit_kernel.h: tests/test_limits.py holds each against its Python home (tsunagi.core.records,
# tsunagi.ledger.state).
NATIVE_CONSTANTS = {
    "RECORD_SIZE": RECORD_SIZE, "sizeof(ts_record)": ts_sizeof_record(),
    "sizeof(ts_hold)": HOLD_BYTES, "sizeof(ts_policy)": POLICY_BYTES,
    "TS_KEY_SLOTS": TS_KEY_SLOTS, "TS_FLAG_LINKED": TS_FLAG_LINKED,
    "TS_FLAG_BATCH_AUTHORIZED": TS_FLAG_BATCH_AUTHORIZED, "TS_FLAGS_KNOWN": TS_FLAGS_KNOWN,
    "TS_ACCOUNT_ISSUER": TS_ACCOUNT_ISSUER,
    "TS_KIND_OPEN_ACCOUNT": TS_KIND_OPEN_ACCOUNT, "TS_KIND_TRANSFER": TS_KIND_TRANSFER,
    "TS_KIND_MINT": TS_KIND_MINT, "TS_KIND_BURN": TS_KIND_BURN, "TS_KIND_HOLD": TS_KIND_HOLD,
    "TS_KIND_POST": TS_KIND_POST, "TS_KIND_VOID": TS_KIND_VOID,
    "TS_KIND_SET_POLICY_KEY": TS_KIND_SET_POLICY_KEY, "TS_KIND_CALL": TS_KIND_CALL,
    "TS_STATUS_OPEN": TS_STATUS_OPEN, "TS_STATUS_POSTED": TS_STATUS_POSTED,
    "TS_STATUS_VOIDED": TS_STATUS_VOIDED, "TS_STATUS_EXPIRED": TS_STATUS_EXPIRED,
}

# Positions in State.counters, the scalars the kernel moves.
cdef enum:
    C_ACCOUNT_COUNT = 0
    C_HOLD_COUNT = 1
    C_POLICY_COUNT = 2
    C_HEAP_COUNT = 3
    C_MINTED_LO = 4
    C_MINTED_HI = 5
    C_BURNED_LO = 6
    C_BURNED_HI = 7

ACCOUNT_COUNT, HOLD_COUNT, POLICY_COUNT, HEAP_COUNT = 0, 1, 2, 3
MINTED_LO, MINTED_HI, BURNED_LO, BURNED_HI = 4, 5, 6, 7


def record_bytes(records):
    """A batch as a flat, 8-byte aligned uint8 array of whole 128-byte records (no copy when
    it already is one)."""
    if isinstance(records, np.ndarray) and records.dtype.itemsize == RECORD_BYTES:
        flat = np.ascontiguousarray(records).view(np.uint8).reshape(-1)
    else:
        try:
            flat = np.frombuffer(memoryview(records).cast("B"), dtype=np.uint8)
        except (TypeError, ValueError) as exc:
            raise EncodingError(
                f"records must be a contiguous buffer or a RECORD_DTYPE array: {exc}") from exc
    if flat.shape[0] % RECORD_BYTES:
        raise EncodingError(
            f"a record buffer is whole {RECORD_BYTES}-byte records, got {flat.shape[0]} bytes")
    if flat.ctypes.data % 8:  # the C kernel reads u64 fields in place
        flat = flat.copy()
    return flat


cdef inline uint8_t *_bytes_of(object array) except NULL:
    cdef uint8_t[::1] view = array.reshape(-1).view(np.uint8)
    return &view[0]


cdef int _load(object state, ts_state *s) except -1:
    """Points s at the state's arrays (the caller keeps the state alive during the call)."""
    cdef uint64_t[::1] counters = state.counters
    s.accounts = <ts_account *>_bytes_of(state.accounts)
    s.owner_keys = _bytes_of(state.owner_keys)
    s.account_flags = _bytes_of(state.account_flags)
    s.account_capacity = state.account_flags.shape[0]
    s.account_count = counters[C_ACCOUNT_COUNT]
    s.accounts_max = state.accounts_max
    s.holds = <ts_hold *>_bytes_of(state.holds)
    s.hold_capacity = state.holds.shape[0]
    s.hold_count = counters[C_HOLD_COUNT]
    s.holds_max = state.holds_max
    s.hold_map.slots = <uint32_t *>_bytes_of(state.hold_slots)
    s.hold_map.capacity = state.hold_slots.shape[0]
    s.hold_map.entries = <const uint8_t *>s.holds
    s.hold_map.entry_bytes = HOLD_BYTES
    s.expiry_heap = <uint64_t *>_bytes_of(state.expiry_heap)
    s.heap_count = counters[C_HEAP_COUNT]
    s.policies = <ts_policy *>_bytes_of(state.policies)
    s.policy_capacity = state.policies.shape[0]
    s.policy_count = counters[C_POLICY_COUNT]
    s.policy_map.slots = <uint32_t *>_bytes_of(state.policy_slots)
    s.policy_map.capacity = state.policy_slots.shape[0]
    s.policy_map.entries = <const uint8_t *>s.policies
    s.policy_map.entry_bytes = POLICY_BYTES
    ts_set_u128(&s.minted, counters[C_MINTED_LO], counters[C_MINTED_HI])
    ts_set_u128(&s.burned, counters[C_BURNED_LO], counters[C_BURNED_HI])
    return 0


cdef int _store(object state, const ts_state *s) except -1:
    cdef uint64_t[::1] counters = state.counters
    counters[C_ACCOUNT_COUNT] = s.account_count
    counters[C_HOLD_COUNT] = s.hold_count
    counters[C_POLICY_COUNT] = s.policy_count
    counters[C_HEAP_COUNT] = s.heap_count
    counters[C_MINTED_LO] = ts_u128_lo(s.minted)
    counters[C_MINTED_HI] = ts_u128_hi(s.minted)
    counters[C_BURNED_LO] = ts_u128_lo(s.burned)
    counters[C_BURNED_HI] = ts_u128_hi(s.burned)
    return 0


def count_kinds(records):
    """Records of each kind (index = kind; 0 counts unknown kinds), from one native pass."""
    flat = record_bytes(records)
    cdef const uint8_t[::1] view = flat
    cdef size_t count = view.shape[0] // RECORD_BYTES, i
    counts = np.zeros(256, dtype=np.uint64)
    cdef uint64_t[::1] out = counts
    with nogil:
        for i in range(count):
            out[view[i * RECORD_SIZE]] += 1
    return counts


def rebuild_maps(state):
    """Refills the hold and policy maps from the tables (after growth or loading)."""
    cdef ts_state s
    _load(state, &s)
    with nogil:
        ts_map_rebuild(&s.hold_map, s.hold_count)
        ts_map_rebuild(&s.policy_map, s.policy_count)


def rebuild_heap(state):
    """Refills the expiry heap with every open hold (after loading)."""
    cdef ts_state s
    _load(state, &s)
    with nogil:
        ts_rebuild_heap(&s)
    _store(state, &s)


cdef const uint8_t[::1] _codes_view(object codes, size_t count, str what) except *:
    if codes is None:
        return None
    array = np.ascontiguousarray(codes, dtype=np.uint8)
    if array.ndim != 1 or array.shape[0] != count:
        raise EncodingError(f"{what} must be {count} uint8 values, got shape {array.shape}")
    return array


class Journal:
    """What one apply_batch changed: ``accounts``, uint64 rows of (account, balance, sequence,
    balance before, sequence before) in the order the kernel wrote them (each an account's
    values right after and right before a change: laid over a copy of the state in order, the
    first three columns bring it to the batch's end, see place_accounts; laid in reverse order,
    the account and the last two take it back to the batch's start); ``holds`` and
    ``policies``, indices of the entries changed (uint64; may repeat); ``policies_before``, the
    POLICY_BYTES entries at ``policies`` as they were right before each change (when
    apply_batch was given room for them)."""

    __slots__ = ("accounts", "holds", "policies", "policies_before")

    def __init__(self, accounts, holds, policies, policies_before=None):
        self.accounts, self.holds, self.policies = accounts, holds, policies
        self.policies_before = policies_before


JOURNAL_ROW_WORDS = TS_JOURNAL_ROW_WORDS
_POLICY_WORDS = POLICY_BYTES // 8


def journal_words(size_t count, size_t policy_touches=0):
    """The uint64 words of room apply_batch's journal needs for ``count`` records, of which
    ``policy_touches`` can touch a policy (set_policy_key, or a key slot): room for their
    policies' entries as they were before (for undo) is given only when that is nonzero."""
    return (TS_JOURNAL_ROW_WORDS * TS_JOURNAL_ROWS_PER_RECORD + 2) * count \
        + _POLICY_WORDS * policy_touches


def policy_touches(records):
    """How many records can change a policy: set_policy_key records and key-slot records."""
    view = record_bytes(records).view(RECORD_DTYPE_FOR_COUNT)
    return int(np.count_nonzero((view["kind"] == TS_KIND_SET_POLICY_KEY) | (view["slot"] != 0)))


RECORD_DTYPE_FOR_COUNT = np.dtype({"names": ["kind", "slot"], "formats": ["u1", "<u2"],
                                   "offsets": [0, 2], "itemsize": RECORD_BYTES})


def apply_batch(state, records, pre_codes=None, uint64_t now_s=0, bint genesis=False,
                join_next=None, journal=None, size_t policy_touches=0):
    """Applies a batch in one native pass; returns (codes, opened, stored), and a fourth
    item, the Journal of what changed, when ``journal`` is given: True, or a uint64 array of
    at least journal_words(N, policy_touches) words to write it into (the Journal's arrays
    are views of it). ``policy_touches`` (see the function of that name; an upper bound is
    fine) gives room for the policies' entries before the batch, for undo.

    codes: N uint8 result codes; opened: N uint64, the number an open_account got (else 0);
    stored: N bool, whether the record goes in the block. pre_codes (nonzero: rejected by an
    earlier stage) and join_next (nonzero: record i and i + 1 are one batch, stored whole) are
    optional N uint8 arrays.
    """
    flat = record_bytes(records)
    cdef size_t count = flat.shape[0] // RECORD_BYTES
    cdef const uint8_t[::1] pre = _codes_view(pre_codes, count, "pre_codes")
    cdef const uint8_t[::1] join = _codes_view(join_next, count, "join_next")
    kinds = count_kinds(flat)
    state.reserve(int(kinds[TS_KIND_OPEN_ACCOUNT]), int(kinds[TS_KIND_HOLD]),
                  int(kinds[TS_KIND_SET_POLICY_KEY]))
    codes = np.zeros(count, dtype=np.uint8)
    opened = np.zeros(count, dtype=np.uint64)
    stored = np.zeros(count, dtype=np.bool_)
    tracking = journal is not None and journal is not False
    if count == 0:
        return (codes, opened, stored, Journal(_NO_ROWS, _NO_INDICES, _NO_INDICES,
                                               _NO_POLICIES)) \
            if tracking else (codes, opened, stored)
    cdef const uint8_t[::1] view = flat
    cdef uint8_t[::1] codes_out = codes
    cdef uint64_t[::1] opened_out = opened
    cdef uint8_t[::1] stored_out = stored.view(np.uint8)
    cdef const uint8_t *pre_pointer = &pre[0] if pre is not None else NULL
    cdef const uint8_t *join_pointer = &join[0] if join is not None else NULL
    cdef ts_state s
    cdef int status
    cdef ts_journal changes
    cdef ts_journal *changes_pointer = NULL
    cdef uint64_t[::1] room
    cdef size_t rows_words = TS_JOURNAL_ROW_WORDS * TS_JOURNAL_ROWS_PER_RECORD * count
    cdef size_t before_at = rows_words + 2 * count
    if policy_touches > count:
        policy_touches = count
    if tracking:
        needed = journal_words(count, policy_touches)
        if journal is True:
            journal = np.empty(needed, dtype=np.uint64)
        room = journal
        if <size_t>room.shape[0] < needed:
            raise EncodingError(f"the journal needs {needed} words of room, "
                                f"got {room.shape[0]}")
        changes.accounts = &room[0]
        changes.holds = &room[rows_words]
        changes.policies = &room[rows_words + count]
        changes.policies_before = <ts_policy *>&room[before_at] if policy_touches else NULL
        changes.account_length = changes.hold_length = changes.policy_length = 0
        changes_pointer = &changes
    _load(state, &s)
    with nogil:
        status = ts_apply_batch(&s, <const ts_record *>&view[0], count, pre_pointer,
                                join_pointer, now_s, genesis, &codes_out[0], &opened_out[0],
                                &stored_out[0], changes_pointer)
    _store(state, &s)
    if status < 0:
        raise MemoryError("the commit kernel ran out of memory for its undo log")
    if tracking:
        rows = journal[:TS_JOURNAL_ROW_WORDS * changes.account_length].reshape(
            -1, TS_JOURNAL_ROW_WORDS)
        holds = journal[rows_words:rows_words + changes.hold_length]
        policies = journal[rows_words + count:rows_words + count + changes.policy_length]
        before = None
        if policy_touches:
            before = journal[before_at:before_at + _POLICY_WORDS * changes.policy_length]
        return codes, opened, stored, Journal(rows, holds, policies, before)
    return codes, opened, stored


_NO_ROWS = np.zeros((0, TS_JOURNAL_ROW_WORDS), dtype=np.uint64)
_NO_INDICES = np.zeros(0, dtype=np.uint64)
_NO_POLICIES = np.zeros(0, dtype=np.uint64)


def truncate(state, uint64_t account_count, uint64_t hold_count, uint64_t policy_count):
    """Takes back the newest accounts, holds and policies, down to these counts: they leave
    their maps (newest first) and their rows are zeroed. Counts above the state's are kept."""
    cdef ts_state s
    _load(state, &s)
    ts_truncate(&s, account_count, hold_count, policy_count)
    _store(state, &s)


def capture_accounts(state, indices):
    """(account, balance, sequence) rows, uint64 N x 3, of the listed accounts as they are
    now; indices past the account count (opens a rollback took back) and 0 are left out."""
    cdef const uint64_t[::1] wanted = np.ascontiguousarray(indices, dtype=np.uint64)
    cdef size_t count = wanted.shape[0], i, kept = 0
    rows = np.empty((count, 3), dtype=np.uint64)
    if count == 0:
        return rows
    cdef uint64_t[:, ::1] out = rows
    cdef const uint64_t[:, ::1] accounts = state.accounts
    cdef uint64_t limit = state.counters[C_ACCOUNT_COUNT], n
    with nogil:
        for i in range(count):
            n = wanted[i]
            if n == 0 or n > limit:
                continue
            out[kept, 0] = n
            out[kept, 1] = accounts[n, 0]
            out[kept, 2] = accounts[n, 1]
            kept += 1
    return rows[:kept]


def place_accounts(state, rows):
    """Lays (account, balance, sequence) rows (a Journal's, whose further columns are left
    alone, or capture_accounts') over a state's accounts array in order; rows of accounts past
    the state's account count are left out. The caller grows the array to hold every account
    the count covers."""
    cdef const uint64_t[:, ::1] given = np.ascontiguousarray(rows, dtype=np.uint64)
    cdef uint64_t[:, ::1] accounts = state.accounts
    cdef size_t count = given.shape[0], i
    cdef uint64_t n, limit = state.counters[C_ACCOUNT_COUNT]
    if count and given.shape[1] < 3:
        raise EncodingError("account rows start (account, balance, sequence)")
    if limit >= <uint64_t>accounts.shape[0]:
        raise EncodingError(f"{limit} accounts do not fit the state's {accounts.shape[0]} rows")
    with nogil:
        for i in range(count):
            if i + 16 < count and given[i + 16, 0] <= limit:
                ts_prefetch_write(&accounts[given[i + 16, 0], 0])
            n = given[i, 0]
            if n <= limit:
                accounts[n, 0] = given[i, 1]
                accounts[n, 1] = given[i, 2]


def expire_holds(state, uint64_t now_s):
    """Expires every open hold with expiry_s <= now_s; returns their indices (uint64)."""
    cdef ts_state s
    cdef size_t got
    cdef size_t chunk = 1024
    parts = []
    _load(state, &s)
    cdef uint64_t[::1] out
    while True:
        buffer = np.empty(chunk, dtype=np.uint64)
        out = buffer
        with nogil:
            got = ts_expire_holds(&s, now_s, &out[0], chunk)
        parts.append(buffer[:got])
        if got < chunk:
            break
    _store(state, &s)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def check_fields(records, uint32_t chain_id):
    """Stage one, no state needed: N uint8 codes (malformed, wrong_chain, key_slot_invalid)."""
    flat = record_bytes(records)
    cdef const uint8_t[::1] view = flat
    cdef size_t count = flat.shape[0] // RECORD_BYTES, i
    codes = np.zeros(count, dtype=np.uint8)
    if count == 0:
        return codes
    cdef uint8_t[::1] out = codes
    cdef const ts_record *first = <const ts_record *>&view[0]
    with nogil:
        for i in range(count):
            out[i] = ts_check_fields(&first[i], chain_id, 1)
    return codes


def resolve_signers(state, records, codes):
    """Stage two: the N x 32 key each record must be signed with.

    Updates codes (N uint8, writable) in place: unknown_account, key_slot_empty,
    policy_key_replaced; records that already have a code are skipped (their key is zeros).
    """
    flat = record_bytes(records)
    cdef const uint8_t[::1] view = flat
    cdef size_t count = flat.shape[0] // RECORD_BYTES
    cdef uint8_t[::1] codes_view = codes
    if <size_t>codes_view.shape[0] != count:
        raise EncodingError(f"codes must have {count} entries, got {codes_view.shape[0]}")
    keys = np.zeros((count, 32), dtype=np.uint8)
    if count == 0:
        return keys
    cdef uint8_t[:, ::1] keys_out = keys
    cdef ts_state s
    cdef int status
    _load(state, &s)
    with nogil:
        status = ts_resolve_signers(&s, <const ts_record *>&view[0], count, &codes_view[0],
                                    &keys_out[0, 0])
    if status < 0:
        raise MemoryError("resolve_signers ran out of memory")
    return keys
