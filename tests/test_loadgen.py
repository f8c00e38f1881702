"""The load generator sends valid prepared traffic and reports what the node really committed.

Method: a chain made by ``prepare_chain`` is served by a node in its own process
(``NodeProcess``); the load generator drives it in each mode, in one and in two processes, and
through its command line. The tests compare the generator's report with the node itself: every
transfer answered ok, balances moved by exactly the transfers sent, the node's stored record
count, transactions found by txid. Workload shape (payer partitions, sequences, Zipf skew, one
batch signature per authorized request) is checked on the built frames without a node.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from tsunagi import hashing
from tsunagi import loadgen as lg
from tsunagi.core import keys
from tsunagi.core.address import encode_address
from tsunagi.core.codes import Result
from tsunagi.core.keys import PrivateKey
from tsunagi.core.records import RECORD_BYTES, RECORD_DTYPE, SIGNATURE_BYTES
from tsunagi.errors import ConfigError
from tsunagi.node import protocol as p
from tsunagi.node.client import AsyncClient, Client

ACCOUNTS = 64
KEYS = 4


@pytest.fixture
def served(tmp_path):
    """A prepared chain of ACCOUNTS load accounts, served by a node in a child process."""
    plan = lg.prepare_chain(tmp_path / "chain", ACCOUNTS, keys=KEYS)
    with lg.NodeProcess(tmp_path / "chain", settings={"group_wait_ms": 1}) as node:
        yield plan, node


def balances(port: int, accounts) -> np.ndarray:
    with Client("127.0.0.1", port) as client:
        return np.array([client.balance(int(a)) for a in accounts], dtype=np.int64)


def expected_moves(plan: lg.Plan, traffics) -> np.ndarray:
    """Per account position: credits minus debits of every transfer in the traffic."""
    moves = np.zeros(len(plan.accounts), np.int64)
    first = int(plan.accounts[0])
    for traffic in traffics:
        amounts = traffic.records["amount"].astype(np.int64)
        np.add.at(moves, traffic.records["credit_account"].astype(np.int64) - first, amounts)
        np.add.at(moves, traffic.records["debit_account"].astype(np.int64) - first, -amounts)
    return moves


def node_stored(summary: dict) -> int:
    """Records the node stored during the run, by its own status counters."""
    return summary["node_after"]["records_committed"] \
        - summary["node_before"]["records_committed"]


@pytest.mark.parametrize("mode, count, batch_size", [
    ("baseline", 120, 1), ("batched", 3000, 400), ("batch-authorized", 20_000, 2500)])
def test_each_mode_commits_every_transfer_and_moves_exactly_those_amounts(
        served, mode, count, batch_size):
    plan, node = served
    spec = lg.LoadSpec(mode=mode, clients=3, count=count, batch_size=batch_size, keep=True,
                       skew=0.8)
    result = lg.run_load("127.0.0.1", node.port, plan, spec)
    summary, traffics = result.summary, result.traffics
    assert summary["codes"] == {"ok": count}
    assert summary["records_ok"] == summary["records_sent"] == node_stored(summary) == count
    assert summary["requests_answered"] == sum(len(t.frames) for t in traffics)
    assert max(max(t.counts) for t in traffics) == batch_size
    assert not summary["errors"] and not summary["lost"]
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    series = summary["series"]
    assert sum(series["records_per_s"]) * series["bin_s"] == pytest.approx(count)
    moved = balances(node.port, plan.accounts) - lg.funding_units
    assert moved.any() and np.array_equal(moved, expected_moves(plan, traffics))
    with Client("127.0.0.1", node.port) as client:
        txid = traffics[1].txids[-1].tobytes()
        found = client.transaction(txid)
        assert found.code == Result.ok and found.record == traffics[1].records[-1].tobytes()
        assert hashing.header_hash(client.block(found.height)[:80]) == found.block_hash


def decoded(traffic: lg.Traffic) -> list[p.SubmitBatch]:
    return [p.decode_message(frame)[1] for frame in traffic.frames]


def test_signed_traffic_keeps_payers_apart_sequences_rising_and_signatures_valid():
    plan = lg.Plan(7, 1, KEYS, np.arange(2, 2 + 600, dtype=np.uint64))
    spec = lg.LoadSpec(mode="batched", clients=3, count=6000, batch_size=500, skew=1.2)
    payer_sets = []
    for client in range(3):
        records = np.concatenate([np.frombuffer(m.records, RECORD_DTYPE)
                                  for m in decoded(lg.build_traffic(plan, spec, client))])
        first, stop = spec.client_range(client, 600)
        payers = records["debit_account"].astype(np.int64) - 2
        assert first <= payers.min() and payers.max() < stop
        assert (records["credit_account"] != records["debit_account"]).all()
        for payer in np.unique(payers):  # each payer's sequences rise in send order
            assert (np.diff(records["sequence"][payers == payer].astype(np.int64)) > 0).all()
        # Zipf with exponent 1.2 over 200 payers: the hottest takes ~25%, uniform would be 0.5%.
        assert np.bincount(payers).max() > 0.1 * len(payers)
        payer_sets.append(set(payers.tolist()))
    assert not (payer_sets[0] & payer_sets[1]) and not (payer_sets[1] & payer_sets[2])
    owners = plan.owner_keys()
    message = decoded(lg.build_traffic(plan, spec, 2))[0]
    for index in (0, 137, 499):
        record = bytes(message.records[index * 128:(index + 1) * 128])
        payer = np.frombuffer(record, RECORD_DTYPE)["debit_account"][0] - 2
        key = owners[int(plan.owner_of(np.array([payer]))[0])]
        assert keys.verify(key.public_key, keys.txid(record),
                           message.signatures[index * 64:(index + 1) * 64])


def test_batch_authorized_requests_carry_one_valid_signature_over_one_owner():
    plan = lg.Plan(7, 1, KEYS, np.arange(2, 2 + 600, dtype=np.uint64))
    spec = lg.LoadSpec(mode="batch-authorized", clients=2, count=8000, batch_size=1000)
    owners = plan.owner_keys()
    seen_keys = set()
    for message in decoded(lg.build_traffic(plan, spec, 1)):
        records = np.frombuffer(message.records, RECORD_DTYPE)
        assert message.signatures == b"" and (records["flags"] == 2).all()
        (entry,) = message.batch_entries()
        assert (entry["first"], entry["count"]) == (0, len(records))
        payer_owners = plan.owner_of(records["debit_account"].astype(np.int64) - 2)
        assert len(set(payer_owners.tolist())) == 1
        signer = owners[int(payer_owners[0])].public_key
        assert entry["signer_key"].tobytes() == signer
        root = hashing.merkle_root(hashing.sha256d_records(message.records, 128))
        assert keys.verify(signer, root, entry["signature"].tobytes())
        seen_keys.add(signer)
    assert len(seen_keys) == 2  # client 1 holds payers 300..599: two key blocks take turns


def test_setup_opens_and_funds_new_accounts_and_two_processes_drive_them(tmp_path):
    lg.prepare_chain(tmp_path / "chain", 2, keys=1)

    async def setup(port: int):
        async with AsyncClient("127.0.0.1", port, auto_batch=False) as client:
            plan = await lg.setup_accounts(client, 300, keys=3)
            return plan, [await client.account(int(a)) for a in plan.accounts[[0, 150, 299]]]

    with lg.NodeProcess(tmp_path / "chain", settings={"group_wait_ms": 1}) as node:
        plan, infos = asyncio.run(setup(node.port))
        assert plan.accounts.tolist() == list(range(4, 304))  # after the issuer and 2, 3
        owners = plan.owner_keys()
        assert [i.owner_key for i in infos] == [owners[0].public_key, owners[1].public_key,
                                                owners[2].public_key]
        assert [i.balance for i in infos] == [lg.funding_units] * 3
        spec = lg.LoadSpec(mode="batched", clients=4, processes=2, count=4000,
                           batch_size=250)
        summary = lg.run_load("127.0.0.1", node.port, plan, spec).summary
        assert summary["codes"] == {"ok": 4000} and node_stored(summary) == 4000
        assert summary["requests_answered"] == 16
        assert balances(node.port, plan.accounts).sum() == 300 * lg.funding_units


def test_a_chain_without_the_load_accounts_is_refused(served):
    plan, node = served

    async def check(accounts: int, seed: int, keys: int = KEYS):
        async with AsyncClient("127.0.0.1", node.port, auto_batch=False) as client:
            return await lg.target_plan(client, accounts, keys=keys, seed=seed)

    assert asyncio.run(check(ACCOUNTS, 1)).accounts.tolist() == plan.accounts.tolist()
    with pytest.raises(ConfigError, match="or pass --setup"):
        asyncio.run(check(ACCOUNTS + 1, 1))  # one account too many
    with pytest.raises(ConfigError, match="account 15 of the target is not a load account"):
        asyncio.run(check(ACCOUNTS, 1, keys=5))  # of 5 keys the second's block starts there
    with pytest.raises(ConfigError, match="not made by `tsunagi loadgen --prepare` with --seed 2"):
        asyncio.run(check(ACCOUNTS, 2))


def test_target_without_the_load_accounts_says_how_to_make_them(tmp_path):
    """A node serving a chain made by `tsunagi init` holds no account whose key the load
    generator knows, and it cannot fund any there: the command says how to get such a chain."""
    holder = encode_address(PrivateKey.generate().public_key)
    subprocess.run([sys.executable, "-m", "tsunagi", "init", str(tmp_path / "plain"),
                    "--alloc", f"{holder}=1"],
                   check=True, capture_output=True, timeout=60)
    with lg.NodeProcess(tmp_path / "plain") as node:
        for extra in ([], ["--setup"]):
            done = subprocess.run(
                [sys.executable, "-m", "tsunagi", "loadgen", "--target",
                 f"127.0.0.1:{node.port}", "--mode", "baseline", *extra],
                capture_output=True, text=True, timeout=60)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            *steps, message = done.stderr.strip().splitlines()  # steps: what it was doing
            assert steps == ["opening and funding the accounts" if extra
                             else "checking the load accounts"]
            assert message.startswith(
                "tsunagi: the target's chain was not made by `tsunagi loadgen --prepare`")
            assert "`tsunagi loadgen --prepare DIR --accounts 10000`, then `tsunagi node " \
                   "--data DIR`, then `tsunagi loadgen --target HOST:PORT ...`" in message


def test_setup_from_the_command_line_opens_funds_and_drives_new_accounts(tmp_path):
    lg.prepare_chain(tmp_path / "chain", 2, keys=1)
    shown = subprocess.run([sys.executable, "-m", "tsunagi", "loadgen", "--help"],
                           capture_output=True, text=True, timeout=60).stdout
    assert "--setup" in shown and "whose issuer" in shown.replace("\n", " ")
    with lg.NodeProcess(tmp_path / "chain", settings={"group_wait_ms": 1}) as node:
        command = [sys.executable, "-m", "tsunagi", "loadgen", "--target",
                   f"127.0.0.1:{node.port}", "--accounts", "30", "--keys", "3", "--mode",
                   "batched", "--count", "600", "--batch-size", "100", "--clients", "2"]
        done = subprocess.run([*command, "--setup", "--json"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        assert printed["codes"] == {"ok": 600} and (printed["accounts"], printed["keys"]) == (30, 3)
        assert balances(node.port, range(4, 34)).sum() == 30 * lg.funding_units
        # Without --setup the same flags describe a prepared chain of accounts 2..31, which
        # this one is not (its new accounts are 4..33): refused, not run with bad signatures.
        again = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert again.returncode == 1 and "not a load account of seed 1 with 3 keys" \
            in again.stderr and "pass --setup" in again.stderr


def test_command_line_prepares_drives_and_writes_json_and_png(tmp_path):
    stem = tmp_path / "out" / "run"
    command = [sys.executable, "-m", "tsunagi.loadgen", "--prepare", str(tmp_path / "c"),
               "--spawn", str(tmp_path / "c"), "--accounts", "40", "--keys", "2",
               "--mode", "batched", "--count", "1200", "--batch-size", "300", "--clients", "2",
               "--out", str(stem), "--json", "--rss-every", "0.2", "--duration", "3600"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["records_ok"] == 1200 and printed["codes"] == {"ok": 1200}
    assert printed["accounts"] == 40 and printed["node_rss"][0][1] > 10_000  # KiB
    assert printed["node_stop_s"] >= 0 and 0 < printed["records_per_s_indexed"]
    assert json.loads(stem.with_suffix(".json").read_text()) == printed
    # 1,200 prepared transfers do not last an hour: the run says why it ended before it.
    assert printed["ended_early"].startswith("the 1,200 prepared transfers ran out: the run "
                                             "ended after ")
    assert f"tsunagi loadgen: ended early: {printed['ended_early']}\n" in done.stderr
    png = stem.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    again = subprocess.run(command[:3] + ["--target", "127.0.0.1:1", "--accounts", "40"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "cannot connect" in again.stderr


def test_command_line_shows_its_progress_in_lines_where_stderr_is_not_a_terminal(tmp_path):
    command = [sys.executable, "-m", "tsunagi.loadgen", "--prepare", str(tmp_path / "c"),
               "--spawn", str(tmp_path / "c"), "--accounts", "40", "--keys", "2", "--mode",
               "batched", "--count", "30000", "--batch-size", "1000", "--clients", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for line in (f"preparing {tmp_path / 'c'}: opened 40 of 40 accounts",
                 f"preparing {tmp_path / 'c'}: funded 40 of 40 accounts",
                 "signing and encoding the traffic", "prepared 30,000 of 30,000 transfers",
                 "driving"):
        assert line in lines, done.stderr
    assert "30,000 transfers/s ok" not in done.stdout and "(30,000 of 30,000 sent" in done.stdout


def test_live_traffic_runs_for_the_duration_and_commits_all_it_sends(served):
    plan, node = served
    spec = lg.LoadSpec(mode="batch-authorized", clients=2, batch_size=2000, live=True,
                       duration_s=0.6)
    summary = lg.run_load("127.0.0.1", node.port, plan, spec).summary
    assert summary["records_ok"] == summary["records_sent"] == node_stored(summary) > 0
    assert set(summary["codes"]) == {"ok"} and summary["elapsed_s"] >= 0.6
    assert balances(node.port, plan.accounts).sum() == ACCOUNTS * lg.funding_units


def test_prepared_traffic_beyond_the_memory_share_is_refused_before_any_is_built(served):
    """A count whose prepared traffic would not fit the allowed share of available memory is
    refused with what to do next, instead of building it and swapping."""
    plan, node = served
    allowed = lg.prebuild_bytes_max()
    with open("/proc/meminfo") as meminfo:
        available = int(meminfo.read().split("MemAvailable:")[1].split()[0]) * 1024
    assert 0.6 * available < allowed < 0.8 * available
    too_many = allowed // (RECORD_BYTES + SIGNATURE_BYTES) + 1
    spec = lg.LoadSpec(mode="batched", clients=1, count=too_many, batch_size=8000)
    with pytest.raises(ConfigError, match="lower --count, or use --live"):
        lg.run_load("127.0.0.1", node.port, plan, spec)
