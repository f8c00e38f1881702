"""The ledger of one chain on one machine: submit, submit_batch, queries, proofs, verify.

A batch moves through the engine in stages over the whole batch (decode, signatures on native
threads, one native apply loop), becomes one block, is appended to the log and fsynced once,
and only then answered. The fsync runs outside the write lock: while one batch waits for the
disk, the next one is checked, applied and written (``begin_batch``; several threads calling
``submit_batch`` get this too), and one fdatasync makes both durable. The index (sorted runs)
is derived data: a background thread fills it from durable blocks, and it is rebuilt from the
log when it lags.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np

from tsunagi import hashing
from tsunagi.core import records as rec
from tsunagi.core.address import decode_address
from tsunagi.core.answer import BatchAnswer
from tsunagi.core.block import (
    BLOCK_VERSION_CONSORTIUM,
    HEADER_BYTES,
    RECORDS_OFFSET,
    BatchAuth,
    Block,
    BlockResult,
    block_bytes,
    block_payloads,
    check_block,
    decode_block,
    encode_block,
    mine_header,
    with_seal,
)
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig, genesis_records
from tsunagi.core.entries import encode_entries
from tsunagi.errors import CancelledError, CorruptLogError, EncodingError, StorageError
from tsunagi.ledger import limits
from tsunagi.ledger.calls import CallRunner, ContractHost, kernel_view_of_codes
from tsunagi.ledger.damage import (
    Damage,
    Scrub,
    check_newest_first,
    error_for,
    from_error,
    read_marker,
    remove_marker,
    write_marker,
)
from tsunagi.ledger.engine import Engine
from tsunagi.ledger.index import BlockEntries, Index, release_free_memory
from tsunagi.ledger.log import BlockLog, write_file_atomically
from tsunagi.ledger.snapshot import (
    drop_snapshots_above,
    load_newest_snapshot,
    save_snapshot,
    snapshot_block_hashes,
)
from tsunagi.ledger.state import State
from tsunagi.ledger.undo import decode_undo, encode_undo
from tsunagi.ledger.view import AccountInfo, DurableView
from tsunagi.limits import u32_max

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SNAPSHOT_DIRECTORY = "snapshots"
# Undo data of every block, one frame per height beside blocks.log's (tsunagi.ledger.undo). It
# is appended with each block and synced before each snapshot, not at each block's fsync: a
# crash may lose its tail, which the open makes again while it replays the blocks after the
# newest snapshot (a snapshot is written only once the undo of its blocks is on disk).
UNDO_DIRECTORY = "undo"
_GENESIS_UNDO = b"genesis: nothing to undo"

__all__ = ["AccountInfo", "BatchAnswer", "Ledger", "PendingBatch", "TxInfo", "VerifyReport",
           "VerifyResult"]


class SealStopped(CancelledError):
    """A miner's seal search was stopped (a better tip arrived): the batch was taken back."""


class PendingBatch:
    """A batch applied and written to the log but not yet durable (from ``begin_batch``).

    ``wait()`` returns its answer once the block is on disk (the fsync it shares with every
    batch begun before it). Until then nothing of the answer may reach a client: a crash
    before the fsync takes the block back.
    """

    __slots__ = ("_answer", "_end", "_ledger", "_waited")

    def __init__(self, ledger: Ledger, answer: BatchAnswer, end: int):
        self._ledger, self._answer, self._end = ledger, answer, end
        self._waited = False

    @property
    def height(self) -> int | None:
        """The block the batch's stored records went into, or None when none were stored."""
        return self._answer.height

    def wait(self) -> BatchAnswer:
        """Makes the batch durable (and every batch begun before it) and returns its answer.

        Raises StorageError when the log could not be synced: then nothing begun since the
        last successful wait is acknowledged, and the ledger refuses writes until reopened.
        """
        if not self._waited:
            self._ledger._make_durable(self._end, self._answer)
            self._ledger._refine_duplicates(self._answer)
            self._waited = True
        return self._answer


@dataclass
class StagedBlock:
    """A block applied to the state and waiting for its certificate (Ledger.stage_batch)."""

    block_hash: bytes
    data: np.ndarray  # the block's bytes, without a seal
    outcome: object  # the engine's, with the undo data that unstage uses
    answer: BatchAnswer | None  # the proposer's answer to its clients; None for a proposal
    txids: np.ndarray


@dataclass(frozen=True)
class TxInfo:
    """A committed record with where it is and the proof that it is there."""

    txid: bytes
    record: bytes
    code: Result
    height: int
    position: int
    block_hash: bytes
    merkle_root: bytes
    proof: list[bytes]
    authorization: bytes | BatchAuth | None

    def verify(self) -> bool:
        """True when the record hashes to txid and its proof leads to the block's root."""
        return (hashing.sha256d(self.record) == self.txid and
                hashing.verify_merkle_proof(self.txid, self.proof, self.position,
                                            self.merkle_root))


class VerifyResult(IntEnum):
    """Why ``Ledger.verify`` stopped at a block; 0 is ok. Values are never reused."""

    ok = 0
    damaged_frame = 1  # the block log's frame of the block fails its checksum or is missing
    undecodable = 2  # the frame is intact but its bytes are not a block
    block_check = 3  # check_block fails: work, Merkle root, records, batches (reason says)
    wrong_bits = 4  # the header's bits are not the chain's
    time_backwards = 5  # the block's time is before the previous block's
    recorded_hash_differs = 6  # the index or a snapshot recorded another hash for the height
    genesis_config = 7  # block 0 does not carry the directory's chain config
    not_authenticated = 8  # a stored record's signature (or account) no longer checks
    replay_mismatch = 9  # re-applying the block gives other result codes than it stores
    header_chain = 10  # the headers do not link, or one does not meet its target


# Codes that mean the stored bytes changed after they were written (repair them from a copy).
_DAMAGE_RESULTS = (VerifyResult.damaged_frame, VerifyResult.undecodable,
                   VerifyResult.block_check, VerifyResult.recorded_hash_differs,
                   VerifyResult.header_chain)


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    blocks: int
    records: int
    bad_height: int | None = None
    reason: str = ""
    code: VerifyResult = VerifyResult.ok

    @property
    def damaged(self) -> bool:
        """The stored bytes of ``bad_height`` are not what was written."""
        return self.code in _DAMAGE_RESULTS

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.blocks} blocks, {self.records} records verified"
        return f"FAILED at block {self.bad_height} ({self.code.name}): {self.reason}"


