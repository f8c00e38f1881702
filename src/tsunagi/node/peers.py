"""Peers: nodes of one chain connect, sync headers first, download blocks in parallel, relay.

A peer connection begins with a ``peer_hello`` each way (docs/PROTOCOL.md, "Peers"): both
sides must have the same genesis block and a protocol version in common, and a hello carrying
this node's own nonce means it dialed itself. Then, per peer:

- headers first: ``get_headers`` with this node's locator; each ``headers`` answer goes to
  ``Chain.accept_headers`` (one native check of links and work per message) and, when full,
  the next request (after its last header) goes out before it is checked, so the peer reads
  and sends the next run meanwhile;
- blocks: the best header chain's missing blocks (``Chain.missing``) are asked of every peer
  with room, a few per ``get_blocks``, within a bounded window overall and per peer: a sync
  downloads from all peers at once, and a slow or silent peer holds only its share, which goes
  to the others when it times out;
- relay: every block the ledger connects is announced (its header) to every peer; a peer that
  lacks it asks for it. Signed records submitted to a node that does not mine are relayed to
  the peers, so they reach the miners.

Misbehaviour costs points (invalid headers or blocks 100, a low-work header branch or an
unrequested block 20, an unknown parent 5); at 100 the peer is disconnected and its address
refused for ``ban_s``. A frame that does not decode or is too large closes the connection and
bans too. Every peer is handled on the event loop, and every chain operation on one chain
thread, so a peer that floods or stalls costs only its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tsunagi import hashing
from tsunagi.consensus.chain import Accepted, Chain, ChainEvent, HeadersVerdict
from tsunagi.core.block import HEADER_BYTES
from tsunagi.core.records import RECORD_BYTES
from tsunagi.errors import ProtocolError
from tsunagi.node import limits
from tsunagi.node import protocol as p

__all__ = ["PeerNetwork", "PeerSettings"]

log = logging.getLogger("tsunagi.peers")

BAN_POINTS = 100


@dataclass(frozen=True)
class PeerSettings:
    """Limits of the peer manager (defaults in node/limits.py, with their reasons)."""

    peers: tuple[tuple[str, int], ...] = ()  # addresses to dial and keep dialing
    peers_max: int = limits.peers_max
    blocks_in_flight_max: int = limits.blocks_in_flight_max
    blocks_in_flight_per_peer_max: int = limits.blocks_in_flight_per_peer_max
    blocks_per_request: int = limits.blocks_per_request
    block_request_timeout_s: float = limits.block_request_timeout_s
    ban_s: float = limits.peer_ban_s
    redial_s: float = limits.peer_redial_s
    mines: bool = False


@dataclass(eq=False)
class _Link:
    """One peer connection, either direction."""

    network: PeerNetwork
    inbound: bool
    address: tuple[str, int]
    transport: asyncio.Transport | None = None
    reader: p.FrameReader = field(default_factory=lambda: p.FrameReader(
        (p.HELLO_VERSION,), limits.peer_frame_bytes_max))
    hello: p.PeerHello | None = None  # the peer's
    hello_sent: bool = False
    ready: bool = False
    closed: bool = False
    points: int = 0
    next_id: int = 0
    headers_asked: bool = False
    blocks: dict = field(default_factory=dict)  # hash -> asked at (monotonic)
    lacks: set = field(default_factory=set)  # hashes it answered not_found for
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    best_height: int = 0

    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


def _shut_after_linger(transport, loop) -> None:
    """Shuts the write side of ``transport`` once its buffer is out and closes it when the
    peer closes or after ``limits.refuse_linger_s``, whichever is first (see
    PeerNetwork._refuse)."""
    if transport is None or transport.is_closing():
        return
    if transport.can_write_eof():
        transport.write_eof()
    if loop is None:
        transport.close()
    else:
        loop.call_later(limits.refuse_linger_s, transport.close)


class _PeerProtocol(asyncio.BufferedProtocol):
    def __init__(self, link: _Link) -> None:
        self.link = link

    def connection_made(self, transport) -> None:
        self.link.transport = transport
        self.link.network._connected(self.link)

    def connection_lost(self, exc) -> None:
        self.link.network._lost(self.link)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.link.reader.receive_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        link = self.link
        link.reader.received(nbytes)
        if link.closed:  # refused and lingering: read and dropped
            link.reader.take_pending()
            return
        while not link.closed:
            try:
                frame = link.reader.next_frame()
            except ProtocolError as exc:
                link.network.punish(link, BAN_POINTS, f"a frame that cannot be cut: {exc}")
                return
            if frame is None:
                return
            link.queue.put_nowait(frame)

    def eof_received(self) -> bool:
        return False


class PeerNetwork:
    """The peer side of one node: dials its peers, takes inbound ones, keeps them in sync."""

    def __init__(self, chain: Chain, settings: PeerSettings, *, listen_port: int = 0,
                 submit=None, on_peer=None) -> None:
        self.chain = chain
        self.settings = settings
        self.listen_port = listen_port
        self.submit = submit  # async (records, signatures, batches, link) for relayed records
        self.on_peer = on_peer  # called when a peer is ready, and every few seconds
        self.nonce = random.getrandbits(63)
        self.links: set[_Link] = set()
        self.banned: dict[str, float] = {}
        self.genesis_hash = chain.headers.hash(0)
        self.stopping = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tsunagi-chain")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self._asked: OrderedDict[bytes, _Link] = OrderedDict()  # block hash -> link asked
        self._relayed: OrderedDict[bytes, None] = OrderedDict()  # see first_time
        # The newest connected blocks by hash (limits.recent_blocks_max), served from here.
        self.recent: OrderedDict[bytes, bytes] = OrderedDict()
        self.blocks_received = 0
        self.bans = 0
        # Proposals and votes of a consortium chain go to its Validator (node/validator.py).
        self.on_consensus = None
        chain.add_listener(self._on_chain_event)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for address in self.settings.peers:
            self._spawn(self._dial_forever(address))
        self._spawn(self._tick())

    async def stop(self) -> None:
        self.stopping = True
        for link in list(self.links):
            self._close(link)
            if link.transport is not None:  # a refused one may still be lingering
                link.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dial_forever(self, address: tuple[str, int]) -> None:
        """Keeps one outbound connection to ``address``, dialing again after it drops."""
        while not self.stopping:
            link = _Link(self, False, address)
            if not self._is_banned(_ban_key(*address)) and not self._linked(address) \
                    and len(self.links) < self.settings.peers_max:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._loop.create_connection(
                        lambda: _PeerProtocol(link), *address), 5.0)
                if link.task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await link.task
            await asyncio.sleep(self.settings.redial_s * (0.5 + random.random()))

    def take_inbound(self, transport, first: p.Frame, rest: bytes) -> None:
        """A connection to the node's port whose first frame is a peer_hello: from now on
        this manager reads it (its protocol changes to the peer one)."""
        peer = transport.get_extra_info("peername") or ("?", 0)
        link = _Link(self, True, (str(peer[0]), int(peer[1])))
        if not _loopback(link.address[0]) and self._is_banned(link.address[0]):
            transport.write(p.encode(p.Error(p.ErrorCode.banned, "this node refuses you for "
                                             "a while: you misbehaved"), 0, p.HELLO_VERSION))
            _shut_after_linger(transport, self._loop)
            return
        if len(self.links) >= self.settings.peers_max:
            transport.write(p.encode(p.Error(p.ErrorCode.overloaded, "no room for more peers"),
                                     0, p.HELLO_VERSION))
            _shut_after_linger(transport, self._loop)
            return
        protocol = _PeerProtocol(link)
        transport.set_protocol(protocol)
        link.transport = transport
        self._connected(link)
        link.queue.put_nowait(first)
        if rest:
            link.reader.feed(rest)
            protocol.buffer_updated(0)

    def _connected(self, link: _Link) -> None:
        self.links.add(link)
        link.task = self._spawn(self._serve(link))
        if not link.inbound:
            self._send_hello(link)

    def _lost(self, link: _Link) -> None:
        link.closed = True
        self.links.discard(link)
        for block_hash in list(link.blocks):
            self._asked.pop(block_hash, None)
        link.blocks.clear()
        if link.task is not None:
            link.task.cancel()
        if not self.stopping and self._loop is not None:
            self._loop.call_soon(self._schedule)

    def _close(self, link: _Link) -> None:
        if not link.closed:
            link.closed = True
            if link.transport is not None:
                link.transport.close()

    def _refuse(self, link: _Link, error: p.Error) -> None:
        """Tells the peer why and closes so that it can read why: the error goes out, then
        the write side shuts (a FIN after it), and what the peer still sends is read and
        dropped until it closes or ``limits.refuse_linger_s`` passes. Closing at once with its
        frames unread would answer them with a reset, which can destroy the error before the
        peer reads it (a spamming peer saw no error at all)."""
        if link.closed:
            return
        self._send(link, error)
        link.closed = True
        _shut_after_linger(link.transport, self._loop)

    def _key(self, link: _Link) -> str:
        port = link.hello.listen_port if link.inbound and link.hello is not None \
            else link.address[1]
        return _ban_key(link.address[0], port)

    def _is_banned(self, host: str) -> bool:
        until = self.banned.get(host)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self.banned[host]
            return False
        return True

    def punish(self, link: _Link, points: int, reason: str) -> None:
        """Misbehaviour: points; at BAN_POINTS the peer is disconnected and banned."""
        link.points += points
        log.warning("peer %s: %s (%d points)", link.name(), reason, link.points)
        if link.points >= BAN_POINTS and not link.closed:
            self.banned[self._key(link)] = time.monotonic() + self.settings.ban_s
            self.bans += 1
            self._refuse(link, p.Error(p.ErrorCode.misbehaving, f"banned: {reason}"))

    # ------------------------------------------------------------------ frames

    def _send(self, link: _Link, message, request_id: int = 0) -> None:
        if link.closed or link.transport is None:
            return
        link.transport.write(p.encode(message, request_id, p.HELLO_VERSION))

    def send(self, link: _Link, message) -> None:
        self._send(link, message)

    def ready_links(self) -> list[_Link]:
        return [link for link in self.links if link.ready]

    def broadcast(self, message) -> None:
        """Sends one message to every ready peer, encoded once."""
        frame = p.encode(message, 0, p.HELLO_VERSION)
        for link in list(self.links):
            if link.ready and not link.closed and link.transport is not None:
                link.transport.write(frame)

    def _request(self, link: _Link, message) -> None:
        link.next_id = (link.next_id + 1) % (1 << 63)
        self._send(link, message, link.next_id + 1)

    def _send_hello(self, link: _Link) -> None:
        height, _, work = self.chain.tip
        self._send(link, p.PeerHello(limits.protocol_versions, self.genesis_hash, height, work,
                                     self.listen_port, self.nonce,
                                     p.SERVICE_MINES if self.settings.mines else 0))
        link.hello_sent = True

    async def _serve(self, link: _Link) -> None:
        """Handles one peer's frames in order."""
        try:
            while not link.closed:
                frame = await link.queue.get()
                await self._handle(link, frame)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must cost this peer, not the node
            log.exception("peer %s: handling failed", link.name())
            self._close(link)

    async def _chain(self, function, *args):
        return await self._loop.run_in_executor(self._executor, function, *args)

    async def _handle(self, link: _Link, frame: p.Frame) -> None:
        if frame.type not in p.PEER_TYPES and not (frame.type == p.MessageType.peer_hello
                                                   and link.hello is None):
            self.punish(link, BAN_POINTS, f"message type {frame.type} on a peer connection")
            return
        try:
            message = p.decode(frame)
        except ProtocolError as exc:
            self.punish(link, BAN_POINTS, f"a frame that does not decode: {exc}")
            return
        if isinstance(message, p.PeerHello):
            self._on_hello(link, message)
            return
        if not link.ready:
            self.punish(link, BAN_POINTS, "a message before the peer_hello")
            return
        handler = _HANDLERS.get(type(message))
        if handler is not None:
            await handler(self, link, frame.request_id, message)

    def _on_hello(self, link: _Link, hello: p.PeerHello) -> None:
        if hello.node_nonce == self.nonce:
            self._refuse(link, p.Error(p.ErrorCode.self_connection, "this is the node itself"))
            return
        if hello.genesis_hash != self.genesis_hash:
            self._refuse(link, p.Error(p.ErrorCode.wrong_genesis,
                                     "this node's chain starts from another genesis block"))
            return
        if not set(hello.versions) & set(limits.protocol_versions):
            self._refuse(link, p.Error(p.ErrorCode.unsupported_version,
                                     f"this node speaks {limits.protocol_versions}"))
            return
        link.hello = hello
        if self._is_banned(self._key(link)):
            self._refuse(link, p.Error(p.ErrorCode.banned, "this node refuses you for a while: "
                                     "you misbehaved"))
            return
        link.best_height = hello.best_height
        if link.inbound and hello.listen_port:
            link.address = (link.address[0], hello.listen_port)
        if self._duplicate(link):
            return
        if not link.hello_sent:
            self._send_hello(link)
        link.ready = True
        log.info("peer %s: connected (height %d)", link.name(), hello.best_height)
        self._ask_headers(link)
        if self.on_peer is not None:
            self.on_peer()

    def _duplicate(self, link: _Link) -> bool:
        """Two nodes that name each other as peers both dial: of two links to one node (its
        nonce) the one the lower nonce dialed stays, on both sides alike, and the other is
        closed (every message would otherwise cross twice). True when ``link`` goes."""
        nonce = link.hello.node_nonce
        keep_inbound = self.nonce > nonce
        for other in list(self.links):
            if other is link or not other.ready or other.hello.node_nonce != nonce:
                continue
            drop = link if link.inbound != keep_inbound else other
            log.info("peer %s: a second link to one node, closed", drop.name())
            self._close(drop)
            return drop is link
        return False

    def _linked(self, address: tuple[str, int]) -> bool:
        return any(link.ready and not link.closed and link.address == address
                   for link in self.links)

    def _ask_headers(self, link: _Link, after: bytes | None = None) -> None:
        """Asks the peer for headers after this node's best chain (its locator), or after
        ``after`` first: the last header of a full answer, asked for before that answer is
        checked, so the peer reads and sends the next run meanwhile."""
        if link.headers_asked or link.closed:
            return
        link.headers_asked = True
        locator = ([after] if after is not None else []) + self.chain.locator()
        self._request(link, p.GetHeaders(tuple(locator[: limits.locator_hashes_max])))

    # ------------------------------------------------------------------ block download

    def _schedule(self) -> None:
        """Asks peers for the best header chain's missing blocks, within the windows."""
        if self.stopping:
            return
        self._spawn(self._schedule_async())

    async def _schedule_async(self) -> None:
        room = self.settings.blocks_in_flight_max - len(self._asked)
        if room <= 0:
            return
        wanted = await self._chain(self.chain.missing, self.settings.blocks_in_flight_max)
        wanted = [h for h in wanted if h not in self._asked][:room]
        if not wanted:
            return
        links = [link for link in self.links if link.ready and not link.closed]
        random.shuffle(links)
        per = self.settings.blocks_per_request
        for link in links:
            space = self.settings.blocks_in_flight_per_peer_max - len(link.blocks)
            mine = [h for h in wanted if h not in link.lacks][: max(0, space)]
            if not mine:
                continue
            given = set(mine)
            wanted = [h for h in wanted if h not in given]
            now = time.monotonic()
            for block_hash in mine:
                link.blocks[block_hash] = now
                self._asked[block_hash] = link
            for start in range(0, len(mine), per):
                self._request(link, p.GetBlocks(tuple(mine[start:start + per])))
            log.debug("peer %s: asked for %d blocks", link.name(), len(mine))
            if not wanted:
                break

    async def _tick(self) -> None:
        """Requests that took too long go to other peers; headers are asked again now and
        then (a peer's new blocks are announced, so this only mends lost announcements)."""
        ticks = 0
        while not self.stopping:
            await asyncio.sleep(min(1.0, self.settings.block_request_timeout_s / 2))
            ticks += 1
            if self.on_peer is not None and ticks % limits.relay_again_ticks == 0:
                self.on_peer()
            now = time.monotonic()
            for link in list(self.links):
                late = [h for h, at in link.blocks.items()
                        if now - at > self.settings.block_request_timeout_s]
                for block_hash in late:
                    del link.blocks[block_hash]
                    self._asked.pop(block_hash, None)
                    link.lacks.add(block_hash)
            self._schedule()

    # ------------------------------------------------------------------ chain events

    def _on_chain_event(self, event: ChainEvent) -> None:
        """On the chain thread: relay connected blocks (announce their header)."""
        if event.kind != "connect" or self._loop is None or self.stopping:
            return
        header = bytes(event.block[:HEADER_BYTES])
        self._loop.call_soon_threadsafe(self._announce, event.height, header,
                                        bytes(event.block))

    def _announce(self, height: int, header: bytes, block: bytes) -> None:
        self.recent[hashing.header_hash(header)] = block
        while len(self.recent) > limits.recent_blocks_max:
            self.recent.popitem(last=False)

        message = p.Announce(height, header)
        for link in list(self.links):
            if link.ready and height > link.best_height - 1:
                self._send(link, message)

    def first_time(self, records) -> bool:
        """Whether these records were not relayed through this node lately (and marks them):
        a relay seen before is dropped, so records do not go round a mesh of nodes that do
        not mine. Bounded: the oldest marks are forgotten first."""
        # Its size, first and last records (their sequences and signers make it unique in
        # practice): hashing all of a relay of megabytes cost a tenth of a validator's time.
        view = memoryview(records).cast("B")
        key = hashlib.blake2b(bytes(view[:RECORD_BYTES]) + bytes(view[-RECORD_BYTES:])
                              + view.nbytes.to_bytes(8, "little"), digest_size=16).digest()
        if key in self._relayed:
            self._relayed.move_to_end(key)
            return False
        self._relayed[key] = None
        while len(self._relayed) > limits.relays_remembered_max:
            self._relayed.popitem(last=False)
        return True

    def relay_records(self, records, signatures, batches, source: _Link | None = None,
                      again: bool = False, payloads: tuple | None = None) -> None:
        """Sends records to the peers (those that mine, when this node mines); once, unless
        ``again`` (the node's own records still waiting for a block). Calls go with their
        ``payloads`` (in record order) as a relay_calls, which carries no batches."""
        if not self.first_time(records) and not again:
            return
        message = p.Relay(bytes(records), bytes(signatures), bytes(batches)) \
            if payloads is None else p.RelayCalls(bytes(records), bytes(signatures),
                                                  tuple(bytes(item) for item in payloads))
        for link in list(self.links):
            if link.ready and link is not source and (link.hello.mines or not self.settings.mines):
                self._send(link, message)

    def status(self) -> dict:
        return {"peers": len([link for link in self.links if link.ready]),
                "peer_addresses": sorted(link.name() for link in self.links if link.ready),
                "banned": len(self.banned), "bans": self.bans,
                "blocks_in_flight": len(self._asked), "blocks_received": self.blocks_received}


