"""Competing branches, in any order, end on the most-work tip (tsunagi.consensus.Chain).

Method: makers (ledgers of the same chain) build a trunk and branches forking off it at drawn
heights, each block of real signed transfers and holds; a node (a fresh ledger driven by a
Chain) then takes every block in a drawn order: children before parents, branches
interleaved. It must end on the most-work tip, with state equal to a replay of that chain
from genesis (a ledger that connects exactly those blocks in order), and keep it across a
restart. The crash test (tests/test_chain_crash.py) kills the node mid-reorg.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagi.consensus.chain import Accepted, Chain
from tsunagi.core import records as r
from tsunagi.core.block import BlockResult, decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger

from test_kernel_properties import SETTINGS

CHAIN_ID = 77
KEYS = [PrivateKey.from_bytes(bytes([n]) * 32) for n in range(1, 5)]
CONFIG = ChainConfig(name="reorg", chain_id=CHAIN_ID, asset_code="TSU",
                     issuers=(KEYS[0].public_key,),
                     allocations=tuple((k.public_key, 1_000_000) for k in KEYS[1:]))
T0 = 1_700_000_000


@dataclass
class Branch:
    fork: int  # height of the trunk block it grows from
    blocks: list[bytes]  # its own blocks, in order


def _maker(path, trunk: list[bytes], fork: int) -> Ledger:
    ledger = Ledger.create(path, CONFIG, threads=1)
    for data in trunk[1: fork + 1]:
        assert ledger.connect_block(data, now_s=T0 + 10**6) is BlockResult.ok
    return ledger


def _grow(ledger: Ledger, count: int, salt: int, time_s: int) -> list[bytes]:
    """``count`` blocks of transfers (and a hold now and then) on the maker's tip."""
    out = []
    for i in range(count):
        payer = 2 + (salt + i) % 3
        payee = 2 + (salt + i + 1) % 3
        account = ledger.account(payer)
        sequence = account.sequence + 1
        if (salt + i) % 4 == 0:
            record = r.hold(CHAIN_ID, sequence, payer, payee, 5 + salt,
                            authority_account=1, expiry_s=time_s + 3 * i + 4)
        else:
            record = r.transfer(CHAIN_ID, sequence, payer, payee, 1 + salt + i)
        answer = ledger.submit_batch(record, KEYS[payer - 1].sign_record(record),
                                     now_s=time_s + 3 * i)
        assert answer.height is not None
        out.append(ledger.block(answer.height))
    return out


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    path = tmp_path_factory.mktemp("trunk")
    ledger = Ledger.create(path / "t", CONFIG, threads=1)
    blocks = [ledger.block(0)] + _grow(ledger, 6, 0, T0)
    ledger.close()
    return blocks


def _branches(tmp_path, trunk, forks_and_lengths) -> list[Branch]:
    branches = []
    for n, (fork, length) in enumerate(forks_and_lengths):
        maker = _maker(tmp_path / f"maker{n}", trunk, fork)
        blocks = _grow(maker, length, n + 1, T0 + 100 * (n + 1))
        maker.close()
        branches.append(Branch(fork, blocks))
    return branches


def _replayed(path, blocks: list[bytes]) -> dict:
    ledger = Ledger.create(path, CONFIG, threads=1)
    try:
        for data in blocks:
            assert ledger.connect_block(data, now_s=T0 + 10**6) is BlockResult.ok
        return ledger.state.canonical()
    finally:
        ledger.close()


@settings(SETTINGS, max_examples=30)  # each example builds several real ledgers
@given(st.data())
def test_any_order_of_competing_branches_ends_on_the_most_work_tip(tmp_path_factory, trunk,
                                                                    data):
    tmp_path = tmp_path_factory.mktemp("case")
    count = data.draw(st.integers(1, 3))
    specs, lengths = [], set()
    for _ in range(count):
        fork = data.draw(st.integers(0, len(trunk) - 1))
        length = data.draw(st.integers(1, 5))
        while fork + length in lengths or fork + length == len(trunk) - 1:
            length += 1  # distinct heights: no ties in work (tested on their own)
        lengths.add(fork + length)
        specs.append((fork, length))
    branches = _branches(tmp_path, trunk, specs)
    chains = {"trunk": trunk[1:]}
    for n, branch in enumerate(branches):
        chains[n] = trunk[1: branch.fork + 1] + branch.blocks
    winner = max(chains.values(), key=len)
    every = [("trunk", b) for b in trunk[1:]] + [(n, b) for n, br in enumerate(branches)
                                                 for b in br.blocks]
    order = data.draw(st.permutations(every))
    node = Ledger.create(tmp_path / "node", CONFIG, threads=1)
    chain = Chain(node, clock=lambda: T0 + 10**6)
    for _, block in order:
        answer = chain.accept_block(block)
        assert answer.accepted is not Accepted.invalid, answer
    height, tip_hash, _ = chain.tip
    assert height == len(winner) and tip_hash == decode_block(winner[-1]).hash
    expected = _replayed(tmp_path / "replay", winner)
    assert node.state.canonical() == expected
    assert node._view.canonical() == expected
    node.close()
    node = Ledger.open(tmp_path / "node")
    chain = Chain(node, clock=lambda: T0 + 10**6)
    assert chain.tip[1] == decode_block(winner[-1]).hash
    assert node.state.canonical() == expected
    node.close()


