"""Benchmarks of the ledger's commit paths beside their baseline and their limits.

Goal: put batched commit (Ledger.submit_batch) beside the one-record baseline (Ledger.submit)
and beside what bounds it, on the same workloads, and print the ratios. Method: chains of
10,000 funded accounts built through the public API (bench/workloads.py); every timed call
gets fresh records signed before the timing, and every call's answer is checked (all records
applied), so a fast wrong answer cannot pass for a figure. Each round's limit is timed on the
same batch just before the call (in pytest-benchmark's untimed setup, after the background
index has caught up), so that on a shared machine the figure and its limit see the same load;
"with index" is a second series of as many calls back to back, timed until the index has
caught up: the rate kept up for long.

Run ``python -m pytest bench/bench_ledger.py --benchmark-only`` (a few minutes); each test runs
alone too. TSUNAGI_BENCH_ROUNDS sets the timed calls a case (default 5). The 10-million-account
and 10-million-transfer figures are in ``python bench/ledger_table.py --big``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

import ledger_table as table
import numpy as np
import pytest
import workloads as w

from tsunagi import hashing
from tsunagi._native import sigverify

ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "5"))
SIGNED_GROUP = f"signed {table.SIGNED_BATCH:,}"
BASELINE_SUBMITS = 200

_rates: dict[str, float] = {}  # per second, by case, for the closing ratio lines
_notes: list[str] = []


class _Summary:
    """Prints the ratio lines after pytest-benchmark's tables."""

    def pytest_terminal_summary(self, terminalreporter):
        if not _rates:
            return
        write = terminalreporter.write_line
        terminalreporter.section("ledger: ratios (medians)")
        signed, limit = _rates.get("signed"), _rates.get("signed limit")
        baseline = _rates.get("baseline")
        if signed and limit:
            met = "met" if signed >= table.SIGNED_TARGET_SHARE * limit else "NOT met"
            with_index = _rates["signed with index"]
            write(f"{SIGNED_GROUP}: {table.si(signed)}transfers/s = {signed / limit:.0%} of the "
                  f"verify_batch limit {table.si(limit)}/s (target "
                  f"{table.SIGNED_TARGET_SHARE:.0%}: {met}); with index "
                  f"{table.si(with_index)}/s = {with_index / limit:.0%} of it")
        if signed and baseline:
            write(f"batched/baseline: {table.si(signed)}/s / {table.si(baseline)}/s = "
                  f"{signed / baseline:.1f}x (Fujitsu reported {table.FUJITSU_BATCHING_GAIN}x "
                  "for batching in Fabric)")
        for note in _notes:
            write(note)


@pytest.fixture(scope="session", autouse=True)
def _summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("tsunagi-ledger-summary"):
        manager.register(_Summary(), "tsunagi-ledger-summary")


@pytest.fixture(scope="module")
def genesis_chain(tmp_path_factory):
    chain = w.genesis_chain(tmp_path_factory.mktemp("ledger") / "genesis", table.ACCOUNTS)
    yield chain
    chain.close()


@pytest.fixture(scope="module")
def owned_chain(tmp_path_factory):
    chain = w.owned_chain(tmp_path_factory.mktemp("ledger") / "owned", table.ACCOUNTS)
    yield chain
    chain.close()


def _median(benchmark) -> float | None:
    # None under --benchmark-disable: the call ran once and nothing was timed.
    return None if benchmark.stats is None else benchmark.stats.stats.median


def _submit_rounds(benchmark, chain: w.Chain, work: list[w.Batch],
                   limit: Callable[[w.Batch], float]) -> list[float]:
    """Times submit_batch of each batch of ``work`` (pytest-benchmark rounds); before each
    call, in the untimed setup, waits for the index and times ``limit`` on the same batch, so
    that the figure and its limit see the same load. Returns the limit's seconds."""
    queue, limits, answers = list(work), [], []

    def setup():
        batch = queue.pop(0)
        chain.ledger.wait_indexed()  # the indexer shares neither the limit's nor the call's cores
        limits.append(limit(batch))
        return (batch,), {}

    def submit(batch: w.Batch) -> None:
        answers.append(batch.submit(chain.ledger))

    benchmark.pedantic(submit, setup=setup, rounds=len(work), iterations=1)
    for batch, answer in zip(work, answers):
        table.expect_ok(answer, len(batch))
    return limits


def test_signed_batch(benchmark, genesis_chain):
    """8,000 transfers a call, each with its own signature, beside verify_batch on them."""
    benchmark.group = SIGNED_GROUP
    work = w.batches(w.signed_batch, genesis_chain, table.SIGNED_BATCH, 2 * ROUNDS + 1,
                     seed=101)
    table.warm_block_bytes(genesis_chain, work[0])
    threads = hashing.cpu_count()
    limits = _submit_rounds(benchmark, genesis_chain, work[1:ROUNDS + 1],
                            lambda batch: table.verify_seconds(batch, threads))
    with_index = table.sustained_per_s(genesis_chain.ledger, work[ROUNDS + 1:])
    median = _median(benchmark)
    if median is None:
        return
    rate = table.SIGNED_BATCH / median
    limit_rate = table.SIGNED_BATCH / statistics.median(limits)
    benchmark.extra_info.update(transfers_per_s=rate, limit_per_s=limit_rate,
                                of_limit=rate / limit_rate, with_index_per_s=with_index,
                                target_met=rate >= table.SIGNED_TARGET_SHARE * limit_rate)
    _rates.update({"signed": rate, "signed limit": limit_rate, "signed with index": with_index})


