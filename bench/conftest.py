"""Fixtures of the hashing benchmarks: this machine's SHA-256 limit and the workloads.

pytest collects ``bench_*.py`` here (the project's test paths do not include bench/), and at the
end prints every case's rate beside the machine's limit and the hashlib baseline.
"""

from __future__ import annotations

import os

import pytest

import hashing_table as table


def pytest_collect_file(parent, file_path):
    # bench_*.py do not match pytest's default test_*.py pattern: collect them here.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        if not parent.session.isinitpath(file_path):
            return pytest.Module.from_parent(parent, path=file_path)
    return None


_measured: list[table.Measured] = []
_machine: list[table.Machine] = []


@pytest.fixture(scope="session")
def machine() -> table.Machine:
    """The limit, measured once a session (about 6 s: three 2-second openssl runs)."""
    measured = table.measure_machine(repeats=3)
    _machine.append(measured)
    return measured


@pytest.fixture(scope="session")
def workloads() -> table.Workloads:
    # TSUNAGI_BENCH_SCALE=0.05 makes a quick smoke run; the figures are at 1.
    return table.Workloads(float(os.environ.get("TSUNAGI_BENCH_SCALE", "1")))


@pytest.fixture
def run_case(benchmark, machine):
    """Times one case with pytest-benchmark and keeps its median for the closing summary."""

    def run(case: table.Case) -> None:
        benchmark.group = case.group
        with table.forced_backend(case.backend):
            answer = benchmark.pedantic(case.run, rounds=case.rounds, iterations=1,
                                        warmup_rounds=1)
        assert case.right(answer), f"{case.group} / {case.name} gave a wrong answer"
        if benchmark.stats is None:  # --benchmark-disable: ran once, nothing to report
            return
        seconds = list(benchmark.stats.stats.data)
        measured = table.Measured(case, seconds, case.limit(machine))
        benchmark.extra_info.update(
            items=case.items, unit=case.unit, rate_per_s=measured.rate,
            limit_per_s=measured.limit, of_limit=measured.of_limit,
            target=case.target.text if case.target else None, met=measured.met)
        _measured.append(measured)

    return run


def pytest_terminal_summary(terminalreporter):
    if not _measured:
        return
    machine = _machine[0]
    faster = table.speedups(_measured)
    write = terminalreporter.write_line
    terminalreporter.section("hashing: median rate, machine limit, hashlib baseline")
    write(f"limit: SHA-256 at {table.si(machine.compressions_per_s)}compressions/s a core "
          f"(openssl speed, median of {len(machine.openssl_runs)}), {machine.cores} cores")
    for i, row in enumerate(_measured):
        target = ""
        if row.case.target:
            target = f"  target {row.case.target.text}: {'met' if row.met else 'NOT met'}"
        speedup = f"  {faster[i]:.0f}x hashlib" if i in faster else ""
        write(f"{row.case.group:>16} | {row.case.name:<22} {table.si(row.rate)}"
              f"{row.case.unit}/s = {row.of_limit:.0%} of {table.si(row.limit)}/s"
              f"{speedup}{target}")
