"""ConnectionChain across real processes: chains A and B and the connection chain are `tsunagi
node` processes, the connection node is a process of its own, and it is killed with SIGKILL at
every point of a transfer's flow and started again.

Method: three chains are made on disk and served by `tsunagi node` on loopback, the connection
chain with the connection contract installed (--contract); the contract is set up through the
node client. The connection node (`python -m tsunagi.node.connection --config FILE`) reaches
every chain through the client. It stops itself at its K-th point (a journal entry made
durable, or just before or after a record sent to a linked chain or a call of the connection
chain: TSUNAGI_CONNECT_STOP_AT), announced on its stdout, so the kill lands at a known place
without any timing; the test then sends SIGKILL and starts it again without the stop. For
every K of a paid transfer and of one the shop refuses, the tests read what users care about:
the transfer's final state on the connection chain, the balances that moved on each chain,
payouts to the shop counted on chain B; and at the end each chain's money conserved, the
escrow empty, and every escrow movement and payout on either chain on a trail. Chain B's node
is killed too, with a payout about to go to it, and started again later: paid once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_helpers import ENV, PASSPHRASE, NodeProcess

from tsunagi.connect import contract as cc
from tsunagi.connect.connection_chain import NodeConnectionChain
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode
from tsunagi.connect.tsunagi_chain import RemoteTsunagiConnector, check_step
from tsunagi.contracts.runtime import CallCode, source_sha256
from tsunagi.core.block import decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keyfile import save_key
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger
from tsunagi.node.client import Client
from tsunagi.node.connection import STOP_AT_ENV

CHAIN_A, CHAIN_B, CHAIN_C = 201, 202, 200
HANAKO, SETTLEMENT_A, AUTHORITY_A = 1, 2, 3  # accounts of chain A
SHOP, POOL, AUTHORITY_B = 1, 2, 3  # accounts of chain B
OPERATOR = 1  # the connection node's account on the connection chain
TARGET = "tsunagi.connect.contract:ConnectionContract"
RULE = {"rule_id": 7, "source": CHAIN_A, "target": CHAIN_B, "rate_numerator": 3,
        "rate_denominator": 2, "fee": 10, "settlement": SETTLEMENT_A, "pool": POOL,
        "escrow_authority": AUTHORITY_A, "escrow_expiry_s": 3600, "payout_window_s": 600}
AMOUNT, PAYOUT = 110, (110 - 10) * 3 // 2
HANG_GUARD_S = 120  # a connection node run that takes longer is killed and the test fails
ACCOUNTS = (1, 2, 3)


def client_of(node: NodeProcess) -> Client:
    host, port = node.address.rsplit(":", 1)
    return Client(host, int(port), auto_batch=False)


class Chains:
    """Chains A, B and the connection chain as node processes, the contract set up, and the
    connection node's config file (its transfers filled in per run)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        keys_a = {n: PrivateKey.generate() for n in ACCOUNTS}
        keys_b = {n: PrivateKey.generate() for n in ACCOUNTS}
        self.operator_key = PrivateKey.generate()
        self.configs = {
            "a": self._chain("a", CHAIN_A, keys_a, {HANAKO: 100_000, SETTLEMENT_A: 1,
                                                   AUTHORITY_A: 1}),
            "b": self._chain("b", CHAIN_B, keys_b, {SHOP: 1, POOL: 1_000_000,
                                                   AUTHORITY_B: 1}),
            "c": self._connection_chain(),
        }
        self.nodes = {}
        self.clients = {}
        try:
            for name in "abc":
                flags = ("--contract", f"connection={TARGET}") if name == "c" else ()
                self.nodes[name] = NodeProcess(root / name, *flags)
                self.clients[name] = client_of(self.nodes[name])
            self.keys = {"a": keys_a, "b": keys_b}
            self.key_files = {
                "operator": self._key_file("operator", self.operator_key),
                "hanako": self._key_file("hanako", keys_a[HANAKO]),
                "authority-a": self._key_file("authority-a", keys_a[AUTHORITY_A]),
                "pool": self._key_file("pool", keys_b[POOL]),
            }
            self._set_up()
            self.totals = {name: self.total(name) for name in "ab"}
        except BaseException:
            self.close()
            raise

    def _chain(self, name, chain_id, keys, amounts) -> ChainConfig:
        config = ChainConfig(name=name, chain_id=chain_id, asset_code=name.upper(),
                             allocations=tuple((keys[n].public_key, amounts[n])
                                               for n in sorted(keys)))
        Ledger.create(self.root / name, config, threads=1).close()
        return config

    def _connection_chain(self) -> ChainConfig:
        config = ChainConfig(name="connection", chain_id=CHAIN_C, asset_code="CON",
                             allocations=((self.operator_key.public_key, 1),),
                             contracts=(("connection", bytes.fromhex(source_sha256(TARGET))),))
        Ledger.create(self.root / "c", config, threads=1).close()
        return config

    def _key_file(self, name: str, key: PrivateKey) -> str:
        save_key(self.root / f"{name}.key", key, PASSPHRASE, scrypt_n=2**10)
        return f"{name}.key"

    def node_here(self, connectors=None) -> ConnectionNode:
        """A ConnectionNode in the test's process, through the same clients."""
        return ConnectionNode(
            NodeConnectionChain(self.clients["c"]), None, operator_account=OPERATOR,
            operator_key=self.operator_key, connectors=connectors or {},
            journal=Journal(self.root / "here.journal"), confirm=lambda *_: True)

    def _set_up(self) -> None:
        node = self.node_here()
        try:
            calls = [("setup", [CHAIN_C, [OPERATOR]])]
            for name in "ab":
                genesis = decode_block(self.clients[name].block(0))
                config = self.configs[name]
                calls.append(("add_chain", [config.chain_id, cc.KIND_TSUNAGI_POW, genesis.hash,
                                            config.bits, 0]))
            calls.append(("add_rule", [RULE]))
            for method, args in calls:
                assert node.call(method, args).code is CallCode.ok, method
        finally:
            node.journal.close()

    def connectors(self) -> dict:
        return {
            CHAIN_A: RemoteTsunagiConnector(self.clients["a"], self.keys["a"],
                                            authority=AUTHORITY_A, settlement=SETTLEMENT_A),
            CHAIN_B: RemoteTsunagiConnector(self.clients["b"], self.keys["b"],
                                            authority=AUTHORITY_B, settlement=SHOP)}

    def write_config(self, transfers: list[dict]) -> Path:
        config = {
            "connection": {"node": self.nodes["c"].address, "operator_account": OPERATOR,
                           "operator_key": self.key_files["operator"]},
            "chains": [
                {"node": self.nodes["a"].address, "chain_id": CHAIN_A,
                 "authority": AUTHORITY_A, "settlement": SETTLEMENT_A,
                 "keys": {str(HANAKO): self.key_files["hanako"],
                          str(AUTHORITY_A): self.key_files["authority-a"]}},
                {"node": self.nodes["b"].address, "chain_id": CHAIN_B,
                 "authority": AUTHORITY_B, "settlement": SHOP,
                 "keys": {str(POOL): self.key_files["pool"]}}],
            "journal": "connect.journal",
            "transfers": transfers}
        path = self.root / "connect.json"
        path.write_text(json.dumps(config))
        return path

    def balance(self, name: str, account: int) -> int:
        return self.clients[name].balance(account)

    def held(self, name: str, account: int) -> int:
        return self.clients[name].account(account).held

    def total(self, name: str) -> int:
        return sum(self.balance(name, n) + self.held(name, n) for n in ACCOUNTS)

    def tagged_records(self, name: str) -> dict[int, set[bytes]]:
        """The applied records of a linked chain by the transfer tag in their user_data."""
        client, found = self.clients[name], {}
        for height in range(1, client.status().height + 1):
            block = decode_block(client.block(height))
            records, txids = block.records.tobytes(), block.txids()
            for index in range(len(block)):
                record = records[index * 128:(index + 1) * 128]
                tag = int.from_bytes(record[120:128], "little")
                if tag and int(block.codes[index]) == 0:
                    found.setdefault(tag, set()).add(txids[index].tobytes())
        return found

    def kill(self, name: str) -> None:
        """SIGKILL to a chain's node process: its chain stays as the kill left it on disk."""
        self.clients.pop(name).close()
        node = self.nodes.pop(name)
        node.process.kill()
        node.process.wait(HANG_GUARD_S)
        node.stop()

    def start(self, name: str) -> None:
        """The chain's node again, on its data (and a new port)."""
        self.nodes[name] = NodeProcess(self.root / name)
        self.clients[name] = client_of(self.nodes[name])

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        for node in self.nodes.values():
            node.stop()


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    made = Chains(tmp_path_factory.mktemp("chains"))
    yield made
    made.close()


