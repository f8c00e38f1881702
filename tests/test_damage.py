"""A damaged old block is found, reported on every read, buried by nothing, and repaired.

Method: a 12-block chain on the embedded store, a backup copy of it, then one byte flipped inside
block 2 (an old block: the open checks only the newest blocks fully and the frame headers of the
rest). A real `tsunagi node` process with a scrub interval of a second serves it: the scrub must
report the damage (REST status, metrics, the node's log), every read of block 2 must answer a
clear error naming its height and byte offset (REST, the wire protocol), and a submission must be
refused with nothing appended; a restart must remember it. Then the operator acts: `tsunagi
repair --from` the backup (a directory) or a node serving it (HOST:PORT) writes block 2 again,
`tsunagi verify` passes, and the node takes records again. Damage in the newest blocks stops the
open with a clear message. No output anywhere may hold a Python traceback.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_node import CHAIN_ID
from test_rest import make_ledger

from tsunagi.core.codes import Result
from tsunagi.errors import CorruptLogError, NodeError
from tsunagi.ledger import Ledger
from tsunagi.node.client import Client

BLOCKS = 12
DAMAGED = 2


def _offset_of(data: Path, height: int) -> int:
    offsets = (data / "blocks.offsets").read_bytes()
    return int.from_bytes(offsets[8 * height: 8 * height + 8], "little")


def _flip(data: Path, height: int, into: int = 300) -> int:
    """Flips one byte ``into`` bytes inside block ``height``'s frame; returns the frame's
    offset."""
    offset = _offset_of(data, height)
    with open(data / "blocks.log", "r+b") as handle:
        handle.seek(offset + into)
        byte = handle.read(1)
        handle.seek(offset + into)
        handle.write(bytes([byte[0] ^ 0x40]))
    return offset


@pytest.fixture
def damaged(tmp_path):
    """(data, backup, wallet, frame offset): a 12-block chain with block 2 damaged."""
    ledger, wallet = make_ledger(tmp_path, payers=1)
    for sequence in range(1, BLOCKS):
        assert ledger.submit(*wallet.transfer(sequence, 10)).codes[0] == Result.ok
    assert ledger.height == BLOCKS
    ledger.close()
    data = tmp_path / "chain"
    backup = tmp_path / "backup"
    shutil.copytree(data, backup)
    return data, backup, wallet, _flip(data, DAMAGED)


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsunagi", *argv], capture_output=True,
                          text=True, timeout=120)


class Node:
    """`tsunagi node` as a process on loopback, with its REST API and metrics."""

    def __init__(self, data: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tsunagi", "node", "--data", str(data), "--listen",
             "127.0.0.1:0", "--http", "127.0.0.1:0", "--metrics", "--log-level", "info",
             "--scrub-interval-s", "1", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the node did not start: {self.process.stderr.read()}")
        self.ready = json.loads(line)
        host, port = self.ready["node"].rsplit(":", 1)
        self.address = (host, int(port))
        self.http = httpx.Client(base_url=self.ready["http"], timeout=30)

    def status(self) -> dict:
        return self.http.get("/v1/status").json()

    def wait_for_damage(self) -> dict:
        deadline = time.monotonic() + 120  # generous: the scrub runs every second
        while time.monotonic() < deadline:
            damage = self.status()["damage"]
            if damage is not None:
                return damage
            time.sleep(0.05)
        raise AssertionError("the scrub never reported the damage")

    def stop(self) -> str:
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        log = self.process.stderr.read()
        assert "Traceback" not in log, log
        return log


def test_the_node_reports_refuses_remembers_and_takes_records_after_repair(damaged):
    data, backup, wallet, offset = damaged
    node = Node(data)
    try:
        damage = node.wait_for_damage()
        assert (damage["height"], damage["offset"], damage["found_by"]) == (DAMAGED, offset,
                                                                            "scrub")
        assert f"tsunagi repair {data} --from BACKUP" in damage["message"]
        for _ in range(2):  # every read of the block, not just the first
            answer = node.http.get(f"/v1/blocks/{DAMAGED}")
            assert answer.status_code == 500
            error = answer.json()["error"]
            assert error["code"] == "damaged"
            assert f"block {DAMAGED}" in error["message"] and str(offset) in error["message"]
        assert node.http.get(f"/v1/blocks/{DAMAGED + 1}").status_code == 200
        with Client(*node.address, chain_id=CHAIN_ID) as client:
            with pytest.raises(NodeError, match="damaged"):
                client.block(DAMAGED)
            with pytest.raises(NodeError, match="damaged.*tsunagi repair"):
                client.submit(*wallet.transfer(100, 1))
            assert client.status().damaged_height == DAMAGED
        refused = node.http.post("/v1/transactions", json=dict(zip(
            ("record", "signature"), (x.hex() for x in wallet.transfer(101, 1)))))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "damaged"
        metrics = node.http.get("/metrics").text
        assert f"tsunagi_damaged_block {float(DAMAGED)}" in metrics
        assert node.status()["height"] == BLOCKS - 1  # nothing was appended on top
    finally:
        log = node.stop()
    assert f"committed block {DAMAGED}" in log and "tsunagi repair" in log
    # A restart remembers the damage (damage.json) and still refuses records.
    node = Node(data)
    try:
        assert node.status()["damage"]["height"] == DAMAGED
        with Client(*node.address, chain_id=CHAIN_ID) as client:
            with pytest.raises(NodeError, match="damaged"):
                client.submit(*wallet.transfer(102, 1))
    finally:
        node.stop()
    # The operator acts.
    repaired = _cli("repair", str(data), "--from", str(backup))
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] == [DAMAGED]
    verified = _cli("verify", str(data))
    assert verified.returncode == 0 and verified.stdout.startswith("ok: 12 blocks")
    node = Node(data)
    try:
        assert node.status()["damage"] is None
        with Client(*node.address, chain_id=CHAIN_ID) as client:
            assert client.submit(*wallet.transfer(103, 1)).code == Result.ok
        assert node.status()["height"] == BLOCKS
    finally:
        node.stop()


def test_verify_reports_damage_and_repair_takes_the_block_from_a_running_node(damaged):
    data, backup, wallet, offset = damaged
    verified = _cli("verify", str(data))
    assert verified.returncode == 1 and "Traceback" not in verified.stderr
    assert verified.stdout.startswith(f"FAILED at block {DAMAGED} (damaged_frame)")
    assert str(offset) in verified.stdout and "tsunagi repair" in verified.stderr
    peer = Node(backup)  # another node of the same chain, serving an intact copy
    try:
        host, port = peer.address
        repaired = _cli("repair", str(data), "--from", f"{host}:{port}")
    finally:
        peer.stop()
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] == [DAMAGED]
    assert _cli("verify", str(data)).returncode == 0
    assert not (data / "damage.json").exists()


def test_repair_refuses_a_copy_of_another_chain(damaged, tmp_path):
    data, backup, wallet, offset = damaged
    other, other_wallet = make_ledger(tmp_path / "other", payers=1)
    for sequence in range(1, BLOCKS):
        other.submit(*other_wallet.transfer(sequence, 10))
    other.close()
    repaired = _cli("repair", str(data), "--from", str(tmp_path / "other" / "chain"))
    assert repaired.returncode == 1 and "Traceback" not in repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["repaired"] == [] and str(DAMAGED) in report["failed"]
    assert _cli("verify", str(data)).returncode == 1  # nothing was written over block 2


def test_a_ledger_reports_a_damaged_read_and_refuses_writes(damaged):
    data, backup, wallet, offset = damaged
    with Ledger.open(data) as ledger:
        assert ledger.damage is None  # an old block: the open does not read it
        with pytest.raises(CorruptLogError, match=f"block {DAMAGED} .* byte offset {offset}"):
            ledger.block(DAMAGED)
        assert ledger.damage.height == DAMAGED and ledger.damage.found_by == "read"
        with pytest.raises(CorruptLogError, match="takes no new records"):
            ledger.submit(*wallet.transfer(100, 1))
        assert ledger.height == BLOCKS
        assert ledger.block(DAMAGED + 1) is not None and ledger.balance(1) > 0


def test_damage_in_the_newest_blocks_stops_the_open_with_a_clear_message(tmp_path):
    ledger, wallet = make_ledger(tmp_path, payers=1)
    for sequence in range(1, BLOCKS):
        ledger.submit(*wallet.transfer(sequence, 10))
    ledger.close()
    data = tmp_path / "chain"
    offset = _flip(data, BLOCKS - 3)
    with pytest.raises(CorruptLogError, match=f"block {BLOCKS - 3} .* offset {offset}"):
        Ledger.open(data)
    node = subprocess.run([sys.executable, "-m", "tsunagi", "node", "--data", str(data),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                          timeout=120)
    assert node.returncode == 1 and "Traceback" not in node.stderr
    assert f"committed block {BLOCKS - 3}" in node.stderr and "backup" in node.stderr
