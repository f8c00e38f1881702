"""The ledger's commit paths side by side, each beside the limit it runs against.

Run ``python bench/ledger_table.py [--out DIR] [--rounds N] [--big]``. One run measures, on the
same workloads (bench/workloads.py):

- signed transfers in batches of 8,000 (a BIP340 signature each) through Ledger.submit_batch,
  beside the signature-verification limit (libsecp256k1's verify, as coincurve ships it, each
  signature alone on all cores over the same signatures), the batch-equation verifier the
  ledger uses (tsunagi._native.sigverify.verify_batch, batched) and coincurve's Python-level
  verify loop on one core;
- batch-authorized transfers (one signature a batch) in batches of 8,000, 65,536 and more,
  beside what the disk takes to append and fdatasync the same bytes; one call at a time, and
  pipelined (begin_batch with two batches in flight: one applies while the other's fsync
  runs, as a node commits);
- the baseline, Ledger.submit: one signed transfer, one block, one fdatasync;
- with --big: resident memory and throughput at 10 million accounts against 10 thousand, and
  Ledger.open after a SIGKILL with 10 million transfers committed (and after a clean close).

Every figure is the median of ``--rounds`` timed calls, each on fresh records signed before the
timing (submit_batch returns after the fdatasync). Each call is timed right after its limit on
the same batch, so both see the same load on a shared machine, and with the background index
caught up before the pair: the figure is the commit path's own cost. "with index" is a second
run of calls back to back (batch-authorized: at least 2**21 records, so that the index's
flushes and merges count): records over the wall time until the index has caught up, the
rate the ledger keeps up for long. The pipelined figure is the median time between
successive answers over such a run, its "with index" the whole run's rate until the index
has caught up. It prints one table and the ratio lines; --out writes ledger.json and
ledger.png. bench/bench_ledger.py times the same cases under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import workloads as w

from tsunagi import hashing
from tsunagi._native import sigverify
from tsunagi.core.keys import verify as python_verify
from tsunagi.ledger.log import FRAME_HEADER_BYTES, LOG_NAME, BlockLog

SIGNED_BATCH = 8_000
AUTHORIZED_BATCHES = (8_000, 65_536, 262_144)
AUTHORIZED_BATCHES_TABLE = AUTHORIZED_BATCHES + (1_048_576,)
ACCOUNTS = 10_000
SIGNED_TARGET_SHARE = 0.85  # of the verification limit
AUTHORIZED_TARGET_PER_S = 2_000_000
BASELINE_SUBMITS = 300
SCALE_ROUNDS_MIN = 15  # calls of each chain in the batch-authorized 10M vs 10k comparison
SUSTAINED_RECORDS = 1 << 21  # at least this many in the runs "with index" (but of 2**20)
FUJITSU_BATCHING_GAIN = 2.7  # what Fujitsu reported batching gained in Hyperledger Fabric


@dataclass
class Row:
    """One measured case: per-call seconds and what one call does."""

    group: str
    case: str
    unit: str  # what is counted: transfers, signatures, bytes
    items: int  # counted per call
    seconds: list[float]
    role: str = "figure"  # figure, limit (what the figure runs against), reference, baseline
    target: str = ""
    met: bool | None = None
    notes: dict = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.items / self.median_s


def si(value: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}"
    return f"{value:.1f} "


# ----------------------------------------------------------------------------- primitives


def expect_ok(answer, count: int) -> None:
    """Every record of the call applied: a fast wrong answer must not pass for a figure."""
    if len(answer.codes) != count or answer.codes.any():
        raise AssertionError(f"{int(np.count_nonzero(answer.codes))} of {count} records "
                             f"failed, first {answer.failures[:3]}")


def interleaved(ledger, batches: Sequence[w.Batch],
                limit: Callable[[w.Batch], float]) -> tuple[list[float], list[float]]:
    """Seconds of each submit_batch and of the limit on the same batch just before it.

    Alternating the two puts them under the same load: on a shared machine the load changes
    within seconds, so limits timed apart from their figures make the ratio meaningless. The
    index catches up (and finishes its background merges) before each pair, so neither the
    limit nor the call shares the cores with the indexer: the call's time is the commit path's
    own. What the indexer costs on top shows in :func:`sustained_per_s`.
    """
    seconds, limits = [], []
    for batch in batches:
        ledger.wait_indexed(merges=True)
        limits.append(limit(batch))
        begun = time.perf_counter()
        answer = batch.submit(ledger)
        seconds.append(time.perf_counter() - begun)
        expect_ok(answer, len(batch))
    return seconds, limits


class Pipeline:
    """begin_batch on the caller's thread while a second thread waits for each batch's fsync,
    with at most ``depth`` batches begun and unanswered: how a node commits its groups (one
    applies while the one before it waits for the disk)."""

    def __init__(self, ledger, depth: int = 2):
        self.ledger = ledger
        self.answered: list[float] = []  # perf_counter() of each answer, in order
        self._slots = threading.Semaphore(depth)
        self._handed: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._wait_each, name="bench-waiter")
        self._thread.start()

    def submit(self, batch: w.Batch) -> None:
        """Begins ``batch`` once fewer than ``depth`` batches are unanswered."""
        self._slots.acquire()
        if self._error is not None:
            raise self._error
        self._handed.put((len(batch), self.ledger.begin_batch(batch.records, batch.signatures,
                                                              batch.batches)))

    def _wait_each(self) -> None:
        while (item := self._handed.get()) is not None:
            count, pending = item
            try:
                expect_ok(pending.wait(), count)
                self.answered.append(time.perf_counter())
            except BaseException as exc:  # raised on the submitting thread
                self._error = exc
            finally:
                self._slots.release()

    def close(self) -> list[float]:
        """Waits for every answer; returns the seconds between successive answers."""
        self._handed.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return list(np.diff(self.answered))


def pipelined(ledger, batches: Sequence[w.Batch], depth: int = 2) -> tuple[list[float], float]:
    """The batches through a :class:`Pipeline`: the seconds between successive answers (a
    batch's share of the pipeline in the steady state), and records a second over the whole
    run until the index has them all."""
    ledger.wait_indexed()
    started = time.perf_counter()
    pipe = Pipeline(ledger, depth)
    try:
        for batch in batches:
            pipe.submit(batch)
    finally:
        intervals = pipe.close()
    ledger.wait_indexed()
    return intervals, sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def sustained_per_s(ledger, batches: Sequence[w.Batch]) -> float:
    """Records a second over back-to-back calls, until the index has them all: the rate a
    ledger keeps up for long, when the background indexer must keep up too."""
    ledger.wait_indexed()
    started = time.perf_counter()
    for batch in batches:
        expect_ok(batch.submit(ledger), len(batch))
    ledger.wait_indexed()
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def verify_seconds(batch: w.Batch, threads: int, batched: bool = False) -> float:
    """verify_batch of the batch's signatures: each alone with coincurve's libsecp256k1 (the
    limit the issue names) or, ``batched``, by the batch equation, as the ledger does."""
    messages, keys, signatures = batch.signature_rows()
    started = time.perf_counter()
    valid = sigverify.verify_batch(messages, keys, signatures, threads, batched)
    elapsed = time.perf_counter() - started
    if not valid.all():
        raise AssertionError("a workload signature does not verify")
    return elapsed


def python_verify_seconds(batch: w.Batch) -> float:
    """coincurve's own verify, one signature per Python call, on one core."""
    messages, keys, signatures = batch.signature_rows()
    rows = [(bytes(k), bytes(m), bytes(s)) for k, m, s in zip(keys, messages, signatures)]
    started = time.perf_counter()
    valid = [python_verify(k, m, s) for k, m, s in rows]
    elapsed = time.perf_counter() - started
    if not all(valid):
        raise AssertionError("a workload signature does not verify")
    return elapsed


def log_bytes(chain: w.Chain) -> int:
    return (chain.path / LOG_NAME).stat().st_size


class AppendProbe:
    """The disk's side of a commit alone: a block log of its own, in the same directory (so on
    the same file system), appends ``size`` bytes as one block and syncs, as the ledger's log
    does (the same O_DIRECT or page-cache path, the same fdatasync)."""

    def __init__(self, directory: Path, size: int):
        self.directory, self.bytes = directory / "append-probe", size
        # The frame header is the log's: the block is the frame less its 32 bytes.
        self.payload = np.random.default_rng(3).bytes(size - FRAME_HEADER_BYTES)
        self.log = BlockLog.open(self.directory, create=True)

    def seconds(self, _batch=None) -> float:
        started = time.perf_counter()
        self.log.append(self.payload)
        self.log.sync()
        return time.perf_counter() - started

    def close(self) -> None:
        self.log.close()
        shutil.rmtree(self.directory)


def warm_block_bytes(chain: w.Chain, batch: w.Batch) -> int:
    """Submits a warm-up batch; returns the bytes the log grew by (frame and block)."""
    before = log_bytes(chain)
    expect_ok(batch.submit(chain.ledger), len(batch))
    return log_bytes(chain) - before


# ---------------------------------------------------------------------------------- cases


def signed_rows(chain: w.Chain, rounds: int, size: int = SIGNED_BATCH,
                group: str | None = None, seed: int = 11) -> list[Row]:
    """submit_batch of signed transfers beside verify_batch and coincurve on the same ones."""
    group = group or f"signed {size:,}"
    work = w.batches(w.signed_batch, chain, size, 2 * rounds + 1, seed)
    warm_block_bytes(chain, work[0])
    threads = hashing.cpu_count()
    seconds, limit = interleaved(chain.ledger, work[1:rounds + 1],
                                 lambda batch: verify_seconds(batch, threads))
    with_index = sustained_per_s(chain.ledger, work[rounds + 1:])
    python = [python_verify_seconds(work[1]) for _ in range(min(rounds, 3))]
    batched = [verify_seconds(batch, threads, batched=True) for batch in work[1:rounds + 1]]
    figure = Row(group, "Ledger.submit_batch", "transfers", size, seconds,
                 target=f">= {SIGNED_TARGET_SHARE:.0%} of the limit",
                 notes={"with_index_per_s": with_index})
    limit_row = Row(group, f"verify each alone (coincurve's libsecp256k1), {threads} threads",
                    "signatures", size, limit, role="limit")
    figure.met = figure.rate >= SIGNED_TARGET_SHARE * limit_row.rate
    figure.notes["of_limit"] = figure.rate / limit_row.rate
    batched_row = Row(group, f"verify by batch equation (the ledger's), {threads} threads",
                      "signatures", size, batched, role="reference")
    reference = Row(group, "coincurve verify loop, 1 core", "signatures", size, python,
                    role="reference")
    return [figure, limit_row, batched_row, reference]


def authorized_rows(chain: w.Chain, sizes: Sequence[int], rounds: int,
                    directory: Path, seed: int = 21) -> list[Row]:
    rows = []
    for size in sizes:
        group = f"batch-authorized {size:,}"
        count = rounds if size < 1 << 20 else 3  # 134 MB a batch of 2**20
        work = w.batches(w.authorized_batch, chain, size, count + 1, seed + size)
        probe = AppendProbe(directory, warm_block_bytes(chain, work[0]))
        try:
            seconds, disk = interleaved(chain.ledger, work[1:], probe.seconds)
        finally:
            probe.close()
        # Long enough that the index's flushes and merges show in the rate.
        long_count = max(count, -(-SUSTAINED_RECORDS // size)) if size < 1 << 20 else count
        work = w.batches(w.authorized_batch, chain, size, long_count, seed + size + 1)
        with_index = sustained_per_s(chain.ledger, work)
        work = w.batches(w.authorized_batch, chain, size, long_count + 1, seed + size + 2)
        intervals, piped_with_index = pipelined(chain.ledger, work)
        del work
        target = f">= {si(AUTHORIZED_TARGET_PER_S)}transfers/s"
        figure = Row(group, "Ledger.submit_batch", "transfers", size, seconds, target=target,
                     notes={"with_index_per_s": with_index,
                            "log_bytes_per_transfer": probe.bytes / size})
        piped = Row(group, "begin_batch, 2 in flight", "transfers", size, intervals,
                    target=target, notes={"with_index_per_s": piped_with_index})
        limit = Row(group, "disk: append + fdatasync same bytes", "transfers", size, disk,
                    role="limit", notes={"bytes": probe.bytes})
        for row in (figure, piped):
            row.met = row.rate >= AUTHORIZED_TARGET_PER_S
            row.notes["of_limit"] = row.rate / limit.rate
        rows += [figure, piped, limit]
    return rows


def baseline_rows(chain: w.Chain, submits: int, directory: Path, seed: int = 31) -> list[Row]:
    """Ledger.submit: one signed transfer a call, one block, one fdatasync."""
    batch = w.signed_batch(chain, submits + 1, np.random.default_rng(seed))
    singles = [w.Batch(batch.records[128 * i:128 * i + 128], batch.signatures[64 * i:64 * i + 64],
                       [], batch.txids[i:i + 1], batch.signer_keys[i:i + 1])
               for i in range(submits + 1)]
    ledger = chain.ledger
    probe = AppendProbe(directory, warm_block_bytes(chain, singles[0]))
    seconds, disk = [], []
    try:
        for single in singles[1:]:
            disk.append(probe.seconds())
            begun = time.perf_counter()
            answer = ledger.submit(single.records, single.signatures)
            seconds.append(time.perf_counter() - begun)
            expect_ok(answer, 1)
    finally:
        probe.close()
    group = "baseline, 1 a block"
    return [Row(group, "Ledger.submit", "transfers", 1, seconds, role="baseline"),
            Row(group, "disk: append + fdatasync one block", "transfers", 1, disk,
                role="limit", notes={"bytes": probe.bytes})]


def standard_rows(directory: Path, rounds: int, sizes: Sequence[int],
                  progress: Callable[[str], None] = print) -> list[Row]:
    """Every case but the --big ones, on chains of ACCOUNTS accounts."""
    progress(f"genesis chain of {ACCOUNTS:,} accounts, signing {2 * rounds + 1} batches ...")
    signed_chain = w.genesis_chain(directory / "signed", ACCOUNTS)
    try:
        rows = signed_rows(signed_chain, rounds)
        progress("baseline ...")
        rows += baseline_rows(signed_chain, BASELINE_SUBMITS, directory)
    finally:
        signed_chain.close()
    progress(f"owned chain of {ACCOUNTS:,} accounts, batch-authorized {list(sizes)} ...")
    owned = w.owned_chain(directory / "owned", ACCOUNTS)
    try:
        rows += authorized_rows(owned, sizes, rounds, directory)
    finally:
        owned.close()
    return rows


# ------------------------------------------------------------------------- --big: scale


def _status() -> dict:
    return {name: w.vm_status_kib(name) for name in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def mapped_files_kib() -> dict[str, int]:
    """Resident KiB of each file mapped into this process (/proc/self/smaps), by file name:
    which part of VmRSS is the index map, the log, the libraries."""
    resident: dict[str, int] = {}
    name = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields[0].endswith(":"):
                if fields[0] == "Rss:" and name:
                    resident[name] = resident.get(name, 0) + int(fields[1])
                continue
            name = Path(fields[5]).name if len(fields) > 5 and fields[5].startswith("/") else None
    return dict(sorted(resident.items(), key=lambda item: -item[1])[:5])


def disk_kib(directory: Path) -> dict[str, int]:
    """Disk space the data directory uses, by top-level entry (sparse files count as used)."""
    used: dict[str, int] = {}
    for path in directory.rglob("*"):
        if path.is_file():
            top = path.relative_to(directory).parts[0]
            used[top] = used.get(top, 0) + path.stat().st_blocks // 2
    return used


def _note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _progress(what: str) -> Callable[[str, int, int], None]:
    last = [0.0]

    def progress(step: str, done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            _note(f"{what}: {step} {done:,} of {total:,}")

    return progress


def alternating_rows(chains: list[w.Chain], make, size: int, rounds: int,
                     group: str) -> list[Row]:
    """Per-call seconds of each chain, its calls alternating with the others' (same load),
    every call starting with every index caught up and done merging (the account count's own
    effect: the big chain's index, ~20 million setup records, merges for longer)."""
    work = [w.batches(make, chain, size, rounds + 1, seed=61) for chain in chains]
    seconds: list[list[float]] = [[] for _ in chains]
    for round_index in range(rounds + 1):
        for chain, batches, times in zip(chains, work, seconds):
            for other in chains:
                other.ledger.wait_indexed(merges=True)
            begun = time.perf_counter()
            answer = batches[round_index].submit(chain.ledger)
            if round_index:  # round 0 warms up
                times.append(time.perf_counter() - begun)
            expect_ok(answer, size)
    return [Row(f"{chain.account_count:,} accounts: {group}", "Ledger.submit_batch",
                "transfers", size, times) for chain, times in zip(chains, seconds)]


def scale_setup_child(accounts_big: int, directory: str, pipe) -> None:
    """In a fresh process: an owned chain of ``accounts_big`` accounts, made and closed."""
    started = time.perf_counter()
    big = w.owned_chain(Path(directory) / "big", accounts_big,
                        progress=_progress(f"{accounts_big:,}"))
    big.ledger.wait_indexed()
    result = {"setup_s": time.perf_counter() - started, "setup_parts_s": big.setup_s,
              "setup_process": _status()}
    big.close()
    result["disk_kib"] = disk_kib(big.path)
    pipe.send(result)


def scale_child(accounts_small: int, accounts_big: int, directory: str, rounds: int,
                pipe) -> None:
    """In another fresh process, as a node would: the big chain opened, its memory; then the
    same throughput cases there and on a chain of ``accounts_small``, side by side.

    The memory that counts is this process's, which serves the chain: the setup's process
    also held the setup's own batches (2**20 records each) and what its allocator kept of them.
    """
    base = Path(directory)
    result = {"accounts": [accounts_small, accounts_big], "before": _status()}
    big = w.reopen_owned_chain(base / "big", accounts_big)
    big.ledger.wait_indexed()
    result.update(open_s=big.setup_s["open"], after_setup=_status(),
                  mapped_kib=mapped_files_kib())
    small = w.owned_chain(base / "small", accounts_small)
    chains = [small, big]
    # Calls of ~15-25 ms on a shared machine: a few more than --rounds for a steady median.
    rows = alternating_rows(chains, w.authorized_batch, 65_536, max(rounds, SCALE_ROUNDS_MIN),
                            "batch-authorized 65,536")
    rows += alternating_rows(chains, w.signed_batch, SIGNED_BATCH, rounds,
                             f"signed {SIGNED_BATCH:,}")
    for chain in chains:  # sustained, with the index: one chain after the other
        work = w.batches(w.authorized_batch, chain, 65_536, rounds, seed=62)
        rate = sustained_per_s(chain.ledger, work)
        rows[chains.index(chain)].notes["with_index_per_s"] = rate
    result["after_runs"] = _status()
    result["mapped_after_runs_kib"] = mapped_files_kib()
    result["rows"] = [asdict(row) for row in rows]
    for chain in chains:
        chain.close()
    pipe.send(result)


def _in_child(target, *args, kill_after_answer: bool = False) -> dict:
    """Runs ``target(*args, pipe)`` in a fresh interpreter; returns what it sent."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, sender))
    process.start()
    sender.close()
    try:
        answer = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"{target.__name__} died (exit code {process.exitcode})") from None
    if kill_after_answer:
        process.kill()  # SIGKILL: no close, no flush, no snapshot
    process.join()
    return answer


def scale_results(directory: Path, accounts_big: int, rounds: int) -> dict:
    _note(f"scale: a chain of {accounts_big:,} accounts made in a child process")
    setup = _in_child(scale_setup_child, accounts_big, str(directory / "scale"))
    _note(f"scale: chains of {accounts_big:,} and {ACCOUNTS:,} accounts served by another")
    result = _in_child(scale_child, ACCOUNTS, accounts_big, str(directory / "scale"), rounds)
    return {**setup, **result}


# ------------------------------------------------------------------------ --big: reopen


def writer_child(directory: str, transfers: int, size: int, crash: bool, pipe) -> None:
    """Commits ``transfers`` batch-authorized transfers; then waits to be killed, or closes."""
    chain = w.owned_chain(Path(directory), ACCOUNTS)
    chain.ledger.wait_indexed()
    rng = np.random.default_rng(41)
    started = time.perf_counter()
    for _, count in w.chunks(transfers, size):
        batch = w.authorized_batch(chain, count, rng)
        expect_ok(batch.submit(chain.ledger), count)
    result = {"transfers": transfers, "height": chain.ledger.height,
              "commit_wall_s": time.perf_counter() - started,
              "supply": chain.ledger.state.supply, "status": _status()}
    if crash:
        pipe.send(result)
        time.sleep(3600)  # every block is acknowledged; the parent sends SIGKILL now
        return
    begun = time.perf_counter()
    chain.close()  # waits for the index, writes a snapshot and a log checkpoint
    result["close_s"] = time.perf_counter() - begun
    pipe.send(result)


def open_child(directory: str, wait_index: bool, pipe) -> None:
    """Times Ledger.open (and, if asked, until the index has caught up) in a fresh process."""
    from tsunagi.ledger.ledger import Ledger

    started = time.perf_counter()
    ledger = Ledger.open(directory)
    result = {"open_s": time.perf_counter() - started, "height": ledger.height}
    if wait_index:
        ledger.wait_indexed()
        result["indexed_s"] = time.perf_counter() - started
    state = ledger.state
    result["conserved"] = state.balance_total() + state.open_hold_total() == state.supply
    result["supply"] = state.supply
    result["rss_kib"] = w.vm_status_kib("VmRSS")
    pipe.send(result)


def reopen_results(directory: Path, transfers: int, size: int, repeats: int) -> dict:
    """Ledger.open after a SIGKILL (on copies of the crashed directory) and after a close."""
    crashed = directory / "crashed"
    _note(f"reopen: committing {transfers:,} transfers, then SIGKILL")
    written = _in_child(writer_child, str(crashed), transfers, size, True,
                        kill_after_answer=True)
    copies = [directory / f"crashed-copy-{i}" for i in range(repeats)]
    for copy in copies:
        # cp keeps the index file sparse (LMDB with writemap leaves it as long as its map).
        subprocess.run(["cp", "-a", "--sparse=always", str(crashed), str(copy)], check=True)
    crash_opens = []
    for i, copy in enumerate(copies):
        _note(f"reopen after SIGKILL, copy {i + 1} of {repeats}")
        crash_opens.append(_in_child(open_child, str(copy), i == 0, kill_after_answer=True))
    closed = directory / "closed"
    _note(f"reopen: committing {transfers:,} transfers, then close()")
    written_closed = _in_child(writer_child, str(closed), transfers, size, False)
    clean_opens = [_in_child(open_child, str(closed), i == 0, kill_after_answer=True)
                   for i in range(repeats)]
    return {"transfers": transfers, "batch": size, "crash_writer": written,
            "crash_opens": crash_opens, "clean_writer": written_closed,
            "clean_opens": clean_opens}


# ------------------------------------------------------------------------------ reporting


def _gib(kib: float) -> str:
    return f"{kib / 2**20:.2f} GiB"


def _table_lines(rows: list[Row]) -> list[tuple[str, ...]]:
    lines = []
    for row in rows:
        met = {None: "", True: "[green]yes[/]", False: "[red]no[/]"}[row.met]
        share = row.notes.get("of_limit")
        with_index = row.notes.get("with_index_per_s")
        lines.append((row.group, row.case, row.role, f"{row.median_s * 1e3:.2f} ms",
                      f"{si(row.rate)}{row.unit}/s", f"{share:.0%}" if share else "",
                      row.target, met, f"{si(with_index)}/s" if with_index else ""))
    return lines


def _big_lines(scale: dict | None, reopen: dict | None) -> list[tuple[str, ...]]:
    lines = []
    if scale:
        group = f"{scale['accounts'][1]:,} accounts"
        memory, mapped = scale["after_setup"], scale["mapped_kib"]
        met = "[green]yes[/]" if memory["VmRSS"] <= 1.5e9 / 1024 else "[red]no[/]"
        top = ", ".join(f"{name} {_gib(kib)}" for name, kib in list(mapped.items())[:2])
        runs = scale["after_runs"]
        met_runs = "[green]yes[/]" if runs["VmRSS"] <= 1.5e9 / 1024 else "[red]no[/]"
        lines += [
            (group, f"VmRSS, opened by a fresh process ({scale['open_s']:.1f} s)", "memory", "",
             _gib(memory["VmRSS"]), "", "<= 1.5 GB", met,
             f"anon {_gib(memory['RssAnon'])}; mapped: {top}"),
            (group, "VmRSS after the runs below (VmHWM: peak)", "memory", "",
             _gib(runs["VmRSS"]), "", "<= 1.5 GB", met_runs,
             f"anon {_gib(runs['RssAnon'])}; peak {_gib(runs['VmHWM'])}"),
            (group, "VmRSS of the process that made the chain", "memory", "",
             _gib(scale["setup_process"]["VmRSS"]), "", "", "",
             (f"anon {_gib(scale['setup_process']['RssAnon'])}; peak "
              f"{_gib(scale['setup_process']['VmHWM'])}")),
            (group, "data directory on disk", "disk", "", _gib(sum(scale["disk_kib"].values())),
             "", "", "", ", ".join(f"{name} {_gib(kib)}" for name, kib in
                                   sorted(scale["disk_kib"].items(), key=lambda i: -i[1])[:3])),
            (group, "opening + funding (batch-authorized)", "setup", f"{scale['setup_s']:.0f} s",
             f"{si(2 * scale['accounts'][1] / scale['setup_s'])}records/s", "", "", "", ""),
        ]
    if reopen:
        lines += _reopen_lines(reopen)
    return lines


def _reopen_lines(reopen: dict) -> list[tuple[str, ...]]:
    group = f"reopen, {reopen['transfers']:,} transfers"
    lines = []
    for name, writer in (("SIGKILL", reopen["crash_writer"]), ("close()", reopen["clean_writer"])):
        close = f"; close() took {writer['close_s']:.1f} s" if "close_s" in writer else ""
        lines.append((group, f"writer before {name}: batches of {reopen['batch']:,}", "setup",
                      f"{writer['commit_wall_s']:.1f} s",
                      f"{si(writer['transfers'] / writer['commit_wall_s'])}transfers/s", "", "",
                      "", f"peak {_gib(writer['status']['VmHWM'])}{close}"))
    for name, opens in (("after SIGKILL", reopen["crash_opens"]),
                        ("after close()", reopen["clean_opens"])):
        seconds = statistics.median(o["open_s"] for o in opens)
        indexed = opens[0].get("indexed_s")
        lines.append((group, f"Ledger.open {name}", "recovery", f"{seconds:.2f} s",
                      f"{len(opens)} opens", "", "", "",
                      f"index caught up at {indexed:.1f} s" if indexed else ""))
    return lines


def print_table(rows: list[Row], scale: dict | None, reopen: dict | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tsunagi ledger commit, {hashing.cpu_count()} cores, medians")
    for column in ("workload", "case", "role", "median call", "figure", "of limit", "target",
                   "met", "with index"):
        table.add_column(column, justify="left" if column in ("workload", "case", "role",
                                                              "target") else "right")
    for line in _table_lines(rows + scale_rows(scale)) + _big_lines(scale, reopen):
        table.add_row(*line)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: wide enough that no cell wraps
        console = Console(width=max(console.width, 190))
    console.print(table)


def scale_rows(scale: dict | None) -> list[Row]:
    return [Row(**row) for row in scale["rows"]] if scale else []


def ratio_lines(rows: list[Row], scale: dict | None = None) -> list[str]:
    """The comparisons the issue asks for, one line each."""
    found = {(row.group, row.case): row for row in rows}
    lines = []
    signed = [row for row in rows if row.case == "Ledger.submit_batch" and
              row.group.startswith("signed")]
    baseline = found.get(("baseline, 1 a block", "Ledger.submit"))
    for row in signed:
        limit = next(r for r in rows if r.group == row.group and r.role == "limit")
        with_index = row.notes["with_index_per_s"]
        lines.append(f"{row.group}: {si(row.rate)}transfers/s = {row.rate / limit.rate:.0%} of "
                     f"the verify_batch limit {si(limit.rate)}/s (target "
                     f"{SIGNED_TARGET_SHARE:.0%}: {'met' if row.met else 'NOT met'}); with "
                     f"index {si(with_index)}/s = {with_index / limit.rate:.0%} of it")
        if baseline:
            lines.append(f"batched/baseline: {si(row.rate)}/s / {si(baseline.rate)}/s = "
                         f"{row.rate / baseline.rate:.1f}x (Fujitsu reported "
                         f"{FUJITSU_BATCHING_GAIN}x for batching in Fabric)")
    for row in rows:
        if row.group.startswith("batch-authorized") and row.role == "figure":
            lines.append(f"{row.group}, {row.case}: {si(row.rate)}transfers/s = "
                         f"{row.rate / AUTHORIZED_TARGET_PER_S:.0%} of the 2 M/s target, "
                         f"{row.notes['of_limit']:.0%} of the disk's append+fdatasync rate; "
                         f"with index {si(row.notes['with_index_per_s'])}/s")
    return lines + _scale_ratio_lines(scale)


def _scale_ratio_lines(scale: dict | None) -> list[str]:
    """The big chain's figures over the small one's, per call and with the index."""
    if not scale:
        return []
    small, big = scale["accounts"]
    rows = scale_rows(scale)
    lines = []
    for mine in (row for row in rows if row.group.startswith(f"{big:,} ")):
        case = mine.group.split(": ", 1)[1]
        (theirs,) = [row for row in rows if row.group == f"{small:,} accounts: {case}"]
        ratio = mine.rate / theirs.rate
        line = (f"{big:,} vs {small:,} accounts, {case}: {si(mine.rate)}/s vs "
                f"{si(theirs.rate)}/s = {ratio:.0%} (target 80%: "
                f"{'met' if ratio >= 0.8 else 'NOT met'})")
        if "with_index_per_s" in mine.notes:
            index_ratio = mine.notes["with_index_per_s"] / theirs.notes["with_index_per_s"]
            line += (f"; with index {si(mine.notes['with_index_per_s'])}/s vs "
                     f"{si(theirs.notes['with_index_per_s'])}/s = {index_ratio:.0%}")
        lines.append(line)
    return lines


def _tree() -> str:
    """The commit measured, with '+changes' when the working tree differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty.strip() else "")


def as_json(rows: list[Row], scale: dict | None, reopen: dict | None, args) -> dict:
    return {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tree": _tree(),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": hashing.cpu_count(), "backend": hashing.backend(),
                    "load_average": os.getloadavg()},
        "rounds": args.rounds,
        "rows": [dict(asdict(row), median_s=row.median_s, rate_per_s=row.rate)
                 for row in rows],
        "ratios": ratio_lines(rows, scale),
        "scale": scale,
        "reopen": reopen,
    }


def draw(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = {"figure": "#4477aa", "limit": "#999999", "reference": "#ccbb44",
               "baseline": "#cc3311"}
    labels = [f"{row.group}\n{row.case}" for row in rows]
    rates = [row.rate for row in rows]
    figure, axes = plt.subplots(figsize=(12, 0.5 * len(rows) + 2))
    axes.barh(labels, rates, color=[colours[row.role] for row in rows])
    for y, row in enumerate(rows):
        axes.text(row.rate, y, f" {si(row.rate)}{row.unit}/s", va="center", fontsize=7)
        if "with_index_per_s" in row.notes:
            axes.plot(row.notes["with_index_per_s"], y, marker="D", color="black", markersize=4)
    axes.set_xscale("log")
    axes.invert_yaxis()
    axes.tick_params(axis="y", labelsize=7)
    axes.axvline(AUTHORIZED_TARGET_PER_S, color="black", linestyle="--", linewidth=1)
    axes.set_xlim(min(rates) / 2, max(max(rates), AUTHORIZED_TARGET_PER_S) * 20)
    axes.set_xlabel("per second, median of the timed calls (log scale); dashed: the 2 M/s "
                    "target of batch-authorized transfers")
    handles = [Patch(color=colour, label=role) for role, colour in colours.items()]
    handles.append(plt.Line2D([], [], marker="D", color="black", linestyle="",
                              label="with index (sustained)"))
    axes.legend(handles=handles, loc="lower right", fontsize=7)
    axes.set_title("tsunagi ledger: batched commit beside its limits and the baseline")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for ledger.json and ledger.png")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls a case (median)")
    parser.add_argument("--big", action="store_true",
                        help="also 10 M accounts and the reopen after 10 M transfers (slow)")
    parser.add_argument("--big-accounts", type=int, default=10_000_000)
    parser.add_argument("--big-transfers", type=int, default=10_000_000)
    parser.add_argument("--reopen-batch", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3, help="reopens timed (median)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the chains go, kept after the run (default: a temporary "
                             "folder, deleted after)")
    args = parser.parse_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="tsunagi-ledgerbench-"))
    base.mkdir(parents=True, exist_ok=True)
    rows = standard_rows(base / "standard", args.rounds, AUTHORIZED_BATCHES_TABLE, _note)
    scale, reopen = None, None
    if args.big:
        scale = scale_results(base, args.big_accounts, args.rounds)
        reopen = reopen_results(base / "reopen", args.big_transfers, args.reopen_batch,
                                args.repeats)
    print_table(rows, scale, reopen)
    for line in ratio_lines(rows, scale):
        print(line)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ledger.json").write_text(json.dumps(as_json(rows, scale, reopen, args),
                                                         indent=2, default=float))
        draw(rows + scale_rows(scale), args.out / "ledger.png")
        print(f"wrote {args.out / 'ledger.json'} and {args.out / 'ledger.png'}")
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
