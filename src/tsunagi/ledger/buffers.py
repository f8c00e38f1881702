"""Large buffers used again once nothing refers to them any more.

A fresh buffer above glibc's 32 MiB mmap threshold maps new pages on every allocation, and a
smaller one of a few MB still faults its pages in each time it is first written: batches of
262,144 records committed at 1.06 M/s with fresh block buffers and 2.55 M/s when glibc kept
them (session 5), and the kernel's journal cost ~1 ms a 65,536-record batch when fresh. A pool
keeps them without changing malloc for the whole process. The block log keeps its block
buffers in one, the engine the kernel's journals in another.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

__all__ = ["BufferPool"]


class BufferPool:
    """uint8 owner arrays of up to ``limit_bytes`` in all, each handed out again once the
    pool's list is the only thing that refers to it. numpy points every view at the array
    that owns the memory, and a memoryview holds the view it was made from, so whatever still
    uses a buffer (a block decoded from it, a frame waiting to be written, changes waiting for
    the durable view) keeps it from being handed out."""

    def __init__(self, limit_bytes: int) -> None:
        self._owners: list[np.ndarray] = []
        self._limit = limit_bytes

    def take(self, need: int, room: Callable[[np.ndarray], int] = len,
             slack: int = 0) -> np.ndarray:
        """An idle owner whose ``room(owner)`` is at least ``need`` bytes, or a new one of
        ``need + slack`` bytes, kept if it fits the limit (idle ones make room for it)."""
        for index in range(len(self._owners)):  # no name may hold an owner while _idle counts
            if room(self._owners[index]) >= need and self._idle(index):
                return self._owners[index]
        owner = np.empty(need + slack, np.uint8)
        kept = sum(buffer.nbytes for buffer in self._owners)
        for index in reversed(range(len(self._owners))):
            if kept + owner.nbytes <= self._limit:
                break
            if self._idle(index):
                kept -= self._owners.pop(index).nbytes
        if kept + owner.nbytes <= self._limit:
            self._owners.append(owner)
        return owner

    def _idle(self, index: int) -> bool:
        # Held by the pool's list and getrefcount's argument alone.
        return sys.getrefcount(self._owners[index]) == 2
