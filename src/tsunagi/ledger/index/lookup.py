"""Searching runs. A point lookup reads by pread, so it never maps a page: the one word of a
run's Bloom filter its txid falls in, the stretch of the fence the top fence points to, then the
stretch of keys that points to (run.Run.fence_rank, stretch). ``txs`` looks many txids up at
once through each run's map, Bloom filter and fence vectorised (find_many, search_run).

Each search takes the runs of one snapshot: it needs no lock, and the Index checks its
arguments before it takes the snapshot.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tsunagi.ledger.index import runfile
from tsunagi.ledger.index.run import SIDES, Run, Snapshot, words
from tsunagi.ledger.index.runfile import (
    HEIGHT_LIMIT,
    KEYS,
    POSITION_BITS,
    POSITION_MASK,
    bloom_bits,
    prefixes,
)
from tsunagi.limits import u64_max

NOT_FOUND = np.uint64(u64_max)
_SCAN_ROWS = 512  # a binary search through pread reads a range this short at once


class TxLocation(NamedTuple):
    """Where a transaction is: block height, index in the block, and its result code."""

    height: int
    position: int
    code: int


def _stretch(run: Run, section: str, key: int, side: str = "left") -> tuple[int, memoryview]:
    """The first row and the keys of the stretch of at most FENCE_ROWS rows that holds
    ``searchsorted(key, side)`` of the section's keys: found in the fence (fence_rank)."""
    segment = run.fence_rank(section, key, side)
    low = max(segment - 1, 0) * runfile.FENCE_ROWS
    high = min(segment * runfile.FENCE_ROWS, run.rows(section))
    return low, words(run.pread(section, KEYS[section], low, high))


def find_range(run: Run, section: str, key: int) -> tuple[int, int]:
    """The rows holding ``key``: one read when they end inside the stretch they start in (a
    key held by a few rows), else a second for where they end."""
    low, keys = _stretch(run, section, key)
    start, stop = bisect.bisect_left(keys, key), bisect.bisect_right(keys, key)
    if stop < len(keys) or low + len(keys) == run.rows(section):
        return low + start, low + stop
    return low + start, find(run, section, key, "right")


def find(run: Run, section: str, key: int, side: str = "left") -> int:
    """``searchsorted(key, side)`` of a sorted section's keys: one read of one stretch."""
    low, keys = _stretch(run, section, key, side)
    return low + SIDES[side](keys, key)


def bisect_column(run: Run, section: str, column: str, value: int, low: int, high: int,
                  side: str = "left") -> int:
    """``searchsorted(value, side)`` within rows [low, high) of a u64 column sorted there:
    single values by pread until the range is short, then the range at once."""
    while high - low > _SCAN_ROWS:
        middle = (low + high) // 2
        probe = words(run.pread(section, column, middle, middle + 1))[0]
        if probe < value or (side == "right" and probe == value):
            low = middle + 1
        else:
            high = middle
    return low + SIDES[side](words(run.pread(section, column, low, high)), value)


def _find_many(table: dict[str, np.ndarray], keys: np.ndarray, needles: np.ndarray
               ) -> np.ndarray:
    """``keys.searchsorted(needles)`` through the fence, for many needles at once: a
    vectorised binary search over each needle's stretch of FENCE_ROWS keys (one or two pages
    of a map each)."""
    if not len(keys):
        return np.zeros(len(needles), dtype=np.intp)
    fence_rows = runfile.FENCE_ROWS
    low = table["fence"].searchsorted(needles).astype(np.intp)
    high = np.minimum(low * fence_rows, len(keys))
    low = np.maximum(low - 1, 0) * fence_rows
    for _ in range(fence_rows.bit_length()):  # halves a stretch of <= FENCE_ROWS each step
        middle = (low + high) >> 1
        right = (low < high) & (keys[np.minimum(middle, len(keys) - 1)] < needles)
        low = np.where(right, middle + 1, low)
        high = np.where(right | (low >= high), high, middle)
    return low


