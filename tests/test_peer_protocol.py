"""The peer messages of the wire protocol encode and decode exactly, refuse every bound, and
hand headers to the native validator without a copy.

Method: hypothesis draws every peer message with arbitrary field values and each must come
back equal through encode, a peer-sized FrameReader and decode; hand-packed bytes pin the
layouts docs/PROTOCOL.md gives. Each length and count bound is crossed by one byte or one item,
and the decoder must say ProtocolError (the encoder ValueError). Random payloads for each peer
type, random streams and valid frames damaged by the mutation fuzzer of test_protocol_fuzz may
raise ProtocolError and nothing else. Real blocks, built with core.block.encode_block and
mined at the development bits, go through a headers message whose view feeds
hashing.validate_headers as it comes out of the frame.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import signed_record, submit_batches
from test_protocol_fuzz import mutate

from tsunagi import hashing
from tsunagi.contracts.chain import call_record
from tsunagi.core.block import BLOCK_BYTES_MIN, ZERO_HASH, decode_block, encode_block, mine_header
from tsunagi.core.config import BITS_DEVELOPMENT
from tsunagi.errors import ProtocolError
from tsunagi.hashing import HeaderResult
from tsunagi.ledger.limits import log_block_bytes_max
from tsunagi.node import limits
from tsunagi.node import protocol as p

VERSIONS = (p.HELLO_VERSION,) + limits.protocol_versions
u8 = st.integers(0, 2**8 - 1)
u64 = st.integers(0, 2**64 - 1)
hash32 = st.binary(min_size=32, max_size=32)
header80 = st.binary(min_size=80, max_size=80)
HOST_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:"
block_hashes = st.lists(hash32, min_size=1, max_size=limits.blocks_per_request_max,
                        unique=True).map(tuple)
addresses = st.builds(p.PeerAddress, st.text(HOST_ALPHABET, min_size=1, max_size=255),
                      st.integers(1, 65535))

peer_messages = st.one_of(
    st.builds(p.PeerHello, st.lists(u8, min_size=1, max_size=16).map(tuple), hash32, u64,
              st.integers(0, 2**256 - 1), st.integers(0, 65535), u64,
              st.sampled_from([0, p.SERVICE_MINES])),
    st.builds(p.GetHeaders, st.lists(hash32, min_size=1, max_size=limits.locator_hashes_max)
              .map(tuple), st.integers(1, limits.headers_per_message_max), hash32),
    st.integers(0, 40).flatmap(lambda count: st.binary(min_size=80 * count,
                                                       max_size=80 * count)).map(p.Headers),
    st.builds(p.GetBlocks, block_hashes), st.builds(p.NotFound, block_hashes),
    st.builds(p.BlockData, st.binary(min_size=BLOCK_BYTES_MIN, max_size=600)),
    st.builds(p.Announce, u64, header80),
    submit_batches().map(lambda batch: p.Relay(batch.records, batch.signatures,
                                               batch.batches)),
    st.builds(lambda sequence, name, signature: _relayed_call(sequence, name, signature),
              st.integers(1, 2**32), st.text("abcdefgh", min_size=1, max_size=12),
              st.binary(min_size=64, max_size=64)),
    st.builds(p.GetPeers), st.builds(p.Peers, st.lists(addresses, max_size=12).map(tuple)),
)


def _relayed_call(sequence: int, name: str, signature: bytes) -> p.RelayCalls:
    record, payload = call_record(7, sequence, 1, 1, "register", [name])
    return p.RelayCalls(record, signature, (payload,))


def peer_reader() -> p.FrameReader:
    """A frame reader as a peer connection has it once the peer_hello is in."""
    return p.FrameReader(VERSIONS, limits.peer_frame_bytes_max)


def decode_stream(data: bytes) -> list:
    reader = peer_reader()
    reader.feed(data)
    decoded = []
    while (frame := reader.next_frame()) is not None:
        decoded.append((frame.request_id, p.decode(frame)))
    return decoded


@given(peer_messages, u64)
@settings(max_examples=500, deadline=None)
def test_every_peer_message_round_trips(message, request_id):
    data = p.encode(message, request_id)
    got_id, back = p.decode_message(data, VERSIONS, limits.peer_frame_bytes_max)
    assert got_id == request_id
    assert type(back) is type(message)
    assert back == message


@given(st.lists(st.tuples(peer_messages, u64), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_a_stream_of_peer_frames_comes_out_in_order(pairs):
    stream = b"".join(p.encode(message, request_id) for message, request_id in pairs)
    assert decode_stream(stream) == [(request_id, message) for message, request_id in pairs]


def test_peer_hello_layout_is_fixed():
    """Offsets of docs/PROTOCOL.md; the work is big-endian, the frame says HELLO_VERSION."""
    hello = p.PeerHello((1, 2), bytes(range(32)), 0x0102, 2**255 + 7, 8335, 0xAABB,
                        p.SERVICE_MINES)
    data = p.encode(hello, 9, version=1)
    assert data[4] == p.HELLO_VERSION and data[5] == 0x40
    assert data[16:] == b"TSNG" + bytes(range(32)) + (2**255 + 7).to_bytes(32, "big") \
        + struct.pack("<QQIHB", 0x0102, 0xAABB, 1, 8335, 2) + bytes([1, 2])
    assert len(data) - 16 == 91 + 2
    assert hello.mines and not p.PeerHello((1,), bytes(32), 0, 0).mines


def test_other_peer_layouts():
    locator = (bytes([1]) * 32, bytes([2]) * 32)
    assert p.encode(p.GetHeaders(locator, 500, bytes([9]) * 32), 1)[16:] == \
        struct.pack("<II", 2, 500) + bytes([9]) * 32 + locator[0] + locator[1]
    assert p.encode(p.Headers(bytes(160)), 1)[16:] == struct.pack("<I", 2) + bytes(160)
    assert p.encode(p.GetBlocks(locator), 1)[16:] == struct.pack("<I", 2) + b"".join(locator)
    assert p.encode(p.Announce(7, bytes(range(80))), 1)[16:] == \
        struct.pack("<Q", 7) + bytes(range(80))
    assert p.encode(p.Peers((p.PeerAddress("::1", 8335), p.PeerAddress("a.io", 1))), 1)[16:] \
        == struct.pack("<I", 2) + struct.pack("<HB", 8335, 3) + b"::1" \
        + struct.pack("<HB", 1, 4) + b"a.io"
    assert p.encode(p.GetPeers(), 1)[16:] == b""
    records = signed_record(0) * 2
    relay = p.encode(p.Relay(records, bytes(128)), 1)
    assert relay[5] == 0x47 and relay[16:] == p.encode(p.SubmitBatch(records, bytes(128)), 1)[16:]


def test_hello_and_peer_hello_are_told_apart_by_the_first_frame_type():
    """Both arrive under the client's first-frame reader; the type says client or peer."""
    reader = p.FrameReader((p.HELLO_VERSION,), limits.frame_bytes_max)
    reader.feed(p.encode(p.Hello((1,), 0), 1) + p.encode(
        p.PeerHello((1,), bytes(32), 0, 1), 2))
    kinds = [reader.next_frame().type, reader.next_frame().type]
    assert kinds == [p.MessageType.hello, p.MessageType.peer_hello]
    assert set(p.HANDSHAKE_TYPES).isdisjoint(p.PEER_TYPES)
    peer_range = {t for t in p.MessageType if 0x40 <= t <= 0x4F}
    assert peer_range - p.PEER_TYPES == {p.MessageType.peer_hello}
    assert p.PEER_TYPES - peer_range == {p.MessageType.error, p.MessageType.ping,
                                         p.MessageType.pong}


