"""The ledger rules in plain Python: slow, obviously correct, the oracle of the native kernel.

Same functions and semantics as :mod:`tsunagi._native.commit` (``check_fields``,
``resolve_signers``, ``apply_batch``, ``expire_holds``) over :class:`ReferenceState`, which
keeps plain ints and dicts. A rollback here is a deep copy taken before the change, so there is
no undo log to get wrong. Differential tests run both on random batches and compare codes and
``canonical()`` states.

The rules, in the order they are checked (docs/FORMAT.md gives the layout):

1. Storage units: records chained by ``linked`` flags or by ``join_next`` (a batch stored
   whole). A unit with a pre-code (an earlier stage rejected a record) or an open tail group is
   rejected whole and not stored.
2. Each linked group of a unit is first authorized record by record (fields, debit account,
   key slot, sequence strictly above the last, which is then used). A failure there makes the
   whole unit unstorable: everything it did is rolled back, sequences included.
3. Then the group's effects apply record by record; the first failure rolls the group's effects
   back (its sequences stay used) and the group is stored with codes.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np

from tsunagi.core.codes import Result
from tsunagi.core.records import RECORD_BYTES, Flags, Kind, unpack
from tsunagi.ledger import limits
from tsunagi.limits import u64_max

ZERO_KEY = bytes(32)
OPEN, POSTED, VOIDED, EXPIRED = 1, 2, 3, 4

# Fields each kind requires to be zero (docs/FORMAT.md, table of kinds).
_ZERO_FIELDS = {
    Kind.open_account: ("debit_account", "credit_account", "amount", "aux", "aux2", "extra"),
    Kind.transfer: ("aux", "data", "aux2", "extra"),
    Kind.mint: ("aux", "data", "aux2", "extra"),
    Kind.burn: ("credit_account", "aux", "data", "aux2", "extra"),
    Kind.hold: ("extra",),
    Kind.post: ("aux2", "extra"),
    Kind.void: ("amount", "data", "aux2", "extra"),
    Kind.set_policy_key: ("credit_account",),
    Kind.call: ("credit_account", "amount", "extra"),
}


class ReferenceState:
    """accounts: number -> [balance, sequence, owner key, flags]; holds: (payer, sequence) ->
    dict; policies: (account, slot) -> dict (a zero key is an empty slot)."""

    def __init__(self, *, accounts_max: int = limits.accounts_max,
                 holds_max: int = limits.holds_max) -> None:
        self.accounts: dict[int, list] = {}
        self.holds: dict[tuple[int, int], dict] = {}
        self.policies: dict[tuple[int, int], dict] = {}
        self.minted = 0
        self.burned = 0
        self.accounts_max = accounts_max
        self.holds_max = holds_max

    @property
    def account_count(self) -> int:
        return len(self.accounts)

    def balance(self, account: int) -> int:
        return self.accounts[account][0]

    def holds_of(self, account: int) -> list[dict]:
        return [dict(h, payer=p, sequence=s) for (p, s), h in self.holds.items()
                if account in (p, h["payee"], h["authority"])]

    def snapshot(self) -> dict:
        return copy.deepcopy(self.__dict__)

    def restore(self, saved: dict) -> None:
        self.__dict__.update(copy.deepcopy(saved))

    def canonical(self) -> dict:
        accounts = {n: (a[0], a[1], a[2], a[3]) for n, a in self.accounts.items()}
        holds = {key: (h["payee"], h["authority"], h["amount"], h["expiry_s"], h["hashlock"],
                       h["status"]) for key, h in self.holds.items()}
        policies = {key: (p["key"], p["amount_max"], p["allowance"], p["allowance_left"],
                          p["expiry_s"], p["recipients"])
                    for key, p in self.policies.items() if p["key"] != ZERO_KEY}
        return {"accounts": accounts, "holds": holds, "policies": policies,
                "minted": self.minted, "burned": self.burned}


def parse(records) -> list[dict]:
    raw = bytes(memoryview(records).cast("B")) if not isinstance(records, bytes) else records
    return [unpack(raw[i:i + RECORD_BYTES]) for i in range(0, len(raw), RECORD_BYTES)]


def check_one(r: dict, chain_id: int | None) -> int:
    """Stage-one checks of one record; chain_id None skips the chain."""
    if r["kind"] not in Kind.__members__.values() or r["flags"] & ~3:
        return Result.malformed
    if chain_id is not None and r["chain_id"] != chain_id:
        return Result.wrong_chain
    slot, kind = r["key_slot"], Kind(r["kind"])
    if slot >= 8 or (kind == Kind.set_policy_key and slot == 0) or (
            kind == Kind.open_account and slot != 0):
        return Result.key_slot_invalid
    for name in _ZERO_FIELDS[kind]:
        value = r[name]
        if value if isinstance(value, int) else any(value):
            return Result.malformed
    return Result.ok


def check_fields(records, chain_id: int) -> np.ndarray:
    return np.array([check_one(r, chain_id) for r in parse(records)], dtype=np.uint8)


def _live_policy(state: ReferenceState, account: int, slot: int) -> dict | None:
    policy = state.policies.get((account, slot))
    return policy if policy is not None and policy["key"] != ZERO_KEY else None


def resolve_signers(state: ReferenceState, records, codes: np.ndarray) -> np.ndarray:
    """The key each record must be signed with; sets codes in place like the native one."""
    rows = parse(records)
    keys = np.zeros((len(rows), 32), dtype=np.uint8)
    replaced: set[tuple[int, int]] = set()
    for i, r in enumerate(rows):
        if codes[i]:
            continue
        key, code = _resolve_one(state, r, replaced)
        codes[i] = code
        if code == Result.ok or code == Result.policy_key_replaced:
            keys[i] = np.frombuffer(key, dtype=np.uint8)
    return keys


def _resolve_one(state, r, replaced) -> tuple[bytes, int]:
    if r["kind"] == Kind.open_account:
        return r["data"], Result.ok
    debit = r["debit_account"]
    if debit not in state.accounts:
        return ZERO_KEY, Result.unknown_account
    if r["key_slot"] == 0 or r["kind"] == Kind.set_policy_key:
        if r["kind"] == Kind.set_policy_key:
            replaced.add((debit, r["key_slot"]))
        return state.accounts[debit][2], Result.ok
    policy = _live_policy(state, debit, r["key_slot"])
    if policy is None:
        return ZERO_KEY, Result.key_slot_empty
    if (debit, r["key_slot"]) in replaced:
        return policy["key"], Result.policy_key_replaced
    return policy["key"], Result.ok


def expire_holds(state: ReferenceState, now_s: int) -> list[tuple[int, int, int, int]]:
    """Expires open holds with expiry_s <= now_s, earliest (expiry, creation order) first."""
    due = sorted((h["expiry_s"], h["index"], key) for key, h in state.holds.items()
                 if h["status"] == OPEN and h["expiry_s"] <= now_s)
    out = []
    for _, _, key in due:
        hold = state.holds[key]
        hold["status"] = EXPIRED
        state.accounts[key[0]][0] += hold["amount"]
        out.append((key[0], key[1], hold["payee"], hold["amount"]))
    return out


class _Batch:
    """One apply_batch call: the records, the outputs, and the clock."""

    def __init__(self, state, rows, now_s, genesis):
        self.state, self.rows, self.now_s, self.genesis = state, rows, now_s, genesis
        count = len(rows)
        self.codes = [0] * count
        self.opened = [0] * count
        self.stored = [False] * count

    def linked(self, i: int) -> bool:
        return bool(self.rows[i]["flags"] & Flags.linked)

    def groups(self, first: int, end: int):
        start = first
        for i in range(first, end):
            if i == end - 1 or not self.linked(i):
                yield start, i + 1
                start = i + 1


def apply_batch(state: ReferenceState, records, pre_codes=None, now_s: int = 0,
                genesis: bool = False, join_next=None):
    """Returns (codes, opened, stored) as numpy arrays, like the native apply_batch."""
    rows = parse(records)
    count = len(rows)
    pre = [int(c) for c in pre_codes] if pre_codes is not None else [0] * count
    join = [int(j) for j in join_next] if join_next is not None else [0] * count
    batch = _Batch(state, rows, now_s, genesis)
    first = 0
    while first < count:
        end = first + 1
        while end < count and (batch.linked(end - 1) or join[end - 1]):
            end += 1
        open_tail = end == count and batch.linked(count - 1)
        if open_tail or any(pre[first:end]):
            batch.codes[first:end] = pre[first:end]
            _reject_unit(batch, first, end, open_tail)
        else:
            _apply_unit(batch, first, end)
        first = end
    return (np.array(batch.codes, dtype=np.uint8), np.array(batch.opened, dtype=np.uint64),
            np.array(batch.stored, dtype=np.bool_))


def _reject_unit(batch: _Batch, first: int, end: int, open_tail: bool) -> None:
    for g_first, g_end in batch.groups(first, end):
        failing = any(batch.codes[g_first:g_end])
        if open_tail and g_end == end:
            others = Result.linked_group_open
        else:
            others = Result.linked_event_failed if failing else Result.batch_rejected
        for i in range(g_first, g_end):
            if not batch.codes[i]:  # its own reason, if it has one on its own
                batch.codes[i] = int(_check_authorized(batch, batch.rows[i]) or others)
            batch.opened[i] = 0
            batch.stored[i] = False


def _apply_unit(batch: _Batch, first: int, end: int) -> None:
    saved = batch.state.snapshot()
    for g_first, g_end in batch.groups(first, end):
        failure = _apply_group(batch, g_first, g_end)
        if failure is not None:
            batch.state.restore(saved)
            batch.codes[first:end] = [0] * (end - first)
            batch.codes[failure[0]] = int(failure[1])
            _reject_unit(batch, first, end, False)
            return
    batch.stored[first:end] = [True] * (end - first)


def _apply_group(batch: _Batch, first: int, end: int):
    """None when the group is stored; else (index, code) of the record that makes the unit
    unstorable."""
    for i in range(first, end):
        code = _authorize(batch, batch.rows[i])
        if code:
            return i, code
    saved = batch.state.snapshot()
    for i in range(first, end):
        code = _apply_record(batch, i)
        batch.codes[i] = int(code)
        if code:
            batch.state.restore(saved)  # the sequences stay used: they were saved bumped
            for j in range(first, end):
                if j != i:
                    batch.codes[j] = int(Result.linked_event_failed)
                batch.opened[j] = 0
            return None
    return None


def _check_authorized(batch: _Batch, r: dict) -> int:
    """Whether a record may be stored (fields, debit account, key slot, new sequence)."""
    state = batch.state
    code = check_one(r, None)
    if code or r["kind"] == Kind.open_account:
        return code
    debit = r["debit_account"]
    if batch.genesis and debit == 0 and r["kind"] == Kind.mint:
        return Result.ok  # genesis itself mints the allocations: no account, no sequence
    if debit not in state.accounts:
        return Result.unknown_account
    if (r["key_slot"] and r["kind"] != Kind.set_policy_key
            and _live_policy(state, debit, r["key_slot"]) is None):
        return Result.key_slot_empty
    if r["sequence"] <= state.accounts[debit][1]:
        return Result.sequence_used
    return Result.ok


def _authorize(batch: _Batch, r: dict) -> int:
    """_check_authorized, then the record uses its sequence."""
    code = _check_authorized(batch, r)
    if code or r["kind"] == Kind.open_account or (batch.genesis and r["debit_account"] == 0):
        return code
    batch.state.accounts[r["debit_account"]][1] = r["sequence"]
    return Result.ok


def _call(batch: _Batch, r) -> int:
    return Result.ok  # changes no balance; the contract layer runs it after the batch


def _apply_record(batch: _Batch, i: int) -> int:
    r = batch.rows[i]
    kind = Kind(r["kind"])
    if r["key_slot"] and kind not in (Kind.transfer, Kind.set_policy_key):
        return Result.policy_kind
    if kind == Kind.open_account:
        return _open(batch, r, i)
    handler = {Kind.transfer: _transfer, Kind.mint: _mint, Kind.burn: _burn,
               Kind.hold: _hold, Kind.post: _post, Kind.void: _void,
               Kind.set_policy_key: _set_policy, Kind.call: _call}[kind]
    return handler(batch, r)


def _open(batch: _Batch, r: dict, i: int) -> int:
    state = batch.state
    if state.account_count >= state.accounts_max:
        return Result.accounts_full
    number = state.account_count + 1
    state.accounts[number] = [0, 0, r["data"], 0]
    batch.opened[i] = number
    return Result.ok


def _policy_limits(batch: _Batch, r: dict):
    """(code, policy) for a transfer signed with a policy key."""
    policy = _live_policy(batch.state, r["debit_account"], r["key_slot"])
    if policy is None:  # revoked by an earlier record of the same linked group
        return Result.policy_expired, None
    if policy["expiry_s"] and batch.now_s >= policy["expiry_s"]:
        return Result.policy_expired, None
    if any(policy["recipients"]) and r["credit_account"] not in policy["recipients"]:
        return Result.policy_recipient, None
    if policy["amount_max"] and r["amount"] > policy["amount_max"]:
        return Result.policy_amount, None
    if policy["allowance"] and r["amount"] > policy["allowance_left"]:
        return Result.policy_allowance, None
    return Result.ok, policy


def _transfer(batch: _Batch, r: dict) -> int:
    accounts = batch.state.accounts
    debit, credit, amount = r["debit_account"], r["credit_account"], r["amount"]
    if credit not in accounts:
        return Result.unknown_credit_account
    if credit == debit:
        return Result.same_account
    if amount == 0:
        return Result.amount_zero
    policy = None
    if r["key_slot"]:
        code, policy = _policy_limits(batch, r)
        if code:
            return code
    if accounts[debit][0] < amount:
        return Result.insufficient_funds
    if accounts[credit][0] + amount > u64_max:
        return Result.amount_overflow
    if policy is not None and policy["allowance"]:
        policy["allowance_left"] -= amount
    accounts[debit][0] -= amount
    accounts[credit][0] += amount
    return Result.ok


def _mint(batch: _Batch, r: dict) -> int:
    state = batch.state
    credit, amount = r["credit_account"], r["amount"]
    from_genesis = batch.genesis and r["debit_account"] == 0
    if not from_genesis and not state.accounts[r["debit_account"]][3] & 1:
        return Result.not_issuer
    if credit not in state.accounts:
        return Result.unknown_credit_account
    if amount == 0:
        return Result.amount_zero
    if state.minted - state.burned + amount > u64_max:
        return Result.amount_overflow
    if state.accounts[credit][0] + amount > u64_max:
        return Result.amount_overflow
    state.accounts[credit][0] += amount
    state.minted += amount
    return Result.ok


def _burn(batch: _Batch, r: dict) -> int:
    state = batch.state
    debit, amount = r["debit_account"], r["amount"]
    if not state.accounts[debit][3] & 1:
        return Result.not_issuer
    if amount == 0:
        return Result.amount_zero
    if state.accounts[debit][0] < amount:
        return Result.insufficient_funds
    state.accounts[debit][0] -= amount
    state.burned += amount
    return Result.ok


def _hold(batch: _Batch, r: dict) -> int:
    state = batch.state
    debit, credit, amount = r["debit_account"], r["credit_account"], r["amount"]
    if credit not in state.accounts:
        return Result.unknown_credit_account
    if credit == debit:
        return Result.same_account
    if amount == 0:
        return Result.amount_zero
    if r["aux2"] not in state.accounts:
        return Result.unknown_authority
    if r["aux"] <= batch.now_s:
        return Result.hold_expiry_past
    if state.accounts[debit][0] < amount:
        return Result.insufficient_funds
    if len(state.holds) >= state.holds_max:
        return Result.holds_full
    state.accounts[debit][0] -= amount
    state.holds[(debit, r["sequence"])] = {
        "payee": credit, "authority": r["aux2"], "amount": amount, "expiry_s": r["aux"],
        "hashlock": r["data"], "status": OPEN, "index": len(state.holds)}
    return Result.ok


def _open_hold(batch: _Batch, r: dict):
    """(code, hold) for a post or void: the hold, if its authority may resolve it now."""
    hold = batch.state.holds.get((r["credit_account"], r["aux"]))
    if hold is None:
        return Result.hold_not_found, None
    if r["debit_account"] != hold["authority"]:
        return Result.not_hold_authority, None
    resolved = {POSTED: Result.hold_already_posted, VOIDED: Result.hold_already_voided,
                EXPIRED: Result.hold_expired}
    if hold["status"] in resolved:
        return resolved[hold["status"]], None
    if batch.now_s >= hold["expiry_s"]:
        return Result.hold_expired, None
    return Result.ok, hold


def _post(batch: _Batch, r: dict) -> int:
    accounts = batch.state.accounts
    code, hold = _open_hold(batch, r)
    if code:
        return code
    amount, payer = r["amount"], r["credit_account"]
    if amount == 0:
        return Result.amount_zero
    if amount > hold["amount"]:
        return Result.post_exceeds_hold
    if hold["hashlock"] != ZERO_KEY and hashlib.sha256(r["data"]).digest() != hold["hashlock"]:
        return Result.hashlock_mismatch
    rest = hold["amount"] - amount
    if accounts[hold["payee"]][0] + amount > u64_max or accounts[payer][0] + rest > u64_max:
        return Result.amount_overflow
    hold["status"] = POSTED
    accounts[hold["payee"]][0] += amount
    accounts[payer][0] += rest
    return Result.ok


def _void(batch: _Batch, r: dict) -> int:
    accounts = batch.state.accounts
    code, hold = _open_hold(batch, r)
    if code:
        return code
    payer = r["credit_account"]
    if accounts[payer][0] + hold["amount"] > u64_max:
        return Result.amount_overflow
    hold["status"] = VOIDED
    accounts[payer][0] += hold["amount"]
    return Result.ok


def _set_policy(batch: _Batch, r: dict) -> int:
    state = batch.state
    if any(rcp and rcp not in state.accounts for rcp in r["extra"]):
        return Result.unknown_credit_account
    key = (r["debit_account"], r["key_slot"])
    if r["data"] == ZERO_KEY:  # revoke: the slot becomes empty
        if key in state.policies:
            state.policies[key] = _policy(ZERO_KEY, 0, 0, 0, (0, 0, 0, 0))
        return Result.ok
    state.policies[key] = _policy(r["data"], r["amount"], r["aux2"], r["aux"], r["extra"])
    return Result.ok


def _policy(key: bytes, amount_max: int, allowance: int, expiry_s: int,
            recipients: tuple) -> dict:
    return {"key": key, "amount_max": amount_max, "allowance": allowance,
            "allowance_left": allowance, "expiry_s": expiry_s, "recipients": tuple(recipients)}
