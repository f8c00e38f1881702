"""Many nodes, one chain: header sync, signed transfers through four nodes, block propagation.

Run ``python -m pytest bench/bench_network.py --benchmark-only`` (about four minutes here
once the headers and the signed traffic are cached in the temp folder; the first run mines
and signs them too). ``TSUNAGI_BENCH_SMALL=1`` makes a CI-sized run (100,000 headers, 40,000
transfers); TSUNAGI_BENCH_ROUNDS sets the rounds of the header cases (default 3). Every node
is a real ``tsunagi node`` process on loopback (tests/net_helpers.py, NetNode); every figure
is put beside the single-node figure measured in the same run. Nothing asserts on speed:
the checks are of the outcome (the tip reached, every transfer confirmed ok, equal states).

Header sync, group ``network headers``, on the headers of bench/headers_cache.py (the
headers-bench chain, no bodies):

- ``in-process``: the single-node figure, ``Chain.accept_headers`` of every header in runs of
  16,384 (one peer message's worth), as bench/bench_headers.py measures it;
- ``push``: a peer in this process (bench/peer_probe.py) sends every header, unasked, to a new
  node: from the first frame written to the node's answer that its best header chain ends at
  the last header (a ``get_headers`` after a locator of that hash alone, answered with none);
- ``serve``: that peer asks a node holding every header for ``get_headers`` from genesis,
  each request's locator the last hash received, and checks each answer natively
  (``hashing.validate_headers``): what one node serves;
- ``sync``: a new node started with that node as its peer syncs headers first, from its
  ready line (the process is up, the dial comes next) to its best header chain ending at the
  tip, polled every few milliseconds by the peer in this process. The serving node has no
  bodies, so the new node's block requests are answered ``not_found`` and cost it nothing to
  check: this is the header path alone.

The issue's floor over loopback is a million headers a second.

Signed transfers, group ``network transfers``: a chain prepared by the load generator (10,000
funded accounts of 8 keys), TRANSFERS transfers with their own BIP340 signatures in batches
of 4,000 (signed once and cached), 4 clients with 2 requests in flight each:

- ``single-node``: all four clients at one mining node with no peers;
- ``four-nodes``: one miner and three nodes that do not mine, each with the miner as its one
  peer (a star), a client at each node. A node that does not mine relays its clients' records
  to the miner and answers them once a connected block holds them, so every transfer counted
  was answered ok with a block height; every node checks every signature (the miner as it
  builds the block, the others as they connect it). Afterwards all four must reach one tip,
  and their states (``Ledger.state.canonical()``, every balance and sequence) must be equal.

Propagation, measured during ``four-nodes`` by a process of its own (bench/peer_probe.py,
``watch_blocks``): a peer of the miner hears each block's ``announce``, sent as the miner
connects it, and a block subscription on every node hears it once it is durable there; the
figure is the time from the announce to each other node's notice (p50, p99, and to all three),
under the throughput load and then at low load (one client, one batch of 10 at a time, a
block each). The summary prints each figure and its ratio to the single node, and writes
them to bench/results/network.json; bench/results/network.png draws them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from headers_cache import CONFIG, RUN_HEADERS, accept_all, cached_headers, genesis_header
from peer_probe import PeerProbe
from summary import module_summary

from tsunagi import hashing
from tsunagi.consensus.chain import Chain
from tsunagi.core.block import HEADER_BYTES
from tsunagi.ledger.ledger import Ledger
from tsunagi.node import protocol as p

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from net_helpers import NetNode, free_ports  # tests/ holds the node helpers

SMALL = os.environ.get("TSUNAGI_BENCH_SMALL") == "1"
ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "3"))
HEADERS = 100_000 if SMALL else 1_000_000
POLL_S = 0.002  # how often a node is asked whether its best header chain reached the tip
RESULTS = Path(__file__).parent / "results" / "network.json"
CHART = RESULTS.with_suffix(".png")

_figures: dict[str, dict] = {}


# ---------------------------------------------------------------------- header sync

class HeaderNetwork:
    """The headers, a folder for nodes, and a node that holds every header (pushed to it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.genesis = genesis_header(root / "template")
        self.genesis_hash = hashing.sha256d(self.genesis)
        self.headers = cached_headers(self.genesis, HEADERS)
        self.tip_hash = hashing.sha256d(self.headers[-HEADER_BYTES:])
        self.nodes: list[NetNode] = []
        self.server = self.new_node()

    def new_node(self, peers: tuple[int, ...] = (), start: bool = True) -> NetNode:
        """A node of the headers-bench chain (genesis only) on a port of its own."""
        import shutil

        data = self.root / f"node{len(self.nodes)}"
        shutil.copytree(self.root / "template", data)
        node = NetNode(data, free_ports(1)[0], [f"127.0.0.1:{port}" for port in peers],
                       mine=False)
        self.nodes.append(node)
        return node.start() if start else node

    async def ends_at_tip(self, port: int, started_s: float | None = None,
                          push: bool = False) -> float:
        """Seconds from ``started_s`` (default: now) until the node on ``port`` has the whole
        header chain, polled every POLL_S; ``push`` first sends it every header, unasked."""
        probe = await PeerProbe.connect("127.0.0.1", port, self.genesis_hash)
        started_s = time.monotonic() if started_s is None else started_s
        try:
            step = RUN_HEADERS * HEADER_BYTES
            for first in range(0, len(self.headers) if push else 0, step):
                probe.send(p.Headers(self.headers[first:first + step]))
            while not await probe.ends_at(self.tip_hash):
                await asyncio.sleep(POLL_S)
            return time.monotonic() - started_s
        finally:
            probe.close()

    async def push(self, port: int) -> float:
        """Sends every header to the node on ``port`` unasked; seconds until it holds them."""
        return await self.ends_at_tip(port, push=True)

    async def pull(self, port: int) -> float:
        """Asks the node on ``port`` for every header, checking each answer; seconds."""
        probe = await PeerProbe.connect("127.0.0.1", port, self.genesis_hash)
        try:
            started_s = time.monotonic()
            prev, taken = self.genesis_hash, 0
            while True:
                _, data = await probe.get_headers([prev], RUN_HEADERS)
                count = memoryview(data).nbytes // HEADER_BYTES
                if not count:
                    break
                index, _ = hashing.validate_headers(data, prev)
                assert index == count, f"header {taken + index} does not hold"
                taken += count
                prev = hashing.sha256d(bytes(data[-HEADER_BYTES:]))
            elapsed_s = time.monotonic() - started_s
        finally:
            probe.close()
        assert taken == HEADERS and prev == self.tip_hash
        return elapsed_s

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="module")
def header_network(tmp_path_factory):
    network = HeaderNetwork(tmp_path_factory.mktemp("net-headers"))
    try:
        _record_header_case("push", [asyncio.run(network.push(network.server.port))])
        yield network
    finally:
        network.close()


