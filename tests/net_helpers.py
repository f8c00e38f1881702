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
        self.process: subprocess.Popen | None = None
        self.log = data.parent / f"{data.name}.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> NetNode:
        command = [sys.executable, "-m", "tsunagi", "node", "--data", str(self.data),
                   "--listen", f"{self.host}:{self.port}", "--log-level", "info",
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
        json.loads(line)
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
        if hasattr(client, "many"):  # a client that runs elsewhere: one trip for all
            return np.array(client.many([("balance", (a,)) for a in accounts]), dtype=object)
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
