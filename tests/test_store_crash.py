"""A writer killed with SIGKILL at random moments never loses an acknowledged block, and the
reopened log holds only whole blocks, byte-exact.

Method: a child process (a small script) imports the log once and forks one worker per round;
the worker opens the log (recovering whatever the last kill left), appends blocks of 100 bytes
to 1 MiB whose bytes follow from their height, syncs, and prints each acknowledged height only
after sync returns. The test kills the worker at a random moment (during open, a write or an
fsync), 24 times. Every other round it reopens the log itself and compares every block with the
bytes its height implies; the other rounds leave the crashed state for the next worker to
recover.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tsunagi.ledger.log import BlockLog

ROUNDS = 24

WORKER_SCRIPT = r'''
import os, random, sys
sys.path.insert(0, sys.argv[2])
from test_store_crash import block_for
from tsunagi.ledger.log import BlockLog

def say(text):
    # One write of a whole line: a kill cannot split it, as it can split print's two writes.
    os.write(1, (text + "\n").encode())

def work(directory, seed):
    block_log = BlockLog.open(directory, create=True)
    say(f"opened {block_log.height} {block_log.recovered_bytes}")
    rng = random.Random(seed)
    while True:
        for _ in range(rng.randint(1, 6)):
            block_log.append(block_for(block_log.height))
        say(f"acked {block_log.sync()}")

if __name__ == "__main__":
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                work(sys.argv[1], int(line))
            finally:
                os._exit(1)
        say(f"worker {pid}")
        os.waitpid(pid, 0)
        say(f"dead {pid}")
'''


def block_for(height: int) -> bytes:
    """The bytes of block ``height``: 100 B to 1 MiB, mostly small (the worker imports this)."""
    rng = random.Random(height)
    kind = rng.random()
    if kind < 0.7:
        size = rng.randint(100, 3000)
    elif kind < 0.95:
        size = rng.randint(3000, 65536)
    else:
        size = rng.randint(256 << 10, 1 << 20)
    return rng.randbytes(size)


class Worker:
    """The child script, its output lines in a queue, and what it acknowledged."""

    def __init__(self, directory: Path, script: Path):
        tests = str(Path(__file__).resolve().parent)
        self.process = subprocess.Popen([sys.executable, str(script), str(directory), tests],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.acked = 0
        self.recovered_opens = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def next_line(self) -> str:
        line = self.lines.get(timeout=60)
        word, *values = line.split()
        if word == "acked":
            self.acked = max(self.acked, int(values[0]))
        elif word == "opened" and int(values[1]) > 0:
            self.recovered_opens += 1
        return line

    def run_and_kill(self, seed: int, delay_s: float) -> None:
        self.process.stdin.write(f"{seed}\n")
        self.process.stdin.flush()
        while not (line := self.next_line()).startswith("worker "):
            pass
        pid = int(line.split()[1])
        time.sleep(delay_s)
        os.kill(pid, signal.SIGKILL)
        while self.next_line() != f"dead {pid}":
            pass

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def assert_intact(directory: Path, acked: int) -> int:
    with BlockLog.open(directory) as block_log:
        height = block_log.height
        assert height >= acked, f"acknowledged {acked} blocks, found {height}"
        for expected_height, block in enumerate(block_log.iter_blocks()):
            assert block == block_for(expected_height), f"block {expected_height} differs"
        assert block_log.verify_frames() == height
    # Nothing half-written: the file is exactly the frames of the blocks found.
    size = sum(32 + len(block_for(h)) for h in range(height))
    assert (directory / "blocks.log").stat().st_size == size
    return height


def test_sigkill_at_random_moments_loses_no_acknowledged_block(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    directory = tmp_path / "data"
    rng = random.Random(2024)
    worker = Worker(directory, script)
    try:
        for round_number in range(ROUNDS):
            worker.run_and_kill(round_number, rng.uniform(0.0, 0.04))
            if round_number % 2 or round_number == ROUNDS - 1:
                assert_intact(directory, worker.acked)
    finally:
        worker.close()
    assert worker.acked > 0
    assert assert_intact(directory, worker.acked) >= worker.acked
