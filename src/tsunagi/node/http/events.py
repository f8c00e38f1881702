"""Server-sent events for the pages: one feed of new blocks, fanned out to every browser.

The feed is one task that wakes on the node's block notification (``NodeServer.block_signal``),
reads each new block once on a reader thread and hands its summary to every subscriber's
queue. A queue is bounded (``page_event_queue_max``): a browser that falls that far behind is
dropped (its stream ends) rather than holding memory or slowing anyone, and the node never waits
for a browser. An EventSource reconnects by itself and names the last event it saw
(``Last-Event-ID``, the block's height), so a dropped or reconnecting page catches up from the
ledger, at most ``page_blocks_shown`` blocks (what a page shows).

A reorg (proof of work) takes blocks off the tip; the feed then sends the new blocks at those
heights again, and a page replaces rows of heights it already shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import numpy as np

from tsunagi.core.block import decode_block
from tsunagi.node import limits
from tsunagi.node.settings import RestSettings

__all__ = ["BlockFeed", "Subscriber", "block_summary", "format_time", "sse_event"]

log = logging.getLogger("tsunagi.node.http.events")

# How often the feed looks at the ledger's height without a notification: blocks appended by
# anything but this server's writer (a peer's, during sync) are seen within this.
_POLL_S = 1.0
_END = None  # put in a subscriber's queue to end its stream


def format_time(time_s: int) -> str:
    """A block time as the pages show it (the JavaScript formats live rows the same way)."""
    return datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def block_summary(height: int, data: bytes) -> dict:
    """What a list of blocks shows of one: a row of the overview, one event of the feed."""
    block = decode_block(data)
    return {"height": height, "hash": bytes(block.hash)[::-1].hex(),
            "prev_hash": bytes(block.prev_hash)[::-1].hex(), "time": block.time,
            "time_text": format_time(block.time), "record_count": len(block),
            "failed_count": int(np.count_nonzero(block.codes))}


def sse_event(event: str, data: dict, event_id: int | None = None) -> bytes:
    """One server-sent event (a JSON payload on one data line)."""
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Subscriber:
    """One browser's place in the feed: a bounded queue of block summaries."""

    def __init__(self, queue_max: int) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(queue_max)
        self.dropped = False  # fell behind by a full queue: its stream ends

    def offer(self, summary: dict) -> bool:
        """Queues without waiting; a full queue drops the subscriber (False)."""
        try:
            self.queue.put_nowait(summary)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            self.end()
            return False

    def end(self) -> None:
        """Ends the stream: what is queued is thrown away (a reconnect catches up)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_END)


class BlockFeed:
    """New blocks of one node for any number of subscribers, each with a bounded queue.

    ``node`` is a started NodeServer; ``read(function, *args)`` runs a ledger read on a reader
    thread (the REST app's); ``stopping`` is set when the node stops, which ends every stream.
    """

    def __init__(self, node, read, stopping: asyncio.Event, *,
                 queue_max: int = limits.page_event_queue_max,
                 catch_up_max: int = limits.page_blocks_shown,
                 ping_s: float = RestSettings.event_ping_s) -> None:
        self.node, self.ledger, self.read, self.stopping = node, node.ledger, read, stopping
        self.queue_max, self.catch_up_max, self.ping_s = queue_max, catch_up_max, ping_s
        self.subscribers: set[Subscriber] = set()
        self.dropped = 0  # subscribers dropped for falling behind, since the start
        self.published_height = self.ledger.height  # the next height to publish
        self._task: asyncio.Task | None = None

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self.queue_max)
        self.subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self.published_height = self.ledger.height
            self._task = asyncio.get_running_loop().create_task(self._run())
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, summary: dict) -> None:
        """Hands a block to every subscriber; never waits (a full queue drops its owner)."""
        for subscriber in list(self.subscribers):
            if not subscriber.offer(summary):
                self.subscribers.discard(subscriber)
                self.dropped += 1
                log.info("an event stream fell %d blocks behind and was dropped",
                         self.queue_max)

    async def _run(self) -> None:
        """Publishes each new block once, until the node stops or nobody listens."""
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set() and self.subscribers:
                signal = self.node.block_signal()  # before reading the height: none slips by
                await self._publish_new()
                waiter = asyncio.ensure_future(signal.wait())
                try:
                    await asyncio.wait({waiter, stopped}, timeout=_POLL_S,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        except Exception:  # the pages lose live updates; the node goes on
            log.exception("the block feed failed")
        finally:
            stopped.cancel()
            for subscriber in list(self.subscribers):
                subscriber.end()
            self.subscribers.clear()

    async def _publish_new(self) -> None:
        height = self.ledger.height
        # A reorg took blocks off: their heights get the new chain's blocks.
        self.published_height = min(self.published_height, height)
        while self.published_height < height and self.subscribers:
            summary = await self.read(self._summary, self.published_height)
            if summary is None:
                return
            self.publish(summary)
            self.published_height += 1

    def _summary(self, height: int) -> dict | None:
        """The summary of the block at ``height`` (None past the tip); on a reader thread."""
        data = self.ledger.block(height)
        return None if data is None else block_summary(height, bytes(data))

    async def stream(self, from_height: int | None) -> AsyncIterator[bytes]:
        """One browser's event stream: blocks from ``from_height`` (the newest
        ``catch_up_max`` of those already there, then each new one), pings while quiet.
        ``from_height`` None starts with the next new block."""
        subscriber = self.subscribe()
        # Blocks below ``end`` were published before this subscriber joined, so they come
        # from the ledger; the rest come through its queue: none twice, none missed.
        end = self.published_height
        first = end if from_height is None else max(from_height, end - self.catch_up_max)
        try:
            yield b"retry: 1000\n\n"
            for height in range(first, end):
                summary = await self.read(self._summary, height)
                if summary is None:
                    break
                yield sse_event("block", summary, height)
            while True:
                try:
                    summary = await asyncio.wait_for(subscriber.queue.get(), self.ping_s)
                except TimeoutError:
                    yield b": ping\n\n"  # a quiet stream stays open through proxies
                    continue
                if summary is _END:
                    return
                yield sse_event("block", summary, summary["height"])
        finally:
            self.unsubscribe(subscriber)
