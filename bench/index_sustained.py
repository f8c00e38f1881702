"""Sustained load on the index: the commit path alone against the rate a ledger sustains with
its index, and the index's resident memory over tens of millions of records; each for the
sorted-runs index and, beside it, an older index.py, alternating.

Run ``python bench/index_sustained.py [--old-index old_index.py] [--rounds 2] [--calls 7]``
(an LMDB index.py needs ``pip install lmdb``; get one with ``git show 10f93cd:src/tsunagi/
ledger/index.py > old_index.py``, or the sorted runs that held every fence and Bloom filter in
memory with ``git show 32ad1b0:...``). Each round and index makes a fresh chain of
bench/ledger_table.py's size and runs its authorized_rows: batch-authorized submit_batch of
8,000 and 65,536 transfers, the commit path timed with the index caught up before each call,
then as many calls back to back until the index has them all ("sustained").

With ``--memory RECORDS`` it measures memory instead: a forked child (so the figures are the
index's alone) indexes RECORDS random records in 8,000-record blocks and reads VmRSS, RssAnon
and RssFile from /proc/self/status right after each flush that passes ``--sample-every``
records (then no run is held in memory: the samples differ by what the files cost, not by how
full the run in memory is), then again after glibc's malloc_trim(0) ("trimmed": without the
free heap pages glibc keeps for reuse, 0-20 MiB that come and go from one flush to the next).
It prints the samples, the least-squares growth in bytes a record over the samples past the
first tenth, and bench/bench_store.py's lookup rates at the end.

With ``--cpu RECORDS`` it measures the indexer's cost a record: a forked child indexes RECORDS
random records through add_blocks, ``--group`` 8,000-record blocks a call (as the ledger's
indexer thread hands over the blocks queued while it worked), and reports the calls' thread CPU
seconds per million records (merges included: they run inside add_blocks), their records/s, and
the bytes its files hold a record at the end. With ``--profile`` the same child runs under
cProfile with a thread-CPU clock and prints where that CPU went (cumulative seconds of the
index's phases, and the top functions by own time). Rounds alternate the indexes.
Data goes to a temporary directory under ``--workdir`` (default: the system's), removed after.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import ledger_table as table
import numpy as np
import workloads as w
from bench_store import (
    BATCH_RECORDS,
    disk_bytes,
    in_child,
    index_block,
    load_old_index,
    lookup_rates,
    memory_kib,
    trimmed_memory_kib,
)

from tsunagi.ledger import ledger as ledger_module

ACCOUNTS = 10_000_000  # accounts the indexed records debit and credit (as bench_store's)


def memory_child(index_class, directory: str, records_total: int, sample_every: int,
                 probes: int) -> dict:
    """Indexes ``records_total`` records and samples memory after flushes (see the docstring);
    add_block's own seconds beside each sample, and lookup rates at the end."""
    answer: dict = {"open": memory_kib(), "samples": []}
    with index_class.open(directory) as index:
        height, next_sample, add_s = 0, sample_every, 0.0
        while height * BATCH_RECORDS < records_total:
            block = index_block(height, BATCH_RECORDS, ACCOUNTS)
            started = time.perf_counter()
            index.add_block(*block)
            add_s += time.perf_counter() - started
            height += 1
            records = height * BATCH_RECORDS
            if records >= next_sample and index.durable_height == index.indexed_height:
                sample = {"records": records, "add s": add_s, "runs": index.run_count,
                          **memory_kib()}
                sample["trimmed"] = trimmed_memory_kib()["VmRSS"]
                answer["samples"].append(sample)
                next_sample = records + sample_every
        answer["lookups"] = lookup_rates(index, height, BATCH_RECORDS, ACCOUNTS, probes)
        answer["after lookups"] = memory_kib()
    return answer


# Functions whose cumulative CPU --profile prints, as phases of the indexer (those an index.py
# lacks are left out): building a run from blocks, deriving fence and Bloom filter, merging in
# memory, flushing to a file, merging files, and the calls inside them that cost the most.
PHASES = ("_block_sections", "in_memory", "_merged_sections", "_write_run", "_merged",
          "_merge_sorted", "_copy_rows", "_read_rows", "write", "finish", "_bloom_add",
          "argsort", "take", "indexing.merge_sources", "indexing.gather_rows",
          "indexing.bloom_add", "zlib.crc32", "zlib_ng.zlib_ng.crc32", "posix.pwrite",
          "posix.preadv", "posix.fsync", "_release_free_memory")


