"""Networks of real `tsunagi node` processes on loopback for the network tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tsunagi.core import records as r
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger
from tsunagi.node.client import Client

CHAIN_ID = 91
PAYERS = 8
FUNDS = 10**12
KEYS = [PrivateKey.from_bytes(bytes([n + 1]) * 32) for n in range(PAYERS + 1)]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def config(**fields) -> ChainConfig:
    return ChainConfig(name="net", chain_id=CHAIN_ID, asset_code="TSU",
                       allocations=tuple((key.public_key, FUNDS) for key in KEYS), **fields)


def data_dirs(root: Path, count: int, **fields) -> list[Path]:
    """``count`` data directories of one new chain (the same genesis block)."""
    first = root / "node0"
    Ledger.create(first, config(**fields), threads=1).close()
    dirs = [first]
    for n in range(1, count):
        shutil.copytree(first, root / f"node{n}")
        dirs.append(root / f"node{n}")
    return dirs


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class NetNode:
    """One `tsunagi node` process with peers."""

    def __init__(self, data: Path, port: int, peers: list[str], mine: bool,
                 extra: tuple[str, ...] = (), netns: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self.data, self.port, self.peers, self.mine = data, port, peers, mine
        self.extra, self.netns, self.host = extra, netns, host
        self.listen_host = host  # stays when a test reaches the node at another address
        self.process: subprocess.Popen | None = None
        self.log = data.parent / f"{data.name}.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> NetNode:
        command = [sys.executable, "-m", "tsunagi", "node", "--data", str(self.data),
                   "--listen", f"{self.listen_host}:{self.port}", "--log-level", "info",
                   "--mine" if self.mine else "--no-mine", *self.extra]
        for peer in self.peers:
            command += ["--peer", peer]
        if self.netns:
            command = ["ip", "netns", "exec", self.netns] + command
        self._log_file = open(self.log, "a")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log_file,
                                        text=True, env=ENV)
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"node {self.data.name} did not start: {self.log.read_text()}")
        self.ready = json.loads(line)
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(60)
            finally:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
        self.process.stdout.close()
        self._log_file.close()
        self.process = None

    def client(self) -> Client:
        return Client(self.host, self.port)

    def status(self):
        with self.client() as client:
            return client.status()


def wait_until(condition, what, timeout_s: float = 120.0, step_s: float = 0.05):
    """Polls ``condition`` (a hang guard, not a timing assertion: it only bounds a failure).
    ``what`` is a text or a function giving one (called only on failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"gave up waiting for {text} after {timeout_s:.0f} s")
        time.sleep(step_s)


class Payments:
    """Signed transfers between the funded accounts, with sequences kept per payer."""

    def __init__(self) -> None:
        self.sequence = {n: 0 for n in range(1, PAYERS + 1)}

    def batch(self, count: int, payer: int | None = None,
              amount: int | None = None) -> tuple[bytes, bytes]:
        records, signatures = [], []
        for i in range(count):
            account = payer or 1 + (i % PAYERS)
            self.sequence[account] += 1
            record = r.transfer(CHAIN_ID, self.sequence[account], account,
                                PAYERS + 1, amount or 1 + i % 7)
            records.append(record)
            signatures.append(KEYS[account - 1].sign_record(record))
        return b"".join(records), b"".join(signatures)


def tips(nodes: list[NetNode]) -> list[tuple[int, bytes]]:
    out = []
    for node in nodes:
        status = node.status()
        out.append((status.height, bytes(status.tip_hash)))
    return out


def balances(node: NetNode, accounts) -> np.ndarray:
    with node.client() as client:
        return np.array([client.balance(a) for a in accounts], dtype=object)


