"""The native hashing core agrees with hashlib and with Bitcoin's known genesis header.

Method: known answers from outside (hashlib, the real genesis block) on both backends, and
malformed input that must raise the project's EncodingError rather than crash.
"""

import hashlib
import os

import bitcoin
import numpy as np
import pytest

from tsunagi import hashing
from tsunagi.errors import EncodingError

GENESIS = bitcoin.GENESIS_HEADER
GENESIS_HASH = bitcoin.GENESIS_HASH_HEX
double = bitcoin.sha256d


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


HEADER = GENESIS
STRIDED = np.zeros(320, dtype=np.uint8)[::2]  # 160 bytes, every other one: not contiguous

MALFORMED = {
    "sha256 of an int": (lambda: hashing.sha256(5), "contiguous"),
    "sha256d of a str": (lambda: hashing.sha256d("abc"), "contiguous"),
    "header_hash of 79 bytes": (lambda: hashing.header_hash(HEADER[:79]), "80 bytes"),
    "check_pow of 81 bytes": (lambda: hashing.check_pow(HEADER + b"\0"), "80 bytes"),
    "strided header": (lambda: hashing.header_hash(STRIDED[:80]), "contiguous"),
    "header_fields of 81 bytes": (lambda: hashing.header_fields(HEADER + b"\0"), "80 bytes"),
    "make_header with a short prev": (
        lambda: hashing.make_header(1, bytes(31), bytes(32), 0, 0x1D00FFFF), "32-byte"),
    "records of a strided buffer": (lambda: hashing.sha256d_records(STRIDED, 32), "contiguous"),
    "records of a column slice": (
        lambda: hashing.sha256d_records(np.zeros((4, 64), np.uint8)[:, :32], 32), "contiguous"),
    "records of size 0": (lambda: hashing.sha256d_records(bytes(64), 0), "positive"),
    "validate 81 bytes": (lambda: hashing.validate_headers(HEADER + b"\0"), "whole number"),
    "validate a strided buffer": (lambda: hashing.validate_headers(STRIDED), "contiguous"),
    "validate a short prev_hash": (
        lambda: hashing.validate_headers(HEADER, bytes(31)), "32 bytes"),
    "search a 79-byte header": (lambda: hashing.search_nonce(HEADER[:79], 0, 10), "80 bytes"),
    "search past 2**32": (lambda: hashing.search_nonce(HEADER, 2**32 - 10, 100), "32-bit"),
    "search from 2**32 + 1": (lambda: hashing.search_nonce(HEADER, 2**32 + 1, 0), "32-bit"),
    "NonceSearch of 2**32 + 1": (lambda: hashing.NonceSearch(HEADER, 0, 2**32 + 1), "32-bit"),
    "merkle leaf of 31 bytes": (lambda: hashing.merkle_root([bytes(32), bytes(31)]), "32-byte"),
    "merkle array N x 31": (lambda: hashing.merkle_root(np.zeros((4, 31), np.uint8)), "N x 32"),
    "merkle array of int32": (lambda: hashing.merkle_root(np.zeros((4, 32), np.int32)), "uint8"),
    "merkle flat array": (lambda: hashing.merkle_root(np.zeros(64, np.uint8)), "N x 32"),
    "merkle_parents leaf of 33": (lambda: hashing.merkle_parents([bytes(33)]), "32-byte"),
    "merkle_proof leaf of 31": (lambda: hashing.merkle_proof([bytes(31)], 0), "32-byte"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_is_an_encoding_error(name):
    call, message = MALFORMED[name]
    with pytest.raises(EncodingError, match=message):
        call()


@pytest.mark.parametrize("start, count", [(-1, 10), (0, -5), (0, 2**64)])
def test_negative_or_huge_nonce_range_is_an_encoding_error(start, count):
    with pytest.raises(EncodingError, match="nonce"):
        hashing.NonceSearch(HEADER, start, count)


def test_valid_odd_shapes_are_accepted():
    # A non-contiguous N x 32 leaf array is copied, not refused; a 2-D uint16 buffer is bytes.
    wide = np.frombuffer(os.urandom(4 * 64), dtype=np.uint8).reshape(4, 64)
    leaves = [bytes(row[:32]) for row in wide]
    assert hashing.merkle_root(wide[:, :32]) == hashing.merkle_root(leaves)
    grid = np.arange(6, dtype=np.uint16).reshape(2, 3)
    assert hashing.sha256(grid) == hashlib.sha256(grid.tobytes()).digest()
    assert hashing.sha256d_records(b"", 80).shape == (0, 32)
    assert hashing.validate_headers(b"") == (0, hashing.HeaderResult.ok)
    assert hashing.merkle_root([]) == bytes(32)
