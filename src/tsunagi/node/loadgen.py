"""The load generator: drives a running node with prepared, pre-signed transfers and draws it.

``tsunagi loadgen --target HOST:PORT`` (also ``python -m tsunagi.node.loadgen``) opens
``--clients`` connections, spread over ``--processes`` processes, and keeps ``--window``
requests in flight on each until ``--count`` transfers are answered or ``--duration`` is up.
Three modes, the same transfers underneath:

- ``baseline``: one signed transfer per request (a ``submit`` frame);
- ``batched``: ``--batch-size`` signed transfers per ``submit_batch`` request;
- ``batch-authorized``: ``--batch-size`` transfers per request under one batch signature.

Keys and accounts come from ``--seed``: the issuer key (index 0) and ``--keys`` owner keys
(1..K), each owning a contiguous block of the accounts. ``--prepare DIR`` creates a chain in DIR
whose issuer is that key, with accounts 2 .. N+1 opened and funded, for a node to serve;
``--setup`` opens and funds N new accounts on a running target instead (its chain must have the
seed's issuer key as account 1, as a prepared chain has).

Every transfer is built and signed before the timed phase, as prepared client traffic, and is
encoded into its request frame then, so the timed phase only writes bytes and reads answers.
Sequences are valid by construction: each client owns its own payer accounts (no two clients
race on one account's sequence), and a client's sequences count up from a base taken from the
clock, so they are above those of any earlier run. ``--skew`` draws payers and payees from a
Zipf-like law (weight of the k-th hottest account 1/k**skew; 0 is uniform).

Throughput counts transfers answered ``ok`` per second of the run; latency is per request, from
writing its frame to reading its answer. ``--out STEM`` writes STEM.json and STEM.png (throughput
over time, latency histogram, and the node's resident memory when sampled).

Driving processes and the signing pool are started with multiprocessing's ``spawn``: a script
that calls :func:`run_load` with ``processes > 1``, or builds more than ``SIGN_POOL_MIN`` signed
transfers with ``sign_workers > 1``, must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsunagi import hashing
from tsunagi.core.block import BatchAuth
from tsunagi.core.codes import Result
from tsunagi.core.config import BLOCK_RECORDS_LIMIT, ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.core.records import RECORD_BYTES, SIGNATURE_BYTES, Kind, pack_many
from tsunagi.errors import ConfigError, NodeError
from tsunagi.node import limits
from tsunagi.node import protocol as p

__all__ = ["LoadResult", "LoadSpec", "NodeProcess", "Plan", "Traffic", "build_traffic",
           "draw_chart", "drive", "drive_traffic", "main", "prepare_chain", "register_commands",
           "run_load", "setup_accounts", "signing", "target_plan"]

MODES = ("baseline", "batched", "batch-authorized")
CHAIN_ID_DEFAULT = 7
SEED_DEFAULT = 1
ISSUER_ACCOUNT = 1  # a config's first issuer is account 1
FIRST_ACCOUNT = 2  # a prepared chain's load accounts follow the issuer
# Each load account starts with this much, far more than any run moves out of it (1 unit a
# transfer), so no transfer fails for funds. 10**12 units times ACCOUNTS_MAX stays below 2**64.
FUNDING_UNITS = 10**12
ACCOUNTS_MAX = 10_000_000
KEYS_MAX = 4096  # owner keys; a batch-authorized request needs one entry per key it touches
# A remote setup request holds the most records a request may; a local one the most a block may.
SETUP_REMOTE_RECORDS = limits.request_records_max
SETUP_LOCAL_RECORDS = BLOCK_RECORDS_LIMIT
# Below this many signatures a pool of signing processes costs more to start than it saves.
SIGN_POOL_MIN = 20_000
SIGN_CHUNK = 8192  # signatures per task of the signing pool
# Signed traffic is built this many records at a time: the records, txids and signatures of
# one chunk are dropped once encoded into frames (keeping ~1/3 of the memory of doing it whole).
BUILD_CHUNK_RECORDS = 1 << 18
# Prepared traffic is held in memory (192 bytes a signed transfer); past this share of the
# memory available when the run starts (6 GiB where /proc/meminfo is missing) the run is
# refused instead of swapping: lower --count, or use --live for batch-authorized runs.
PREBUILD_MEMORY_SHARE = 0.7
PREBUILD_BYTES_DEFAULT = 6 << 30
PROGRESS_TICK_S = 0.1  # how often the live display (and a tick callback) sees the counters
# Width of one bar of the throughput-over-time chart: the first of these that leaves at most
# SERIES_BARS_MAX bars, so a long run is not drawn as a comb of single blocks.
SERIES_BIN_CHOICES_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
SERIES_BARS_MAX = 150
DRAIN_S = 60.0  # after the deadline, how long answers still in flight are waited for
OVERLOADED_PAUSE_S = 0.005  # an `overloaded` request is sent again after this pause
CONNECT_TIMEOUT_S = 10.0
NODE_START_TIMEOUT_S = 60.0
# A node stopped with SIGTERM first finishes indexing what it committed: after a burst of
# batch-authorized transfers that takes minutes here (the index takes ~90,000 records a second).
# Killing it sooner leaves the index behind, and the next start makes its writer wait for the
# catch-up, which stalls the next run.
NODE_STOP_TIMEOUT_S = 900.0
LIVE_AHEAD = 4  # requests a live-built client keeps ready beyond its window
# Counters each driving process shares with the display: records answered, records ok,
# requests answered, records that failed.
_COUNTERS = 4
_REQUEST_ID = struct.Struct("<Q")  # at offset 8 of a frame


# --- keys and plans ---------------------------------------------------------------------------

def loadgen_key(seed: int, index: int) -> PrivateKey:
    """Key ``index`` of ``seed`` (0 the issuer, 1..K the owners): SHA-256d of the two numbers."""
    return PrivateKey.from_bytes(hashing.sha256d(struct.pack("<QQ", seed, index)))


@dataclass(frozen=True)
class Plan:
    """The accounts a run uses and who owns them; owner k holds a contiguous block of them."""

    chain_id: int
    seed: int
    key_count: int
    accounts: np.ndarray  # account numbers, by position

    def owner_of(self, positions: np.ndarray) -> np.ndarray:
        """Owner key index (0..K-1) of the accounts at ``positions``."""
        return np.asarray(positions, np.int64) * self.key_count // len(self.accounts)

    def key_blocks(self, first: int, stop: int) -> list[tuple[int, int, int]]:
        """(start, stop, owner) ranges of positions first..stop-1 with one owner each."""
        owners = self.owner_of(np.arange(first, stop))
        cuts = np.flatnonzero(np.diff(owners)) + 1
        starts = np.concatenate(([0], cuts)) + first
        stops = np.concatenate((cuts, [stop - first])) + first
        return [(int(a), int(b), int(owners[a - first])) for a, b in zip(starts, stops)]

    def owner_keys(self) -> list[PrivateKey]:
        return [loadgen_key(self.seed, 1 + k) for k in range(self.key_count)]


def _check_plan_sizes(accounts: int, keys: int) -> None:
    if not 2 <= accounts <= ACCOUNTS_MAX:
        raise ConfigError(f"--accounts is 2..{ACCOUNTS_MAX:,}, got {accounts:,}")
    if not 1 <= keys <= min(KEYS_MAX, accounts):
        raise ConfigError(f"--keys is 1..{min(KEYS_MAX, accounts)}, got {keys}")


def _sequence_base() -> int:
    # Nanoseconds since 1970 grow faster than any run can use sequences, so a later run's
    # sequences are above an earlier run's on every account (u64 holds it until 2554).
    return time.time_ns()


def _new_records(count: int, kind: Kind, chain_id: int, sequences, debit, credit, amount,
                 authorized: bool) -> np.ndarray:
    return pack_many(count, kind, chain_id=chain_id, sequence=sequences, debit_account=debit,
                     credit_account=credit, amount=amount, batch_authorized=authorized)


def _txids(records: np.ndarray) -> np.ndarray:
    return hashing.sha256d_records(memoryview(records).cast("B"), RECORD_BYTES,
                                   hashing.cpu_count())


def _authorize(records: np.ndarray, txids: np.ndarray, ranges, keys) -> list[BatchAuth]:
    """One BatchAuth per (start, stop, key) range of ``records`` (positions within them)."""
    return [BatchAuth(start, stop - start, keys[k].public_key,
                      keys[k].sign(hashing.merkle_root(txids[start:stop])))
            for start, stop, k in ranges]


def _open_requests(plan_keys: list[PrivateKey], plan: Plan, chunk: int
                   ) -> Iterator[tuple[np.ndarray, list[BatchAuth]]]:
    """open_account requests for every position, each covered by its owners' batch entries."""
    base, total = _sequence_base(), len(plan.accounts)
    for first in range(0, total, chunk):
        stop = min(total, first + chunk)
        # An open_account's sequence is free: the clock makes a repeated setup's records new.
        records = _new_records(stop - first, Kind.open_account, plan.chain_id,
                               base + np.arange(first, stop), 0, 0, 0, True)
        ranges = [(a - first, b - first, k) for a, b, k in plan.key_blocks(first, stop)]
        for a, b, k in ranges:
            records["data"][a:b] = np.frombuffer(plan_keys[k].public_key, np.uint8)
        yield records, _authorize(records, _txids(records), ranges, plan_keys)


