"""The index: where each transaction, block and account's history is, in LMDB.

Derived data: everything here can be rebuilt from the block log, which is the durable truth. The
index lags the log and catches up (``indexed_height`` says how far it got); a write transaction
per call (``add_block`` / ``add_blocks``) keeps it consistent at every block boundary.

One writer thread, any number of reader threads. The environment is opened with
``metasync=False``: one fsync per commit instead of two, and a machine crash may undo the last
commit but never corrupts the tree (LMDB's MDB_NOMETASYNC promise) - fine for derived data. And
with ``writemap=True``: random inserts then wrote a third of the bytes per block (47 MB instead
of 146 MB for 8,000-record blocks at ~0.8 million txids, bench/bench_store.py); the cost is that
data.mdb is a sparse file as long as the map.

Maps (keys big-endian where they are numbers, so LMDB's byte order is numeric order)::

    tx             txid (32)            -> height u64, position u32, code u8 (little-endian)
    hash_height    block hash (32)      -> height u64
    height_hash    height (8)           -> block hash (32)
    owner_accounts owner key (32)       -> account (8), one duplicate per account
    account_owner  account (8)          -> owner key (32), to drop accounts on a reorg
    history        account (8)          -> height (8) + position (4), one duplicate per record
    undo           height (8)           -> txids, debit and credit accounts of that block
    meta           b"indexed_height"    -> u64
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Self

import lmdb
import numpy as np

from tsunagi.errors import EncodingError, StorageError
from tsunagi.ledger import store_limits

__all__ = ["BlockEntries", "Index", "TxLocation"]

log = logging.getLogger(__name__)

_TX_VALUE = np.dtype([("height", "<u8"), ("position", "<u4"), ("code", "u1")])
_HISTORY_VALUE = np.dtype([("height", ">u8"), ("position", ">u4")])
_TX_STRUCT = struct.Struct("<QIB")
_HISTORY_STRUCT = struct.Struct(">QI")
_U64_BE = struct.Struct(">Q")
_U64_LE = struct.Struct("<Q")
_INDEXED_HEIGHT = b"indexed_height"
_MAPS = {  # name: (dupsort, dupfixed)
    "tx": (False, False), "hash_height": (False, False), "height_hash": (False, False),
    "owner_accounts": (True, True), "account_owner": (False, False),
    "history": (True, True), "undo": (False, False), "meta": (False, False),
}


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


class _ReaderGate:
    """Lets any number of readers in, or the map resizer alone: LMDB may only change the map
    size while no transaction of this process is open."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self):
        with self._condition:
            while self._resizing:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextmanager
    def alone(self):
        with self._condition:
            self._resizing = True
            while self._readers:
                self._condition.wait()
        try:
            yield
        finally:
            with self._condition:
                self._resizing = False
                self._condition.notify_all()


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
    codes = np.ascontiguousarray(entries.codes, dtype=np.uint8)
    return BlockEntries(entries.height, bytes(entries.block_hash), txids, codes, debit, credit)


def _rows(buffer: bytes, width: int) -> list[bytes]:
    # A void-dtype view turns into byte strings in one C loop: ~6x faster than slicing.
    return np.frombuffer(buffer, dtype=f"V{width}").tolist()


def _tx_items(entries: BlockEntries) -> list[tuple[bytes, bytes]]:
    count = len(entries.codes)
    values = np.empty(count, dtype=_TX_VALUE)
    values["height"] = entries.height
    values["position"] = np.arange(count, dtype=np.uint32)
    values["code"] = entries.codes
    # Sorted keys let LMDB find each next key on the page it is already on.
    order = np.argsort(entries.txids.view("S32").ravel(), kind="stable")
    keys = _rows(entries.txids[order].tobytes(), 32)
    return list(zip(keys, _rows(values[order].tobytes(), _TX_VALUE.itemsize)))


def _history_items(entries: BlockEntries) -> list[tuple[bytes, bytes]]:
    count = len(entries.codes)
    accounts = np.concatenate([entries.debit_accounts, entries.credit_accounts])
    positions = np.tile(np.arange(count, dtype=np.uint64), 2)
    keep = accounts != 0  # account 0 means "none" (an open_account's debit, a burn's credit)
    accounts, positions = accounts[keep], positions[keep]
    order = np.lexsort((positions, accounts))
    values = np.empty(len(order), dtype=_HISTORY_VALUE)
    values["height"] = entries.height
    values["position"] = positions[order]
    keys = _rows(accounts[order].astype(">u8").tobytes(), 8)
    return list(zip(keys, _rows(values.tobytes(), _HISTORY_VALUE.itemsize)))


