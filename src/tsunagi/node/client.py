"""Client library of a tsunagi node: :class:`AsyncClient` (asyncio) and :class:`Client` (sync).

One TCP connection carries many requests at once; answers come back in any order and are
matched by request id. A lost connection is reopened and the requests on it are sent again:
submissions are idempotent (a record the lost attempt committed answers ``already_committed``
with its original code; :meth:`BatchAnswer.final_codes` folds that back), queries are reads.
Submissions answer a :class:`tsunagi.core.answer.BatchAnswer`, as a Ledger does: the wire's
``submit_answer`` is turned into one here, with the txids of the records sent.
``overloaded`` and ``shutting_down`` answers are retried after a doubling pause as well.

``submit`` goes through an :class:`AutoBatcher` by default, so concurrent one-record submits
travel as batches without the caller doing anything.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence

import numpy as np

from tsunagi import hashing
from tsunagi.core.answer import BatchAnswer
from tsunagi.core.block import pack_batches
from tsunagi.core.records import Flags
from tsunagi.errors import NodeError, OverloadedError, ProtocolError
from tsunagi.node import limits
from tsunagi.node import protocol as p
from tsunagi.node.batcher import AutoBatcher
from tsunagi.node.server import DEFAULT_PORT, new_event_loop

__all__ = ["AsyncClient", "Client"]

_READ_BYTES = 256 * 1024
_RETRIED = (p.ErrorCode.overloaded, p.ErrorCode.shutting_down)


class _LinkLost(NodeError):
    """The connection broke before the answer came: the request may be sent again."""


class _Stream:
    """The notices of one subscription, bounded: past the bound it is marked to resubscribe."""

    def __init__(self) -> None:
        self.items: deque = deque()
        self.ready = asyncio.Event()
        self.state: str | None = None  # None, "lost" or "overflow"

    def put(self, item) -> None:
        if len(self.items) >= limits.client_stream_notices_max:
            self.state = "overflow"
        else:
            self.items.append(item)
        self.ready.set()

    def end(self, state: str) -> None:
        self.state = state
        self.ready.set()


class _Link:
    """One TCP connection after the handshake: sends frames, routes answers by request id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 frames: p.FrameReader, welcome: p.Welcome) -> None:
        self.writer = writer
        self.welcome = welcome
        self.version = welcome.version
        self.pending: dict[int, asyncio.Future] = {}
        self.streams: dict[int, _Stream] = {}
        self.lost: Exception | None = None
        self._frames = frames
        self._task = asyncio.get_running_loop().create_task(self._read(reader))

    async def request(self, request_id: int, message, timeout_s: float):
        if self.lost is not None:
            raise _LinkLost(f"connection lost: {self.lost}")
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            await self.send(request_id, message)
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise NodeError(f"no answer within {timeout_s} s") from None
        finally:
            self.pending.pop(request_id, None)

    async def send(self, request_id: int, message) -> None:
        self.writer.write(p.encode(message, request_id, self.version))
        if self.writer.transport.get_write_buffer_size() > limits.client_write_buffer_bytes_max:
            try:
                await self.writer.drain()
            except OSError as exc:
                raise _LinkLost(f"connection lost: {exc}") from None

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason: Exception = _LinkLost("the node closed the connection")
        try:
            while True:
                while (frame := self._frames.next_frame()) is not None:
                    self._route(frame.request_id, p.decode(frame))
                data = await reader.read(_READ_BYTES)
                if not data:
                    break
                self._frames.feed(data)
        except (OSError, ProtocolError) as exc:
            reason = exc
        finally:
            self._fail(reason)

    def _route(self, request_id: int, message) -> None:
        future = self.pending.pop(request_id, None)
        if future is not None:
            if not future.done():
                future.set_result(message)
            return
        stream = self.streams.get(request_id)
        if stream is not None:
            stream.put(message)
        elif isinstance(message, p.Error) and request_id == 0:  # e.g. an idle timeout
            self.lost = NodeError(f"node: {message.code.name}: {message.message}")

    def _fail(self, reason: Exception) -> None:
        self.lost = self.lost or reason
        for future in self.pending.values():
            if not future.done():
                future.set_exception(_LinkLost(f"connection lost: {self.lost}"))
        self.pending.clear()
        for stream in self.streams.values():
            stream.end("lost")
        self.writer.close()

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._fail(_LinkLost("the client closed the connection"))


