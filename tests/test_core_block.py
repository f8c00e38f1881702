"""Blocks encode to the documented bytes, decode without copying, and check_block refuses
every kind of bad block it is meant to, while damage of any byte is always caught.

Method: blocks of signed records and batches built with the public API; a plain-Python oracle
(struct and hashlib) for the Merkle root; one hand-made bad block per BlockResult; every
truncation and every single-bit flip of a small block; hypothesis for random garbage and random
byte damage (only EncodingError may come out of decoding, and check_block always answers).
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi import hashing, limits
from tsunagi.core import block as block_module
from tsunagi.core import records
from tsunagi.core.block import (
    BatchAuth,
    BlockResult,
    batch_proof,
    batch_root,
    check_block,
    decode_block,
    encode_block,
    genesis_block,
    mine_header,
    record_txids,
    sign_batch,
    verify_batch,
    verify_record_in_batch,
)
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.entries import ValidatorUpdate, encode_entries
from tsunagi.core.keys import PrivateKey, verify
from tsunagi.errors import EncodingError

CHAIN = 7
ALICE = PrivateKey.from_bytes(b"\x11" * 32)
BOB = PrivateKey.from_bytes(b"\x22" * 32)
PREV = hashlib.sha256(b"previous block").digest()
TRIVIAL_BITS = 0x207FFFFF


def transfer(sequence: int, *, batch: bool = False, chain: int = CHAIN) -> bytes:
    return records.transfer(chain, sequence, 1, 2, 10 + sequence, batch_authorized=batch)


def parts(layout=("own", 2, "own", 3, "own"), *, signer=BOB) -> dict:
    """encode_block arguments for a layout of own-signed records and batches of n records."""
    buffer, signatures, batches, sequence = [], [], [], 1
    for item in layout:
        if item == "own":
            record = transfer(sequence)
            signatures.append(ALICE.sign_record(record))
            buffer.append(record)
            sequence += 1
            continue
        batch = b"".join(transfer(sequence + index, batch=True) for index in range(item))
        batches.append(BatchAuth(len(buffer), item, signer.public_key,
                                 sign_batch(signer, batch)))
        buffer += [batch[index:index + 128] for index in range(0, len(batch), 128)]
        sequence += item
    data = b"".join(buffer)
    return dict(prev_hash=PREV, time=1_700_000_000, bits=TRIVIAL_BITS, records=data,
                codes=bytes(len(buffer)), signatures=b"".join(signatures), batches=batches)


def build(mine: bool = True, **changes) -> bytearray:
    arguments = parts()
    arguments.update(changes)
    data = encode_block(**arguments)
    if mine:
        mine_header(data, threads=1)
    return data


def reseal(data: bytearray) -> bytearray:
    """Recomputes the Merkle root after a deliberate edit, and mines again."""
    data[36:68] = decode_block(bytes(data)).computed_merkle_root()
    mine_header(data, threads=1)
    return data


def reference_merkle_root(data: bytes) -> bytes:
    """The header's root recomputed with struct and hashlib only, from FORMAT.md."""
    def double(chunk: bytes) -> bytes:
        return hashlib.sha256(hashlib.sha256(chunk).digest()).digest()
    record_count, batch_count = struct.unpack_from("<II", data, 80)
    raw = [data[88 + 128 * index:88 + 128 * (index + 1)] for index in range(record_count)]
    genesis = data[4:36] == bytes(32)
    signed = 0 if genesis else sum(1 for record in raw if not record[1] & 2)
    body = 88 + 128 * record_count
    length_at = body + record_count + 64 * signed + 112 * batch_count
    level = [double(record) for record in raw]
    level.append(double(data[body:length_at] + data[length_at + 4:]))
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [double(level[index] + level[index + 1]) for index in range(0, len(level), 2)]
    return level[0]


@pytest.fixture(scope="module")
def config() -> ChainConfig:
    keys = [PrivateKey.from_bytes(bytes([index]) * 32).public_key for index in range(1, 5)]
    return ChainConfig(name="test chain", chain_id=CHAIN, asset_code="TST", issuers=keys[:2],
                       allocations=((keys[2], 5_000), (keys[3], 7)),
                       genesis_time_s=1_700_000_000)


