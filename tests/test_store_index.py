"""The sorted-runs index answers every lookup as a plain-Python model of the same blocks does:
before and after reopening, truncating (inside a run, at run boundaries, inside merged runs),
with txids, block hashes and owner keys that share their first 8 bytes, with many small blocks
that force merges, and while reader threads query during adds and merges.

Method: random blocks (numpy) go both into the index and into dictionaries and lists built here;
every query is compared with the model. Small merge settings (tiny size tiers and merge chunks,
fences of every 4th key and top fences of every 3rd fence entry, through monkeypatch) make a few
hundred records go through many merges, chunk boundaries and stretches of a file's fence. What a
run file keeps in memory is measured with tracemalloc around opening it, at 10,000 and 1,000,000
records. Run files are written in whole aligned blocks (O_DIRECT, through a buffer made 8 KiB
here so a run of a few kilobytes takes several pieces); reopening checks every file's checksum
against the bytes on disk. The native merge, gather and Bloom filter (tsunagi._native.indexing)
are compared with numpy references on random inputs (hypothesis): duplicate keys, empty runs,
keys of 2**64-1, two to twenty inputs. An index whose manifest is of another format is dropped
on open and indexed again.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagi._native import indexing
from tsunagi.errors import EncodingError
from tsunagi.ledger import limits as ledger_limits
from tsunagi.ledger.index import (
    FOLDER,
    MANIFEST,
    BlockEntries,
    Index,
    TxLocation,
    lookup,
    merge,
    runfile,
)
from tsunagi.ledger.index import run as run_module
from tsunagi.ledger.index.manifest import read_manifest
from tsunagi.ledger.index.merge import tier
from tsunagi.ledger.index.run import Run
from tsunagi.ledger.index.runfile import bloom_bits

ACCOUNTS = 12


def random_blocks(count: int, records: int, seed: int, first: int = 0) -> list[BlockEntries]:
    rng = np.random.default_rng(seed)
    blocks = []
    for height in range(first, first + count):
        size = int(rng.integers(0 if height % 7 == 3 else 1, records + 1))  # some are empty
        blocks.append(BlockEntries(
            height, rng.bytes(32), rng.integers(0, 256, (size, 32), dtype=np.uint8),
            rng.integers(0, 40, size, dtype=np.uint8),
            rng.integers(0, ACCOUNTS, size).astype(np.uint64),  # 0 is "no account"
            rng.integers(0, ACCOUNTS, size).astype(np.uint64)))
    return blocks


class Model:
    """What the index should answer, computed the obvious way."""

    def __init__(self, blocks: list[BlockEntries]):
        self.tx: dict[bytes, TxLocation] = {}
        self.history: dict[int, set[tuple[int, int]]] = {}
        self.hashes = {block.height: block.block_hash for block in blocks}
        for block in blocks:
            for position in range(len(block.codes)):
                txid = block.txids[position].tobytes()
                self.tx.setdefault(txid, TxLocation(block.height, position,
                                                    int(block.codes[position])))
                for account in {int(block.debit_accounts[position]),
                                int(block.credit_accounts[position])} - {0}:
                    self.history.setdefault(account, set()).add((block.height, position))

    def newest_first(self, account: int) -> list[tuple[int, int]]:
        return sorted(self.history.get(account, ()), reverse=True)


def assert_matches(index: Index, model: Model, probes: list[BlockEntries]) -> None:
    assert index.indexed_height == len(model.hashes)
    for height, block_hash in model.hashes.items():
        assert index.block_hash(height) == block_hash
        assert index.block_height(block_hash) == height
    txids = np.concatenate([block.txids for block in probes] + [np.zeros((1, 32), np.uint8)])
    expected = [model.tx.get(row.tobytes()) for row in txids]
    assert index.txs(txids) == expected
    assert index.txs([row.tobytes() for row in txids]) == expected
    assert [index.tx(row.tobytes()) for row in txids[::5]] == expected[::5]
    for account in range(ACCOUNTS):
        assert index.account_history(account, limit=10_000) == model.newest_first(account)
    assert index.block_hash(len(model.hashes)) is None and index.block_hash(-1) is None


def fill(index: Index, blocks: list[BlockEntries]) -> None:
    for block in blocks:
        index.add_block(*block)


def run_files(directory) -> set[str]:
    return {path.name for path in (directory / FOLDER).iterdir()} - {MANIFEST}


def files_named(index: Index) -> set[str]:
    """The files of the runs the index searches (those in memory have none)."""
    snapshot = index._current()
    return {run.path.name for run in snapshot.blocks + snapshot.owners if run.on_disk}


def small_settings(monkeypatch) -> None:
    """Tiers of a few hundred bytes, 3 KB in memory at most, merge chunks of 5 rows, a fence
    entry every 4 keys and a top fence entry every 3 fence entries: a few hundred records go
    through many flushes, merges, chunks and stretches of the fence read from files. Files of 8
    KiB and more are written by O_DIRECT through an 8 KiB buffer (several pieces a column)."""
    monkeypatch.setattr(ledger_limits, "index_run_bytes_min", 256)
    monkeypatch.setattr(ledger_limits, "index_memory_bytes_max", 3_000)
    monkeypatch.setattr(ledger_limits, "index_merge_chunk_rows", 5)
    monkeypatch.setattr(runfile, "FENCE_ROWS", 4)
    monkeypatch.setattr(run_module, "TOP_FENCE_STEP", 3)
    monkeypatch.setattr(ledger_limits, "index_write_buffer_bytes", 8192)
    monkeypatch.setattr(ledger_limits, "index_merge_fanout", 4)  # the run counts tests expect


@pytest.fixture
def small_runs(monkeypatch):
    small_settings(monkeypatch)


def test_lookups_match_the_model_and_survive_reopening(tmp_path):
    blocks = random_blocks(25, 60, seed=1)
    with Index.open(tmp_path) as index:
        fill(index, blocks[:10])
        index.add_blocks(blocks[10:])  # the catching-up path: many blocks, one run
        assert_matches(index, Model(blocks), blocks)
        assert index.tx(bytes(32)) is None and index.block_height(bytes(32)) is None
        assert index.tx(b"short") is None and index.txs([b"short"]) == [None]
    with Index.open(tmp_path) as index:
        assert_matches(index, Model(blocks), blocks)


@pytest.fixture(scope="module")
def paged(tmp_path_factory):
    """Two indexes of random blocks in several runs, built once for every example below."""
    built = {}
    for seed in (0, 1):
        blocks = random_blocks(12, 40, seed=seed)
        index = Index.open(tmp_path_factory.mktemp(f"pages{seed}"))
        for start in range(0, 12, 3):
            index.add_blocks(blocks[start:start + 3])
        built[seed] = (index, Model(blocks))
    yield built
    for index, _ in built.values():
        index.close()


@settings(max_examples=60, deadline=None)
@given(account=st.integers(1, ACCOUNTS - 1), limit=st.integers(1, 30), seed=st.integers(0, 1))
def test_history_pages_walk_back_through_everything_once(paged, account, limit, seed):
    index, model = paged[seed]
    pages, before = [], None
    while page := index.account_history(account, limit=limit, before=before):
        assert len(page) <= limit
        pages += page
        before = page[-1]
    assert pages == model.newest_first(account)
    assert index.account_history(account, limit=limit, before=(0, 0)) == []
    newest = model.newest_first(account)
    if newest:  # a position past any block's end means "everything up to that height"
        height = newest[0][0]
        assert index.account_history(account, limit=limit, before=(height, 2**40)) == \
            newest[:limit]


def test_many_small_blocks_merge_into_few_runs_and_still_match(tmp_path, small_runs):
    blocks = random_blocks(400, 6, seed=7)
    counts = []
    with Index.open(tmp_path) as index:
        for block in blocks[:300]:
            index.add_block(*block)
            counts.append(index.run_count)
        index.add_blocks(blocks[300:])  # a run larger than the newest ones takes them in
        tiers = [tier(run.entry.size) for run in index._current().blocks if run.on_disk]
        assert tiers == sorted(tiers, reverse=True) and len(tiers) <= 6
        assert_matches(index, Model(blocks), blocks)
        # Merged inputs are deleted: the folder holds the runs the manifest names, no more.
        assert run_files(tmp_path) == files_named(index)
    # 300 runs would be one a block; size tiers keep ~3 per tier of 4x.
    assert max(counts) <= 15 and counts[-1] <= 12
    with Index.open(tmp_path) as index:
        assert_matches(index, Model(blocks), blocks)


@pytest.mark.parametrize("cut", ["inside a run in memory", "inside a run file",
                                 "at a run boundary", "inside a merged run file"])
def test_truncate_above_equals_never_having_indexed_the_dropped_blocks(tmp_path, monkeypatch,
                                                                       cut):
    if cut == "inside a merged run file":
        small_settings(monkeypatch)
    elif cut != "inside a run in memory":
        monkeypatch.setattr(ledger_limits, "index_memory_bytes_max", 0)  # a file every add
        monkeypatch.setattr(ledger_limits, "index_merge_fanout", 64)  # and no merge
    blocks = random_blocks(20, 50, seed=2)
    # Block 15 repeats a txid of block 4: the index keeps the first place, and dropping block 15
    # must not forget it.
    blocks[15].txids[0] = blocks[4].txids[7]
    height = {"inside a run in memory": 7, "inside a run file": 7, "at a run boundary": 10,
              "inside a merged run file": 13}[cut]
    with Index.open(tmp_path) as index:
        index.add_blocks(blocks[:5])
        index.add_blocks(blocks[5:10])
        fill(index, blocks[10:])
        holder = next(run for run in index._current().blocks if run.end > height)
        assert holder.on_disk == (cut != "inside a run in memory")
        assert (holder.first < height) == (cut != "at a run boundary")
        if cut == "inside a merged run file":
            assert holder.end - holder.first > 3
        index.truncate_above(height)
        assert_matches(index, Model(blocks[:height]), blocks)
        fill(index, blocks[height:16])
        assert_matches(index, Model(blocks[:16]), blocks)
        index.truncate_above(16)  # nothing above: no change
        assert index.indexed_height == 16
        assert run_files(tmp_path) == files_named(index)
    with Index.open(tmp_path) as index:
        assert_matches(index, Model(blocks[:16]), blocks)
        index.truncate_above(0)
        assert_matches(index, Model([]), blocks)
        assert run_files(tmp_path) == set()


def test_runs_in_memory_are_lost_in_a_crash_and_the_files_still_match(tmp_path, monkeypatch):
    """What a crash loses is the newest blocks only: reopening shows the blocks the files
    hold, exactly, and indexing the rest again gives everything."""
    monkeypatch.setattr(ledger_limits, "index_memory_bytes_max", 20_000)
    blocks = random_blocks(30, 40, seed=9)
    index = Index.open(tmp_path)
    fill(index, blocks)
    durable = index.durable_height
    assert 0 < durable < 30 and index.indexed_height == 30
    # No close: as after a crash. (A second index on the folder reads what the files say.)
    with Index.open(tmp_path) as reopened:
        assert_matches(reopened, Model(blocks[:durable]), blocks)
        fill(reopened, blocks[durable:])
        assert_matches(reopened, Model(blocks), blocks)
    with Index.open(tmp_path) as reopened:
        assert_matches(reopened, Model(blocks), blocks)
    del index


def test_a_txid_prefix_shared_with_another_txid_never_answers_for_it(tmp_path, small_runs):
    """An attacker can grind txids that share their first 8 bytes: only the full txid counts."""
    blocks = random_blocks(40, 8, seed=3)
    rng = np.random.default_rng(3)
    prefix = rng.integers(0, 256, 8, dtype=np.uint8)
    crafted = []
    for block in blocks[::3]:  # in many blocks (and so in many runs, merged or not)
        for row in range(min(2, len(block.codes))):
            block.txids[row, :8] = prefix
            crafted.append(block.txids[row].copy())
    strangers = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    strangers[:, :8] = prefix  # never indexed: same prefix, other bytes
    blocks[6].txids[1, :31] = blocks[3].txids[0, :31]  # differs from a crafted one in 1 byte
    blocks[9] = blocks[9]._replace(block_hash=blocks[2].block_hash[:8] + bytes(24))  # hashes too
    model = Model(blocks)
    with Index.open(tmp_path) as index:
        fill(index, blocks)
        assert_matches(index, model, blocks)
        assert index.txs(strangers) == [None] * len(strangers)
        assert [index.tx(row.tobytes()) for row in strangers] == [None] * len(strangers)
        mixed = np.concatenate([strangers, np.array(crafted), strangers[::-1]])
        assert index.txs(mixed) == [model.tx.get(row.tobytes()) for row in mixed]
        assert index.block_height(blocks[2].block_hash[:8] + bytes(23) + b"\1") is None


def test_readers_see_the_model_below_the_height_they_saw_during_adds_and_merges(tmp_path,
                                                                               small_runs):
    blocks = random_blocks(160, 12, seed=5)
    models = [Model(blocks[:height]) for height in range(len(blocks) + 1)]
    failures: list[str] = []
    reads = [0]
    done = threading.Event()

    def read_until_done(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not done.is_set():
            height = index.indexed_height
            if not height:
                continue
            model, probe = models[height], blocks[int(rng.integers(0, height))]
            if index.txs(probe.txids) != [model.tx[row.tobytes()] for row in probe.txids]:
                failures.append(f"txs of block {probe.height} at height {height}")
            account = int(rng.integers(1, ACCOUNTS))
            history = [pair for pair in index.account_history(account, 10_000)
                       if pair[0] < height]
            if history != model.newest_first(account):
                failures.append(f"history of {account} at height {height}")
            if index.block_hash(probe.height) != probe.block_hash:
                failures.append(f"hash of block {probe.height} at height {height}")
            reads[0] += 1
            # Let the writer have the GIL: its thousands of short file calls (5-row merge chunks)
            # would each wait out a 5 ms switch interval behind two busy readers.
            time.sleep(0.001)

    with Index.open(tmp_path) as index:
        readers = [threading.Thread(target=read_until_done, args=(seed,)) for seed in (1, 2)]
        for reader in readers:
            reader.start()
        try:
            for start in range(0, len(blocks), 2):
                index.add_blocks(blocks[start:start + 2])
        finally:
            done.set()
            for reader in readers:
                reader.join()
        assert failures == [] and reads[0] > 20
        assert_matches(index, models[-1], blocks[::9])


def resident_kib_of(folder) -> int:
    """Resident KiB of this process's mappings of files in ``folder`` (/proc/self/smaps)."""
    total, ours = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                ours = str(folder) in line
            elif ours and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def test_lookups_leave_no_page_of_the_index_resident(tmp_path, small_runs):
    """Point lookups read with pread and txs unmaps what it touched: the pages of run files
    never stay in the process's resident memory (what LMDB's map did to the ledger's RSS),
    and merges leave no map of a deleted run behind."""
    blocks = random_blocks(80, 40, seed=8)
    with Index.open(tmp_path) as index:
        fill(index, blocks)
        assert len(files_named(index)) >= 3
        model = Model(blocks)
        for block in blocks[::3]:
            assert index.txs(block.txids) == [model.tx[row.tobytes()] for row in block.txids]
            assert index.tx(block.txids[-1].tobytes()) == model.tx[block.txids[-1].tobytes()]
            assert index.block_height(block.block_hash) == block.height
        assert index.account_history(3, limit=10_000) == model.newest_first(3)
        assert resident_kib_of(tmp_path / FOLDER) == 0
        with open("/proc/self/maps") as maps:
            mapped = [line for line in maps if str(tmp_path / FOLDER) in line]
        assert not [line for line in mapped if "(deleted)" in line]
        assert {line.split("/")[-1].strip() for line in mapped} == files_named(index)
    with open("/proc/self/maps") as maps:  # closed: nothing of the index stays mapped
        assert not [line for line in maps if str(tmp_path / FOLDER) in line]


