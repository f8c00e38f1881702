"""A node killed with SIGKILL at any moment of a reorg reopens on the most-work chain it had
received durably, with the state of a replay of that chain from genesis.

Method, after Bitcoin Core's feature_dbcrash.py (crashed nodes checked against an uncrashed
control node): makers build a trunk and two competing branches of real signed blocks
(transfers, holds that expire at later block times, a post, the same open_account on both
branches), saved as files in the order a node takes them: A, then B with more work, then A
extended beyond it, and so on, five reorgs back and forth, each deeper than the one before.
A child process (tests/helpers/chain_crash_node.py) is the node: it opens the data directory
(Ledger.open, then Chain) and feeds the files on from the first it had not finished. The test
SIGKILLs it at a random moment after it starts a block that causes a reorg (the window is
that block's time in an uncrashed run, and a half again), or, after a crash that left a reorg
half done, while it opens and finishes it: at least KILLS times. The moments come from a
logged seed (TSUNAGI_CRASH_SEED=<seed> replays the draws of a failure). After each kill a copy
of the directory is opened and must hold every block the node had finished, sit on the
most-work tip of the blocks it had received (the one it was taking may count or not), verify,
and hold the state, live and in the durable view, of a control ledger that connected exactly
that chain from genesis in order; fed every block again, it must end on the overall most-work
tip with that chain's replayed state. The child goes on in the crashed directory itself, so
later kills land on a node that crashed before, and its opens finish reorgs too.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import kill_after_line

from tsunagi.consensus.chain import Accepted, Chain
from tsunagi.core import records as r
from tsunagi.core.block import BlockResult, decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger

KILLS = 24
CHILD = Path(__file__).parent / "helpers" / "chain_crash_node.py"
CHAIN_ID = 78
KEYS = [PrivateKey.from_bytes(bytes([n]) * 32) for n in range(11, 17)]  # issuer, then payers
NEWCOMER = PrivateKey.from_bytes(bytes([30]) * 32)  # opens account 7 on both branches
USERS = tuple(range(2, len(KEYS) + 1))  # accounts 2..6, each of KEYS[account - 1]
NEWCOMER_ACCOUNT = len(KEYS) + 1
CONFIG = ChainConfig(name="chain-crash", chain_id=CHAIN_ID, asset_code="TSU",
                     issuers=(KEYS[0].public_key,),
                     allocations=tuple((k.public_key, 10**9) for k in KEYS[1:]))
T0 = 1_700_000_000
CLOCK_S = T0 + 10**6  # the node's clock: every block is in its past
STEP_S = 10  # between blocks of a branch
TRANSFERS = 60  # a block
WINDOW_SHARE = 1.5  # kill moments span this share of the uncrashed time of what they hit
# Feed order: (branch, first, end) of each run of blocks. Branch A forks at height 3 (the
# trunk's tip), B at height 2; every run after the first two takes the lead from the other.
TRUNK_BLOCKS, A_BLOCKS, B_BLOCKS = 3, 14, 17
FEED_RUNS = [("A", 0, 3), ("B", 0, 6), ("A", 3, 8), ("B", 6, 12), ("A", 8, 14), ("B", 12, 17)]
REORGS = 5


@dataclass(frozen=True)
class Fed:
    """A block as the node takes it."""

    raw: bytes
    hash: bytes
    height: int
    parent: bytes


@dataclass
class World:
    feed: list[Fed]  # in the order the node takes them (trunk first)
    blocks: Path  # their files, named by position
    genesis: Path  # a node's data directory at genesis, copied for each node
    genesis_hash: bytes
    replays: dict[bytes, tuple[dict, list[tuple]]]  # tip -> (canonical state, accounts)
    reorg_feeds: list[int]  # positions of the blocks that move the best tip to a fork

    @property
    def best(self) -> Fed:
        return max(self.feed, key=lambda fed: fed.height)


def _grow(maker: Ledger, count: int, time_s: int, salt: int,
          open_at: int | None = None) -> list[bytes]:
    """``count`` blocks on the maker's tip, STEP_S apart from ``time_s`` (see _block)."""
    blocks, lasting = [], []
    for i in range(count):
        now = time_s + STEP_S * i
        signed = _block(maker, i, now, salt, open_at, lasting)
        answer = maker.submit_batch(b"".join(s[0] for s in signed),
                                    b"".join(s[1] for s in signed), now_s=now)
        assert answer.height is not None and not answer.codes.any(), answer.codes
        blocks.append(maker.block(answer.height))
    return blocks