def test_round_trip_fields_views_and_zero_copy():
    arguments = parts()
    data = encode_block(**arguments)
    mine_header(data, threads=1)
    block = decode_block(data)
    assert len(block) == 8 and block.version == 1 and block.prev_hash == PREV
    assert block.time == 1_700_000_000 and block.bits == TRIVIAL_BITS
    assert block.records.tobytes() == arguments["records"]
    assert block.codes.tobytes() == bytes(8)
    assert block.signatures.shape == (3, 64)
    assert block.signatures.tobytes() == arguments["signatures"]
    assert block.batches == arguments["batches"]
    assert block.extension == b"" and not block.is_genesis
    assert block.hash == hashing.header_hash(bytes(data[:80]))
    assert block.nonce == struct.unpack_from("<I", data, 76)[0]
    buffer = np.frombuffer(data, np.uint8)
    for view in (block.records, block.codes, block.signatures, block.batch_array):
        assert np.shares_memory(view, buffer) and not view.flags.writeable
    assert len(data) == 80 + 8 + 8 * 129 + 3 * 64 + 2 * 112 + 4


def test_a_block_built_in_a_used_buffer_writes_every_byte():
    """encode_block fills the array ``allocate`` gives it: whatever that held before (a buffer
    the log uses again) must not show through, and the array is what it returns."""
    arguments = parts()
    expected = encode_block(**arguments)
    given = []

    def allocate(size: int) -> np.ndarray:
        given.append(np.full(size + 100, 0xA5, np.uint8)[:size])
        return given[-1]

    data = encode_block(**arguments, as_array=True, allocate=allocate)
    assert data is given[0] and data.tobytes() == bytes(expected)


def test_numpy_inputs_encode_to_the_same_bytes():
    arguments = parts()
    data = encode_block(**arguments)
    arguments["records"] = records.as_records(arguments["records"])
    arguments["codes"] = np.zeros(8, np.uint8)
    arguments["signatures"] = np.frombuffer(arguments["signatures"], np.uint8).reshape(3, 64)
    assert encode_block(**arguments) == data


@pytest.mark.parametrize("layout", [(), ("own",), (4,), ("own", 2, "own", 3, "own"),
                                    ("own",) * 9])
def test_merkle_root_matches_plain_python_reference(layout):
    data = build(**parts(layout))
    block = decode_block(data)
    assert block.merkle_root == reference_merkle_root(bytes(data))
    assert check_block(block) == BlockResult.ok


def test_every_tx_proof_leads_to_the_header_root_and_nowhere_else():
    block = decode_block(build())
    txids = block.txids()
    for position in range(len(block)):
        proof = block.tx_proof(position)
        assert hashing.verify_merkle_proof(txids[position].tobytes(), proof, position,
                                           block.merkle_root)
        assert not hashing.verify_merkle_proof(txids[position].tobytes(), proof,
                                               (position + 1) % len(block), block.merkle_root)
    with pytest.raises(IndexError):
        block.tx_proof(8)


def test_signature_for_returns_own_signatures_and_covering_batches():
    block = decode_block(build())
    own = [0, 3, 7]
    txids = block.txids()
    for position in range(len(block)):
        authority = block.signature_for(position)
        if position in own:
            assert verify(ALICE.public_key, txids[position].tobytes(), authority)
        else:
            assert isinstance(authority, BatchAuth)
            assert authority.first <= position < authority.first + authority.count
            assert verify_batch(txids[authority.first:authority.first + authority.count],
                                authority.signer_key, authority.signature)


def test_batch_members_are_provable_alone():
    batch_records = b"".join(transfer(index, batch=True) for index in range(5))
    signature = sign_batch(BOB, batch_records)
    txids = record_txids(batch_records)
    batch = BatchAuth(10, 5, BOB.public_key, signature)
    assert verify(BOB.public_key, batch_root(txids), signature)
    for index in range(5):
        record = batch_records[128 * index:128 * (index + 1)]
        path = batch_proof(txids, index)
        assert verify_record_in_batch(record, path, index, batch)
        assert not verify_record_in_batch(record, path, (index + 1) % 5, batch)
        assert not verify_record_in_batch(record, path[:-1], index, batch)
        assert not verify_record_in_batch(record, path, index,
                                          batch._replace(signer_key=ALICE.public_key))
        altered = bytearray(record)
        altered[32] ^= 1  # the amount
        assert not verify_record_in_batch(altered, path, index, batch)
    own_record = transfer(1)
    assert not verify_record_in_batch(own_record, [], 0, BatchAuth(0, 1, BOB.public_key,
                                                                   BOB.sign_record(own_record)))
    assert not verify_record_in_batch(b"short", [], 0, batch)