def _loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "localhost")


def _ban_key(host: str, port: int) -> str:
    """Who a ban names: the address, or on loopback (every node of a test network shares
    127.0.0.1) the address and the port the peer says it listens on."""
    return f"{host}:{port}" if _loopback(host) else host


# ---------------------------------------------------------------------- handlers

async def _on_get_headers(net: PeerNetwork, link: _Link, request_id: int,
                          m: p.GetHeaders) -> None:
    data = await net._chain(net.chain.headers_after, list(m.locator), m.stop_hash,
                            min(m.max_count, limits.headers_per_message_max))
    net._send(link, p.Headers(data), request_id)


async def _on_headers(net: PeerNetwork, link: _Link, request_id: int, m: p.Headers) -> None:
    link.headers_asked = False
    if not m.count:
        return
    if m.count >= limits.headers_per_message_max:  # a full answer: there may be more
        net._ask_headers(link, after=hashing.header_hash(m.headers[-HEADER_BYTES:]))
    answer = await net._chain(net.chain.accept_headers, m.headers)
    log.debug("peer %s: %d headers: %s (%d new)", link.name(), m.count, answer.verdict.name,
              answer.taken)
    if answer.verdict is HeadersVerdict.invalid:
        net.punish(link, BAN_POINTS, f"invalid header at {answer.index} of its headers")
        return
    if answer.verdict is HeadersVerdict.low_work:
        net.punish(link, 20, "a header branch with no more work than this node's best")
        return
    if answer.verdict is HeadersVerdict.unknown_parent:
        net.punish(link, 5, "headers that link to nothing this node knows")
        return
    net._schedule()


