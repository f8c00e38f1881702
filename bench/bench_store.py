"""Benchmarks of the durable store: block log append+sync, open and recovery, the index (sorted
runs), state snapshots.

Two ways to run it:

- ``python -m pytest bench/bench_store.py --benchmark-only``: pytest-benchmark groups that put
  the batched block (8,000 records) beside the single-record block on the same log, and time
  open, indexing and snapshots. ``TSUNAGI_BENCH_SCALE`` (default 1) scales the big cases.
- ``python bench/bench_store.py``: every figure of the store's report, each the median of
  ``--repeats`` runs (the machine is shared: medians, and min-max beside them). ``--only
  lookups --old-index F`` times lookups of this index.py and of F on the same run files.

Blocks are opaque bytes to the store, so a block here is random bytes of the size the block
format gives (80-byte header, two u32 counts, per record 128 + 1 code + 64 signature bytes).
The index takes random txids, codes and accounts. Each index case runs in a forked child, so the
memory it reports is that case's alone; ``--old-index`` measures an older index.py beside (the
LMDB one: ``git show 10f93cd:src/tsunagi/ledger/index.py > old_index.py``, with ``pip install
lmdb``, which tsunagi no longer needs; or the sorted runs that held every fence and Bloom filter
of their files in memory: ``git show 32ad1b0:...``).
Data goes to a temporary directory under ``--workdir`` (default: the system's), removed after.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tsunagi.ledger import limits as ledger_limits
from tsunagi.ledger.index import BlockEntries, Index
from tsunagi.ledger.log import BlockLog
from tsunagi.ledger.snapshot import load_newest_snapshot, save_snapshot

BATCH_RECORDS = 8_000
RECORD_BYTES_IN_BLOCK = 128 + 1 + 64  # record, result code, signature
SCALE = float(os.environ.get("TSUNAGI_BENCH_SCALE", "1"))


def block_bytes(records: int) -> int:
    return 80 + 8 + records * RECORD_BYTES_IN_BLOCK


def random_block(records: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(block_bytes(records))


def evict(path: Path) -> None:
    """Drops a file's pages from the page cache (it must be synced): a cold read follows."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def summary(samples: list[float]) -> str:
    return (f"median {statistics.median(samples):.4g} (min {min(samples):.4g}, "
            f"max {max(samples):.4g}, n={len(samples)})")


# -- block log ------------------------------------------------------------------------------

def append_sync_seconds(directory: Path, block: bytes, count: int) -> list[float]:
    """Time of append + sync for each of ``count`` blocks (one fsync per block)."""
    seconds = []
    with BlockLog.open(directory, create=True) as block_log:
        for _ in range(count):
            started = time.perf_counter()
            block_log.append(block)
            block_log.sync()
            seconds.append(time.perf_counter() - started)
    return seconds


