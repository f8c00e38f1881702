"""The index: where each transaction, block and account's history is, as sorted columnar runs.

Derived data: everything here can be rebuilt from the block log, which is the durable truth. The
index lags the log and catches up (``indexed_height`` says how far it got).

Runs (bytes in docs/FORMAT.md). A run holds, for a range of block heights, the txids, account
histories and block hashes of those blocks as sorted columns (numpy arrays, built with argsort
and take); owner runs hold owner key -> account pairs. ``add_blocks`` and ``add_accounts`` add a
run in memory; once the runs in memory reach :data:`limits.index_memory_bytes_max` they
are merged into one run file (plain file writes) in the folder ``index/`` of the directory the
index is opened on. A ``manifest`` (written to a temporary file, fsynced, renamed) lists the run
files in order with their sizes and checksums; a file it does not name is a crash's leftover,
deleted on open. Runs of one size tier merge, a few at a time (size-tiered, in memory and on
disk alike), so a lookup searches O(log n) runs. A merge is linear: its inputs are sorted
already, so the native kernel (tsunagi._native.indexing, without the GIL) interleaves them and
gathers each column in that order. Run files of a few MiB and more are written and merged
around the page cache (O_DIRECT, whole aligned blocks: write.BlockFile, merge's reader), which
cost the indexer more CPU than anything else did. A run file holds, beside each sorted column,
its fence (every 64th key) and, for txids, a Bloom filter (~1-2 bytes a txid). Readers hold
only a top fence of each file in memory (every 64th fence entry: ~6 bytes per 1,000 records),
so the index's memory does not grow with what it holds (a node indexing 336 million records
grew by ~1.4 bytes a record when every fence and filter was held). A point lookup reads by
pread, so it never maps a page: the one word of a run's Bloom filter its txid falls in (8
bytes; the filter rules out most runs), then the 512-byte stretch of the fence the top fence
points to, then the 512-byte stretch of keys that fence stretch points to. Only ``txs`` (many
txids at once) reads through read-only maps, filters and fences too, and it unmaps what it
touched before it returns: the index keeps no file pages resident. The newest runs, in memory,
hold their whole fences and filters.

Durability. Runs in memory are lost in a crash: the index then reopens at the height its files
end, and the ledger indexes the rest again from the log (at most ~index_memory_bytes_max of
rows). A run file written from memory is not fsynced: open checks every run's checksum, so one
whose bytes never reached the disk is found, and losing it costs re-indexing those blocks. A
merged or rewritten run is fsynced before the manifest names it, because its inputs are deleted
then and losing it would cost re-indexing all it covers; the directory is fsynced before those
inputs are unlinked, so an older manifest never names a deleted file. On open, a run that is
missing, or of the wrong size or checksum, is dropped with every later run; ``indexed_height``
falls back to where the survivors end.

Concurrency. One writer thread, any number of readers, and a merger thread: a merge of files
of index_background_merge_bytes or more (a gigabyte merge takes seconds) runs there without
the write lock, so adds go on meanwhile; the writer merges smaller runs after its inputs, and
the merger swaps its result in under the lock only if its inputs are still in place (a truncate
may have rewritten them: the result is then deleted unnamed). A failed background merge is
raised to the next add; a close abandons a merge under way. A reader takes the current snapshot (a
tuple of runs, each holding its own file descriptor and map) without a lock; the writer
publishes a new snapshot once the manifest names its files. A replaced run's file is unlinked at
once: a reader still holding an older snapshot keeps reading it (Linux keeps an unlinked file
while a descriptor or map holds it), and both go with the last reference to the run.

Modules, lower first (each imports only those above it):

- ``runfile``: a run's bytes: sections, columns and where they lie, header, checksum, places.
- ``build``: a new run's rows from blocks and owner pairs, sorted with numpy.
- ``run``: a run as readers see it (arrays in memory, or a file read by pread) and the snapshot.
- ``lookup``: searching a snapshot's runs through fences, Bloom words and stretches of keys.
- ``write``: writing a run file in whole aligned blocks, with its checksum.
- ``merge``: merging and filtering runs (the native linear merge), and the size tiers.
- ``manifest``: the manifest, and open's checks and recovery.
- ``background``: the merger thread and its handshake with the writer.
- ``memory``: handing freed heap pages back to the OS when the indexer is idle.
- ``index``: the Index: the one writer, its flushes and merges, the snapshot it publishes.
"""

from tsunagi.ledger.index.build import BlockEntries
from tsunagi.ledger.index.index import Index
from tsunagi.ledger.index.lookup import TxLocation
from tsunagi.ledger.index.manifest import FOLDER, MANIFEST
from tsunagi.ledger.index.memory import release_free_memory

__all__ = ["FOLDER", "MANIFEST", "BlockEntries", "Index", "TxLocation", "release_free_memory"]
