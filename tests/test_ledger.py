"""The Ledger does what a user of a payment ledger expects, through its public API only.

Method: a real chain in a temporary directory with real keys; each test submits signed records
and checks balances, result codes, proofs and what survives a reopen. Every bad input is checked
for its specific code and for leaving the ledger serving and unchanged.
"""

import hashlib
import threading

import numpy as np
import pytest

from tsunagi import hashing
from tsunagi.core import block as blk
from tsunagi.core import records as r
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import EncodingError, NotFoundError, StorageError
from tsunagi.ledger import ledger as ledger_module
from tsunagi.ledger import limits as ledger_limits
from tsunagi.ledger.ledger import Ledger

CHAIN = 42
ISSUER, ALICE, BOB, CAROL = 1, 2, 3, 4


class Chain:
    """A chain with an issuer (account 1) and Alice, Bob, Carol (2, 3, 4) funded at genesis."""

    def __init__(self, path):
        self.keys = {n: PrivateKey.generate() for n in (ISSUER, ALICE, BOB, CAROL)}
        self.path = path
        config = ChainConfig(
            name="test", chain_id=CHAIN, asset_code="TSU", issuers=(self.keys[1].public_key,),
            allocations=tuple((self.keys[n].public_key, 1_000) for n in (ALICE, BOB, CAROL)))
        self.ledger = Ledger.create(path, config, threads=2)
        self.sequence = {n: 0 for n in self.keys}

    def next(self, account: int) -> int:
        self.sequence[account] += 1
        return self.sequence[account]

    def send(self, record: bytes, signer: int | PrivateKey, **kwargs):
        key = self.keys[signer] if isinstance(signer, int) else signer
        return self.ledger.submit_batch(record, key.sign_record(record), **kwargs)

    def pay(self, debit: int, credit: int, amount: int, **kwargs):
        record = r.transfer(CHAIN, self.next(debit), debit, credit, amount)
        return self.send(record, debit, **kwargs)

    def balances(self) -> list[int]:
        return [self.ledger.balance(n) for n in (ALICE, BOB, CAROL)]


@pytest.fixture
def chain(tmp_path):
    c = Chain(tmp_path / "chain")
    yield c
    c.ledger.close()


def code(answer, index=0) -> Result:
    return Result(int(answer.codes[index]))


def test_genesis_funds_accounts_and_verifies(chain):
    assert chain.ledger.height == 1
    assert chain.balances() == [1_000, 1_000, 1_000]
    assert chain.ledger.account(ISSUER).issuer and not chain.ledger.account(ALICE).issuer
    assert chain.ledger.accounts_of(chain.keys[BOB].public_key) == [BOB]
    assert chain.ledger.verify().ok


def test_transfer_moves_money_and_is_provable(chain):
    answer = chain.pay(ALICE, BOB, 250)
    assert code(answer) == Result.ok and answer.height == 1
    assert chain.balances() == [750, 1_250, 1_000]
    info = chain.ledger.transaction(answer.txids[0].tobytes())
    assert info.height == 1 and info.code == Result.ok and info.verify()
    header = chain.ledger.block(1)[:80]
    assert hashing.header_fields(header)[2] == info.merkle_root
    assert [h.height for h in chain.ledger.history(BOB)][:1] == [1]