def _with_record(position: int, record: bytes) -> dict:
    arguments = parts()
    data = bytearray(arguments["records"])
    data[128 * position:128 * (position + 1)] = record
    arguments["records"] = bytes(data)
    return arguments


def _with_batches(*batches) -> dict:
    arguments = parts()
    arguments["batches"] = list(batches)
    return arguments


def _batch(first: int, count: int, signer=BOB) -> BatchAuth:
    return BatchAuth(first, count, signer.public_key, bytes(64))


def _codes(position: int, code: int) -> dict:
    codes = bytearray(8)
    codes[position] = code
    return dict(codes=bytes(codes))


def _reserved_not_zero() -> bytearray:
    data = build()
    batches_at = 88 + 8 * 129 + 3 * 64
    data[batches_at + 40] = 1  # reserved bytes follow first, count and the signer key
    return reseal(data)


def _merkle_damaged() -> bytearray:
    data = build(mine=False)
    data[40] ^= 1
    mine_header(data, threads=1)
    return data


def _resign(arguments: dict) -> dict:
    # Own signatures of the edited records, so that only the intended rule is broken.
    view = records.as_records(arguments["records"])
    own = np.flatnonzero((view["flags"] & records.Flags.batch_authorized) == 0)
    arguments["signatures"] = b"".join(
        ALICE.sign_record(view[index:index + 1].tobytes()) for index in own)
    return arguments


BAD_BLOCKS = {
    BlockResult.bad_version: lambda: build(version=3),
    BlockResult.bad_bits: lambda: build(mine=False, bits=0x04800001),
    BlockResult.bad_pow: lambda: build(mine=False, bits=0x1D00FFFF),
    BlockResult.bad_merkle_root: _merkle_damaged,
    BlockResult.malformed_record: lambda: build(**_with_record(0, records.pack(
        records.Kind.transfer, chain_id=CHAIN, flags=4))),
    BlockResult.mixed_chain: lambda: build(**_resign(_with_record(0, transfer(1, chain=8)))),
    BlockResult.unknown_code: lambda: build(**_codes(2, 250)),
    BlockResult.unstored_code: lambda: build(**_codes(2, Result.bad_signature)),
    BlockResult.duplicate_record: lambda: build(**_resign(_with_record(3, transfer(1)))),
    BlockResult.batch_empty: lambda: build(**_with_batches(
        _batch(1, 2), _batch(4, 0), _batch(4, 3))),
    BlockResult.batch_out_of_range: lambda: build(**_with_batches(_batch(1, 2), _batch(4, 9))),
    BlockResult.batch_order: lambda: build(**_with_batches(_batch(4, 3), _batch(1, 2))),
    BlockResult.batch_reserved: _reserved_not_zero,
    BlockResult.batch_coverage: lambda: build(**_with_batches(_batch(0, 3), _batch(4, 3))),
    BlockResult.batch_signature_invalid: lambda: build(**_with_batches(
        *[batch._replace(signer_key=ALICE.public_key) for batch in parts()["batches"]])),
    # A consortium entry in a proof-of-work block; bytes that are no entries at all.
    BlockResult.extension_not_empty: lambda: build(extension=encode_entries(
        [ValidatorUpdate(bytes(32), 1, 10, ())])),
    BlockResult.consortium_entries: lambda: build(extension=b"x"),
}


@pytest.mark.parametrize("expected", list(BAD_BLOCKS), ids=lambda result: result.name)
def test_each_bad_block_gets_its_result(expected):
    assert check_block(decode_block(BAD_BLOCKS[expected]())) == expected


def test_batches_not_covering_every_flagged_record_are_refused():
    assert check_block(decode_block(build(**_with_batches(parts()["batches"][1])))) == \
        BlockResult.batch_coverage


def test_batch_signatures_may_be_left_to_the_caller():
    block = decode_block(BAD_BLOCKS[BlockResult.batch_signature_invalid]())
    assert check_block(block, batch_signatures=False) == BlockResult.ok


def test_record_limit(monkeypatch):
    monkeypatch.setattr(limits, "block_records_max", 7)
    assert check_block(decode_block(build())) == BlockResult.too_many_records


def test_genesis_block_is_deterministic_and_valid(config):
    data = genesis_block(config, threads=1)
    assert genesis_block(config, threads=1) == data
    block = decode_block(data)
    assert block.is_genesis and check_block(block) == BlockResult.ok
    assert block.extension == config.to_json().encode()
    assert block.signatures.shape == (0, 64) and block.batches == []
    assert block.signature_for(0) is None
    assert block.time == config.genesis_time_s and block.bits == config.bits
    assert block.merkle_root == reference_merkle_root(bytes(data))


