"""A call record's arguments ride in its block's payload section, bound to the record.

Method: a real chain in a temporary directory. Calls are committed with their payloads and read
back from the stored block; the block is checked alone, replayed on reopen, verified and
connected on a second ledger. Then each way a payload can fail to match its record is tried:
through the ledger (the call is refused with payload_missing and nothing is stored) and as a
block built by hand (check_block names payload_mismatch or the entry rule broken).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi import limits
from tsunagi.core import block as blk
from tsunagi.core import entries
from tsunagi.core import records as r
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import EncodingError
from tsunagi.ledger.ledger import Ledger

CHAIN = 7
ALICE, BOB = 1, 2
CONTRACT = 1


@pytest.fixture
def chain(tmp_path):
    keys = {ALICE: PrivateKey.generate(), BOB: PrivateKey.generate()}
    config = ChainConfig(name="calls", chain_id=CHAIN, asset_code="TSU",
                         allocations=tuple((keys[n].public_key, 100) for n in (ALICE, BOB)))
    ledger = Ledger.create(tmp_path / "a", config, threads=1)
    yield ledger, keys, config
    ledger.close()


def signed_calls(keys, payloads, first_sequence=1, caller=ALICE):
    records = [r.call(CHAIN, first_sequence + i, caller, CONTRACT, payload)
               for i, payload in enumerate(payloads)]
    signatures = b"".join(keys[caller].sign_record(record) for record in records)
    return b"".join(records), signatures


def test_calls_keep_their_payloads_in_the_block_through_reopen_verify_and_connect(
        chain, tmp_path):
    ledger, keys, config = chain
    payloads = [b"register:alice", bytes(range(256)) * 40, b""]  # 10 kB: past any record
    records, signatures = signed_calls(keys, payloads)
    transfer = r.transfer(CHAIN, 1, BOB, ALICE, 5)
    answer = ledger.submit_batch(records + transfer,
                                 signatures + keys[BOB].sign_record(transfer),
                                 payloads=payloads)
    # This chain names no contracts: its calls are stored, and fail as calls of none.
    assert list(answer.codes) == [Result.call_failed] * 3 + [Result.ok]
    assert ledger.balance(ALICE) == 105  # the transfer beside the calls applied
    stored = ledger.block(answer.height)
    block = blk.decode_block(stored)
    assert blk.check_block(block) is blk.BlockResult.ok
    assert blk.block_payloads(block) == dict(enumerate(payloads))
    ledger.close()

    reopened = Ledger.open(tmp_path / "a", threads=1)
    try:
        assert reopened.verify().ok
        assert blk.block_payloads(blk.decode_block(reopened.block(answer.height))) == \
            dict(enumerate(payloads))
        # A second node connects the block made here: the payloads check out there too.
        other = Ledger.create(tmp_path / "b", config, threads=1)
        try:
            assert other.connect_block(stored) is blk.BlockResult.ok
            assert other.balance(ALICE) == 105
        finally:
            other.close()
    finally:
        reopened.close()


def test_a_call_whose_payload_differs_is_refused_and_stores_nothing(chain):
    ledger, keys, _ = chain
    records, signatures = signed_calls(keys, [b"the signed arguments", b"fine"])
    height = ledger.height
    answer = ledger.submit_batch(records, signatures,
                                 payloads=[b"other arguments", b"fine"])
    assert list(answer.codes) == [Result.payload_missing, Result.call_failed]
    block = blk.decode_block(ledger.block(answer.height))
    assert ledger.height == height + 1 and len(block) == 1
    assert blk.block_payloads(block) == {0: b"fine"}
    # Same digest, cut short: the length field catches it before any hashing matters.
    records, signatures = signed_calls(keys, [b"abc"], first_sequence=3)
    answer = ledger.submit_batch(records, signatures, payloads=[b"ab"])
    assert list(answer.codes) == [Result.payload_missing]
    assert ledger.height == height + 1  # nothing stored, no block
    # No payloads at all (the node's plain submit carries none): the call alone is refused.
    transfer = r.transfer(CHAIN, 1, BOB, ALICE, 5)
    answer = ledger.submit_batch(records + transfer, signatures + keys[BOB].sign_record(transfer))
    assert list(answer.codes) == [Result.payload_missing, Result.ok]
    assert ledger.balance(ALICE) == 105
    with pytest.raises(EncodingError, match="2 call records need as many payloads"):
        ledger.submit_batch(*signed_calls(keys, [b"a", b"b"], first_sequence=5), payloads=[b"a"])


def _block(records, codes, signatures=b"", extension=b""):
    data = blk.encode_block(prev_hash=b"\1" * 32, time=1, bits=0x207FFFFF, records=records,
                            codes=codes, signatures=signatures, extension=extension)
    blk.mine_header(data, threads=1)
    return blk.decode_block(data)


def test_check_block_refuses_each_way_a_payload_can_fail_its_record():
    key = PrivateKey.generate()
    payload = b"arguments"
    call = r.call(CHAIN, 1, ALICE, CONTRACT, payload)
    transfer = r.transfer(CHAIN, 1, BOB, ALICE, 5)
    both = call + transfer
    sigs = key.sign_record(call) + key.sign_record(transfer)
    codes = bytes(2)

    def entries_of(*items):
        return entries.encode_entries(list(items))

    ok = _block(both, codes, sigs, entries_of(entries.Payload(0, payload)))
    assert blk.check_block(ok, batch_signatures=False) is blk.BlockResult.ok
    mismatch = blk.BlockResult.payload_mismatch
    cases = {
        "no payload at all": b"",
        "another payload": entries_of(entries.Payload(0, b"argumentz")),
        "the payload of the transfer": entries_of(entries.Payload(1, payload)),
        "a second payload": entries_of(entries.Payload(0, payload), entries.Payload(1, b"x")),
    }
    for name, extension in cases.items():
        assert blk.check_block(_block(both, codes, sigs, extension),
                               batch_signatures=False) is mismatch, name
    # Consortium entries have no place in a proof-of-work (version 1) block.
    update = entries.ValidatorUpdate(bytes(32), 1, 10, ())
    assert blk.check_block(_block(both, codes, sigs, entries_of(
        entries.Payload(0, payload), update)), batch_signatures=False) is \
        blk.BlockResult.extension_not_empty
    # Bytes that are no list of entries at all.
    assert blk.check_block(_block(both, codes, sigs, b"\3\xff\xff"),
                           batch_signatures=False) is blk.BlockResult.consortium_entries


def test_entries_refuse_payloads_out_of_order_and_oversized():
    with pytest.raises(EncodingError, match="ascending record order"):
        entries.encode_entries([entries.Payload(2, b"a"), entries.Payload(1, b"b")])
    with pytest.raises(EncodingError, match="ascending record order"):
        entries.encode_entries([entries.Payload(1, b"a"), entries.Payload(1, b"b")])
    with pytest.raises(EncodingError, match="at most"):
        entries.encode_entries([entries.Payload(0, bytes(limits.payload_bytes_max + 1))])
    with pytest.raises(EncodingError, match="at most"):
        r.call(CHAIN, 1, ALICE, CONTRACT, bytes(limits.payload_bytes_max + 1))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=300), max_size=8), st.binary(max_size=40))
def test_payload_entries_round_trip_and_garbage_never_crashes(payloads, garbage):
    found = [entries.Payload(i * 2, p) for i, p in enumerate(payloads)]
    assert entries.decode_entries(entries.encode_entries(found)) == found
    try:
        entries.decode_entries(garbage)
    except EncodingError:
        pass
    # A call record carries exactly its payload's digest and length.
    record = np.frombuffer(r.call(CHAIN, 1, ALICE, CONTRACT, garbage), r.RECORD_DTYPE)[0]
    assert record["aux2"] == len(garbage)
    assert record["data"].tobytes() == r.payload_digest(garbage)


class Counters:
    """A small contract runtime for the ledger's side of the protocol: named counters that
    calls add to ("name:amount"); a negative total is refused, anything else fails. Its root
    is SHA-256 over the sorted counters; it keeps each block's previous values for undo."""

    def __init__(self, bias: int = 0) -> None:
        self.values: dict[bytes, int] = {}
        self.undo: dict[int, dict[bytes, int | None]] = {}
        self.bias = bias  # a node whose contract differs from the others'
        self.blocks_run = 0

    def root(self) -> bytes:
        import hashlib
        return hashlib.sha256(repr(sorted(self.values.items())).encode()).digest()

    def run_block(self, height, block_time_s, calls):
        self.blocks_run += 1
        before: dict[bytes, int | None] = {}
        codes = []
        for call in calls:
            try:
                name, amount = call.payload.split(b":")
                amount = int(amount) + self.bias
            except ValueError:
                codes.append(Result.call_failed)
                continue
            total = self.values.get(name, 0) + amount
            if call.contract != CONTRACT or total < 0:
                codes.append(Result.call_refused)
                continue
            before.setdefault(name, self.values.get(name))
            self.values[name] = total
            codes.append(Result.ok)
        self.undo[height] = before
        return codes, self.root()

    def undo_block(self, height):
        for name, value in self.undo.pop(height).items():
            if value is None:
                del self.values[name]
            else:
                self.values[name] = value

    def snapshot(self) -> bytes:
        return repr(sorted(self.values.items())).encode()

    def restore(self, data, height):
        import ast
        self.values = dict(ast.literal_eval(data.decode()))


