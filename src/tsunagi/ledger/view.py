"""What readers see: the state as of the last durable block, never more.

The engine changes its state arrays in place while it applies a batch (the native loop runs
without the GIL), and a batch's block becomes durable only after that, at its fsync. A reader
of the engine's arrays could therefore see a linked group's effects that the kernel then rolls
back, or balances of a block that a crash takes back. Readers read this view instead: a copy of
the account, hold and policy tables that moves from one durable block to the next in one step,
under a lock that a read holds for microseconds.

How it moves: the kernel journals what a batch changed (``commit.apply_batch(journal=...)``):
for accounts, a row of (account, balance, sequence) written right after each change, while the
account's cache line is at hand; for holds and policies, the indices it wrote, whose values the
engine copies right after the batch (:class:`StateChanges`, the block's post-images). Once the
block's fsync returns, the ledger lays them over this view in order (``advance``). Owner keys and
account flags are not copied: a row of them never changes once its account is durable, so the
view reads the engine's.

Cost: 16 bytes an account (balance and sequence) and the hold and policy tables once more; per
transfer, two 24-byte rows written by the kernel and placed in the view after the fsync (the
journal's room is pooled, so it costs no page faults once warm).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from tsunagi._native import commit
from tsunagi.errors import NotFoundError
from tsunagi.ledger.state import State, capacity_for, grown

__all__ = ["AccountInfo", "DurableView", "StateChanges", "capture_changes"]

_NO_INDICES = np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True)
class AccountInfo:
    """One account as of durable block ``height - 1`` (``height`` blocks were durable)."""

    account: int
    owner_key: bytes
    balance: int
    sequence: int
    issuer: bool
    held: int  # units in open holds this account pays (not in its balance)
    height: int


@dataclass(frozen=True)
class StateChanges:
    """The entries one block changed, with their values after it (post-images)."""

    accounts: tuple[np.ndarray, ...]  # uint64 N x 3 rows (account, balance, sequence), in order
    hold_indices: np.ndarray
    holds: np.ndarray  # HOLD_DTYPE rows at hold_indices
    policy_indices: np.ndarray
    policies: np.ndarray  # POLICY_DTYPE rows at policy_indices
    counters: np.ndarray  # State.counters after the block


def capture_changes(state: State, account_rows: tuple[np.ndarray, ...],
                    holds: np.ndarray = _NO_INDICES,
                    policies: np.ndarray = _NO_INDICES) -> StateChanges:
    """A batch's changes: its journal's account rows as they are, and the current values of
    the holds and policies listed (indices may repeat; entries a rollback took away, past the
    tables' counts, are left out)."""
    holds = np.unique(holds[holds < state.hold_count]) if holds.size else _NO_INDICES
    policies = np.unique(policies[policies < state.policy_count]) if policies.size \
        else _NO_INDICES
    return StateChanges(account_rows, holds, state.holds[holds], policies,
                        state.policies[policies], state.counters.copy())


class DurableView:
    """The durable state, for readers on any thread. The ledger calls ``advance`` with each
    block's changes in height order, once the block is on disk."""

    def __init__(self, live: State, height: int) -> None:
        self._live = live
        self._lock = threading.Lock()
        self._height = height
        self._state = _copy_tables(live)

    @property
    def height(self) -> int:
        """Durable blocks the view shows (the newest is height - 1)."""
        return self._height

    def advance(self, changes: StateChanges, height: int) -> None:
        """Lays one durable block's changes over the view; ``height`` blocks are then durable."""
        view = self._state
        counters = changes.counters
        with self._lock:
            _reserve(view, int(counters[commit.ACCOUNT_COUNT]),
                     int(counters[commit.HOLD_COUNT]), int(counters[commit.POLICY_COUNT]))
            view.counters[:] = counters  # first: placing leaves out accounts past the count
            for rows in changes.accounts:
                commit.place_accounts(view, rows)
            if changes.hold_indices.size:
                view.holds[changes.hold_indices] = changes.holds
            if changes.policy_indices.size:
                view.policies[changes.policy_indices] = changes.policies
            # Rows of durable accounts never change in these two; growth copies them over.
            view.owner_keys, view.account_flags = self._live.owner_keys, self._live.account_flags
            self._height = height

    def account(self, account: int, chain_name: str = "") -> AccountInfo:
        with self._lock:
            return self._account(account, chain_name)

    def _account(self, account: int, chain_name: str) -> AccountInfo:
        view = self._state
        count = view.account_count
        if not 1 <= account <= count:
            raise NotFoundError(f"no account {account} on chain {chain_name!r}: "
                                f"accounts are 1..{count}")
        return AccountInfo(account, view.owner_key(account), view.balance(account),
                           view.sequence(account), view.is_issuer(account), view.held(account),
                           self._height)

    def balances(self, accounts) -> tuple[int, np.ndarray]:
        """(height, balances) of several accounts read at one durable height."""
        numbers = np.asarray(accounts, dtype=np.uint64)
        with self._lock:
            count = self._state.account_count
            if numbers.size and (numbers.min() < 1 or numbers.max() > count):
                raise NotFoundError(f"accounts are 1..{count}")
            return self._height, self._state.accounts[numbers, 0].copy()

    def holds(self, account: int) -> list[dict]:
        with self._lock:
            return self._state.holds_of(account)

    def hold(self, payer: int, sequence: int) -> dict | None:
        with self._lock:
            return self._state.hold(payer, sequence)

    def policy(self, account: int, slot: int) -> dict | None:
        with self._lock:
            return self._state.policy(account, slot)

    def canonical(self) -> dict:
        """The view as plain Python values (State.canonical), for comparing with the engine."""
        with self._lock:
            return self._state.canonical()


def _copy_tables(live: State) -> State:
    """A State holding copies of what blocks change, sharing the immutable rows."""
    view = State.__new__(State)
    view.accounts_max, view.holds_max = live.accounts_max, live.holds_max
    view.counters = live.counters.copy()
    view.accounts = live.accounts[: live.account_count + 1].copy()
    view.owner_keys, view.account_flags = live.owner_keys, live.account_flags
    view.holds = live.holds[: live.hold_count].copy()
    view.policies = live.policies[: live.policy_count].copy()
    return view


def _reserve(view: State, accounts: int, holds: int, policies: int) -> None:
    """Grows the view's own tables (by doubling) to hold the given counts."""
    for name, needed in (("accounts", accounts + 1), ("holds", holds), ("policies", policies)):
        table = getattr(view, name)
        if needed > len(table):
            setattr(view, name, grown(table, capacity_for(len(table), needed, 16)))