def test_enum_values_are_never_reused():
    """An IntEnum makes a repeated value an alias silently; every name has its own number."""
    for enum in (p.MessageType, p.ErrorCode):
        assert len(enum.__members__) == len(list(enum)), enum.__name__
    assert [p.ErrorCode[name] for name in ("wrong_genesis", "self_connection", "banned",
                                           "misbehaving")] == [15, 16, 17, 18]


def test_peer_frames_may_carry_a_whole_block_and_client_frames_stay_bounded():
    assert limits.frame_bytes_max == 16 * 1024 * 1024
    assert limits.peer_frame_bytes_max == limits.frame_prefix_bytes + log_block_bytes_max
    largest_headers = len(p.encode(p.Headers(bytes(80 * limits.headers_per_message_max)), 1))
    assert largest_headers <= limits.frame_bytes_max <= limits.peer_frame_bytes_max
    block = np.zeros(limits.frame_bytes_max, np.uint8)  # a frame above the client limit
    frame = p.encode(p.BlockData(block), 5)
    client = p.FrameReader(VERSIONS, limits.frame_bytes_max)
    client.feed(frame[:4])
    with pytest.raises(ProtocolError, match="above the limit"):
        client.next_frame()
    [(request_id, back)] = decode_stream(frame)
    assert request_id == 5 and back.data.nbytes == block.nbytes