def _maybe_in(words: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which keys a run's Bloom filter lets through (all it holds, and a few others)."""
    index = (keys >> np.uint64(64 - (len(words).bit_length() - 1))).astype(np.intp)
    need = bloom_bits(keys)
    return (words[index] & need) == need


def _tx_in_run(run: Run, key: int, suffix: bytes) -> TxLocation | None:
    low, keys = _stretch(run, "tx", key)
    row = low + bisect.bisect_left(keys, key)
    while row < run.rows("tx"):
        found = keys[row - low] if row - low < len(keys) else \
            words(run.pread("tx", "key", row, row + 1))[0]
        if found != key:
            return None
        if run.pread("tx", "suffix", row, row + 1) == suffix:  # a prefix is no proof
            return _location(words(run.pread("tx", "place", row, row + 1))[0],
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
    return pending[places[pending] == NOT_FOUND]


def _history_places(run: Run, account: int, bound: int | None, limit: int) -> list[int]:
    """Up to ``limit`` places of ``account`` in one run, newest first, below ``bound``."""
    low, high = find_range(run, "history", account)
    if bound is not None and high > low:
        high = bisect_column(run, "history", "place", bound, low, high)
    start = max(low, high - limit)
    return words(run.pread("history", "place", start, high)).tolist()[::-1]


def _location(place: int, code: int) -> TxLocation:
    return TxLocation(place >> POSITION_BITS, place & POSITION_MASK, code)


def txid_rows(txids: np.ndarray | Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """N x 32 rows and which of them are txids at all (a byte string of another length is
    answered None)."""
    if isinstance(txids, np.ndarray):
        rows = np.ascontiguousarray(txids, dtype=np.uint8).reshape(-1, 32)
        return rows, np.ones(len(rows), dtype=bool)
    items = [bytes(txid) for txid in txids]
    valid = np.array([len(item) == 32 for item in items], dtype=bool)
    joined = b"".join(item if len(item) == 32 else bytes(32) for item in items)
    return np.frombuffer(joined, np.uint8).reshape(-1, 32), valid


def place_bound(height: int, position: int) -> int:
    """The smallest place not older than (height, position), clamped to the places possible."""
    if height < 0 or position < 0:
        raise ValueError(f"before is a (height, position) pair of non-negative numbers, got "
                         f"{(height, position)}")
    return (min(height, HEIGHT_LIMIT) << POSITION_BITS) + min(position, POSITION_MASK + 1)


# -- the lookups of Index, over one snapshot's runs -------------------------------------------

def tx(blocks: Sequence[Run], txid: bytes) -> TxLocation | None:
    """Index.tx of a 32-byte txid."""
    key, suffix = int.from_bytes(txid[:8], "big"), txid[8:]
    need = (1 << (key & 63)) | (1 << (key >> 6 & 63)) | (1 << (key >> 12 & 63))
    for run in blocks:  # oldest first: a txid keeps its first place
        if (run.bloom_word(key) & need) != need:
            continue  # the Bloom filter knows the run lacks this prefix
        found = _tx_in_run(run, key, suffix)
        if found is not None:
            return found
    return None


def txs(blocks: Sequence[Run], rows: np.ndarray, valid: np.ndarray
        ) -> list[TxLocation | None]:
    """Index.txs of the txids of txid_rows: through maps, whose pages it unmaps after."""
    places = np.full(len(rows), NOT_FOUND, dtype=np.uint64)
    codes = np.zeros(len(rows), dtype=np.uint8)
    keys = prefixes(rows)
    suffixes = np.ascontiguousarray(rows[:, 8:]).view("<u8")
    pending = np.argsort(keys)  # in key order, each run's map is read front to back
    pending = pending[valid[pending]]
    searched = []
    try:
        for run in blocks:  # oldest first: a txid keeps its first place
            if not len(pending):
                break
            table = run.sections["tx"]
            searched.append(run)  # a file's Bloom filter and fence are read through its map
            maybe = pending[_maybe_in(table["bloom"], keys[pending])]
            if len(maybe):
                _search_run(table, keys, suffixes, maybe, places, codes)
                pending = pending[places[pending] == NOT_FOUND]
    finally:
        for run in searched:
            run.drop_pages()
    found = places != NOT_FOUND
    heights = (places >> np.uint64(POSITION_BITS)).tolist()
    positions = (places & np.uint64(POSITION_MASK)).tolist()
    return [TxLocation(height, position, code) if hit else None
            for hit, height, position, code in zip(found.tolist(), heights, positions,
                                                   codes.tolist())]


def block_height(blocks: Sequence[Run], block_hash: bytes) -> int | None:
    """Index.block_height of a 32-byte hash."""
    key = int.from_bytes(block_hash[:8], "big")
    for run in reversed(blocks):  # newest first, as a re-put hash was
        low, high = find_range(run, "hash", key)
        for height in words(run.pread("hash", "height", low, high)):
            row = height - run.first
            if run.pread("hashes", "hash", row, row + 1) == block_hash:
                return height
    return None


def block_hash(snapshot: Snapshot, height: int) -> bytes | None:
    """Index.block_hash."""
    if not 0 <= height < snapshot.indexed_height:
        return None
    run = snapshot.blocks[bisect.bisect_right(snapshot.firsts, height) - 1]
    return run.pread("hashes", "hash", height - run.first, height - run.first + 1)


def accounts_of(owners: Sequence[Run], key: bytes) -> list[int]:
    """Index.accounts_of a 32-byte owner key."""
    prefix, suffix = int.from_bytes(key[:8], "big"), key[8:]
    found: set[int] = set()  # an account added twice (catching up after a crash) is one
    for run in owners:
        low, high = find_range(run, "owner", prefix)
        suffixes = run.pread("owner", "suffix", low, high)
        accounts = words(run.pread("owner", "account", low, high))
        found.update(account for row, account in enumerate(accounts)
                     if suffixes[row * 24:row * 24 + 24] == suffix)
    return sorted(found)


def account_history(blocks: Sequence[Run], account: int, limit: int, bound: int | None
                    ) -> list[tuple[int, int]]:
    """Index.account_history, its ``before`` given as a place_bound (or None)."""
    page: list[tuple[int, int]] = []
    for run in reversed(blocks):  # runs hold disjoint heights, newest last
        if bound is not None and bound <= run.first << POSITION_BITS:
            continue
        places = _history_places(run, account, bound, limit - len(page))
        page += [(place >> POSITION_BITS, place & POSITION_MASK) for place in places]
        if len(page) == limit:
            break
    return page
