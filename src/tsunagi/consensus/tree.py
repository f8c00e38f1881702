"""The block tree: every header a node knows, the best header chain by cumulative work, and
the bodies of blocks that are not on the ledger's chain.

Shapes, after Bitcoin Core's block index:

- :class:`HeaderChain`: the best header chain from genesis, in arrays (80-byte headers, hashes,
  a hash table of heights by hash prefix: finding a hash is a probe or two). Headers-first sync
  appends thousands at a time after one native check of links and proof of work
  (``hashing.validate_headers``): no Python object per header, which is what lets a node take
  more than a million headers a second. Cumulative work is kept per run of equal bits (bits
  change only at a retarget), so the work at any height is a sum over a few runs.
- side headers, in a dict: forks and the blocks a reorg took off the best chain; few.
- :class:`SideStore`: bodies of blocks off the ledger's chain, one file each
  (``<seq>-<hash>.blk``, written atomically), so a reorg that a crash interrupts can finish,
  or go back, when the node opens again. ``seq`` is the order blocks were first seen in: of
  two branches with equal work, the one seen first stays best, across restarts too.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsunagi import hashing
from tsunagi.core.block import HEADER_BYTES
from tsunagi.ledger.log import fsync_directory, write_file_atomically

__all__ = ["HeaderChain", "SideHeader", "SideStore", "header_hash", "header_prev",
           "header_time", "header_bits"]

_HEADER_DTYPE = np.dtype([("version", "<u4"), ("prev", "u1", (32,)), ("root", "u1", (32,)),
                          ("time", "<u4"), ("bits", "<u4"), ("nonce", "<u4")])
assert _HEADER_DTYPE.itemsize == HEADER_BYTES


def header_prev(header) -> bytes:
    return bytes(header[4:36])


def header_time(header) -> int:
    return int.from_bytes(header[68:72], "little")


def header_bits(header) -> int:
    return int.from_bytes(header[72:76], "little")


def header_hash(header) -> bytes:
    return hashing.sha256d_records(bytes(header), HEADER_BYTES)[0].tobytes()


class HeaderChain:
    """Headers of one chain from genesis (height 0) in growable arrays."""

    def __init__(self, genesis_header: bytes) -> None:
        self._headers = np.zeros((1024, HEADER_BYTES), dtype=np.uint8)
        self._hashes = np.zeros((1024, 32), dtype=np.uint8)
        self._index = _HeightIndex()
        self.length = 0
        # Runs of equal bits: (first height, bits, cumulative work before the run).
        self._runs: list[tuple[int, int, int]] = []
        self.extend(np.frombuffer(genesis_header, dtype=np.uint8).reshape(1, HEADER_BYTES))

    # ------------------------------------------------------------------ reading

    @property
    def tip_height(self) -> int:
        return self.length - 1

    def hash(self, height: int) -> bytes:
        return self._hashes[height].tobytes()

    def header(self, height: int) -> bytes:
        return self._headers[height].tobytes()

    def headers_bytes(self, first: int, end: int) -> bytes:
        return self._headers[first:end].tobytes()

    def time(self, height: int) -> int:
        return header_time(self._headers[height])

    def bits(self, height: int) -> int:
        return header_bits(self._headers[height])

    @property
    def tip_hash(self) -> bytes:
        return self.hash(self.length - 1)

    def find(self, block_hash: bytes) -> int | None:
        """The height of a hash on this chain, or None."""
        if len(block_hash) != 32:
            return None
        for height in self._index.candidates(int.from_bytes(block_hash[:8], "little")):
            if height < self.length and self._hashes[height].tobytes() == block_hash:
                return height
        return None

    def work(self, height: int) -> int:
        """Cumulative work of the chain up to and including ``height``."""
        for first, bits, before in reversed(self._runs):
            if first <= height:
                return before + (height - first + 1) * hashing.work_from_bits(bits)
        raise IndexError(height)

    @property
    def tip_work(self) -> int:
        return self.work(self.length - 1)

    def locator(self) -> list[bytes]:
        """Bitcoin's block locator: the newest 10 hashes, then exponentially sparser, genesis
        last."""
        heights, step, height = [], 1, self.length - 1
        while height > 0:
            heights.append(height)
            if len(heights) >= 10:
                step *= 2
            height -= step
        heights.append(0)
        return [self.hash(h) for h in heights]

    # ------------------------------------------------------------------ changing

    def extend(self, headers: np.ndarray, hashes: np.ndarray | None = None) -> None:
        """Appends N headers (N x 80 uint8) already checked to follow the tip."""
        count = len(headers)
        if not count:
            return
        if hashes is None:
            hashes = hashing.sha256d_records(headers.tobytes(), HEADER_BYTES)
        end = self.length + count
        if end > len(self._headers):
            capacity = max(end, 2 * len(self._headers))
            self._headers = _grown(self._headers, capacity)
            self._hashes = _grown(self._hashes, capacity)
        self._headers[self.length:end] = headers
        self._hashes[self.length:end] = hashes
        self._index.add(_prefixes(self._hashes[self.length:end]), self.length, self._all_prefixes)
        bits = headers[:, 72:76].copy().view("<u4")[:, 0]
        changes = np.flatnonzero(bits[1:] != bits[:-1]) + 1
        for start in np.concatenate([[0], changes]):
            height = self.length + int(start)
            value = int(bits[start])
            if self._runs and self._runs[-1][1] == value:
                continue
            before = self.work(height - 1) if height else 0
            self._runs.append((height, value, before))
        self.length = end

    def extend_from_ledger(self, ledger, step: int = 4096) -> None:
        """Appends the headers of the ledger's blocks after genesis (this chain holds genesis
        only), ``step`` at a time."""
        height = ledger.height
        for first in range(1, height, step):
            buffer = ledger.headers(first, min(height, first + step))
            self.extend(np.frombuffer(buffer, dtype=np.uint8).reshape(-1, HEADER_BYTES))

    def _all_prefixes(self) -> np.ndarray:
        return _prefixes(self._hashes[: self.length])

    def truncate(self, length: int) -> None:
        """Keeps heights 0..length-1 (their slots in the index stay until it is rebuilt;
        ``find`` skips heights past the end)."""
        self.length = length
        while self._runs and self._runs[-1][0] >= length:
            self._runs.pop()


def _prefixes(hashes: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each hash (N x 32) as little-endian u64."""
    return np.ascontiguousarray(hashes[:, :8]).view("<u8")[:, 0]