def _genesis(config: ChainConfig, **changes) -> bytearray:
    arguments = dict(prev_hash=bytes(32), time=config.genesis_time_s, bits=config.bits,
                     records=block_module.genesis_records(config), codes=bytes(6),
                     signatures=b"", batches=(), extension=config.to_json().encode())
    arguments.update(changes)
    data = encode_block(**arguments)
    mine_header(data, threads=1)
    return data


@pytest.mark.parametrize(("change", "expected"), [
    (dict(batches=[_batch(0, 1)]), BlockResult.genesis_batches),
    (dict(extension=b"{}"), BlockResult.genesis_config_invalid),
    (dict(extension=b"not json"), BlockResult.genesis_config_invalid),
    (dict(time=1), BlockResult.genesis_mismatch),
    (dict(bits=0x1F7FFFFF), BlockResult.genesis_mismatch),
    (dict(codes=bytes(5) + b"\x08"), BlockResult.genesis_mismatch),
])
def test_genesis_rules(config, change, expected):
    assert check_block(decode_block(_genesis(config, **change))) == expected


def test_genesis_config_must_be_canonical_and_match_the_records(config):
    spaced = config.to_json().replace(",", ", ").encode()
    assert check_block(decode_block(_genesis(config, extension=spaced))) == \
        BlockResult.genesis_config_invalid
    other = ChainConfig(name="other", chain_id=CHAIN, asset_code="TST",
                        issuers=config.issuers, allocations=config.allocations[:1])
    assert check_block(decode_block(_genesis(config, extension=other.to_json().encode()))) \
        == BlockResult.genesis_mismatch


def test_encode_refuses_inconsistent_sizes():
    arguments = parts()
    with pytest.raises(EncodingError, match="need 3 signatures"):
        encode_block(**{**arguments, "signatures": arguments["signatures"][:-64]})
    with pytest.raises(EncodingError, match="need 8 codes"):
        encode_block(**{**arguments, "codes": bytes(7)})
    with pytest.raises(EncodingError, match="need 0 signatures"):  # genesis carries none
        encode_block(**{**arguments, "prev_hash": bytes(32)})
    with pytest.raises(EncodingError, match="whole number of 128-byte records"):
        encode_block(**{**arguments, "records": arguments["records"][:-1]})
    with pytest.raises(EncodingError, match="prev_hash is 32 bytes"):
        encode_block(**{**arguments, "prev_hash": PREV[:31]})
    with pytest.raises(EncodingError, match="out of range"):
        encode_block(**{**arguments, "time": 2**32})


def test_decode_errors_say_what_and_where():
    data = bytes(build())
    with pytest.raises(EncodingError, match="at least 92 bytes"):
        decode_block(data[:91])
    with pytest.raises(EncodingError, match="record_count 4294967295 at offset 80"):
        decode_block(data[:80] + b"\xff\xff\xff\xff" + data[84:])
    with pytest.raises(EncodingError, match="leaves 1 trailing bytes"):
        decode_block(data + b"\0")
    with pytest.raises(EncodingError, match="extension_length 2 at offset 1536 runs past"):
        decode_block(bytes(build(mine=False, extension=b"xy"))[:-1])
    with pytest.raises(EncodingError, match="before the extension length"):
        decode_block(data[:88 + 8 * 129 + 10])
    with pytest.raises(EncodingError, match="bytes-like"):
        decode_block(12)


def test_every_truncation_and_extension_of_a_valid_block_is_refused():
    data = bytes(build())
    for size in range(len(data)):
        with pytest.raises(EncodingError):
            decode_block(data[:size])
    for extra in (b"\0", b"\0" * 64, data):
        with pytest.raises(EncodingError):
            decode_block(data + extra)


def _damage_is_caught(data: bytes, offset: int, mask: int) -> bool:
    damaged = bytearray(data)
    damaged[offset] ^= mask
    try:
        block = decode_block(damaged)
    except EncodingError:
        return True
    return check_block(block) != BlockResult.ok


# The header's prev_hash, time, bits and nonce are not under the Merkle root: changing them
# makes another block with another hash, which the chain (not check_block) judges.
COVERED_HEADER = list(range(0, 4)) + list(range(36, 68))


