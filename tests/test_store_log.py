"""The block log keeps every synced block byte-exact, drops only torn tails that were never
acknowledged, and refuses to open when a committed frame is damaged, naming block and offset.

Method: the frame layout is rebuilt here from the module docstring (struct and zlib, not the
module's code) and compared with the bytes on disk. Crash states are made by copying the data
directory while the writer still has it open (what a killed process leaves), then damaging it:
hypothesis picks which frame and which byte to flip, or where to cut the file. The checksum
module's crc32 (zlib-ng) is compared with zlib's on random data.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.errors import CorruptLogError, EncodingError, LockedError, StorageError
from tsunagi.ledger import limits as ledger_limits
from tsunagi.ledger.log import BlockLog, crc32_rows, write_with_writeback

HEADER_BYTES = 32


LEGACY_SEAL = (b"TSB1", 0)


def seal_of(directory: Path) -> tuple[bytes, int]:
    """(frame magic, crc32 the header checksums start from) of the log in ``directory``, from
    blocks.seal as the log module's docstring lays it out; b"TSB1" and 0 without one."""
    path = directory / "blocks.seal"
    if not path.exists():
        return LEGACY_SEAL
    raw = path.read_bytes()
    assert len(raw) == 20 and zlib.crc32(raw[:16]) == struct.unpack("<I", raw[16:])[0]
    return raw[:4], zlib.crc32(raw[4:16])


def frame(height: int, group_first: int, payload: bytes, seal=LEGACY_SEAL) -> bytes:
    """A frame as the log module's docstring describes it."""
    head = struct.pack("<4sIQQI", seal[0], len(payload), height, group_first,
                       zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head, seal[1])) + payload


def make_blocks(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(1, 400)) for _ in range(count)]


def frame_offsets(blocks: list[bytes]) -> list[int]:
    offsets, position = [], 0
    for block in blocks:
        offsets.append(position)
        position += HEADER_BYTES + len(block)
    return offsets + [position]


def crash_copy(source: Path, target: Path) -> Path:
    """The data directory as a process killed right now would leave it."""
    shutil.copytree(source, target)
    return target


def flip(path: Path, position: int, mask: int = 0x5A) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= mask
    path.write_bytes(data)


def assert_blocks(directory: Path, expected: list[bytes]) -> None:
    with BlockLog.open(directory) as block_log:
        assert block_log.height == len(expected)
        assert [block_log.read(height) for height in range(len(expected))] == expected
        assert list(block_log.iter_blocks()) == expected
        assert block_log.verify_frames() == len(expected)


BLOCKS = make_blocks(6, seed=1)
OFFSETS = frame_offsets(BLOCKS)


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> dict[str, Path]:
    """Six blocks, each synced on its own: as a crash left them, and after a clean close."""
    root = tmp_path_factory.mktemp("states")
    block_log = BlockLog.open(root / "live", create=True)
    for block in BLOCKS:
        block_log.append(block)
        block_log.sync()
    crashed = crash_copy(root / "live", root / "crashed")
    block_log.close()
    return {"crashed": crashed, "closed": root / "live"}


def test_round_trip_and_bytes_on_disk_match_the_documented_frames(tmp_path):
    blocks = make_blocks(40, seed=2) + [b"", bytes(5000)]
    with BlockLog.open(tmp_path, create=True) as block_log:
        assert [block_log.append(block) for block in blocks[:10]] == list(range(10))
        assert block_log.sync() == 10
        for block in blocks[10:]:
            block_log.append(block)
        assert block_log.synced_height == 10 and block_log.height == len(blocks)
        assert block_log.read(41) == blocks[41]  # readable before it is synced
        assert list(block_log.iter_blocks(17)) == blocks[17:]
    # Blocks 0..9 form the first sync group; the rest were synced together at close.
    seal = seal_of(tmp_path)
    assert seal != LEGACY_SEAL  # a new log gets a random seal
    expected = b"".join(frame(h, 0 if h < 10 else 10, block, seal)
                        for h, block in enumerate(blocks))
    assert (tmp_path / "blocks.log").read_bytes() == expected
    assert_blocks(tmp_path, blocks)


