"""Prometheus metrics of a running node, served at ``/metrics``.

The server reports each answered group through :class:`~tsunagi.node.server.NodeEvents`;
this module keeps the counts in numpy arrays, so a group of thousands of one-record requests
costs one vectorised update rather than one Python call per request, and turns them into
Prometheus metric families only when scraped. Gauges (queue depth, connections, height) are
read from the server at scrape time. Every node has its own registry, so several nodes in one
process (tests) never share counts.

Metrics (all prefixed ``tsunagi_``): ``transactions_total{code}``, ``blocks_total``,
``groups_total``, ``group_records`` (histogram), ``commit_latency_seconds`` (request arrival
to answer, histogram), ``ledger_commit_seconds`` and ``fsync_seconds`` (histograms),
``queue_records``, ``connections{interface}``, ``chain_height``, ``rejected_total{interface,
reason}`` and ``info{chain, chain_id, asset}``, plus the standard ``process_*`` metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from tsunagi.core.codes import Result
from tsunagi.node import protocol as p
from tsunagi.node.server import NodeEvents

__all__ = ["CONTENT_TYPE", "NodeMetrics", "metrics_app"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Bucket upper bounds. Latency spans a lone request (group_wait_ms plus one fsync, about a
# millisecond or two) to a full queue under load (seconds); group sizes go up to the largest
# request (65,536 records) so a glance shows how much each fsync is shared.
LATENCY_BOUNDS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                    5.0, 10.0)
FSYNC_BOUNDS_S = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
                  0.5, 1.0)
GROUP_BOUNDS = tuple(float(2**k) for k in range(17))  # 1 .. 65,536 records

_CODE_NAMES = {int(code): code.name for code in Result}


class _Histogram:
    """Bucket counts in a numpy array: observing many values at once is one update.

    Updated from the event loop and the ledger's writer thread, read when scraped, so a lock
    guards the counts.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # the last bucket is +Inf
        self.sum = 0.0
        self.lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        # side="left": a value equal to a bound belongs to that bound's bucket (le, "<=").
        slots = np.searchsorted(self.bounds, values, side="left")
        added = np.bincount(slots, minlength=len(self.counts))
        with self.lock:
            self.counts += added
            self.sum += float(values.sum())

    def observe(self, value: float) -> None:
        slot = int(np.searchsorted(self.bounds, value, side="left"))
        with self.lock:
            self.counts[slot] += 1
            self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        with self.lock:
            cumulative = np.cumsum(self.counts)
            total = self.sum
        buckets = [(floatToGoString(bound), int(count))
                   for bound, count in zip(self.bounds.tolist(), cumulative[:-1])]
        buckets.append(("+Inf", int(cumulative[-1])))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


