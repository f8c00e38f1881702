"""Undo data takes blocks back exactly (tsunagi.ledger.undo).

Method: the kernel property tests' random batches (every record kind, linked groups, joined
batches, rollbacks, holds posted, voided and expired, policy keys set, revoked and spent down,
opens past accounts_max) are applied one block at a time with undo data; then the blocks are
undone newest first, and after each the whole state (``State.to_arrays``: every table and
counter) must be byte for byte what it was before that block. The maps and the expiry heap are
indexes over those tables: applying the same block again must give the same codes and the same
state as the first time, which only holds when they answer as before.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given

from tsunagi._native import commit
from tsunagi.ledger.engine import Engine
from tsunagi.ledger.undo import apply_undo, decode_undo, encode_undo, make_undo

from test_kernel_properties import CHAIN, SETTINGS, genesis_pair, scenarios


def _state_bytes(state) -> tuple:
    arrays, meta = state.to_arrays()
    return tuple(sorted((name, array.tobytes()) for name, array in arrays.items())), \
        tuple(sorted(meta.items())), state.counters[[0, 1, 2, 4, 5, 6, 7]].tobytes()


def _apply_block(state, data, pre, join, now_s):
    counters = state.counters.copy()
    expired = commit.expire_holds(state, now_s)
    touches = commit.policy_touches(data)
    codes, opened, stored, journal = commit.apply_batch(
        state, data, pre, now_s, join_next=join, journal=True, policy_touches=touches)
    return (codes, opened, stored), make_undo(counters, journal, expired)


@SETTINGS
@given(scenarios())
def test_undo_returns_the_state_byte_for_byte_and_the_block_applies_again(scenario):
    batches, _, limits = scenario
    state, _ = genesis_pair(**limits)
    before, undos, results = [], [], []
    for data, pre, join, now_s in batches:
        before.append(_state_bytes(state))
        result, undo = _apply_block(state, data, pre, join, now_s)
        undo = decode_undo(encode_undo(undo))  # through its stored form
        undos.append(undo)
        results.append(result)
    after_all = _state_bytes(state)
    for index in reversed(range(len(batches))):
        apply_undo(state, undos[index])
        assert _state_bytes(state) == before[index]
    # The maps and the heap answer as before: the same blocks apply to the same results.
    for (data, pre, join, now_s), result in zip(batches, results):
        again, _ = _apply_block(state, data, pre, join, now_s)
        for a, b in zip(again, result):
            assert np.array_equal(a, b)
    assert _state_bytes(state) == after_all


@SETTINGS
@given(scenarios())
def test_engine_undo_also_takes_back_expiry_of_batches_that_stored_nothing(scenario):
    """A batch of only rejected records stores no block, yet its time expires holds; the next
    block's undo opens them again, and so does an undo of the block before them."""
    batches, end_s, limits = scenario
    state, _ = genesis_pair(**limits)
    engine = Engine(state, CHAIN)
    # The state each block starts from, as the chain has it: after the block before, without
    # the expiry of the empty batch that came between (no block records it).
    before, undos = [_state_bytes(state)], []
    for data, pre, join, now_s in batches:
        flat = commit.record_bytes(data)
        undos.append(_engine_block(engine, flat, pre, join, now_s))
        before.append(_state_bytes(state))
        # Nothing stored, only time passing: holds due now expire.
        empty = engine.process(b"", b"", (), now_s + 7, track_changes=True)
        assert empty.undo is None
    for index in reversed(range(len(batches))):
        engine.undo(undos[index])
        assert _state_bytes(state) == before[index]


def _engine_block(engine, flat, pre, join, now_s):
    """Applies a batch as a block would (replay skips signatures) and returns its undo."""
    codes = np.zeros(len(flat) // 128, dtype=np.uint8)
    if pre is not None:
        codes = pre.copy()
    outcome = engine.replay(flat, codes, now_s, track_undo=True)
    return outcome.undo