def _undo_value(entries: BlockEntries) -> bytes:
    return b"".join([entries.txids.tobytes(), entries.debit_accounts.astype("<u8").tobytes(),
                     entries.credit_accounts.astype("<u8").tobytes()])


def _split_undo(value: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = len(value) // 48
    txids = np.frombuffer(value, dtype=np.uint8, count=count * 32).reshape(count, 32)
    debit = np.frombuffer(value, dtype="<u8", count=count, offset=count * 32)
    credit = np.frombuffer(value, dtype="<u8", count=count, offset=count * 40)
    return txids, debit, credit


class Index:
    """Lookups by txid, block hash, height, owner key and account; over LMDB.

    Open with :meth:`open`. Writes come from one thread; reads from any.
    """

    def __init__(self, directory: Path, env: lmdb.Environment):
        """Private: use :meth:`Index.open`."""
        self.directory = directory
        self._env = env
        self._maps = {name: env.open_db(name.encode(), dupsort=dupsort, dupfixed=dupfixed)
                      for name, (dupsort, dupfixed) in _MAPS.items()}
        self._gate = _ReaderGate()
        self._write_mutex = threading.Lock()

    @classmethod
    def open(cls, directory: str | Path) -> Index:
        """Opens the index in ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data_file = directory / "data.mdb"
        # With writemap the file is as long as the map was (sparse): keep that size.
        map_bytes = max(store_limits.index_map_bytes_initial,
                        data_file.stat().st_size if data_file.exists() else 0)
        try:
            env = lmdb.open(str(directory), map_size=map_bytes, max_dbs=len(_MAPS) + 1,
                            metasync=False, readahead=False, writemap=True)
        except lmdb.Error as error:
            raise StorageError(f"cannot open the index in {directory}: {error}. The index is "
                               "derived from the block log: delete the folder to rebuild it."
                               ) from error
        return cls(directory, env)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        with self._gate.alone():
            self._env.close()

    @property
    def map_bytes(self) -> int:
        """The current LMDB map size (grown when full)."""
        return self._env.info()["map_size"]

    @property
    def indexed_height(self) -> int:
        """Number of blocks indexed: the next add_block must be for this height."""
        with self._reading() as txn:
            return self._indexed_height(txn)

    # -- writes ------------------------------------------------------------------------------

    def add_block(self, height: int, block_hash: bytes, txids: np.ndarray, codes: np.ndarray,
                  debit_accounts: np.ndarray, credit_accounts: np.ndarray) -> None:
        """Indexes one block in one write transaction; ``height`` must be ``indexed_height``."""
        self.add_blocks([BlockEntries(height, block_hash, txids, codes, debit_accounts,
                                      credit_accounts)])

    def add_blocks(self, blocks: Sequence[BlockEntries]) -> None:
        """Indexes consecutive blocks in one write transaction (one fsync for all of them)."""
        checked = [_checked_entries(entries) for entries in blocks]
        self._write(lambda txn: self._add_blocks(txn, checked))

    def add_accounts(self, pairs: Iterable[tuple[bytes, int]]) -> None:
        """Records that owner key ``key`` owns ``account`` for each ``(key, account)``."""
        items = []
        for key, account in pairs:
            if len(key) != 32 or not 0 < account < 2**64:
                raise EncodingError(f"an owner key is 32 bytes and an account 1..2**64-1, got "
                                    f"{len(key)} bytes and {account}")
            items.append((bytes(key), _U64_BE.pack(account)))
        items.sort()

        def work(txn: lmdb.Transaction) -> None:
            txn.cursor(self._maps["owner_accounts"]).putmulti(items)
            txn.cursor(self._maps["account_owner"]).putmulti(
                sorted((account, key) for key, account in items))
        self._write(work)

    def drop_accounts(self, first_account: int) -> None:
        """Forgets every account numbered ``first_account`` and above (a reorg undid them)."""
        def work(txn: lmdb.Transaction) -> None:
            cursor = txn.cursor(self._maps["account_owner"])
            doomed = []
            if cursor.set_range(_U64_BE.pack(first_account)):
                doomed = list(cursor)
            for account, key in doomed:
                txn.delete(key, account, db=self._maps["owner_accounts"])
                txn.delete(account, db=self._maps["account_owner"])
        self._write(work)

    def truncate_above(self, height: int) -> None:
        """Forgets blocks at ``height`` and above: same argument as ``BlockLog.truncate``, so
        after both ``log.height == index.indexed_height == height``."""
        self._write(lambda txn: self._truncate(txn, height))

    # -- reads -------------------------------------------------------------------------------

    def tx(self, txid: bytes) -> TxLocation | None:
        """Where transaction ``txid`` is, or None when the index has not seen it."""
        with self._reading() as txn:
            value = txn.get(bytes(txid), db=self._maps["tx"])
        return None if value is None else TxLocation(*_TX_STRUCT.unpack(value))

    def txs(self, txids: np.ndarray | Sequence[bytes]) -> list[TxLocation | None]:
        """``tx`` for each txid (an N x 32 array or byte strings), in one read transaction."""
        if isinstance(txids, np.ndarray):
            keys = _rows(np.ascontiguousarray(txids, dtype=np.uint8).tobytes(), 32)
        else:
            keys = [bytes(txid) for txid in txids]
        with self._reading() as txn:
            found = dict(txn.cursor(self._maps["tx"]).getmulti(keys))
        return [None if (value := found.get(key)) is None
                else TxLocation(*_TX_STRUCT.unpack(value)) for key in keys]

    def block_height(self, block_hash: bytes) -> int | None:
        """Height of the block with this hash, or None."""
        with self._reading() as txn:
            value = txn.get(bytes(block_hash), db=self._maps["hash_height"])
        return None if value is None else _U64_LE.unpack(value)[0]

    def block_hash(self, height: int) -> bytes | None:
        """Hash of the block at ``height``, or None when it is not indexed."""
        with self._reading() as txn:
            return txn.get(_U64_BE.pack(height), db=self._maps["height_hash"])

    def accounts_of(self, key: bytes) -> list[int]:
        """Accounts owned by owner key ``key``, ascending."""
        with self._reading() as txn:
            cursor = txn.cursor(self._maps["owner_accounts"])
            if not cursor.set_key(bytes(key)):
                return []
            return [_U64_BE.unpack(value)[0] for value in cursor.iternext_dup()]

    def account_history(self, account: int, limit: int = 100,
                        before: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """(height, position) of the records that debit or credit ``account``, newest first.

        At most ``limit``; pass the last pair of a page as ``before`` for the next page.
        """
        if not 0 < limit <= store_limits.index_history_limit_max:
            raise ValueError(f"limit is 1..{store_limits.index_history_limit_max}, got {limit}")
        key = _U64_BE.pack(account)
        with self._reading() as txn:
            cursor = txn.cursor(self._maps["history"])
            if not cursor.set_key(key):
                return []
            if before is None:
                cursor.last_dup()
            elif cursor.set_range_dup(key, _HISTORY_STRUCT.pack(*before)):
                if not cursor.prev_dup():
                    return []  # nothing older than `before`
            else:  # every entry is older than `before`
                cursor.set_key(key)
                cursor.last_dup()
            page = [_HISTORY_STRUCT.unpack(cursor.value())]
            while len(page) < limit and cursor.prev_dup():
                page.append(_HISTORY_STRUCT.unpack(cursor.value()))
        return page

    # -- private -----------------------------------------------------------------------------

    @contextmanager
    def _reading(self):
        with self._gate.reading(), self._env.begin() as txn:
            yield txn

    def _indexed_height(self, txn: lmdb.Transaction) -> int:
        value = txn.get(_INDEXED_HEIGHT, db=self._maps["meta"])
        return 0 if value is None else _U64_LE.unpack(value)[0]

    def _write(self, work: Callable[[lmdb.Transaction], object]) -> object:
        """Runs ``work`` in one write transaction, growing the map and retrying when full."""
        with self._write_mutex:
            self._grow_early()
            for _ in range(32):  # each retry doubles the map: 32 doublings exceed any disk
                try:
                    # A write transaction also counts as a reader: the map must not be resized
                    # under it.
                    with self._gate.reading(), self._env.begin(write=True) as txn:
                        return work(txn)
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.Error as error:
                    raise StorageError(
                        f"writing the index in {self.directory} failed: {error}. The index is "
                        "derived from the block log: delete the folder to rebuild it.") from error
        raise StorageError(f"the index in {self.directory} stays full after growing its map")

    def _grow_early(self) -> None:
        # Growing before the map is full spares aborting a write transaction: under busy reader
        # threads py-lmdb 3.0's abort waited up to a second for its environment lock.
        info = self._env.info()
        used_bytes = (info["last_pgno"] + 1) * self._env.stat()["psize"]
        if used_bytes * store_limits.index_map_growth_factor > info["map_size"]:
            self._grow()

    def _grow(self) -> None:
        with self._gate.alone():
            grown = self._env.info()["map_size"] * store_limits.index_map_growth_factor
            log.info("index map full: growing it to %d bytes", grown)
            self._env.set_mapsize(grown)

    def _add_blocks(self, txn: lmdb.Transaction, blocks: list[BlockEntries]) -> None:
        expected = self._indexed_height(txn)
        for entries in blocks:
            if entries.height != expected:
                raise ValueError(f"the index holds {expected} blocks: block {entries.height} "
                                 "is out of order")
            key = _U64_BE.pack(entries.height)
            # A txid already indexed keeps its first (original) place.
            txn.cursor(self._maps["tx"]).putmulti(_tx_items(entries), overwrite=False)
            txn.cursor(self._maps["history"]).putmulti(_history_items(entries))
            txn.put(entries.block_hash, _U64_LE.pack(entries.height), db=self._maps["hash_height"])
            txn.put(key, entries.block_hash, db=self._maps["height_hash"])
            txn.put(key, _undo_value(entries), db=self._maps["undo"])
            expired = entries.height - store_limits.index_undo_blocks
            if expired >= 0:
                txn.delete(_U64_BE.pack(expired), db=self._maps["undo"])
            expected += 1
        txn.put(_INDEXED_HEIGHT, _U64_LE.pack(expected), db=self._maps["meta"])

    def _truncate(self, txn: lmdb.Transaction, height: int) -> None:
        if height < 0:
            raise ValueError(f"cannot truncate the index to height {height}")
        current = self._indexed_height(txn)
        for block in range(current - 1, height - 1, -1):
            value = txn.get(_U64_BE.pack(block), db=self._maps["undo"])
            if value is None:  # deeper than the undo window
                self._truncate_by_scan(txn, height)
                break
            self._undo_block(txn, block, value)
        if height < current:
            txn.put(_INDEXED_HEIGHT, _U64_LE.pack(height), db=self._maps["meta"])

    def _undo_block(self, txn: lmdb.Transaction, block: int, value: bytes) -> None:
        txids, debit, credit = _split_undo(value)
        tx_map, history = self._maps["tx"], self._maps["history"]
        for txid in _rows(txids.tobytes(), 32):
            stored = txn.get(txid, db=tx_map)
            if stored is not None and _U64_LE.unpack_from(stored)[0] == block:
                txn.delete(txid, db=tx_map)
        for position, (payer, payee) in enumerate(zip(debit.tolist(), credit.tolist())):
            entry = _HISTORY_STRUCT.pack(block, position)
            for account in {payer, payee} - {0}:
                txn.delete(_U64_BE.pack(account), entry, db=history)
        self._forget_block_hash(txn, block)
        txn.delete(_U64_BE.pack(block), db=self._maps["undo"])

    def _forget_block_hash(self, txn: lmdb.Transaction, block: int) -> None:
        block_hash = txn.pop(_U64_BE.pack(block), db=self._maps["height_hash"])
        if block_hash is not None:
            stored = txn.get(block_hash, db=self._maps["hash_height"])
            if stored is not None and _U64_LE.unpack(stored)[0] == block:
                txn.delete(block_hash, db=self._maps["hash_height"])

    def _truncate_by_scan(self, txn: lmdb.Transaction, height: int) -> None:
        """Drops every entry of blocks at ``height`` and above by reading whole maps."""
        log.warning("index: undoing blocks from %d by a full scan (deeper than the %d-block "
                    "undo window)", height, store_limits.index_undo_blocks)
        tx_map, history = self._maps["tx"], self._maps["history"]
        doomed = [key for key, value in txn.cursor(tx_map)
                  if _U64_LE.unpack_from(value)[0] >= height]
        for key in doomed:
            txn.delete(key, db=tx_map)
        entries = [(key, value) for key, value in txn.cursor(history)
                   if _HISTORY_STRUCT.unpack(value)[0] >= height]
        for key, value in entries:
            txn.delete(key, value, db=history)
        cursor = txn.cursor(self._maps["height_hash"])
        blocks = [_U64_BE.unpack(key)[0] for key, _ in cursor] \
            if cursor.set_range(_U64_BE.pack(height)) else []
        for block in blocks:
            self._forget_block_hash(txn, block)
            txn.delete(_U64_BE.pack(block), db=self._maps["undo"])