def test_open_refuses_a_missing_log_unless_asked_to_create(tmp_path):
    with pytest.raises(StorageError, match="create=True"):
        BlockLog.open(tmp_path / "nowhere")
    with pytest.raises(StorageError, match="holds no block log"):
        BlockLog.open(tmp_path)
    with pytest.raises(EncodingError), BlockLog.open(tmp_path, create=True) as block_log:
        block_log.append(bytes(ledger_limits.log_block_bytes_max + 1))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(0, len(BLOCKS) - 1), where=st.floats(0, 1, exclude_max=True),
       mask=st.integers(1, 255))
def test_any_flipped_byte_of_a_synced_frame_after_a_crash_is_named(states, height, where, mask):
    start, end = OFFSETS[height], OFFSETS[height + 1]
    with tempfile.TemporaryDirectory() as scratch:
        directory = crash_copy(states["crashed"], Path(scratch) / "d")
        flip(directory / "blocks.log", start + int(where * (end - start)), mask)
        with pytest.raises(CorruptLogError) as raised:
            BlockLog.open(directory)
    assert (raised.value.height, raised.value.offset) == (height, start)
    assert f"block {height} " in str(raised.value) and f"offset {start} " in str(raised.value)
    assert "backup" in str(raised.value)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(0, len(BLOCKS) - 1), where=st.floats(0, 1, exclude_max=True),
       mask=st.integers(1, 255))
def test_after_a_clean_close_headers_are_checked_on_open_and_payloads_on_read(
        states, height, where, mask):
    start, end = OFFSETS[height], OFFSETS[height + 1]
    position = start + int(where * (end - start))
    with tempfile.TemporaryDirectory() as scratch:
        directory = crash_copy(states["closed"], Path(scratch) / "d")
        flip(directory / "blocks.log", position, mask)
        if position < start + HEADER_BYTES:  # the checkpoint's structure check sees headers
            with pytest.raises(CorruptLogError) as raised:
                BlockLog.open(directory)
            assert (raised.value.height, raised.value.offset) == (height, start)
            return
        with BlockLog.open(directory) as block_log:
            other = height - 1 if height else height + 1
            assert block_log.read(other) == BLOCKS[other]
            for check in (lambda: block_log.read(height), lambda: list(block_log.iter_blocks()),
                          block_log.verify_frames):
                with pytest.raises(CorruptLogError) as raised:
                    check()
                assert (raised.value.height, raised.value.offset) == (height, start)


def unsynced_tail_state(root: Path) -> tuple[Path, list[bytes], int]:
    """Blocks 0..3 synced; blocks 4..6 handed to the OS but not synced, then a crash."""
    blocks = make_blocks(7, seed=3)
    with BlockLog.open(root / "live", create=True) as block_log:
        for block in blocks[:4]:
            block_log.append(block)
        block_log.sync()
        for block in blocks[4:]:
            block_log.append(block)
        block_log.read(6)  # flushes the buffered frames to the OS without a sync
        crashed = crash_copy(root / "live", root / "crashed")
    return crashed, blocks, 4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_torn_unsynced_tail_is_dropped_and_appending_goes_on(data):
    with tempfile.TemporaryDirectory() as scratch:
        directory, blocks, synced = unsynced_tail_state(Path(scratch))
        offsets = frame_offsets(blocks)
        path = directory / "blocks.log"
        if data.draw(st.booleans(), label="cut rather than flip"):
            cut = data.draw(st.integers(offsets[synced] + 1, offsets[-1] - 1), label="cut")
            path.write_bytes(path.read_bytes()[:cut])
        else:
            cut = data.draw(st.integers(offsets[synced], offsets[-1] - 1), label="flip")
            flip(path, cut)
        first_bad = max(h for h in range(len(blocks)) if offsets[h] <= cut)
        size = path.stat().st_size
        with BlockLog.open(directory) as block_log:
            assert block_log.height == first_bad
            assert block_log.recovered_bytes == size - offsets[first_bad]
            assert [block_log.read(h) for h in range(first_bad)] == blocks[:first_bad]
            block_log.append(b"after recovery")
        assert path.stat().st_size == offsets[first_bad] + HEADER_BYTES + len(b"after recovery")
        assert_blocks(directory, blocks[:first_bad] + [b"after recovery"])


