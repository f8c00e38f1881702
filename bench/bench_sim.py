"""Seeds a second of the Tendermint network simulation (tsunagi.consensus.sim), on one core
beside both cores, and a run of many seeds that reports the violations it finds.

Run ``python -m pytest bench/bench_sim.py --benchmark-only`` (about a minute): each group
runs the same batch of seeds on one core and in a pool of two processes, and the summary prints
the median rates and their ratio (bench/results/sim.json). The issue's run of at least 100,000
seeds is the command ``python bench/bench_sim.py --seeds 100000 --n 4`` (and ``--n 7``): it
prints seeds a second, the median and 99th percentile time of a seed, and every violating seed
(replay one with ``python -m tsunagi.consensus.sim --seed N --n 4``). ``--planted-bug`` counts
how many seeds catch the lock-ignoring bug instead.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import pytest
from summary import module_summary

from tsunagi.consensus.sim import run

BATCH = int(os.environ.get("TSUNAGI_BENCH_SIM_SEEDS", "400"))
ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "3"))
RESULTS = Path(__file__).parent / "results" / "sim.json"
CHUNK = 250  # seeds a task of the pool at most: dispatch costs nothing beside them

_rates: dict[str, float] = {}


def run_chunk(task: tuple[int, int, int, bool]) -> tuple[list[float], list[tuple[int, str]]]:
    """Seeds first..first+count at n: each one's time, and the violations (seed, first)."""
    first, count, n, planted_bug = task
    times, violations = [], []
    for seed in range(first, first + count):
        started = time.perf_counter()
        result = run(seed, n, planted_bug=planted_bug)
        times.append(time.perf_counter() - started)
        if result.violations:
            violations.append((seed, result.violations[0]))
    return times, violations


def run_seeds(first: int, count: int, n: int, jobs: int, planted_bug: bool = False,
              progress=None) -> tuple[float, list[float], list[tuple[int, str]]]:
    """Run the seeds on ``jobs`` processes: (wall seconds, seed times, violations)."""
    chunk = max(1, min(CHUNK, count // (4 * jobs)))  # a small batch still feeds every job
    tasks = [(start, min(chunk, first + count - start), n, planted_bug)
             for start in range(first, first + count, chunk)]
    times: list[float] = []
    violations: list[tuple[int, str]] = []
    started = time.perf_counter()
    if jobs == 1:
        answers = map(run_chunk, tasks)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        answers = pool.imap_unordered(run_chunk, tasks)
    try:
        for chunk_times, chunk_violations in answers:
            times += chunk_times
            violations += chunk_violations
            if progress is not None:
                progress(len(chunk_times))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return time.perf_counter() - started, times, sorted(violations)


def _print_summary(write) -> dict:
    write("")
    for n in (4, 7):
        one, two = _rates.get(f"n{n}_1core"), _rates.get(f"n{n}_2cores")
        if one and two:
            write(f"sim n={n}, {BATCH} seeds a round: {one:,.0f} seeds/s on one core, "
                  f"{two:,.0f} on two ({two / one:.2f}x; medians of {ROUNDS})")
    return _rates


summary = module_summary(_rates, _print_summary, RESULTS)


@pytest.mark.parametrize("jobs", [1, 2], ids=["1core", "2cores"])
@pytest.mark.parametrize("n", [4, 7])
def test_seeds_per_second(benchmark, n, jobs):
    found = []

    def batch():
        wall, times, violations = run_seeds(0, BATCH, n, jobs)
        found.append(violations)

    benchmark.group = f"sim n={n} {BATCH} seeds"
    benchmark.pedantic(batch, rounds=ROUNDS, iterations=1)
    assert all(violations == [] for violations in found)
    if benchmark.stats is not None:
        rate = BATCH / benchmark.stats.stats.median
        _rates[f"n{n}_{'1core' if jobs == 1 else '2cores'}"] = rate
        benchmark.extra_info["seeds_per_s"] = rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100_000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--planted-bug", action="store_true")
    args = parser.parse_args(argv)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"n={args.n}", total=args.seeds)
        wall, times, violations = run_seeds(args.first, args.seeds, args.n, args.jobs,
                                            args.planted_bug,
                                            lambda done: bar.advance(task, done))
    times.sort()
    what = "planted bug (honest validators ignore their lock)" if args.planted_bug \
        else f"f = {(args.n - 1) // 3} Byzantine"
    print(f"n={args.n}, {what}: {args.seeds:,} seeds from {args.first} on {args.jobs} "
          f"processes in {wall:,.1f} s: {args.seeds / wall:,.0f} seeds/s; a seed takes "
          f"{statistics.median(times) * 1e3:.2f} ms median, "
          f"{times[int(len(times) * 0.99)] * 1e3:.1f} ms p99, {times[-1] * 1e3:.0f} ms max")
    print(f"violations: {len(violations)} seeds" + "".join(
        f"\n  seed {seed}: {first}" for seed, first in violations[:20]))
    if len(violations) > 20:
        print(f"  ... {len(violations) - 20} more")
    return 1 if violations and not args.planted_bug else 0


if __name__ == "__main__":
    sys.exit(main())
