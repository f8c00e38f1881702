"""A consortium chain as one node sees it: final blocks only, each with its commit certificate.

A block of a consortium chain is final once validators holding more than two thirds of the
weight precommit it (tsunagi.consensus.tendermint); the certificate of those precommits is
the block's seal (docs/FORMAT.md, "Block version 2"). So this chain never forks and never
reorgs: a block is taken only with a certificate that holds for the validator set of its
height, checked with the native BIP340 batch verifier, and nothing taken is ever undone.

``ConsortiumChain`` offers what the peer manager (tsunagi.node.peers) asks of a chain, so
headers-first sync, block download and announcements work as on a proof-of-work chain. Headers
above the ledger's tip are only hints (a header alone proves nothing here): a block arrives
with its certificate or is refused, and a hint that turns out wrong is dropped. Validators
commit the blocks they decide through ``commit_decided``; nodes that follow (and validators
that fell behind) take them through ``accept_block``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tsunagi import hashing
from tsunagi.consensus.certificate import CertResult, ValidatorSet, check_certificate
from tsunagi.consensus.chain import (
    AcceptAnswer,
    Accepted,
    ChainEvent,
    HeadersAnswer,
    HeadersVerdict,
    headers_after,
)
from tsunagi.consensus.limits import pending_blocks_max
from tsunagi.consensus.tree import HeaderChain, header_prev
from tsunagi.consensus.validators import EntryResult, ValidatorSchedule
from tsunagi.core.block import HEADER_BYTES, BlockResult, decode_block
from tsunagi.errors import EncodingError

__all__ = ["ConsortiumChain"]

log = logging.getLogger("tsunagi.consortium")


class ConsortiumChain:
    """Final blocks of one consortium chain, driving its ledger. Thread-safe (one lock)."""

    def __init__(self, ledger, *, threads: int | None = None) -> None:
        if not ledger.config.is_consortium:
            raise ValueError("the chain config names no validators: not a consortium chain")
        self.ledger = ledger
        self.config = ledger.config
        self.threads = threads or hashing.cpu_count()
        self.lock = threading.RLock()
        self.mining_stop = threading.Event()  # for the node's miner interface; never set
        self.chain_id = None
        self.headers = HeaderChain(ledger.headers(0, 1))
        self.chain_id = self.headers.hash(0)
        self.schedule = ValidatorSchedule(ValidatorSet.from_config(self.config), self.chain_id)
        self._load()
        self.base = self.headers.length  # heights the ledger holds; above: hints
        self.pending: OrderedDict[bytes, bytes] = OrderedDict()  # bodies ahead of the tip
        self.refused = 0
        self._listeners: list[Callable[[ChainEvent], None]] = []
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="tsunagi-final-sync")

    def _load(self) -> None:
        """Headers and validator changes of the blocks the ledger holds."""
        self.headers.extend_from_ledger(self.ledger)
        for block_height in range(1, self.ledger.height):  # every block: the schedule counts
            block = decode_block(self.ledger.block(block_height, durable=False))
            self.schedule.apply_block(block_height, bytes(block.extension))

    def add_listener(self, listener: Callable[[ChainEvent], None]) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------------ reading

    @property
    def tip(self) -> tuple[int, bytes, int]:
        """(height of the newest final block, its hash, "work": its height + 1)."""
        with self.lock:
            height = self.base - 1
            return height, self.headers.hash(height), height + 1

    @property
    def best_header(self) -> tuple[int, bytes, int]:
        with self.lock:
            return self.headers.tip_height, self.headers.tip_hash, self.headers.length

    def validators_at(self, height: int):
        """The validator set that decides block ``height``."""
        with self.lock:
            return self.schedule.set_at(height)

    def locator(self) -> list[bytes]:
        with self.lock:
            return self.headers.locator()

    def headers_after(self, locator: list[bytes], stop: bytes, count: int) -> bytes:
        """Final headers after the newest locator hash this chain holds (hints are not
        passed on)."""
        with self.lock:
            return headers_after(self.headers, self.base, locator, stop, count)

    def block(self, block_hash: bytes) -> bytes | None:
        with self.lock:
            height = self.headers.find(block_hash)
            if height is not None and height < self.base:
                return self.ledger.block(height, durable=False)
            return None

    def has_block(self, block_hash: bytes) -> bool:
        with self.lock:
            height = self.headers.find(block_hash)
            return (height is not None and height < self.base) or block_hash in self.pending

    def missing(self, limit: int) -> list[bytes]:
        """Hashes of hinted blocks above the tip that this node lacks, next first."""
        with self.lock:
            end = min(self.headers.length, self.base + pending_blocks_max)
            found = []
            for height in range(self.base, end):
                block_hash = self.headers.hash(height)
                if block_hash not in self.pending:
                    found.append(block_hash)
                    if len(found) >= limit:
                        break
            return found

    def status(self) -> dict:
        with self.lock:
            height = self.base - 1
            validators = self.schedule.set_at(self.base)
            return {"height": height, "tip": self.headers.hash(height)[::-1].hex(),
                    "work": height + 1, "best_header_height": self.headers.tip_height,
                    "side_blocks": 0, "pending_blocks": len(self.pending), "orphans": 0,
                    "invalid": self.refused, "reorgs": 0, "reorg_depth_last": 0,
                    "reorg_depth_max": 0, "consensus": "consortium",
                    "validators": len(validators.validators),
                    "validator_weight": validators.total}

    # ------------------------------------------------------------------ headers (hints)

    def accept_headers(self, data) -> HeadersAnswer:
        """Headers from a peer, kept as hints of blocks to fetch. A header that would
        replace a final one is a lie (a final block is never replaced): invalid."""
        view = memoryview(data).cast("B")
        if view.nbytes % HEADER_BYTES or not view.nbytes:
            return HeadersAnswer(HeadersVerdict.malformed, 0)
        headers = np.frombuffer(view, np.uint8).reshape(-1, HEADER_BYTES)
        hashes = hashing.sha256d_records(view, HEADER_BYTES)
        with self.lock:
            parent = self.headers.find(header_prev(headers[0]))
            if parent is None:
                return HeadersAnswer(HeadersVerdict.unknown_parent, 0)
            # Skip what is known already; the first new header decides where it goes.
            skip = 0
            while skip < len(headers) and parent + 1 + skip < self.headers.length \
                    and self.headers.hash(parent + 1 + skip) == hashes[skip].tobytes():
                skip += 1
            if skip == len(headers):
                return HeadersAnswer(HeadersVerdict.ok, 0)
            at = parent + 1 + skip
            if at < self.base:
                return HeadersAnswer(HeadersVerdict.invalid, 0, skip)
            new, new_hashes = headers[skip:], hashes[skip:]
            parents = np.vstack([np.frombuffer(self.headers.hash(at - 1), np.uint8)[None, :],
                                 new_hashes[:-1]])
            bad = np.flatnonzero((new[:, 4:36] != parents).any(axis=1)
                                 | (new[:, 0:4].copy().view("<u4")[:, 0] != 2))
            if bad.size:  # a broken link, or not a consortium block
                return HeadersAnswer(HeadersVerdict.invalid, 0, skip + int(bad[0]))
            room = self.base + pending_blocks_max - at
            if room <= 0:
                return HeadersAnswer(HeadersVerdict.ok, 0)
            taken = new[:room]
            self.headers.truncate(at)  # hints that disagree give way to newer ones
            self.headers.extend(taken, new_hashes[:room])
            return HeadersAnswer(HeadersVerdict.ok, len(taken))

    # ------------------------------------------------------------------ blocks

    def accept_block(self, raw) -> AcceptAnswer:
        """A block from a peer: taken once it is the next one and its certificate holds."""
        data = bytes(raw)
        if len(data) < HEADER_BYTES:
            return AcceptAnswer(Accepted.invalid, BlockResult.undecodable)
        block_hash = hashing.header_hash(data[:HEADER_BYTES])
        with self.lock:
            height = self.headers.find(block_hash)
            if height is not None and height < self.base:
                return AcceptAnswer(Accepted.duplicate)
            if height is None:  # no hint names it: taken only as the very next block
                parent = self.headers.find(data[4:36])
                if parent is None or parent + 1 != self.base:
                    return AcceptAnswer(Accepted.orphan)
                height = parent + 1
            if height > self.base:
                self.pending[block_hash] = data
                while len(self.pending) > pending_blocks_max:
                    self.pending.popitem(last=False)
                return AcceptAnswer(Accepted.stored)
            answer = self._connect_next(data, block_hash)
            while answer.accepted is Accepted.connected and self.base < self.headers.length:
                following = self.pending.pop(self.headers.hash(self.base), None)
                if following is None:
                    break
                self._connect_next(following, self.headers.hash(self.base))
            return answer

    def _connect_next(self, data: bytes, block_hash: bytes) -> AcceptAnswer:
        height = self.base
        code = self.check_sealed(data, height)
        if code is None:
            # A block proposed here for this height (staged, waiting for votes) is moot: this
            # one is final. The validator puts the records it held back in its queue.
            self.ledger.unstage()
            result = self.ledger.connect_block(data)
            code = None if result is BlockResult.ok else result
        if code is not None:
            self._drop_hints()
            self.refused += 1
            return AcceptAnswer(Accepted.invalid, code)
        self._taken(height, data, block_hash)
        return AcceptAnswer(Accepted.connected)

    def check_sealed(self, data: bytes, height: int) -> BlockResult | None:
        """None when the block's certificate holds for the set of ``height`` and its entries
        hold on the chain, else why not (a BlockResult; the log says the certificate's or
        the entry's own code)."""
        try:
            block = decode_block(data)
        except EncodingError:
            return BlockResult.undecodable
        if block.version != 2:
            return BlockResult.bad_version
        validators = self.schedule.set_at(height)
        # Known before the block: an update takes effect two blocks after its own at least.
        following = self.schedule.set_at(height + 1)
        certificate = check_certificate(bytes(block.seal), block.hash, height, self.chain_id,
                                        validators, following, threads=self.threads)
        if certificate is not CertResult.ok:
            log.warning("block %d: certificate refused: %s", height, certificate.name)
            return BlockResult.bad_certificate
        _, entry_code = self.schedule.check_block(height, bytes(block.extension))
        if entry_code is not EntryResult.ok:
            log.warning("block %d: consortium entries refused: %s", height, entry_code.name)
            return BlockResult.entries_refused
        return None

    def commit_decided(self, seal: bytes, *, wait: bool = True) -> int:
        """A validator's decision: the ledger's staged block, stored with ``seal`` (its
        certificate, made from the precommits this node saw). Returns the height. With
        ``wait`` it is durable on return; without, a thread of this chain's makes it durable
        and then tells the listeners ("durable"): the next height need not wait for the disk
        (a final block lost to a crash before its fsync comes back from the peers)."""
        with self.lock:
            staged = self.ledger.commit_staged(seal, wait=wait)
            height = self.base
            self._taken(height, staged.data, staged.block_hash, durable=wait)
        if not wait:
            self._syncer.submit(self._sync)
        return height

    def close(self) -> None:
        """Waits for the final blocks still being made durable."""
        self._syncer.shutdown(wait=True)

    def _sync(self) -> None:
        try:
            height, _ = self.ledger.sync()
        except Exception:
            log.exception("the ledger failed to make final blocks durable")
            return
        self._notify("durable", height - 1, b"")

    def commit_with_keys(self, keys, records, signatures=b"", batches=(),
                         now_s: int | None = None, *, payloads=()):
        """One block decided at once by validators whose keys are all in this process (a
        development chain's own validator, tests, benchmark setup): staged, precommitted in
        round 0 by ``keys``, and stored with their certificate. The keys must hold more than
        two thirds of the height's weight. ``payloads``: the records' call payloads, as
        stage_batch takes them. Returns the batch's answer."""
        from tsunagi.consensus.certificate import make_certificate

        with self.lock:
            height = self.base
            validators = self.schedule.set_at(height)
            signers = [(validators.index_of(key.public_key), key) for key in keys]
            if any(index is None for index, _ in signers) \
                    or not validators.quorum(sum(validators.weights[i] for i, _ in signers)):
                raise ValueError("these keys are not validators holding more than two thirds "
                                 f"of the weight at height {height}")
            staged = self.ledger.stage_batch(records, signatures, batches, now_s,
                                             payloads=payloads)
            try:
                seal = make_certificate(self.chain_id, height, 0, staged.block_hash, signers,
                                        validators, self.schedule.set_at(height + 1)).encode()
            except BaseException:
                self.ledger.unstage()
                raise
            self.commit_decided(seal)
            return staged.answer

    def _taken(self, height: int, data, block_hash: bytes, durable: bool = True) -> None:
        if self.headers.length > height and self.headers.hash(height) != block_hash:
            self.headers.truncate(height)
        if self.headers.length == height:
            self.headers.extend(np.frombuffer(data[:HEADER_BYTES], np.uint8)
                                .reshape(1, HEADER_BYTES))
        self.base = height + 1
        self.schedule.apply_block(height, bytes(decode_block(data).extension))
        self._notify("connect", height, data)
        if durable:
            self._notify("durable", height, b"")

    def _drop_hints(self) -> None:
        self.headers.truncate(self.base)
        self.pending.clear()

    def _notify(self, kind: str, height: int, data: bytes) -> None:
        event = ChainEvent(kind, height, data, False)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a chain listener failed on %s %d", kind, height)