def test_bad_inputs_get_their_codes_and_change_nothing(chain):
    before = chain.balances()
    cases = {
        Result.bad_signature: (r.transfer(CHAIN, 10, ALICE, BOB, 5), BOB),
        Result.wrong_chain: (r.transfer(CHAIN + 1, 10, ALICE, BOB, 5), ALICE),
        Result.unknown_account: (r.transfer(CHAIN, 10, 99, BOB, 5), ALICE),
        Result.unknown_credit_account: (r.transfer(CHAIN, 11, ALICE, 99, 5), ALICE),
        Result.amount_zero: (r.transfer(CHAIN, 12, ALICE, BOB, 0), ALICE),
        Result.same_account: (r.transfer(CHAIN, 13, ALICE, ALICE, 5), ALICE),
        Result.insufficient_funds: (r.transfer(CHAIN, 14, ALICE, BOB, 10**6), ALICE),
        Result.not_issuer: (r.mint(CHAIN, 15, ALICE, BOB, 5), ALICE),
    }
    for expected, (record, signer) in cases.items():
        assert code(chain.send(record, signer)) == expected, expected.name
    assert chain.balances() == before
    garbage = bytearray(r.transfer(CHAIN, 20, ALICE, BOB, 5))
    garbage[0] = 200  # no such kind
    assert code(chain.send(bytes(garbage), ALICE)) == Result.malformed
    with pytest.raises(EncodingError):
        chain.ledger.submit_batch(b"x" * 100, b"")
    # Authenticated failures used up their sequences (up to 15); a fresh one still works.
    assert code(chain.pay(ALICE, BOB, 1)) == Result.sequence_used
    chain.sequence[ALICE] = 15
    assert code(chain.pay(ALICE, BOB, 1)) == Result.ok  # still serving


def test_retry_answers_already_committed_with_the_original_code(chain):
    record = r.transfer(CHAIN, 5, ALICE, BOB, 100)
    signature = chain.keys[ALICE].sign_record(record)
    first = chain.ledger.submit(record, signature)
    again = chain.ledger.submit(record, signature)
    assert code(first) == Result.ok
    assert code(again) == Result.already_committed and again.originals == {0: Result.ok}
    assert chain.balances() == [900, 1_100, 1_000]
    failing = r.transfer(CHAIN, 6, ALICE, BOB, 10**9)
    signature = chain.keys[ALICE].sign_record(failing)
    assert code(chain.ledger.submit(failing, signature)) == Result.insufficient_funds
    again = chain.ledger.submit(failing, signature)
    assert code(again) == Result.already_committed
    assert again.originals == {0: Result.insufficient_funds}
    # A new record reusing an old sequence is a replay attempt, not a retry.
    reuse = r.transfer(CHAIN, 5, ALICE, CAROL, 1)
    assert code(chain.send(reuse, ALICE)) == Result.sequence_used
    assert chain.balances() == [900, 1_100, 1_000]


def test_issuer_mints_and_burns_and_money_is_conserved(chain):
    assert code(chain.send(r.mint(CHAIN, chain.next(ISSUER), ISSUER, CAROL, 500), ISSUER)) == 0
    assert code(chain.send(r.mint(CHAIN, chain.next(ISSUER), ISSUER, ISSUER, 70), ISSUER)) == 0
    assert code(chain.send(r.burn(CHAIN, chain.next(ISSUER), ISSUER, 30), ISSUER)) == 0
    state = chain.ledger.state
    assert state.supply == state.minted - state.burned == 3_000 + 500 + 70 - 30
    assert state.balance_total() + state.open_hold_total() == state.supply


def test_hold_post_in_part_and_resolve_once(chain):
    seq = chain.next(ALICE)
    hold = r.hold(CHAIN, seq, ALICE, BOB, 300, authority_account=CAROL, expiry_s=2**31)
    assert code(chain.send(hold, ALICE)) == Result.ok
    assert chain.balances() == [700, 1_000, 1_000]
    assert code(chain.send(r.post(CHAIN, 1, BOB, ALICE, seq, 100), BOB)) == \
        Result.not_hold_authority
    assert code(chain.send(r.post(CHAIN, chain.next(CAROL), CAROL, ALICE, seq, 400), CAROL)) \
        == Result.post_exceeds_hold
    assert code(chain.send(r.post(CHAIN, chain.next(CAROL), CAROL, ALICE, seq, 120), CAROL)) \
        == Result.ok
    assert chain.balances() == [880, 1_120, 1_000]  # 180 back to Alice
    assert code(chain.send(r.post(CHAIN, chain.next(CAROL), CAROL, ALICE, seq, 1), CAROL)) == \
        Result.hold_already_posted
    assert code(chain.send(r.void(CHAIN, chain.next(CAROL), CAROL, ALICE, seq), CAROL)) == \
        Result.hold_already_voided - 1  # hold_already_posted: it was posted, not voided
    assert chain.ledger.state.open_hold_total() == 0


