"""The Index: one writer thread adds runs in memory, flushes them to files and merges them as
due (large merges on the merger thread, background.py), and publishes a new snapshot once the
manifest names its files; readers take the current snapshot without a lock and search it
(lookup.py). The design is in the package's docstring.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from tsunagi.errors import StorageError
from tsunagi.ledger import limits
from tsunagi.ledger.index import lookup, merge
from tsunagi.ledger.index.background import Merger
from tsunagi.ledger.index.build import BlockEntries, block_sections, checked_entries, owner_rows
from tsunagi.ledger.index.lookup import TxLocation
from tsunagi.ledger.index.manifest import FOLDER, recovered, write_manifest
from tsunagi.ledger.index.run import Run, Snapshot, end_of, runs_of, snapshot_of
from tsunagi.ledger.index.runfile import REBUILD, Entry, Kind, data_columns
from tsunagi.ledger.index.write import write_run
from tsunagi.ledger.log import fsync_directory

log = logging.getLogger(__package__)  # one logger for the index: tsunagi.ledger.index


class Index:
    """Lookups by txid, block hash, height, owner key and account, over sorted runs.

    Open with :meth:`open`. Writes come from one thread; reads from any.
    """

    def __init__(self, directory: Path, entries: list[Entry], next_run: int):
        """Private: use :meth:`Index.open`."""
        self.directory = directory
        self.folder = directory / FOLDER
        self._next_run = next_run
        self._write_mutex = threading.Lock()
        # The background merge (see _merge_while_due), handed to it with the mutex held.
        self._merger = Merger(self.folder, self._write_mutex, self._merged_entry,
                              self._finish_background_merge)
        runs = [Run.on_file(self.folder, entry) for entry in entries]
        self._snapshot: Snapshot | None = snapshot_of(
            [run for run in runs if run.entry.kind == Kind.blocks],
            [run for run in runs if run.entry.kind == Kind.owners])

    @classmethod
    def open(cls, directory: str | Path) -> Index:
        """Opens the index in ``directory``/index (created if missing), dropping damaged runs."""
        directory = Path(directory)
        folder = directory / FOLDER
        if (directory / "data.mdb").exists():
            log.warning("%s holds data.mdb, the LMDB index of an older tsunagi: it is no longer "
                        "read; delete data.mdb and lock.mdb to free the space", directory)
        try:
            entries, next_run = recovered(folder)
            return cls(directory, entries, next_run)
        except OSError as error:
            raise StorageError(f"cannot open the index in {folder}: {error}. {REBUILD}"
                               ) from error

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Writes the runs in memory to a file, then lets the runs go (a reader still inside a
        lookup keeps its own until it returns). A background merge under way is abandoned:
        its inputs stay, and the next open merges them again when due."""
        self._merger.close()
        with self._write_mutex:
            if self._snapshot is None:
                return
            try:
                self._flush()
            finally:
                self._snapshot = None

    def wait_merged(self) -> None:
        """Returns once no background merge is under way (or due)."""
        self._merger.wait()

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
        """Indexes consecutive blocks as one run in memory (see the package's docstring)."""
        checked = [checked_entries(entries) for entries in blocks]
        if not checked:
            return
        with self._write_mutex:
            self._merger.raise_error()
            snapshot = self._current()
            expected = snapshot.indexed_height
            for offset, entries in enumerate(checked):
                if entries.height != expected + offset:
                    raise ValueError(f"the index holds {expected + offset} blocks: block "
                                     f"{entries.height} is out of order")
            run = Run.in_memory(Kind.blocks, expected, expected + len(checked),
                                block_sections(checked))
            self._show(snapshot.blocks + (run,), snapshot.owners)
            del snapshot, run  # a flush frees these runs: _after_add says why no one else holds
            self._after_add(Kind.blocks)

    def add_accounts(self, pairs: Iterable[tuple[bytes, int]]) -> None:
        """Records that owner key ``key`` owns ``account`` for each ``(key, account)``."""
        rows = owner_rows(pairs)
        if not len(rows["key"]):
            return
        with self._write_mutex:
            self._merger.raise_error()
            snapshot = self._current()
            run = Run.in_memory(Kind.owners, snapshot.indexed_height,
                                int(rows["account"].max()) + 1, {"owner": rows})
            self._show(snapshot.blocks, snapshot.owners + (run,))
            del snapshot, run, rows  # a flush frees these: _after_add says why no one else holds
            self._after_add(Kind.owners)

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
            self._merge_while_due(Kind.blocks)

    # -- reads: arguments checked here, then a search of the current snapshot (lookup.py) ----

    def tx(self, txid: bytes) -> TxLocation | None:
        """Where transaction ``txid`` is, or None when the index has not seen it."""
        txid = bytes(txid)
        if len(txid) != 32:
            return None
        return lookup.tx(self._current().blocks, txid)

    def txs(self, txids: np.ndarray | Sequence[bytes]) -> list[TxLocation | None]:
        """``tx`` for each txid (an N x 32 array or byte strings), one search per run for all:
        through maps, whose pages it unmaps before it returns."""
        rows, valid = lookup.txid_rows(txids)
        return lookup.txs(self._current().blocks, rows, valid)

    def block_height(self, block_hash: bytes) -> int | None:
        """Height of the block with this hash, or None."""
        block_hash = bytes(block_hash)
        if len(block_hash) != 32:
            return None
        return lookup.block_height(self._current().blocks, block_hash)

    def block_hash(self, height: int) -> bytes | None:
        """Hash of the block at ``height``, or None when it is not indexed."""
        return lookup.block_hash(self._current(), height)

    def accounts_of(self, key: bytes) -> list[int]:
        """Accounts owned by owner key ``key``, ascending."""
        key = bytes(key)
        if len(key) != 32:
            return []
        return lookup.accounts_of(self._current().owners, key)

    def account_history(self, account: int, limit: int = 100,
                        before: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """(height, position) of the records that debit or credit ``account``, newest first.

        At most ``limit``; pass the last pair of a page as ``before`` for the next page.
        """
        if not 0 < limit <= limits.index_history_limit_max:
            raise ValueError(f"limit is 1..{limits.index_history_limit_max}, got {limit}")
        if not 0 <= account < 2**64:
            raise ValueError(f"an account is 0..2**64-1, got {account}")
        bound = None if before is None else lookup.place_bound(*before)
        return lookup.account_history(self._current().blocks, account, limit, bound)

    # -- private: runs in memory, flushes and merges -------------------------------------------

    def _current(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise StorageError(f"the index in {self.folder} is closed")
        return snapshot

    def _show(self, blocks: Sequence[Run], owners: Sequence[Run]) -> None:
        """Lets readers see these runs (nothing on disk changes)."""
        self._snapshot = snapshot_of(blocks, owners)

    def _publish(self, blocks: Sequence[Run], owners: Sequence[Run],
                 replaced: Sequence[Run]) -> None:
        """Names the run files in a new manifest, then shows the runs to readers and deletes the
        files of ``replaced`` (a reader holding an older snapshot keeps reading them)."""
        entries = [run.entry for run in (*blocks, *owners) if run.on_disk]
        try:
            write_manifest(self.folder, entries, self._next_run)
            if replaced:
                fsync_directory(self.folder)  # the new manifest first, then no old file
        except OSError as error:
            raise StorageError(f"writing the index manifest in {self.folder} failed: {error}. "
                               f"{REBUILD}") from error
        self._show(blocks, owners)
        for run in replaced:
            run.path.unlink(missing_ok=True)

    def _after_add(self, kind: int) -> None:
        """Merges runs in memory as due, and writes them to a file past the memory limit. The
        heap is trimmed once the flush has returned and no local of its callers holds the runs
        it wrote (nor their merged copy): trimmed inside it, up to two runs' worth of freed
        buffers (~32 MiB) stayed resident until the next flush."""
        self._merge_while_due(kind, in_memory=True)
        if self._held_bytes() >= limits.index_memory_bytes_max:
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
        for kind, runs in ((Kind.blocks, snapshot.blocks), (Kind.owners, snapshot.owners)):
            files = [run for run in runs if run.on_disk]
            held = [run for run in runs if not run.on_disk]
            if held:
                end = end_of(kind, held)
                sections = merge.merged_sections(held)
                counts = tuple(len(rows[data_columns(kind, section)[0]])
                               for section, rows in sections.items())
                entry = self._new_entry(kind, held[0].first, end, counts)
                files.append(write_run(self.folder, entry, sections))
            lists[kind] = files
        self._publish(lists[Kind.blocks], lists[Kind.owners], replaced=())
        self._merge_while_due(Kind.blocks)
        self._merge_while_due(Kind.owners)

    def _merge_while_due(self, kind: int, in_memory: bool = False) -> None:
        """Merges the newest runs (in files, or in memory) while merge.runs_to_merge says so.

        Called with the write mutex held. A merge of files of index_background_merge_bytes or
        more goes to the merger thread instead; while it runs, its inputs and the runs before
        them are left alone, and merges are looked for among the runs after them."""
        while True:
            snapshot = self._current()
            runs = runs_of(snapshot, kind)
            part = [run for run in runs if run.on_disk != in_memory]
            merging = self._merger.inputs
            if not in_memory and merging and merging[-1] in part:
                part = part[part.index(merging[-1]) + 1:]
            window = merge.runs_to_merge([run.entry.size for run in part])
            if window is None:
                return
            inputs = part[window[0]:window[0] + window[1]]
            if not in_memory and sum(run.entry.size for run in inputs) \
                    >= limits.index_background_merge_bytes:
                if not merging and not self._merger.closing:
                    self._merger.start(inputs)
                return  # a large one waits for the merger: it looks again when done
            start = runs.index(inputs[0])
            merged = merge.merged(self.folder, inputs, self._merged_entry(inputs))
            self._replace(kind, snapshot, start, inputs, merged, publish=not in_memory)

    def _replace(self, kind: int, snapshot: Snapshot, start: int, inputs: Sequence[Run],
                 merged: Run, publish: bool) -> None:
        """Puts ``merged`` where ``inputs`` were (from ``start``) and shows or publishes it."""
        runs = runs_of(snapshot, kind)
        runs = runs[:start] + (merged,) + runs[start + len(inputs):]
        blocks, owners = (runs, snapshot.owners) if kind == Kind.blocks else \
            (snapshot.blocks, runs)
        if publish:
            self._publish(blocks, owners, inputs)
        else:
            self._show(blocks, owners)

    def _finish_background_merge(self, inputs: list[Run], merged: Run | None,
                                 error: BaseException | None) -> None:
        """What the merger thread's result does, under the mutex: swapped in where its inputs
        still are, else deleted unnamed; an error kept for the next writer."""
        snapshot = self._snapshot
        kind = inputs[0].entry.kind
        runs = () if snapshot is None else runs_of(snapshot, kind)
        start = next((i for i, run in enumerate(runs) if run is inputs[0]), -1)
        still_there = start >= 0 and list(runs[start:start + len(inputs)]) == inputs
        if merged is not None and (not still_there or self._merger.closing):
            merged.path.unlink(missing_ok=True)  # never named by a manifest
            return
        if error is not None:
            if still_there:  # inputs a truncate deleted explain the error; no one else does
                self._merger.error = error
            return
        if merged is None:
            return
        try:
            self._replace(kind, snapshot, start, inputs, merged, publish=True)
            self._merge_while_due(kind)
        except StorageError as exc:
            self._merger.error = exc

    def _new_entry(self, kind: int, first: int, end: int, counts: tuple[int, ...]) -> Entry:
        name = f"{Kind(kind).name}-{self._next_run:010d}.run"
        self._next_run += 1
        return Entry(name, int(kind), first, end, counts, 0, 0)

    def _merged_entry(self, runs: list[Run]) -> Entry | None:
        """The entry of the file that merges ``runs`` (None for runs in memory)."""
        if not runs[0].on_disk:
            return None
        kind = runs[0].entry.kind
        counts = tuple(sum(values) for values in zip(*(run.entry.counts for run in runs)))
        return self._new_entry(kind, runs[0].first, end_of(kind, runs), counts)

    def _filtered(self, run: Run, bound: int) -> Run | None:
        """A copy of ``run`` keeping the blocks below height ``bound`` (a block run) or the
        accounts below ``bound`` (an owner run); None when no account is left."""
        kind = run.entry.kind
        end = bound if kind == Kind.blocks else min(run.end, bound)
        if not run.on_disk:
            kept = Run.in_memory(kind, run.first, end, merge.filtered_sections(run, bound))
            return None if kind == Kind.owners and not kept.entry.counts[0] else kept
        counts = merge.filtered_counts(run, bound)
        if kind == Kind.owners and not counts[0]:
            return None
        return merge.filtered(self.folder, run, bound,
                              self._new_entry(kind, run.first, end, counts))
