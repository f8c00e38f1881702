"""Commit certificates a light client checks a second: LightClient.check_many over 10,000
version 2 headers and certificates, with 4 and with 7 validators, beside checking one block at
a time (one native call a certificate) on the same chain.

Run ``python -m pytest bench/bench_light.py --benchmark-only`` (about a minute: signing the
110,000 precommits takes most of it). Every validator signs every block (the heaviest
certificate of a set, as Tendermint commits carry every precommit that came in time). The
summary prints the median rates and their ratio, and writes bench/results/light.json.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from summary import module_summary

from tsunagi.consensus.certificate import ValidatorSet, make_certificate
from tsunagi.consensus.light import LightClient, LightResult
from tsunagi.core.block import BLOCK_VERSION_CONSORTIUM, decode_block, encode_block
from tsunagi.core.keys import PrivateKey

BLOCKS = int(os.environ.get("TSUNAGI_BENCH_BLOCKS", "10000"))
ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "5"))
RESULTS = Path(__file__).parent / "results" / "light.json"
GENESIS_HASH = hashlib.sha256(b"light client benchmark genesis").digest()
THREADS = (1, 2)

_rates: dict[str, float] = {}


class SignedChain:
    def __init__(self, validators: int) -> None:
        keys = [PrivateKey.from_bytes(hashlib.sha256(bytes([index])).digest())
                for index in range(validators)]
        self.validators = ValidatorSet([(key.public_key, 1) for key in keys])
        signers = list(enumerate(keys))
        headers, self.seals, previous = [], [], GENESIS_HASH
        for height in range(1, BLOCKS + 1):
            data = encode_block(prev_hash=previous, time=height, bits=0, records=b"",
                                codes=b"", signatures=b"", version=BLOCK_VERSION_CONSORTIUM)
            previous = decode_block(data).hash
            headers.append(bytes(data[:80]))
            self.seals.append(make_certificate(GENESIS_HASH, height, 0, previous, signers,
                                               self.validators).encode())
        self.headers = b"".join(headers)

    def client(self, threads: int) -> LightClient:
        return LightClient(GENESIS_HASH, GENESIS_HASH, self.validators, threads=threads)


@pytest.fixture(scope="module", params=[4, 7], ids=lambda count: f"{count}-validators")
def chain(request) -> SignedChain:
    return SignedChain(request.param)


def _record(benchmark, name: str) -> None:
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        _rates[name] = BLOCKS / benchmark.stats.stats.median
        benchmark.extra_info["certificates_per_s"] = _rates[name]


@pytest.mark.parametrize("threads", THREADS)
def test_check_many(benchmark, chain, threads):
    benchmark.group = f"light {len(chain.validators)} validators"
    clients = []

    def setup():
        clients.append(chain.client(threads))
        return (clients[-1],), {}

    benchmark.pedantic(lambda light: light.check_many(chain.headers, chain.seals),
                       setup=setup, rounds=ROUNDS, iterations=1)
    assert all(light.height == BLOCKS for light in clients)
    _record(benchmark, f"check_many {len(chain.validators)} validators {threads} threads")


def test_one_block_at_a_time(benchmark, chain):
    """The baseline: LightClient.check per block, one native call of a few signatures each."""
    benchmark.group = f"light {len(chain.validators)} validators"

    def run(light: LightClient) -> None:
        for height in range(BLOCKS):
            header = chain.headers[80 * height:80 * height + 80]
            assert light.check(header, chain.seals[height]).result is LightResult.ok

    benchmark.pedantic(run, setup=lambda: ((chain.client(1),), {}), rounds=ROUNDS,
                       iterations=1)
    _record(benchmark, f"one at a time {len(chain.validators)} validators 1 thread")


def _print_summary(write) -> dict:
    write("")
    write(f"light client, {BLOCKS:,} blocks, every validator signing every block "
          f"(medians of {ROUNDS}):")
    for name, rate in sorted(_rates.items()):
        write(f"  {name:42s} {rate:10,.0f} certificates/s")
    for count in (4, 7):
        base = _rates.get(f"one at a time {count} validators 1 thread")
        for threads in THREADS:
            fast = _rates.get(f"check_many {count} validators {threads} threads")
            if base and fast:
                write(f"  check_many {threads} threads / one at a time, {count} validators: "
                      f"{fast / base:.2f}x")
    return dict(_rates, blocks=BLOCKS, rounds=ROUNDS)


summary = module_summary(_rates, _print_summary, RESULTS)