def test_void_expiry_and_hashlock(chain):
    voided, expiring, locked = chain.next(ALICE), chain.next(ALICE), chain.next(ALICE)
    preimage = hashlib.sha256(b"open sesame").digest()  # any 32 secret bytes
    lock = hashlib.sha256(preimage).digest()
    records = [
        r.hold(CHAIN, voided, ALICE, BOB, 10, authority_account=CAROL, expiry_s=2**31),
        r.hold(CHAIN, expiring, ALICE, BOB, 20, authority_account=CAROL, expiry_s=2_000_000_000),
        r.hold(CHAIN, locked, ALICE, BOB, 30, authority_account=CAROL, expiry_s=2**31,
               hashlock=lock),
    ]
    for record in records:
        assert code(chain.send(record, ALICE, now_s=1_900_000_000)) == Result.ok
    assert chain.balances()[0] == 940
    assert code(chain.send(r.void(CHAIN, chain.next(CAROL), CAROL, ALICE, voided), CAROL,
                           now_s=1_900_000_000)) == Result.ok
    wrong = r.post(CHAIN, chain.next(CAROL), CAROL, ALICE, locked, 30, preimage=bytes(32))
    assert code(chain.send(wrong, CAROL, now_s=1_900_000_000)) == Result.hashlock_mismatch
    right = r.post(CHAIN, chain.next(CAROL), CAROL, ALICE, locked, 30, preimage=preimage)
    assert code(chain.send(right, CAROL, now_s=1_900_000_000)) == Result.ok
    # Block time passes the second hold's expiry: it returns to Alice by itself.
    assert code(chain.pay(BOB, CAROL, 1, now_s=2_000_000_001)) == Result.ok
    assert chain.balances() == [970, 1_029, 1_001]
    late = r.post(CHAIN, chain.next(CAROL), CAROL, ALICE, expiring, 20)
    assert code(chain.send(late, CAROL, now_s=2_000_000_002)) == Result.hold_expired
    assert chain.ledger.state.open_hold_total() == 0


def test_policy_key_bounds_what_a_second_key_can_do(chain):
    phone = PrivateKey.generate()
    policy = r.set_policy_key(CHAIN, chain.next(ALICE), ALICE, 1, phone.public_key,
                              amount_max=100, allowance=150, expiry_s=2_000_000_000,
                              recipients=(BOB,))
    assert code(chain.send(policy, ALICE, now_s=1_900_000_000)) == Result.ok

    def by_phone(credit, amount, now_s=1_900_000_000):
        record = r.transfer(CHAIN, chain.next(ALICE), ALICE, credit, amount, key_slot=1)
        return code(chain.send(record, phone, now_s=now_s))

    assert by_phone(BOB, 100) == Result.ok
    assert by_phone(CAROL, 10) == Result.policy_recipient
    assert by_phone(BOB, 101) == Result.policy_amount
    assert by_phone(BOB, 60) == Result.policy_allowance
    assert by_phone(BOB, 50) == Result.ok
    assert by_phone(BOB, 1, now_s=2_000_000_001) in (Result.policy_expired,
                                                     Result.policy_allowance)
    empty = r.transfer(CHAIN, chain.next(ALICE), ALICE, BOB, 1, key_slot=2)
    assert code(chain.send(empty, phone)) == Result.key_slot_empty
    assert chain.balances() == [850, 1_150, 1_000]


def test_linked_group_is_all_or_nothing(chain):
    first = r.transfer(CHAIN, chain.next(ALICE), ALICE, BOB, 10, linked=True)
    second = r.transfer(CHAIN, chain.next(ALICE), ALICE, CAROL, 10**6)
    alone = r.transfer(CHAIN, chain.next(BOB), BOB, CAROL, 5)
    signatures = b"".join(chain.keys[n].sign_record(x)
                          for n, x in ((ALICE, first), (ALICE, second), (BOB, alone)))
    answer = chain.ledger.submit_batch(first + second + alone, signatures)
    assert [Result(int(c)) for c in answer.codes] == [
        Result.linked_event_failed, Result.insufficient_funds, Result.ok]
    assert chain.balances() == [1_000, 995, 1_005]


