"""The bytes of a run (docs/FORMAT.md, "Run file"): its sections and columns, where each column
lies, the header, the checksum over it all, and how a record's place and a hash's key are
numbers. Writers (write.py) and readers (run.py) both lay a run out from here; nothing here
does any I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from tsunagi.ledger.checksum import crc32
from tsunagi.limits import block_records_max

_MAGIC = b"TSUNAGIX"
FORMAT_VERSION = 1  # of run files and of the manifest alike
# magic, format version, kind, first, end, row counts of up to four sections.
HEADER = struct.Struct("<8sIIQQ4Q")
_ALIGN = 64  # columns start on cache lines: aligned for numpy whatever the row counts
# A record's place is height << POSITION_BITS | position, one u64 that sorts as (height,
# position) does: a block holds at most block_records_max records.
POSITION_BITS = (block_records_max - 1).bit_length()
POSITION_MASK = (1 << POSITION_BITS) - 1
HEIGHT_LIMIT = 1 << (63 - POSITION_BITS)  # places stay below 2**63: no edge at 2**64 - 1
# Keys between fence entries: a 512-byte stretch, one page, seldom two. Other modules read it
# as runfile.FENCE_ROWS when called (as they do the limits), so tests can make it small.
FENCE_ROWS = 64
_BLOOM_BITS_PER_KEY = 8  # 8 to 16 (a power of two words): 0.5-3% of absent txids pass
_DERIVED = ("fence", "bloom")  # columns a writer derives from the keys
REBUILD = "The index is derived from the block log: delete the folder to rebuild it."


class Kind(IntEnum):
    blocks = 1  # a range of heights: tx, history, hash, hashes
    owners = 2  # owner key -> account pairs


# Sections of a run and their columns. A sorted section is ordered by its first two columns (a
# key u64, then a second u64); its key is the first 8 bytes of a hash read big-endian where the
# section looks hashes up, so comparing keys compares those bytes. Its fence holds every
# FENCE_ROWS-th key, searched before the keys (a file's through its top fence). The tx section
# also has a Bloom filter of its keys (one u64 word a key, chosen by the key's top bits, three
# bits set by its low 18), so a point lookup reads one word of most runs and no more.
SECTIONS = {
    Kind.blocks: {
        "tx": (("key", "<u8"), ("place", "<u8"), ("suffix", "V24"), ("code", "u1"),
               ("fence", "<u8"), ("bloom", "<u8")),
        "history": (("account", "<u8"), ("place", "<u8"), ("fence", "<u8")),
        "hash": (("key", "<u8"), ("height", "<u8"), ("fence", "<u8")),
        "hashes": (("hash", "V32"),),  # in height order, not sorted
    },
    Kind.owners: {"owner": (("key", "<u8"), ("account", "<u8"), ("suffix", "V24"),
                            ("fence", "<u8"))},
}
KEYS = {section: spec[0][0] for sections in SECTIONS.values()
        for section, spec in sections.items() if ("fence", "<u8") in spec}
SECONDS = {section: spec[1][0] for sections in SECTIONS.values()
           for section, spec in sections.items() if section in KEYS}
SECTION_NUMBERS = {section: number for sections in SECTIONS.values()
                   for number, section in enumerate(sections)}


class Entry(NamedTuple):
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


def layout(kind: int, counts: Sequence[int]) -> tuple[dict, int]:
    """Offset, dtype and row count of every (section, column), and the file size."""
    offset, columns = HEADER.size, {}
    for (section, spec), count in zip(SECTIONS[kind].items(), counts, strict=True):
        for name, dtype in spec:
            rows = {"fence": -(-count // FENCE_ROWS), "bloom": bloom_words(count)
                    }.get(name, count)
            offset = -(-offset // _ALIGN) * _ALIGN
            columns[section, name] = (offset, np.dtype(dtype), rows)
            offset += rows * np.dtype(dtype).itemsize
    return columns, offset


def data_columns(kind: int, section: str) -> list[str]:
    """The columns a writer is given (fence and Bloom filter it derives from the keys)."""
    return [name for name, _ in SECTIONS[kind][section] if name not in _DERIVED]


def bloom_words(count: int) -> int:
    """Words of a Bloom filter for ``count`` keys: a power of two, at least two."""
    return 1 << max(1, (count * _BLOOM_BITS_PER_KEY - 1).bit_length() - 6)


def bloom_bits(keys: np.ndarray) -> np.ndarray:
    """The three bits each key sets in its word (from its low 18 bits)."""
    one = np.uint64(1)
    return (one << (keys & np.uint64(63))) | (one << ((keys >> np.uint64(6)) & np.uint64(63))) \
        | (one << ((keys >> np.uint64(12)) & np.uint64(63)))


def header(entry: Entry) -> bytes:
    counts = tuple(entry.counts) + (0,) * (4 - len(entry.counts))
    return HEADER.pack(_MAGIC, FORMAT_VERSION, entry.kind, entry.first, entry.end, *counts)


def padding(columns: dict) -> dict:
    """Zero bytes before each column (from the end of the one before it)."""
    padding, end = {}, HEADER.size
    for key, (offset, dtype, count) in columns.items():
        padding[key], end = offset - end, offset + count * dtype.itemsize
    return padding


def combined_checksum(header: bytes, column_checksums: Iterable[int]) -> int:
    """A run's checksum: crc32 of the header and of each column's crc32 in file order, each
    column's taken over its bytes and the padding before it (columns are written in chunks, a
    running crc32 each), so every byte of the file is covered."""
    return crc32(b"".join(struct.pack("<I", crc) for crc in column_checksums),
                 crc32(header))


def prefixes(rows: np.ndarray) -> np.ndarray:
    """First 8 bytes of each N x 32 uint8 row as a big-endian number: sorts as bytes do."""
    return rows.view(">u8")[:, 0].astype(np.uint64)
