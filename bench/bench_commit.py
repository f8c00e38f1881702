"""Benchmarks of the commit path: the native kernel, batch signature checks, Engine.process.

Run ``python -m pytest bench/bench_commit.py --benchmark-only`` (about two minutes; set
``TSUNAGI_BENCH_SCALE=0.01`` for a quick smoke run with 100,000 accounts in the large world).
Two worlds of funded accounts: 10 thousand and 10 million. The groups:

- ``kernel``: ``commit.apply_batch`` of 8,000 and of 1,000,000 transfers (target > 10 M/s);
- ``verify``: ``sigverify.verify_batch`` of 8,000 BIP340 signatures on 1 and on all cores,
  each alone (libsecp256k1's verify: the verification limit) and by the batch equation (what
  the engine uses), beside coincurve's Python-level ``verify`` loop (the baseline);
- ``engine-batch``: ``Engine.process`` of batch-authorized transfers, 8,192 a call in one
  batch and 65,536 a call in eight (target >= 2 M transfers/s);
- ``engine-signed``: ``Engine.process`` of 8,000 individually signed transfers (target: at
  least 85% of the verification limit measured in the same run).

Every round checks its answer (all codes ok), so a fast wrong answer cannot pass. The closing
summary prints medians, the signed-engine share of the limit, and the resident memory of the
whole process with the 10-million-account world loaded (target <= 1.5 GB).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import coincurve
import numpy as np
import pytest

from tsunagi import hashing
from tsunagi._native import commit, sigverify
from tsunagi.core.block import BatchAuth
from tsunagi.core.keys import PrivateKey
from tsunagi.core.records import RECORD_BYTES, RECORD_DTYPE, Flags, Kind
from tsunagi.ledger.engine import Engine
from tsunagi.ledger.state import State

CHAIN_ID = 9
SCALE = float(os.environ.get("TSUNAGI_BENCH_SCALE", "1"))
WORLDS = {"10k": 10_000, "10M": max(100_000, int(10_000_000 * SCALE))}
SIGNING_KEYS = 256  # account n is owned by key n % SIGNING_KEYS
FUNDING_UNITS = 10**12  # per account: no benchmark transfer fails for funds
SIGNED_BATCH = 8_000
CORES = hashing.cpu_count()

_rates: dict[str, float] = {}
_memory: dict[str, int] = {}
_paired: dict[str, float] = {}  # engine-signed rate / limit, median of per-round ratios
_cpu_rates: dict[str, float] = {}  # items per CPU-second (all threads together)


@dataclass
class World:
    """A funded state, its engine, the keys, and a sequence counter that only goes up."""

    name: str
    accounts: int
    keys: list[PrivateKey]
    engine: Engine
    rng: np.random.Generator
    sequence: int = 0
    notes: dict = field(default_factory=dict)

    @property
    def state(self) -> State:
        return self.engine.state


def funded_state(accounts: int, public_keys: np.ndarray) -> State:
    """A state with ``accounts`` funded accounts, filled in chunks to keep the peak low (the
    same arrays State.from_arrays loads from a snapshot)."""
    state = State()
    state.reserve(accounts=accounts)
    chunk = 1 << 20
    for first in range(1, accounts + 1, chunk):
        numbers = np.arange(first, min(first + chunk, accounts + 1))
        state.owner_keys[numbers] = public_keys[numbers % len(public_keys)]
        state.accounts[numbers, 0] = FUNDING_UNITS
    total = FUNDING_UNITS * accounts
    state.counters[commit.ACCOUNT_COUNT] = accounts
    state.counters[commit.MINTED_LO], state.counters[commit.MINTED_HI] = total % 2**64, total >> 64
    return state


@pytest.fixture(scope="module", params=list(WORLDS))
def world(request) -> World:
    keys = [PrivateKey.from_bytes(hashing.sha256d(i.to_bytes(4, "little")))
            for i in range(SIGNING_KEYS)]
    public = np.frombuffer(b"".join(k.public_key for k in keys), np.uint8).reshape(-1, 32)
    accounts = WORLDS[request.param]
    state = funded_state(accounts, public)
    built = World(request.param, accounts, keys, Engine(state, CHAIN_ID),
                  np.random.default_rng(accounts))
    yield built
    if request.param == "10M":
        _memory.update(_process_memory())


def _process_memory() -> dict[str, int]:
    """Resident and peak resident bytes of this process (Linux /proc)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def transfers(world: World, count: int, owner: int | None = None, flags: int = 0) -> np.ndarray:
    """count transfers between random accounts (debits owned by key ``owner`` if given)."""
    records = np.zeros(count, RECORD_DTYPE)
    records["kind"], records["chain_id"], records["flags"] = Kind.transfer, CHAIN_ID, flags
    records["sequence"] = np.arange(world.sequence + 1, world.sequence + count + 1)
    world.sequence += count
    rng, accounts = world.rng, world.accounts
    if owner is None:
        debit = rng.integers(1, accounts + 1, count)
    else:  # the accounts n with n % SIGNING_KEYS == owner
        low = 1 if owner == 0 else 0
        debit = rng.integers(low, accounts // SIGNING_KEYS, count) * SIGNING_KEYS + owner
    credit = rng.integers(1, accounts, count)
    credit[credit >= debit] += 1  # never the debit account itself
    records["debit_account"], records["credit_account"] = debit, credit
    records["amount"] = rng.integers(1, 1000, count)
    return records


def signed(world: World, records: np.ndarray) -> bytes:
    """Each record signed by its debit account's key, as a client sends it (not timed)."""
    txids = hashing.sha256d_records(records, RECORD_BYTES, CORES)
    return b"".join(world.keys[int(d) % SIGNING_KEYS].sign(bytes(t))
                    for d, t in zip(records["debit_account"], txids))


def authorized(world: World, per_batch: int, batches: int):
    """batches x per_batch batch-authorized transfers, each batch signed once by its owner."""
    parts, auths = [], []
    for b in range(batches):
        owner = int(world.rng.integers(0, SIGNING_KEYS))
        records = transfers(world, per_batch, owner, Flags.batch_authorized)
        root = hashing.merkle_root(hashing.sha256d_records(records, RECORD_BYTES, CORES))
        key = world.keys[owner]
        auths.append(BatchAuth(b * per_batch, per_batch, key.public_key, key.sign(root)))
        parts.append(records)
    return np.concatenate(parts), auths


def _keep(benchmark, name: str, items: int) -> None:
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing to report
        return
    rate = items / float(np.median(benchmark.stats.stats.data))
    benchmark.extra_info.update(items=items, rate_per_s=rate)
    _rates[name] = rate


@pytest.mark.parametrize("count", [8_000, 1_000_000])
def test_kernel_apply(benchmark, world, count):
    benchmark.group = f"kernel {world.name} accounts"
    rounds = 5 if count > 100_000 else 30

    def setup():
        return (transfers(world, count),), {}

    def apply(records):
        codes, _, stored = commit.apply_batch(world.state, records, None, 100)
        assert not codes.any() and stored.all()

    benchmark.pedantic(apply, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    _keep(benchmark, f"kernel {world.name} {count:,}", count)


@pytest.fixture(scope="module")
def signature_batch(world):
    """SIGNED_BATCH transfers of the world with their signatures, keys and txids."""
    records = transfers(world, SIGNED_BATCH)
    signatures = np.frombuffer(signed(world, records), np.uint8).reshape(-1, 64)
    txids = hashing.sha256d_records(records, RECORD_BYTES, CORES)
    keys = world.state.owner_keys[records["debit_account"]]
    return txids, keys, signatures


@pytest.mark.parametrize("batched", [False, True], ids=["each", "batched"])
@pytest.mark.parametrize("threads", sorted({1, CORES}))
def test_verify_batch(benchmark, world, signature_batch, threads, batched):
    benchmark.group = f"verify {world.name} accounts"
    txids, keys, signatures = signature_batch

    def run():
        assert sigverify.verify_batch(txids, keys, signatures, threads, batched).all()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    how = "batch equation" if batched else "each alone"
    _keep(benchmark, f"verify {world.name} {threads} thread(s), {how}", SIGNED_BATCH)


def test_verify_coincurve_loop(benchmark, world, signature_batch):
    """The baseline: coincurve's verify called from Python once per signature."""
    benchmark.group = f"verify {world.name} accounts"
    txids, keys, signatures = (a[:2000] for a in signature_batch)
    items = [(coincurve.PublicKeyXOnly(k.tobytes()), s.tobytes(), t.tobytes())
             for k, s, t in zip(keys, signatures, txids)]

    def run():
        assert all(key.verify(signature, message) for key, signature, message in items)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _keep(benchmark, f"verify {world.name} coincurve loop", len(items))


@pytest.mark.parametrize("shape", [(8192, 1), (8192, 8)], ids=["8192x1", "8192x8"])
def test_engine_batch_authorized(benchmark, world, shape):
    benchmark.group = f"engine-batch {world.name} accounts"
    per_batch, batches = shape
    queue = [authorized(world, per_batch, batches) for _ in range(11)]
    cpu_s = []  # CPU time of the whole process (all threads): what the work costs, load aside

    def run(data):
        records, auths = data
        started = time.process_time()
        outcome = world.engine.process(records, b"", auths, 100, CORES)
        cpu_s.append(time.process_time() - started)
        assert not outcome.codes.any() and outcome.stored_count == len(records)

    benchmark.pedantic(lambda: run(queue.pop(0)), rounds=10, iterations=1, warmup_rounds=1)
    name = f"engine-batch {world.name} {per_batch}x{batches}"
    _keep(benchmark, name, per_batch * batches)
    _cpu_rates[name] = per_batch * batches / float(np.median(cpu_s))


def test_engine_signed(benchmark, world):
    """Each round first times verify_batch alone on that round's signatures (the limit, in
    setup, not in the benchmark's timing), then the engine on the same records: a shared
    machine's load drifts, and a paired ratio sees the same load on both sides."""
    benchmark.group = f"engine-signed {world.name} accounts"
    queue, limit_s = [], []
    for _ in range(6):
        records = transfers(world, SIGNED_BATCH)
        queue.append((records, signed(world, records)))

    def setup():
        records, signatures = queue[0]
        txids = hashing.sha256d_records(records, RECORD_BYTES, CORES)
        keys = world.state.owner_keys[records["debit_account"]]
        started = time.perf_counter()
        assert sigverify.verify_batch(txids, keys, signatures, CORES, batched=False).all()
        limit_s.append(time.perf_counter() - started)
        return queue.pop(0), {}

    def run(records, signatures):
        outcome = world.engine.process(records, signatures, (), 100, CORES)
        assert not outcome.codes.any() and outcome.stored_count == SIGNED_BATCH

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    _keep(benchmark, f"engine-signed {world.name}", SIGNED_BATCH)
    if benchmark.stats is not None:
        engine_s = list(benchmark.stats.stats.data)
        _paired[world.name] = float(np.median(np.array(limit_s[-len(engine_s):]) /
                                              np.array(engine_s)))


class _Summary:
    """A plugin registered by this module: pytest calls it after the benchmark tables."""

    started = time.time()

    def pytest_terminal_summary(self, terminalreporter):
        if not _rates:
            return
        write = terminalreporter.write_line
        terminalreporter.section("commit path: median rates")
        for name, rate in _rates.items():
            cpu = f"  ({_cpu_rates[name] / 1e6:.2f} M per CPU-second)" if name in _cpu_rates else ""
            write(f"{name:<36} {rate / 1e6:10.3f} M items/s{cpu}")
        for world_name in WORLDS:
            limit = _rates.get(f"verify {world_name} {CORES} thread(s)")
            engine = _rates.get(f"engine-signed {world_name}")
            if limit and engine:
                write(f"engine-signed {world_name}: {engine / limit:.0%} of the verification "
                      f"limit ({limit:,.0f}/s on {CORES} cores); paired per round: "
                      f"{_paired.get(world_name, float('nan')):.0%}; target 85%")
        if _memory:
            write(f"resident memory with {WORLDS['10M']:,} accounts: "
                  f"{_memory['VmRSS'] / 2**30:.2f} GiB at the end, "
                  f"{_memory['VmHWM'] / 2**30:.2f} GiB peak; target 1.5 GB")
        write(f"load average at the end: {os.getloadavg()[0]:.1f} on {CORES} cores; "
              f"{time.time() - self.started:.0f} s")


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("tsunagi-commit-summary"):
        plugins.register(_Summary(), "tsunagi-commit-summary")