def test_batch_authorized_records_commit_and_prove_alone(chain):
    owner = PrivateKey.generate()
    opens = [r.open_account(CHAIN, owner.public_key, sequence=n) for n in range(3)]
    answer = chain.ledger.submit_batch(b"".join(opens),
                                       b"".join(owner.sign_record(x) for x in opens))
    accounts = [int(a) for a in answer.opened]
    assert sorted(accounts) == [5, 6, 7]
    assert chain.ledger.accounts_of(owner.public_key) == accounts
    funding = r.transfer(CHAIN, chain.next(ALICE), ALICE, accounts[0], 600)
    assert code(chain.send(funding, ALICE)) == Result.ok
    moves = [r.transfer(CHAIN, 1, accounts[0], accounts[1], 100, batch_authorized=True),
             r.transfer(CHAIN, 1, accounts[1], accounts[2], 50, batch_authorized=True),
             r.transfer(CHAIN, 2, accounts[0], BOB, 100, batch_authorized=True)]
    txids = np.frombuffer(b"".join(hashing.sha256d(x) for x in moves), np.uint8).reshape(-1, 32)
    root = hashing.merkle_root(txids)
    batch = blk.BatchAuth(0, 3, owner.public_key, owner.sign(root))
    answer = chain.ledger.submit_batch(b"".join(moves), b"", [batch])
    assert answer.codes.tolist() == [0, 0, 0]
    assert [chain.ledger.balance(a) for a in accounts] == [400, 50, 50]
    stored = blk.decode_block(chain.ledger.block(answer.height))
    assert stored.batches[0].signature == batch.signature
    path = hashing.merkle_proof(txids, 1)
    assert blk.verify_record_in_batch(moves[1], path, 1, stored.batches[0])
    # A record the signer does not own rejects the whole batch.
    stolen = [r.transfer(CHAIN, 3, accounts[0], BOB, 1, batch_authorized=True),
              r.transfer(CHAIN, 1, ALICE, BOB, 1, batch_authorized=True)]
    ids = np.frombuffer(b"".join(hashing.sha256d(x) for x in stolen), np.uint8).reshape(-1, 32)
    answer = chain.ledger.submit_batch(
        b"".join(stolen), b"",
        [blk.BatchAuth(0, 2, owner.public_key, owner.sign(hashing.merkle_root(ids)))])
    assert Result.ok not in answer.codes.tolist()
    assert chain.balances()[0] == 400 and chain.ledger.balance(accounts[0]) == 400


def test_open_account_replay_does_not_open_twice(chain):
    key = PrivateKey.generate()
    record = r.open_account(CHAIN, key.public_key, sequence=77)
    signature = key.sign_record(record)
    first = chain.ledger.submit(record, signature)
    again = chain.ledger.submit(record, signature)
    assert code(first) == Result.ok and int(first.opened[0]) == 5
    assert code(again) == Result.already_committed and int(again.opened[0]) == 0
    assert chain.ledger.accounts_of(key.public_key) == [5]


def test_reopen_keeps_everything_with_and_without_a_snapshot(tmp_path):
    chain = Chain(tmp_path / "c")
    for amount in (10, 20, 30):
        chain.pay(ALICE, BOB, amount)
    balances = chain.balances()
    chain.ledger.close()  # writes a snapshot
    with Ledger.open(tmp_path / "c") as ledger:
        assert [ledger.balance(n) for n in (ALICE, BOB, CAROL)] == balances
        assert ledger.height == 4 and ledger.verify().ok
        record = r.transfer(CHAIN, 100, ALICE, CAROL, 1)
        answer = ledger.submit(record, chain.keys[ALICE].sign_record(record))
        assert code(answer) == Result.ok
    for snapshot in (tmp_path / "c" / "snapshots").iterdir():
        snapshot.unlink()  # replay from genesis alone must give the same state
    with Ledger.open(tmp_path / "c") as ledger:
        assert [ledger.balance(n) for n in (ALICE, BOB, CAROL)] == [
            balances[0] - 1, balances[1], balances[2] + 1]


