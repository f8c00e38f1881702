"""A run as readers see it: the newest blocks' rows as arrays in memory, or a run file read by
pread (and mapped read-only for ``txs`` alone), with the fences held to search it first; and
the snapshot, the tuple of runs a reader takes without a lock.
"""

from __future__ import annotations

import bisect
import mmap
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tsunagi._native import indexing
from tsunagi.errors import StorageError
from tsunagi.ledger import limits
from tsunagi.ledger.index import runfile
from tsunagi.ledger.index.runfile import (
    KEYS,
    REBUILD,
    SECTION_NUMBERS,
    Entry,
    Kind,
    bloom_words,
    data_columns,
    layout,
)

# Fence entries between entries of a file's top fence, the part of a file readers hold in
# memory: 8 bytes per 4,096 rows of each sorted section (~6 bytes per 1,000 records indexed:
# a tx row and about two history rows each), and a 512-byte stretch of the fence to read.
TOP_FENCE_STEP = 64
SIDES = {"left": bisect.bisect_left, "right": bisect.bisect_right}


def words(data: bytes) -> memoryview:
    """u64 values of little-endian bytes as a sequence of Python ints (for bisect)."""
    return memoryview(data).cast("Q")


def _pread_into(fd: int, target: np.ndarray, offset: int) -> None:
    view = memoryview(target.view(np.uint8)).cast("B")
    while view:
        got = os.preadv(fd, [view], offset)
        if got == 0:
            raise StorageError(f"an index run ended early at byte {offset}. {REBUILD}")
        view, offset = view[got:], offset + got


def _top_fence(fd: int, offset: int, dtype: np.dtype, count: int, step: int) -> np.ndarray:
    """Every ``step``-th entry of a file's fence column (at ``offset``, ``count`` rows), read
    in chunks of at most index_read_chunk_bytes: the whole column never sits in memory."""
    chunk_rows = max(1, limits.index_read_chunk_bytes // dtype.itemsize // step) * step
    tops = np.empty(-(-count // step), dtype)
    for start in range(0, count, chunk_rows):
        chunk = np.empty(min(chunk_rows, count - start), dtype)
        _pread_into(fd, chunk, offset + start * dtype.itemsize)
        tops[start // step:start // step + len(chunk[::step])] = chunk[::step]
    return tops


class Run:
    """A run: a file (read with pread, mapped read-only for ``txs`` alone) or, for the newest
    blocks, arrays in memory. ``sections[section][column]`` are map views or those arrays.
    ``fences[section]`` is searched first: a run in memory's whole fence; a file's top fence,
    every TOP_FENCE_STEP-th entry of its fence, the only part of a file held in memory."""

    __slots__ = ("_fd", "_map", "bloom", "bloom_offset", "bloom_shift", "columns", "entry",
                 "fence_step", "fences", "path", "sections")

    def __init__(self, entry: Entry, sections: dict, fences: dict, fence_step: int = 1,
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
    def in_memory(cls, kind: int, first: int, end: int, sections: dict) -> Run:
        sections = {name: {column: rows[column] for column in data_columns(kind, name)}
                    for name, rows in sections.items()}
        for name, rows in sections.items():
            if name in KEYS:
                rows["fence"] = np.ascontiguousarray(rows[KEYS[name]][::runfile.FENCE_ROWS])
            if name == "tx":
                rows["bloom"] = np.zeros(bloom_words(len(rows["key"])), np.uint64)
                indexing.bloom_add(rows["bloom"], rows["key"])
        counts = tuple(len(next(iter(rows.values()))) for rows in sections.values())
        size = sum(array.nbytes for rows in sections.values() for array in rows.values())
        fences = {name: rows["fence"] for name, rows in sections.items() if name in KEYS}
        return cls(Entry("", int(kind), first, end, counts, size, 0), sections, fences)

    @classmethod
    def on_file(cls, folder: Path, entry: Entry) -> Run:
        columns, _ = layout(entry.kind, entry.counts)
        fd = os.open(folder / entry.name, os.O_RDONLY)
        try:
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            mapped.madvise(mmap.MADV_RANDOM)  # txs jumps around: read-ahead would be waste
            sections: dict[str, dict[str, np.ndarray]] = {}
            for (section, name), (offset, dtype, count) in columns.items():
                column = np.frombuffer(mapped, dtype, count, offset) if count else \
                    np.empty(0, dtype)
                sections.setdefault(section, {})[name] = column
            step = TOP_FENCE_STEP
            fences = {section: _top_fence(fd, *columns[section, "fence"], step)
                      for section in sections if section in KEYS}
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
        return self.entry.counts[SECTION_NUMBERS[section]]

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
                               f"{REBUILD}")
        return data

    def bloom_word(self, key: int) -> int:
        """The word of the tx Bloom filter that ``key`` falls in: from memory, or one 8-byte
        pread from a file (the filter of a file is never held)."""
        word = key >> self.bloom_shift
        if self.bloom is not None:
            return self.bloom[word]
        data = os.pread(self._fd, 8, self.bloom_offset + 8 * word)
        if len(data) != 8:
            raise StorageError(f"{self.path} ended early: an index run was cut short. "
                               f"{REBUILD}")
        return int.from_bytes(data, "little")

    def fence_rank(self, section: str, key: int, side: str) -> int:
        """``searchsorted(key, side)`` of a sorted section's fence. A file's: in its top fence
        (memory), then in the one stretch of TOP_FENCE_STEP fence entries that holds it (one
        pread), as lookup.stretch finds keys in the fence."""
        found = SIDES[side](self.fences[section], key)
        if self.fence_step == 1 or found == 0:  # 0: the fence's first entry is past key
            return found
        low = (found - 1) * self.fence_step
        high = min(found * self.fence_step, self.columns[section, "fence"][2])
        return low + SIDES[side](words(self.pread(section, "fence", low, high)), key)

    def drop_pages(self) -> None:
        """Unmaps the pages ``txs`` touched (the page cache keeps them), so they stop counting
        in the process's resident memory."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)


class Snapshot(NamedTuple):
    """What readers see: block runs in height order (files, then those in memory), owner runs
    oldest first."""

    blocks: tuple[Run, ...]
    owners: tuple[Run, ...]
    firsts: tuple[int, ...]  # first height of each block run, for bisect

    @property
    def indexed_height(self) -> int:
        return self.blocks[-1].end if self.blocks else 0


def snapshot_of(blocks: Sequence[Run], owners: Sequence[Run]) -> Snapshot:
    return Snapshot(tuple(blocks), tuple(owners), tuple(run.first for run in blocks))


def runs_of(snapshot: Snapshot, kind: int) -> tuple[Run, ...]:
    return snapshot.blocks if kind == Kind.blocks else snapshot.owners


def end_of(kind: int, runs: Sequence[Run]) -> int:
    """Where runs (consecutive, oldest first) end together: block runs follow each other in
    height; owner runs may reach different accounts."""
    return runs[-1].end if kind == Kind.blocks else max(run.end for run in runs)