async def _on_get_blocks(net: PeerNetwork, link: _Link, request_id: int,
                         m: p.GetBlocks) -> None:
    missing = []
    # New blocks from memory (a miner's chain lock may be held while it builds the next);
    # the rest in one trip to the chain thread, not one a hash.
    found = [net.recent.get(block_hash) for block_hash in m.hashes]
    if None in found:
        found = await net._chain(_blocks, net.chain, m.hashes)
    for block_hash, data in zip(m.hashes, found):
        if data is None:
            missing.append(block_hash)
        else:
            net._send(link, p.BlockData(data), request_id)
    if missing:
        net._send(link, p.NotFound(tuple(missing)), request_id)


def _blocks(chain: Chain, hashes) -> list[bytes | None]:
    return [chain.block(block_hash) for block_hash in hashes]


async def _on_block_data(net: PeerNetwork, link: _Link, request_id: int,
                         m: p.BlockData) -> None:
    data = bytes(m.data)
    block_hash = hashing.header_hash(data[:HEADER_BYTES]) if len(data) >= HEADER_BYTES \
        else b""
    asked = link.blocks.pop(block_hash, None)
    net._asked.pop(block_hash, None)
    if asked is None:
        net.punish(link, 20, "a block this node did not ask for")
        if link.closed:
            return
    answer = await net._chain(net.chain.accept_block, data)
    net.blocks_received += 1
    log.debug("peer %s: block %s: %s", link.name(), block_hash[::-1].hex()[:16],
              answer.accepted.name)
    if answer.accepted is Accepted.invalid:
        net.punish(link, BAN_POINTS, f"an invalid block ({answer.code.name})")
        return
    if answer.accepted is Accepted.orphan:
        net._ask_headers(link)
    # Ask for more once the window is half empty (or this peer's share is), not per block.
    if len(net._asked) <= net.settings.blocks_in_flight_max // 2 \
            or len(link.blocks) <= net.settings.blocks_in_flight_per_peer_max // 2:
        net._schedule()