def _record_header_case(name: str, seconds: list[float]) -> None:
    """Adds rounds of a header case (seconds each, all HEADERS) to the figures."""
    row = _figures.setdefault("headers", {"headers": HEADERS}).setdefault(name, {"seconds": []})
    row["seconds"] += seconds
    row["median_s"] = statistics.median(row["seconds"])
    row["headers_per_s"] = HEADERS / row["median_s"]


def _header_group() -> str:
    return f"network headers {HEADERS:,}"


def test_headers_in_process(benchmark, header_network, tmp_path):
    """The single-node figure: Chain.accept_headers in this process, runs of 16,384."""
    chains = []

    def setup():
        ledger = Ledger.create(tmp_path / f"chain{len(chains)}", CONFIG)
        chains.append(Chain(ledger, clock=lambda: HEADERS + 10**6))
        return (chains[-1],), {}

    def run(chain: Chain) -> None:
        accept_all(chain, header_network.headers)

    benchmark.group = _header_group()
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    for chain in chains:
        assert chain.best_header[:2] == (HEADERS, header_network.tip_hash)
        chain.ledger.close()
    if benchmark.stats is not None:
        _record_header_case("in-process", list(benchmark.stats.stats.data))


def test_headers_push(benchmark, header_network):
    """Every header sent unasked to a new node (a round on the server was done already)."""
    seconds = []

    def setup():
        return (header_network.new_node(),), {}

    def run(node: NetNode) -> None:
        seconds.append(asyncio.run(header_network.push(node.port)))
        node.stop()

    benchmark.group = _header_group()
    benchmark.pedantic(run, setup=setup, rounds=max(1, ROUNDS - 1), iterations=1)
    _record_header_case("push", seconds)


