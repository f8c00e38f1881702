"""`tsunagi demo` (ConnectionChain's demo 1 on the embedded store), `tsunagi connect` and the
operators' REST API, run as users run them: the commands in subprocesses, the API served by
`tsunagi connect serve` and asked over HTTP. What is checked is what an operator reads: each
transfer's final state and trail, balances moved exactly, proofs that check from the headers
alone, and refusals with the contract's codes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from tsunagi import hashing
from tsunagi.connect import contract as cc
from tsunagi.connect.demo import CHAIN_A, CHAIN_B, CHAIN_D, CHAIN_T, run_connect_demo
from tsunagi.connect.deployment import Deployment
from tsunagi.core.codes import Result
from tsunagi.errors import StorageError

from net_helpers import ENV, free_ports, wait_until


def tsunagi(*words, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsunagi", *map(str, words)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def deployment_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("connect") / "demo"
    done = tsunagi("demo", "--data", directory)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = " ".join(done.stdout.split())
    assert "order-0001" in shown and "complete" in shown
    assert "order-0002" in shown and "refunded" in shown
    assert "settle_final" in shown and "refund_final" in shown  # the trails are printed
    assert "Demo 2" in shown and "charge_final" in shown and "charge_refused_final" in shown
    return directory


def check_proof(step: dict) -> None:
    """A step on a linked chain, checked from its proof alone: the record hashes to the txid,
    its Merkle path leads to the header's root, and the header hashes to the block named."""
    proof = step["proof"]
    header, record = bytes.fromhex(proof["header"]), bytes.fromhex(proof["record"])
    assert hashing.sha256d(record).hex() == step["txid"]
    assert hashing.sha256d(header)[::-1].hex() == step["block_hash"]
    assert cc.walk_path(hashing.sha256d(record), [bytes.fromhex(n) for n in proof["path"]],
                        proof["position"], proof["record_count"] + 1, header[36:68])
    assert proof["code"] == "ok"


def test_the_demo_completes_one_order_and_refunds_the_other_with_money_conserved(tmp_path):
    run = run_connect_demo(tmp_path / "d")
    assert [t["state"] for t in run.transfers] == ["complete", "refunded"]
    assert [len(t["trail"]) for t in run.transfers] == [12, 8]
    done, refunded = run.transfers
    before = {(row["chain"], row["name"]): row["balance"] for row in run.balances_before}
    after = {(row["chain"], row["name"]): row["balance"] for row in run.balances_after}
    a, b = CHAIN_A.chain_id, CHAIN_B.chain_id
    # Hanako paid the first order only; the exchange got it all (fee included); the
    # bookstore got the payout from the pool, in B.
    assert before[a, "hanako"] - after[a, "hanako"] == done["amount"]
    assert after[a, "exchange"] - before[a, "exchange"] == done["amount"]
    assert after[b, "bookstore"] - before[b, "bookstore"] == done["payout"]
    assert before[b, "pool"] - after[b, "pool"] == done["payout"]
    assert sum(before.values()) == sum(after.values())
    assert all(row["held"] == 0 for row in run.balances_after)  # escrow empty
    assert done["payout"] == (done["amount"] - 10) * 6 // 5
    assert [step["step"] for step in refunded["trail"]][-3:] == [
        "refund", "refund_final", "refund_seen"]
    # Demo 2: the access before the rule is not billed; the four after it are, the startup's
    # second unpaid (it had tokens for one), with the token chain's refusal proven.
    d, t = CHAIN_D.chain_id, CHAIN_T.chain_id
    assert [run.accessed_by[bill["access"]] for bill in run.bills] == [
        "lab", "startup", "lab", "startup"]
    assert [bill["state"] for bill in run.bills] == ["complete", "complete", "complete",
                                                     "unpaid"]
    assert run.bills[-1]["refusal"] == Result.insufficient_funds
    assert run.unbilled[0] not in {bill["access"] for bill in run.bills}
    assert after[t, "city"] - before[t, "city"] == 3 * 25
    assert (before[t, "lab"] - after[t, "lab"], before[t, "startup"] - after[t, "startup"]) \
        == (50, 25)
    assert before[d, "lab"] - after[d, "lab"] == 3  # three accesses, one data unit each
    assert [step["step"] for step in run.bills[-1]["trail"]] == [
        "access", "access_final", "bill", "charge_refused", "charge_refused_final", "unpaid"]
    # Run again in the same place: the earlier demo's deployment is replaced ...
    again = run_connect_demo(tmp_path / "d")
    assert [t["state"] for t in again.transfers] == ["complete", "refunded"]
    # ... but a directory the demo did not make is never touched.
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "file").write_text("keep")
    with pytest.raises(StorageError, match="--data"):
        run_connect_demo(tmp_path / "precious")
    assert (tmp_path / "precious" / "file").read_text() == "keep"