def test_queries_of_missing_things_say_so(chain):
    assert chain.ledger.transaction(bytes(32)) is None
    assert chain.ledger.block(99) is None and chain.ledger.block(bytes(32)) is None
    with pytest.raises(NotFoundError, match="no account 99"):
        chain.ledger.account(99)


def test_a_second_writer_is_refused(chain):
    with pytest.raises(StorageError, match="chain"):
        Ledger.open(chain.path)


def test_a_slow_index_makes_writers_wait_at_a_bounded_queue_and_loses_nothing(chain,
                                                                                monkeypatch):
    """The indexer's queue is bounded by records: while the index is held up, a writer that
    gets ahead waits in submit instead of queueing every block, and all blocks are indexed, in
    order, once the index moves again."""
    monkeypatch.setattr(ledger_limits, "index_queue_records_max", 3)
    gate, peak = threading.Event(), []
    indexer = chain.ledger._indexer
    real_index_blocks = ledger_module._index_blocks

    def held_up(index, items):
        gate.wait()
        peak.append(indexer.queued_records)
        real_index_blocks(index, items)
    monkeypatch.setattr(ledger_module, "_index_blocks", held_up)
    answers = []
    writer = threading.Thread(target=lambda: answers.extend(
        chain.pay(ALICE, BOB, 1) for _ in range(8)))
    writer.start()
    writer.join(timeout=2)
    assert writer.is_alive() and len(answers) < 8  # held at the full queue
    assert indexer.queued_records <= 3
    gate.set()
    writer.join()
    assert [code(answer) for answer in answers] == [Result.ok] * 8
    assert max(peak) <= 3
    for answer in answers:
        assert chain.ledger.transaction(answer.txids[0].tobytes()).height == answer.height


def test_begun_batches_answer_only_once_durable_and_see_each_other(chain):
    """begin_batch writes a block without waiting for its fsync; the next batch sees its state,
    nothing counts as committed before wait(), and even a batch that stores nothing waits for
    the blocks begun before it."""
    ledger = chain.ledger
    first = ledger.begin_batch(*_signed(chain, r.transfer(CHAIN, chain.next(ALICE), ALICE, BOB,
                                                          900), ALICE))
    # Bob spends what only the first batch gave him.
    second = ledger.begin_batch(*_signed(chain, r.transfer(CHAIN, chain.next(BOB), BOB, CAROL,
                                                           1_800), BOB))
    forged = r.transfer(CHAIN, chain.next(CAROL), CAROL, ALICE, 5)
    third = ledger.begin_batch(forged, chain.keys[ALICE].sign_record(forged))
    assert (first.height, second.height, third.height) == (1, 2, None)
    assert ledger.height == 1 and ledger.block(1) is None  # written, not durable yet
    assert code(third.wait()) == Result.bad_signature
    assert ledger.height == 3  # the blocks begun before it are durable now
    assert code(second.wait()) == Result.ok and code(first.wait()) == Result.ok
    assert second.wait() is second.wait()  # waiting again answers the same
    assert chain.balances() == [100, 100, 2_800]
    info = ledger.transaction(second.wait().txids[0].tobytes())
    assert info.height == 2 and info.verify()
    assert ledger.tip == (3, ledger.tip_hash)
    assert ledger.verify().ok


