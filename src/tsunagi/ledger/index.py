"""The index: where each transaction, block and account's history is, as sorted columnar runs.

Derived data: everything here can be rebuilt from the block log, which is the durable truth. The
index lags the log and catches up (``indexed_height`` says how far it got).

Runs (bytes in docs/FORMAT.md). A run holds, for a range of block heights, the txids, account
histories and block hashes of those blocks as sorted columns (numpy arrays, built with argsort
and take); owner runs hold owner key -> account pairs. ``add_blocks`` and ``add_accounts`` add a
run in memory; once the runs in memory reach :data:`store_limits.index_memory_bytes_max` they
are merged into one run file (plain file writes) in the folder ``index/`` of the directory the
index is opened on. A ``manifest`` (written to a temporary file, fsynced, renamed) lists the run
files in order with their sizes and checksums; a file it does not name is a crash's leftover,
deleted on open. Runs of one size tier merge, a few at a time (size-tiered, in memory and on
disk alike), so a lookup searches O(log n) runs. A merge is linear: its inputs are sorted
already, so the native kernel (tsunagi._native.indexing, without the GIL) interleaves them and
gathers each column in that order. Run files of a few MiB and more are written and merged
around the page cache (O_DIRECT, whole aligned blocks, _BlockFile and _DirectReader), which
cost the indexer more CPU than anything else did. A run file holds, beside each sorted column,
its fence (every 64th key) and, for txids, a Bloom filter (~1-2 bytes a txid). Readers hold
only a top fence of each file in memory (every 64th fence entry: ~6 bytes per 1,000 records),
so the index's memory does not grow with what it holds (a node indexing 336 million records
grew by ~1.4 bytes a record when every fence and filter was held). A point lookup reads by
pread, so it never maps a page: the one word of a run's Bloom filter its txid falls in (8
bytes; the filter rules out most runs), then the 512-byte stretch of the fence the top fence
points to, then the 512-byte stretch of keys that fence stretch points to. Only ``txs`` (many
txids at once) reads through read-only maps, filters and fences too, and it unmaps what it
touched before it returns: the index keeps no file pages resident. The newest runs, in memory,
hold their whole fences and filters.

Durability. Runs in memory are lost in a crash: the index then reopens at the height its files
end, and the ledger indexes the rest again from the log (at most ~index_memory_bytes_max of
rows). A run file written from memory is not fsynced: open checks every run's checksum, so one
whose bytes never reached the disk is found, and losing it costs re-indexing those blocks. A
merged or rewritten run is fsynced before the manifest names it, because its inputs are deleted
then and losing it would cost re-indexing all it covers; the directory is fsynced before those
inputs are unlinked, so an older manifest never names a deleted file. On open, a run that is
missing, or of the wrong size or checksum, is dropped with every later run; ``indexed_height``
falls back to where the survivors end.

Concurrency. One writer thread, any number of readers, and a merger thread: a merge of files
of index_background_merge_bytes or more (a gigabyte merge takes seconds) runs there without
the write lock, so adds go on meanwhile; the writer merges smaller runs after its inputs, and
the merger swaps its result in under the lock only if its inputs are still in place (a truncate
may have rewritten them: the result is then deleted unnamed). A failed background merge is
raised to the next add; a close abandons a merge under way. A reader takes the current snapshot (a
tuple of runs, each holding its own file descriptor and map) without a lock; the writer
publishes a new snapshot once the manifest names its files. A replaced run's file is unlinked at
once: a reader still holding an older snapshot keeps reading it (Linux keeps an unlinked file
while a descriptor or map holds it), and both go with the last reference to the run.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import json
import logging
import mmap
import os
import struct
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np

from tsunagi._native import indexing
from tsunagi.core.config import BLOCK_RECORDS_LIMIT
from tsunagi.errors import EncodingError, StorageError
from tsunagi.ledger import store_limits
from tsunagi.ledger.checksum import crc32
from tsunagi.ledger.log import write_all

__all__ = ["BlockEntries", "Index", "TxLocation"]

log = logging.getLogger(__name__)

FOLDER = "index"
MANIFEST = "manifest"
_MANIFEST_TEMPORARY = "manifest.tmp"
_MAGIC = b"TSUNAGIX"
_FORMAT_VERSION = 1
# magic, format version, kind, first, end, row counts of up to four sections.
_HEADER = struct.Struct("<8sIIQQ4Q")
_ALIGN = 64  # columns start on cache lines: aligned for numpy whatever the row counts
# A record's place is height << _POSITION_BITS | position, one u64 that sorts as (height,
# position) does: a block holds at most BLOCK_RECORDS_LIMIT records.
_POSITION_BITS = (BLOCK_RECORDS_LIMIT - 1).bit_length()
_POSITION_MASK = (1 << _POSITION_BITS) - 1
_HEIGHT_LIMIT = 1 << (63 - _POSITION_BITS)  # places stay below 2**63: no edge at 2**64 - 1
_NOT_FOUND = np.uint64(2**64 - 1)
_FENCE_ROWS = 64  # keys between fence entries: a 512-byte stretch, one page, seldom two
# Fence entries between entries of a file's top fence, the part of a file readers hold in
# memory: 8 bytes per 4,096 rows of each sorted section (~6 bytes per 1,000 records indexed:
# a tx row and about two history rows each), and a 512-byte stretch of the fence to read.
_TOP_FENCE_STEP = 64
_BLOOM_BITS_PER_KEY = 8  # 8 to 16 (a power of two words): 0.5-3% of absent txids pass
_DERIVED = ("fence", "bloom")  # columns a writer derives from the keys
_SCAN_ROWS = 512  # a binary search through pread reads a range this short at once
_BLOCK = 4096  # run files are written in whole blocks of this many bytes (_BlockFile)
_REBUILD = "The index is derived from the block log: delete the folder to rebuild it."


class _Kind(IntEnum):
    blocks = 1  # a range of heights: tx, history, hash, hashes
    owners = 2  # owner key -> account pairs


# Sections of a run and their columns. A sorted section is ordered by its first two columns (a
# key u64, then a second u64); its key is the first 8 bytes of a hash read big-endian where the
# section looks hashes up, so comparing keys compares those bytes. Its fence holds every
# _FENCE_ROWS-th key, searched before the keys (a file's through its top fence). The tx section
# also has a Bloom filter of its keys (one u64 word a key, chosen by the key's top bits, three
# bits set by its low 18), so a point lookup reads one word of most runs and no more.
_SECTIONS = {
    _Kind.blocks: {
        "tx": (("key", "<u8"), ("place", "<u8"), ("suffix", "V24"), ("code", "u1"),
               ("fence", "<u8"), ("bloom", "<u8")),
        "history": (("account", "<u8"), ("place", "<u8"), ("fence", "<u8")),
        "hash": (("key", "<u8"), ("height", "<u8"), ("fence", "<u8")),
        "hashes": (("hash", "V32"),),  # in height order, not sorted
    },
    _Kind.owners: {"owner": (("key", "<u8"), ("account", "<u8"), ("suffix", "V24"),
                             ("fence", "<u8"))},
}
_KEYS = {section: spec[0][0] for sections in _SECTIONS.values()
         for section, spec in sections.items() if ("fence", "<u8") in spec}
_SECONDS = {section: spec[1][0] for sections in _SECTIONS.values()
            for section, spec in sections.items() if section in _KEYS}
_DTYPES = {(section, name): np.dtype(dtype) for sections in _SECTIONS.values()
           for section, spec in sections.items() for name, dtype in spec}
_SECTION_NUMBERS = {section: number for sections in _SECTIONS.values()
                    for number, section in enumerate(sections)}


class TxLocation(NamedTuple):
    """Where a transaction is: block height, index in the block, and its result code."""

    height: int
    position: int
    code: int


class BlockEntries(NamedTuple):
    """What the index learns from one block (arrays as the ledger holds them)."""

    height: int
    block_hash: bytes
    txids: np.ndarray  # N x 32 uint8
    codes: np.ndarray  # N uint8
    debit_accounts: np.ndarray  # N uint64
    credit_accounts: np.ndarray  # N uint64


class _Entry(NamedTuple):
    """A run as the manifest names it (name "" while it is in memory). Block runs cover heights
    [first, end); an owner run's first is indexed_height when its oldest pair was added, its
    end its largest account + 1. size is the file's bytes (the arrays' bytes in memory)."""

    name: str
    kind: int
    first: int
    end: int
    counts: tuple[int, ...]
    size: int
    checksum: int


def _layout(kind: int, counts: Sequence[int]) -> tuple[dict, int]:
    """Offset, dtype and row count of every (section, column), and the file size."""
    offset, columns = _HEADER.size, {}
    for (section, spec), count in zip(_SECTIONS[kind].items(), counts, strict=True):
        for name, dtype in spec:
            rows = {"fence": -(-count // _FENCE_ROWS), "bloom": _bloom_words(count)
                    }.get(name, count)
            offset = -(-offset // _ALIGN) * _ALIGN
            columns[section, name] = (offset, np.dtype(dtype), rows)
            offset += rows * np.dtype(dtype).itemsize
    return columns, offset


def _data_columns(kind: int, section: str) -> list[str]:
    """The columns a writer is given (fence and Bloom filter it derives from the keys)."""
    return [name for name, _ in _SECTIONS[kind][section] if name not in _DERIVED]


def _bloom_words(count: int) -> int:
    """Words of a Bloom filter for ``count`` keys: a power of two, at least two."""
    return 1 << max(1, (count * _BLOOM_BITS_PER_KEY - 1).bit_length() - 6)


def _bloom_bits(keys: np.ndarray) -> np.ndarray:
    """The three bits each key sets in its word (from its low 18 bits)."""
    one = np.uint64(1)
    return (one << (keys & np.uint64(63))) | (one << ((keys >> np.uint64(6)) & np.uint64(63))) \
        | (one << ((keys >> np.uint64(12)) & np.uint64(63)))


def _header(entry: _Entry) -> bytes:
    counts = tuple(entry.counts) + (0,) * (4 - len(entry.counts))
    return _HEADER.pack(_MAGIC, _FORMAT_VERSION, entry.kind, entry.first, entry.end, *counts)


def _padding(columns: dict) -> dict:
    """Zero bytes before each column (from the end of the one before it)."""
    padding, end = {}, _HEADER.size
    for key, (offset, dtype, count) in columns.items():
        padding[key], end = offset - end, offset + count * dtype.itemsize
    return padding


def _combined_checksum(header: bytes, column_checksums: Iterable[int]) -> int:
    """A run's checksum: crc32 of the header and of each column's crc32 in file order, each
    column's taken over its bytes and the padding before it (columns are written in chunks, a
    running crc32 each), so every byte of the file is covered."""
    return crc32(b"".join(struct.pack("<I", crc) for crc in column_checksums),
                      crc32(header))


def _prefixes(rows: np.ndarray) -> np.ndarray:
    """First 8 bytes of each N x 32 uint8 row as a big-endian number: sorts as bytes do."""
    return rows.view(">u8")[:, 0].astype(np.uint64)


def _pread_into(fd: int, target: np.ndarray, offset: int) -> None:
    view = memoryview(target.view(np.uint8)).cast("B")
    while view:
        got = os.preadv(fd, [view], offset)
        if got == 0:
            raise StorageError(f"an index run ended early at byte {offset}. {_REBUILD}")
        view, offset = view[got:], offset + got


def _top_fence(fd: int, offset: int, dtype: np.dtype, count: int, step: int) -> np.ndarray:
    """Every ``step``-th entry of a file's fence column (at ``offset``, ``count`` rows), read
    in chunks of at most index_read_chunk_bytes: the whole column never sits in memory."""
    chunk_rows = max(1, store_limits.index_read_chunk_bytes // dtype.itemsize // step) * step
    tops = np.empty(-(-count // step), dtype)
    for start in range(0, count, chunk_rows):
        chunk = np.empty(min(chunk_rows, count - start), dtype)
        _pread_into(fd, chunk, offset + start * dtype.itemsize)
        tops[start // step:start // step + len(chunk[::step])] = chunk[::step]
    return tops


class _Run:
    """A run: a file (read with pread, mapped read-only for ``txs`` alone) or, for the newest
    blocks, arrays in memory. ``sections[section][column]`` are map views or those arrays.
    ``fences[section]`` is searched first: a run in memory's whole fence; a file's top fence,
    every _TOP_FENCE_STEP-th entry of its fence, the only part of a file held in memory."""

    __slots__ = ("_fd", "_map", "bloom", "bloom_offset", "bloom_shift", "columns", "entry",
                 "fence_step", "fences", "path", "sections")

    def __init__(self, entry: _Entry, sections: dict, fences: dict, fence_step: int = 1,
                 path: Path | None = None, columns: dict | None = None, fd: int = -1,
                 mapped: mmap.mmap | None = None):
        """Private: use :meth:`in_memory` or :meth:`on_file`."""
        self.entry, self.sections, self.path = entry, sections, path
        self.columns, self._fd, self._map = columns, fd, mapped
        # As sequences of Python ints (memoryviews): bisect and one test of a word are ~10x
        # faster on them than on numpy arrays.
        self.fences = {section: memoryview(fence).cast("B").cast("Q")
                       for section, fence in fences.items()}
        self.fence_step = fence_step  # fence entries per entry of fences: 1 in memory
        self.bloom, self.bloom_offset, self.bloom_shift = None, 0, 64
        if "tx" in sections:
            words = sections["tx"]["bloom"]
            self.bloom_shift = 64 - (len(words).bit_length() - 1)
            if path is None:
                self.bloom = memoryview(words).cast("B").cast("Q")
            else:  # read a word at a time (bloom_word), or through the map by txs
                self.bloom_offset = columns["tx", "bloom"][0]

    @classmethod
    def in_memory(cls, kind: int, first: int, end: int, sections: dict) -> _Run:
        sections = {name: {column: rows[column] for column in _data_columns(kind, name)}
                    for name, rows in sections.items()}
        for name, rows in sections.items():
            if name in _KEYS:
                rows["fence"] = np.ascontiguousarray(rows[_KEYS[name]][::_FENCE_ROWS])
            if name == "tx":
                rows["bloom"] = np.zeros(_bloom_words(len(rows["key"])), np.uint64)
                indexing.bloom_add(rows["bloom"], rows["key"])
        counts = tuple(len(next(iter(rows.values()))) for rows in sections.values())
        size = sum(array.nbytes for rows in sections.values() for array in rows.values())
        fences = {name: rows["fence"] for name, rows in sections.items() if name in _KEYS}
        return cls(_Entry("", int(kind), first, end, counts, size, 0), sections, fences)

    @classmethod
    def on_file(cls, folder: Path, entry: _Entry) -> _Run:
        columns, _ = _layout(entry.kind, entry.counts)
        fd = os.open(folder / entry.name, os.O_RDONLY)
        try:
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            mapped.madvise(mmap.MADV_RANDOM)  # txs jumps around: read-ahead would be waste
            sections: dict[str, dict[str, np.ndarray]] = {}
            for (section, name), (offset, dtype, count) in columns.items():
                column = np.frombuffer(mapped, dtype, count, offset) if count else \
                    np.empty(0, dtype)
                sections.setdefault(section, {})[name] = column
            step = _TOP_FENCE_STEP
            fences = {section: _top_fence(fd, *columns[section, "fence"], step)
                      for section in sections if section in _KEYS}
        except BaseException:
            os.close(fd)
            raise
        return cls(entry, sections, fences, step, folder / entry.name, columns, fd, mapped)

    def __del__(self, close: Callable[[int], None] = os.close) -> None:
        # close bound early: at interpreter exit the os module may be gone before the last run
        if self._fd >= 0:
            close(self._fd)
            self._fd = -1

    @property
    def first(self) -> int:
        return self.entry.first

    @property
    def end(self) -> int:
        return self.entry.end

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def rows(self, section: str) -> int:
        return self.entry.counts[_SECTION_NUMBERS[section]]

    def read(self, section: str, column: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a column: by pread from a file, so no page gets mapped."""
        if self.path is None:
            return self.sections[section][column][start:stop]
        offset, dtype, _ = self.columns[section, column]
        rows = np.empty(max(stop - start, 0), dtype)
        _pread_into(self._fd, rows, offset + start * dtype.itemsize)
        return rows

    def pread(self, section: str, column: str, start: int, stop: int) -> bytes:
        """The bytes of rows [start, stop) of a column (pread from a file: nothing mapped)."""
        if self.path is None:
            return self.sections[section][column][start:stop].tobytes()
        offset, dtype, _ = self.columns[section, column]
        size = max(stop - start, 0) * dtype.itemsize
        data = os.pread(self._fd, size, offset + start * dtype.itemsize)
        if len(data) != size:
            raise StorageError(f"{self.path} ended early: an index run was cut short. "
                               f"{_REBUILD}")
        return data

    def read_into(self, section: str, column: str, start: int, rows: np.ndarray) -> None:
        if self.path is None:
            rows[:] = self.sections[section][column][start:start + len(rows)]
        else:
            offset, dtype, _ = self.columns[section, column]
            _pread_into(self._fd, rows, offset + start * dtype.itemsize)

    def bloom_word(self, key: int) -> int:
        """The word of the tx Bloom filter that ``key`` falls in: from memory, or one 8-byte
        pread from a file (the filter of a file is never held)."""
        word = key >> self.bloom_shift
        if self.bloom is not None:
            return self.bloom[word]
        data = os.pread(self._fd, 8, self.bloom_offset + 8 * word)
        if len(data) != 8:
            raise StorageError(f"{self.path} ended early: an index run was cut short. "
                               f"{_REBUILD}")
        return int.from_bytes(data, "little")

    def fence_rank(self, section: str, key: int, side: str) -> int:
        """``searchsorted(key, side)`` of a sorted section's fence. A file's: in its top fence
        (memory), then in the one stretch of _TOP_FENCE_STEP fence entries that holds it (one
        pread), as _stretch finds keys in the fence."""
        found = _SIDES[side](self.fences[section], key)
        if self.fence_step == 1 or found == 0:  # 0: the fence's first entry is past key
            return found
        low = (found - 1) * self.fence_step
        high = min(found * self.fence_step, self.columns[section, "fence"][2])
        return low + _SIDES[side](_words(self.pread(section, "fence", low, high)), key)

    def drop_pages(self) -> None:
        """Unmaps the pages ``txs`` touched (the page cache keeps them), so they stop counting
        in the process's resident memory."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)


class _Snapshot(NamedTuple):
    """What readers see: block runs in height order (files, then those in memory), owner runs
    oldest first."""

    blocks: tuple[_Run, ...]
    owners: tuple[_Run, ...]
    firsts: tuple[int, ...]  # first height of each block run, for bisect

    @property
    def indexed_height(self) -> int:
        return self.blocks[-1].end if self.blocks else 0


class _BlockFile:
    """A file written in whole aligned blocks, by O_DIRECT where the file system takes it: page
    cache writes cost the indexer ~1.7 ns of CPU a byte here (0.4-0.9 GB/s of thread CPU with
    ~1 GB dirty, and half of all its CPU at 20 million records), direct ones ~0.06 (17-18 GB/s).

    Each column is a stream of bytes at increasing positions between ``start`` and ``end``: its
    whole blocks are written as they fill (in pieces of the aligned scratch buffer), the bytes
    of blocks it shares with a neighbour (or the header) are gathered in ``edges`` and written
    last. Every write is then of whole blocks from page-aligned memory, as O_DIRECT needs; a
    file system without O_DIRECT (tmpfs) gets the same writes through the page cache."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        # A small file goes through the page cache: a direct write waits for the disk, and a
        # file of a few blocks would wait once a block.
        direct = getattr(os, "O_DIRECT", 0) if size >= store_limits.index_write_buffer_bytes \
            else 0
        try:
            self.fd = os.open(path, flags | direct, 0o644)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            self.fd = os.open(path, flags, 0o644)
        self.scratch = mmap.mmap(-1, min(size + _BLOCK, store_limits.index_write_buffer_bytes))
        self.edges: dict[int, bytearray] = {}
        self.carries: dict[Hashable, tuple[int, bytes]] = {}
        os.ftruncate(self.fd, size)

    def put(self, stream: Hashable, start: int, end: int, position: int, data: memoryview
            ) -> None:
        """Bytes of a stream (a column at file bytes [start, end)) at ``position``, which
        carries on where the stream's last bytes ended."""
        first, last = -(-start // _BLOCK) * _BLOCK, end // _BLOCK * _BLOCK
        if first >= last:  # no whole block of its own
            self._edge(position, data)
            return
        stop = position + len(data)
        if position < first:
            self._edge(position, data[:first - position])
        inside = data[max(first - position, 0):max(min(last, stop) - position, 0)]
        if len(inside):
            self._stream(stream, max(position, first), inside)
        if stop > last:
            self._edge(max(position, last), data[max(last - position, 0):])

    def _edge(self, position: int, data: memoryview) -> None:
        while len(data):
            block, at = divmod(position, _BLOCK)
            part = min(len(data), _BLOCK - at)
            self.edges.setdefault(block, bytearray(_BLOCK))[at:at + part] = data[:part]
            data, position = data[part:], position + part

    def _stream(self, stream: Hashable, position: int, data: memoryview) -> None:
        """Whole blocks out now; the bytes past the last whole one wait for the next call."""
        base, carry = self.carries.pop(stream, (position, b""))
        assert base + len(carry) == position, f"{stream}: bytes out of order"
        capacity = len(self.scratch)
        self.scratch[:len(carry)] = carry
        filled = len(carry)
        while True:
            take = min(len(data), capacity - filled)
            whole = (filled + take) // _BLOCK * _BLOCK
            if whole == 0:
                break
            take = whole - filled
            self.scratch[filled:whole] = data[:take]
            write_all(self.fd, [memoryview(self.scratch)[:whole]], base)
            data, base, filled = data[take:], base + whole, 0
        carry = bytes(self.scratch[:filled]) + bytes(data)
        if carry:
            self.carries[stream] = (base, carry)

    def finish(self, sync: bool) -> None:
        assert not self.carries, f"streams left unfinished: {list(self.carries)}"
        blocks = sorted(self.edges)
        while blocks:  # neighbouring blocks in one write
            count = 1
            while count < min(len(blocks), len(self.scratch) // _BLOCK) and \
                    blocks[count] == blocks[0] + count:
                count += 1
            for at, block in enumerate(blocks[:count]):
                self.scratch[at * _BLOCK:(at + 1) * _BLOCK] = self.edges[block]
            write_all(self.fd, [memoryview(self.scratch)[:count * _BLOCK]], blocks[0] * _BLOCK)
            blocks = blocks[count:]
        os.ftruncate(self.fd, self.size)  # the last block may have written past the end
        if sync:
            os.fsync(self.fd)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.scratch.close()


class _RunWriter:
    """Writes one run file column by column (chunks of a column in order), then checksums it."""

    def __init__(self, folder: Path, entry: _Entry):
        self.path = folder / entry.name
        self.columns, size = _layout(entry.kind, entry.counts)
        self.entry = entry._replace(size=size)
        self.filled = dict.fromkeys(self.columns, 0)
        self.keys = {section: _KEYS[section] for section, _ in self.columns if section in _KEYS}
        self.blooms = {section: np.zeros(count, np.uint64)
                       for (section, name), (_, _, count) in self.columns.items()
                       if name == "bloom"}
        self.checksums = {key: crc32(bytes(padding))
                          for key, padding in _padding(self.columns).items()}
        self.file: _BlockFile | None = _BlockFile(self.path, size)
        try:
            self.file.put("header", 0, _HEADER.size, 0, memoryview(_header(self.entry)))
        except BaseException:
            self.abandon()
            raise

    def write(self, section: str, column: str, rows: np.ndarray) -> None:
        """Appends rows to a column; rows of a sorted section's key also give its fence."""
        offset, dtype, count = self.columns[section, column]
        data = np.ascontiguousarray(rows, dtype=dtype)
        filled = self.filled[section, column]
        assert filled + len(data) <= count, f"{section}.{column}: more rows than the layout has"
        if column == self.keys.get(section):  # the rows at multiples of _FENCE_ROWS
            self.write(section, "fence", data[-filled % _FENCE_ROWS::_FENCE_ROWS])
            if section in self.blooms:
                indexing.bloom_add(self.blooms[section], data)
        raw = memoryview(data.view(np.uint8)).cast("B")
        self.file.put((section, column), offset, offset + count * dtype.itemsize,
                      offset + filled * dtype.itemsize, raw)
        self.checksums[section, column] = crc32(raw, self.checksums[section, column])
        self.filled[section, column] = filled + len(data)

    def finish(self, sync: bool) -> _Entry:
        for section, words in self.blooms.items():
            self.write(section, "bloom", words)
        for key, (_, _, count) in self.columns.items():
            assert self.filled[key] == count, f"{key}: {self.filled[key]} of {count} rows"
        self.file.finish(sync)
        self.file = None
        return self.entry._replace(checksum=_combined_checksum(_header(self.entry),
                                                               self.checksums.values()))

    def abandon(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.path.unlink(missing_ok=True)


def _checked_entries(entries: BlockEntries) -> BlockEntries:
    count = len(entries.codes)
    txids = np.ascontiguousarray(entries.txids, dtype=np.uint8)
    if txids.ndim != 2 or txids.shape != (count, 32):
        raise EncodingError(f"block {entries.height}: txids must be {count} x 32 uint8, "
                            f"got shape {txids.shape}")
    debit = np.ascontiguousarray(entries.debit_accounts, dtype=np.uint64)
    credit = np.ascontiguousarray(entries.credit_accounts, dtype=np.uint64)
    if debit.shape != (count,) or credit.shape != (count,):
        raise EncodingError(f"block {entries.height}: {count} codes but {debit.shape} debit and "
                            f"{credit.shape} credit accounts")
    if len(entries.block_hash) != 32:
        raise EncodingError(f"block {entries.height}: a block hash is 32 bytes")
    if count > BLOCK_RECORDS_LIMIT or not 0 <= entries.height < _HEIGHT_LIMIT:
        raise EncodingError(f"block {entries.height}: {count} records; a block holds at most "
                            f"{BLOCK_RECORDS_LIMIT} and heights are below {_HEIGHT_LIMIT}")
    codes = np.ascontiguousarray(entries.codes, dtype=np.uint8)
    return BlockEntries(entries.height, bytes(entries.block_hash), txids, codes, debit, credit)


# -- building a run from blocks ---------------------------------------------------------------

def _key_order(keys: np.ndarray) -> np.ndarray:
    """Order that sorts ``keys``, equal keys kept in their order. The unstable SIMD sort is ~6x
    faster than the stable one; equal keys (a txid twice, a crafted prefix) are rare."""
    order = np.argsort(keys)
    ordered = keys[order]
    if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():
        order = np.argsort(keys, kind="stable")
    return order


def _grouped_order(keys: np.ndarray) -> np.ndarray:
    """Stable order of ``keys`` with many equal ones (accounts): each key shifted left with its
    row number below makes every value distinct, so the fast unstable sort of the values is
    exact; the stable argsort is the fallback when the keys leave no room for row numbers."""
    count = len(keys)
    shift = max(count - 1, 1).bit_length()
    if count and int(keys.max()) >> (64 - shift) == 0:
        tagged = (keys << np.uint64(shift)) | np.arange(count, dtype=np.uint64)
        tagged.sort()
        return (tagged & np.uint64((1 << shift) - 1)).astype(np.intp)
    return np.argsort(keys, kind="stable")


def _places(blocks: list[BlockEntries]) -> np.ndarray:
    counts = np.array([len(block.codes) for block in blocks], dtype=np.int64)
    heights = np.array([block.height for block in blocks], dtype=np.uint64)
    starts = np.cumsum(counts) - counts
    rows = np.arange(int(counts.sum()), dtype=np.uint64)
    positions = rows - np.repeat(starts, counts).astype(np.uint64)
    return (np.repeat(heights, counts) << np.uint64(_POSITION_BITS)) | positions


def _tx_rows(blocks: list[BlockEntries], places: np.ndarray) -> dict[str, np.ndarray]:
    txids = np.concatenate([block.txids for block in blocks])
    keys = _prefixes(txids)
    order = _key_order(keys)  # the rows come in place order: equal keys stay oldest first
    rows = txids.view("V32")[:, 0][order].view(np.uint8).reshape(-1, 32)
    return {"key": keys[order], "place": places[order],
            "suffix": np.ascontiguousarray(rows[:, 8:]).view("V24")[:, 0],
            "code": np.concatenate([block.codes for block in blocks])[order]}


def _history_rows(blocks: list[BlockEntries], places: np.ndarray) -> dict[str, np.ndarray]:
    debit = np.concatenate([block.debit_accounts for block in blocks])
    credit = np.concatenate([block.credit_accounts for block in blocks])
    accounts = np.stack([debit, credit], axis=1).ravel()  # in (place, side) order
    keep = accounts != 0  # account 0 means "none" (an open_account's debit, a burn's credit)
    keep[1::2] &= credit != debit  # a record paying its own account is one entry
    accounts, places = accounts[keep], np.repeat(places, 2)[keep]
    order = _grouped_order(accounts)
    return {"account": accounts[order], "place": places[order]}


def _hash_rows(blocks: list[BlockEntries]) -> tuple[dict, dict]:
    hashes = np.frombuffer(b"".join(block.block_hash for block in blocks), np.uint8)
    hashes = hashes.reshape(-1, 32)
    keys = _prefixes(hashes)
    order = np.argsort(keys, kind="stable")
    heights = np.arange(blocks[0].height, blocks[-1].height + 1, dtype=np.uint64)
    return ({"key": keys[order], "height": heights[order]},
            {"hash": hashes.view("V32")[:, 0]})


def _block_sections(blocks: list[BlockEntries]) -> dict[str, dict[str, np.ndarray]]:
    places = _places(blocks)
    hash_rows, hashes = _hash_rows(blocks)
    return {"tx": _tx_rows(blocks, places), "history": _history_rows(blocks, places),
            "hash": hash_rows, "hashes": hashes}


def _owner_rows(pairs: Iterable[tuple[bytes, int]]) -> dict[str, np.ndarray]:
    keys, accounts = [], []
    for key, account in pairs:
        if len(key) != 32 or not 0 < account < 2**64:
            raise EncodingError(f"an owner key is 32 bytes and an account 1..2**64-1, got "
                                f"{len(key)} bytes and {account}")
        keys.append(bytes(key))
        accounts.append(account)
    rows = np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 32)
    numbers = np.array(accounts, dtype=np.uint64)
    prefixes = _prefixes(rows)
    order = np.lexsort((numbers, prefixes))
    return {"key": prefixes[order], "account": numbers[order],
            "suffix": np.ascontiguousarray(rows[order, 8:]).view("V24")[:, 0]}


# -- searching a run ------------------------------------------------------------------------------

def _words(data: bytes) -> memoryview:
    """u64 values of little-endian bytes as a sequence of Python ints (for bisect)."""
    return memoryview(data).cast("Q")


_SIDES = {"left": bisect.bisect_left, "right": bisect.bisect_right}


def _stretch(run: _Run, section: str, key: int, side: str = "left") -> tuple[int, memoryview]:
    """The first row and the keys of the stretch of at most _FENCE_ROWS rows that holds
    ``searchsorted(key, side)`` of the section's keys: found in the fence (fence_rank)."""
    segment = run.fence_rank(section, key, side)
    low = max(segment - 1, 0) * _FENCE_ROWS
    high = min(segment * _FENCE_ROWS, run.rows(section))
    return low, _words(run.pread(section, _KEYS[section], low, high))


def _find_range(run: _Run, section: str, key: int) -> tuple[int, int]:
    """The rows holding ``key``: one read when they end inside the stretch they start in (a
    key held by a few rows), else a second for where they end."""
    low, keys = _stretch(run, section, key)
    start, stop = bisect.bisect_left(keys, key), bisect.bisect_right(keys, key)
    if stop < len(keys) or low + len(keys) == run.rows(section):
        return low + start, low + stop
    return low + start, _find(run, section, key, "right")


def _find(run: _Run, section: str, key: int, side: str = "left") -> int:
    """``searchsorted(key, side)`` of a sorted section's keys: one read of one stretch."""
    low, keys = _stretch(run, section, key, side)
    return low + _SIDES[side](keys, key)


def _bisect(run: _Run, section: str, column: str, value: int, low: int, high: int,
            side: str = "left") -> int:
    """``searchsorted(value, side)`` within rows [low, high) of a u64 column sorted there:
    single values by pread until the range is short, then the range at once."""
    while high - low > _SCAN_ROWS:
        middle = (low + high) // 2
        probe = _words(run.pread(section, column, middle, middle + 1))[0]
        if probe < value or (side == "right" and probe == value):
            low = middle + 1
        else:
            high = middle
    return low + _SIDES[side](_words(run.pread(section, column, low, high)), value)


def _find_many(table: dict[str, np.ndarray], keys: np.ndarray, needles: np.ndarray
               ) -> np.ndarray:
    """``keys.searchsorted(needles)`` through the fence, for many needles at once: a
    vectorised binary search over each needle's stretch of _FENCE_ROWS keys (one or two pages
    of a map each)."""
    if not len(keys):
        return np.zeros(len(needles), dtype=np.intp)
    low = table["fence"].searchsorted(needles).astype(np.intp)
    high = np.minimum(low * _FENCE_ROWS, len(keys))
    low = np.maximum(low - 1, 0) * _FENCE_ROWS
    for _ in range(_FENCE_ROWS.bit_length()):  # halves a stretch of <= _FENCE_ROWS each step
        middle = (low + high) >> 1
        right = (low < high) & (keys[np.minimum(middle, len(keys) - 1)] < needles)
        low = np.where(right, middle + 1, low)
        high = np.where(right | (low >= high), high, middle)
    return low


def _maybe_in(words: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which keys a run's Bloom filter lets through (all it holds, and a few others)."""
    index = (keys >> np.uint64(64 - (len(words).bit_length() - 1))).astype(np.intp)
    need = _bloom_bits(keys)
    return (words[index] & need) == need


def _tx_in_run(run: _Run, key: int, suffix: bytes) -> TxLocation | None:
    low, keys = _stretch(run, "tx", key)
    row = low + bisect.bisect_left(keys, key)
    while row < run.rows("tx"):
        found = keys[row - low] if row - low < len(keys) else \
            _words(run.pread("tx", "key", row, row + 1))[0]
        if found != key:
            return None
        if run.pread("tx", "suffix", row, row + 1) == suffix:  # a prefix is no proof
            return _location(_words(run.pread("tx", "place", row, row + 1))[0],
                             run.pread("tx", "code", row, row + 1)[0])
        row += 1
    return None


def _search_run(table: dict[str, np.ndarray], keys: np.ndarray, suffixes: np.ndarray,
                pending: np.ndarray, places: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Looks the ``pending`` needles up in one run's tx table, fills ``places`` and ``codes`` of
    those found, and returns the needles still pending (in the same order)."""
    run_keys = table["key"]
    rows = _find_many(table, run_keys, keys[pending])
    inside = rows < len(run_keys)
    candidates, rows = pending[inside], rows[inside]
    same_key = run_keys[rows] == keys[candidates]
    candidates, rows = candidates[same_key], rows[same_key]
    same = (table["suffix"][rows].view("<u8").reshape(-1, 3) == suffixes[candidates]).all(axis=1)
    hits, hit_rows = list(candidates[same]), list(rows[same])
    # The first row with the key holds another txid of that prefix: look at the rows after it.
    for needle, row in zip(candidates[~same].tolist(), rows[~same].tolist()):
        row += 1
        while row < len(run_keys) and run_keys[row] == keys[needle]:
            if (table["suffix"][row:row + 1].view("<u8") == suffixes[needle]).all():
                hits.append(needle)
                hit_rows.append(row)
                break
            row += 1
    if not hits:
        return pending
    hits_array, rows_array = np.array(hits, dtype=np.intp), np.array(hit_rows, dtype=np.intp)
    places[hits_array] = table["place"][rows_array]
    codes[hits_array] = table["code"][rows_array]
    return pending[places[pending] == _NOT_FOUND]


def _history_places(run: _Run, account: int, bound: int | None, limit: int) -> list[int]:
    """Up to ``limit`` places of ``account`` in one run, newest first, below ``bound``."""
    low, high = _find_range(run, "history", account)
    if bound is not None and high > low:
        high = _bisect(run, "history", "place", bound, low, high)
    start = max(low, high - limit)
    return _words(run.pread("history", "place", start, high)).tolist()[::-1]


def _location(place: int, code: int) -> TxLocation:
    return TxLocation(place >> _POSITION_BITS, place & _POSITION_MASK, code)


def _txid_rows(txids: np.ndarray | Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """N x 32 rows and which of them are txids at all (a byte string of another length is
    answered None)."""
    if isinstance(txids, np.ndarray):
        rows = np.ascontiguousarray(txids, dtype=np.uint8).reshape(-1, 32)
        return rows, np.ones(len(rows), dtype=bool)
    items = [bytes(txid) for txid in txids]
    valid = np.array([len(item) == 32 for item in items], dtype=bool)
    joined = b"".join(item if len(item) == 32 else bytes(32) for item in items)
    return np.frombuffer(joined, np.uint8).reshape(-1, 32), valid


def _place_bound(height: int, position: int) -> int:
    """The smallest place not older than (height, position), clamped to the places possible."""
    if height < 0 or position < 0:
        raise ValueError(f"before is a (height, position) pair of non-negative numbers, got "
                         f"{(height, position)}")
    return (min(height, _HEIGHT_LIMIT) << _POSITION_BITS) + min(position, _POSITION_MASK + 1)


# -- merging and filtering runs ---------------------------------------------------------------

def _merged_sections(runs: list[_Run]) -> dict[str, dict[str, np.ndarray]]:
    """The rows of ``runs`` (consecutive, oldest first) as one run's sections, in memory: a
    sorted section's inputs merged by (key, second), equal rows oldest input first (the native
    linear merge: the inputs are sorted already), the others one input after another."""
    kind = runs[0].entry.kind
    merged = {}
    for section in _SECTIONS[kind]:
        pieces = {name: [run.read(section, name, 0, run.rows(section)) for run in runs]
                  for name in _data_columns(kind, section)}
        merged[section] = _merged_pieces(kind, section, pieces)
    return merged


def _merged_pieces(kind: int, section: str, pieces: dict[str, list[np.ndarray]]
                   ) -> dict[str, np.ndarray]:
    """Columns of one section from each input's rows (``pieces[column][input]``): merged by
    (key, second) for a sorted section, else concatenated. Block runs merge by key alone, equal
    keys oldest input first: the same order, since their seconds (place, height) grow from
    input to input, and a faster merge; owner runs' accounts need not."""
    if len(next(iter(pieces.values()))) == 1:
        return {name: rows[0] for name, rows in pieces.items()}
    if section not in _KEYS:
        return {name: np.concatenate(rows) for name, rows in pieces.items()}
    seconds = None if kind == _Kind.blocks else pieces[_SECONDS[section]]
    sources = indexing.merge_sources(pieces[_KEYS[section]], seconds)
    return {name: indexing.gather_rows(rows, sources) for name, rows in pieces.items()}


def _rank(run: _Run, section: str, bound: tuple[int, int], low: int, high: int,
          side: str = "left") -> int:
    """Rows of [low, high) ordered before (or, side "right", up to) ``bound`` = (key, second):
    the rank of the key in the whole run clamped to the range, then the second among equal
    keys."""
    key, second = bound
    first = min(max(_find(run, section, key, "left"), low), high)
    last = min(max(_find(run, section, key, "right"), low), high)
    return _bisect(run, section, _SECONDS[section], second, first, last, side)


def _chunk_stops(runs: list[_Run], section: str, starts: list[int], ends: list[int]
                 ) -> list[int]:
    """Where the next merge chunk ends in each input: before the smallest (key, second) found
    ``step`` rows ahead in any input, so no input gives more than ``step`` rows to it (and the
    chunk holds at most index_merge_chunk_rows) and equal rows never straddle two chunks."""
    step = max(1, store_limits.index_merge_chunk_rows // len(runs))
    ahead = [(int(run.read(section, _KEYS[section], start + step, start + step + 1)[0]),
              int(run.read(section, _SECONDS[section], start + step, start + step + 1)[0]))
             for run, start, end in zip(runs, starts, ends) if end - start > step]
    if not ahead:
        return list(ends)
    bound = min(ahead)
    stops = [_rank(run, section, bound, start, end)
             for run, start, end in zip(runs, starts, ends)]
    if stops == starts:  # more equal rows than a chunk holds (an owner pair added many times)
        stops = [_rank(run, section, bound, start, end, "right")
                 for run, start, end in zip(runs, starts, ends)]
    return stops


class _DirectReader:
    """Reads chunks of run files for a merge by O_DIRECT, through an aligned buffer: once the
    files were written around the page cache, reading them through it cost the indexer as much
    CPU as writing through it had (preadv 41 -> 280 ns a record at 20 million records). Small
    reads (a merge's search for where a chunk ends) and small files stay with the run's own
    pread."""

    def __init__(self):
        self.scratch = mmap.mmap(-1, store_limits.index_write_buffer_bytes)  # page-aligned
        self.fds: dict[Path, int] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        for fd in self.fds.values():
            if fd >= 0:
                os.close(fd)
        self.fds.clear()
        self.scratch.close()

    def rows(self, run: _Run, section: str, column: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a column of ``run`` (a copy: the buffer is reused)."""
        offset, dtype, _ = run.columns[section, column] if run.on_disk else (0, None, 0)
        fd = self._fd(run)
        if fd < 0:
            return run.read(section, column, start, stop)
        rows = np.empty(max(stop - start, 0), dtype)
        self._read(fd, run.path, memoryview(rows.view(np.uint8)).cast("B"),
                   offset + start * dtype.itemsize)
        return rows

    def _fd(self, run: _Run) -> int:
        if not run.on_disk or run.entry.size < store_limits.index_write_buffer_bytes:
            return -1  # a small file was written through the page cache (_BlockFile)
        if run.path not in self.fds:
            try:
                self.fds[run.path] = os.open(run.path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
            except OSError as error:  # tmpfs takes no O_DIRECT: the run's own pread then
                if error.errno != errno.EINVAL:
                    raise
                self.fds[run.path] = -1
        return self.fds[run.path]

    def _read(self, fd: int, path: Path, target: memoryview, position: int) -> None:
        capacity = len(self.scratch)
        while len(target):
            base = position // _BLOCK * _BLOCK
            want = min(capacity, -(-(position + len(target)) // _BLOCK) * _BLOCK - base)
            got = os.preadv(fd, [memoryview(self.scratch)[:want]], base)
            usable = min(got - (position - base), len(target))
            if usable <= 0:
                raise StorageError(f"{path} ended early at byte {position}: an index run was "
                                   f"cut short. {_REBUILD}")
            target[:usable] = self.scratch[position - base:position - base + usable]
            target, position = target[usable:], position + usable


class _Interrupted(Exception):
    """A background merge stopped because the index is closing."""


def _merge_sorted(writer: _RunWriter, runs: list[_Run], section: str,
                  reader: _DirectReader, check: Callable[[], None] = lambda: None) -> None:
    """Writes the rows of a sorted section of ``runs`` merged, a bounded chunk at a time;
    ``check()`` runs before each chunk (it may raise to stop the merge)."""
    names = _data_columns(runs[0].entry.kind, section)
    starts, ends = [0] * len(runs), [run.rows(section) for run in runs]
    while starts != ends:
        check()
        stops = _chunk_stops(runs, section, starts, ends)
        inputs = [(run, start, stop) for run, start, stop in zip(runs, starts, stops)
                  if stop > start]
        chunk = _merged_pieces(runs[0].entry.kind, section, {
            name: [reader.rows(run, section, name, start, stop) for run, start, stop in inputs]
            for name in names})
        for name in names:
            writer.write(section, name, chunk[name])
        starts = stops


def _copy_rows(writer: _RunWriter, run: _Run, section: str, stop: int,
               reader: _DirectReader, keep: tuple[str, int] | None = None) -> None:
    """Copies rows [0, stop) of a section in chunks; with ``keep`` = (column, bound) only the
    rows whose column is below bound."""
    names = _data_columns(run.entry.kind, section)
    for start in range(0, stop, store_limits.index_merge_chunk_rows):
        end = min(stop, start + store_limits.index_merge_chunk_rows)
        chunk = {name: reader.rows(run, section, name, start, end) for name in names}
        if keep is not None:
            kept = chunk[keep[0]] < np.uint64(keep[1])
            chunk = {name: rows[kept] for name, rows in chunk.items()}
        for name in names:
            writer.write(section, name, chunk[name])


def _count_below(run: _Run, section: str, column: str, bound: int) -> int:
    total, count = 0, run.rows(section)
    for start in range(0, count, store_limits.index_merge_chunk_rows):
        end = min(count, start + store_limits.index_merge_chunk_rows)
        total += int(np.count_nonzero(run.read(section, column, start, end) < np.uint64(bound)))
    return total


def _keeps(kind: int, bound: int) -> dict[str, tuple[str, int] | int]:
    """What a filtered run keeps of each section: rows whose column is below a bound, or (the
    block hashes in height order) the first rows."""
    if kind == _Kind.owners:
        return {"owner": ("account", bound)}
    return {"tx": ("place", bound << _POSITION_BITS),
            "history": ("place", bound << _POSITION_BITS), "hash": ("height", bound),
            "hashes": None}


def _filtered_sections(run: _Run, bound: int) -> dict[str, dict[str, np.ndarray]]:
    """The rows of a run in memory that a filter at ``bound`` keeps (see _keeps)."""
    sections = {}
    for section, keep in _keeps(run.entry.kind, bound).items():
        columns = {name: run.sections[section][name]
                   for name in _data_columns(run.entry.kind, section)}
        if keep is None:
            kept = slice(0, bound - run.first)
        else:
            kept = columns[keep[0]] < np.uint64(keep[1])
        sections[section] = {name: rows[kept] for name, rows in columns.items()}
    return sections


# -- open: the manifest and the checks of each run ---------------------------------------------

def _read_manifest(folder: Path) -> tuple[list[_Entry], int] | None:
    """The manifest's runs and next run number; None when missing; raises ValueError when it is
    damaged."""
    try:
        data = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None
    checksum, _, body = data.partition(b"\n")
    if checksum != b"%08x" % crc32(body):
        raise ValueError("its checksum does not match")
    content = json.loads(body)
    if content.get("format") != _FORMAT_VERSION:
        raise ValueError(f"format {content.get('format')!r}, expected {_FORMAT_VERSION}")
    entries = [_Entry(name, kind, first, end, tuple(counts), size, checksum)
               for name, kind, first, end, counts, size, checksum in content["runs"]]
    return entries, int(content["next_run"])


def _manifest_bytes(entries: Iterable[_Entry], next_run: int) -> bytes:
    body = json.dumps({"format": _FORMAT_VERSION, "next_run": next_run,
                       "runs": [list(entry[:4]) + [list(entry.counts), entry.size,
                                                   entry.checksum] for entry in entries]},
                      separators=(",", ":")).encode()
    return b"%08x\n" % crc32(body) + body


def _damage(folder: Path, entry: _Entry) -> str | None:
    """What is wrong with a run file, or None when its size, header and checksum are right."""
    path = folder / entry.name
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "the file is missing"
    try:
        size = os.fstat(fd).st_size
        columns, expected = _layout(entry.kind, entry.counts)
        if size != entry.size:
            return f"{size} bytes, the manifest says {entry.size}"
        if size != expected:
            return f"{size} bytes, its row counts make {expected}"
        header = os.pread(fd, _HEADER.size, 0)
        if header != _header(entry):
            return "its header does not match the manifest"
        checksums = []
        for (offset, dtype, count), padding in zip(columns.values(), _padding(columns).values()):
            checksum, end, offset = 0, offset + count * dtype.itemsize, offset - padding
            while offset < end:
                chunk = os.pread(fd, min(end - offset, store_limits.index_read_chunk_bytes),
                                 offset)
                checksum, offset = crc32(chunk, checksum), offset + len(chunk)
            checksums.append(checksum)
        if _combined_checksum(header, checksums) != entry.checksum:
            return "its checksum does not match"
        return None
    finally:
        os.close(fd)


def _recover(folder: Path, entries: list[_Entry]) -> tuple[list[_Entry], list[_Entry]]:
    """The block and owner runs that survive the checks (see the module's docstring)."""
    blocks = [entry for entry in entries if entry.kind == _Kind.blocks]
    owners = [entry for entry in entries if entry.kind == _Kind.owners]
    kept_blocks, end = [], 0
    for entry in blocks:
        problem = "it does not start where the run before it ends" if entry.first != end \
            else _damage(folder, entry)
        if problem:
            log.warning("index run %s (heights %d..%d) is damaged: %s. Dropping it and %d later "
                        "block runs: the index falls back to height %d and catches up from the "
                        "block log", entry.name, entry.first, entry.end - 1, problem,
                        len(blocks) - len(kept_blocks) - 1, end)
            break
        kept_blocks.append(entry)
        end = entry.end
    for position, entry in enumerate(owners):
        problem = _damage(folder, entry)
        if problem:
            # Its accounts came with blocks from entry.first on: index those blocks again.
            kept_blocks = [block for block in kept_blocks if block.end <= entry.first]
            log.warning("index owner run %s is damaged: %s. Dropping it and %d later owner "
                        "runs: the index falls back to height %d and catches up from the block "
                        "log", entry.name, problem, len(owners) - position - 1,
                        kept_blocks[-1].end if kept_blocks else 0)
            return kept_blocks, owners[:position]
    return kept_blocks, owners


def _remove_leftovers(folder: Path, keep: set[str]) -> None:
    for path in folder.iterdir():
        if path.name not in keep:
            log.info("index: deleting %s, which the manifest does not name (a crash's "
                     "leftover)", path.name)
            if path.is_dir():
                raise StorageError(f"{path} is a folder inside the index: move it elsewhere")
            path.unlink()


def _write_manifest(folder: Path, entries: Iterable[_Entry], next_run: int) -> None:
    """Replaces the manifest: a temporary file, fsynced, renamed over it."""
    temporary = folder / _MANIFEST_TEMPORARY
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, [_manifest_bytes(entries, next_run)], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, folder / MANIFEST)


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the index ----------------------------------------------------------------------------------

class Index:
    """Lookups by txid, block hash, height, owner key and account, over sorted runs.

    Open with :meth:`open`. Writes come from one thread; reads from any.
    """

    def __init__(self, directory: Path, entries: list[_Entry], next_run: int):
        """Private: use :meth:`Index.open`."""
        self.directory = directory
        self.folder = directory / FOLDER
        self._next_run = next_run
        self._write_mutex = threading.Lock()
        # The background merge (see _merge_while_due): its inputs while it runs, the thread,
        # and the error that stopped it, raised to the next writer.
        self._merge_changed = threading.Condition(self._write_mutex)
        self._merging: tuple[_Run, ...] = ()
        self._merger: threading.Thread | None = None
        self._merge_error: BaseException | None = None
        self._closing = False
        runs = [_Run.on_file(self.folder, entry) for entry in entries]
        self._snapshot: _Snapshot | None = _snapshot_of(
            [run for run in runs if run.entry.kind == _Kind.blocks],
            [run for run in runs if run.entry.kind == _Kind.owners])

    @classmethod
    def open(cls, directory: str | Path) -> Index:
        """Opens the index in ``directory``/index (created if missing), dropping damaged runs."""
        directory = Path(directory)
        folder = directory / FOLDER
        if (directory / "data.mdb").exists():
            log.warning("%s holds data.mdb, the LMDB index of an older tsunagi: it is no longer "
                        "read; delete data.mdb and lock.mdb to free the space", directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                found = _read_manifest(folder)
            except (ValueError, KeyError, TypeError) as error:
                log.warning("the index manifest in %s is damaged (%s): indexing again from "
                            "the block log", folder, error)
                found = None
            entries, next_run = found if found is not None else ([], 1)
            blocks, owners = _recover(folder, entries)
            if found is None or len(blocks) + len(owners) < len(entries):
                _write_manifest(folder, blocks + owners, next_run)
            _remove_leftovers(folder, {MANIFEST} | {entry.name for entry in blocks + owners})
            return cls(directory, blocks + owners, next_run)
        except OSError as error:
            raise StorageError(f"cannot open the index in {folder}: {error}. {_REBUILD}"
                               ) from error

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Writes the runs in memory to a file, then lets the runs go (a reader still inside a
        lookup keeps its own until it returns). A background merge under way is abandoned:
        its inputs stay, and the next open merges them again when due."""
        with self._merge_changed:
            self._closing = True
            self._merge_changed.notify_all()
            merger = self._merger
        if merger is not None:
            merger.join()
        with self._write_mutex:
            if self._snapshot is None:
                return
            try:
                self._flush()
            finally:
                self._snapshot = None

    def wait_merged(self) -> None:
        """Returns once no background merge is under way (or due)."""
        with self._merge_changed:
            while self._merging and self._merge_error is None and not self._closing:
                self._merge_changed.wait()

    @property
    def indexed_height(self) -> int:
        """Number of blocks indexed: the next add_block must be for this height."""
        return self._current().indexed_height

    @property
    def durable_height(self) -> int:
        """Blocks whose entries are in run files: what a reopen after a crash starts from."""
        blocks = [run for run in self._current().blocks if run.on_disk]
        return blocks[-1].end if blocks else 0

    @property
    def run_count(self) -> int:
        """Runs a lookup searches (block runs and owner runs, in files and in memory)."""
        snapshot = self._current()
        return len(snapshot.blocks) + len(snapshot.owners)

    # -- writes ------------------------------------------------------------------------------

    def add_block(self, height: int, block_hash: bytes, txids: np.ndarray, codes: np.ndarray,
                  debit_accounts: np.ndarray, credit_accounts: np.ndarray) -> None:
        """Indexes one block; ``height`` must be ``indexed_height``."""
        self.add_blocks([BlockEntries(height, block_hash, txids, codes, debit_accounts,
                                      credit_accounts)])

    def add_blocks(self, blocks: Sequence[BlockEntries]) -> None:
        """Indexes consecutive blocks as one run in memory (see the module's docstring)."""
        checked = [_checked_entries(entries) for entries in blocks]
        if not checked:
            return
        with self._write_mutex:
            self._raise_merge_error()
            snapshot = self._current()
            expected = snapshot.indexed_height
            for offset, entries in enumerate(checked):
                if entries.height != expected + offset:
                    raise ValueError(f"the index holds {expected + offset} blocks: block "
                                     f"{entries.height} is out of order")
            run = _Run.in_memory(_Kind.blocks, expected, expected + len(checked),
                                 _block_sections(checked))
            self._show(snapshot.blocks + (run,), snapshot.owners)
            del snapshot, run  # a flush frees these runs: _after_add says why no one else holds
            self._after_add(_Kind.blocks)

    def add_accounts(self, pairs: Iterable[tuple[bytes, int]]) -> None:
        """Records that owner key ``key`` owns ``account`` for each ``(key, account)``."""
        rows = _owner_rows(pairs)
        if not len(rows["key"]):
            return
        with self._write_mutex:
            self._raise_merge_error()
            snapshot = self._current()
            run = _Run.in_memory(_Kind.owners, snapshot.indexed_height,
                                 int(rows["account"].max()) + 1, {"owner": rows})
            self._show(snapshot.blocks, snapshot.owners + (run,))
            del snapshot, run, rows  # a flush frees these: _after_add says why no one else holds
            self._after_add(_Kind.owners)

    def drop_accounts(self, first_account: int) -> None:
        """Forgets every account numbered ``first_account`` and above (a reorg undid them)."""
        with self._write_mutex:
            snapshot = self._current()
            owners = [run if run.end <= first_account else self._filtered(run, first_account)
                      for run in snapshot.owners]
            replaced = [run for run, kept in zip(snapshot.owners, owners)
                        if kept is not run and run.on_disk]
            owners = [run for run in owners if run is not None]
            if replaced:
                self._publish(snapshot.blocks, owners, replaced)
            else:
                self._show(snapshot.blocks, owners)

    def truncate_above(self, height: int) -> None:
        """Forgets blocks at ``height`` and above: same argument as ``BlockLog.truncate``, so
        after both ``log.height == index.indexed_height == height``."""
        if height < 0:
            raise ValueError(f"cannot truncate the index to height {height}")
        with self._write_mutex:
            snapshot = self._current()
            kept = [run for run in snapshot.blocks if run.end <= height]
            cut = snapshot.blocks[len(kept):]
            if not cut:
                return
            if cut[0].first < height:  # the run holding the new tip: keep its start
                kept.append(self._filtered(cut[0], height))
            replaced = [run for run in cut if run.on_disk]
            if replaced:
                self._publish(kept, snapshot.owners, replaced)
            else:
                self._show(kept, snapshot.owners)
            self._merge_while_due(_Kind.blocks)

    # -- reads -------------------------------------------------------------------------------

    def tx(self, txid: bytes) -> TxLocation | None:
        """Where transaction ``txid`` is, or None when the index has not seen it."""
        txid = bytes(txid)
        if len(txid) != 32:
            return None
        key, suffix = int.from_bytes(txid[:8], "big"), txid[8:]
        need = (1 << (key & 63)) | (1 << (key >> 6 & 63)) | (1 << (key >> 12 & 63))
        for run in self._current().blocks:  # oldest first: a txid keeps its first place
            if (run.bloom_word(key) & need) != need:
                continue  # the Bloom filter knows the run lacks this prefix
            found = _tx_in_run(run, key, suffix)
            if found is not None:
                return found
        return None

    def txs(self, txids: np.ndarray | Sequence[bytes]) -> list[TxLocation | None]:
        """``tx`` for each txid (an N x 32 array or byte strings), one search per run for all:
        through maps, whose pages it unmaps before it returns."""
        rows, valid = _txid_rows(txids)
        places = np.full(len(rows), _NOT_FOUND, dtype=np.uint64)
        codes = np.zeros(len(rows), dtype=np.uint8)
        keys = _prefixes(rows)
        suffixes = np.ascontiguousarray(rows[:, 8:]).view("<u8")
        pending = np.argsort(keys)  # in key order, each run's map is read front to back
        pending = pending[valid[pending]]
        searched = []
        try:
            for run in self._current().blocks:  # oldest first: a txid keeps its first place
                if not len(pending):
                    break
                table = run.sections["tx"]
                searched.append(run)  # a file's Bloom filter and fence are read through its map
                maybe = pending[_maybe_in(table["bloom"], keys[pending])]
                if len(maybe):
                    _search_run(table, keys, suffixes, maybe, places, codes)
                    pending = pending[places[pending] == _NOT_FOUND]
        finally:
            for run in searched:
                run.drop_pages()
        found = places != _NOT_FOUND
        heights = (places >> np.uint64(_POSITION_BITS)).tolist()
        positions = (places & np.uint64(_POSITION_MASK)).tolist()
        return [TxLocation(height, position, code) if hit else None
                for hit, height, position, code in zip(found.tolist(), heights, positions,
                                                       codes.tolist())]

    def block_height(self, block_hash: bytes) -> int | None:
        """Height of the block with this hash, or None."""
        block_hash = bytes(block_hash)
        if len(block_hash) != 32:
            return None
        key = int.from_bytes(block_hash[:8], "big")
        for run in reversed(self._current().blocks):  # newest first, as a re-put hash was
            low, high = _find_range(run, "hash", key)
            for height in _words(run.pread("hash", "height", low, high)):
                row = height - run.first
                if run.pread("hashes", "hash", row, row + 1) == block_hash:
                    return height
        return None

    def block_hash(self, height: int) -> bytes | None:
        """Hash of the block at ``height``, or None when it is not indexed."""
        snapshot = self._current()
        if not 0 <= height < snapshot.indexed_height:
            return None
        run = snapshot.blocks[bisect.bisect_right(snapshot.firsts, height) - 1]
        return run.pread("hashes", "hash", height - run.first, height - run.first + 1)

    def accounts_of(self, key: bytes) -> list[int]:
        """Accounts owned by owner key ``key``, ascending."""
        key = bytes(key)
        if len(key) != 32:
            return []
        prefix, suffix = int.from_bytes(key[:8], "big"), key[8:]
        found: set[int] = set()  # an account added twice (catching up after a crash) is one
        for run in self._current().owners:
            low, high = _find_range(run, "owner", prefix)
            suffixes = run.pread("owner", "suffix", low, high)
            accounts = _words(run.pread("owner", "account", low, high))
            found.update(account for row, account in enumerate(accounts)
                         if suffixes[row * 24:row * 24 + 24] == suffix)
        return sorted(found)

    def account_history(self, account: int, limit: int = 100,
                        before: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """(height, position) of the records that debit or credit ``account``, newest first.

        At most ``limit``; pass the last pair of a page as ``before`` for the next page.
        """
        if not 0 < limit <= store_limits.index_history_limit_max:
            raise ValueError(f"limit is 1..{store_limits.index_history_limit_max}, got {limit}")
        if not 0 <= account < 2**64:
            raise ValueError(f"an account is 0..2**64-1, got {account}")
        bound = None if before is None else _place_bound(*before)
        page: list[tuple[int, int]] = []
        for run in reversed(self._current().blocks):  # runs hold disjoint heights, newest last
            if bound is not None and bound <= run.first << _POSITION_BITS:
                continue
            places = _history_places(run, account, bound, limit - len(page))
            page += [(place >> _POSITION_BITS, place & _POSITION_MASK) for place in places]
            if len(page) == limit:
                break
        return page

    # -- private: runs in memory, flushes and merges -------------------------------------------

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise StorageError(f"the index in {self.folder} is closed")
        return snapshot

    def _show(self, blocks: Sequence[_Run], owners: Sequence[_Run]) -> None:
        """Lets readers see these runs (nothing on disk changes)."""
        self._snapshot = _snapshot_of(blocks, owners)

    def _publish(self, blocks: Sequence[_Run], owners: Sequence[_Run],
                 replaced: Sequence[_Run]) -> None:
        """Names the run files in a new manifest, then shows the runs to readers and deletes the
        files of ``replaced`` (a reader holding an older snapshot keeps reading them)."""
        entries = [run.entry for run in (*blocks, *owners) if run.on_disk]
        try:
            _write_manifest(self.folder, entries, self._next_run)
            if replaced:
                _fsync_directory(self.folder)  # the new manifest first, then no old file
        except OSError as error:
            raise StorageError(f"writing the index manifest in {self.folder} failed: {error}. "
                               f"{_REBUILD}") from error
        self._show(blocks, owners)
        for run in replaced:
            run.path.unlink(missing_ok=True)

    def _after_add(self, kind: int) -> None:
        """Merges runs in memory as due, and writes them to a file past the memory limit. The
        heap is trimmed once the flush has returned and no local of its callers holds the runs
        it wrote (nor their merged copy): trimmed inside it, up to two runs' worth of freed
        buffers (~32 MiB) stayed resident until the next flush."""
        self._merge_while_due(kind, in_memory=True)
        if self._held_bytes() >= store_limits.index_memory_bytes_max:
            self._flush()

    def _held_bytes(self) -> int:
        """Bytes of the runs in memory."""
        snapshot = self._current()
        return sum(run.entry.size for run in snapshot.blocks + snapshot.owners
                   if not run.on_disk)

    def _flush(self) -> None:
        """Writes the runs in memory as one run file of each kind, then merges files as due."""
        snapshot = self._current()
        if all(run.on_disk for run in snapshot.blocks + snapshot.owners):
            return
        lists = {}
        for kind, runs in ((_Kind.blocks, snapshot.blocks), (_Kind.owners, snapshot.owners)):
            files = [run for run in runs if run.on_disk]
            held = [run for run in runs if not run.on_disk]
            if held:
                end = _end_of(kind, held)
                sections = _merged_sections(held)
                counts = tuple(len(rows[_data_columns(kind, section)[0]])
                               for section, rows in sections.items())
                entry = self._new_entry(kind, held[0].first, end, counts)
                files.append(self._write_run(entry, sections))
            lists[kind] = files
        self._publish(lists[_Kind.blocks], lists[_Kind.owners], replaced=())
        self._merge_while_due(_Kind.blocks)
        self._merge_while_due(_Kind.owners)

    def _merge_while_due(self, kind: int, in_memory: bool = False) -> None:
        """Merges the newest runs (in files, or in memory) while _runs_to_merge says so.

        Called with the write mutex held. A merge of files of index_background_merge_bytes or
        more goes to the merger thread instead; while it runs, its inputs and the runs before
        them are left alone, and merges are looked for among the runs after them."""
        while True:
            snapshot = self._current()
            runs = _runs_of(snapshot, kind)
            part = [run for run in runs if run.on_disk != in_memory]
            if not in_memory and self._merging and self._merging[-1] in part:
                part = part[part.index(self._merging[-1]) + 1:]
            window = _runs_to_merge([run.entry.size for run in part])
            if window is None:
                return
            inputs = part[window[0]:window[0] + window[1]]
            if not in_memory and sum(run.entry.size for run in inputs) \
                    >= store_limits.index_background_merge_bytes:
                if not self._merging and not self._closing:
                    self._merging = tuple(inputs)
                    self._start_merger()
                return  # a large one waits for the merger: it looks again when done
            start = runs.index(inputs[0])
            merged = self._merged(inputs, self._merged_entry(inputs))
            self._replace(kind, snapshot, start, inputs, merged, publish=not in_memory)

    def _replace(self, kind: int, snapshot: _Snapshot, start: int, inputs: Sequence[_Run],
                 merged: _Run, publish: bool) -> None:
        """Puts ``merged`` where ``inputs`` were (from ``start``) and shows or publishes it."""
        runs = _runs_of(snapshot, kind)
        runs = runs[:start] + (merged,) + runs[start + len(inputs):]
        blocks, owners = (runs, snapshot.owners) if kind == _Kind.blocks else \
            (snapshot.blocks, runs)
        if publish:
            self._publish(blocks, owners, inputs)
        else:
            self._show(blocks, owners)

    def _start_merger(self) -> None:
        self._merge_changed.notify_all()
        if self._merger is None or not self._merger.is_alive():
            self._merger = threading.Thread(target=self._merge_in_background,
                                            name="tsunagi-index-merge", daemon=True)
            self._merger.start()

    def _merge_in_background(self) -> None:
        """The merger thread: merges self._merging without the write mutex, then swaps the
        result in under it, unless the inputs changed meanwhile (a truncate or a drop
        rewrote them), in which case the merged file is deleted unnamed."""
        while True:
            with self._merge_changed:
                while not self._merging and not self._closing:
                    self._merge_changed.wait()
                if self._closing:
                    self._merging = ()
                    self._merge_changed.notify_all()
                    return
                inputs = list(self._merging)
                entry = self._merged_entry(inputs)
            merged, error = None, None
            try:
                merged = self._merged(inputs, entry, lambda: self._closing)
            except _Interrupted:
                pass
            except Exception as exc:  # noqa: BLE001 - raised to the next add, not lost
                error = exc
            with self._merge_changed:
                self._merging = ()
                self._finish_background_merge(inputs, merged, error)
                self._merge_changed.notify_all()

    def _finish_background_merge(self, inputs: list[_Run], merged: _Run | None,
                                 error: BaseException | None) -> None:
        snapshot = self._snapshot
        kind = inputs[0].entry.kind
        runs = () if snapshot is None else _runs_of(snapshot, kind)
        start = next((i for i, run in enumerate(runs) if run is inputs[0]), -1)
        still_there = start >= 0 and list(runs[start:start + len(inputs)]) == inputs
        if merged is not None and (not still_there or self._closing):
            merged.path.unlink(missing_ok=True)  # never named by a manifest
            return
        if error is not None:
            if still_there:  # inputs a truncate deleted explain the error; no one else does
                self._merge_error = error
            return
        if merged is None:
            return
        try:
            self._replace(kind, snapshot, start, inputs, merged, publish=True)
            self._merge_while_due(kind)
        except StorageError as exc:
            self._merge_error = exc

    def _raise_merge_error(self) -> None:
        if self._merge_error is not None:
            raise StorageError(f"a background merge of the index failed: "
                               f"{self._merge_error}") from self._merge_error

    def _new_entry(self, kind: int, first: int, end: int, counts: tuple[int, ...]) -> _Entry:
        name = f"{_Kind(kind).name}-{self._next_run:010d}.run"
        self._next_run += 1
        return _Entry(name, int(kind), first, end, counts, 0, 0)

    def _write_run(self, entry: _Entry, sections: dict[str, dict[str, np.ndarray]]) -> _Run:
        """Writes a run file from rows in memory; not fsynced (see the module's docstring)."""
        def fill(writer: _RunWriter) -> None:
            for section, rows in sections.items():
                for column in _data_columns(entry.kind, section):
                    writer.write(section, column, rows[column])
        return self._written(entry, fill, sync=False)

    def _merged_entry(self, runs: list[_Run]) -> _Entry | None:
        """The entry of the file that merges ``runs`` (None for runs in memory)."""
        if not runs[0].on_disk:
            return None
        kind = runs[0].entry.kind
        counts = tuple(sum(values) for values in zip(*(run.entry.counts for run in runs)))
        return self._new_entry(kind, runs[0].first, _end_of(kind, runs), counts)

    def _merged(self, runs: list[_Run], entry: _Entry | None,
                interrupted: Callable[[], bool] = lambda: False) -> _Run:
        """One run holding the rows of ``runs`` (consecutive, oldest first): in memory for runs
        in memory, else the file ``entry`` names, fsynced. _Interrupted when ``interrupted()``
        turns true between chunks (the file is then deleted)."""
        kind = runs[0].entry.kind
        if entry is None:
            return _Run.in_memory(kind, runs[0].first, _end_of(kind, runs),
                                  _merged_sections(runs))

        def check() -> None:
            if interrupted():
                raise _Interrupted

        def fill(writer: _RunWriter) -> None:
            with _DirectReader() as reader:
                for section in _SECTIONS[kind]:
                    if section in _KEYS:
                        _merge_sorted(writer, runs, section, reader, check)
                    else:  # in height order: the runs one after another
                        for run in runs:
                            check()
                            _copy_rows(writer, run, section, run.rows(section), reader)
        return self._written(entry, fill, sync=True)

    def _filtered(self, run: _Run, bound: int) -> _Run | None:
        """A copy of ``run`` keeping the blocks below height ``bound`` (a block run) or the
        accounts below ``bound`` (an owner run); None when no account is left."""
        kind = run.entry.kind
        end = bound if kind == _Kind.blocks else min(run.end, bound)
        if not run.on_disk:
            kept = _Run.in_memory(kind, run.first, end, _filtered_sections(run, bound))
            return None if kind == _Kind.owners and not kept.entry.counts[0] else kept
        keeps = _keeps(kind, bound)
        counts = tuple(bound - run.first if keep is None else _count_below(run, section, *keep)
                       for section, keep in keeps.items())
        if kind == _Kind.owners and not counts[0]:
            return None

        def fill(writer: _RunWriter) -> None:
            with _DirectReader() as reader:
                for section, keep in keeps.items():
                    stop = bound - run.first if keep is None else run.rows(section)
                    _copy_rows(writer, run, section, stop, reader, keep)
        return self._written(self._new_entry(kind, run.first, end, counts), fill, sync=True)

    def _written(self, entry: _Entry, fill: Callable[[_RunWriter], None], sync: bool) -> _Run:
        """Writes a run file with ``fill(writer)``; fsynced when ``sync``."""
        try:
            writer = _RunWriter(self.folder, entry)
            try:
                fill(writer)
                return _Run.on_file(self.folder, writer.finish(sync))
            except BaseException:
                writer.abandon()
                raise
        except OSError as error:
            raise StorageError(f"writing a run of the index in {self.folder} failed: {error}. "
                               f"{_REBUILD}") from error


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Hands the heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    A flush and its merges free tens of MB of numpy buffers that glibc keeps for reuse (its
    mmap threshold grows past their size once one is freed), and those count in the process's
    resident memory: 49 MB of the 94 MB RssAnon of a process that had just indexed 10 million
    records. Under load they are better kept: trimming after every flush made the commit path
    and the indexer fault their buffers in again, ~100 ns of system CPU a record (a ledger
    committing 65,536-record batches pipelined, 150 calls: 198-224 against 97-145 ns of
    system time a record, 2.05-2.13 against 2.16-2.41 M/s with the index kept up;
    /tmp/cpu_split4.py of session 5). The ledger's indexer calls this once it has been idle
    for a while (ledger.INDEX_IDLE_RELEASE_S)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _runs_of(snapshot: _Snapshot, kind: int) -> tuple[_Run, ...]:
    return snapshot.blocks if kind == _Kind.blocks else snapshot.owners


def _end_of(kind: int, runs: Sequence[_Run]) -> int:
    """Where runs (consecutive, oldest first) end together: block runs follow each other in
    height; owner runs may reach different accounts."""
    return runs[-1].end if kind == _Kind.blocks else max(run.end for run in runs)


def _snapshot_of(blocks: Sequence[_Run], owners: Sequence[_Run]) -> _Snapshot:
    return _Snapshot(tuple(blocks), tuple(owners), tuple(run.first for run in blocks))


def _tier(size: int) -> int:
    """Size tier of a run: 0 below fan-out x index_run_bytes_min, one more each fan-out times."""
    tier, limit = 0, store_limits.index_run_bytes_min * store_limits.index_merge_fanout
    while size >= limit:
        tier, limit = tier + 1, limit * store_limits.index_merge_fanout
    return tier


def _runs_to_merge(sizes: list[int]) -> tuple[int, int] | None:
    """Which consecutive runs (oldest first) to merge now: (first, count), or None. Keeps tiers
    non-increasing from the oldest run to the newest with fewer than fan-out runs per tier: at
    most (fan-out - 1) runs per tier, so O(log n) runs. A run bigger than those before it takes
    them in; fan-out runs of one tier become one.

    Runs made while a background merge was under way can leave a bigger run after smaller ones
    anywhere, or fan-out runs of one tier before the newest: the oldest such place goes first."""
    tiers = [_tier(size) for size in sizes]
    for bigger in range(1, len(tiers)):
        if tiers[bigger - 1] < tiers[bigger]:
            first = bigger - 1
            while first > 0 and tiers[first - 1] < tiers[bigger]:
                first -= 1
            return first, bigger - first + 1
    fanout = store_limits.index_merge_fanout
    for last in range(len(tiers) - 1, fanout - 2, -1):
        first = last - fanout + 1
        if tiers[first] == tiers[last]:  # non-increasing: all between are equal too
            return first, fanout
    return None


