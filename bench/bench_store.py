"""Benchmarks of the durable store: block log append+sync, open and recovery, the LMDB index,
state snapshots.

Two ways to run it:

- ``python -m pytest bench/bench_store.py --benchmark-only``: pytest-benchmark groups that put
  the batched block (8,000 records) beside the single-record block on the same log, and time
  open, indexing and snapshots. ``TSUNAGI_BENCH_SCALE`` (default 1) scales the big cases.
- ``python bench/bench_store.py``: every figure of the store's report, each the median of
  ``--repeats`` runs (the machine is shared: medians, and min-max beside them).

Blocks are opaque bytes to the store, so a block here is random bytes of the size the block
format gives (80-byte header, two u32 counts, per record 128 + 1 code + 64 signature bytes).
Data goes to a temporary directory under ``--workdir`` (default: the system's), removed after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np
import pytest

from tsunagi.ledger.index import Index
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

def index_workload(blocks: int, records: int, accounts: int, seed: int = 1) -> list[tuple]:
    """add_block arguments: random txids, result codes and accounts out of ``accounts``."""
    rng = np.random.default_rng(seed)
    return [(height, rng.bytes(32), rng.integers(0, 256, (records, 32), dtype=np.uint8),
             rng.integers(0, 3, records, dtype=np.uint8),
             rng.integers(1, accounts + 1, records).astype(np.uint64),
             rng.integers(1, accounts + 1, records).astype(np.uint64))
            for height in range(blocks)]


def written_bytes() -> int:
    """Bytes this process has caused to be written to storage (Linux /proc/self/io)."""
    with open("/proc/self/io") as counters:
        return next(int(line.split()[1]) for line in counters if line.startswith("write_bytes"))


def index_seconds(directory: Path, workload: list[tuple]) -> tuple[list[float], int]:
    """Time of each add_block (one write transaction and one fsync each), and bytes written."""
    seconds = []
    with Index.open(directory) as index:
        written = written_bytes()
        for arguments in workload:
            started = time.perf_counter()
            index.add_block(*arguments)
            seconds.append(time.perf_counter() - started)
        written = written_bytes() - written
    return seconds, written


def _counter_share(work: Callable[[], object], counted: list[int], alone: float) -> float:
    before, started = counted[0], time.perf_counter()
    work()
    return (counted[0] - before) / (time.perf_counter() - started) / alone


def gil_shares(directory: Path, blocks: int, records: int) -> dict[str, float]:
    """How much a pure-Python thread gets done while the main thread is inside py-lmdb's
    putmulti and commit, as a share of what it does alone. A call that held the GIL from start
    to end leaves the other thread at ~0% for its whole length. Two controls on the same
    machine: sorting a list (holds the GIL) and hashlib.sha256 over 64 MB (releases it)."""
    counted = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counted[0] += 1

    env = lmdb.open(str(directory), map_size=1 << 32, max_dbs=2, metasync=False)
    tx_map = env.open_db(b"tx")
    rng = np.random.default_rng(2)
    batches = [sorted((rng.bytes(32), rng.bytes(13)) for _ in range(records))
               for _ in range(blocks)]
    unsorted, data = rng.random(3_000_000).tolist(), rng.bytes(64 << 20)
    counter = threading.Thread(target=count)
    counter.start()
    try:
        time.sleep(0.2)
        before, started = counted[0], time.perf_counter()
        time.sleep(1.0)
        alone = (counted[0] - before) / (time.perf_counter() - started)
        shares: dict[str, list[float]] = {"putmulti": [], "commit": []}
        for batch in batches:
            txn = env.begin(write=True)
            cursor = txn.cursor(tx_map)
            shares["putmulti"].append(
                _counter_share(lambda: cursor.putmulti(batch), counted, alone))  # noqa: B023
            shares["commit"].append(_counter_share(txn.commit, counted, alone))
        shares["control: sorted() holds the GIL"] = [
            _counter_share(lambda: sorted(unsorted), counted, alone)]
        shares["control: sha256 releases the GIL"] = [
            _counter_share(lambda: hashlib.sha256(data).digest(), counted, alone)]
    finally:
        stop.set()
        counter.join()
        env.close()
    return {phase: statistics.median(values) for phase, values in shares.items()}


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


def report_index(root: Path, blocks: int, accounts: int) -> None:
    workload = index_workload(blocks, BATCH_RECORDS, accounts)
    seconds, written = index_seconds(root / "index", workload)
    tenth = max(1, blocks // 10)
    first, last = seconds[:tenth], seconds[-tenth:]
    size = (root / "index" / "data.mdb").stat().st_size
    print(f"index add_block, {BATCH_RECORDS:,}-record blocks, accounts drawn from "
          f"{accounts:,}: {blocks * BATCH_RECORDS:,} txids in {sum(seconds):.1f} s = "
          f"{blocks * BATCH_RECORDS / sum(seconds):,.0f} txids/s overall; first tenth "
          f"{BATCH_RECORDS / statistics.median(first):,.0f} txids/s, last tenth "
          f"{BATCH_RECORDS / statistics.median(last):,.0f} txids/s (medians); "
          f"data.mdb {size / 1e9:.2f} GB; {written / blocks / 1e6:.1f} MB written a block")
    shutil.rmtree(root / "index")
    shares = [gil_shares(root / f"gil-{run}", 20, BATCH_RECORDS) for run in range(3)]
    for phase in shares[0]:
        values = [share[phase] for share in shares]
        print(f"  a Python thread's progress during {phase}, as a share of its rate "
              f"alone: {summary(values)}")


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
    parser.add_argument("--index-blocks", type=int, default=250,
                        help="8,000-record blocks the timed index takes")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--only", choices=["append", "open", "index", "snapshot"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tsunagi-bench-store-", dir=args.workdir) as temp:
        root = Path(temp)
        if args.only in (None, "append"):
            report_append(root, args.repeats)
        if args.only in (None, "open"):
            report_open(root, args.records, args.small_blocks, args.repeats)
        if args.only in (None, "index"):
            report_index(root, args.index_blocks, args.accounts)
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
