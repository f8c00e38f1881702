"""The auto-batcher: many concurrent one-record submits become few submit-batch requests.

Callers keep calling ``submit(record, signature)`` from as many coroutines (or, through the
sync client, threads) as they like. The batcher gathers the records that arrive while a batch
is open and sends them as one request when it holds ``records_max`` records or ``wait_ms``
after its first record, whichever comes first; each caller gets its own one-record answer.
The node then puts the whole batch in one block with one fsync, so a program written one
transfer at a time gets the throughput of batches without changing its code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tsunagi.core.answer import BatchAnswer
from tsunagi.core.records import RECORD_BYTES, SIGNATURE_BYTES, Flags
from tsunagi.node import limits

__all__ = ["AutoBatcher"]

SendBatch = Callable[[bytes, bytes], Awaitable[BatchAnswer]]


class AutoBatcher:
    """Coalesces ``submit`` calls on one event loop into calls of ``send_batch``.

    ``send_batch(records, signatures)`` sends one batch and returns its answer; the client
    passes its retrying submit_batch. Records with the ``linked`` flag are refused here: a
    linked record would join the next caller's record into its group.
    """

    def __init__(self, send_batch: SendBatch, records_max: int = limits.batcher_records_max,
                 wait_ms: float = limits.batcher_wait_ms) -> None:
        if records_max < 1 or wait_ms < 0:
            raise ValueError("records_max is at least 1 and wait_ms at least 0")
        self._send_batch = send_batch
        self.records_max = records_max
        self.wait_ms = wait_ms
        self.batches_sent = 0  # for tests and metrics: how many requests the calls became
        self.records_sent = 0
        self._records: list[bytes] = []
        self._signatures: list[bytes] = []
        self._futures: list[asyncio.Future] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, record, signature) -> BatchAnswer:
        """Sends one record in the next batch and returns its own one-record answer."""
        record, signature = bytes(record), bytes(signature)
        if len(record) != RECORD_BYTES or len(signature) != SIGNATURE_BYTES:
            raise ValueError(f"a record is {RECORD_BYTES} bytes and its signature "
                             f"{SIGNATURE_BYTES}, got {len(record)} and {len(signature)}")
        if record[1] & (Flags.linked | Flags.batch_authorized):
            raise ValueError("linked and batch_authorized records go in submit_batch, "
                             "with the rest of their group")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._records.append(record)
        self._signatures.append(signature)
        self._futures.append(future)
        if len(self._records) >= self.records_max:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_ms / 1000, self._flush)
        return await future

    async def flush(self) -> None:
        """Sends what is pending now and waits until every batch sent so far is answered."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._records:
            return
        records, signatures, futures = self._records, self._signatures, self._futures
        self._records, self._signatures, self._futures = [], [], []
        task = asyncio.get_running_loop().create_task(
            self._send(b"".join(records), b"".join(signatures), futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, records: bytes, signatures: bytes,
                    futures: list[asyncio.Future]) -> None:
        self.batches_sent += 1
        self.records_sent += len(futures)
        try:
            answer = await self._send_batch(records, signatures)
        except BaseException as exc:
            for future in futures:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for index, future in enumerate(futures):
            if not future.done():  # a caller that gave up leaves a cancelled future
                future.set_result(answer.slice(index, index + 1))