def test_blocks_out_of_order_or_misshapen_are_refused(tmp_path):
    block = random_blocks(1, 5, seed=3)[0]
    with Index.open(tmp_path) as index:
        with pytest.raises(ValueError, match="out of order"):
            index.add_block(1, *block[1:])
        with pytest.raises(EncodingError):
            index.add_block(0, block.block_hash, block.txids[:, :31], *block[3:])
        with pytest.raises(EncodingError):
            index.add_block(0, block.block_hash, block.txids, block.codes,
                            block.debit_accounts[:-1], block.credit_accounts)
        with pytest.raises(ValueError, match="limit"):
            index.account_history(1, limit=0)
        assert index.indexed_height == 0 and index.txs(block.txids) == [None] * len(block.codes)
        assert run_files(tmp_path) == set()


def test_owner_keys_map_to_their_accounts_and_a_reorg_drops_new_ones(tmp_path, small_runs):
    alice, bob = os.urandom(32), os.urandom(32)
    twin = alice[:8] + os.urandom(24)  # shares alice's first 8 bytes
    with Index.open(tmp_path) as index:
        index.add_accounts([(alice, 1), (bob, 2), (alice, 7), (alice, 3)])
        index.add_accounts([(bob, 9), (twin, 4)])
        index.add_accounts([(alice, 3)])  # added again when catching up after a crash
        for number in range(10, 40):  # enough owner runs to merge
            index.add_accounts([(bob if number % 2 else alice, number)])
        odd, even = list(range(11, 40, 2)), list(range(10, 40, 2))
        assert index.accounts_of(alice) == [1, 3, 7] + even
        assert index.accounts_of(bob) == [2, 9] + odd and index.accounts_of(twin) == [4]
        index.drop_accounts(5)
        assert index.accounts_of(alice) == [1, 3] and index.accounts_of(bob) == [2]
        assert index.accounts_of(twin) == [4] and index.accounts_of(os.urandom(32)) == []
        with pytest.raises(EncodingError):
            index.add_accounts([(alice[:31], 4)])
        index.add_accounts([(bob, 5)])
        carol = os.urandom(32)  # owns more accounts than a fence stretch holds
        index.add_accounts([(carol, number) for number in range(100, 400)])
        assert index.accounts_of(carol) == list(range(100, 400))
    with Index.open(tmp_path) as index:
        assert index.accounts_of(alice) == [1, 3] and index.accounts_of(bob) == [2, 5]
        assert index.accounts_of(carol) == list(range(100, 400))
        index.drop_accounts(1)
        assert index.accounts_of(alice) == [] and index.run_count == 0


