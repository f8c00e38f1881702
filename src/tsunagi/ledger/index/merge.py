"""Merging and filtering runs, and when to merge. A merge is linear: its inputs are sorted
already, so the native kernel (tsunagi._native.indexing, without the GIL) interleaves them and
gathers each column in that order; runs in memory merge whole, files a bounded chunk at a time,
read around the page cache (DirectReader) and written as a new file (write.py). A filter keeps
a run's rows below a height or an account (truncate_above, drop_accounts). Size tiers
(runs_to_merge) say which runs to merge, so a lookup searches O(log n) runs.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np

from tsunagi._native import indexing
from tsunagi.errors import StorageError
from tsunagi.ledger import limits
from tsunagi.ledger.index.lookup import bisect_column, find
from tsunagi.ledger.index.run import Run, end_of
from tsunagi.ledger.index.runfile import (
    KEYS,
    POSITION_BITS,
    REBUILD,
    SECONDS,
    SECTIONS,
    Entry,
    Kind,
    data_columns,
)
from tsunagi.ledger.index.write import BLOCK, RunWriter, written


class Interrupted(Exception):
    """A background merge stopped because the index is closing."""


def merged_sections(runs: list[Run]) -> dict[str, dict[str, np.ndarray]]:
    """The rows of ``runs`` (consecutive, oldest first) as one run's sections, in memory: a
    sorted section's inputs merged by (key, second), equal rows oldest input first (the native
    linear merge: the inputs are sorted already), the others one input after another."""
    kind = runs[0].entry.kind
    merged = {}
    for section in SECTIONS[kind]:
        pieces = {name: [run.read(section, name, 0, run.rows(section)) for run in runs]
                  for name in data_columns(kind, section)}
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
    if section not in KEYS:
        return {name: np.concatenate(rows) for name, rows in pieces.items()}
    seconds = None if kind == Kind.blocks else pieces[SECONDS[section]]
    sources = indexing.merge_sources(pieces[KEYS[section]], seconds)
    return {name: indexing.gather_rows(rows, sources) for name, rows in pieces.items()}


def _rank(run: Run, section: str, bound: tuple[int, int], low: int, high: int,
          side: str = "left") -> int:
    """Rows of [low, high) ordered before (or, side "right", up to) ``bound`` = (key, second):
    the rank of the key in the whole run clamped to the range, then the second among equal
    keys."""
    key, second = bound
    first = min(max(find(run, section, key, "left"), low), high)
    last = min(max(find(run, section, key, "right"), low), high)
    return bisect_column(run, section, SECONDS[section], second, first, last, side)


def _chunk_stops(runs: list[Run], section: str, starts: list[int], ends: list[int]
                 ) -> list[int]:
    """Where the next merge chunk ends in each input: before the smallest (key, second) found
    ``step`` rows ahead in any input, so no input gives more than ``step`` rows to it (and the
    chunk holds at most index_merge_chunk_rows) and equal rows never straddle two chunks."""
    step = max(1, limits.index_merge_chunk_rows // len(runs))
    ahead = [(int(run.read(section, KEYS[section], start + step, start + step + 1)[0]),
              int(run.read(section, SECONDS[section], start + step, start + step + 1)[0]))
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
        self.scratch = mmap.mmap(-1, limits.index_write_buffer_bytes)  # page-aligned
        self.fds: dict[Path, int] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        for fd in self.fds.values():
            if fd >= 0:
                os.close(fd)
        self.fds.clear()
        self.scratch.close()

    def rows(self, run: Run, section: str, column: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a column of ``run`` (a copy: the buffer is reused)."""
        offset, dtype, _ = run.columns[section, column] if run.on_disk else (0, None, 0)
        fd = self._fd(run)
        if fd < 0:
            return run.read(section, column, start, stop)
        rows = np.empty(max(stop - start, 0), dtype)
        self._read(fd, run.path, memoryview(rows.view(np.uint8)).cast("B"),
                   offset + start * dtype.itemsize)
        return rows

    def _fd(self, run: Run) -> int:
        if not run.on_disk or run.entry.size < limits.index_write_buffer_bytes:
            return -1  # a small file was written through the page cache (write.BlockFile)
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
            base = position // BLOCK * BLOCK
            want = min(capacity, -(-(position + len(target)) // BLOCK) * BLOCK - base)
            got = os.preadv(fd, [memoryview(self.scratch)[:want]], base)
            usable = min(got - (position - base), len(target))
            if usable <= 0:
                raise StorageError(f"{path} ended early at byte {position}: an index run was "
                                   f"cut short. {REBUILD}")
            target[:usable] = self.scratch[position - base:position - base + usable]
            target, position = target[usable:], position + usable


def _merge_sorted(writer: RunWriter, runs: list[Run], section: str,
                  reader: _DirectReader, check: Callable[[], None] = lambda: None) -> None:
    """Writes the rows of a sorted section of ``runs`` merged, a bounded chunk at a time;
    ``check()`` runs before each chunk (it may raise to stop the merge)."""
    names = data_columns(runs[0].entry.kind, section)
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


def _copy_rows(writer: RunWriter, run: Run, section: str, stop: int,
               reader: _DirectReader, keep: tuple[str, int] | None = None) -> None:
    """Copies rows [0, stop) of a section in chunks; with ``keep`` = (column, bound) only the
    rows whose column is below bound."""
    names = data_columns(run.entry.kind, section)
    for start in range(0, stop, limits.index_merge_chunk_rows):
        end = min(stop, start + limits.index_merge_chunk_rows)
        chunk = {name: reader.rows(run, section, name, start, end) for name in names}
        if keep is not None:
            kept = chunk[keep[0]] < np.uint64(keep[1])
            chunk = {name: rows[kept] for name, rows in chunk.items()}
        for name in names:
            writer.write(section, name, chunk[name])


def merged(folder: Path, runs: list[Run], entry: Entry | None,
           interrupted: Callable[[], bool] = lambda: False) -> Run:
    """One run holding the rows of ``runs`` (consecutive, oldest first): in memory for runs
    in memory, else the file ``entry`` names, fsynced. Interrupted when ``interrupted()``
    turns true between chunks (the file is then deleted)."""
    kind = runs[0].entry.kind
    if entry is None:
        return Run.in_memory(kind, runs[0].first, end_of(kind, runs), merged_sections(runs))

    def check() -> None:
        if interrupted():
            raise Interrupted

    def fill(writer: RunWriter) -> None:
        with _DirectReader() as reader:
            for section in SECTIONS[kind]:
                if section in KEYS:
                    _merge_sorted(writer, runs, section, reader, check)
                else:  # in height order: the runs one after another
                    for run in runs:
                        check()
                        _copy_rows(writer, run, section, run.rows(section), reader)
    return written(folder, entry, fill, sync=True)


def _count_below(run: Run, section: str, column: str, bound: int) -> int:
    total, count = 0, run.rows(section)
    for start in range(0, count, limits.index_merge_chunk_rows):
        end = min(count, start + limits.index_merge_chunk_rows)
        total += int(np.count_nonzero(run.read(section, column, start, end) < np.uint64(bound)))
    return total


def _keeps(kind: int, bound: int) -> dict[str, tuple[str, int] | int]:
    """What a filtered run keeps of each section: rows whose column is below a bound, or (the
    block hashes in height order) the first rows."""
    if kind == Kind.owners:
        return {"owner": ("account", bound)}
    return {"tx": ("place", bound << POSITION_BITS),
            "history": ("place", bound << POSITION_BITS), "hash": ("height", bound),
            "hashes": None}


def filtered_sections(run: Run, bound: int) -> dict[str, dict[str, np.ndarray]]:
    """The rows of a run in memory that a filter at ``bound`` keeps (see _keeps)."""
    sections = {}
    for section, keep in _keeps(run.entry.kind, bound).items():
        columns = {name: run.sections[section][name]
                   for name in data_columns(run.entry.kind, section)}
        if keep is None:
            kept = slice(0, bound - run.first)
        else:
            kept = columns[keep[0]] < np.uint64(keep[1])
        sections[section] = {name: rows[kept] for name, rows in columns.items()}
    return sections


def filtered_counts(run: Run, bound: int) -> tuple[int, ...]:
    """The row counts of each section a filter of a run file at ``bound`` keeps."""
    return tuple(bound - run.first if keep is None else _count_below(run, section, *keep)
                 for section, keep in _keeps(run.entry.kind, bound).items())


def filtered(folder: Path, run: Run, bound: int, entry: Entry) -> Run:
    """The file ``entry`` names (its counts from filtered_counts), fsynced: the rows of the
    run file ``run`` that a filter at ``bound`` keeps."""
    def fill(writer: RunWriter) -> None:
        with _DirectReader() as reader:
            for section, keep in _keeps(run.entry.kind, bound).items():
                stop = bound - run.first if keep is None else run.rows(section)
                _copy_rows(writer, run, section, stop, reader, keep)
    return written(folder, entry, fill, sync=True)


# -- when to merge: size tiers ----------------------------------------------------------------

def tier(size: int) -> int:
    """Size tier of a run: 0 below fan-out x index_run_bytes_min, one more each fan-out times."""
    tier, limit = 0, limits.index_run_bytes_min * limits.index_merge_fanout
    while size >= limit:
        tier, limit = tier + 1, limit * limits.index_merge_fanout
    return tier


def runs_to_merge(sizes: list[int]) -> tuple[int, int] | None:
    """Which consecutive runs (oldest first) to merge now: (first, count), or None. Keeps tiers
    non-increasing from the oldest run to the newest with fewer than fan-out runs per tier: at
    most (fan-out - 1) runs per tier, so O(log n) runs. A run bigger than those before it takes
    them in; fan-out runs of one tier become one.

    Runs made while a background merge was under way can leave a bigger run after smaller ones
    anywhere, or fan-out runs of one tier before the newest: the oldest such place goes first."""
    tiers = [tier(size) for size in sizes]
    for bigger in range(1, len(tiers)):
        if tiers[bigger - 1] < tiers[bigger]:
            first = bigger - 1
            while first > 0 and tiers[first - 1] < tiers[bigger]:
                first -= 1
            return first, bigger - first + 1
    fanout = limits.index_merge_fanout
    for last in range(len(tiers) - 1, fanout - 2, -1):
        first = last - fanout + 1
        if tiers[first] == tiers[last]:  # non-increasing: all between are equal too
            return first, fanout
    return None
