"""Tendermint's consensus algorithm as a pure state machine: one height, no I/O, no clock.

The algorithm is Algorithm 1 of Buchman, Kwon and Milosevic, "The latest gossip on BFT
consensus" (2018, arXiv 1807.04938), implemented as written; each upon-rule cites its lines.
A :class:`Tendermint` decides one height. The driver gives it the messages of that height
(already authenticated: a vote's ``voter`` and a proposal's ``proposer`` are the signers) and
the timeouts it asked for, and performs the actions it returns, in order: :class:`Broadcast`
(write the message to the write-ahead log, then sign and send it, to this node too: the machine
counts its own messages only once they come back), :class:`Schedule` (call :meth:`on_timeout`
after the delay) and :class:`Decide`. Messages of other heights are ignored: the driver buffers
them, and makes a new machine for the next height once this one decides.

Validators have weights. "2f + 1" of the paper is a weight ``w`` with ``3w > 2 * total`` (a
quorum), "f + 1" is ``3w > total``. Each voter counts once per (kind, round) in the weight of
all votes; a second vote of another value from the same voter is evidence of equivocation
(:meth:`Tendermint.evidence`), counted only for its own value (see :meth:`Tendermint.on_vote`).

``restored`` are this node's own messages of this height from its write-ahead log: the machine
resumes in the highest round they show, never signs a different message for a (kind, round) it
has signed (it sends the same one again), and takes its lock back from its own precommits, so a
restarted validator keeps the safety of the one that crashed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Broadcast", "Decide", "Proposal", "Schedule", "Step", "Tendermint", "Timeouts",
           "Vote", "VoteKind", "proposer_of"]


class Step(IntEnum):
    """The step of a round (line 4), also the kind of a timeout."""

    propose = 0
    prevote = 1
    precommit = 2


class VoteKind(IntEnum):
    """The two kinds of vote; the same numbers as the step that sends them."""

    prevote = 1
    precommit = 2


@dataclass(frozen=True, slots=True)
class Proposal:
    """<PROPOSAL, height, round, value, validRound> signed by ``proposer``."""

    height: int
    round: int
    value: bytes  # the 32-byte hash of the proposed block
    valid_round: int  # -1: none (line 19 sends validRound)
    proposer: int


@dataclass(frozen=True, slots=True)
class Vote:
    """<PREVOTE | PRECOMMIT, height, round, id(value)> signed by ``voter``."""

    kind: VoteKind
    height: int
    round: int
    value: bytes | None  # None: nil
    voter: int


@dataclass(frozen=True)
class Timeouts:
    """Timeouts of each step, growing with the round (the paper's timeoutPropose(round) and
    friends must grow for liveness after the network becomes timely)."""

    propose_ms: int = 3000
    prevote_ms: int = 1000
    precommit_ms: int = 1000
    delta_ms: int = 500

    def of(self, step: Step, round: int) -> int:
        base = (self.propose_ms, self.prevote_ms, self.precommit_ms)[step]
        return base + self.delta_ms * round


@dataclass(frozen=True)
class Broadcast:
    """Write to the WAL (durably), then sign and send to every validator, this one too."""

    message: Proposal | Vote


@dataclass(frozen=True)
class Schedule:
    """Call ``on_timeout(step, height, round)`` after ``delay_ms``."""

    step: Step
    height: int
    round: int
    delay_ms: int


@dataclass(frozen=True)
class Decide:
    """The height is decided: ``value``, with the precommits (more than 2/3 of the weight) for
    it at ``round``, which make its commit certificate."""

    height: int
    round: int
    value: bytes
    precommits: tuple[Vote, ...]


def proposer_of(weights: Sequence[int], height: int, round: int) -> int:
    """The proposer of (height, round): weighted round robin, each validator proposing in
    ``weight`` of every ``sum(weights)`` consecutive rounds, so every one of them comes round
    (liveness needs an honest proposer eventually)."""
    ticket = (height + round) % sum(weights)
    for index, weight in enumerate(weights):
        if ticket < weight:
            return index
        ticket -= weight
    raise AssertionError("unreachable: ticket < sum(weights)")


_PROPOSE = Step.propose
_PREVOTE = Step.prevote
_PRECOMMIT = Step.precommit
_KIND_PREVOTE = VoteKind.prevote
_KIND_PRECOMMIT = VoteKind.precommit
_NONE_YET = object()  # a tally without a quorum for any value (None is nil)


class _Tally:
    """The votes of one kind at one round: the weight of all voters (each once), the weight by
    value, and the value (or nil) that has a quorum, if any (at most one can while the
    Byzantine weight is below a third: two quorums share more than a third of the weight)."""

    __slots__ = ("votes", "conflicts", "weight_of", "weight", "quorum_for")

    def __init__(self) -> None:
        self.votes: dict[int, Vote] = {}  # voter -> its first vote
        self.conflicts: dict[tuple[int, bytes | None], Vote] = {}  # (voter, value) -> a later one
        self.weight_of: dict[bytes | None, int] = {}
        self.weight = 0
        self.quorum_for: object = _NONE_YET


class Tendermint:
    """Algorithm 1 at one height, for validator ``me`` (None: a follower that decides but never
    sends). ``get_value(height, round)`` is the value this node proposes when it has no valid
    value (line 18); ``valid(value)`` is the paper's valid(v), asked again on every rule (the
    driver caches; it may say False for a block it does not have yet, then call
    :meth:`revalidate` once it arrives)."""

    __slots__ = ("height", "round", "step", "locked_value", "locked_round", "valid_value",
                 "valid_round", "decision", "_weights", "_total", "_me", "_get_value",
                 "_valid", "_timeouts", "_proposers", "_first_proposal", "_proposed",
                 "_prevotes", "_precommits", "_senders", "_evidence", "_proposal_evidence",
                 "_signed", "_timer_prevote_round", "_timer_precommit_round", "_polka_round")

    def __init__(self, height: int, weights: Sequence[int], me: int | None, *,
                 get_value: Callable[[int, int], bytes], valid: Callable[[bytes], bool],
                 timeouts: Timeouts = Timeouts(),
                 restored: Iterable[Proposal | Vote] = ()) -> None:
        assert weights and all(weight >= 1 for weight in weights), weights
        assert me is None or 0 <= me < len(weights), me
        # Lines 2-9 (the height is this machine's; decision_p[h_p] is `decision`).
        self.height = height
        self.round = 0
        self.step = _PROPOSE
        self.locked_value: bytes | None = None
        self.locked_round = -1
        self.valid_value: bytes | None = None
        self.valid_round = -1
        self.decision: Decide | None = None
        self._weights = tuple(weights)
        self._total = sum(self._weights)
        self._me = me
        self._get_value = get_value
        self._valid = valid
        self._timeouts = timeouts
        self._proposers: dict[int, int] = {}  # round -> proposer_of, asked once a round
        self._first_proposal: dict[int, list[Proposal]] = {}  # round -> proposals, arrival order
        self._proposed: set[tuple[int, bytes]] = set()  # (round, value) of proposals seen
        self._prevotes: dict[int, _Tally] = {}
        self._precommits: dict[int, _Tally] = {}
        self._senders: dict[int, dict[int, int]] = {}  # round -> sender -> weight (line 55)
        self._evidence: list[tuple[Vote, Vote]] = []
        self._proposal_evidence: list[tuple[Proposal, Proposal]] = []
        # (kind, round) -> the message signed: kind 0 a proposal, else the VoteKind.
        self._signed: dict[tuple[int, int], Proposal | Vote] = {}
        # "For the first time" of lines 34, 47 and 36: the round each last fired in.
        self._timer_prevote_round = -1
        self._timer_precommit_round = -1
        self._polka_round = -1
        self._restore(restored)

    # -- the inputs -------------------------------------------------------------------------

    def start(self) -> list:
        """Line 10: StartRound(0); or, after a restart, resume the highest round of the WAL."""
        out: list = []
        if not self._signed:
            self._start_round(0, out)
            return out
        round = max(r for _, r in self._signed)
        self.round = round
        self.step = _PRECOMMIT if (_PRECOMMIT, round) in self._signed else \
            _PREVOTE if (_PREVOTE, round) in self._signed else _PROPOSE
        # Send this round's messages again: the crash may have come before they left, and
        # they count here only once they come back.
        for kind in (0, 1, 2):
            message = self._signed.get((kind, round))
            if message is not None:
                out.append(Broadcast(message))
        if self.step == _PROPOSE and (0, round) not in self._signed:
            if self._proposer(round) == self._me:
                self._start_round(round, out)  # it had not proposed yet: do it now
            else:
                out.append(Schedule(_PROPOSE, self.height, round,
                                    self._timeouts.of(_PROPOSE, round)))
        return out

    def on_proposal(self, p: Proposal) -> list:
        if p.height != self.height or p.round < 0 or self.decision is not None:
            return []
        round = p.round
        if p.proposer != self._proposer(round):
            return []  # "from proposer(h_p, round)": no one else's proposal counts
        proposals = self._first_proposal.get(round)
        if proposals is None:
            self._first_proposal[round] = [p]
        elif p in proposals:
            return []  # a duplicate
        else:
            self._proposal_evidence.append((proposals[0], p))
            proposals.append(p)
        self._proposed.add((round, p.value))
        out: list = []
        self._after(round, p.proposer, out)
        return out

    def on_vote(self, v: Vote) -> list:
        voter = v.voter
        if v.height != self.height or v.round < 0 or not 0 <= voter < len(self._weights):
            return []
        round = v.round
        tallies = self._prevotes if v.kind == _KIND_PREVOTE else self._precommits
        tally = tallies.get(round)
        if tally is None:
            tally = tallies[round] = _Tally()
        have = tally.votes.get(voter)
        weight = self._weights[voter]
        value = v.value
        if have is None:
            tally.votes[voter] = v
            tally.weight += weight
        elif have.value == value or (voter, value) in tally.conflicts:
            return []  # a duplicate
        else:
            # Equivocation: evidence, and not counted in the weight of all votes (lines 34,
            # 47, 55). It does count for its own value, as the paper counts the messages for
            # id(v): a commit certificate that carries it must decide here too, or a node
            # that saw the other vote first could never decide this height. Safety holds: two
            # values with a quorum each would need more than a third of the weight to sign
            # both.
            tally.conflicts[voter, value] = v
            self._evidence.append((have, v))
        now = tally.weight_of.get(value, 0) + weight
        tally.weight_of[value] = now
        if 3 * now > 2 * self._total:
            tally.quorum_for = value
        if self.decision is not None:
            return []  # still kept as evidence above, no longer acted on
        out: list = []
        self._after(round, voter, out)
        return out

    def on_timeout(self, step: Step, height: int, round: int) -> list:
        if height != self.height or round != self.round or self.decision is not None:
            return []
        out: list = []
        if step == _PROPOSE:
            if self.step != _PROPOSE:
                return out
            # Lines 57-60: OnTimeoutPropose.
            self._vote(_KIND_PREVOTE, None, out)
            self.step = _PREVOTE
        elif step == _PREVOTE:
            if self.step != _PREVOTE:
                return out
            # Lines 61-64: OnTimeoutPrevote.
            self._vote(_KIND_PRECOMMIT, None, out)
            self.step = _PRECOMMIT
        else:
            # Lines 65-67: OnTimeoutPrecommit.
            self._start_round(round + 1, out)
        self._rules_of_this_round(out)
        return out

    def revalidate(self) -> list:
        """Run the upon-rules again, for the driver to call when a block it did not have (and
        so ``valid`` said False) has arrived."""
        out: list = []
        if self.decision is None:
            for round in sorted(self._precommits):
                self._decide_if_committed(round, out)
                if self.decision is not None:
                    return out
            self._rules_of_this_round(out)
        return out

    # -- what the driver asks ---------------------------------------------------------------

    def evidence(self) -> list[tuple[Vote, Vote]]:
        """Conflicting votes seen: the same voter, kind, height and round, different values."""
        return list(self._evidence)

    def proposal_evidence(self) -> list[tuple[Proposal, Proposal]]:
        """Conflicting proposals seen from the proposer of one round."""
        return list(self._proposal_evidence)

    def commit_without_proposal(self) -> tuple[int, bytes] | None:
        """(round, value) when more than 2/3 of the weight precommitted a value whose proposal
        never came: the driver fetches the block and gives its proposal to on_proposal."""
        if self.decision is not None:
            return None
        for round, tally in sorted(self._precommits.items()):
            value = tally.quorum_for
            if isinstance(value, bytes) and (round, value) not in self._proposed:
                return round, value
        return None

    def polka(self, round: int) -> tuple[Vote, ...]:
        """The prevotes of more than 2/3 of the weight for one value at ``round``, if this node
        has them: what a driver relays with a proposal of valid round ``round``, so that the
        others can take it on line 28 (the "POL" votes Tendermint's gossip sends)."""
        tally = self._prevotes.get(round)
        if tally is None or not isinstance(tally.quorum_for, bytes):
            return ()
        return _votes_for(tally, tally.quorum_for)

    def messages(self, round: int) -> list[Proposal | Vote]:
        """The proposals and votes (conflicting ones too) this node has of ``round``: what a
        driver's gossip relays, since the paper assumes that a message one correct process
        receives reaches every correct process (after GST, within a bound)."""
        found: list[Proposal | Vote] = list(self._first_proposal.get(round, ()))
        for tallies in (self._prevotes, self._precommits):
            tally = tallies.get(round)
            if tally is not None:
                found += tally.votes.values()
                found += tally.conflicts.values()
        return found

    def proposal_at(self, round: int, value: bytes) -> Proposal | None:
        """The proposal of ``value`` at ``round`` from its proposer, if it came (the one a
        decided block's certificate goes with)."""
        for p in self._first_proposal.get(round, ()):
            if p.value == value:
                return p
        return None

    # -- the rules --------------------------------------------------------------------------

    def _after(self, round: int, sender: int, out: list) -> None:
        """The rules a message of ``round`` from ``sender`` may have enabled."""
        self._decide_if_committed(round, out)
        if self.decision is not None:
            return
        if round > self.round:
            # Line 55: f + 1 <*, h_p, round, *, *> with round > round_p: StartRound(round).
            senders = self._senders.get(round)
            if senders is None:
                senders = self._senders[round] = {}
            senders[sender] = self._weights[sender]
            if 3 * sum(senders.values()) > self._total:
                self._start_round(round, out)
        self._rules_of_this_round(out)

    def _decide_if_committed(self, round: int, out: list) -> None:
        # Lines 49-54: <PROPOSAL, h_p, r, v, *> from proposer(h_p, r) AND 2f + 1
        # <PRECOMMIT, h_p, r, id(v)> while decision_p[h_p] = nil: if valid(v), decide. The
        # next height (lines 52-54) is a new machine, made by the driver.
        tally = self._precommits.get(round)
        if tally is None or self.decision is not None:
            return
        value = tally.quorum_for
        if isinstance(value, bytes) and (round, value) in self._proposed and self._valid(value):
            self.decision = Decide(self.height, round, value, _votes_for(tally, value))
            out.append(self.decision)

    def _rules_of_this_round(self, out: list) -> None:
        """The rules of lines 22-48, which concern round_p, until none fires."""
        while self.decision is None:
            round, step = self.round, self.step
            prevotes = self._prevotes.get(round)
            if step == _PROPOSE and self._on_proposal_rules(round, out):
                continue
            if step == _PREVOTE and prevotes is not None:
                # Lines 34-35: 2f + 1 <PREVOTE, h_p, round_p, *> while step_p = prevote for
                # the first time: schedule OnTimeoutPrevote.
                if self._timer_prevote_round != round and 3 * prevotes.weight > 2 * self._total:
                    self._timer_prevote_round = round
                    out.append(Schedule(_PREVOTE, self.height, round,
                                        self._timeouts.of(_PREVOTE, round)))
                # Lines 44-46: 2f + 1 <PREVOTE, h_p, round_p, nil> while step_p = prevote.
                if prevotes.quorum_for is None:
                    self._vote(_KIND_PRECOMMIT, None, out)
                    self.step = _PRECOMMIT
                    continue
            if step >= _PREVOTE and prevotes is not None and self._polka_round != round:
                # Lines 36-43: <PROPOSAL, h_p, round_p, v, *> from proposer(h_p, round_p)
                # AND 2f + 1 <PREVOTE, h_p, round_p, id(v)> while valid(v) and step_p >=
                # prevote for the first time.
                value = prevotes.quorum_for
                if isinstance(value, bytes) and (round, value) in self._proposed \
                        and self._valid(value):
                    self._polka_round = round
                    if step == _PREVOTE:
                        self.locked_value = value
                        self.locked_round = round
                        self._vote(_KIND_PRECOMMIT, value, out)
                        self.step = _PRECOMMIT
                    self.valid_value = value
                    self.valid_round = round
                    continue
            precommits = self._precommits.get(round)
            if precommits is not None and self._timer_precommit_round != round \
                    and 3 * precommits.weight > 2 * self._total:
                # Lines 47-48: 2f + 1 <PRECOMMIT, h_p, round_p, *> for the first time:
                # schedule OnTimeoutPrecommit.
                self._timer_precommit_round = round
                out.append(Schedule(_PRECOMMIT, self.height, round,
                                    self._timeouts.of(_PRECOMMIT, round)))
            return

    def _on_proposal_rules(self, round: int, out: list) -> bool:
        """Lines 22-33, while step_p = propose; True when one fired."""
        for p in self._first_proposal.get(round, ()):
            vr = p.valid_round
            if vr == -1:
                # Lines 22-27: <PROPOSAL, h_p, round_p, v, -1> from proposer(h_p, round_p).
                pass
            elif 0 <= vr < round:
                # Lines 28-33: <PROPOSAL, h_p, round_p, v, vr> from proposer(h_p, round_p)
                # AND 2f + 1 <PREVOTE, h_p, vr, id(v)>, with vr >= 0 and vr < round_p.
                polka = self._prevotes.get(vr)
                if polka is None or polka.quorum_for != p.value:
                    continue
            else:
                continue  # no rule takes a valid round at or after this one
            self._vote(_KIND_PREVOTE, self.prevote_for(p), out)
            self.step = _PREVOTE
            return True
        return False

    def prevote_for(self, p: Proposal) -> bytes | None:
        """The prevote on a proposal that lines 22 and 28 take: its value, or None for nil.

        Line 23: valid(v) and (lockedRound_p = -1 or lockedValue_p = v); line 29: valid(v)
        and (lockedRound_p <= vr or lockedValue_p = v). With vr = -1 they are one test. This
        lock rule is what keeps a value decided in one round from losing in a later one."""
        value = p.value
        if self._valid(value) and (self.locked_round <= p.valid_round
                                   or self.locked_value == value):
            return value
        return None

    def _start_round(self, round: int, out: list) -> None:
        # Lines 11-21: StartRound(round).
        self.round = round
        self.step = _PROPOSE
        if self._me is None:
            return  # a follower neither proposes nor times out: it decides on line 49 alone
        if self._proposer(round) == self._me:
            value = self.valid_value
            if value is None:
                value = self._get_value(self.height, round)
            self._send(0, round, out, value, self.valid_round)
        else:
            out.append(Schedule(_PROPOSE, self.height, round,
                                self._timeouts.of(_PROPOSE, round)))

    def _vote(self, kind: VoteKind, value: bytes | None, out: list) -> None:
        self._send(kind, self.round, out, value, 0)

    def _send(self, kind: int, round: int, out: list, value: bytes | None,
              valid_round: int) -> None:
        """Broadcast a proposal (kind 0) or a vote, or what was signed for (kind, round)
        before: never two different messages for one (kind, round)."""
        if self._me is None:
            return
        message = self._signed.get((kind, round))
        if message is None:
            if kind == 0:
                assert value is not None
                message = Proposal(self.height, round, value, valid_round, self._me)
            else:
                message = Vote(VoteKind(kind), self.height, round, value, self._me)
            self._signed[kind, round] = message
        out.append(Broadcast(message))

    def _proposer(self, round: int) -> int:
        proposer = self._proposers.get(round)
        if proposer is None:
            proposer = self._proposers[round] = proposer_of(self._weights, self.height, round)
        return proposer

    def _restore(self, restored: Iterable[Proposal | Vote]) -> None:
        """Take the signed messages back, and the lock from the highest non-nil precommit (the
        only message line 36 sends as it locks, lines 38-40)."""
        me = self._me
        for message in restored:
            if message.height != self.height:
                continue
            if isinstance(message, Proposal):
                if message.proposer == me:
                    self._signed[0, message.round] = message
                continue
            if message.voter != me:
                continue
            self._signed[int(message.kind), message.round] = message
            if message.kind == _KIND_PRECOMMIT and message.value is not None \
                    and message.round > self.locked_round:
                self.locked_value = message.value
                self.locked_round = message.round
        # It saw 2f + 1 prevotes for its lock as it locked: that is a valid value too.
        self.valid_value = self.locked_value
        self.valid_round = self.locked_round


def _votes_for(tally: _Tally, value: bytes) -> tuple[Vote, ...]:
    """The votes for ``value`` in a tally, conflicting ones too, in the order of the voters."""
    votes = [v for v in tally.votes.values() if v.value == value]
    votes += [v for v in tally.conflicts.values() if v.value == value]
    return tuple(sorted(votes, key=_voter_of))


def _voter_of(vote: Vote) -> int:
    return vote.voter
