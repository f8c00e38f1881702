"""The wire protocol encodes every message and decodes it back to an equal message.

Method: hypothesis draws every message type with arbitrary field values; each must survive
encode -> bytes -> decode_frame -> decode unchanged, keep its request id, and also survive a
FrameReader fed the bytes of many frames cut at arbitrary places. Layout facts a peer in
another language relies on (prefix, field offsets) are checked against hand-packed bytes.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagi.core import records as rec
from tsunagi.core.block import BLOCK_BYTES_MIN, decode_block, encode_block
from tsunagi.core.codes import Result
from tsunagi.errors import ProtocolError
from tsunagi.node import limits
from tsunagi.node import protocol as p

u8 = st.integers(0, 2**8 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
u64_real = st.integers(0, 2**64 - 2)  # 2**64 - 1 stands for "none" where a field may be None
hash32 = st.binary(min_size=32, max_size=32)
record = st.binary(min_size=128, max_size=128)
codes = st.sampled_from([int(code) for code in Result])
request_ids = u64


def signed_record(flags: int) -> bytes:
    return rec.transfer(7, 1, 1, 2, 5)[:1] + bytes([flags]) + rec.transfer(7, 1, 1, 2, 5)[2:]


@st.composite
def submit_batches(draw):
    """Records with random batch_authorized runs, their signatures and covering entries."""
    count = draw(st.integers(1, 40))
    authorized = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    records, signatures, entries = [], [], []
    index = 0
    while index < count:
        if authorized[index]:
            run = 1
            while index + run < count and authorized[index + run] and draw(st.booleans()):
                run += 1
            entries.append(struct.pack("<II", index, run) + draw(hash32) + bytes(8)
                           + draw(st.binary(min_size=64, max_size=64)))
            records += [signed_record(rec.Flags.batch_authorized)] * run
            index += run
        else:
            records.append(signed_record(draw(st.sampled_from([0, rec.Flags.linked]))))
            signatures.append(draw(st.binary(min_size=64, max_size=64)))
            index += 1
    return p.SubmitBatch(b"".join(records), b"".join(signatures), b"".join(entries))


@st.composite
def submit_answers(draw):
    values = draw(st.lists(codes, min_size=1, max_size=50))
    committed = [i for i, c in enumerate(values) if c == Result.already_committed]
    originals = tuple((i, draw(codes)) for i in committed if draw(st.booleans()))
    opened_at = sorted(draw(st.sets(st.integers(0, len(values) - 1), max_size=5)))
    opened = tuple((i, draw(st.integers(1, 2**64 - 1))) for i in opened_at)
    height = draw(st.none() | u64_real)
    block_hash = None if height is None else draw(hash32)
    return p.SubmitAnswer(height, block_hash, bytes(values), originals, opened)


history_entries = st.builds(p.HistoryEntry, record, codes, u64, u32, hash32)

messages = st.one_of(
    st.builds(p.Hello, st.lists(u8, min_size=1, max_size=16).map(tuple), u32),
    st.builds(p.Welcome, st.sampled_from(limits.protocol_versions), u32, u64, hash32, u32, u32,
              u32),
    st.builds(p.Error, st.sampled_from(list(p.ErrorCode)), st.text(max_size=300)),
    st.builds(p.Ping), st.builds(p.Pong), st.builds(p.QueryStatus), st.builds(p.Unsubscribe),
    st.builds(p.SubscriptionEnd),
    st.builds(p.Submit, record.map(lambda r: r[:1] + bytes([r[1] & 1]) + r[2:]),
              st.binary(min_size=64, max_size=64)),
    submit_batches(), submit_answers(),
    st.builds(p.QueryBalance, u64), st.builds(p.Balance, u64, u64),
    st.builds(p.QueryAccount, u64), st.builds(p.Account, u64, hash32, u64, u64, u8),
    st.builds(p.QueryTransaction, hash32),
    st.builds(p.Transaction, record, codes, u64, u32, hash32,
              st.lists(hash32, max_size=64).map(tuple)),
    st.builds(p.QueryBlock, height=u64), st.builds(p.QueryBlock, block_hash=hash32),
    st.builds(p.Block, st.binary(min_size=BLOCK_BYTES_MIN, max_size=600)),
    st.builds(p.QueryHistory, u64, st.integers(1, limits.history_limit_max),
              st.none() | st.tuples(u64_real, u32)),
    st.builds(p.History, st.lists(history_entries, max_size=8).map(tuple)),
    st.builds(p.Status, u32, u32, u64, hash32, u32, u32, u64, u64),
    st.builds(p.Subscribe, u64, st.booleans()), st.builds(p.Subscribed, u64),
    st.builds(p.BlockNotice, u64, hash32, u32,
              st.none() | st.binary(min_size=BLOCK_BYTES_MIN, max_size=400)),
)

holds = st.builds(p.Hold, u64, u64, u64, u64, u64, u64, hash32,
                  st.sampled_from(sorted(p.HOLD_STATUS_NAMES)))
open_holds = st.builds(p.Hold, u64, u64, u64, u64, u64, u64, hash32, st.just(p.HOLD_OPEN))
messages = st.one_of(
    messages,
    st.builds(p.QueryAccounts, hash32, u64),
    st.builds(p.Accounts, st.sets(u64, max_size=limits.accounts_per_answer_max)
              .map(lambda found: tuple(sorted(found)))),
    st.builds(p.QueryHolds, u64), holds, st.builds(p.QueryHold, u64, u64),
    st.lists(open_holds, max_size=6).flatmap(lambda listed: st.builds(
        p.Holds, u64, st.integers(len(listed), 2**32 - 1), st.just(tuple(listed)))),
    st.builds(p.QueryPolicy, u64, st.sampled_from(p.POLICY_SLOTS)),
    st.builds(p.Policy, u64, st.sampled_from(p.POLICY_SLOTS), hash32, u64, u64, u64, u64,
              st.lists(st.integers(1, 2**64 - 1), max_size=4).map(tuple)),
)
messages = st.one_of(  # contracts and light clients
    messages,
    st.builds(p.QueryHeaders, u64, st.integers(1, limits.headers_per_message_max)),
    st.builds(p.QueryContractState, st.binary(min_size=1, max_size=256)),
    st.builds(p.ContractState, st.binary(max_size=300)),
    st.builds(p.QueryCallResult, hash32),
    st.builds(p.CallResult, st.integers(0, 6), u32, u64, st.binary(max_size=100),
              st.binary(max_size=100), st.text(max_size=200)),
)


@given(messages, request_ids)
@settings(max_examples=600, deadline=None)
def test_every_message_round_trips(message, request_id):
    data = p.encode(message, request_id)
    assert p.frame_length(data) == len(data)
    got_id, back = p.decode_message(data)
    assert got_id == request_id
    assert type(back) is type(message)
    assert back == message


def _give(reader: p.FrameReader, data: bytes, into_buffer: bool) -> int:
    """Hands the reader bytes as a socket would: copied in by feed, or written into the space
    receive_buffer offers (no more than it offers, as a read would). Returns bytes taken."""
    if not into_buffer:
        reader.feed(data)
        return len(data)
    space = reader.receive_buffer()
    size = min(len(space), len(data))
    space[:size] = data[:size]
    reader.received(size)
    return size


@given(st.lists(st.tuples(messages, request_ids), min_size=1, max_size=12),
       st.lists(st.integers(1, 400), min_size=1, max_size=30), st.booleans())
@settings(max_examples=300, deadline=None)
def test_frame_reader_cuts_a_stream_anywhere(pairs, cuts, into_buffer):
    """Frames come out whole and in order wherever the stream is cut, and frames taken out
    earlier (views of the reader's buffers) still decode after later bytes arrived."""
    stream = b"".join(p.encode(message, request_id) for message, request_id in pairs)
    reader = p.FrameReader((p.HELLO_VERSION,) + limits.protocol_versions)
    frames, offset, index = [], 0, 0
    while offset < len(stream):
        size = cuts[index % len(cuts)]
        offset += _give(reader, stream[offset:offset + size], into_buffer)
        index += 1
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    assert reader.pending_bytes == 0
    assert [(f.request_id, p.decode(f)) for f in frames] == [(r, m) for m, r in pairs]


def test_a_large_frame_is_received_into_one_buffer_of_its_size():
    """Once a 2.6 MB batch's length is in, the reader offers room for the whole rest of it,
    so 64 KiB reads land in place; small frames on either side come out too."""
    records = np.random.default_rng(1).integers(0, 256, 20_000 * 128, np.uint8)
    records.view(rec.RECORD_DTYPE)["flags"] = 0  # each record signed on its own
    batch = p.SubmitBatch(records.tobytes(), bytes(64 * 20_000))
    stream = p.encode(p.Ping(), 1) + p.encode(batch, 2) + p.encode(p.Ping(), 3)
    reader = p.FrameReader((p.HELLO_VERSION,) + limits.protocol_versions)
    offered, offset, frames = [], 0, []
    while offset < len(stream):
        offered.append(len(reader.receive_buffer()))
        offset += _give(reader, stream[offset:offset + 65536], True)
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    assert [(f.request_id, p.decode(f)) for f in frames] == [(1, p.Ping()), (2, batch),
                                                             (3, p.Ping())]
    frame_bytes = len(p.encode(batch, 2))
    assert max(offered) >= frame_bytes - 65536  # the rest of the batch, offered at once


def test_frame_prefix_layout():
    data = p.encode(p.QueryBalance(0x0102030405060708), 0x1122334455667788)
    length, version, kind, flags, request_id = struct.unpack_from("<IBBHQ", data)
    assert (length, version, kind, flags) == (12 + 8, 1, 0x20, 0)
    assert request_id == 0x1122334455667788
    assert data[16:] == struct.pack("<Q", 0x0102030405060708)


def test_hello_layout_is_fixed():
    data = p.encode(p.Hello((1, 2), 0xAABBCCDD), 5)
    assert data[4] == p.HELLO_VERSION
    assert data[16:] == b"TSNG" + struct.pack("<IB", 0xAABBCCDD, 2) + bytes([1, 2])


def test_submit_batch_is_zero_copy_views():
    batch = p.SubmitBatch(signed_record(0) * 3, bytes(range(64)) * 3)
    frame = p.decode_frame(p.encode(batch, 9))
    decoded = p.decode(frame)
    assert isinstance(decoded.records, memoryview)
    assert decoded.records.obj is frame.payload.obj  # a view of the received bytes
    assert decoded.record_count == 3
    assert bytes(decoded.signatures) == bytes(range(64)) * 3


def test_submit_answer_helpers():
    answer = p.SubmitAnswer(4, bytes(32), bytes([0, Result.already_committed, 8, 0]),
                            ((1, 0),), ((3, 12),))
    assert answer.failures == [(1, Result.already_committed), (2, Result.insufficient_funds)]
    assert answer.final_codes().tolist() == [0, 0, 8, 0]
    one = answer.slice(3, 4)
    assert (one.code, one.account, one.height) == (Result.ok, 12, 4)
    unstored = answer.slice(1, 2)
    assert unstored.height is None and unstored.originals == ((0, 0),)


@pytest.mark.parametrize("records, signatures, batches, why", [
    (signed_record(0) * 2, bytes(64), b"", "need their own signature"),
    (signed_record(2), b"", b"", "cover exactly"),
    (signed_record(2) * 2, b"", struct.pack("<II", 0, 3) + bytes(104), "covers 1 or more"),
    (signed_record(2) * 2, b"", (struct.pack("<II", 0, 2) + bytes(104)) * 2, "overlap"),
    (signed_record(0), bytes(64), struct.pack("<II", 0, 0) + bytes(104), "covers 1 or more"),
    (b"", b"", b"", "1..65536 records"),
])
def test_batch_structure_is_checked(records, signatures, batches, why):
    payload = struct.pack("<IIII", len(records) // 128, len(signatures) // 64,
                          len(batches) // 112, 0) + records + signatures + batches
    with pytest.raises(ProtocolError, match=why):
        p.decode(p.Frame(1, p.MessageType.submit_batch, 0, 1, memoryview(payload)))
    with pytest.raises(ValueError, match=why):
        p.encode(p.SubmitBatch(records, signatures, batches), 1)


def test_a_block_answer_is_at_least_the_smallest_block_core_decodes():
    """The protocol and core agree on the smallest block: header, counts, extension length."""
    smallest = encode_block(prev_hash=bytes(32), time=0, bits=0x207FFFFF, records=b"", codes=b"",
                            signatures=b"")
    assert len(smallest) == BLOCK_BYTES_MIN and len(decode_block(smallest)) == 0
    _, back = p.decode_message(p.encode(p.Block(bytes(smallest)), 1))
    assert back.data == bytes(smallest)
    short = p.encode_frame(p.MessageType.block, 1, bytes(smallest)[:-1])
    with pytest.raises(ProtocolError, match=f"at least {BLOCK_BYTES_MIN} bytes"):
        p.decode_message(short)
    notice = p.encode_frame(p.MessageType.block_notice, 1, bytes(48) + bytes(smallest)[:-1],
                            flags=p.WITH_BLOCKS)
    with pytest.raises(ProtocolError, match="at least the block header"):
        p.decode_message(notice)


def test_encoders_refuse_bad_fields():
    with pytest.raises(ValueError):
        p.encode(p.QueryBalance(2**64), 1)
    with pytest.raises(ValueError):
        p.encode(p.Submit(bytes(127), bytes(64)), 1)
    with pytest.raises(ValueError):
        p.encode(p.QueryBlock(height=1, block_hash=bytes(32)), 1)
    with pytest.raises(TypeError):
        p.encode(object(), 1)


def test_error_message_is_cut_on_a_character_boundary():
    long = "é" * limits.error_message_bytes_max
    _, back = p.decode_message(p.encode(p.Error(p.ErrorCode.internal, long), 1))
    assert len(back.message.encode()) <= limits.error_message_bytes_max
    assert back.message == "é" * (limits.error_message_bytes_max // 2)


def test_codes_decode_as_numpy_without_copy_semantics():
    answer = p.SubmitAnswer(None, None, bytes([3, 0, 9]))
    _, back = p.decode_message(p.encode(answer, 2))
    assert back.codes_array().dtype == np.uint8
    assert back.codes_array().tolist() == [3, 0, 9]
    assert back.height is None and back.block_hash is None


def _frame(kind: p.MessageType, payload: bytes) -> p.Frame:
    return p.Frame(1, kind, 0, 1, memoryview(payload))


HOLD_BYTES = struct.pack("<6Q", 1, 2, 3, 4, 5, 6) + bytes(32) + bytes([1]) + bytes(7)


@pytest.mark.parametrize("kind, payload, why", [
    (p.MessageType.query_accounts, bytes(39), "40 bytes"),
    (p.MessageType.accounts, struct.pack("<I4x", 2) + struct.pack("<QQ", 5, 5), "rise"),
    (p.MessageType.accounts, struct.pack("<I4x", 1001) + bytes(8008), "at most 1000"),
    (p.MessageType.accounts, struct.pack("<I4x", 2) + bytes(8), "24 bytes"),
    (p.MessageType.hold, HOLD_BYTES[:-8] + bytes([9]) + bytes(7), "unknown hold status"),
    (p.MessageType.hold, HOLD_BYTES[:-1] + b"\x01", "padding"),
    (p.MessageType.holds, struct.pack("<QII", 5, 0, 1) + HOLD_BYTES, "open count"),
    (p.MessageType.holds, struct.pack("<QII", 5, 1, 1) + HOLD_BYTES[:-8] + bytes([2])
     + bytes(7), "open holds only"),
    (p.MessageType.query_hold, bytes(15), "16 bytes"),
    (p.MessageType.query_policy, struct.pack("<QB7x", 1, 0), "slot is 1..7"),
    (p.MessageType.query_policy, struct.pack("<QB", 1, 1) + b"\x01" + bytes(6), "padding"),
    (p.MessageType.policy, struct.pack("<QB7x32sQQQQ4Q", 1, 8, bytes(32), 0, 0, 0, 0, 0, 0, 0,
                                       0), "slot is 1..7"),
])
def test_malformed_account_hold_and_policy_messages_get_protocol_error(kind, payload, why):
    with pytest.raises(ProtocolError, match=why):
        p.decode(_frame(kind, payload))


def test_hold_and_policy_layouts():
    """Field offsets a peer in another language relies on, against hand-packed bytes."""
    hold = p.Hold(1, 2, 3, 4, 5, 6, bytes(range(32)), p.HOLD_OPEN)
    assert p.encode(hold, 1)[16:] == struct.pack("<6Q", 1, 2, 3, 4, 5, 6) + bytes(range(32)) \
        + bytes([1]) + bytes(7)
    listed = p.encode(p.Holds(700, 3, (hold,)), 1)[16:]
    assert listed[:16] == struct.pack("<QII", 700, 3, 1) and len(listed) == 16 + 88
    policy = p.Policy(9, 3, bytes(range(32)), 10, 20, 15, 99, (4, 5))
    assert p.encode(policy, 1)[16:] == struct.pack("<QB7x", 9, 3) + bytes(range(32)) \
        + struct.pack("<8Q", 10, 20, 15, 99, 4, 5, 0, 0)
    assert p.encode(p.QueryAccounts(bytes(range(32)), 7), 1)[16:] == bytes(range(32)) \
        + struct.pack("<Q", 7)
    with pytest.raises(ValueError):
        p.encode(p.QueryPolicy(1, 0), 1)
    with pytest.raises(ValueError):
        p.encode(p.Holds(0, 0, (hold,)), 1)


CALL_HEAD = struct.Struct("<B3xIQIIH2x")


@pytest.mark.parametrize("kind, payload, why", [
    (p.MessageType.query_headers, struct.pack("<QI4x", 1, 0), "count is 1..16384"),
    (p.MessageType.query_headers, struct.pack("<QI", 1, 5) + b"\x01" + bytes(3), "padding"),
    (p.MessageType.query_contract_state, b"", "1..256 bytes"),
    (p.MessageType.query_contract_state, bytes(257), "1..256 bytes"),
    (p.MessageType.contract_state, bytes(64 * 1024 + 1), "at most 65536"),
    (p.MessageType.query_call_result, bytes(31), "32 bytes"),
    (p.MessageType.call_result, CALL_HEAD.pack(7, 0, 0, 0, 0, 0), "unknown call code"),
    (p.MessageType.call_result, CALL_HEAD.pack(5, 14, 3, 0, 0, 4) + b"abc", "is 32 bytes, got 31"),
    (p.MessageType.call_result, CALL_HEAD.pack(5, 14, 3, 0, 0, 1) + b"\xff", "not UTF-8"),
    (p.MessageType.call_result, CALL_HEAD.pack(5, 0, 0, 0, 0, 2000), "detail 1024"),
])
def test_malformed_contract_and_header_queries_get_protocol_error(kind, payload, why):
    with pytest.raises(ProtocolError, match=why):
        p.decode(_frame(kind, payload))


def test_call_result_layout():
    """The call result's fields at the offsets docs/PROTOCOL.md gives."""
    answer = p.CallResult(5, 14, 300, b"", b"\x90", "wrong state")
    assert p.encode(answer, 1)[16:] == CALL_HEAD.pack(5, 14, 300, 0, 1, 11) + b"\x90" \
        + b"wrong state"
    long = p.decode_message(p.encode(p.CallResult(6, detail="é" * 600), 1))[1]
    assert long.detail == "é" * 512  # cut to 1024 bytes, never inside a character