def test_a_files_fences_find_the_rank_of_every_key_as_searchsorted_does(tmp_path, small_runs):
    """The two-step search of a file (top fence in memory, a stretch of the fence, a stretch of
    keys) against numpy's searchsorted over the whole column, on both sides of every key
    present and of the keys between them (history: accounts repeat for many stretches)."""
    blocks = random_blocks(30, 40, seed=12)
    with Index.open(tmp_path) as index:
        index.add_blocks(blocks)
        index.close()
    with Index.open(tmp_path) as index:
        (run,) = index._current().blocks
        assert run.on_disk and run.fence_step == 3 and run.bloom is None
        for section in ("tx", "history", "hash"):
            keys = run.read(section, runfile.KEYS[section], 0, run.rows(section))
            fence = keys[::4]
            assert len(run.fences[section]) == len(fence[::3]) > 2
            ends = np.array([0, 2**64 - 1], np.uint64)
            probes = np.unique(np.concatenate([keys, keys + np.uint64(1), ends]))
            for probe in probes.tolist():
                for side in ("left", "right"):
                    assert run.fence_rank(section, probe, side) == \
                        fence.searchsorted(np.uint64(probe), side)
                    assert lookup.find(run, section, probe, side) == \
                        keys.searchsorted(np.uint64(probe), side)