def test_connect_lists_and_proves_what_the_demo_left(deployment_dir):
    listed = tsunagi("connect", "--data", deployment_dir, "transfers", "--json")
    assert listed.returncode == 0, listed.stderr
    states = {t["id"]: t["state"] for t in json.loads(listed.stdout)}
    assert states == {"order-0001": "complete", "order-0002": "refunded"}
    chains = json.loads(tsunagi("connect", "--data", deployment_dir, "chains", "--json").stdout)
    assert [c["chain_id"] for c in chains] == [CHAIN_A.chain_id, CHAIN_B.chain_id,
                                               CHAIN_D.chain_id, CHAIN_T.chain_id]
    assert all(c["light_client_height"] >= 1 for c in chains)
    rules = json.loads(tsunagi("connect", "--data", deployment_dir, "rules", "--json").stdout)
    assert [(r["rule_id"], r["rate_numerator"], r["rate_denominator"]) for r in rules] == \
        [(1, 6, 5)]
    trail = tsunagi("connect", "--data", deployment_dir, "trail", "order-0001", "--proofs",
                    "--json")
    assert trail.returncode == 0, trail.stderr
    transfer = json.loads(trail.stdout)
    proven = [step for step in transfer["trail"] if step["chain"] != 200]
    assert [step["step"] for step in proven] == [
        "escrow", "escrow_final", "payout", "payout_final", "settle", "settle_final"]
    for step in proven:
        check_proof(step)
    table = tsunagi("connect", "--data", deployment_dir, "trail", "order-0002")
    assert "refund_final" in table.stdout
    bills = tsunagi("connect", "--data", deployment_dir, "bills", "--proofs", "--json")
    assert bills.returncode == 0, bills.stderr
    found = json.loads(bills.stdout)
    assert [bill["state"] for bill in found] == ["complete"] * 3 + ["unpaid"]
    for bill in found[:3]:
        for step in bill["trail"]:
            if step["chain"] != 200:
                check_proof(step)
    refused = [step for step in found[3]["trail"] if step["step"] == "charge_refused"][0]
    assert refused["proof"]["code"] == "insufficient_funds"  # the refusal is proven too


def test_connect_pays_and_refuses_in_the_words_of_the_command_line(deployment_dir):
    paid = tsunagi("connect", "--data", deployment_dir, "pay", "--rule", "1", "--payer",
                   "hanako", "--payee", "bookstore", "--amount", "110", "--id", "cli-1",
                   "--json")
    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout)["state"] == "complete"
    assert json.loads(paid.stdout)["payout"] == 120
    unknown = tsunagi("connect", "--data", deployment_dir, "pay", "--rule", "9", "--payer",
                      "hanako", "--payee", "bookstore", "--amount", "110")
    assert unknown.returncode == 1 and "no rule 9" in unknown.stderr
    assert "tsunagi connect --data" in unknown.stderr and "Traceback" not in unknown.stderr
    nobody = tsunagi("connect", "--data", deployment_dir, "pay", "--rule", "1", "--payer",
                     "kenji", "--payee", "bookstore", "--amount", "110")
    assert nobody.returncode == 1 and "no account named 'kenji'" in nobody.stderr
    replay = tsunagi("connect", "--data", deployment_dir, "pay", "--rule", "1", "--payer",
                     "hanako", "--payee", "bookstore", "--amount", "110", "--id", "cli-1")
    assert replay.returncode == 1 and "transfer_exists" in replay.stderr
    rate = tsunagi("connect", "--data", deployment_dir, "add-rule", "--id", "2", "--source",
                   "201", "--target", "202", "--rate", "1.2", "--settlement", "exchange",
                   "--pool", "pool")
    assert rate.returncode == 1 and "--rate" in rate.stderr
    missing = tsunagi("connect", "--data", deployment_dir, "add-rule", "--id", "2", "--source",
                      "201", "--target", "999", "--rate", "1/1", "--settlement", "exchange",
                      "--pool", "2")
    assert missing.returncode == 1 and "no linked chain 999" in missing.stderr