def test_without_the_sync_mark_a_later_sync_group_still_proves_a_frame_committed(tmp_path):
    # A power cut can lose blocks.synced (never fsynced) while later frames reached the disk.
    directory, blocks, _ = unsynced_tail_state(tmp_path)
    offsets = frame_offsets(blocks)
    (directory / "blocks.synced").unlink()
    second = crash_copy(directory, tmp_path / "second")
    flip(directory / "blocks.log", offsets[2] + 40)  # group 0..3, and block 4 starts group 4
    with pytest.raises(CorruptLogError) as raised:
        BlockLog.open(directory)
    assert (raised.value.height, raised.value.offset) == (2, offsets[2])
    flip(second / "blocks.log", offsets[5] + 3)  # group 4..6 never had its sync: torn
    with BlockLog.open(second) as block_log:
        assert block_log.height == 5 and block_log.recovered_bytes == offsets[7] - offsets[5]


def test_a_header_a_client_wrote_into_a_torn_frame_does_not_stop_the_open(tmp_path):
    """Records are the clients' bytes. A torn frame holding a forged header that names a later
    sync group (laid out as the docstring says, with the legacy magic and checksum, or with
    this log's magic guessed right) must still be dropped as a torn tail: only a header under
    the log's secret seal proves a later sync."""
    with BlockLog.open(tmp_path, create=True) as block_log:
        for block in (b"one", b"two", b"three"):
            block_log.append(block)
        block_log.sync()
        magic = seal_of(tmp_path)[0]
        forged = b"".join(frame(50, 50, b"", seal) for seal in (LEGACY_SEAL, (magic, 0)))
        block_log.append(bytes(100) + forged + bytes(5000))
        block_log.sync()  # written, and then torn below as a crash mid-write leaves it
        crashed = crash_copy(tmp_path, tmp_path.parent / "torn")
    path = crashed / "blocks.log"
    data = path.read_bytes()
    start = len(data) - (HEADER_BYTES + 100 + len(forged) + 5000)
    path.write_bytes(data[:start + HEADER_BYTES + 100 + len(forged) + 10])  # cut after them
    (crashed / "blocks.synced").write_bytes(b"")  # the sync mark lost too, as a power cut can
    (crashed / "blocks.checkpoint").unlink(missing_ok=True)
    with BlockLog.open(crashed) as recovered:
        assert recovered.height == 3 and recovered.recovered_bytes > 0
    assert_blocks(crashed, [b"one", b"two", b"three"])


def test_a_log_written_before_seals_opens_and_grows_with_the_legacy_frames(tmp_path):
    """A data directory without blocks.seal holds frames with magic b"TSB1" and plain crc32
    headers: it opens, and what is appended to it is in the same layout."""
    blocks = [b"old one", b"old two"]
    (tmp_path / "blocks.log").write_bytes(b"".join(frame(h, 0, b) for h, b in enumerate(blocks)))
    with BlockLog.open(tmp_path) as block_log:
        assert block_log.height == 2
        block_log.append(b"new")
    assert not (tmp_path / "blocks.seal").exists()
    assert (tmp_path / "blocks.log").read_bytes() == \
        b"".join(frame(h, 0, b) for h, b in enumerate(blocks)) + frame(2, 2, b"new")
    assert_blocks(tmp_path, blocks + [b"new"])


def test_a_damaged_seal_stops_the_open_naming_the_file(tmp_path):
    with BlockLog.open(tmp_path, create=True) as block_log:
        block_log.append(b"one")
    flip(tmp_path / "blocks.seal", 5)
    with pytest.raises(CorruptLogError, match="blocks.seal is damaged"):
        BlockLog.open(tmp_path)