def _mint_requests(plan: Plan, issuer: PrivateKey, chunk: int
                   ) -> Iterator[tuple[np.ndarray, list[BatchAuth]]]:
    base, total = _sequence_base(), len(plan.accounts)
    for first in range(0, total, chunk):
        stop = min(total, first + chunk)
        records = _new_records(stop - first, Kind.mint, plan.chain_id,
                               base + np.arange(first, stop), ISSUER_ACCOUNT,
                               plan.accounts[first:stop], FUNDING_UNITS, True)
        yield records, _authorize(records, _txids(records), [(0, stop - first, 0)], [issuer])


def _expect_ok(codes: np.ndarray, what: str) -> None:
    failed = np.flatnonzero(codes)
    if len(failed):
        names = sorted({Result(int(codes[i])).name for i in failed[:100]})
        raise ConfigError(f"setup: {len(failed)} {what} records failed ({', '.join(names)}); "
                          "is the seed's issuer key account 1 of this chain?")


def _prepared_plan(chain_id: int, seed: int, accounts: int, keys: int) -> Plan:
    return Plan(chain_id, seed, keys,
                np.arange(FIRST_ACCOUNT, FIRST_ACCOUNT + accounts, dtype=np.uint64))


def prepare_chain(path, accounts: int, *, keys: int = 8, seed: int = SEED_DEFAULT,
                  chain_id: int = CHAIN_ID_DEFAULT,
                  progress: Callable[[str, int, int], None] | None = None) -> Plan:
    """Creates a chain in ``path`` with ``accounts`` funded load accounts (2 .. N+1)."""
    from tsunagi.ledger import Ledger

    _check_plan_sizes(accounts, keys)
    issuer = loadgen_key(seed, 0)
    config = ChainConfig(name="loadgen", chain_id=chain_id, asset_code="TSU",
                         issuers=(issuer.public_key,), block_records_max=BLOCK_RECORDS_LIMIT)
    plan = _prepared_plan(chain_id, seed, accounts, keys)
    with Ledger.create(path, config) as ledger:
        done = 0
        for records, auths in _open_requests(plan.owner_keys(), plan, SETUP_LOCAL_RECORDS):
            answer = ledger.submit_batch(records, b"", auths)
            _expect_ok(answer.codes, "open_account")
            if not np.array_equal(answer.opened, plan.accounts[done:done + len(records)]):
                raise ConfigError("setup: accounts were not opened with the expected numbers")
            done += len(records)
            if progress:
                progress("opened", done, accounts)
        done = 0
        for records, auths in _mint_requests(plan, issuer, SETUP_LOCAL_RECORDS):
            _expect_ok(ledger.submit_batch(records, b"", auths).codes, "mint")
            done += len(records)
            if progress:
                progress("funded", done, accounts)
    return plan


async def setup_accounts(client, accounts: int, *, keys: int = 8, seed: int = SEED_DEFAULT,
                         progress: Callable[[str, int, int], None] | None = None) -> Plan:
    """Opens and funds ``accounts`` new load accounts on the node ``client`` talks to."""
    _check_plan_sizes(accounts, keys)
    welcome = client.welcome or await client.connect()
    plan = Plan(welcome.chain_id, seed, keys, np.zeros(accounts, np.uint64))
    await _check_issuer(client, seed)
    done = 0
    for records, auths in _open_requests(plan.owner_keys(), plan, SETUP_REMOTE_RECORDS):
        answer = await client.submit_batch(records.tobytes(), b"", auths)
        _expect_ok(answer.codes, "open_account")
        plan.accounts[done:done + len(records)] = answer.opened
        done += len(records)
        if progress:
            progress("opened", done, accounts)
    done = 0
    for records, auths in _mint_requests(plan, loadgen_key(seed, 0), SETUP_REMOTE_RECORDS):
        answer = await client.submit_batch(records.tobytes(), b"", auths)
        _expect_ok(answer.codes, "mint")
        done += len(records)
        if progress:
            progress("funded", done, accounts)
    return plan


async def _check_issuer(client, seed: int) -> None:
    issuer = await client.account(ISSUER_ACCOUNT)
    if issuer is None or not issuer.issuer or issuer.owner_key != loadgen_key(seed, 0).public_key:
        raise ConfigError(f"account {ISSUER_ACCOUNT} of the target is not the issuer key of "
                          f"seed {seed}: serve a chain made by `tsunagi loadgen --prepare`")