def test_equal_work_keeps_the_first_seen_tip_across_a_restart(tmp_path, trunk):
    first, second = _branches(tmp_path, trunk, [(3, 2), (3, 2)])
    node = Ledger.create(tmp_path / "node", CONFIG, threads=1)
    chain = Chain(node, clock=lambda: T0 + 10**6)
    for block in trunk[1:4] + first.blocks + second.blocks:
        assert chain.accept_block(block).accepted in (Accepted.connected, Accepted.stored)
    assert chain.tip[1] == decode_block(first.blocks[-1]).hash
    node.close()
    node = Ledger.open(tmp_path / "node")
    chain = Chain(node, clock=lambda: T0 + 10**6)
    assert chain.tip[1] == decode_block(first.blocks[-1]).hash
    # One more block on the second branch gives it more work: the node follows it.
    maker = _maker(tmp_path / "more", trunk, 3)
    for block in second.blocks:
        maker.connect_block(block, now_s=T0 + 10**6)
    more = _grow(maker, 1, 9, T0 + 900)
    maker.close()
    assert chain.accept_block(more[0]).accepted is Accepted.connected
    assert chain.tip[1] == decode_block(more[0]).hash and chain.reorg_count == 1
    assert node.state.canonical() == _replayed(tmp_path / "replay",
                                               trunk[1:4] + second.blocks + more)
    node.close()


def test_an_invalid_block_on_the_best_branch_sends_the_node_back_to_the_best_valid_one(
        tmp_path, trunk):
    """A branch with more work than the trunk only through a block whose record signature
    does not verify (and two blocks on top of it): the node reorgs onto it, meets the bad
    block, and goes back to the trunk."""
    (branch,) = _branches(tmp_path, trunk, [(2, 5)])
    node = Ledger.create(tmp_path / "node", CONFIG, threads=1)
    chain = Chain(node, clock=lambda: T0 + 10**6)
    for block in trunk[1:]:
        chain.accept_block(block)
    from test_chain_engine import _reencoded
    blocks = branch.blocks[:2]
    bad = decode_block(branch.blocks[2])
    signatures = bad.signatures.copy()
    signatures[0, 0] ^= 1
    blocks.append(_reencoded(branch.blocks[2], signatures=signatures))
    for raw in branch.blocks[3:]:  # linked on top of the forged block, with valid work
        blocks.append(_reencoded(raw, prev_hash=decode_block(blocks[-1]).hash))
    answers = [chain.accept_block(block).accepted for block in blocks]
    assert Accepted.invalid in answers
    assert chain.tip[1] == decode_block(trunk[-1]).hash and chain.reorg_count == 2
    assert node.state.canonical() == _replayed(tmp_path / "replay", trunk[1:])
    assert chain.accept_block(blocks[-1]).accepted is Accepted.invalid


def test_headers_follow_the_retarget_rule(tmp_path):
    """On a chain that retargets every 4 blocks, headers carrying the bits the rule gives are
    taken; a header with other bits, at a boundary or between two, is refused at its index."""
    from tsunagi import hashing
    from tsunagi.consensus.chain import HeadersVerdict
    from tsunagi.consensus.pow import expected_bits
    from tsunagi.core.block import mine_header

    config = CONFIG.__class__(**{**CONFIG.__dict__, "retarget_blocks": 4,
                                 "block_interval_s": 600})
    node = Ledger.create(tmp_path / "node", config, threads=1)
    try:
        chain = Chain(node, clock=lambda: T0 + 10**6)
        headers = [node.headers(0, 1)]
        times = [config.genesis_time_s]
        bits = [config.bits]
        for height in range(1, 10):
            times.append(times[-1] + 1)  # fast blocks: each retarget makes work harder
            bits.append(expected_bits(config, height, bits[-1], times.__getitem__))
            header = bytearray(hashing.make_header(1, hashing.header_hash(headers[-1]),
                                                   bytes([height]) * 32, times[-1], bits[-1],
                                                   0))
            mine_header(header)
            headers.append(bytes(header))
        assert bits[4] != bits[3] and bits[8] != bits[7]  # the rule did retarget

        def run(changed_at: int | None) -> bytes:
            """Headers 1..9, or 1..changed_at with the last one's bits changed: at a boundary
            the parent's (not retargeted), between two a slightly harder target."""
            if changed_at is None:
                return b"".join(headers[1:])
            header = bytearray(headers[changed_at])
            wrong = bits[changed_at - 1] if changed_at % 4 == 0 else bits[changed_at] - 1
            header[72:76] = wrong.to_bytes(4, "little")
            mine_header(header)  # its own work holds: only the rule is broken
            return b"".join(headers[1:changed_at]) + bytes(header)
        for changed_at in (4, 6):
            answer = chain.accept_headers(run(changed_at))
            assert (answer.verdict, answer.index) == (HeadersVerdict.invalid, changed_at - 1)
        assert chain.accept_headers(run(None)).verdict is HeadersVerdict.ok
        assert chain.best_header[0] == 9
    finally:
        node.close()
