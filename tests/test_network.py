"""Many nodes, one chain: real `tsunagi node` processes over TCP agree on the most-work chain.

Method: four node processes of one chain on loopback, two of them mining; the links between
the two halves {0, 2} and {1, 3} go through relays in the test process (tests/net_helpers.py,
Switch) that the test cuts (a partition: connections dropped, new ones refused) and mends.
Clients submit signed transfers to every node; during the partition each half extends its own
branch, one half more than the other. After the heal all four must reach the same tip, the
most-work one, with the same balances; every transfer a client saw confirmed on the losing
branch must be on the winning chain again, or its node must say why not (a conflicting
transfer of the same payer and sequence on the winning branch). The network-namespace
variant splits the halves across two namespaces joined by a veth pair and partitions them by
taking the link down; TCP delivers what it held once the link is up, relayed records before
the blocks that hold them, so there the shorter half's miner may overtake and either branch
can be the winner the nodes agree on. Waits poll with a generous hang guard; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from tsunagi.core.block import decode_block
from tsunagi.errors import NodeError

from net_helpers import (
    PAYERS,
    NetNode,
    Payments,
    Switch,
    balances,
    data_dirs,
    free_ports,
    tips,
    wait_until,
)

ACCOUNTS = range(1, PAYERS + 2)


def _submit(node: NetNode, payments: Payments, batches: int, payer: int,
            amount: int | None = None) -> list[bytes]:
    """Submits ``batches`` single transfers of ``payer`` to ``node``; the txids confirmed."""
    from tsunagi import hashing

    confirmed = []
    with node.client() as client:
        for _ in range(batches):
            records, signatures = payments.batch(1, payer=payer, amount=amount)
            answer = client.submit_batch(records, signatures)
            assert answer.height is not None and not answer.codes.any(), answer
            confirmed.append(hashing.sha256d_records(records, 128)[0].tobytes())
    return confirmed


def _converged(nodes: list[NetNode]):
    found = tips(nodes)
    return found[0] if len(set(found)) == 1 else None


def _agreed(nodes: list[NetNode], miner: NetNode, payments: Payments, what, least: int = 0):
    """Waits for the nodes to share one tip at height ``least`` or more. Two miners' branches
    of equal work stay apart until a block breaks the tie, and these miners mine only when
    records wait; so while the nodes disagree, a transfer now and then goes to ``miner``. How
    many it takes does not matter; where the nodes end up does."""
    polls = [0]

    def agreed():
        found = _converged(nodes)
        if found and found[0] >= least:
            return found
        polls[0] += 1
        if polls[0] % 100 == 0:
            _submit(miner, payments, 1, payer=1)
        return None
    return wait_until(agreed, lambda: f"{what} (tips {tips(nodes)}, after {polls[0] // 100} "
                      "tie-breaking transfers)")


def _run_partition(nodes: list[NetNode], cut, mend) -> None:
    half_a, half_b = [nodes[0], nodes[2]], [nodes[1], nodes[3]]
    payments = Payments()
    # Everyone in touch: records reach the miners from every node.
    _submit(nodes[2], payments, 2, payer=1)
    _submit(nodes[3], payments, 2, payer=5)
    start_height = _agreed(nodes, nodes[1], payments,
                           "the four nodes to agree before the partition")[0]

    cut()
    # Each half extends its own branch; half b by more blocks (more work).
    seen_on_a = _submit(nodes[2], payments, 2, payer=2) + _submit(nodes[0], payments, 1, payer=3)
    conflict = Payments()
    conflict.sequence = dict(payments.sequence)
    seen_on_a += _submit(nodes[0], payments, 1, payer=4)  # payer 4 uses its next sequence here
    # ... and the same sequence, another amount, on the other side: the two conflict.
    seen_on_b = _submit(nodes[1], conflict, 1, payer=4, amount=99)
    seen_on_b += _submit(nodes[3], payments, 4, payer=6) + _submit(nodes[1], payments, 1, payer=7)
    a_tip = wait_until(lambda: _converged(half_a), "half a to agree")
    b_tip = wait_until(lambda: _converged(half_b), "half b to agree")
    assert a_tip != b_tip and b_tip[0] > a_tip[0] > start_height

    mend()
    # (A link taken down can let half a's miner catch up: see the module's docstring.)
    final = _agreed(nodes, nodes[1], payments, "the four nodes to agree after the heal",
                    least=b_tip[0])
    # The most-work tip wins: half b's as the partition left it, or a chain built on it (half
    # a's records mined again). Where the cut queued data instead of dropping connections (a
    # link taken down: TCP sends what it held once the link is up), half a's miner may first
    # mine half b's relayed records on its own branch and overtake: then half a's branch wins.
    with nodes[0].client() as client:
        b_won = decode_block(client.block(b_tip[0])).hash == b_tip[1]
        if not b_won:
            assert decode_block(client.block(a_tip[0])).hash == a_tip[1], "neither branch won"
    loser_tip, seen_on_loser = (a_tip, seen_on_a) if b_won else (b_tip, seen_on_b)
    # The loser's records go back to the miners and may make a block just after the tips
    # met: the nodes agree once they hold the same tip and the same balances at one reading.
    def agreed():
        tip = _converged(nodes)
        first = balances(nodes[0], ACCOUNTS)
        same = all((balances(node, ACCOUNTS) == first).all() for node in nodes[1:])
        return bool(tip and same and _converged(nodes) == tip)
    wait_until(agreed, lambda: f"the nodes to hold the same balances at one tip ({tips(nodes)})")
    networks = []
    for node in nodes:
        with node.client() as client:
            networks.append(client.network())
    assert len({(n.height, n.work) for n in networks}) == 1
    assert [n.mines for n in networks] == [True, True, False, False]
    assert all(n.peers >= 1 for n in networks)
    # The losing half's nodes followed the winning branch: a reorg each, as deep as their own.
    assert all(n.reorgs >= 1 and n.reorg_depth_max >= loser_tip[0] - start_height
               for n in (networks[0::2] if b_won else networks[1::2]))

    # Transfers confirmed on the losing branch: on the winning chain again, or told why not by
    # the losing half's miner, which took its branch's records back and tried them again.
    asked = nodes[0] if b_won else nodes[1]

    def included_again():
        with asked.client() as client:
            for txid in seen_on_loser:
                try:
                    if client.transaction(txid) is None:
                        return False
                except NodeError:
                    pass  # answered with why not
            return True
    wait_until(included_again, lambda: "the losing half's transfers to be mined on the winning "
               f"chain (statuses {[node.status() for node in nodes]})")
    with asked.client() as client:
        reasons = []
        for txid in seen_on_loser:
            try:
                assert client.transaction(txid) is not None
            except NodeError as exc:
                reasons.append(f"{seen_on_loser.index(txid)}: {exc}")
    assert len(reasons) == 1 and "sequence_used" in reasons[0], "\n".join(reasons)
    assert final[0] >= b_tip[0]
    # A client waits for confirmations: two more blocks on top of a transfer's.
    (txid,) = _submit(nodes[3], payments, 1, payer=8)
    with nodes[2].client() as client:
        found = client.wait_confirmed(txid, 1, timeout_s=120)
        _submit(nodes[0], payments, 2, payer=1)
        deeper = client.wait_confirmed(txid, 3, timeout_s=120)
        assert deeper.height == found.height
        assert client.confirmations(txid)[0] >= 3


def test_four_nodes_partition_and_heal_on_loopback(tmp_path):
    dirs = data_dirs(tmp_path, 4)
    ports = free_ports(4)
    switch = Switch()
    direct = {(0, 2), (1, 3)}

    def address(src: int, dst: int) -> str:
        if (min(src, dst), max(src, dst)) in direct:
            return f"127.0.0.1:{ports[dst]}"
        return f"127.0.0.1:{switch.relay(ports[dst])}"
    nodes = [NetNode(dirs[n], ports[n], [address(n, m) for m in range(n + 1, 4)],
                     mine=n in (0, 1)) for n in range(4)]
    try:
        for node in nodes:
            node.start()
        _run_partition(nodes, lambda: switch.set_cut(True), lambda: switch.set_cut(False))
    finally:
        for node in nodes:
            node.stop()
        switch.close()


@contextlib.contextmanager
def _two_namespaces_with_control():
    """Namespaces a and b joined by a veth pair (the link the test takes down), and each also
    joined to this process's namespace by a veth pair of its own (the test's clients use those,
    so they reach both halves during the partition). Yields (ns_a, ns_b, the a end of the a-b
    link, {ns: (address on the a-b link, control address)}); everything is removed after."""
    from test_netns import _ip

    tag = os.getpid() % 100_000
    ns_a, ns_b = f"tsg{tag}p", f"tsg{tag}q"
    net = tag % 200 + 20
    links = [(f"tsg{tag}ab", f"tsg{tag}ba", None, ns_a, ns_b, f"10.{net}.0"),
             (f"tsg{tag}ra", f"tsg{tag}ar", None, None, ns_a, f"10.{net}.1"),
             (f"tsg{tag}rb", f"tsg{tag}br", None, None, ns_b, f"10.{net}.2")]
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        for namespace in (ns_a, ns_b):
            _ip("-n", namespace, "link", "set", "lo", "up")
        for one, two, _, ns_one, ns_two, subnet in links:
            _ip("link", "add", one, "type", "veth", "peer", "name", two)
            for link, namespace, host in ((one, ns_one, 1), (two, ns_two, 2)):
                prefix = ["-n", namespace] if namespace else []
                if namespace:
                    _ip("link", "set", link, "netns", namespace)
                _ip(*prefix, "addr", "add", f"{subnet}.{host}/24", "dev", link)
                _ip(*prefix, "link", "set", link, "up")
        yield ns_a, ns_b, links[0][0], {ns_a: (f"10.{net}.0.1", f"10.{net}.1.2"),
                                         ns_b: (f"10.{net}.0.2", f"10.{net}.2.2")}
    finally:
        _ip("netns", "del", ns_a, check=False)
        _ip("netns", "del", ns_b, check=False)
        for one, *_ in links:
            _ip("link", "del", one, check=False)


def test_four_nodes_partition_and_heal_across_two_network_namespaces(tmp_path):
    from test_netns import _ip, namespaces_unavailable

    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    dirs = data_dirs(tmp_path, 4)
    port = free_ports(1)[0]
    with _two_namespaces_with_control() as (ns_a, ns_b, link_ab, addresses):
        namespace = {0: ns_a, 2: ns_a, 1: ns_b, 3: ns_b}
        ports = {0: port, 2: port + 1, 1: port, 3: port + 1}
        nodes = []
        for n in range(4):
            mine = namespace[n]
            # Within a namespace over its loopback, across over the a-b link.
            peers = [f"{'127.0.0.1' if namespace[m] == mine else addresses[namespace[m]][0]}:"
                     f"{ports[m]}" for m in range(n + 1, 4)]
            node = NetNode(dirs[n], ports[n], peers, mine=n in (0, 1), netns=mine,
                           host="0.0.0.0")
            nodes.append(node)
        try:
            for node in nodes:
                node.start()
                node.host = addresses[node.netns][1]  # this process reaches it here
            _run_partition(nodes, lambda: _ip("-n", ns_a, "link", "set", link_ab, "down"),
                           lambda: _ip("-n", ns_a, "link", "set", link_ab, "up"))
        finally:
            for node in nodes:
                node.stop()
    listed = _ip("netns", "list").stdout
    assert ns_a not in listed and ns_b not in listed


def test_a_relay_passes_through_a_node_once(tmp_path):
    """Records relayed to a node that does not mine go on to its peers once: a mesh of such
    nodes does not pass them round for ever (PeerNetwork.first_time)."""
    from tsunagi.consensus.chain import Chain
    from tsunagi.ledger.ledger import Ledger
    from tsunagi.node import limits
    from tsunagi.node.peers import PeerNetwork, PeerSettings

    (data,) = data_dirs(tmp_path, 1)
    ledger = Ledger.open(data, threads=1)
    try:
        network = PeerNetwork(Chain(ledger), PeerSettings())
        records = [Payments().batch(1, payer=n)[0] for n in range(1, 4)]
        assert [network.first_time(r) for r in records] == [True, True, True]
        assert [network.first_time(r) for r in records] == [False, False, False]
        for n in range(limits.relays_remembered_max):  # the memory is bounded: oldest out
            network.first_time(n.to_bytes(8, "little"))
        assert network.first_time(records[0])
    finally:
        ledger.close()