class _Shop(BaseHTTPRequestHandler):
    asked: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Shop.asked.append(body)
        accept = bytes.fromhex(body["transfer"]) == b"order-0001"
        data = json.dumps({"accept": accept}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_bookstore_can_answer_over_http(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Shop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/can-fulfil"
        done = tsunagi("demo", "--data", tmp_path / "d", "--shop-url", url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [bytes.fromhex(body["transfer"]) for body in _Shop.asked] == [
            b"order-0001", b"order-0002"]
        assert _Shop.asked[0]["payout"] == 1188
        with Deployment.open(tmp_path / "d") as deployment:
            assert [t["state"] for t in deployment.transfers()] == ["complete", "refunded"]
        # No answer at all is a no: the payer is refunded, not left waiting.
        server.shutdown()
        server.server_close()
        done = tsunagi("demo", "--data", tmp_path / "d", "--shop-url", url)
        with Deployment.open(tmp_path / "d") as deployment:
            assert [t["state"] for t in deployment.transfers()] == ["refunded", "refunded"]
    finally:
        server.server_close()


def test_the_rest_api_serves_chains_rules_transfers_and_trails_with_proofs(deployment_dir):
    port = free_ports(1)[0]
    serving = subprocess.Popen([sys.executable, "-m", "tsunagi", "connect", "--data",
                                str(deployment_dir), "serve", "--listen", f"127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV)
    try:
        assert "listening" in serving.stdout.readline()
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(base + "/chains", timeout=10).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, "the API to answer")
        schema = httpx.get(base + "/openapi.json", timeout=10).json()
        assert {"/chains", "/rules", "/transfers", "/transfers/{transfer_id}"} <= \
            set(schema["paths"])
        docs = httpx.get(base + "/docs", timeout=10).text
        assert "cdn" not in docs.lower()  # the docs page loads its assets from here
        assert [c["chain_id"] for c in httpx.get(base + "/chains").json()] == [
            201, 202, 203, 204]
        made = httpx.post(base + "/transfers", json={
            "rule_id": 1, "payer": "hanako", "payee": "bookstore", "amount": 60,
            "id": "api-1"}, timeout=60)
        assert made.status_code == 201, made.text
        assert made.json()["state"] == "complete" and made.json()["payout"] == 60
        one = httpx.get(base + "/transfers/api-1", timeout=30).json()
        assert len(one["trail"]) == 12
        for step in one["trail"]:
            if step["chain"] != 200:
                check_proof(step)
        assert "api-1" in [t["id"] for t in httpx.get(base + "/transfers").json()]
        again = httpx.post(base + "/transfers", json={
            "rule_id": 1, "payer": "hanako", "payee": "bookstore", "amount": 60,
            "id": "api-1"}, timeout=60)
        assert again.status_code == 409 and again.json()["code"] == "transfer_exists"
        unknown = httpx.post(base + "/transfers", json={
            "rule_id": 5, "payer": "hanako", "payee": "bookstore", "amount": 60}, timeout=60)
        assert unknown.status_code == 409 and unknown.json()["code"] == "rule_unknown"
        overflow = httpx.post(base + "/rules", json={
            "rule_id": 3, "source": 201, "target": 202, "rate_numerator": 2**64 - 1,
            "rate_denominator": 1, "settlement": "exchange", "pool": "pool"}, timeout=60)
        assert overflow.status_code == 201, overflow.text
        too_much = httpx.post(base + "/transfers", json={
            "rule_id": 3, "payer": "hanako", "payee": "bookstore", "amount": 100}, timeout=60)
        assert too_much.status_code == 409 and too_much.json()["code"] == "amount_overflow"
        twice = httpx.post(base + "/rules", json={
            "rule_id": 3, "source": 201, "target": 202, "rate_numerator": 1,
            "rate_denominator": 1, "settlement": "exchange", "pool": "pool"}, timeout=60)
        assert twice.status_code == 409 and twice.json()["code"] == "rule_exists"
        bad = httpx.post(base + "/rules", json={"rule_id": 4}, timeout=60)
        assert bad.status_code == 422
        assert httpx.get(base + "/transfers/nothing-here").status_code == 404
        assert [b["state"] for b in httpx.get(base + "/bills").json()] == \
            ["complete"] * 3 + ["unpaid"]
        balances = httpx.get(base + "/balances").json()
        assert sum(row["held"] for row in balances) == 0
    finally:
        serving.terminate()
        serving.wait(60)
        serving.stdout.close()
        serving.stderr.close()