def _block(maker: Ledger, i: int, now: int, salt: int, open_at: int | None,
           lasting: list[tuple[int, int, int]]) -> list[tuple[bytes, bytes]]:
    """Signed records of block ``i`` of a branch: TRANSFERS transfers, three holds that
    expire one to three blocks later and one that stays open (kept in ``lasting``), a post
    of the one left open a block before, and at ``open_at`` the newcomer's open_account
    (paid in every block after it)."""
    sequences = {n: maker.account(n).sequence for n in range(1, len(KEYS) + 1)}
    signed = []

    def add(record: bytes, key: PrivateKey) -> None:
        signed.append((record, key.sign_record(record)))

    def sequence(account: int) -> int:
        sequences[account] += 1
        return sequences[account]

    for j in range(TRANSFERS):
        spot = (salt + i + j) % len(USERS)
        payer, payee = USERS[spot], USERS[(spot + 1 + j % 4) % len(USERS)]
        add(r.transfer(CHAIN_ID, sequence(payer), payer, payee, 1 + (salt + j) % 50),
            KEYS[payer - 1])
    for k in range(4):
        payer = USERS[(salt + i + k) % len(USERS)]
        payee = USERS[(salt + i + k + 2) % len(USERS)]
        expiry_s = now + STEP_S * (k + 1) - 1 if k < 3 else now + 10**5
        held = sequence(payer)
        add(r.hold(CHAIN_ID, held, payer, payee, 7 + k + salt, authority_account=1,
                   expiry_s=expiry_s), KEYS[payer - 1])
        if k == 3:
            lasting.append((payer, held, 7 + k + salt))
    if len(lasting) > 1:
        payer, held, amount = lasting.pop(0)
        add(r.post(CHAIN_ID, sequence(1), 1, payer, held, amount), KEYS[0])
    if open_at is not None and i == open_at:
        add(r.open_account(CHAIN_ID, NEWCOMER.public_key), NEWCOMER)
    elif open_at is not None and i > open_at:
        add(r.transfer(CHAIN_ID, sequence(2), 2, NEWCOMER_ACCOUNT, 3 + i), KEYS[1])
    return signed


def _replays(path: Path, chain_blocks: list[bytes], into: dict) -> None:
    """A control ledger connects exactly these blocks from genesis in order; the state after
    each (live, and each account of the durable view) is what a node at that tip must hold."""
    with Ledger.create(path, CONFIG, threads=1) as control:
        for data in [None, *chain_blocks]:
            if data is not None:
                assert control.connect_block(data, now_s=CLOCK_S) is BlockResult.ok
            into[control.tip_hash] = (control.state.canonical(), _accounts(control))


def _accounts(ledger: Ledger) -> list[tuple]:
    count = ledger.state.account_count
    return [(a.account, a.owner_key, a.balance, a.sequence, a.held)
            for a in map(ledger.account, range(1, count + 1))]


def _reorg_feeds(feed: list[Fed]) -> list[int]:
    """Positions whose block moves the best tip (most work; the first seen of equal work) off
    the chain of the tip before it."""
    parents = {fed.hash: fed.parent for fed in feed}
    found, tip = [], None
    for position, fed in enumerate(feed):
        if tip is None or fed.height > tip.height:
            ancestor = fed.parent
            while tip is not None and ancestor in parents and ancestor != tip.hash:
                ancestor = parents[ancestor]
            if tip is not None and ancestor != tip.hash:
                found.append(position)
            tip = fed
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    path = tmp_path_factory.mktemp("chain-crash")
    maker_a = Ledger.create(path / "maker-a", CONFIG, threads=1)
    trunk = _grow(maker_a, TRUNK_BLOCKS, T0, salt=0)
    branch_a = _grow(maker_a, A_BLOCKS, T0 + 1000, salt=1, open_at=2)
    maker_a.close()
    maker_b = Ledger.create(path / "maker-b", CONFIG, threads=1)
    for data in trunk[:2]:
        assert maker_b.connect_block(data, now_s=CLOCK_S) is BlockResult.ok
    branch_b = _grow(maker_b, B_BLOCKS, T0 + 1005, salt=2, open_at=4)
    maker_b.close()
    replays: dict = {}
    _replays(path / "control-a", trunk + branch_a, replays)
    _replays(path / "control-b", trunk[:2] + branch_b, replays)
    ordered = list(trunk) + [block for name, first, end in FEED_RUNS
                             for block in (branch_a if name == "A" else branch_b)[first:end]]
    with Ledger.create(path / "genesis", CONFIG, threads=1) as genesis:
        genesis_hash = genesis.tip_hash
    heights, feed = {genesis_hash: 0}, []
    for raw in ordered:
        block = decode_block(raw)
        heights[block.hash] = heights[block.prev_hash] + 1
        feed.append(Fed(raw, block.hash, heights[block.hash], block.prev_hash))
    blocks = path / "blocks"
    blocks.mkdir()
    for position, fed in enumerate(feed):
        (blocks / f"{position:04d}.blk").write_bytes(fed.raw)
    made = World(feed, blocks, path / "genesis", genesis_hash, replays, _reorg_feeds(feed))
    assert len(made.reorg_feeds) == REORGS and made.best.height == 2 + B_BLOCKS
    return made


