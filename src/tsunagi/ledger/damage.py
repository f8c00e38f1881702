"""Damage to committed blocks: how it is found, remembered and reported.

A block can be damaged after it was acknowledged (a failing disk, a stray write). Four checks
find it, as the most trusted stores do:

- every read of a block checks its frame's checksum (the block log);
- on open, the newest blocks are checked fully (as Bitcoin Core's ``-checkblocks``): the frame,
  the block alone (``check_block``: work, Merkle root, batch signatures) and the link from each
  to the one before;
- a background scrub (:class:`Scrub`) re-reads every committed block at a bounded rate, with the
  same checks, one pass after another;
- ``tsunagi verify`` re-executes the whole chain.

Damage found after open does not stop the ledger: it goes on serving every other block, and
refuses new records, because a block appended on top of a damaged one would bury it. The damage
is written to ``damage.json`` in the data directory, so a restart does not forget it; the file
is removed once the block reads intact again (``tsunagi repair`` restored it, or the operator
restored the directory from a backup).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tsunagi.core.block import BlockResult, check_block, decode_block
from tsunagi.errors import CorruptLogError, EncodingError
from tsunagi.ledger.log import LOG_NAME, write_file_atomically

__all__ = ["DAMAGE_FILE", "Damage", "Scrub", "StoredCheck", "check_newest_first",
           "check_stored_block", "error_for", "from_error", "read_marker", "remove_marker",
           "write_marker"]

log = logging.getLogger(__name__)

DAMAGE_FILE = "damage.json"


@dataclass(frozen=True)
class Damage:
    """A committed block that failed a check: where, why, and which check found it."""

    height: int
    offset: int | None  # byte offset of its frame in blocks.log, when known
    reason: str
    found_by: str  # "open", "read", "scrub", "verify"
    found_at_s: float

    def describe(self, directory: Path) -> str:
        where = f" at the frame starting at byte offset {self.offset}" if self.offset is not None \
            else ""
        return (f"committed block {self.height} of {directory / LOG_NAME} is damaged{where} "
                f"({self.reason}; found by the {self.found_by} check)")

    def advice(self, directory: Path) -> str:
        return (f"{self.describe(directory)}. This ledger keeps serving the other blocks and "
                "takes no new records until the block is repaired: stop the node and run "
                f"`tsunagi repair {directory} --from BACKUP` with a backup or another node's "
                "copy of this chain, or restore the data directory from a backup")

    def as_dict(self) -> dict:
        return asdict(self)


def error_for(damage: Damage, directory: Path) -> CorruptLogError:
    error = CorruptLogError(damage.advice(directory))
    error.height, error.offset = damage.height, damage.offset
    return error


def from_error(error: CorruptLogError, found_by: str) -> Damage:
    reason = str(error)
    height = getattr(error, "height", None)
    return Damage(-1 if height is None else int(height), getattr(error, "offset", None),
                  getattr(error, "reason", None) or reason, found_by, time.time())


def write_marker(directory: Path, damage: Damage) -> None:
    write_file_atomically(directory / DAMAGE_FILE, json.dumps(damage.as_dict()).encode())


def read_marker(directory: Path) -> Damage | None:
    """The damage a ledger recorded before, or None (an unreadable marker counts as damage at
    an unknown height: the open checks the whole log then)."""
    path = directory / DAMAGE_FILE
    try:
        document = json.loads(path.read_bytes())
        return Damage(int(document["height"]), document.get("offset"), str(document["reason"]),
                      str(document["found_by"]), float(document["found_at_s"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return Damage(-1, None, f"{DAMAGE_FILE} cannot be read", "open", time.time())


def remove_marker(directory: Path) -> None:
    (directory / DAMAGE_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class StoredCheck:
    """What checking one stored block found: ``reason`` is None when it is intact."""

    reason: str | None
    prev_hash: bytes  # what the block says its predecessor's hash is (zeros: unreadable)
    size: int  # bytes read
    offset: int | None = None  # of the damaged frame, when the log named it


def check_stored_block(read: Callable[[int], bytes], height: int,
                       next_prev_hash: bytes | None) -> StoredCheck:
    """Checks one committed block: its frame (``read`` raises CorruptLogError), that it decodes,
    ``check_block``, and that its hash is what the next block links to (``next_prev_hash``;
    None for the tip, which the caller checks against a hash recorded elsewhere)."""
    try:
        raw = read(height)
    except CorruptLogError as error:
        return StoredCheck(getattr(error, "reason", None) or str(error), bytes(32), 0,
                           getattr(error, "offset", None))
    try:
        block = decode_block(raw)
    except EncodingError as exc:
        return StoredCheck(f"the block does not decode ({exc})", bytes(32), len(raw))
    result = check_block(block)
    if result is not BlockResult.ok:
        return StoredCheck(f"block check: {result.name}", block.prev_hash, len(raw))
    if next_prev_hash is not None and block.hash != next_prev_hash:
        return StoredCheck("its hash is not the one the next block links to", block.prev_hash,
                           len(raw))
    return StoredCheck(None, block.prev_hash, len(raw))


def check_newest_first(read: Callable[[int], bytes], height: int, first: int = 0,
                       known_hash: Callable[[int], bytes | None] = lambda height: None,
                       ) -> Iterator[tuple[int, StoredCheck, bytes | None]]:
    """Checks blocks ``height - 1`` down to ``first`` with :func:`check_stored_block`, each
    against the hash the block after it links to; yields (height, check, that hash). A damaged
    block's word on its predecessor is not evidence against it: the one below it is checked
    against ``known_hash(height)`` instead (a hash recorded elsewhere, or None), as the tip is.
    """
    expected = known_hash(height - 1)
    for block_height in range(height - 1, first - 1, -1):
        found = check_stored_block(read, block_height, expected)
        yield block_height, found, expected
        expected = found.prev_hash if found.reason is None else known_hash(block_height - 1)


class Scrub:
    """Re-reads committed blocks in the background, newest first each pass, at a bounded rate.

    ``chain()`` gives (durable height, read function, report function). A pass checks every
    block below the height with :func:`check_stored_block`, reading at most ``rate_bytes_s``
    bytes a second on average and spending at most ``cpu_share`` of one core (it sleeps in
    between: a chain of many small blocks costs more CPU per byte than one of large blocks),
    then waits until ``interval_s`` after the pass began before the next. Damage goes to
    ``report(damage)``; the scrub goes on with the next block.
    """

    def __init__(self, chain: Callable, rate_bytes_s: float, interval_s: float,
                 cpu_share: float = 1.0) -> None:
        self._chain = chain
        self.rate_bytes_s, self.interval_s = rate_bytes_s, interval_s
        self.cpu_share = cpu_share
        self.passes = 0
        self.blocks_checked = 0
        self.bytes_checked = 0
        self.last_pass_s: float | None = None
        self.damaged: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tsunagi-scrub", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def status(self) -> dict:
        return {"passes": self.passes, "blocks_checked": self.blocks_checked,
                "bytes_checked": self.bytes_checked, "last_pass_s": self.last_pass_s,
                "rate_bytes_s": self.rate_bytes_s, "interval_s": self.interval_s,
                "cpu_share": self.cpu_share}

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                if not self._one_pass():
                    return
                self.passes += 1
                self.last_pass_s = time.time()
                self._stop.wait(max(0.0, began + self.interval_s - time.monotonic()))
        except Exception:  # the scrub must never take the ledger down
            log.exception("the background scrub stopped")

    def _one_pass(self) -> bool:
        """One pass over the chain, newest first; False when the scrub was stopped."""
        height, read, report = self._chain()
        if height is None:
            return False
        started, done_bytes, busy_s = time.monotonic(), 0, 0.0
        checking_s = time.perf_counter()  # wall time: it counts native threads too
        for block_height, found, _ in check_newest_first(read, height):
            busy_s += time.perf_counter() - checking_s
            if found.reason is not None and block_height not in self.damaged:
                self.damaged.add(block_height)
                report(Damage(block_height, found.offset, found.reason, "scrub", time.time()))
            self.blocks_checked += 1
            self.bytes_checked += found.size
            done_bytes += found.size
            # Pace the pass: on average since it began, no more than rate_bytes_s read and no
            # more than cpu_share of a core spent.
            elapsed = time.monotonic() - started
            ahead = max(done_bytes / self.rate_bytes_s, busy_s / self.cpu_share) - elapsed
            stopped = self._stop.wait(ahead) if ahead > 0 else self._stop.is_set()
            if stopped:
                return False
            checking_s = time.perf_counter()
        return True