@pytest.mark.parametrize("kind", ["normal", "genesis"])
def test_every_single_bit_flip_is_caught(config, kind):
    data = bytes(build() if kind == "normal" else genesis_block(config, threads=1))
    assert check_block(decode_block(data)) == BlockResult.ok
    offsets = COVERED_HEADER + list(range(80, len(data)))
    for offset in offsets:
        for mask in (0x01, 0x80):
            assert _damage_is_caught(data, offset, mask), (offset, mask)


VALID = bytes(build())


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(offset=st.sampled_from(COVERED_HEADER + list(range(80, len(VALID)))),
       mask=st.integers(1, 255))
def test_random_byte_damage_is_caught(offset, mask):
    assert _damage_is_caught(VALID, offset, mask)


@settings(deadline=None)
@given(st.binary(max_size=2048))
def test_random_garbage_gives_encoding_error_or_a_judged_block(data):
    try:
        block = decode_block(data)
    except EncodingError:
        return
    assert isinstance(check_block(block), BlockResult)


@settings(deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=300))
def test_lying_counts_over_a_valid_body_give_encoding_error_or_a_judged_block(
        record_count, batch_count, tail):
    data = VALID[:80] + struct.pack("<II", record_count, batch_count) + VALID[88:] + tail
    try:
        block = decode_block(data)
    except EncodingError:
        return
    assert isinstance(check_block(block), BlockResult)


def test_mine_header_finds_the_lowest_nonce():
    data = build(mine=False, bits=0x1F00FFFF)  # about one header in 65,536 qualifies
    nonce = mine_header(data, threads=2)
    assert hashing.check_pow(bytes(data[:80]))
    assert struct.unpack_from("<I", data, 76)[0] == nonce
    header = bytearray(data[:80])
    for lower in range(nonce):
        struct.pack_into("<I", header, 76, lower)
        assert not hashing.check_pow(bytes(header))
    assert check_block(decode_block(data)) == BlockResult.ok


def test_mine_header_moves_time_on_when_the_nonces_run_out():
    data = build(mine=False, bits=0x200FFFFF)  # one header in 16 qualifies
    start = decode_block(bytes(data)).time
    header = bytearray(data[:80])
    expected = start
    while True:  # the first second at which nonce 0 qualifies
        struct.pack_into("<I", header, 68, expected)
        if hashing.check_pow(bytes(header)):
            break
        expected += 1
    assert mine_header(data, threads=1, nonce_count=1) == 0
    assert decode_block(bytes(data)).time == expected
    with pytest.raises(EncodingError, match="zero target"):
        mine_header(build(mine=False, bits=0x01000000))
    with pytest.raises(EncodingError, match="writable"):
        mine_header(bytes(data))


@st.composite
def well_sized_garbage(draw) -> bytes:
    """Random bytes laid out with consistent sizes, so decoding succeeds and checks run."""
    record_count, batch_count = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    header = bytearray(draw(st.binary(min_size=80, max_size=80)))
    if draw(st.booleans()):
        header[4:36] = bytes(32)  # genesis: no signatures, the extension is parsed as config
    raw = draw(st.binary(min_size=128 * record_count, max_size=128 * record_count))
    genesis = header[4:36] == bytes(32)
    signed = 0 if genesis else sum(1 for index in range(record_count)
                                   if not raw[128 * index + 1] & 2)
    body_size = record_count + 64 * signed + 112 * batch_count
    body = draw(st.binary(min_size=body_size, max_size=body_size))
    extension = draw(st.binary(max_size=64) | st.just(b'{"name":"x","chain_id":1}'))
    return (bytes(header) + struct.pack("<II", record_count, batch_count) + raw + body
            + struct.pack("<I", len(extension)) + extension)


@settings(deadline=None)
@given(well_sized_garbage())
def test_check_block_judges_any_decodable_garbage_without_raising(data):
    assert isinstance(check_block(decode_block(data)), BlockResult)


def test_pack_many_builds_the_bytes_pack_builds_one_at_a_time():
    """The bulk builder (workloads, load generator) and pack agree byte for byte."""
    sequences = np.array([5, 9, 2**64 - 1], np.uint64)
    many = records.pack_many(3, records.Kind.transfer, chain_id=7, sequence=sequences,
                             debit_account=[2, 3, 4], credit_account=9, amount=10**12,
                             batch_authorized=True)
    one_by_one = b"".join(
        records.pack(records.Kind.transfer, chain_id=7, sequence=int(s), debit_account=d,
                     credit_account=9, amount=10**12, flags=records.Flags.batch_authorized)
        for s, d in zip(sequences, (2, 3, 4)))
    assert many.tobytes() == one_by_one
