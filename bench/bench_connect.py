"""ConnectionChain: completed cross-chain payments a second between two tsunagi chains, with
the full proven trail (twelve steps, each linked-chain step proven by header, Merkle path and
body), batched through the fast path (ConnectionNode.pay_many) beside the single path (pay).

Run ``python bench/bench_connect.py`` (a table; ``TSUNAGI_BENCH_SIZES=100,1000`` picks the
batch sizes, ``TSUNAGI_BENCH_ROUNDS`` the rounds of each, default 3) or
``python -m pytest bench/bench_connect.py --benchmark-only`` (group ``connect-payments``:
a pay_many of 1,000 a round beside 20 payments through pay(); compare their rates).
Every round builds three fresh durable ledgers in a temporary directory (chain A, chain B and
the connection chain running the connection contract) and checks that every payment ended
complete with its twelve steps and that money is conserved on both chains. Latency is per
payment, from its request submitted to its completion recorded on the connection chain: in
one batch every payment waits for the whole batch, so p50 and p99 are close to the batch's
time. The issue's floor is 5,000 payments a second (must-hold 5).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from tsunagi.connect import contract as cc
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode
from tsunagi.connect.tsunagi_chain import TsunagiConnector
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import source_sha256
from tsunagi.core.block import decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger

SIZES = [int(size) for size in os.environ.get("TSUNAGI_BENCH_SIZES", "100,1000,4000").split(",")]
ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "3"))
SINGLE_COUNT = 20  # the single path's payments a round: about 100 times slower
FLOOR_PER_S = 5_000
CHAIN_A, CHAIN_B, CHAIN_C = 101, 102, 100
PAYER, SETTLEMENT, AUTHORITY = 1, 2, 3  # chain A
SHOP, POOL = 1, 2  # chain B
OPERATOR = 1
TARGET = "tsunagi.connect.contract:ConnectionContract"
RULE = {"rule_id": 7, "source": CHAIN_A, "target": CHAIN_B, "rate_numerator": 3,
        "rate_denominator": 2, "fee": 10, "settlement": SETTLEMENT, "pool": POOL,
        "escrow_authority": AUTHORITY, "escrow_expiry_s": 3600, "payout_window_s": 600}
FUNDS = 10 ** 12
START_S = 1_800_000_000
TWELVE = 12


class World:
    """Chain A, chain B and the connection chain under ``directory``, and the node."""

    def __init__(self, directory: Path) -> None:
        self.now = START_S
        keys_a = {n: PrivateKey.generate() for n in (PAYER, SETTLEMENT, AUTHORITY)}
        keys_b = {n: PrivateKey.generate() for n in (SHOP, POOL, AUTHORITY)}
        self.a = self._chain(directory / "a", CHAIN_A, keys_a)
        self.b = self._chain(directory / "b", CHAIN_B, keys_b)
        operator_key = PrivateKey.generate()
        config = ChainConfig(name="connection", chain_id=CHAIN_C, asset_code="CON",
                             allocations=((operator_key.public_key, 1),),
                             contracts=(("connection", bytes.fromhex(source_sha256(TARGET))),))
        contracts = ChainContracts(config, {"connection": TARGET})
        self.c = Ledger.create(directory / "c", config, threads=1, calls=contracts)
        clock = self.clock
        connectors = {
            CHAIN_A: TsunagiConnector(self.a, keys_a, authority=AUTHORITY,
                                      settlement=SETTLEMENT, now_s=clock),
            CHAIN_B: TsunagiConnector(self.b, keys_b, authority=AUTHORITY, settlement=SHOP,
                                      now_s=clock)}
        self.node = ConnectionNode(self.c, contracts, operator_account=OPERATOR,
                                   operator_key=operator_key, connectors=connectors,
                                   journal=Journal(directory / "journal"),
                                   confirm=lambda transfer_id, entry: True, now_s=clock)
        self.node.call("setup", [CHAIN_C, [OPERATOR]])
        for ledger in (self.a, self.b):
            genesis = decode_block(ledger.block(0))
            self.node.call("add_chain", [ledger.config.chain_id, cc.KIND_TSUNAGI_POW,
                                         genesis.hash, ledger.config.bits, 0])
        self.node.call("add_rule", [RULE])
        self.totals = self.money()

    def clock(self) -> int:
        return self.now

    @staticmethod
    def _chain(directory: Path, chain_id: int, keys) -> Ledger:
        config = ChainConfig(name=directory.name, chain_id=chain_id,
                             asset_code=directory.name.upper(),
                             allocations=tuple((keys[n].public_key, FUNDS) for n in sorted(keys)))
        return Ledger.create(directory, config, threads=1)

    def money(self) -> tuple[int, int]:
        return tuple(sum(ledger.balance(n) + ledger.held(n) for n in (1, 2, 3))
                     for ledger in (self.a, self.b))

    def check(self, entries: dict, count: int) -> None:
        assert len(entries) == count
        for entry in entries.values():
            assert entry["state"] == "complete" and len(entry["trail"]) == TWELVE, entry
        assert self.money() == self.totals
        assert all(ledger.held(n) == 0 for ledger in (self.a, self.b) for n in (1, 2, 3))

    def close(self) -> None:
        self.node.journal.close()
        for ledger in (self.a, self.b, self.c):
            ledger.close()


def payments(count: int, salt: str) -> list[tuple]:
    return [(f"{salt}-{n}".encode(), 7, PAYER, SHOP, 100 + n % 7) for n in range(count)]


def batched_round(size: int, salt: str) -> tuple[float, list[float]]:
    """One pay_many of ``size`` payments on fresh chains: its seconds and the latencies."""
    with tempfile.TemporaryDirectory(prefix="bench-connect-") as directory:
        world = World(Path(directory))
        try:
            times: dict[bytes, tuple[float, float]] = {}
            started = time.perf_counter()
            entries = world.node.pay_many(payments(size, salt), times)
            seconds = time.perf_counter() - started
            world.check(entries, size)
            return seconds, [completed - requested for requested, completed in times.values()]
        finally:
            world.close()


def single_round(count: int, salt: str) -> tuple[float, list[float]]:
    """``count`` payments one after another through pay(): seconds and latencies."""
    with tempfile.TemporaryDirectory(prefix="bench-connect-") as directory:
        world = World(Path(directory))
        try:
            latencies, entries = [], {}
            started = time.perf_counter()
            for payment in payments(count, salt):
                requested = time.perf_counter()
                entries[payment[0]] = world.node.pay(*payment)
                latencies.append(time.perf_counter() - requested)
            seconds = time.perf_counter() - started
            world.check(entries, count)
            return seconds, latencies
        finally:
            world.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(label: str, count: int, run) -> dict:
    rates, latencies = [], []
    for round_index in range(ROUNDS):
        seconds, round_latencies = run(count, f"{label}-{round_index}")
        rates.append(count / seconds)
        latencies.extend(round_latencies)
    return {"label": label, "payments": count, "rate_per_s": statistics.median(rates),
            "p50_ms": 1e3 * percentile(latencies, 0.50),
            "p99_ms": 1e3 * percentile(latencies, 0.99)}


def rows() -> list[dict]:
    measured = [measure("single (pay)", SINGLE_COUNT, single_round)]
    measured += [measure(f"batched {size:,}", size, batched_round) for size in SIZES]
    return measured


def test_connect_payments_batched(benchmark):
    """pytest-benchmark: one pay_many of 1,000 (or the first size) payments a round."""
    benchmark.group = "connect-payments"
    size = 1000 if 1000 in SIZES else SIZES[0]
    benchmark.pedantic(lambda: batched_round(size, "pytest"), rounds=ROUNDS, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info.update(payments=size,
                                    rate_per_s=size / benchmark.stats.stats.median)


def test_connect_payments_single(benchmark):
    """The baseline on the same chains: SINGLE_COUNT payments through pay() a round."""
    benchmark.group = "connect-payments"
    benchmark.pedantic(lambda: single_round(SINGLE_COUNT, "pytest"), rounds=ROUNDS,
                       iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info.update(payments=SINGLE_COUNT,
                                    rate_per_s=SINGLE_COUNT / benchmark.stats.stats.median)


def main() -> None:
    print(f"completed cross-chain payments, chain A -> chain B, 12 proven steps each "
          f"(median of {ROUNDS} rounds; latency request -> completion over all rounds)")
    print(f"{'path':<16} {'payments':>9} {'per second':>11} {'p50 ms':>9} {'p99 ms':>9}")
    measured = rows()
    baseline = measured[0]["rate_per_s"]
    for row in measured:
        print(f"{row['label']:<16} {row['payments']:>9,} {row['rate_per_s']:>11,.0f} "
              f"{row['p50_ms']:>9.1f} {row['p99_ms']:>9.1f}  "
              f"{row['rate_per_s'] / baseline:5.1f}x single")
    best = max(row["rate_per_s"] for row in measured)
    print(f"floor {FLOOR_PER_S:,}/s (issue 14, must-hold 5): "
          f"{'met' if best >= FLOOR_PER_S else 'NOT met'} (best {best:,.0f}/s)")


if __name__ == "__main__":
    main()