def test_headers_serve(benchmark, header_network):
    """get_headers from genesis to the tip, asked of the node holding every header."""
    seconds = []
    benchmark.group = _header_group()
    benchmark.pedantic(lambda: seconds.append(asyncio.run(
        header_network.pull(header_network.server.port))), rounds=ROUNDS, iterations=1)
    _record_header_case("serve", seconds)


def test_headers_sync(benchmark, header_network):
    """A new node syncing headers first from the node holding every header."""
    seconds = []

    def run() -> None:
        node = header_network.new_node((header_network.server.port,), start=False)
        node.start()
        ready_s = time.monotonic()
        seconds.append(asyncio.run(header_network.ends_at_tip(node.port, ready_s)))
        node.stop()

    benchmark.group = _header_group()
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    _record_header_case("sync", seconds)


# ---------------------------------------------------------------------- transfers

ACCOUNTS, KEYS = 10_000, 8
TRANSFERS = 40_000 if SMALL else 400_000
BATCH, WINDOW = 4_000, 2  # records a submit_batch, requests in flight a client
CLIENTS = 4  # one a node in the network; all four on the node alone
QUIET_BLOCKS = 100 if SMALL else 300  # low load: one batch of QUIET_BATCH at a time
QUIET_BATCH = 10
QUIET_BASE = 10**15  # sequences of the low load, above every one of the throughput run
# The signed traffic is cached in the temp folder under this version: change it when what
# is signed changes (the chain, the load spec or the record layout).
TRAFFIC_VERSION = "net-bench-1"


@dataclass
class Load:
    """A prepared chain's plan and folder, and its signed traffic: CLIENTS clients' worth of
    TRANSFERS transfers, and the low load's one client."""

    plan: object
    chain: Path
    spec: object
    traffics: list
    quiet_spec: object
    quiet: object


def _signed(plan, spec, base: int, clients: int, name: str) -> list:
    """The clients' traffic of ``spec`` (frames and counts), from the cache when there."""
    import pickle
    import tempfile

    from tsunagi import loadgen as lg

    cached = Path(tempfile.gettempdir()) / f"tsunagi-bench-{TRAFFIC_VERSION}-{name}.pickle"
    if cached.exists():
        with open(cached, "rb") as file:
            return pickle.load(file)
    traffics = [lg.build_traffic(plan, spec, client, base, hashing.cpu_count())
                for client in range(clients)]
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    with open(partial, "wb") as file:
        pickle.dump(traffics, file)
    os.replace(partial, cached)
    return traffics


@pytest.fixture(scope="module")
def load(tmp_path_factory) -> Load:
    from tsunagi import loadgen as lg

    chain = tmp_path_factory.mktemp("net-load") / "chain"
    plan = lg.prepare_chain(chain, ACCOUNTS, keys=KEYS)
    spec = lg.LoadSpec(mode="batched", clients=CLIENTS, batch_size=BATCH, window=WINDOW,
                       count=TRANSFERS)
    quiet_spec = lg.LoadSpec(mode="batched", clients=1, batch_size=QUIET_BATCH, window=1,
                             count=QUIET_BLOCKS * QUIET_BATCH)
    traffics = _signed(plan, spec, 1, CLIENTS, f"{TRANSFERS}x{BATCH}")
    quiet = _signed(plan, quiet_spec, QUIET_BASE, 1, f"quiet-{QUIET_BLOCKS}x{QUIET_BATCH}")[0]
    return Load(plan, chain, spec, traffics, quiet_spec, quiet)


