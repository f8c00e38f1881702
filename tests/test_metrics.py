"""The Prometheus endpoint counts what the node did: commits by code, blocks, groups, latency,
fsyncs, queue, connections and refusals.

Method: the numpy histograms are checked against prometheus_client's own Histogram fed the
same values; then a real node on 127.0.0.1 is scraped over HTTP before and after REST and
wire submissions and bad requests, and the parsed samples must move by exactly what was done.
"""

from __future__ import annotations

import random
import time

import httpx
import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_node import CHAIN_ID, raw_connection, request
from test_rest import ServiceThread, make_chain, submit_json

from tsunagi.core.codes import Result
from tsunagi.node import protocol as p
from tsunagi.node.client import Client
from tsunagi.node.metrics import LATENCY_BOUNDS_S, _Histogram
from tsunagi.node.server import NodeSettings


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(http: httpx.Client) -> dict[tuple[str, frozenset], float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_numpy_histogram_matches_prometheus_client():
    rng = random.Random(7)
    values = [rng.choice(LATENCY_BOUNDS_S) for _ in range(50)]  # exactly on a bound: "le"
    values += [rng.uniform(0, 12) for _ in range(200)] + [0.0, 1e-9, 99.0]
    registry = CollectorRegistry()
    oracle = Histogram("x_seconds", "oracle", buckets=LATENCY_BOUNDS_S, registry=registry)
    for item in values:
        oracle.observe(item)
    ours = _Histogram(LATENCY_BOUNDS_S)
    ours.observe_many(np.array(values[:100]))
    for item in values[100:]:
        ours.observe(item)
    expected = {key: v for key, v in samples(generate_latest(registry).decode()).items()
                if not key[0].endswith("_created")}
    ours_registry = CollectorRegistry()

    class One:
        def collect(self):
            yield ours.family("x_seconds", "ours")

    ours_registry.register(One())
    got = samples(generate_latest(ours_registry).decode())
    assert set(got) == set(expected)
    for key, number in expected.items():
        assert abs(got[key] - number) < 1e-9, key


def test_metrics_move_by_exactly_what_the_node_did(tmp_path):
    data, wallet = make_chain(tmp_path)
    with ServiceThread(data, NodeSettings(group_wait_ms=1)) as node:
        http = node.http
        before = scrape(http)
        assert value(before, "tsunagi_chain_height") == 0
        assert value(before, "tsunagi_info", chain="node-test", chain_id=str(CHAIN_ID),
                     asset="TSU") == 1
        pairs = [wallet.transfer(1, 10), wallet.transfer(2, 10 ** 15)]  # the second: no funds
        batch = http.post("/v1/batches", json={"records": [r.hex() for r, _ in pairs],
                                               "signatures": [s.hex() for _, s in pairs]})
        assert batch.json()["codes"] == [0, int(Result.insufficient_funds)]
        assert submit_json(http, *wallet.transfer(1, 10)).json()["code"] == "already_committed"
        with Client("127.0.0.1", node.port, chain_id=CHAIN_ID) as client:
            assert client.submit(*wallet.transfer(3, 5, payer=2)).code == Result.ok
        assert http.get("/v1/accounts/99").status_code == 404
        with raw_connection(node.port) as sock:
            _, error = request(sock, p.QueryBalance(1), 5)
            assert isinstance(error, p.Balance)
            sock.sendall(p.encode_frame(p.MessageType.submit, 6, b"short"))
            _, error = sock.read()
            assert error.code == p.ErrorCode.malformed
            during = scrape(http)
        # The server sees the close a moment after the client makes it.
        deadline = time.monotonic() + 10
        while value(after := scrape(http), "tsunagi_connections", interface="wire") \
                and time.monotonic() < deadline:
            time.sleep(0.01)
    assert value(after, "tsunagi_transactions_total", code="ok") == 2
    assert value(after, "tsunagi_transactions_total", code="insufficient_funds") == 1
    assert value(after, "tsunagi_transactions_total", code="already_committed") == 1
    # Three groups (the batch, the retry, the wire submit); the retry stored nothing.
    assert value(after, "tsunagi_groups_total") == 3
    assert value(after, "tsunagi_blocks_total") == 2
    assert value(after, "tsunagi_chain_height") == 2
    assert value(after, "tsunagi_group_records_count") == 3
    assert value(after, "tsunagi_group_records_sum") == 4
    assert value(after, "tsunagi_group_records_bucket", le="1.0") == 2
    assert value(after, "tsunagi_commit_latency_seconds_count") == 3
    assert value(after, "tsunagi_commit_latency_seconds_sum") > 0
    assert value(after, "tsunagi_ledger_commit_seconds_count") == 3
    assert value(after, "tsunagi_fsync_seconds_count") == 2  # one per block
    assert value(after, "tsunagi_queue_records") == 0
    assert value(during, "tsunagi_connections", interface="wire") == 1
    assert value(after, "tsunagi_connections", interface="wire") == 0
    assert value(after, "tsunagi_rejected_total", interface="wire", reason="malformed") == 1
    assert value(after, "tsunagi_rejected_total", interface="http", reason="not_found") == 1
    assert value(before, "tsunagi_transactions_total", code="ok") == 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_metrics_on_a_listener_of_their_own(tmp_path):
    data, wallet = make_chain(tmp_path)
    with ServiceThread(data, metrics=("127.0.0.1", 0)) as node:
        url = f"http://127.0.0.1:{node.service.metrics_address[1]}"
        assert submit_json(node.http, *wallet.transfer(1, 1)).json()["code"] == "ok"
        with httpx.Client(base_url=url) as metrics:
            found = scrape(metrics)
            assert value(found, "tsunagi_transactions_total", code="ok") == 1
            assert metrics.get("/elsewhere").status_code == 404
            assert metrics.post("/metrics").status_code == 405
        # The REST listener does not serve them then.
        assert node.http.get("/metrics").status_code == 404
        assert node.service.addresses()["metrics"] == f"{url}/metrics"
