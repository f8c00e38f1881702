"""Block version 2 (consortium) is the version 1 layout plus a seal that no digest covers, and
check_block judges it as version 1 except for work, with its own codes.

Method: the same records encoded as version 1 and 2 and compared byte for byte; the seal
replaced with with_seal (hash and Merkle root unchanged); one hand-made bad block per new
BlockResult; every truncation and every single-bit flip outside the seal; hypothesis for
random garbage after a version 2 header.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagi import limits
from tsunagi.core import records
from tsunagi.core.block import (
    BLOCK_VERSION,
    BLOCK_VERSION_CONSORTIUM,
    BlockResult,
    check_block,
    decode_block,
    encode_block,
    mine_header,
    sign_batch,
    with_seal,
)
from tsunagi.core.entries import Evidence, SignedVote, encode_entries
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import EncodingError

CHAIN = 7
ALICE = PrivateKey.from_bytes(b"\x11" * 32)
BOB = PrivateKey.from_bytes(b"\x22" * 32)
PREV = hashlib.sha256(b"previous block").digest()
SEAL = bytes(range(200))


def _parts() -> dict:
    own = records.transfer(CHAIN, 1, 1, 2, 10)
    batched = b"".join(records.transfer(CHAIN, sequence, 3, 2, 5, batch_authorized=True)
                       for sequence in (2, 3))
    return {"records": own + batched, "codes": bytes(3), "signatures": ALICE.sign_record(own),
            "batches": [(1, 2, BOB.public_key, sign_batch(BOB, batched))]}


PARTS = _parts()  # signed once: BIP340 signatures take fresh randomness each time


def parts() -> dict:
    return dict(PARTS)


def v2(**changes) -> bytearray:
    arguments = {"prev_hash": PREV, "time": 1_700_000_000, "bits": 0,
                 "version": BLOCK_VERSION_CONSORTIUM, "seal": SEAL} | parts()
    arguments.update(changes)
    return encode_block(**arguments)


def test_version_2_is_version_1_then_the_seal():
    one = encode_block(prev_hash=PREV, time=1_700_000_000, bits=0, **parts())
    two = v2()
    assert two[4:len(one)] == one[4:]
    assert struct.unpack_from("<I", two)[0] == 2
    assert two[len(one):] == struct.pack("<I", len(SEAL)) + SEAL
    block = decode_block(two)
    assert block.version == BLOCK_VERSION_CONSORTIUM and bytes(block.seal) == SEAL
    assert block.extension == b"" and block.extension_length == 0
    assert block.merkle_root == decode_block(one).merkle_root
    assert bytes(decode_block(one).seal) == b""
    assert check_block(block) == BlockResult.ok
    assert bytes(v2(as_array=True)) == bytes(two)  # the ledger's path: a numpy buffer


def test_the_seal_is_outside_every_digest():
    data = v2()
    block = decode_block(data)
    for seal in (b"", b"x", bytes(5000)):
        resealed = with_seal(data, seal)
        again = decode_block(resealed)
        assert bytes(again.seal) == seal and again.hash == block.hash
        assert again.computed_merkle_root() == block.merkle_root
        assert check_block(again) == BlockResult.ok
        assert resealed[:len(data) - len(SEAL) - 4] == data[:len(data) - len(SEAL) - 4]
    with pytest.raises(EncodingError, match="only a version 2 block"):
        with_seal(encode_block(prev_hash=PREV, time=1, bits=0, **parts()), b"x")
    with pytest.raises(EncodingError, match="only a version 2 block"):
        encode_block(prev_hash=PREV, time=1, bits=0, seal=b"x", **parts())


def _entries() -> bytes:
    vote = SignedVote(1, 3, 0, None, bytes(32), bytes(64))
    return encode_entries([Evidence(ALICE.public_key, vote, vote)])


@pytest.mark.parametrize(("expected", "changes"), [
    (BlockResult.ok, {"extension": _entries()}),
    (BlockResult.consortium_work, {"bits": 0x207FFFFF}),
    (BlockResult.consortium_work, {"nonce": 1}),
    (BlockResult.consortium_genesis, {"prev_hash": bytes(32), "signatures": b""}),
    (BlockResult.consortium_entries, {"extension": b"\x01\x02"}),
    (BlockResult.seal_too_large, {"seal": bytes(limits.seal_bytes_max + 1)}),
    (BlockResult.bad_version, {"version": 3, "seal": b""}),
])
def test_each_bad_version_2_block_gets_its_result(expected, changes):
    assert check_block(decode_block(v2(**changes))) == expected


def test_version_1_blocks_still_refuse_an_extension():
    one = encode_block(prev_hash=PREV, time=1, bits=0x207FFFFF, extension=_entries(), **parts())
    mine_header(one, threads=1)
    block = decode_block(one)
    assert block.version == BLOCK_VERSION
    assert check_block(block) == BlockResult.extension_not_empty


def test_every_truncation_and_trailing_byte_is_refused():
    data = bytes(v2(extension=_entries()))
    for size in range(len(data)):
        with pytest.raises(EncodingError):
            decode_block(data[:size])
    with pytest.raises(EncodingError, match="seal_length 200 at offset"):
        decode_block(data + b"\0")


def test_every_single_bit_flip_outside_the_seal_and_time_is_caught():
    data = bytes(v2(seal=b""))
    # prev_hash and time are outside the Merkle root: they make another block (the chain and
    # the certificate judge that); bits and nonce must stay 0.
    offsets = list(range(4)) + list(range(36, 68)) + list(range(72, len(data)))
    for offset in offsets:
        for mask in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[offset] ^= mask
            try:
                result = check_block(decode_block(damaged))
            except EncodingError:
                continue
            assert result != BlockResult.ok, (offset, mask)


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_garbage_after_a_version_2_header_gives_encoding_error_or_a_judged_block(tail):
    data = struct.pack("<I", 2) + bytes(v2())[4:80] + tail
    try:
        block = decode_block(data)
    except EncodingError:
        return
    assert isinstance(check_block(block), BlockResult)
