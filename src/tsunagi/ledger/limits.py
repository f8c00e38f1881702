"""Limits of the ledger layer (block log, index, snapshots, state, the ledger's own queues),
with why each is what it is and what it costs.

Named as in :mod:`tsunagi.limits`: what it bounds, its unit, then ``_max`` or ``_min``. Code
reads them as ``limits.name`` when it runs, so a test may set one for a while (monkeypatch).
"""

from __future__ import annotations

from tsunagi.limits import u32_max

# --- the ledger -----------------------------------------------------------------------------------

# A snapshot after this many committed records bounds replay on open to about a second or two
# of work, at the cost of writing the state arrays (about 60 bytes an account) that often.
snapshot_interval_records = 2_000_000

# Blocks and records waiting for the indexer; a full queue makes the writer wait instead of using
# memory. A queued block holds its bytes and txids, ~160 bytes a record: 2**19 records ~ 85 MB.
# In a full-load node run 2**21 made resident memory swing by up to 340 MB; the indexer sets the
# pace of a long run either way, so a deeper queue only absorbs bursts.
index_queue_blocks_max = 256
index_queue_records_max = 1 << 19

# Seconds the indexer waits with nothing to do before it hands the heap's free pages back to
# the OS (index.release_free_memory): never under steady load, soon after it.
index_idle_release_s = 1.0

# --- account state (State's defaults) -------------------------------------------------------------

# The kernel refuses to open accounts past this (accounts_full); 2**32 accounts cost 196 GiB,
# so in practice memory is the limit, and the cap keeps account numbers inside a u32 if a
# later format packs them.
accounts_max = u32_max

# Holds past this get holds_full. The maps store entry index + 1 in a u32.
holds_max = u32_max - 1

# --- the block log --------------------------------------------------------------------------------

# A frame payload longer than this is damage, not a block: far above the largest block the core
# builds (8,000 records of ~200 bytes is ~1.6 MB), small enough that a damaged length never makes
# recovery allocate gigabytes.
log_block_bytes_max = 1 << 28

# Appended frames are handed to the OS in one write once this many bytes wait in memory, so a
# caller that appends without syncing holds a bounded buffer. One write of 16 MiB costs ~5 ms.
log_write_buffer_bytes = 16 << 20

# Disk blocks are reserved (fallocate, keeping the file size) this far ahead of the log's end, so
# that appends write into allocated blocks instead of allocating inside each write: 8.5 MB appends
# reached the page cache in 2.8-3.4 ms instead of 7.3-20.4 ms (two runs of 60). The cost is up to
# this many bytes of disk held past the end (given back when the log is truncated or closed).
# 0 turns it off.
log_preallocate_bytes = 64 << 20

# Flushes of at least twice this many bytes are written in chunks of it, each handed to the
# disk at once (sync_file_range): a single 34 MB write stalled in the kernel's dirty-page
# throttling. Smaller chunks cost more system calls; 0 writes in one go.
log_writeback_chunk_bytes = 4 << 20

# Flushes of at least this many bytes go to the disk by O_DIRECT (see log._DirectAppender), in
# pieces of at most log_direct_chunk_bytes through one page-aligned buffer of that size. Below
# it the page cache is cheaper: a direct write waits for the disk where a cached one does not,
# and a one-transfer block of ~300 bytes would rewrite its 4 KiB block each time.
log_direct_bytes_min = 256 << 10
log_direct_chunk_bytes = 16 << 20

# The log keeps block buffers of up to this many bytes in all for the next blocks to be built
# in (BlockLog.payload_buffer): eleven of 65,536 records, two of 262,144 (both of a pipelined
# commit, begin_batch), and none of a million, which are rare enough to pay their page faults.
log_payload_pool_bytes = 96 << 20

# The log writes a checkpoint (height, end offset, checksum of the offsets file) after a sync once
# this many bytes were synced since the last one. Frames before the checkpoint get a structure
# check on open (headers only); frames after it get their payload checksums checked too. So after
# a crash, open reads at most ~256 MiB of payload (~0.1 s at 5 GB/s of crc32) whatever the log
# size; the cost is one small extra fsync per 256 MiB written.
log_checkpoint_interval_bytes = 256 << 20

# Bytes read at once when iterating or verifying frames: large enough that small frames cost one
# read per thousands of blocks, small enough to stay in the CPU's last-level cache tiers.
log_read_chunk_bytes = 8 << 20

# --- the index (derived data) ---------------------------------------------------------------------

