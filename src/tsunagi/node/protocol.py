"""The node's binary wire protocol: frames, messages, and pure encoders and decoders.

The layout is documented in docs/PROTOCOL.md. Every function here works on bytes or
memoryviews and does no I/O. Decoding untrusted bytes raises :class:`ProtocolError` and
nothing else: lengths are checked before any field is read, and a last guard turns any
builtin decoding error into ProtocolError too.

A submit batch stays one contiguous record buffer from the socket to the ledger: decoding it
makes memoryview slices and checks them with numpy, never one Python object per record. Peers
(other nodes) use the same frames with messages of their own (0x40..0x4F); a headers message
likewise decodes to one view of its 80-byte headers, never one object per header.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from tsunagi.contracts import limits as contract_limits
from tsunagi.contracts.runtime import CallCode
from tsunagi.core.block import (
    BATCH_BYTES,
    BLOCK_BYTES_MIN,
    ZERO_HASH,
    BlockResult,
    batch_fault_message,
    check_batch_layout,
    pack_batches,
)
from tsunagi.core.block import HEADER_BYTES as BLOCK_HEADER_BYTES
from tsunagi.core.codes import UNSTORED, Result
from tsunagi.core.records import RECORD_BYTES, SIGNATURE_BYTES, Flags, call_count
from tsunagi.errors import ProtocolError
from tsunagi.ledger.limits import log_block_bytes_max
from tsunagi.limits import payload_bytes_max, seal_bytes_max, u64_max
from tsunagi.node import limits

MAGIC = b"TSNG"
HELLO_VERSION = 1  # the hello frame always carries version 1 in its header: its layout is fixed
NONE_U64 = u64_max  # "no value" in u64 fields (height of nothing stored, no `before`)

_PREFIX = struct.Struct("<IBBHQ")
assert _PREFIX.size == limits.frame_prefix_bytes
_HEADER_BYTES = _PREFIX.size - 4  # what the length counts besides the payload


class MessageType(IntEnum):
    hello = 0x01  # client -> server, first frame: versions spoken, chain id expected
    welcome = 0x02  # server -> client: chosen version, chain id, height, limits
    error = 0x03  # either way: an error code and a message, answers the request id
    ping = 0x04  # either way: asks for a pong with the same request id
    pong = 0x05
    submit = 0x10  # one record and its signature
    submit_batch = 0x11  # N records, their signatures, batch authorizations
    submit_answer = 0x12  # per-record codes of a submit or submit batch
    submit_calls = 0x13  # signed records with the payloads of their call records
    query_balance = 0x20
    balance = 0x21
    query_account = 0x22
    account = 0x23
    query_transaction = 0x24
    transaction = 0x25
    query_block = 0x26
    block = 0x27
    query_history = 0x28
    history = 0x29
    query_status = 0x2A
    status = 0x2B
    subscribe = 0x30  # block notices from a height on, pushed with the subscribe's request id
    subscribed = 0x31
    block_notice = 0x32
    unsubscribe = 0x33  # its request id names the subscription
    subscription_end = 0x34  # the last frame of a subscription
    query_accounts = 0x2C  # the accounts a key owns, a page at a time
    accounts = 0x2D
    query_holds = 0x2E  # units held and the open holds of an account
    holds = 0x2F
    query_hold = 0x36  # one hold by payer and sequence, whatever its status
    hold = 0x37
    query_policy = 0x38  # the policy key in one slot of an account
    policy = 0x39
    query_network = 0x3A  # peers, best chain, reorgs and mempool of a node of a network
    network = 0x3B
    submit_entries = 0x3C  # consortium entries (validator updates) for a validator's next block
    entries_final = 0x3D  # the block holding them is final
    query_validators = 0x3E  # the validator set of a consortium chain's next height
    validators = 0x3F
    # Peer connections (docs/PROTOCOL.md, "Peers"): node to node, either side may ask.
    peer_hello = 0x40  # first frame both ways: versions, genesis hash, best chain, node nonce
    get_headers = 0x41  # headers after the newest block of a locator that the node has
    headers = 0x42  # contiguous 80-byte headers, oldest first
    get_blocks = 0x43  # blocks by hash: one block_data each, then a not_found for the rest
    block_data = 0x44  # one block's bytes
    not_found = 0x45  # the hashes of a get_blocks the node does not have
    announce = 0x46  # a new best block's header and height; not answered
    relay = 0x47  # signed records for the mempool, laid out as submit_batch; not answered
    get_peers = 0x48
    peers = 0x49  # addresses of other peers
    # Consensus of a consortium chain (docs/PROTOCOL.md, "Consensus"): validator to peers.
    proposal = 0x4A  # a signed Tendermint proposal and the block it proposes; not answered
    vote = 0x4B  # a signed prevote or precommit; not answered
    # Calls with their payloads for the mempool, laid out as submit_calls; not answered.
    relay_calls = 0x4C
    # Contracts and light clients (docs/PROTOCOL.md, "Contracts"): what a connection node
    # reads of the chains it links and of the connection chain's contract.
    query_headers = 0x50  # headers of a height range, answered by headers (0x42)
    query_contract_state = 0x51  # one world-state value by its key
    contract_state = 0x52
    query_call_result = 0x53  # a recent call's full result by its txid
    call_result = 0x54


# Frame flag bits; their meaning depends on the message type.
WITH_BLOCKS = 1  # subscribe, block_notice: the notice carries the block's bytes
BY_HASH = 1  # query_block: the payload is a block hash, not a height


class ErrorCode(IntEnum):
    malformed = 1  # the frame breaks the protocol; the connection is closed after this answer
    unsupported_version = 2  # no protocol version in common
    wrong_chain = 3  # the node serves another chain than the hello asked for
    handshake_required = 4  # the first frame must be a hello
    too_large = 5  # a frame or request above a limit of the node
    overloaded = 6  # the node's queue is full: retry after a pause
    not_found = 7  # no such account, transaction or block
    shutting_down = 8  # the node is stopping: retry on another node or later
    internal = 9  # the node failed to serve this request; the message says why
    unknown_type = 10  # a message type the node does not serve
    duplicate_request = 11  # the request id is already in flight on this connection
    too_many_subscriptions = 12  # above subscriptions_per_connection_max
    timeout = 13  # a frame, the hello or the silence took too long; the connection is closed
    damaged = 14  # a committed block is damaged: reading it fails, and no record is taken
    wrong_genesis = 15  # the peer's chain starts from another genesis block; closed
    self_connection = 16  # the peer_hello carries this node's own nonce: it dialed itself
    banned = 17  # the node refuses this peer for a while (it misbehaved); closed
    misbehaving = 18  # the peer broke the peer protocol (a bad header or block); closed, banned
    reorged_out = 19  # the transaction was in a block a reorg took off, and is not again: why


# The message types of a peer connection, which begins with a peer_hello; a connection that
# begins with a hello is a client's and serves the other types. error, ping and pong serve both.
PEER_TYPES = frozenset({
    MessageType.error, MessageType.ping, MessageType.pong, MessageType.get_headers,
    MessageType.headers, MessageType.get_blocks, MessageType.block_data, MessageType.not_found,
    MessageType.announce, MessageType.relay, MessageType.get_peers, MessageType.peers,
    MessageType.proposal, MessageType.vote, MessageType.relay_calls})
# The two first frames: their layout is fixed and their frame header always says HELLO_VERSION.
HANDSHAKE_TYPES = (MessageType.hello, MessageType.peer_hello)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: header fields and the payload (a view into the received bytes)."""

    version: int
    type: int
    flags: int
    request_id: int
    payload: memoryview


# --- frames -----------------------------------------------------------------------------------

def encode_frame(message_type: int, request_id: int, payload: bytes = b"", flags: int = 0,
                 version: int = limits.protocol_versions[-1]) -> bytes:
    """Length prefix, header and payload as one bytes object."""
    length = _HEADER_BYTES + len(payload)
    return _PREFIX.pack(length, version, message_type, flags, request_id) + payload


def frame_length(prefix) -> int:
    """The whole frame's size in bytes (prefix included) from its first four bytes."""
    (length,) = struct.unpack_from("<I", prefix)
    return length + 4


def decode_frame(data, versions=limits.protocol_versions,
                 frame_bytes_max: int = limits.frame_bytes_max) -> Frame:
    """Exactly one whole frame. The version must be one of ``versions``."""
    view = memoryview(data).cast("B")
    if len(view) < _PREFIX.size:
        raise ProtocolError(f"a frame is at least {_PREFIX.size} bytes, got {len(view)}")
    length, version, message_type, flags, request_id = _PREFIX.unpack_from(view)
    _check_length(length, frame_bytes_max)
    if length + 4 != len(view):
        raise ProtocolError(f"the frame's length field says {length + 4} bytes, "
                            f"got {len(view)}")
    if version not in versions:
        raise ProtocolError(f"protocol version {version} is not one of {tuple(versions)}")
    return Frame(version, message_type, flags, request_id, view[_PREFIX.size:])


def _check_length(length: int, frame_bytes_max: int) -> None:
    if length < _HEADER_BYTES:
        raise ProtocolError(f"a frame's length counts at least its {_HEADER_BYTES}-byte header,"
                            f" got {length}")
    if length + 4 > frame_bytes_max:
        raise ProtocolError(f"a frame of {length + 4} bytes is above the limit of "
                            f"{frame_bytes_max}")


