"""Repairs damaged committed blocks from a good copy of the same chain (``tsunagi repair``).

A block of a chain is fixed by the chain itself: the next block's header names its hash, and
its own header names its Merkle root. So a copy can come from anywhere (a backup, another
node's data directory, a node over the network): a block from it is written back only if it
passes ``check_block`` and hashes to what the chain says the damaged block's hash is (the next
block's ``prev_hash``; for the newest block, the hash the index or a snapshot recorded). Then
its frame is written again in place, byte for byte as long as before (``BlockLog.rewrite``).

Run it with the node stopped: it needs the data directory's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsunagi.core.block import BlockResult, check_block, decode_block
from tsunagi.errors import EncodingError, StorageError
from tsunagi.ledger.damage import check_newest_first, remove_marker
from tsunagi.ledger.index import Index
from tsunagi.ledger.log import BlockLog
from tsunagi.ledger.snapshot import snapshot_block_hashes

__all__ = ["RepairReport", "repair_blocks"]


@dataclass
class RepairReport:
    blocks: int  # committed blocks checked
    damaged: list[int] = field(default_factory=list)  # heights found damaged
    repaired: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # height: why no copy was taken

    @property
    def ok(self) -> bool:
        return not self.failed


def repair_blocks(directory: str | Path, copy: Callable[[int], bytes | None],
                  progress: Callable[[int, int], None] | None = None) -> RepairReport:
    """Checks every committed block of ``directory`` (newest first, as the scrub does) and
    writes each damaged one again from ``copy(height)`` (the block's bytes from a good copy
    of the chain, or None). Returns what it found and did."""
    directory = Path(directory)
    log = BlockLog.open(directory)
    recorded = _Recorded(directory)
    try:
        report = RepairReport(log.height)
        expected: dict[int, bytes | None] = {}  # the hash the chain names for each damaged one
        for height, found, named in check_newest_first(log.read, log.height,
                                                       known_hash=recorded.get):
            if found.reason is not None:
                report.damaged.append(height)
                expected[height] = named
            if progress is not None:
                progress(log.height - height, log.height)
        for height in sorted(report.damaged):
            problem = _write_back(log, height, copy(height), expected[height])
            if problem is None:
                report.repaired.append(height)
            else:
                report.failed[height] = problem
        if report.ok:
            remove_marker(directory)
        return report
    finally:
        recorded.close()
        log.close()


def _write_back(log: BlockLog, height: int, data: bytes | None,
                expected_hash: bytes | None) -> str | None:
    """Writes the copy of block ``height`` back if it is the right block; else says why not."""
    if data is None:
        return "the copy does not hold this block"
    try:
        block = decode_block(data)
    except EncodingError as exc:
        return f"the copy's block does not decode ({exc})"
    result = check_block(block)
    if result is not BlockResult.ok:
        return f"the copy's block fails check_block ({result.name})"
    if expected_hash is None:
        return ("nothing records this block's hash (it is the newest, and neither the index "
                "nor a snapshot has it), so no copy can be proven right")
    if block.hash != expected_hash:
        return (f"the copy's block hashes to {block.hash[::-1].hex()}, the chain names "
                f"{expected_hash[::-1].hex()}: the copy is of another chain or fork")
    try:
        log.rewrite(height, data)
    except EncodingError as exc:
        return str(exc)
    return None


class _Recorded:
    """Block hashes recorded apart from the log, looked up by height: the snapshots' and the
    index's (both derived data; either may be missing or behind)."""

    def __init__(self, directory: Path) -> None:
        self.snapshots = snapshot_block_hashes(directory / "snapshots")
        try:
            self.index: Index | None = Index.open(directory)
        except (StorageError, OSError):
            self.index = None

    def get(self, height: int) -> bytes | None:
        if height < 0:
            return None
        if height in self.snapshots:
            return self.snapshots[height]
        return self.index.block_hash(height) if self.index is not None else None

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
