"""Commit path alone against the rate a ledger sustains with its index, for the sorted-runs
index and, beside it, an older index.py (the LMDB one), alternating.

Run ``python bench/index_sustained.py [--old-index old_index.py] [--rounds 2] [--calls 7]``
(the old index needs ``pip install lmdb``; get it with ``git show 10f93cd:src/tsunagi/ledger/
index.py > old_index.py``). Each round and index makes a fresh chain of bench/ledger_table.py's
size and runs its authorized_rows: batch-authorized submit_batch of 8,000 and 65,536 transfers,
the commit path timed with the index caught up before each call, then as many calls back to
back until the index has them all ("sustained").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ledger_table as table
import workloads as w
from bench_store import load_old_index

from tsunagi.ledger import ledger as ledger_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-index", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=7, help="timed calls a case (median)")
    args = parser.parse_args()
    indexes = {"sorted runs": ledger_module.Index}
    if args.old_index is not None:
        indexes["LMDB (old)"] = load_old_index(args.old_index)
    try:
        for round_number in range(args.rounds):
            for name, index_class in indexes.items():
                ledger_module.Index = index_class
                with tempfile.TemporaryDirectory(prefix="tsunagi-sustained-") as temp:
                    chain = w.owned_chain(Path(temp) / "owned", table.ACCOUNTS)
                    try:
                        rows = table.authorized_rows(chain, (8_000, 65_536), args.calls,
                                                     Path(temp))
                    finally:
                        chain.close()
                for row in (row for row in rows if row.role == "figure"):
                    sustained = row.notes["with_index_per_s"]
                    print(f"round {round_number}, {name}, {row.group}: commit path "
                          f"{row.rate:,.0f}/s (median of {len(row.seconds)}), sustained with "
                          f"the index {sustained:,.0f}/s = {sustained / row.rate:.0%}",
                          flush=True)
    finally:
        ledger_module.Index = indexes["sorted runs"]


if __name__ == "__main__":
    main()
