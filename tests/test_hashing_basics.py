"""The native hashing core agrees with hashlib and with Bitcoin's known genesis header.

Method: known answers from outside (hashlib, the real genesis block) on both backends, and
malformed input that must raise the project's EncodingError rather than crash.
"""

import hashlib
import os
import struct

import numpy as np
import pytest

from tsunagi import hashing
from tsunagi.errors import EncodingError

GENESIS = struct.pack(
    "<I32s32sIII", 1, bytes(32),
    bytes.fromhex("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b")[::-1],
    1231006505, 0x1D00FFFF, 2083236893)
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def double(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def test_genesis_header_hash_and_pow():
    assert hashing.header_hash(GENESIS)[::-1].hex() == GENESIS_HASH
    assert hashing.check_pow(GENESIS)
    assert hashing.bits_to_target(0x1D00FFFF) == 0xFFFF << 208


def test_sha256_matches_hashlib_on_every_short_length():
    for length in range(0, 200):
        data = os.urandom(length)
        assert hashing.sha256(data) == hashlib.sha256(data).digest()
        assert hashing.sha256d(data) == double(data)


def test_records_and_merkle_root_of_two():
    records = os.urandom(128 * 3)
    got = hashing.sha256d_records(records, 128, threads=2)
    assert got.shape == (3, 32)
    assert [bytes(row) for row in got] == [double(records[i:i + 128]) for i in (0, 128, 256)]
    a, b = os.urandom(32), os.urandom(32)
    assert hashing.merkle_root([a, b]) == double(a + b)
    assert hashing.merkle_root([a]) == a


def test_nonce_search_finds_the_genesis_nonce():
    nonce = hashing.search_nonce(GENESIS, start=2083236893 - 100_000, count=200_000, threads=2)
    assert nonce == 2083236893


@pytest.mark.parametrize("bad", [b"", b"x" * 79, b"x" * 81])
def test_wrong_header_length_is_an_encoding_error(bad):
    with pytest.raises(EncodingError, match="80 bytes"):
        hashing.header_hash(bad)


def test_non_contiguous_buffer_is_an_encoding_error():
    strided = np.zeros(256, dtype=np.uint8)[::2]
    with pytest.raises(EncodingError, match="contiguous"):
        hashing.sha256(strided)
    with pytest.raises(EncodingError, match="whole number"):
        hashing.sha256d_records(b"x" * 129, 128)
