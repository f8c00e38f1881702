"""A node and its clients in separate processes, and in separate network namespaces, agree.

Method: a prepared chain is served by a node in its own process; the load generator command
runs in another process and commits transfers; a third process queries balances, the newest
block and a transaction by txid. The test checks the load generator's report against the
node's own counters and the queried state (money conserved and moved, the transaction found in
the block that holds it). The loopback variant always runs. The namespace variant puts the node
in one network namespace and the load generator and the queries in another, joined by a veth
pair with addresses in 10.200.x.0/24 that exist only inside those namespaces; it needs root and
the `ip` command, skips with the reason otherwise, and deletes its namespaces even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tsunagi import hashing
from tsunagi import loadgen as lg
from tsunagi.core.records import Kind, unpack

ACCOUNTS = 30
TRANSFERS = 2000

QUERY = textwrap.dedent("""
    import json, sys
    from tsunagi import hashing
    from tsunagi.core.block import decode_block
    from tsunagi.node.client import Client
    host, port, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with Client(host, port) as client:
        status = client.status()
        balances = [client.balance(a) for a in range(first, first + count)]
        block = client.block(status.height)
        txid = bytes(decode_block(block).txids()[-1])
        found = client.transaction(txid)
        print(json.dumps({
            "records_committed": status.records_committed, "balances": balances,
            "block_hash": hashing.header_hash(block[:80]).hex(), "found_height": found.height,
            "found_block_hash": found.block_hash.hex(), "code": int(found.code),
            "record": found.record.hex(), "txid": txid.hex()}))
""")


def drive_and_query(tmp_path, bind: str, connect: str, node_prefix=(), client_prefix=()):
    """Node in one process (under node_prefix), load and queries in others (client_prefix)."""
    plan = lg.prepare_chain(tmp_path / "chain", ACCOUNTS, keys=2)
    with lg.NodeProcess(tmp_path / "chain", bind, settings={"group_wait_ms": 1},
                        prefix=node_prefix) as node:
        loadgen = subprocess.run(
            [*client_prefix, sys.executable, "-m", "tsunagi.loadgen",
             "--target", f"{connect}:{node.port}", "--accounts", str(ACCOUNTS), "--keys", "2",
             "--mode", "batched", "--count", str(TRANSFERS), "--batch-size", "250",
             "--clients", "2", "--json"], capture_output=True, text=True, timeout=120)
        assert loadgen.returncode == 0, loadgen.stderr
        query = subprocess.run(
            [*client_prefix, sys.executable, "-c", QUERY, connect, str(node.port),
             str(plan.accounts[0]), str(ACCOUNTS)], capture_output=True, text=True, timeout=60)
        assert query.returncode == 0, query.stderr
    return plan, json.loads(loadgen.stdout), json.loads(query.stdout)


def check_agreement(plan, summary: dict, seen: dict) -> None:
    assert summary["records_ok"] == TRANSFERS and summary["codes"] == {"ok": TRANSFERS}
    before, after = summary["node_before"], summary["node_after"]
    assert after["records_committed"] - before["records_committed"] == TRANSFERS
    assert seen["records_committed"] == after["records_committed"]
    balances = seen["balances"]
    assert sum(balances) == ACCOUNTS * lg.funding_units  # transfers only move money around
    assert any(balance != lg.funding_units for balance in balances)
    record = unpack(bytes.fromhex(seen["record"]))
    assert record["kind"] == Kind.transfer and record["amount"] == 1
    assert {record["debit_account"], record["credit_account"]} <= set(plan.accounts.tolist())
    assert hashing.sha256d(bytes.fromhex(seen["record"])).hex() == seen["txid"]
    assert seen["code"] == 0 and seen["found_block_hash"] == seen["block_hash"]


def test_node_and_load_generator_in_separate_processes_on_loopback(tmp_path):
    check_agreement(*drive_and_query(tmp_path, "127.0.0.1", "127.0.0.1"))


def _ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *arguments], capture_output=True, text=True, check=check,
                          timeout=30)


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need the ip command (iproute2)"
    probe = f"tsgprobe{os.getpid()}"
    added = _ip("netns", "add", probe, check=False)
    if added.returncode:
        return f"`ip netns add` failed: {added.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@contextlib.contextmanager
def two_namespaces():
    """(node namespace, client namespace, node address) joined by a veth pair; always removed."""
    tag = os.getpid() % 100_000
    node_ns, client_ns = f"tsg{tag}n", f"tsg{tag}c"
    subnet = f"10.200.{tag % 250 + 1}"
    node_link, client_link = f"tsg{tag}a", f"tsg{tag}b"
    try:
        _ip("netns", "add", node_ns)
        _ip("netns", "add", client_ns)
        _ip("link", "add", node_link, "type", "veth", "peer", "name", client_link)
        for namespace, link, host in ((node_ns, node_link, 1), (client_ns, client_link, 2)):
            _ip("link", "set", link, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{subnet}.{host}/24", "dev", link)
            _ip("-n", namespace, "link", "set", link, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield node_ns, client_ns, f"{subnet}.1"
    finally:
        # Deleting a namespace deletes the veth end inside it, and so the whole pair.
        _ip("netns", "del", node_ns, check=False)
        _ip("netns", "del", client_ns, check=False)
        _ip("link", "del", node_link, check=False)  # if it never reached its namespace


def test_node_and_load_generator_in_two_network_namespaces(tmp_path):
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    with two_namespaces() as (node_ns, client_ns, address):
        node_prefix = ("ip", "netns", "exec", node_ns)
        client_prefix = ("ip", "netns", "exec", client_ns)
        # The client namespace reaches the node only over the veth pair: not its own loopback.
        check_agreement(*drive_and_query(tmp_path, address, address, node_prefix,
                                         client_prefix))
    listed = _ip("netns", "list").stdout
    assert node_ns not in listed and client_ns not in listed


def test_namespaces_are_removed_when_the_body_fails():
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    with pytest.raises(RuntimeError, match="inside"), two_namespaces() as (node_ns, _, _):
        assert node_ns in _ip("netns", "list").stdout
        raise RuntimeError("a failure inside")
    assert node_ns not in _ip("netns", "list").stdout
    assert f"tsg{os.getpid() % 100_000}a" not in _ip("link").stdout
