"""Property tests: both SHA-256 backends agree with hashlib and with each other on random input,
Merkle trees and proofs match a plain-Python reference, compact bits match Bitcoin's values.

Method: hypothesis draws inputs (bytes, record batches, leaf lists, bits, targets); hashlib and
the reference Merkle tree of tests/bitcoin.py are the oracles; Bitcoin Core's
arith_uint256 SetCompact/GetCompact vectors are the known answers for compact bits.
"""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitcoin
from conftest import CONFIGS
from tsunagi import hashing
from tsunagi._native import hashing as native
from tsunagi.errors import EncodingError
from tsunagi.hashing import HeaderResult

# The backend fixture is set once per test and holds for every example hypothesis draws.
per_backend = settings(suppress_health_check=[HealthCheck.function_scoped_fixture,
                                              HealthCheck.too_slow],
                       max_examples=60, deadline=None)

# Tests without the fixture: no deadline either, the machine is shared and its timing noisy.
plain = settings(deadline=None)

leaf = st.binary(min_size=32, max_size=32)


def test_every_length_from_0_to_1000_matches_hashlib(backend):
    rng = random.Random(f"lengths-{backend}")
    for length in range(1001):
        data = rng.randbytes(length)
        assert hashing.sha256(data) == hashlib.sha256(data).digest(), length
        assert hashing.sha256d(data) == bitcoin.sha256d(data), length


@per_backend
@given(data=st.binary(max_size=1000))
def test_sha256_and_sha256d_match_hashlib(backend, data):
    assert hashing.sha256(data) == hashlib.sha256(data).digest()
    assert hashing.sha256d(data) == bitcoin.sha256d(data)
    assert hashing.sha256(bytearray(data)) == hashing.sha256(memoryview(data))


@per_backend
@given(record_size=st.integers(1, 300), count=st.integers(0, 40), threads=st.integers(1, 4),
       seed=st.integers(0, 2**32))
def test_sha256d_records_match_hashlib(backend, record_size, count, threads, seed):
    buffer = random.Random(seed).randbytes(record_size * count)
    got = hashing.sha256d_records(buffer, record_size, threads)
    assert got.shape == (count, 32) and got.dtype == np.uint8
    want = [bitcoin.sha256d(buffer[i:i + record_size])
            for i in range(0, len(buffer), record_size)]
    assert [row.tobytes() for row in got] == want


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          max_examples=25,
          deadline=None)
@given(record_size=st.sampled_from([32, 64, 80, 128, 200]), count=st.integers(1, 3000),
       seed=st.integers(0, 2**32))
def test_backends_agree_on_random_batches(use_backend, record_size, count, seed):
    rng = random.Random(seed)
    buffer = rng.randbytes(record_size * count)
    leaves = np.frombuffer(rng.randbytes(32 * count), dtype=np.uint8).reshape(-1, 32)
    answers = {}
    for config in CONFIGS:
        use_backend(config)  # without SHA-NI or AVX-512 some runs repeat a kernel: still valid
        answers[config] = (hashing.sha256d_records(buffer, record_size, 2).tobytes(),
                           hashing.merkle_root(leaves), hashing.sha256d(buffer),
                           hashing.merkle_parents(leaves).tobytes())
    assert all(answer == answers["portable-lanes4"] for answer in answers.values())
    records, root = answers["shani"][:2]
    assert records == b"".join(bitcoin.sha256d(buffer[i:i + record_size])
                               for i in range(0, len(buffer), record_size))
    assert root == bitcoin.merkle_root([row.tobytes() for row in leaves])


@per_backend
@given(leaves=st.lists(leaf, max_size=70))
def test_merkle_root_matches_the_reference(backend, leaves):
    want = bitcoin.merkle_root(leaves)
    assert hashing.merkle_root(leaves) == want
    array = np.frombuffer(b"".join(leaves), dtype=np.uint8).reshape(-1, 32)
    assert hashing.merkle_root(array) == want
    assert array.tobytes() == b"".join(leaves)  # the caller's leaves are left untouched
    parents = hashing.merkle_parents(leaves)
    padded = leaves + leaves[-1:] if len(leaves) % 2 else leaves
    assert [row.tobytes() for row in parents] == [
        bitcoin.sha256d(padded[i] + padded[i + 1]) for i in range(0, len(padded), 2)]


