"""Acknowledged means durable: a node killed with SIGKILL under load keeps all it answered.

Method: a prepared chain is served by a node in its own process and driven by the load
generator in this process, which keeps every request's answer and txids. In each of three
rounds (signed batches, batch-authorized batches, one signed transfer per request from many
connections) the test kills the node with SIGKILL once a random share of the load is answered,
restarts it on the same data directory, and checks that every transfer answered before the
kill is stored with its code. The requests left unanswered are sent again: each transfer then
answers ok or already_committed with original code ok, so every transfer sent is committed
exactly once. At the end the balances equal the funding moved by all those transfers, and
Ledger.verify() passes on the whole chain.
"""

from __future__ import annotations

import random
import signal

import numpy as np

from tsunagi import loadgen as lg
from tsunagi.core.block import decode_block
from tsunagi.core.codes import Result
from tsunagi.ledger import Ledger
from tsunagi.node import protocol as p
from tsunagi.node.client import Client

ACCOUNTS = 200
# (mode, transfers, per request, connections): each a second or two of load on a small machine.
ROUNDS = [("batched", 12_000, 300, 4), ("batch-authorized", 150_000, 5000, 3),
          ("baseline", 3000, 1, 24)]


def kill_midway(node: lg.NodeProcess, count: int, rng: random.Random):
    """A progress callback that SIGKILLs the node once 20..60% of ``count`` is answered."""
    threshold = int(count * rng.uniform(0.2, 0.6))

    def tick(elapsed_s: float, totals: np.ndarray) -> None:
        if totals[0] >= threshold and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
    return tick


def answered_codes(traffics, runs) -> dict[bytes, int]:
    """txid -> final code of every transfer whose request was answered."""
    found = {}
    for traffic, run in zip(traffics, runs):
        slices = traffic.record_slices()
        for index, codes in run.codes.items():
            for txid, code in zip(traffic.txids[slices[index]], codes):
                found[txid.tobytes()] = code
    return found


def stored_codes(ledger: Ledger) -> dict[bytes, int]:
    """txid -> code of every record stored in the chain, read block by block."""
    stored = {}
    for height in range(1, ledger.height):
        block = decode_block(ledger.block(height))
        for txid, code in zip(block.txids(), block.codes.tolist()):
            stored[bytes(txid)] = code
    return stored


def resend_unanswered(port: int, pending: list[tuple[lg.Traffic, lg.ClientRun]]) -> dict:
    """Sends every unanswered request again; returns txid -> final code of those transfers."""
    again = [t.unanswered(r) for t, r in pending]
    again = [t for t in again if t.frames]
    if not again:
        return {}
    spec = lg.LoadSpec(mode="batched", clients=len(again), count=len(again), keep=True)
    result = lg.drive_traffic("127.0.0.1", port, again, spec)
    assert result.summary["requests_answered"] == sum(len(t.frames) for t in again)
    return answered_codes(again, result.runs)


def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(20_240_601)
    plan = lg.prepare_chain(tmp_path / "chain", ACCOUNTS, keys=4)
    sent, acknowledged, pending, interrupted = [], {}, [], 0
    for mode, count, size, clients in [*ROUNDS, (None, 0, 0, 0)]:
        node = lg.NodeProcess(tmp_path / "chain", settings={"group_wait_ms": 1}).start()
        # Each transfer sent again answers ok (committed now) or already_committed with
        # original code ok (the killed node had committed it): exactly once either way.
        assert set(resend_unanswered(node.port, pending).values()) <= {Result.ok}
        if mode is None:
            node.stop()
            break
        spec = lg.LoadSpec(mode=mode, clients=clients, count=count, batch_size=size,
                           keep=True, window=2)
        result = lg.run_load("127.0.0.1", node.port, plan, spec,
                             tick=kill_midway(node, count, rng))
        node.kill()
        interrupted += bool(result.summary["lost"])
        acknowledged.update(answered_codes(result.traffics, result.runs))
        sent += result.traffics
        pending = list(zip(result.traffics, result.runs))
    assert interrupted >= 2, "the kills should land while requests are in flight"
    with Ledger.open(tmp_path / "chain") as ledger:
        stored = stored_codes(ledger)
        assert all(stored.get(txid) == code for txid, code in acknowledged.items())
        assert set(acknowledged.values()) == {Result.ok}
        assert all(txid.tobytes() in stored for traffic in sent for txid in traffic.txids)
        moves = np.zeros(ACCOUNTS, np.int64)
        for traffic in sent:
            np.add.at(moves, traffic.records["credit_account"].astype(np.int64) - 2, 1)
            np.add.at(moves, traffic.records["debit_account"].astype(np.int64) - 2, -1)
        balances = np.array([ledger.balance(int(a)) for a in plan.accounts], np.int64)
        assert np.array_equal(balances - lg.funding_units, moves)
        assert ledger.verify().ok


def test_a_committed_batch_authorized_request_is_a_retry(tmp_path):
    plan = lg.prepare_chain(tmp_path / "chain", 20, keys=1)
    spec = lg.LoadSpec(mode="batch-authorized", clients=1, count=50, batch_size=50)
    traffic = lg.build_traffic(plan, spec, 0)
    with lg.NodeProcess(tmp_path / "chain", settings={"group_wait_ms": 1}) as node, \
            Client("127.0.0.1", node.port) as client:
        message = p.decode_message(traffic.frames[0])[1]
        first = client.submit_batch(message.records, b"", message.batches)
        assert first.codes.tolist() == [Result.ok] * 50
        again = client.submit_batch(message.records, b"", message.batches)
        assert again.codes.tolist() == [Result.already_committed] * 50
        assert again.final_codes().tolist() == [Result.ok] * 50