def _drive(ports: list[int], traffics: list, spec) -> dict:
    """Drives traffic k at the node on ports[k % len(ports)], all starting together; the
    load generator's summary of the whole (transfers answered ok a second, latency)."""
    from tsunagi import loadgen as lg
    from tsunagi.loadgen.driver import COUNTERS

    async def run():
        started, barrier = asyncio.Event(), {"waiting": len(traffics)}

        async def go() -> float:  # a barrier: every connection is open, then all start
            barrier["waiting"] -= 1
            if not barrier["waiting"]:
                barrier["start_s"] = time.monotonic()
                started.set()
            await started.wait()
            return barrier["start_s"]

        counters = [0] * COUNTERS * len(traffics)
        done = await asyncio.gather(*(
            lg.drive("127.0.0.1", ports[k % len(ports)], [traffic], spec, counters=counters,
                     slot=k, go=go) for k, traffic in enumerate(traffics)))
        return done[0][0], [run for _, runs in done for run in runs]

    start_s, runs = asyncio.run(run())
    result = lg.summarize(runs, spec, start_s)
    assert result["codes"] == {"ok": sum(t.record_count for t in traffics)}, result["codes"]
    assert not result["errors"] and not result["lost"], (result["errors"], result["lost"])
    return result


def _nodes(root: Path, chain: Path, count: int) -> list[NetNode]:
    """``count`` nodes on copies of ``chain``: node 0 mines, the others do not and have
    node 0 as their one peer (a star: a node that does not mine relays records to every
    peer, and among three of them a record would go round and round)."""
    import shutil

    ports = free_ports(count)
    nodes = []
    for n in range(count):
        data = shutil.copytree(chain, root / f"node{n}")
        peers = [] if n == 0 else [f"127.0.0.1:{ports[0]}"]
        nodes.append(NetNode(data, ports[n], peers, mine=n == 0))
    return nodes


def _row(result: dict, cpu_s: list[float]) -> dict:
    return {"transfers_per_s": result["records_per_s"], "elapsed_s": result["elapsed_s"],
            "transfers": result["records_ok"], "latency_ms": result["latency_ms"],
            "node_cpu_s": [round(s, 2) for s in cpu_s],
            "machine_cpu_share": round(sum(cpu_s) / result["elapsed_s"]
                                       / (os.cpu_count() or 1), 3)}


