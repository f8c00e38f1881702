"""Blocks made elsewhere connect, and the tip disconnects exactly (Ledger.connect_block and
disconnect_blocks).

Method: ledger A makes blocks through its own fast path (submit_batch) with every kind of
record, holds that expire at a later block's time, policy keys spent down, accounts opened;
ledger B, a second data directory of the same chain, connects A's blocks one by one. B's state
must equal A's after each; disconnecting returns B to A's state at that height, durably across
a reopen; blocks that break a rule are refused with their BlockResult and change nothing.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tsunagi.core import block as blk
from tsunagi.core import records as r
from tsunagi.core.block import BlockResult
from tsunagi.core.codes import Result
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger

from test_ledger import ALICE, BOB, CAROL, CHAIN, ISSUER, Chain

T0 = 1_700_000_000


def _make_history(a: Chain) -> list[dict]:
    """Blocks on A at increasing times; returns A's canonical state after each height."""
    states = [a.ledger.state.canonical()]
    now = T0
    dave = PrivateKey.generate()
    policy = PrivateKey.generate()
    steps = [
        lambda: a.pay(ALICE, BOB, 10, now_s=now),
        lambda: a.send(r.open_account(CHAIN, dave.public_key), dave, now_s=now),
        lambda: a.send(r.hold(CHAIN, a.next(ALICE), ALICE, CAROL, 50,
                              authority_account=ISSUER, expiry_s=now + 30),
                       ALICE, now_s=now),
        lambda: a.send(r.hold(CHAIN, a.next(BOB), BOB, CAROL, 70,
                              authority_account=ISSUER, expiry_s=now + 5), BOB,
                       now_s=now),
        lambda: a.send(r.post(CHAIN, a.next(ISSUER), ISSUER, ALICE, a.sequence[ALICE], 20),
                       ISSUER, now_s=now),
        lambda: a.send(r.set_policy_key(CHAIN, a.next(CAROL), CAROL, 1, policy.public_key,
                                        amount_max=100, allowance=150), CAROL, now_s=now),
        lambda: a.send(r.transfer(CHAIN, a.next(CAROL), CAROL, ALICE, 60, key_slot=1), policy,
                       now_s=now),
        lambda: a.send(r.mint(CHAIN, a.next(ISSUER), ISSUER, BOB, 500), ISSUER, now_s=now),
        lambda: a.pay(BOB, ALICE, 5, now_s=now),  # at a time past Bob's hold: it expires first
    ]
    for step in steps:
        answer = step()
        assert answer.height is not None, [Result(int(c)).name for c in answer.codes]
        states.append(a.ledger.state.canonical())
        now += 3
    return states


@pytest.fixture
def pair(tmp_path):
    a = Chain(tmp_path / "a")
    b = Ledger.create(tmp_path / "b", a.ledger.config, threads=2)
    yield a, b
    a.ledger.close()
    if b._log is not None:
        b.close()


def _connect_all(a: Chain, b: Ledger, first: int = 1) -> None:
    for height in range(first, a.ledger.height):
        assert b.connect_block(a.ledger.block(height), now_s=T0 + 1000) is BlockResult.ok


def test_blocks_connect_and_disconnect_to_the_state_at_each_height(pair, tmp_path):
    a, b = pair
    states = _make_history(a)
    _connect_all(a, b)
    assert b.tip == a.ledger.tip
    assert b.state.canonical() == states[-1]
    assert b.account(BOB).balance == a.ledger.account(BOB).balance  # the durable view too
    for height in range(len(states) - 1, 1, -2):
        taken = b.disconnect_blocks(2)
        assert [bytes(t) for t in taken] == [a.ledger.block(h) for h in (height, height - 1)]
        assert b.height == height - 1
        assert b.state.canonical() == states[height - 2]
        assert b._view.canonical() == states[height - 2]
    b.close()
    b = Ledger.open(tmp_path / "b")
    try:
        assert b.state.canonical() == states[b.height - 1]
        _connect_all(a, b, first=b.height)
        assert b.state.canonical() == states[-1] and b.tip == a.ledger.tip
        assert b.verify().ok
    finally:
        b.close()


def _reencoded(raw: bytes, *, codes=None, signatures=None, time_s=None, bits=None,
               prev_hash=None) -> bytes:
    """The block with a field replaced and its root and proof of work made again."""
    block = blk.decode_block(raw)
    data = blk.encode_block(
        prev_hash=block.prev_hash if prev_hash is None else prev_hash,
        time=block.time if time_s is None else time_s,
        bits=block.bits if bits is None else bits, records=block.records.tobytes(),
        codes=(block.codes if codes is None else codes).tobytes(),
        signatures=(block.signatures if signatures is None else signatures).tobytes(),
        batches=block.batches)
    blk.mine_header(data)
    return bytes(data)


def _root_flipped(raw: bytes) -> bytes:
    data = bytearray(raw)
    data[40] ^= 1
    blk.mine_header(data)  # work for the changed header: only the root is wrong
    return bytes(data)


def test_a_block_that_breaks_a_rule_is_refused_and_changes_nothing(pair):
    a, b = pair
    _make_history(a)
    _connect_all(a, b, first=1)
    b.disconnect_blocks(3)
    before = b.state.canonical()
    good = a.ledger.block(b.height)
    codes = blk.decode_block(good).codes.copy()
    codes[0] = Result.insufficient_funds
    signatures = blk.decode_block(good).signatures.copy()
    signatures[0, 5] ^= 1
    tip_time = blk.decode_block(b.block(b.height - 1)).time
    cases = {
        BlockResult.codes_differ: _reencoded(good, codes=codes),
        BlockResult.not_authenticated: _reencoded(good, signatures=signatures),
        BlockResult.time_before_parent: _reencoded(good, time_s=tip_time - 1),
        BlockResult.wrong_bits: _reencoded(good, bits=0x2000FFFF),
        BlockResult.bad_merkle_root: _root_flipped(good),
        BlockResult.undecodable: good[:-1],
        BlockResult.not_tip_child: a.ledger.block(b.height + 1),
    }
    for expected, data in cases.items():
        assert b.connect_block(data, now_s=T0 + 1000) is expected
        assert b.state.canonical() == before
    assert b.connect_block(good, now_s=tip_time) is BlockResult.ok
    ahead = _reencoded(a.ledger.block(b.height), time_s=T0 + 10_000)
    assert b.connect_block(ahead, now_s=T0) is BlockResult.time_too_far_ahead
    _connect_all(a, b, first=b.height)
    assert b.tip == a.ledger.tip


def test_an_open_account_replayed_in_a_later_block_is_refused(pair):
    a, b = pair
    dave = PrivateKey.generate()
    opened = a.send(r.open_account(CHAIN, dave.public_key), dave, now_s=T0)
    assert opened.height == 1
    _connect_all(a, b)
    raw = a.ledger.block(1)
    block = blk.decode_block(raw)
    again = blk.encode_block(prev_hash=b.tip_hash, time=T0 + 1, bits=block.bits,
                             records=block.records.tobytes(), codes=block.codes.tobytes(),
                             signatures=block.signatures.tobytes())
    blk.mine_header(again)
    assert b.connect_block(bytes(again), now_s=T0 + 5) is BlockResult.replayed_open
    assert struct.unpack_from("<I", raw, 0)[0] == blk.BLOCK_VERSION
    assert np.array_equal(b.balances([ALICE, BOB])[1], a.ledger.balances([ALICE, BOB])[1])