def test_a_log_shorter_than_its_synced_blocks_is_refused(tmp_path):
    directory, blocks, synced = unsynced_tail_state(tmp_path)
    offsets = frame_offsets(blocks)
    path = directory / "blocks.log"
    path.write_bytes(path.read_bytes()[:offsets[synced] - 10])
    with pytest.raises(CorruptLogError) as raised:
        BlockLog.open(directory)
    assert (raised.value.height, raised.value.offset) == (synced - 1, offsets[synced - 1])


def test_a_second_writer_is_locked_out_in_this_process_and_another(tmp_path):
    with BlockLog.open(tmp_path, create=True) as block_log:
        block_log.append(b"one")
        with pytest.raises(LockedError, match=str(tmp_path)):
            BlockLog.open(tmp_path)
        script = ("import sys\nfrom tsunagi.ledger.log import BlockLog\n"
                  "from tsunagi.errors import LockedError\n"
                  "try:\n    BlockLog.open(sys.argv[1])\nexcept LockedError as e:\n"
                  "    print(e)\n    sys.exit(3)\n")
        child = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert child.returncode == 3, child.stderr
        assert str(tmp_path) in child.stdout and "in use" in child.stdout
    with BlockLog.open(tmp_path) as block_log:  # free again after close
        assert block_log.read(0) == b"one"


def test_truncate_is_durable_and_appending_continues(tmp_path):
    blocks = make_blocks(30, seed=4)
    with BlockLog.open(tmp_path, create=True) as block_log:
        for block in blocks:
            block_log.append(block)
    with BlockLog.open(tmp_path) as block_log:  # the close above wrote a checkpoint at 30
        block_log.truncate(12)
        crashed = crash_copy(tmp_path, tmp_path.parent / "crashed-after-truncate")
        assert block_log.append(b"replacement") == 12
        block_log.sync()
        with pytest.raises(IndexError):
            block_log.read(13)
    assert_blocks(crashed, blocks[:12])
    assert_blocks(tmp_path, blocks[:12] + [b"replacement"])


def test_a_damaged_offsets_file_or_checkpoint_is_rebuilt_from_the_log(tmp_path):
    blocks = make_blocks(20, seed=5)
    with BlockLog.open(tmp_path, create=True) as block_log:
        for block in blocks:
            block_log.append(block)
    flip(tmp_path / "blocks.offsets", 8 * 7)
    assert_blocks(tmp_path, blocks)
    flip(tmp_path / "blocks.checkpoint", 9)
    assert_blocks(tmp_path, blocks)
    assert (tmp_path / "blocks.offsets").read_bytes() == b"".join(
        struct.pack("<Q", offset) for offset in frame_offsets(blocks)[:-1])


def test_periodic_checkpoints_bound_the_checked_tail_and_survive_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_limits, "log_checkpoint_interval_bytes", 1000)
    blocks = make_blocks(40, seed=6)
    offsets = frame_offsets(blocks)
    block_log = BlockLog.open(tmp_path / "live", create=True)
    for block in blocks[:30]:
        block_log.append(block)
        block_log.sync()
    for block in blocks[30:]:
        block_log.append(block)
    block_log.read(39)
    crashed = crash_copy(tmp_path / "live", tmp_path / "crashed")
    block_log.close()
    checkpoint_height = struct.unpack_from("<Q", (crashed / "blocks.checkpoint").read_bytes(), 8)[0]
    assert 20 < checkpoint_height <= 30
    torn = crash_copy(crashed, tmp_path / "torn")
    flip(torn / "blocks.log", offsets[35] + 40)
    with BlockLog.open(torn) as reopened:
        assert reopened.height == 35
        assert list(reopened.iter_blocks()) == blocks[:35]
    flip(crashed / "blocks.log", offsets[3] + 9)  # a header below the checkpoint
    with pytest.raises(CorruptLogError) as raised:
        BlockLog.open(crashed)
    assert (raised.value.height, raised.value.offset) == (3, offsets[3])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=28, max_size=28), min_size=1, max_size=50))
