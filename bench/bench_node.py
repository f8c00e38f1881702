"""End-to-end commit through a node: baseline (one transfer a request) beside batched.

Run ``python -m pytest bench/bench_node.py --benchmark-only`` (about a minute;
``TSUNAGI_BENCH_SCALE=0.1`` makes a smoke run). A node runs in its own process on loopback over
a chain prepared by the load generator (10,000 funded accounts of 8 keys); it is durable: every
block is fsynced before any request in it is answered. The load generator drives it from this
process with traffic signed before each timed round, and every round checks that all its
transfers were answered ok. Group ``node-commit``, the same workload of uniformly drawn signed
transfers in every case:

- ``baseline``: one connection, one transfer a request, the next sent when the answer is in:
  one block and one fsync per transfer;
- ``baseline-64``: 64 such connections at once, so the node's group commit can share blocks;
- ``batched``: 4 connections, 2 requests of 8,000 signed transfers in flight on each;
- ``batch-authorized``: 2 connections, 65,536 transfers a request under one signature.

The baseline rounds send fewer transfers (it is ~400x slower); rates, not times, are compared.
A node answers once a block is fsynced and indexes it afterwards, on its own thread, with up to
256 blocks waiting: a batch-authorized round (2,000,000 transfers, 31 blocks) fits in that queue,
so its rate is the burst rate of commit; sustained, the index sets the pace (measure that with
``tsunagi loadgen --spawn``, which reports transfers committed and indexed per second).
The closing summary prints each rate and batched over baseline (target at least 20x), and
writes them to bench/results/node.json.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest
from summary import module_summary

from tsunagi import loadgen as lg
from tsunagi.loadgen import plan as lg_plan

SCALE = float(os.environ.get("TSUNAGI_BENCH_SCALE", "1"))
ACCOUNTS = 10_000
KEYS = 8
RESULTS = Path(__file__).parent / "results" / "node.json"


def _scaled(count: int, minimum: int) -> int:
    return max(minimum, int(count * SCALE))


# name -> the load of one round
CASES = {
    "baseline": lg.LoadSpec(mode="baseline", clients=1, count=_scaled(300, 30)),
    "baseline-64": lg.LoadSpec(mode="baseline", clients=64, count=_scaled(6400, 640)),
    "batched": lg.LoadSpec(mode="batched", clients=4, window=2, batch_size=8000,
                           count=_scaled(96_000, 16_000)),
    "batch-authorized": lg.LoadSpec(mode="batch-authorized", clients=2, window=2,
                                    batch_size=65_536, count=_scaled(2_000_000, 262_144)),
}

_rates: dict[str, dict] = {}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A durable node in its own process over a freshly prepared chain."""
    directory = tmp_path_factory.mktemp("node-bench") / "chain"
    plan = lg.prepare_chain(directory, ACCOUNTS, keys=KEYS)
    with lg.NodeProcess(directory) as process:
        yield plan, process


def _print_summary(write) -> dict:
    write("")
    write("node-commit: transfers answered ok per second, median of the rounds")
    for name, row in _rates.items():
        write(f"{name:>18}: {row['rate']:>12,.0f} /s  p99 latency {row['p99_ms']:,.1f} ms  "
              f"({row['transfers']:,} transfers a round, {row['rounds']} rounds)")
    if "baseline" in _rates and "batched" in _rates:
        ratio = _rates["batched"]["rate"] / _rates["baseline"]["rate"]
        write(f"batched / baseline: {ratio:,.0f}x (target at least 20x: "
              f"{'met' if ratio >= 20 else 'NOT met'})")
        _rates["batched_over_baseline"] = {"ratio": ratio}
    return _rates


summary = module_summary(_rates, _print_summary, RESULTS)


@pytest.mark.parametrize("name", list(CASES))
def test_node_commit(benchmark, node, name):
    plan, process = node
    spec = CASES[name]
    summaries = []

    def build():
        base = lg_plan._sequence_base()
        sign_workers = os.cpu_count() or 1
        traffics = [lg.build_traffic(plan, spec, client, base, sign_workers)
                    for client in range(spec.clients)]
        return (traffics,), {}

    def run(traffics):
        summaries.append(lg.drive_traffic("127.0.0.1", process.port, traffics, spec).summary)

    benchmark.group = "node-commit"
    benchmark.pedantic(run, setup=build, rounds=3, iterations=1)
    for result in summaries:
        assert result["codes"] == {"ok": spec.count}, result["codes"]
        assert not result["errors"] and not result["lost"]
    rates = [s["records_per_s"] for s in summaries]
    _rates[name] = {"rate": statistics.median(rates), "rates": rates,
                    "p99_ms": statistics.median(s["latency_ms"]["p99"] for s in summaries),
                    "transfers": spec.count, "rounds": len(summaries)}
    benchmark.extra_info.update(_rates[name])