def held_bytes_of_a_run(directory, records: int) -> tuple[int, Run, BlockEntries]:
    """Bytes that opening a file of one ``records``-record block keeps allocated (tracemalloc
    sees numpy's buffers and Python's objects; a map's pages are not allocations), and the run."""
    rng = np.random.default_rng(records)
    block = BlockEntries(0, rng.bytes(32), rng.integers(0, 256, (records, 32), dtype=np.uint8),
                         np.zeros(records, np.uint8),
                         rng.integers(1, 2**40, records).astype(np.uint64),
                         rng.integers(1, 2**40, records).astype(np.uint64))
    with Index.open(directory) as index:
        index.add_block(*block)  # one run in memory (below index_memory_bytes_max), then a file
    with Index.open(directory) as index:
        (entry,) = [run.entry for run in index._current().blocks]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run = Run.on_file(directory / FOLDER, entry)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert run.rows("tx") == records and run.rows("history") == 2 * records
    return held, run, block


def test_a_run_file_keeps_the_same_few_kilobytes_in_memory_at_10k_and_1m_records(tmp_path,
                                                                                 monkeypatch):
    """Memory must not grow with the records indexed: a run file's fence and Bloom filter stay
    on disk (read by pread), and only its top fence (8 bytes per 4,096 rows of a sorted section)
    is held. Before, a run kept its whole fence and filter: ~1.4 MB at a million records."""
    monkeypatch.setattr(ledger_limits, "index_memory_bytes_max", 1 << 30)
    small, _, _ = held_bytes_of_a_run(tmp_path / "small", 10_000)
    big, run, block = held_bytes_of_a_run(tmp_path / "big", 1_000_000)
    # 3 million sorted rows make 733 top fence entries (5.9 KB) more: well under 0.01 bytes a
    # record, against ~1.4 with the whole fence and Bloom filter.
    assert big - small < 8 * 3_000_000 // 4096 + 2048, (small, big)
    assert run.bloom is None and sum(fence.nbytes for fence in run.fences.values()) == \
        8 * sum(-(-run.rows(section) // 4096) for section in ("tx", "history", "hash"))
    with Index.open(tmp_path / "big") as index:
        rows = np.concatenate([block.txids[::50_000], np.zeros((3, 32), np.uint8)])
        expected = [TxLocation(0, position, 0) for position in range(0, 1_000_000, 50_000)]
        assert [index.tx(row.tobytes()) for row in rows] == expected + [None] * 3
        assert index.txs(rows) == expected + [None] * 3
        assert resident_kib_of(tmp_path / "big" / FOLDER) == 0


# -- native kernels against numpy references -----------------------------------------------------

def sorted_inputs(data, runs: int, key_top: int, second_top: int) -> list[tuple]:
    """``runs`` inputs of (key, second) rows sorted by (key, second), some empty; small
    ranges make equal keys and equal rows common, and keys of 2**64-1 turn up."""
    inputs = []
    for _ in range(runs):
        size = data.draw(st.integers(0, 40))
        keys = data.draw(st.lists(st.integers(0, key_top), min_size=size, max_size=size))
        keys = [2**64 - 1 if key == key_top else key for key in keys]
        seconds = data.draw(st.lists(st.integers(0, second_top), min_size=size, max_size=size))
        rows = sorted(zip(keys, seconds))
        inputs.append((np.array([key for key, _ in rows], np.uint64),
                       np.array([second for _, second in rows], np.uint64)))
    return inputs


def reference_sources(inputs: list[tuple], by_key: bool) -> np.ndarray:
    """Input of each merged row: a stable sort of the concatenation, as the index did before."""
    keys = np.concatenate([keys for keys, _ in inputs])
    seconds = np.concatenate([seconds for _, seconds in inputs])
    runs = np.repeat(np.arange(len(inputs)), [len(keys) for keys, _ in inputs])
    order = np.argsort(keys, kind="stable") if by_key else np.lexsort((seconds, keys))
    return runs[order].astype(np.uint16)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), runs=st.integers(1, 20), key_top=st.sampled_from([3, 50, 2**40]))
