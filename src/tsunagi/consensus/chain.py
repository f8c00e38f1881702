"""Which chain is best, and moving the ledger onto it: headers, blocks from peers, reorgs.

The ledger is a state machine that never decides (``Ledger.connect_block`` applies a block on
its tip, ``disconnect_blocks`` takes the tip back); :class:`Chain` decides. It keeps the block
tree (tsunagi.consensus.tree): the best header chain by cumulative work, side headers, bodies
of blocks off the ledger's chain. After every header or block it takes, it moves the ledger to
the most-work chain whose blocks it has and that holds up:

1. while the ledger's tip is on the best header chain, the next blocks of that chain connect
   as their bodies arrive (in any order; bodies wait in memory, bounded);
2. when the best header chain forks off below the ledger's tip and the bodies from the fork
   point on carry more work than the ledger's chain, a reorg: the ledger's blocks above the
   fork are stored as side bodies first (a crash mid-reorg finds both branches on disk), then
   disconnected newest first, then the new branch connects;
3. a block that fails marks itself and its descendants invalid, the best header chain falls
   back to the best remaining branch, and the loop goes on from 1: the node ends on the best
   valid chain.

Ties keep what came first: the header chain and the ledger switch only for strictly more
work. The ledger's chain is where a restart begins, so the first-seen tip stays across one.

Listeners (``add_listener``) hear every block the ledger connects or disconnects, in order,
on the thread that caused it (the node's mempool, confirmations and relay follow them), and
``durable`` once the blocks connected so far are on disk (a node's block subscriptions send
durable blocks only, and a connect is heard before its sync).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from tsunagi import hashing
from tsunagi.core.block import HEADER_BYTES, BlockResult, check_block, decode_block
from tsunagi.errors import EncodingError
from tsunagi.consensus import limits
from tsunagi.consensus.pow import expected_bits
from tsunagi.consensus.tree import (
    HeaderChain,
    SideHeader,
    SideStore,
    header_bits,
    header_prev,
    header_time,
)

__all__ = ["Accepted", "Chain", "ChainEvent", "HeadersVerdict", "NotAtTip"]

log = logging.getLogger("tsunagi.chain")

SIDE_DIRECTORY = "side"  # under the ledger's directory, in chain/


class Accepted(IntEnum):
    """What accept_block did with a block."""

    connected = 0  # the ledger's chain now holds it
    stored = 1  # kept (a side branch, or ahead of the tip while earlier blocks arrive)
    duplicate = 2  # known already
    orphan = 3  # its parent is unknown: ask the sender for headers
    invalid = 4  # it breaks a rule (``code`` says which): the sender misbehaved
    later = 5  # its time is too far ahead of this node's clock: not taken now


class HeadersVerdict(IntEnum):
    """What accept_headers made of a run of headers."""

    ok = 0  # all taken (or known already)
    unknown_parent = 1  # the first header's parent is unknown
    invalid = 2  # a header breaks a rule (links, work, bits, time): misbehaviour
    low_work = 3  # a branch with no more work than the best chain: not kept
    malformed = 4  # not a whole number of 80-byte headers


@dataclass(frozen=True)
class ChainEvent:
    kind: str  # "connect", "disconnect", or "durable" (the ledger's tip; no block)
    height: int
    block: bytes  # b"" for "durable"
    reorg: bool  # part of a reorg (disconnects, and the connects that follow them)


@dataclass(frozen=True)
class AcceptAnswer:
    accepted: Accepted
    code: BlockResult = BlockResult.ok

    @property
    def misbehaved(self) -> bool:
        return self.accepted is Accepted.invalid


@dataclass(frozen=True)
class HeadersAnswer:
    verdict: HeadersVerdict
    taken: int  # headers new to this node that it kept
    index: int = 0  # of the first header refused


def chain_bits(config) -> Callable[[int, int, Callable[[int], int]], int]:
    """The config's difficulty rule (tsunagi.consensus.pow.expected_bits): fixed bits in
    development mode, Bitcoin's retarget when the config sets retarget_blocks."""
    return lambda height, parent_bits, time_at: expected_bits(config, height, parent_bits,
                                                              time_at)