def test_the_vectorized_header_checksum_is_zlib_crc32(rows):
    array = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 28)
    assert crc32_rows(array).tolist() == [zlib.crc32(row) for row in rows]


def test_blocks_reserved_ahead_leave_the_size_alone_and_are_given_back_on_close(tmp_path):
    """Reserved disk blocks past the end never look like frames: the size is the log's end, a
    crash with blocks reserved reopens to the same blocks, and close gives the space back."""
    log = BlockLog.open(tmp_path, create=True)
    payloads = [bytes([i]) * (1000 + i) for i in range(5)]
    for payload in payloads:
        log.append(payload)
    log.sync()
    path = tmp_path / "blocks.log"
    end = path.stat().st_size
    assert end == sum(32 + len(payload) for payload in payloads)
    reserved = path.stat().st_blocks * 512 - end
    if reserved < ledger_limits.log_preallocate_bytes // 2:
        pytest.skip("this file system does not reserve blocks (fallocate KEEP_SIZE)")
    log._release()  # a crash: the files stay as they are, reserved blocks and all
    assert path.stat().st_size == end and path.stat().st_blocks * 512 - end == reserved
    crashed = BlockLog.open(tmp_path)
    assert [crashed.read(h) for h in range(crashed.height)] == payloads
    crashed.append(b"next")
    crashed.sync()
    crashed.close()
    assert path.stat().st_size == end + 36 and path.stat().st_blocks * 512 < end + (1 << 20)
    with BlockLog.open(tmp_path) as reopened:
        assert reopened.read(5) == b"next"


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 5000), max_size=12), chunk=st.integers(1, 3000),
       offset=st.integers(0, 100))
def test_chunked_writes_with_early_writeback_land_every_byte_in_place(sizes, chunk, offset):
    """Pieces cut at chunk boundaries anywhere inside them still land byte for byte."""
    pieces = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    with tempfile.TemporaryFile() as file:
        fd = file.fileno()
        written = write_with_writeback(fd, pieces, offset, chunk)
        assert written == sum(sizes)
        assert os.pread(fd, written + 10, offset) == b"".join(pieces)


@contextlib.contextmanager
def small_direct_writes():
    """Flushes from 5,000 bytes by O_DIRECT, through an aligned buffer of three disk blocks:
    every path of the direct appender at sizes a test writes quickly."""
    saved = ledger_limits.log_direct_bytes_min, ledger_limits.log_direct_chunk_bytes
    ledger_limits.log_direct_bytes_min, ledger_limits.log_direct_chunk_bytes = 5000, 3 * 4096
    try:
        yield
    finally:
        ledger_limits.log_direct_bytes_min, ledger_limits.log_direct_chunk_bytes = saved


def assert_keeps_what_was_synced(crashed: Path, blocks: list[bytes], synced: int) -> None:
    """A crash copy opens with every synced block, and whatever it keeps past them intact."""
    with BlockLog.open(crashed) as recovered:
        assert recovered.height >= synced
        kept = recovered.height
    assert_blocks(crashed, blocks[:kept])


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 30_000), st.booleans()), min_size=1, max_size=14),
       cut=st.integers(0, 14), seed=st.integers(0, 2**32))
