"""A node's consensus side on a consortium chain: runs Tendermint over the peer network.

One ``Validator`` per node. With a key it votes (a validator); without one it follows, taking
final blocks with their certificates through the chain (tsunagi.consensus.consortium). Its
parts, in the order a height goes through them:

- a Tendermint state machine per height (tsunagi.consensus.tendermint), fed the proposals and
  votes that arrive, with their signatures checked first (BIP340, over
  tsunagi.consensus.certificate's digests); messages of later heights wait in a bounded buffer;
- the proposer's value is a whole block: the node's queue of client groups goes in at once,
  checked and applied by the same native code as a single node's (``Ledger.stage_batch``),
  and the block is sent with the proposal; the other validators check and apply it the same
  way (``Ledger.stage_block``) before they prevote for it;
- every proposal and vote this node signs goes to its write-ahead log (tsunagi.consensus.wal)
  and is on disk before it is sent, so a restarted validator never signs a different one;
- on a decision the precommits become the block's commit certificate and the block is stored
  with it (``ConsortiumChain.commit_decided``); only then are its clients answered: an answer
  is final. The next height starts after ``block_wait_ms`` (Tendermint's timeout_commit);
- conflicting votes seen from one validator become evidence in the next block this node
  proposes (docs/FORMAT.md, "Consortium extension").

The ledger work (staging, commits) runs on the peer manager's chain thread, one at a time,
with the blocks peers send; the state machine and the messages run on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tsunagi import hashing
from tsunagi.consensus import certificate as cert
from tsunagi.consensus import validators as vset
from tsunagi.consensus.tendermint import (
    Broadcast,
    Decide,
    Proposal,
    Schedule,
    Tendermint,
    Timeouts,
    Vote,
    VoteKind,
    proposer_of,
)
from tsunagi.consensus.wal import SignedMessage, VoteLog
from tsunagi.core import entries
from tsunagi.core.answer import BatchAnswer
from tsunagi.core.block import HEADER_BYTES, BlockResult, decode_block
from tsunagi.core.codes import Result
from tsunagi.core.keys import verify
from tsunagi.core.records import RECORD_BYTES, Flags, as_records
from tsunagi.ledger.sigcache import SignatureCache
from tsunagi.node import limits
from tsunagi.node import protocol as p

__all__ = ["Validator"]

log = logging.getLogger("tsunagi.validator")



class Validator:
    """Runs one node's part of a consortium chain's consensus (see the module docstring).

    ``byzantine`` is a test mode: "equivocate" signs two different proposals and two
    different votes for every slot (one to each half of the peers, then both to all), as a
    faulty validator would; the others must keep safety and liveness and record evidence.
    """

    def __init__(self, server, chain, key=None, *, wal_directory=None,
                 byzantine: str | None = None) -> None:
        self.server = server
        self.chain = chain
        self.ledger = chain.ledger
        self.config = chain.config
        self.key = key
        self.byzantine = byzantine
        self.timeouts = Timeouts(self.config.timeout_propose_ms, self.config.timeout_prevote_ms,
                                 self.config.timeout_precommit_ms, self.config.timeout_delta_ms)
        self.wal = VoteLog(wal_directory) if key is not None else None
        self.network = None
        self.height = 0
        self.machine: Tendermint | None = None
        self.me: int | None = None
        self.validators = None
        self.next_hash = b""
        self.blocks: dict[bytes, bytes] = {}  # proposed blocks of this height by hash
        self.verdict: dict[bytes, bool] = {}  # their validity
        self.signatures: dict[tuple, bytes] = {}  # (kind, round, voter, value) -> signature
        self.proposals: dict[int, p.ProposalMessage] = {}  # round -> others' proposal
        self.height_started_s = time.monotonic()
        self.own: dict[bytes, tuple] = {}  # own proposed block -> (group, answer)
        self._answers: list[tuple] = []  # (height, answer it): once that height is durable
        self.future: deque = deque(maxlen=limits.future_messages_max)
        self.evidence: dict[tuple, entries.Evidence] = {}  # (key, height, round, kind) ->
        self.pending_entries: list[tuple] = []  # (entries, connection, request id)
        self.prepared: tuple[int, bytes] | None = None
        self.decided_heights = 0
        self.rounds_above_zero = 0
        self.started_s = time.monotonic()
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self.signature_cache = SignatureCache()
        self.ledger.use_signature_cache(self.signature_cache)
        self._prechecks = ThreadPoolExecutor(1, thread_name_prefix="tsunagi-precheck")

    # ------------------------------------------------------------------ life cycle

    async def start(self, network) -> None:
        self.network = network
        self.loop = asyncio.get_running_loop()
        network.on_consensus = self._on_message
        self.chain.add_listener(self._on_chain_event)
        self._spawn(self._resend_forever())
        await self._begin_height(self.chain.tip[0] + 1)

    async def stop(self) -> None:
        log.info("validator stopping: %s", self.status())
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.loop.run_in_executor(None, self._prechecks.shutdown)
        await self.loop.run_in_executor(None, self.chain.close)
        if self.wal is not None:
            self.wal.close()

    def queued(self, submission) -> None:
        """A submission entered the queue: its signatures are checked now, off the loop and
        while the current height is decided (tsunagi.ledger.sigcache), and its txids kept."""
        if not self._stopping:
            self._prechecks.submit(self._precheck, submission)

    def submit_entries(self, conn, request_id: int, data: bytes) -> None:
        """Validator updates from a client, for the next block this validator proposes:
        checked against the chain first (a bad approval is refused now, with why); the
        client is answered once a final block holds them."""
        try:
            found = entries.decode_entries(data)
        except Exception as exc:
            conn.send_error(request_id, p.ErrorCode.malformed, f"not consortium entries: {exc}")
            return
        if any(isinstance(entry, entries.Payload) for entry in found):
            conn.send_error(request_id, p.ErrorCode.malformed, "a payload comes with its call "
                            "record (submit the record), not as an entry of its own")
            return
        with self.chain.lock:
            position, code = self.chain.schedule.check_block(self.chain.base, data)
        if code is not vset.EntryResult.ok:
            conn.send_error(request_id, p.ErrorCode.malformed,
                            f"entry {position} is refused: {code.name}")
            return
        conn.inflight.add(request_id)
        self.pending_entries.append((found, conn, request_id))

    def _extension(self, height: int) -> bytes:
        """The entries of the next proposal (on the event loop): evidence seen, and the
        validator updates waiting, as long as they still hold together (a refused one is
        answered, and left out)."""
        found = []
        for slot, evidence in list(self.evidence.items()):
            if self._entries_hold(height, found + [evidence]) is vset.EntryResult.ok:
                found.append(evidence)
            else:  # on chain already, say, or about a height past this node's memory
                del self.evidence[slot]
        kept = []
        for item in self.pending_entries:
            code = self._entries_hold(height, found + item[0])
            if code is vset.EntryResult.ok:
                found += item[0]
                kept.append(item)
            else:
                item[1].send_error(item[2], p.ErrorCode.malformed,
                                   f"the entries are refused at height {height}: {code.name}")
        self.pending_entries = kept
        if kept:
            log.info("height %d: proposing with %d validator updates waiting", height,
                     sum(len(item[0]) for item in kept))
        return entries.encode_entries(found) if found else b""

    def _entries_hold(self, height: int, found: list):
        """The code the chain gives these entries in the block of ``height`` (ok: 0)."""
        with self.chain.lock:
            return self.chain.schedule.check_block(height, entries.encode_entries(found))[1]

    def _entries_final(self, height: int, block) -> None:
        """Validator updates waiting that this final block holds are answered (once it is
        durable) and leave the queue."""
        held = {entries.encode_entries([entry])
                for entry in entries.decode_entries(bytes(block.extension))}
        kept = []
        for item in self.pending_entries:
            found, conn, request_id = item
            if all(entries.encode_entries([entry]) in held for entry in found):
                self._answers.append((height, functools.partial(
                    conn.answer, request_id, p.EntriesFinal(height, block.hash))))
            else:
                kept.append(item)
        self.pending_entries = kept

    def _prechecked(self) -> None:
        """Waits (boundedly) for the signature checks queued so far."""
        try:
            self._prechecks.submit(int).result(timeout=limits.precheck_wait_s)
        except Exception:  # slow, or shutting down: the engine verifies what is left
            pass

    def _precheck(self, submission) -> None:
        try:
            submission.txids = self.ledger.precheck(submission.records, submission.signatures,
                                                    self.signature_cache, threads=1)
        except Exception:  # the block's own checks still come: this only saves work
            log.exception("a mempool signature check failed")

    def _spawn(self, coroutine) -> asyncio.Task:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def status(self) -> dict:
        return {"height": self.height, "round": self.machine.round if self.machine else 0,
                "validator_index": self.me, "decided": self.decided_heights,
                "signatures_prechecked": self.signature_cache.checked,
                "signatures_skipped": self.signature_cache.hits,
                "rounds_above_zero": self.rounds_above_zero,
                "evidence_waiting": len(self.evidence), "byzantine": self.byzantine}

    # ------------------------------------------------------------------ heights

    async def _begin_height(self, height: int) -> None:
        """Starts the state machine of ``height`` (the chain's tip is height - 1)."""
        if self._stopping:
            return
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.height = height
        self.validators = self.chain.validators_at(height)
        self.next_hash = self.chain.validators_at(height + 1).hash()
        self.me = self.validators.index_of(self.key.public_key) if self.key else None
        self.blocks, self.verdict, self.signatures, self.proposals = {}, {}, {}, {}
        self.height_started_s = time.monotonic()
        self.prepared = None
        weights = self.validators.weights
        if self.me is not None and proposer_of(weights, height, 0) == self.me:
            await self._prepare(height)
        if self.height != height:
            return  # a block of this height came from a peer meanwhile
        logged = self.wal.at(height) if self.wal else []
        own = [entry.message for entry in logged if _signer(entry.message) == self.me]
        self.machine = Tendermint(height, weights, self.me, get_value=self._get_value,
                                  valid=self._valid, timeouts=self.timeouts, restored=own)
        self._perform(self.machine.start())
        for entry in logged:  # others' votes this node had received before it restarted
            message = entry.message
            if isinstance(message, Vote) and message.voter != self.me:
                self._on_vote(None, p.VoteMessage(int(message.kind), message.height,
                                                  message.round, message.voter,
                                                  message.value, entry.signature))
        waiting, self.future = list(self.future), deque(maxlen=limits.future_messages_max)
        for link, message in waiting:  # with the peer each came from: checked as any other
            if message.height >= height:
                self._on_message(link, message)

    async def _prepare(self, height: int) -> None:
        """The proposer's block for round 0, built off the event loop: it waits up to half
        the propose timeout for records when the queue is empty (no empty block at once),
        then takes every group queued."""
        server = self.server
        deadline = time.monotonic() + self.timeouts.propose_ms / 2000
        while not server._queue and time.monotonic() < deadline and not self._stopping:
            server._queue_signal.clear()
            try:
                await asyncio.wait_for(server._queue_signal.wait(),
                                       max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        if self.height != height or self._stopping:
            return
        value = await self.network._chain(self._build, height, True,
                                          self._extension(height))
        if value is not None and self.height == height:
            self.prepared = (height, value)

    def _get_value(self, height: int, round_: int) -> bytes:
        """The state machine asks the proposer for a value (Algorithm 1, line 18)."""
        if self.prepared is not None and self.prepared[0] == height:
            return self.prepared[1]
        value = self._build(height, wait=False)  # a later round: built here, on the loop
        return value if value is not None else bytes(32)

    def _build(self, height: int, wait: bool = True, extension: bytes | None = None
               ) -> bytes | None:
        """Stages a block of the queued groups (and evidence waiting); returns its hash.
        ``wait``: for the mempool's signature checks first (not on the event loop)."""
        if wait:
            self._prechecked()
        with self.chain.lock:
            if self.chain.base != height:
                return None
            # A block takes the whole queue, up to the chain's block limit.
            group = self.server._take_group(self.config.block_records_max) \
                if self.server._queue else []
            records = b"".join(bytes(s.records) for s in group)
            signatures = b"".join(bytes(s.signatures) for s in group)
            # The mempool's check hashed them already, when it is done with every one.
            txids = np.concatenate([s.txids for s in group]) \
                if group and all(s.txids is not None for s in group) else None
            batches = self.server.group_batches(group) if group else ()
            payloads = self.server.group_payloads(group) if group else []
            self.ledger.unstage()
            extension = self._extension(height) if extension is None else extension
            try:
                staged = self.ledger.stage_batch(records, signatures, batches,
                                                 extension=extension, txids=txids,
                                                 payloads=payloads)
            except Exception as exc:
                log.error("height %d: the proposal could not be built: %s", height, exc)
                if group:
                    self.server._refuse(group, exc)
                return None
        data = bytes(staged.data)
        self.blocks[staged.block_hash] = data
        self.verdict[staged.block_hash] = True
        self.own[staged.block_hash] = (group, staged.answer)
        return staged.block_hash

    def _valid(self, value: bytes) -> bool:
        return self.verdict.get(value, False)

    # ------------------------------------------------------------------ actions

    def _perform(self, actions) -> None:
        for action in actions:
            if isinstance(action, Broadcast):
                self._broadcast(action.message)
            elif isinstance(action, Schedule):
                self._timers.append(self.loop.call_later(
                    action.delay_ms / 1000, self._timeout, action.step, action.height,
                    action.round))
            elif isinstance(action, Decide):
                self._spawn(self._decide(action))

    def _timeout(self, step, height: int, round_: int) -> None:
        if self.machine is not None and height == self.height and not self._stopping:
            self._perform(self.machine.on_timeout(step, height, round_))

    def _sign(self, message) -> bytes:
        if isinstance(message, Proposal):
            digest = cert.proposal_message(self.chain.chain_id, message.height, message.round,
                                           message.value, message.valid_round)
        else:
            digest = cert.vote_message(self.chain.chain_id, int(message.kind), message.height,
                                       message.round, message.value, self.next_hash)
        return self.key.sign(digest)

    def _broadcast(self, message) -> None:
        """Signs (or takes the signature the WAL kept), logs durably, then sends."""
        entry = self.wal.find(message)
        if entry is not None and entry.message != message:
            log.critical("refused to sign %s: %s is signed already for that slot", message,
                         entry.message)
            return
        if entry is None:
            entry = SignedMessage(message, self._sign(message))
            self.wal.append(entry)  # on disk before it is sent
        wire = self._wire(entry)
        if wire is None:
            return
        if self.byzantine == "equivocate":
            self._equivocate(message, wire)
        else:
            self.network.broadcast(wire)
        self.loop.call_soon(self._on_message, None, wire)

    def _wire(self, entry: SignedMessage):
        message, signature = entry
        if isinstance(message, Proposal):
            block = self.blocks.get(message.value)
            if block is None:
                log.warning("height %d round %d: the proposed block was lost in a restart; "
                            "the round will time out", message.height, message.round)
                return None
            return p.ProposalMessage(message.height, message.round, message.valid_round,
                                     message.proposer, signature, block)
        return p.VoteMessage(int(message.kind), message.height, message.round, message.voter,
                             message.value, signature)

    def _equivocate(self, message, wire) -> None:
        """Test mode: a second, different message for the same slot, to every peer."""
        if isinstance(message, Vote):
            other = Vote(message.kind, message.height, message.round,
                         None if message.value is not None else hashing.sha256(b"x" + bytes(8)),
                         message.voter)
            second = p.VoteMessage(int(other.kind), other.height, other.round, other.voter,
                                   other.value, self._sign(other))
        else:
            value = self._build_other(message.height)
            if value is None:
                self.network.broadcast(wire)
                return
            other = Proposal(message.height, message.round, value, message.valid_round,
                             message.proposer)
            second = p.ProposalMessage(other.height, other.round, other.valid_round,
                                       other.proposer, self._sign(other), self.blocks[value])
        links = sorted(self.network.ready_links(), key=lambda link: link.name())
        half = len(links) // 2
        for link in links[:half]:
            self.network.send(link, wire)
            self.network.send(link, second)
        for link in links[half:]:
            self.network.send(link, second)
            self.network.send(link, wire)

    def _build_other(self, height: int) -> bytes | None:
        """An empty block for the same height (the equivocating proposer's second value)."""
        with self.chain.lock:
            kept = self.ledger.unstage()
            try:
                staged = self.ledger.stage_batch(b"", now_s=int(time.time()) + 1)
            except Exception:
                return None
            self.ledger.unstage()
            if kept is not None:
                self.ledger.stage_block(bytes(kept.data))
        self.blocks[staged.block_hash] = bytes(staged.data)
        self.verdict[staged.block_hash] = True
        return staged.block_hash

    # ------------------------------------------------------------------ messages

    def _on_message(self, link, message) -> None:
        """A proposal or vote from a peer (``link``) or from this node (None)."""
        if self._stopping or self.machine is None:
            if message.height >= self.height:
                self.future.append((link, message))
            return
        if message.height != self.height:
            if message.height > self.height:
                self.future.append((link, message))
            return
        if isinstance(message, p.ProposalMessage):
            self._spawn(self._on_proposal(link, message))
        else:
            self._on_vote(link, message)

    async def _on_proposal(self, link, m: p.ProposalMessage) -> None:
        height, validators = self.height, self.validators
        if not 0 <= m.proposer < len(validators.validators) \
                or proposer_of(validators.weights, height, m.round) != m.proposer:
            self._punish(link, 100, f"a proposal from {m.proposer}, not the proposer of "
                         f"height {height} round {m.round}")
            return
        block = bytes(m.block)
        value = hashing.header_hash(block[:HEADER_BYTES])
        if link is not None:
            digest = cert.proposal_message(self.chain.chain_id, height, m.round, value,
                                           m.valid_round)
            if not verify(validators.validators[m.proposer].key, digest, m.signature):
                self._punish(link, 100, "a proposal whose signature does not verify")
                return
        if value not in self.blocks and len(self.blocks) < limits.blocks_per_height_max:
            self.blocks[value] = block
        if link is not None:
            self.proposals.setdefault(m.round, m)  # for gossip
        if value not in self.verdict and value in self.blocks:
            self.verdict[value] = await self.network._chain(self._check_proposal, height, block)
        if self.height != height or self.machine is None:
            return
        self._perform(self.machine.on_proposal(
            Proposal(height, m.round, value, m.valid_round, m.proposer)))

    def _check_proposal(self, height: int, block: bytes) -> bool:
        """Whether a proposed block is valid on this node's chain: stages it (every
        signature, every code, as connect_block checks) and checks its extension. The
        mempool's signature checks under way finish first: what they verify is not verified
        twice."""
        self._prechecked()
        with self.chain.lock:
            if self.chain.base != height:
                return False
            try:
                decoded = decode_block(block)
            except Exception:
                return False
            if decoded.extension_length:
                _, code = self.chain.schedule.check_block(height, bytes(decoded.extension))
                if code is not vset.EntryResult.ok:
                    log.warning("height %d: a proposal's extension is refused: %s", height,
                                code.name)
                    return False
            result = self.ledger.stage_block(block)
            if result is not BlockResult.ok:
                log.warning("height %d: a proposed block is refused: %s", height, result.name)
            return result is BlockResult.ok

    def _on_vote(self, link, m: p.VoteMessage) -> None:
        validators = self.validators
        if not 0 <= m.voter < len(validators.validators):
            self._punish(link, 100, f"a vote from validator {m.voter}, not in the set")
            return
        key = (m.kind, m.round, m.voter, m.value)
        if key in self.signatures:
            return  # a duplicate
        if link is not None:
            digest = cert.vote_message(self.chain.chain_id, m.kind, m.height, m.round, m.value,
                                       self.next_hash)
            if not verify(validators.validators[m.voter].key, digest, m.signature):
                self._punish(link, 100, "a vote whose signature does not verify")
                return
        for (kind, round_, voter, value), signature in list(self.signatures.items()):
            if (kind, round_, voter) == (m.kind, m.round, m.voter) and value != m.value:
                self._keep_evidence(m, value, signature)
                break
        self.signatures[key] = m.signature
        vote = Vote(VoteKind(m.kind), m.height, m.round, m.value, m.voter)
        if link is not None and self.wal is not None:
            self.wal.append(SignedMessage(vote, m.signature), durable=False)
        self._perform(self.machine.on_vote(
            Vote(VoteKind(m.kind), m.height, m.round, m.value, m.voter)))

    def _keep_evidence(self, m: p.VoteMessage, other_value, other_signature) -> None:
        key = self.validators.validators[m.voter].key
        slot = (key, m.height, m.round, m.kind)
        if slot in self.evidence:
            return
        self.evidence[slot] = entries.Evidence(
            key, entries.SignedVote(m.kind, m.height, m.round, other_value, self.next_hash,
                                    other_signature),
            entries.SignedVote(m.kind, m.height, m.round, m.value, self.next_hash,
                               m.signature))
        log.warning("validator %d signed two votes for height %d round %d: evidence kept",
                    m.voter, m.height, m.round)

    def _punish(self, link, points: int, reason: str) -> None:
        if link is not None:
            self.network.punish(link, points, reason)
        else:
            log.error("own message refused: %s", reason)

    # ------------------------------------------------------------------ decisions

    async def _decide(self, decision: Decide) -> None:
        """Stores the decided block with its certificate (the precommits of the decision)."""
        signers = sorted(vote.voter for vote in decision.precommits)
        signatures = [self.signatures[(int(VoteKind.precommit), decision.round, voter,
                                       decision.value)] for voter in signers]
        seal = cert.build_certificate(decision.round, zip(signers, signatures),
                                      self.validators,
                                      self.chain.validators_at(decision.height + 1)).encode()
        block = self.blocks.get(decision.value)
        if block is None:
            log.warning("height %d decided on a block this node never received: it will come "
                        "from a peer", decision.height)
            return
        await self.network._chain(self._commit, decision.height, decision.value, block, seal)

    def _commit(self, height: int, value: bytes, block: bytes, seal: bytes) -> None:
        with self.chain.lock:
            if self.chain.base != height:
                return  # the block came from a peer first
            staged = self.ledger.staged
            if staged is None or staged.block_hash != value:
                result = self.ledger.stage_block(block)
                if result is not BlockResult.ok:
                    log.critical("height %d: the decided block does not apply here (%s): "
                                 "this node stops deciding", height, result.name)
                    return
            self.chain.commit_decided(seal, wait=False)

    def _on_chain_event(self, event) -> None:
        """On the chain thread: a final block (decided here or taken from a peer), or the
        blocks up to a height durable."""
        if self._stopping:
            return
        if event.kind == "durable":
            self.loop.call_soon_threadsafe(self._on_durable, event.height)
        elif event.kind == "connect":
            block_hash = hashing.header_hash(event.block[:HEADER_BYTES])
            self.loop.call_soon_threadsafe(self._final, event.height, block_hash,
                                           event.block)

    def _final(self, height: int, block_hash: bytes, data: bytes) -> None:
        """A block is final: the queue gives up what it holds, and the next height begins."""
        if height < self.height:
            return
        if self.machine is not None and self.machine.round > 0:
            self.rounds_above_zero += 1
        self.decided_heights += 1
        own, self.own = self.own, {}
        for value, (group, answer) in own.items():
            if value == block_hash:
                answer.height, answer.block_hash = height, block_hash
                self._answers.append((height, functools.partial(self.server._answer_final,
                                                                group, answer)))
            elif group:
                self.server._requeue(group)  # its records may be in this block: see below
        block = decode_block(data)
        self._take_from_queue(height, block)
        if block.extension_length and self.pending_entries:
            self._entries_final(height, block)
        if block.extension_length and self.evidence:
            for entry in entries.decode_entries(bytes(block.extension)):
                if isinstance(entry, entries.Evidence):
                    self.evidence.pop((entry.key, entry.first.height, entry.first.round,
                                       entry.first.kind), None)
        if self.wal is not None:
            self.wal.forget_below(height + 1)
        self.machine = None
        self._spawn(self._next_height(height + 1))

    def _take_from_queue(self, height: int, block) -> None:
        """Submissions another validator's block holds leave the queue; this node's own
        clients' are answered from the block (once it is durable). A record of theirs the
        proposer left out (it did not authenticate there, say) is tried again here, in a
        submission of its own whose answer completes the client's."""
        server = self.server
        if not server._queue or not len(block):
            return
        block_txids = block.txids()
        keys = block_txids[:, :8].copy().view("<u8").ravel()  # sorted prefixes find a txid
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        positions = None  # txid -> position, built only for a submission split by the block
        kept = deque()
        for submission in server._queue:
            txids = _txids_of(submission)
            first = _find(txids[0], sorted_keys, order, block_txids)
            if first is None:
                kept.append(submission)
                continue
            server.queued_records -= submission.count
            if server.relayed(submission.connection):
                continue  # relayed: the validator its client is at answers it
            end = first + len(txids)
            if np.array_equal(block_txids[first:end], txids):  # whole, in order: the rule
                codes, missing = block.codes[first:end].copy(), []
            else:
                if positions is None:
                    positions = {txid.tobytes(): n for n, txid in enumerate(block_txids)}
                found = [positions.get(txid.tobytes()) for txid in txids]
                codes = np.array([block.codes[i] if i is not None else 0 for i in found],
                                 np.uint8)
                missing = [n for n, i in enumerate(found) if i is None]
            answer = BatchAnswer(codes=codes, txids=txids,
                                 opened=np.zeros(len(codes), np.uint64))
            answer.height, answer.block_hash = height, block.hash
            if missing:
                log.info("height %d holds %d of %d records of a submission; the rest are "
                         "tried here again", height, len(found) - len(missing), len(found))
                rest, caller = _remainder(server, submission, missing, codes, answer)
                if rest is not None:
                    kept.append(rest)
                    server.queued_records += rest.count
                else:
                    self._answers.append((height, caller.finish))
                continue
            self._answers.append((height, functools.partial(server._answer_final,
                                                            [submission], answer)))
        server._queue = kept
        server._release_held()

    def _on_durable(self, height: int) -> None:
        """Answers the clients whose records are in blocks now on this node's disk."""
        waiting = []
        for item in self._answers:
            if item[0] > height:
                waiting.append(item)
            else:
                item[1]()
        self._answers = waiting

    async def _next_height(self, height: int) -> None:
        await asyncio.sleep(self.config.block_wait_ms / 1000)  # Tendermint's timeout_commit
        if self.height < height:
            await self._begin_height(height)

    async def _resend_forever(self) -> None:
        """Gossip: while a height goes on, its messages go out again every limits.resend_s: this
        node's and those it received of this round, the one before and its valid round (the
        paper assumes messages are relayed; a peer that lost them, or restarted, needs them,
        and the only copy of a vote may be another validator's)."""
        while not self._stopping:
            await asyncio.sleep(limits.resend_s)
            machine = self.machine
            if machine is None or time.monotonic() - self.height_started_s < limits.resend_s:
                continue
            rounds = {machine.round, machine.round - 1, machine.valid_round}
            if self.wal is not None:
                for entry in self.wal.at(self.height):
                    if _signer(entry.message) != self.me:
                        continue  # others' votes go out below, with those not logged
                    wire = self._wire(entry)
                    if wire is not None:
                        self.network.broadcast(wire)
            for round_ in rounds:
                proposal = self.proposals.get(round_)
                if proposal is not None:
                    self.network.broadcast(proposal)
            for (kind, round_, voter, value), signature in list(self.signatures.items()):
                if round_ in rounds and voter != self.me:
                    self.network.broadcast(p.VoteMessage(kind, self.height, round_, voter,
                                                         value, signature))


def _signer(message) -> int:
    return message.proposer if isinstance(message, Proposal) else message.voter


def _find(txid: np.ndarray, sorted_keys: np.ndarray, order: np.ndarray,
          txids: np.ndarray) -> int | None:
    """The position of ``txid`` among a block's ``txids`` (found by its 8-byte prefix in
    ``sorted_keys``, then compared whole), or None."""
    key = txid[:8].copy().view("<u8")[0]
    at = int(np.searchsorted(sorted_keys, key))
    while at < len(sorted_keys) and sorted_keys[at] == key:
        position = int(order[at])
        if np.array_equal(txids[position], txid):
            return position
        at += 1
    return None


def _txids_of(submission) -> np.ndarray:
    if submission.txids is None:
        submission.txids = hashing.sha256d_records(submission.records, RECORD_BYTES)
    return submission.txids


def _remainder(server, submission, missing: list[int], codes: np.ndarray, answer):
    """The records of ``submission`` a final block left out, as a submission of their own
    (this node proposes it: the others never saw it) whose answer fills in the codes and then
    answers the client. A batch-authorized record left out takes its batch with it (a batch
    is stored whole or not at all): batch_rejected."""
    rows = np.frombuffer(submission.records, np.uint8).reshape(-1, RECORD_BYTES)
    signed = (as_records(submission.records)["flags"] & Flags.batch_authorized) == 0
    missing = np.array(missing, np.int64)
    retry = missing[signed[missing]]
    codes[missing[~signed[missing]]] = Result.batch_rejected
    signature_rows = np.cumsum(signed) - 1  # the row of each signed record's signature
    signatures = np.frombuffer(submission.signatures, np.uint8).reshape(-1, 64)
    caller = _Completion(submission, retry, codes, answer)
    if not retry.size:
        return None, caller
    return server.internal_submission(
        caller, memoryview(rows[retry].tobytes()),
        memoryview(signatures[signature_rows[retry]].tobytes()), len(retry),
        submission.arrived_s), caller


class _Completion:
    """Stands in for the client of a submission part of which a final block left out: the
    answer to the rest fills in its codes, then the client has its whole answer."""

    closed = False

    def __init__(self, parent, positions: np.ndarray, codes: np.ndarray, answer) -> None:
        self.parent, self.positions, self.codes, self.answer_of = parent, positions, codes, \
            answer
        self.inflight: set[int] = set()
        self.next_id = 0

    def next(self) -> int:
        self.next_id += 1
        self.inflight.add(self.next_id)
        return self.next_id

    def answer(self, request_id: int, message) -> None:
        self.inflight.discard(request_id)
        parent = self.parent
        if isinstance(message, p.SubmitAnswer):
            self.codes[self.positions] = message.codes_array()
            if message.height is not None:
                self.answer_of.height, self.answer_of.block_hash = message.height, \
                    message.block_hash
            message = p.SubmitAnswer(self.answer_of.height, self.answer_of.block_hash,
                                     self.codes.tobytes())
        parent.connection.answer(parent.request_id, message)

    def send_error(self, request_id: int, code, message: str) -> None:
        self.answer(request_id, p.Error(code, message))

    def finish(self) -> None:
        """Answers the client when no record was left to try again."""
        self.parent.connection.answer(self.parent.request_id, p.SubmitAnswer(
            self.answer_of.height, self.answer_of.block_hash, self.codes.tobytes()))
