"""The main job for a newcomer: a chain on the embedded store, batched and baseline commit.

`run_demo` creates a chain whose genesis funds a set of accounts, signs transfers between them
(as clients would, before any timing), commits some one at a time (the baseline: one block and
one fsync each) and the rest in batches (one block and one fsync per batch), then verifies the
whole chain. Both rates come from the same workload in the same run.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tsunagi.core import records
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import StorageError
from tsunagi.ledger import Ledger

CHAIN_ID = 1
MARKER = "DEMO"  # a directory holding this file was made by the demo and may be replaced


@dataclass(frozen=True)
class DemoResult:
    directory: Path
    accounts: int
    baseline_transfers: int
    baseline_seconds: float
    batched_transfers: int
    batched_seconds: float
    batch_size: int
    blocks: int
    verified: bool
    verify_seconds: float

    @property
    def baseline_rate(self) -> float:
        return self.baseline_transfers / self.baseline_seconds

    @property
    def batched_rate(self) -> float:
        return self.batched_transfers / self.batched_seconds


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _fresh_directory(directory: Path) -> None:
    """Removes an earlier demo's chain; the new one is created in its place."""
    if directory.exists():
        if not (directory / MARKER).exists():
            raise StorageError(f"{directory} exists and was not made by `tsunagi demo`: pass "
                               "another --data directory")
        shutil.rmtree(directory)


def _signed_transfers(keys: list[PrivateKey], count: int, rng: random.Random,
                      progress: Progress) -> tuple[list[bytes], list[bytes]]:
    """Transfers of 1 unit between random accounts, each signed by its payer's key."""
    accounts = len(keys)
    sequence = [0] * (accounts + 1)
    bodies, signatures = [], []
    for index in range(count):
        debit = rng.randrange(1, accounts + 1)
        credit = rng.randrange(1, accounts)  # any account but the payer
        credit += credit >= debit
        sequence[debit] += 1
        body = records.transfer(CHAIN_ID, sequence[debit], debit, credit, 1)
        bodies.append(body)
        signatures.append(keys[debit - 1].sign_record(body))
        if index % 2000 == 0:
            progress("signing", index, count)
    progress("signing", count, count)
    return bodies, signatures


def run_demo(directory: str | Path, *, accounts: int = 1000, transfers: int = 48_000,
             baseline_transfers: int = 500, batch_size: int = 8000, seed: int = 1,
             progress: Progress = lambda stage, done, total: None) -> DemoResult:
    """Makes the demo's chain in ``directory`` (replaced if an earlier demo made it)."""
    directory = Path(directory)
    _fresh_directory(directory)
    rng = random.Random(seed)
    keys = [PrivateKey.generate() for _ in range(accounts)]
    config = ChainConfig(name="demo", chain_id=CHAIN_ID, asset_code="DEMO", decimals=2,
                         allocations=tuple((key.public_key, 10**9) for key in keys))
    bodies, signatures = _signed_transfers(keys, baseline_transfers + transfers, rng, progress)
    # The chain is the directory itself, so `tsunagi blocks DIRECTORY` reads what it made.
    with Ledger.create(directory, config) as ledger:
        (directory / MARKER).write_text("made by `tsunagi demo`; safe to delete\n")
        started = time.perf_counter()
        for index in range(baseline_transfers):
            ledger.submit(bodies[index], signatures[index])
            if index % 50 == 0:
                progress("baseline commit", index, baseline_transfers)
        baseline_seconds = time.perf_counter() - started
        progress("baseline commit", baseline_transfers, baseline_transfers)
        started = time.perf_counter()
        for first in range(baseline_transfers, len(bodies), batch_size):
            last = min(first + batch_size, len(bodies))
            ledger.submit_batch(b"".join(bodies[first:last]), b"".join(signatures[first:last]))
            progress("batched commit", last - baseline_transfers, transfers)
        batched_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = ledger.verify(lambda done, total: progress("verifying", done, total))
        verify_seconds = time.perf_counter() - started
        blocks = ledger.height
    return DemoResult(directory, accounts, baseline_transfers, baseline_seconds, transfers,
                      batched_seconds, batch_size, blocks, report.ok, verify_seconds)
