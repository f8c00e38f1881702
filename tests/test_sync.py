"""Nodes that were away, or are new, sync from their peers; lying peers are cut off.

Method: a chain of 10,000 one-transfer blocks is built once in this process. Node A serves it
(its data directory holds all of it); node B is a copy of A's directory from 1,000 blocks
earlier (it was offline while they were mined); node C is new (genesis only). B and C start
with A (and each other) as peers: B must catch up the 1,000 blocks and C sync all 10,000, to
A's tip and state. Two lying peers dial C during its sync: one answers with the honest headers
and then serves blocks whose bodies were changed, one spams a valid-work header branch with
less work than C's chain. C must close both with error misbehaving (and ban them) and finish
its sync from the honest peers. Real `tsunagi node` processes over loopback; waits poll with
a hang guard only.
"""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from tsunagi.core.block import HEADER_BYTES, decode_block
from tsunagi.ledger.ledger import Ledger
from tsunagi.node import protocol as p

from net_helpers import (
    LyingPeer,
    NetNode,
    Payments,
    balances,
    build_chain,
    data_dirs,
    fork_headers,
    free_ports,
    tips,
    wait_until,
)

BLOCKS = 10_000
OFFLINE = 1_000


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync")
    a_dir, c_dir = data_dirs(root, 2)
    payments = Payments()
    build_chain(a_dir, BLOCKS - OFFLINE, payments)
    b_dir = root / "node_b"
    shutil.copytree(a_dir, b_dir)  # B goes offline here
    build_chain(a_dir, OFFLINE, payments)
    ledger = Ledger.open(a_dir, threads=1)
    try:
        headers = b"".join(ledger.block(h)[:HEADER_BYTES] for h in range(1, ledger.height))
        bodies = {decode_block(ledger.block(h)).hash: ledger.block(h)
                  for h in range(1, ledger.height)}
        genesis_hash = ledger.tip_hash if ledger.height == 1 else \
            decode_block(ledger.block(0)).hash
        fork = fork_headers(ledger.block(100)[:HEADER_BYTES], 5)
    finally:
        ledger.close()
    return a_dir, b_dir, c_dir, headers, bodies, genesis_hash, fork


def test_offline_node_catches_up_new_node_syncs_and_liars_are_cut_off(chains):
    a_dir, b_dir, c_dir, headers, bodies, genesis_hash, fork = chains
    ports = free_ports(3)
    a = NetNode(a_dir, ports[0], [], mine=True)
    b = NetNode(b_dir, ports[1], [f"127.0.0.1:{ports[0]}"], mine=False)
    c = NetNode(c_dir, ports[2], [f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"],
                mine=False, extra=("--http", "127.0.0.1:0", "--metrics"))
    liars = []
    try:
        a.start()
        b.start()
        assert tips([b])[0][0] == BLOCKS - OFFLINE
        wait_until(lambda: tips([b]) == tips([a]), "B to catch up the blocks mined while "
                   "it was away")
        c.start()
        # It dials C at once, before C has asked its honest peers for much.
        liars.append(LyingPeer(("127.0.0.1", ports[2]), genesis_hash, headers, bodies,
                               "bad_blocks"))
        wait_until(lambda: tips([c])[0][0] > 200, "C to start syncing")
        low_work = LyingPeer(("127.0.0.1", ports[2]), genesis_hash, fork, {}, "low_work",
                             listen_port=2)
        liars.append(low_work)
        wait_until(lambda: tips([c]) == tips([a]), "C to sync the whole chain",
                   timeout_s=300)
        assert tips([a])[0][0] == BLOCKS
        accounts = range(1, 10)
        assert (balances(c, accounts) == balances(a, accounts)).all()
        assert (balances(b, accounts) == balances(a, accounts)).all()
        for liar in liars:
            assert liar.closed.wait(60)
            assert p.ErrorCode.misbehaving in liar.errors, liar.errors
        # The REST status and the metrics show the network side.
        status = json.loads(urllib.request.urlopen(c.ready["http"] + "/v1/status").read())
        network = status["network"]
        assert network["peers"] == 2 and network["best_header_height"] == BLOCKS
        assert network["bans"] == 2 and network["invalid"] == 0 and not network["mines"]
        assert int(network["work"]) == 2 * (BLOCKS + 1)  # 2 per block at the dev bits
        metrics = urllib.request.urlopen(c.ready["metrics"]).read().decode()
        assert "tsunagi_peers 2.0" in metrics and "tsunagi_bans_total 2.0" in metrics
    finally:
        for node in (a, b, c):
            node.stop()
