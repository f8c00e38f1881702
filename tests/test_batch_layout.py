"""Batch entries have one layout and one rule, both in core, and every door uses them alike.

The layout (112 bytes: first, count, signer key, 8 reserved bytes, signature) is BATCH_DTYPE,
made by pack_batches and read back by unpack_batches. The rule (entries non-empty, within the
records, in record order, not overlapping, reserved bytes zero, covering exactly the
batch_authorized records) is check_batch_layout: check_block answers its BlockResult, the wire
protocol refuses with its sentence, the engine refuses bad ranges.

Method: the packed bytes are compared with struct's reading of docs/FORMAT.md; hypothesis draws
record flags and batch entries (a valid cover, often broken by one edit: an entry dropped,
emptied, stretched, moved, doubled or given reserved bytes) and compares check_batch_layout with
a plain-Python reading of docs/FORMAT.md, then each door with it on the same input.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsunagi.core import records
from tsunagi.core.block import (
    BATCH_DTYPE,
    BatchAuth,
    BlockResult,
    batch_fault_message,
    check_batch_layout,
    check_batch_ranges,
    check_block,
    decode_block,
    encode_block,
    mine_header,
    pack_batches,
    unpack_batches,
)
from tsunagi.errors import EncodingError, ProtocolError
from tsunagi.ledger.engine import Engine
from tsunagi.ledger.state import State
from tsunagi.node import protocol

CHAIN = 3
PREV = bytes(range(32))
TRIVIAL_BITS = 0x207FFFFF
RANGE_FAULTS = (BlockResult.batch_empty, BlockResult.batch_out_of_range, BlockResult.batch_order)


ENTRIES = [BatchAuth(0, 3, bytes(range(32)), bytes(range(64, 128))),
           BatchAuth(7, 2**32 - 1, b"\xff" * 32, b"\x01" * 64)]


def test_pack_batches_writes_the_format_md_layout_and_reads_back():
    packed = pack_batches(ENTRIES)
    assert packed.dtype is BATCH_DTYPE
    assert packed.tobytes() == b"".join(struct.pack("<II32s8x64s", *entry) for entry in ENTRIES)
    assert unpack_batches(packed) == ENTRIES
    assert pack_batches(packed) is packed
    view = pack_batches(memoryview(packed.tobytes()))
    assert view.dtype is BATCH_DTYPE and unpack_batches(view) == ENTRIES
    assert len(pack_batches(())) == 0 and len(pack_batches(b"")) == 0


@pytest.mark.parametrize("batches, why", [
    ([(0, 2**32, bytes(32), bytes(64))], "u32"),
    ([(-1, 1, bytes(32), bytes(64))], "u32"),
    ([(0, 1, bytes(31), bytes(64))], "signer key is 32 bytes"),
    ([(0, 1, bytes(32), bytes(63))], "signature 64"),
    (bytes(113), "whole 112-byte"),
])
def test_pack_batches_refuses_what_does_not_fit(batches, why):
    with pytest.raises(EncodingError, match=why):
        pack_batches(batches)


def test_every_door_holds_batches_in_the_one_layout():
    message = protocol.SubmitBatch(bytes(128), b"", pack_batches(ENTRIES).tobytes())
    assert message.batch_entries().dtype is BATCH_DTYPE
    assert unpack_batches(message.batch_entries()) == ENTRIES
    assert not hasattr(protocol, "BATCH_AUTH_DTYPE") and not hasattr(protocol, "BATCH_AUTH_BYTES")


def reference_layout(entries: list[tuple[int, int, bool]], flagged: list[bool]) -> BlockResult:
    """docs/FORMAT.md's batch rules read plainly: one Python step per entry and record."""
    if any(count == 0 for _, count, _ in entries):
        return BlockResult.batch_empty
    if any(first + count > len(flagged) for first, count, _ in entries):
        return BlockResult.batch_out_of_range
    ends = [first + count for first, count, _ in entries]
    if any(first < ends[index] for index, (first, _, _) in enumerate(entries[1:])):
        return BlockResult.batch_order
    if any(reserved for _, _, reserved in entries):
        return BlockResult.batch_reserved
    covered = {index for first, count, _ in entries for index in range(first, first + count)}
    if covered != {index for index, flag in enumerate(flagged) if flag}:
        return BlockResult.batch_coverage
    return BlockResult.ok