async def target_plan(client, accounts: int, *, keys: int = 8, seed: int = SEED_DEFAULT
                      ) -> Plan:
    """The plan of a prepared chain, after checking that the target holds its accounts."""
    _check_plan_sizes(accounts, keys)
    welcome = client.welcome or await client.connect()
    plan = _prepared_plan(welcome.chain_id, seed, accounts, keys)
    owner_keys = plan.owner_keys()
    for position in (0, accounts - 1):
        info = await client.account(int(plan.accounts[position]))
        expected = owner_keys[int(plan.owner_of(np.array([position]))[0])].public_key
        if info is None or info.owner_key != expected:
            raise ConfigError(
                f"account {int(plan.accounts[position])} of the target is not a load account "
                f"of seed {seed} with {keys} keys: prepare the chain with "
                f"`--prepare DIR --accounts {accounts} --keys {keys}`, or pass --setup")
    return plan


# --- signing ----------------------------------------------------------------------------------

class _Signer:
    """BIP340 signing with each key's keypair computed once (coincurve's own sign_schnorr
    recomputes it on every call, three times the work). Falls back to PrivateKey.sign."""

    def __init__(self, secrets: list[bytes]) -> None:
        self._keys = [PrivateKey.from_bytes(s) for s in secrets]
        try:
            from coincurve._libsecp256k1 import ffi, lib
            from coincurve.context import GLOBAL_CONTEXT
        except ImportError:
            self._lib = None
            return
        self._ffi, self._lib, self._context = ffi, lib, GLOBAL_CONTEXT.ctx
        self._pairs = []
        for secret in secrets:
            pair = ffi.new("secp256k1_keypair *")
            if not lib.secp256k1_keypair_create(self._context, pair, secret):
                raise ConfigError("a load key is not a valid secp256k1 secret")
            self._pairs.append(pair)

    def sign(self, txids: np.ndarray, owners: np.ndarray) -> bytes:
        """N x 64 signature bytes of N txids, each by the key ``owners[i]``."""
        out = bytearray(len(txids) * SIGNATURE_BYTES)
        if self._lib is None:
            for i, (txid, k) in enumerate(zip(txids, owners.tolist())):
                out[i * 64:(i + 1) * 64] = self._keys[k].sign(txid.tobytes())
            return bytes(out)
        buffer = self._ffi.from_buffer(out)
        sign, context, pairs = self._lib.secp256k1_schnorrsig_sign32, self._context, self._pairs
        # Zero auxiliary randomness is BIP340's deterministic variant: throwaway load keys do
        # not need the side-channel protection that fresh randomness buys.
        aux = bytes(32)
        for i, (txid, k) in enumerate(zip(_rows(txids), owners.tolist())):
            if not sign(context, buffer + i * 64, txid, pairs[k], aux):
                raise RuntimeError("libsecp256k1 failed to sign")
        return bytes(out)


def _rows(array: np.ndarray) -> list[bytes]:
    data = array.tobytes()
    width = array.shape[1]
    return [data[i:i + width] for i in range(0, len(data), width)]


_pool_signer: _Signer | None = None


def _pool_init(secrets: list[bytes]) -> None:
    global _pool_signer
    _pool_signer = _Signer(secrets)


def _pool_sign(txids: np.ndarray, owners: np.ndarray) -> bytes:
    return _pool_signer.sign(txids, owners)


@contextlib.contextmanager
def signing(plan: Plan, workers: int = 1) -> Iterator[Callable[[np.ndarray, np.ndarray], bytes]]:
    """A ``sign(txids, owners) -> signature bytes`` of the plan's owner keys, on ``workers``
    processes (spawned once, for every call in the ``with``) when ``workers > 1``."""
    secrets = [key.to_bytes() for key in plan.owner_keys()]
    if workers <= 1:
        yield _Signer(secrets).sign
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, context, initializer=_pool_init,
                             initargs=(secrets,)) as pool:

        def sign(txids: np.ndarray, owners: np.ndarray) -> bytes:
            parts = [pool.submit(_pool_sign, txids[i:i + SIGN_CHUNK], owners[i:i + SIGN_CHUNK])
                     for i in range(0, len(txids), SIGN_CHUNK)]
            return b"".join(part.result() for part in parts)

        yield sign


# --- traffic ----------------------------------------------------------------------------------

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
    seed: int = SEED_DEFAULT  # of the keys, and of the random draws
    keep: bool = False  # keep records, txids and final codes per request, for checks after
    live: bool = False  # build batch-authorized requests while the run goes (long runs)
    sign_workers: int = 0  # processes signing the traffic; 0: all cores when processes is 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode is one of {', '.join(MODES)}, got {self.mode!r}")
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
                  sign_workers: int = 1) -> Traffic:
    """Client ``client``'s requests, signed and encoded (or, with ``spec.live``, a source)."""
    base = _sequence_base() if sequence_base is None else sequence_base
    rng = np.random.default_rng([spec.seed, client, base & 0xFFFFFFFF])
    payees = _Picker(0, len(plan.accounts), spec.skew, [spec.seed, 1 << 32])
    if spec.mode == "batch-authorized":
        requests = _authorized_requests(plan, spec, client, base, rng, payees)
        if spec.live:
            return Traffic([], [], source=((frame, n) for frame, n, _, _ in requests))
        built = list(requests)
        traffic = Traffic([b[0] for b in built], [b[1] for b in built])
        if spec.keep:
            traffic.records = np.concatenate([b[2] for b in built])
            traffic.txids = np.concatenate([b[3] for b in built])
        return traffic
    return _signed_traffic(plan, spec, client, base, rng, payees, sign_workers)


