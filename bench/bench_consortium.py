"""Consortium chains through the load generator: validators agree on every block (Tendermint)
and clients are answered once their block is final.

Run ``python -m pytest bench/bench_consortium.py --benchmark-only`` (a few minutes here; the
signed traffic is cached in the temp folder after the first run). ``TSUNAGI_BENCH_SMALL=1``
makes a CI-sized run. Every validator is a real ``tsunagi node --validator-key`` process on
loopback, each dialing all the others; every node checks every signature (each as records
enter its mempool, or as it stages a proposal), so on this 2-core machine about a quarter of
the single-node rate is the ceiling with four validators. Nothing asserts on speed: every
transfer counted was answered ok and final, and afterwards every validator holds the same
chain.

Cases, each a load generator run (4 clients, one at each of the first four validators, 2
requests in flight each) against a consortium chain made by ``loadgen.prepare_chain(...,
validators=...)`` (10,000 accounts of 8 keys):

- ``signed``: batched transfers, each with its own BIP340 signature, 4,000 a request;
- ``batch-authorized``: one signature a batch of 16,384;
- with 4 validators and with 7; and with 4 validators of which one is down (SIGKILLed before
  the run: every fourth height waits for its propose timeout).

Finality latency is the load generator's: from a request's send to its answer, which a
validator gives once the block holding it is final and durable. Under load it includes the
queueing of the request behind the ones in flight; ``quiet`` is one client sending one batch
of 10 signed transfers at a time. The summary prints every figure and writes them to
bench/results/consortium.json; bench/results/consortium.png draws them.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from bench_network import _cpu_s, _drive, _signed
from summary import module_summary

from tsunagi.core.keyfile import save_key
from tsunagi.core.keys import PrivateKey

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import net_helpers
from net_helpers import NetNode, free_ports, wait_until

SMALL = os.environ.get("TSUNAGI_BENCH_SMALL") == "1"
ACCOUNTS, KEYS, CLIENTS, WINDOW = 10_000, 8, 4, 2
SIGNED = (40_000 if SMALL else 240_000, 4000)
AUTHORIZED = (400_000 if SMALL else 4_000_000, 16_384)
QUIET_BATCHES, QUIET_BATCH = (20 if SMALL else 100), 10
PASSPHRASE = "bench validator"
# Round timeouts: with 1 s to propose (and 10 ms between heights) rounds failed under this
# load, four validators sharing two cores, and signed transfers fell to 15-19 k/s; with these
# the same load ran at 20-27 k/s (bench runs of 2026-12-02).
TIMEOUTS = {"timeout_propose_ms": 2000, "timeout_prevote_ms": 1000,
            "timeout_precommit_ms": 1000, "timeout_delta_ms": 500, "block_wait_ms": 20}
RESULTS = Path(__file__).parent / "results" / "consortium.json"
CHART = RESULTS.with_suffix(".png")
VALIDATOR_KEYS = [PrivateKey.from_bytes(bytes([0x90 + n]) * 32) for n in range(7)]

_figures: dict[str, dict] = {}
net_helpers.ENV["TSUNAGI_PASSPHRASE"] = PASSPHRASE


class Consortium:
    """A prepared consortium chain of ``count`` validators, their key files and traffic."""

    def __init__(self, root: Path, count: int) -> None:
        from tsunagi import loadgen as lg

        self.root, self.count = root, count
        self.keys = VALIDATOR_KEYS[:count]
        self.plan = lg.prepare_chain(root / "chain", ACCOUNTS, keys=KEYS,
                                     validators=self.keys, **TIMEOUTS)
        self.key_files = [save_key(root / f"validator{n}.key", key, PASSPHRASE,
                                   scrypt_n=1024) for n, key in enumerate(self.keys)]
        self.runs = 0

    def traffic(self, mode: str, count: int, batch: int, clients: int = CLIENTS,
                window: int = WINDOW, base: int = 1):
        from tsunagi import loadgen as lg

        spec = lg.LoadSpec(mode=mode, clients=clients, batch_size=batch, window=window,
                           count=count)
        name = f"consortium-{mode}-{count}x{batch}-{clients}-{base}"
        return spec, _signed(self.plan, spec, base, clients, name)

    def start(self) -> list[NetNode]:
        """The validators, on fresh copies of the prepared chain, each dialing the others."""
        self.runs += 1
        ports = free_ports(self.count)
        nodes = []
        for n in range(self.count):
            data = shutil.copytree(self.root / "chain", self.root / f"run{self.runs}-{n}")
            peers = [f"127.0.0.1:{ports[m]}" for m in range(self.count) if m != n]
            nodes.append(NetNode(data, ports[n], peers, mine=False,
                                 extra=("--validator-key", str(self.key_files[n]),
                                        "--log-level", "warning")))
        try:
            for node in nodes:
                node.start()
            wait_until(lambda: all(_peers(node) >= self.count - 1 for node in nodes),
                       "validators connected to each other")
        except BaseException:
            for node in nodes:
                node.stop()
            raise
        return nodes


def _peers(node: NetNode) -> int:
    with node.client() as client:
        return client.network().peers


def _heights(nodes: list[NetNode]) -> list[int]:
    out = []
    for node in nodes:
        with node.client() as client:
            out.append(client.status().height)
    return out


def _same_chain(nodes: list[NetNode]) -> int:
    """Waits until the live validators are at one height, checks they hold the same blocks
    there (the tip hash), and returns the height."""
    def agreed():
        found = []
        for node in nodes:
            with node.client() as client:
                status = client.status()
                found.append((status.height, bytes(status.tip_hash)))
        return found[0] if len(set(found)) == 1 else None

    height, _ = wait_until(agreed, "the validators agreeing on one tip")
    return height


def _run(consortium: Consortium, mode: str, count: int, batch: int, down: int = 0) -> dict:
    spec, traffics = consortium.traffic(mode, count, batch)
    nodes = consortium.start()
    try:
        for node in nodes[len(nodes) - down:]:
            node.stop(kill=True)
        live = nodes[:len(nodes) - down]
        targets = [live[k % len(live)].port for k in range(CLIENTS)]
        before = _cpu_s(live)
        result = _drive(targets, traffics, spec)
        cpu = [after - first for after, first in zip(_cpu_s(live), before)]
        quiet_spec, quiet = consortium.traffic("batched", QUIET_BATCHES * QUIET_BATCH,
                                               QUIET_BATCH, clients=1, window=1,
                                               base=1 + 4 * count)
        quiet_result = _drive([live[0].port], quiet, quiet_spec)
        height = _same_chain(live)
    finally:
        for node in nodes:
            node.stop()
    return {"transfers_per_s": result["records_per_s"], "transfers": result["records_ok"],
            "elapsed_s": result["elapsed_s"], "latency_ms": result["latency_ms"],
            "quiet_latency_ms": quiet_result["latency_ms"], "height": height,
            "validators": consortium.count, "down": down,
            "node_cpu_s": [round(s, 2) for s in cpu]}


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> Consortium:
    return Consortium(tmp_path_factory.mktemp("consortium4"), 4)


@pytest.fixture(scope="module")
def seven(tmp_path_factory) -> Consortium:
    return Consortium(tmp_path_factory.mktemp("consortium7"), 7)


CASES = [("signed", "batched", SIGNED), ("batch-authorized", "batch-authorized", AUTHORIZED)]


def _measure(benchmark, label: str, consortium: Consortium, mode: str, count: int,
             batch: int, down: int = 0) -> None:
    results = []
    benchmark.group = "consortium"
    benchmark.pedantic(lambda: results.append(_run(consortium, mode, count, batch, down)),
                       rounds=1, iterations=1)
    _figures[label] = results[0]


@pytest.mark.parametrize("name,mode,size", CASES, ids=[c[0] for c in CASES])
def test_four_validators(benchmark, four, name, mode, size):
    _measure(benchmark, f"{name}, 4 validators", four, mode, *size)


@pytest.mark.parametrize("name,mode,size", CASES, ids=[c[0] for c in CASES])
def test_seven_validators(benchmark, seven, name, mode, size):
    _measure(benchmark, f"{name}, 7 validators", seven, mode, *size)


@pytest.mark.parametrize("name,mode,size", CASES, ids=[c[0] for c in CASES])
def test_four_validators_one_down(benchmark, four, name, mode, size):
    count, batch = size
    _measure(benchmark, f"{name}, 4 validators, 1 down", four, mode, count // 4, batch, down=1)


def _summarize(write) -> dict:
    write("")
    write("consortium chains: final transfers a second, finality latency (ms)")
    for name, row in _figures.items():
        load, quiet = row["latency_ms"], row["quiet_latency_ms"]
        write(f"  {name:38} {row['transfers_per_s']:>11,.0f}/s   under load p50 "
              f"{load['p50']:>7.0f} p99 {load['p99']:>7.0f}   quiet p50 {quiet['p50']:>5.0f} "
              f"p99 {quiet['p99']:>5.0f}   height {row['height']}")
    _chart()
    return {"figures": _figures, "machine_cpus": os.cpu_count(), "time": time.time()}


def _chart() -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(_figures)
    figure, (rate, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    rate.barh(names, [_figures[n]["transfers_per_s"] for n in names], color="#4c72b0")
    rate.set_xscale("log")
    rate.set_xlabel("final transfers a second (log)")
    rate.invert_yaxis()
    for offset, (key, label) in enumerate((("latency_ms", "under load"),
                                           ("quiet_latency_ms", "quiet"))):
        latency.barh([i + 0.4 * offset for i in range(len(names))],
                     [_figures[n][key]["p50"] for n in names], height=0.4, label=f"p50 {label}")
    latency.set_yticks([i + 0.2 for i in range(len(names))], names)
    latency.set_xlabel("finality latency, ms")
    latency.invert_yaxis()
    latency.legend()
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)
    plt.close(figure)


summary = module_summary(_figures, _summarize, RESULTS)