class _HeightIndex:
    """Heights by the first 8 bytes of their hash: an open-addressing table (linear probing)
    in one numpy array of height + 1 (0: empty). A scan of every height's prefix took ~1 ms at
    a million headers, and a sync asks for thousands of hashes (locators, get_blocks, each run
    of headers); a probe or two costs microseconds. Slots are never emptied: after a truncate
    the ones naming heights past the end stay (``HeaderChain.find`` compares the hash at the
    height, so a stale slot never answers wrongly) until the table is rebuilt, which happens
    once it is half full, from the chain's live heights. A random odd multiplier mixes the
    prefix into the slot number, so nobody can choose hashes that crowd one run of slots.
    Heights are u32: four billion headers, 320 GB of them, before this needs a wider type."""

    def __init__(self) -> None:
        self._multiplier = random.getrandbits(64) | 1
        self._slots = np.zeros(1 << 12, dtype=np.uint32)
        self._used = 0

    def _home(self, prefixes):
        """The first slot to try for each prefix (u64 array or int)."""
        shift = 64 - (len(self._slots).bit_length() - 1)
        if isinstance(prefixes, int):
            return ((prefixes * self._multiplier) & 0xFFFF_FFFF_FFFF_FFFF) >> shift
        return (prefixes * np.uint64(self._multiplier)) >> np.uint64(shift)

    def candidates(self, prefix: int):
        """Heights whose slot run holds ``prefix``'s: every height with that prefix is among
        them (and some others, which the caller tells apart by the whole hash)."""
        slots, mask = self._slots, len(self._slots) - 1
        slot = self._home(prefix)
        while value := int(slots[slot]):
            yield value - 1
            slot = (slot + 1) & mask

    def add(self, prefixes: np.ndarray, first_height: int, all_prefixes) -> None:
        """Heights first_height.. of ``prefixes``; ``all_prefixes()`` gives those of every live
        height (0..) when the table must grow and is rebuilt."""
        if 2 * (self._used + len(prefixes)) > len(self._slots):
            live = all_prefixes()  # heights 0 .. first_height-1
            size = 1 << max(12, (3 * (len(live) + len(prefixes))).bit_length())
            self._slots = np.zeros(size, dtype=np.uint32)
            self._used = 0
            self._place(live, 0)
        self._place(prefixes, first_height)

    def _place(self, prefixes: np.ndarray, first_height: int) -> None:
        """Vectorized linear probing: each round, the entries whose slot is free are written
        to it; where several want one slot, one write stays, and the others (and those whose
        slot was taken) try the next slot. The last few go one by one (a round costs more
        than a numpy call's overhead only while many entries are left)."""
        table, mask = self._slots, np.uint64(len(self._slots) - 1)
        values = np.arange(first_height + 1, first_height + 1 + len(prefixes), dtype=np.uint32)
        slots = self._home(prefixes)
        self._used += len(values)
        while len(values) > 64:
            current = table[slots]
            free = np.flatnonzero(current == 0)
            table[slots[free]] = values[free]
            left = current != 0
            left[free[table[slots[free]] != values[free]]] = True
            values, slots = values[left], (slots[left] + np.uint64(1)) & mask
        for value, slot in zip(values.tolist(), slots.tolist()):
            while table[slot]:
                slot = (slot + 1) & int(mask)
            table[slot] = value


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    bigger = np.zeros((capacity,) + array.shape[1:], dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


@dataclass
class SideHeader:
    """A header off the best header chain."""

    header: bytes
    height: int
    work: int  # cumulative, up to and including this header
    seq: int  # first-seen order
    has_body: bool = False  # its block is in the side store (or in the ledger)
    in_ledger: bool = False  # its block is on the ledger's chain

    @property
    def prev(self) -> bytes:
        return header_prev(self.header)


_SIDE_NAME = re.compile(r"^(\d{12})-([0-9a-f]{64})\.blk$")


class SideStore:
    """Block bodies off the ledger's chain, one file each, named by first-seen order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[bytes, Path] = {}
        self.next_seq = 0
        for path in directory.iterdir():
            match = _SIDE_NAME.match(path.name)
            if match is None:
                if path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)  # a write a crash cut short
                continue
            seq = int(match.group(1))
            self._files[bytes.fromhex(match.group(2))] = path
            self.next_seq = max(self.next_seq, seq + 1)

    def items(self) -> list[tuple[int, bytes, Path]]:
        """(seq, hash, path) of every body, oldest first."""
        found = [(int(path.name[:12]), block_hash, path)
                 for block_hash, path in self._files.items()]
        return sorted(found)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._files

    def __len__(self) -> int:
        return len(self._files)

    def put(self, block_hash: bytes, raw: bytes, seq: int | None = None) -> int:
        """Stores a body durably (once); returns its seq."""
        if block_hash in self._files:
            return int(self._files[block_hash].name[:12])
        if seq is None:
            seq = self.next_seq
        self.next_seq = max(self.next_seq, seq + 1)
        path = self.directory / f"{seq:012d}-{block_hash.hex()}.blk"
        write_file_atomically(path, bytes(raw))
        self._files[block_hash] = path
        return seq

    def get(self, block_hash: bytes) -> bytes | None:
        path = self._files.get(block_hash)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            del self._files[block_hash]
            return None

    def remove(self, hashes) -> None:
        removed = False
        for block_hash in hashes:
            path = self._files.pop(block_hash, None)
            if path is not None:
                path.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_directory(self.directory)

    def size_bytes(self) -> int:
        total = 0
        for path in self._files.values():
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
        return total