@pytest.fixture
def contract_chain(tmp_path):
    keys = {ALICE: PrivateKey.generate(), BOB: PrivateKey.generate()}
    config = ChainConfig(name="counters", chain_id=CHAIN, asset_code="TSU",
                         allocations=tuple((keys[n].public_key, 100) for n in (ALICE, BOB)),
                         contracts=(("counters", bytes(range(32))),))
    return keys, config


def test_contract_calls_run_in_block_order_and_the_state_root_travels_with_the_block(
        contract_chain, tmp_path):
    keys, config = contract_chain
    runner = Counters()
    ledger = Ledger.create(tmp_path / "a", config, threads=1, calls=runner)
    payloads = [b"apples:5", b"apples:-9", b"no number", b"pears:2"]
    answer = ledger.submit_batch(*signed_calls(keys, payloads), payloads=payloads)
    assert list(answer.codes) == [Result.ok, Result.call_refused, Result.call_failed,
                                  Result.ok]
    assert runner.values == {b"apples": 5, b"pears": 2}
    first = ledger.block(answer.height)
    found = blk.block_entries(blk.decode_block(first))
    assert entries.state_root_of(found) == runner.root()
    # A block without calls still carries the root (unchanged): every block proves the state.
    transfer = r.transfer(CHAIN, 1, BOB, ALICE, 5)
    answer = ledger.submit_batch(transfer, keys[BOB].sign_record(transfer))
    second = ledger.block(answer.height)
    assert entries.state_root_of(blk.block_entries(blk.decode_block(second))) == runner.root()
    ledger.close()

    # A second node with the same contract connects both blocks and reaches the same state.
    other_runner = Counters()
    other = Ledger.create(tmp_path / "b", config, threads=1, calls=other_runner)
    assert other.connect_block(first) is blk.BlockResult.ok
    assert other.connect_block(second) is blk.BlockResult.ok
    assert other_runner.values == runner.values
    other.close()
    # A node whose contract computes otherwise refuses the block, and nothing changes.
    wrong = Ledger.create(tmp_path / "c", config, threads=1, calls=Counters(bias=1))
    assert wrong.connect_block(first) is blk.BlockResult.state_root_differs
    assert wrong.height == 1 and wrong.balance(ALICE) == 100
    wrong.close()


