"""The connection node as a process of its own: ``python -m tsunagi.node.connection --config
FILE`` drives cross-chain transfers between tsunagi node processes and may be killed anywhere.

It reaches every chain through the node client: the connection chain (a ``tsunagi node
--contract connection=tsunagi.connect.contract:ConnectionContract``) with a
:class:`~tsunagi.connect.connection_chain.NodeConnectionChain`, each linked chain with a
:class:`~tsunagi.connect.tsunagi_chain.RemoteTsunagiConnector`. (It lives in the node layer
because it opens clients; the connect layer below takes them ready-made.) On every start it
resumes first: the journaled records a dead run left unsent, then every transfer its journal
names, from the state the connection chain holds; then it drives the transfers the config
lists (requesting those the chain has never seen) and prints one JSON line for each. Killed
with SIGKILL at any point and started again with the same config, it finishes them: nothing
is paid twice, because nothing is ever signed twice (tsunagi.connect.journal).

The config, JSON (paths relative to the file; key files are ``tsunagi keygen``'s, their
passphrase in the environment variable ``passphrase_env``, TSUNAGI_PASSPHRASE by default)::

    {"connection": {"node": "127.0.0.1:7301", "operator_account": 1,
                    "operator_key": "operator.key", "contract_number": 1},
     "chains": [{"node": "127.0.0.1:7302", "authority": 3, "settlement": 2,
                 "keys": {"1": "hanako.key", "3": "authority-a.key"}}, ...],
     "journal": "connect.journal",
     "transfers": [{"id": "order-0001", "rule": 7, "payer": 1, "payee": 1, "amount": 110,
                    "accept": true}],
     "accept": true, "wait_s": 0, "poll_s": 0.5}

``accept`` is the payee's answer (step 5) for a transfer that names none, ``wait_s`` how long
to keep driving transfers that wait for blocks of a linked chain. A chain's id comes from its
node's handshake (``chain_id`` in its entry makes the handshake insist on one).

For tests of crash recovery, ``TSUNAGI_CONNECT_STOP_AT=K`` stops the process (SIGSTOP) at
its K-th point, after printing ``{"stopped_at": K, "point": ...}``: points are each journal
entry made durable (``after journal hold intent``), and the moments before and after each
record sent to a linked chain (``before send to chain 102``) and each call of the connection
chain (``after call escrowed``). A point's name in place of K stops at the first point of that
name. The test then kills it with SIGKILL: a deterministic place, a real kill. The last line
of a run that ends says how many points it passed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from tsunagi.connect.connection_chain import NodeConnectionChain
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import FINAL_STATES, ConnectionNode, StepRefused
from tsunagi.connect.tsunagi_chain import RemoteTsunagiConnector
from tsunagi.core.keyfile import load_key
from tsunagi.errors import ConfigError, TsunagiError
from tsunagi.node.client import Client
from tsunagi.node.service import parse_address

__all__ = ["ConnectionProcess", "main"]

STOP_AT_ENV = "TSUNAGI_CONNECT_STOP_AT"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _path(base: Path, value, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} is a file path, got {value!r}")
    return base / value


def _int(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2 ** 64:
        raise ConfigError(f"{what} is a number 1..2**64-1, got {value!r}")
    return value


def _transfer_id(text) -> bytes:
    data = text.encode() if isinstance(text, str) else b""
    if not 0 < len(data) <= 32:
        raise ConfigError(f"a transfer id is 1 to 32 bytes of text, got {text!r}")
    return data


class _StopPoints:
    """Counts the points the node passes; stops the process at the K-th (see the module)."""

    def __init__(self, stop_at: int | str | None) -> None:
        self.stop_at, self.passed = stop_at, 0

    def point(self, name: str) -> None:
        self.passed += 1
        if self.stop_at in (self.passed, name):
            print(json.dumps({"stopped_at": self.passed, "point": name}), flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    def wrap(self, owner, name: str, before: bool, describe) -> None:
        """Makes ``owner.name`` a point after it runs (and before, with ``before``), named
        by ``describe(*args)``."""
        inner = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if before:
                self.point(f"before {describe(*args)}")
            result = inner(*args, **kwargs)
            self.point(f"after {describe(*args)}")
            return result
        setattr(owner, name, wrapped)


class ConnectionProcess:
    """The clients, connectors, journal and ConnectionNode a config names, opened."""

    def __init__(self, config_path: str | os.PathLike,
                 stop_at: int | str | None = None) -> None:
        path = Path(config_path)
        try:
            config = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the connection config {path}: {exc.strerror}") \
                from exc
        except ValueError as exc:
            raise ConfigError(f"the connection config {path} is not valid JSON: {exc}") \
                from exc
        if not isinstance(config, dict):
            raise ConfigError(f"the connection config {path} is a JSON object")
        self.config, self.base = config, path.parent
        self.passphrase = os.environ.get(config.get("passphrase_env", "TSUNAGI_PASSPHRASE"))
        if self.passphrase is None:
            raise ConfigError("the key files' passphrase is not in the environment: set "
                              f"{config.get('passphrase_env', 'TSUNAGI_PASSPHRASE')}")
        self.transfers = {_transfer_id(entry.get("id")): entry
                          for entry in config.get("transfers", [])}
        self.clients: list[Client] = []
        self.points = _StopPoints(stop_at)
        try:
            self.node = self._open()
        except BaseException:
            self.close()
            raise

    def _client(self, entry: dict, what: str) -> Client:
        host, port = parse_address(entry.get("node"), f"{what}'s node")
        client = Client(host, port, chain_id=entry.get("chain_id", 0), auto_batch=False)
        self.clients.append(client)
        return client

    def _open(self) -> ConnectionNode:
        config = self.config
        connection = config.get("connection")
        if not isinstance(connection, dict) or not isinstance(config.get("chains"), list):
            raise ConfigError("the connection config names its connection chain "
                              "(\"connection\") and its linked chains (\"chains\")")
        chain = NodeConnectionChain(self._client(connection, "the connection chain"))
        connectors = {}
        for number, entry in enumerate(config["chains"]):
            keys = {_int(int(account), "an account with a key"): load_key(
                _path(self.base, key, "a key file"), self.passphrase)
                for account, key in entry.get("keys", {}).items()}
            connector = RemoteTsunagiConnector(
                self._client(entry, f"chain {number + 1}"), keys,
                authority=_int(entry.get("authority"), "a chain's escrow authority"),
                settlement=_int(entry.get("settlement"), "a chain's settlement account"))
            connectors[connector.chain_id] = connector
        journal = Journal(_path(self.base, config.get("journal"), "the journal"))
        node = ConnectionNode(
            chain, None, operator_account=_int(connection.get("operator_account"),
                                               "the operator account"),
            operator_key=load_key(_path(self.base, connection.get("operator_key"),
                                        "the operator key"), self.passphrase),
            connectors=connectors, journal=journal, confirm=self._accept,
            contract_number=_int(connection.get("contract_number", 1), "the contract number"))
        self.points.wrap(journal, "append", False,
                         lambda entry: f"journal {entry['op']} {entry['phase']}")
        self.points.wrap(node, "call", True, lambda method, args: f"call {method}")
        for chain_id, connector in connectors.items():
            self.points.wrap(connector, "send", True, lambda prepared, chain_id=chain_id:
                             f"send to chain {chain_id}")
        return node

    def _accept(self, transfer_id: bytes, entry: dict) -> bool:
        """The payee's answer: the config's, per transfer or for all."""
        listed = self.transfers.get(transfer_id, {})
        return bool(listed.get("accept", self.config.get("accept", True)))

    def run(self) -> list[dict]:
        """Resumes, then drives every listed transfer; one report for each."""
        node = self.node
        node.resume()
        reports = {transfer_id: self._drive(transfer_id, entry)
                   for transfer_id, entry in self.transfers.items()}
        deadline = time.monotonic() + float(self.config.get("wait_s", 0))
        while any(report.get("state") not in FINAL_STATES and "error" not in report
                  for report in reports.values()) and time.monotonic() < deadline:
            time.sleep(float(self.config.get("poll_s", 0.5)))
            for transfer_id, report in reports.items():
                if report.get("state") not in FINAL_STATES and "error" not in report:
                    reports[transfer_id] = self._drive(transfer_id, self.transfers[transfer_id])
        return list(reports.values())

    def _drive(self, transfer_id: bytes, listed: dict) -> dict:
        report = {"transfer": transfer_id.decode(errors="replace")}
        try:
            entry = self.node.state_of(transfer_id)
            if entry is None:
                entry = self.node.pay(transfer_id, _int(listed.get("rule"), "a rule id"),
                                      _int(listed.get("payer"), "a payer"),
                                      _int(listed.get("payee"), "a payee"),
                                      _int(listed.get("amount"), "an amount"))
            else:
                entry = self.node.drive(transfer_id)
        except StepRefused as exc:
            return dict(report, error=str(exc), refused=getattr(exc.code, "name", exc.code))
        except TsunagiError as exc:  # a chain down, a key missing: the next start retries
            return dict(report, error=str(exc))
        return dict(report, state=entry["state"], amount=entry["amount"],
                    payout=entry["payout"], steps=[step["step"] for step in entry["trail"]])

    def close(self) -> None:
        node = getattr(self, "node", None)
        if node is not None:
            node.journal.close()
        for client in self.clients:
            client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tsunagi.node.connection",
        description="The connection node: drives cross-chain transfers between tsunagi "
                    "nodes, resuming from its journal and the connection chain.")
    parser.add_argument("--config", required=True, help="the connection config (JSON)")
    args = parser.parse_args(argv)
    stop_at = os.environ.get(STOP_AT_ENV) or None
    try:
        process = ConnectionProcess(args.config, int(stop_at) if stop_at and
                                    stop_at.isdigit() else stop_at)
    except (ConfigError, ValueError) as exc:
        print(f"tsunagi connection node: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TsunagiError as exc:  # a node not answering: a later start may find it up
        print(f"tsunagi connection node: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        reports = process.run()
        for report in reports:
            print(json.dumps(report), flush=True)
        print(json.dumps({"done": True, "points": process.points.passed}), flush=True)
    except TsunagiError as exc:
        print(f"tsunagi connection node: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        process.close()
    return EXIT_OK if all("error" not in report for report in reports) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