def test_native_merge_orders_rows_as_a_stable_sort_of_the_concatenation(data, runs, key_top):
    inputs = sorted_inputs(data, runs, key_top, 5)
    keys = [keys for keys, _ in inputs]
    got = indexing.merge_sources(keys, [seconds for _, seconds in inputs])
    assert got.tolist() == reference_sources(inputs, by_key=False).tolist()
    assert indexing.merge_sources(keys).tolist() == \
        reference_sources(inputs, by_key=True).tolist()  # by key alone: equal keys input order
    rng = np.random.default_rng(runs)
    for dtype in map(np.dtype, ("u1", "<u8", "V24", "V32")):
        columns = [np.frombuffer(rng.bytes(len(k) * dtype.itemsize), dtype) for k in keys]
        taken, walked = [0] * len(columns), []  # row i: the next unread row of input got[i]
        for run in got.tolist():
            walked.append(columns[run][taken[run]].tobytes())
            taken[run] += 1
        assert [row.tobytes() for row in indexing.gather_rows(columns, got)] == walked


def test_native_gather_refuses_sources_that_do_not_fit_the_inputs():
    columns = [np.arange(3, dtype=np.uint64), np.arange(2, dtype=np.uint64)]
    with pytest.raises(ValueError, match="input 1"):
        indexing.gather_rows(columns, np.array([0, 0, 0, 1], np.uint16))  # input 1 short
    with pytest.raises(ValueError, match="past the 2"):
        indexing.gather_rows(columns, np.array([0, 0, 0, 1, 2], np.uint16))
    with pytest.raises(ValueError, match="1-D array of uint64"):
        indexing.gather_rows([columns[0], columns[1].astype(np.uint32)],
                             np.array([0, 0, 0, 1, 1], np.uint16))
    assert indexing.gather_rows(columns, np.array([1, 0, 1, 0, 0], np.uint16)).tolist() == \
        [0, 0, 1, 1, 2]