def _payload(*parts: bytes) -> bytes:
    return b"".join(parts)


HELLO_HEAD = b"TSNG" + bytes(64) + struct.pack("<QQIH", 1, 2, 0, 0)
HASH = bytes([7]) * 32
HEADERS_MAX = limits.headers_per_message_max
BLOCKS_MAX = limits.blocks_per_request_max


BOUNDS = [
    ("peer_hello", HELLO_HEAD, "at least 91 bytes, got 90"),
    ("peer_hello", b"TSNX" + HELLO_HEAD[4:] + b"\x01\x01", "starts with"),
    ("peer_hello", HELLO_HEAD + b"\x00", "1..16 versions, got 0"),
    ("peer_hello", HELLO_HEAD + b"\x11" + bytes(17), "1..16 versions, got 17"),
    ("peer_hello", HELLO_HEAD + b"\x02\x01", "93 bytes"),
    ("peer_hello", HELLO_HEAD + b"\x01\x01\x01", "92 bytes"),
    ("peer_hello", HELLO_HEAD[:84] + struct.pack("<IH", 2, 0) + b"\x01\x01", "service flags"),
    ("get_headers", bytes(39), "at least 40 bytes"),
    ("get_headers", struct.pack("<II", 0, 1) + HASH, "locator's hash count is 1..64, got 0"),
    ("get_headers", struct.pack("<II", 65, 1) + HASH + HASH * 65, "1..64, got 65"),
    ("get_headers", struct.pack("<II", 1, 0) + HASH * 2, "max count is 1..16384, got 0"),
    ("get_headers", struct.pack("<II", 1, HEADERS_MAX + 1) + HASH * 2, "got 16385"),
    ("get_headers", struct.pack("<II", 2, 1) + HASH * 2, "104 bytes"),
    ("get_headers", struct.pack("<II", 1, 1) + HASH * 2 + b"\x00", "72 bytes"),
    ("headers", bytes(3), "at least 4 bytes"),
    ("headers", struct.pack("<I", HEADERS_MAX + 1), "0..16384, got 16385"),
    ("headers", struct.pack("<I", 2**32 - 1), "got 4294967295"),
    ("headers", struct.pack("<I", 2) + bytes(159), "164 bytes"),
    ("headers", struct.pack("<I", 1) + bytes(81), "84 bytes"),
    ("get_blocks", bytes(3), "at least 4 bytes"),
    ("get_blocks", struct.pack("<I", 0), "1..64, got 0"),
    ("get_blocks", struct.pack("<I", BLOCKS_MAX + 1) + HASH * 65, "1..64, got 65"),
    ("get_blocks", struct.pack("<I", 2) + HASH, "68 bytes"),
    ("get_blocks", struct.pack("<I", 2) + HASH * 2, "each block hash once"),
    ("not_found", struct.pack("<I", 0), "1..64, got 0"),
    ("not_found", struct.pack("<I", BLOCKS_MAX + 1) + HASH * 65, "1..64, got 65"),
    ("not_found", struct.pack("<I", 1) + HASH + b"\x00", "36 bytes"),
    ("not_found", struct.pack("<I", 2) + HASH * 2, "each block hash once"),
    ("block_data", bytes(BLOCK_BYTES_MIN - 1), "92..268435456 bytes, got 91"),
    ("announce", bytes(87), "88 bytes"),
    ("announce", bytes(89), "88 bytes"),
    ("relay", bytes(15), "at least 16 bytes"),
    ("relay", struct.pack("<IIII", 1, 1, 0, 1) + signed_record(0) + bytes(64), "reserved"),
    ("relay", struct.pack("<IIII", 1, 0, 0, 0) + signed_record(0), "their own signature"),
    ("relay", struct.pack("<IIII", 0, 0, 0, 0), "1..65536 records"),
    ("relay", struct.pack("<IIII", 1, 1, 0, 0) + signed_record(0) + bytes(63), "208 bytes"),
    ("get_peers", b"\x00", "0 bytes"),
    ("peers", bytes(3), "at least 4 bytes"),
    ("peers", struct.pack("<I", limits.peers_per_answer_max + 1), "0..1000, got 1001"),
    ("peers", struct.pack("<I", 1) + struct.pack("<H", 1), "cut off"),
    ("peers", struct.pack("<I", 1) + struct.pack("<HB", 1, 5) + b"a.io", "cut off"),
    ("peers", struct.pack("<I", 1) + struct.pack("<HB", 1, 0), "1..255 ASCII"),
    ("peers", struct.pack("<I", 1) + struct.pack("<HB", 1, 4) + b"a io", "1..255 ASCII"),
    ("peers", struct.pack("<I", 1) + struct.pack("<HB", 1, 2) + "é".encode(), "1..255 ASCII"),
    ("peers", struct.pack("<I", 1) + struct.pack("<HB", 0, 2) + b"io", "port is 1..65535"),
    ("peers", struct.pack("<I", 1) + struct.pack("<HB", 1, 2) + b"io" + b"\x00", "9 bytes"),
    ("peers", struct.pack("<I", 2) + struct.pack("<HB", 1, 2) + b"io", "address 1 is cut"),
]


