"""A minimal peer in the benchmark process: it speaks the peer protocol to one node.

It shakes hands as a node that does not mine and has no blocks, then answers what a node asks
of it as a peer that has nothing (an empty ``headers``, a ``pong``). The
benchmark uses it to ask ``get_headers`` and to time the answers, to push headers a node did
not ask for (a node takes them as a peer's new best chain), and to hear ``announce`` messages
with the time each arrived (``time.monotonic()``, which every process here shares).

It never answers ``get_blocks``: a node's requests to it wait for their timeout, holding only
this peer's share of the node's download window, where ``not_found`` answers would make the
node ask again at once, a few blocks at a time, until it had asked for every block it lacks
(a storm of requests that would cost the node more than the headers being measured).
"""

from __future__ import annotations

import asyncio
import random
import time

from tsunagi.hashing import header_hash
from tsunagi.node import limits
from tsunagi.node import protocol as p

__all__ = ["PeerProbe", "watch_blocks"]


class PeerProbe(asyncio.BufferedProtocol):
    """One peer connection; ``await PeerProbe.connect(host, port, genesis_hash)``."""

    def __init__(self, genesis_hash: bytes) -> None:
        self.genesis_hash = genesis_hash
        self.reader = p.FrameReader((p.HELLO_VERSION,), limits.peer_frame_bytes_max)
        self.transport: asyncio.Transport | None = None
        self.hello: asyncio.Future = asyncio.get_running_loop().create_future()
        self.answers: dict[int, asyncio.Future] = {}
        self.next_id = 1 << 40  # far from the ids the node uses for its own requests
        self.announced: list[tuple[float, int, bytes]] = []  # (arrived_s, height, header)
        self.errors: list[p.Error] = []
        self.lost = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, host: str, port: int, genesis_hash: bytes) -> PeerProbe:
        loop = asyncio.get_running_loop()
        _, probe = await loop.create_connection(lambda: cls(genesis_hash), host, port)
        await asyncio.wait_for(probe.hello, 10.0)
        return probe

    # -- asyncio callbacks --

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.send(p.PeerHello(limits.protocol_versions, self.genesis_hash, 0, 0, 0,
                              random.getrandbits(63)))

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        for future in self.answers.values():
            if not future.done():
                future.set_exception(ConnectionError("the node closed the peer connection"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.receive_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.received(nbytes)
        while (frame := self.reader.next_frame()) is not None:
            self._on_frame(frame)

    def _on_frame(self, frame: p.Frame) -> None:
        arrived_s = time.monotonic()
        message = p.decode(frame)
        waiting = self.answers.pop(frame.request_id, None)
        if waiting is not None:
            waiting.set_result((arrived_s, message))
        elif isinstance(message, p.PeerHello):
            self.hello.set_result(message)
        elif isinstance(message, p.Announce):
            self.announced.append((arrived_s, message.height, message.header))
        elif isinstance(message, p.GetHeaders):
            self.send(p.Headers(b""), frame.request_id)
        elif isinstance(message, p.Ping):
            self.send(p.Pong(), frame.request_id)
        elif isinstance(message, p.Error):
            self.errors.append(message)

    # -- requests --

    def send(self, message, request_id: int = 0) -> None:
        self.transport.write(p.encode(message, request_id, p.HELLO_VERSION))

    def request(self, message) -> asyncio.Future:
        """Sends ``message``; the future gives (arrival time, the answer)."""
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.answers[self.next_id] = future
        self.send(message, self.next_id)
        return future

    async def get_headers(self, locator: list[bytes], max_count: int) -> tuple[float, bytes]:
        arrived_s, answer = await self.request(p.GetHeaders(tuple(locator), max_count))
        return arrived_s, answer.headers

    async def ends_at(self, block_hash: bytes) -> bool:
        """Whether the node's best header chain ends at ``block_hash``: asked for a header
        after a locator of that hash alone, it answers none only then (else the one after
        it, or genesis when it does not know the hash)."""
        _, headers = await self.get_headers([block_hash], 1)
        return memoryview(headers).nbytes == 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# ---------------------------------------------------------------------- block arrivals

async def _subscribed(port: int, arrivals: list, ready: asyncio.Event) -> None:
    """Records (height, hash, arrival) of every block the node on ``port`` makes durable."""
    from tsunagi.node.client import AsyncClient

    async with AsyncClient("127.0.0.1", port, auto_batch=False) as client:
        status = await client.status()
        ready.set()
        async for notice in client.subscribe(status.height + 1):
            arrivals.append((notice.height, bytes(notice.block_hash), time.monotonic()))


async def _watch(miner_port: int, ports: list[int], genesis_hash: bytes, stop, out) -> dict:
    probe = await PeerProbe.connect("127.0.0.1", miner_port, genesis_hash)
    arrivals: dict[int, list] = {port: [] for port in ports}
    readies = [asyncio.Event() for _ in ports]
    tasks = [asyncio.create_task(_subscribed(port, arrivals[port], ready))
             for port, ready in zip(ports, readies)]
    for ready in readies:
        await ready.wait()
    out.put("ready")
    while stop.empty():
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    probe.close()
    return {"announced": [(height, header_hash(header), arrived_s)
                          for arrived_s, height, header in probe.announced],
            "arrivals": arrivals}


def watch_blocks(miner_port: int, ports: list[int], genesis_hash: bytes, stop, out) -> None:
    """Run in a process of its own, so the load's clients do not delay what it hears: a peer
    of the miner hears each block's ``announce`` (sent as the miner connects it), and a
    subscription on every node of ``ports`` hears each block once it is durable there. Puts
    "ready" on ``out`` once all listen; once anything is put on ``stop``, puts the arrivals
    on ``out``: {"announced": [(height, hash, s)], "arrivals": {port: [(height, hash, s)]}}."""
    out.put(asyncio.run(_watch(miner_port, ports, genesis_hash, stop, out)))