@pytest.mark.parametrize("batched", [False, True], ids=["each", "batched"])
def test_signature_limit(benchmark, genesis_chain, batched):
    """verify_batch on all cores over 8,000 workload signatures: each alone with libsecp256k1
    (the signed path's limit), and by the batch equation, as the ledger verifies."""
    benchmark.group = SIGNED_GROUP
    (batch,) = w.batches(w.signed_batch, genesis_chain, table.SIGNED_BATCH, 1, seed=102)
    messages, keys, signatures = batch.signature_rows()
    threads = hashing.cpu_count()
    valid = benchmark.pedantic(sigverify.verify_batch,
                               args=(messages, keys, signatures, threads, batched),
                               rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert valid.all()
    if _median(benchmark):
        benchmark.extra_info["signatures_per_s"] = table.SIGNED_BATCH / _median(benchmark)


def test_coincurve_verify_loop(benchmark, genesis_chain):
    """For reference: coincurve's verify called once a signature from Python, on 1 core."""
    benchmark.group = SIGNED_GROUP
    (batch,) = w.batches(w.signed_batch, genesis_chain, 2_000, 1, seed=103)
    rows = [(bytes(k), bytes(m), bytes(s)) for m, k, s in zip(*batch.signature_rows())]

    def loop() -> list[bool]:
        return [table.python_verify(k, m, s) for k, m, s in rows]

    assert all(benchmark.pedantic(loop, rounds=3, iterations=1))
    if _median(benchmark):
        benchmark.extra_info["signatures_per_s"] = len(rows) / _median(benchmark)


@pytest.mark.parametrize("size", table.AUTHORIZED_BATCHES)
def test_authorized_batch(benchmark, owned_chain, size, tmp_path):
    """One batch signature over the Merkle root covers every transfer of the call; the limit
    beside it is the disk appending and fdatasync-ing as many bytes as the call's block."""
    benchmark.group = "batch-authorized"
    work = w.batches(w.authorized_batch, owned_chain, size, 2 * ROUNDS + 1, seed=200 + size)
    probe = table.AppendProbe(tmp_path, table.warm_block_bytes(owned_chain, work[0]))
    try:
        limits = _submit_rounds(benchmark, owned_chain, work[1:ROUNDS + 1], probe.seconds)
    finally:
        probe.close()
    with_index = table.sustained_per_s(owned_chain.ledger, work[ROUNDS + 1:])
    median = _median(benchmark)
    if median is None:
        return
    rate, disk_rate = size / median, size / statistics.median(limits)
    met = rate >= table.AUTHORIZED_TARGET_PER_S
    benchmark.extra_info.update(transfers_per_s=rate, disk_limit_per_s=disk_rate,
                                with_index_per_s=with_index, target_met=met)
    _notes.append(f"batch-authorized {size:,}: {table.si(rate)}transfers/s (target 2 M/s: "
                  f"{'met' if met else 'NOT met'}) = {rate / disk_rate:.0%} of the disk's "
                  f"append+fdatasync rate; with index {table.si(with_index)}/s")


@pytest.mark.parametrize("size", table.AUTHORIZED_BATCHES)
def test_authorized_batch_pipelined(benchmark, owned_chain, size):
    """The same batches with two in flight, as a node commits its groups: each timed step
    begins a batch once the one two before it is answered, while a second thread waits for
    the fsyncs (ledger_table.Pipeline). In the steady state a step is one batch's share."""
    benchmark.group = "batch-authorized"
    work = w.batches(w.authorized_batch, owned_chain, size, ROUNDS + 2, seed=300 + size)
    owned_chain.ledger.wait_indexed()
    pipe = table.Pipeline(owned_chain.ledger)
    positions = list(range(1, len(work)))
    try:
        pipe.submit(work[0])
        benchmark.pedantic(pipe.submit, setup=lambda: ((work[positions.pop(0)],), {}),
                           rounds=len(work) - 1, iterations=1)
    finally:
        pipe.close()  # raises if any batch was not answered ok
    median = _median(benchmark)
    if median is None:
        return
    rate = size / median
    met = rate >= table.AUTHORIZED_TARGET_PER_S
    benchmark.extra_info.update(transfers_per_s=rate, target_met=met)
    _notes.append(f"batch-authorized {size:,}, 2 in flight: {table.si(rate)}transfers/s "
                  f"(target 2 M/s: {'met' if met else 'NOT met'})")


def test_baseline_submit(benchmark, genesis_chain):
    """Ledger.submit: one signed transfer, one block, one fdatasync, one answer."""
    benchmark.group = SIGNED_GROUP  # beside the batched path, on the same kind of workload
    batch = w.signed_batch(genesis_chain, BASELINE_SUBMITS + 1, np.random.default_rng(301))
    records, signatures = memoryview(batch.records), memoryview(batch.signatures)
    ledger = genesis_chain.ledger
    positions = list(range(BASELINE_SUBMITS + 1))
    answers = []

    def submit_one(i: int) -> None:
        answers.append(ledger.submit(records[128 * i:128 * i + 128],
                                     signatures[64 * i:64 * i + 64]))

    submit_one(positions.pop(0))
    ledger.wait_indexed()
    benchmark.pedantic(submit_one, setup=lambda: ((positions.pop(0),), {}),
                       rounds=BASELINE_SUBMITS, iterations=1)
    assert all(len(a.codes) == 1 and a.codes[0] == 0 for a in answers)
    if _median(benchmark):
        _rates["baseline"] = 1 / _median(benchmark)
        benchmark.extra_info["transfers_per_s"] = _rates["baseline"]