@pytest.mark.parametrize("threads", [2, 3])
@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 20_000), seed=st.integers(0, 2**32 - 1))
def test_threaded_merkle_and_one_more_leaf_match_the_reference(threads, count, seed):
    """Levels above 2,048 pairs hash on several threads; a block's root (its txids plus one
    leaf) read off the txids' levels equals the root of the whole tree hashed afresh."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (count, 32), dtype=np.uint8)
    extra = rng.bytes(32)
    leaves = [row.tobytes() for row in array]
    want = bitcoin.merkle_root(leaves)
    levels = hashing.merkle_levels(array, threads)
    assert levels[-1].tobytes() == want == hashing.merkle_root(array, threads)
    assert hashing.merkle_root_plus_leaf(levels, extra) == bitcoin.merkle_root(leaves + [extra])
    assert [len(level) for level in levels] == [len(level) for level in hashing.merkle_levels(
        array)]


@given(leaves=st.lists(leaf, min_size=1, max_size=40, unique=True))
def test_a_proof_never_places_a_leaf_past_the_end(leaves):
    """The self-paired last node of an odd level cannot prove the same leaf one place further
    on (Bitcoin's CVE-2012-2459): every position a proof verifies at is the leaf's own."""
    root = bitcoin.merkle_root(leaves)
    last = len(leaves) - 1
    proof = hashing.merkle_proof(leaves, last)
    for index in range(last + 1, 2 ** len(proof)):
        assert not hashing.verify_merkle_proof(leaves[last], proof, index, root)
    assert hashing.verify_merkle_proof(leaves[last], proof, last, root)


def flip(data: bytes, position: int) -> bytes:
    position %= len(data) * 8
    changed = bytearray(data)
    changed[position // 8] ^= 1 << (position % 8)
    return bytes(changed)


@per_backend
@given(leaves=st.lists(leaf, min_size=1, max_size=40, unique=True), data=st.data())
def test_merkle_proofs_round_trip_and_reject_tampering(backend, leaves, data):
    root = bitcoin.merkle_root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    proof = hashing.merkle_proof(leaves, index)
    assert len(proof) == (len(leaves) - 1).bit_length()
    assert hashing.verify_merkle_proof(leaves[index], proof, index, root)
    bit = data.draw(st.integers(0, 255), label="bit")
    assert not hashing.verify_merkle_proof(flip(leaves[index], bit), proof, index, root)
    assert not hashing.verify_merkle_proof(leaves[index], proof, index, flip(root, bit))
    if proof:
        level = data.draw(st.integers(0, len(proof) - 1), label="level")
        tampered = proof[:level] + [flip(proof[level], bit)] + proof[level + 1:]
        assert not hashing.verify_merkle_proof(leaves[index], tampered, index, root)
        assert not hashing.verify_merkle_proof(leaves[index], proof[:-1], index, root)
        other = data.draw(st.integers(0, len(leaves) - 1).filter(lambda i: i != index))
        assert not hashing.verify_merkle_proof(leaves[index], proof, other, root)
    assert not hashing.verify_merkle_proof(leaves[index], proof + [root], index, root)
    assert not hashing.verify_merkle_proof(leaves[index], proof, -1, root)
    assert not hashing.verify_merkle_proof(leaves[index], proof, index + 2 ** len(proof), root)


@plain
@given(leaves=st.lists(leaf, min_size=1, max_size=40, unique=True), data=st.data())
def test_multiproofs_round_trip_pin_the_size_and_reject_tampering(leaves, data):
    """One proof of many leaves (the connection contract's batched steps): it rebuilds the
    root from exactly the leaves it names, the contract's own walk agrees with hashing's,
    the last leaf known pins the tree's size, and any change to a leaf, a hash, the count of
    hashes or a position is refused."""
    from tsunagi.connect.contract import multiproof_root

    root, size = bitcoin.merkle_root(leaves), len(leaves)
    levels = hashing.merkle_levels(leaves)
    positions = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1), label="known"))
    known = {position: leaves[position] for position in positions}
    hashes = hashing.merkle_multiproof(levels, positions)
    assert hashing.verify_merkle_multiproof(known, size, hashes, root)
    assert multiproof_root([[p, leaves[p]] for p in positions], size, hashes) == root
    if len(positions) == size:
        assert hashes == []
    if len(positions) == 1 and size > 1:  # one leaf: its path less the self-paired nodes
        assert len(hashes) <= len(hashing.merkle_proof(leaves, positions[0]))
    if size - 1 in positions:
        for other in (size - 1, size + 1, size + 2):
            if other >= 1 and other != size:
                assert not hashing.verify_merkle_multiproof(known, other, hashes, root)
    bit = data.draw(st.integers(0, 255), label="bit")
    first = positions[0]
    assert not hashing.verify_merkle_multiproof({**known, first: flip(leaves[first], bit)},
                                                size, hashes, root)
    assert not hashing.verify_merkle_multiproof(known, size, hashes + [root], root)
    if hashes:
        at = data.draw(st.integers(0, len(hashes) - 1), label="hash")
        tampered = hashes[:at] + [flip(hashes[at], bit)] + hashes[at + 1:]
        assert not hashing.verify_merkle_multiproof(known, size, tampered, root)
        assert multiproof_root([[p, leaves[p]] for p in positions], size, tampered) != root
        assert not hashing.verify_merkle_multiproof(known, size, hashes[:-1], root)
    moved = data.draw(st.integers(0, size - 1), label="moved")
    if moved not in known and leaves[moved] != leaves[first]:
        shifted = {**{p: v for p, v in known.items() if p != first}, moved: leaves[first]}
        assert not hashing.verify_merkle_multiproof(shifted, size, hashes, root)


# Bitcoin Core, src/test/arith_uint256_tests.cpp: SetCompact -> value, GetCompact -> bits.
COMPACT_VECTORS = [
    (0x00000000, 0, 0x00000000),
    (0x00123456, 0, 0x00000000),
    (0x01003456, 0, 0x00000000),
    (0x02000056, 0, 0x00000000),
    (0x03000000, 0, 0x00000000),
    (0x04000000, 0, 0x00000000),
    (0x01123456, 0x12, 0x01120000),
    (0x02123456, 0x1234, 0x02123400),
    (0x03123456, 0x123456, 0x03123456),
    (0x04123456, 0x12345600, 0x04123456),
    (0x05009234, 0x92340000, 0x05009234),
    (0x20123456, 0x123456 << 232, 0x20123456),
    (0x1D00FFFF, 0xFFFF << 208, 0x1D00FFFF),  # genesis, difficulty 1
    (0x1B0404CB, 0x0404CB << 192, 0x1B0404CB),  # the Bitcoin wiki's difficulty example
    (0x207FFFFF, 0x7FFFFF << 232, 0x207FFFFF),  # regtest
]


@pytest.mark.parametrize("bits, target, compact", COMPACT_VECTORS)
def test_compact_bits_match_bitcoin_core(bits, target, compact):
    assert hashing.bits_to_target(bits) == target
    assert hashing.target_to_bits(target) == compact


def test_target_to_bits_moves_the_sign_bit_like_bitcoin_core():
    assert hashing.target_to_bits(0x80) == 0x02008000
    assert hashing.work_from_bits(0x1D00FFFF) == 0x100010001
    assert hashing.work_from_bits(0x207FFFFF) == 2


@pytest.mark.parametrize("bits", [0x01FEDCBA, 0x04923456, 0x1D80FFFF,  # negative
                                  0xFF123456, 0x23000001, 0x22010000,  # overflow
                                  -1, 2**32])  # not 32-bit
def test_negative_and_overflowing_bits_raise(bits):
    with pytest.raises(EncodingError, match="bits"):
        hashing.bits_to_target(bits)


@pytest.mark.parametrize("target", [-1, 2**256])
def test_target_out_of_range_raises(target):
    with pytest.raises(EncodingError, match="target"):
        hashing.target_to_bits(target)


@plain
@given(target=st.integers(0, 2**256 - 1))
def test_target_to_bits_rounds_down_to_three_significant_bytes(target):
    bits = hashing.target_to_bits(target)
    rounded = hashing.bits_to_target(bits)
    assert rounded <= target
    assert not bits & 0x00800000  # never the sign bit
    # At least the 16 highest bits survive (17 to 24 unless the sign bit forced a shift).
    assert target - rounded < 2 ** max(0, target.bit_length() - 16)
    assert hashing.target_to_bits(rounded) == bits  # canonical bits round-trip exactly


@plain
@given(bits=st.integers(0, 2**32 - 1))
def test_native_bits_check_agrees_with_python(bits):
    try:
        target = hashing.bits_to_target(bits)
    except EncodingError:
        target = None
    usable = target is not None and target > 0
    assert (native.bits_valid(bits) == 0) == usable


@per_backend
@given(fields=st.tuples(st.integers(0, 2**32 - 1), leaf, leaf, st.integers(0, 2**32 - 1)),
       bits=st.sampled_from([0x207FFFFF, 0x2000FFFF, 0x1F00FFFF, 0x1D00FFFF, 0x1D80FFFF]),
       nonce=st.integers(0, 2**32 - 1))
def test_check_pow_and_header_hash_match_python(backend, fields, bits, nonce):
    version, prev, root, time = fields
    header = hashing.make_header(version, prev, root, time, bits, nonce)
    assert header == struct.pack("<I32s32sIII", version, prev, root, time, bits, nonce)
    assert hashing.header_fields(header) == (version, prev, root, time, bits, nonce)
    digest = bitcoin.sha256d(header)
    assert hashing.header_hash(header) == digest
    try:
        target = hashing.bits_to_target(bits)
    except EncodingError:
        target = -1  # negative bits: nothing meets them
    assert hashing.check_pow(header) == (int.from_bytes(digest, "little") <= target)


EASY_BITS = 0x2000FFFF  # about one hash in 256 qualifies: hashlib finds the answer quickly


@per_backend
@given(seed=st.binary(min_size=8, max_size=8), first=st.integers(0, 2**32 - 1),
       count=st.integers(0, 1500), threads=st.integers(1, 3), chunk=st.integers(1, 200))
def test_nonce_search_finds_the_lowest_nonce_hashlib_finds(backend, seed, first, count,
                                                          threads, chunk):
    count = min(count, 2**32 - first)
    header = hashing.make_header(2, hashlib.sha256(seed).digest(), bytes(32), 1, EASY_BITS)
    want = bitcoin.lowest_nonce(header, first, count)
    # A small chunk makes threads interleave claims, so order across threads is exercised.
    assert hashing.NonceSearch(header, first, count, chunk).run(threads) == want
    assert hashing.search_nonce(header, first, count, threads) == want


# A regtest chain longer than the 512-header batches of ext/pow.c, with a header of harder
# bits every 97, so the cached target must be recomputed along the way.
CHAIN_BITS = [0x2000FFFF if index % 97 == 50 else 0x207FFFFF for index in range(1300)]


@pytest.fixture(scope="module")
def long_chain() -> list[bytes]:
    return bitcoin.mine_chain(CHAIN_BITS, seed=1)


def test_long_chain_validates(backend, long_chain):
    headers = b"".join(long_chain)
    for threads in (1, 2, 3):
        assert hashing.validate_headers(headers, bytes(32), threads) == (1300, HeaderResult.ok)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_bad_header_across_batches_and_thread_splits(backend, long_chain, threads):
    points = {0, 1, 50, 147, 511, 512, 513, 1023, 1024, 1025, 1299}
    points |= {1300 * worker // threads + delta for worker in range(1, threads)
               for delta in (-1, 0, 1)}
    for index in sorted(points):
        version, prev, root, time, bits, nonce = hashing.header_fields(long_chain[index])
        broken = {
            HeaderResult.bad_pow: hashing.make_header(version, prev, root, time, 0x1D00FFFF,
                                                      nonce),
            HeaderResult.bad_bits: hashing.make_header(version, prev, root, time, 0x1D80FFFF,
                                                       nonce),
            HeaderResult.bad_link: hashing.make_header(version, bytes(32) if index else
                                                       b"\1" * 32, root, time, bits, nonce),
        }
        for reason, header in broken.items():
            headers = long_chain[:index] + [header] + long_chain[index + 1:]
            got = hashing.validate_headers(b"".join(headers), bytes(32), threads)
            assert got == (index, reason), f"{reason.name} at {index}"


@pytest.mark.parametrize("threads", [1, 2])
def test_harder_bits_are_not_checked_against_a_stale_target(backend, long_chain, threads):
    # Header 147 claims bits 0x2000ffff; give it a nonce that meets only the regtest target of
    # the headers around it. A target cached from the header before would wrongly accept it.
    version, prev, root, time, bits, _ = hashing.header_fields(long_chain[147])
    assert bits == 0x2000FFFF
    easy = bitcoin.bits_target(0x207FFFFF)
    hard = bitcoin.bits_target(bits)
    for nonce in range(1000):
        header = hashing.make_header(version, prev, root, time, bits, nonce)
        if hard < int.from_bytes(bitcoin.sha256d(header), "little") <= easy:
            break
    chain = long_chain[:147] + [header] + long_chain[148:]
    assert hashing.validate_headers(b"".join(chain), bytes(32), threads) == (
        147, HeaderResult.bad_pow)
