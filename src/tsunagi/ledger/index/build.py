"""Building a run's rows from what the ledger hands the index: blocks' txids, codes and accounts
(BlockEntries) and owner key -> account pairs, checked, then sorted into the sections of
runfile.SECTIONS with numpy (argsort and take, one pass over the whole batch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from tsunagi.errors import EncodingError
from tsunagi.ledger.index.runfile import HEIGHT_LIMIT, POSITION_BITS, prefixes
from tsunagi.limits import block_records_max


class BlockEntries(NamedTuple):
    """What the index learns from one block (arrays as the ledger holds them)."""

    height: int
    block_hash: bytes
    txids: np.ndarray  # N x 32 uint8
    codes: np.ndarray  # N uint8
    debit_accounts: np.ndarray  # N uint64
    credit_accounts: np.ndarray  # N uint64


def checked_entries(entries: BlockEntries) -> BlockEntries:
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
    if count > block_records_max or not 0 <= entries.height < HEIGHT_LIMIT:
        raise EncodingError(f"block {entries.height}: {count} records; a block holds at most "
                            f"{block_records_max} and heights are below {HEIGHT_LIMIT}")
    codes = np.ascontiguousarray(entries.codes, dtype=np.uint8)
    return BlockEntries(entries.height, bytes(entries.block_hash), txids, codes, debit, credit)


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
    return (np.repeat(heights, counts) << np.uint64(POSITION_BITS)) | positions


def _tx_rows(blocks: list[BlockEntries], places: np.ndarray) -> dict[str, np.ndarray]:
    txids = np.concatenate([block.txids for block in blocks])
    keys = prefixes(txids)
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
    keys = prefixes(hashes)
    order = np.argsort(keys, kind="stable")
    heights = np.arange(blocks[0].height, blocks[-1].height + 1, dtype=np.uint64)
    return ({"key": keys[order], "height": heights[order]},
            {"hash": hashes.view("V32")[:, 0]})


def block_sections(blocks: list[BlockEntries]) -> dict[str, dict[str, np.ndarray]]:
    """The sections of a block run of ``blocks`` (checked, consecutive)."""
    places = _places(blocks)
    hash_rows, hashes = _hash_rows(blocks)
    return {"tx": _tx_rows(blocks, places), "history": _history_rows(blocks, places),
            "hash": hash_rows, "hashes": hashes}


def owner_rows(pairs: Iterable[tuple[bytes, int]]) -> dict[str, np.ndarray]:
    """The owner section of (owner key, account) pairs, checked and sorted."""
    keys, accounts = [], []
    for key, account in pairs:
        if len(key) != 32 or not 0 < account < 2**64:
            raise EncodingError(f"an owner key is 32 bytes and an account 1..2**64-1, got "
                                f"{len(key)} bytes and {account}")
        keys.append(bytes(key))
        accounts.append(account)
    rows = np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 32)
    numbers = np.array(accounts, dtype=np.uint64)
    prefix_keys = prefixes(rows)
    order = np.lexsort((numbers, prefix_keys))
    return {"key": prefix_keys[order], "account": numbers[order],
            "suffix": np.ascontiguousarray(rows[order, 8:]).view("V24")[:, 0]}