def _phase(filename: str, function: str) -> str | None:
    """The PHASES name of a cProfile function: one of the index's (an older index.py, or a
    module of the package tsunagi/ledger/index/, where the names shared between its modules
    lost their leading underscore), or a builtin (whose name is "<built-in method ...>" or
    "<method '...' of ...>"; numpy's Python wrappers of the same name are left out, so as not
    to count a call twice), or None."""
    of_index = filename.endswith("index.py") or Path(filename).parent.name == "index"
    for phase in PHASES:
        if (of_index and function.lstrip("_") == phase.lstrip("_")) or \
                function == f"<built-in method {phase}>" or \
                function.startswith(f"<method '{phase}'"):
            return phase
    return None


def cpu_child(index_class, directory: str, records_total: int, group: int,
              profile: bool) -> dict:
    """Indexes ``records_total`` records, ``group`` blocks an add_blocks call; the CPU and wall
    seconds of the calls and of the background merges they started (the process's CPU less
    this thread's outside the calls: making the blocks is not counted), the bytes on disk at
    the end, and with ``profile`` cProfile's phases (see PHASES) and top functions (this
    thread's only: a background merge's are not in them)."""
    profiler = cProfile.Profile(time.thread_time) if profile else None
    cpu_s = wall_s = 0.0
    process_start, thread_start = time.process_time(), time.thread_time()
    height = 0
    with index_class.open(directory) as index:
        while height * BATCH_RECORDS < records_total:
            blocks = [index_block(height + offset, BATCH_RECORDS, ACCOUNTS)
                      for offset in range(group)]
            cpu, wall = time.thread_time(), time.perf_counter()
            if profiler is not None:
                profiler.enable()
            index.add_blocks(blocks)
            if profiler is not None:
                profiler.disable()
            cpu_s += time.thread_time() - cpu
            wall_s += time.perf_counter() - wall
            height += group
        waited = time.perf_counter()
        getattr(index, "wait_merged", lambda: None)()  # an older index merges inline
        wall_s += time.perf_counter() - waited
        runs = index.run_count  # closing flushes the runs in memory: left out of the timing
        outside_calls = time.thread_time() - thread_start - cpu_s
        cpu_s = time.process_time() - process_start - outside_calls
    records = height * BATCH_RECORDS
    answer = {"records": records, "cpu s": cpu_s, "wall s": wall_s, "runs": runs,
              "disk bytes": disk_bytes(Path(directory))}
    if profiler is not None:
        phases: dict[str, float] = {}
        for function, row in pstats.Stats(profiler).stats.items():
            phase = _phase(function[0], function[2])
            if phase is not None:  # cumulative seconds, summed over functions of one name
                phases[phase] = phases.get(phase, 0.0) + row[3]
        answer["phases"] = phases
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        answer["top"] = text.getvalue()
    return answer


def print_cpu(name: str, answers: list[dict]) -> None:
    records = answers[0]["records"]
    cpu = [answer["cpu s"] / records * 1e6 for answer in answers]
    rate = [records / answer["wall s"] for answer in answers]
    disk = [answer["disk bytes"] / records for answer in answers]
    print(f"{name}: {records:,} records, {answers[0]['runs']} runs, {len(answers)} rounds "
          f"(median, min-max): "
          f"{statistics.median(cpu):.3f} CPU-s per million records ({min(cpu):.3f}-"
          f"{max(cpu):.3f}), {statistics.median(rate):,.0f} records/s indexed "
          f"({min(rate):,.0f}-{max(rate):,.0f}), {statistics.median(disk):.1f} bytes on disk "
          f"a record", flush=True)
    for answer in answers:
        if "phases" in answer:
            phases = sorted(answer["phases"].items(), key=lambda item: -item[1])
            print("  phases, ns/record CPU (cumulative, nested): " + ", ".join(
                f"{phase} {seconds / records * 1e9:,.0f}" for phase, seconds in phases))
            print("  " + answer["top"].strip().replace("\n", "\n  "), flush=True)
            break


def growth_per_record(samples: list[dict], field: str) -> float:
    """Least-squares slope of ``field`` (KiB) against records, in bytes a record, over the
    samples past the first tenth of the records (the heap's arenas settle in that tenth)."""
    last = samples[-1]["records"]
    kept = [sample for sample in samples if sample["records"] > last / 10]
    records = np.array([sample["records"] for sample in kept], dtype=float)
    kib = np.array([sample[field] for sample in kept], dtype=float)
    return float(np.polyfit(records, kib * 1024, 1)[0]) if len(kept) > 1 else float("nan")