class _Indexer:
    """Fills the index from committed blocks on a thread of its own, in height order.

    Blocks queued while a write runs are indexed together in the next one, so the index keeps
    up with many small blocks. The queue is bounded by blocks and by records: a writer that
    gets ahead waits in ``put`` instead of holding gigabytes of blocks. Blocks the index
    missed (a crash) are read back from the log by this thread first, so opening a ledger does
    not wait for them.
    """

    def __init__(self, index: Index):
        self.index = index
        self.queue: deque = deque()
        self.queued_records = 0
        self.error: BaseException | None = None
        self.indexed = index.indexed_height  # blocks indexed, like BlockLog.height
        self.condition = threading.Condition()
        self.catch_up: Callable[[], None] | None = None
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="tsunagi-indexer", daemon=True)

    def start(self, catch_up: Callable[[], None] | None = None) -> None:
        """Starts the thread; ``catch_up`` runs on it first (it indexes missed blocks)."""
        self.catch_up = catch_up
        self.thread.start()

    def put(self, height: int, block: Block, opened: np.ndarray) -> None:
        count = len(block)
        with self.condition:
            while self._full(count) and self.error is None:
                self.condition.wait()
            if self.error is not None:
                raise self._failure() from self.error
            self.queue.append((height, block, opened))
            self.queued_records += count
            self.condition.notify_all()

    def _full(self, count: int) -> bool:
        # An oversized block still goes into an empty queue: it must be indexed some time.
        return bool(self.queue) and (
            len(self.queue) >= limits.index_queue_blocks_max
            or self.queued_records + count > limits.index_queue_records_max)

    def index_now(self, items: list) -> None:
        """Indexes consecutive blocks and records how far the index got."""
        _index_blocks(self.index, items)
        with self.condition:
            self.indexed = items[-1][0] + 1
            self.condition.notify_all()

    def _next_group(self) -> list | None:
        released = False
        while True:
            with self.condition:
                idle = not self.queue and not self.closing and \
                    not self.condition.wait(limits.index_idle_release_s)
                if self.queue:
                    return self._take_group()
                if self.closing:
                    return None
            if idle and not released:  # outside the lock: put() need not wait for it
                release_free_memory()
                released = True

    def _take_group(self) -> list:
        group, records = [], 0
        while self.queue and len(group) < limits.index_queue_blocks_max and (
                not group or records + len(self.queue[0][1]) <= limits.index_queue_records_max):
            group.append(self.queue.popleft())
            records += len(group[-1][1])
        return group

    def _run(self) -> None:
        try:
            if self.catch_up is not None:
                self.catch_up()
            while (group := self._next_group()) is not None:
                self.index_now(group)
                done = sum(len(block) for _, block, _ in group)
                del group  # the blocks' buffers go back to the log's pool while this waits
                with self.condition:
                    self.queued_records -= done
                    self.condition.notify_all()
        except BaseException as exc:  # surfaced to the writer on its next put or wait
            with self.condition:
                self.error = exc
                self.condition.notify_all()

    def wait(self, height: int) -> None:
        """Returns once blocks below ``height`` are indexed."""
        with self.condition:
            while self.indexed < height and self.error is None:
                self.condition.wait(1.0)
        if self.error is not None:
            raise self._failure() from self.error

    def rewind(self, height: int) -> None:
        """After the index was cut to ``height`` (a disconnect, with nothing queued)."""
        with self.condition:
            self.indexed = min(self.indexed, height)

    def _failure(self) -> StorageError:
        if isinstance(self.error, CorruptLogError):  # a damaged block it read: name it as such
            return CorruptLogError(str(self.error))
        return StorageError(f"the index writer failed: {self.error}")

    def close(self) -> None:
        with self.condition:
            self.closing = True
            self.condition.notify_all()
        if self.thread.is_alive():
            self.thread.join()


def _index_blocks(index: Index, items: list) -> None:
    """Accounts first: adding them again is harmless, so a crash between the two writes
    leaves nothing that catching up would not mend."""
    pairs = []
    entries = []
    for height, block, opened in items:
        numbers = np.flatnonzero(opened)
        keys = block.records["data"][numbers]
        pairs += [(keys[i].tobytes(), int(opened[n])) for i, n in enumerate(numbers)]
        records = block.records
        entries.append(BlockEntries(height, block.hash, block.txids(), block.codes,
                                    records["debit_account"], records["credit_account"]))
    if pairs:
        index.add_accounts(pairs)
    index.add_blocks(entries)


