"""`tsunagi demo --ethereum`: demo 1 with chain B an Ethereum chain in the process, run as a
user runs it (the command in a subprocess) and through its library call. What is checked is
what an operator reads: each order's final state and trail, with the payout proven on
Ethereum, the balances moved exactly on chain A and on the Ethereum token, and money conserved.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tsunagi.connect.demo import CHAIN_A, ETH_POOL_TOKENS, run_ethereum_demo

from net_helpers import ENV


def tsunagi(*words, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsunagi", *map(str, words)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def test_demo_one_on_ethereum_pays_the_bookstore_in_tokens_and_refunds_the_other(tmp_path):
    run = run_ethereum_demo(tmp_path / "d")
    assert [t["state"] for t in run.transfers] == ["complete", "refunded"]
    done, refunded = run.transfers
    assert [step["chain_name"] for step in done["trail"]][5:7] == ["Ethereum", "Ethereum"]
    assert [step["step"] for step in done["trail"]][5:8] == [
        "payout", "payout_final", "payout_seen"]
    assert [step["step"] for step in refunded["trail"]][-3:] == [
        "refund", "refund_final", "refund_seen"]
    assert done["payout"] == (done["amount"] - 10) * 6 // 5
    before = {(row["chain"], row["name"]): row["balance"] for row in run.balances_before}
    after = {(row["chain"], row["name"]): row["balance"] for row in run.balances_after}
    a = CHAIN_A.chain_id
    eth = next(chain for chain, _ in after if chain != a)
    assert before[a, "hanako"] - after[a, "hanako"] == done["amount"]
    assert after[a, "exchange"] - before[a, "exchange"] == done["amount"]
    assert (before[eth, "bookstore"], after[eth, "bookstore"]) == (0, done["payout"])
    assert (before[eth, "pool"], after[eth, "pool"]) == (ETH_POOL_TOKENS,
                                                         ETH_POOL_TOKENS - done["payout"])
    assert sum(before.values()) == sum(after.values())
    assert all(row["held"] == 0 for row in run.balances_after)  # escrow on A empty


def test_the_command_prints_both_trails_and_leaves_chain_a_to_tsunagi_connect(tmp_path):
    directory = tmp_path / "demo"
    done = tsunagi("demo", "--ethereum", "--data", directory)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = " ".join(done.stdout.split())
    assert "order-0001" in shown and "complete" in shown
    assert "order-0002" in shown and "refunded" in shown
    assert "Ethereum" in shown and "payout_final" in shown and "refund_final" in shown
    listed = tsunagi("connect", "--data", directory, "chains", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    kinds = {chain["kind"]: chain for chain in json.loads(listed.stdout)}
    assert set(kinds) == {"tsunagi-pow", "ethereum"}
    assert kinds["ethereum"]["light_client_height"] > 0  # the contract followed Ethereum
