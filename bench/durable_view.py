"""What the readers' durable view adds to the commit path (tsunagi.ledger.view).

Run ``python bench/durable_view.py``. For each case (transfers a batch, accounts) it applies
batches of random transfers with the native kernel alternately without and with the journal,
in one process, and prints the medians: the apply alone; the apply with the journal, the
capture of the batch's changes and their placing in a DurableView (what a block costs from
its apply to readers seeing it); and the difference per transfer.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from tsunagi._native import commit
from tsunagi.core.records import RECORD_DTYPE
from tsunagi.ledger.state import State
from tsunagi.ledger.view import DurableView, capture_changes

CASES = ((10_000, 262_144), (10_000, 8_000), (10_000_000, 65_536))
ROUNDS = 40  # alternated, the first 4 of each side dropped as warm-up


def _transfers(accounts: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    records = np.zeros(count, dtype=RECORD_DTYPE)
    records["kind"], records["chain_id"], records["amount"] = 2, 1, 1
    records["debit_account"] = rng.integers(1, accounts + 1, count)
    records["credit_account"] = rng.integers(1, accounts + 1, count)
    return records


def measure(accounts: int, count: int) -> dict[str, float]:
    state = State()
    state.reserve(accounts=accounts)
    state.accounts[1:accounts + 1, 0] = 10**9
    state.counters[commit.ACCOUNT_COUNT] = accounts
    view = DurableView(state, 1)
    room = np.empty(commit.journal_words(count), dtype=np.uint64)
    batches = [_transfers(accounts, count, seed) for seed in range(4)]
    sequence, plain, tracked = 1, [], []
    for round_ in range(ROUNDS):
        records = batches[round_ % 4].copy()
        records["sequence"] = np.arange(sequence, sequence + count)
        sequence += count
        track = round_ % 2 == 1
        started = time.perf_counter()
        applied = commit.apply_batch(state, records, None, 0, journal=room if track else None)
        if track:
            journal = applied[3]
            changes = capture_changes(state, (journal.accounts,), journal.holds,
                                      journal.policies)
            view.advance(changes, round_)
        (tracked if track else plain).append(time.perf_counter() - started)
    without, with_view = statistics.median(plain[2:]), statistics.median(tracked[2:])
    return {"apply_ms": without * 1e3, "with_view_ms": with_view * 1e3,
            "added_ns_a_transfer": (with_view - without) / count * 1e9}


def main() -> None:
    for accounts, count in CASES:
        found = measure(accounts, count)
        print(f"{accounts:>10,} accounts, {count:>7,} transfers a batch: apply "
              f"{found['apply_ms']:.2f} ms, with the durable view {found['with_view_ms']:.2f} ms"
              f": +{found['added_ns_a_transfer']:.1f} ns a transfer")


if __name__ == "__main__":
    main()