def run_connection_node(config: Path, stop_at: int | str | None = None, *,
                        fails: bool = False, command: tuple = ("-m", "tsunagi.node.connection")
                        ) -> dict:
    """One run of the connection node process. With ``stop_at``: the point it stopped at
    (then killed with SIGKILL), or its reports when it ended before that point. Without:
    its reports and the points it passed; with ``fails``, its exit code and stderr."""
    env = dict(ENV)
    if stop_at is not None:
        env[STOP_AT_ENV] = str(stop_at)
    process = subprocess.Popen([sys.executable, *command, "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    guard = threading.Timer(HANG_GUARD_S, process.kill)
    guard.start()
    try:
        lines = []
        for line in process.stdout:
            lines.append(json.loads(line))
            if "stopped_at" in lines[-1]:
                process.send_signal(signal.SIGKILL)
                break
        process.wait()
        errors = process.stderr.read()
    finally:
        guard.cancel()
        process.stdout.close()
        process.stderr.close()
    if lines and "stopped_at" in lines[-1]:
        assert process.returncode == -signal.SIGKILL
        return lines[-1]
    if fails:
        assert process.returncode == 1, errors
        return {"returncode": process.returncode, "errors": errors, "lines": lines}
    assert process.returncode == 0 and lines and lines[-1].get("done"), errors
    return {"reports": lines[:-1], "points": lines[-1]["points"]}


def payouts_to_shop(chains: Chains, tag: int) -> int:
    """Applied transfers on chain B that carry the transfer's tag: payouts, counted."""
    return sum(1 for entry in chains.clients["b"].history(SHOP, limit=1000)
               if entry.record[0] == 2 and int(entry.code) == 0 and
               int.from_bytes(entry.record[120:128], "little") == tag)


def test_a_node_in_this_process_pays_across_node_processes_with_a_proven_trail(chains):
    node = chains.node_here(chains.connectors())
    try:
        before = chains.balance("a", HANAKO), chains.balance("b", SHOP)
        entry = node.pay(b"here-0001", 7, HANAKO, SHOP, AMOUNT)
    finally:
        node.journal.close()
    assert entry["state"] == "complete"
    assert [step["step"] for step in entry["trail"]] == [
        "request", "escrow", "escrow_final", "rate", "confirm", "payout", "payout_final",
        "payout_seen", "settle", "settle_final", "settle_seen", "complete"]
    assert (chains.balance("a", HANAKO), chains.balance("b", SHOP)) == \
        (before[0] - AMOUNT, before[1] + PAYOUT)
    connectors = node.connectors
    for step in entry["trail"]:
        if step["chain"] in connectors:  # re-checked from the chain's node, not the trail
            proof = connectors[step["chain"]].find(step["txid"])
            assert check_step(proof) and proof.height == step["height"]
            assert step["block_hash"] == proof.block_hash
    # The connector follows chain A's headers through its node, each the block's own.
    source = connectors[CHAIN_A]
    followed = source.follow(0)
    assert [header.height for header in followed] == list(range(source.finalized_height() + 1))
    assert all(decode_block(chains.clients["a"].block(header.height)).hash == header.block_hash
               for header in followed)
    # The connection chain's own record of each call is in its blocks too.
    request = chains.clients["c"].transaction(entry["trail"][0]["txid"])
    assert request.height == entry["trail"][0]["height"]


def test_the_connection_node_killed_at_every_point_resumes_and_nothing_happens_twice(chains):
    trails: dict[bytes, dict] = {}
    for accepted in (True, False):
        expected = "complete" if accepted else "refunded"
        steps = 12 if accepted else 8
        # A whole run first, to learn the points of this flow.
        counted = f"count-{int(accepted)}"
        config = chains.write_config([{"id": counted, "rule": 7, "payer": HANAKO,
                                       "payee": SHOP, "amount": AMOUNT, "accept": accepted}])
        run = run_connection_node(config)
        assert [report["state"] for report in run["reports"]] == [expected]
        points = run["points"]
        assert points > 2 * steps  # more points than steps: the kills land in between too
        transfer_ids = [counted.encode()]
        for stop_at in range(1, points + 1):
            transfer_id = f"{'paid' if accepted else 'refused'}-{stop_at}"
            config = chains.write_config([{"id": transfer_id, "rule": 7, "payer": HANAKO,
                                           "payee": SHOP, "amount": AMOUNT,
                                           "accept": accepted}])
            before = chains.balance("a", HANAKO), chains.balance("b", SHOP)
            stopped = run_connection_node(config, stop_at)
            assert stopped["stopped_at"] == stop_at, stopped
            run = run_connection_node(config)  # the restart, with nothing to stop it
            [report] = run["reports"]
            assert report["state"] == expected, (stop_at, stopped, report)
            assert len(report["steps"]) == steps, (stop_at, report)
            paid = AMOUNT if accepted else 0
            assert (chains.balance("a", HANAKO), chains.balance("b", SHOP)) == \
                (before[0] - paid, before[1] + (PAYOUT if accepted else 0)), stopped
            tag = cc.transfer_tag(transfer_id.encode())
            assert payouts_to_shop(chains, tag) == (1 if accepted else 0), stopped
            transfer_ids.append(transfer_id.encode())
        node = chains.node_here()
        try:
            trails.update({transfer_id: node.state_of(transfer_id)
                           for transfer_id in transfer_ids + [b"here-0001"]})
        finally:
            node.journal.close()
    # Each chain's money is where it was, none of it left in escrow.
    assert {name: chains.total(name) for name in "ab"} == chains.totals
    assert [chains.held(name, n) for name in "ab" for n in ACCOUNTS] == [0] * 6
    # No transfer both paid out and refunded; every escrow movement (hold, post, void) and
    # every payout on chain A or B is a step of its transfer's trail, and nothing else is.
    on_chains = {}
    for name in "ab":
        for tag, txids in chains.tagged_records(name).items():
            on_chains.setdefault(tag, set()).update(txids)
    trails = {transfer_id: entry for transfer_id, entry in trails.items() if entry is not None}
    assert set(on_chains) <= {entry["tag"] for entry in trails.values()}
    for transfer_id, entry in trails.items():
        names = [step["step"] for step in entry["trail"]]
        assert not ("payout" in names and "refund" in names), transfer_id
        proven = {step["txid"] for step in entry["trail"]
                  if step["chain"] in (CHAIN_A, CHAIN_B) and step["step"] in
                  ("escrow", "payout", "settle", "refund")}
        assert on_chains.get(entry["tag"], set()) == proven, transfer_id


def test_tsunagi_connect_run_is_the_connection_node(chains):
    """The CLI's `tsunagi connect run --config FILE` runs the same process: a transfer it is
    given completes, and a second run with the same config changes nothing."""
    config = chains.write_config([{"id": "cli-0001", "rule": 7, "payer": HANAKO,
                                   "payee": SHOP, "amount": AMOUNT}])
    before = chains.balance("b", SHOP)
    first = run_connection_node(config, command=("-m", "tsunagi", "connect", "run"))
    assert [report["state"] for report in first["reports"]] == ["complete"]
    again = run_connection_node(config, command=("-m", "tsunagi", "connect", "run"))
    assert [report["state"] for report in again["reports"]] == ["complete"]
    assert chains.balance("b", SHOP) == before + PAYOUT  # paid once


def test_a_connection_node_with_a_bad_config_says_what_is_wrong(tmp_path):
    def run(config: Path, **env):
        return subprocess.run([sys.executable, "-m", "tsunagi.node.connection", "--config",
                               str(config)], capture_output=True, text=True,
                              env={**ENV, **env}, timeout=HANG_GUARD_S)

    missing = run(tmp_path / "none.json")
    assert missing.returncode == 2 and "cannot read the connection config" in missing.stderr
    (tmp_path / "bad.json").write_text("{")
    assert "is not valid JSON" in run(tmp_path / "bad.json").stderr
    (tmp_path / "empty.json").write_text("{}")
    empty = run(tmp_path / "empty.json")
    assert empty.returncode == 2 and "names its connection chain" in empty.stderr
    assert "Traceback" not in missing.stderr + empty.stderr


def test_a_target_chain_whose_node_is_killed_delays_the_payout_which_then_goes_once(chains):
    transfer = {"id": "down-0001", "rule": 7, "payer": HANAKO, "payee": SHOP,
                "amount": AMOUNT, "accept": True}
    config = chains.write_config([transfer])
    before = chains.balance("a", HANAKO), chains.balance("b", SHOP)
    # The connection node is killed just before the payout goes to chain B, and so is B's node.
    stopped = run_connection_node(config, f"before send to chain {CHAIN_B}")
    assert stopped["point"] == f"before send to chain {CHAIN_B}"
    chains.kill("b")
    down = run_connection_node(config, fails=True)
    assert "cannot connect" in down["errors"] and "Traceback" not in down["errors"]
    assert chains.held("a", HANAKO) == AMOUNT  # in escrow meanwhile, nothing paid
    chains.start("b")
    assert chains.balance("b", SHOP) == before[1]
    [report] = run_connection_node(chains.write_config([transfer]))["reports"]
    assert report["state"] == "complete" and len(report["steps"]) == 12
    assert (chains.balance("a", HANAKO), chains.balance("b", SHOP)) == \
        (before[0] - AMOUNT, before[1] + PAYOUT)
    assert payouts_to_shop(chains, cc.transfer_tag(b"down-0001")) == 1
    assert {name: chains.total(name) for name in "ab"} == chains.totals
    assert chains.held("a", HANAKO) == 0
