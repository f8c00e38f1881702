"""The node's network server: asyncio (uvloop when installed) with group commit across clients.

Submissions from every connection go into one bounded queue. A single writer task closes a
group at ``group_records_max`` records or ``group_wait_ms`` after its first submission arrived,
hands the concatenated buffers to ``ledger.begin_batch`` in a worker thread (one block), and
answers each waiting request with its own slice of the codes once a second thread has seen the
block's fsync return. While one group waits for the disk the next one is checked and applied
(``groups_in_flight``), and while the ledger works the queue fills, so each fsync is shared by
everyone who arrived meanwhile.

Nothing a client sends can crash or stall the node: frames are bounded in size and time,
requests per connection and queued records are bounded, a full queue answers ``overloaded``,
and answers are written without ever waiting for a client to read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tsunagi import hashing
from tsunagi.consensus.chain import NotAtTip
from tsunagi.contracts import encoding
from tsunagi.core.block import (
    BATCH_DTYPE,
    COUNTS_OFFSET,
    HEADER_BYTES,
    block_payloads,
    decode_block,
)
from tsunagi.core.codes import UNSTORED, Result
from tsunagi.core.records import RECORD_BYTES, Flags, Kind, call_count
from tsunagi.errors import ConfigError, CorruptLogError, EncodingError, ProtocolError
from tsunagi.ledger import limits as ledger_limits
from tsunagi.ledger.ledger import SealStopped
from tsunagi.node import limits
from tsunagi.node import protocol as p

__all__ = ["NodeEvents", "NodeServer", "NodeSettings", "new_event_loop", "run_node"]

log = logging.getLogger("tsunagi.node")

# For each result code: True when a record with that code is stored in the block.
_STORED = np.ones(256, dtype=bool)
_STORED[[int(code) for code in UNSTORED]] = False


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (about twice the frames per second), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass(frozen=True)
class NodeSettings:
    """Tunable limits of one server; the defaults and their reasons are in node/limits.py."""

    group_records_max: int = limits.group_records_max
    group_wait_ms: float = limits.group_wait_ms
    groups_in_flight: int = limits.groups_in_flight
    queue_records_max: int = limits.queue_records_max
    connections_max: int = limits.connections_max
    inflight_per_connection_max: int = limits.inflight_per_connection_max
    frame_bytes_max: int = limits.frame_bytes_max
    frame_timeout_s: float = limits.frame_timeout_s
    handshake_timeout_s: float = limits.handshake_timeout_s
    idle_timeout_s: float = limits.idle_timeout_s
    write_buffer_bytes_max: int = limits.write_buffer_bytes_max
    subscriptions_per_connection_max: int = limits.subscriptions_per_connection_max
    reader_threads: int = 2  # threads serving queries; the ledger allows reads from any thread
    # The background scrub of committed blocks (ledger.damage.Scrub); 0 turns it off.
    scrub_rate_bytes_s: int = ledger_limits.scrub_rate_bytes_s
    scrub_cpu_share: float = ledger_limits.scrub_cpu_share
    scrub_interval_s: float = ledger_limits.scrub_interval_s

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"node setting {field.name} is a number >= 0, got {value!r}")
        if self.group_records_max < 1 or self.inflight_per_connection_max < 1 \
                or self.reader_threads < 1 or self.groups_in_flight < 1:
            raise ConfigError("group_records_max, groups_in_flight, inflight_per_connection_max "
                              "and reader_threads are at least 1")
        if self.frame_bytes_max < limits.frame_prefix_bytes + 256 \
                or self.frame_bytes_max > limits.frame_bytes_max:
            raise ConfigError(f"frame_bytes_max is between 272 and {limits.frame_bytes_max}")


class NodeEvents:
    """What a server reports as it works (the metrics endpoint counts these); no-ops here.

    Called on the event loop's thread, so an implementation must be quick and never block.
    """

    def group_committed(self, counts: list[int], arrived_s: list[float], codes: np.ndarray,
                        block: bool, ledger_s: float, sync_s: float) -> None:
        """A group was answered: records per submission, their arrival (time.monotonic()),
        one code per record, whether a block was stored, seconds the ledger call took and
        seconds of it the block's fsync took."""

    def error_sent(self, code: p.ErrorCode) -> None:
        """An error answer went out on a connection (a frame or request was refused)."""


@dataclass(eq=False, slots=True)
class _Submission:
    """One submit request waiting in the group-commit queue."""

    connection: _Connection
    request_id: int
    records: memoryview
    signatures: memoryview
    batches: np.ndarray  # BATCH_DTYPE entries, ranges relative to this request
    count: int
    open_ended: bool  # the last record is linked: it must end its group, or it links onward
    arrived_s: float
    # Relayed by a node that does not mine: codes found so far in connected blocks.
    codes: np.ndarray | None = None
    left: int = 0
    height: int | None = None
    block_hash: bytes | None = None
    txids: np.ndarray | None = None  # a validator's: to find the records in final blocks
    payloads: tuple[bytes, ...] | None = None  # a submit_calls': its call records' payloads


