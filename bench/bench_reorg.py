"""A reorg of 100 blocks of 8,000 signed transfers each, beside the single-node fast path.

Run ``python -m pytest bench/bench_reorg.py --benchmark-only`` (about two and a half minutes
here, a third of it signing 1.6 million transfers and building the branches;
``TSUNAGI_BENCH_SMALL=1`` makes a CI-sized run of 20 blocks of 1,000). TSUNAGI_BENCH_ROUNDS
sets the timed rounds of each case (default 3).

Workload: a chain prepared by the load generator (10,000 funded accounts of 8 keys) is the
fork; branches A and B of BLOCKS blocks grow from it, each block TRANSFERS transfers with
their own BIP340 signatures (tsunagi.loadgen's traffic, signed on every core before any
timing), made by maker ledgers through ``Ledger.submit_batch``; B has one more block, of one
transfer, which gives it more work than A. Group ``reorg``, each round on a fresh copy of a
data directory (untimed):

- ``disconnect``: a node at the tip of branch A takes its BLOCKS blocks back
  (``disconnect_blocks``);
- ``connect``: that node, at the fork, connects branch B's BLOCKS blocks (``connect_block``
  with ``wait=False``, then one ``sync``): every signature checked, every code replayed;
- ``chain-reorg``: a node at A's tip driven by a Chain holds B's BLOCKS blocks as side
  blocks; the timed call is ``accept_block`` of B's one-transfer block, which tips the work:
  the Chain stores A's blocks as side bodies, disconnects them and connects all of B's;
- ``single-node``: branch B's BLOCKS x TRANSFERS transfers through ``submit_batch`` on a
  ledger at the fork: the fast path a single node commits by, the connect figures' baseline.

The node's state after ``connect`` (and B's last block) and after ``chain-reorg`` must equal
a replay of branch B (maker B's directory opened without its snapshots, so ``Ledger.open``
replays every block from genesis). The summary prints each median, transfers per second (of
one branch) and the ratios to the single node, and writes them to bench/results/reorg.json.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from summary import module_summary

from tsunagi import hashing
from tsunagi import loadgen as lg
from tsunagi.consensus.chain import Accepted, Chain
from tsunagi.core import records as r
from tsunagi.core.block import BlockResult
from tsunagi.ledger.ledger import SNAPSHOT_DIRECTORY, Ledger
from tsunagi.node import protocol as p

SMALL = os.environ.get("TSUNAGI_BENCH_SMALL") == "1"
BLOCKS, TRANSFERS = (20, 1_000) if SMALL else (100, 8_000)
ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "3"))
ACCOUNTS, KEYS = 10_000, 8
# Sequences of branch B start this far above A's, so no record of one is a record of the other.
SEQUENCE_GAP = 10**9
GROUP = f"reorg {BLOCKS} x {TRANSFERS:,}"
RESULTS = Path(__file__).parent / "results" / "reorg.json"

_medians: dict[str, float] = {}  # seconds, by case


@dataclass
class Branches:
    fork: Path  # a data directory at the fork (the prepared chain)
    tip_a: Path  # a maker's directory at the tip of branch A
    batches_b: list[p.SubmitBatch]  # branch B's transfers, a block's worth each
    blocks_b: list[bytes]  # branch B's blocks as maker B made them: BLOCKS, then the tipping
    replay_b: dict  # canonical state of a replay of branch B from genesis


def _batches(plan: lg.Plan, seed: int, sequence_base: int) -> list[p.SubmitBatch]:
    """BLOCKS batches of TRANSFERS signed transfers between random accounts."""
    spec = lg.LoadSpec(mode="batched", clients=1, batch_size=TRANSFERS,
                       count=BLOCKS * TRANSFERS, seed=seed)
    traffic = lg.build_traffic(plan, spec, 0, sequence_base, hashing.cpu_count())
    return [p.decode_message(frame)[1] for frame in traffic.frames]


def _tipping(plan: lg.Plan, sequence: int) -> p.SubmitBatch:
    """One signed transfer: the block of it, on branch B, gives B more work than A."""
    payer, payee = (int(a) for a in plan.accounts[:2])
    record = r.transfer(plan.chain_id, sequence, payer, payee, 1)
    key = plan.owner_keys()[int(plan.owner_of([0])[0])]
    return p.SubmitBatch(record, key.sign_record(record))


def _make_branch(fork: Path, path: Path, batches: list[p.SubmitBatch]) -> list[bytes]:
    """A maker's copy of the fork commits the batches, a block each; returns the blocks."""
    shutil.copytree(fork, path)
    with Ledger.open(path) as maker:
        first = maker.height
        for batch in batches:
            answer = maker.submit_batch(batch.records, batch.signatures)
            assert answer.height is not None and not answer.codes.any()
        return [maker.block(h) for h in range(first, maker.height)]


def _replayed(directory: Path, path: Path) -> dict:
    """The state of a directory's blocks replayed from genesis (its snapshots left out)."""
    shutil.copytree(directory, path, ignore=shutil.ignore_patterns(SNAPSHOT_DIRECTORY))
    with Ledger.open(path) as replay:
        return replay.state.canonical()