def test_the_contract_state_comes_back_on_reopen_from_its_snapshot_or_by_running_the_chain(
        contract_chain, tmp_path):
    keys, config = contract_chain
    ledger = Ledger.create(tmp_path / "a", config, threads=1, calls=Counters())
    for sequence in range(1, 4):
        payloads = [b"apples:%d" % sequence]
        ledger.submit_batch(*signed_calls(keys, payloads, sequence), payloads=payloads)
    ledger.close()
    restored = Counters()
    ledger = Ledger.open(tmp_path / "a", threads=1, calls=restored)
    assert restored.values == {b"apples": 6} and restored.blocks_run == 0  # the snapshot
    payloads = [b"apples:10"]
    ledger.submit_batch(*signed_calls(keys, payloads, 4), payloads=payloads)
    assert restored.values == {b"apples": 16}
    # Taking the tip back takes the contract's part back too.
    ledger.disconnect_block()
    assert restored.values == {b"apples": 6}
    ledger.close()
    (tmp_path / "a" / "contracts.snapshot").unlink()  # as after a crash before any save
    replayed = Counters()
    ledger = Ledger.open(tmp_path / "a", threads=1, calls=replayed)
    assert replayed.values == {b"apples": 6} and replayed.blocks_run == 3
    ledger.close()
    # Without the contract runtime the chain opens for reading, and refuses writes.
    ledger = Ledger.open(tmp_path / "a", threads=1)
    try:
        assert ledger.balance(ALICE) == 100
        payloads = [b"apples:1"]
        with pytest.raises(Exception, match="open the ledger with calls="):
            ledger.submit_batch(*signed_calls(keys, payloads, 9), payloads=payloads)
        assert ledger.height == 4
    finally:
        ledger.close()


def test_a_crash_replays_only_the_calls_after_the_newest_contract_snapshot(
        contract_chain, tmp_path, monkeypatch):
    import shutil

    from tsunagi.ledger import limits as ledger_limits
    keys, config = contract_chain
    monkeypatch.setattr(ledger_limits, "snapshot_interval_records", 2)
    ledger = Ledger.create(tmp_path / "a", config, threads=1, calls=Counters())
    for sequence in range(1, 6):
        payloads = [b"apples:1"]
        ledger.submit_batch(*signed_calls(keys, payloads, sequence), payloads=payloads)
    ledger._join_snapshot()
    # The directory as a SIGKILL would leave it: no close, so nothing saved at close.
    shutil.copytree(tmp_path / "a", tmp_path / "crashed")
    ledger.close()
    replayed = Counters()
    reopened = Ledger.open(tmp_path / "crashed", threads=1, calls=replayed)
    try:
        assert replayed.values == {b"apples": 5}
        assert replayed.blocks_run < 5  # from the snapshot taken on the way, not genesis
    finally:
        reopened.close()
