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
    assert list(answer.codes) == [Result.ok] * 4
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
    assert list(answer.codes) == [Result.payload_missing, Result.ok]
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