def test_direct_and_cached_appends_mixed_land_byte_for_byte(steps, cut, seed):
    """Flushes past a threshold bypass the page cache (O_DIRECT, whole aligned blocks, the
    shared last block written again from memory). With the threshold and the aligned buffer
    made small, so that both kinds and buffer refills mix at every alignment, the file must
    still be exactly the documented frames, end where the log ends, survive a crash copy and
    a truncate, and reopen with every block."""
    rng = random.Random(seed)
    blocks = [rng.randbytes(size) for size, _ in steps]
    with small_direct_writes(), \
            tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as root:
        directory, groups, first = Path(root) / "log", [], 0
        with BlockLog.open(directory, create=True) as block_log:
            if block_log._direct is None:
                pytest.skip("this file system takes no O_DIRECT")
            for height, (block, (_, sync)) in enumerate(zip(blocks, steps)):
                block_log.append(block)
                groups.append(first)
                if sync:
                    block_log.sync()
                    first = height + 1
            synced = block_log.synced_height
            crashed = crash_copy(directory, Path(root) / "crashed")
            expected = b"".join(frame(h, g, b, seal_of(directory))
                                for h, (g, b) in enumerate(zip(groups, blocks)))
            block_log.sync()
            assert (directory / "blocks.log").read_bytes() == expected
            cut = min(cut, len(blocks))
            block_log.truncate(cut)
            tail = [rng.randbytes(size) for size in (7000, 3, 12_000)]
            for block in tail:
                block_log.append(block)
            block_log.sync()
        assert_blocks(directory, blocks[:cut] + tail)
        assert_keeps_what_was_synced(crashed, blocks, synced)


HOWS = ("bytes", "placed", "prewritten", "abandoned", "stale")


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 40_000), st.sampled_from(HOWS), st.booleans(),
                                st.integers(0, 40_000), st.integers(0, 40_000)),
                      min_size=1, max_size=10),
       seed=st.integers(0, 2**32))
def test_blocks_built_in_place_and_written_ahead_land_byte_for_byte(steps, seed):
    """Blocks built in the log's own buffers are written from where they lie, and part of
    one may go to the disk before its append (prewrite). Whatever happens in between (a
    different block appended instead, a buffer taken before another append, several frames in
    one flush) the file must be exactly the documented frames, end where the log ends, and
    reopen with every block, also from a crash copy."""
    rng = random.Random(seed)
    with small_direct_writes(), \
            tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as root:
        directory, blocks, groups, first = Path(root) / "log", [], [], 0
        with BlockLog.open(directory, create=True) as block_log:
            if block_log._direct is None:
                pytest.skip("this file system takes no O_DIRECT")
            for size, how, sync, low, high in steps:
                block = rng.randbytes(size)
                low, high = sorted((min(low, size), min(high, size)))
                if how == "bytes":
                    block_log.append(block)
                elif how == "stale":  # placed for a position another block then takes
                    buffer = block_log.payload_buffer(size)
                    buffer[:] = np.frombuffer(block, np.uint8)
                    other = rng.randbytes(rng.randint(0, 9000))
                    block_log.append(other)
                    blocks.append(other)
                    groups.append(first)
                    block_log.append(buffer, copy=False)
                else:
                    buffer = block_log.payload_buffer(size)
                    buffer[:] = np.frombuffer(block, np.uint8)
                    if how != "placed":
                        block_log.prewrite(buffer, low, high)
                    if how == "abandoned":  # a different block goes there instead
                        del buffer
                        block = rng.randbytes(rng.randint(0, 20_000))
                        block_log.append(block)
                    else:
                        block_log.append(buffer, copy=False)
                blocks.append(block)
                groups.append(first)
                if sync:
                    block_log.sync()
                    first = len(blocks)
            synced = block_log.synced_height
            crashed = crash_copy(directory, Path(root) / "crashed")
            block_log.sync()
            expected = b"".join(frame(h, g, b, seal_of(directory))
                                for h, (g, b) in enumerate(zip(groups, blocks)))
            # Past the end may lie what an abandoned prewrite put there: a torn tail.
            assert (directory / "blocks.log").read_bytes()[:len(expected)] == expected
        assert (directory / "blocks.log").read_bytes() == expected  # close cut it off
        assert_blocks(directory, blocks)
        assert_keeps_what_was_synced(crashed, blocks, synced)


