"""Damage to committed blocks is found; a torn, unacknowledged tail is dropped without loss.

Method: a small chain is written and closed, then copies of its directory get one byte of the
block log changed (every block's frame is hit at random offsets, and every byte of the last
block's header). Each damaged copy must either refuse to open with CorruptLogError or fail
Ledger.verify(). A deliberate tamperer who also rewrites the frame checksums must still be
caught by verify() (hashes, links, Merkle roots, signatures, replayed codes). A partial frame
appended after the last acknowledged block (a crash during a write) must be dropped on open,
keeping every acknowledged block. The LMDB index is left out of the copies: it is derived data
and rebuilds from the log.
"""

import random
import shutil
import struct
import zlib

import pytest

from tsunagi.core import records
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import CorruptLogError
from tsunagi.ledger import Ledger
from tsunagi.ledger.log import LOG_NAME

CHAIN = 9


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A closed chain of 5 blocks: genesis and 4 blocks of signed transfers."""
    directory = tmp_path_factory.mktemp("pristine") / "chain"
    alice, bob = PrivateKey.generate(), PrivateKey.generate()
    config = ChainConfig(name="tamper", chain_id=CHAIN, asset_code="TSU",
                         allocations=((alice.public_key, 10_000), (bob.public_key, 10_000)))
    with Ledger.create(directory, config) as ledger:
        for block in range(4):
            batch = [records.transfer(CHAIN, 10 * block + i + 1, 1 + i % 2, 2 - i % 2, 1 + i)
                     for i in range(3)]
            keys = [alice if i % 2 == 0 else bob for i in range(3)]
            answer = ledger.submit_batch(b"".join(batch), b"".join(
                k.sign_record(r) for k, r in zip(keys, batch)))
            assert not answer.codes.any()
        heights = ledger.height
        balances = (ledger.balance(1), ledger.balance(2))
    assert balances == (10_000 - 4 * 2, 10_000 + 4 * 2)  # per block: Alice pays 1 + 3, gets 2
    return directory, heights, balances


def _frames(log: bytes) -> list[tuple[int, int]]:
    """(start, end) of each frame: a 32-byte header whose bytes 4..8 are the payload length."""
    spans, offset = [], 0
    while offset < len(log):
        length = int.from_bytes(log[offset + 4: offset + 8], "little")
        spans.append((offset, offset + 32 + length))
        offset += 32 + length
    return spans


def _copy(source, target, log: bytes) -> None:
    """The chain's durable files with the given log; no index (it rebuilds from the log)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for name in ("config.json", "blocks.seal", "blocks.synced", "blocks.checkpoint",
                 "blocks.offsets"):
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    if (source / "snapshots").exists():
        shutil.copytree(source / "snapshots", target / "snapshots")
    (target / LOG_NAME).write_bytes(log)


def _reseal(log: bytearray, start: int, end: int, directory) -> None:
    """Rewrites a frame's payload and header checksums, as a tamperer who knows the format and
    can read the log's seal (its header checksum key, bytes 4..15 of blocks.seal)."""
    key = (directory / "blocks.seal").read_bytes()[4:16]
    struct.pack_into("<I", log, start + 24, zlib.crc32(log[start + 32:end]))
    struct.pack_into("<I", log, start + 28, zlib.crc32(log[start:start + 28], zlib.crc32(key)))


def _detected(directory) -> bool:
    try:
        with Ledger.open(directory) as ledger:
            return not ledger.verify().ok
    except CorruptLogError:
        return True


def test_any_flipped_byte_of_a_committed_block_is_detected(pristine, tmp_path):
    source, heights, _ = pristine
    log = (source / LOG_NAME).read_bytes()
    frames = _frames(log)
    assert len(frames) == heights
    rng = random.Random(7)
    positions = set()
    for start, end in frames:
        positions.update(rng.randrange(start, end) for _ in range(8))
    last_start, _ = frames[-1]
    positions.update(range(last_start, last_start + 32 + 80))  # last frame and block header
    for position in sorted(positions):
        damaged = bytearray(log)
        damaged[position] ^= 1 << rng.randrange(8)
        _copy(source, tmp_path / "flip", bytes(damaged))
        assert _detected(tmp_path / "flip"), f"a flipped bit at byte {position} went unnoticed"


def test_tampering_that_rewrites_the_checksums_is_caught_by_verify(pristine, tmp_path):
    """The checksums only find accidents; the hash chain must find a deliberate change."""
    source, _, _ = pristine
    log = (source / LOG_NAME).read_bytes()
    rng = random.Random(11)
    for start, end in _frames(log)[1:]:  # genesis is checked against config.json instead
        # Header fields and record bytes of every block, at random.
        for position in rng.sample(range(start + 32, end), 10):
            damaged = bytearray(log)
            damaged[position] ^= 1 << rng.randrange(8)
            _reseal(damaged, start, end, source)
            _copy(source, tmp_path / "forged", bytes(damaged))
            assert _detected(tmp_path / "forged"), (
                f"forged byte {position} (frame byte {position - start}) went unnoticed")


def test_a_torn_tail_is_dropped_and_every_acknowledged_block_kept(pristine, tmp_path):
    source, heights, balances = pristine
    log = (source / LOG_NAME).read_bytes()
    start, end = _frames(log)[-1]
    for cut in (1, 31, 32, 100, end - start - 1):
        copy = tmp_path / "torn"
        # A crash while appending one more block: only part of its frame reached the file.
        _copy(source, copy, log + log[start: start + cut])
        with Ledger.open(copy) as ledger:
            assert ledger.height == heights
            assert ledger.verify().ok
            assert (ledger.balance(1), ledger.balance(2)) == balances
        assert (copy / LOG_NAME).stat().st_size == len(log)


def test_a_lost_acknowledged_block_refuses_to_open(pristine, tmp_path):
    source, _, _ = pristine
    log = (source / LOG_NAME).read_bytes()
    start, _ = _frames(log)[-1]
    copy = tmp_path / "cut"
    _copy(source, copy, log[: start + 50])
    with pytest.raises(CorruptLogError, match="restore|Restore"):
        Ledger.open(copy)
