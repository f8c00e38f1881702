"""A process's memory, read from /proc, and a sampler that records it while a run goes."""

from __future__ import annotations

import threading
import time

__all__ = ["RssSampler", "memory_kib"]


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


class RssSampler:
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
