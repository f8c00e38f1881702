"""Child process of tests/test_ledger_reads.py: commits batches while a thread reads balances,
until it is killed.

The writer commits batches of linked pairs (a pays b, b pays c; every third pair's second
transfer is too large, so the kernel applies the first and rolls it back) with two batches in
flight, as a node does. The reader thread reads the watched accounts together
(``Ledger.balances``) as fast as it can and prints ``SEEN <height> <balance>...`` each time
what it reads changes. The parent kills this process with SIGKILL at random.
"""

import sys
import threading
import time

from tsunagi.core import records
from tsunagi.core.keyfile import load_key
from tsunagi.ledger import Ledger


def reader(ledger: Ledger, watched: list[int]) -> None:
    last = None
    while True:
        height, balances = ledger.balances(watched)
        seen = (height, *balances.tolist())
        if seen != last:
            print("SEEN", *seen, flush=True)
            last = seen


def pairs(chain_id: int, round_: int, count: int, accounts: int) -> list[bytes]:
    base = time.time_ns() // 1000
    out = []
    for i in range(count):
        a, b = 1 + (round_ + i) % accounts, 1 + (round_ + i + 1) % accounts
        c = 1 + (round_ + i + 2) % accounts
        second = 10**12 if i % 3 == 2 else 1 + i % 5  # too large: the whole pair rolls back
        out.append(records.transfer(chain_id, base + 2 * i, a, b, 3, linked=True))
        out.append(records.transfer(chain_id, base + 2 * i + 1, b, c, second))
    return out


def main(directory: str, key_file: str, accounts: int, count: int) -> None:
    key = load_key(key_file, "crash")
    ledger = Ledger.open(directory, threads=1)
    chain_id = ledger.config.chain_id
    print("READY", flush=True)
    threading.Thread(target=reader, args=(ledger, list(range(1, accounts + 1))),
                     daemon=True).start()
    waiting, round_ = [], 0
    while True:
        batch = pairs(chain_id, round_, count, accounts)
        body = b"".join(batch)
        waiting.append(ledger.begin_batch(body, b"".join(map(key.sign_record, batch))))
        if len(waiting) == 2:
            waiting.pop(0).wait()
        round_ += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