class _Connection(asyncio.BufferedProtocol):
    """One client connection: cuts frames, dispatches requests, writes answers.

    The socket reads straight into the frame reader's buffer (get_buffer/buffer_updated), so a
    batch's records are copied once, by the kernel, from the socket to where the ledger reads
    them."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.settings = server.settings
        self.reader = p.FrameReader((p.HELLO_VERSION,), self.settings.frame_bytes_max)
        self.transport: asyncio.Transport | None = None
        self.version = 0  # 0 until the handshake chose one
        self.inflight: set[int] = set()
        self.subscriptions: dict[int, asyncio.Task] = {}
        self.paused = False
        self.closed = False
        self.opened_s = self.last_frame_s = time.monotonic()
        self.partial_since_s: float | None = None  # when the unfinished frame began
        self.closing_since_s: float | None = None
        self.drained = asyncio.Event()
        self.drained.set()

    # -- asyncio callbacks --

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        if len(self.server.connections) > self.settings.connections_max \
                or self.server.stopping:
            self.send_error(0, p.ErrorCode.overloaded, "the node takes no more connections")
            self.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for task in self.subscriptions.values():
            task.cancel()
        self.subscriptions.clear()
        self.drained.set()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.receive_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.received(nbytes)
        if not self.closed:
            self.process()

    def eof_received(self) -> bool:
        return False  # a half-closed client gets its connection closed

    # -- frames in --

    def process(self) -> None:
        """Takes out and dispatches whole frames until none is left or too many are in flight."""
        while not self.closed:
            if not self.may_read():
                if not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
                if self.server.queue_high:
                    self.server.hold(self)
                break
            try:
                frame = self.reader.next_frame()
            except ProtocolError as exc:
                # The stream cannot be cut into frames any more: answer once and close.
                code = p.ErrorCode.too_large if self.reader.announced_bytes \
                    > self.settings.frame_bytes_max else p.ErrorCode.malformed
                self.send_error(0, code, str(exc))
                self.close()
                return
            if frame is None:
                break
            self.last_frame_s = time.monotonic()
            self.partial_since_s = None
            self.dispatch(frame)
        # Only a frame the client has not finished sending runs against frame_timeout_s; one
        # waiting because this connection is paused is the node's doing.
        if self.paused or not self.reader.pending_bytes:
            self.partial_since_s = None
        elif self.partial_since_s is None:
            self.partial_since_s = time.monotonic()

    def dispatch(self, frame: p.Frame) -> None:
        if not self.version:
            self.handshake(frame)
            return
        try:
            message = p.decode(frame)
        except ProtocolError as exc:
            code = p.ErrorCode.unknown_type if frame.type not in p.MessageType._value2member_map_ \
                else p.ErrorCode.malformed
            self.send_error(frame.request_id, code, str(exc))
            return
        handler = _HANDLERS.get(type(message))
        if handler is None:
            self.send_error(frame.request_id, p.ErrorCode.unknown_type,
                            f"a node does not serve {type(message).__name__} messages")
            return
        if isinstance(message, p.Unsubscribe):  # its request id is the subscription's
            handler(self, frame.request_id, message)
            return
        if frame.request_id in self.inflight or frame.request_id in self.subscriptions:
            self.send_error(frame.request_id, p.ErrorCode.duplicate_request,
                            f"request id {frame.request_id} is already in flight")
            return
        handler(self, frame.request_id, message)

    def handshake(self, frame: p.Frame) -> None:
        if frame.type == p.MessageType.peer_hello and self.server.network is not None:
            # A peer: the peer manager reads this connection from now on.
            self.closed = True
            self.server.connections.discard(self)
            self.server.network.take_inbound(self.transport, frame, self.reader.take_pending())
            return
        if frame.type != p.MessageType.hello:
            self.send_error(frame.request_id, p.ErrorCode.handshake_required,
                            "the first frame on a connection must be a hello")
            self.close()
            return
        try:
            hello = p.decode(frame)
        except ProtocolError as exc:
            self.send_error(frame.request_id, p.ErrorCode.malformed, str(exc))
            self.close()
            return
        common = set(hello.versions) & set(limits.protocol_versions)
        chain_id = self.server.chain_id
        if not common:
            self.send_error(frame.request_id, p.ErrorCode.unsupported_version,
                            f"the node speaks protocol versions {limits.protocol_versions}")
            self.close()
        elif hello.chain_id not in (0, chain_id):
            self.send_error(frame.request_id, p.ErrorCode.wrong_chain,
                            f"the node serves chain {chain_id}, not {hello.chain_id}")
            self.close()
        else:
            self.version = max(common)
            self.reader.versions = (self.version,)
            height, tip = self.server.tip()
            self.send(frame.request_id, p.Welcome(
                self.version, chain_id, height, tip, self.settings.frame_bytes_max,
                self.settings.inflight_per_connection_max, limits.request_records_max))

    # -- frames out --

    def send(self, request_id: int, message) -> None:
        if type(message) is p.Error and self.server.events is not None:
            self.server.events.error_sent(message.code)
        self.send_bytes(p.encode(message, request_id, self.version or p.HELLO_VERSION))

    def send_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.settings.write_buffer_bytes_max:
            # The client does not read its answers: drop it rather than hold them all.
            log.warning("dropping a client that left %d bytes unread",
                        self.transport.get_write_buffer_size())
            self.abort()

    def send_error(self, request_id: int, code: p.ErrorCode, message: str) -> None:
        self.send(request_id, p.Error(code, message))

    def answer(self, request_id: int, message) -> None:
        """Sends the answer to an in-flight request and lets the next frames in."""
        self.send(request_id, message)
        self.finish(request_id)

    def finish(self, request_id: int) -> None:
        self.inflight.discard(request_id)
        self.release()

    def may_read(self) -> bool:
        """Frames are taken while this connection has room in flight and the commit queue is
        not high: past either, TCP pushes back on the client instead of the node answering
        ``overloaded`` and the client retrying."""
        return len(self.inflight) < self.settings.inflight_per_connection_max \
            and not self.server.queue_high

    def release(self) -> None:
        """Takes frames again if reading was paused and nothing holds it back any more."""
        if self.paused and not self.closed and self.may_read():
            self.paused = False
            self.transport.resume_reading()
            self.process()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.closing_since_s = time.monotonic()
            self.transport.close()  # sends what is buffered, then closes

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def check_deadlines(self, now_s: float) -> None:
        """Closes the connection if a frame, the hello or the silence took too long."""
        s = self.settings
        if self.closing_since_s is not None:
            if now_s - self.closing_since_s > s.frame_timeout_s:
                self.transport.abort()  # the client does not read what close() must flush
            return
        if self.partial_since_s is not None and now_s - self.partial_since_s > s.frame_timeout_s:
            reason = "a frame took longer than frame_timeout_s to arrive"
        elif not self.version and now_s - self.opened_s > s.handshake_timeout_s:
            reason = "no hello within handshake_timeout_s"
        elif not self.inflight and not self.subscriptions \
                and now_s - self.last_frame_s > s.idle_timeout_s:
            reason = "idle for longer than idle_timeout_s"
        else:
            return
        log.info("closing a connection: %s", reason)
        self.send_error(0, p.ErrorCode.timeout, reason)
        self.close()


# --- request handlers: (connection, request id, message) -----------------------------------------

_NO_BATCHES = np.zeros(0, dtype=BATCH_DTYPE)


def _call_payloads(block) -> tuple | None:
    """The payloads of a block's call records in record order, or None when it holds none."""
    calls = np.flatnonzero(block.records["kind"] == Kind.call)
    if not len(calls):
        return None
    found = block_payloads(block)
    return tuple(found.get(int(position), b"") for position in calls)


def _relay_payloads(group: list[_Submission]) -> tuple | None:
    """What a relay of the group carries of its calls: None when no submission brought
    payloads (a relay), else each call's payload in record order (b"" for a call that came
    without one: refused at the block as it would be here)."""
    found = _group_payloads(group)
    return None if not found else tuple(b"" if item is None else item for item in found)


def _group_payloads(group: list[_Submission]) -> list:
    """The payload of each call record of a group, in record order: None for a call that came
    without one (a plain submit), which the ledger refuses as payload_missing. Empty when no
    submission of the group carried payloads: the ledger then refuses every call."""
    if not any(submission.payloads for submission in group):
        return []
    found: list = []
    for submission in group:
        if submission.payloads is not None:
            found.extend(submission.payloads)
        else:
            found.extend([None] * call_count(submission.records))
    return found


