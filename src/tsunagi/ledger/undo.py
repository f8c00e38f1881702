"""Undo data: what one block changed, as it was before, so that the block can be taken back.

Bitcoin Core keeps a block's spent outputs beside it (its rev files) to disconnect the tip
in a reorg; a tsunagi block keeps the values it overwrote. The commit kernel journals every
account it changes with the account's balance and sequence right before the change
(``commit.apply_batch(journal=...)``), each policy entry right before it changes, and the holds
it changes; the engine adds the holds that expired at the block's time and the counters from
before the block. :func:`apply_undo` lays that back over the state:

1. account rows in reverse order of writing: every account ends with the values of its first
   row, its values before the block (opens get zero, and leave with step 4);
2. holds the block expired give their amount back out of the payer's balance and open again
   (expiry ran before the records applied, so step 1 left the payer as expiry left it);
3. holds the block posted or voided open again (only open holds change), and policy entries
   take their values before the block (the first change of each);
4. accounts, holds and policies the block made leave their maps and their rows are zeroed
   (``commit.truncate``), and the counters (supply totals included) are those from before;
5. the expiry heap is rebuilt when a hold changed (open again, or gone).

Afterwards ``State.to_arrays()`` is byte for byte what it was before the block (the maps and
the heap are indexes over those arrays: rebuilt, they answer the same).

Layout of an encoded undo (all little-endian), docs/FORMAT.md "Undo data"::

    magic b"TSU1", then u32 counts: accounts A, reopened R, expired E, policies P
    8 u64 counters before the block
    A x (u64 account, u64 balance, u64 sequence)   in the kernel's order of writing
    R x u64 hold index, E x u64 hold index, P x u64 policy index, P x POLICY_BYTES entries
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from tsunagi._native import commit
from tsunagi.errors import EncodingError
from tsunagi.ledger.state import HOLD_OPEN, POLICY_DTYPE, State

__all__ = ["BlockUndo", "apply_undo", "decode_undo", "encode_undo", "make_undo",
           "reopen_expired"]

_MAGIC = b"TSU1"
_HEAD = struct.Struct("<4sIIII")
_COUNTERS_BYTES = 8 * 8
_NO_INDICES = np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True)
class BlockUndo:
    """The values one block overwrote (see the module docstring)."""

    counters: np.ndarray  # 8 uint64: State.counters before the block
    accounts: np.ndarray  # A x 3 uint64 (account, balance, sequence) before, in write order
    reopened: np.ndarray  # uint64 indices of holds that existed and were open before
    expired: np.ndarray  # uint64 indices of holds that expired at the block's time
    policy_indices: np.ndarray  # uint64, each once
    policies: np.ndarray  # POLICY_DTYPE entries at policy_indices before the block
    raw: np.ndarray  # the encoded bytes (uint8) the arrays are views of

    @property
    def nbytes(self) -> int:
        return _size(len(self.accounts), len(self.reopened), len(self.expired),
                     len(self.policy_indices))


def make_undo(counters_before: np.ndarray, journal, expired: np.ndarray) -> BlockUndo:
    """The undo of one block from the kernel's journal of it (``commit.Journal``, made with
    room for policies before), the holds expired at its time and the counters before.

    It is laid out in its encoded form at once (one buffer, written once: the journal's rows
    go column by column into place), and the arrays of the BlockUndo are views of it, so
    storing it costs no further copy (``encode_undo`` gives that buffer)."""
    hold_count = int(counters_before[commit.HOLD_COUNT])
    policy_count = int(counters_before[commit.POLICY_COUNT])
    rows = journal.accounts
    holds = journal.holds
    reopened = np.unique(holds[holds < hold_count]) if holds.size else _NO_INDICES
    expired = np.asarray(expired, dtype=np.uint64)
    policy_indices, policies = _NO_INDICES, np.zeros(0, dtype=POLICY_DTYPE)
    if journal.policies.size:
        if journal.policies_before is None:
            raise EncodingError("the block changed policies but its journal kept no room for "
                                "their entries before: pass policy_touches to apply_batch")
        before = journal.policies_before.view(POLICY_DTYPE)
        # The first change of each entry holds its value before the block.
        unique, first = np.unique(journal.policies, return_index=True)
        kept = unique < policy_count
        policy_indices, policies = unique[kept], before[first[kept]]
    counts = (len(rows), len(reopened), len(expired), len(policy_indices))
    raw = np.empty(_size(*counts), dtype=np.uint8)
    _HEAD.pack_into(raw, 0, _MAGIC, *counts)
    undo = _views(raw, *counts)
    undo.counters[:] = counters_before
    for column, source in enumerate((0, 3, 4)):  # account, balance before, sequence before
        undo.accounts[:, column] = rows[:, source]
    undo.reopened[:] = reopened
    undo.expired[:] = expired
    undo.policy_indices[:] = policy_indices
    undo.policies[:] = policies
    return undo


def _size(accounts: int, reopened: int, expired: int, policies: int) -> int:
    return (_HEAD.size + _COUNTERS_BYTES + 24 * accounts + 8 * (reopened + expired + policies)
            + POLICY_DTYPE.itemsize * policies)


def _views(raw: np.ndarray, accounts: int, reopened: int, expired: int,
           policies: int) -> BlockUndo:
    """A BlockUndo whose arrays are views of its encoded bytes ``raw`` (uint8)."""
    words = raw[_HEAD.size:_HEAD.size + _COUNTERS_BYTES + 8 * (3 * accounts + reopened + expired
                                                                 + policies)].view("<u8")
    at = 8
    parts = []
    for size in (3 * accounts, reopened, expired, policies):
        parts.append(words[at:at + size])
        at += size
    entries = raw[raw.size - POLICY_DTYPE.itemsize * policies:].view(POLICY_DTYPE)
    return BlockUndo(words[:8], parts[0].reshape(-1, 3), parts[1], parts[2], parts[3], entries,
                     raw)


def apply_undo(state: State, undo: BlockUndo) -> None:
    """Takes one block back: the state is then as it was before the block."""
    counters = undo.counters
    if undo.accounts.size:
        commit.place_accounts(state, np.ascontiguousarray(undo.accounts[::-1]))
    reopen_expired(state, undo.expired)
    if undo.reopened.size:
        state.holds["status"][undo.reopened] = HOLD_OPEN
    if undo.policy_indices.size:
        state.policies[undo.policy_indices] = undo.policies
    hold_change = (undo.expired.size or undo.reopened.size
                   or state.hold_count != int(counters[commit.HOLD_COUNT]))
    commit.truncate(state, int(counters[commit.ACCOUNT_COUNT]),
                    int(counters[commit.HOLD_COUNT]), int(counters[commit.POLICY_COUNT]))
    state.counters[commit.MINTED_LO:] = counters[commit.MINTED_LO:]
    if hold_change:
        commit.rebuild_heap(state)


def reopen_expired(state: State, indices: np.ndarray) -> None:
    """Holds that expired open again: their amounts leave their payers' balances again (the
    heap is the caller's to rebuild)."""
    if not indices.size:
        return
    holds = state.holds
    np.subtract.at(state.accounts[:, 0], holds["payer"][indices].astype(np.intp),
                   holds["amount"][indices])
    holds["status"][indices] = HOLD_OPEN


def encode_undo(undo: BlockUndo) -> np.ndarray:
    """The undo's bytes (uint8): the buffer its arrays are views of."""
    return undo.raw


def decode_undo(data) -> BlockUndo:
    """An undo from its bytes (its arrays are views of a copy); sizes that disagree raise
    EncodingError."""
    view = memoryview(data).cast("B")
    if view.nbytes < _HEAD.size + _COUNTERS_BYTES:
        raise EncodingError(f"undo data is at least {_HEAD.size + _COUNTERS_BYTES} bytes")
    magic, *counts = _HEAD.unpack_from(view)
    if magic != _MAGIC:
        raise EncodingError("undo data does not start with TSU1")
    expected = _size(*counts)
    if view.nbytes != expected:
        raise EncodingError(f"undo data of these counts is {expected} bytes, got {view.nbytes}")
    return _views(np.frombuffer(view, dtype=np.uint8).copy(), *counts)