class FrameReader:
    """Cuts a byte stream into frames: give it what the socket gives, take whole frames out.

    Two ways in: ``feed(data)`` copies bytes in; ``receive_buffer()`` and ``received(n)`` let
    the socket write straight into the reader's buffer (asyncio's BufferedProtocol), which
    saves a copy of every byte and a Python object per read. Once a frame's length is in,
    the space handed out holds the rest of that frame, so a large frame arrives into one
    buffer of its own size and leaves as a view of it: no resizing, no copy.

    Frames taken out are views of a buffer the reader then never writes again (consumed
    space is not reused; a new buffer starts once one is full), so they stay valid for as
    long as they are held. A buffer is at most the largest frame allowed plus
    :attr:`READ_BYTES`, because an oversized length is refused as soon as its four bytes are
    in; space is reserved with ``numpy.empty``, so pages a slow or lying sender never fills
    are never touched.
    """

    READ_BYTES = 1 << 18  # free space offered to one read when no frame asks for more
    _MIN_READ_BYTES = 1 << 16  # less free space than this (and than the frame needs): new buffer

    def __init__(self, versions=limits.protocol_versions,
                 frame_bytes_max: int = limits.frame_bytes_max) -> None:
        self.versions = tuple(versions)
        self.frame_bytes_max = frame_bytes_max
        self._buffer = memoryview(np.empty(0, np.uint8))
        self._offset = 0  # first byte not taken out as a frame
        self._end = 0  # first byte not received

    @property
    def pending_bytes(self) -> int:
        """Bytes received that are not part of a frame taken out yet."""
        return self._end - self._offset

    @property
    def announced_bytes(self) -> int:
        """Size of the next frame as its length field says (0 until that field is in)."""
        if self.pending_bytes < 4:
            return 0
        return struct.unpack_from("<I", self._buffer, self._offset)[0] + 4

    def receive_buffer(self, at_least: int = 1) -> memoryview:
        """Free space to receive into (at least ``at_least`` bytes); call ``received`` next."""
        announced = self.announced_bytes
        frame_rest = announced - self.pending_bytes if announced <= self.frame_bytes_max else 0
        need = max(at_least, frame_rest)
        free = len(self._buffer) - self._end
        # A new buffer when the rest of the frame does not fit; or, between frames (less than
        # a length field pending, so the copy is tiny), when reads would get too little room.
        if free < need or (announced == 0 and free < self._MIN_READ_BYTES):
            self._renew(max(need, self.READ_BYTES))
        return self._buffer[self._end:]

    def received(self, count: int) -> None:
        """``count`` bytes were written at the start of the last receive_buffer()."""
        if not 0 <= count <= len(self._buffer) - self._end:
            raise ValueError(f"received {count} bytes into {len(self._buffer) - self._end}")
        self._end += count

    def take_pending(self) -> bytes:
        """The bytes received and not yet taken out as frames, which leave the reader (for a
        connection that another reader takes over)."""
        data = bytes(self._buffer[self._offset:self._end])
        self._offset = self._end
        return data

    def feed(self, data) -> None:
        size = len(data)
        if size:
            self.receive_buffer(size)[:size] = data
            self.received(size)

    def _renew(self, free: int) -> None:
        """A fresh buffer holding the pending bytes and ``free`` bytes of space after them.
        Never a resized one: frames taken out hold views of the old one."""
        pending = self.pending_bytes
        fresh = memoryview(np.empty(pending + free, np.uint8))
        fresh[:pending] = self._buffer[self._offset:self._end]
        self._buffer, self._offset, self._end = fresh, 0, pending

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive. ProtocolError on bad input."""
        available = self._end - self._offset
        if available < 4:
            return None
        (length,) = struct.unpack_from("<I", self._buffer, self._offset)
        _check_length(length, self.frame_bytes_max)
        if available < length + 4:
            return None
        start = self._offset
        self._offset += length + 4
        return decode_frame(self._buffer[start:self._offset], self.versions,
                            self.frame_bytes_max)


# --- messages ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Hello:
    versions: tuple[int, ...]
    chain_id: int = 0  # 0: any chain


@dataclass(frozen=True, slots=True)
class Welcome:
    version: int
    chain_id: int
    height: int
    tip_hash: bytes
    frame_bytes_max: int
    inflight_max: int
    request_records_max: int


@dataclass(frozen=True, slots=True)
class Error:
    code: ErrorCode
    message: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Submit:
    record: bytes  # 128 bytes
    signature: bytes  # 64 bytes


@dataclass(frozen=True, slots=True)
class SubmitBatch:
    """N records, one 64-byte signature per record without batch_authorized, batch entries.

    The three buffers are views of the received frame when decoded (no copy); ``batches`` is
    ``count x 112`` bytes laid out as in a block (docs/FORMAT.md).
    """

    records: bytes
    signatures: bytes = b""
    batches: bytes = b""

    @property
    def record_count(self) -> int:
        return len(self.records) // RECORD_BYTES

    def batch_entries(self) -> np.ndarray:
        return pack_batches(self.batches)


@dataclass(frozen=True, slots=True)
class SubmitCalls:
    """N signed records (one 64-byte signature each) and, in record order, the payload of
    each call record among them (docs/FORMAT.md, "Kinds": call). Answered by submit_answer."""

    records: bytes
    signatures: bytes
    payloads: tuple[bytes, ...] = ()

    @property
    def record_count(self) -> int:
        return len(self.records) // RECORD_BYTES


@dataclass(frozen=True, slots=True)
class SubmitAnswer:
    """Per-record result codes of one submit request, in request order.

    ``codes`` is the raw N-byte buffer of :class:`Result` values. ``originals`` holds, for
    records answered ``already_committed``, the code they were first committed with; ``opened``
    the account numbers assigned to ``open_account`` records.
    """

    height: int | None  # block that holds the stored records; None: nothing stored
    block_hash: bytes | None
    codes: bytes
    originals: tuple[tuple[int, int], ...] = ()  # (index, original code)
    opened: tuple[tuple[int, int], ...] = ()  # (index, account number)

    def codes_array(self) -> np.ndarray:
        return np.frombuffer(self.codes, dtype=np.uint8)

    @property
    def failures(self) -> list[tuple[int, Result]]:
        """(index, code) of each record that was not applied, as the ledger's BatchAnswer."""
        codes = self.codes_array()
        return [(int(i), Result(int(codes[i]))) for i in np.flatnonzero(codes)]

    def final_codes(self) -> np.ndarray:
        """Codes with ``already_committed`` replaced by the original code: what a retry means."""
        codes = self.codes_array().copy()
        for index, code in self.originals:
            codes[index] = code
        return codes

    @property
    def code(self) -> Result:
        """The code of a one-record answer (a submit)."""
        if len(self.codes) != 1:
            raise ValueError(f"the answer holds {len(self.codes)} codes; use codes_array()")
        return Result(self.codes[0])

    @property
    def account(self) -> int:
        """The account a one-record open_account answer opened (0 if none)."""
        return self.opened[0][1] if self.opened else 0

    def slice(self, start: int, end: int) -> SubmitAnswer:
        """The answer for records ``start .. end-1`` alone, indexes counted from ``start``.

        Its height and block hash are kept only when one of those records was stored.
        """
        codes = self.codes[start:end]
        stored = any(code not in UNSTORED for code in codes)
        return SubmitAnswer(
            self.height if stored else None, self.block_hash if stored else None, codes,
            tuple((i - start, c) for i, c in self.originals if start <= i < end),
            tuple((i - start, a) for i, a in self.opened if start <= i < end))


@dataclass(frozen=True, slots=True)
class QueryBalance:
    account: int


@dataclass(frozen=True, slots=True)
class Balance:
    account: int
    balance: int


@dataclass(frozen=True, slots=True)
class QueryAccount:
    account: int


ACCOUNT_ISSUER = 1  # Account.flags bit: the account may mint and burn


@dataclass(frozen=True, slots=True)
class Account:
    account: int
    owner_key: bytes
    balance: int
    sequence: int  # the last sequence used
    flags: int  # ACCOUNT_ISSUER
    held: int = 0  # units in the open holds the account pays
    height: int = 0  # durable blocks the answer was read at (the newest is height - 1)

    @property
    def issuer(self) -> bool:
        return bool(self.flags & ACCOUNT_ISSUER)


@dataclass(frozen=True, slots=True)
class QueryTransaction:
    txid: bytes


@dataclass(frozen=True, slots=True)
class Transaction:
    """A stored record with its code, place, and Merkle path to its block header's root."""

    record: bytes
    code: int
    height: int
    position: int
    block_hash: bytes
    proof: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class QueryBlock:
    height: int | None = None
    block_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class Block:
    data: bytes  # the encoded block (docs/FORMAT.md)


@dataclass(frozen=True, slots=True)
class QueryHistory:
    """An account's records, newest first; ``before`` (height, position) pages back."""

    account: int
    limit: int = 100
    before: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    record: bytes
    code: int
    height: int
    position: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class History:
    entries: tuple[HistoryEntry, ...]


@dataclass(frozen=True, slots=True)
class QueryStatus:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    chain_id: int
    version: int
    height: int
    tip_hash: bytes
    connections: int
    queued_records: int  # records waiting for the group-commit writer
    groups_committed: int  # ledger.submit_batch calls made by the writer since the start
    records_committed: int  # records stored in blocks by those calls
    damaged_height: int | None = None  # a committed block known to be damaged (no writes)


@dataclass(frozen=True, slots=True)
class Subscribe:
    from_height: int
    with_blocks: bool = False


@dataclass(frozen=True, slots=True)
class Subscribed:
    height: int  # the node's height when the subscription started


@dataclass(frozen=True, slots=True)
class BlockNotice:
    height: int
    block_hash: bytes
    record_count: int
    block: bytes | None = None  # the block's bytes when the subscription asked for them


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    pass


@dataclass(frozen=True, slots=True)
class SubscriptionEnd:
    pass


# --- payload layouts ----------------------------------------------------------------------------