async def _on_not_found(net: PeerNetwork, link: _Link, request_id: int, m: p.NotFound) -> None:
    for block_hash in m.hashes:
        if link.blocks.pop(block_hash, None) is not None:
            net._asked.pop(block_hash, None)
        link.lacks.add(block_hash)
    net._schedule()


async def _on_announce(net: PeerNetwork, link: _Link, request_id: int, m: p.Announce) -> None:
    link.best_height = max(link.best_height, m.height)
    answer = await net._chain(net.chain.accept_headers, bytes(m.header))
    if answer.verdict is HeadersVerdict.invalid:
        net.punish(link, BAN_POINTS, "an announced header that breaks the rules")
        return
    if answer.verdict in (HeadersVerdict.unknown_parent, HeadersVerdict.low_work):
        net._ask_headers(link)
        return
    net._schedule()


async def _on_relay(net: PeerNetwork, link: _Link, request_id: int, m: p.Relay) -> None:
    if net.submit is not None and net.first_time(m.records):
        await net.submit(m.records, m.signatures, m.batches, link)


async def _on_relay_calls(net: PeerNetwork, link: _Link, request_id: int,
                          m: p.RelayCalls) -> None:
    if net.submit is not None and net.first_time(m.records):
        await net.submit(m.records, m.signatures, b"", link, payloads=m.payloads)


