"""The engine gives each record the result code docs/FORMAT.md promises, end to end.

Method: a small chain with real BIP340 keys; each test submits batches through
``Engine.process`` (signed records, batch signatures, policy keys, holds) and checks codes,
balances, what is stored for the block, and that a fresh engine replaying the stored records,
or a state rebuilt from its arrays, ends in the same place.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tsunagi import hashing
from tsunagi._native import commit
from tsunagi.core import records as rec
from tsunagi.core.block import BatchAuth, sign_batch
from tsunagi.core.codes import Result
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError, EncodingError
from tsunagi.ledger.engine import Engine
from tsunagi.ledger.state import State

CHAIN = 11
T0 = 1_000
ISSUER, ALICE, BOB, CAROL = 1, 2, 3, 4


class Chain:
    """Accounts 1..4 (issuer, alice, bob, carol); alice holds 1,000 and bob 500."""

    def __init__(self, **limits) -> None:
        self.keys = {n: PrivateKey.generate() for n in (ISSUER, ALICE, BOB, CAROL)}
        self.engine = Engine(State(**limits), CHAIN)
        self.genesis = b"".join(
            [rec.open_account(CHAIN, self.keys[n].public_key, sequence=n) for n in self.keys]
            + [rec.mint(CHAIN, 1, 0, ALICE, 1000), rec.mint(CHAIN, 2, 0, BOB, 500)])
        # Four opens and two mints would make two issuers by default; this chain has one.
        self.engine.apply_genesis(self.genesis, issuer_count=1)
        self.sequence = 100
        self.blocks: list[tuple] = []

    @property
    def state(self) -> State:
        return self.engine.state

    def seq(self) -> int:
        self.sequence += 1
        return self.sequence

    def submit(self, *records: bytes, signers=None, now_s: int = T0, batches=(),
               pre_codes=None):
        """Signs each record without the batch flag with its debit account's key (or the
        given signer) and processes them as one batch; keeps what was stored."""
        signatures = b""
        for i, record in enumerate(records):
            if record[1] & rec.Flags.batch_authorized:
                continue
            signer = signers[i] if signers and signers[i] is not None else \
                self.keys[rec.unpack(record)["debit_account"]]
            signatures += signer.sign_record(record)
        outcome = self.engine.process(b"".join(records), signatures, batches, now_s, 2,
                                      pre_codes=pre_codes)
        self.blocks.append((outcome.stored_records.copy(), outcome.stored_codes.copy(), now_s,
                            list(outcome.stored_batches)))
        assert_conserved(self.state)
        return outcome

    def transfer(self, debit, credit, amount, **kw) -> bytes:
        return rec.transfer(CHAIN, self.seq(), debit, credit, amount, **kw)


def assert_conserved(state: State) -> None:
    assert state.supply == state.balance_total() + state.open_hold_total()


def codes(outcome) -> list[Result]:
    return [Result(int(c)) for c in outcome.codes]


@pytest.fixture
def chain() -> Chain:
    return Chain()


def test_genesis_opens_accounts_mints_and_marks_issuers(chain):
    state = chain.state
    assert state.account_count == 4
    assert [state.balance(n) for n in (1, 2, 3, 4)] == [0, 1000, 500, 0]
    assert state.is_issuer(ISSUER) and not state.is_issuer(ALICE)
    assert state.minted == 1500 and state.supply == 1500
    assert state.owner_key(BOB) == chain.keys[BOB].public_key
    with pytest.raises(ConfigError):  # genesis applies to an empty state only
        chain.engine.apply_genesis(chain.genesis)


def test_genesis_default_issuers_follow_the_format():
    keys = [PrivateKey.generate().public_key for _ in range(3)]
    records = b"".join([rec.open_account(CHAIN, k, sequence=i + 1) for i, k in enumerate(keys)]
                       + [rec.mint(CHAIN, 1, 0, 2, 5), rec.mint(CHAIN, 2, 0, 3, 7)])
    engine = Engine(State(), CHAIN)
    outcome = engine.apply_genesis(records)
    assert outcome.opened.tolist() == [1, 2, 3, 0, 0]
    assert [engine.state.is_issuer(n) for n in (1, 2, 3)] == [True, False, False]


def test_genesis_refuses_a_bad_key_or_record():
    bad_key = b"\xff" * 32  # above the field prime: no curve point has this x
    with pytest.raises(ConfigError, match="bad_account_key"):
        Engine(State(), CHAIN).apply_genesis(rec.open_account(CHAIN, bad_key))
    with pytest.raises(ConfigError, match="unknown_credit_account"):
        Engine(State(), CHAIN).apply_genesis(rec.mint(CHAIN, 1, 0, 9, 5), issuer_count=0)


def test_signed_transfers_get_their_codes(chain):
    ok = chain.transfer(ALICE, BOB, 300)
    poor = chain.transfer(BOB, ALICE, 10_000)
    forged = chain.transfer(ALICE, CAROL, 1)
    other_chain = rec.transfer(CHAIN + 1, chain.seq(), ALICE, BOB, 1)
    nobody = chain.transfer(9, BOB, 1)
    malformed = bytearray(chain.transfer(ALICE, BOB, 1))
    malformed[80] = 1  # aux2 must be 0 on a transfer
    outcome = chain.submit(ok, poor, forged, other_chain, nobody, bytes(malformed),
                           signers=[None, None, chain.keys[BOB], None, chain.keys[BOB], None])
    assert codes(outcome) == [Result.ok, Result.insufficient_funds, Result.bad_signature,
                              Result.wrong_chain, Result.unknown_account, Result.malformed]
    assert outcome.stored.tolist() == [True, True, False, False, False, False]
    assert chain.state.balance(ALICE) == 700 and chain.state.balance(BOB) == 800
    assert chain.state.sequence(BOB) == rec.unpack(poor)["sequence"]  # a failure uses it
    assert outcome.stored_records.tobytes() == ok + poor
    assert outcome.stored_codes.tolist() == [Result.ok, Result.insufficient_funds]
    assert len(outcome.stored_signatures) == 2
    again = chain.submit(ok)
    assert codes(again) == [Result.sequence_used] and not again.stored.any()


def test_stored_signatures_are_those_of_stored_records(chain):
    records = [chain.transfer(ALICE, BOB, 1), chain.transfer(ALICE, BOB, 1),
               chain.transfer(ALICE, BOB, 1)]
    signatures = [chain.keys[ALICE].sign_record(r) for r in records]
    signatures[1] = chain.keys[BOB].sign_record(records[1])
    outcome = chain.engine.process(b"".join(records), b"".join(signatures), (), T0, 1)
    assert outcome.stored.tolist() == [True, False, True]
    assert outcome.stored_signatures.tobytes() == signatures[0] + signatures[2]
    with pytest.raises(EncodingError, match="signatures must be"):
        chain.engine.process(b"".join(records), signatures[0], (), T0, 1)


def test_open_account_returns_numbers_and_refuses_bad_keys(chain):
    dave, erin = PrivateKey.generate(), PrivateKey.generate()
    opens = [rec.open_account(CHAIN, dave.public_key), rec.open_account(CHAIN, b"\xff" * 32),
             rec.open_account(CHAIN, erin.public_key)]
    signatures = [dave.sign_record(opens[0]), bytes(64), erin.sign_record(opens[2])]
    outcome = chain.engine.process(b"".join(opens), b"".join(signatures), (), T0, 1)
    assert codes(outcome) == [Result.ok, Result.bad_account_key, Result.ok]
    assert outcome.opened.tolist() == [5, 0, 6]
    assert chain.state.owner_key(6) == erin.public_key
    chain.keys[5] = dave
    outcome = chain.submit(chain.transfer(ALICE, 5, 10), chain.transfer(5, ALICE, 4))
    assert codes(outcome) == [Result.ok, Result.ok] and chain.state.balance(5) == 6


def _batch(chain, signer, records, first=0):
    data = b"".join(records)
    return BatchAuth(first, len(records), chain.keys[signer].public_key,
                     sign_batch(chain.keys[signer], data))


def test_a_batch_signature_authorizes_every_record_of_the_batch(chain):
    records = [chain.transfer(ALICE, BOB, 10, batch_authorized=True) for _ in range(3)]
    records.append(chain.transfer(ALICE, BOB, 5000, batch_authorized=True))
    signed = chain.transfer(BOB, 9, 1)  # unknown credit: stored, fails
    forged = chain.transfer(ALICE, BOB, 1)  # signed by bob: not stored
    batch = _batch(chain, ALICE, records, first=2)
    outcome = chain.submit(forged, signed, *records, signers=[chain.keys[BOB], None],
                           batches=[batch])
    assert codes(outcome) == [Result.bad_signature, Result.unknown_credit_account,
                              Result.ok, Result.ok, Result.ok, Result.insufficient_funds]
    assert chain.state.balance(ALICE) == 970
    # The batch moves to position 1 of the block, after the one stored signed record.
    assert [(b.first, b.count) for b in outcome.stored_batches] == [(1, 4)]
    assert outcome.stored_batches[0][2:] == batch[2:]


def test_a_batch_fails_whole_on_a_bad_signature_or_a_foreign_signer(chain):
    records = [chain.transfer(ALICE, BOB, 10, batch_authorized=True) for _ in range(2)]
    good = _batch(chain, ALICE, records)
    broken = good._replace(signature=bytes(64))
    outcome = chain.submit(*records, batches=[broken])
    assert codes(outcome) == [Result.batch_signature_invalid] * 2
    mixed = records + [chain.transfer(BOB, ALICE, 1, batch_authorized=True)]
    outcome = chain.submit(*mixed, batches=[_batch(chain, ALICE, mixed)])
    assert codes(outcome) == [Result.batch_rejected] * 2 + [Result.batch_signer_not_owner]
    assert not outcome.stored.any() and chain.state.balance(ALICE) == 1000
    assert not outcome.stored_batches


def test_batch_roots_read_off_the_txid_tree_or_hashed_alone_check_the_same(chain):
    """Batches of 2**k records at multiples of 2**k take their root from the whole batch's
    Merkle levels; others hash their own. Either way a root signed over other records fails."""
    records = [chain.transfer(ALICE, BOB, 1, batch_authorized=True) for _ in range(15)]
    spans = [(0, 4), (4, 4), (8, 3), (11, 1), (12, 2), (14, 1)]  # (8, 3): not a subtree
    batches = [_batch(chain, ALICE, records[first:first + count], first)
               for first, count in spans]
    outcome = chain.submit(*records, batches=batches)
    assert codes(outcome) == [Result.ok] * 15
    assert outcome.stored_txid_levels[-1].tobytes() == hashing.merkle_root(outcome.txids)
    records = [chain.transfer(ALICE, BOB, 1, batch_authorized=True) for _ in range(7)]
    swapped = [records[1], records[0]] + records[2:4]  # same records, other order: other root
    batches = [_batch(chain, ALICE, swapped, 0)._replace(count=4),
               _batch(chain, ALICE, records[4:7], 4)]
    outcome = chain.submit(*records, batches=batches)
    assert codes(outcome) == [Result.batch_signature_invalid] * 4 + [Result.ok] * 3
    assert outcome.stored_txid_levels is None  # the block holds fewer records than were sent


def test_batch_coverage_and_replayed_batches(chain):
    flagged = chain.transfer(ALICE, BOB, 1, batch_authorized=True)
    outcome = chain.submit(flagged)  # no batch covers it
    assert codes(outcome) == [Result.malformed]
    inside = [chain.transfer(ALICE, BOB, 1, batch_authorized=True), chain.transfer(ALICE, BOB, 1)]
    with_own = chain.engine.process(b"".join(inside), chain.keys[ALICE].sign_record(inside[1]),
                                    [_batch(chain, ALICE, inside)], T0, 1)
    assert codes(with_own) == [Result.batch_rejected, Result.malformed]
    records = [chain.transfer(ALICE, BOB, 7, batch_authorized=True) for _ in range(3)]
    batch = _batch(chain, ALICE, records)
    assert codes(chain.submit(*records, batches=[batch])) == [Result.ok] * 3
    again = chain.submit(*records, batches=[batch])  # a replay: stored never, changes nothing
    assert codes(again) == [Result.sequence_used] * 3 and not again.stored.any()
    fresh = chain.transfer(ALICE, BOB, 7, batch_authorized=True)
    mixed = records[:1] + [fresh]  # one replayed record rejects the fresh one with it
    outcome = chain.submit(*mixed, batches=[_batch(chain, ALICE, mixed)])
    assert codes(outcome) == [Result.sequence_used, Result.batch_rejected]
    assert chain.state.balance(BOB) == 521
    with pytest.raises(EncodingError, match="overlap"):
        chain.engine.process(b"".join(records), b"", [batch, batch], T0, 1)


def test_policy_keys_enforce_their_limits(chain):
    card = PrivateKey.generate()
    alice_before = chain.state.balance(ALICE)
    setup = rec.set_policy_key(CHAIN, chain.seq(), ALICE, 1, card.public_key, amount_max=100,
                               allowance=250, expiry_s=T0 + 50, recipients=(BOB, CAROL))
    assert codes(chain.submit(setup)) == [Result.ok]
    by_card = [card] * 8
    records = [chain.transfer(ALICE, BOB, 100, key_slot=1),  # at amount_max: fine
               chain.transfer(ALICE, BOB, 101, key_slot=1),
               chain.transfer(ALICE, ISSUER, 5, key_slot=1),
               chain.transfer(ALICE, CAROL, 100, key_slot=1),
               chain.transfer(ALICE, CAROL, 51, key_slot=1),  # 50 left of the allowance
               chain.transfer(ALICE, CAROL, 50, key_slot=1),
               rec.hold(CHAIN, chain.seq(), ALICE, BOB, 5, authority_account=BOB,
                        expiry_s=T0 + 10),
               chain.transfer(ALICE, BOB, 1)]  # slot 0 signed by the card: forged
    records[6] = bytearray(records[6])
    records[6][2] = 1  # key_slot 1 on a hold
    records[6] = bytes(records[6])
    outcome = chain.submit(*records, signers=by_card)
    assert codes(outcome) == [Result.ok, Result.policy_amount, Result.policy_recipient,
                              Result.ok, Result.policy_allowance, Result.ok, Result.policy_kind,
                              Result.bad_signature]
    assert chain.state.policy(ALICE, 1)["allowance_left"] == 0
    late = chain.submit(chain.transfer(ALICE, BOB, 1, key_slot=1), signers=[card],
                        now_s=T0 + 50)  # now == expiry_s: expired
    assert codes(late) == [Result.policy_expired]
    assert chain.state.balance(ALICE) == alice_before - 250


def test_a_policy_key_reset_in_the_same_batch_cannot_sign_after_it(chain):
    card, new_card = PrivateKey.generate(), PrivateKey.generate()
    chain.submit(rec.set_policy_key(CHAIN, chain.seq(), ALICE, 2, card.public_key))
    before = chain.transfer(ALICE, BOB, 3, key_slot=2)
    reset = rec.set_policy_key(CHAIN, chain.seq(), ALICE, 2, new_card.public_key)
    after = chain.transfer(ALICE, BOB, 4, key_slot=2)
    outcome = chain.submit(before, reset, after, signers=[card, None, card])
    assert codes(outcome) == [Result.ok, Result.ok, Result.policy_key_replaced]
    revoke = rec.set_policy_key(CHAIN, chain.seq(), ALICE, 2, bytes(32))
    assert codes(chain.submit(revoke)) == [Result.ok]
    outcome = chain.submit(chain.transfer(ALICE, BOB, 4, key_slot=2), signers=[new_card])
    assert codes(outcome) == [Result.key_slot_empty] and chain.state.policy(ALICE, 2) is None


def test_holds_post_void_and_expire_exactly_once(chain):
    preimage = b"open sesame".ljust(32, b"\0")
    lock = hashlib.sha256(preimage).digest()
    h1, h2, h3 = chain.seq(), chain.seq(), chain.seq()
    holds = [rec.hold(CHAIN, h1, ALICE, BOB, 100, authority_account=CAROL, expiry_s=T0 + 60,
                      hashlock=lock),
             rec.hold(CHAIN, h2, ALICE, BOB, 50, authority_account=CAROL, expiry_s=T0 + 30),
             rec.hold(CHAIN, h3, ALICE, BOB, 20, authority_account=CAROL, expiry_s=T0 + 10)]
    assert codes(chain.submit(*holds)) == [Result.ok] * 3
    assert chain.state.balance(ALICE) == 830 and chain.state.open_hold_total() == 170

    def post(seq, amount, image=b""):
        return rec.post(CHAIN, chain.seq(), CAROL, ALICE, seq, amount, preimage=image)
    wrong = b"wrong".ljust(32, b"\0")
    outcome = chain.submit(post(h1, 60, wrong), post(h1, 101, preimage), post(h1, 60, preimage),
                           post(h1, 1, preimage), rec.void(CHAIN, chain.seq(), BOB, ALICE, h2),
                           rec.void(CHAIN, chain.seq(), CAROL, ALICE, h2),
                           rec.void(CHAIN, chain.seq(), CAROL, ALICE, h2),
                           post(999, 1), now_s=T0 + 5)
    assert codes(outcome) == [Result.hashlock_mismatch, Result.post_exceeds_hold, Result.ok,
                              Result.hold_already_posted, Result.not_hold_authority, Result.ok,
                              Result.hold_already_voided, Result.hold_not_found]
    assert chain.state.balance(BOB) == 560 and chain.state.balance(ALICE) == 920
    expired = chain.submit(post(h3, 20), now_s=T0 + 10)  # the clock reaches its expiry
    assert codes(expired) == [Result.hold_expired]
    assert [tuple(int(v) for v in row) for row in expired.expired] == [(ALICE, h3, BOB, 20)]
    assert chain.state.balance(ALICE) == 940 and chain.state.open_hold_total() == 0
    statuses = [h["status"] for h in chain.state.holds_of(ALICE)]
    assert statuses == ["posted", "voided", "expired"]


def test_hold_creation_checks(chain):
    def hold(amount, authority=CAROL, expiry_s=T0 + 1, payee=BOB):
        return rec.hold(CHAIN, chain.seq(), ALICE, payee, amount, authority_account=authority,
                        expiry_s=expiry_s)
    outcome = chain.submit(hold(1, expiry_s=T0), hold(1, authority=42), hold(0), hold(2000),
                           hold(1, payee=ALICE), hold(1, payee=77))
    assert codes(outcome) == [Result.hold_expiry_past, Result.unknown_authority,
                              Result.amount_zero, Result.insufficient_funds,
                              Result.same_account, Result.unknown_credit_account]


def test_the_kernel_refuses_a_post_once_the_clock_passed_expiry_even_unswept(chain):
    seq = chain.seq()
    chain.submit(rec.hold(CHAIN, seq, ALICE, BOB, 5, authority_account=CAROL, expiry_s=T0 + 3))
    post = rec.post(CHAIN, chain.seq(), CAROL, ALICE, seq, 5)
    codes_, _, stored = commit.apply_batch(chain.state, post, None, T0 + 3)
    assert codes_.tolist() == [Result.hold_expired] and stored.tolist() == [True]
    assert chain.state.balance(BOB) == 500 and chain.state.open_hold_total() == 5


def test_mint_and_burn_need_an_issuer_and_keep_the_supply_a_u64(chain):
    max_u64 = 2**64 - 1
    outcome = chain.submit(rec.mint(CHAIN, chain.seq(), ISSUER, CAROL, max_u64 - 1500),
                           rec.mint(CHAIN, chain.seq(), ISSUER, CAROL, 1),
                           rec.mint(CHAIN, chain.seq(), ALICE, CAROL, 1),
                           rec.burn(CHAIN, chain.seq(), ISSUER, 1),
                           rec.mint(CHAIN, chain.seq(), ISSUER, ISSUER, 0))
    assert codes(outcome) == [Result.ok, Result.amount_overflow, Result.not_issuer,
                              Result.insufficient_funds, Result.amount_zero]
    assert chain.state.supply == max_u64
    outcome = chain.submit(rec.mint(CHAIN, chain.seq(), ISSUER, ISSUER, 1),
                           chain.transfer(CAROL, ISSUER, 10),
                           rec.burn(CHAIN, chain.seq(), ISSUER, 10))
    assert codes(outcome) == [Result.amount_overflow, Result.ok, Result.ok]
    assert chain.state.burned == 10 and chain.state.supply == max_u64 - 10


def test_linked_records_succeed_or_fail_together(chain):
    pay = chain.transfer(ALICE, BOB, 600, linked=True)
    fee = chain.transfer(ALICE, CAROL, 600)  # together more than alice has
    outcome = chain.submit(pay, fee)
    assert codes(outcome) == [Result.linked_event_failed, Result.insufficient_funds]
    assert outcome.stored.all() and chain.state.balance(ALICE) == 1000
    open_tail = chain.submit(chain.transfer(ALICE, BOB, 1, linked=True))
    assert codes(open_tail) == [Result.linked_group_open] and not open_tail.stored.any()
    forged = chain.submit(chain.transfer(ALICE, BOB, 1, linked=True),
                          chain.transfer(ALICE, BOB, 1), signers=[None, chain.keys[CAROL]])
    assert codes(forged) == [Result.linked_event_failed, Result.bad_signature]
    assert not forged.stored.any()


def test_pre_codes_from_the_ledger_stand(chain):
    records = [chain.transfer(ALICE, BOB, 1), chain.transfer(ALICE, BOB, 1)]
    pre = np.array([Result.already_committed, 0], dtype=np.uint8)
    outcome = chain.submit(*records, pre_codes=pre)
    assert codes(outcome) == [Result.already_committed, Result.ok]
    assert outcome.stored.tolist() == [False, True]


def test_limits_give_accounts_full_and_holds_full():
    chain = Chain(accounts_max=5, holds_max=1)
    keys = [PrivateKey.generate() for _ in range(2)]
    opens = [rec.open_account(CHAIN, k.public_key) for k in keys]
    outcome = chain.engine.process(b"".join(opens),
                                   b"".join(k.sign_record(o) for k, o in zip(keys, opens)),
                                   (), T0, 1)
    assert codes(outcome) == [Result.ok, Result.accounts_full]
    holds = [rec.hold(CHAIN, chain.seq(), ALICE, BOB, 1, authority_account=BOB,
                      expiry_s=T0 + 9) for _ in range(2)]
    assert codes(chain.submit(*holds)) == [Result.ok, Result.holds_full]


def test_replay_of_the_stored_blocks_ends_in_the_same_state(chain):
    test_holds_post_void_and_expire_exactly_once(chain)
    test_policy_keys_enforce_their_limits(chain)
    fresh = Engine(State(), CHAIN)
    fresh.apply_genesis(chain.genesis, issuer_count=1)
    for records, stored_codes, now_s, batches in chain.blocks:
        assert fresh.replay(records, stored_codes, now_s, batches)
    assert fresh.state.canonical() == chain.state.canonical()
    records, stored_codes, now_s, _ = chain.blocks[-2]
    tampered = stored_codes.copy()
    tampered[0] = Result.ok if tampered[0] else Result.insufficient_funds
    again = Engine(State(), CHAIN)
    again.apply_genesis(chain.genesis, issuer_count=1)
    for block in chain.blocks[:-2]:
        assert again.replay(block[0], block[1], block[2])
    result = again.replay(records, tampered, now_s)
    assert not result and result.first_mismatch == 0


def test_state_arrays_round_trip_and_keep_working(chain):
    test_holds_post_void_and_expire_exactly_once(chain)
    seq = chain.seq()
    chain.submit(rec.hold(CHAIN, seq, BOB, CAROL, 40, authority_account=ALICE,
                          expiry_s=T0 + 500),
                 rec.set_policy_key(CHAIN, chain.seq(), BOB, 3, b"\x07" * 32, amount_max=9))
    arrays, meta = chain.state.to_arrays()
    copy = State.from_arrays(arrays, meta)
    assert copy.canonical() == chain.state.canonical()
    later = [rec.post(CHAIN, chain.seq(), ALICE, BOB, seq, 15), chain.transfer(BOB, ALICE, 1)]
    outcomes = []
    for state in (chain.state, copy):
        engine = Engine(state, CHAIN)
        signatures = b"".join(chain.keys[rec.unpack(r)["debit_account"]].sign_record(r)
                              for r in later)
        outcomes.append(engine.process(b"".join(later), signatures, (), T0 + 100, 1))
        engine.process(b"", b"", (), T0 + 500, 1)  # sweeps nothing left: the hold is posted
    assert [codes(o) for o in outcomes] == [[Result.ok, Result.ok]] * 2
    assert copy.canonical() == chain.state.canonical()


def test_tables_grow_past_their_first_capacity(chain):
    owner = PrivateKey.generate()
    opens = [rec.open_account(CHAIN, owner.public_key, user_data=i) for i in range(1500)]
    opened = commit.apply_batch(chain.state, b"".join(opens), None, T0)[1]
    assert opened.tolist() == list(range(5, 1505))
    sequences = [chain.seq() for _ in range(300)]
    holds = b"".join(rec.hold(CHAIN, s, ALICE, 1000 + i, 1, authority_account=BOB,
                              expiry_s=T0 + 100) for i, s in enumerate(sequences))
    assert not commit.apply_batch(chain.state, holds, None, T0)[0].any()
    voids = b"".join(rec.void(CHAIN, chain.seq(), BOB, ALICE, s) for s in sequences)
    assert not commit.apply_batch(chain.state, voids, None, T0)[0].any()
    assert chain.state.balance(ALICE) == 1000 and chain.state.hold_count == 300
