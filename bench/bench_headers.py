"""Chain.accept_headers of 1,000,000 headers in runs of 16,384: the in-process ceiling of
headers-first sync.

Run ``python -m pytest bench/bench_headers.py --benchmark-only`` (under a minute once the
headers are cached; ``TSUNAGI_BENCH_SMALL=1`` takes 100,000). The issue's floor is a million
headers a second over loopback; this is what the Chain itself takes, without the network.

The headers are mined once on a fresh chain's genesis at the development bits (0x207fffff:
about two tries a header), one NonceSearch a header, and cached in the temp directory for
the next run (tsunagi-bench-headers-<count>-<genesis hash>.bin). Each timed round gives a
fresh node's Chain every header, run after run, as a peer's ``headers`` answers would come:
every run must be taken whole, and the best header chain must end at the last header. The
summary prints the median rate and writes it to bench/results/headers.json.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from summary import module_summary

from tsunagi import hashing
from tsunagi.consensus.chain import Chain, HeadersVerdict
from tsunagi.core.block import BLOCK_VERSION, HEADER_BYTES
from tsunagi.core.config import ChainConfig
from tsunagi.ledger.ledger import Ledger

SMALL = os.environ.get("TSUNAGI_BENCH_SMALL") == "1"
HEADERS = 100_000 if SMALL else 1_000_000
RUN_HEADERS = 16_384  # a run: what one peer message carries here
ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "5"))
CONFIG = ChainConfig(name="headers-bench", chain_id=9, asset_code="TSU")
ROOT = bytes(32)  # headers without bodies: the Chain checks links, work, bits and time only
GROUP = f"headers {HEADERS:,}"
RESULTS = Path(__file__).parent / "results" / "headers.json"

_rates: dict[str, float] = {}


def _mine(genesis_header: bytes, count: int) -> bytes:
    """``count`` headers on the genesis header, each a second after its parent."""
    out = bytearray(count * HEADER_BYTES)
    view = memoryview(out)
    prev = hashing.sha256d(genesis_header)
    time_s = struct.unpack_from("<I", genesis_header, 68)[0]
    for height in range(1, count + 1):
        header = hashing.make_header(BLOCK_VERSION, prev, ROOT, time_s + height, CONFIG.bits)
        nonce = hashing.NonceSearch(header, 0, 1 << 16).run(1)
        at = (height - 1) * HEADER_BYTES
        view[at:at + 76] = header[:76]
        struct.pack_into("<I", out, at + 76, nonce)
        prev = hashing.sha256d(view[at:at + HEADER_BYTES])
    return bytes(out)


@pytest.fixture(scope="module")
def genesis(tmp_path_factory) -> bytes:
    with Ledger.create(tmp_path_factory.mktemp("genesis") / "g", CONFIG) as ledger:
        return ledger.block(0)[:HEADER_BYTES]


@pytest.fixture(scope="module")
def headers(genesis) -> bytes:
    """The headers, from the cache when an earlier run left them there."""
    name = f"tsunagi-bench-headers-{HEADERS}-{hashing.sha256d(genesis)[::-1].hex()[:16]}.bin"
    cached = Path(tempfile.gettempdir()) / name
    if cached.exists() and cached.stat().st_size == HEADERS * HEADER_BYTES:
        return cached.read_bytes()
    made = _mine(genesis, HEADERS)
    partial = cached.with_suffix(".tmp")
    partial.write_bytes(made)
    os.replace(partial, cached)
    return made


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
        view = memoryview(headers)
        step = RUN_HEADERS * HEADER_BYTES
        for first in range(0, len(view), step):
            answer = chain.accept_headers(view[first:first + step])
            assert answer.verdict is HeadersVerdict.ok
            assert answer.taken == len(view[first:first + step]) // HEADER_BYTES

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
