"""The native hashing core reproduces real Bitcoin data: header hashes, links, proof of work,
Merkle roots and nonces of mainnet blocks, on both SHA-256 backends.

Method: the block files of shared/testdata/bitcoin are parsed in test code (tests/bitcoin.py,
struct and hashlib only) and the values Bitcoin itself recorded are the known answers: each
header's hash is the next header's prev-hash, each Merkle root is in its header, each nonce is
the one the miner found. Corrupted copies of the chain must be reported at the right index.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

import bitcoin
from tsunagi import hashing
from tsunagi.hashing import HeaderResult

NONCE_BEHIND = 1 << 22  # the search starts up to this far below the real nonce


@pytest.fixture(scope="module")
def mainnet(bitcoin_dir) -> list[bitcoin.Block]:
    """Mainnet blocks 1 to 255."""
    return bitcoin.read_blocks(bitcoin_dir / "blocks1-256.bz2")


@pytest.fixture(scope="module")
def chain(mainnet) -> list[bytes]:
    """Headers of mainnet blocks 0 (genesis, from its published fields) to 255."""
    return [bitcoin.GENESIS_HEADER] + [block.header for block in mainnet]


@pytest.fixture(scope="module")
def block_277647(bitcoin_dir) -> bitcoin.Block:
    (block,) = bitcoin.read_blocks(bitcoin_dir / "277647.dat.bz2")
    return block


def test_every_mainnet_header_hashes_to_the_next_prev_hash_and_meets_its_target(chain, backend):
    hashes = [hashing.header_hash(header) for header in chain]
    assert hashes[0][::-1].hex() == bitcoin.GENESIS_HASH_HEX
    for height, header in enumerate(chain[1:], start=1):
        assert header[4:36] == hashes[height - 1], f"block {height} prev-hash"
    for height, header in enumerate(chain):
        assert hashes[height] == bitcoin.sha256d(header)
        assert hashing.check_pow(header), f"block {height} misses its target"
        target = hashing.bits_to_target(hashing.header_fields(header)[4])
        assert int.from_bytes(hashes[height], "little") <= target


@pytest.mark.parametrize("threads", [1, 2])
def test_mainnet_chain_validates_from_genesis(chain, backend, threads):
    headers = b"".join(chain)
    assert hashing.validate_headers(headers, threads=threads) == (256, HeaderResult.ok)
    assert hashing.validate_headers(headers, bytes(32), threads) == (256, HeaderResult.ok)
    # Without genesis, block 1 must link to genesis's known hash.
    genesis_hash = bytes.fromhex(bitcoin.GENESIS_HASH_HEX)[::-1]
    assert hashing.validate_headers(b"".join(chain[1:]), genesis_hash, threads) == (
        255, HeaderResult.ok)
    assert hashing.validate_headers(b"".join(chain[1:]), bytes(32), threads) == (
        0, HeaderResult.bad_link)


def corrupt(header: bytes, how: str) -> bytes:
    """A copy of a real header broken in one way."""
    version, prev, root, time, bits, nonce = struct.unpack("<I32s32sIII", header)
    if how == "link":
        prev = bytes([prev[0] ^ 1]) + prev[1:]
    elif how == "pow":
        nonce ^= 0x5A5A5A5A
    elif how == "bits_negative":
        bits |= 0x00800000
    elif how == "bits_overflow":
        bits = 0xFF00FFFF
    elif how == "bits_zero":
        bits = 0x1D000000
    return struct.pack("<I32s32sIII", version, prev, root, time, bits, nonce)


EXPECTED = {"link": HeaderResult.bad_link, "pow": HeaderResult.bad_pow,
            "bits_negative": HeaderResult.bad_bits, "bits_overflow": HeaderResult.bad_bits,
            "bits_zero": HeaderResult.bad_bits}


def split_points(count: int, threads: int) -> set[int]:
    """Indices on each side of the boundaries where ext/parallel.c splits count among threads."""
    points = {0, 1, count - 1}
    for worker in range(1, threads):
        boundary = count * worker // threads
        points |= {boundary - 1, boundary, boundary + 1}
    return points


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("how", sorted(EXPECTED))
def test_corrupted_header_is_reported_at_its_index(chain, backend, threads, how):
    for index in sorted(split_points(len(chain), max(threads, 2))):
        headers = list(chain)
        headers[index] = corrupt(headers[index], how)
        got = hashing.validate_headers(b"".join(headers), bytes(32), threads)
        # Genesis has no parent in the buffer: its link is checked against prev_hash only.
        assert got == (index, EXPECTED[how]), f"corrupted {how} at {index}"


@pytest.mark.parametrize("threads", [1, 2])
def test_lowest_of_two_bad_headers_wins_across_threads(chain, backend, threads):
    headers = list(chain)
    headers[200] = corrupt(headers[200], "pow")  # in the second thread's half
    headers[100] = corrupt(headers[100], "bits_overflow")  # in the first
    assert hashing.validate_headers(b"".join(headers), None, threads) == (
        100, HeaderResult.bad_bits)
    headers = list(chain)
    headers[127] = corrupt(headers[127], "pow")  # last of the first half: 128 then links badly
    assert hashing.validate_headers(b"".join(headers), None, threads) == (
        127, HeaderResult.bad_pow)


def test_eleven_mainnet_header_lines_validate(bitcoin_dir, chain, backend):
    lines = bitcoin.read_header_lines(bitcoin_dir / "blockheaders-mainnet-1-11.txt")
    assert lines == chain[1:12]
    genesis_hash = hashing.header_hash(bitcoin.GENESIS_HEADER)
    for threads in (1, 2):
        assert hashing.validate_headers(b"".join(lines), genesis_hash, threads) == (
            11, HeaderResult.ok)
    swapped = lines[:4] + [lines[5], lines[4]] + lines[6:]
    assert hashing.validate_headers(b"".join(swapped), genesis_hash) == (
        4, HeaderResult.bad_link)


def check_merkle_root(block: bitcoin.Block) -> None:
    txids = block.txids  # hashlib, in test code
    assert [hashing.sha256d(tx) for tx in block.transactions] == txids
    assert hashing.merkle_root(txids) == block.merkle_root
    assert bitcoin.merkle_root(txids) == block.merkle_root
    leaves = np.frombuffer(b"".join(txids), dtype=np.uint8).reshape(-1, 32)
    assert hashing.merkle_root(leaves) == block.merkle_root


def test_merkle_roots_of_mainnet_blocks(mainnet, backend):
    for block in mainnet:
        check_merkle_root(block)
    assert sum(len(block.transactions) > 1 for block in mainnet) == 7  # 170, 181, ...


def test_merkle_root_and_proofs_of_block_277647(block_277647, backend):
    assert len(block_277647.transactions) == 213
    check_merkle_root(block_277647)
    txids = block_277647.txids
    assert hashing.check_pow(block_277647.header)
    for index in (0, 1, 100, 211, 212):  # 212 is the odd one out, paired with itself
        proof = hashing.merkle_proof(txids, index)
        assert len(proof) == 8
        assert hashing.verify_merkle_proof(txids[index], proof, index, block_277647.merkle_root)
        # Another position inside the tree must not verify. (An index past the end can: 213
        # for leaf 212, whose sibling is itself; a proof alone does not fix the leaf count.)
        other = index ^ 1 if index ^ 1 < len(txids) else index - 1
        assert not hashing.verify_merkle_proof(txids[index], proof, other,
                                               block_277647.merkle_root)


def test_reorg_side_chain_links_where_the_readme_says(bitcoin_dir, backend):
    main = bitcoin.read_blocks(bitcoin_dir / "blk_0_to_4.dat.bz2")
    side = [bitcoin.read_blocks(bitcoin_dir / f"blk_{name}.dat.bz2")[0]
            for name in ("3A", "4A", "5A")]
    assert main[0].header == bitcoin.GENESIS_HEADER
    for block in main + side:
        check_merkle_root(block)
    main_headers = b"".join(block.header for block in main)
    side_headers = b"".join(block.header for block in side)
    block2_hash = hashing.header_hash(main[2].header)
    assert hashing.validate_headers(main_headers, bytes(32)) == (5, HeaderResult.ok)
    assert hashing.validate_headers(side_headers, block2_hash) == (3, HeaderResult.ok)
    fork = b"".join(block.header for block in main[:3]) + side_headers
    assert hashing.validate_headers(fork, bytes(32), 2) == (6, HeaderResult.ok)
    # 3A does not extend block 3 or 4, and 4A does not extend main block 3.
    assert hashing.validate_headers(side_headers, hashing.header_hash(main[3].header)) == (
        0, HeaderResult.bad_link)
    assert hashing.validate_headers(main_headers + side[1].header) == (5, HeaderResult.bad_link)
    work = [sum(hashing.work_from_bits(block.bits) for block in blocks)
            for blocks in (main, main[:3] + side)]
    assert work[1] > work[0]  # the side chain outgrows the main one: a reorg


def search_from_below(block: bitcoin.Block, behind: int, threads: int) -> int | None:
    header = block.header[:76] + bytes(4)  # the nonce field blanked
    start = max(0, block.nonce - behind)
    return hashing.search_nonce(header, start, behind + 1, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("height", [1, 9, 11])
def test_search_rediscovers_real_mainnet_nonces(mainnet, height, threads):
    block = mainnet[height - 1]
    assert search_from_below(block, NONCE_BEHIND, threads) == block.nonce


@pytest.mark.parametrize("threads", [1, 2])
def test_search_rediscovers_a_real_nonce_on_each_backend(mainnet, backend, threads):
    block = mainnet[4]
    # Narrow lanes can be several times slower than SHA-NI: a shorter run-up keeps them quick.
    behind = NONCE_BEHIND if backend == "shani" else NONCE_BEHIND // 4
    assert search_from_below(block, behind, threads) == block.nonce


@pytest.mark.parametrize("threads", [1, 2])
def test_search_rediscovers_the_nonce_of_block_277647(block_277647, threads):
    # Difficulty 5 billion times genesis's: no other nonce nearby can qualify.
    assert search_from_below(block_277647, 1 << 20, threads) == block_277647.nonce
    header = block_277647.header[:76] + bytes(4)
    assert hashing.search_nonce(header, block_277647.nonce - 1000, 1000, threads) is None
    assert hashing.search_nonce(header, block_277647.nonce, 1, threads) == block_277647.nonce
