"""Driving: one asyncio connection a client, keeping ``window`` requests in flight.

Latency is per request, from writing its frame to reading its answer; an ``overloaded``
answer sends the same frame again after a pause.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from tsunagi.errors import NodeError
from tsunagi.loadgen.limits import connect_timeout_s, drain_s, live_ahead, overloaded_pause_s
from tsunagi.loadgen.traffic import LoadSpec, Traffic
from tsunagi.node import limits
from tsunagi.node import protocol as p

__all__ = ["COUNTERS", "ClientRun", "drive"]

# Counters each driving process shares with the display: records answered, records ok,
# requests answered, records that failed.
COUNTERS = 4
_REQUEST_ID = struct.Struct("<Q")  # at offset 8 of a frame


@dataclass
class ClientRun:
    """What one connection saw, per request in send order; codes only when kept."""

    sent_s: np.ndarray  # time.monotonic() when the frame was written
    answered_s: np.ndarray  # when its answer was read; NaN: no answer
    counts: np.ndarray  # records in the request
    ok: np.ndarray  # records answered ok
    code_counts: np.ndarray  # 256 counters of the result codes of answered records
    errors: dict[str, int] = field(default_factory=dict)  # error answers by name
    overloaded: int = 0  # `overloaded` answers (each request was then sent again)
    lost: str | None = None  # why the connection ended early
    codes: dict[int, bytes] | None = None  # request index -> final codes, when kept


class _Driver(asyncio.Protocol):
    """One connection: the hello, then up to ``window`` requests in flight until the end."""

    def __init__(self, traffic: Traffic, window: int, keep: bool, counters, slot: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.traffic, self.window, self.keep = traffic, window, keep
        self.counters, self.slot = counters, slot * COUNTERS
        self.reader = p.FrameReader((p.HELLO_VERSION,) + limits.protocol_versions)
        self.welcome = self.loop.create_future()
        self.finished = self.loop.create_future()
        self.transport = None
        self.deadline_s = math.inf
        self.started = False
        self.sent = 0  # requests written (each once; resends do not count)
        self.inflight: dict[int, bytes] = {}  # request index -> frame, until answered
        self.index_of: dict[int, int] = {}  # request id (read from the frame) -> index
        self.ready: list[tuple[bytes, int]] = []  # live: built requests not sent yet
        self.room = asyncio.Event()  # live: set when an answer makes room for another request
        self.exhausted = traffic.source is None
        self.sent_s: list[float] = []
        self.answered_s: list[float] = []
        self.counts: list[int] = []
        self.ok: list[int] = []
        self.code_counts = np.zeros(256, np.int64)
        self.run = ClientRun(*(np.zeros(0),) * 4, self.code_counts,
                             codes={} if keep else None)

    # -- asyncio callbacks --

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(p.encode(p.Hello(limits.protocol_versions), 0))

    def data_received(self, data) -> None:
        self.reader.feed(data)
        try:
            while (frame := self.reader.next_frame()) is not None:
                self._on_message(frame.request_id, p.decode(frame))
        except NodeError as exc:  # ProtocolError: the node broke the protocol
            self.end(f"protocol error: {exc}")
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.end(f"connection lost: {exc}" if exc else "the node closed the connection")

    # -- requests --

    def start(self, deadline_s: float) -> None:
        self.deadline_s, self.started = deadline_s, True
        if not self.exhausted:
            self.loop.create_task(self._build_ahead())
        self._pump()

    def _next_request(self) -> tuple[bytes, int] | None:
        if self.traffic.source is not None:
            return self.ready.pop(0) if self.ready else None
        if self.sent < len(self.traffic.frames):
            return self.traffic.frames[self.sent], self.traffic.counts[self.sent]
        return None

    def _pump(self) -> None:
        if self.finished.done():
            return
        now = time.monotonic()
        while len(self.inflight) < self.window and now < self.deadline_s:
            request = self._next_request()
            if request is None:
                break
            frame, count = request
            self.inflight[self.sent] = frame
            self.index_of[_REQUEST_ID.unpack_from(frame, 8)[0]] = self.sent
            self.sent_s.append(now)
            self.answered_s.append(math.nan)
            self.counts.append(count)
            self.ok.append(0)
            self.sent += 1
            self.transport.write(frame)
        nothing_left = now >= self.deadline_s or (
            self.exhausted and not self.ready and self.sent >= len(self.traffic.frames))
        if not self.inflight and nothing_left:
            self.end(None)

    async def _build_ahead(self) -> None:
        """Live traffic: keeps live_ahead requests built beyond the window, on a thread."""
        source = self.traffic.source
        while not self.finished.done() and time.monotonic() < self.deadline_s:
            if len(self.ready) >= live_ahead + self.window - len(self.inflight):
                self.room.clear()
                await self.room.wait()
                continue
            request = await self.loop.run_in_executor(None, next, source, None)
            if request is None:
                break
            self.ready.append(request)
            self._pump()
        self.exhausted = True
        self._pump()

    def _on_message(self, request_id: int, message) -> None:
        if not self.welcome.done():
            if isinstance(message, p.Welcome):
                self.welcome.set_result(message)
            else:
                self.welcome.set_exception(NodeError(f"the node answered the hello: {message}"))
            return
        index = self.index_of.get(request_id)
        if index not in self.inflight:
            if isinstance(message, p.Error):  # request id 0: the node closes the connection
                self.end(f"node: {message.code.name}: {message.message}")
            return
        if isinstance(message, p.Error) and message.code is p.ErrorCode.overloaded:
            self.run.overloaded += 1
            self.loop.call_later(overloaded_pause_s, self._resend, index)
            return
        self.answered_s[index] = time.monotonic()
        count = self.counts[index]
        del self.inflight[index], self.index_of[request_id]
        self.room.set()
        c = self.counters
        c[self.slot] += count
        c[self.slot + 2] += 1
        if isinstance(message, p.SubmitAnswer):
            self._count_codes(index, message)
        else:
            name = message.code.name if isinstance(message, p.Error) else type(message).__name__
            self.run.errors[name] = self.run.errors.get(name, 0) + 1
            c[self.slot + 3] += count
        self._pump()

    def _count_codes(self, index: int, answer: p.SubmitAnswer) -> None:
        codes = answer.codes
        if len(codes) == 1:
            self.code_counts[codes[0]] += 1
            ok = int(codes[0] == 0)
        else:
            array = np.frombuffer(codes, np.uint8)
            self.code_counts += np.bincount(array, minlength=256)
            ok = len(codes) - int(np.count_nonzero(array))
        self.ok[index] = ok
        self.counters[self.slot + 1] += ok
        self.counters[self.slot + 3] += len(codes) - ok
        if self.keep:
            self.run.codes[index] = answer.final_codes().tobytes()

    def _resend(self, index: int) -> None:
        if index in self.inflight and not self.finished.done():
            self.transport.write(self.inflight[index])

    def end(self, lost: str | None) -> None:
        """Finishes the run (once): ``lost`` says why, when it ends before its last answer."""
        if self.finished.done():
            return
        if lost is not None and not self.welcome.done():
            self.welcome.set_exception(NodeError(lost))
        run = self.run
        run.lost = lost if (lost and (self.inflight or not self.started)) else None
        run.sent_s, run.answered_s = np.array(self.sent_s), np.array(self.answered_s)
        run.counts, run.ok = np.array(self.counts, np.int64), np.array(self.ok, np.int64)
        self.finished.set_result(run)
        self.room.set()
        if self.transport is not None:
            self.transport.close()


async def _open_driver(host: str, port: int, traffic: Traffic, window: int, keep: bool,
                       counters, slot: int) -> _Driver:
    loop = asyncio.get_running_loop()
    try:
        _, driver = await asyncio.wait_for(loop.create_connection(
            lambda: _Driver(traffic, window, keep, counters, slot), host, port),
            connect_timeout_s)
        await asyncio.wait_for(driver.welcome, connect_timeout_s)
    except (OSError, TimeoutError) as exc:
        raise NodeError(f"cannot connect to the node at {host}:{port}: {exc}") from None
    return driver


async def drive(host: str, port: int, traffics: list[Traffic], spec: LoadSpec, *,
                counters=None, slot: int = 0, go=None) -> tuple[float, list[ClientRun]]:
    """Runs prepared traffic over one connection each; returns (start time, runs).

    ``go`` (async, optional) waits for a shared start signal and returns the start time.
    """
    counters = counters if counters is not None else [0] * COUNTERS * (slot + 1)
    drivers = await asyncio.gather(*(
        _open_driver(host, port, t, spec.requests_in_flight, spec.keep, counters, slot)
        for t in traffics))
    start_s = await go() if go is not None else time.monotonic()
    deadline_s = start_s + spec.duration_s if spec.duration_s else math.inf
    for driver in drivers:
        driver.start(deadline_s)
    finished = [driver.finished for driver in drivers]
    timeout_s = None if not spec.duration_s else max(0.0, deadline_s - time.monotonic()) + drain_s
    await asyncio.wait(finished, timeout=timeout_s)
    for driver in drivers:
        driver.end("no answer within the drain time after the deadline")
    return start_s, [future.result() for future in finished]
