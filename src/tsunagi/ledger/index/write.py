"""Writing run files: column by column in chunks (a running crc32 each, the fence and Bloom
filter derived on the way), in whole aligned blocks around the page cache (O_DIRECT) where the
file is large enough for that to pay, and opened as a Run once whole.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np

from tsunagi._native import indexing
from tsunagi.errors import StorageError
from tsunagi.ledger import limits
from tsunagi.ledger.checksum import crc32
from tsunagi.ledger.index import runfile
from tsunagi.ledger.index.run import Run
from tsunagi.ledger.index.runfile import (
    HEADER,
    KEYS,
    REBUILD,
    Entry,
    combined_checksum,
    data_columns,
    header,
    layout,
    padding,
)
from tsunagi.ledger.log import write_all

BLOCK = 4096  # run files are written in whole blocks of this many bytes (BlockFile)


class BlockFile:
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
        direct = getattr(os, "O_DIRECT", 0) if size >= limits.index_write_buffer_bytes \
            else 0
        try:
            self.fd = os.open(path, flags | direct, 0o644)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            self.fd = os.open(path, flags, 0o644)
        self.scratch = mmap.mmap(-1, min(size + BLOCK, limits.index_write_buffer_bytes))
        self.edges: dict[int, bytearray] = {}
        self.carries: dict[Hashable, tuple[int, bytes]] = {}
        os.ftruncate(self.fd, size)

    def put(self, stream: Hashable, start: int, end: int, position: int, data: memoryview
            ) -> None:
        """Bytes of a stream (a column at file bytes [start, end)) at ``position``, which
        carries on where the stream's last bytes ended."""
        first, last = -(-start // BLOCK) * BLOCK, end // BLOCK * BLOCK
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
            block, at = divmod(position, BLOCK)
            part = min(len(data), BLOCK - at)
            self.edges.setdefault(block, bytearray(BLOCK))[at:at + part] = data[:part]
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
            whole = (filled + take) // BLOCK * BLOCK
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
            while count < min(len(blocks), len(self.scratch) // BLOCK) and \
                    blocks[count] == blocks[0] + count:
                count += 1
            for at, block in enumerate(blocks[:count]):
                self.scratch[at * BLOCK:(at + 1) * BLOCK] = self.edges[block]
            write_all(self.fd, [memoryview(self.scratch)[:count * BLOCK]], blocks[0] * BLOCK)
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


class RunWriter:
    """Writes one run file column by column (chunks of a column in order), then checksums it."""

    def __init__(self, folder: Path, entry: Entry):
        self.path = folder / entry.name
        self.columns, size = layout(entry.kind, entry.counts)
        self.entry = entry._replace(size=size)
        self.filled = dict.fromkeys(self.columns, 0)
        self.keys = {section: KEYS[section] for section, _ in self.columns if section in KEYS}
        self.blooms = {section: np.zeros(count, np.uint64)
                       for (section, name), (_, _, count) in self.columns.items()
                       if name == "bloom"}
        self.checksums = {key: crc32(bytes(zeros))
                          for key, zeros in padding(self.columns).items()}
        self.file: BlockFile | None = BlockFile(self.path, size)
        try:
            self.file.put("header", 0, HEADER.size, 0, memoryview(header(self.entry)))
        except BaseException:
            self.abandon()
            raise

    def write(self, section: str, column: str, rows: np.ndarray) -> None:
        """Appends rows to a column; rows of a sorted section's key also give its fence."""
        offset, dtype, count = self.columns[section, column]
        data = np.ascontiguousarray(rows, dtype=dtype)
        filled = self.filled[section, column]
        assert filled + len(data) <= count, f"{section}.{column}: more rows than the layout has"
        if column == self.keys.get(section):  # the rows at multiples of FENCE_ROWS
            fence_rows = runfile.FENCE_ROWS
            self.write(section, "fence", data[-filled % fence_rows::fence_rows])
            if section in self.blooms:
                indexing.bloom_add(self.blooms[section], data)
        raw = memoryview(data.view(np.uint8)).cast("B")
        self.file.put((section, column), offset, offset + count * dtype.itemsize,
                      offset + filled * dtype.itemsize, raw)
        self.checksums[section, column] = crc32(raw, self.checksums[section, column])
        self.filled[section, column] = filled + len(data)

    def finish(self, sync: bool) -> Entry:
        for section, words in self.blooms.items():
            self.write(section, "bloom", words)
        for key, (_, _, count) in self.columns.items():
            assert self.filled[key] == count, f"{key}: {self.filled[key]} of {count} rows"
        self.file.finish(sync)
        self.file = None
        return self.entry._replace(checksum=combined_checksum(header(self.entry),
                                                              self.checksums.values()))

    def abandon(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.path.unlink(missing_ok=True)


def written(folder: Path, entry: Entry, fill: Callable[[RunWriter], None], sync: bool) -> Run:
    """Writes the run file ``entry`` names with ``fill(writer)`` and opens it; fsynced when
    ``sync``. A file left unfinished (an error, or a merge interrupted) is deleted."""
    try:
        writer = RunWriter(folder, entry)
        try:
            fill(writer)
            return Run.on_file(folder, writer.finish(sync))
        except BaseException:
            writer.abandon()
            raise
    except OSError as error:
        raise StorageError(f"writing a run of the index in {folder} failed: {error}. "
                           f"{REBUILD}") from error


def write_run(folder: Path, entry: Entry, sections: dict[str, dict[str, np.ndarray]]) -> Run:
    """Writes a run file from rows in memory; not fsynced (see the package's docstring)."""
    def fill(writer: RunWriter) -> None:
        for section, rows in sections.items():
            for column in data_columns(entry.kind, section):
                writer.write(section, column, rows[column])
    return written(folder, entry, fill, sync=False)