def _cpu_s(nodes: list[NetNode]) -> list[float]:
    """CPU seconds (user and system) each node's process has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = []
    for node in nodes:
        fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        used.append((int(fields[11]) + int(fields[12])) / ticks)
    return used


def _driven(nodes: list[NetNode], traffics: list, spec) -> tuple[dict, list[float]]:
    """_drive at the nodes, and the CPU seconds each node spent meanwhile."""
    before = _cpu_s(nodes)
    result = _drive([node.port for node in nodes], traffics, spec)
    return result, [after - first for after, first in zip(_cpu_s(nodes), before)]


def test_transfers_single_node(benchmark, load, tmp_path):
    """The single-node figure: the same clients and transfers, all four at one node."""
    results = []

    def run() -> None:
        (node,) = _nodes(tmp_path / f"round{len(results)}", load.chain, 1)
        node.start()
        try:
            results.append(_driven([node], load.traffics, load.spec))
        finally:
            node.stop()

    benchmark.group = f"network transfers {TRANSFERS:,}"
    benchmark.pedantic(run, rounds=1, iterations=1)
    _figures.setdefault("transfers", {})["single-node"] = _row(*results[0])


def test_transfers_four_nodes(benchmark, load, tmp_path):
    """One miner, three nodes that do not mine; a client at each; then the low load."""
    import multiprocessing

    from peer_probe import watch_blocks

    nodes = _nodes(tmp_path, load.chain, 4)
    for node in nodes:
        node.start()
    context = multiprocessing.get_context("spawn")
    stop, out = context.Queue(), context.Queue()
    watcher = context.Process(target=watch_blocks, daemon=True, args=(
        nodes[0].port, [node.port for node in nodes], _genesis_hash(load.chain), stop, out))
    results, marks = [], {}
    try:
        _wait_for_peers(nodes)
        watcher.start()
        assert out.get(timeout=60) == "ready"

        def run() -> None:
            marks["load"] = time.monotonic()
            results.append(_driven(nodes, load.traffics, load.spec))
            marks["quiet"] = time.monotonic()
            results.append(_drive([nodes[1].port], [load.quiet], load.quiet_spec))
            marks["end"] = time.monotonic()

        benchmark.group = f"network transfers {TRANSFERS:,}"
        benchmark.pedantic(run, rounds=1, iterations=1)
        stop.put("stop")
        arrivals = out.get(timeout=60)
        watcher.join(10)
        tips = _converged(nodes)
    finally:
        for node in nodes:
            node.stop()
        if watcher.is_alive():
            watcher.kill()
    states = [_state(node.data) for node in nodes]
    assert all(state == states[0] for state in states[1:]), "the nodes' states differ"
    figures = _figures.setdefault("transfers", {})
    figures["four-nodes"] = {**_row(*results[0]), "tip_height": tips[0][0],
                             "nodes_agree": True}
    _figures["propagation"] = _propagation(arrivals, [node.port for node in nodes], marks)


def _genesis_hash(chain: Path) -> bytes:
    with Ledger.open(chain) as ledger:
        return hashing.header_hash(ledger.block(0)[:HEADER_BYTES])


def _wait_for_peers(nodes: list[NetNode]) -> None:
    """Until every node but the miner has logged its connection to the miner (its one
    peer, and its records' one way into a block)."""
    from net_helpers import wait_until

    def connected(node: NetNode) -> bool:
        return node.log.exists() and " connected (height" in node.log.read_text()

    wait_until(lambda: all(connected(node) for node in nodes[1:]),
               "the nodes to connect to the miner", timeout_s=60)


def _converged(nodes: list[NetNode]) -> list:
    from net_helpers import tips, wait_until

    return wait_until(lambda: (found := tips(nodes)) and len(set(found)) == 1 and found,
                      lambda: f"the four nodes to reach one tip ({tips(nodes)})")


def _state(data: Path) -> dict:
    with Ledger.open(data) as ledger:
        return {"height": ledger.height, "state": ledger.state.canonical()}


# ---------------------------------------------------------------------- propagation

def _propagation(arrivals: dict, ports: list[int], marks: dict) -> dict:
    """Milliseconds from the miner's announce of each block to its notice on each other node
    (durable there), p50 and p99, under the throughput load and at low load; ``to_all``
    is the last of the three nodes for each block."""
    announced = {block_hash: (height, s) for height, block_hash, s in arrivals["announced"]}
    out = {}
    for phase, (first_s, end_s) in {"under_load": (marks["load"], marks["quiet"]),
                                    "low_load": (marks["quiet"], marks["end"])}.items():
        per_peer, to_all = [], []
        blocks = {h: s for h, (_, s) in announced.items() if first_s <= s <= end_s}
        seen = [{block_hash: s for _, block_hash, s in arrivals["arrivals"][port]}
                for port in ports[1:]]
        miner = {block_hash: s for _, block_hash, s in arrivals["arrivals"][ports[0]]}
        for block_hash, sent_s in blocks.items():
            delays = [(node[block_hash] - sent_s) * 1000 for node in seen if block_hash in node]
            per_peer += delays
            if len(delays) == len(seen):
                to_all.append(max(delays))
        miner_ms = [(miner[h] - s) * 1000 for h, s in blocks.items() if h in miner]
        out[phase] = {"blocks": len(blocks), "per_peer_ms": _percentiles(per_peer),
                      "to_all_ms": _percentiles(to_all),
                      "miner_durable_ms": _percentiles(miner_ms), "samples_ms": per_peer}
    return out


def _percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3),
            "max": round(float(max(values)), 3), "count": len(values)}


# ---------------------------------------------------------------------- summary