class Ledger:
    """One chain's ledger in one data directory. See docs/LEDGER_API.md."""

    def __init__(self, directory: Path, config: ChainConfig, log: BlockLog, index: Index,
                 engine: Engine, threads: int, undo_log: BlockLog,
                 calls: CallRunner | None = None):
        self.directory = directory
        self.config = config
        self._contracts = ContractHost(calls, bool(config.contracts), directory)
        self._log = log
        self._undo_log = undo_log
        self._index = index
        self._engine = engine
        self._threads = threads
        self._write_lock = threading.Lock()
        # Taken after _write_lock when both are: the fsync and the hand-over of durable blocks
        # to the indexer, in height order.
        self._sync_lock = threading.Lock()
        self._broken: BaseException | None = None
        tip = _read_block(log, log.height - 1)
        self._tip_hash = tip.hash  # of the last block written (durable or not): the next links
        self._tip_time = tip.time
        self._durable = (log.height, tip.hash)  # blocks on disk, and the hash of the last
        # (height, block, opened, changes) written, not yet durable
        self._unsynced: deque = deque()
        # What readers see: the state of the durable blocks (tsunagi.ledger.view).
        self._view = DurableView(engine.state, log.height)
        self._records_since_snapshot = 0
        self._snapshot_thread: threading.Thread | None = None
        self._indexer = _Indexer(index)
        # A committed block known to be damaged: reads go on, writes are refused.
        self._damage: Damage | None = None
        self._damage_lock = threading.Lock()
        self._scrub: Scrub | None = None
        self._staged: StagedBlock | None = None

    # ----------------------------------------------------------------- opening and closing

    @classmethod
    def create(cls, path: str | os.PathLike, config: ChainConfig, *,
               threads: int | None = None, calls: CallRunner | None = None) -> Ledger:
        """A new data directory holding the genesis block of ``config``. ``calls``: the
        contract runtime of a chain whose config names contracts (tsunagi.ledger.calls)."""
        directory = Path(path)
        if directory.exists() and any(directory.iterdir()):
            raise StorageError(f"{directory} is not empty: pick a new directory for a new chain")
        directory.mkdir(parents=True, exist_ok=True)
        write_file_atomically(directory / CONFIG_FILE, config.to_json().encode())
        threads = threads or hashing.cpu_count()
        log = BlockLog.open(directory, create=True)
        undo_log = None
        try:
            undo_log = BlockLog.open(directory / UNDO_DIRECTORY, create=True)
            genesis = _genesis_block(config)
            engine = Engine(State(), config.chain_id)
            block = decode_block(genesis)
            engine.apply_genesis(block.records.tobytes(), len(config.issuers))
            log.append(bytes(genesis))
            log.sync()
            undo_log.append(_GENESIS_UNDO)
            undo_log.sync()
            index = Index.open(directory)
        except BaseException:
            log.close()
            if undo_log is not None:
                undo_log.close()
            raise
        ledger = cls(directory, config, log, index, engine, threads, undo_log, calls)
        ledger._start_indexer()
        return ledger

    @classmethod
    def open(cls, path: str | os.PathLike, *, threads: int | None = None,
             progress: Callable[[int, int], None] | None = None,
             check_blocks: int = limits.open_check_blocks,
             calls: CallRunner | None = None) -> Ledger:
        """Opens a data directory: newest valid snapshot, then the log replayed after it, then
        the newest ``check_blocks`` blocks checked fully (frame, ``check_block``, links).

        A torn tail that was never acknowledged is dropped; damage in the newest blocks, or in
        any block the open reads, raises CorruptLogError naming the block and offset. Damage
        recorded earlier (``damage.json``, by a read, the scrub or verify) is checked again: if
        the block is still damaged the ledger opens for reads and refuses writes.
        """
        directory = Path(path)
        config_path = directory / CONFIG_FILE
        if not config_path.exists():
            raise StorageError(f"{directory} holds no tsunagi chain (no {CONFIG_FILE}): check "
                               "the path, or create a chain there first")
        config = ChainConfig.from_json(config_path.read_bytes())
        threads = threads or hashing.cpu_count()
        log = BlockLog.open(directory)
        undo_log = None
        try:
            if log.height == 0:
                raise CorruptLogError(f"{directory}: the block log is empty, not even genesis: "
                                      "restore the directory from a backup or a peer")
            undo_log = _open_undo_log(directory, log.height)
            engine, first = _restore_state(directory, config, log, undo_log.height)
            _replay(engine, log, first, progress, undo_log)
            _check_newest(log, check_blocks)
            index = Index.open(directory)
        except BaseException:
            log.close()
            if undo_log is not None:
                undo_log.close()
            raise
        if index.indexed_height > log.height:  # the index saw blocks a reorg took back
            index.truncate_above(log.height)
        ledger = cls(directory, config, log, index, engine, threads, undo_log, calls)
        try:
            ledger._replay_contracts()
        except BaseException:
            ledger.close()
            raise
        ledger._recall_damage()
        ledger._start_indexer()
        return ledger

    def _replay_contracts(self) -> None:
        """The contract runtime's state caught up with the chain: its snapshot (when it is
        of a block still on this chain), then the calls of every block after it."""
        log, host = self._log, self._contracts
        if host.runner is None or not host.contracts:
            return
        first = host.restore(lambda height: _read_block(log, height).hash
                             if 0 < height < log.height else None)
        owner_key = self._engine.state.owner_key
        for height in range(first, log.height):
            block = _read_block(log, height)
            kernel = kernel_view_of_codes(block.records, block.codes)
            result = host.run_connected(height, block, kernel, owner_key)
            if result is not BlockResult.ok:
                raise CorruptLogError(
                    f"block {height}'s calls do not run to what it stores ({result.name}): "
                    "the contracts installed differ from the chain's, or the log was changed")

    def _recall_damage(self) -> None:
        """Damage recorded before this open: still there (writes stay refused) or mended."""
        recorded = read_marker(self.directory)
        if recorded is None:
            return
        log = self._log
        # The recorded block against its successor's link, or every block when unknown.
        known = 0 <= recorded.height < log.height
        top = min(recorded.height + 2, log.height) if known else log.height
        for height, found, _ in check_newest_first(log.read, top, recorded.height if known else 0):
            if found.reason is not None:
                self._damage = _located(Damage(height, found.offset, found.reason,
                                               recorded.found_by, recorded.found_at_s), log)
                logger.error("%s", self._damage.advice(self.directory))
                return
        remove_marker(self.directory)
        logger.warning("block %s of %s reads intact again: the damage recorded in %s is "
                       "cleared and the ledger takes new records", recorded.height,
                       self.directory, "damage.json")

    # ------------------------------------------------------------------------------ damage

    @property
    def damage(self) -> Damage | None:
        """A committed block known to be damaged, or None. While set, writes are refused."""
        return self._damage

    def report_damage(self, damage: Damage) -> None:
        """Records damage found by a read, the scrub or verify: logged once, written to
        damage.json (a restart remembers it), and from now on writes are refused."""
        damage = _located(damage, self._log)
        with self._damage_lock:
            if self._damage is not None and self._damage.height <= damage.height:
                return  # the oldest damage is the one to repair first
            self._damage = damage
        logger.error("%s", damage.advice(self.directory))
        try:
            write_marker(self.directory, damage)
        except OSError as exc:
            logger.error("could not record the damage in %s: %s", self.directory, exc)

    def _read(self, height: int) -> bytes:
        """A committed block's bytes; damage found on the way is reported, then raised."""
        try:
            return self._log.read(height)
        except CorruptLogError as error:
            damage = from_error(error, "read")
            self.report_damage(damage)
            raise error_for(self._damage or damage, self.directory) from None

    def start_scrub(self, rate_bytes_s: float = limits.scrub_rate_bytes_s,
                    interval_s: float = limits.scrub_interval_s,
                    cpu_share: float = limits.scrub_cpu_share) -> Scrub:
        """Starts re-reading every committed block in the background (see ledger.damage):
        at most ``rate_bytes_s`` bytes a second and ``cpu_share`` of a core, a new pass
        ``interval_s`` after the last began. Damage it finds is reported (``report_damage``).
        Stopped by close()."""
        if self._scrub is None:
            def chain():
                if self._log is None:
                    return None, None, None
                return self.height, self._read_for_scrub, self.report_damage

            self._scrub = Scrub(chain, rate_bytes_s, interval_s, cpu_share)
            self._scrub.start()
        return self._scrub

    def _read_for_scrub(self, height: int) -> bytes:
        log = self._log
        if log is None:
            raise StorageError("the ledger is closed")
        return log.read(height)

    def health(self) -> dict:
        """Damage known (None when none) and what the scrub has done (None when not running)."""
        damage = self._damage
        return {"damage": None if damage is None else
                {**damage.as_dict(), "message": damage.advice(self.directory)},
                "scrub": None if self._scrub is None else self._scrub.status()}

    def _start_indexer(self) -> None:
        """Starts the indexer; blocks the index missed (it lags the log after a crash) are
        read back and indexed on its thread before anything queued later."""
        first, end = self._index.indexed_height, self._log.height
        accounts = self._engine.state.account_count
        self._indexer.start(lambda: self._catch_up_index(first, end, accounts)
                            if first < end else None)

    def _catch_up_index(self, first: int, end: int, account_count: int) -> None:
        """Indexes blocks ``first..end-1`` from the log, on the indexer thread.

        The account numbers a block opened are not stored in it; they follow from the number of
        accounts at ``end`` less those opened from ``first`` on (a first pass of reads).
        """
        logger.info("index: catching up on blocks %d..%d", first, end - 1)
        opens = [int(_opens_mask(_read_block(self._log, h)).sum()) for h in range(first, end)]
        next_number = account_count + 1 - sum(opens)
        group, records = [], 0
        for height in range(first, end):
            block = _read_block(self._log, height)
            mask = _opens_mask(block)
            opened = np.zeros(mask.size, dtype=np.uint64)
            opened[mask] = np.arange(next_number, next_number + mask.sum(), dtype=np.uint64)
            next_number += int(mask.sum())
            group.append((height, block, opened))
            records += len(block)
            if records >= limits.index_queue_records_max \
                    or len(group) >= limits.index_queue_blocks_max or height == end - 1:
                self._indexer.index_now(group)
                group, records = [], 0

    def close(self) -> None:
        """Waits for the index and any snapshot, writes a fresh snapshot, closes the files."""
        if self._log is None:
            return
        if self._scrub is not None:
            self._scrub.stop()
        with self._write_lock:
            try:
                if self._broken is None:
                    self._make_durable(self._log.height)  # begun and never waited for
                self._indexer.close()
                self._join_snapshot()
                if self._broken is None and self._records_since_snapshot:
                    self._snapshot_now(background=False)
                if self._broken is None and self._staged is None:
                    self._contracts.save(self._log.height - 1, self._tip_hash)
            finally:
                self._index.close()
                self._log.close()
                self._undo_log.close()
                self._log = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----------------------------------------------------------------------------- writing

    def submit(self, record: bytes, signature: bytes) -> BatchAnswer:
        """Baseline commit: one record, one block, one fsync, one answer."""
        if len(record) != rec.RECORD_BYTES:
            raise EncodingError(f"a record is {rec.RECORD_BYTES} bytes, got {len(record)}")
        return self.submit_batch(record, signature)

    def submit_batch(self, records, signatures=b"", batches: Sequence[BatchAuth] = (),
                     now_s: int | None = None, *, payloads: Sequence[bytes] = ()
                     ) -> BatchAnswer:
        """Fast path: many records, one block, one fsync, one answer per record.
        ``payloads``: the arguments of each call record, in record order (core.records.call
        makes such records); they go in the block's payload section."""
        return self.begin_batch(records, signatures, batches, now_s, payloads=payloads).wait()

    def begin_batch(self, records, signatures=b"", batches: Sequence[BatchAuth] = (),
                    now_s: int | None = None, *, bits: int | None = None,
                    seal: Callable[[np.ndarray], bool] | None = None,
                    payloads: Sequence[bytes] = ()) -> PendingBatch:
        """``submit_batch`` up to the fsync: checks, applies and writes the block, and returns
        a PendingBatch whose ``wait()`` gives the answer once the block is durable.

        The caller may begin its next batch before waiting for this one: the CPU work of the
        next overlaps this one's disk wait, and one fsync covers both. Later batches see the
        state this one left (a crash before its fsync takes both back, unanswered).

        ``bits`` (the consensus layer's difficulty for the next block; the config's by
        default) and ``seal`` (writes the block's seal into its buffer and returns True, or
        False when told to stop; the development nonce search by default) are for miners.
        A stopped seal takes the batch back and raises SealStopped.
        """
        view = rec.as_records(records)
        with self._write_lock:
            if self.config.is_consortium:
                raise StorageError("a block of a consortium chain is final only with its "
                                   "validators' certificate: submit to a validator (`tsunagi "
                                   "node --validator-key FILE`), or use ConsortiumChain")
            block_time = self._next_block_time(now_s)
            pre_codes = self._already_committed_opens(view)
            early = None if len(payloads) or self.config.contracts \
                else self._start_block(view, signatures, batches)
            outcome = self._engine.process(view, signatures, batches, block_time,
                                           self._threads, pre_codes=pre_codes,
                                           track_changes=True, payloads=payloads)
            answer = BatchAnswer(codes=outcome.codes, txids=outcome.txids,
                                 opened=outcome.opened)
            if outcome.stored_count:
                height = self._log.height
                root = self._run_contracts(height, block_time, outcome)
                try:
                    self._write_block(outcome, block_time, answer, early, bits, seal, root)
                except SealStopped:
                    self._contracts.undo(height)
                    self._engine.undo(outcome.undo)
                    raise
                except BaseException as exc:
                    self._broken = exc  # state is ahead of the log: refuse further writes
                    raise
            # Even a batch that stored nothing waits for the blocks before it: its codes
            # (insufficient funds, say) follow from their state.
            return PendingBatch(self, answer, self._log.height)

    def _run_contracts(self, height: int, block_time: int, outcome) -> bytes:
        """The calls of a block made here, run (their codes in ``outcome``); the block's
        state-root entry. A runner that fails takes nothing with it: the batch goes back."""
        try:
            return self._contracts.run_made(height, block_time, outcome,
                                            self._engine.state.owner_key)
        except BaseException:
            self._engine.undo(outcome.undo)
            raise

    def _next_block_time(self, now_s: int | None) -> int:
        """The time of the next block made here (never before the tip's), once the ledger
        takes writes."""
        self._check_writable()
        self._check_unstaged()
        block_time = max(int(time.time()) if now_s is None else int(now_s), self._tip_time)
        if block_time > u32_max:
            raise EncodingError("block time passes the 32-bit header field (year 2106)")
        return block_time

    def _make_durable(self, end: int, answer: BatchAnswer | None = None) -> None:
        """Returns once blocks below ``end`` are on disk and handed to the indexer."""
        started_s = time.perf_counter()
        with self._sync_lock:
            if self._durable[0] < end:
                if self._broken is not None:
                    raise StorageError(f"an earlier write failed ({self._broken}); this batch "
                                       "is not acknowledged. Reopen the ledger to recover.")
                try:
                    synced = self._log.sync()
                    while self._unsynced and self._unsynced[0][0] < synced:
                        height, block, opened, changes = self._unsynced.popleft()
                        self._indexer.put(height, block, opened)
                        self._view.advance(changes, height + 1)
                        self._durable = (height + 1, block.hash)
                except BaseException as exc:
                    self._broken = exc
                    raise
        if answer is not None:
            answer.sync_s = time.perf_counter() - started_s

    def _start_block(self, view: np.ndarray, signatures, batches) -> np.ndarray | None:
        """The block this batch makes if every record is stored, begun: a buffer from the
        log with the records copied in where the block keeps them, already on their way to
        the disk (BlockLog.prewrite) while the engine checks and applies them. None for a
        batch too small to gain (or where the log writes through the page cache).

        An 8.4 MB block's write took ~7.7 ms after the engine's ~17 ms, one batch at a time;
        this overlaps the two. A batch that stores fewer records builds its block afresh.
        """
        record_bytes = view.nbytes
        if record_bytes < limits.log_direct_bytes_min or not self._log.writes_direct:
            return None
        count = len(view)
        batch_count = len(batches)
        signature_bytes = memoryview(signatures).nbytes
        buffer = self._log.payload_buffer(block_bytes(count, signature_bytes, batch_count))
        buffer[RECORDS_OFFSET:RECORDS_OFFSET + record_bytes] = view.view(np.uint8).reshape(-1)
        if not self._log.prewrite(buffer, RECORDS_OFFSET, RECORDS_OFFSET + record_bytes):
            return None
        return buffer

    def _write_block(self, outcome, block_time: int, answer: BatchAnswer,
                     early: np.ndarray | None = None, bits: int | None = None,
                     seal: Callable[[np.ndarray], bool] | None = None,
                     extension: bytes = b"") -> None:
        records, allocate = outcome.stored_records, self._log.payload_buffer
        if early is not None and outcome.stored.all():
            # The records lie in the block begun for them already (see _start_block).
            records = early[RECORDS_OFFSET:RECORDS_OFFSET + outcome.stored_records.nbytes]

            def allocate(size: int) -> np.ndarray:
                return early if size == len(early) else self._log.payload_buffer(size)
        data, txids = self._encode_outcome(
            outcome, block_time, self.config.bits if bits is None else bits, records=records,
            allocate=allocate, extension=extension)
        if seal is None:
            mine_header(data, threads=self._threads)
        elif not seal(data):
            raise SealStopped("the block's seal was stopped before it was found")
        # Nothing changes the block after mining: the log may keep this very buffer.
        block = self._append(data, outcome, txids=txids)
        answer.height, answer.block_hash = self._log.height - 1, block.hash

    def _encode_outcome(self, outcome, block_time: int, bits: int, *, records=None,
                        **layout) -> tuple[np.ndarray, np.ndarray]:
        """The block of a processed batch's stored records, and their txids: the engine
        hashed every record already, and the block, the index and the answer reuse those
        txids (and their Merkle levels). ``layout``: encode_block's allocate, extension and
        version; the stored calls' payloads follow the extension's entries."""
        txids = outcome.txids if outcome.stored.all() else outcome.txids[outcome.stored]
        if outcome.stored_payloads:
            layout["extension"] = bytes(layout.get("extension", b"")) + \
                encode_entries(outcome.stored_payloads)
        data = encode_block(
            prev_hash=self._tip_hash, time=block_time, bits=bits,
            records=outcome.stored_records if records is None else records,
            codes=outcome.stored_codes,
            signatures=outcome.stored_signatures if len(outcome.stored_signatures) else b"",
            batches=outcome.stored_batches, threads=self._threads, txids=txids,
            txid_levels=outcome.stored_txid_levels, as_array=True, **layout)
        return data, txids

    def _append(self, data, outcome, txids: np.ndarray | None = None) -> Block:
        """Appends a block the engine has applied, with its undo data; the tip moves to it."""
        height = self._log.append(data, copy=False)
        self._undo_log.append(encode_undo(outcome.undo), copy=False)  # written once, kept
        block = decode_block(data, txids=txids)
        self._tip_hash, self._tip_time = block.hash, block.time
        self._unsynced.append((height, block, outcome.opened[outcome.stored], outcome.changes))
        self._records_since_snapshot += len(block)
        if self._records_since_snapshot >= limits.snapshot_interval_records:
            self._snapshot_now(background=True)
            # The contracts' state too, so that a crash replays only the calls after it (a
            # snapshot of a block the crash takes back fails its hash check on open, and the
            # calls are run again from the chain instead).
            self._contracts.save(height, block.hash)
        return block

    # ------------------------------------------------------------- blocks made elsewhere

    def connect_block(self, data, *, expected_bits: int | None = None,
                      now_s: int | None = None, wait: bool = True) -> BlockResult:
        """Checks a block made anywhere and, when it holds, applies it on the tip and stores it
        with its undo data (Bitcoin Core's CheckBlock, then ConnectBlock).

        Checked alone (``check_block``: proof of work, Merkle root, layout, batch signatures),
        then against the chain: it links to the tip, its bits are ``expected_bits`` (the
        consensus layer's difficulty rule; by default the config's fixed bits), its time is not
        before its parent's nor past ``now_s`` + the config's time_future_s, no open_account is
        a replay, every record signature verifies against this chain's keys and every record
        applies to the result code the block stores. Any failure is a BlockResult code and
        changes nothing. ``wait`` returns once the block is durable; without it the caller
        makes it durable later (``sync``), and readers see it then.
        """
        block, result = self._decoded_block(data)
        if result is not BlockResult.ok:
            return result
        with self._write_lock:
            self._check_writable()
            self._check_unstaged()
            result, outcome = self._apply_block(block, expected_bits, now_s)
            if result is not BlockResult.ok:
                return result
            try:
                self._append(np.frombuffer(block.data, dtype=np.uint8), outcome,
                             txids=outcome.txids)
            except BaseException as exc:
                self._broken = exc
                raise
            end = self._log.height
        if wait:
            self._make_durable(end)
        return BlockResult.ok

    @staticmethod
    def _decoded_block(data, batch_signatures: bool = True) -> tuple[Block | None, BlockResult]:
        """The block decoded and checked alone. ``batch_signatures=False`` leaves the batch
        signatures to the engine, which checks each of them anyway as it applies: a bad one
        then fails the block as not_authenticated instead of bad_batch_signature."""
        try:
            block = decode_block(data)
        except EncodingError:
            return None, BlockResult.undecodable
        result = check_block(block, batch_signatures=batch_signatures)
        if result is BlockResult.ok and block.is_genesis:
            result = BlockResult.not_tip_child
        return block, result

    def _apply_block(self, block: Block, expected_bits: int | None, now_s: int | None):
        """Checks a decoded block against the tip and applies it (under the write lock);
        (code, outcome), and on any failure nothing changed."""
        result = self._check_context(block, expected_bits, now_s)
        if result is not BlockResult.ok:
            return result, None
        pre_codes = self._already_committed_opens(block.records)
        if pre_codes is not None and pre_codes.any():
            return BlockResult.replayed_open, None
        outcome = self._engine.process(block.records, block.signatures, block.batches,
                                       block.time, self._threads, track_changes=True,
                                       as_block=True, txids=block.txids(),
                                       payloads=list(block_payloads(block).values()))
        if not outcome.stored.all() or not np.array_equal(
                outcome.codes, kernel_view_of_codes(block.records, block.codes)):
            self._engine.undo(outcome.undo)
            return (BlockResult.not_authenticated if not outcome.stored.all()
                    else BlockResult.codes_differ), None
        try:
            result = self._contracts.run_connected(self._log.height, block, outcome.codes,
                                                   self._engine.state.owner_key)
        except BaseException:
            self._engine.undo(outcome.undo)
            raise
        if result is not BlockResult.ok:
            self._engine.undo(outcome.undo)
            return result, None
        outcome.codes[:] = block.codes  # the contracts' codes, as the block stores them
        return BlockResult.ok, outcome

    # ------------------------------------------------------- staged blocks (consortium)

    def stage_batch(self, records, signatures=b"", batches: Sequence[BatchAuth] = (),
                    now_s: int | None = None, *, extension=b"",
                    txids: np.ndarray | None = None,
                    payloads: Sequence[bytes] = ()) -> StagedBlock:
        """A consortium proposer's block: checks and applies the batch as ``begin_batch``
        does and builds its version-2 block (no seal yet, ``extension`` in it), but neither
        stores nor answers it. The validators vote on it; ``commit_staged`` stores it with
        its commit certificate, ``unstage`` takes it back. While a block is staged the ledger
        takes no other write. Records that are not stored (a bad signature, say) keep their
        codes in the answer and stay out of the block; a batch may store nothing, and the
        block is then empty (a height must still be decided). ``txids``: the records' own,
        when the caller hashed them already (the mempool's check)."""
        view = rec.as_records(records)
        with self._write_lock:
            block_time = self._next_block_time(now_s)
            pre_codes = self._already_committed_opens(view)
            outcome = self._engine.process(view, signatures, batches, block_time,
                                           self._threads, pre_codes=pre_codes,
                                           track_changes=True, as_block=True, txids=txids,
                                           payloads=payloads)
            answer = BatchAnswer(codes=outcome.codes, txids=outcome.txids,
                                 opened=outcome.opened)
            height = self._log.height
            root = self._run_contracts(height, block_time, outcome)
            try:
                data, stored_txids = self._encode_outcome(
                    outcome, block_time, 0, extension=bytes(extension) + root,
                    version=BLOCK_VERSION_CONSORTIUM)
            except BaseException:
                self._contracts.undo(height)
                self._engine.undo(outcome.undo)
                raise
            block = decode_block(data, txids=stored_txids)
            self._staged = StagedBlock(block.hash, data, outcome, answer, stored_txids)
            return self._staged

    def stage_block(self, data, *, now_s: int | None = None) -> BlockResult:
        """A version-2 block proposed by another validator, checked as ``connect_block``
        checks (every signature, every code) and applied, but not stored: it waits for its
        certificate (``commit_staged``) or goes back (``unstage``). A staged block is
        unstaged first. Any failure is a BlockResult code and changes nothing."""
        block, result = self._decoded_block(data, batch_signatures=False)
        if result is not BlockResult.ok:
            return result
        with self._write_lock:
            self._check_writable()
            self._unstage_locked()
            result, outcome = self._apply_block(block, 0, now_s)
            if result is BlockResult.ok:
                self._staged = StagedBlock(block.hash, np.frombuffer(block.data, np.uint8),
                                           outcome, None, outcome.txids)
            return result

    def use_signature_cache(self, cache) -> None:
        """Signatures a validator checked as they entered its mempool (a SignatureCache):
        the blocks it stages then skip those (every other check stays)."""
        self._engine.signature_cache = cache

    def precheck(self, records, signatures, cache, threads: int | None = None) -> np.ndarray:
        """Checks the records' own signatures into ``cache`` against the signer keys the
        state names now (no lock: a key read as it changes only misses); their txids."""
        return cache.check(self._engine.state, records, signatures, self.config.chain_id,
                           threads or self._threads)

    @property
    def staged(self) -> StagedBlock | None:
        """The block applied and waiting for its certificate, or None."""
        return self._staged

    def unstage(self) -> StagedBlock | None:
        """Takes the staged block's changes back (it was not decided); returns it."""
        with self._write_lock:
            return self._unstage_locked()

    def _unstage_locked(self) -> StagedBlock | None:
        staged, self._staged = self._staged, None
        if staged is not None:
            self._contracts.undo(self._log.height)
            self._engine.undo(staged.outcome.undo)
        return staged

    def commit_staged(self, seal, *, wait: bool = True) -> StagedBlock:
        """Stores the staged block with ``seal`` (its commit certificate) after its
        extension, and returns it once durable (``wait``). The seal is not part of the
        block's hash; the caller has checked it."""
        with self._write_lock:
            self._check_writable()
            staged = self._staged
            if staged is None:
                raise StorageError("no block is staged: stage_batch or stage_block first")
            data = with_seal(staged.data, seal, allocate=self._log.payload_buffer)
            staged.data = data
            try:
                self._append(data, staged.outcome, txids=staged.txids)
            except BaseException as exc:
                self._broken = exc
                raise
            self._staged = None
            end = self._log.height
            if staged.answer is not None:
                staged.answer.height = end - 1
                staged.answer.block_hash = staged.block_hash
        if wait:
            self._make_durable(end, staged.answer)
            if staged.answer is not None:
                self._refine_duplicates(staged.answer)
        return staged

    def _check_unstaged(self) -> None:
        if self._staged is not None:
            raise StorageError("a staged block waits for its certificate: commit_staged or "
                               "unstage it first")

    def _check_context(self, block: Block, expected_bits: int | None,
                       now_s: int | None) -> BlockResult:
        if block.prev_hash != self._tip_hash:
            return BlockResult.not_tip_child
        consortium = self.config.is_consortium
        if (block.version == BLOCK_VERSION_CONSORTIUM) != consortium:
            return BlockResult.bad_version  # each chain takes its own kind of block only
        if expected_bits is None:
            expected_bits = 0 if consortium else self.config.bits
        if block.bits != expected_bits:
            return BlockResult.wrong_bits
        if block.time < self._tip_time:
            return BlockResult.time_before_parent
        clock = int(time.time()) if now_s is None else int(now_s)
        if block.time > clock + self.config.time_future_s:
            return BlockResult.time_too_far_ahead
        return BlockResult.ok

    def sync(self) -> tuple[int, bytes]:
        """Makes every block written so far durable; returns (height, tip_hash)."""
        self._make_durable(self._log.height)
        return self.tip

    def disconnect_block(self) -> bytes:
        """Takes the tip block back from its undo data and returns its bytes."""
        return self.disconnect_blocks(1)[0]

    def disconnect_blocks(self, count: int) -> list[bytes]:
        """Takes the newest ``count`` blocks back, newest first, exactly (balances, sequences,
        holds made, posted, voided or expired in them, policy allowances, accounts opened),
        and returns their bytes, newest first. The log, the undo log and the index are cut once
        at the end; snapshots above the new tip are dropped first. Genesis stays."""
        with self._write_lock:
            self._check_writable()
            self._check_unstaged()
            end = self._log.height
            if not 0 <= count < end:
                raise StorageError(f"cannot disconnect {count} blocks: the chain has {end - 1} "
                                   "above genesis")
            if count == 0:
                return []
            self._make_durable(end)
            self._indexer.wait(end)
            self._join_snapshot()
            if self._undo_log.height < end:
                raise CorruptLogError(f"{self.directory / UNDO_DIRECTORY} lacks the undo data of "
                                      f"blocks {self._undo_log.height}..{end - 1}: reopen the "
                                      "ledger, which makes it again")
            new_end = end - count
            taken = []
            for height in range(end - 1, new_end - 1, -1):
                taken.append(self._read(height))
                self._contracts.undo(height)
                changes = self._engine.undo(decode_undo(self._undo_log.read(height)))
                self._view.advance(changes, height)
            try:
                drop_snapshots_above(self.directory / SNAPSHOT_DIRECTORY, new_end - 1)
                self._index.truncate_above(new_end)
                self._indexer.rewind(new_end)
                self._undo_log.truncate(new_end)
                self._log.truncate(new_end)
            except BaseException as exc:
                self._broken = exc  # the state is behind the log: reopen to recover
                raise
            tip = _read_block(self._log, new_end - 1)
            self._tip_hash, self._tip_time = tip.hash, tip.time
            self._durable = (new_end, tip.hash)
            self._records_since_snapshot = 0
            return taken

    def _check_writable(self) -> None:
        self._check_usable()
        if self._damage is not None:
            raise error_for(self._damage, self.directory)

    def _check_usable(self) -> None:
        if self._log is None:
            raise StorageError("the ledger is closed")
        if self._broken is not None:
            raise StorageError(f"an earlier write failed ({self._broken}); the ledger refuses "
                               "writes until it is reopened, which recovers from the log")

    def _already_committed_opens(self, view: np.ndarray) -> np.ndarray | None:
        """open_account has no sequence to stop a replay, so its txid is looked up instead."""
        opens = np.flatnonzero(view["kind"] == rec.Kind.open_account)
        if not opens.size:
            return None
        pre_codes = np.zeros(len(view), dtype=np.uint8)
        txids = hashing.sha256d_records(view[opens].tobytes(), rec.RECORD_BYTES)
        self._make_durable(self._log.height)  # blocks begun and not waited for: index them
        self.wait_indexed()
        seen: set[bytes] = set()
        for position, txid, found in zip(opens, txids, self._index.txs([bytes(t) for t in txids])):
            txid = bytes(txid)
            if found is not None or txid in seen:
                pre_codes[position] = Result.already_committed
            seen.add(txid)
        return pre_codes

    def _refine_duplicates(self, answer: BatchAnswer) -> None:
        """A record turned away as a replay that was committed before is a retry.

        Such a record is never stored itself, so an index entry for its txid is the original
        (from an earlier block, or from earlier in this batch): already_committed, with the
        original code in ``answer.originals``.
        """
        used = np.flatnonzero((answer.codes == Result.sequence_used) |
                              (answer.codes == Result.already_committed))
        if not used.size:
            return
        self._indexer.wait(self.height)
        txids = [answer.txids[i].tobytes() for i in used]
        for position, found in zip(used, self._index.txs(txids)):
            if found is not None:
                answer.codes[position] = Result.already_committed
                answer.originals[int(position)] = int(found[2])

    def _snapshot_now(self, background: bool) -> None:
        self._join_snapshot()
        arrays, meta = self._engine.state.to_arrays()
        arrays = {name: np.array(array, copy=True) for name, array in arrays.items()}
        height, block_hash = self._log.height - 1, self._tip_hash
        target = self.directory / SNAPSHOT_DIRECTORY
        self._records_since_snapshot = 0

        def write() -> None:
            # A snapshot must not get ahead of the log on disk: reopening starts from it.
            try:
                self._make_durable(height + 1)
                self._undo_log.sync()  # the open makes undo again only above a snapshot
            except StorageError:
                logger.warning("no snapshot at height %d: its blocks did not reach the disk",
                               height)
                return
            save_snapshot(target, height, block_hash, arrays, meta)

        if not background:
            write()
            return
        self._snapshot_thread = threading.Thread(target=write, name="tsunagi-snapshot",
                                                 daemon=True)
        self._snapshot_thread.start()

    def _join_snapshot(self) -> None:
        if self._snapshot_thread is not None:
            self._snapshot_thread.join()
            self._snapshot_thread = None

    # ----------------------------------------------------------------------------- queries

    @property
    def height(self) -> int:
        """Number of durable blocks, genesis included (the tip is height - 1)."""
        return self._durable[0]

    @property
    def tip_hash(self) -> bytes:
        """Hash of the last durable block."""
        return self._durable[1]

    @property
    def tip(self) -> tuple[int, bytes]:
        """(height, tip_hash) read together: the number of durable blocks, the last one's hash."""
        return self._durable

    @property
    def state(self) -> State:
        """The engine's working state: ahead of the durable blocks while a batch is applied or
        waits for its fsync. For tools and tests; readers use the queries below, which show
        only durable state."""
        return self._engine.state

    # Balances, accounts, holds and policies come from the durable view: a reader never sees
    # a block before its fsync returned, nor part of a linked group the kernel rolled back.

    def balance(self, account: int) -> int:
        return self.account(account).balance

    def balances(self, accounts: Sequence[int]) -> tuple[int, np.ndarray]:
        """(height, balances): several accounts read together, as of the same durable block
        (height counts durable blocks, like ``Ledger.height``)."""
        return self._view.balances(accounts)

    def account(self, account: int) -> AccountInfo:
        """Owner key, balance, held, sequence and issuer flag of an account, as of the
        durable tip (``info.height`` blocks)."""
        return self._view.account(account, self.config.name)

    def holds(self, account: int) -> list[dict]:
        """Every hold the account pays, receives or resolves, oldest first (durable)."""
        return self._view.holds(account)

    def hold(self, payer: int, sequence: int) -> dict | None:
        """The hold named by its payer and its record's sequence, whatever its status."""
        return self._view.hold(payer, sequence)

    def policy(self, account: int, slot: int) -> dict | None:
        """The policy key in slot 1..7 of an account and its limits, or None if empty."""
        return self._view.policy(account, slot)

    def held(self, account: int) -> int:
        """Units in the open holds the account pays: out of its balance until resolved."""
        return self.account(account).held

    def accounts_of(self, key_or_address: bytes | str) -> list[int]:
        """Account numbers owned by a key (32 bytes) or its address text."""
        if isinstance(key_or_address, str):
            key = decode_address(key_or_address, self.config.address_prefix)
        else:
            key = bytes(key_or_address)
        self.wait_indexed()
        return self._index.accounts_of(key)

    def wait_indexed(self, merges: bool = False) -> None:
        """Returns once the index has every durable block; with ``merges``, also once the
        index's background merges are done (for timing the commit path alone)."""
        self._indexer.wait(self.height)
        if merges:
            self._index.wait_merged()

    def block_height(self, block_hash: bytes) -> int | None:
        """Height of the block with this hash (internal byte order), or None."""
        self.wait_indexed()
        height = self._index.block_height(bytes(block_hash))
        return height if height is not None and height < self.height else None

    def headers(self, first: int, end: int) -> bytes:
        """The 80-byte headers of blocks ``first..end-1`` back to back, read without checking
        the blocks' bodies (a damaged body does not stop a node from knowing its chain)."""
        return b"".join(self._log.read_prefix(h, HEADER_BYTES) for h in range(first, end))

    def block(self, height_or_hash: int | bytes, *, durable: bool = True) -> bytes | None:
        """An encoded block by height or by hash, or None. ``durable=False`` (by height) also
        gives blocks written and not yet fsynced (a miner relays its block meanwhile)."""
        if isinstance(height_or_hash, int):
            height = height_or_hash
        else:
            height = self.block_height(height_or_hash)
            if height is None:
                return None
        if not 0 <= height < (self.height if durable else self._log.height):
            return None
        return self._read(height)

    def transaction(self, txid: bytes) -> TxInfo | None:
        """A committed record by txid, with its block, position and Merkle proof."""
        self.wait_indexed()
        found = self._index.tx(bytes(txid))
        if found is None:
            return None
        return self._tx_info(*found[:2])

    def _tx_info(self, height: int, position: int) -> TxInfo:
        block = _decoded(self._read(height), height, self._log.path)
        return TxInfo(txid=block.txids()[position].tobytes(),
                      record=block.records[position].tobytes(),
                      code=Result(int(block.codes[position])), height=height,
                      position=position, block_hash=block.hash,
                      merkle_root=block.merkle_root, proof=block.tx_proof(position),
                      authorization=block.signature_for(position))

    def proof(self, txid: bytes) -> TxInfo | None:
        return self.transaction(txid)

    def history(self, account: int, limit: int = 100,
                before: tuple[int, int] | None = None) -> list[TxInfo]:
        """An account's records, newest first; ``before`` (height, position) pages back."""
        self.wait_indexed()
        return [self._tx_info(height, position) for height, position in
                self._index.account_history(account, limit, before)]

    # ------------------------------------------------------------------------ verification

    def verify(self, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Re-checks the whole chain: hashes, links, work, Merkle roots, signatures, state."""
        with self._write_lock:
            self._check_usable()
            self._make_durable(self._log.height)
            self.wait_indexed()
            recorded = snapshot_block_hashes(self.directory / SNAPSHOT_DIRECTORY)

            def recorded_hashes(height: int) -> list[tuple[str, bytes]]:
                found = [("index", self._index.block_hash(height))]
                if height in recorded:
                    found.append(("snapshot", recorded[height]))
                return [(source, value) for source, value in found if value is not None]

            report = verify_log(self._log, self.config, self._threads, progress,
                                recorded_hashes)
        if report.damaged:
            self.report_damage(Damage(report.bad_height, None, report.reason, "verify",
                                      time.time()))
        return report


def _read_block(log: BlockLog, height: int) -> Block:
    """A committed block; one that no longer decodes is damage, reported as such."""
    return _decoded(log.read(height), height, log.path)


def _decoded(raw: bytes, height: int, path: Path) -> Block:
    try:
        return decode_block(raw)
    except EncodingError as exc:
        error = CorruptLogError(
            f"block {height} of {path} passes its checksum but does not decode ({exc}): "
            "it was changed after it was written")
        error.height, error.offset, error.reason = height, None, f"it does not decode ({exc})"
        raise error from exc


def _genesis_block(config: ChainConfig) -> bytearray:
    records = genesis_records(config)
    count = len(records) // rec.RECORD_BYTES
    block = encode_block(prev_hash=bytes(32), time=config.genesis_time_s, bits=config.bits,
                         records=records, codes=bytes(count), signatures=b"",
                         extension=config.to_json().encode())
    mine_header(block)
    return block


def _open_undo_log(directory: Path, height: int) -> BlockLog:
    """The undo log, cut to the block log's height (a crash between their cuts) and begun
    with genesis' frame in a directory made before undo data existed."""
    path = directory / UNDO_DIRECTORY
    undo_log = BlockLog.open(path, create=not path.exists())
    if undo_log.height > height:
        undo_log.truncate(height)
    if undo_log.height == 0:
        undo_log.append(_GENESIS_UNDO)
    return undo_log


def _restore_state(directory: Path, config: ChainConfig, log: BlockLog,
                   undo_height: int) -> tuple[Engine, int]:
    """The engine at the newest usable snapshot (or genesis) and the next height to replay:
    the replay must pass every block whose undo data is missing (from ``undo_height`` on)."""
    snapshot = load_newest_snapshot(directory / SNAPSHOT_DIRECTORY)
    if snapshot is not None and snapshot.height < min(log.height, undo_height):
        block = _read_block(log, snapshot.height)
        if block.hash == snapshot.block_hash:
            state = State.from_arrays(snapshot.arrays, snapshot.meta)
            return Engine(state, config.chain_id), snapshot.height + 1
    engine = Engine(State(), config.chain_id)
    genesis = _read_block(log, 0)
    if not config.is_canonical(genesis.extension):
        raise CorruptLogError(f"{directory}: block 0 does not carry this directory's "
                              f"{CONFIG_FILE}: the config or the log was changed")
    engine.apply_genesis(genesis.records.tobytes(), len(config.issuers))
    return engine, 1


def _replay(engine: Engine, log: BlockLog, first: int,
            progress: Callable[[int, int], None] | None, undo_log: BlockLog) -> None:
    for height in range(first, log.height):
        block = _read_block(log, height)
        missing = height >= undo_log.height
        outcome = engine.replay(block.records,
                                kernel_view_of_codes(block.records, block.codes), block.time,
                                block.batches, track_undo=missing)
        if missing and outcome:
            undo_log.append(encode_undo(outcome.undo))
        if not outcome:
            raise CorruptLogError(
                f"block {height} does not replay to the result codes it stores: the log was "
                "changed after it was written; run `tsunagi verify` and restore from a peer")
        if progress is not None:
            progress(height, log.height)


def _check_newest(log: BlockLog, count: int) -> None:
    """The newest ``count`` blocks, checked fully before the ledger opens (Bitcoin Core's
    -checkblocks): damage there stops the open, as a torn tail that was acknowledged would."""
    for height, found, _ in check_newest_first(log.read, log.height,
                                               max(0, log.height - count)):
        if found.reason is not None:
            damage = _located(Damage(height, found.offset, found.reason, "open", time.time()),
                              log)
            error = CorruptLogError(
                f"{damage.describe(log.directory)}. The ledger does not open on damage in its "
                f"newest {count} blocks: restore the data directory from a backup or copy it "
                "from another node of this chain")
            error.height, error.offset, error.reason = height, damage.offset, found.reason
            raise error


def _located(damage: Damage, log: BlockLog) -> Damage:
    """The damage with its frame's byte offset, where the check did not name one."""
    if damage.offset is not None or not 0 <= damage.height < log.height:
        return damage
    return dataclasses.replace(damage, offset=log.frame_offset(damage.height))


def _opens_mask(block: Block) -> np.ndarray:
    """Which records of a block opened an account."""
    return (block.records["kind"] == rec.Kind.open_account) & (block.codes == Result.ok)


def verify_log(log: BlockLog, config: ChainConfig, threads: int,
               progress: Callable[[int, int], None] | None = None,
               recorded_hashes: Callable[[int], list[tuple[str, bytes]]] | None = None,
               ) -> VerifyReport:
    """Re-executes a log from genesis in a fresh engine and compares every stored fact.

    ``log`` needs only ``height`` (blocks) and ``read(height)`` (a block's bytes, asked in
    height order): a BlockLog, or blocks downloaded from a node (tsunagi.node.access).

    Per block: it decodes, passes check_block, follows the chain's rules (its bits, time never
    going back), re-verifies every signature and replays to the stored codes; all headers then
    link and meet their targets (one native call). ``recorded_hashes(height)`` gives hashes
    recorded elsewhere (index, snapshots) that the block's hash must equal: they catch a
    changed tip, which no later block links to.
    """
    height = log.height
    headers = bytearray()
    blocks = records = previous_time = 0
    engine = Engine(State(), config.chain_id)
    for block_height in range(height):
        try:
            raw = log.read(block_height)
        except CorruptLogError as exc:
            return VerifyReport(False, blocks, records, block_height, str(exc),
                                VerifyResult.damaged_frame)
        try:
            block = decode_block(raw)
        except EncodingError as exc:
            return VerifyReport(False, blocks, records, block_height,
                                f"the block does not decode: {exc}", VerifyResult.undecodable)
        headers += raw[:HEADER_BYTES]
        code, reason = _chain_rules(block, config, previous_time, recorded_hashes, block_height)
        if code is VerifyResult.ok:
            code, reason = _verify_block(engine, block, block_height, config)
        if code is not VerifyResult.ok:
            return VerifyReport(False, blocks, records, block_height, reason, code)
        previous_time = block.time
        blocks += 1
        records += len(block)
        if progress is not None:
            progress(block_height + 1, height)
    if config.is_consortium:  # links only: the seals are checked by tsunagi.consensus
        index, result = _check_links(bytes(headers))
    else:
        index, result = hashing.validate_headers(bytes(headers), bytes(32), threads)
    if index < height:
        return VerifyReport(False, blocks, records, index, f"header check: {result.name}",
                            VerifyResult.header_chain)
    return VerifyReport(True, blocks, records)


def _check_links(headers: bytes) -> tuple[int, hashing.HeaderResult]:
    """validate_headers without the proof of work, for a consortium chain: the index of the
    first header that does not name its parent's hash (or the count, and ok)."""
    count = len(headers) // HEADER_BYTES
    hashes = hashing.sha256d_records(headers, HEADER_BYTES)
    rows = np.frombuffer(headers, np.uint8).reshape(count, HEADER_BYTES)
    links = np.vstack([np.zeros((1, 32), np.uint8), hashes[:-1]]) if count else hashes
    bad = np.flatnonzero((rows[:, 4:36] != links).any(axis=1))
    return (int(bad[0]), hashing.HeaderResult.bad_link) if bad.size \
        else (count, hashing.HeaderResult.ok)


def _chain_rules(block: Block, config: ChainConfig, previous_time: int,
                 recorded_hashes, height: int) -> tuple[VerifyResult, str]:
    bits = 0 if config.is_consortium and height else config.bits  # consortium: no work
    if block.bits != bits:
        return VerifyResult.wrong_bits, (f"bits 0x{block.bits:08x}, the chain's are "
                                         f"0x{bits:08x}")
    if block.time < previous_time:
        return VerifyResult.time_backwards, (f"time {block.time} is before the previous "
                                             f"block's {previous_time}")
    for source, recorded in recorded_hashes(height) if recorded_hashes else ():
        if recorded != block.hash:
            return VerifyResult.recorded_hash_differs, (
                f"hash {block.hash[::-1].hex()} differs from the one the {source} recorded, "
                f"{recorded[::-1].hex()}")
    return VerifyResult.ok, ""


def _verify_block(engine: Engine, block: Block, height: int,
                  config: ChainConfig) -> tuple[VerifyResult, str]:
    result = check_block(block)
    if result != BlockResult.ok:
        return VerifyResult.block_check, f"block check: {result.name}"
    if height == 0:
        if not config.is_canonical(block.extension):
            return VerifyResult.genesis_config, "genesis does not carry the chain config"
        engine.apply_genesis(block.records.tobytes(), len(config.issuers))
        return VerifyResult.ok, ""
    outcome = engine.process(block.records, block.signatures.tobytes(), block.batches,
                             block.time, 1, payloads=list(block_payloads(block).values()))
    if not outcome.stored.all():
        first = int(np.flatnonzero(~outcome.stored)[0])
        return VerifyResult.not_authenticated, (
            f"record {first} does not authenticate ({Result(int(outcome.codes[first])).name})")
    stored_codes = kernel_view_of_codes(block.records, block.codes)  # contracts: not here
    if not np.array_equal(outcome.codes, stored_codes):
        first = int(np.flatnonzero(outcome.codes != stored_codes)[0])
        return VerifyResult.replay_mismatch, (
            f"record {first} replays to {Result(int(outcome.codes[first])).name}, "
            f"the block says {Result(int(block.codes[first])).name}")
    return VerifyResult.ok, ""