def test_threads_submitting_at_once_share_fsyncs_and_lose_nothing(chain):
    ledger, rounds = chain.ledger, 12
    batches = {}
    for account in (ALICE, BOB, CAROL):
        credit = ALICE if account == CAROL else account + 1
        batches[account] = [_signed(chain, r.transfer(CHAIN, chain.next(account), account,
                                                      credit, 1), account)
                            for _ in range(rounds)]
    answers = {account: [] for account in batches}

    def work(account):
        for records, signature in batches[account]:
            answers[account].append(ledger.submit_batch(records, signature))

    threads = [threading.Thread(target=work, args=(a,)) for a in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    heights = sorted(a.height for got in answers.values() for a in got)
    assert heights == list(range(1, 3 * rounds + 1))
    assert all(code(a) == Result.ok for got in answers.values() for a in got)
    assert chain.balances() == [1_000, 1_000, 1_000]
    ledger.close()
    with Ledger.open(chain.path) as reopened:
        assert reopened.height == 3 * rounds + 1 and reopened.verify().ok


def _signed(chain, record: bytes, signer: int) -> tuple[bytes, bytes]:
    return record, chain.keys[signer].sign_record(record)


def test_blocks_begun_ahead_hold_exactly_what_was_stored(chain, monkeypatch):
    """A batch's records go to the disk while the engine still checks them, in the block it
    makes if every record is stored. When some are not (bad signatures here), that block is
    dropped for a smaller one; begun two at a time or one by one, every block must hold
    exactly the stored records, and the chain must verify before and after a reopen."""
    monkeypatch.setattr(ledger_limits, "log_direct_bytes_min", 4096)  # 32 records begin ahead
    ledger = chain.ledger

    def batch(count: int, forged: set[int]) -> tuple[bytes, bytes, list[bytes]]:
        records, signatures = [], []
        for n in range(count):
            debit = (ALICE, BOB, CAROL)[n % 3]
            credit = (BOB, CAROL, ALICE)[n % 3]
            record = r.transfer(CHAIN, chain.next(debit), debit, credit, 1)
            records.append(record)
            signer = chain.keys[ALICE if n in forged and debit != ALICE else
                                BOB if n in forged else debit]
            signatures.append(signer.sign_record(record))
        stored = [x for n, x in enumerate(records) if n not in forged]
        return b"".join(records), b"".join(signatures), stored

    plans = [(300, set()), (300, {5, 150, 299}), (90, set()), (64, {0}), (200, set())]
    made = [batch(count, forged) for count, forged in plans]
    pending = []
    for index, (records, signatures, stored) in enumerate(made):
        pending.append((ledger.begin_batch(records, signatures), stored))
        if index % 2:  # two in flight, then wait for both
            for begun, _ in pending:
                begun.wait()
            pending.clear()
    for begun, _ in pending:
        begun.wait()
    for height, (_, _, stored) in enumerate(made, start=1):
        block = blk.decode_block(ledger.block(height))
        assert block.records.tobytes() == b"".join(stored)
        assert len(block.codes) == len(stored) and not block.codes.any()
    assert ledger.verify().ok
    ledger.close()
    with Ledger.open(chain.path) as reopened:
        assert reopened.height == len(made) + 1 and reopened.verify().ok
        assert sum(reopened.balance(n) for n in (ALICE, BOB, CAROL)) == 3_000


def test_a_ledger_without_direct_writes_commits_large_batches_all_the_same(tmp_path,
                                                                          monkeypatch):
    """Where O_DIRECT is missing (macOS; the kernel's refusal is tested with the log), the log
    writes through the page cache and nothing is begun ahead: large batches commit, read back
    and verify all the same."""
    import os

    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    monkeypatch.setattr(ledger_limits, "log_direct_bytes_min", 4096)
    chain = Chain(tmp_path / "chain")
    try:
        assert not chain.ledger._log.writes_direct
        records, signatures = [], []
        for n in range(200):
            debit, credit = (ALICE, BOB) if n % 2 else (BOB, ALICE)
            record = r.transfer(CHAIN, chain.next(debit), debit, credit, 1)
            records.append(record)
            signatures.append(chain.keys[debit].sign_record(record))
        answer = chain.ledger.submit_batch(b"".join(records), b"".join(signatures))
        assert not answer.codes.any()
        assert blk.decode_block(chain.ledger.block(answer.height)).records.tobytes() == \
            b"".join(records)
        assert chain.ledger.verify().ok
    finally:
        chain.ledger.close()
    with Ledger.open(chain.path) as reopened:
        assert reopened.verify().ok and reopened.balance(ALICE) == 1_000