def _on_submit(conn: _Connection, request_id: int, message: p.Submit) -> None:
    conn.server.enqueue(conn, request_id, message.record, message.signature, _NO_BATCHES, 1)


def _on_submit_batch(conn: _Connection, request_id: int, message: p.SubmitBatch) -> None:
    conn.server.enqueue(conn, request_id, message.records, message.signatures,
                        message.batch_entries(), message.record_count)


def _on_submit_calls(conn: _Connection, request_id: int, message: p.SubmitCalls) -> None:
    conn.server.enqueue(conn, request_id, message.records, message.signatures, _NO_BATCHES,
                        message.record_count, payloads=message.payloads)


def _on_ping(conn: _Connection, request_id: int, message: p.Ping) -> None:
    conn.send(request_id, p.Pong())


def _query(read: Callable, convert: Callable):
    """A handler that runs ``read(server, message)`` in a reader thread, then answers with
    ``convert(server, value, message)`` (None: not found)."""
    def handle(conn: _Connection, request_id: int, message) -> None:
        conn.inflight.add(request_id)
        conn.server.spawn(conn.server.serve_query(conn, request_id, message, read, convert))
    return handle


def _account(server, info, m) -> p.Account | None:
    if info is None:
        return None
    return p.Account(info.account, bytes(info.owner_key), info.balance, info.sequence,
                     p.ACCOUNT_ISSUER if info.issuer else 0, info.held, info.height)


def _transaction(server, info, m) -> p.Transaction | p.Error | None:
    if info is None:
        dropped = server.reorg_dropped.get(bytes(m.txid))
        if dropped is not None:
            height, code = dropped
            return p.Error(p.ErrorCode.reorged_out, (
                f"the transaction was in block {height} of a branch a reorg took off, and was "
                f"not included again: {Result(code).name}"))
        return None
    return p.Transaction(bytes(info.record), int(info.code), info.height, info.position,
                         bytes(info.block_hash), tuple(bytes(h) for h in info.proof))


def _history(server, entries, m) -> p.History:
    return p.History(tuple(p.HistoryEntry(bytes(e.record), int(e.code), e.height, e.position,
                                          bytes(e.block_hash)) for e in entries))


def _read_block(server, m: p.QueryBlock):
    return server.ledger.block(m.height if m.block_hash is None else m.block_hash)


def _network(server, found, m) -> p.Network | p.Error:
    if found is None:
        return p.Error(p.ErrorCode.not_found, "this node serves its chain alone: it has no "
                                              "peers (start it with --peer or --mine)")
    return p.Network(found["mines"], found["peers"], found["height"],
                     found["best_header_height"], found["work"], found["reorgs"],
                     found["reorg_depth_last"], found["reorg_depth_max"],
                     found["side_blocks"], found["mempool_records"], found["mempool_bytes"],
                     found["bans"])


def _status(server, tip, m) -> p.Status:
    height, tip_hash = tip
    damage = server.ledger.damage
    return p.Status(server.chain_id, max(limits.protocol_versions), height, tip_hash,
                    len(server.connections), server.queued_records, server.groups_committed,
                    server.records_committed, None if damage is None else damage.height)


def _on_subscribe(conn: _Connection, request_id: int, message: p.Subscribe) -> None:
    if len(conn.subscriptions) >= conn.settings.subscriptions_per_connection_max:
        conn.send_error(request_id, p.ErrorCode.too_many_subscriptions,
                        f"at most {conn.settings.subscriptions_per_connection_max} "
                        "subscriptions per connection")
        return
    task = conn.server.spawn(conn.server.serve_subscription(conn, request_id, message))
    conn.subscriptions[request_id] = task


def _on_unsubscribe(conn: _Connection, request_id: int, message: p.Unsubscribe) -> None:
    task = conn.subscriptions.pop(request_id, None)
    if task is None:
        conn.send_error(request_id, p.ErrorCode.not_found, "no such subscription")
        return
    task.cancel()
    conn.send(request_id, p.SubscriptionEnd())


_HANDLERS: dict[type, Callable] = {
    p.Submit: _on_submit,
    p.SubmitBatch: _on_submit_batch,
    p.SubmitCalls: _on_submit_calls,
    p.Ping: _on_ping,
    p.QueryBalance: _query(lambda server, m: server.ledger.balance(m.account),
                           lambda server, value, m: p.Balance(m.account, int(value))),
    p.QueryAccount: _query(lambda server, m: server.ledger.account(m.account), _account),
    p.QueryTransaction: _query(lambda server, m: server.ledger.transaction(m.txid),
                               _transaction),
    p.QueryBlock: _query(_read_block,
                         lambda server, data, m: None if data is None else p.Block(data)),
    p.QueryHistory: _query(
        lambda server, m: server.ledger.history(m.account, limit=m.limit, before=m.before),
        _history),
    p.QueryStatus: _query(lambda server, m: server.tip(), _status),
    p.QueryNetwork: _query(lambda server, m: server.network_status(), _network),
    p.Subscribe: _on_subscribe,
    p.Unsubscribe: _on_unsubscribe,
}


def _accounts(server, owned, m: p.QueryAccounts) -> p.Accounts:
    above = [account for account in owned if account > m.after_account]
    return p.Accounts(tuple(above[:limits.accounts_per_answer_max]))


_HOLD_STATUS = {name: number for number, name in p.HOLD_STATUS_NAMES.items()}


def _wire_hold(hold: dict) -> p.Hold:
    return p.Hold(hold["payer"], hold["sequence"], hold["payee"], hold["authority"],
                  hold["amount"], hold["expiry_s"], bytes(hold["hashlock"]),
                  _HOLD_STATUS[hold["status"]])


def _read_holds(server, m: p.QueryHolds) -> tuple[int, list[dict]]:
    ledger = server.ledger
    ledger.account(m.account)  # NotFoundError (not_found) for an unknown account
    return ledger.held(m.account), ledger.holds(m.account)


def _holds(server, found: tuple[int, list[dict]], m: p.QueryHolds) -> p.Holds:
    held, holds = found
    open_holds = [hold for hold in holds if hold["status"] == "open"]
    return p.Holds(held, len(open_holds), tuple(
        _wire_hold(hold) for hold in open_holds[:limits.holds_per_answer_max]))


def _policy(server, policy: dict | None, m: p.QueryPolicy) -> p.Policy | None:
    if policy is None:
        return None
    return p.Policy(m.account, m.slot, policy["key"], policy["amount_max"],
                    policy["allowance"], policy["allowance_left"], policy["expiry_s"],
                    tuple(policy["recipients"]))