@pytest.mark.parametrize("kind, payload, why", BOUNDS,
                         ids=[f"{kind}: {why}" for kind, _, why in BOUNDS])
def test_every_peer_bound_is_refused_with_protocol_error(kind, payload, why):
    frame = p.Frame(1, p.MessageType[kind], 0, 1, memoryview(payload))
    with pytest.raises(ProtocolError, match=why):
        p.decode(frame)


def test_a_block_above_what_the_log_stores_is_refused():
    payload = memoryview(np.zeros(log_block_bytes_max + 1, np.uint8))  # untouched pages
    with pytest.raises(ProtocolError, match=f"got {log_block_bytes_max + 1}"):
        p.decode(p.Frame(1, p.MessageType.block_data, 0, 1, payload))


def test_peer_messages_define_no_flags():
    frame = p.encode_frame(p.MessageType.get_peers, 1, b"", flags=1)
    with pytest.raises(ProtocolError, match="flags 0x0001 are not defined for get_peers"):
        p.decode_message(frame)


@pytest.mark.parametrize("message", [
    p.PeerHello((), bytes(32), 0, 0), p.PeerHello(tuple(range(17)), bytes(32), 0, 0),
    p.PeerHello((1,), bytes(31), 0, 0), p.PeerHello((1,), bytes(32), 0, 2**256),
    p.PeerHello((1,), bytes(32), 0, -1), p.PeerHello((1,), bytes(32), 0, 0, 2**16),
    p.PeerHello((1,), bytes(32), 0, 0, 0, 2**64), p.PeerHello((1,), bytes(32), 0, 0, services=2),
    p.GetHeaders(()), p.GetHeaders((HASH,) * 65), p.GetHeaders((HASH,), 0),
    p.GetHeaders((HASH,), HEADERS_MAX + 1), p.GetHeaders((bytes(31),)),
    p.GetHeaders((HASH,), 1, bytes(33)),
    p.Headers(bytes(79)), p.Headers(bytes(80 * (HEADERS_MAX + 1))),
    p.GetBlocks(()), p.GetBlocks((HASH,) * 2), p.NotFound(tuple(bytes([i]) * 32
                                                                 for i in range(65))),
    p.GetBlocks((bytes(31),)), p.BlockData(bytes(BLOCK_BYTES_MIN - 1)),
    p.Announce(1, bytes(79)), p.Announce(2**64, bytes(80)), p.Relay(b""),
    p.Peers((p.PeerAddress("", 1),)), p.Peers((p.PeerAddress("a" * 256, 1),)),
    p.Peers((p.PeerAddress("[::1]", 1),)), p.Peers((p.PeerAddress("a.io", 0),)),
    p.Peers((p.PeerAddress("a.io", 65536),)),
    p.Peers((p.PeerAddress("a.io", 1),) * (limits.peers_per_answer_max + 1)),
], ids=lambda message: type(message).__name__)
def test_encoders_refuse_out_of_bound_fields(message):
    with pytest.raises(ValueError):
        p.encode(message, 1)