@settings(max_examples=50, deadline=None)
@given(keys=st.lists(st.integers(0, 2**64 - 1), max_size=200), words_log2=st.integers(1, 9))
def test_native_bloom_filter_sets_the_bits_numpy_computes(keys, words_log2):
    keys = np.array(keys, dtype=np.uint64)
    words = np.zeros(1 << words_log2, np.uint64)
    indexing.bloom_add(words, keys)
    expected = np.zeros_like(words)
    np.bitwise_or.at(expected, (keys >> np.uint64(64 - words_log2)).astype(np.intp),
                     bloom_bits(keys))
    assert words.tolist() == expected.tolist()


def test_a_manifest_of_another_format_is_dropped_and_the_blocks_indexed_again(tmp_path,
                                                                              small_runs):
    blocks = random_blocks(12, 30, seed=21)
    with Index.open(tmp_path) as index:
        fill(index, blocks)
    folder = tmp_path / FOLDER
    manifest = folder / MANIFEST
    _, _, body = manifest.read_bytes().partition(b"\n")
    body = body.replace(b'"format":%d' % runfile.FORMAT_VERSION, b'"format":0')
    assert b'"format":0' in body
    manifest.write_bytes(b"%08x\n" % zlib.crc32(body) + body)  # a valid manifest, old format
    with Index.open(tmp_path) as index:
        assert index.indexed_height == 0  # the ledger indexes its log again from here
        assert run_files(tmp_path) == set()  # the old format's files are gone
        fill(index, blocks)
        assert_matches(index, Model(blocks), blocks)