def _on_submit_entries(conn: _Connection, request_id: int, message: p.SubmitEntries) -> None:
    validator = conn.server.validator
    if validator is None or validator.key is None:
        conn.send_error(request_id, p.ErrorCode.unknown_type,
                        "only a validator of a consortium chain takes validator updates: "
                        "send them to a node started with --validator-key")
        return
    validator.submit_entries(conn, request_id, message.data)


def _on_query_validators(conn: _Connection, request_id: int, message) -> None:
    chain = conn.server.chain
    if not conn.server.consortium:
        conn.send_error(request_id, p.ErrorCode.not_found,
                        "this chain has no validators: it is a proof-of-work chain")
        return
    height = chain.tip[0] + 1
    conn.answer(request_id, p.Validators(height, chain.validators_at(height).encode()))


_HANDLERS.update({
    p.SubmitEntries: _on_submit_entries,
    p.QueryValidators: _on_query_validators,
    p.QueryAccounts: _query(lambda server, m: server.ledger.accounts_of(m.owner_key),
                            _accounts),
    p.QueryHolds: _query(_read_holds, _holds),
    p.QueryHold: _query(lambda server, m: server.ledger.hold(m.payer, m.sequence),
                        lambda server, hold, m: None if hold is None else _wire_hold(hold)),
    p.QueryPolicy: _query(lambda server, m: server.ledger.policy(m.account, m.slot), _policy),
})


# --- contracts and light clients: what a connection node reads ---------------------------------

def _read_headers(server, m: p.QueryHeaders) -> bytes:
    ledger = server.ledger
    return ledger.headers(m.from_height, min(ledger.height, m.from_height + m.max_count))


def _contract_query(read: Callable, convert: Callable):
    """A query of the chain's contracts: answered unknown_type by a node whose chain runs
    none (its config names no contracts), else as _query answers."""
    query = _query(read, convert)

    def handle(conn: _Connection, request_id: int, message) -> None:
        if conn.server.contracts is None:
            conn.send_error(request_id, p.ErrorCode.unknown_type,
                            "this node's chain runs no contracts: ask a node of a chain "
                            "whose config names them, started with --contract")
            return
        query(conn, request_id, message)
    return handle


def _call_result(server, result, m: p.QueryCallResult) -> p.CallResult | None:
    if result is None:
        return None
    events = encoding.encode([[event.name, event.fields] for event in result.events])
    return p.CallResult(int(result.code), result.refuse_code, result.steps, result.value,
                        events, result.detail)


_HANDLERS.update({
    p.QueryHeaders: _query(_read_headers, lambda server, data, m: p.Headers(data)),
    # The newest state: while a block is being made, with that block's writes so far.
    p.QueryContractState: _contract_query(
        lambda server, m: server.contracts.state.get(m.key),
        lambda server, value, m: None if value is None else p.ContractState(value)),
    # Results are kept for the newest calls only (contracts.limits.call_results_kept), in
    # memory: a restarted node knows a call's code from its block, not this.
    p.QueryCallResult: _contract_query(lambda server, m: server.contracts.results.get(m.txid),
                                       _call_result),
})


class _LocalCaller:
    """Stands in for a connection when code in this process submits (the REST API): the
    writer answers it like any connection, and each answer completes a future."""

    closed = False

    def __init__(self) -> None:
        self.inflight: set[int] = set()
        self.waiting: dict[int, asyncio.Future] = {}
        self.next_id = 0

    def answer(self, request_id: int, message) -> None:
        self.inflight.discard(request_id)
        future = self.waiting.pop(request_id, None)
        if future is not None and not future.done():  # done: the caller gave up waiting
            future.set_result(message)

    def send_error(self, request_id: int, code: p.ErrorCode, message: str) -> None:
        self.answer(request_id, p.Error(code, message))