_HELLO = struct.Struct("<4sIB")
_WELCOME = struct.Struct("<B3xIQ32sIII")
_ERROR = struct.Struct("<HH")
_SUBMIT_BATCH = struct.Struct("<IIII")
_ANSWER = struct.Struct("<Q32sIIII")
_ORIGINAL = struct.Struct("<IB3x")
_OPENED = struct.Struct("<I4xQ")
_U64 = struct.Struct("<Q")
_BALANCE = struct.Struct("<QQ")
_ACCOUNT = struct.Struct("<Q32sQQB7xQQ")
_TRANSACTION = struct.Struct("<128sQIBB2x32s")
_HISTORY_QUERY = struct.Struct("<QIIQ")
_HISTORY_HEAD = struct.Struct("<I4x")
_HISTORY_ENTRY = struct.Struct("<128sQIB3x32s")
_STATUS = struct.Struct("<IIQ32sIIQQQ")
_NOTICE = struct.Struct("<Q32sI4x")

_RESULT_MAX = max(Result)


def _u64_or_none(value: int) -> int | None:
    return None if value == NONE_U64 else value


def _none_u64(value: int | None) -> int:
    return NONE_U64 if value is None else value


def _exact(payload, size: int, what: str) -> None:
    if len(payload) != size:
        raise ProtocolError(f"a {what} payload is {size} bytes, got {len(payload)}")


# Each entry: message class -> (type, encoder returning (payload, flags)); and type -> decoder.
_ENCODERS: dict[type, tuple[MessageType, Callable]] = {}
_DECODERS: dict[int, Callable] = {}


def _codec(cls, message_type: MessageType):
    def register(pair):
        encoder, decoder = pair
        _ENCODERS[cls] = (message_type, encoder)
        _DECODERS[message_type] = decoder
        return pair
    return register


def _check_versions(count: int, what: str, error) -> None:
    if not 1 <= count <= limits.hello_versions_max:
        raise error(f"a {what} names 1..{limits.hello_versions_max} versions, got {count}")


def _encode_hello(m: Hello):
    _check_versions(len(m.versions), "hello", ValueError)
    return _HELLO.pack(MAGIC, m.chain_id, len(m.versions)) + bytes(m.versions), 0


def _hello_head(p, layout: struct.Struct, what: str) -> tuple:
    """The fixed fields of a hello or peer_hello, checked: magic first, versions count last."""
    if len(p) < layout.size:
        raise ProtocolError(f"a {what} is at least {layout.size} bytes, got {len(p)}")
    magic, *fields, count = layout.unpack_from(p)
    if magic != MAGIC:
        raise ProtocolError(f"a {what} starts with {MAGIC!r}, got {bytes(magic)!r}")
    _check_versions(count, what, ProtocolError)
    _exact(p, layout.size + count, what)
    return tuple(p[layout.size:]), *fields


def _decode_hello(p, flags):
    versions, chain_id = _hello_head(p, _HELLO, "hello")
    return Hello(versions, chain_id)


_codec(Hello, MessageType.hello)((_encode_hello, _decode_hello))


def _encode_welcome(m: Welcome):
    return _WELCOME.pack(m.version, m.chain_id, m.height, m.tip_hash, m.frame_bytes_max,
                         m.inflight_max, m.request_records_max), 0


def _decode_welcome(p, flags):
    _exact(p, _WELCOME.size, "welcome")
    version, chain_id, height, tip, frame_max, inflight, records_max = _WELCOME.unpack(p)
    if version not in limits.protocol_versions:
        raise ProtocolError(f"the node chose protocol version {version}, which this client "
                            f"does not speak")
    return Welcome(version, chain_id, height, bytes(tip), frame_max, inflight, records_max)


_codec(Welcome, MessageType.welcome)((_encode_welcome, _decode_welcome))


def _encode_error(m: Error):
    text = m.message.encode("utf-8")[:limits.error_message_bytes_max]
    text = text.decode("utf-8", "ignore").encode("utf-8")  # a cut never splits a character
    return _ERROR.pack(int(m.code), len(text)) + text, 0


def _decode_error(p, flags):
    if len(p) < _ERROR.size:
        raise ProtocolError(f"an error is at least {_ERROR.size} bytes, got {len(p)}")
    code, size = _ERROR.unpack_from(p)
    if size > limits.error_message_bytes_max:
        raise ProtocolError(f"an error message is at most {limits.error_message_bytes_max} "
                            f"bytes, got {size}")
    _exact(p, _ERROR.size + size, "error")
    if code not in ErrorCode._value2member_map_:
        raise ProtocolError(f"unknown error code {code}")
    try:
        message = bytes(p[_ERROR.size:]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"an error message is not UTF-8: {exc}") from None
    return Error(ErrorCode(code), message)


_codec(Error, MessageType.error)((_encode_error, _decode_error))


def _empty(cls, what: str):
    def encode(m):
        return b"", 0

    def decode(p, flags):
        _exact(p, 0, what)
        return cls()
    return encode, decode


_codec(Ping, MessageType.ping)(_empty(Ping, "ping"))
_codec(Pong, MessageType.pong)(_empty(Pong, "pong"))
_codec(QueryStatus, MessageType.query_status)(_empty(QueryStatus, "status query"))
_codec(Unsubscribe, MessageType.unsubscribe)(_empty(Unsubscribe, "unsubscribe"))
_codec(SubscriptionEnd, MessageType.subscription_end)(
    _empty(SubscriptionEnd, "subscription end"))


def _encode_submit(m: Submit):
    if len(m.record) != RECORD_BYTES or len(m.signature) != SIGNATURE_BYTES:
        raise ValueError(f"a submit is one {RECORD_BYTES}-byte record and a "
                         f"{SIGNATURE_BYTES}-byte signature")
    return bytes(m.record) + bytes(m.signature), 0


def _decode_submit(p, flags):
    _exact(p, RECORD_BYTES + SIGNATURE_BYTES, "submit")
    if p[1] & Flags.batch_authorized:
        raise ProtocolError("a record submitted alone needs its own signature; "
                            "batch_authorized records go in a submit batch")
    return Submit(p[:RECORD_BYTES], p[RECORD_BYTES:])


_codec(Submit, MessageType.submit)((_encode_submit, _decode_submit))


