"""Chain.accept_headers of 1,000,000 headers in runs of 16,384: the in-process ceiling of
headers-first sync.

Run ``python -m pytest bench/bench_headers.py --benchmark-only`` (under a minute once the
headers are cached; ``TSUNAGI_BENCH_SMALL=1`` takes 100,000). The issue's floor is a million
headers a second over loopback; this is what the Chain itself takes, without the network.

The headers (bench/headers_cache.py) are mined once on a fresh chain's genesis at the
development bits (0x207fffff: about two tries a header), one NonceSearch a header, and cached
in the temp directory for the next run (tsunagi-bench-headers-<count>-<genesis hash>.bin),
which bench/bench_network.py shares. Each timed round gives a
fresh node's Chain every header, run after run, as a peer's ``headers`` answers would come:
every run must be taken whole, and the best header chain must end at the last header. The
summary prints the median rate and writes it to bench/results/headers.json.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from headers_cache import CONFIG, RUN_HEADERS, accept_all, cached_headers, genesis_header
from summary import module_summary

from tsunagi import hashing
from tsunagi.consensus.chain import Chain
from tsunagi.core.block import HEADER_BYTES
from tsunagi.ledger.ledger import Ledger

SMALL = os.environ.get("TSUNAGI_BENCH_SMALL") == "1"
HEADERS = 100_000 if SMALL else 1_000_000
ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "5"))
GROUP = f"headers {HEADERS:,}"
RESULTS = Path(__file__).parent / "results" / "headers.json"

_rates: dict[str, float] = {}


@pytest.fixture(scope="module")
def genesis(tmp_path_factory) -> bytes:
    return genesis_header(tmp_path_factory.mktemp("genesis") / "g")


@pytest.fixture(scope="module")
def headers(genesis) -> bytes:
    """The headers, from the cache when an earlier run left them there."""
    return cached_headers(genesis, HEADERS)


def _print_summary(write) -> dict:
    write("")
    write(f"{GROUP} in runs of {RUN_HEADERS:,}: {_rates['headers_per_s']:,.0f} headers/s "
          f"(median of {ROUNDS}; the issue's floor over loopback is 1,000,000/s)")
    return _rates


summary = module_summary(_rates, _print_summary, RESULTS)


def test_accept_headers(benchmark, headers, tmp_path):
    chains = []

    def setup():
        ledger = Ledger.create(tmp_path / f"node{len(chains)}", CONFIG)
        chains.append(Chain(ledger, clock=lambda: HEADERS + 10**6))
        return (chains[-1],), {}

    def run(chain: Chain) -> None:
        accept_all(chain, headers)

    benchmark.group = GROUP
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    last = hashing.sha256d(headers[-HEADER_BYTES:])
    for chain in chains:
        assert chain.best_header[:2] == (HEADERS, last)
        chain.ledger.close()
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        _rates.update(headers=HEADERS, run_headers=RUN_HEADERS,
                      median_s=benchmark.stats.stats.median,
                      headers_per_s=HEADERS / benchmark.stats.stats.median)
        benchmark.extra_info["headers_per_s"] = _rates["headers_per_s"]