class NodeServer:
    """Serves one ledger over TCP. ``await start()``, then ``await stop()`` (or run_node)."""

    def __init__(self, ledger, host: str = "127.0.0.1", port: int = 0,
                 settings: NodeSettings | None = None, *, close_ledger: bool = True,
                 events: NodeEvents | None = None, chain=None, peers=None,
                 seal=None, validator_key=None, byzantine: str | None = None,
                 contracts=None) -> None:
        """``chain`` (a tsunagi.consensus.Chain over ``ledger``) and ``peers`` (PeerSettings)
        make the node one of a network: it takes peers on its port and dials ``peers.peers``;
        with ``peers.mines`` its blocks go through the chain (``seal`` seals them), else the
        records submitted to it are relayed to its peers and answered once a block holds
        them. On a consortium chain (``chain`` a ConsortiumChain) ``validator_key`` makes
        the node a validator (tsunagi.node.validator): its queue goes into the blocks it
        proposes and clients are answered when a block is final; without a key it follows
        and relays. ``byzantine`` is the validator's test mode (Validator's docstring).
        ``contracts`` (the ledger's tsunagi.contracts.ChainContracts) answers queries of
        contract state and call results."""
        self.ledger = ledger
        self.contracts = contracts
        self.chain = chain
        self.validator_key = validator_key
        self.byzantine = byzantine
        self.validator = None
        self.peer_settings = peers
        self.seal = seal
        self.network = None
        # Relayed submissions waiting for a block: txid -> (submission, index in it).
        self._awaiting: dict[bytes, tuple] = {}
        self.relay_dropped = 0
        # Records a reorg took off that did not go into a block again: txid -> (height of the
        # block they were in, the code they got when tried again). Bounded, oldest out.
        self.reorg_dropped: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        self._relays: list[tuple] = []  # relayed groups still waiting for their block
        self._reorged: list[tuple] = []  # blocks a reorg took off, to relay once it is done
        # Relayed submissions whose records are all in connected blocks, answered once the
        # blocks are durable here (the chain's "durable" event).
        self._answer_when_durable: list[_Submission] = []
        self.events = events
        self._local = _LocalCaller()
        self.host, self.port = host, port
        self.settings = settings or NodeSettings()
        self.close_ledger = close_ledger
        self.chain_id = ledger.config.chain_id
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.queued_records = 0
        self._held: deque[_Connection] = deque()  # paused while the queue was high, in order
        self.groups_committed = 0
        self.records_committed = 0
        self._queue: deque[_Submission] = deque()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None

    # -- life cycle --

    async def start(self) -> None:
        """Binds the port (``self.port`` is the bound one afterwards) and starts serving."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._queue_signal = asyncio.Event()
        self._group_full = asyncio.Event()
        self._new_block = asyncio.Event()
        self._stopped = asyncio.Event()
        # One writer thread begins groups in order; one more waits for their fsyncs.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tsunagi-commit")
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="tsunagi-sync")
        self._in_flight = asyncio.Semaphore(self.settings.groups_in_flight)
        self._finishing: set[asyncio.Task] = set()
        self._readers = ThreadPoolExecutor(self.settings.reader_threads,
                                           thread_name_prefix="tsunagi-read")
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]
        self._writer_task = loop.create_task(self._write_loop())
        self._watchdog_task = loop.create_task(self._watchdog())
        if self.chain is not None:
            from tsunagi.node.peers import PeerNetwork, PeerSettings

            self.peer_settings = self.peer_settings or PeerSettings(mines=True)
            self.network = PeerNetwork(self.chain, self.peer_settings, listen_port=self.port,
                                       submit=self._relayed, on_peer=self.relay_again)
            self.chain.add_listener(self._on_chain_event)
            await self.network.start()
            if self.consortium:
                from tsunagi.node.validator import Validator

                self.validator = Validator(
                    self, self.chain, self.validator_key,
                    wal_directory=self.ledger.directory / "consensus",
                    byzantine=self.byzantine)
                await self.validator.start(self.network)
        scrub = (self.settings.scrub_rate_bytes_s, self.settings.scrub_interval_s,
                 self.settings.scrub_cpu_share)
        if all(scrub):
            self.ledger.start_scrub(*scrub)
        log.info("node serving chain %d on %s:%d", self.chain_id, self.host, self.port)

    async def serve_forever(self) -> None:
        """Starts if needed and returns once stop() has finished."""
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stops accepting, finishes the group being committed, answers, closes the ledger.

        Submissions still queued behind that group are answered ``shutting_down``: the client
        retries them elsewhere or later, and idempotency makes that safe.
        """
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        self._server.close()
        if self.validator is not None:
            await self.validator.stop()
        if self.network is not None:
            await self.network.stop()
        self._queue_signal.set()
        self._group_full.set()
        await self._writer_task
        await asyncio.gather(*self._finishing, return_exceptions=True)
        self._watchdog_task.cancel()
        for conn in list(self.connections):
            for request_id in list(conn.subscriptions):
                conn.send_error(request_id, p.ErrorCode.shutting_down, "the node is stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown_threads)
        self._stopped.set()
        log.info("node stopped after %d groups, %d records", self.groups_committed,
                 self.records_committed)

    def _shutdown_threads(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._syncer.shutdown(wait=True)
        if self.close_ledger:
            self.ledger.close()

    def spawn(self, coroutine) -> asyncio.Task:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watchdog(self) -> None:
        s = self.settings
        tick_s = min(max(min(s.frame_timeout_s, s.handshake_timeout_s, s.idle_timeout_s) / 4,
                         0.01), 1.0)
        while True:
            await asyncio.sleep(tick_s)
            now_s = time.monotonic()
            for conn in list(self.connections):
                conn.check_deadlines(now_s)
            if self._awaiting:
                self._expire_awaiting(now_s)

    def block_signal(self) -> asyncio.Event:
        """An event set when this server next commits a block. Take it before reading the
        ledger's height, then wait on it: a block committed in between still sets it."""
        return self._new_block

    def tip(self) -> tuple[int, bytes]:
        """(height of the newest block, its hash); the ledger's height counts blocks."""
        height, tip_hash = self.ledger.tip
        return height - 1, bytes(tip_hash)

    # -- queries and subscriptions --

    async def serve_query(self, conn: _Connection, request_id: int, message, read: Callable,
                          convert: Callable) -> None:
        try:
            value = await self._loop.run_in_executor(self._readers, read, self, message)
            answer = convert(self, value, message)
        except CorruptLogError as exc:  # reported by the ledger (log, status, metrics) already
            answer = p.Error(p.ErrorCode.damaged, str(exc))
        except (LookupError, EncodingError, ValueError) as exc:
            answer = p.Error(p.ErrorCode.not_found, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a query must never take the node down
            log.exception("query %s failed", type(message).__name__)
            answer = p.Error(p.ErrorCode.internal, f"{type(exc).__name__}: {exc}")
        if answer is None:
            answer = p.Error(p.ErrorCode.not_found, f"{type(message).__name__}: not found")
        conn.answer(request_id, answer)

    async def serve_subscription(self, conn: _Connection, request_id: int,
                                 message: p.Subscribe) -> None:
        try:
            height, _ = await self._loop.run_in_executor(self._readers, self.tip)
            conn.send(request_id, p.Subscribed(height))
            next_height = message.from_height
            while not conn.closed:
                new_block = self._new_block
                while next_height < self.ledger.height and not conn.closed:
                    data = await self._loop.run_in_executor(
                        self._readers, self.ledger.block, next_height)
                    if data is None:
                        break
                    conn.send(request_id, _notice(next_height, data, message.with_blocks))
                    next_height += 1
                    if not conn.drained.is_set():
                        await conn.drained.wait()  # pace a catch-up to what the client reads
                # Blocks appended by anything but this server are seen within a second.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(new_block.wait(), 1.0)
        except Exception as exc:
            log.exception("subscription failed")
            conn.send_error(request_id, p.ErrorCode.internal, f"subscription ended: {exc}")
        finally:
            if conn.subscriptions.get(request_id) is asyncio.current_task():
                del conn.subscriptions[request_id]

    # -- group commit --

    async def submit(self, records, signatures=b"", batches: np.ndarray = _NO_BATCHES,
                     payloads: tuple[bytes, ...] | None = None):
        """Commits records from this process through the same queue and writer as the wire's.

        The buffers must have passed ``protocol.check_submit_batch``; ``payloads`` are the
        call records' payloads in record order (as submit_calls carries them). Returns the
        SubmitAnswer, or the protocol Error (overloaded, shutting_down, internal) a wire
        client would get.
        """
        local = self._local
        local.next_id += 1
        future = self._loop.create_future()
        local.waiting[local.next_id] = future
        self.enqueue(local, local.next_id, memoryview(records), memoryview(signatures),
                     batches, len(records) // RECORD_BYTES, payloads=payloads)
        return await future

    def enqueue(self, conn: _Connection, request_id: int, records, signatures,
                batches: np.ndarray, count: int, payloads: tuple | None = None) -> None:
        """Queues a submission for the writer, or answers why not at once."""
        if self.stopping:
            conn.send_error(request_id, p.ErrorCode.shutting_down, "the node is stopping")
            return
        damage = self.ledger.damage
        if damage is not None:
            conn.send_error(request_id, p.ErrorCode.damaged,
                            damage.advice(self.ledger.directory))
            return
        if self.queued_records + count > self.settings.queue_records_max:
            conn.send_error(request_id, p.ErrorCode.overloaded,
                            f"{self.queued_records} records are waiting; retry after a pause")
            return
        self._queue_up(conn, request_id, records, signatures, batches, count,
                       payloads=payloads)

    def _queue_up(self, conn, request_id: int, records, signatures, batches: np.ndarray,
                  count: int, front: bool = False, payloads: tuple | None = None) -> None:
        """Puts a submission in the writer's queue (at its back, or its front) and wakes the
        writer."""
        open_ended = bool(records[len(records) - RECORD_BYTES + 1] & Flags.linked)
        conn.inflight.add(request_id)
        submission = _Submission(conn, request_id, records, signatures, batches, count,
                                 open_ended, time.monotonic(), payloads=payloads)
        if front:
            self._queue.appendleft(submission)
        else:
            self._queue.append(submission)
        if self.validator is not None:
            self.validator.queued(submission)
            if not isinstance(conn, _RelayCaller):
                # A consortium's mempool: every validator queues every client's records,
                # and whichever proposes next takes them (tsunagi.node.validator); calls
                # travel with their payloads.
                self.network.relay_records(records, signatures, batches.tobytes(), again=True,
                                           payloads=payloads)
        self.queued_records += count
        self._queue_signal.set()
        if self.queued_records >= self.settings.group_records_max:
            self._group_full.set()

    # What a consortium validator (node/validator.py) needs of the queue's submissions.
    @staticmethod
    def group_batches(group: list[_Submission]) -> np.ndarray:
        return _batch_table(group)

    @staticmethod
    def group_payloads(group: list[_Submission]) -> list:
        return _group_payloads(group)

    @staticmethod
    def relayed(connection) -> bool:
        """Whether a submission came from a peer's relay (its client is another node's)."""
        return isinstance(connection, _RelayCaller)

    @staticmethod
    def internal_submission(caller, records, signatures, count: int, arrived_s: float):
        """A submission of this node's own making (records a final block left out)."""
        return _Submission(caller, caller.next(), records, signatures, _NO_BATCHES, count,
                           False, arrived_s)

    @property
    def consortium(self) -> bool:
        return self.chain is not None and self.ledger.config.is_consortium

    async def _write_loop(self) -> None:
        """The single writer: one group at a time, each one ledger call and one fsync. A
        validator's queue is drained by the blocks it proposes instead."""
        if self.consortium and self.validator_key is not None:
            await self._stopped_signal()
            self._reject_queued()
            return
        while True:
            if not self._queue:
                if self.stopping:
                    return
                self._queue_signal.clear()
                await self._queue_signal.wait()
                continue
            if not self.stopping:
                await self._wait_for_group()
            group = self._take_group()
            try:
                await self._commit(group)
            except Exception as exc:  # a bug here must not leave the writer dead
                self._refuse(group, exc)
            if self.stopping:
                self._reject_queued()
                return

    async def _wait_for_group(self) -> None:
        """Waits until the group is full or group_wait_ms after its first submission."""
        wait_s = self.settings.group_wait_ms / 1000
        delay_s = self._queue[0].arrived_s + wait_s - time.monotonic()
        if self.queued_records < self.settings.group_records_max and delay_s > 0:
            self._group_full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._group_full.wait(), delay_s)

    @property
    def queue_high(self) -> bool:
        """Half the queue limit: connections stop taking frames until the writer drains it,
        which leaves the other half for frames already cut when the mark was crossed."""
        return self.queued_records >= max(1, self.settings.queue_records_max // 2)

    def hold(self, conn: _Connection) -> None:
        if conn not in self._held:
            self._held.append(conn)

    def _release_held(self) -> None:
        # First held, first released; each takes frames until the queue is high again, and
        # then holds itself once more at the back.
        for _ in range(len(self._held)):
            if self.queue_high:
                return
            self._held.popleft().release()

    def _take_group(self, limit: int | None = None) -> list[_Submission]:
        """Submissions from the front of the queue, up to ``limit`` records (the group
        limit by default) but at least one."""
        group, records = [], 0
        limit = limit or self.settings.group_records_max
        while self._queue and (not group or records + self._queue[0].count <= limit):
            submission = self._queue.popleft()
            group.append(submission)
            records += submission.count
            if submission.open_ended:
                break  # its open linked group must meet the end of the batch, not another's
        self.queued_records -= records
        self._release_held()
        return group

    def _reject_queued(self) -> None:
        while self._queue:
            submission = self._queue.popleft()
            self.queued_records -= submission.count
            submission.connection.answer(submission.request_id, p.Error(
                p.ErrorCode.shutting_down, "the node stopped before this was committed"))

    async def _commit(self, group: list[_Submission]) -> None:
        """Begins the group's block in the writer thread; a task answers after its fsync."""
        records = _joined([s.records for s in group])
        signatures = _joined([s.signatures for s in group])
        if self.chain is not None and not self.peer_settings.mines:
            self._relay_group(group, records, signatures)
            return
        await self._in_flight.acquire()
        try:
            batches = _batch_table(group)
            started_s = time.perf_counter()
            if self.chain is None:
                begin = functools.partial(self.ledger.begin_batch,
                                          payloads=_group_payloads(group))
            else:
                begin = functools.partial(self.chain.begin_mined, seal=self.seal,
                                          payloads=_group_payloads(group))
            pending = await self._loop.run_in_executor(
                self._writer, begin, records, signatures, batches)
        except (NotAtTip, SealStopped) as exc:
            # Not applied: the group waits for the node to catch up (or for the new tip).
            self._in_flight.release()
            log.info("a group of %d records waits: %s", sum(s.count for s in group), exc)
            self._queue.extendleft(reversed(group))
            self.queued_records += sum(s.count for s in group)
            await asyncio.sleep(0.05)
            return
        except Exception as exc:
            self._in_flight.release()
            if len(group) > 1 and not isinstance(exc, OSError):
                # One submission the ledger refuses must not cost the others their answer.
                for submission in group:
                    await self._commit([submission])
                return
            self._refuse(group, exc)
            return
        task = self._loop.create_task(self._finish(group, pending, started_s))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _stopped_signal(self) -> None:
        while not self.stopping:
            self._queue_signal.clear()
            await self._queue_signal.wait()

    def _answer_final(self, group: list[_Submission], answer) -> None:
        """A validator's block holding these groups is final and durable: answer them."""
        self.groups_committed += 1
        self._answer_group(group, answer)
        if self.events is not None:
            self.events.group_committed([s.count for s in group], [s.arrived_s for s in group],
                                        answer.codes, answer.height is not None, 0.0,
                                        answer.sync_s)

    def _requeue(self, group: list[_Submission]) -> None:
        """Groups of a block that was not decided go back to the front, in order."""
        self._queue.extendleft(reversed(group))
        self.queued_records += sum(s.count for s in group)
        self._queue_signal.set()

    def _refuse(self, group: list[_Submission], exc: Exception) -> None:
        damaged = isinstance(exc, CorruptLogError)  # the ledger logged it once, in full
        log.error("the ledger failed a group of %d records: %s: %s",
                  sum(s.count for s in group), type(exc).__name__, exc,
                  exc_info=None if damaged else exc)
        code = p.ErrorCode.damaged if isinstance(exc, CorruptLogError) \
            else p.ErrorCode.malformed if isinstance(exc, EncodingError) else p.ErrorCode.internal
        for submission in group:
            if submission.request_id in submission.connection.inflight:
                submission.connection.answer(submission.request_id,
                                             p.Error(code, f"{type(exc).__name__}: {exc}"))

    async def _finish(self, group: list[_Submission], pending, started_s: float) -> None:
        """Answers a begun group once its block is durable (or with the error that stopped it)."""
        try:
            answer = await self._loop.run_in_executor(self._syncer, pending.wait)
        except Exception as exc:
            self._refuse(group, exc)
            return
        finally:
            self._in_flight.release()
        ledger_s = time.perf_counter() - started_s
        self.groups_committed += 1
        self._answer_group(group, answer)
        if self.events is not None:
            self.events.group_committed([s.count for s in group], [s.arrived_s for s in group],
                                        answer.codes, answer.height is not None, ledger_s,
                                        answer.sync_s)
        if answer.height is not None:
            self._new_block.set()
            self._new_block = asyncio.Event()

    def _answer_group(self, group: list[_Submission], answer) -> None:
        """Answers each submission with its own slice of the group's codes."""
        codes = np.asarray(answer.codes, dtype=np.uint8)
        stored = _STORED[codes]
        if answer.height is not None:
            self.records_committed += int(np.count_nonzero(stored))
        ends = np.cumsum([s.count for s in group])
        original_at = _bucket(ends, sorted(answer.originals.items()))
        opened = np.asarray(answer.opened, dtype=np.uint64)
        opened_index = np.flatnonzero(opened)
        opened_at = _bucket(ends, zip(opened_index.tolist(), opened[opened_index].tolist()))
        start = 0
        for number, submission in enumerate(group):
            end = start + submission.count
            if stored[start:end].any():
                height, block_hash = answer.height, bytes(answer.block_hash)
            else:
                height, block_hash = None, None
            submission.connection.answer(submission.request_id, p.SubmitAnswer(
                height, block_hash, codes[start:end].tobytes(),
                tuple((i - start, int(c)) for i, c in original_at.get(number, ())),
                tuple((i - start, int(a)) for i, a in opened_at.get(number, ()))))
            start = end


    # -- a node of a network --

    def network_status(self) -> dict | None:
        """Peers, best tip and work, reorgs and the records waiting for a block (the
        mempool: a miner's queue, or what a node that does not mine relayed and waits for);
        None for a node of its own (no chain layer)."""
        if self.chain is None:
            return None
        chain = self.chain.status()
        network = self.network.status() if self.network is not None else {}
        waiting = [s for relay in self._relays for s in relay[0]
                   if s.request_id in s.connection.inflight]
        mempool_records = self.queued_records + sum(s.count for s in waiting)
        mempool_bytes = sum(len(s.records) + len(s.signatures) for s in self._queue) \
            + sum(len(s.records) + len(s.signatures) for s in waiting)
        consensus = {"validator": self.validator.status()} if self.validator else {}
        return {**chain, **network, "mines": bool(self.peer_settings.mines),
                "mempool_records": mempool_records, "mempool_bytes": mempool_bytes,
                "relay_dropped": self.relay_dropped, **consensus}

    async def _relayed(self, records, signatures, batches, source,
                       payloads: tuple | None = None) -> None:
        """Records a peer relayed (calls with their ``payloads``): a miner queues them for
        its next block (dropped when the queue is full: relay is best effort, the client's
        own node retries); a node that does not mine passes them on."""
        if not self.peer_settings.mines:  # the peer manager saw them first: pass them on
            self.network.relay_records(records, signatures, batches, source, again=True,
                                       payloads=payloads)
            return
        self._relayed_now(records, signatures, batches, payloads=payloads)

    def _relayed_now(self, records, signatures, batches,
                     reorged_from: int | None = None, payloads: tuple | None = None) -> None:
        count = len(records) // RECORD_BYTES
        if self.stopping or self.queued_records + count > self.settings.queue_records_max:
            self.relay_dropped += count
            return
        table = np.frombuffer(bytes(batches), dtype=BATCH_DTYPE).copy() if len(batches) \
            else _NO_BATCHES
        caller = _RelayCaller(self, reorged_from, records)
        # A reorg gives blocks back newest first: each goes in front of the last, so the
        # oldest block's records (an account's lower sequences) are tried first.
        self._queue_up(caller, caller.next(), memoryview(bytes(records)),
                       memoryview(bytes(signatures)), table, count,
                       front=reorged_from is not None, payloads=payloads)

    def _relay_group(self, group: list[_Submission], records, signatures) -> None:
        """A node that does not mine: the group goes to the peers, and each submission is
        answered once connected blocks hold all of its records."""
        txids = hashing.sha256d_records(records, RECORD_BYTES)
        start = 0
        for submission in group:
            submission.codes = np.zeros(submission.count, dtype=np.uint8)
            submission.left = submission.count
            submission.height = None
            submission.block_hash = None
            for index in range(submission.count):
                self._awaiting[txids[start + index].tobytes()] = (submission, index)
            start += submission.count
        batches = _batch_table(group).tobytes()
        payloads = _relay_payloads(group)
        self._relays.append((group, bytes(records), bytes(signatures), batches, payloads))
        self.network.relay_records(records, signatures, batches, payloads=payloads)

    def relay_again(self) -> None:
        """Relays once more what is still waiting for a block (a peer connected, or time
        passed: a relay sent while no miner was connected reached nobody)."""
        self._relays = [relay for relay in self._relays
                        if any(s.request_id in s.connection.inflight for s in relay[0])]
        for _, records, signatures, batches, payloads in self._relays:
            self.network.relay_records(records, signatures, batches, again=True,
                                       payloads=payloads)

    def _on_chain_event(self, event) -> None:
        """On the chain thread: blocks connected answer relayed submissions; blocks a reorg
        took off give their records back to the queue (a miner) or to the peers."""
        if self.stopping:
            return
        self._loop.call_soon_threadsafe(self._chain_event, event)

    def _chain_event(self, event) -> None:
        if event.kind == "durable":
            # Subscriptions send durable blocks only: the connects before woke them too soon.
            self._new_block.set()
            self._new_block = asyncio.Event()
            if self._answer_when_durable:
                self._answer_durable(event.height)
            return
        block = decode_block(event.block)
        if event.kind == "connect":
            self._relay_reorged()
            self._new_block.set()
            self._new_block = asyncio.Event()
            if self._awaiting:
                self._resolve_awaiting(event.height, block)
            return
        if not len(block.records):
            return
        records = block.records.tobytes()
        payloads = _call_payloads(block)  # the calls go back with their payloads
        if self.peer_settings.mines:
            # Queued at once, in the order the events come (a task could run out of order).
            self._relayed_now(records, block.signatures.tobytes(), block.batch_array.tobytes(),
                              reorged_from=event.height, payloads=payloads)
        else:
            self._reorged.append((records, block.signatures.tobytes(),
                                  block.batch_array.tobytes(), payloads))

    def _relay_reorged(self) -> None:
        """Blocks a reorg took off (given newest first) go to the peers oldest first, so a
        miner meets an account's lower sequences first."""
        while self._reorged:  # relayed before, when they were new: again now
            records, signatures, batches, payloads = self._reorged.pop()
            if payloads is not None and len(batches):
                # A relay_calls carries no batches: the block's calls go without payloads
                # (payload_missing at the next block) rather than its batches without them.
                payloads = None
            self.network.relay_records(records, signatures, batches, again=True,
                                       payloads=payloads)

    def _resolve_awaiting(self, height: int, block) -> None:
        block_hash = block.hash
        for position, txid in enumerate(block.txids()):
            found = self._awaiting.pop(txid.tobytes(), None)
            if found is None:
                continue
            submission, index = found
            submission.codes[index] = block.codes[position]
            submission.height, submission.block_hash = height, block_hash
            submission.left -= 1
            if submission.left == 0:
                self._answer_when_durable.append(submission)

    def _answer_durable(self, height: int) -> None:
        """Relayed submissions whose blocks are now on this node's disk are answered."""
        waiting = []
        for submission in self._answer_when_durable:
            if submission.height > height:
                waiting.append(submission)
            elif submission.request_id in submission.connection.inflight:
                submission.connection.answer(submission.request_id, p.SubmitAnswer(
                    submission.height, submission.block_hash, submission.codes.tobytes()))
        self._answer_when_durable = waiting

    def _expire_awaiting(self, now_s: float) -> None:
        timeout_s = limits.relay_confirm_timeout_s
        late = {id(s): s for s, _ in self._awaiting.values() if now_s - s.arrived_s > timeout_s}
        if not late:
            return
        self._awaiting = {txid: (s, i) for txid, (s, i) in self._awaiting.items()
                          if id(s) not in late}
        for submission in late.values():
            if submission.request_id in submission.connection.inflight:
                submission.connection.answer(submission.request_id, p.Error(
                    p.ErrorCode.timeout, f"no block of the best chain held these records "
                    f"within {timeout_s:.0f} s; query their txids later: they may still be "
                    "included"))


class _RelayCaller(_LocalCaller):
    """The connection of records a peer relayed, or a reorg gave back: nobody waits for their
    answers; those of a reorg that are not stored again are remembered with their code."""

    def __init__(self, server: NodeServer, reorged_from: int | None, records) -> None:
        super().__init__()
        self.server, self.reorged_from, self.records = server, reorged_from, records

    def next(self) -> int:
        self.next_id += 1
        return self.next_id

    def answer(self, request_id: int, message) -> None:
        self.inflight.discard(request_id)
        if self.reorged_from is None or not isinstance(message, p.SubmitAnswer):
            return
        codes = message.codes_array()
        # already_committed: the same record is in the new chain too; not dropped.
        unstored = np.flatnonzero(~_STORED[codes] & (codes != Result.already_committed))
        if not unstored.size:
            return
        txids = hashing.sha256d_records(self.records, RECORD_BYTES)
        dropped = self.server.reorg_dropped
        for index in unstored:
            dropped[txids[index].tobytes()] = (self.reorged_from, int(codes[index]))
        while len(dropped) > limits.reorg_dropped_max:
            dropped.popitem(last=False)

    def send_error(self, request_id: int, code: p.ErrorCode, message: str) -> None:
        self.inflight.discard(request_id)


def _joined(parts: list) -> memoryview | bytes:
    """The parts back to back. One part is passed as it is; many are copied into a numpy
    buffer, which gets huge pages (b"".join of 33 MB took ~20 ms here, mostly page faults)."""
    if len(parts) == 1:
        return parts[0]
    return memoryview(np.concatenate([np.frombuffer(part, np.uint8) for part in parts]))


def _bucket(ends: np.ndarray, pairs) -> dict[int, list[tuple[int, int]]]:
    """Groups (record index, value) pairs by the submission that holds the record."""
    buckets: dict[int, list[tuple[int, int]]] = {}
    for index, value in pairs:
        buckets.setdefault(int(np.searchsorted(ends, index, side="right")), []).append(
            (int(index), value))
    return buckets


def _batch_table(group: list[_Submission]) -> np.ndarray:
    """The group's batch entries in one BATCH_DTYPE array, ranges moved to group positions."""
    if not any(len(s.batches) for s in group):
        return _NO_BATCHES
    offsets = np.cumsum([0] + [s.count for s in group[:-1]], dtype=np.uint32)
    table = np.concatenate([s.batches for s in group])
    table["first"] += np.repeat(offsets, [len(s.batches) for s in group])
    return table


def _notice(height: int, block, with_blocks: bool) -> p.BlockNotice:
    view = memoryview(block)
    (record_count,) = np.frombuffer(view[COUNTS_OFFSET:COUNTS_OFFSET + 4], dtype="<u4")
    return p.BlockNotice(height, hashing.header_hash(view[:HEADER_BYTES]), int(record_count),
                         bytes(view) if with_blocks else None)


DEFAULT_PORT = 7650


def run_node(data_dir, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
             settings: NodeSettings | None = None, *,
             on_ready: Callable[[NodeServer], None] | None = None) -> None:
    """Opens the ledger in ``data_dir`` and serves it until SIGINT or SIGTERM.

    ``on_ready`` is called once the port is bound (with the server: ``server.port`` is the
    bound port when ``port`` is 0). On a signal the node stops accepting, finishes the group
    being committed, answers it, and closes the ledger before this returns.
    """
    from tsunagi.ledger import Ledger

    async def main() -> None:
        ledger = Ledger.open(data_dir)
        server = NodeServer(ledger, host, port, settings)
        await server.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
        await server.stop()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
