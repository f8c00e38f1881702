"""Prepared traffic: every transfer built, signed and encoded into its frame before the run.

Three modes, the same transfers underneath:

- ``baseline``: one signed transfer per request (a ``submit`` frame);
- ``batched``: ``batch_size`` signed transfers per ``submit_batch`` request;
- ``batch-authorized``: ``batch_size`` transfers per request under one batch signature.

Sequences are valid by construction: each client owns its own payer accounts (no two clients
race on one account's sequence), and a client's sequences count up from a base taken from the
clock, so they are above those of any earlier run. ``skew`` draws payers and payees from a
Zipf-like law (weight of the k-th hottest account 1/k**skew; 0 is uniform).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tsunagi import hashing
from tsunagi.core.block import BatchAuth
from tsunagi.core.records import RECORD_BYTES, SIGNATURE_BYTES, Kind
from tsunagi.errors import ConfigError
from tsunagi.loadgen.limits import build_chunk_records, modes, seed_default, sign_pool_min
from tsunagi.loadgen.plan import Plan, _new_records, _sequence_base, _txids
from tsunagi.loadgen.signing import Progress, signing
from tsunagi.node import limits
from tsunagi.node import protocol as p

if TYPE_CHECKING:
    from tsunagi.loadgen.driver import ClientRun

__all__ = ["LoadSpec", "Traffic", "build_traffic"]


@dataclass
class LoadSpec:
    """What a run sends: the mode, the connections and processes, the records and their shape."""

    mode: str = "batched"
    clients: int = 4  # connections over all processes
    processes: int = 1
    batch_size: int = 8000  # records per request (baseline: 1)
    window: int = 0  # requests in flight per connection; 0: 1 for baseline, else 2
    count: int = 100_000  # transfers prepared over all clients
    duration_s: float = 0.0  # stop sending after this long; 0: when every request is sent
    skew: float = 0.0  # Zipf exponent of payers and payees; 0: uniform
    seed: int = seed_default  # of the keys, and of the random draws
    keep: bool = False  # keep records, txids and final codes per request, for checks after
    live: bool = False  # build batch-authorized requests while the run goes (long runs)
    sign_workers: int = 0  # processes signing the traffic; 0: all cores when processes is 1

    def __post_init__(self) -> None:
        if self.mode not in modes:
            raise ConfigError(f"mode is one of {', '.join(modes)}, got {self.mode!r}")
        if not 1 <= self.processes <= self.clients <= limits.connections_max:
            raise ConfigError(f"1 <= processes <= clients <= {limits.connections_max}")
        if not 1 <= self.batch_size <= limits.request_records_max:
            raise ConfigError(f"batch size is 1..{limits.request_records_max}")
        if self.window < 0 or self.window > limits.inflight_per_connection_max:
            raise ConfigError(f"window is 0..{limits.inflight_per_connection_max}")
        if self.count < self.clients and not self.live:
            raise ConfigError("count is at least one transfer per client")
        if self.duration_s < 0 or self.skew < 0:
            raise ConfigError("duration and skew are at least 0")
        if self.live and (self.mode != "batch-authorized" or self.keep):
            raise ConfigError("--live builds batch-authorized requests only, and keeps nothing")
        if self.live and not self.duration_s:
            raise ConfigError("--live needs --duration")

    @property
    def request_records(self) -> int:
        return 1 if self.mode == "baseline" else self.batch_size

    @property
    def requests_in_flight(self) -> int:
        return self.window or (1 if self.mode == "baseline" else 2)

    def client_count(self, client: int) -> int:
        """Transfers prepared for one client: an equal share, the remainder to the first."""
        share, rest = divmod(self.count, self.clients)
        return share + (client < rest)

    def client_range(self, client: int, accounts: int) -> tuple[int, int]:
        """The payer positions a client owns: no other client debits them."""
        return client * accounts // self.clients, (client + 1) * accounts // self.clients

    def prepared_bytes(self) -> int:
        signature = 0 if self.mode == "batch-authorized" else SIGNATURE_BYTES
        return 0 if self.live else self.count * (RECORD_BYTES + signature + 16)


class _Picker:
    """Draws positions in [first, stop): the k-th hottest with weight 1/k**skew (0: uniform).

    Which position is the k-th hottest is a fixed shuffle, so hot accounts are spread out.
    """

    def __init__(self, first: int, stop: int, skew: float, seed) -> None:
        self.first, self.size = first, stop - first
        self.cdf = self.order = None
        if skew and self.size > 1:
            self.order = np.random.default_rng(seed).permutation(self.size)
            weights = np.arange(1, self.size + 1, dtype=np.float64) ** -skew
            self.cdf = np.cumsum(weights)
            self.cdf /= self.cdf[-1]

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if self.cdf is None:
            return self.first + rng.integers(0, self.size, count)
        ranks = np.minimum(np.searchsorted(self.cdf, rng.random(count), side="right"),
                           self.size - 1)
        return self.first + self.order[ranks]


@dataclass
class Traffic:
    """One client's requests, encoded, in send order: request i has ``counts[i]`` records.

    Built traffic numbers its requests 1, 2, ...; any unique request ids would do.
    """

    frames: list[bytes]
    counts: list[int]
    records: np.ndarray | None = None  # RECORD_DTYPE, every record in send order (keep)
    txids: np.ndarray | None = None  # N x 32, likewise
    source: Iterator[tuple[bytes, int]] | None = None  # live: yields (frame, count) on demand

    @property
    def record_count(self) -> int:
        return sum(self.counts)

    def record_slices(self) -> list[slice]:
        """For each request, where its records are in ``records`` and ``txids``."""
        ends = np.cumsum(self.counts).tolist()
        return [slice(end - count, end) for end, count in zip(ends, self.counts)]

    def unanswered(self, run: ClientRun) -> Traffic:
        """The requests of a kept run that got no answer: to send again after a lost node.

        Submissions are idempotent, so one that was committed after all answers
        ``already_committed`` with its original code.
        """
        answered = set(run.codes)
        keep = [i for i in range(len(self.frames)) if i not in answered]
        slices = self.record_slices()
        parts = [np.arange(slices[i].start, slices[i].stop) for i in keep]
        pick = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return Traffic([self.frames[i] for i in keep], [self.counts[i] for i in keep],
                       None if self.records is None else self.records[pick],
                       None if self.txids is None else self.txids[pick])


def _transfers(plan: Plan, payers: np.ndarray, payees: np.ndarray, first_sequence: int,
               authorized: bool) -> np.ndarray:
    count = len(payers)
    same = payees == payers
    payees[same] = (payees[same] + 1) % len(plan.accounts)  # never pay oneself
    return _new_records(count, Kind.transfer, plan.chain_id,
                        first_sequence + np.arange(count, dtype=np.uint64),
                        plan.accounts[payers], plan.accounts[payees], 1, authorized)


def _auth_bytes(auth: BatchAuth) -> bytes:
    return struct.pack("<II32s8x64s", auth.first, auth.count, auth.signer_key, auth.signature)


def build_traffic(plan: Plan, spec: LoadSpec, client: int, sequence_base: int | None = None,
                  sign_workers: int = 1, progress: Progress | None = None) -> Traffic:
    """Client ``client``'s requests, signed and encoded (or, with ``spec.live``, a source).

    ``progress(count)`` hears of each count of transfers prepared, as they are.
    """
    base = _sequence_base() if sequence_base is None else sequence_base
    rng = np.random.default_rng([spec.seed, client, base & 0xFFFFFFFF])
    payees = _Picker(0, len(plan.accounts), spec.skew, [spec.seed, 1 << 32])
    if spec.mode == "batch-authorized":
        requests = _authorized_requests(plan, spec, client, base, rng, payees)
        if spec.live:
            return Traffic([], [], source=((frame, n) for frame, n, _, _ in requests))
        built = []
        for request in requests:
            built.append(request)
            if progress is not None:
                progress(request[1])
        traffic = Traffic([b[0] for b in built], [b[1] for b in built])
        if spec.keep:
            traffic.records = np.concatenate([b[2] for b in built])
            traffic.txids = np.concatenate([b[3] for b in built])
        return traffic
    return _signed_traffic(plan, spec, client, base, rng, payees, sign_workers, progress)


def _signed_traffic(plan: Plan, spec: LoadSpec, client: int, base: int,
                    rng: np.random.Generator, payees: _Picker, sign_workers: int,
                    progress: Progress | None) -> Traffic:
    """Signed transfers built a chunk at a time, so only the frames stay in memory."""
    count = spec.client_count(client)
    payers = _Picker(*spec.client_range(client, len(plan.accounts)), spec.skew,
                     [spec.seed, client])
    chunk = max(1, build_chunk_records // spec.request_records) * spec.request_records
    traffic, kept = Traffic([], []), []
    workers = sign_workers if count >= sign_pool_min else 1
    with signing(plan, workers) as sign:
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            picks = payers.draw(rng, size)
            records = _transfers(plan, picks, payees.draw(rng, size), base + 1 + start, False)
            txids = _txids(records)
            signatures = sign(txids, plan.owner_of(picks), progress)
            _signed_frames(records, signatures, spec.request_records, traffic)
            if spec.keep:
                kept.append((records, txids))
    if spec.keep:
        traffic.records = np.concatenate([records for records, _ in kept])
        traffic.txids = np.concatenate([txids for _, txids in kept])
    return traffic


def _signed_frames(records: np.ndarray, signatures: bytes, size: int, traffic: Traffic) -> None:
    """Appends requests of ``size`` records (a submit when 1) to the traffic, numbered on."""
    data = records.tobytes()
    for first in range(0, len(records), size):
        stop = min(len(records), first + size)
        chunk = data[first * RECORD_BYTES:stop * RECORD_BYTES]
        chunk_signatures = signatures[first * SIGNATURE_BYTES:stop * SIGNATURE_BYTES]
        message = p.Submit(chunk, chunk_signatures) if size == 1 \
            else p.SubmitBatch(chunk, chunk_signatures)
        traffic.frames.append(p.encode(message, len(traffic.frames) + 1))
        traffic.counts.append(stop - first)


def _authorized_requests(plan: Plan, spec: LoadSpec, client: int, base: int,
                         rng: np.random.Generator, payees: _Picker
                         ) -> Iterator[tuple[bytes, int, np.ndarray, np.ndarray]]:
    """(frame, count, records, txids) of each request: payers of one owner key a request, so
    one signature covers it; the client's key blocks take turns."""
    first, stop = spec.client_range(client, len(plan.accounts))
    cells = plan.key_blocks(first, stop)
    pickers = [_Picker(a, b, spec.skew, [spec.seed, client, a]) for a, b, _ in cells]
    keys = plan.owner_keys()
    total = None if spec.live else spec.client_count(client)
    sent = number = 0
    while total is None or sent < total:
        size = spec.batch_size if total is None else min(spec.batch_size, total - sent)
        cell = number % len(cells)
        payers = pickers[cell].draw(rng, size)
        records = _transfers(plan, payers, payees.draw(rng, size), base + 1 + sent, True)
        txids = _txids(records)
        key = keys[cells[cell][2]]
        auth = BatchAuth(0, size, key.public_key, key.sign(hashing.merkle_root(txids)))
        frame = p.encode(p.SubmitBatch(records.tobytes(), b"", _auth_bytes(auth)), number + 1)
        yield frame, size, records, txids
        sent += size
        number += 1
