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

__all__ = ["BlockUndo", "apply_undo", "decode_undo", "encode_undo", "make_undo"]

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

    @property
    def nbytes(self) -> int:
        return (_HEAD.size + _COUNTERS_BYTES + self.accounts.nbytes + self.reopened.nbytes
                + self.expired.nbytes + self.policy_indices.nbytes + self.policies.nbytes)


def make_undo(counters_before: np.ndarray, journal, expired: np.ndarray) -> BlockUndo:
    """The undo of one block from the kernel's journal of it (``commit.Journal``, made with
    room for policies before), the holds expired at its time and the counters before."""
    hold_count = int(counters_before[commit.HOLD_COUNT])
    policy_count = int(counters_before[commit.POLICY_COUNT])
    rows = journal.accounts
    accounts = np.ascontiguousarray(rows[:, [0, 3, 4]]) if rows.size else \
        np.zeros((0, 3), dtype=np.uint64)
    holds = journal.holds
    reopened = np.unique(holds[holds < hold_count]) if holds.size else _NO_INDICES
    policy_indices, policies = _NO_INDICES, np.zeros(0, dtype=POLICY_DTYPE)
    if journal.policies.size:
        if journal.policies_before is None:
            raise EncodingError("the block changed policies but its journal kept no room for "
                                "their entries before: pass policy_touches to apply_batch")
        before = journal.policies_before.view(POLICY_DTYPE)
        touched = journal.policies
        # The first change of each entry holds its value before the block.
        unique, first = np.unique(touched, return_index=True)
        kept = unique < policy_count
        policy_indices, policies = unique[kept], before[first[kept]].copy()
    return BlockUndo(counters_before.copy(), accounts, reopened,
                     np.asarray(expired, dtype=np.uint64), policy_indices, policies)


def apply_undo(state: State, undo: BlockUndo) -> None:
    """Takes one block back: the state is then as it was before the block."""
    counters = undo.counters
    if undo.accounts.size:
        commit.place_accounts(state, np.ascontiguousarray(undo.accounts[::-1]))
    holds = state.holds
    if undo.expired.size:
        balances = state.accounts[:, 0]
        np.subtract.at(balances, holds["payer"][undo.expired].astype(np.intp),
                       holds["amount"][undo.expired])
        holds["status"][undo.expired] = HOLD_OPEN
    if undo.reopened.size:
        holds["status"][undo.reopened] = HOLD_OPEN
    if undo.policy_indices.size:
        state.policies[undo.policy_indices] = undo.policies
    hold_change = (undo.expired.size or undo.reopened.size
                   or state.hold_count != int(counters[commit.HOLD_COUNT]))
    commit.truncate(state, int(counters[commit.ACCOUNT_COUNT]),
                    int(counters[commit.HOLD_COUNT]), int(counters[commit.POLICY_COUNT]))
    state.counters[commit.MINTED_LO:] = counters[commit.MINTED_LO:]
    if hold_change:
        commit.rebuild_heap(state)


def encode_undo(undo: BlockUndo) -> bytes:
    parts = [_HEAD.pack(_MAGIC, len(undo.accounts), len(undo.reopened), len(undo.expired),
                        len(undo.policy_indices)),
             undo.counters.astype("<u8").tobytes(), undo.accounts.astype("<u8").tobytes(),
             undo.reopened.astype("<u8").tobytes(), undo.expired.astype("<u8").tobytes(),
             undo.policy_indices.astype("<u8").tobytes(), undo.policies.tobytes()]
    return b"".join(parts)


def decode_undo(data) -> BlockUndo:
    """An undo from its bytes; sizes that disagree raise EncodingError."""
    view = memoryview(data).cast("B")
    if view.nbytes < _HEAD.size + _COUNTERS_BYTES:
        raise EncodingError(f"undo data is at least {_HEAD.size + _COUNTERS_BYTES} bytes")
    magic, accounts, reopened, expired, policies = _HEAD.unpack_from(view)
    if magic != _MAGIC:
        raise EncodingError("undo data does not start with TSU1")
    expected = (_HEAD.size + _COUNTERS_BYTES + 24 * accounts + 8 * (reopened + expired + policies)
                + POLICY_DTYPE.itemsize * policies)
    if view.nbytes != expected:
        raise EncodingError(f"undo data of these counts is {expected} bytes, got {view.nbytes}")
    words = np.frombuffer(view, dtype="<u8", count=(expected - _HEAD.size) // 8
                          - POLICY_DTYPE.itemsize * policies // 8, offset=_HEAD.size)
    at = 8
    counters = words[:8].astype(np.uint64)
    account_rows = words[at:at + 3 * accounts].astype(np.uint64).reshape(-1, 3)
    at += 3 * accounts
    reopened_indices = words[at:at + reopened].astype(np.uint64)
    at += reopened
    expired_indices = words[at:at + expired].astype(np.uint64)
    at += expired
    policy_indices = words[at:at + policies].astype(np.uint64)
    entries = np.frombuffer(view, dtype=POLICY_DTYPE, count=policies,
                            offset=expected - POLICY_DTYPE.itemsize * policies).copy()
    return BlockUndo(counters, account_rows, reopened_indices, expired_indices, policy_indices,
                     entries)