@pytest.mark.parametrize("merges_above", [0, 2_000])
def test_merges_on_the_merger_thread_match_the_model_and_keep_tiers(tmp_path, small_runs,
                                                                    monkeypatch, merges_above):
    """Merges of files at least index_background_merge_bytes large run on a thread of their own
    while adds go on (0: every merge of files; 2,000: the larger ones only). Lookups during and
    after match the model; once the merger is idle the tiers are in order, merged inputs are
    deleted, and a reopen finds the same."""
    monkeypatch.setattr(ledger_limits, "index_background_merge_bytes", merges_above)
    blocks = random_blocks(300, 6, seed=17)
    with Index.open(tmp_path) as index:
        for start in range(0, 300, 3):
            index.add_blocks(blocks[start:start + 3])
            if start % 60 == 0:
                assert_matches(index, Model(blocks[:start + 3]), blocks[:start + 3])
        index.wait_merged()
        tiers = [tier(run.entry.size) for run in index._current().blocks if run.on_disk]
        assert tiers == sorted(tiers, reverse=True) and len(tiers) <= 9
        assert_matches(index, Model(blocks), blocks)
        assert run_files(tmp_path) == files_named(index)
    with Index.open(tmp_path) as index:
        assert_matches(index, Model(blocks), blocks)


def test_truncating_or_closing_during_a_background_merge_loses_nothing_kept(tmp_path,
                                                                            small_runs,
                                                                            monkeypatch):
    """A truncate that rewrites a merge's inputs makes the merger drop its result unnamed; a
    close abandons a merge under way. Either way the folder holds only what the manifest
    names and the index answers as if the merge had never started."""
    monkeypatch.setattr(ledger_limits, "index_background_merge_bytes", 0)
    slow, opened = threading.Event(), []
    merge_sorted = merge._merge_sorted

    def held_merge(*args, **kwargs):
        # keeps the merge under way while the test truncates, or until the index closes
        deadline = time.monotonic() + 5
        while not slow.is_set() and not opened[0]._merger.closing and time.monotonic() < deadline:
            time.sleep(0.005)
        return merge_sorted(*args, **kwargs)

    monkeypatch.setattr(merge, "_merge_sorted", held_merge)
    blocks = random_blocks(120, 6, seed=23)
    with Index.open(tmp_path) as index:
        opened.append(index)
        fill(index, blocks[:100])
        assert index._merger.inputs, "a background merge should be under way"
        index.truncate_above(40)
        slow.set()
        index.wait_merged()
        assert_matches(index, Model(blocks[:40]), blocks)
        assert run_files(tmp_path) == files_named(index)
        slow.clear()
        fill(index, blocks[40:120])
        assert index._merger.inputs
    # The close interrupted the merge at its next chunk and deleted its file: the folder holds
    # exactly the files the manifest names.
    entries, _ = read_manifest(tmp_path / FOLDER)
    assert run_files(tmp_path) == {entry.name for entry in entries}
    with Index.open(tmp_path) as index:
        assert_matches(index, Model(blocks), blocks)
        assert run_files(tmp_path) == files_named(index)
