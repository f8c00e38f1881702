"""Handing the heap's free pages back to the OS once the indexer has been idle a while: what a
flush and its merges free stays resident otherwise (see release_free_memory).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Hands the heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    A flush and its merges free tens of MB of numpy buffers that glibc keeps for reuse (its
    mmap threshold grows past their size once one is freed), and those count in the process's
    resident memory: 49 MB of the 94 MB RssAnon of a process that had just indexed 10 million
    records. Under load they are better kept: trimming after every flush made the commit path
    and the indexer fault their buffers in again, ~100 ns of system CPU a record (a ledger
    committing 65,536-record batches pipelined, 150 calls: 198-224 against 97-145 ns of
    system time a record, 2.05-2.13 against 2.16-2.41 M/s with the index kept up;
    /tmp/cpu_split4.py of session 5). The ledger's indexer calls this once it has been idle
    for a while (ledger.INDEX_IDLE_RELEASE_S)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
