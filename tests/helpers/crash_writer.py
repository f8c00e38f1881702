"""Child process of tests/test_ledger_crash.py: commits batches until it is killed.

Before each batch it prints ``PENDING <n> <txids hex>``; after the ledger answers (after the
fsync) it prints ``ACK <n> <height> <codes hex>``. With ``in_flight`` 2 it begins batch n+1
(``begin_batch``) before it waits for batch n, as a node does, so two batches are written and
unacknowledged at a time. With ``direct_min`` (bytes) above 0, blocks of that size and more
take the block log's O_DIRECT path, and the records of each batch go to the disk ahead of its
block (Ledger._start_block): small as the batches are, they crash in that path too.
The parent kills it with SIGKILL at random.
"""

import sys
import time

from tsunagi.core import records
from tsunagi.core.keyfile import load_key
from tsunagi.hashing import sha256d
from tsunagi.ledger import Ledger
from tsunagi.ledger import limits as ledger_limits


def main(directory: str, key_file: str, accounts: int, batch: int, in_flight: int,
         direct_min: int = 0) -> None:
    if direct_min:
        ledger_limits.log_direct_bytes_min = direct_min
    key = load_key(key_file, "crash")
    with Ledger.open(directory, threads=1) as ledger:
        chain_id = ledger.config.chain_id
        print("READY", flush=True)
        round_ = 0
        waiting = []
        while True:
            base = time.time_ns() // 1000
            batch_records = [
                records.transfer(chain_id, base + i, 1 + (round_ + i) % accounts,
                                 1 + (round_ + i + 1) % accounts, 1 + i % 7)
                for i in range(batch)]
            body = b"".join(batch_records)
            signatures = b"".join(key.sign_record(r) for r in batch_records)
            print("PENDING", round_, b"".join(sha256d(r) for r in batch_records).hex(),
                  flush=True)
            waiting.append((round_, ledger.begin_batch(body, signatures)))
            if len(waiting) == in_flight:
                number, pending = waiting.pop(0)
                answer = pending.wait()
                print("ACK", number, answer.height, answer.codes.tobytes().hex(), flush=True)
            round_ += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
