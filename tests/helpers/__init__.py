"""Helpers the tests share: child processes that write until they are killed."""

from __future__ import annotations

import selectors
import signal
import subprocess
import time


def read_until_killed(child: subprocess.Popen, seconds: float) -> list[str]:
    """Reads the child's output lines while it runs (so it never blocks on a full pipe),
    SIGKILLs it after ``seconds``, and returns every line it printed."""
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = child.stdout.readline()
                if not line:
                    break
                lines.append(line.strip())
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate()
    return [line for line in lines + rest.splitlines() if line]