def test_bounds_themselves_are_accepted():
    """The largest allowed of each count still goes through: the bounds are inclusive."""
    largest = [
        p.PeerHello(tuple(range(16)), bytes(32), 2**64 - 1, 2**256 - 1, 65535, 2**64 - 1, 1),
        p.GetHeaders(tuple(bytes([i]) * 32 for i in range(64)), HEADERS_MAX, HASH),
        p.Headers(bytes(80 * HEADERS_MAX)), p.Headers(b""),
        p.GetBlocks(tuple(bytes([i]) * 32 for i in range(64))),
        p.Peers((p.PeerAddress("a" * 255, 65535),) * limits.peers_per_answer_max), p.Peers(()),
    ]
    for message in largest:
        assert p.decode_message(p.encode(message, 3))[1] == message


# --- fuzzing: ProtocolError and nothing else --------------------------------------------------

PEER_KINDS = sorted(p.PEER_TYPES | {p.MessageType.peer_hello})


def corpus() -> list[bytes]:
    """One valid frame of each peer message, small enough for the mutations to matter."""
    records = signed_record(0) + signed_record(p.Flags.batch_authorized)
    entry = struct.pack("<II", 1, 1) + bytes(range(32)) + bytes(8) + bytes(range(64))
    samples = [
        p.PeerHello((1, 2), bytes(range(32)), 9, 2**100, 8335, 77, 1),
        p.GetHeaders((HASH, bytes(32)), 100, bytes(32)), p.Headers(bytes(range(80)) * 3),
        p.Headers(b""), p.GetBlocks((HASH, bytes(32))), p.NotFound((HASH,)),
        p.BlockData(bytes(range(100))), p.Announce(4, bytes(range(80))),
        p.Relay(records, bytes(64), entry), _relayed_call(3, "name", bytes(64)), p.GetPeers(),
        p.Peers((p.PeerAddress("10.0.0.1", 8335), p.PeerAddress("node.example", 1))),
        p.Error(p.ErrorCode.misbehaving, "bad header"), p.Ping(),
    ]
    return [p.encode(message, 500 + i) for i, message in enumerate(samples)]


CORPUS = corpus()


