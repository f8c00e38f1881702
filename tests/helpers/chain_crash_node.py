"""Child process of tests/test_chain_crash.py: a node that takes blocks until it is killed.

It opens the node's data directory (``Ledger.open``, then ``Chain``, which finishes or takes
back a reorg a crash interrupted) and feeds the block files of a directory to
``Chain.accept_block`` in name order, from the one numbered ``start`` on. It prints
``OPENING`` before the open, ``READY <height>`` once the chain is up, ``FEED <n>`` before
block n and ``DONE <n> <accepted> <height>`` after it (the node has it durably then), and
``END <reorgs>`` after the last. Snapshots come every few blocks, so the open after a crash
starts from one now and then. With ``--die-on-reorg-connect`` it kills itself with SIGKILL
at the first block a reorg connects (the crash test's fixed case); otherwise the parent
kills it with SIGKILL at a random moment.
"""

import os
import signal
import sys
from pathlib import Path

from tsunagi.consensus.chain import Chain
from tsunagi.ledger import Ledger
from tsunagi.ledger import limits as ledger_limits

SNAPSHOT_RECORDS = 250  # a snapshot every few blocks of the test's chains


def _die_on_reorg_connect(event) -> None:
    if event.kind == "connect" and event.reorg:
        os.kill(os.getpid(), signal.SIGKILL)


def main(directory: str, blocks: str, start: int, clock_s: int, die: bool) -> None:
    ledger_limits.snapshot_interval_records = SNAPSHOT_RECORDS
    files = sorted(Path(blocks).iterdir())
    print("OPENING", flush=True)
    ledger = Ledger.open(directory)
    chain = Chain(ledger, clock=lambda: clock_s)
    print("READY", chain.tip[0], flush=True)
    if die:
        chain.add_listener(_die_on_reorg_connect)
    for number in range(start, len(files)):
        print("FEED", number, flush=True)
        answer = chain.accept_block(files[number].read_bytes())
        print("DONE", number, answer.accepted.name, chain.tip[0], flush=True)
    print("END", chain.reorg_count, flush=True)
    ledger.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
         "--die-on-reorg-connect" in sys.argv[5:])