def build_crashed_log(directory: Path, records_total: int, records_per_block: int) -> int:
    """Appends and syncs blocks in a forked child that then dies without close(), as a crash
    would leave the log: a periodic checkpoint, but none at the end. Returns the block count."""
    blocks = -(-records_total // records_per_block)
    pid = os.fork()
    if pid == 0:  # the child: build, then exit without closing
        try:
            block_log = BlockLog.open(directory, create=True)
            for height in range(blocks):
                block_log.append(random_block(records_per_block, seed=height % 16))
                block_log.sync()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"building the log failed ({status})"
    return blocks


def open_seconds(directory: Path, cold: bool, prepare: Callable[[], None]) -> float:
    prepare()
    if cold:
        evict(directory / "blocks.log")
        evict(directory / "blocks.offsets")
    started = time.perf_counter()
    block_log = BlockLog.open(directory)
    elapsed = time.perf_counter() - started
    block_log.close()
    return elapsed


def open_scenarios(directory: Path) -> dict[str, Callable[[], None]]:
    """How to put the directory back into each state before an open."""
    checkpoint = directory / "blocks.checkpoint"
    crashed = checkpoint.read_bytes() if checkpoint.exists() else None

    def after_crash() -> None:  # the last periodic checkpoint: a tail of <= 256 MiB to check
        if crashed is None:
            checkpoint.unlink(missing_ok=True)
        else:
            checkpoint.write_bytes(crashed)

    def no_checkpoint() -> None:  # the worst case: every payload checksum
        checkpoint.unlink(missing_ok=True)

    return {"after a crash (last periodic checkpoint)": after_crash,
            "no checkpoint (full payload check)": no_checkpoint,
            "after a clean close": lambda: None}


def build_small_block_log(directory: Path, blocks: int) -> None:
    """Single-record blocks, synced every 10,000 (building it one fsync a block would take
    the better part of an hour), closed cleanly."""
    block = random_block(1)
    with BlockLog.open(directory, create=True) as block_log:
        for height in range(blocks):
            block_log.append(block)
            if height % 10_000 == 9_999:
                block_log.sync()


def verify_seconds(directory: Path, cold: bool) -> float:
    with BlockLog.open(directory) as block_log:
        if cold:
            evict(directory / "blocks.log")
        started = time.perf_counter()
        block_log.verify_frames()
        return time.perf_counter() - started


# -- index ----------------------------------------------------------------------------------

def index_block(height: int, records: int, accounts: int, seed: int = 1) -> BlockEntries:
    """One block's index entries: random txids, result codes and accounts 1..``accounts``;
    the same (seed, height) gives the same block, so probes can be made again later."""
    rng = np.random.default_rng((seed, height))
    return BlockEntries(height, rng.bytes(32), rng.integers(0, 256, (records, 32), dtype=np.uint8),
                        rng.integers(0, 3, records, dtype=np.uint8),
                        rng.integers(1, accounts + 1, records).astype(np.uint64),
                        rng.integers(1, accounts + 1, records).astype(np.uint64))


def index_workload(blocks: int, records: int, accounts: int, seed: int = 1) -> list[tuple]:
    """add_block arguments of ``blocks`` consecutive blocks from height 0."""
    return [tuple(index_block(height, records, accounts, seed)) for height in range(blocks)]


def load_old_index(path: Path, fanout: int | None = None):
    """The Index class of an older index.py (the LMDB one: ``git show <commit>:src/tsunagi/
    ledger/index.py``), with the store limits it read, which tsunagi.ledger.limits no longer has
    (an LMDB one needs the lmdb package, which tsunagi itself no longer depends on). It reads
    its own copy of tsunagi.ledger.limits (by the name store_limits, as it imports it), with
    index_merge_fanout set to ``fanout`` when given: the fan-out that older index ran with,
    whatever this one's is."""
    limits_spec = importlib.util.spec_from_file_location("tsunagi_old_store_limits",
                                                         ledger_limits.__file__)
    limits = importlib.util.module_from_spec(limits_spec)
    limits_spec.loader.exec_module(limits)
    for name, value in (("index_map_bytes_initial", 1 << 30), ("index_map_growth_factor", 2),
                        ("index_undo_blocks", 100)):
        if not hasattr(limits, name):
            setattr(limits, name, value)
    if fanout is not None:
        limits.index_merge_fanout = fanout
    spec = importlib.util.spec_from_file_location("tsunagi_old_index", path)
    module = importlib.util.module_from_spec(spec)
    # It imports the limits by their old module name, which no longer exists.
    sys.modules["tsunagi.ledger.store_limits"] = limits
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["tsunagi.ledger.store_limits"]
    module.store_limits = limits  # its functions look the name up when called
    return module.Index


def memory_kib() -> dict[str, int]:
    """This process's resident memory from /proc/self/status: all, anonymous, file pages."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "RssAnon", "RssFile")}


def trimmed_memory_kib() -> dict[str, int]:
    """memory_kib after glibc's malloc_trim(0): without the free heap pages glibc keeps for
    reuse (open's checksum buffers, a flush's), what is held."""
    ctypes.CDLL(None).malloc_trim(0)
    return memory_kib()


def disk_bytes(directory: Path) -> int:
    """Bytes the files under ``directory`` occupy (allocated blocks: a sparse file counts what
    it holds)."""
    return sum(path.stat().st_blocks * 512 for path in directory.rglob("*") if path.is_file())


def in_child(target: Callable[..., dict], *args) -> dict:
    """Runs ``target(*args)`` in a forked child and returns its answer: the child's memory
    figures are then the index's alone, not what earlier cases left in this process."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 1
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(json.dumps(target(*args)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"the benchmark child failed ({status})"
    return json.loads(data)


def fill_index(index, first: int, records_total: int, records: int,
               accounts: int) -> tuple[int, float, float]:
    """add_block of ``records``-record blocks from height ``first`` until ``records_total``
    records; returns the next height, and the wall and process CPU seconds of the add_block
    calls alone (making the blocks is not counted)."""
    height, wall, cpu = first, 0.0, 0.0
    for _ in range(-(-records_total // records)):
        block = index_block(height, records, accounts)
        started, cpu_started = time.perf_counter(), time.process_time()
        index.add_block(*block)
        wall += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        height += 1
    return height, wall, cpu


def timed_adds(index, first: int, records: int, calls: int, accounts: int) -> dict:
    """Wall and calling-thread CPU seconds of each of ``calls`` add_block calls (a call that
    triggers merges does them before it returns)."""
    walls, cpus = [], []
    for height in range(first, first + calls):
        block = index_block(height, records, accounts)
        wall, cpu = time.perf_counter(), time.thread_time()
        index.add_block(*block)
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {"records": records, "wall": walls, "cpu": cpus}


def lookup_rates(index, heights: int, records: int, accounts: int, probes: int,
                 passes: int = 3) -> dict:
    """tx() of indexed and of unknown txids, and txs() of 10,000 indexed ones at once: the
    median of ``passes`` passes over the same probes (one pass of txs is each batch once)."""
    rng = np.random.default_rng(5)
    picked = [index_block(int(height), records, accounts).txids[rng.integers(0, records, 100)]
              for height in rng.integers(0, heights, max(1, probes // 100))]
    present = [row.tobytes() for row in np.concatenate(picked)]
    absent = [rng.bytes(32) for _ in range(len(present))]
    rates: dict[str, list[float]] = {"tx present": [], "tx absent": [], "txs of 10,000": []}
    batches = [np.frombuffer(b"".join(present[i:i + 10_000]), np.uint8).reshape(-1, 32)
               for i in range(0, len(present), 10_000)]
    for _ in range(passes):
        for name, txids in (("tx present", present), ("tx absent", absent)):
            started = time.perf_counter()
            found = sum(index.tx(txid) is not None for txid in txids)
            rates[name].append(len(txids) / (time.perf_counter() - started))
            assert found == (len(txids) if name == "tx present" else 0)
        for batch in batches:
            started = time.perf_counter()
            assert None not in index.txs(batch)
            rates["txs of 10,000"].append(len(batch) / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def index_child(index_class, directory: str, preload: int, accounts: int, probes: int) -> dict:
    """Builds an index of ``preload`` records in 8,000-record blocks, then times adds of 8,000-
    and 65,536-record blocks on top, lookups, and reads the process's memory."""
    directory = Path(directory)
    answer: dict = {"memory before": memory_kib()}
    with index_class.open(directory) as index:
        height, answer["build s"], answer["build cpu s"] = fill_index(
            index, 0, preload, min(preload, BATCH_RECORDS), accounts)
        answer["built records"] = height * min(preload, BATCH_RECORDS)
        answer["memory after build"] = memory_kib()
        answer["adds"] = []
        for records, calls in ((BATCH_RECORDS, 40), (65_536, 10)):
            answer["adds"].append(timed_adds(index, height, records, calls, accounts))
            height += calls
        answer["lookups"] = lookup_rates(index, height - 50, min(preload, BATCH_RECORDS),
                                         accounts, probes)
        answer["memory after lookups"] = memory_kib()
        answer["runs"] = getattr(index, "run_count", None)
    answer["disk bytes"] = disk_bytes(directory)
    answer["open s"] = {"warm": [], "cold": []}
    for cold in (False, True, False, True, False, True):
        if cold:
            for path in directory.rglob("*"):
                if path.is_file():
                    evict(path)
        started = time.perf_counter()
        index_class.open(directory).close()
        answer["open s"]["cold" if cold else "warm"].append(time.perf_counter() - started)
    return answer


def _ns(seconds: float, records: int) -> str:
    return f"{seconds / records * 1e9:,.0f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def print_index_case(name: str, preload: int, answer: dict) -> None:
    built = answer["built records"]
    print(f"{name}, {preload:,} records indexed first (8,000-record blocks): add_block calls "
          f"took {answer['build s']:.1f} s = {_ns(answer['build s'], built)} ns/record wall, "
          f"{_ns(answer['build cpu s'], built)} ns/record CPU, merges included; "
          f"{answer['disk bytes'] / 1e6:,.0f} MB on disk; runs {answer['runs']}")
    for adds in answer["adds"]:
        records, walls, cpus = adds["records"], adds["wall"], adds["cpu"]
        median_wall, median_cpu = statistics.median(walls), statistics.median(cpus)
        print(f"  add_block of {records:,} records on top: ns/record median "
              f"{_ns(median_wall, records)} wall ({_ns(median_cpu, records)} CPU of the "
              f"calling thread), mean {_ns(statistics.mean(walls), records)} wall "
              f"with the merges some calls did (min {_ns(min(walls), records)}, max "
              f"{_ns(max(walls), records)}, n={len(walls)})")
    rates = answer["lookups"]
    print("  lookups/s: " + ", ".join(f"{what} {rate:,.0f}" for what, rate in rates.items()))
    print("  reopen: " + "; ".join(
        f"{cache} cache s {summary(seconds)}" for cache, seconds in answer["open s"].items()))
    for when in ("memory before", "memory after build", "memory after lookups"):
        memory = answer[when]
        print(f"  {when}: VmRSS {_mib(memory['VmRSS'])}, RssAnon {_mib(memory['RssAnon'])}, "
              f"RssFile {_mib(memory['RssFile'])}")


def _counter_share(work: Callable[[], object], counted: list[int], alone: float) -> float:
    before, started = counted[0], time.perf_counter()
    work()
    return (counted[0] - before) / (time.perf_counter() - started) / alone


def gil_shares(directory: Path, index_class, blocks: int, records: int) -> dict[str, float]:
    """How much a pure-Python thread gets done while the main thread is inside add_block (merges
    included), as a share of what it does alone. A call that held the GIL from start to end
    leaves the other thread at ~0% for its whole length. Two controls on the same machine:
    sorting a list (holds the GIL) and hashlib.sha256 over 64 MB (releases it)."""
    counted = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counted[0] += 1

    workload = index_workload(blocks, records, 10_000_000)
    rng = np.random.default_rng(2)
    unsorted, data = rng.random(3_000_000).tolist(), rng.bytes(64 << 20)
    counter = threading.Thread(target=count)
    counter.start()
    try:
        time.sleep(0.2)
        before, started = counted[0], time.perf_counter()
        time.sleep(1.0)
        alone = (counted[0] - before) / (time.perf_counter() - started)
        with index_class.open(directory) as index:
            shares = {"add_block": _counter_share(
                lambda: [index.add_block(*arguments) for arguments in workload], counted, alone)}
        shares["control: sorted() holds the GIL"] = _counter_share(
            lambda: sorted(unsorted), counted, alone)
        shares["control: sha256 releases the GIL"] = _counter_share(
            lambda: hashlib.sha256(data).digest(), counted, alone)
    finally:
        stop.set()
        counter.join()
    return shares


def report_index(root: Path, records: int, accounts: int, old_index: Path | None,
                 repeats: int, probes: int, old_fanout: int | None = None) -> None:
    classes = {"sorted-runs index": Index}
    if old_index is not None:
        classes[f"older index ({old_index.name})"] = load_old_index(old_index, old_fanout)
    for name, index_class in classes.items():
        for preload in (10_000, records):
            answer = in_child(index_child, index_class, str(root / "index"), preload, accounts,
                              probes)
            print_index_case(name, preload, answer)
            shutil.rmtree(root / "index")
    for name, index_class in classes.items():
        shares = [in_child(gil_shares, root / f"gil-{run}", index_class, 20, BATCH_RECORDS)
                  for run in range(repeats)]
        for phase in shares[0]:
            values = [share[phase] for share in shares]
            print(f"  {name}: a Python thread's progress during {phase}, as a share of its "
                  f"rate alone: {summary(values)}")
        for run in range(repeats):
            shutil.rmtree(root / f"gil-{run}", ignore_errors=True)


def build_child(directory: str, records: int, accounts: int, index_class=Index) -> dict:
    with index_class.open(directory) as index:
        height, _, _ = fill_index(index, 0, records, BATCH_RECORDS, accounts)
    return {"heights": height}


def lookups_child(index_class, directory: str, heights: int, accounts: int, probes: int,
                  passes: int) -> dict:
    answer = {"memory before": trimmed_memory_kib()}
    with index_class.open(directory) as index:
        answer["memory after open"] = trimmed_memory_kib()
        answer["rates"] = lookup_rates(index, heights, BATCH_RECORDS, accounts, probes, passes)
        answer["memory after lookups"] = memory_kib()
        answer["runs"] = index.run_count
    return answer


def report_lookups(root: Path, records: int, accounts: int, old_index: Path | None,
                   repeats: int, probes: int, old_fanout: int | None = None) -> None:
    """Lookup rates and the memory an open index holds, for this index.py and, beside it, an
    older sorted-runs index.py (same file format) on the same run files: one index of
    ``records`` records is built once, then each reads it in a fresh child, ``repeats`` times,
    alternating; each child's rates are medians of 3 passes, and the figure is the median.
    With ``old_fanout`` the older index builds its own run files with that fan-out and reads
    those (its runs), not this one's."""
    directory = root / "lookups"
    heights = in_child(build_child, str(directory), records, accounts)["heights"]
    classes = {"this index.py": Index}
    directories = {"this index.py": directory}
    if old_index is not None:
        name = f"older index ({old_index.name})"
        classes[name] = load_old_index(old_index, old_fanout)
        directories[name] = directory
        if old_fanout is not None:
            directories[name] = root / "lookups-old"
            in_child(build_child, str(directories[name]), records, accounts, classes[name])
    answers: dict[str, list[dict]] = {name: [] for name in classes}
    for _ in range(repeats):
        for name, index_class in classes.items():
            answers[name].append(in_child(lookups_child, index_class, str(directories[name]),
                                          heights, accounts, probes, 3))
    print(f"lookups in an index of {heights * BATCH_RECORDS:,} records, medians of {repeats} "
          f"children:")
    for name, runs in answers.items():
        rates = {what: statistics.median(answer["rates"][what] for answer in runs)
                 for what in runs[0]["rates"]}
        held = statistics.median(answer["memory after open"]["VmRSS"] -
                                 answer["memory before"]["VmRSS"] for answer in runs)
        after = statistics.median(answer["memory after lookups"]["VmRSS"] for answer in runs)
        print(f"  {name} ({runs[0]['runs']} runs): "
              + ", ".join(f"{what} {rate:,.0f}/s" for what, rate in rates.items())
              + f"; opening it added {held / 1024:,.1f} MiB to VmRSS (trimmed), after lookups "
              f"{_mib(after)}")
        for what in rates:
            print(f"    {what} per child: "
                  + ", ".join(f"{answer['rates'][what]:,.0f}" for answer in runs))
    for path in set(directories.values()):
        shutil.rmtree(path)


# -- snapshots ------------------------------------------------------------------------------

def state_arrays(accounts: int) -> dict[str, np.ndarray]:
    """The ledger state's arrays at ``accounts`` accounts (49 bytes each) and a hold table of
    one entry per ten accounts (100 bytes each): ~590 MB at 10 million accounts."""
    rng = np.random.default_rng(3)
    holds = np.zeros(accounts // 10, dtype=[("payer", "<u8"), ("payee", "<u8"),
                                            ("authority", "<u8"), ("amount", "<u8"),
                                            ("expiry_s", "<u8"), ("sequence", "<u8"),
                                            ("hashlock", "u1", (32,)), ("status", "u1"),
                                            ("pad", "u1", (19,))])
    holds["amount"] = rng.integers(0, 2**40, len(holds), dtype=np.uint64)
    return {"balance": rng.integers(0, 2**40, accounts + 1, dtype=np.uint64),
            "sequence": rng.integers(0, 2**50, accounts + 1, dtype=np.uint64),
            "owner_key": rng.integers(0, 256, (accounts + 1, 32), dtype=np.uint8),
            "account_flags": np.zeros(accounts + 1, dtype=np.uint8),
            "holds": holds}


def snapshot_seconds(directory: Path, arrays: dict[str, np.ndarray],
                     repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Save, warm load and cold load times."""
    saves, warm, cold = [], [], []
    for height in range(repeats):
        started = time.perf_counter()
        path = save_snapshot(directory, height + 1, bytes(32), arrays, {"accounts": 1})
        saves.append(time.perf_counter() - started)
        for samples, evicted in ((cold, True), (warm, False)):
            if evicted:
                evict(path)
            started = time.perf_counter()
            loaded = load_newest_snapshot(directory)
            samples.append(time.perf_counter() - started)
            assert loaded.height == height + 1
            del loaded
    return saves, warm, cold


# -- the report -----------------------------------------------------------------------------

def report_append(root: Path, repeats: int) -> None:
    for records, count in ((BATCH_RECORDS, 60), (1, 600)):
        block = random_block(records)
        rates = []
        for run in range(repeats):
            seconds = append_sync_seconds(root / f"append-{records}-{run}", block, count)
            rates.append(1 / statistics.median(seconds))
        print(f"append+sync, {records}-record blocks ({len(block):,} B), one fsync a block: "
              f"blocks/s {summary(rates)}; MB/s median "
              f"{statistics.median(rates) * len(block) / 1e6:.3g}")


def report_open(root: Path, records_total: int, small_blocks: int, repeats: int) -> None:
    directory = root / "open"
    started = time.perf_counter()
    blocks = build_crashed_log(directory, records_total, BATCH_RECORDS)
    size = (directory / "blocks.log").stat().st_size
    checkpoint = directory / "blocks.checkpoint"
    trusted = int.from_bytes(checkpoint.read_bytes()[16:24], "little") if checkpoint.exists() else 0
    print(f"log of {records_total:,} records in {blocks:,} blocks of {BATCH_RECORDS:,}: "
          f"{size / 1e9:.2f} GB, built in {time.perf_counter() - started:.1f} s; the crash left "
          f"{(size - trusted) / 1e6:.0f} MB after its last periodic checkpoint")
    for name, prepare in open_scenarios(directory).items():
        for cold in (False, True):
            seconds = [open_seconds(directory, cold, prepare) for _ in range(repeats)]
            print(f"  open {name}, {'cold' if cold else 'warm'} cache: s {summary(seconds)}")
    for cold in (False, True):
        seconds = [verify_seconds(directory, cold) for _ in range(repeats)]
        print(f"  verify_frames (every checksum), {'cold' if cold else 'warm'} cache: "
              f"s {summary(seconds)}; {size / statistics.median(seconds) / 1e9:.2f} GB/s")
    shutil.rmtree(directory)
    directory = root / "open-small"
    build_small_block_log(directory, small_blocks)
    scenarios = open_scenarios(directory)
    for name in ("after a clean close", "no checkpoint (full payload check)"):
        seconds = [open_seconds(directory, False, scenarios[name]) for _ in range(repeats)]
        print(f"  a log of {small_blocks:,} single-record blocks: open {name}, warm cache: "
              f"s {summary(seconds)}")
    shutil.rmtree(directory)


def report_snapshot(root: Path, accounts: int, repeats: int) -> None:
    arrays = state_arrays(accounts)
    total = sum(array.nbytes for array in arrays.values())
    saves, warm, cold = snapshot_seconds(root / "snapshots", arrays, repeats)
    print(f"snapshot of {accounts:,} accounts ({total / 1e6:.0f} MB of arrays): save s "
          f"{summary(saves)}; load warm s {summary(warm)}; load cold s {summary(cold)}")
    shutil.rmtree(root / "snapshots")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=10_000_000,
                        help="records in the log whose open is timed")
    parser.add_argument("--small-blocks", type=int, default=1_000_000,
                        help="single-record blocks in the second log whose open is timed")
    parser.add_argument("--accounts", type=int, default=10_000_000,
                        help="accounts in the timed snapshot")
    parser.add_argument("--index-records", type=int, default=10_000_000,
                        help="records indexed before the timed adds of the big index case")
    parser.add_argument("--index-accounts", type=int, default=10_000_000,
                        help="accounts the indexed records debit and credit")
    parser.add_argument("--index-probes", type=int, default=20_000,
                        help="txids looked up one by one (and 10,000 at a time)")
    parser.add_argument("--old-index", type=Path, default=None,
                        help="an older index.py to measure beside (an LMDB one needs lmdb)")
    parser.add_argument("--old-fanout", type=int, default=None,
                        help="index_merge_fanout the older index runs with (default: this one's)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--only", choices=["append", "open", "index", "lookups", "snapshot"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tsunagi-bench-store-", dir=args.workdir) as temp:
        root = Path(temp)
        if args.only in (None, "append"):
            report_append(root, args.repeats)
        if args.only in (None, "open"):
            report_open(root, args.records, args.small_blocks, args.repeats)
        if args.only in (None, "index"):
            report_index(root, args.index_records, args.index_accounts, args.old_index,
                         args.repeats, args.index_probes, args.old_fanout)
        if args.only in (None, "lookups"):
            report_lookups(root, args.index_records, args.index_accounts, args.old_index,
                           args.repeats, args.index_probes, args.old_fanout)
        if args.only in (None, "snapshot"):
            report_snapshot(root, args.accounts, args.repeats)


# -- pytest-benchmark -----------------------------------------------------------------------

@pytest.mark.parametrize("records", [BATCH_RECORDS, 1], ids=["8000-record", "1-record"])
def test_append_sync(benchmark, tmp_path, records):
    """One block appended and synced per round: the batched block beside the baseline."""
    benchmark.group = "store: append + sync (one fsync a block)"
    block = random_block(records)
    with BlockLog.open(tmp_path, create=True) as block_log:
        def append_and_sync() -> int:
            block_log.append(block)
            return block_log.sync()

        benchmark.pedantic(append_and_sync, rounds=50 if records > 1 else 500, warmup_rounds=2)
        assert block_log.read(block_log.height - 1) == block
    benchmark.extra_info.update(block_bytes=len(block), records=records)


@pytest.fixture(scope="module")
def crashed_log(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("open") / "log"
    build_crashed_log(directory, int(10_000_000 * SCALE), BATCH_RECORDS)
    return directory


@pytest.mark.parametrize("scenario", ["after a crash (last periodic checkpoint)",
                                      "no checkpoint (full payload check)",
                                      "after a clean close"])
def test_open(benchmark, crashed_log, scenario):
    benchmark.group = f"store: open a log of {int(10_000_000 * SCALE):,} records (warm cache)"
    prepare = open_scenarios(crashed_log)[scenario]
    benchmark.pedantic(open_seconds, args=(crashed_log, False, prepare), rounds=3)


def test_index_add_block(benchmark, tmp_path):
    benchmark.group = "store: index add_block (8,000 records)"
    workload = index_workload(200, BATCH_RECORDS, 10_000_000)
    added: list[tuple] = []

    def add_next() -> None:
        added.append(workload[len(added)])
        index.add_block(*added[-1])

    with Index.open(tmp_path) as index:
        benchmark.pedantic(add_next, rounds=150, warmup_rounds=5)
        assert index.indexed_height == len(added)
        assert index.tx(added[-1][2][-1].tobytes()).height == len(added) - 1


@pytest.fixture(scope="module")
def filled_index(tmp_path_factory):
    """An index of 2 million records (scaled) in 8,000-record blocks, in files and memory."""
    blocks = max(1, int(250 * SCALE))
    with Index.open(tmp_path_factory.mktemp("lookups")) as index:
        fill_index(index, 0, blocks * BATCH_RECORDS, BATCH_RECORDS, 10_000_000)
        yield index, blocks


@pytest.mark.parametrize("how", ["tx present", "tx absent", "txs of 10,000"])
def test_index_lookups(benchmark, filled_index, how):
    """Point lookups (pread through the fences and Bloom filters) and one batch (maps)."""
    index, blocks = filled_index
    benchmark.group = f"store: index lookups ({blocks * BATCH_RECORDS:,} records)"
    rng = np.random.default_rng(4)
    rows = np.concatenate([index_block(int(height), BATCH_RECORDS, 10_000_000).txids[:40]
                           for height in rng.integers(0, blocks, 250)])
    if how == "tx absent":
        rows = rng.integers(0, 256, rows.shape, dtype=np.uint8)
    if how == "txs of 10,000":
        found = benchmark.pedantic(index.txs, args=(rows,), rounds=5)
    else:
        txids = [row.tobytes() for row in rows]
        found = benchmark.pedantic(lambda: [index.tx(txid) for txid in txids], rounds=5)
    assert sum(location is None for location in found) == (len(rows) if how == "tx absent"
                                                            else 0)
    benchmark.extra_info.update(lookups_per_round=len(rows))


@pytest.mark.parametrize("operation", ["save", "load"])
def test_snapshot(benchmark, tmp_path, operation):
    accounts = int(10_000_000 * SCALE)
    benchmark.group = f"store: snapshot of {accounts:,} accounts"
    arrays = state_arrays(accounts)
    if operation == "save":
        heights = iter(range(1, 100))
        benchmark.pedantic(lambda: save_snapshot(tmp_path, next(heights), bytes(32), arrays,
                                                 {}), rounds=3)
    else:
        save_snapshot(tmp_path, 1, bytes(32), arrays, {})
        loaded = benchmark.pedantic(load_newest_snapshot, args=(tmp_path,), rounds=3)
        assert np.array_equal(loaded.arrays["balance"], arrays["balance"])


if __name__ == "__main__":
    main()