async def _on_get_peers(net: PeerNetwork, link: _Link, request_id: int, m: p.GetPeers) -> None:
    addresses = tuple(p.PeerAddress(other.address[0], other.address[1])
                      for other in net.links if other.ready and other is not link
                      and other.address[1])[: limits.peers_per_answer_max]
    net._send(link, p.Peers(addresses), request_id)


async def _on_ping(net: PeerNetwork, link: _Link, request_id: int, m) -> None:
    net._send(link, p.Pong(), request_id)


async def _on_consensus(net: PeerNetwork, link: _Link, request_id: int, m) -> None:
    if net.on_consensus is None:
        net.punish(link, 20, "consensus messages to a node of a proof-of-work chain")
        return
    net.on_consensus(link, m)


async def _ignore(net: PeerNetwork, link: _Link, request_id: int, m) -> None:
    return


async def _on_error(net: PeerNetwork, link: _Link, request_id: int, m: p.Error) -> None:
    log.info("peer %s: error %s: %s", link.name(), m.code.name, m.message)
    if m.code in (p.ErrorCode.wrong_genesis, p.ErrorCode.self_connection, p.ErrorCode.banned,
                  p.ErrorCode.misbehaving):
        net._close(link)


_HANDLERS = {
    p.GetHeaders: _on_get_headers, p.Headers: _on_headers, p.GetBlocks: _on_get_blocks,
    p.BlockData: _on_block_data, p.NotFound: _on_not_found, p.Announce: _on_announce,
    p.Relay: _on_relay, p.RelayCalls: _on_relay_calls, p.GetPeers: _on_get_peers, p.Peers: _ignore, p.Ping: _on_ping,
    p.Pong: _ignore, p.Error: _on_error, p.ProposalMessage: _on_consensus,
    p.VoteMessage: _on_consensus,
}
