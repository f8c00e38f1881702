"""Account state of one chain: arrays indexed by account number, plus hold and policy tables.

Everything the commit kernel touches is a numpy array, so one native call applies a whole batch
(:mod:`tsunagi._native.commit`). Balance and sequence sit side by side in ``accounts`` (one
cache line per account a transfer touches); ``balance`` and ``sequence`` are views of it.
Holds are named by (payer account, hold sequence) and policies by (account, slot 1..7); each
table has an open-addressing map of u32 slots (entry index + 1) that the kernel probes.

Memory: 49 bytes per account (balance 8, sequence 8, owner key 32, flags 1), 88 per hold (plus
8 of map), 112 per policy. Tables grow by doubling before a batch that needs room; numpy's
zeroed allocation leaves the untouched tail of a doubled table unmapped, so the resident cost
follows the accounts in use, not the capacity.
"""

from __future__ import annotations

import numpy as np

from tsunagi._native import commit as _commit
from tsunagi.errors import EncodingError
from tsunagi.ledger import limits
from tsunagi.limits import u32_max, u64_max

# Smallest table sizes: a new chain should not pay for growth on its first few batches.
_ACCOUNTS_MIN = 1024
_HOLDS_MIN = 64
_POLICIES_MIN = 16

HOLD_DTYPE = np.dtype([
    ("payer", "<u8"), ("sequence", "<u8"), ("payee", "<u8"), ("authority", "<u8"),
    ("amount", "<u8"), ("expiry_s", "<u8"), ("hashlock", "u1", (32,)), ("status", "u1"),
    ("reserved", "u1", (7,)),
])

POLICY_DTYPE = np.dtype([
    ("account", "<u8"), ("slot", "<u8"), ("amount_max", "<u8"), ("allowance", "<u8"),
    ("allowance_left", "<u8"), ("expiry_s", "<u8"), ("recipients", "<u8", (4,)),
    ("key", "u1", (32,)),
])

EXPIRED_DTYPE = np.dtype([
    ("payer", "<u8"), ("sequence", "<u8"), ("payee", "<u8"), ("amount", "<u8"),
])

HOLD_STATUS_NAMES = {1: "open", 2: "posted", 3: "voided", 4: "expired"}
HOLD_OPEN = 1
ISSUER = 1  # account flag bit 0: the account may mint and burn

assert HOLD_DTYPE.itemsize == _commit.HOLD_BYTES
assert POLICY_DTYPE.itemsize == _commit.POLICY_BYTES

_C = _commit  # counter positions live in the native module, beside the code that uses them