class Chain:
    """One node's view of the block tree, driving its ledger. Thread-safe (one lock).

    ``bits_rule(height, parent_bits, time_at)`` gives the bits a block must carry (the
    config's rule, tsunagi.consensus.pow.expected_bits, by default); like that rule it may
    change the bits only at multiples of the config's retarget_blocks.
    """

    def __init__(self, ledger, *, bits_rule: Callable | None = None,
                 clock: Callable[[], float] = time.time, threads: int | None = None) -> None:
        self.ledger = ledger
        self.config = ledger.config
        self.bits_rule = bits_rule or chain_bits(self.config)
        self.clock = clock
        self.threads = threads or hashing.cpu_count()
        self.lock = threading.RLock()
        self.mining_stop = threading.Event()  # set when a block arrives that may beat the tip
        self.headers = HeaderChain(ledger.headers(0, 1))
        self.headers.extend_from_ledger(ledger)
        self.base = self.headers.length  # heights the ledger shares with the header chain
        self.ledger_branch: list[bytes] = []  # the ledger's blocks above them (side headers)
        self.side: dict[bytes, SideHeader] = {}
        self.pending: OrderedDict[bytes, bytes] = OrderedDict()
        self.orphans: OrderedDict[bytes, bytes] = OrderedDict()
        self.invalid: set[bytes] = set()
        self._invalid_codes: dict[bytes, BlockResult] = {}
        self.store = SideStore(ledger.directory / "chain" / SIDE_DIRECTORY)
        self._listeners: list[Callable[[ChainEvent], None]] = []
        self.reorg_count = 0
        self.reorg_depth_last = 0
        self.reorg_depth_max = 0
        self._seq = self.store.next_seq
        self._in_reorg = False
        with self.lock:
            self._load_side_store()
            self._advance()

    # ------------------------------------------------------------------ setup

    def _load_side_store(self) -> None:
        """Bodies stored before a restart: blocks the ledger now holds leave the store; the
        rest become side headers again (oldest first: a parent before its children)."""
        done = []
        items = self.store.items()
        progress = True
        waiting = list(items)
        while progress and waiting:
            progress = False
            later = []
            for seq, block_hash, path in waiting:
                if self.headers.find(block_hash) is not None:
                    done.append(block_hash)
                    progress = True
                    continue
                raw = self.store.get(block_hash)
                if raw is None or len(raw) < HEADER_BYTES:
                    done.append(block_hash)
                    continue
                header = raw[:HEADER_BYTES]
                parent = self._known(header_prev(header))
                if parent is None:
                    later.append((seq, block_hash, path))
                    continue
                height, work = parent
                self.side[block_hash] = SideHeader(
                    header, height + 1, work + hashing.work_from_bits(header_bits(header)), seq,
                    has_body=True)
                progress = True
            waiting = later
        done += [block_hash for _, block_hash, _ in waiting]  # their parents are gone
        self.store.remove(done)
        best = max(self.side.items(), key=lambda item: (item[1].work, -item[1].seq),
                   default=None)
        if best is not None and best[1].work > self.headers.tip_work:
            self._switch_to(best[0])

    def add_listener(self, listener: Callable[[ChainEvent], None]) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------------ reading

    def _known(self, block_hash: bytes) -> tuple[int, int] | None:
        """(height, cumulative work) of a known header."""
        height = self.headers.find(block_hash)
        if height is not None:
            return height, self.headers.work(height)
        entry = self.side.get(block_hash)
        return (entry.height, entry.work) if entry is not None else None

    @property
    def tip(self) -> tuple[int, bytes, int]:
        """(height of the ledger's tip, its hash, cumulative work)."""
        with self.lock:
            return self._ledger_tip()

    def _ledger_tip(self) -> tuple[int, bytes, int]:
        if self.ledger_branch:
            entry = self.side[self.ledger_branch[-1]]
            return entry.height, self.ledger_branch[-1], entry.work
        height = self.base - 1
        return height, self.headers.hash(height), self.headers.work(height)

    @property
    def best_header(self) -> tuple[int, bytes, int]:
        with self.lock:
            return self.headers.tip_height, self.headers.tip_hash, self.headers.tip_work

    def locator(self) -> list[bytes]:
        with self.lock:
            return self.headers.locator()

    def headers_after(self, locator: list[bytes], stop: bytes, count: int) -> bytes:
        """Headers of the best chain after the newest locator hash it shares (Bitcoin's
        getheaders), up to ``count`` or the ``stop`` hash."""
        with self.lock:
            return headers_after(self.headers, self.headers.length, locator, stop, count)

    def block(self, block_hash: bytes) -> bytes | None:
        """A block's bytes by hash, from the ledger's chain, memory or the side store."""
        with self.lock:
            height = self.headers.find(block_hash)
            if height is not None and height < self.base:
                return self.ledger.block(height, durable=False)
            if block_hash in self.ledger_branch:
                return self.ledger.block(self.side[block_hash].height, durable=False)
            return self.pending.get(block_hash) or self.store.get(block_hash)

    def has_block(self, block_hash: bytes) -> bool:
        with self.lock:
            return self._has_body(block_hash) or block_hash in self.invalid

    def _has_body(self, block_hash: bytes) -> bool:
        height = self.headers.find(block_hash)
        if height is not None and height < self.base:
            return True
        return block_hash in self.pending or block_hash in self.store \
            or block_hash in self.ledger_branch

    def missing(self, limit: int) -> list[bytes]:
        """Hashes of the best header chain's next blocks this node lacks (for download)."""
        with self.lock:
            found, height = [], self.base
            while height < self.headers.length and len(found) < limit:
                block_hash = self.headers.hash(height)
                # Above base the ledger has none of the header chain's blocks.
                if block_hash not in self.pending and block_hash not in self.store \
                        and block_hash not in self.ledger_branch:
                    found.append(block_hash)
                height += 1
                if height - self.base > limits.pending_blocks_max:
                    break
            return found

    def status(self) -> dict:
        with self.lock:
            height, block_hash, work = self._ledger_tip()
            return {"height": height, "tip": block_hash[::-1].hex(), "work": work,
                    "best_header_height": self.headers.tip_height,
                    "side_blocks": len(self.store), "pending_blocks": len(self.pending),
                    "orphans": len(self.orphans), "invalid": len(self.invalid),
                    "reorgs": self.reorg_count, "reorg_depth_last": self.reorg_depth_last,
                    "reorg_depth_max": self.reorg_depth_max}

    # ------------------------------------------------------------------ headers

    def accept_headers(self, data) -> HeadersAnswer:
        """Takes a run of headers from a peer (each the parent of the next)."""
        view = memoryview(data).cast("B")
        if view.nbytes % HEADER_BYTES:
            return HeadersAnswer(HeadersVerdict.malformed, 0)
        count = view.nbytes // HEADER_BYTES
        if not count:
            return HeadersAnswer(HeadersVerdict.ok, 0)
        headers = np.frombuffer(view, dtype=np.uint8).reshape(count, HEADER_BYTES)
        hashes = hashing.sha256d_records(view, HEADER_BYTES, self.threads)
        with self.lock:
            # Skip what is known already (a peer's answer overlaps what it sent before).
            skip = 0
            while skip < count and self._known(hashes[skip].tobytes()) is not None:
                skip += 1
            if skip == count:
                return HeadersAnswer(HeadersVerdict.ok, 0)
            headers, hashes = headers[skip:], hashes[skip:]
            prev = header_prev(headers[0])
            if any(h.tobytes() in self.invalid for h in hashes[:1]) or prev in self.invalid:
                return HeadersAnswer(HeadersVerdict.invalid, 0, skip)
            parent = self._known(prev)
            if parent is None:
                return HeadersAnswer(HeadersVerdict.unknown_parent, 0, skip)
            index, result = hashing.validate_headers(headers.tobytes(), prev, self.threads)
            if index < len(headers):
                return HeadersAnswer(HeadersVerdict.invalid, 0, skip + index)
            bad = self._check_rules(headers, parent[0], prev)
            if bad is not None:
                return HeadersAnswer(HeadersVerdict.invalid, 0, skip + bad)
            if prev == self.headers.tip_hash:
                self.headers.extend(headers, hashes)
                self.mining_stop.set()
                self._advance()
                return HeadersAnswer(HeadersVerdict.ok, len(headers))
            work = parent[1] + sum(hashing.work_from_bits(header_bits(h)) for h in headers)
            if work <= self.headers.tip_work:
                return HeadersAnswer(HeadersVerdict.low_work, 0, skip)
            self._add_side(headers, hashes, parent)
            self._switch_to(hashes[-1].tobytes())
            self.mining_stop.set()
            self._advance()
            return HeadersAnswer(HeadersVerdict.ok, len(headers))

    def _check_rules(self, headers: np.ndarray, parent_height: int, prev: bytes) -> int | None:
        """Index of the first header whose bits or time break the chain's rules, or None."""
        times = headers[:, 68:72].copy().view("<u4")[:, 0].astype(np.int64)
        bits = headers[:, 72:76].copy().view("<u4")[:, 0]
        parent_time = self._time_of(prev, parent_height)
        previous = np.concatenate([[parent_time], times[:-1]])
        late = np.flatnonzero((times < previous)
                              | (times > int(self.clock()) + self._future_s()))
        first_bad = int(late[0]) if late.size else None
        parent_bits = self._bits_of(prev, parent_height)
        time_at = self._time_lookup(prev, parent_height, times)
        # The rule changes bits only at multiples of retarget_blocks (never when it is 0): one
        # call for each stretch between two of them, then one compare over the stretch.
        limit = len(headers) if first_bad is None else first_bad
        period = self.config.retarget_blocks
        i = 0
        while i < limit:
            height = parent_height + 1 + i
            expected = self.bits_rule(height, parent_bits, time_at)
            end = limit if not period else min(limit, i + period - height % period)
            wrong = np.flatnonzero(bits[i:end] != expected)
            if wrong.size:
                return i + int(wrong[0])
            parent_bits, i = expected, end
        return first_bad

    def _future_s(self) -> int:
        return self.config.time_future_s

    def _time_of(self, block_hash: bytes, height: int) -> int:
        if self.headers.find(block_hash) == height:
            return self.headers.time(height)
        return header_time(self.side[block_hash].header)

    def _bits_of(self, block_hash: bytes, height: int) -> int:
        if self.headers.find(block_hash) == height:
            return self.headers.bits(height)
        return header_bits(self.side[block_hash].header)

    def _time_lookup(self, prev: bytes, parent_height: int, new_times: np.ndarray):
        """time_at(height) along the branch ending in prev, then the new headers."""
        side_times: dict[int, int] = {}
        block_hash = prev
        while block_hash in self.side:
            entry = self.side[block_hash]
            side_times[entry.height] = header_time(entry.header)
            block_hash = entry.prev

        def time_at(height: int) -> int:
            if height > parent_height:
                return int(new_times[height - parent_height - 1])
            if height in side_times:
                return side_times[height]
            return self.headers.time(height)
        return time_at

    def _add_side(self, headers: np.ndarray, hashes: np.ndarray,
                  parent: tuple[int, int]) -> None:
        height, work = parent
        for header, block_hash in zip(headers, hashes):
            height += 1
            work += hashing.work_from_bits(header_bits(header))
            key = block_hash.tobytes()
            if key not in self.side:
                self.side[key] = SideHeader(header.tobytes(), height, work, self._next_seq())
        self._prune_side()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _prune_side(self) -> None:
        """Side headers too deep to matter, and their bodies, go."""
        floor = self.headers.tip_height - limits.reorg_depth_max
        doomed = [h for h, e in self.side.items() if e.height < floor and not e.in_ledger]
        for block_hash in doomed:
            del self.side[block_hash]
        self.store.remove([h for h in doomed if h in self.store])

    def _switch_to(self, tip_hash: bytes) -> None:
        """Makes the branch ending in a side header the best header chain."""
        path = []
        block_hash = tip_hash
        while block_hash in self.side:
            path.append(block_hash)
            block_hash = self.side[block_hash].prev
        fork = self.headers.find(block_hash)
        if fork is None:
            raise RuntimeError("a side branch that joins no chain")  # _add_side forbids it
        path.reverse()
        old = [(self.headers.hash(h), self.headers.header(h), h)
               for h in range(fork + 1, self.headers.length)]
        for block_hash, header, height in old:
            entry = self.side.get(block_hash)
            if entry is None:
                self.side[block_hash] = SideHeader(
                    header, height, self.headers.work(height), self._next_seq(),
                    has_body=self._has_body(block_hash),
                    in_ledger=height < self.base)
        new_headers = np.frombuffer(b"".join(self.side[h].header for h in path),
                                    dtype=np.uint8).reshape(-1, HEADER_BYTES)
        self.headers.truncate(fork + 1)
        self.headers.extend(new_headers)
        for block_hash in path:
            del self.side[block_hash]
        if fork < self.base - 1:
            self.ledger_branch = [h for h, _, height in old if height < self.base] \
                + self.ledger_branch
            self.base = fork + 1
        while self.ledger_branch and self.base < self.headers.length \
                and self.headers.hash(self.base) == self.ledger_branch[0]:
            self.ledger_branch.pop(0)
            self.base += 1

    # ------------------------------------------------------------------ blocks

    def accept_block(self, raw) -> AcceptAnswer:
        """Takes a block from anywhere (a peer, a miner); see the module docstring."""
        data = bytes(raw)
        try:
            block = decode_block(data)
        except EncodingError:
            return AcceptAnswer(Accepted.invalid, BlockResult.undecodable)
        if block.is_genesis:
            return AcceptAnswer(Accepted.duplicate if block.hash == self.headers.hash(0)
                                else Accepted.invalid, BlockResult.not_tip_child)
        result = check_block(block)
        if result is not BlockResult.ok:
            return AcceptAnswer(Accepted.invalid, result)
        block_hash = block.hash
        self.mining_stop.set()  # a miner holding the lock stops, so this block gets it
        with self.lock:
            if block_hash in self.invalid or block.prev_hash in self.invalid:
                self.invalid.add(block_hash)
                return AcceptAnswer(Accepted.invalid, BlockResult.not_authenticated)
            if self._has_body(block_hash):
                return AcceptAnswer(Accepted.duplicate)
            header = data[:HEADER_BYTES]
            known = self._known(block_hash)
            if known is None:
                parent = self._known(block.prev_hash)
                if parent is None:
                    self._keep_orphan(block.prev_hash, data)
                    return AcceptAnswer(Accepted.orphan)
                headers = np.frombuffer(header, dtype=np.uint8).reshape(1, HEADER_BYTES)
                if block.time > int(self.clock()) + self._future_s():
                    return AcceptAnswer(Accepted.later, BlockResult.time_too_far_ahead)
                bad = self._check_rules(headers, parent[0], block.prev_hash)
                if bad is not None:
                    return AcceptAnswer(Accepted.invalid, BlockResult.wrong_bits
                                        if header_time(header) >= self._time_of(
                                            block.prev_hash, parent[0])
                                        else BlockResult.time_before_parent)
                hashes = np.frombuffer(block_hash, dtype=np.uint8).reshape(1, 32)
                if block.prev_hash == self.headers.tip_hash:
                    self.headers.extend(headers, hashes)
                else:
                    self._add_side(headers, hashes, parent)
            self._keep_body(block_hash, data)
            entry = self.side.get(block_hash)
            if entry is not None and entry.work > self.headers.tip_work:
                self._switch_to(block_hash)
            self._advance()
            self._adopt_orphans(block_hash)
            if block_hash in self.invalid:
                return AcceptAnswer(Accepted.invalid, self._invalid_codes.get(
                    block_hash, BlockResult.not_authenticated))
            height = self.headers.find(block_hash)
            on_ledger = (height is not None and height < self.base) \
                or block_hash in self.ledger_branch
            return AcceptAnswer(Accepted.connected if on_ledger else Accepted.stored)

    def _keep_body(self, block_hash: bytes, data: bytes) -> None:
        height = self.headers.find(block_hash)
        if height is not None and height >= self.base and not self.ledger_branch:
            self.pending[block_hash] = data
            while len(self.pending) > limits.pending_blocks_max:
                self.pending.popitem(last=False)
            return
        entry = self.side.get(block_hash)
        seq = entry.seq if entry is not None else None
        self.store.put(block_hash, data, seq)
        if entry is not None:
            entry.has_body = True

    def _keep_orphan(self, parent: bytes, data: bytes) -> None:
        self.orphans[parent + hashing.sha256d(data[:HEADER_BYTES])] = data
        while len(self.orphans) > limits.orphans_max:
            self.orphans.popitem(last=False)

    def _adopt_orphans(self, parent: bytes) -> None:
        children = [key for key in self.orphans if key[:32] == parent]
        for key in children:
            data = self.orphans.pop(key)
            self.lock.release()
            try:
                self.accept_block(data)
            finally:
                self.lock.acquire()

    # ------------------------------------------------------------------ moving the ledger

    def _advance(self) -> None:
        """Moves the ledger onto the best chain it has the blocks of (module docstring)."""
        while True:
            if self.ledger_branch:
                if not self._reorg():
                    return
                continue
            connected = self._connect_along()
            if connected is None:  # a block failed: the header chain fell back; go on
                continue
            return

    def _connect_along(self) -> bool | None:
        """Connects the header chain's next blocks while their bodies are here. None when one
        failed (the header chain then changed)."""
        any_connected = False
        from_store: list[bytes] = []  # stored bodies now on the ledger, removed once durable
        try:
            while self.base < self.headers.length:
                height = self.base
                block_hash = self.headers.hash(height)
                data = self.pending.pop(block_hash, None)
                stored = data is None
                if data is None:
                    data = self.store.get(block_hash)
                if data is None:
                    break
                expected = self.bits_rule(height, self.headers.bits(height - 1),
                                          self.headers.time)
                result = self.ledger.connect_block(data, expected_bits=expected,
                                                   now_s=int(self.clock()), wait=False)
                if result is BlockResult.time_too_far_ahead:
                    self.pending[block_hash] = data
                    break
                if result is not BlockResult.ok:
                    self._mark_invalid(block_hash, height, result)
                    return None
                self.base += 1
                any_connected = True
                if stored:
                    from_store.append(block_hash)
                synced = (height + 1) % limits.connect_sync_blocks == 0
                if synced:
                    self.ledger.sync()
                    self.store.remove(from_store)
                    from_store = []
                self._notify("connect", height, data, self._in_reorg)
                if synced:
                    self._notify("durable", height, b"", self._in_reorg)
        finally:
            if any_connected:
                self.ledger.sync()
                # Only now: a crash before the sync loses these blocks from the ledger, and
                # the store is then where the open finds them again (a reorg's new branch).
                self.store.remove(from_store)
                self._notify("durable", self.ledger.height - 1, b"", self._in_reorg)
        return any_connected

    def _reorg(self) -> bool:
        """When the header chain's bodies from the fork on beat the ledger's chain: switch.
        Returns whether the ledger moved."""
        height = self.base
        while height < self.headers.length and (self.headers.hash(height) in self.pending
                                                or self.headers.hash(height) in self.store):
            height += 1
        if height == self.base or self.headers.work(height - 1) <= self._ledger_tip()[2]:
            return False
        depth = len(self.ledger_branch)
        if depth > limits.reorg_depth_max:
            log.error("a reorg of %d blocks is deeper than this node follows (%d): resync "
                      "the node from its peers", depth, limits.reorg_depth_max)
            return False
        # Both branches on disk before the ledger moves: a crash in between finds them.
        for h in range(self.base, height):
            block_hash = self.headers.hash(h)
            if block_hash in self.pending:
                self.store.put(block_hash, self.pending.pop(block_hash), self._next_seq())
        for block_hash in self.ledger_branch:
            entry = self.side[block_hash]
            self.store.put(block_hash, self.ledger.block(entry.height), entry.seq)
        log.info("reorg: %d blocks off, %d on, from height %d", depth, height - self.base,
                 self.base)
        taken = self.ledger.disconnect_blocks(depth)
        for block_hash, data in zip(reversed(self.ledger_branch), taken):
            entry = self.side[block_hash]
            entry.in_ledger = False
            entry.has_body = True
            self._notify("disconnect", entry.height, data, True)
        self.ledger_branch = []
        self.reorg_count += 1
        self.reorg_depth_last = depth
        self.reorg_depth_max = max(self.reorg_depth_max, depth)
        self._in_reorg = True
        try:
            self._connect_along()
        finally:
            self._in_reorg = False
        return True

    def _mark_invalid(self, block_hash: bytes, height: int, result: BlockResult) -> None:
        """A block of the header chain failed: it and the headers after it go; the best
        remaining branch with bodies (or the ledger's own) becomes the header chain."""
        log.warning("block %s at height %d is invalid: %s", block_hash[::-1].hex(), height,
                    result.name)
        self.invalid.add(block_hash)
        self._invalid_codes[block_hash] = result
        for h in range(height, self.headers.length):
            self.invalid.add(self.headers.hash(h))
            self.pending.pop(self.headers.hash(h), None)
        self.store.remove([self.headers.hash(h) for h in range(height, self.headers.length)
                           if self.headers.hash(h) in self.store])
        self.headers.truncate(height)
        for key in [k for k, e in self.side.items() if e.prev in self.invalid]:
            self.invalid.add(key)
            del self.side[key]
        best = max(((h, e) for h, e in self.side.items() if e.has_body or e.in_ledger),
                   key=lambda item: (item[1].work, -item[1].seq), default=None)
        if best is not None and best[1].work > self.headers.tip_work:
            self._switch_to(best[0])
        elif self.ledger_branch:
            self._switch_to(self.ledger_branch[-1])

    def _notify(self, kind: str, height: int, data: bytes, reorg: bool) -> None:
        event = ChainEvent(kind, height, data, reorg)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's failure must not stop the chain
                log.exception("chain listener failed on %s of block %d", kind, height)

    # ------------------------------------------------------------------ mining

    def next_bits(self) -> int:
        with self.lock:
            height = self.headers.tip_height + 1
            return self.bits_rule(height, self.headers.bits(height - 1), self.headers.time)

    def begin_mined(self, records, signatures=b"", batches=(), *, seal=None, now_s=None,
                    payloads=()):
        """Begins a block of these records on the tip (``Ledger.begin_batch`` with the next
        bits and ``seal``: writes the seal, False when stopped), adds it to the best chain and
        tells the listeners, and returns the PendingBatch (``wait()`` answers once it is
        durable). Raises NotAtTip while the best header chain is ahead of the ledger (the node
        is syncing: mining there makes blocks nobody builds on), and SealStopped when the seal
        stopped for a better block (the records were taken back)."""
        with self.lock:
            if self.ledger_branch or self.base != self.headers.length:
                raise NotAtTip(f"the node is {self.headers.length - self.base} blocks behind "
                               "the best chain it knows: it mines once it has caught up")
            self.mining_stop.clear()
            pending = self.ledger.begin_batch(records, signatures, batches, now_s,
                                              bits=self.next_bits(), seal=seal,
                                              payloads=payloads)
            height = pending.height
            if height is not None and height == self.base:
                data = self.ledger.block(height, durable=False)
                self.headers.extend(np.frombuffer(data[:HEADER_BYTES], dtype=np.uint8)
                                    .reshape(1, HEADER_BYTES))
                self.base += 1
                self._notify("connect", height, data, False)
            return pending


def headers_after(headers: HeaderChain, length: int, locator: list[bytes], stop: bytes,
                  count: int) -> bytes:
    """Bitcoin's getheaders over the first ``length`` headers of ``headers``: those after the
    newest locator hash among them, up to ``count`` or the ``stop`` hash."""
    start = 0
    for block_hash in locator:
        height = headers.find(block_hash)
        if height is not None and height < length:
            start = height + 1
            break
    end = min(length, start + count)
    if stop != bytes(32):
        at = headers.find(stop)
        if at is not None and start <= at < end:
            end = at + 1
    return headers.headers_bytes(start, end)


class NotAtTip(Exception):
    """The ledger is not on the best header chain's tip (the node is syncing)."""