class NodeMetrics(NodeEvents):
    """Counts what a NodeServer reports; a Prometheus collector over its own registry.

    Pass it to ``NodeServer(..., events=metrics)``, then :meth:`attach` the server (and the
    HTTP server, for its connection count) before scraping :meth:`render`.
    """

    def __init__(self) -> None:
        self.codes = np.zeros(256, dtype=np.int64)
        self.blocks = 0
        self.groups = 0
        self.group_records = _Histogram(GROUP_BOUNDS)
        self.latency = _Histogram(LATENCY_BOUNDS_S)
        self.ledger_commit = _Histogram(LATENCY_BOUNDS_S)
        self.fsync = _Histogram(FSYNC_BOUNDS_S)
        self.rejected: dict[tuple[str, str], int] = {}
        self.server = None
        self.http_connections: Callable[[], int] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def attach(self, server, http_connections: Callable[[], int] | None = None) -> None:
        """The server whose gauges to read; ``http_connections`` counts open HTTP ones."""
        self.server = server
        self.http_connections = http_connections

    # -- NodeEvents --

    def group_committed(self, counts: list[int], arrived_s: list[float], codes: np.ndarray,
                        block: bool, ledger_s: float, sync_s: float) -> None:
        now_s = time.monotonic()
        self.codes += np.bincount(np.asarray(codes, dtype=np.uint8), minlength=256)
        self.groups += 1
        self.blocks += int(block)
        self.group_records.observe(float(sum(counts)))
        self.latency.observe_many(now_s - np.asarray(arrived_s, dtype=np.float64))
        self.ledger_commit.observe(ledger_s)
        if block:
            self.fsync.observe(sync_s)

    def error_sent(self, code: p.ErrorCode) -> None:
        self.count_rejected("wire", code.name)

    def count_rejected(self, interface: str, reason: str) -> None:
        """A request refused on ``interface`` ("wire" or "http") for ``reason``."""
        key = (interface, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    # -- Prometheus --

    def collect(self):
        codes = CounterMetricFamily("tsunagi_transactions", "Records answered by the "
                                    "group-commit writer, by result code", labels=["code"])
        for value in np.flatnonzero(self.codes).tolist():
            codes.add_metric([_CODE_NAMES.get(value, str(value))], int(self.codes[value]))
        yield codes
        yield CounterMetricFamily("tsunagi_blocks", "Blocks this node committed",
                                  value=self.blocks)
        yield CounterMetricFamily("tsunagi_groups", "Commit groups (ledger calls) answered",
                                  value=self.groups)
        yield self.group_records.family("tsunagi_group_records",
                                        "Records per commit group (one block, one fsync)")
        yield self.latency.family("tsunagi_commit_latency_seconds",
                                  "Seconds from a submission's arrival to its answer")
        yield self.ledger_commit.family("tsunagi_ledger_commit_seconds",
                                        "Seconds of each group's ledger call")
        yield self.fsync.family("tsunagi_fsync_seconds",
                                "Seconds of each block log sync (write out and fdatasync)")
        rejected = CounterMetricFamily("tsunagi_rejected", "Requests or frames refused, by "
                                       "interface and reason", labels=["interface", "reason"])
        for (interface, reason), count in sorted(self.rejected.items()):
            rejected.add_metric([interface, reason], count)
        yield rejected
        yield from self._gauges()

    def _gauges(self):
        server = self.server
        if server is None:
            return
        yield GaugeMetricFamily("tsunagi_queue_records", "Records waiting for the writer",
                                value=server.queued_records)
        connections = GaugeMetricFamily("tsunagi_connections", "Open client connections",
                                        labels=["interface"])
        connections.add_metric(["wire"], len(server.connections))
        if self.http_connections is not None:
            connections.add_metric(["http"], self.http_connections())
        yield connections
        yield GaugeMetricFamily("tsunagi_chain_height", "Height of the newest block",
                                value=server.ledger.height - 1)
        config = server.ledger.config
        info = GaugeMetricFamily("tsunagi_info", "The chain this node serves",
                                 labels=["chain", "chain_id", "asset"])
        info.add_metric([config.name, str(config.chain_id), config.asset_code], 1)
        yield info
        yield from _health(server.ledger.health())
        network = server.network_status()
        if network is not None:
            yield from _network(network)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _health(health: dict):
    """Damage and scrub progress (Ledger.health) as metric families."""
    damage = health["damage"]
    yield GaugeMetricFamily("tsunagi_damaged_block", "Height of a committed block known to be "
                            "damaged (-1: none); while set the node takes no records",
                            value=-1 if damage is None else damage["height"])
    scrub = health["scrub"]
    if scrub is not None:
        yield CounterMetricFamily("tsunagi_scrub_passes", "Full passes of the background scrub",
                                  value=scrub["passes"])
        yield CounterMetricFamily("tsunagi_scrub_blocks", "Blocks the scrub has re-read",
                                  value=scrub["blocks_checked"])
        yield CounterMetricFamily("tsunagi_scrub_bytes", "Bytes the scrub has re-read",
                                  value=scrub["bytes_checked"])


def _network(status: dict):
    """Peers, best chain and mempool (NodeServer.network_status) as metric families."""
    gauges = (("peers", "Peer connections past the handshake"),
              ("best_header_height", "Height of the best header known"),
              ("reorg_depth_last", "Blocks the last reorg took off"),
              ("reorg_depth_max", "Blocks the deepest reorg since the start took off"),
              ("side_blocks", "Blocks of other branches kept on disk"),
              ("blocks_in_flight", "Blocks asked of peers and not yet received"),
              ("mempool_records", "Records waiting for a block"),
              ("mempool_bytes", "Bytes of the records waiting for a block"),
              ("banned", "Peer addresses refused right now"))
    for key, text in gauges:
        yield GaugeMetricFamily(f"tsunagi_{key}", text, value=status[key])
    yield GaugeMetricFamily("tsunagi_chain_work", "Cumulative proof of work of the best chain "
                            "(a float: compare, do not add)", value=float(status["work"]))
    for key, text in (("reorgs", "Reorgs since the start"),
                      ("bans", "Peers banned since the start"),
                      ("blocks_received", "Blocks received from peers")):
        yield CounterMetricFamily(f"tsunagi_{key}", text, value=status[key])


def metrics_app(metrics: NodeMetrics):
    """A bare ASGI app serving ``GET /metrics`` alone, for a listener of its own."""

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            status, body, kind = 404, b"not found: the metrics are at /metrics\n", b"text/plain"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, kind = 405, b"GET /metrics\n", b"text/plain"
        else:
            status, body, kind = 200, metrics.render(), CONTENT_TYPE.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    return app