def _signed_traffic(plan: Plan, spec: LoadSpec, client: int, base: int,
                    rng: np.random.Generator, payees: _Picker, sign_workers: int) -> Traffic:
    """Signed transfers built a chunk at a time, so only the frames stay in memory."""
    count = spec.client_count(client)
    payers = _Picker(*spec.client_range(client, len(plan.accounts)), spec.skew,
                     [spec.seed, client])
    chunk = max(1, BUILD_CHUNK_RECORDS // spec.request_records) * spec.request_records
    traffic, kept = Traffic([], []), []
    workers = sign_workers if count >= SIGN_POOL_MIN else 1
    with signing(plan, workers) as sign:
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            picks = payers.draw(rng, size)
            records = _transfers(plan, picks, payees.draw(rng, size), base + 1 + start, False)
            txids = _txids(records)
            signatures = sign(txids, plan.owner_of(picks))
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


# --- driving ----------------------------------------------------------------------------------

@dataclass
class ClientRun:
    """What one connection saw, per request in send order; codes only when kept."""

    sent_s: np.ndarray  # time.monotonic() when the frame was written
    answered_s: np.ndarray  # when its answer was read; NaN: no answer
    counts: np.ndarray  # records in the request
    ok: np.ndarray  # records answered ok
    code_counts: np.ndarray  # 256 counters of the result codes of answered records
    errors: dict[str, int] = field(default_factory=dict)  # error answers by name
    overloaded: int = 0  # `overloaded` answers (each request was then sent again)
    lost: str | None = None  # why the connection ended early
    codes: dict[int, bytes] | None = None  # request index -> final codes, when kept


class _Driver(asyncio.Protocol):
    """One connection: the hello, then up to ``window`` requests in flight until the end."""

    def __init__(self, traffic: Traffic, window: int, keep: bool, counters, slot: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.traffic, self.window, self.keep = traffic, window, keep
        self.counters, self.slot = counters, slot * _COUNTERS
        self.reader = p.FrameReader((p.HELLO_VERSION,) + limits.protocol_versions)
        self.welcome = self.loop.create_future()
        self.finished = self.loop.create_future()
        self.transport = None
        self.deadline_s = math.inf
        self.started = False
        self.sent = 0  # requests written (each once; resends do not count)
        self.inflight: dict[int, bytes] = {}  # request index -> frame, until answered
        self.index_of: dict[int, int] = {}  # request id (read from the frame) -> index
        self.ready: list[tuple[bytes, int]] = []  # live: built requests not sent yet
        self.room = asyncio.Event()  # live: set when an answer makes room for another request
        self.exhausted = traffic.source is None
        self.sent_s: list[float] = []
        self.answered_s: list[float] = []
        self.counts: list[int] = []
        self.ok: list[int] = []
        self.code_counts = np.zeros(256, np.int64)
        self.run = ClientRun(*(np.zeros(0),) * 4, self.code_counts,
                             codes={} if keep else None)

    # -- asyncio callbacks --

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(p.encode(p.Hello(limits.protocol_versions), 0))

    def data_received(self, data) -> None:
        self.reader.feed(data)
        try:
            while (frame := self.reader.next_frame()) is not None:
                self._on_message(frame.request_id, p.decode(frame))
        except NodeError as exc:  # ProtocolError: the node broke the protocol
            self.end(f"protocol error: {exc}")
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.end(f"connection lost: {exc}" if exc else "the node closed the connection")

    # -- requests --

    def start(self, deadline_s: float) -> None:
        self.deadline_s, self.started = deadline_s, True
        if not self.exhausted:
            self.loop.create_task(self._build_ahead())
        self._pump()

    def _next_request(self) -> tuple[bytes, int] | None:
        if self.traffic.source is not None:
            return self.ready.pop(0) if self.ready else None
        if self.sent < len(self.traffic.frames):
            return self.traffic.frames[self.sent], self.traffic.counts[self.sent]
        return None

    def _pump(self) -> None:
        if self.finished.done():
            return
        now = time.monotonic()
        while len(self.inflight) < self.window and now < self.deadline_s:
            request = self._next_request()
            if request is None:
                break
            frame, count = request
            self.inflight[self.sent] = frame
            self.index_of[_REQUEST_ID.unpack_from(frame, 8)[0]] = self.sent
            self.sent_s.append(now)
            self.answered_s.append(math.nan)
            self.counts.append(count)
            self.ok.append(0)
            self.sent += 1
            self.transport.write(frame)
        nothing_left = now >= self.deadline_s or (
            self.exhausted and not self.ready and self.sent >= len(self.traffic.frames))
        if not self.inflight and nothing_left:
            self.end(None)

    async def _build_ahead(self) -> None:
        """Live traffic: keeps LIVE_AHEAD requests built beyond the window, on a thread."""
        source = self.traffic.source
        while not self.finished.done() and time.monotonic() < self.deadline_s:
            if len(self.ready) >= LIVE_AHEAD + self.window - len(self.inflight):
                self.room.clear()
                await self.room.wait()
                continue
            request = await self.loop.run_in_executor(None, next, source, None)
            if request is None:
                break
            self.ready.append(request)
            self._pump()
        self.exhausted = True
        self._pump()

    def _on_message(self, request_id: int, message) -> None:
        if not self.welcome.done():
            if isinstance(message, p.Welcome):
                self.welcome.set_result(message)
            else:
                self.welcome.set_exception(NodeError(f"the node answered the hello: {message}"))
            return
        index = self.index_of.get(request_id)
        if index not in self.inflight:
            if isinstance(message, p.Error):  # request id 0: the node closes the connection
                self.end(f"node: {message.code.name}: {message.message}")
            return
        if isinstance(message, p.Error) and message.code is p.ErrorCode.overloaded:
            self.run.overloaded += 1
            self.loop.call_later(OVERLOADED_PAUSE_S, self._resend, index)
            return
        self.answered_s[index] = time.monotonic()
        count = self.counts[index]
        del self.inflight[index], self.index_of[request_id]
        self.room.set()
        c = self.counters
        c[self.slot] += count
        c[self.slot + 2] += 1
        if isinstance(message, p.SubmitAnswer):
            self._count_codes(index, message)
        else:
            name = message.code.name if isinstance(message, p.Error) else type(message).__name__
            self.run.errors[name] = self.run.errors.get(name, 0) + 1
            c[self.slot + 3] += count
        self._pump()

    def _count_codes(self, index: int, answer: p.SubmitAnswer) -> None:
        codes = answer.codes
        if len(codes) == 1:
            self.code_counts[codes[0]] += 1
            ok = int(codes[0] == 0)
        else:
            array = np.frombuffer(codes, np.uint8)
            self.code_counts += np.bincount(array, minlength=256)
            ok = len(codes) - int(np.count_nonzero(array))
        self.ok[index] = ok
        self.counters[self.slot + 1] += ok
        self.counters[self.slot + 3] += len(codes) - ok
        if self.keep:
            self.run.codes[index] = answer.final_codes().tobytes()

    def _resend(self, index: int) -> None:
        if index in self.inflight and not self.finished.done():
            self.transport.write(self.inflight[index])

    def end(self, lost: str | None) -> None:
        """Finishes the run (once): ``lost`` says why, when it ends before its last answer."""
        if self.finished.done():
            return
        if lost is not None and not self.welcome.done():
            self.welcome.set_exception(NodeError(lost))
        run = self.run
        run.lost = lost if (lost and (self.inflight or not self.started)) else None
        run.sent_s, run.answered_s = np.array(self.sent_s), np.array(self.answered_s)
        run.counts, run.ok = np.array(self.counts, np.int64), np.array(self.ok, np.int64)
        self.finished.set_result(run)
        self.room.set()
        if self.transport is not None:
            self.transport.close()


async def _open_driver(host: str, port: int, traffic: Traffic, window: int, keep: bool,
                       counters, slot: int) -> _Driver:
    loop = asyncio.get_running_loop()
    try:
        _, driver = await asyncio.wait_for(loop.create_connection(
            lambda: _Driver(traffic, window, keep, counters, slot), host, port),
            CONNECT_TIMEOUT_S)
        await asyncio.wait_for(driver.welcome, CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise NodeError(f"cannot connect to the node at {host}:{port}: {exc}") from None
    return driver


async def drive(host: str, port: int, traffics: list[Traffic], spec: LoadSpec, *,
                counters=None, slot: int = 0, go=None) -> tuple[float, list[ClientRun]]:
    """Runs prepared traffic over one connection each; returns (start time, runs).

    ``go`` (async, optional) waits for a shared start signal and returns the start time.
    """
    counters = counters if counters is not None else [0] * _COUNTERS * (slot + 1)
    drivers = await asyncio.gather(*(
        _open_driver(host, port, t, spec.requests_in_flight, spec.keep, counters, slot)
        for t in traffics))
    start_s = await go() if go is not None else time.monotonic()
    deadline_s = start_s + spec.duration_s if spec.duration_s else math.inf
    for driver in drivers:
        driver.start(deadline_s)
    finished = [driver.finished for driver in drivers]
    timeout_s = None if not spec.duration_s else max(0.0, deadline_s - time.monotonic()) + DRAIN_S
    await asyncio.wait(finished, timeout=timeout_s)
    for driver in drivers:
        driver.end("no answer within the drain time after the deadline")
    return start_s, [future.result() for future in finished]


# --- one run, in one or several processes ------------------------------------------------------

@dataclass
class LoadResult:
    """A finished run: the summary (what --out writes as JSON) and the per-connection runs."""

    summary: dict
    runs: list[ClientRun]
    traffics: list[Traffic] = field(default_factory=list)  # in-process runs with spec.keep


def _sign_workers(spec: LoadSpec) -> int:
    if spec.sign_workers:
        return spec.sign_workers
    return hashing.cpu_count() if spec.processes == 1 else 1


def _clients_of(spec: LoadSpec, process: int) -> list[int]:
    return list(range(process, spec.clients, spec.processes))


def _build_all(plan: Plan, spec: LoadSpec, clients: list[int]) -> list[Traffic]:
    base = _sequence_base()
    return [build_traffic(plan, spec, client, base, _sign_workers(spec)) for client in clients]


def _new_runner() -> asyncio.Runner:
    from tsunagi.node.server import new_event_loop

    return asyncio.Runner(loop_factory=new_event_loop)


def _worker(host: str, port: int, plan: Plan, spec: LoadSpec, process: int, counters,
            messages, go, start_value) -> None:
    """A driving process: builds its clients' traffic, connects, waits for go, drives."""
    try:
        traffics = _build_all(plan, spec, _clients_of(spec, process))

        async def wait_for_go() -> float:
            messages.put(("ready", process, None))
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            return start_value.value

        with _new_runner() as runner:
            _, runs = runner.run(drive(host, port, traffics, spec, counters=counters,
                                       slot=process, go=wait_for_go))
        messages.put(("done", process, runs))
    except Exception as exc:  # the parent reports it; a traceback here would be lost
        messages.put(("failed", process, f"{type(exc).__name__}: {exc}"))


class _Ticker:
    """Calls ``tick(elapsed_s, totals)`` every PROGRESS_TICK_S on a thread while it runs."""

    def __init__(self, counters, tick: Callable[[float, np.ndarray], None] | None) -> None:
        self.counters, self.tick = counters, tick
        self.start_s: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def totals(self) -> np.ndarray:
        return np.array(self.counters[:], np.int64).reshape(-1, _COUNTERS).sum(axis=0)

    def __enter__(self) -> _Ticker:
        if self.tick is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_TICK_S):
            if self.start_s is not None:
                self.tick(time.monotonic() - self.start_s, self.totals())


def prebuild_bytes_max() -> int:
    """How many bytes of prepared traffic a run may hold: a share of MemAvailable."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * PREBUILD_MEMORY_SHARE)
    except (OSError, ValueError, IndexError):
        pass
    return PREBUILD_BYTES_DEFAULT


def run_load(host: str, port: int, plan: Plan, spec: LoadSpec, *,
             tick: Callable[[float, np.ndarray], None] | None = None,
             phase: Callable[[str], None] | None = None) -> LoadResult:
    """Prepares the traffic, drives the node at ``host:port`` and summarises the run.

    ``tick(elapsed_s, totals)`` sees the running totals (records answered, ok, requests,
    failed records) a few times a second; ``phase(text)`` hears what is being done.
    """
    if spec.prepared_bytes() > (allowed := prebuild_bytes_max()):
        raise ConfigError(f"{spec.count:,} prepared transfers need "
                          f"{spec.prepared_bytes() >> 20:,} MiB, more than the "
                          f"{allowed >> 20:,} MiB allowed ({PREBUILD_MEMORY_SHARE:.0%} of the "
                          f"memory available): lower --count, or use --live")
    if spec.clients > len(plan.accounts):
        raise ConfigError("each client needs its own payer accounts: clients <= accounts")
    if spec.processes == 1:
        if phase:
            phase("signing and encoding the traffic")
        traffics = _build_all(plan, spec, _clients_of(spec, 0))
        if phase:
            phase("driving")
        return drive_traffic(host, port, traffics, spec, tick=tick)
    counters = multiprocessing.RawArray("q", _COUNTERS * spec.processes)
    status_before = _status(host, port)
    with _Ticker(counters, tick) as ticker:
        start_s, runs = _run_processes(host, port, plan, spec, counters, ticker, phase)
    return _result(host, port, spec, start_s, runs, status_before, [])


def drive_traffic(host: str, port: int, traffics: list[Traffic], spec: LoadSpec, *,
                  tick: Callable[[float, np.ndarray], None] | None = None) -> LoadResult:
    """Drives traffic built already, one connection each, from this process."""
    counters = multiprocessing.RawArray("q", _COUNTERS)
    status_before = _status(host, port)
    with _Ticker(counters, tick) as ticker:

        async def go() -> float:
            ticker.start_s = time.monotonic()
            return ticker.start_s

        with _new_runner() as runner:
            start_s, runs = runner.run(drive(host, port, traffics, spec,
                                             counters=counters, go=go))
    return _result(host, port, spec, start_s, runs, status_before,
                   traffics if spec.keep else [])


def _result(host, port, spec, start_s, runs, status_before, traffics) -> LoadResult:
    summary = summarize(runs, spec, start_s)
    summary["node_before"], summary["node_after"] = status_before, _status(host, port)
    summary["target"] = f"{host}:{port}"
    return LoadResult(summary, runs, traffics)


def _run_processes(host, port, plan, spec, counters, ticker, phase):
    context = multiprocessing.get_context("spawn")
    messages, go = context.Queue(), context.Event()
    start_value = context.RawValue("d", 0.0)
    workers = [context.Process(target=_worker, daemon=True, args=(
        host, port, plan, spec, n, counters, messages, go, start_value))
        for n in range(spec.processes)]
    for worker in workers:
        worker.start()
    if phase:
        phase(f"signing and encoding the traffic in {spec.processes} processes")
    try:
        _collect(messages, workers, "ready")
        ticker.start_s = start_value.value = time.monotonic()
        go.set()
        if phase:
            phase("driving")
        runs = [run for part in _collect(messages, workers, "done") for run in part]
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
    return start_value.value, runs


def _collect(messages, workers, kind: str) -> list:
    """Waits for one ``kind`` message of every worker, in worker order; fails on a failure."""
    import queue

    got: dict[int, object] = {}
    while len(got) < len(workers):
        try:
            what, number, value = messages.get(timeout=1.0)
        except queue.Empty:
            dead = [w.exitcode for w in workers if not w.is_alive() and w.exitcode]
            if dead:
                raise NodeError(f"a load process died with exit code {dead[0]}") from None
            continue
        if what == "failed":
            raise NodeError(f"load process {number}: {value}")
        if what == kind:
            got[number] = value
    return [got[n] for n in range(len(workers))]


def _status(host: str, port: int) -> dict | None:
    """The node's status counters, or None when it does not answer."""
    from tsunagi.node.client import AsyncClient

    async def ask():
        async with AsyncClient(host, port, auto_batch=False, retries=0, timeout_s=3) as c:
            return await c.status()

    try:
        with _new_runner() as runner:
            status = runner.run(ask())
    except (NodeError, OSError):
        return None
    return {"height": status.height, "groups_committed": status.groups_committed,
            "records_committed": status.records_committed, "connections": status.connections}


# --- the summary and the chart ----------------------------------------------------------------

def _percentiles(latency_ms: np.ndarray) -> dict:
    if not len(latency_ms):
        return {}
    p50, p90, p99 = np.percentile(latency_ms, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3),
            "p99": round(float(p99), 3), "max": round(float(latency_ms.max()), 3),
            "mean": round(float(latency_ms.mean()), 3)}


def _latency_histogram(latency_ms: np.ndarray, bins: int = 60) -> dict:
    if not len(latency_ms):
        return {"edges_ms": [], "counts": []}
    low, high = max(float(latency_ms.min()), 1e-3), max(float(latency_ms.max()), 2e-3)
    edges = np.geomspace(low, high * 1.0001, bins + 1)
    counts, _ = np.histogram(np.clip(latency_ms, low, None), edges)
    return {"edges_ms": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def summarize(runs: list[ClientRun], spec: LoadSpec, start_s: float) -> dict:
    """The figures of a run as a JSON-ready dict (throughput counts records answered ok)."""
    sent = np.concatenate([r.sent_s for r in runs])
    answered = np.concatenate([r.answered_s for r in runs])
    counts = np.concatenate([r.counts for r in runs])
    ok = np.concatenate([r.ok for r in runs])
    done = ~np.isnan(answered)
    elapsed_s = max(float(answered[done].max()) - start_s, 1e-9) if done.any() else 0.0
    latency_ms = (answered[done] - sent[done]) * 1000
    code_counts = np.sum([r.code_counts for r in runs], axis=0)
    errors: dict[str, int] = {}
    for run in runs:
        for name, number in run.errors.items():
            errors[name] = errors.get(name, 0) + number
    bin_s = next((b for b in SERIES_BIN_CHOICES_S if elapsed_s / b <= SERIES_BARS_MAX),
                 SERIES_BIN_CHOICES_S[-1])
    edges = np.arange(0, elapsed_s + bin_s, bin_s)
    series, _ = np.histogram(answered[done] - start_s, edges, weights=ok[done])
    records_ok = int(ok.sum())
    return {
        "mode": spec.mode, "clients": spec.clients, "processes": spec.processes,
        "batch_size": spec.request_records, "window": spec.requests_in_flight,
        "skew": spec.skew, "prepared_transfers": spec.count if not spec.live else None,
        "duration_s": spec.duration_s or None, "live": spec.live,
        "elapsed_s": round(elapsed_s, 3),
        "requests_sent": len(sent), "requests_answered": int(done.sum()),
        "records_sent": int(counts.sum()), "records_answered": int(counts[done].sum()),
        "records_ok": records_ok,
        "records_per_s": round(records_ok / elapsed_s, 1) if elapsed_s else 0.0,
        "latency_ms": _percentiles(latency_ms),
        "codes": {Result(int(c)).name: int(code_counts[c]) for c in np.flatnonzero(code_counts)},
        "errors": errors, "overloaded": sum(r.overloaded for r in runs),
        "lost": sorted({r.lost for r in runs if r.lost}),
        "series": {"bin_s": bin_s, "records_per_s": (series / bin_s).tolist()},
        "latency_histogram": _latency_histogram(latency_ms),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def draw_chart(summary: dict, path) -> None:
    """Throughput over time, the latency histogram and, when sampled, the node's memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rss = summary.get("node_rss") or []
    fig, axes = plt.subplots(1, 3 if rss else 2, figsize=(15 if rss else 11, 4.2))
    title = (f"{summary['mode']}, {summary['clients']} clients, "
             f"{summary['batch_size']:,} per request")
    series = summary["series"]
    rates = np.asarray(series["records_per_s"], np.float64)
    times = (np.arange(len(rates)) + 0.5) * series["bin_s"]
    axes[0].step(times, rates, where="mid", color="tab:blue")
    axes[0].fill_between(times, rates, step="mid", alpha=0.25, color="tab:blue")
    axes[0].axhline(summary["records_per_s"], color="tab:red", linestyle="--",
                    label=f"run average {summary['records_per_s']:,.0f}/s")
    axes[0].set(title=f"transfers ok per second\n{title}", xlabel="seconds into the run",
                ylabel="transfers / s")
    axes[0].legend(loc="lower center")
    _latency_panel(axes[1], summary)
    if rss:
        _rss_panel(axes[2], rss)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_panel(axis, summary: dict) -> None:
    import matplotlib.ticker

    histogram = summary["latency_histogram"]
    edges = np.asarray(histogram["edges_ms"])
    if len(edges):
        axis.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge",
                 color="tab:green", alpha=0.7)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    latency = summary["latency_ms"]
    for name, colour in (("p50", "tab:blue"), ("p99", "tab:red"), ("max", "black")):
        if name in latency:
            axis.axvline(latency[name], color=colour, linestyle="--",
                         label=f"{name} {latency[name]:,.1f} ms")
    axis.set(title=f"request latency ({summary['requests_answered']:,} requests)",
             xlabel="ms from writing the request to reading its answer", ylabel="requests")
    axis.legend()


def _rss_panel(axis, rss: list) -> None:
    samples = np.array(rss, dtype=np.float64)  # rows: seconds, resident, anonymous, file KiB
    times, mib = samples[:, 0] / 60, samples[:, 1:] / 1024
    axis.plot(times, mib[:, 0], color="tab:purple", label="resident")
    reference = float(np.median(mib[len(mib) // 10: max(2, len(mib) // 5), 0]))
    axis.axhspan(reference * 0.9, reference * 1.1, color="tab:purple", alpha=0.12,
                 label="resident within 10% of its median at 10-20% of the run")
    axis.set(xlabel="minutes into the run", ylabel="resident MiB",
             title=f"node memory: resident {mib[:, 0].min():,.0f} .. {mib[:, 0].max():,.0f} MiB"
                   + (f"\nanonymous {mib[:, 1].min():,.0f} .. {mib[:, 1].max():,.0f} MiB, "
                      "the rest file-backed (mapped files)" if mib.shape[1] > 1 else ""))
    axis.set_ylim(0, mib[:, 0].max() * 1.15)
    axis.legend(loc="upper left", fontsize="small")
    if mib.shape[1] > 1:  # anonymous memory on its own scale, or it is a flat line at zero
        right = axis.twinx()
        right.plot(times, mib[:, 1], color="tab:orange", label="anonymous (right scale)")
        right.set_ylim(0, mib[:, 1].max() * 1.6)
        right.set_ylabel("anonymous MiB")
        right.legend(loc="lower right", fontsize="small")


# --- a node in a child process -----------------------------------------------------------------

_NODE_SCRIPT = """
import json, sys
from tsunagi.node.server import NodeSettings, run_node
run_node(sys.argv[1], sys.argv[2], int(sys.argv[3]), NodeSettings(**json.loads(sys.argv[4])),
         on_ready=lambda server: print(server.port, flush=True))
"""


class NodeProcess:
    """A node serving ``data_dir`` in a child process, for benchmarks and crash tests.

    ``prefix`` goes before the Python command (``["ip", "netns", "exec", "ns1"]`` runs the
    node in a network namespace). ``settings`` are NodeSettings fields.
    """

    def __init__(self, data_dir, host: str = "127.0.0.1", port: int = 0, *,
                 settings: dict | None = None, prefix: tuple[str, ...] = ()) -> None:
        self.data_dir, self.host, self.port = Path(data_dir), host, port
        self.settings, self.prefix = dict(settings or {}), tuple(prefix)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout_s: float = NODE_START_TIMEOUT_S) -> NodeProcess:
        """Starts the node and waits until it listens; ``self.port`` is its port then."""
        command = [*self.prefix, sys.executable, "-c", _NODE_SCRIPT, str(self.data_dir),
                   self.host, str(self.port), json.dumps(self.settings)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.kill()
            raise NodeError(f"the node on {self.data_dir} did not start (exit code "
                            f"{self.process.returncode}); see its messages above")
        self.port = int(line)
        return self

    def __enter__(self) -> NodeProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: the node gets no chance to finish anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout_s: float = NODE_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then waits; SIGKILL if it takes longer than ``timeout_s``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def rss_kib(self) -> int | None:
        memory = memory_kib(self.pid)
        return None if memory is None else memory[0]


def memory_kib(pid: int) -> tuple[int, int, int] | None:
    """(resident, anonymous, file-backed) KiB of a process from /proc/PID/status; None once
    it is gone. File-backed pages include the mapped index, which the kernel may drop."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                    name, value = line.split()[:2]
                    fields[name] = int(value)
    except OSError:
        return None
    if "VmRSS:" not in fields:
        return None
    return (fields["VmRSS:"], fields.get("RssAnon:", 0),
            fields.get("RssFile:", 0) + fields.get("RssShmem:", 0))


class _RssSampler:
    """Samples a process's memory every ``every_s`` seconds on a thread, from ``start()``."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int, int, int]] = []  # seconds, KiB of memory_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._started_s = time.monotonic()
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            memory = memory_kib(self.pid)
            if memory is not None:
                self.samples.append((round(time.monotonic() - self._started_s, 2), *memory))
            if self._stop.wait(self.every_s):
                return


# --- the command ------------------------------------------------------------------------------

# Transfers prepared when --count is not given: a few seconds of load on a small machine.
COUNT_DEFAULTS = {"baseline": 5_000, "batched": 400_000, "batch-authorized": 4_000_000}


def register_commands(commands) -> None:
    """Adds ``loadgen`` to the ``tsunagi`` command's subparsers."""
    parser = commands.add_parser(
        "loadgen", help="drive a node with prepared transfers and draw the result",
        description="Drive a running node (--target) or one started here on a prepared data "
                    "directory (--spawn) with signed transfers prepared before the timed phase; "
                    "print throughput and latency, write JSON and a PNG chart with --out.")
    where = parser.add_argument_group("where")
    where.add_argument("--target", metavar="HOST:PORT", help="a running node")
    where.add_argument("--spawn", metavar="DIR",
                       help="start a node on DIR (127.0.0.1) and drive it")
    where.add_argument("--prepare", metavar="DIR",
                       help="create a chain in DIR with the load accounts (then stop, unless "
                            "--spawn or --target is given)")
    where.add_argument("--setup", action="store_true",
                       help="open and fund --accounts new accounts on the target first")
    where.add_argument("--chain-id", type=int, default=CHAIN_ID_DEFAULT, help="for --prepare")
    load = parser.add_argument_group("load")
    load.add_argument("--mode", choices=MODES, default="batched")
    load.add_argument("--clients", type=int, default=4, help="connections (default 4)")
    load.add_argument("--processes", type=int, default=1, help="driving processes (default 1)")
    load.add_argument("--batch-size", type=int, default=8000, help="records a request")
    load.add_argument("--window", type=int, default=0,
                      help="requests in flight a connection (default 1 baseline, 2 batched)")
    load.add_argument("--accounts", type=int, default=10_000, help="load accounts")
    load.add_argument("--keys", type=int, default=8, help="owner keys of the accounts")
    load.add_argument("--skew", type=float, default=0.0,
                      help="Zipf exponent of payers and payees (0 uniform, 1 classic Zipf)")
    load.add_argument("--count", type=int, default=None,
                      help="transfers to prepare (default by mode: " + ", ".join(
                          f"{m} {n:,}" for m, n in COUNT_DEFAULTS.items()) + ")")
    load.add_argument("--duration", type=float, default=0.0,
                      help="stop sending after this many seconds (default: when all are sent)")
    load.add_argument("--live", action="store_true",
                      help="batch-authorized: build requests during the run (long runs)")
    load.add_argument("--seed", type=int, default=SEED_DEFAULT, help="of keys and draws")
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="STEM", help="write STEM.json and STEM.png")
    out.add_argument("--json", action="store_true", help="print the result as one JSON object")
    out.add_argument("--rss-every", type=float, default=0.0, metavar="S",
                     help="sample the node's resident memory every S seconds (needs --spawn "
                          "or --node-pid)")
    out.add_argument("--node-pid", type=int, default=None, help="the target node's process id")
    parser.set_defaults(handler=cmd_loadgen)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--target is HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _spec_of(args: argparse.Namespace) -> LoadSpec:
    count = args.count if args.count is not None else COUNT_DEFAULTS[args.mode]
    return LoadSpec(mode=args.mode, clients=args.clients, processes=args.processes,
                    batch_size=args.batch_size, window=args.window, count=count,
                    duration_s=args.duration, skew=args.skew, seed=args.seed, live=args.live)


def cmd_loadgen(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, quiet=args.json)
    if not (args.prepare or args.target or args.spawn):
        raise ConfigError("give --target HOST:PORT, --spawn DIR or --prepare DIR")
    if args.target and args.spawn:
        raise ConfigError("--target and --spawn exclude each other")
    if args.prepare:
        _prepare_shown(args, console)
        if not (args.target or args.spawn):
            return 0
    spec = _spec_of(args)
    node = NodeProcess(args.spawn).start() if args.spawn else None
    try:
        host, port = (node.host, node.port) if node else _host_port(args.target)
        plan = _plan_shown(args, host, port, console)
        pid = node.pid if node else args.node_pid
        if args.rss_every and pid is None:
            raise ConfigError("--rss-every needs --spawn or --node-pid")
        summary = _run_shown(host, port, plan, spec, console, pid, args.rss_every)
    finally:
        if node is not None:
            stopping_s = time.perf_counter()
            with console.status("stopping the node: it finishes indexing what it committed"):
                node.stop()
            stop_s = time.perf_counter() - stopping_s
    summary["accounts"], summary["keys"] = len(plan.accounts), plan.key_count
    if node is not None:
        # What the node sustains: committed and indexed, not only committed and answered.
        summary["node_stop_s"] = round(stop_s, 2)
        summary["records_per_s_indexed"] = round(
            summary["records_ok"] / (summary["elapsed_s"] + stop_s), 1)
    _report(summary, args, console)
    return 0


def _prepare_shown(args, console) -> None:
    from rich.progress import Progress

    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("preparing", total=2 * args.accounts)

        def show(what: str, done: int, total: int) -> None:
            progress.update(task, description=f"{what} {done:,} of {total:,}",
                            completed=done + (total if what == "funded" else 0))

        prepare_chain(args.prepare, args.accounts, keys=args.keys, seed=args.seed,
                      chain_id=args.chain_id, progress=show)
    console.print(f"prepared {args.prepare}: chain {args.chain_id}, {args.accounts:,} funded "
                  f"accounts (2..{args.accounts + 1}) of {args.keys} keys, seed {args.seed}, "
                  f"in {time.perf_counter() - started:.1f} s")


def _plan_shown(args, host: str, port: int, console) -> Plan:
    from tsunagi.node.client import AsyncClient

    async def plan() -> Plan:
        async with AsyncClient(host, port, auto_batch=False) as client:
            if args.setup:
                return await setup_accounts(client, args.accounts, keys=args.keys,
                                            seed=args.seed)
            return await target_plan(client, args.accounts, keys=args.keys, seed=args.seed)

    what = "opening and funding the accounts" if args.setup else "checking the load accounts"
    with console.status(what), _new_runner() as runner:
        return runner.run(plan())


def _run_shown(host, port, plan, spec, console, pid, rss_every_s) -> dict:
    from rich.live import Live
    from rich.text import Text

    state = {"phase": "starting", "last": (0.0, 0)}
    # Memory is sampled from the start of the timed phase, not while the traffic is signed.
    sampler = _RssSampler(pid, rss_every_s) if rss_every_s else None
    with Live(Text("starting"), console=console, transient=True, refresh_per_second=8) as live:

        def phase(text: str) -> None:
            state["phase"] = text
            live.update(Text(text))
            if text == "driving" and sampler is not None:
                sampler.start()

        def tick(elapsed_s: float, totals: np.ndarray) -> None:
            _, ok, requests, failed = totals.tolist()
            last_s, last_ok = state["last"]
            now_rate = (ok - last_ok) / max(elapsed_s - last_s, 1e-9)
            state["last"] = (elapsed_s, ok)
            live.update(Text(f"{spec.mode}: {elapsed_s:6.1f} s  {ok:>12,} ok  "
                             f"{now_rate:>12,.0f}/s now  {ok / max(elapsed_s, 1e-9):>12,.0f}/s "
                             f"average  {requests:,} requests  {failed:,} failed"))

        try:
            result = run_load(host, port, plan, spec, tick=tick, phase=phase)
        finally:
            if sampler is not None:
                sampler.stop()
    if sampler is not None:
        result.summary["node_rss"] = sampler.samples
    return result.summary


def _report(summary: dict, args, console) -> None:
    if args.out:
        stem = Path(args.out)
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        draw_chart(summary, stem.with_suffix(".png"))
    if args.json:
        print(json.dumps(summary))
        return
    from rich.console import Console

    out = Console()
    latency = summary["latency_ms"]
    before, after = summary.get("node_before"), summary.get("node_after")
    out.print(f"[bold]{summary['records_per_s']:,.0f} transfers/s ok[/bold]  "
              f"({summary['records_ok']:,} of {summary['records_sent']:,} sent, "
              f"{summary['elapsed_s']:.2f} s, {summary['mode']}, {summary['clients']} clients, "
              f"{summary['batch_size']:,} a request)")
    if latency:
        out.print(f"latency per request: p50 {latency['p50']:,.2f} ms  p99 {latency['p99']:,.2f}"
                  f" ms  max {latency['max']:,.2f} ms")
    out.print("codes: " + ", ".join(f"{k} {v:,}" for k, v in summary["codes"].items()))
    for name in ("errors", "lost"):
        if summary[name]:
            out.print(f"[red]{name}: {summary[name]}[/red]")
    if before and after and after["groups_committed"] > before["groups_committed"]:
        groups = after["groups_committed"] - before["groups_committed"]
        records = after["records_committed"] - before["records_committed"]
        out.print(f"node: {groups:,} commit groups, {records / groups:,.0f} records each")
    if "node_stop_s" in summary:
        out.print(f"node stopped {summary['node_stop_s']:,.1f} s after the run (indexing what it "
                  f"committed): {summary['records_per_s_indexed']:,.0f} transfers/s committed "
                  "and indexed")
    if summary.get("node_rss"):
        kib = [sample[1] for sample in summary["node_rss"]]
        out.print(f"node memory: {min(kib) / 1024:,.0f} .. {max(kib) / 1024:,.0f} MiB")
    if args.out:
        out.print(f"wrote {Path(args.out).with_suffix('.json')} and "
                  f"{Path(args.out).with_suffix('.png')}")


def main(argv: list[str] | None = None) -> int:
    """``python -m tsunagi.node.loadgen ...``: the ``tsunagi loadgen`` command on its own."""
    from tsunagi.errors import TsunagiError

    parser = argparse.ArgumentParser(prog="tsunagi")
    register_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["loadgen", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except TsunagiError as exc:
        print(f"tsunagi loadgen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tsunagi loadgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
