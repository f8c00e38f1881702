"""The native commit kernel keeps the ledger's invariants and agrees with the Python reference.

Method: hypothesis draws random batches mixing every record kind (valid and invalid accounts,
amounts near 2**64, reused sequences, linked groups, joined batches, pre-rejected records,
holds posted, voided and expired twice, policy keys) and applies them to the native kernel and
to ``tsunagi.ledger.reference``; codes, opened accounts, storage and the whole state must be
equal, and money must be conserved after every batch. Two more properties apply records one at
a time to see that a rejected record changes no balance, hold or allowance, and that a linked
group is all or nothing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi._native import commit
from tsunagi.core.codes import Result
from tsunagi.core.records import Flags, Kind, pack
from tsunagi.ledger import reference
from tsunagi.ledger.state import State

CHAIN = 5
U64_MAX = 2**64 - 1
GENESIS_ACCOUNTS = 5
PREIMAGES = [bytes([i]) * 32 for i in range(3)]
AMOUNTS = [0, 1, 2, 7, 100, 1000, 2**32, 2**62, 2**63, U64_MAX - 1, U64_MAX]
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_kernel_codes_mirror_result_enum():
    """Every result code in ext/commit_kernel.h has the value of the Result member it names."""
    header = (Path(__file__).resolve().parents[1] / "ext" / "commit_kernel.h").read_text()
    block = header.split("enum {", 1)[1].split("};", 1)[0]
    native = {name.lower(): int(value) for name, value in re.findall(r"TS_(\w+) = (\d+)", block)}
    assert native == {member.name: member.value for member in Result}


# ------------------------------------------------------------------------------ strategies

# Mostly amounts that can succeed, sometimes ones at the edges of a u64.
amounts = st.one_of(st.integers(0, 300), st.integers(0, 300),
                    st.sampled_from([149, 150, 151, 199, 200, 201]),  # the policy limits
                    st.sampled_from(AMOUNTS), st.integers(0, U64_MAX))
# Small steps and offsets, so a clock lands exactly on an expiry now and then.
STEPS_S = [0, 1, 5, 10, 30, 60]
# Mostly accounts that exist; sometimes 0 (none) or numbers past the last account.
accounts = st.one_of(st.integers(1, GENESIS_ACCOUNTS), st.integers(1, GENESIS_ACCOUNTS),
                     st.integers(1, GENESIS_ACCOUNTS), st.integers(0, GENESIS_ACCOUNTS + 3))
# Transfers and holds most, every other kind often enough to meet the others.
kinds = st.sampled_from([Kind.transfer] * 4 + [Kind.hold] * 2 + [Kind.post, Kind.void] * 2
                        + [Kind.set_policy_key] + list(Kind))


@st.composite
def record_spec(draw) -> dict:
    return {"kind": draw(kinds), "debit": draw(accounts), "credit": draw(accounts),
            "amount": draw(amounts), "linked": draw(st.integers(0, 7)) == 0,
            "fresh_sequence": draw(st.integers(0, 9)) > 0, "pick": draw(st.integers(0, 99)),
            "slot": draw(st.sampled_from([0] * 5 + [1, 1, 2, 8])),
            "offset_s": draw(st.one_of(st.sampled_from(STEPS_S), st.integers(-5, 30))),
            "lock": draw(st.integers(0, 3)),
            "corrupt": draw(st.integers(0, 40)) == 0, "recipients": draw(st.integers(0, 3))}


def _sequence(spec: dict, counter: list[int]) -> int:
    counter[0] += 1
    return counter[0] if spec["fresh_sequence"] else spec["pick"] % 7


def _fields(spec: dict, now_s: int, holds: list[tuple], seq: int) -> dict:
    """Record fields for a spec; post and void name an earlier hold most of the time."""
    kind, fields = spec["kind"], {}
    if kind == Kind.open_account:
        return {"data": hashlib.sha256(bytes([spec["pick"]])).digest(), "sequence": seq}
    fields = {"sequence": seq, "debit_account": spec["debit"], "amount": spec["amount"]}
    if kind in (Kind.transfer, Kind.mint, Kind.hold):
        fields["credit_account"] = spec["credit"]
    if spec["slot"] and (kind == Kind.transfer or spec["pick"] % 4 == 0):
        # Policy keys live on accounts 1 and 2 (genesis_pair), so signed records meet them.
        fields.update(key_slot=spec["slot"], debit_account=spec["debit"] % 2 + 1)
    if kind == Kind.hold:
        lock = spec["lock"]
        fields.update(aux=now_s + spec["offset_s"], aux2=spec["credit"] % 4 + 1,
                      data=hashlib.sha256(PREIMAGES[lock]).digest() if lock < 3 else b"")
    if kind in (Kind.post, Kind.void):
        payer, hold_seq, authority = (holds[spec["pick"] % len(holds)] if holds
                                      else (spec["credit"], 3, 1))
        fields.update(credit_account=payer, aux=hold_seq)
        # Mostly the hold's own authority, sometimes anyone (not_hold_authority).
        fields["debit_account"] = spec["debit"] if spec["pick"] % 5 == 0 else authority
        if kind == Kind.post:
            fields["data"] = PREIMAGES[spec["lock"] % 3]
        else:
            fields["amount"] = 0
    if kind == Kind.set_policy_key:
        fields.update(key_slot=spec["slot"] or 1, debit_account=spec["debit"] % 2 + 1,
                      aux=now_s + spec["offset_s"] if spec["lock"] else 0,
                      aux2=spec["amount"] % 5000, amount=spec["amount"] % 3000,
                      data=b"" if spec["pick"] % 6 == 0 else bytes([spec["pick"] + 1]) * 32,
                      extra=tuple(range(2, 2 + spec["recipients"])))
    return fields


def build_batch(specs: list[dict], now_s: int, counter: list[int], holds: list[tuple]) -> bytes:
    out = []
    for spec in specs:
        seq = _sequence(spec, counter)
        fields = _fields(spec, now_s, holds, seq)
        if spec["kind"] == Kind.hold:
            holds.append((fields["debit_account"], seq, fields["aux2"]))
        flags = Flags.linked if spec["linked"] else 0
        record = bytearray(pack(spec["kind"], chain_id=CHAIN, flags=flags, **fields))
        if spec["corrupt"]:  # a field that must be zero, or an unknown kind or flag
            position = [0, 1, 2, 40, 80, 88][spec["pick"] % 6]
            record[position] ^= 0x40 if position else 0x09
        out.append(bytes(record))
    return b"".join(out)


@st.composite
def scenarios(draw):
    """(batches, end time, limits): two to four batches at increasing times."""
    limits = {"accounts_max": draw(st.sampled_from([2**32 - 1, 6, 8])),
              "holds_max": draw(st.sampled_from([2**32 - 2, 1, 3]))}
    batches = []
    now_s = 100
    counter, holds = [0], []
    for _ in range(draw(st.integers(2, 4))):
        specs = draw(st.lists(record_spec(), min_size=8, max_size=40))
        data = build_batch(specs, now_s, counter, holds)
        n = len(specs)
        pre = join = None
        if draw(st.integers(0, 5)) == 0:
            pre = np.array(draw(st.lists(st.sampled_from([0] * 20 + [3, 10, 30]), min_size=n,
                                         max_size=n)), dtype=np.uint8)
        if draw(st.integers(0, 3)) == 0:
            join = np.array(draw(st.lists(st.sampled_from([0] * 5 + [1]), min_size=n,
                                          max_size=n)), dtype=np.uint8)
        batches.append((data, pre, join, now_s))
        now_s += draw(st.sampled_from(STEPS_S))
    return batches, now_s, limits


# ------------------------------------------------------------------------------ helpers

def genesis_pair(issuer_balance: int = 2**63, **limits) -> tuple[State, reference.ReferenceState]:
    """Native and reference states after the same genesis: accounts 1..5, issuer 1."""
    opens = [pack(Kind.open_account, chain_id=CHAIN, data=bytes([n]) * 32, sequence=n)
             for n in range(1, GENESIS_ACCOUNTS + 1)]
    amounts_ = [issuer_balance, 10_000, 5_000, U64_MAX // 4, 0]
    mints = [pack(Kind.mint, chain_id=CHAIN, sequence=n, credit_account=n, amount=amount)
             for n, amount in enumerate(amounts_, start=1) if amount]
    data = b"".join(opens + mints)
    native, ref = State(**limits), reference.ReferenceState(**limits)
    codes, _, _ = commit.apply_batch(native, data, None, 0, genesis=True)
    ref_codes, _, _ = reference.apply_batch(ref, data, None, 0, genesis=True)
    assert not codes.any() and not ref_codes.any()
    native.set_issuer(1)
    ref.accounts[1][3] = 1
    # Policy keys from the start, so signed transfers meet their limits, not empty slots.
    policies = b"".join([
        pack(Kind.set_policy_key, chain_id=CHAIN, sequence=1, debit_account=1, key_slot=1,
             data=b"\x11" * 32, amount=150, aux=10_000, aux2=200, extra=(2, 3)),
        pack(Kind.set_policy_key, chain_id=CHAIN, sequence=1, debit_account=2, key_slot=2,
             data=b"\x22" * 32, amount=0, aux=150, aux2=0)])
    codes, _, _ = commit.apply_batch(native, policies, None, 0)
    ref_codes, _, _ = reference.apply_batch(ref, policies, None, 0)
    assert not codes.any() and not ref_codes.any()
    return native, ref


def assert_conserved(state: State) -> None:
    balances = state.balance_total()
    assert state.minted - state.burned == balances + state.open_hold_total()
    assert 0 <= balances <= U64_MAX * state.account_count


def apply_both(native, ref, data, pre=None, join=None, now_s=0):
    got = commit.apply_batch(native, data, pre, now_s, join_next=join)
    want = reference.apply_batch(ref, data, pre, now_s, join_next=join)
    for name, a, b in zip(("codes", "opened", "stored"), got, want):
        assert np.array_equal(a, b), f"{name}: native {a.tolist()} reference {b.tolist()}"
    return got


def expire_both(native, ref, now_s):
    indices = commit.expire_holds(native, now_s)
    rows = native.expired_rows(indices)
    got = [tuple(int(v) for v in row) for row in rows]
    assert got == reference.expire_holds(ref, now_s)
    return got


# ------------------------------------------------------------------------------ properties

@SETTINGS
@given(scenarios())
def test_native_equals_reference_and_money_is_conserved(scenario):
    batches, end_s, limits = scenario
    native, ref = genesis_pair(**limits)
    for data, pre, join, now_s in batches:
        expire_both(native, ref, now_s)
        apply_both(native, ref, data, pre, join, now_s)
        assert native.canonical() == ref.canonical()
        assert_conserved(native)
    expire_both(native, ref, end_s + 100)
    assert native.canonical() == ref.canonical()
    assert_conserved(native)
    assert native.open_hold_total() == 0  # every hold was resolved or expired by now


def _unlinked(specs):
    return [dict(spec, linked=False) for spec in specs]


@SETTINGS
@given(st.lists(record_spec(), min_size=1, max_size=25))
def test_a_rejected_record_changes_no_balance_hold_or_allowance(specs):
    native, ref = genesis_pair()
    data = build_batch(_unlinked(specs), 100, [0], [])
    whole_native, whole_ref = genesis_pair()
    whole = apply_both(whole_native, whole_ref, data, now_s=100)
    for i in range(len(specs)):
        before = native.canonical()
        codes, _, stored = apply_both(native, ref, data[128 * i: 128 * (i + 1)], now_s=100)
        after = native.canonical()
        # One record at a time gives what the whole batch gave: the kernel is sequential.
        assert codes[0] == whole[0][i] and stored[0] == whole[2][i]
        if codes[0] != Result.ok:
            _assert_only_sequence_moved(before, after)
    assert native.canonical() == whole_native.canonical()


def _assert_only_sequence_moved(before: dict, after: dict) -> None:
    assert before["holds"] == after["holds"]
    assert before["policies"] == after["policies"]
    assert (before["minted"], before["burned"]) == (after["minted"], after["burned"])
    assert before["accounts"].keys() == after["accounts"].keys()
    for number, (balance, _, key, flags) in before["accounts"].items():
        assert after["accounts"][number][0] == balance
        assert after["accounts"][number][2:] == (key, flags)


@SETTINGS
@given(st.lists(record_spec(), min_size=2, max_size=8), st.booleans())
def test_a_linked_group_is_all_or_nothing(specs, joined):
    native, ref = genesis_pair()
    group = [dict(spec, linked=True) for spec in specs[:-1]] + [dict(specs[-1], linked=False)]
    data = build_batch(group, 100, [0], [])
    before = native.canonical()
    join = np.ones(len(group), dtype=np.uint8) if joined else None
    codes, opened, stored = apply_both(native, ref, data, join=join, now_s=100)
    assert len(set(stored.tolist())) == 1  # stored as one unit, or not at all
    if codes.any():
        assert not opened.any()
        _assert_only_sequence_moved(before, native.canonical())
        assert (codes == Result.linked_event_failed).sum() >= len(group) - 1 or not stored[0]
        if not stored[0]:  # not authenticated as a unit: not even a sequence moved
            assert native.canonical() == before
    assert native.canonical() == ref.canonical()
    assert_conserved(native)


def test_hold_map_survives_a_large_rollback():
    """200 holds made and rolled back (their batch fails on a reused sequence) leave the 150
    committed holds findable, and the same names can be used again."""
    native, ref = genesis_pair()

    def holds(first_seq: int, count: int) -> bytes:
        return b"".join(pack(Kind.hold, chain_id=CHAIN, sequence=first_seq + i,
                             debit_account=4, credit_account=2 + i % 2, amount=1,
                             aux=10_000, aux2=1) for i in range(count))

    assert not apply_both(native, ref, holds(1, 150), now_s=100)[0].any()
    replayed = pack(Kind.transfer, chain_id=CHAIN, sequence=5, debit_account=4,
                    credit_account=2, amount=1)
    doomed = holds(1000, 200) + replayed
    codes, _, stored = apply_both(native, ref, doomed, join=np.ones(201, np.uint8), now_s=100)
    assert codes[-1] == Result.sequence_used and not stored.any()
    assert native.hold_count == 150
    assert not apply_both(native, ref, holds(1000, 200), now_s=100)[0].any()
    posts = b"".join(pack(Kind.post, chain_id=CHAIN, sequence=2000 + i, debit_account=1,
                          credit_account=4, aux=s, amount=1) for i, s in enumerate(range(1, 151)))
    assert not apply_both(native, ref, posts, now_s=100)[0].any()
    assert native.canonical() == ref.canonical()
    assert native.open_hold_total() == 200


@SETTINGS
@given(scenarios())
def test_the_journal_brings_a_copy_to_the_state_after_each_batch(scenario):
    """The readers' durable view (ledger/view.py) moves by the kernel's journal alone: laid
    over a copy taken before a batch, in order, its rows and entries give the state after it,
    whatever rolled back (linked groups, joined batches, rejected units) in between."""
    from tsunagi.ledger.view import DurableView, capture_changes

    batches, _, limits = scenario
    native, _ = genesis_pair(**limits)
    view = DurableView(native, 1)
    for height, (data, pre, join, now_s) in enumerate(batches, start=2):
        expired = commit.expire_holds(native, now_s)
        payers = native.holds["payer"][expired]
        room = np.empty(commit.journal_words(len(data) // 128), dtype=np.uint64)
        *_, journal = commit.apply_batch(native, data, pre, now_s, join_next=join,
                                         journal=room)
        rows = (commit.capture_accounts(native, payers), journal.accounts)
        changes = capture_changes(native, rows, np.concatenate([expired, journal.holds]),
                                  journal.policies)
        view.advance(changes, height)
        assert view.canonical() == native.canonical()