@st.composite
def layouts(draw) -> tuple[list[tuple[int, int, bool]], list[bool]]:
    """Record flags and entries: the flagged runs cut into adjacent entries, then maybe one
    edit that breaks a rule (or, by chance, keeps them all)."""
    flagged = draw(st.lists(st.booleans(), min_size=1, max_size=40))
    entries, index = [], 0
    while index < len(flagged):
        if not flagged[index]:
            index += 1
            continue
        end = index
        while end < len(flagged) and flagged[end]:
            end += 1
        cut = draw(st.integers(index + 1, end))  # a run may be two adjacent entries
        entries += [(index, cut - index, False)] + ([(cut, end - cut, False)] if cut < end else [])
        index = end
    edit = draw(st.sampled_from(["none", "drop", "empty", "stretch", "move", "double",
                                 "reserved", "swap", "add"]))
    if entries and edit != "none" and edit != "add":
        at = draw(st.integers(0, len(entries) - 1))
        first, count, _ = entries[at]
        if edit == "drop":
            del entries[at]
        elif edit == "empty":
            entries[at] = (first, 0, False)
        elif edit == "stretch":
            entries[at] = (first, count + draw(st.integers(1, 5)), False)
        elif edit == "move":
            entries[at] = (max(0, first + draw(st.integers(-3, 3))), count, False)
        elif edit == "double":
            entries.insert(at, entries[at])
        elif edit == "reserved":
            entries[at] = (first, count, True)
        elif len(entries) > 1:
            entries[0], entries[-1] = entries[-1], entries[0]
    elif edit == "add":
        entries.append((draw(st.integers(0, 45)), draw(st.integers(0, 5)), False))
    return entries, flagged


def entry_array(entries: list[tuple[int, int, bool]]) -> np.ndarray:
    table = np.zeros(len(entries), dtype=BATCH_DTYPE)
    for row, (first, count, reserved) in zip(table, entries):
        row["first"], row["count"] = first, count
        row["reserved"][3] = reserved
    return table


def record_buffer(flagged: list[bool]) -> bytes:
    """Distinct transfers, batch_authorized where ``flagged`` says."""
    return b"".join(records.transfer(CHAIN, sequence + 1, 1, 2, 5, batch_authorized=flag)
                    for sequence, flag in enumerate(flagged))


@given(layouts())
def test_the_rule_is_what_format_md_says(layout):
    entries, flagged = layout
    table = entry_array(entries)
    expected = reference_layout(entries, flagged)
    assert check_batch_layout(table, np.array(flagged, dtype=bool)) == expected
    ranges = check_batch_ranges(table, len(flagged))
    assert ranges == (expected if expected in RANGE_FAULTS else BlockResult.ok)


@given(layouts())
def test_the_wire_protocol_refuses_what_the_rule_refuses(layout):
    entries, flagged = layout
    expected = reference_layout(entries, flagged)
    signatures = bytes(64) * flagged.count(False)
    batches = entry_array(entries).tobytes()
    if expected is BlockResult.ok:
        protocol.check_submit_batch(record_buffer(flagged), signatures, batches)
        return
    with pytest.raises(ProtocolError) as refused:
        protocol.check_submit_batch(record_buffer(flagged), signatures, batches)
    assert str(refused.value) == batch_fault_message(expected, len(flagged))


@given(layouts())
def test_the_engine_refuses_what_the_range_rule_refuses(layout):
    entries, flagged = layout
    expected = reference_layout(entries, flagged)
    engine = Engine(State(), CHAIN)
    arguments = (record_buffer(flagged), bytes(64) * flagged.count(False), entry_array(entries))
    if expected not in RANGE_FAULTS:
        outcome = engine.process(*arguments)  # coverage faults become codes, not errors
        assert len(outcome.codes) == len(flagged)
        return
    with pytest.raises(EncodingError) as refused:
        engine.process(*arguments)
    assert str(refused.value) == batch_fault_message(expected, len(flagged))


@given(layouts())
def test_check_block_answers_what_the_rule_answers(layout):
    entries, flagged = layout
    data = encode_block(prev_hash=PREV, time=1, bits=TRIVIAL_BITS,
                        records=record_buffer(flagged), codes=bytes(len(flagged)),
                        signatures=bytes(64) * flagged.count(False), batches=[
                            (first, count, bytes(32), bytes(64)) for first, count, _ in entries])
    for index, (_, _, reserved) in enumerate(entries):  # encode_block writes them zero
        if reserved:
            at = len(data) - 4 - (len(entries) - index) * BATCH_DTYPE.itemsize + 40 + 3
            data[at] = 1
    data[36:68] = decode_block(bytes(data)).computed_merkle_root()
    mine_header(data, threads=1)
    result = check_block(decode_block(data), batch_signatures=False)
    assert result == reference_layout(entries, flagged)