def print_memory(name: str, round_number: int, answer: dict) -> None:
    samples = answer["samples"]
    opened = answer["open"]
    print(f"round {round_number}, {name}: at open VmRSS {opened['VmRSS'] / 1024:,.0f} MiB")
    shown = max(1, len(samples) // 10)
    for sample in samples[shown - 1::shown]:
        print(f"  {sample['records']:>12,} records, {sample['runs']:>2} runs: VmRSS "
              f"{sample['VmRSS'] / 1024:>7,.1f} MiB, RssAnon {sample['RssAnon'] / 1024:>7,.1f}, "
              f"RssFile {sample['RssFile'] / 1024:>5,.1f}, VmRSS trimmed "
              f"{sample['trimmed'] / 1024:>7,.1f}; add_block "
              f"{sample['add s'] / sample['records'] * 1e9:,.0f} ns/record so far", flush=True)
    print(f"  growth past the first tenth ({len(samples)} samples, least squares): "
          + ", ".join(f"{field} {growth_per_record(samples, field):.4f} bytes/record"
                      for field in ("VmRSS", "RssAnon", "RssFile", "trimmed")))
    first, last = samples[0], samples[-1]
    print(f"  first sample to last: VmRSS {(last['VmRSS'] - first['VmRSS']) / 1024:+,.1f} MiB, "
          f"trimmed {(last['trimmed'] - first['trimmed']) / 1024:+,.1f} MiB over "
          f"{last['records'] - first['records']:,} records; after lookups VmRSS "
          f"{answer['after lookups']['VmRSS'] / 1024:,.1f} MiB")
    print("  lookups/s: " + ", ".join(f"{what} {rate:,.0f}"
                                      for what, rate in answer["lookups"].items()), flush=True)


def sustained(indexes: dict, rounds: int, calls: int) -> None:
    for round_number in range(rounds):
        for name, index_class in indexes.items():
            ledger_module.Index = index_class
            with tempfile.TemporaryDirectory(prefix="tsunagi-sustained-") as temp:
                chain = w.owned_chain(Path(temp) / "owned", table.ACCOUNTS)
                try:
                    rows = table.authorized_rows(chain, (8_000, 65_536), calls, Path(temp))
                finally:
                    chain.close()
            for row in (row for row in rows if row.role == "figure"):
                rate = row.notes["with_index_per_s"]
                print(f"round {round_number}, {name}, {row.group}: commit path "
                      f"{row.rate:,.0f}/s (median of {len(row.seconds)}), sustained with "
                      f"the index {rate:,.0f}/s = {rate / row.rate:.0%}", flush=True)


def cpu_rounds(indexes: dict, args: argparse.Namespace) -> None:
    answers: dict[str, list[dict]] = {name: [] for name in indexes}
    for _ in range(args.rounds):
        for name, index_class in indexes.items():
            with tempfile.TemporaryDirectory(prefix="tsunagi-index-cpu-",
                                             dir=args.workdir) as temp:
                answers[name].append(in_child(cpu_child, index_class, temp, args.cpu,
                                              args.group, args.profile))
    for name, answer in answers.items():
        print_cpu(name, answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-index", type=Path, default=None)
    parser.add_argument("--old-fanout", type=int, default=None,
                        help="index_merge_fanout the old index runs with (default: this one's)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=7, help="timed calls a case (median)")
    parser.add_argument("--memory", type=int, default=0, metavar="RECORDS",
                        help="measure memory over this many records indexed instead")
    parser.add_argument("--sample-every", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=20_000,
                        help="txids looked up one by one (and 10,000 at a time) at the end")
    parser.add_argument("--cpu", type=int, default=0, metavar="RECORDS",
                        help="measure the indexer's CPU a record over this many records")
    parser.add_argument("--group", type=int, default=4,
                        help="8,000-record blocks an add_blocks call (--cpu)")
    parser.add_argument("--profile", action="store_true", help="--cpu under cProfile")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    indexes = {"sorted runs": ledger_module.Index}
    if args.old_index is not None:
        indexes[f"{args.old_index.name} (old)"] = load_old_index(args.old_index, args.old_fanout)
    try:
        if args.cpu:
            cpu_rounds(indexes, args)
            return
        if not args.memory:
            sustained(indexes, args.rounds, args.calls)
            return
        for round_number in range(args.rounds):
            for name, index_class in indexes.items():
                with tempfile.TemporaryDirectory(prefix="tsunagi-index-memory-",
                                                 dir=args.workdir) as temp:
                    answer = in_child(memory_child, index_class, temp, args.memory,
                                      args.sample_every, args.probes)
                print_memory(name, round_number, answer)
    finally:
        ledger_module.Index = indexes["sorted runs"]


if __name__ == "__main__":
    main()
