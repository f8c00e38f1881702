"""Readers see only durable state: nothing of a block before its fsync, never half a group.

Method: (1) in one process, a batch begun but not waited for must not show in balances,
accounts or holds, and must show once waited; (2) property test: after random batches of
transfers, holds, posts, voids, expiry, policy keys and linked groups that fail, the readers'
view equals the engine's state; (3) a child process commits linked pairs (a third of them
rolled back by the kernel) with two batches in flight while a thread reads all balances as fast
as it can, and is SIGKILLed at random moments: every set of balances it read must be, exactly,
the balances after the block its height names, in the chain as reopened, replayed from genesis.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import read_until_killed
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagi.core import records as r
from tsunagi.core.block import decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keyfile import save_key
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger import Ledger
from tsunagi.ledger.engine import Engine
from tsunagi.ledger.state import State

CHAIN = 9
KILLS = 12
ACCOUNTS = 6
PAIRS = 12
CHILD = Path(__file__).parent / "helpers" / "crash_reader.py"


def _chain(path: Path, key: PrivateKey, accounts: int = ACCOUNTS) -> Ledger:
    """A chain where one key owns accounts 1..accounts, each with 10**6 units."""
    config = ChainConfig(name="reads", chain_id=CHAIN, asset_code="TSU",
                         allocations=((key.public_key, accounts * 10**6),))
    ledger = Ledger.create(path, config, threads=1)
    opens = [r.open_account(CHAIN, key.public_key, sequence=100 + n) for n in range(1, accounts)]
    funds = [r.transfer(CHAIN, n, 1, n + 1, 10**6) for n in range(1, accounts)]
    answer = ledger.submit_batch(b"".join(opens + funds),
                                 b"".join(key.sign_record(x) for x in opens + funds))
    assert not answer.codes.any()
    return ledger


def _signed(key: PrivateKey, batch: list[bytes]) -> tuple[bytes, bytes]:
    return b"".join(batch), b"".join(map(key.sign_record, batch))


def test_a_batch_shows_only_once_its_block_is_durable(tmp_path):
    key = PrivateKey.generate()
    with _chain(tmp_path / "chain", key) as ledger:
        before = ledger.account(2)
        hold = r.hold(CHAIN, 50, 2, 3, 400, expiry_s=2**31, authority_account=4)
        pay = r.transfer(CHAIN, 51, 3, 2, 7)
        pending = ledger.begin_batch(*_signed(key, [hold, pay]))
        # Applied and written, not yet synced: readers still see the block before.
        assert ledger.account(2) == before
        height, balances = ledger.balances([2, 3])
        assert height == before.height and balances.tolist() == [10**6, 10**6]
        assert ledger.hold(2, 50) is None and ledger.holds(3) == []
        answer = pending.wait()
        assert not answer.codes.any()
        after = ledger.account(2)
        assert (after.balance, after.held, after.height) == (
            before.balance - 400 + 7, 400, before.height + 1)
        assert ledger.hold(2, 50)["status"] == "open"
        height, balances = ledger.balances([2, 3])
        assert height == ledger.height and balances.tolist() == [10**6 - 393, 10**6 - 7]


def _operations(ops, sequence: list[int], holds: list[tuple[int, int, int]]) -> list[bytes]:
    """Records for drawn operations; ``holds`` collects (payer, sequence, authority) made."""
    batch = []
    for kind, a, b, amount in ops:
        debit, credit = 1 + a % ACCOUNTS, 1 + b % ACCOUNTS
        sequence[0] += 1
        s = sequence[0]
        if kind == "transfer":
            batch.append(r.transfer(CHAIN, s, debit, credit, amount))
        elif kind == "linked-failing":
            batch.append(r.transfer(CHAIN, s, debit, credit, amount, linked=True))
            sequence[0] += 1
            batch.append(r.transfer(CHAIN, sequence[0], credit, debit, 10**15))
        elif kind == "hold":
            batch.append(r.hold(CHAIN, s, debit, credit, amount, expiry_s=1_000 + amount,
                                authority_account=credit))
            holds.append((debit, s, credit))
        elif kind in ("post", "void") and holds:
            payer, hold_sequence, authority = holds[a % len(holds)]
            batch.append(r.post(CHAIN, s, authority, payer, hold_sequence, amount % 300 + 1)
                         if kind == "post" else r.void(CHAIN, s, authority, payer, hold_sequence))
        elif kind == "policy":
            batch.append(r.set_policy_key(CHAIN, s, debit, 1 + amount % 7,
                                          PrivateKey.generate().public_key,
                                          allowance=amount))
    if not batch:  # post or void before any hold: pay instead, so the batch makes a block
        sequence[0] += 1
        batch.append(r.transfer(CHAIN, sequence[0], 1, 2, 1))
    return batch


op = st.tuples(st.sampled_from(["transfer", "linked-failing", "hold", "post", "void", "policy"]),
               st.integers(0, 50), st.integers(0, 50), st.integers(1, 900))


@settings(max_examples=15)
@given(batches=st.lists(st.lists(op, min_size=1, max_size=12), min_size=1, max_size=6),
       clock=st.lists(st.integers(0, 2_500), min_size=6, max_size=6))
def test_the_view_equals_the_state_after_every_durable_block(tmp_path_factory, batches, clock):
    key = PrivateKey.generate()
    directory = tmp_path_factory.mktemp("view")
    with _chain(directory / "chain", key) as ledger:
        sequence, holds = [10_000], []
        now = 0
        for number, ops in enumerate(batches):
            now = max(now, clock[number])  # holds expire as the block time passes them
            answer = ledger.submit_batch(*_signed(key, _operations(ops, sequence, holds)),
                                         now_s=now)
            assert answer.height is not None
            assert ledger._view.canonical() == ledger.state.canonical()
        # A batch that stores nothing (a bad signature) but expires holds: the expiry reaches
        # readers with the next block, and only then.
        bad = r.transfer(CHAIN, 1, 1, 2, 1)
        ledger.submit_batch(bad, bytes(64), now_s=10_000)
        ledger.submit_batch(*_signed(key, [r.transfer(CHAIN, 10**9, 1, 2, 1)]), now_s=10_000)
        assert ledger._view.canonical() == ledger.state.canonical()


def _run_until_killed(directory: Path, key_file: Path, rng: random.Random) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(key_file), str(ACCOUNTS), str(PAIRS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = child.stdout.readline().strip()
    if first != "READY":
        child.kill()
        pytest.fail(f"the child did not start: {first} {child.communicate()[1]}")
    # Killed once its readers have seen a few heights (2 to 5, drawn): at a point of its
    # progress, not of the clock, so a slow machine sees as many commits as a fast one.
    wanted, heights, lines = rng.randint(2, 5), set(), []
    deadline = time.monotonic() + 120
    while len(heights) < wanted and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("SEEN "):
            heights.add(int(line.split()[1]))
    lines += read_until_killed(child, 0)
    assert len(heights) >= wanted, f"the child's readers saw only heights {sorted(heights)}"
    return [line for line in lines if line.startswith("SEEN ")]


def _balances_by_height(ledger: Ledger) -> dict[int, list[int]]:
    """The watched balances after each block (key: blocks applied), replayed from genesis
    from the blocks alone."""
    engine = Engine(State(), ledger.config.chain_id)
    genesis = decode_block(ledger.block(0))
    engine.apply_genesis(genesis.records.tobytes(), len(ledger.config.issuers))
    found = {}
    for height in range(1, ledger.height):
        block = decode_block(ledger.block(height))
        assert engine.replay(block.records, block.codes, block.time, block.batches)
        found[height + 1] = engine.state.balance_array[1:ACCOUNTS + 1].tolist()
    return found


@pytest.mark.timeout(300)
def test_readers_beside_sigkilled_commits_saw_only_durable_whole_blocks(tmp_path):
    key = PrivateKey.generate()
    key_file = save_key(tmp_path / "key.json", key, "crash", scrypt_n=2**10)
    directory = tmp_path / "chain"
    _chain(directory, key).close()
    rng = random.Random(20261201)
    seen_total, heights = 0, set()
    for _ in range(KILLS):
        seen = _run_until_killed(directory, key_file, rng)
        with Ledger.open(directory) as ledger:
            expected = _balances_by_height(ledger)
            for line in seen:
                height, *balances = map(int, line.split()[1:])
                assert height in expected, f"read at height {height}, reopened at {ledger.height}"
                assert balances == expected[height], f"height {height}: read {balances}"
                heights.add(height)
            assert sum(expected[ledger.height]) == ACCOUNTS * 10**6
        seen_total += len(seen)
    assert seen_total > KILLS and len(heights) > KILLS  # readers ran beside many commits
    assert np.all(np.diff(sorted(heights)) > 0)
