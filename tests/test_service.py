"""`tsunagi node` reads its config and flags, serves, and stops on SIGTERM losing nothing
acknowledged.

Method: the config path is checked in-process (TOML and JSON files, flags laid over them,
every NodeSettings and RestSettings field reachable by a flag, clear errors for bad input);
then `python -m tsunagi.node.service` runs as a real process on loopback, takes transfers
over REST and the wire protocol at once while a client follows the block events, gets
SIGTERM in the middle of that load; the event stream must end properly, and the reopened
ledger must hold every acknowledged transfer, conserve money and verify.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from test_node import CHAIN_ID, FUNDS
from test_rest import make_chain

from tsunagi import hashing
from tsunagi.core.codes import Result
from tsunagi.errors import ConfigError, NodeError
from tsunagi.ledger.ledger import Ledger
from tsunagi.node.client import Client
from tsunagi.node.server import DEFAULT_PORT, NodeSettings
from tsunagi.node.service import (
    RestSettings,
    add_arguments,
    config_from_args,
    main,
    parse_address,
)


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_toml_config_with_flags_laid_over_it(tmp_path):
    (tmp_path / "node.toml").write_text(
        'data = "chain"\nlisten = "127.0.0.1:9001"\nhttp = "0.0.0.0:9002"\nmetrics = true\n'
        'log_level = "info"\n[node]\ngroup_wait_ms = 4.5\nqueue_records_max = 1000\n'
        '[rest]\nevent_streams_max = 3\n')
    config = parse("--config", str(tmp_path / "node.toml"), "--listen", "127.0.0.1:9100",
                   "--group-wait-ms", "0.5", "--reader-threads", "3")
    assert config.data == tmp_path / "chain"  # relative to the file's folder
    assert config.listen == ("127.0.0.1", 9100)
    assert (config.http, config.metrics, config.log_level) == (("0.0.0.0", 9002), True, "info")
    assert config.node == NodeSettings(group_wait_ms=0.5, queue_records_max=1000,
                                       reader_threads=3)
    assert config.rest == RestSettings(event_streams_max=3)


def test_json_config_and_defaults(tmp_path):
    (tmp_path / "node.json").write_text(json.dumps(
        {"data": str(tmp_path / "elsewhere"), "metrics": "127.0.0.1:9200",
         "node": {"group_records_max": 64}}))
    config = parse("--config", str(tmp_path / "node.json"))
    assert config.data == tmp_path / "elsewhere"
    assert config.listen == ("127.0.0.1", DEFAULT_PORT) and config.http is None
    assert config.metrics == ("127.0.0.1", 9200)
    assert config.node.group_records_max == 64 and config.node.group_wait_ms == 2.0
    assert parse("--data", "d", "--http", "8080", "--metrics").metrics is True


@pytest.mark.parametrize("cls", [NodeSettings, RestSettings])
def test_every_setting_is_reachable_by_a_flag(cls):
    for item in dataclasses.fields(cls):
        wanted = item.default * 2 if item.name != "frame_bytes_max" else item.default // 2
        config = parse("--data", "d", "--http", "127.0.0.1:1",
                       f"--{item.name.replace('_', '-')}", str(wanted))
        settings = config.node if cls is NodeSettings else config.rest
        assert getattr(settings, item.name) == wanted, item.name


@pytest.mark.parametrize("text, message", [
    ('data = "d"\nport = 1\n', "unknown node config keys: port"),
    ('data = "d"\n[node]\ngroup_wait = 1\n', "unknown [node] settings: group_wait"),
    ('data = "d"\nmetrics = true\n', "set http too"),
    ('data = "d"\nlisten = "localhost"\n', "listen is HOST:PORT"),
    ('data = "d"\nlisten = "h:70000"\n', "listen is HOST:PORT"),
    ('data = "d"\n[node]\ngroup_records_max = 0\n', "at least 1"),
    ('data = "d"\n[node]\ngroups_in_flight = 0\n', "at least 1"),
    ('data = "d"\n[rest]\nretry_after_s = -1\n', "retry_after_s is a number > 0"),
    ('listen = "127.0.0.1:1"\n', "no data directory"),
    ('data = "d\n', "not valid TOML"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse("--config", str(tmp_path / "bad.toml"))


def test_addresses():
    assert parse_address("7650", "x") == ("127.0.0.1", 7650)
    assert parse_address("[::1]:0", "x") == ("::1", 0)
    assert parse_address("example.org:443", "x") == ("example.org", 443)
    with pytest.raises(ConfigError):
        parse_address(":80", "x")


def test_command_fails_cleanly_without_a_chain_or_with_a_busy_port(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "none"), "--listen", "127.0.0.1:0"]) == 1
    assert "holds no tsunagi chain" in capsys.readouterr().err
    data, _ = make_chain(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["--data", str(data), "--listen", "127.0.0.1:0",
                     "--http", f"127.0.0.1:{port}"]) == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in capsys.readouterr().err
    with Ledger.open(data) as ledger:  # the failed start closed the ledger again
        assert ledger.height == 1


class Submitter(threading.Thread):
    """Sends transfers one at a time until the node stops taking them; keeps the acked ones."""

    def __init__(self, send) -> None:
        super().__init__(daemon=True)
        self.send = send
        self.acknowledged: list[tuple[bytes, int]] = []  # (txid, amount)

    def run(self) -> None:
        sequence = 0
        while True:
            sequence += 1
            try:
                acknowledged = self.send(sequence)
            except (httpx.HTTPError, NodeError, OSError):
                return
            if acknowledged is None:
                return
            self.acknowledged.append(acknowledged)


class EventReader(threading.Thread):
    """Follows the block event stream; notes whether the node ended it properly."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.heights: list[int] = []
        self.ended_cleanly = False

    def run(self) -> None:
        with httpx.stream("GET", f"{self.url}/v1/events/blocks?from_height=0",
                          timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith("id: "):
                    self.heights.append(int(line[4:]))
        self.ended_cleanly = True


def test_node_process_stops_on_sigterm_under_load_losing_nothing_acknowledged(tmp_path):
    data, wallet = make_chain(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "tsunagi.node.service", "--data", str(data), "--listen",
         "127.0.0.1:0", "--http", "127.0.0.1:0", "--metrics", "--group-wait-ms", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(process.stdout.readline())
        host, port = ready["node"].rsplit(":", 1)
        http = httpx.Client(base_url=ready["http"], timeout=30)
        client = Client(host, int(port), chain_id=CHAIN_ID)

        def over_rest(sequence: int):
            record, signature = wallet.transfer(sequence, 3, payer=1)
            answer = http.post("/v1/transactions", json={"record": record.hex(),
                                                         "signature": signature.hex()})
            if answer.status_code != 200 or answer.json()["code"] != "ok":
                return None
            return hashing.sha256d(record), 3

        def over_wire(sequence: int):
            record, signature = wallet.transfer(sequence, 5, payer=2)
            if client.submit(record, signature).code != Result.ok:
                return None
            return hashing.sha256d(record), 5

        submitters = [Submitter(over_rest), Submitter(over_wire)]
        for submitter in submitters:
            submitter.start()
        events = EventReader(ready["http"])
        events.start()
        deadline = time.monotonic() + 30
        while (min(len(s.acknowledged) for s in submitters) < 10 or not events.heights) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)  # in the middle of both streams of submissions
        assert process.wait(30) == 0
        for submitter in submitters:
            submitter.join(30)
        events.join(30)
        assert events.ended_cleanly and events.heights  # the stream ended, not cut off
        http.close()
        client.close()
        assert "stopped cleanly" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    acknowledged = [pair for submitter in submitters for pair in submitter.acknowledged]
    assert min(len(s.acknowledged) for s in submitters) >= 10
    with Ledger.open(data) as ledger:
        for txid, _ in acknowledged:
            found = ledger.transaction(txid)
            assert found is not None and found.code == Result.ok
        payee = ledger.balance(wallet.payee)
        assert payee >= 1 + sum(amount for _, amount in acknowledged)
        assert ledger.balance(1) + ledger.balance(2) + payee == 2 * FUNDS + 1
        assert ledger.verify().ok