def grown(array: np.ndarray, capacity: int) -> np.ndarray:
    """A zeroed array of the new capacity (first axis) with the old rows copied in."""
    bigger = np.zeros((capacity,) + array.shape[1:], dtype=array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


def capacity_for(current: int, needed: int, minimum: int) -> int:
    """``current`` doubled (from ``minimum`` at least) until it holds ``needed``."""
    capacity = max(current, minimum)
    while capacity < needed:
        capacity *= 2
    return capacity


class State:
    """Balances, sequences, owner keys and flags of every account, and the holds and policies.

    Account numbers start at 1; row 0 of each account array is unused.
    """

    def __init__(self, *, accounts_max: int = limits.accounts_max,
                 holds_max: int = limits.holds_max) -> None:
        if not 0 <= accounts_max <= u64_max or not 0 <= holds_max <= u32_max - 1:
            raise EncodingError("accounts_max must fit a u64 and holds_max a u32 index")
        self.accounts_max = accounts_max
        self.holds_max = holds_max
        self.counters = np.zeros(8, dtype=np.uint64)
        self.accounts = np.zeros((_ACCOUNTS_MIN, 2), dtype=np.uint64)
        self.owner_keys = np.zeros((_ACCOUNTS_MIN, 32), dtype=np.uint8)
        self.account_flags = np.zeros(_ACCOUNTS_MIN, dtype=np.uint8)
        self.holds = np.zeros(_HOLDS_MIN, dtype=HOLD_DTYPE)
        self.hold_slots = np.zeros(2 * _HOLDS_MIN, dtype=np.uint32)
        self.expiry_heap = np.zeros((_HOLDS_MIN, 2), dtype=np.uint64)
        self.policies = np.zeros(_POLICIES_MIN, dtype=POLICY_DTYPE)
        self.policy_slots = np.zeros(2 * _POLICIES_MIN, dtype=np.uint32)

    # ------------------------------------------------------------------ sizes and growth

    @property
    def account_count(self) -> int:
        """Accounts opened so far; they are numbered 1..account_count."""
        return int(self.counters[_C.ACCOUNT_COUNT])

    @property
    def hold_count(self) -> int:
        return int(self.counters[_C.HOLD_COUNT])

    @property
    def policy_count(self) -> int:
        return int(self.counters[_C.POLICY_COUNT])

    def reserve(self, accounts: int = 0, holds: int = 0, policies: int = 0) -> None:
        """Grows the tables (by doubling) so that many more entries fit without a resize."""
        need = min(self.account_count + accounts, self.accounts_max) + 1
        if need > self.account_flags.shape[0]:
            capacity = capacity_for(self.account_flags.shape[0], need, _ACCOUNTS_MIN)
            self.accounts = grown(self.accounts, capacity)
            self.owner_keys = grown(self.owner_keys, capacity)
            self.account_flags = grown(self.account_flags, capacity)
        remap = False
        need = min(self.hold_count + holds, self.holds_max)
        if need > self.holds.shape[0]:
            capacity = capacity_for(self.holds.shape[0], need, _HOLDS_MIN)
            self.holds = grown(self.holds, capacity)
            self.expiry_heap = grown(self.expiry_heap, capacity)
            # Load at most one half keeps linear probes short.
            self.hold_slots = np.zeros(2 * capacity, dtype=np.uint32)
            remap = True
        need = self.policy_count + policies
        if need > self.policies.shape[0]:
            capacity = capacity_for(self.policies.shape[0], need, _POLICIES_MIN)
            self.policies = grown(self.policies, capacity)
            self.policy_slots = np.zeros(2 * capacity, dtype=np.uint32)
            remap = True
        if remap:
            _commit.rebuild_maps(self)

    # ------------------------------------------------------------------ queries

    @property
    def balance_array(self) -> np.ndarray:
        """Balances of accounts 0..account_count (a read-only view; 0 is unused)."""
        view = self.accounts[: self.account_count + 1, 0]
        view.flags.writeable = False
        return view

    @property
    def sequence_array(self) -> np.ndarray:
        view = self.accounts[: self.account_count + 1, 1]
        view.flags.writeable = False
        return view

    def _check_account(self, account: int) -> int:
        if not 1 <= account <= self.account_count:
            raise KeyError(f"account {account} does not exist "
                           f"(accounts are 1..{self.account_count})")
        return account

    def balance(self, account: int) -> int:
        return int(self.accounts[self._check_account(account), 0])

    def sequence(self, account: int) -> int:
        """The last sequence the account used (0: none yet)."""
        return int(self.accounts[self._check_account(account), 1])

    def owner_key(self, account: int) -> bytes:
        return self.owner_keys[self._check_account(account)].tobytes()

    def is_issuer(self, account: int) -> bool:
        return bool(self.account_flags[self._check_account(account)] & ISSUER)

    def set_issuer(self, account: int, issuer: bool = True) -> None:
        """Lets an account mint and burn (genesis does this for the config's issuers)."""
        account = self._check_account(account)
        flags = int(self.account_flags[account])
        self.account_flags[account] = flags | ISSUER if issuer else flags & ~ISSUER

    @property
    def minted(self) -> int:
        """Everything ever minted (a 128-bit total)."""
        return int(self.counters[_C.MINTED_LO]) | int(self.counters[_C.MINTED_HI]) << 64

    @property
    def burned(self) -> int:
        return int(self.counters[_C.BURNED_LO]) | int(self.counters[_C.BURNED_HI]) << 64

    @property
    def supply(self) -> int:
        """minted - burned: always the sum of balances and open holds."""
        return self.minted - self.burned

    def open_hold_total(self) -> int:
        table = self.holds[: self.hold_count]
        return int(table["amount"][table["status"] == HOLD_OPEN].sum(dtype=object))

    def balance_total(self) -> int:
        return int(self.accounts[1: self.account_count + 1, 0].sum(dtype=object))

    def held(self, account: int) -> int:
        """Units in the open holds the account pays: out of its balance until resolved."""
        table = self.holds[: self.hold_count]
        return int(table["amount"][(table["payer"] == account)
                                   & (table["status"] == HOLD_OPEN)].sum(dtype=np.uint64))

    def holds_of(self, account: int) -> list[dict]:
        """Every hold the account pays, receives or resolves, oldest first."""
        table = self.holds[: self.hold_count]
        mask = ((table["payer"] == account) | (table["payee"] == account)
                | (table["authority"] == account))
        return [_hold_dict(row) for row in table[mask]]

    def hold(self, payer: int, sequence: int) -> dict | None:
        table = self.holds[: self.hold_count]
        found = np.flatnonzero((table["payer"] == payer) & (table["sequence"] == sequence))
        return _hold_dict(table[found[0]]) if found.size else None

    def policy(self, account: int, slot: int) -> dict | None:
        """The live policy key of (account, slot), or None if the slot is empty."""
        table = self.policies[: self.policy_count]
        found = np.flatnonzero((table["account"] == account) & (table["slot"] == slot))
        if not found.size or not table["key"][found[0]].any():
            return None
        row = table[found[0]]
        return {"key": row["key"].tobytes(), "amount_max": int(row["amount_max"]),
                "allowance": int(row["allowance"]),
                "allowance_left": int(row["allowance_left"]),
                "expiry_s": int(row["expiry_s"]),
                "recipients": tuple(int(r) for r in row["recipients"] if r)}

    def expired_rows(self, indices: np.ndarray) -> np.ndarray:
        """The (payer, sequence, payee, amount) of the holds at these table indices."""
        rows = self.holds[indices]
        out = np.zeros(len(indices), dtype=EXPIRED_DTYPE)
        for name in EXPIRED_DTYPE.names:
            out[name] = rows[name]
        return out

    def canonical(self) -> dict:
        """The whole state as plain Python values, for comparing with the reference."""
        count = self.account_count
        accounts = {n: (int(self.accounts[n, 0]), int(self.accounts[n, 1]),
                        self.owner_keys[n].tobytes(), int(self.account_flags[n]))
                    for n in range(1, count + 1)}
        holds = {(int(h["payer"]), int(h["sequence"])): _hold_tuple(h)
                 for h in self.holds[: self.hold_count]}
        policies = {}
        for p in self.policies[: self.policy_count]:
            if p["key"].any():
                policies[(int(p["account"]), int(p["slot"]))] = (
                    p["key"].tobytes(), int(p["amount_max"]), int(p["allowance"]),
                    int(p["allowance_left"]), int(p["expiry_s"]),
                    tuple(int(r) for r in p["recipients"]))
        return {"accounts": accounts, "holds": holds, "policies": policies,
                "minted": self.minted, "burned": self.burned}

    # ------------------------------------------------------------------ snapshots

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The state as arrays (trimmed to what is in use) and a small JSON-able dict.

        The arrays are copies: the caller may write them out while the state moves on.
        """
        count = self.account_count
        arrays = {
            "balance": self.accounts[: count + 1, 0].copy(),
            "sequence": self.accounts[: count + 1, 1].copy(),
            "owner_key": self.owner_keys[: count + 1].copy(),
            "account_flags": self.account_flags[: count + 1].copy(),
            "holds": self.holds[: self.hold_count].copy(),
            "policies": self.policies[: self.policy_count].copy(),
        }
        meta = {"account_count": count, "minted": str(self.minted), "burned": str(self.burned),
                "accounts_max": self.accounts_max, "holds_max": self.holds_max,
                "format": 1}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> State:
        """Rebuilds a state from to_arrays' output; the maps and expiry heap are rebuilt."""
        state = cls(accounts_max=int(meta["accounts_max"]), holds_max=int(meta["holds_max"]))
        count = int(meta["account_count"])
        _check_shapes(arrays, count)
        state.reserve(accounts=count, holds=len(arrays["holds"]),
                      policies=len(arrays["policies"]))
        state.accounts[: count + 1, 0] = arrays["balance"]
        state.accounts[: count + 1, 1] = arrays["sequence"]
        state.owner_keys[: count + 1] = arrays["owner_key"]
        state.account_flags[: count + 1] = arrays["account_flags"]
        state.holds[: len(arrays["holds"])] = arrays["holds"]
        state.policies[: len(arrays["policies"])] = arrays["policies"]
        minted, burned = int(meta["minted"]), int(meta["burned"])
        state.counters[:] = [count, len(arrays["holds"]), len(arrays["policies"]), 0,
                             minted & u64_max, minted >> 64,
                             burned & u64_max, burned >> 64]
        _commit.rebuild_maps(state)
        _commit.rebuild_heap(state)
        return state


def _check_shapes(arrays: dict[str, np.ndarray], count: int) -> None:
    expected = {"balance": (count + 1,), "sequence": (count + 1,),
                "owner_key": (count + 1, 32), "account_flags": (count + 1,)}
    for name, shape in expected.items():
        if name not in arrays or tuple(arrays[name].shape) != shape:
            got = None if name not in arrays else arrays[name].shape
            raise EncodingError(f"snapshot array {name!r} should have shape {shape}, got {got}")
    for name, dtype in (("holds", HOLD_DTYPE), ("policies", POLICY_DTYPE)):
        if name not in arrays or arrays[name].dtype != dtype:
            raise EncodingError(f"snapshot array {name!r} must have the {name} dtype")


def _hold_tuple(h) -> tuple:
    return (int(h["payee"]), int(h["authority"]), int(h["amount"]), int(h["expiry_s"]),
            h["hashlock"].tobytes(), int(h["status"]))


def _hold_dict(h) -> dict:
    return {"payer": int(h["payer"]), "sequence": int(h["sequence"]),
            "payee": int(h["payee"]), "authority": int(h["authority"]),
            "amount": int(h["amount"]), "expiry_s": int(h["expiry_s"]),
            "hashlock": h["hashlock"].tobytes(),
            "status": HOLD_STATUS_NAMES.get(int(h["status"]), "unknown")}