# ---------------------------------------------------------------------------------- the node


def _start(world: World, directory: Path, start: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(world.blocks), str(start),
         str(CLOCK_S), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@dataclass
class Round:
    """What one run of the node printed."""

    done: list[int]  # positions it finished
    in_flight: int | None  # the position it had begun and not finished
    ended: bool  # it fed the last block
    ready: bool  # its open (and the Chain's recovery) had finished

    @classmethod
    def parse(cls, lines: list[str]) -> Round:
        done, begun = [], None
        for line in lines:
            word, *fields = line.split()
            if word == "FEED":
                begun = int(fields[0])
            elif word == "DONE":
                done.append(int(fields[0]))
                begun = None
        return cls(done, begun, any(line.startswith("END") for line in lines),
                   any(line.startswith("READY") for line in lines))


def _block_seconds(lines: list[str], read_at: dict[str, float], position: int) -> float:
    fed = read_at[f"FEED {position}"]
    done = next(read_at[line] for line in lines if line.startswith(f"DONE {position} "))
    return done - fed


# ---------------------------------------------------------------------------------- checks


def _assert_replayed(world: World, ledger: Ledger, tip_hash: bytes, context: str) -> None:
    canonical, accounts = world.replays[tip_hash]
    assert ledger.state.canonical() == canonical, f"live state differs from a replay; {context}"
    assert _accounts(ledger) == accounts, f"durable view differs from a replay; {context}"


def _check_copy(world: World, directory: Path, scratch: Path, done: set[int],
                in_flight: set[int], context: str) -> tuple[bool, float]:
    """Opens a copy of a crashed node's directory and checks it (module docstring). Returns
    whether the Chain moved the ledger as it opened (it finished or took back a reorg) and
    how long the open and that recovery took."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(directory, scratch)
    started = time.monotonic()
    ledger = Ledger.open(scratch, threads=1)
    opened_tip = ledger.tip
    try:
        chain = Chain(ledger, clock=lambda: CLOCK_S, threads=1)
        recovery_s = time.monotonic() - started
        height, tip_hash, _ = chain.tip
        lost = sorted(p for p in done if not chain.has_block(world.feed[p].hash))
        assert not lost, f"blocks the node had finished are gone: {lost}; {context}"
        low = max((world.feed[p].height for p in done), default=0)
        maybe = done | in_flight
        high = max((world.feed[p].height for p in maybe), default=0)
        tips = {world.feed[p].hash for p in maybe} | {world.genesis_hash}
        assert low <= height <= high and tip_hash in tips, \
            f"tip at {height}, most work received {low}..{high}; {context}"
        assert ledger.tip == (height + 1, tip_hash), context
        _assert_replayed(world, ledger, tip_hash, context)
        report = ledger.verify()
        assert report.ok, f"{report}; {context}"
        moved = ledger.tip != opened_tip
        for fed in world.feed:
            assert chain.accept_block(fed.raw).accepted is not Accepted.invalid, context
        assert chain.tip[1] == world.best.hash, f"not on the most-work tip at last; {context}"
        _assert_replayed(world, ledger, world.best.hash, context + " (all blocks fed)")
        return moved, recovery_s
    finally:
        ledger.close()


def _calibrate(world: World, directory: Path) -> dict[int, float]:
    """Seconds each reorg's block takes in an uncrashed run, from FEED to DONE."""
    shutil.copytree(world.genesis, directory)
    child = _start(world, directory, 0)
    lines, _, read_at = kill_after_line(child, None, 0.0, timeout_s=120.0)
    assert any(line == f"END {REORGS}" for line in lines), lines[-5:]
    return {p: _block_seconds(lines, read_at, p) for p in world.reorg_feeds}


def _aim(rng: random.Random, world: World, start: int, windows: dict[int, float],
         recovery_s: float) -> tuple[str | None, float]:
    """Where the next kill lands: the line of the child's after which it comes, and when.
    After a crash that left a reorg half done (``recovery_s``, the time its open took), half
    the kills land in the open; the others in one of the next two reorgs' blocks."""
    ahead = [p for p in world.reorg_feeds if p >= start]
    if recovery_s and rng.random() < 0.5:
        return "OPENING", rng.uniform(0, WINDOW_SHARE * recovery_s)
    if ahead:
        target = rng.choice(ahead[:2])
        return f"FEED {target}", rng.uniform(0, WINDOW_SHARE * windows[target])
    return None, 0.0  # no reorg left: the node runs to the end


@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_of_reorgs_reopens_on_the_best_chain(world, tmp_path):
    seed = int(os.environ.get("TSUNAGI_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"TSUNAGI_CRASH_SEED={seed}")
    rng = random.Random(seed)
    windows = _calibrate(world, tmp_path / "calibration")
    print("reorg blocks, seconds uncrashed:", {p: round(s, 4) for p, s in windows.items()})
    kills, mid_reorg, mid_recovery, nodes = 0, 0, 0, 0
    while kills < KILLS:
        nodes += 1
        directory = tmp_path / f"node{nodes}"
        shutil.copytree(world.genesis, directory)
        done: set[int] = set()
        in_flight: set[int] = set()
        recovering, recovery_s = False, 0.0
        while True:
            start = len(done)
            marker, delay = _aim(rng, world, start, windows, recovery_s if recovering else 0)
            child = _start(world, directory, start)
            lines, killed, _ = kill_after_line(child, marker, delay, timeout_s=120.0)
            run = Round.parse(lines)
            killed = killed and not run.ended
            assert killed or run.ended, f"the node stopped on its own: {lines[-3:]}"
            done.update(run.done)
            assert done == set(range(len(done))), "the node skipped a block"
            if run.in_flight is not None:
                in_flight.add(run.in_flight)
            context = (f"seed {seed}, node {nodes}, kill {kills + killed}: {marker!r} + "
                       f"{delay * 1000:.1f} ms, last line {lines[-1]!r}")
            if killed:
                kills += 1
                mid_reorg += run.in_flight in world.reorg_feeds
                mid_recovery += not run.ready
                print(f"kill {kills}: {marker!r} + {delay * 1000:.1f} ms, "
                      f"last line {lines[-1]!r}")
            recovering, recovery_s = _check_copy(world, directory, tmp_path / "check", done,
                                                 in_flight, context)
            if run.ended:
                break
        shutil.rmtree(directory)
    print(f"{kills} kills on {nodes} nodes: {mid_reorg} during a reorg's block, "
          f"{mid_recovery} during an open")
    # Each kill is drawn within the time of what it aims at: most land there.
    assert mid_reorg + mid_recovery >= KILLS // 4, (seed, mid_reorg, mid_recovery)


def test_a_crash_right_after_a_reorg_connects_its_first_block_keeps_the_new_branch(
        world, tmp_path):
    """The node kills itself when the first reorg has disconnected the old branch and
    connected one block of the new, before the ledger's fsync. Every block of the new branch
    was stored before the reorg began, so the open must finish the reorg onto it."""
    directory = tmp_path / "node"
    shutil.copytree(world.genesis, directory)
    child = _start(world, directory, 0, "--die-on-reorg-connect")
    output, _ = child.communicate(timeout=120)
    run = Round.parse(output.decode().splitlines())
    first_reorg = world.reorg_feeds[0]
    assert child.returncode == -9 and run.in_flight == first_reorg, output[-200:]
    with Ledger.open(directory, threads=1) as ledger:
        chain = Chain(ledger, clock=lambda: CLOCK_S, threads=1)
        assert all(chain.has_block(world.feed[p].hash) for p in run.done)
        assert chain.tip[1] == world.feed[first_reorg].hash
        _assert_replayed(world, ledger, world.feed[first_reorg].hash, "fixed case")