def _error(answer: p.Error) -> NodeError:
    text = f"node answered {answer.code.name}: {answer.message}"
    if answer.code is p.ErrorCode.overloaded:
        return OverloadedError(text)
    if answer.code in (p.ErrorCode.malformed, p.ErrorCode.unknown_type,
                       p.ErrorCode.duplicate_request, p.ErrorCode.unsupported_version):
        return ProtocolError(text)
    return NodeError(text)


def _answer(message: p.SubmitAnswer, records) -> BatchAnswer:
    """The wire's answer to the records sent, as the ledger's answer type."""
    codes = np.frombuffer(message.codes, dtype=np.uint8).copy()
    opened = np.zeros(len(codes), dtype=np.uint64)
    for index, account in message.opened:
        opened[index] = account
    return BatchAnswer(codes, None, opened, message.height, message.block_hash,
                       dict(message.originals), records=records)


class AsyncClient:
    """An asyncio client of one node. ``async with AsyncClient(host, port) as client: ...``

    ``chain_id`` (0: any) makes the handshake fail unless the node serves that chain.
    ``auto_batch`` sends ``submit`` calls through an :class:`AutoBatcher`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 chain_id: int = 0, auto_batch: bool = True,
                 batch_records_max: int = limits.batcher_records_max,
                 batch_wait_ms: float = limits.batcher_wait_ms,
                 retries: int = limits.client_retries_max,
                 retry_pause_s: float = limits.client_retry_pause_s,
                 timeout_s: float = limits.client_request_timeout_s) -> None:
        self.host, self.port, self.chain_id = host, port, chain_id
        self.retries, self.retry_pause_s, self.timeout_s = retries, retry_pause_s, timeout_s
        self.batcher = AutoBatcher(self._send_batch, batch_records_max, batch_wait_ms) \
            if auto_batch else None
        self.welcome: p.Welcome | None = None
        self._link: _Link | None = None
        self._connecting: asyncio.Lock | None = None
        self._ids = itertools.count(1)
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def connect(self) -> p.Welcome:
        """Opens the connection and does the handshake (requests do it on their own too)."""
        last: NodeError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_pause_s * 2 ** (attempt - 1))
            try:
                await self._connected()
                return self.welcome
            except _LinkLost as exc:
                last = exc
        raise NodeError(f"gave up after {self.retries + 1} tries: {last}")

    async def close(self) -> None:
        self._closed = True
        if self.batcher is not None:
            await self.batcher.flush()
        if self._link is not None:
            await self._link.close()
            self._link = None

    # -- connection --

    async def _connected(self) -> _Link:
        link = self._link
        if link is not None and link.lost is None:
            return link
        if self._closed:
            raise NodeError("the client is closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._link is None or self._link.lost is not None:
                if self._link is not None:
                    await self._link.close()
                    self._link = None
                self._link = await self._handshake()
            return self._link

    async def _handshake(self) -> _Link:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout_s)
        except (OSError, TimeoutError) as exc:
            raise _LinkLost(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        frames = p.FrameReader((p.HELLO_VERSION,) + limits.protocol_versions)
        try:
            writer.write(p.encode(p.Hello(limits.protocol_versions, self.chain_id), 0))
            answer = await asyncio.wait_for(self._first_frame(reader, frames), self.timeout_s)
        except BaseException:
            writer.close()
            raise
        if isinstance(answer, p.Error):
            writer.close()
            if answer.code in _RETRIED:
                raise _LinkLost(f"node answered {answer.code.name}: {answer.message}")
            raise _error(answer)
        if not isinstance(answer, p.Welcome):
            writer.close()
            raise ProtocolError(f"the node answered the hello with {type(answer).__name__}")
        frames.versions = (answer.version,)
        self.welcome = answer
        return _Link(reader, writer, frames, answer)

    @staticmethod
    async def _first_frame(reader: asyncio.StreamReader, frames: p.FrameReader):
        while (frame := frames.next_frame()) is None:
            try:
                data = await reader.read(_READ_BYTES)
            except OSError as exc:
                raise _LinkLost(f"connection lost during the handshake: {exc}") from None
            if not data:
                raise _LinkLost("the node closed the connection during the handshake")
            frames.feed(data)
        return p.decode(frame)

    async def _request(self, message, not_found_ok: bool = False):
        """Sends a request, retrying lost connections and pushback; returns the answer."""
        last: NodeError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_pause_s * 2 ** (attempt - 1))
            try:
                link = await self._connected()
                answer = await link.request(next(self._ids), message, self.timeout_s)
            except _LinkLost as exc:
                last = exc
                continue
            if not isinstance(answer, p.Error):
                return answer
            if answer.code is p.ErrorCode.not_found and not_found_ok:
                return None
            if answer.code not in _RETRIED:
                raise _error(answer)
            last = _error(answer)
            if answer.code is p.ErrorCode.shutting_down:
                link.lost = link.lost or last  # connect again: maybe to a restarted node
        raise last if isinstance(last, OverloadedError) else NodeError(
            f"gave up after {self.retries + 1} tries: {last}")

    # -- the API --

    async def submit(self, record, signature) -> BatchAnswer:
        """Submits one record; ``answer.code`` is its Result, ``answer.account`` what it opened.

        Concurrent calls are coalesced into batches by the auto-batcher; a linked record
        (which must travel with its group) goes alone and answers ``linked_group_open``.
        """
        if self.batcher is not None and not record[1] & Flags.linked:
            return await self.batcher.submit(record, signature)
        record = bytes(record)
        return _answer(await self._request(p.Submit(record, bytes(signature))), record)

    async def submit_batch(self, records, signatures=b"", batches: Sequence = ()
                           ) -> BatchAnswer:
        """Submits N records in one request: one block, one fsync on the node.

        ``records`` is N x 128 bytes; ``signatures`` 64 bytes for each record without
        batch_authorized, in order; ``batches`` BatchAuth-like (first, count, signer_key,
        signature) entries or their packed 112-byte form.
        """
        message = p.SubmitBatch(bytes(records), bytes(signatures),
                                pack_batches(batches).tobytes())
        p.check_submit_batch(message.records, message.signatures, message.batches, ValueError)
        return _answer(await self._request(message), message.records)

    async def submit_calls(self, records, signatures, payloads: Sequence[bytes]
                           ) -> BatchAnswer:
        """Submits N signed records with the payload of each call record among them, in
        record order (tsunagi.contracts.chain.call_record makes both): one block on the
        node. A contract's refusal is the record's code (call_refused)."""
        message = p.SubmitCalls(bytes(records), bytes(signatures),
                                tuple(bytes(payload) for payload in payloads))
        p.check_submit_calls(message.records, message.signatures, message.payloads,
                             ValueError)
        return _answer(await self._request(message), message.records)

    async def _send_batch(self, records: bytes, signatures: bytes) -> BatchAnswer:
        return _answer(await self._request(p.SubmitBatch(records, signatures)), records)

    async def balance(self, account: int) -> int | None:
        answer = await self._request(p.QueryBalance(account), not_found_ok=True)
        return None if answer is None else answer.balance

    async def account(self, account: int) -> p.Account | None:
        return await self._request(p.QueryAccount(account), not_found_ok=True)

    async def transaction(self, txid: bytes) -> p.Transaction | None:
        """The stored record with its code, height, position and Merkle proof, or None."""
        return await self._request(p.QueryTransaction(bytes(txid)), not_found_ok=True)

    async def confirmations(self, txid: bytes) -> tuple[int, p.Transaction | None]:
        """How many blocks of the node's best chain hold the transaction or build on the one
        that does (0 while it is in none), and the transaction."""
        found = await self.transaction(txid)
        if found is None:
            return 0, None
        status = await self.status()
        block = await self.block(found.height)
        if block is None or hashing.header_hash(memoryview(block)[:80]) != found.block_hash:
            return 0, None  # a reorg moved it between the two answers: ask again
        return status.height - found.height + 1, found

    async def wait_confirmed(self, txid: bytes, confirmations: int = 1,
                             timeout_s: float = 600.0,
                             poll_s: float = limits.confirm_poll_s) -> p.Transaction:
        """Waits until ``confirmations`` blocks of the best chain hold the transaction or
        build on its block (a reorg that takes it off starts the count again), and returns
        it; NodeError ``reorged_out`` if the node says it will not be included again,
        TimeoutError after ``timeout_s``."""
        if confirmations < 1:
            raise ValueError("confirmations is at least 1")
        deadline = time.monotonic() + timeout_s
        while True:
            count, found = await self.confirmations(txid)
            if count >= confirmations:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"transaction {bytes(txid)[::-1].hex()} has {count} of "
                                   f"{confirmations} confirmations after {timeout_s:.0f} s")
            await asyncio.sleep(poll_s)

    async def block(self, height_or_hash: int | bytes) -> bytes | None:
        """The encoded block at a height, or with a 32-byte hash; None if there is none."""
        if isinstance(height_or_hash, int):
            query = p.QueryBlock(height=height_or_hash)
        else:
            query = p.QueryBlock(block_hash=bytes(height_or_hash))
        answer = await self._request(query, not_found_ok=True)
        return None if answer is None else answer.data

    async def history(self, account: int, limit: int = 100, before: int | None = None
                      ) -> list[p.HistoryEntry]:
        answer = await self._request(p.QueryHistory(account, limit, before), not_found_ok=True)
        return [] if answer is None else list(answer.entries)

    async def status(self) -> p.Status:
        return await self._request(p.QueryStatus())

    async def network(self) -> p.Network:
        """Peers, best chain, reorgs and mempool of a node of a network."""
        return await self._request(p.QueryNetwork())

    async def submit_entries(self, data: bytes) -> p.EntriesFinal:
        """Consortium entries (validator updates, tsunagi.core.entries) for the validator
        this client talks to: answered once a final block holds them."""
        return await self._request(p.SubmitEntries(bytes(data)))

    async def validators(self) -> p.Validators:
        """The validator set of a consortium chain's next height."""
        return await self._request(p.QueryValidators())

    async def accounts_of(self, owner_key: bytes) -> list[int]:
        """The accounts a 32-byte owner key owns, ascending (asked a page at a time)."""
        found: list[int] = []
        while True:
            answer = await self._request(p.QueryAccounts(bytes(owner_key),
                                                         found[-1] if found else 0))
            found += answer.accounts
            if len(answer.accounts) < limits.accounts_per_answer_max:
                return found

    async def holds(self, account: int) -> p.Holds | None:
        """Units held in the account's open holds and the oldest of those; None: no account."""
        return await self._request(p.QueryHolds(account), not_found_ok=True)

    async def hold(self, payer: int, sequence: int) -> p.Hold | None:
        """The hold named by its payer and its record's sequence, whatever its status."""
        return await self._request(p.QueryHold(payer, sequence), not_found_ok=True)

    async def policy(self, account: int, slot: int) -> p.Policy | None:
        """The policy key in slot 1..7 of an account, or None if the slot is empty."""
        return await self._request(p.QueryPolicy(account, slot), not_found_ok=True)

    async def ping(self) -> None:
        await self._request(p.Ping())

    async def headers(self, from_height: int,
                      max_count: int = limits.headers_per_message_max) -> bytes:
        """The 80-byte headers of blocks ``from_height`` up, back to back, at most
        ``max_count`` (fewer where the chain ends, none past it)."""
        answer = await self._request(p.QueryHeaders(from_height, max_count))
        return bytes(answer.headers)

    async def contract_state(self, key: bytes) -> bytes | None:
        """A world-state value by its whole key (contract name, a zero byte, the contract's
        key), canonical-encoded; None when absent. NodeError when the chain runs no
        contracts."""
        answer = await self._request(p.QueryContractState(bytes(key)), not_found_ok=True)
        return None if answer is None else answer.value

    async def call_result(self, txid: bytes) -> p.CallResult | None:
        """A recent call's full result (code, refusal, value, events, detail); None when
        the node does not know it (not a call, or too old, or the node restarted since)."""
        return await self._request(p.QueryCallResult(bytes(txid)), not_found_ok=True)

    async def subscribe(self, from_height: int = 0, with_blocks: bool = False
                        ) -> AsyncIterator[p.BlockNotice]:
        """Block notices from ``from_height`` on, in height order, until the caller stops.

        A lost connection (or a consumer too slow for the node) is healed by subscribing
        again from the next height, so no block is skipped or repeated.
        """
        next_height, failures = from_height, 0
        while True:
            link = await self._connected()
            request_id, stream = next(self._ids), _Stream()
            link.streams[request_id] = stream
            try:
                await link.send(request_id, p.Subscribe(next_height, with_blocks))
                async for notice in self._notices(stream):
                    failures = 0
                    next_height = notice.height + 1
                    yield notice
                if stream.state is None:
                    return  # the node ended the subscription
            except _LinkLost:
                pass
            finally:
                link.streams.pop(request_id, None)
                if link.lost is None and stream.state != "lost":
                    await link.send(request_id, p.Unsubscribe())
            failures += 1
            if failures > self.retries:
                raise NodeError(f"subscription lost {failures} times in a row")
            await asyncio.sleep(self.retry_pause_s * 2 ** (failures - 1))

    @staticmethod
    async def _notices(stream: _Stream) -> AsyncIterator[p.BlockNotice]:
        while True:
            if not stream.items:
                if stream.state is not None:
                    return
                stream.ready.clear()
                await stream.ready.wait()
                continue
            item = stream.items.popleft()
            if isinstance(item, p.BlockNotice):
                yield item
            elif isinstance(item, p.SubscriptionEnd):
                return
            elif isinstance(item, p.Error):
                if item.code in _RETRIED:
                    raise _LinkLost(f"node answered {item.code.name}: {item.message}")
                raise _error(item)