class Switch:
    """TCP relays between nodes, in a thread of the test process, that a test can cut (every
    relayed connection closed, new ones refused) and mend: a partition on loopback."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self._asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cut = False
        self._pairs: set = set()
        self._servers = []

    def relay(self, target_port: int) -> int:
        """A port that relays to 127.0.0.1:target_port while the switch is not cut."""
        async def start():
            server = await self._asyncio.start_server(
                lambda r, w: self._handle(r, w, target_port), "127.0.0.1", 0)
            self._servers.append(server)
            return server.sockets[0].getsockname()[1]
        return self._asyncio.run_coroutine_threadsafe(start(), self.loop).result()

    async def _handle(self, reader, writer, target_port: int) -> None:
        asyncio = self._asyncio
        if self.cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)

        async def pump(source, sink):
            try:
                while data := await source.read(1 << 16):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pairs.discard(pair)

    def set_cut(self, cut: bool) -> None:
        def apply():
            self.cut = cut
            if cut:
                for down, up in list(self._pairs):
                    down.transport.abort()
                    up.transport.abort()
                self._pairs.clear()
        self.loop.call_soon_threadsafe(apply)

    def close(self) -> None:
        def stop():
            for server in self._servers:
                server.close()
            self.set_cut(True)
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)


def build_chain(data: Path, blocks: int, payments: Payments, first_time_s: int = 1_700_000_000
                ) -> None:
    """Adds ``blocks`` one-transfer blocks to the chain in ``data`` (in this process)."""
    ledger = Ledger.open(data, threads=1)
    try:
        pending = None
        start = ledger.height
        for i in range(blocks):
            records, signatures = payments.batch(1)
            pending = ledger.begin_batch(records, signatures,
                                         now_s=first_time_s + (start + i) // 100)
            if i % 64 == 63:
                pending.wait()
        if pending is not None:
            pending.wait()
    finally:
        ledger.close()


class LyingPeer:
    """A peer in the test process that dials a node, shakes hands properly, and then lies:
    ``serve="bad_blocks"`` answers get_headers with the honest headers it was given and
    get_blocks with those blocks' bodies changed (the header kept, so the hash is the one
    asked for, but the Merkle root no longer holds); ``serve="low_work"`` sends, unasked, a
    branch of valid-work headers off genesis with less work than the node's chain, again and
    again. It records the error the node sent when it closed the connection."""

    def __init__(self, target: tuple[str, int], genesis_hash: bytes, headers: bytes,
                 blocks: dict[bytes, bytes], serve: str, listen_port: int = 1) -> None:
        import asyncio
        import threading

        self.asyncio = asyncio
        self.target, self.genesis_hash = target, genesis_hash
        self.headers, self.blocks, self.serve = headers, blocks, serve
        self.listen_port = listen_port
        self.errors: list = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        from tsunagi import hashing
        from tsunagi.core.block import genesis_block
        from tsunagi.node import protocol as p

        asyncio = self.asyncio
        try:
            reader, writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.closed.set()
            return
        writer.write(p.encode(p.PeerHello((1,), self.genesis_hash, 0, 0, self.listen_port,
                                          12345 + self.listen_port), 0, 1))
        frames = p.FrameReader((1,), 1 << 28)
        spam = 0
        try:
            while True:
                if self.serve == "low_work" and spam < 50:
                    spam += 1
                    writer.write(p.encode(p.Headers(self.headers), 0, 1))
                try:
                    data = await asyncio.wait_for(reader.read(1 << 16), 0.05)
                except asyncio.TimeoutError:
                    continue
                if not data:
                    break
                frames.feed(data)
                while (frame := frames.next_frame()) is not None:
                    message = p.decode(frame)
                    if isinstance(message, p.Error):
                        self.errors.append(message.code)
                    elif isinstance(message, p.GetHeaders) and self.serve == "bad_blocks":
                        writer.write(p.encode(p.Headers(self.headers), frame.request_id, 1))
                    elif isinstance(message, p.GetBlocks) and self.serve == "bad_blocks":
                        lacking = []
                        for block_hash in message.hashes:
                            if block_hash not in self.blocks:
                                lacking.append(block_hash)
                                continue
                            raw = bytearray(self.blocks[block_hash])
                            raw[-10] ^= 0xFF  # inside the body: a signature byte
                            writer.write(p.encode(p.BlockData(bytes(raw)), frame.request_id, 1))
                        if lacking:
                            writer.write(p.encode(p.NotFound(tuple(lacking)), frame.request_id,
                                                  1))
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            del hashing, genesis_block
            self.closed.set()


def fork_headers(parent_header: bytes, count: int) -> bytes:
    """``count`` headers with valid work on top of ``parent_header`` (no bodies behind them)."""
    from tsunagi import hashing
    from tsunagi.core.block import mine_header

    out, parent = [], parent_header
    for n in range(count):
        header = bytearray(hashing.make_header(
            1, hashing.header_hash(parent), bytes([n + 1]) * 32,
            int.from_bytes(parent[68:72], "little"), int.from_bytes(parent[72:76], "little"),
            0))
        mine_header(header)
        out.append(bytes(header))
        parent = bytes(header)
    return b"".join(out)