@pytest.fixture(scope="module")
def branches(tmp_path_factory) -> Branches:
    path = tmp_path_factory.mktemp("reorg-bench")
    plan = lg.prepare_chain(path / "fork", ACCOUNTS, keys=KEYS)
    batches_a = _batches(plan, seed=11, sequence_base=1)
    batches_b = _batches(plan, seed=12, sequence_base=1 + SEQUENCE_GAP)
    batches_b.append(_tipping(plan, 2 * SEQUENCE_GAP))
    _make_branch(path / "fork", path / "maker-a", batches_a)
    blocks_b = _make_branch(path / "fork", path / "maker-b", batches_b)
    replay_b = _replayed(path / "maker-b", path / "replay-b")
    return Branches(path / "fork", path / "maker-a", batches_b, blocks_b, replay_b)


def _print_summary(write) -> dict:
    transfers = BLOCKS * TRANSFERS
    rows = {name: {"median_s": seconds, "transfers_per_s": transfers / seconds}
            for name, seconds in _medians.items()}
    write("")
    write(f"{GROUP}: median of {ROUNDS} rounds, {transfers:,} transfers a branch")
    for name, row in rows.items():
        write(f"{name:>12}: {row['median_s']:8.3f} s  {row['transfers_per_s']:>12,.0f} "
              "transfers/s")
    single = rows.get("single-node")
    for name in ("connect", "chain-reorg"):
        if single and name in rows:
            ratio = rows[name]["transfers_per_s"] / single["transfers_per_s"]
            rows[name]["of_single_node"] = ratio
            write(f"{name} / single-node submit_batch: {ratio:.2f}x")
    return rows


summary = module_summary(_medians, _print_summary, RESULTS)


class _Copies:
    """Fresh copies of a data directory, one a round, opened; closed and removed at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[Ledger] = []

    def open(self, source: Path) -> Ledger:
        ledger = Ledger.open(shutil.copytree(source, self.path / f"copy{len(self.opened)}"))
        self.opened.append(ledger)
        return ledger

    def close(self) -> None:
        for ledger in self.opened:
            ledger.close()
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture
def copies(tmp_path):
    made = _Copies(tmp_path)
    yield made
    made.close()


def _timed(benchmark, name: str, run, setup) -> None:
    """pytest-benchmark rounds of ``run`` after an untimed ``setup``; keeps the median."""
    benchmark.group = GROUP
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        _medians[name] = benchmark.stats.stats.median
        benchmark.extra_info["transfers_per_s"] = BLOCKS * TRANSFERS / _medians[name]


def test_disconnect(benchmark, branches, copies):
    """disconnect_blocks of branch A's BLOCKS blocks, from a node at A's tip."""
    nodes = []

    def setup():
        nodes.append(copies.open(branches.tip_a))
        return (nodes[-1],), {}

    def run(node: Ledger) -> None:
        assert len(node.disconnect_blocks(BLOCKS)) == BLOCKS

    _timed(benchmark, "disconnect", run, setup)
    fork_tip = copies.open(branches.fork).tip
    assert all(node.tip == fork_tip for node in nodes)


def test_connect(benchmark, branches, copies):
    """Branch B's blocks connected on a node that took branch A back to the fork."""
    nodes = []

    def setup():
        nodes.append(copies.open(branches.tip_a))
        nodes[-1].disconnect_blocks(BLOCKS)
        return (nodes[-1],), {}

    def run(node: Ledger) -> None:
        for data in branches.blocks_b[:BLOCKS]:
            assert node.connect_block(data, wait=False) is BlockResult.ok
        node.sync()

    _timed(benchmark, "connect", run, setup)
    for node in nodes:
        node.connect_block(branches.blocks_b[-1])  # the one-transfer block, for the replay
        assert node.state.canonical() == branches.replay_b


def test_chain_reorg(benchmark, branches, copies):
    """A Chain at A's tip holding B's blocks but the last: accept_block of the last one moves
    the node to B (A's blocks stored as side bodies, disconnected; B's connected)."""
    chains = []

    def setup():
        chain = Chain(copies.open(branches.tip_a))
        for data in branches.blocks_b[:-1]:
            assert chain.accept_block(data).accepted is Accepted.stored
        chains.append(chain)
        return (chain,), {}

    def run(chain: Chain) -> None:
        assert chain.accept_block(branches.blocks_b[-1]).accepted is Accepted.connected

    _timed(benchmark, "chain-reorg", run, setup)
    for chain in chains:
        assert chain.reorg_count == 1 and chain.reorg_depth_last == BLOCKS
        assert chain.ledger.state.canonical() == branches.replay_b


def test_single_node(benchmark, branches, copies):
    """The same transfers of branch B through submit_batch on a ledger at the fork."""
    answers = []

    def setup():
        return (copies.open(branches.fork),), {}

    def run(ledger: Ledger) -> None:
        answers.extend(ledger.submit_batch(b.records, b.signatures)
                       for b in branches.batches_b[:BLOCKS])

    _timed(benchmark, "single-node", run, setup)
    assert all(a.height is not None and not a.codes.any() for a in answers)