def _print_summary(write) -> dict:
    headers = _figures.get("headers")
    if headers:
        single = headers.get("in-process", {}).get("headers_per_s")
        write("")
        write(f"{_header_group()}: headers per second, median of the rounds "
              "(the issue's floor over loopback: 1,000,000/s)")
        for name in ("in-process", "push", "serve", "sync"):
            row = headers.get(name)
            if not row:
                continue
            if single:
                row["of_in_process"] = row["headers_per_s"] / single
            ratio = f"  {row['of_in_process']:.2f}x in-process" if single else ""
            write(f"{name:>12}: {row['headers_per_s']:>12,.0f} /s  {row['median_s']:.3f} s"
                  f"  ({len(row['seconds'])} rounds){ratio}")
    transfers = _figures.get("transfers", {})
    single, network = transfers.get("single-node"), transfers.get("four-nodes")
    if single or network:
        write("")
        write(f"network transfers {TRANSFERS:,}: signed transfers confirmed ok per second "
              f"(batches of {BATCH:,}, {CLIENTS} clients; the issue's floor through four "
              "nodes: 20,000/s)")
        for name, row in transfers.items():
            if isinstance(row, dict):
                write(f"{name:>12}: {row['transfers_per_s']:>12,.0f} /s  "
                      f"{row['elapsed_s']:.2f} s  p99 latency {row['latency_ms']['p99']:,.0f} ms"
                      f"  node CPU {row['node_cpu_s']} s = {row['machine_cpu_share']:.0%} of "
                      "the machine")
        if single and network:
            transfers["four_over_single"] = network["transfers_per_s"] / single["transfers_per_s"]
            write(f"four nodes / single node: {transfers['four_over_single']:.2f}x (each node "
                  "checks every signature: at most about 0.25x on one machine)")
    for phase, row in _figures.get("propagation", {}).items():
        if row.get("per_peer_ms"):
            write(f"propagation {phase:>10} ({row['blocks']} blocks): miner's announce to "
                  f"durable on a peer p50 {row['per_peer_ms']['p50']:.1f} ms, "
                  f"p99 {row['per_peer_ms']['p99']:.1f} ms; on all three p50 "
                  f"{row['to_all_ms'].get('p50', float('nan')):.1f} ms, "
                  f"p99 {row['to_all_ms'].get('p99', float('nan')):.1f} ms")
    if _figures:
        _draw_chart(_figures)
        write(f"chart: {CHART}")
    return _figures


def _draw_chart(figures: dict) -> None:
    """network.png: headers a second by case, transfers a second single against four nodes,
    and the propagation histograms."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # the charts extra is not installed: the JSON has every figure
        return
    import numpy as np

    fig = Figure(figsize=(16, 4.4))
    axes = fig.subplots(1, 3)
    rows = figures.get("headers", {})
    headers = {name: rows[name]["headers_per_s"] for name in ("in-process", "push", "serve", "sync")
               if name in rows}
    if headers:
        axes[0].bar(list(headers), [rate / 1e6 for rate in headers.values()], color="tab:blue")
        axes[0].axhline(1.0, color="tab:red", linestyle="--", label="floor 1 M/s")
        axes[0].set(title=f"header sync, {HEADERS:,} headers", ylabel="million headers / s")
        axes[0].legend()
    transfers = {name: row["transfers_per_s"] for name, row
                 in figures.get("transfers", {}).items() if isinstance(row, dict)}
    if transfers:
        axes[1].bar(list(transfers), [rate / 1e3 for rate in transfers.values()],
                    color=["tab:green", "tab:orange"][:len(transfers)])
        axes[1].axhline(20, color="tab:red", linestyle="--", label="floor 20 k/s (4 nodes)")
        axes[1].set(title=f"signed transfers confirmed, {TRANSFERS:,}",
                    ylabel="thousand transfers / s")
        axes[1].legend()
    propagation = figures.get("propagation", {})
    samples = [row["samples_ms"] for row in propagation.values() if row.get("samples_ms")]
    if samples:
        low = max(0.1, min(min(s) for s in samples))
        edges = np.geomspace(low, max(max(s) for s in samples) * 1.05, 50)
        for (phase, row), colour in zip(propagation.items(), ("tab:purple", "tab:gray")):
            if row.get("samples_ms"):
                axes[2].hist(np.clip(row["samples_ms"], low, None), bins=edges, alpha=0.6,
                             color=colour, label=f"{phase}: p50 {row['per_peer_ms']['p50']:.1f}"
                             f" ms, p99 {row['per_peer_ms']['p99']:.1f} ms")
        axes[2].set_xscale("log")
        axes[2].set(title="block propagation: miner's announce to durable on a peer",
                    xlabel="ms", ylabel="blocks x peers")
        axes[2].legend(fontsize="small")
    fig.tight_layout()
    RESULTS.parent.mkdir(exist_ok=True)
    fig.savefig(CHART, dpi=110)


summary = module_summary(_figures, _print_summary, RESULTS)
