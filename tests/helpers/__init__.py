"""Helpers the tests share: child processes that write until they are killed."""

from __future__ import annotations

import os
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


def kill_after_line(child: subprocess.Popen, marker: str | None, seconds: float,
                    timeout_s: float = 60.0) -> tuple[list[str], bool, dict[str, float]]:
    """Reads the output lines of a child started with ``stdout=PIPE`` (binary); ``seconds``
    after it prints the line ``marker`` it is SIGKILLed (``None``: it runs to its end).
    Returns every line it printed, whether the kill landed while it ran (False: it ended
    first, or never printed the marker within ``timeout_s``) and when each line was read
    (time.monotonic). A last line the kill cut short is left out.

    The pipe is read with os.read, not a buffered readline: a line waiting in a buffer would
    not wake the selector, and the kill would start late."""
    lines: list[str] = []
    read_at: dict[str, float] = {}
    partial, seen = b"", False
    fd = child.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            *complete, partial = (partial + chunk).split(b"\n")
            for raw in complete:
                lines.append(raw.decode().strip())
                read_at[lines[-1]] = time.monotonic()
                if lines[-1] == marker and not seen:
                    seen, deadline = True, time.monotonic() + seconds
        killed = seen and child.poll() is None
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate()
    # A line the kill cut short has no newline: it was not printed whole, and is dropped.
    *complete, _ = (partial + rest).decode().split("\n")
    return [line for line in lines + complete if line.strip()], killed, read_at