def test_bytes_written_ahead_for_a_block_never_appended_are_a_torn_tail(tmp_path):
    """A batch that ends up storing fewer records builds a smaller block than the one whose
    records went to the disk ahead: the bytes past the new end are dropped by a crash's
    recovery as never acknowledged, and cut off by a clean close."""
    directory = tmp_path / "log"
    with small_direct_writes(), BlockLog.open(directory, create=True) as block_log:
        if block_log._direct is None:
            pytest.skip("this file system takes no O_DIRECT")
        block_log.append(b"genesis")
        block_log.sync()
        buffer = block_log.payload_buffer(200_000)
        buffer[:] = 7
        assert block_log.prewrite(buffer, 100, 200_000)
        del buffer
        block_log.append(bytes(6000))  # what the batch stored after all
        block_log.sync()
        end = 2 * HEADER_BYTES + len(b"genesis") + 6000
        block_log._direct.finish_ahead()  # as a crash after the write could leave it
        crashed = crash_copy(directory, tmp_path / "crashed")
        assert (crashed / "blocks.log").stat().st_size > end
    assert (directory / "blocks.log").stat().st_size == end
    with BlockLog.open(crashed) as recovered:
        assert recovered.height == 2 and recovered.recovered_bytes > 190_000
    assert_blocks(crashed, [b"genesis", bytes(6000)])


def test_a_file_system_refusing_the_direct_writes_falls_back_to_the_page_cache(
        tmp_path, monkeypatch, caplog):
    """Writes aligned to 1,000 bytes are not what O_DIRECT takes anywhere (the kernel answers
    EINVAL): the log warns, goes on through the page cache, and loses nothing."""
    from tsunagi.ledger import log as log_module
    monkeypatch.setattr(log_module, "_DIRECT_BLOCK", 1000)
    monkeypatch.setattr(ledger_limits, "log_direct_bytes_min", 4096)
    blocks = [random.Random(7).randbytes(size) for size in (300, 9000, 20_000, 50)]
    with BlockLog.open(tmp_path, create=True) as block_log:
        if block_log._direct is None:
            pytest.skip("this file system takes no O_DIRECT")
        for block in blocks:
            block_log.append(block)
            block_log.sync()
        assert block_log._direct is None
    assert "writing through the page cache" in caplog.text
    assert_blocks(tmp_path, blocks)


def test_block_buffers_are_used_again_only_once_nothing_refers_to_them(tmp_path):
    """A block built in a buffer the log hands out is written from that buffer later, and the
    ledger's indexer reads it later still: the log may hand the buffer out again only when no
    view, memoryview or pending frame refers to it any more."""
    with BlockLog.open(tmp_path, create=True) as block_log:
        first = block_log.payload_buffer(100_000)
        first[:] = 1
        owner = id(first.base)  # not the buffer itself: a reference here would keep it busy
        held = memoryview(first)[10:]
        block_log.append(first, copy=False)  # the pending frame holds it too
        del first
        second = block_log.payload_buffer(50_000)
        assert id(second.base) != owner
        block_log.sync()  # the frame is written: only ``held`` keeps the buffer now
        assert id(block_log.payload_buffer(50_000).base) != owner
        del held
        again = block_log.payload_buffer(90_000)
        assert id(again.base) == owner  # idle now: used again
        assert block_log.read(0) == bytes([1]) * 100_000
        del again
        # Past the pool's bytes a buffer is handed out without being kept.
        big = block_log.payload_buffer(ledger_limits.log_payload_pool_bytes + 1)
        assert len(big) == ledger_limits.log_payload_pool_bytes + 1


def test_checksum_is_zlibs_crc32_through_zlib_ng():
    """The log, index and snapshots checksum with zlib-ng (a dependency), whose values must be
    zlib's so files read the same either way, including crc32 continued across pieces."""
    import zlib

    from tsunagi.ledger.checksum import crc32

    assert crc32.__module__.startswith("zlib_ng")
    rng = np.random.default_rng(5)
    for size in (0, 1, 31, 4096, 1 << 20):
        data = rng.integers(0, 256, size, np.uint8).tobytes()
        assert crc32(data) == zlib.crc32(data)
        assert crc32(data[size // 3:], crc32(data[:size // 3])) == zlib.crc32(data)
