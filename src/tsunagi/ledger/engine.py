"""The in-memory engine: one batch of records through every stage, each over the whole batch.

Stages of :meth:`Engine.process` (docs/FORMAT.md has the rules):

a. decode and check fields natively: malformed, wrong_chain, key_slot_invalid; batch-authorized
   records outside every batch (and unflagged records inside one) are malformed;
b. resolve each record's signer key natively: the owner key, a policy key (key_slot 1..7), or
   the new key of an open_account; unknown_account, key_slot_empty, policy_key_replaced;
c. verify every record signature (over its txid) and every batch signature (over the Merkle
   root of the batch's txids) in one threaded native call; batch_signer_not_owner when a
   batch's key is not the signer of one of its records;
d. expire the holds due at ``now_s``;
e. apply in one native pass (:func:`tsunagi._native.commit.apply_batch`); a batch is one
   storage unit: stored whole or not at all.

Signer keys are those of the state as the batch begins. A record signed with a policy key that
an earlier record of the same batch sets or revokes gets policy_key_replaced: the signature was
checked against a key the slot may no longer hold when the record applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tsunagi import hashing
from tsunagi._native import commit, sigverify
from tsunagi.core.block import (
    BatchAuth,
    BlockResult,
    batch_fault_message,
    check_batch_ranges,
    pack_batches,
    unpack_batches,
)
from tsunagi.core.codes import Result
from tsunagi.core.entries import Payload
from tsunagi.core.records import (
    RECORD_BYTES,
    RECORD_DTYPE,
    SIGNATURE_BYTES,
    Flags,
    Kind,
    payload_digest,
)
from tsunagi.errors import ConfigError, EncodingError
from tsunagi.ledger import limits
from tsunagi.ledger.buffers import BufferPool
from tsunagi.ledger.state import EXPIRED_DTYPE, State
from tsunagi.ledger.undo import BlockUndo, apply_undo, make_undo, reopen_expired
from tsunagi.ledger.view import StateChanges, capture_changes

__all__ = ["BatchOutcome", "Engine", "ReplayOutcome"]

_NO_HOLDS = np.zeros(0, dtype=np.uint64)


@dataclass
class BatchOutcome:
    """What one batch did. Arrays of N are in request order; ``stored_*`` are block-ready."""

    codes: np.ndarray  # N uint8 Result values, for the client
    stored: np.ndarray  # N bool: authenticated, goes in the block
    opened: np.ndarray  # N uint64: the account an open_account opened, else 0
    txids: np.ndarray  # N x 32 uint8
    expired: np.ndarray  # EXPIRED_DTYPE: holds that expired at now_s before the batch applied
    stored_records: np.ndarray  # RECORD_DTYPE, the stored records (may share the input)
    stored_codes: np.ndarray  # uint8, their codes
    stored_signatures: np.ndarray  # S x 64 uint8: signatures of stored records that have one
    stored_batches: list[BatchAuth] = field(default_factory=list)  # first renumbered
    # Merkle levels of the stored records' txids, when batch signatures needed them built:
    # the block's root then costs one hash a level (hashing.merkle_root_plus_leaf).
    stored_txid_levels: list[np.ndarray] | None = None
    # With track_changes: what the state's entries are after this batch, for the readers'
    # durable view (None when the batch stored nothing: its changes go with the next block).
    changes: StateChanges | None = None
    # With track_changes, when the batch stored records: what its block overwrote.
    undo: BlockUndo | None = None
    # The payloads of the stored call records, numbered as stored: the block's payload
    # section (tsunagi.core.entries.Payload).
    stored_payloads: list[Payload] = field(default_factory=list)

    @property
    def stored_count(self) -> int:
        return len(self.stored_records)

    def failures(self) -> list[tuple[int, Result]]:
        """(index, code) of every record that was not applied."""
        return [(int(i), Result(int(self.codes[i]))) for i in np.flatnonzero(self.codes)]


@dataclass
class ReplayOutcome:
    """Whether a stored block re-applies to the codes it stores (truthy when it does)."""

    matches: bool
    codes: np.ndarray  # the codes the engine computed
    opened: np.ndarray
    expired: np.ndarray
    first_mismatch: int | None  # the first record whose code differs or that would not store
    undo: BlockUndo | None = None  # with track_undo: what the block overwrote

    def __bool__(self) -> bool:
        return self.matches


def _signature_rows(signatures, expected: int) -> np.ndarray:
    if isinstance(signatures, np.ndarray):
        flat = np.ascontiguousarray(signatures, dtype=np.uint8).reshape(-1)
    else:
        flat = np.frombuffer(memoryview(signatures).cast("B"), dtype=np.uint8)
    if flat.size != expected * SIGNATURE_BYTES:
        raise EncodingError(
            f"{expected} records carry their own signature, so signatures must be "
            f"{expected * SIGNATURE_BYTES} bytes, got {flat.size}")
    return flat.reshape(expected, SIGNATURE_BYTES)


def _batch_table(batches, count: int) -> np.ndarray:
    """Batches as a BATCH_DTYPE array, checked: non-empty, in order, disjoint, in range."""
    table = pack_batches(batches)
    result = check_batch_ranges(table, count)
    if result is not BlockResult.ok:
        raise EncodingError(batch_fault_message(result, count))
    return table


def _batch_ids(table: np.ndarray, count: int) -> np.ndarray:
    """For each record, 1 + the index of the batch that covers it, or 0."""
    marks = np.zeros(count + 1, dtype=np.int64)
    first = table["first"].astype(np.int64)
    ids = np.arange(1, len(table) + 1)
    np.add.at(marks, first, ids)
    np.add.at(marks, first + table["count"], -ids)
    return np.cumsum(marks[:count])


def _join_next(ids: np.ndarray) -> np.ndarray | None:
    if not ids.any():
        return None
    join = np.zeros(len(ids), dtype=np.uint8)
    join[:-1] = (ids[:-1] == ids[1:]) & (ids[:-1] != 0)
    return join


class Engine:
    """Applies batches of records to a :class:`State` for one chain."""

    def __init__(self, state: State, chain_id: int) -> None:
        self.state = state
        self.chain_id = chain_id
        self._executor: ThreadPoolExecutor | None = None
        self._executor_threads = 0
        # Entries changed by batches that stored nothing (hold expiry): they reach readers
        # with the next block.
        self._unblocked: list[tuple[np.ndarray, np.ndarray]] = []
        # Holds expired by batches that stored nothing: the next block's undo opens them again.
        self._expired_unblocked: list[np.ndarray] = []
        self._journal_pool = BufferPool(limits.journal_pool_bytes_max)
        # Signatures checked already (a validator's mempool, tsunagi.ledger.sigcache): those
        # it knows are not verified again.
        self.signature_cache = None

    def process(self, records, signatures=b"", batches: Sequence = (), now_s: int = 0,
                threads: int = 1, pre_codes: np.ndarray | None = None,
                track_changes: bool = False, as_block: bool = False,
                txids: np.ndarray | None = None, payloads: Sequence = ()) -> BatchOutcome:
        """Runs a batch through every stage; see the module docstring.

        ``signatures``: 64 bytes for each record without the batch_authorized flag, in record
        order. ``batches``: BatchAuth tuples (first, count, signer_key, signature), their bytes
        or a BATCH_DTYPE array (core.block.pack_batches). ``pre_codes`` (N uint8, optional):
        codes an outer layer already knows (already_committed). Framing errors (sizes, batch
        ranges) raise EncodingError.
        ``track_changes`` fills ``outcome.changes`` (see tsunagi.ledger.view) and
        ``outcome.undo`` (tsunagi.ledger.undo). ``as_block``: the batch is a block even when it
        stores nothing (a block made elsewhere may be empty), so it has changes and undo.
        ``txids`` (N x 32), when the caller hashed these very records already (a decoded
        block checked by check_block), are used instead of hashing them again.
        ``payloads``: the arguments of each call record, in record order (one a call); a
        call whose payload differs from its record's digest or length gets payload_missing,
        and so does every call when none are given (a path that carries no payloads, such as
        the wire's submit of plain records, refuses calls without failing the others).
        """
        flat = commit.record_bytes(records)
        view = flat.view(RECORD_DTYPE)
        calls = np.flatnonzero(view["kind"] == Kind.call)
        if len(payloads) and len(payloads) != calls.size:
            raise EncodingError(f"{calls.size} call records need as many payloads, got "
                                f"{len(payloads)}")
        flagged = (view["flags"] & Flags.batch_authorized) != 0
        own = np.flatnonzero(~flagged)
        signature_rows = _signature_rows(signatures, len(own))
        table = _batch_table(batches, len(view))
        ids = _batch_ids(table, len(view))
        codes = commit.check_fields(flat, self.chain_id)
        if pre_codes is not None:
            codes = np.where(codes != 0, codes, np.asarray(pre_codes, dtype=np.uint8))
        codes[(codes == 0) & (flagged != (ids != 0))] = Result.malformed
        if calls.size:
            _check_payloads(view, calls, payloads, codes)
        keys = commit.resolve_signers(self.state, flat, codes)
        if txids is None:
            txids = hashing.sha256d_records(flat, RECORD_BYTES, threads)
        levels = hashing.merkle_levels(txids, threads) if len(table) else None
        self._verify(view, txids, keys, own, signature_rows, table, codes, threads, levels)
        counters_before = self.state.counters.copy()
        expired, expired_holds = self._expire(now_s)
        touches = commit.policy_touches(flat) if track_changes else 0
        applied = commit.apply_batch(self.state, flat, codes, now_s, join_next=_join_next(ids),
                                     journal=self._journal_room(len(view), touches)
                                     if track_changes else None, policy_touches=touches)
        codes, opened, stored = applied[:3]
        outcome = _outcome(view, codes, stored, opened, txids, expired, own, signature_rows,
                           table)
        if levels is not None and outcome.stored_count == len(view):
            outcome.stored_txid_levels = levels
        if calls.size:
            outcome.stored_payloads = _stored_payloads(calls, payloads, stored) \
                if len(payloads) else []
        if track_changes:
            block = outcome.stored_count > 0 or as_block
            outcome.undo = self._undo_of(counters_before, applied[3], expired_holds, block)
            outcome.changes = self._changes(applied[3], expired, expired_holds, block)
        return outcome

    def _undo_of(self, counters_before: np.ndarray, journal, expired_holds: np.ndarray,
                 block: bool) -> BlockUndo | None:
        """The undo of this batch's block, which also opens again the holds that batches
        storing nothing expired since the last block (None when there is no block)."""
        if not block:
            if expired_holds.size:
                self._expired_unblocked.append(expired_holds)
            return None
        expired = np.concatenate(self._expired_unblocked + [expired_holds]) \
            if self._expired_unblocked else expired_holds
        self._expired_unblocked.clear()
        return make_undo(counters_before, journal, expired)

    def undo(self, undo: BlockUndo) -> StateChanges:
        """Takes the newest block back (tsunagi.ledger.undo); returns what the readers' view
        needs to move back with it. Holds that batches storing nothing expired after the block
        open again first: a replay of the chain without the block would not have expired
        them yet."""
        state = self.state
        pending = _NO_HOLDS
        if self._expired_unblocked:
            pending = np.concatenate(self._expired_unblocked)
            reopen_expired(state, pending)
            self._expired_unblocked.clear()
            self._unblocked.clear()
            commit.rebuild_heap(state)
        apply_undo(state, undo)
        holds = np.concatenate([undo.reopened, undo.expired, pending])
        # The payers of holds opened again last: their balances moved after the rows' values.
        payers = state.holds["payer"][np.concatenate([undo.expired, pending])]
        rows = (np.ascontiguousarray(undo.accounts[::-1]), commit.capture_accounts(state, payers))
        return capture_changes(state, rows, holds, undo.policy_indices)

    def _changes(self, journal, expired: np.ndarray, expired_holds: np.ndarray,
                 block: bool) -> StateChanges | None:
        """The post-images of what this batch (and batches since the last block) changed."""
        if expired_holds.size:
            self._unblocked.append((expired["payer"], expired_holds))
        if not block:
            return None
        rows, holds = (journal.accounts,), journal.holds
        if self._unblocked:  # their accounts as they are now, then the journal's rows
            payers = np.concatenate([payers for payers, _ in self._unblocked])
            rows = (commit.capture_accounts(self.state, payers),) + rows
            holds = np.concatenate([indices for _, indices in self._unblocked] + [holds])
            self._unblocked.clear()
        return capture_changes(self.state, rows, holds, journal.policies)

    def _journal_room(self, count: int, policy_touches: int = 0) -> np.ndarray:
        """Room for the kernel's journal of ``count`` records, from a pool: a buffer is used
        again once its changes have reached the durable view and nothing refers to them."""
        words = commit.journal_words(count, policy_touches)
        return self._journal_pool.take(8 * words)[:8 * words].view(np.uint64)

    def _verify(self, view, txids, keys, own, signature_rows, table, codes, threads,
                levels) -> None:
        """Stage c: every signature in one native call; codes are updated in place."""
        single = own[codes[own] == 0]
        single_signatures = signature_rows[codes[own] == 0]
        if self.signature_cache is not None and len(single):
            unknown = ~self.signature_cache.known(txids[single], keys[single],
                                                  single_signatures)
            single, single_signatures = single[unknown], single_signatures[unknown]
        checked_batches, roots = self._batch_roots(txids, keys, table, codes, threads, levels)
        messages = np.concatenate([txids[single], roots])
        public_keys = np.concatenate([keys[single], table["signer_key"][checked_batches]])
        all_signatures = np.concatenate([single_signatures,
                                         table["signature"][checked_batches]])
        valid = sigverify.verify_batch(messages, public_keys, all_signatures, threads)
        bad = single[~valid[: len(single)]]
        codes[bad] = Result.bad_signature
        opens = bad[view["kind"][bad] == Kind.open_account]
        if opens.size:
            codes[opens[~sigverify.check_keys(keys[opens])]] = Result.bad_account_key
        for b in checked_batches[~valid[len(single):]]:
            first = int(table["first"][b])
            codes[first: first + int(table["count"][b])] = Result.batch_signature_invalid

    def _batch_roots(self, txids, keys, table, codes, threads: int,
                     levels) -> tuple[np.ndarray, np.ndarray]:
        """Batches whose records all passed stages a and b and name the batch key as their
        signer, with their Merkle roots. The others are left to the kernel, which rejects a
        batch with any failing record whole (batch_rejected).

        A batch of all the records, or of 2**k records starting at a multiple of 2**k, is the
        txids' tree ``levels`` or a subtree of it: its root is read off the top or level k
        instead of hashed again.
        """
        checked, ranges, known = [], [], {}
        key_words = keys.view("<u8")
        for b in range(len(table)):
            first, end = int(table["first"][b]), int(table["first"][b] + table["count"][b])
            if codes[first:end].any():
                continue
            signer = table["signer_key"][b].view("<u8")
            foreign = (key_words[first:end] != signer).any(axis=1)
            if foreign.any():
                codes[first:end][foreign] = Result.batch_signer_not_owner
                continue
            count = end - first
            if first == 0 and count == len(txids):  # the whole tree: its root
                known[len(checked)] = levels[-1][0].tobytes()
            elif count & (count - 1) == 0 and first % count == 0:
                known[len(checked)] = levels[count.bit_length() - 1][first // count].tobytes()
            else:
                ranges.append(txids[first:end])
            checked.append(b)
        # merkle_root releases the GIL: several batches hash on several cores at once.
        if threads > 1 and len(ranges) > 1:
            hashed = list(self._pool(threads).map(hashing.merkle_root, ranges))
        else:
            hashed = [hashing.merkle_root(leaves, threads) for leaves in ranges]
        hashed.reverse()
        roots = [known[i] if i in known else hashed.pop() for i in range(len(checked))]
        roots_array = np.frombuffer(b"".join(roots), dtype=np.uint8).reshape(-1, 32)
        return np.array(checked, dtype=np.int64), roots_array

    def _pool(self, threads: int) -> ThreadPoolExecutor:
        if self._executor is None or self._executor_threads != threads:
            if self._executor is not None:
                self._executor.shutdown()
            self._executor = ThreadPoolExecutor(threads, thread_name_prefix="tsunagi-merkle")
            self._executor_threads = threads
        return self._executor

    def _expire(self, now_s: int) -> tuple[np.ndarray, np.ndarray]:
        """Expires the holds due at now_s: their rows (EXPIRED_DTYPE) and table indices."""
        indices = commit.expire_holds(self.state, now_s)
        return self.state.expired_rows(indices), indices

    def replay(self, records, codes, now_s: int, batches: Sequence = (),
               track_undo: bool = False) -> ReplayOutcome:
        """Re-applies a stored block without checking signatures (they were checked when it
        was made, and the block's hash chain covers them). Truthy when every record stores
        again with the code the block holds. On a mismatch the state has moved on: the block
        is not this chain's, and the caller must discard this engine. ``track_undo`` makes the
        block's undo data on the way (``outcome.undo``)."""
        flat = commit.record_bytes(records)
        expected = np.asarray(codes, dtype=np.uint8)
        if expected.shape != (len(flat) // RECORD_BYTES,):
            raise EncodingError("replay needs one code per record")
        ids = _batch_ids(_batch_table(batches, len(expected)), len(expected))
        counters_before = self.state.counters.copy()
        expired, expired_holds = self._expire(now_s)
        touches = commit.policy_touches(flat) if track_undo else 0
        applied = commit.apply_batch(self.state, flat, None, now_s, join_next=_join_next(ids),
                                     journal=True if track_undo else None,
                                     policy_touches=touches)
        computed, opened, stored = applied[:3]
        wrong = np.flatnonzero((computed != expected) | ~stored)
        first = int(wrong[0]) if wrong.size else None
        undo = self._undo_of(counters_before, applied[3], expired_holds, True) \
            if track_undo else None
        return ReplayOutcome(first is None, computed, opened, expired, first, undo)

    def apply_genesis(self, records, issuer_count: int | None = None) -> BatchOutcome:
        """Applies the genesis block's records (docs/FORMAT.md, Genesis) to an empty state.

        Opens come first, then mints from account 0. The first ``issuer_count`` accounts become
        issuers; by default as many as there are opens beyond the mints (each allocation holder
        gets one mint). Any record that fails raises ConfigError: genesis must apply cleanly.
        """
        if self.state.account_count:
            raise ConfigError("genesis applies to an empty state only")
        flat = commit.record_bytes(records)
        view = flat.view(RECORD_DTYPE)
        kinds = view["kind"]
        opens = np.flatnonzero(kinds == Kind.open_account)
        if issuer_count is None:
            issuer_count = len(opens) - int(np.count_nonzero(kinds == Kind.mint))
        if not 0 <= issuer_count <= len(opens):
            raise ConfigError(f"{issuer_count} issuers, but genesis opens {len(opens)} accounts")
        codes = commit.check_fields(flat, self.chain_id)
        codes[opens[~sigverify.check_keys(view["data"][opens])]] = Result.bad_account_key
        if not codes.any():
            codes, opened, stored = commit.apply_batch(self.state, flat, None, 0, genesis=True)
        if codes.any():
            first = int(np.flatnonzero(codes)[0])
            raise ConfigError(f"genesis record {first} fails: {Result(int(codes[first])).name}")
        for account in range(1, issuer_count + 1):
            self.state.set_issuer(account)
        txids = hashing.sha256d_records(flat, RECORD_BYTES)
        empty = np.zeros((0, SIGNATURE_BYTES), dtype=np.uint8)
        return BatchOutcome(codes, stored, opened, txids, np.zeros(0, EXPIRED_DTYPE),
                            view.copy(), codes.copy(), empty, [])


def _check_payloads(view, calls: np.ndarray, payloads: Sequence, codes: np.ndarray) -> None:
    """payload_missing for each call whose payload is not the one its record names."""
    if not len(payloads):
        codes[calls[codes[calls] == 0]] = Result.payload_missing
        return
    lengths, digests = view["aux2"], view["data"]
    for index, payload in zip(calls.tolist(), payloads):
        if codes[index]:
            continue
        if payload is None or len(payload) != lengths[index] or \
                payload_digest(payload) != digests[index].tobytes():
            codes[index] = Result.payload_missing


def _stored_payloads(calls: np.ndarray, payloads: Sequence, stored: np.ndarray) -> list:
    position = np.cumsum(stored, dtype=np.int64) - 1  # each stored record's index in the block
    return [Payload(int(position[index]), bytes(payload))
            for index, payload in zip(calls.tolist(), payloads) if stored[index]]


def _outcome(view, codes, stored, opened, txids, expired, own, signature_rows,
             table) -> BatchOutcome:
    stored_before = np.concatenate([[0], np.cumsum(stored, dtype=np.int64)])
    # A batch is one storage unit: its first record speaks for all.
    kept = table[stored[table["first"]]]
    kept["first"] = stored_before[kept["first"]]
    stored_batches = unpack_batches(kept)
    if stored.all():  # the common case: hand the records on without copying them
        stored_records, stored_codes, signatures = view, codes, signature_rows
    else:
        # Rows of bytes copy faster than a structured array's fields.
        rows = view.view(np.uint8).reshape(-1, RECORD_BYTES)
        stored_records = rows[stored].reshape(-1).view(RECORD_DTYPE)
        stored_codes, signatures = codes[stored], signature_rows[stored[own]]
    return BatchOutcome(
        codes=codes, stored=stored, opened=opened, txids=txids, expired=expired,
        stored_records=stored_records, stored_codes=stored_codes,
        stored_signatures=signatures, stored_batches=stored_batches)