# The index's sorted runs (in memory, then in files) merge this many at a time once that many
# of one size tier have piled up. Each record is then rewritten about log_8(index bytes /
# index_memory_bytes_max) times in files (2 at 20 million records, ~1.5 GB), and a lookup
# searches up to fanout - 1 runs a tier (9 runs at 20 million records). With the linear native
# merge a merge of 8 costs about what one of 4 does a row, so the rewrites saved are what
# counts: 0.60-0.69 CPU-s per million records indexed (3 rounds) against 0.87 with 4 (one
# round; 20 million records, bench/index_sustained.py --cpu). The cost: more runs to search (10
# against 6 at 20 million records), each one more Bloom word read by a lookup of an absent
# txid: 50k against 80k/s, noisy (bench/bench_store.py --only lookups --old-fanout 4).
index_merge_fanout = 8

# A merge of files whose inputs add up to at least this many bytes runs on a merger thread of
# its own, so the indexer goes on adding (and merging smaller runs) meanwhile. Inline, a merge
# of ~1 GB (eight 128 MB runs, due every ~14 million records) held the indexer for 4-6 s; its
# queue filled and the node answered nothing for those seconds (60 s at 0.78 M transfers/s).
# Smaller merges stay inline: they take well under a second, and their order stays simple.
index_background_merge_bytes = 96 << 20

# Runs smaller than fan-out times this share the lowest size tier; each tier above holds runs
# fan-out times larger. Small, so that runs of one-record blocks merge every few adds rather
# than pile up, and a merge of the smallest runs rewrites a few hundred KB at most.
index_run_bytes_min = 16 << 10

# The newest blocks' index rows stay in memory (sorted runs, searched as files are) until this
# many bytes have gathered, then become one run file: an add costs no file I/O (54-71 ns a
# record for 8,000- and 65,536-record blocks at 10 million records, against 216-349 ns when
# every add wrote a file and fsynced the manifest), and files start ~16 MiB large, which spares
# the merge levels below that size. The cost: up to this much memory (twice while it is
# written), and after a crash the ledger indexes up to this much again from the block log
# (~200,000 records).
index_memory_bytes_max = 16 << 20

# Rows a merge or a rewrite of run files reads from its inputs at once: a merge holds about
# three times this many rows of its widest table (41 bytes a tx row: ~32 MB at 2**18) whatever
# the size of the runs. Fewer rows a chunk cost more Python calls a merge.
index_merge_chunk_rows = 1 << 18

# Run files are written through an aligned buffer of this many bytes (O_DIRECT needs aligned
# memory): a write of up to this much at once, and this much memory while a run is written.
# 4 MiB writes reached the disk at 1.6-1.7 GB/s here, on a thread of their own.
index_write_buffer_bytes = 4 << 20

# Bytes read at once when open checks a run's checksum (crc32 runs at ~4-5 GB/s here).
index_read_chunk_bytes = 8 << 20

# Largest page of account history returned at once: a client pages with `before`.
index_history_limit_max = 10_000

# --- snapshots ------------------------------------------------------------------------------------

# Snapshots kept on disk: the newest, and one older to fall back to when the newest is damaged.
snapshots_kept = 2

# Array data in a snapshot starts at multiples of this, so each array can be read straight into
# page-aligned memory (and mapped, should a reader want to).
snapshot_alignment_bytes = 4096

# A snapshot header (array names, dtypes, shapes, meta as JSON) larger than this is damage.
snapshot_header_bytes_max = 16 << 20

# --- the readers' durable view -------------------------------------------------------------------

# The engine keeps this much room (address space; only what the kernel writes is ever faulted
# in: ~48 bytes a transfer) for the kernel's journals (ledger/view.py) and uses it again once a
# batch's changes reached the durable view: two batches of 262,144 records in flight fit, a
# batch of a million records takes room of its own. Fresh room for every batch of 65,536
# records cost ~1 ms of page faults.
journal_pool_bytes_max = 128 << 20

# --- damage ---------------------------------------------------------------------------------------

# Blocks Ledger.open checks fully (frame checksum, check_block, links) before it opens, as
# Bitcoin Core's -checkblocks does (its default is 6 too): damage there stops the open. The
# frames after the last checkpoint get their checksums checked anyway; this reaches past a
# recent checkpoint, and the scrub covers the rest. A block of 65,536 records costs ~10 ms of
# hashing here.
open_check_blocks = 6

# The background scrub (Ledger.start_scrub; every node runs one) re-reads committed blocks at
# most this fast (about 2% of the disk's streaming rate here), spends at most this share of
# one core (unpaced, it took 20-75% of a core on a 2.9 GB chain of small and large blocks, and
# cost a node 9-17% of its rate under load: a small block costs more checking per byte than a
# large one), and starts a new pass this long after the last began. Damage is reported within
# about one pass plus this interval; a pass over 10 GB of large blocks takes ~3 minutes.
scrub_rate_bytes_s = 64 << 20
scrub_cpu_share = 0.02
scrub_interval_s = 3600.0

# --- consortium validators ----------------------------------------------------------------------

# Signatures a validator remembers as checked when they entered its mempool (ledger/sigcache.py):
# ~300 bytes each, so at most ~300 MB; a few seconds of the heaviest signed load.
signature_cache_entries_max = 1 << 20