def _batch_codec(cls, what: str):
    """Encoder and decoder of a submit batch's layout, for submit_batch and relay."""
    def encode(m):
        check_submit_batch(m.records, m.signatures, m.batches, error=ValueError)
        head = _SUBMIT_BATCH.pack(len(m.records) // RECORD_BYTES,
                                  len(m.signatures) // SIGNATURE_BYTES,
                                  len(m.batches) // BATCH_BYTES, 0)
        return b"".join((head, m.records, m.signatures, m.batches)), 0

    def decode(p, flags):
        if len(p) < _SUBMIT_BATCH.size:
            raise ProtocolError(f"a {what} is at least {_SUBMIT_BATCH.size} bytes, "
                                f"got {len(p)}")
        record_count, signature_count, batch_count, reserved = _SUBMIT_BATCH.unpack_from(p)
        if reserved:
            raise ProtocolError(f"the reserved field of a {what} must be zero")
        records_end = _SUBMIT_BATCH.size + record_count * RECORD_BYTES
        signatures_end = records_end + signature_count * SIGNATURE_BYTES
        _exact(p, signatures_end + batch_count * BATCH_BYTES, what)
        batch = cls(p[_SUBMIT_BATCH.size:records_end], p[records_end:signatures_end],
                    p[signatures_end:])
        check_submit_batch(batch.records, batch.signatures, batch.batches)
        return batch
    return encode, decode


_codec(SubmitBatch, MessageType.submit_batch)(_batch_codec(SubmitBatch, "submit batch"))


_PAYLOAD_LENGTH = struct.Struct("<I")


def _encode_submit_calls(m: SubmitCalls):
    check_submit_calls(m.records, m.signatures, m.payloads, error=ValueError)
    head = _SUBMIT_BATCH.pack(len(m.records) // RECORD_BYTES,
                              len(m.signatures) // SIGNATURE_BYTES, len(m.payloads), 0)
    parts = [head, m.records, m.signatures]
    for payload in m.payloads:
        parts += [_PAYLOAD_LENGTH.pack(len(payload)), payload]
    return b"".join(parts), 0


def _decode_submit_calls(p, flags) -> SubmitCalls:
    if len(p) < _SUBMIT_BATCH.size:
        raise ProtocolError(f"a submit calls is at least {_SUBMIT_BATCH.size} bytes, "
                            f"got {len(p)}")
    record_count, signature_count, payload_count, reserved = _SUBMIT_BATCH.unpack_from(p)
    if reserved:
        raise ProtocolError("the reserved field of a submit calls must be zero")
    if payload_count > record_count:
        raise ProtocolError("a submit calls has at most one payload a record")
    records_end = _SUBMIT_BATCH.size + record_count * RECORD_BYTES
    offset = records_end + signature_count * SIGNATURE_BYTES
    if offset > len(p):
        raise ProtocolError(f"a submit calls of {record_count} records and {signature_count} "
                            f"signatures runs past its {len(p)}-byte payload")
    payloads = []
    for _ in range(payload_count):
        if offset + _PAYLOAD_LENGTH.size > len(p):
            raise ProtocolError("a submit calls ends inside a payload's length")
        length = _PAYLOAD_LENGTH.unpack_from(p, offset)[0]
        offset += _PAYLOAD_LENGTH.size
        if length > payload_bytes_max or offset + length > len(p):
            raise ProtocolError(f"a payload is at most {payload_bytes_max} bytes and "
                                "within its frame")
        payloads.append(bytes(p[offset:offset + length]))
        offset += length
    if offset != len(p):
        raise ProtocolError(f"a submit calls leaves {len(p) - offset} trailing bytes")
    message = SubmitCalls(p[_SUBMIT_BATCH.size:records_end],
                          p[records_end:records_end + signature_count * SIGNATURE_BYTES],
                          tuple(payloads))
    check_submit_calls(message.records, message.signatures, message.payloads)
    return message


_codec(SubmitCalls, MessageType.submit_calls)((_encode_submit_calls, _decode_submit_calls))


def check_submit_calls(records, signatures, payloads, error=ProtocolError) -> None:
    """A submit calls' structure: every record signed (no batch authorization here), one
    payload for each call record, each within payload_bytes_max."""
    check_submit_batch(records, signatures, b"", error=error)
    calls = call_count(records)
    if len(payloads) != calls:
        raise error(f"{calls} call records need as many payloads, got {len(payloads)}")
    if any(len(payload) > payload_bytes_max for payload in payloads):
        raise error(f"a payload is at most {payload_bytes_max} bytes")


def check_submit_batch(records, signatures, batches, error=ProtocolError) -> None:
    """Checks the structure of a batch with numpy, never a Python loop per record.

    One signature per record without batch_authorized; batch entries in range, in order, not
    overlapping, and covering exactly the batch_authorized records. Whether signatures verify
    is the ledger's business (it answers codes); a wrong structure is the sender's bug.
    """
    if len(records) % RECORD_BYTES or len(signatures) % SIGNATURE_BYTES \
            or len(batches) % BATCH_BYTES:
        raise error("records, signatures and batches are whole 128-, 64- and 112-byte items")
    count = len(records) // RECORD_BYTES
    if not 1 <= count <= limits.request_records_max:
        raise error(f"a submit batch holds 1..{limits.request_records_max} records, "
                    f"got {count}")
    flags = np.frombuffer(records, dtype=np.uint8)[1::RECORD_BYTES]
    authorized = (flags & Flags.batch_authorized) != 0
    signed = count - int(np.count_nonzero(authorized))
    if len(signatures) // SIGNATURE_BYTES != signed:
        raise error(f"{signed} records need their own signature, got "
                    f"{len(signatures) // SIGNATURE_BYTES} signatures")
    entries = pack_batches(batches)
    if len(entries) > limits.request_batches_max:
        raise error(f"a request holds at most {limits.request_batches_max} batch entries")
    result = check_batch_layout(entries, authorized)
    if result is not BlockResult.ok:
        raise error(batch_fault_message(result, count))


_ORIGINAL_DTYPE = np.dtype([("index", "<u4"), ("code", "u1"), ("pad", "u1", (3,))])
_OPENED_DTYPE = np.dtype([("index", "<u4"), ("pad", "<u4"), ("account", "<u8")])
assert _ORIGINAL_DTYPE.itemsize == _ORIGINAL.size and _OPENED_DTYPE.itemsize == _OPENED.size


def _encode_answer(m: SubmitAnswer):
    head = _ANSWER.pack(_none_u64(m.height), m.block_hash or bytes(32), len(m.codes),
                        len(m.originals), len(m.opened), 0)
    originals = np.zeros(len(m.originals), dtype=_ORIGINAL_DTYPE)
    if m.originals:
        originals["index"], originals["code"] = zip(*m.originals)
    opened = np.zeros(len(m.opened), dtype=_OPENED_DTYPE)
    if m.opened:
        opened["index"], opened["account"] = zip(*m.opened)
    return b"".join((head, m.codes, originals.tobytes(), opened.tobytes())), 0


def _decode_answer(p, flags):
    if len(p) < _ANSWER.size:
        raise ProtocolError(f"a submit answer is at least {_ANSWER.size} bytes, got {len(p)}")
    height, block_hash, count, original_count, opened_count, reserved = _ANSWER.unpack_from(p)
    codes_end = _ANSWER.size + count
    originals_end = codes_end + original_count * _ORIGINAL.size
    _exact(p, originals_end + opened_count * _OPENED.size, "submit answer")
    if reserved:
        raise ProtocolError("the reserved field of a submit answer must be zero")
    if height == NONE_U64 and any(block_hash):
        raise ProtocolError("an answer that stored nothing names no block hash")
    codes = bytes(p[_ANSWER.size:codes_end])
    code_array = np.frombuffer(codes, dtype=np.uint8)
    if count and code_array.max() > _RESULT_MAX:
        raise ProtocolError(f"a result code is at most {int(_RESULT_MAX)}")
    originals = np.frombuffer(p[codes_end:originals_end], dtype=_ORIGINAL_DTYPE)
    opened = np.frombuffer(p[originals_end:], dtype=_OPENED_DTYPE)
    _check_indexes(originals["index"], count, "original")
    _check_indexes(opened["index"], count, "opened")
    if originals["pad"].any() or opened["pad"].any():
        raise ProtocolError("padding bytes of a submit answer must be zero")
    if (code_array[originals["index"]] != Result.already_committed).any() \
            or (originals["code"] > _RESULT_MAX).any():
        raise ProtocolError("an original code is given only for already_committed records")
    return SubmitAnswer(
        _u64_or_none(height), None if height == NONE_U64 else bytes(block_hash), codes,
        tuple(zip(originals["index"].tolist(), originals["code"].tolist())),
        tuple(zip(opened["index"].tolist(), opened["account"].tolist())))


def _check_indexes(indexes: np.ndarray, count: int, what: str) -> None:
    if len(indexes) and (indexes.max() >= count or (np.diff(indexes.astype(np.int64)) <= 0)
                         .any()):
        raise ProtocolError(f"{what} indexes must rise strictly and stay below {count}")


_codec(SubmitAnswer, MessageType.submit_answer)((_encode_answer, _decode_answer))


def _u64_codec(cls, field: str, what: str):
    def encode(m):
        return _U64.pack(getattr(m, field)), 0

    def decode(p, flags):
        _exact(p, _U64.size, what)
        return cls(_U64.unpack(p)[0])
    return encode, decode


_codec(QueryBalance, MessageType.query_balance)(
    _u64_codec(QueryBalance, "account", "balance query"))
_codec(QueryAccount, MessageType.query_account)(
    _u64_codec(QueryAccount, "account", "account query"))
_codec(Subscribed, MessageType.subscribed)(_u64_codec(Subscribed, "height", "subscribed"))


def _decode_balance(p, flags):
    _exact(p, _BALANCE.size, "balance")
    return Balance(*_BALANCE.unpack(p))


_codec(Balance, MessageType.balance)(
    (lambda m: (_BALANCE.pack(m.account, m.balance), 0), _decode_balance))


def _decode_account(p, flags):
    _exact(p, _ACCOUNT.size, "account")
    account, key, balance, sequence, account_flags, held, height = _ACCOUNT.unpack(p)
    return Account(account, bytes(key), balance, sequence, account_flags, held, height)


_codec(Account, MessageType.account)((lambda m: (_ACCOUNT.pack(
    m.account, m.owner_key, m.balance, m.sequence, m.flags, m.held, m.height), 0),
    _decode_account))


def _decode_query_transaction(p, flags):
    _exact(p, 32, "transaction query")
    return QueryTransaction(bytes(p))


_codec(QueryTransaction, MessageType.query_transaction)(
    (lambda m: (_hash32(m.txid), 0), _decode_query_transaction))


def _hash32(value) -> bytes:
    if len(value) != 32:
        raise ValueError(f"a hash is 32 bytes, got {len(value)}")
    return bytes(value)


def _encode_transaction(m: Transaction):
    if len(m.proof) > limits.proof_hashes_max:
        raise ValueError(f"a proof has at most {limits.proof_hashes_max} hashes")
    head = _TRANSACTION.pack(m.record, m.height, m.position, m.code, len(m.proof),
                             m.block_hash)
    return head + b"".join(_hash32(h) for h in m.proof), 0


def _decode_transaction(p, flags):
    if len(p) < _TRANSACTION.size:
        raise ProtocolError(f"a transaction is at least {_TRANSACTION.size} bytes, "
                            f"got {len(p)}")
    record, height, position, code, proof_count, block_hash = _TRANSACTION.unpack_from(p)
    if proof_count > limits.proof_hashes_max:
        raise ProtocolError(f"a proof has at most {limits.proof_hashes_max} hashes")
    _exact(p, _TRANSACTION.size + 32 * proof_count, "transaction")
    if code > _RESULT_MAX:
        raise ProtocolError(f"unknown result code {code}")
    rest = bytes(p[_TRANSACTION.size:])
    proof = tuple(rest[i:i + 32] for i in range(0, len(rest), 32))
    return Transaction(bytes(record), code, height, position, bytes(block_hash), proof)


_codec(Transaction, MessageType.transaction)((_encode_transaction, _decode_transaction))


def _encode_query_block(m: QueryBlock):
    if (m.height is None) == (m.block_hash is None):
        raise ValueError("a block query names a height or a hash, not both")
    if m.block_hash is not None:
        return _hash32(m.block_hash), BY_HASH
    return _U64.pack(m.height), 0


def _decode_query_block(p, flags):
    if flags & BY_HASH:
        _exact(p, 32, "block query by hash")
        return QueryBlock(block_hash=bytes(p))
    _exact(p, _U64.size, "block query by height")
    return QueryBlock(height=_U64.unpack(p)[0])


_codec(QueryBlock, MessageType.query_block)((_encode_query_block, _decode_query_block))

def _decode_block(p, flags):
    if len(p) < BLOCK_BYTES_MIN:
        raise ProtocolError(f"a block is at least {BLOCK_BYTES_MIN} bytes, got {len(p)}")
    return Block(bytes(p))


_codec(Block, MessageType.block)((lambda m: (bytes(m.data), 0), _decode_block))


def _encode_query_history(m: QueryHistory):
    height, position = (NONE_U64, 0) if m.before is None else m.before
    return _HISTORY_QUERY.pack(m.account, m.limit, position, height), 0


def _decode_query_history(p, flags):
    _exact(p, _HISTORY_QUERY.size, "history query")
    account, limit, position, height = _HISTORY_QUERY.unpack(p)
    if not 1 <= limit <= limits.history_limit_max:
        raise ProtocolError(f"a history limit is 1..{limits.history_limit_max}, got {limit}")
    if height == NONE_U64:
        if position:
            raise ProtocolError("a history query without `before` has position 0")
        return QueryHistory(account, limit)
    return QueryHistory(account, limit, (height, position))


_codec(QueryHistory, MessageType.query_history)((_encode_query_history, _decode_query_history))


def _encode_history(m: History):
    parts = [_HISTORY_HEAD.pack(len(m.entries))]
    parts += [_HISTORY_ENTRY.pack(e.record, e.height, e.position, e.code, e.block_hash)
              for e in m.entries]
    return b"".join(parts), 0


def _decode_history(p, flags):
    if len(p) < _HISTORY_HEAD.size:
        raise ProtocolError(f"a history is at least {_HISTORY_HEAD.size} bytes, got {len(p)}")
    (count,) = _HISTORY_HEAD.unpack_from(p)
    if count > limits.history_limit_max:
        raise ProtocolError(f"a history holds at most {limits.history_limit_max} entries")
    _exact(p, _HISTORY_HEAD.size + count * _HISTORY_ENTRY.size, "history")
    entries = []
    for offset in range(_HISTORY_HEAD.size, len(p), _HISTORY_ENTRY.size):
        record, height, position, code, block_hash = _HISTORY_ENTRY.unpack_from(p, offset)
        if code > _RESULT_MAX:
            raise ProtocolError(f"unknown result code {code}")
        entries.append(HistoryEntry(bytes(record), code, height, position, bytes(block_hash)))
    return History(tuple(entries))


_codec(History, MessageType.history)((_encode_history, _decode_history))


def _decode_status(p, flags):
    _exact(p, _STATUS.size, "status")
    chain_id, version, height, tip, connections, queued, groups, records, damaged = \
        _STATUS.unpack(p)
    return Status(chain_id, version, height, bytes(tip), connections, queued, groups, records,
                  _u64_or_none(damaged))


_codec(Status, MessageType.status)((lambda m: (_STATUS.pack(
    m.chain_id, m.version, m.height, m.tip_hash, m.connections, m.queued_records,
    m.groups_committed, m.records_committed, _none_u64(m.damaged_height)), 0),
    _decode_status))


def _decode_subscribe(p, flags):
    _exact(p, _U64.size, "subscribe")
    return Subscribe(_U64.unpack(p)[0], bool(flags & WITH_BLOCKS))


_codec(Subscribe, MessageType.subscribe)((lambda m: (
    _U64.pack(m.from_height), WITH_BLOCKS if m.with_blocks else 0),
    _decode_subscribe))


def _encode_notice(m: BlockNotice):
    head = _NOTICE.pack(m.height, m.block_hash, m.record_count)
    if m.block is None:
        return head, 0
    return head + bytes(m.block), WITH_BLOCKS


def _decode_notice(p, flags):
    if len(p) < _NOTICE.size:
        raise ProtocolError(f"a block notice is at least {_NOTICE.size} bytes, got {len(p)}")
    height, block_hash, record_count = _NOTICE.unpack_from(p)
    if not flags & WITH_BLOCKS:
        _exact(p, _NOTICE.size, "block notice")
        return BlockNotice(height, bytes(block_hash), record_count)
    if len(p) < _NOTICE.size + BLOCK_BYTES_MIN:
        raise ProtocolError("a block notice with its block carries at least the block header")
    return BlockNotice(height, bytes(block_hash), record_count, bytes(p[_NOTICE.size:]))


_codec(BlockNotice, MessageType.block_notice)((_encode_notice, _decode_notice))


# --- accounts of a key, holds, policy keys -------------------------------------------------------

HOLD_STATUS_NAMES = {1: "open", 2: "posted", 3: "voided", 4: "expired"}  # Hold.status values
HOLD_OPEN = 1
POLICY_SLOTS = range(1, 8)  # slot 0 is the owner key, which query_account answers


@dataclass(frozen=True, slots=True)
class QueryAccounts:
    owner_key: bytes
    after_account: int = 0  # accounts above this one; 0: from the first


@dataclass(frozen=True, slots=True)
class Accounts:
    accounts: tuple[int, ...]  # ascending; fewer than accounts_per_answer_max: the last page


@dataclass(frozen=True, slots=True)
class QueryHolds:
    account: int


@dataclass(frozen=True, slots=True)
class Hold:
    payer: int
    sequence: int  # the hold record's sequence: with payer, the hold's name
    payee: int
    authority: int  # the account whose key may post or void it
    amount: int
    expiry_s: int
    hashlock: bytes  # 32 bytes; zeros: none
    status: int  # HOLD_STATUS_NAMES

    @property
    def status_name(self) -> str:
        return HOLD_STATUS_NAMES[self.status]


@dataclass(frozen=True, slots=True)
class Holds:
    held: int  # units in open holds the account pays
    open_count: int  # open holds naming the account; more than listed past holds_per_answer_max
    holds: tuple[Hold, ...]  # the oldest open holds naming the account


@dataclass(frozen=True, slots=True)
class QueryHold:
    payer: int
    sequence: int


@dataclass(frozen=True, slots=True)
class QueryPolicy:
    account: int
    slot: int  # 1..7


@dataclass(frozen=True, slots=True)
class Policy:
    account: int
    slot: int
    policy_key: bytes
    amount_max: int  # largest amount per transfer; 0: no limit
    allowance: int  # total it may spend; 0: no limit
    allowance_left: int
    expiry_s: int  # 0: none
    recipients: tuple[int, ...] = ()  # up to four accounts it may pay; none: any


_QUERY_ACCOUNTS = struct.Struct("<32sQ")
_COUNT_HEAD = struct.Struct("<I4x")
_HOLD = struct.Struct("<QQQQQQ32sB7x")
_HOLDS_HEAD = struct.Struct("<QII")
_QUERY_HOLD = struct.Struct("<QQ")
_QUERY_POLICY = struct.Struct("<QB7x")
_POLICY = struct.Struct("<QB7x32sQQQQ4Q")


def _decode_query_accounts(p, flags):
    _exact(p, _QUERY_ACCOUNTS.size, "accounts query")
    key, after = _QUERY_ACCOUNTS.unpack(p)
    return QueryAccounts(bytes(key), after)


_codec(QueryAccounts, MessageType.query_accounts)((lambda m: (_QUERY_ACCOUNTS.pack(
    _hash32(m.owner_key), m.after_account), 0), _decode_query_accounts))


def _encode_accounts(m: Accounts):
    if len(m.accounts) > limits.accounts_per_answer_max:
        raise ValueError(f"an accounts answer holds at most {limits.accounts_per_answer_max}")
    return _COUNT_HEAD.pack(len(m.accounts)) + struct.pack(f"<{len(m.accounts)}Q",
                                                           *m.accounts), 0


def _decode_accounts(p, flags):
    if len(p) < _COUNT_HEAD.size:
        raise ProtocolError(f"an accounts answer is at least {_COUNT_HEAD.size} bytes, "
                            f"got {len(p)}")
    (count,) = _COUNT_HEAD.unpack_from(p)
    if count > limits.accounts_per_answer_max:
        raise ProtocolError(f"an accounts answer holds at most {limits.accounts_per_answer_max}")
    _exact(p, _COUNT_HEAD.size + 8 * count, "accounts")
    accounts = struct.unpack_from(f"<{count}Q", p, _COUNT_HEAD.size)
    if any(b <= a for a, b in zip(accounts, accounts[1:])):
        raise ProtocolError("the accounts of an answer rise strictly")
    return Accounts(accounts)


_codec(Accounts, MessageType.accounts)((_encode_accounts, _decode_accounts))
_codec(QueryHolds, MessageType.query_holds)(_u64_codec(QueryHolds, "account", "holds query"))


def _pack_hold(h: Hold) -> bytes:
    if h.status not in HOLD_STATUS_NAMES:
        raise ValueError(f"a hold status is one of {sorted(HOLD_STATUS_NAMES)}, got {h.status}")
    return _HOLD.pack(h.payer, h.sequence, h.payee, h.authority, h.amount, h.expiry_s,
                      _hash32(h.hashlock), h.status)


def _unpack_hold(p, offset: int = 0) -> Hold:
    *numbers, hashlock, status = _HOLD.unpack_from(p, offset)
    if status not in HOLD_STATUS_NAMES:
        raise ProtocolError(f"unknown hold status {status}")
    if any(bytes(p[offset + _HOLD.size - 7:offset + _HOLD.size])):
        raise ProtocolError("the padding of a hold must be zero")
    return Hold(*numbers, bytes(hashlock), status)


def _decode_hold(p, flags):
    _exact(p, _HOLD.size, "hold")
    return _unpack_hold(p)


_codec(Hold, MessageType.hold)((lambda m: (_pack_hold(m), 0), _decode_hold))


def _encode_holds(m: Holds):
    if len(m.holds) > limits.holds_per_answer_max or m.open_count < len(m.holds):
        raise ValueError(f"a holds answer lists at most {limits.holds_per_answer_max} holds, "
                         "and no more than its open count")
    return _HOLDS_HEAD.pack(m.held, m.open_count, len(m.holds)) + b"".join(
        _pack_hold(h) for h in m.holds), 0


def _decode_holds(p, flags):
    if len(p) < _HOLDS_HEAD.size:
        raise ProtocolError(f"a holds answer is at least {_HOLDS_HEAD.size} bytes, got {len(p)}")
    held, open_count, count = _HOLDS_HEAD.unpack_from(p)
    if count > limits.holds_per_answer_max or count > open_count:
        raise ProtocolError(f"a holds answer lists at most {limits.holds_per_answer_max} holds, "
                            "and no more than its open count")
    _exact(p, _HOLDS_HEAD.size + count * _HOLD.size, "holds")
    holds = tuple(_unpack_hold(p, offset)
                  for offset in range(_HOLDS_HEAD.size, len(p), _HOLD.size))
    if any(h.status != HOLD_OPEN for h in holds):
        raise ProtocolError("a holds answer lists open holds only")
    return Holds(held, open_count, holds)


_codec(Holds, MessageType.holds)((_encode_holds, _decode_holds))


def _decode_query_hold(p, flags):
    _exact(p, _QUERY_HOLD.size, "hold query")
    return QueryHold(*_QUERY_HOLD.unpack(p))


_codec(QueryHold, MessageType.query_hold)((lambda m: (_QUERY_HOLD.pack(
    m.payer, m.sequence), 0), _decode_query_hold))


def _check_slot(slot: int, error) -> None:
    if slot not in POLICY_SLOTS:
        raise error(f"a policy key slot is 1..7, got {slot}")


def _encode_query_policy(m: QueryPolicy):
    _check_slot(m.slot, ValueError)
    return _QUERY_POLICY.pack(m.account, m.slot), 0


def _decode_query_policy(p, flags):
    _exact(p, _QUERY_POLICY.size, "policy query")
    if any(bytes(p[9:])):
        raise ProtocolError("the padding of a policy query must be zero")
    query = QueryPolicy(*_QUERY_POLICY.unpack(p))
    _check_slot(query.slot, ProtocolError)
    return query


_codec(QueryPolicy, MessageType.query_policy)((_encode_query_policy, _decode_query_policy))


def _encode_policy(m: Policy):
    _check_slot(m.slot, ValueError)
    if len(m.recipients) > 4 or 0 in m.recipients:
        raise ValueError("a policy names up to four recipient accounts, none of them 0")
    recipients = tuple(m.recipients) + (0,) * (4 - len(m.recipients))
    return _POLICY.pack(m.account, m.slot, _hash32(m.policy_key), m.amount_max, m.allowance,
                        m.allowance_left, m.expiry_s, *recipients), 0


def _decode_policy(p, flags):
    _exact(p, _POLICY.size, "policy")
    if any(bytes(p[9:16])):
        raise ProtocolError("the padding of a policy must be zero")
    account, slot, key, amount_max, allowance, left, expiry_s, *recipients = _POLICY.unpack(p)
    _check_slot(slot, ProtocolError)
    return Policy(account, slot, bytes(key), amount_max, allowance, left, expiry_s,
                  tuple(r for r in recipients if r))


_codec(Policy, MessageType.policy)((_encode_policy, _decode_policy))


# --- peers ------------------------------------------------------------------------------------

SERVICE_MINES = 1  # PeerHello.services bit: the node mines blocks
SERVICES_KNOWN = SERVICE_MINES
_HOST_CHARACTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")


@dataclass(frozen=True, slots=True)
class PeerHello:
    """The first frame of a peer connection: the connecting side's, then the other side's own.

    ``node_nonce`` is random per process, so a node that receives its own has dialed itself.
    """

    versions: tuple[int, ...]
    genesis_hash: bytes
    best_height: int
    best_work: int  # cumulative proof of work of the best chain, 0 .. 2**256 - 1
    listen_port: int = 0  # where the node accepts peers; 0: it does not
    node_nonce: int = 0
    services: int = 0  # SERVICE_MINES

    @property
    def mines(self) -> bool:
        return bool(self.services & SERVICE_MINES)


@dataclass(frozen=True, slots=True)
class GetHeaders:
    """Headers of the asked node's best chain after the newest block of ``locator`` it has.

    ``locator`` is newest first, Bitcoin style: the asker's tip, its parents, then ever larger
    steps back, its genesis hash last.
    """

    locator: tuple[bytes, ...]
    max_count: int = limits.headers_per_message_max
    stop_hash: bytes = ZERO_HASH  # the last header wanted; zeros: none


@dataclass(frozen=True, slots=True)
class Headers:
    """Contiguous 80-byte block headers, oldest first; none: the asker has the best chain.

    Decoded, ``headers`` is one view of the received frame, which hashing.validate_headers
    checks as it is.
    """

    headers: bytes  # count x 80 bytes

    @property
    def count(self) -> int:
        return memoryview(self.headers).nbytes // BLOCK_HEADER_BYTES


@dataclass(frozen=True, slots=True)
class GetBlocks:
    hashes: tuple[bytes, ...]  # distinct block hashes


@dataclass(frozen=True, slots=True)
class BlockData:
    """One encoded block (docs/FORMAT.md); decoded, a view of the received frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NotFound:
    hashes: tuple[bytes, ...]  # the blocks of a get_blocks the node does not have


@dataclass(frozen=True, slots=True)
class Announce:
    """A new best block: a peer that does not know its parent asks for headers."""

    height: int
    header: bytes  # 80 bytes


@dataclass(frozen=True, slots=True)
class Relay(SubmitBatch):
    """Signed records for the mempool, passed from peer to peer: a submit batch's fields,
    layout and checks, under its own type. Not answered."""


class RelayCalls(SubmitCalls):
    """Signed records with the payloads of their call records, for the mempool, passed from
    peer to peer: a submit calls' fields, layout and checks, under its own type. Not
    answered."""


@dataclass(frozen=True, slots=True)
class ProposalMessage:
    """A validator's signed proposal for (height, round) with the block it proposes
    (tsunagi.consensus.tendermint.Proposal; the value is the block's hash)."""

    height: int
    round: int
    valid_round: int  # -1: none
    proposer: int  # the proposer's index in the height's validator set
    signature: bytes  # 64-byte BIP340 over certificate.proposal_message
    block: bytes  # the block, version 2, no seal


@dataclass(frozen=True, slots=True)
class VoteMessage:
    """A validator's signed prevote (1) or precommit (2) for a block hash, or nil (None)."""

    kind: int
    height: int
    round: int
    voter: int
    value: bytes | None
    signature: bytes  # 64-byte BIP340 over certificate.vote_message


@dataclass(frozen=True, slots=True)
class GetPeers:
    pass


@dataclass(frozen=True, slots=True)
class PeerAddress:
    host: str  # a DNS name or an IP address: 1..255 ASCII letters, digits, '.', '-', ':'
    port: int  # 1..65535


@dataclass(frozen=True, slots=True)
class Peers:
    addresses: tuple[PeerAddress, ...]


_PEER_HELLO = struct.Struct("<4s32s32sQQIHB")
_GET_HEADERS = struct.Struct("<II32s")
_COUNT = struct.Struct("<I")
_ANNOUNCE = struct.Struct("<Q80s")
_ADDRESS = struct.Struct("<HB")


def _encode_peer_hello(m: PeerHello):
    _check_versions(len(m.versions), "peer hello", ValueError)
    if not 0 <= m.best_work < 1 << 256:
        raise ValueError(f"best_work is a 256-bit unsigned integer, got {m.best_work}")
    if m.services & ~SERVICES_KNOWN:
        raise ValueError(f"service flags 0x{m.services:x} are not defined")
    return _PEER_HELLO.pack(MAGIC, _hash32(m.genesis_hash), m.best_work.to_bytes(32, "big"),
                            m.best_height, m.node_nonce, m.services, m.listen_port,
                            len(m.versions)) + bytes(m.versions), 0


def _decode_peer_hello(p, flags):
    versions, genesis, work, height, nonce, services, port = \
        _hello_head(p, _PEER_HELLO, "peer hello")
    if services & ~SERVICES_KNOWN:
        raise ProtocolError(f"service flags 0x{services:x} are not defined")
    return PeerHello(versions, bytes(genesis), height, int.from_bytes(work, "big"), port,
                     nonce, services)


_codec(PeerHello, MessageType.peer_hello)((_encode_peer_hello, _decode_peer_hello))


def _check_count(count: int, first: int, last: int, what: str, error) -> None:
    if not first <= count <= last:
        raise error(f"a {what} is {first}..{last}, got {count}")


def _hashes(p, offset: int) -> tuple[bytes, ...]:
    """The 32-byte hashes from ``offset`` to the end (a length already checked)."""
    return tuple(bytes(p[at:at + 32]) for at in range(offset, len(p), 32))


def _encode_get_headers(m: GetHeaders):
    _check_count(len(m.locator), 1, limits.locator_hashes_max, "locator's hash count",
                 ValueError)
    _check_count(m.max_count, 1, limits.headers_per_message_max, "get_headers max count",
                 ValueError)
    head = _GET_HEADERS.pack(len(m.locator), m.max_count, _hash32(m.stop_hash))
    return head + b"".join(_hash32(h) for h in m.locator), 0


def _decode_get_headers(p, flags):
    if len(p) < _GET_HEADERS.size:
        raise ProtocolError(f"a get_headers is at least {_GET_HEADERS.size} bytes, "
                            f"got {len(p)}")
    locator_count, max_count, stop_hash = _GET_HEADERS.unpack_from(p)
    _check_count(locator_count, 1, limits.locator_hashes_max, "locator's hash count",
                 ProtocolError)
    _check_count(max_count, 1, limits.headers_per_message_max, "get_headers max count",
                 ProtocolError)
    _exact(p, _GET_HEADERS.size + 32 * locator_count, "get_headers")
    return GetHeaders(_hashes(p, _GET_HEADERS.size), max_count, bytes(stop_hash))


_codec(GetHeaders, MessageType.get_headers)((_encode_get_headers, _decode_get_headers))


def _encode_headers(m: Headers):
    data = bytes(m.headers)
    if len(data) % BLOCK_HEADER_BYTES:
        raise ValueError(f"headers are whole {BLOCK_HEADER_BYTES}-byte items, got {len(data)} "
                         "bytes")
    count = len(data) // BLOCK_HEADER_BYTES
    _check_count(count, 0, limits.headers_per_message_max, "headers count", ValueError)
    return _COUNT.pack(count) + data, 0


def _decode_headers(p, flags):
    if len(p) < _COUNT.size:
        raise ProtocolError(f"a headers message is at least {_COUNT.size} bytes, got {len(p)}")
    (count,) = _COUNT.unpack_from(p)
    _check_count(count, 0, limits.headers_per_message_max, "headers count", ProtocolError)
    _exact(p, _COUNT.size + count * BLOCK_HEADER_BYTES, "headers")
    return Headers(p[_COUNT.size:])


_codec(Headers, MessageType.headers)((_encode_headers, _decode_headers))


def _block_hashes_codec(cls, what: str):
    """Encoder and decoder of a count and that many distinct block hashes (1..64)."""
    def check(hashes, error) -> None:
        _check_count(len(hashes), 1, limits.blocks_per_request_max, f"{what}'s hash count",
                     error)
        if len(set(hashes)) != len(hashes):
            raise error(f"a {what} names each block hash once")

    def encode(m):
        packed = tuple(_hash32(h) for h in m.hashes)
        check(packed, ValueError)
        return _COUNT.pack(len(packed)) + b"".join(packed), 0

    def decode(p, flags):
        if len(p) < _COUNT.size:
            raise ProtocolError(f"a {what} is at least {_COUNT.size} bytes, got {len(p)}")
        (count,) = _COUNT.unpack_from(p)
        _check_count(count, 1, limits.blocks_per_request_max, f"{what}'s hash count",
                     ProtocolError)
        _exact(p, _COUNT.size + 32 * count, what)
        hashes = _hashes(p, _COUNT.size)
        check(hashes, ProtocolError)
        return cls(hashes)
    return encode, decode


_codec(GetBlocks, MessageType.get_blocks)(_block_hashes_codec(GetBlocks, "get_blocks"))
_codec(NotFound, MessageType.not_found)(_block_hashes_codec(NotFound, "not_found"))


def _check_block_size(size: int, error) -> None:
    if not BLOCK_BYTES_MIN <= size <= log_block_bytes_max:
        raise error(f"a block is {BLOCK_BYTES_MIN}..{log_block_bytes_max} bytes, got {size}")


def _encode_block_data(m: BlockData):
    data = bytes(m.data)
    _check_block_size(len(data), ValueError)
    return data, 0


def _decode_block_data(p, flags):
    _check_block_size(len(p), ProtocolError)
    return BlockData(p)


_codec(BlockData, MessageType.block_data)((_encode_block_data, _decode_block_data))


def _encode_announce(m: Announce):
    if len(m.header) != BLOCK_HEADER_BYTES:
        raise ValueError(f"a block header is {BLOCK_HEADER_BYTES} bytes, got {len(m.header)}")
    return _ANNOUNCE.pack(m.height, m.header), 0


def _decode_announce(p, flags):
    _exact(p, _ANNOUNCE.size, "announce")
    height, header = _ANNOUNCE.unpack(p)
    return Announce(height, bytes(header))


_codec(Announce, MessageType.announce)((_encode_announce, _decode_announce))
_PROPOSAL_HEAD = struct.Struct("<QIiH64s")
_VOTE = struct.Struct("<BQIH?32s64s")


def _encode_proposal(m: ProposalMessage):
    block = bytes(m.block)
    _check_block_size(len(block), ValueError)
    return _PROPOSAL_HEAD.pack(m.height, m.round, m.valid_round, m.proposer,
                               m.signature) + block, 0


def _decode_proposal(p, flags):
    if len(p) < _PROPOSAL_HEAD.size:
        raise ProtocolError(f"a proposal payload is at least {_PROPOSAL_HEAD.size} bytes, "
                            f"got {len(p)}")
    height, round_, valid_round, proposer, signature = _PROPOSAL_HEAD.unpack_from(p)
    if not -1 <= valid_round < round_:
        raise ProtocolError(f"valid_round {valid_round} is not in -1..round-1 ({round_ - 1})")
    block = p[_PROPOSAL_HEAD.size:]
    _check_block_size(len(block), ProtocolError)
    return ProposalMessage(height, round_, valid_round, proposer, bytes(signature), block)


def _encode_vote(m: VoteMessage):
    if m.value is not None and len(m.value) != 32:
        raise ValueError(f"a vote's value is a 32-byte block hash, got {len(m.value)} bytes")
    return _VOTE.pack(m.kind, m.height, m.round, m.voter, m.value is not None,
                      m.value or bytes(32), m.signature), 0


def _decode_vote(p, flags):
    _exact(p, _VOTE.size, "vote")
    kind, height, round_, voter, has_value, value, signature = _VOTE.unpack(p)
    if kind not in (1, 2):
        raise ProtocolError(f"a vote's kind is 1 (prevote) or 2 (precommit), got {kind}")
    if not has_value and value != bytes(32):
        raise ProtocolError("a nil vote carries 32 zero bytes for its value")
    return VoteMessage(kind, height, round_, voter, bytes(value) if has_value else None,
                       bytes(signature))


_codec(ProposalMessage, MessageType.proposal)((_encode_proposal, _decode_proposal))
_codec(VoteMessage, MessageType.vote)((_encode_vote, _decode_vote))
_codec(Relay, MessageType.relay)(_batch_codec(Relay, "relay"))


def _decode_relay_calls(p, flags) -> RelayCalls:
    calls = _decode_submit_calls(p, flags)
    return RelayCalls(calls.records, calls.signatures, calls.payloads)


_codec(RelayCalls, MessageType.relay_calls)((_encode_submit_calls, _decode_relay_calls))
_codec(GetPeers, MessageType.get_peers)(_empty(GetPeers, "get_peers"))


def _check_address(host: bytes, port: int, error) -> None:
    if not 1 <= len(host) <= limits.peer_host_bytes_max or not _HOST_CHARACTERS.issuperset(host):
        raise error(f"a peer host is 1..{limits.peer_host_bytes_max} ASCII letters, digits, "
                    f"'.', '-' or ':', got {bytes(host)[:limits.peer_host_bytes_max]!r}")
    if not 1 <= port <= 0xFFFF:
        raise error(f"a peer port is 1..65535, got {port}")


def _encode_peers(m: Peers):
    _check_count(len(m.addresses), 0, limits.peers_per_answer_max, "peers count", ValueError)
    parts = [_COUNT.pack(len(m.addresses))]
    for address in m.addresses:
        host = address.host.encode("utf-8")
        _check_address(host, address.port, ValueError)
        parts += [_ADDRESS.pack(address.port, len(host)), host]
    return b"".join(parts), 0


def _decode_peers(p, flags):
    if len(p) < _COUNT.size:
        raise ProtocolError(f"a peers message is at least {_COUNT.size} bytes, got {len(p)}")
    (count,) = _COUNT.unpack_from(p)
    _check_count(count, 0, limits.peers_per_answer_max, "peers count", ProtocolError)
    addresses, offset = [], _COUNT.size
    for _ in range(count):
        if len(p) < offset + _ADDRESS.size:
            raise ProtocolError(f"peer address {len(addresses)} is cut off at byte {offset}")
        port, size = _ADDRESS.unpack_from(p, offset)
        host = bytes(p[offset + _ADDRESS.size:offset + _ADDRESS.size + size])
        if len(host) != size:
            raise ProtocolError(f"peer address {len(addresses)} is cut off at byte {offset}")
        _check_address(host, port, ProtocolError)
        addresses.append(PeerAddress(host.decode("ascii"), port))
        offset += _ADDRESS.size + size
    _exact(p, offset, "peers")
    return Peers(tuple(addresses))


_codec(Peers, MessageType.peers)((_encode_peers, _decode_peers))


@dataclass(frozen=True, slots=True)
class QueryNetwork:
    pass


@dataclass(frozen=True, slots=True)
class SubmitEntries:
    """Consortium entries (tsunagi.core.entries, docs/FORMAT.md) for a validator to put in
    the next block it proposes: validator updates approved by the current set."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EntriesFinal:
    height: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class QueryValidators:
    pass


@dataclass(frozen=True, slots=True)
class Validators:
    """The validator set (certificate.ValidatorSet's encoding) that decides ``height``."""

    height: int
    validator_set: bytes


@dataclass(frozen=True, slots=True)
class Network:
    """A node of a network: its peers, best chain, reorgs and records waiting for a block."""

    mines: bool
    peers: int
    height: int  # of the ledger's best block
    best_header_height: int
    work: int  # cumulative proof of work of the best chain, 0 .. 2**256 - 1
    reorgs: int
    reorg_depth_last: int
    reorg_depth_max: int
    side_blocks: int
    mempool_records: int
    mempool_bytes: int
    bans: int


_NETWORK = struct.Struct("<BIQQ32sQQQQQQQ")


def _encode_network(m: Network):
    if not 0 <= m.work < 1 << 256:
        raise ValueError(f"work is a 256-bit unsigned integer, got {m.work}")
    return _NETWORK.pack(int(m.mines), m.peers, m.height, m.best_header_height,
                         m.work.to_bytes(32, "big"), m.reorgs, m.reorg_depth_last,
                         m.reorg_depth_max, m.side_blocks, m.mempool_records, m.mempool_bytes,
                         m.bans), 0


def _decode_network(p, flags):
    _exact(p, _NETWORK.size, "network")
    fields = list(_NETWORK.unpack(p))
    if fields[0] > 1:
        raise ProtocolError("network: mines is 0 or 1")
    fields[0] = bool(fields[0])
    fields[4] = int.from_bytes(fields[4], "big")
    return Network(*fields)


_codec(QueryNetwork, MessageType.query_network)(_empty(QueryNetwork, "network query"))
_codec(QueryValidators, MessageType.query_validators)(_empty(QueryValidators,
                                                              "validators query"))
_HEIGHT_HASH = struct.Struct("<Q32s")
_HEIGHT = struct.Struct("<Q")


def _encode_submit_entries(m: SubmitEntries):
    data = bytes(m.data)
    if not 1 <= len(data) <= seal_bytes_max:
        raise ValueError(f"entries are 1..{seal_bytes_max} bytes, got {len(data)}")
    return data, 0


def _decode_submit_entries(p, flags):
    if not 1 <= len(p) <= seal_bytes_max:
        raise ProtocolError(f"a submit_entries payload is 1..{seal_bytes_max} bytes, "
                            f"got {len(p)}")
    return SubmitEntries(bytes(p))


def _decode_entries_final(p, flags):
    _exact(p, _HEIGHT_HASH.size, "entries_final")
    return EntriesFinal(*_HEIGHT_HASH.unpack(p))


def _decode_validators(p, flags):
    if len(p) < _HEIGHT.size + 2:
        raise ProtocolError("a validators payload is a height and a validator set")
    return Validators(_HEIGHT.unpack_from(p)[0], bytes(p[_HEIGHT.size:]))


_codec(SubmitEntries, MessageType.submit_entries)((_encode_submit_entries,
                                                   _decode_submit_entries))
_codec(EntriesFinal, MessageType.entries_final)(
    (lambda m: (_HEIGHT_HASH.pack(m.height, m.block_hash), 0), _decode_entries_final))
_codec(Validators, MessageType.validators)(
    (lambda m: (_HEIGHT.pack(m.height) + bytes(m.validator_set), 0), _decode_validators))
_codec(Network, MessageType.network)((_encode_network, _decode_network))


# --- contracts and light clients ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QueryHeaders:
    """The 80-byte headers of blocks ``from_height`` up, at most ``max_count`` of them (fewer
    where the chain ends; none past its tip): what a light client of the chain is fed."""

    from_height: int
    max_count: int = limits.headers_per_message_max


@dataclass(frozen=True, slots=True)
class QueryContractState:
    """A value of the chain's world state by its whole key (the contract's name and a zero
    byte, then the contract's own key: docs/CONTRACTS.md)."""

    key: bytes


@dataclass(frozen=True, slots=True)
class ContractState:
    value: bytes  # the stored value, canonical-encoded


@dataclass(frozen=True, slots=True)
class QueryCallResult:
    txid: bytes


@dataclass(frozen=True, slots=True)
class CallResult:
    """What a call did (tsunagi.contracts.runtime.CallResult): its CallCode, the contract's
    refusal code, the steps it took, its return value and events canonical-encoded (b"" and
    an empty list unless ok), and the reason in words (at most error_message_bytes_max)."""

    code: int
    refuse_code: int = 0
    steps: int = 0
    value: bytes = b""
    events: bytes = b""
    detail: str = ""


_QUERY_HEADERS = struct.Struct("<QI4x")
_CALL_RESULT = struct.Struct("<B3xIQIIH2x")
_CALL_CODES = frozenset(int(code) for code in CallCode)


def _decode_query_headers(p, flags):
    _exact(p, _QUERY_HEADERS.size, "headers query")
    from_height, count = _QUERY_HEADERS.unpack(p)
    _check_count(count, 1, limits.headers_per_message_max, "headers query's count",
                 ProtocolError)
    if any(bytes(p[12:])):
        raise ProtocolError("the padding of a headers query must be zero")
    return QueryHeaders(from_height, count)


def _encode_query_headers(m: QueryHeaders):
    _check_count(m.max_count, 1, limits.headers_per_message_max, "headers query's count",
                 ValueError)
    return _QUERY_HEADERS.pack(m.from_height, m.max_count), 0


def _check_state_key(key, error) -> None:
    if not 1 <= len(key) <= contract_limits.state_key_bytes_max:
        raise error(f"a state key is 1..{contract_limits.state_key_bytes_max} bytes, "
                    f"got {len(key)}")


def _encode_query_state(m: QueryContractState):
    _check_state_key(m.key, ValueError)
    return bytes(m.key), 0


def _decode_query_state(p, flags):
    _check_state_key(p, ProtocolError)
    return QueryContractState(bytes(p))


def _encode_state(m: ContractState):
    if len(m.value) > contract_limits.state_value_bytes_max:
        raise ValueError(f"a state value is at most {contract_limits.state_value_bytes_max} "
                         "bytes")
    return bytes(m.value), 0


def _decode_state(p, flags):
    if len(p) > contract_limits.state_value_bytes_max:
        raise ProtocolError(f"a state value is at most "
                            f"{contract_limits.state_value_bytes_max} bytes, got {len(p)}")
    return ContractState(bytes(p))


def _encode_call_result(m: CallResult):
    detail = m.detail.encode("utf-8")[:limits.error_message_bytes_max]
    detail = detail.decode("utf-8", "ignore").encode("utf-8")  # a cut never splits a character
    if m.code not in _CALL_CODES:
        raise ValueError(f"a call code is one of {sorted(_CALL_CODES)}, got {m.code}")
    if len(m.value) > contract_limits.encoded_bytes_max:
        raise ValueError(f"a call's value is at most {contract_limits.encoded_bytes_max} bytes")
    head = _CALL_RESULT.pack(m.code, m.refuse_code, m.steps, len(m.value), len(m.events),
                             len(detail))
    return b"".join((head, bytes(m.value), bytes(m.events), detail)), 0


def _decode_call_result(p, flags):
    if len(p) < _CALL_RESULT.size:
        raise ProtocolError(f"a call result is at least {_CALL_RESULT.size} bytes, "
                            f"got {len(p)}")
    code, refuse_code, steps, value_size, events_size, detail_size = \
        _CALL_RESULT.unpack_from(p)
    if code not in _CALL_CODES:
        raise ProtocolError(f"unknown call code {code}")
    if value_size > contract_limits.encoded_bytes_max or \
            detail_size > limits.error_message_bytes_max:
        raise ProtocolError(f"a call's value is at most {contract_limits.encoded_bytes_max} "
                            f"bytes and its detail {limits.error_message_bytes_max}")
    if any(bytes(p[1:4])) or any(bytes(p[_CALL_RESULT.size - 2:_CALL_RESULT.size])):
        raise ProtocolError("the padding of a call result must be zero")
    value_end = _CALL_RESULT.size + value_size
    events_end = value_end + events_size
    _exact(p, events_end + detail_size, "call result")
    try:
        detail = bytes(p[events_end:]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"a call's detail is not UTF-8: {exc}") from None
    return CallResult(code, refuse_code, steps, bytes(p[_CALL_RESULT.size:value_end]),
                      bytes(p[value_end:events_end]), detail)


_codec(QueryHeaders, MessageType.query_headers)((_encode_query_headers, _decode_query_headers))
_codec(QueryContractState, MessageType.query_contract_state)((_encode_query_state,
                                                              _decode_query_state))
_codec(ContractState, MessageType.contract_state)((_encode_state, _decode_state))
def _decode_query_call_result(p, flags):
    _exact(p, 32, "call result query")
    return QueryCallResult(bytes(p))


_codec(QueryCallResult, MessageType.query_call_result)(
    (lambda m: (_hash32(m.txid), 0), _decode_query_call_result))
_codec(CallResult, MessageType.call_result)((_encode_call_result, _decode_call_result))


# Frame flags each message type may carry; any other bit is a protocol error.
_FLAGS_ALLOWED = {MessageType.subscribe: WITH_BLOCKS,
                  MessageType.block_notice: WITH_BLOCKS,
                  MessageType.query_block: BY_HASH}

Message = (Hello | Welcome | Error | Ping | Pong | Submit | SubmitBatch | SubmitCalls
           | SubmitAnswer
           | QueryBalance | Balance | QueryAccount | Account | QueryTransaction | Transaction
           | QueryBlock | Block | QueryHistory | History | QueryStatus | Status | Subscribe
           | Subscribed | BlockNotice | Unsubscribe | SubscriptionEnd)
Message = (Message | QueryAccounts | Accounts | QueryHolds | Holds | QueryHold | Hold
           | QueryPolicy | Policy)
Message = (Message | PeerHello | GetHeaders | Headers | GetBlocks | BlockData | NotFound
           | Announce | Relay | RelayCalls | GetPeers | Peers | QueryNetwork | Network
           | ProposalMessage | VoteMessage | SubmitEntries | EntriesFinal | QueryValidators
           | Validators)
Message = (Message | QueryHeaders | QueryContractState | ContractState | QueryCallResult
           | CallResult)


# --- the two entry points ----------------------------------------------------------------------

def message_type(message) -> MessageType:
    return _ENCODERS[type(message)][0]


def encode(message, request_id: int, version: int = limits.protocol_versions[-1]) -> bytes:
    """One whole frame carrying ``message``. Bad field values raise ValueError."""
    try:
        kind, encoder = _ENCODERS[type(message)]
    except KeyError:
        raise TypeError(f"{type(message).__name__} is not a protocol message") from None
    try:
        payload, flags = encoder(message)
    except struct.error as exc:
        raise ValueError(f"a {type(message).__name__} field is out of range: {exc}") from None
    if kind in HANDSHAKE_TYPES:
        version = HELLO_VERSION
    return encode_frame(kind, request_id, payload, int(flags), version)


def decode(frame: Frame):
    """The message a frame carries. Untrusted bytes: any defect raises ProtocolError."""
    decoder = _DECODERS.get(frame.type)
    if decoder is None:
        raise ProtocolError(f"unknown message type 0x{frame.type:02x}")
    if frame.flags & ~_FLAGS_ALLOWED.get(frame.type, 0):
        raise ProtocolError(f"flags 0x{frame.flags:04x} are not defined for "
                            f"{MessageType(frame.type).name}")
    try:
        return decoder(frame.payload, frame.flags)
    except (struct.error, ValueError, IndexError, TypeError, OverflowError) as exc:
        # The checks above each decoder read should make this unreachable; it is the guard
        # that keeps a missed case a ProtocolError instead of a crash.
        raise ProtocolError(f"malformed {MessageType(frame.type).name}: {exc}") from None


def decode_message(data, versions=limits.protocol_versions,
                   frame_bytes_max: int = limits.frame_bytes_max):
    """decode(decode_frame(data)): the request id and the message of one whole frame."""
    frame = decode_frame(data, versions, frame_bytes_max)
    return frame.request_id, decode(frame)