class Client:
    """A blocking client for programs without asyncio; safe to share between threads.

    It runs an :class:`AsyncClient` on a private event loop in a daemon thread, so submits from
    many threads meet in one auto-batcher and travel as batches. Options are AsyncClient's.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="tsunagi-client")
        self._thread.start()
        self._async = AsyncClient(host, port, **options)
        try:
            self.welcome: p.Welcome = self._call(self._async.connect())
        except BaseException:
            self._stop_loop()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def batcher(self) -> AutoBatcher | None:
        return self._async.batcher

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._async.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def submit(self, record, signature) -> BatchAnswer:
        return self._call(self._async.submit(record, signature))

    def submit_batch(self, records, signatures=b"", batches: Sequence = ()) -> BatchAnswer:
        return self._call(self._async.submit_batch(records, signatures, batches))

    def submit_calls(self, records, signatures, payloads: Sequence[bytes]) -> BatchAnswer:
        return self._call(self._async.submit_calls(records, signatures, payloads))

    def balance(self, account: int) -> int | None:
        return self._call(self._async.balance(account))

    def account(self, account: int) -> p.Account | None:
        return self._call(self._async.account(account))

    def transaction(self, txid: bytes) -> p.Transaction | None:
        return self._call(self._async.transaction(txid))

    def confirmations(self, txid: bytes) -> tuple[int, p.Transaction | None]:
        return self._call(self._async.confirmations(txid))

    def wait_confirmed(self, txid: bytes, confirmations: int = 1, timeout_s: float = 600.0,
                       **options) -> p.Transaction:
        return self._call(self._async.wait_confirmed(txid, confirmations, timeout_s,
                                                     **options))

    def block(self, height_or_hash: int | bytes) -> bytes | None:
        return self._call(self._async.block(height_or_hash))

    def history(self, account: int, limit: int = 100, before: int | None = None
                ) -> list[p.HistoryEntry]:
        return self._call(self._async.history(account, limit, before))

    def status(self) -> p.Status:
        return self._call(self._async.status())

    def network(self) -> p.Network:
        return self._call(self._async.network())

    def submit_entries(self, data: bytes) -> p.EntriesFinal:
        return self._call(self._async.submit_entries(data))

    def validators(self) -> p.Validators:
        return self._call(self._async.validators())

    def accounts_of(self, owner_key: bytes) -> list[int]:
        return self._call(self._async.accounts_of(owner_key))

    def holds(self, account: int) -> p.Holds | None:
        return self._call(self._async.holds(account))

    def hold(self, payer: int, sequence: int) -> p.Hold | None:
        return self._call(self._async.hold(payer, sequence))

    def policy(self, account: int, slot: int) -> p.Policy | None:
        return self._call(self._async.policy(account, slot))

    def ping(self) -> None:
        self._call(self._async.ping())

    def headers(self, from_height: int,
                max_count: int = limits.headers_per_message_max) -> bytes:
        return self._call(self._async.headers(from_height, max_count))

    def contract_state(self, key: bytes) -> bytes | None:
        return self._call(self._async.contract_state(key))

    def call_result(self, txid: bytes) -> p.CallResult | None:
        return self._call(self._async.call_result(txid))

    def subscribe(self, from_height: int = 0, with_blocks: bool = False
                  ) -> Iterator[p.BlockNotice]:
        """Block notices from ``from_height`` on; blocks the calling thread between them."""
        notices = self._async.subscribe(from_height, with_blocks)
        try:
            while True:
                try:
                    yield self._call(notices.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._call(notices.aclose())