def decoded_or_refused(data: bytes) -> str:
    """'refused' (ProtocolError), or 'decoded' when each message decoded is a valid one: it
    encodes again and comes back equal."""
    try:
        decoded = decode_stream(data)
    except ProtocolError:
        return "refused"
    for request_id, message in decoded:
        again = p.decode_message(p.encode(message, request_id), VERSIONS,
                                 limits.peer_frame_bytes_max)
        assert again == (request_id, message)
    return "decoded"


@given(st.sampled_from(PEER_KINDS), st.binary(max_size=700))
@settings(max_examples=1500, deadline=None)
def test_random_payloads_of_each_peer_type_only_raise_protocol_error(kind, payload):
    try:
        p.decode(p.Frame(1, kind, 0, 1, memoryview(payload)))
    except ProtocolError:
        pass


@given(st.binary(max_size=400))
@settings(max_examples=1000, deadline=None)
def test_random_streams_only_raise_protocol_error(data):
    decoded_or_refused(data)


@given(st.sampled_from(CORPUS), st.integers(0, 2**64 - 1), st.integers(1, 3))
@settings(max_examples=2000, deadline=None)
def test_mutated_peer_frames_only_raise_protocol_error(frame, seed, rounds):
    rng = random.Random(seed)
    for _ in range(rounds):
        if len(frame) < limits.frame_prefix_bytes:
            break  # the mutations are made for frames, and this is a frame no more
        frame = mutate(frame, rng)
    decoded_or_refused(frame)


def test_the_mutations_are_mostly_noticed():
    rng = random.Random(20240612)
    outcomes = [decoded_or_refused(mutate(rng.choice(CORPUS), rng)) for _ in range(3000)]
    print(f"\npeer mutation fuzzer: {len(outcomes)} cases, {outcomes.count('refused')} refused")
    assert outcomes.count("refused") > len(outcomes) // 2


# --- headers into the native validator ----------------------------------------------------------

def mined_blocks(count: int) -> list[bytes]:
    """A chain of empty blocks, each mined at the development bits and linked to the last."""
    blocks, prev_hash = [], ZERO_HASH
    for height in range(count):
        block = encode_block(prev_hash=prev_hash, time=1_700_000_000 + height,
                             bits=BITS_DEVELOPMENT, records=b"", codes=b"", signatures=b"")
        mine_header(block, threads=1)
        blocks.append(bytes(block))
        prev_hash = decode_block(block).hash
    return blocks


def test_headers_view_feeds_validate_headers_directly():
    blocks = mined_blocks(6)
    genesis_hash = decode_block(blocks[0]).hash
    headers = b"".join(block[:80] for block in blocks[1:])
    reader = peer_reader()
    reader.feed(p.encode(p.Headers(headers), 11))
    frame = reader.next_frame()
    message = p.decode(frame)
    assert isinstance(message.headers, memoryview) and message.count == 5
    assert message.headers.obj is frame.payload.obj  # a view of the received frame, no copy
    assert hashing.validate_headers(message.headers, genesis_hash) == (5, HeaderResult.ok)
    assert hashing.validate_headers(message.headers, bytes([1]) * 32) == \
        (0, HeaderResult.bad_link)
    broken = bytearray(headers)
    broken[2 * 80 + 4] ^= 1  # the third header's prev_hash no longer names the second
    _, damaged = p.decode_message(p.encode(p.Headers(bytes(broken)), 12))
    assert hashing.validate_headers(damaged.headers, genesis_hash) == (2, HeaderResult.bad_link)


def test_an_announced_header_is_the_block_header():
    blocks = mined_blocks(2)
    _, announce = p.decode_message(p.encode(p.Announce(1, blocks[1][:80]), 0))
    tip = decode_block(blocks[1])
    assert announce.header == tip.header and announce.height == 1
    assert hashing.validate_headers(announce.header, decode_block(blocks[0]).hash) == \
        (1, HeaderResult.ok)
    _, data = p.decode_message(p.encode(p.BlockData(blocks[1]), 3))
    assert decode_block(data.data).hash == tip.hash  # block_data decodes as a block, no copy
    assert isinstance(data.data, memoryview)
