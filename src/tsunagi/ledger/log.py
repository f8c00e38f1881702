"""The block log: the durable truth of one chain, an append-only file of checksummed frames.

Blocks are opaque bytes here. One process writes (an ``flock`` on ``blocks.lock``); ``sync()`` is
the durability point: nothing appended is acknowledged before the ``fdatasync`` it makes returns.

Files in the data directory::

    blocks.log         frames back to back from byte 0, nothing else
    blocks.offsets     u64 little-endian start offset of each frame (derived, rebuilt if damaged)
    blocks.checkpoint  height, end offset and crc32 of the offsets file up to it, written
                       atomically every ~256 MiB synced and at close
    blocks.synced      u64 height + u32 crc32: frames below height were synced (written after
                       each fsync returns, never fsynced itself)
    blocks.lock        the writer's lock; holds its pid for the error message of a second writer
    blocks.seal        16 random bytes made with the log, and their crc32: the frame magic (4)
                       and the key header checksums start from (12). Never changes.

A frame is a 32-byte header, then the block's bytes (all integers little-endian)::

    offset size field
         0    4 magic          the seal's first 4 bytes (b"TSB1" in a log without a seal)
         4    4 length         payload bytes
         8    8 height         0 for the first block
        16    8 group_first    height of the first frame appended since the last completed sync
        24    4 payload_crc    zlib.crc32 of the payload
        28    4 header_crc     zlib.crc32(header bytes 0..27, zlib.crc32(the seal's key))

Why crc32: the checksum is there to find media damage and torn writes, not forgery (blocks are
hash-chained); it catches every burst error up to 32 bits and misses random damage with
probability 2**-32 per frame, and it is the fastest of the candidates: zlib-ng's crc32
(tsunagi.ledger.checksum, the values of zlib's) runs at ~35 GB/s here, zlib's own at ~4.5
(sha256 ~1.8, blake2b ~1.2).

Torn tail or damage? A frame is *committed* when the log can prove it was synced: it lies below
the height in ``blocks.synced`` or in the checkpoint, or a later intact frame names a later sync
group (its ``group_first`` is above the frame: that frame was written after this one's sync
returned). Damage in a committed frame raises CorruptLogError; damage from the first frame that
cannot be proven committed onwards is a write that was never acknowledged, and is dropped.

Why a seal: that search looks for frame headers anywhere in the bytes after the damage, and a
torn frame holds records, whose bytes clients choose. With a fixed magic and a plain crc32 a
client could put a header that names a later sync group into a record's data, and after a crash
that tore the frame holding it the log would refuse to open instead of dropping the tail. The
seal's magic and checksum key are random and never leave the data directory, so a header a
client could write matches them with probability 2**-64.

Open cost: frames before the checkpoint get a vectorized structure check (magic, height, length
chain and header crc of every header, read through mmap), not a payload checksum; frames after
it are checked in full. Payload checksums of older frames are checked on every ``read``, by
``iter_blocks`` and by ``verify_frames()``, so damage there is found when the block is used.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import struct
import sys
import threading
from array import array
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np

from tsunagi.errors import CorruptLogError, EncodingError, LockedError, StorageError
from tsunagi.ledger import limits
from tsunagi.ledger.buffers import BufferPool
from tsunagi.ledger.checksum import crc32

__all__ = ["BlockLog", "LogCopy", "fsync_directory", "read_exactly", "write_all",
           "write_file_atomically"]

log = logging.getLogger(__name__)

FRAME_MAGIC = b"TSB1"
FRAME_HEADER = struct.Struct("<4sIQQII")
FRAME_HEADER_BYTES = FRAME_HEADER.size  # 32
FRAME_DTYPE = np.dtype([("magic", "S4"), ("length", "<u4"), ("height", "<u8"),
                        ("group_first", "<u8"), ("payload_crc", "<u4"), ("header_crc", "<u4")])
assert FRAME_DTYPE.itemsize == FRAME_HEADER_BYTES

CHECKPOINT = struct.Struct("<8sQQI")  # magic, height, end offset, crc32 of offsets[:height]
CHECKPOINT_MAGIC = b"TSCKPT01"
SYNCED = struct.Struct("<QI")  # height, crc32 of the 8 height bytes

LOG_NAME, OFFSETS_NAME = "blocks.log", "blocks.offsets"
CHECKPOINT_NAME, SYNCED_NAME, LOCK_NAME = "blocks.checkpoint", "blocks.synced", "blocks.lock"
SEAL_NAME = "blocks.seal"
SEAL = struct.Struct("<4s12sI")  # frame magic, header checksum key, crc32 of the 16 bytes


class _Seal(NamedTuple):
    """What makes a frame header this log's own (see the module docstring): its magic, and
    the running crc32 its header checksum continues from (crc32 of the seal's key). Logs
    made before seals existed use _LEGACY_SEAL."""

    magic: bytes
    start: int


_LEGACY_SEAL = _Seal(FRAME_MAGIC, 0)

_IOV_MAX = 1024  # Linux's limit on buffers per writev
_DIRECT_BLOCK = 4096  # O_DIRECT alignment: a page, a multiple of every disk's logical block
# Frames at least this long on average are read header by header on open, without readahead;
# shorter ones share pages, so reading ahead fetches the next headers too.
_SPARSE_FRAME_BYTES = 64 << 10


def fsync_directory(directory: Path) -> None:
    """Makes the names created or renamed in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replaces ``path`` by ``data`` so that a crash leaves the old or the new file, whole:
    a temporary file made afresh with ``mode`` (0o600 for secrets: a temporary a crash left
    behind never lends its mode), fsync, rename, fsync of the directory."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, [data], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)


def write_all(fd: int, pieces: list, offset: int) -> int:
    """Writes every piece at ``offset`` on, in as few system calls as the OS allows."""
    written_total = 0
    views = [memoryview(piece).cast("B") for piece in pieces if len(piece)]
    while views:
        batch = views[:_IOV_MAX]
        written = os.pwritev(fd, batch, offset)
        written_total += written
        offset += written
        # A short write is legal: drop what went out and go on from where it stopped.
        while written and views:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0
    return written_total


def _fdatasync(fd: int) -> None:
    # fdatasync also makes a changed file size durable; macOS lacks it.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def _libc_function(name: str, argtypes: list):
    """A Linux libc function Python's os module lacks (or offers without flags), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_FALLOCATE = _libc_function(
    "fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])
_FALLOC_FL_KEEP_SIZE = 1


_SYNC_FILE_RANGE = _libc_function(
    "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint])
_SYNC_FILE_RANGE_WRITE = 2


def write_with_writeback(fd: int, pieces: list, offset: int, chunk: int) -> int:
    """write_all in chunks of ``chunk`` bytes, starting the disk write of each chunk at once.

    One 34 MB write ran into the kernel's dirty-page throttling and took ~100 ms to reach the
    page cache; in 4 MiB chunks, each handed to writeback as it lands (sync_file_range, which
    waits for nothing), the write plus the fdatasync after it took 15-22 ms against 23-26 ms
    (alternated runs of 20 blocks). Durability still comes from the caller's fdatasync.
    """
    if _SYNC_FILE_RANGE is None or chunk <= 0:
        return write_all(fd, pieces, offset)
    written_total, batch, batch_bytes = 0, [], 0
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while len(view):
            take = view[:chunk - batch_bytes]
            batch.append(take)
            batch_bytes += len(take)
            view = view[len(take):]
            if batch_bytes == chunk:
                written_total += _write_and_start(fd, batch, offset + written_total)
                batch, batch_bytes = [], 0
    if batch:
        written_total += _write_and_start(fd, batch, offset + written_total)
    return written_total


def _write_and_start(fd: int, pieces: list, offset: int) -> int:
    written = write_all(fd, pieces, offset)
    _SYNC_FILE_RANGE(fd, offset, written, _SYNC_FILE_RANGE_WRITE)  # a hint: errors come later
    return written


class _DirectAppender:
    """Appends to the log through O_DIRECT, in whole aligned blocks from page-aligned memory.

    Page-cache writes cost ~1.4 ns of CPU a byte here and stall in dirty-page throttling: an
    8.4 MB append + fdatasync took 4.0-28.6 ms of CPU and 6.9-33.3 ms of wall time (medians of
    three runs of 30), O_DIRECT 1.5-1.7 ms of CPU (most of it the copy into an aligned
    buffer) and 6.5-8.8 ms of wall time (/tmp/odirect_ab.py of session 5, alternated).

    The block the log ends in is shared: its bytes before the end (``tail``, kept in memory)
    are written again, identical, at the start of the next direct write, and the bytes past
    the last whole block go through the page cache, so the file never holds bytes past the
    log's end. The kernel writes back and drops that cached block before a direct write over
    it. Durability is still the caller's fdatasync (the direct write leaves the drive's cache
    and the file's size to it).

    A payload built in a buffer of the log's pool (BlockLog.payload_buffer) sits in memory as
    it will in the file, one page-aligned region with room before it: the tail and the frame
    header are put in front of it and it is written from where it lies, without a copy. Such
    a payload may also be written in part ahead of its append (``prewrite``, on a thread of
    its own): bytes known before the block is finished reach the disk while the rest of it is
    worked out. Anything else is copied through a page-aligned scratch buffer.
    """

    def __init__(self, fd: int, buffered_fd: int, pool: _BufferPool):
        self.fd, self.buffered_fd, self.pool = fd, buffered_fd, pool
        self.tail = b""  # bytes of [end // _DIRECT_BLOCK * _DIRECT_BLOCK, end)
        self.scratch: mmap.mmap | None = None
        # Writes started ahead: owner buffer's id -> (first byte, end byte, owner, future,
        # file offset of the frame they were placed for).
        self.ahead: dict[int, tuple[int, int, np.ndarray, Future, int]] = {}
        self.ahead_lock = threading.Lock()  # the writer starts them, the flush finishes them
        self.writer: ThreadPoolExecutor | None = None

    @classmethod
    def open(cls, path: Path, buffered_fd: int, pool: _BufferPool) -> _DirectAppender | None:
        """None where the file system takes no O_DIRECT (tmpfs) or the platform lacks it."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            return None
        try:
            return cls(os.open(path, os.O_WRONLY | flag), buffered_fd, pool)
        except OSError:
            return None

    def moved_to(self, end: int) -> None:
        """The log now ends at ``end`` (recovered or truncated): re-reads the shared block."""
        self.finish_ahead()
        start = end // _DIRECT_BLOCK * _DIRECT_BLOCK
        self.tail = read_exactly(self.buffered_fd, end - start, start)

    def prewrite(self, payload: np.ndarray, offset: int, first: int, end: int) -> bool:
        """Starts writing bytes [first, end) of ``payload``, a pool buffer placed for a frame
        at file ``offset`` (the log's end now), before the frame is appended. False when
        there is nothing whole to write or the buffer is not placed so."""
        placed = self.pool.placement(payload)
        if placed is None or placed[1] != _payload_lead(offset):
            return False
        owner, lead, base = placed
        payload_at = offset + FRAME_HEADER_BYTES
        low = -(-(payload_at + first) // _DIRECT_BLOCK) * _DIRECT_BLOCK
        high = (payload_at + end) // _DIRECT_BLOCK * _DIRECT_BLOCK
        if high <= low:
            return False
        memory = memoryview(owner)[base + lead + low - payload_at:base + lead + high - payload_at]
        if self.writer is None:
            self.writer = ThreadPoolExecutor(1, thread_name_prefix="tsunagi-log-ahead")
        self.finish_ahead(low, high)  # an abandoned one there: it must not land after this
        future = self.writer.submit(write_all, self.fd, [memory], low)
        with self.ahead_lock:
            self.ahead[id(owner)] = (low, high, owner, future, offset)
        return True

    def finish_ahead(self, start: int = 0, end: int | None = None, keep=()) -> None:
        """Waits for the writes started ahead that touch [start, end) (all by default), but
        those of the owners in ``keep``."""
        with self.ahead_lock:
            done = [key for key, (low, high, *_) in self.ahead.items()
                    if key not in keep and high > start and (end is None or low < end)]
            futures = [self.ahead.pop(key)[3] for key in done]
        for future in futures:
            future.result()  # its OSError is this write's

    def write(self, frames: list, offset: int, end: int) -> None:
        """Writes ``frames`` ((header, payload, source) each, ``end - offset`` bytes in all) at
        ``offset``, the log's current end."""
        places = [self.pool.placement(source) if source is not None else None
                  for _, _, source in frames]
        self.finish_ahead(offset - len(self.tail), end,
                          keep={id(place[0]) for place in places if place is not None})
        # position: the first byte not on disk yet (aligned); carry: bytes from there on that
        # are in no buffer (less than a block); scratch[:filled]: bytes from there on.
        position, carry, scratch, filled, at = offset - len(self.tail), self.tail, None, 0, offset
        for (header, payload, _), placed in zip(frames, places):
            if placed is not None and filled:  # scratch's whole blocks go out first
                position, carry, filled = self._drain(scratch, filled, position)
            if placed is not None and placed[1] == len(carry) + FRAME_HEADER_BYTES:
                owner, lead, base = placed
                memory = memoryview(owner)[base:base + lead + len(payload)]
                memory[:len(carry)] = carry
                memory[len(carry):lead] = header
                whole = len(memory) // _DIRECT_BLOCK * _DIRECT_BLOCK
                self._write_placed(owner, memory, position, whole, at)
                position, carry = position + whole, bytes(memory[whole:])
            else:
                if scratch is None:
                    scratch = self._scratch(end - position)
                for piece in (carry, header, payload):
                    filled, position = self._stream(scratch, filled, position, piece)
                carry = b""
            at += len(header) + len(payload)
        if filled:
            position, carry, filled = self._drain(scratch, filled, position)
        self.tail = carry
        if carry:
            write_all(self.buffered_fd, [carry], position)

    def _drain(self, scratch: mmap.mmap, filled: int, position: int) -> tuple[int, bytes, int]:
        """Writes scratch's whole blocks; returns (position after them, the bytes left, 0)."""
        whole = filled // _DIRECT_BLOCK * _DIRECT_BLOCK
        if whole:
            write_all(self.fd, [memoryview(scratch)[:whole]], position)
        return position + whole, bytes(scratch[whole:filled]), 0

    def _write_placed(self, owner: np.ndarray, memory: memoryview, position: int,
                      whole: int, frame_at: int) -> None:
        """Whole blocks [position, position + whole) of a placed payload's frame (at file
        ``frame_at``), less what a write started ahead for it there covers (waited for)."""
        with self.ahead_lock:
            ahead = self.ahead.pop(id(owner), None)
        if ahead is not None:
            low, high, _, future, predicted = ahead
            if predicted == frame_at and position <= low <= high <= position + whole:
                if low > position:
                    write_all(self.fd, [memory[:low - position]], position)
                if position + whole > high:
                    write_all(self.fd, [memory[high - position:whole]], high)
                future.result()
                return
            future.result()  # written for another place: all of it again, after it
        if whole:
            write_all(self.fd, [memory[:whole]], position)

    def _stream(self, scratch: mmap.mmap, filled: int, position: int, piece
                ) -> tuple[int, int]:
        """Copies ``piece`` into scratch after ``filled`` bytes, writing it out whenever it
        fills; returns the new (filled, position of scratch's first byte)."""
        view = memoryview(piece).cast("B")
        while len(view):
            take = min(len(view), len(scratch) - filled)
            scratch[filled:filled + take] = view[:take]
            view, filled = view[take:], filled + take
            if filled == len(scratch):
                write_all(self.fd, [memoryview(scratch)], position)
                position, filled = position + filled, 0
        return filled, position

    def wrote_buffered(self, pieces: list, end: int) -> None:
        """Keeps ``tail`` up to date after the log wrote ``pieces`` through the page cache."""
        need = end % _DIRECT_BLOCK
        parts: list[bytes] = []
        for piece in reversed(pieces):
            if not need:
                break
            view = memoryview(piece).cast("B")
            take = min(need, len(view))
            parts.append(bytes(view[len(view) - take:]))
            need -= take
        if need:  # the end stayed in the block the tail is from
            parts.append(self.tail[len(self.tail) - need:])
        self.tail = b"".join(reversed(parts))

    def _scratch(self, size: int) -> mmap.mmap:
        size = min(-(-size // _DIRECT_BLOCK) * _DIRECT_BLOCK, limits.log_direct_chunk_bytes)
        if self.scratch is None or len(self.scratch) < size:
            self.scratch = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT needs
        return self.scratch

    def close(self) -> None:
        try:
            self.finish_ahead()
        finally:
            if self.writer is not None:
                self.writer.shutdown()
            os.close(self.fd)
            self.scratch = None  # unmapped once no memoryview of a failed write holds it


class _BufferPool:
    """Payload buffers (a BufferPool), each placed as the direct appender wants it: ``lead``
    bytes past a page boundary of its owner."""

    def __init__(self, limit_bytes: int):
        self._pool = BufferPool(limit_bytes)

    def take(self, size: int, lead: int = 0) -> np.ndarray:
        """``size`` bytes starting ``lead`` bytes past a page boundary of the buffer, whose
        bytes before them (from that boundary) are free for the log to fill."""
        owner = self._pool.take(lead + size, _room, _DIRECT_BLOCK)
        return _placed_view(owner, lead, size)

    def placement(self, payload) -> tuple[np.ndarray, int, int] | None:
        """(owner, lead, base) of a view ``take`` handed out: its owner, how far past the
        owner's first page boundary (at ``base``) it starts. None for anything else."""
        owner = getattr(payload, "base", None)
        if not isinstance(owner, np.ndarray) or not payload.flags.c_contiguous:
            return None
        base = _page_start(owner)
        lead = payload.ctypes.data - owner.ctypes.data - base
        if lead < 0 or lead + payload.nbytes > _room(owner):
            return None
        return owner, lead, base


def _read_seal(directory: Path) -> _Seal:
    """The seal of the log in ``directory`` (blocks.seal); the legacy seal where a log made
    before seals has none. A damaged seal file is CorruptLogError."""
    path = directory / SEAL_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _LEGACY_SEAL
    if len(raw) != SEAL.size or crc32(raw[:16]) != SEAL.unpack(raw)[2]:
        raise CorruptLogError(
            f"{path} is damaged ({len(raw)} bytes): without it the frames of "
            f"{directory / LOG_NAME} cannot be checked. Restore the file from a backup of this "
            "data directory (it never changes after the log is made).")
    magic, key, _ = SEAL.unpack(raw)
    return _Seal(magic, crc32(key))


def _payload_lead(frame_offset: int) -> int:
    """Where the payload of a frame at ``frame_offset`` lies past the start of the disk block
    the frame starts in: the room a placed buffer leaves in front of it."""
    return frame_offset % _DIRECT_BLOCK + FRAME_HEADER_BYTES


def _page_start(owner: np.ndarray) -> int:
    return -owner.ctypes.data % _DIRECT_BLOCK


def _room(owner: np.ndarray) -> int:
    return owner.nbytes - _page_start(owner)


def _placed_view(owner: np.ndarray, lead: int, size: int) -> np.ndarray:
    start = _page_start(owner) + lead
    return owner[start:start + size]


def _preallocate(fd: int, offset: int, length: int) -> bool:
    """Reserves disk blocks for ``[offset, offset + length)`` without changing the file size.

    Appending past the end made ext4 allocate blocks inside each write: 8.5 MB appends took
    7.3-20.4 ms to reach the page cache, against 2.8-3.4 ms into reserved blocks (on this
    machine's disk, 60 blocks each way, alternated). The size stays put, so recovery, which
    reads up to the file size, sees nothing new. False where the file system cannot do it.
    """
    if _FALLOCATE is None:
        return False
    return _FALLOCATE(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0


def _little_endian(values: array) -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("Q", values)
    swapped.byteswap()
    return swapped.tobytes()


def _frame_header(length: int, height: int, group_first: int, payload_crc: int,
                  seal: _Seal) -> bytes:
    head = FRAME_HEADER.pack(seal.magic, length, height, group_first, payload_crc, 0)[:28]
    return head + struct.pack("<I", crc32(head, seal.start))


def _crc32_tables() -> np.ndarray:
    """zlib's CRC-32 table and the three more that slicing-by-4 needs, as a 4 x 256 array."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    tables = [table.astype(np.uint32)]
    for _ in range(3):
        tables.append((tables[-1] >> np.uint32(8)) ^ tables[0][tables[-1] & 0xFF])
    return np.stack(tables)


_CRC_TABLES = _crc32_tables()


def crc32_rows(rows: np.ndarray, start: int = 0) -> np.ndarray:
    """zlib.crc32(row, start) of each row of an M x K uint8 array (K a multiple of 4),
    computed four bytes a step over all rows at once (slicing-by-4)."""
    words = np.ascontiguousarray(rows).view("<u4")
    t0, t1, t2, t3 = _CRC_TABLES
    crc = np.full(len(rows), start ^ 0xFFFFFFFF, dtype=np.uint32)
    for column in range(words.shape[1]):
        crc ^= words[:, column]
        crc = (t3[crc & 0xFF] ^ t2[(crc >> np.uint32(8)) & 0xFF]
               ^ t1[(crc >> np.uint32(16)) & 0xFF] ^ t0[crc >> np.uint32(24)])
    return crc ^ np.uint32(0xFFFFFFFF)


class _Damage(Exception):
    """A frame that fails a check; the caller decides whether it is a torn tail or corruption."""

    def __init__(self, height: int, offset: int, reason: str):
        super().__init__(reason)
        self.height, self.offset, self.reason = height, offset, reason


def _header_problem(header: tuple, raw: bytes, height: int, seal: _Seal) -> str | None:
    magic, length, found_height, group_first, _, header_crc = header
    if magic != seal.magic:
        return f"bad frame magic {magic!r}"
    if crc32(raw[:28], seal.start) != header_crc:
        return "frame header checksum mismatch"
    if found_height != height:
        return f"frame header says height {found_height}"
    if length > limits.log_block_bytes_max or group_first > height:
        return f"implausible frame header (length {length}, group_first {group_first})"
    return None


def _walk_frames(fd: int, offset: int, end: int, height: int, seal: _Seal,
                 check_payload: bool = True) -> Iterator[tuple[int, int, memoryview]]:
    """Yields (height, offset, payload) for each frame in [offset, end); raises _Damage."""
    chunk, chunk_start = b"", offset
    while offset < end:
        at = offset - chunk_start
        if at + FRAME_HEADER_BYTES > len(chunk):
            chunk = os.pread(fd, min(limits.log_read_chunk_bytes, end - offset), offset)
            chunk_start, at = offset, 0
        if at + FRAME_HEADER_BYTES > len(chunk):
            raise _Damage(height, offset, f"frame cut short: {end - offset} bytes left")
        raw = chunk[at:at + FRAME_HEADER_BYTES]
        header = FRAME_HEADER.unpack(raw)
        problem = _header_problem(header, raw, height, seal)
        if problem:
            raise _Damage(height, offset, problem)
        length = header[1]
        frame_end = offset + FRAME_HEADER_BYTES + length
        if frame_end > end:
            raise _Damage(height, offset, f"frame cut short: {length} payload bytes declared, "
                                          f"{end - offset - FRAME_HEADER_BYTES} present")
        if at + FRAME_HEADER_BYTES + length > len(chunk):
            size = max(limits.log_read_chunk_bytes, FRAME_HEADER_BYTES + length)
            chunk = os.pread(fd, min(size, end - offset), offset)
            chunk_start, at = offset, 0
        payload = memoryview(chunk)[at + FRAME_HEADER_BYTES:at + FRAME_HEADER_BYTES + length]
        if check_payload and crc32(payload) != header[4]:
            raise _Damage(height, offset, "payload checksum mismatch")
        yield height, offset, payload
        offset, height = frame_end, height + 1


def _corrupt(path: Path, damage: _Damage, opening: bool = False) -> CorruptLogError:
    """The error for damage in a committed frame. Found while opening, it stops the open;
    found by a read, the caller (the ledger) decides what the damage means for it."""
    text = (f"committed block {damage.height} in {path} is damaged at the frame starting at "
            f"byte offset {damage.offset} ({damage.reason})")
    if opening:
        text += (". The log does not open on damage this recent: restore the data directory "
                 "from a backup or copy it from another node of this chain")
    error = CorruptLogError(text)
    error.height, error.offset, error.reason = damage.height, damage.offset, damage.reason
    return error


def _raise_first_bad(checks: dict[str, np.ndarray], first: int, starts: np.ndarray) -> None:
    bad = np.logical_or.reduce(list(checks.values()))
    if bad.any():
        index = int(np.argmax(bad))
        reason = next(name for name, failed in checks.items() if failed[index])
        raise _Damage(first + index, int(starts[index]), reason)


def _check_structure(fd: int, offsets: np.ndarray, end: int, seal: _Seal) -> None:
    """Checks every header of the frames at ``offsets`` (ending at ``end``); raises _Damage."""
    if len(offsets) == 0:
        return
    step = 1 << 20  # headers per pass: bounds the gathered copy to 32 MiB
    with mmap.mmap(fd, end, prot=mmap.PROT_READ) as mapped:
        if end // len(offsets) >= _SPARSE_FRAME_BYTES and hasattr(mmap, "MADV_RANDOM"):
            # Headers far apart: without this, each page fault reads ahead ~128 KiB of payload
            # nobody looks at (a cold open of 1,250 frames of 1.5 MB took 1.7 s, now 0.08 s).
            mapped.madvise(mmap.MADV_RANDOM)
        # Element i of this view is the u64 at byte i, so a header is four gathers of u64s
        # rather than a 32-column gather (which needed a 256 MB index per million frames).
        words = np.ndarray((end - 7,), dtype="<u8", buffer=mapped, strides=(1,))
        try:
            for first in range(0, len(offsets), step):
                starts = offsets[first:first + step].astype(np.int64)
                nexts = np.append(offsets[first + 1:first + step + 1], end)[:len(starts)]
                if starts[-1] + FRAME_HEADER_BYTES > end or np.any(nexts <= starts):
                    raise _Damage(first, int(starts[0]), "offsets do not fit the log")
                gathered = np.stack([words[starts + 8 * i] for i in range(4)], axis=1)
                _raise_first_bad(_header_checks(gathered, first, starts, nexts, seal), first,
                                 starts)
        finally:
            del words  # the mmap cannot close while a numpy view holds its buffer


def _header_checks(gathered: np.ndarray, first: int, starts: np.ndarray,
                   nexts: np.ndarray, seal: _Seal) -> dict[str, np.ndarray]:
    headers = gathered.view(FRAME_DTYPE).ravel()
    rows = gathered.view(np.uint8)
    return {
        "bad frame magic": headers["magic"] != seal.magic,
        "frame header checksum mismatch":
            crc32_rows(rows[:, :28], seal.start) != headers["header_crc"],
        "frame header names another height":
            headers["height"] != np.arange(first, first + len(starts)),
        "frame length does not reach the next frame":
            nexts - starts != FRAME_HEADER_BYTES + headers["length"].astype(np.int64),
    }


def read_exactly(fd: int, size: int, offset: int) -> bytes:
    pieces, left = [], size
    while left:
        piece = os.pread(fd, min(left, 1 << 30), offset)
        if not piece:
            break
        pieces.append(piece)
        left -= len(piece)
        offset += len(piece)
    return b"".join(pieces)


def _acquire_lock(directory: Path) -> int:
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockedError(
            f"the data directory {directory} is in use: another process (pid {holder}) holds "
            f"{path}. Stop that process, or open a different directory.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class BlockLog:
    """Append-only, checksummed blocks of one chain; one writer per data directory.

    ``append`` buffers, ``sync`` makes everything appended durable with one fdatasync (the
    acknowledgement point), ``read``/``iter_blocks`` check each frame's checksum. Open with
    :meth:`open`; ``recovered_bytes`` tells how many bytes of torn tail the open dropped.
    """

    def __init__(self, directory: Path, lock_fd: int):
        """Private: use :meth:`BlockLog.open`."""
        self.directory = directory
        self.path = directory / LOG_NAME
        self.recovered_bytes = 0
        self._lock_fd = lock_fd
        self._fd = self._offsets_fd = self._synced_fd = -1
        self._offsets = array("Q")  # start offset of each frame, appended or on disk
        self._end = 0  # byte just past the last appended frame
        self._flushed_height = self._flushed_end = 0  # what the OS has been given
        self._pending: list[tuple] = []  # (height, group_first, payload, source) not written
        self._pending_bytes = 0
        self._reserved_end = 0  # disk blocks are reserved up to here (see _preallocate)
        self._payloads = _BufferPool(limits.log_payload_pool_bytes)
        self._direct: _DirectAppender | None = None  # large flushes bypass the page cache
        self._seal = _LEGACY_SEAL  # read or made by _open_files
        self._synced_height = self._group_first = 0
        self._checkpoint_height = self._checkpoint_end = 0
        self._mutex = threading.RLock()  # readers may flush; the writer appends
        self._sync_mutex = threading.RLock()  # one fdatasync at a time; taken before _mutex
        self._failed: OSError | None = None
        self._closed = False

    @classmethod
    def open(cls, directory: str | os.PathLike, create: bool = False) -> BlockLog:
        """Opens (``create``: or starts) the log in ``directory``, recovering a torn tail.

        Raises LockedError when another process has it open, CorruptLogError when a committed
        block is damaged, StorageError when there is no log and ``create`` is false.
        """
        directory = Path(directory)
        if not directory.is_dir():
            if not create:
                raise StorageError(f"no data directory at {directory}: pass create=True to "
                                   "start a new block log there")
            directory.mkdir(parents=True)
            fsync_directory(directory.parent)
        block_log = cls(directory, _acquire_lock(directory))
        try:
            block_log._open_files(create)
            block_log._recover()
        except BaseException:
            block_log._release()
            raise
        return block_log

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BlockLog({str(self.directory)!r}, height={self.height})"

    @property
    def height(self) -> int:
        """Number of blocks appended (synced or not)."""
        return len(self._offsets)

    @property
    def synced_height(self) -> int:
        """Number of blocks that are durable: every block below it has been acknowledged."""
        return self._synced_height

    def append(self, block: bytes, *, copy: bool = True) -> int:
        """Adds a block after the last one and returns its height. Not durable before sync().

        ``copy=False`` keeps a reference to a mutable buffer (bytearray, numpy array) instead of
        copying it: the caller promises not to change it (8.5 MB blocks copied in ~1 ms).
        """
        # The caller may reuse its buffer before the frame is written.
        kept = not copy and isinstance(block, (bytes, bytearray, np.ndarray))
        payload = block if kept else bytes(block)
        source = payload if isinstance(payload, np.ndarray) else None  # maybe a pool buffer
        if source is not None:
            payload = memoryview(payload).cast("B")  # len() in bytes, any dtype
        if len(payload) > limits.log_block_bytes_max:
            raise EncodingError(f"a block is at most {limits.log_block_bytes_max} bytes, "
                                f"got {len(payload)}")
        with self._mutex:
            self._check_usable()
            # Frames appended earlier go to the OS first when they fill the buffer; this one
            # waits for the next flush, and so does its checksum (a 34 MB block's crc32 takes
            # ~6 ms, which the flush spends outside the writer's critical path).
            flush = self._pending_bytes >= limits.log_write_buffer_bytes
            height = len(self._offsets)
            self._pending.append((height, self._group_first, payload, source))
            self._offsets.append(self._end)
            self._end += FRAME_HEADER_BYTES + len(payload)
            self._pending_bytes += FRAME_HEADER_BYTES + len(payload)
        if flush:
            with self._sync_mutex:
                self._flush()
        return height

    @property
    def writes_direct(self) -> bool:
        """Whether large flushes bypass the page cache (O_DIRECT), and prewrite can start."""
        return self._direct is not None

    def payload_buffer(self, size: int) -> np.ndarray:
        """A uint8 array of ``size`` bytes (any content) to build the next block in, for
        ``append(..., copy=False)``: buffers of blocks no longer referred to are used again,
        and the block is written from where it lies (see _DirectAppender) if nothing else is
        appended before it."""
        with self._mutex:
            lead = _payload_lead(self._end) if self._direct else 0
        return self._payloads.take(size, lead)

    def prewrite(self, payload: np.ndarray, first: int, end: int) -> bool:
        """Starts writing bytes [first, end) of ``payload`` (from :meth:`payload_buffer`, to be
        the next block appended) to the disk now, on a thread of the log's: bytes of a block
        known before it is finished (its records) go down while the rest is worked out.

        The bytes lie past the log's end, so until the append and sync they are a torn tail
        to a crash, and a different block appended there instead is written over them. The
        caller must not change them afterwards. False when nothing was started (no O_DIRECT,
        or less than a whole disk block to write).
        """
        with self._mutex:
            self._check_usable()
            if self._direct is None:
                return False
            return self._direct.prewrite(payload, self._end, first, end)

    def sync(self) -> int:
        """Makes every appended block durable (one fdatasync); returns the synced height.

        Appends go on while the fdatasync runs (it holds only the sync lock), so a writer can
        build its next block during the disk wait; what it appends then waits for the next
        sync. Frames appended meanwhile keep the old ``group_first``: they prove nothing about
        this sync, which has not returned when they are written.
        """
        with self._sync_mutex:
            with self._mutex:
                self._check_usable()
                height = len(self._offsets)
                if self._synced_height >= height:
                    return self._synced_height
            height = self._flush()
            try:
                _fdatasync(self._fd)
            except OSError as error:
                with self._mutex:
                    raise self._fail(error) from error
            with self._mutex:
                self._check_usable()  # a failed append meanwhile: its pages may be lost
                self._synced_height = self._group_first = height
                self._write_synced_mark(height, durable=False)
                if self._flushed_end - self._checkpoint_end >= \
                        limits.log_checkpoint_interval_bytes:
                    self._write_checkpoint(height)
            return height

    def frame_offset(self, height: int) -> int:
        """Where the frame of block ``height`` starts in the log file."""
        return int(self._offsets[height])

    def read(self, height: int) -> bytes:
        """The block at ``height``; CorruptLogError if its frame fails a check."""
        start = self._frame_start(height)
        end = self._offsets[height + 1] if height + 1 < len(self._offsets) else self._end
        raw = read_exactly(self._fd, end - start, start)
        try:
            if len(raw) < FRAME_HEADER_BYTES:
                raise _Damage(height, start, "frame cut short")
            header = FRAME_HEADER.unpack_from(raw)
            problem = _header_problem(header, raw, height, self._seal)
            if problem is None and header[1] != len(raw) - FRAME_HEADER_BYTES:
                problem = "frame length does not reach the next frame"
            if problem is None and crc32(memoryview(raw)[FRAME_HEADER_BYTES:]) != header[4]:
                problem = "payload checksum mismatch"
            if problem:
                raise _Damage(height, start, problem)
        except _Damage as damage:
            raise _corrupt(self.path, damage) from None
        return raw[FRAME_HEADER_BYTES:]

    def read_prefix(self, height: int, size: int) -> bytes:
        """The first ``size`` bytes of the block at ``height`` (a block header), read without
        checking the payload's checksum: for a caller that checks them itself (headers are
        hash-chained), and that must go on where a block's body is damaged."""
        return read_exactly(self._fd, size, self._frame_start(height) + FRAME_HEADER_BYTES)

    def _frame_start(self, height: int) -> int:
        """Where block ``height``'s frame starts, its bytes written out to the file first."""
        count = len(self._offsets)
        if not 0 <= height < count:
            raise IndexError(f"no block at height {height}: the log holds {count} blocks")
        if height >= self._flushed_height:
            with self._sync_mutex:
                self._flush()
        return self._offsets[height]

    def iter_blocks(self, first_height: int = 0) -> Iterator[bytes]:
        """Blocks from ``first_height`` to the current height, read in large chunks, checked."""
        count = len(self._offsets)
        if not 0 <= first_height <= count:
            raise IndexError(f"no block at height {first_height}: the log holds {count} blocks")
        with self._sync_mutex:
            self._flush()
            count, end = self._flushed_height, self._flushed_end
        if first_height == count:
            return iter(())
        return self._iter_payloads(first_height, self._offsets[first_height], end)

    def _iter_payloads(self, height: int, offset: int, end: int) -> Iterator[bytes]:
        try:
            for _, _, payload in _walk_frames(self._fd, offset, end, height, self._seal):
                yield bytes(payload)
        except _Damage as damage:
            raise _corrupt(self.path, damage) from None

    def verify_frames(self) -> int:
        """Checks every frame's header and payload checksum; returns the number of frames.

        Raises CorruptLogError naming the first damaged block.
        """
        with self._sync_mutex:
            self._flush()
            count, end = self._flushed_height, self._flushed_end
        checked = 0
        try:
            for height, offset, _ in _walk_frames(self._fd, 0, end, 0, self._seal):
                if offset != self._offsets[height]:
                    raise _Damage(height, offset, "frame is not where the log put it")
                checked += 1
        except _Damage as damage:
            raise _corrupt(self.path, damage) from None
        assert checked == count, (checked, count)
        return checked

    def rewrite(self, height: int, payload: bytes) -> None:
        """Writes committed block ``height`` again in place, durably: the repair of a damaged
        frame from a good copy of the same block (``tsunagi repair``). The payload must be as
        long as the frame's place in the log; the caller checks it is the right block."""
        with self._sync_mutex, self._mutex:
            self._check_usable()
            self._flush()
            if not 0 <= height < self._synced_height:
                raise IndexError(f"block {height} is not a committed block of {self.path}")
            start = int(self._offsets[height])
            end = int(self._offsets[height + 1]) if height + 1 < len(self._offsets) \
                else self._end
            if end - start - FRAME_HEADER_BYTES != len(payload):
                raise EncodingError(f"block {height} takes {end - start - FRAME_HEADER_BYTES} "
                                    f"bytes in {self.path}, the copy is {len(payload)}: it is "
                                    "not the same block")
            header = _frame_header(len(payload), height, height, crc32(payload), self._seal)
            try:
                write_all(self._fd, [header, bytes(payload)], start)
                _fdatasync(self._fd)
                if self._direct is not None:
                    self._direct.moved_to(self._end)  # its copy of the last disk block
            except OSError as error:
                raise self._fail(error) from error

    def truncate(self, height: int) -> None:
        """Drops the blocks at ``height`` and above, durably (for a reorg)."""
        with self._sync_mutex, self._mutex:
            self._check_usable()
            count = len(self._offsets)
            if not 0 <= height <= count:
                raise IndexError(f"cannot truncate to {height}: the log holds {count} blocks")
            self._flush()
            end = self._offsets[height] if height < count else self._end
            try:
                # The marks that prove blocks committed go down first: a crash in between must
                # not leave them naming blocks the file no longer holds.
                if self._synced_height > height:
                    self._write_synced_mark(height, durable=True)
                if self._checkpoint_height > height:
                    self._write_checkpoint(height)
                if self._direct is not None:
                    self._direct.finish_ahead()  # none may land after the cut
                os.ftruncate(self._fd, end)
                os.fsync(self._fd)
                os.ftruncate(self._offsets_fd, height * 8)
                self._reserved_end = end
                if self._direct is not None:
                    self._direct.moved_to(end)
            except OSError as error:
                raise self._fail(error) from error
            del self._offsets[height:]
            self._end = self._flushed_end = end
            self._flushed_height = self._synced_height = self._group_first = height
            self._write_synced_mark(height, durable=False)

    def close(self) -> None:
        """Syncs, writes a checkpoint (so the next open checks only headers) and unlocks."""
        if self._closed:
            return
        with self._sync_mutex:
            self._close_synced()

    def _close_synced(self) -> None:
        try:
            if self._failed is None:
                height = self.sync()
                if height > self._checkpoint_height:
                    self._write_checkpoint(height)
                if self._direct is not None:
                    self._direct.finish_ahead()
                # Gives back the blocks reserved ahead, and drops what a write started ahead
                # for a block never appended left past the end.
                if self._reserved_end > self._end or os.fstat(self._fd).st_size > self._end:
                    os.ftruncate(self._fd, self._end)
        finally:
            self._release()

    # -- private -----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"the block log in {self.directory} is closed")
        if self._failed is not None:
            raise StorageError(
                f"an earlier write to {self.path} failed ({self._failed}); blocks after "
                f"{self._synced_height} may not be on disk. Close and reopen the log: the open "
                "keeps every intact block and drops a torn tail.")

    def _fail(self, error: OSError) -> StorageError:
        # After a failed write or fsync the kernel may have dropped dirty pages, so a retry could
        # report success without the data on disk: the log refuses further writes instead.
        self._failed = error
        return StorageError(f"writing {self.path} failed: {error}. Blocks after "
                            f"{self._synced_height} are not durable; close and reopen the log.")

    def _flush(self) -> int:
        """Hands the appended frames to the OS; returns the height flushed to.

        The caller holds the sync mutex, which every flush takes: the flushed marks move under
        it alone. Appends go on meanwhile (the append mutex is held only to take the frames).
        """
        with self._mutex:
            self._check_usable()
            pending, pending_bytes = self._pending, self._pending_bytes
            if not pending:
                return self._flushed_height
            self._pending, self._pending_bytes = [], 0
            height, end = len(self._offsets), self._end
            fresh = self._offsets[self._flushed_height:height]
        frames = [(_frame_header(len(payload), frame_height, group_first, crc32(payload),
                                 self._seal),
                   payload, source) for frame_height, group_first, payload, source in pending]
        pieces = [piece for header, payload, _ in frames for piece in (header, payload)]
        try:
            self._reserve(end)
            if self._direct is not None and pending_bytes >= limits.log_direct_bytes_min:
                self._write_direct(frames, pieces, end)
            else:
                if self._direct is not None:  # one started ahead there must land first
                    self._direct.finish_ahead(self._flushed_end, end)
                if pending_bytes >= 2 * limits.log_writeback_chunk_bytes:
                    write_with_writeback(self._fd, pieces, self._flushed_end,
                                         limits.log_writeback_chunk_bytes)
                else:
                    write_all(self._fd, pieces, self._flushed_end)
                if self._direct is not None:
                    self._direct.wrote_buffered(pieces, end)
            write_all(self._offsets_fd, [_little_endian(fresh)], self._flushed_height * 8)
        except OSError as error:
            with self._mutex:
                raise self._fail(error) from error
        with self._mutex:
            self._flushed_height, self._flushed_end = height, end
        return height

    def _write_direct(self, frames: list, pieces: list, end: int) -> None:
        try:
            self._direct.write(frames, self._flushed_end, end)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            # The file system opened the file for O_DIRECT but wants other alignment: the page
            # cache from now on (writing again what the direct writes may have put down).
            log.warning("direct writes to %s failed (%s): writing through the page cache",
                        self.path, error)
            with self._mutex:  # no prewrite starts on it any more
                direct, self._direct = self._direct, None
            direct.close()
            write_all(self._fd, pieces, self._flushed_end)

    def _reserve(self, end: int) -> None:
        if end <= self._reserved_end:
            return
        step = limits.log_preallocate_bytes
        target = max(end, self._reserved_end) + step
        if step and _preallocate(self._fd, self._reserved_end, target - self._reserved_end):
            self._reserved_end = target
        else:
            self._reserved_end = end  # nothing reserved: try again at the next step

    def _write_synced_mark(self, height: int, durable: bool) -> None:
        raw = height.to_bytes(8, "little")
        os.pwrite(self._synced_fd, SYNCED.pack(height, crc32(raw)), 0)
        if durable:
            _fdatasync(self._synced_fd)

    def _write_checkpoint(self, height: int) -> None:
        end = self._offsets[height] if height < len(self._offsets) else self._flushed_end
        _fdatasync(self._offsets_fd)  # the offsets the checkpoint vouches for, on disk first
        offsets_crc = crc32(_little_endian(self._offsets[:height]))
        body = CHECKPOINT.pack(CHECKPOINT_MAGIC, height, end, offsets_crc)
        write_file_atomically(self.directory / CHECKPOINT_NAME,
                              body + struct.pack("<I", crc32(body)))
        self._checkpoint_height, self._checkpoint_end = height, end

    def _release(self) -> None:
        self._closed = True
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        for name in ("_fd", "_offsets_fd", "_synced_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)  # closing the lock file releases the flock
                setattr(self, name, -1)

    def _open_files(self, create: bool) -> None:
        if not self.path.exists() and not create:
            raise StorageError(f"{self.directory} holds no block log ({LOG_NAME}): pass "
                               "create=True to start a new one")
        flags = os.O_RDWR | os.O_CREAT
        self._fd = os.open(self.path, flags, 0o644)
        self._offsets_fd = os.open(self.directory / OFFSETS_NAME, flags, 0o644)
        self._synced_fd = os.open(self.directory / SYNCED_NAME, flags, 0o644)
        fsync_directory(self.directory)  # names of the files just created, if any
        self._seal = self._load_seal(empty=os.fstat(self._fd).st_size == 0)
        self._direct = _DirectAppender.open(self.path, self._fd, self._payloads)

    def _load_seal(self, empty: bool) -> _Seal:
        """The log's seal from blocks.seal; a new one for an empty log without one; the
        legacy seal for a log written before seals existed."""
        path = self.directory / SEAL_NAME
        if path.exists() or not empty:
            return _read_seal(self.directory)
        made = os.urandom(16)
        while made[:4] == bytes(4):  # unwritten disk blocks read as zeros
            made = os.urandom(16)
        write_file_atomically(path, SEAL.pack(made[:4], made[4:], crc32(made)))
        return _Seal(made[:4], crc32(made[4:]))

    def _recover(self) -> None:
        size = os.fstat(self._fd).st_size
        committed = self._read_synced_mark()
        checkpoint = self._read_checkpoint()
        start_height = start_end = 0
        if checkpoint is not None:
            height, end, offsets_crc = checkpoint
            committed = max(committed, height)
            if size < end:
                raise self._missing(height, size)
            offsets = self._load_offsets(height, offsets_crc)
            if offsets is not None:
                try:
                    _check_structure(self._fd, offsets, end, self._seal)
                except _Damage as damage:
                    raise _corrupt(self.path, damage, opening=True) from None
                self._offsets.frombytes(offsets.astype("=u8").tobytes())
                start_height, start_end = height, end
                self._checkpoint_height, self._checkpoint_end = height, end
        self._scan_tail(start_height, start_end, size, committed)
        # Everything kept is made durable before a new sync group starts, so that a frame of a
        # later group never reaches the disk ahead of these.
        _fdatasync(self._fd)
        height = len(self._offsets)
        self._synced_height = self._group_first = self._flushed_height = height
        self._write_synced_mark(height, durable=False)
        fresh = self._offsets[start_height:]
        write_all(self._offsets_fd, [_little_endian(fresh)], start_height * 8)
        os.ftruncate(self._offsets_fd, height * 8)
        if height > self._checkpoint_height:
            self._write_checkpoint(height)

    def _scan_tail(self, height: int, offset: int, size: int, committed: int) -> None:
        """Checks frames after the trusted point in full; drops a torn tail or raises."""
        end = size
        try:
            for _, frame_offset, _ in _walk_frames(self._fd, offset, size, height, self._seal):
                self._offsets.append(frame_offset)
        except _Damage as damage:
            if damage.height < committed or self._later_sync_group(damage, size):
                raise _corrupt(self.path, damage, opening=True) from None
            end = damage.offset
            self.recovered_bytes = size - end
            log.warning("dropped %d bytes of torn tail from %s: block %d at byte offset %d "
                        "(%s) was never acknowledged", self.recovered_bytes, self.path,
                        damage.height, damage.offset, damage.reason)
            os.ftruncate(self._fd, end)
        if len(self._offsets) < committed:
            raise self._missing(committed, end)
        self._end = self._flushed_end = self._reserved_end = end
        if self._direct is not None:
            self._direct.moved_to(end)

    def _later_sync_group(self, damage: _Damage, size: int) -> bool:
        """True when an intact frame after the damage was appended after the damaged frame's
        sync returned: proof that the damaged frame had been acknowledged."""
        if size <= damage.offset + 1:
            return False
        with mmap.mmap(self._fd, size, prot=mmap.PROT_READ) as mapped:
            position = mapped.find(self._seal.magic, damage.offset + 1)
            while position != -1 and position + FRAME_HEADER_BYTES <= size:
                raw = mapped[position:position + FRAME_HEADER_BYTES]
                header = FRAME_HEADER.unpack(raw)
                payload_end = position + FRAME_HEADER_BYTES + header[1]
                if (header[2] > damage.height and header[3] > damage.height
                        and _header_problem(header, raw, header[2], self._seal) is None
                        and payload_end <= size
                        and crc32(mapped[position + FRAME_HEADER_BYTES:payload_end])
                        == header[4]):
                    return True
                position = mapped.find(self._seal.magic, position + 1)
        return False

    def _missing(self, committed: int, size: int) -> CorruptLogError:
        error = CorruptLogError(
            f"{self.path} ends at byte {size} but {committed} blocks were synced to it: committed "
            "blocks are missing. Restore the data directory from a backup or copy it from a peer.")
        error.height, error.offset = committed, size
        return error

    def _read_synced_mark(self) -> int:
        raw = os.pread(self._synced_fd, SYNCED.size, 0)
        if len(raw) < SYNCED.size:
            return 0
        height, crc = SYNCED.unpack(raw)
        if crc32(raw[:8]) != crc:
            log.warning("ignoring a damaged %s in %s", SYNCED_NAME, self.directory)
            return 0
        return height

    def _read_checkpoint(self) -> tuple[int, int, int] | None:
        try:
            raw = (self.directory / CHECKPOINT_NAME).read_bytes()
        except FileNotFoundError:
            return None
        body = raw[:CHECKPOINT.size]
        if (len(raw) != CHECKPOINT.size + 4 or not body.startswith(CHECKPOINT_MAGIC)
                or crc32(body) != int.from_bytes(raw[-4:], "little")):
            log.warning("ignoring a damaged %s in %s: checking every frame of the log instead",
                        CHECKPOINT_NAME, self.directory)
            return None
        _, height, end, offsets_crc = CHECKPOINT.unpack(body)
        return height, end, offsets_crc

    def _load_offsets(self, height: int, offsets_crc: int) -> np.ndarray | None:
        raw = read_exactly(self._offsets_fd, height * 8, 0)
        if len(raw) != height * 8 or crc32(raw) != offsets_crc:
            log.warning("%s in %s does not match its checkpoint: rebuilding it from the log",
                        OFFSETS_NAME, self.directory)
            return None
        return np.frombuffer(raw, dtype="<u8")


class LogCopy:
    """Another data directory's block log, read without its lock: a backup, or the directory
    of a node of the same chain, that blocks can be copied from (``tsunagi repair``).

    It holds the intact frames from the start up to the first that fails a check (a torn tail
    or damage there ends the copy); ``read`` checks each frame's checksum again.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise StorageError(f"cannot read the block log {self.path}: {exc.strerror}") from exc
        try:
            self._seal = _read_seal(self.directory)
            self._frames: list[tuple[int, int, int]] = []  # offset, length, payload crc
            try:
                for _, offset, payload in _walk_frames(self._fd, 0, os.fstat(self._fd).st_size,
                                                       0, self._seal):
                    self._frames.append((offset, len(payload), crc32(payload)))
            except _Damage:
                pass  # the copy ends at its first bad frame
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def height(self) -> int:
        return len(self._frames)

    def read(self, height: int) -> bytes | None:
        """The block at ``height``, or None when the copy does not hold it intact."""
        if not 0 <= height < len(self._frames):
            return None
        offset, length, payload_crc = self._frames[height]
        payload = read_exactly(self._fd, length, offset + FRAME_HEADER_BYTES)
        return payload if len(payload) == length and crc32(payload) == payload_crc else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
