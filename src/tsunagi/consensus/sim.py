"""A deterministic simulation of a network of Tendermint validators, in one process.

The models are TigerBeetle's VOPR and indy-plenum's simulation network: one
``random.Random(seed)`` draws the scenario and every event after it, and a heap of events in
virtual time (milliseconds) runs the network, so a seed replays exactly (``python -m
tsunagi.consensus.sim --seed N``). Before the "global stabilization time" (GST) messages are
delayed, lost, duplicated and reordered, partitions come and go, and honest validators crash
and restart. Each validator's timers run at its own rate (clock skew). At GST the partitions
heal, loss stops, every delay falls under ``delta_ms``, and every honest validator gossips:
now and then it sends again its messages of its height, what it has of its round and the one
before, and the polka of its valid round (the paper assumes that what one correct process
receives, all receive). A validator that hears of a height it has decided answers with that
height's proposal and precommits (catch-up).

The write-ahead log holds a validator's own signed messages, synced before they are sent,
and the messages it received, appended without a sync of their own (CometBFT's consensus WAL
does the same): a crash loses what was received since the last sync, the messages buffered for
later heights, timers and all other memory. With own messages only (``log_received=False``) a
restart can lose the only honest copy of a Byzantine vote that the others need to leave a
round, and the network stalls although no more than f validators are faulty.

Up to f validators are Byzantine (their weight below a third of the total): they equivocate
proposals (a second one of a fresh value with no valid round) or votes (each node gets the
vote it would like), run as Twins (two copies of honest code on one key, each with its own
state), withhold their messages (silent, or to chosen peers only), vote for invalid values, or
ignore their lock. Authentication is modelled: a Byzantine validator signs as itself only; what
it forwards of others' is what they signed. In three seeds of ten a nemesis sets up what locks
are for: at height 0 some validators miss round 0's polka, one decides and is cut off before
its decision spreads, and the others go on to later rounds locked on the value it decided.

After a run the checker reports violations: safety (two honest validators decided different
values at one height), validity (an invalid value, or one never proposed, was decided), the
write-ahead log (an honest validator signed two different messages for one kind, height and
round), evidence (an honest validator got both of a Byzantine's conflicting votes and did not
report them) and liveness (after GST every honest validator decides ``heights`` more heights
within ``liveness_ms``).

``planted_bug=True`` makes the honest validators ignore their lock when they prevote
(:class:`LockIgnoringTendermint`): the checker must find safety violations among the seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from tsunagi.consensus import limits
from tsunagi.consensus.tendermint import (
    Broadcast,
    Decide,
    Proposal,
    Schedule,
    Tendermint,
    Timeouts,
    Vote,
    proposer_of,
)

__all__ = ["BEHAVIOURS", "LockIgnoringTendermint", "Scenario", "SimResult", "make_scenario",
           "run", "summary"]

# What a Byzantine validator does (each one draws one unless the caller names them).
BEHAVIOURS = ("equivocate_proposals", "equivocate_votes", "twins", "silent", "selective",
              "invalid", "amnesia")

# The timeouts of the simulated validators: short beside the worst delays before GST, so that
# rounds change and locks matter, and long beside delta_ms after it.
SIM_TIMEOUTS = Timeouts(propose_ms=1000, prevote_ms=500, precommit_ms=500, delta_ms=250)

_DELIVER, _TIMEOUT, _CRASH, _RESTART, _PARTITION, _GST, _GOSSIP = range(7)
# After GST each honest node sends again, this often (virtual ms, at its clock's rate), its
# messages of its height and the polka of its valid round: the paper's gossip assumption
# (what one honest node has, every honest node gets) for what was lost before GST.
GOSSIP_MS = 2000.0


class LockIgnoringTendermint(Tendermint):
    """The planted bug: prevotes for any valid proposal, whatever it is locked on."""

    __slots__ = ()

    def prevote_for(self, p: Proposal) -> bytes | None:
        return p.value if self._valid(p.value) else None


@dataclass(frozen=True)
class Scenario:
    """Everything a run does that is not an event: drawn from the seed by make_scenario."""

    n: int
    weights: tuple[int, ...]
    byzantine: dict[int, str]  # validator -> behaviour
    gst_ms: float
    loss: float  # before GST
    precommit_loss: float  # before GST, more loss of precommits: locks without decisions
    # Before GST, at one height's round 0: f outsiders (the first the proposer of a later
    # round) miss the proposal and the decider's prevote, the decider's precommit reaches no
    # one else, and once it decides the decider is cut off for isolate_ms. The others go on
    # to later rounds, locked on the value decided, and an outsider proposes another: what a
    # lock is for. (height, decider, outsiders, isolate_ms), or None.
    nemesis: tuple[int, int, tuple[int, ...], float] | None
    delay_ms: float  # the longest delay before GST
    delta_ms: float  # the longest delay after GST
    duplicate: float
    partitions: tuple[tuple[float, float, tuple[int, ...]], ...]  # (start, end, group of each)
    crashes: tuple[tuple[int, float, float], ...]  # (validator, crash at, restart at)
    skew: tuple[float, ...]  # timer rate of each node (validators, then a Twin's second copy)
    selective_targets: dict[int, tuple[int, ...]] = field(default_factory=dict)
    heights: int = 3
    liveness_ms: float = 600_000.0
    planted_bug: bool = False
    log_received: bool = True

    def describe(self) -> str:
        byz = ", ".join(f"{v}:{b}" for v, b in sorted(self.byzantine.items())) or "none"
        nemesis = "none" if self.nemesis is None else \
            "height {} decider {} outsiders {} cut off {:.0f}ms".format(*self.nemesis)
        return (f"n={self.n} weights={list(self.weights)} byzantine={byz} "
                f"gst={self.gst_ms:.0f}ms loss={self.loss:.2f}+{self.precommit_loss:.2f} "
                f"delay<={self.delay_ms:.0f}ms dup={self.duplicate:.2f} "
                f"partitions={len(self.partitions)} crashes={len(self.crashes)} "
                f"nemesis=({nemesis}) heights={self.heights}"
                + (" PLANTED-BUG" if self.planted_bug else "")
                + ("" if self.log_received else " own-messages-only-WAL"))


@dataclass(frozen=True)
class SimResult:
    seed: int
    violations: list[str]
    decided: dict[int, tuple[bytes, ...]]  # honest validator -> decided values, by height
    stats: dict[str, object]
    trace_digest: str  # BLAKE2b of the ordered messages signed and values decided


def make_scenario(rng: random.Random, n: int, byzantine: int | Sequence[str] | None,
                  heights: int, planted_bug: bool, weighted: bool | None) -> Scenario:
    f = (n - 1) // 3
    if weighted is None:
        weighted = rng.random() < 0.25
    weights = tuple(rng.randint(1, 3) for _ in range(n)) if weighted else (1,) * n
    if byzantine is None:
        byzantine = f
    behaviours = [rng.choice(BEHAVIOURS) for _ in range(byzantine)] \
        if isinstance(byzantine, int) else list(byzantine)
    order = rng.sample(range(n), n)
    chosen = _byzantine_of(weights, behaviours, order)
    if len(chosen) < len(behaviours):  # the lightest first, then
        chosen = _byzantine_of(weights, behaviours, sorted(order, key=weights.__getitem__))
    assert len(chosen) == len(behaviours), "too much Byzantine weight for these validators"
    gst = rng.choice((0.0, 2000.0, 6000.0, 12000.0)) * rng.random()
    delay = rng.choice((20.0, 300.0, 1500.0, 4000.0))
    partitions, loss = [], rng.choice((0.0, 0.1, 0.3, 0.5))
    precommit_loss = rng.choice((0.0, 0.3, 0.6))
    for _ in range(rng.choice((0, 2, 6, 12))):
        start = rng.random() * gst
        partitions.append((start, start + rng.random() * 4000.0,
                           tuple(rng.randint(0, 1) for _ in range(n))))
    honest = [v for v in range(n) if v not in chosen]
    nemesis = None
    if rng.random() < 0.3:
        gst, delay = 6000.0 + 6000.0 * rng.random(), rng.choice((20.0, 300.0))
        partitions, loss, precommit_loss = [], 0.0, 0.0
        decider = rng.choice(honest)
        outsiders = [proposer_of(weights, 0, r) for r in range(1, sum(weights))]
        outsiders = [v for v in outsiders if v in honest and v != decider]
        outsiders = list(dict.fromkeys(outsiders))[:max(1, f)]
        if outsiders:
            nemesis = (0, decider, tuple(outsiders), 2000.0 + 4000.0 * rng.random())
    crashes = []
    for node in honest:
        if rng.random() < 0.2 and gst > 0:
            at = rng.random() * gst
            crashes.append((node, at, min(at + 100.0 + rng.random() * 5000.0, gst + 2000.0)))
    targets = {v: tuple(sorted(rng.sample([u for u in range(n) if u != v],
                                          rng.randint(1, max(1, n - 2)))))
               for v, b in chosen.items() if b == "selective"}
    nodes = n + sum(1 for b in chosen.values() if b == "twins")
    # Timer rates spread over 0.8 to 1.25: with a wider spread the lag between the nodes'
    # rounds grows with the round as fast as the timeouts do (both scale with the timeout),
    # and a fast node's propose timeout runs out before a slow proposer has proposed, every
    # round (4x made seeds that never decided again).
    return Scenario(
        n=n, weights=weights, byzantine=chosen, gst_ms=gst,
        loss=loss, precommit_loss=precommit_loss,
        nemesis=nemesis,
        delay_ms=delay, delta_ms=100.0,
        duplicate=rng.choice((0.0, 0.05, 0.2)), partitions=tuple(partitions),
        crashes=tuple(crashes), skew=tuple(0.8 + 0.45 * rng.random() for _ in range(nodes)),
        selective_targets=targets, heights=heights, planted_bug=planted_bug)


def _byzantine_of(weights: Sequence[int], behaviours: list[str],
                  order: list[int]) -> dict[int, str]:
    """Byzantine validators in this order while their weight stays below a third."""
    total, chosen, weight = sum(weights), {}, 0
    for node in order:
        if len(chosen) < len(behaviours) and 3 * (weight + weights[node]) < total:
            chosen[node] = behaviours[len(chosen)]
            weight += weights[node]
    return chosen


class _Node:
    """One running copy of a validator key (a Twin key has two)."""

    __slots__ = ("index", "key", "copy", "behaviour", "machine", "height", "up", "incarnation",
                 "wal", "received", "received_durable", "decided", "certificates", "buffer",
                 "skew", "replied")

    def __init__(self, index: int, key: int, copy: int, behaviour: str | None, skew: float):
        self.index = index
        self.key = key
        self.copy = copy
        self.behaviour = behaviour
        self.machine: Tendermint | None = None
        self.height = 0
        self.up = True
        self.incarnation = 0
        self.wal: dict[int, list] = {}  # height -> own signed messages, in order
        # Messages received at this height, appended to the same log without a sync of their
        # own: the next own message's sync makes those before it durable.
        self.received: list[Proposal | Vote] = []
        self.received_durable = 0
        self.decided: list[bytes] = []
        self.certificates: dict[int, tuple] = {}  # height -> (proposal, precommits)
        self.buffer: list = []  # (sender node, message) of later heights
        self.skew = skew
        self.replied: dict[tuple[int, int], float] = {}  # (peer, height) -> catch-up sent at


def _value(seed: int, key: int, copy: int, height: int, round: int) -> bytes:
    """The block hash a validator proposes at (height, round) when it has no valid value."""
    name = b"%d/%d/%d/%d/%d" % (seed, key, copy, height, round)
    return hashlib.blake2b(name, digest_size=32).digest()


class _Sim:
    """One run: the network, the nodes, and what the checker needs to know of them."""

    def __init__(self, seed: int, scenario: Scenario, rng: random.Random) -> None:
        self.seed = seed
        self.scenario = scenario
        self.rng = rng
        self.now = 0.0
        self.heap: list = []
        self.seq = 0
        n = scenario.n
        self.nodes = [_Node(v, v, 0, scenario.byzantine.get(v), scenario.skew[v])
                      for v in range(n)]
        for v, behaviour in sorted(scenario.byzantine.items()):
            if behaviour == "twins":
                index = len(self.nodes)
                self.nodes.append(_Node(index, v, 1, behaviour, scenario.skew[index]))
        self.honest = [node for node in self.nodes if node.behaviour is None]
        self.byzantine_keys = frozenset(scenario.byzantine)
        self.group = [0] * len(self.nodes)
        self.isolated_until = [0.0] * len(self.nodes)  # cut off from every other node
        self.stable = False  # GST has come
        self.target: int | None = None  # the heights every honest node must decide
        self.done = False
        self.invalid: set[bytes] = set()
        self.valid = lambda value: value not in self.invalid
        self.proposed: set[bytes] = set()
        self.proposed_at: dict[tuple[int, int], list[bytes]] = {}
        self.honest_signed: dict[tuple[int, int, int, int], Proposal | Vote] = {}
        self.seen_first: dict[tuple, bytes | None] = {}
        self.seen_both: set[tuple] = set()
        self.evidence_found: set[tuple] = set()
        self.violations: list[str] = []
        self.digest = hashlib.blake2b(digest_size=16)
        self.counts = dict(sent=0, dropped=0, duplicated=0, events=0, crashes=0,
                           equivocations=0, catch_ups=0, max_round=0)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> SimResult:
        s = self.scenario
        for start, end, groups in s.partitions:
            self._push(start, _PARTITION, 0, groups)
            self._push(end, _PARTITION, 0, None)
        for node, at, restart_at in s.crashes:
            self._push(at, _CRASH, node, None)
            self._push(restart_at, _RESTART, node, None)
        self._push(s.gst_ms, _GST, 0, None)
        for node in self.nodes:
            self._boot(node)
        self._loop(s.gst_ms + s.liveness_ms)
        for node in self.nodes:
            if node.up:
                self._retire(node)
        return self._result()

    def _loop(self, bound_ms: float) -> None:
        heap, nodes, pop = self.heap, self.nodes, heapq.heappop
        events, events_max = 0, limits.sim_events_max
        while heap and not self.done and events < events_max:
            at, _, kind, index, payload = pop(heap)
            if at > bound_ms:
                break
            events += 1
            self.now = at
            node = nodes[index]
            if kind == _DELIVER:
                if node.up:
                    self._deliver(node, payload[0], payload[1])
            elif kind == _TIMEOUT:
                incarnation, step, height, round = payload
                if node.up and node.incarnation == incarnation and node.height == height:
                    assert node.machine is not None
                    self._perform(node, node.machine.on_timeout(step, height, round))
            elif kind == _CRASH:
                self._crash(node)
            elif kind == _RESTART:
                self._restart(node)
            elif kind == _GOSSIP:
                if node.up and node.incarnation == payload:
                    self._gossip(node)
            elif kind == _PARTITION:
                if not self.stable:
                    self.group = [0] * len(nodes) if payload is None else \
                        [payload[other.key] for other in nodes]
            else:
                self._heal()
        self.counts["events"] = events

    def _push(self, at: float, kind: int, index: int, payload) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, index, payload))

    # -- a node -----------------------------------------------------------------------------

    def _boot(self, node: _Node) -> None:
        """A new machine for the node's height, from its WAL of that height."""
        s, height, key, copy, seed = self.scenario, node.height, node.key, node.copy, self.seed
        buggy = (s.planted_bug and node.behaviour is None) or node.behaviour == "amnesia"
        machine = (LockIgnoringTendermint if buggy else Tendermint)(
            height, s.weights, key,
            get_value=lambda h, r: _value(seed, key, copy, h, r), valid=self.valid,
            timeouts=SIM_TIMEOUTS, restored=node.wal.get(height, ()))
        node.machine = machine
        self._perform(node, machine.start())

    def _deliver(self, node: _Node, sender: int, message: Proposal | Vote) -> None:
        height = message.height
        if height == node.height:
            node.received.append(message)
            self._hand(node, message)
        elif height > node.height:
            if len(node.buffer) < limits.future_messages_max:
                node.buffer.append((sender, message))
        else:
            self._catch_up(node, sender, height)

    def _hand(self, node: _Node, message: Proposal | Vote) -> None:
        """Give a message of its height to the node's machine."""
        machine = node.machine
        assert machine is not None
        if type(message) is Vote:
            if node.behaviour is None and message.voter in self.byzantine_keys:
                self._witness(node, message)
            actions = machine.on_vote(message)
        else:
            actions = machine.on_proposal(message)
        if actions:
            self._perform(node, actions)

    def _perform(self, node: _Node, actions: list) -> None:
        for action in actions:
            kind = type(action)
            if kind is Broadcast:
                if node.behaviour is None:
                    self._broadcast(node, action.message)
                else:
                    self._byzantine_broadcast(node, action.message)
            elif kind is Schedule:
                self._push(self.now + action.delay_ms * node.skew, _TIMEOUT, node.index,
                           (node.incarnation, action.step, action.height, action.round))
            else:
                self._decided(node, action)

    def _decided(self, node: _Node, decision: Decide) -> None:
        machine = node.machine
        assert machine is not None and decision.height == node.height == len(node.decided)
        node.decided.append(decision.value)
        node.certificates[decision.height] = (
            machine.proposal_at(decision.round, decision.value), decision.precommits)
        self.digest.update(b"D%d:%d:%d:%d;" % (int(self.now * 1000), node.index,
                                                decision.height, decision.round)
                           + decision.value)
        self._retire(node)
        nemesis = self.scenario.nemesis
        if nemesis is not None and not self.stable and nemesis[:2] == (decision.height,
                                                                        node.index):
            # The decider is cut off before its decision spreads.
            self.isolated_until[node.index] = self.now + nemesis[3]
        node.height += 1
        node.received, node.received_durable = [], 0
        self._boot(node)
        buffered, node.buffer = node.buffer, []
        for sender, message in buffered:
            if node.up:
                self._deliver(node, sender, message)
        target = self.target
        if target is not None and node.behaviour is None and len(node.decided) >= target:
            self.done = all(len(other.decided) >= target for other in self.honest)

    def _retire(self, node: _Node) -> None:
        """Note the evidence the node's machine found, before the machine goes."""
        assert node.machine is not None
        for first, _ in node.machine.evidence():
            self.evidence_found.add((node.index, node.incarnation, first.voter,
                                     int(first.kind), first.height, first.round))

    def _crash(self, node: _Node) -> None:
        if not node.up:
            return
        self._retire(node)
        node.up = False
        node.machine = None
        # What was received since the last own message's sync is lost with the rest.
        node.received = node.received[:node.received_durable] \
            if self.scenario.log_received else []
        node.buffer = []
        node.replied = {}
        node.incarnation += 1  # its timers die with it
        self.counts["crashes"] += 1

    def _restart(self, node: _Node) -> None:
        if node.up:
            return
        node.up = True
        node.height = len(node.decided)  # decided blocks are durable, like the WAL
        self._boot(node)
        height = node.height
        for message in list(node.received):  # replayed, as CometBFT replays its WAL
            if node.height != height:
                break  # decided on the way
            self._hand(node, message)
        for other in self.nodes:
            if other is not node and other.up:
                self._reconnect(other, node)
                self._reconnect(node, other)
        if self.stable:
            self._push(self.now + GOSSIP_MS * node.skew, _GOSSIP, node.index, node.incarnation)

    def _heal(self) -> None:
        """GST: partitions heal, loss stops, delays fall under delta_ms, peers reconnect."""
        self.stable = True
        self.group = [0] * len(self.nodes)
        self.target = max(len(node.decided) for node in self.honest) + self.scenario.heights
        for node in self.nodes:
            for other in self.nodes:
                if other is not node and node.up and other.up:
                    self._reconnect(node, other)
            node.replied = {}  # new connections
            if node.up and node.behaviour is None:
                self._push(self.now + GOSSIP_MS * node.skew, _GOSSIP, node.index,
                           node.incarnation)

    def _gossip(self, node: _Node) -> None:
        """Send again what may have been lost: own messages of this height; what this node has
        of this round and the one before (others' too: the messages that took it to this
        round may be some that others miss); the polka of its valid round."""
        machine = node.machine
        assert machine is not None
        relayed = list(node.wal.get(node.height, ()))
        round = machine.round
        relayed += machine.messages(round)
        if round > 0:
            relayed += machine.messages(round - 1)
        if machine.valid_round >= 0:
            relayed += machine.polka(machine.valid_round)
        for other in self.nodes:
            if other is not node:
                for message in relayed:
                    self._send(node.index, other.index, message)
        self._push(self.now + GOSSIP_MS * node.skew, _GOSSIP, node.index, node.incarnation)

    def _reconnect(self, node: _Node, peer: _Node) -> None:
        """On a new connection an honest node sends its messages of its current height."""
        if node.behaviour is None:
            for message in node.wal.get(node.height, ()):
                self._send(node.index, peer.index, message)

    def _catch_up(self, node: _Node, sender: int, height: int) -> None:
        """A peer is at a height this node has decided: send it the proposal and precommits."""
        certificate = node.certificates.get(height)
        if node.behaviour is not None or certificate is None:
            return
        last = node.replied.get((sender, height))
        if last is not None and self.now - last < 1000.0:
            return
        node.replied[sender, height] = self.now
        self.counts["catch_ups"] += 1
        proposal, precommits = certificate
        if proposal is not None:
            self._send(node.index, sender, proposal)
        for vote in precommits:
            self._send(node.index, sender, vote)

    # -- messages ---------------------------------------------------------------------------

    def _broadcast(self, node: _Node, message: Proposal | Vote) -> None:
        """An honest node: the WAL first, then to every node (itself too)."""
        wal = node.wal.get(message.height)
        if wal is None:
            node.wal[message.height] = [message]
        elif message not in wal:  # sent again after a restart: written once
            wal.append(message)
        node.received_durable = len(node.received)  # the sync takes them along
        self._signed(node, message)
        index = node.index
        for other in range(len(self.nodes)):
            self._send(index, other, message)
        if type(message) is Proposal and message.valid_round >= 0:
            assert node.machine is not None
            for vote in node.machine.polka(message.valid_round):  # forwarded, as gossip does
                for other in range(len(self.nodes)):
                    if other != index:
                        self._send(index, other, vote)

    def _signed(self, node: _Node, message: Proposal | Vote) -> None:
        if type(message) is Proposal:
            kind, signer, value = 0, message.proposer, message.value
            self.proposed.add(value)
            self.proposed_at.setdefault((message.height, message.round), []).append(value)
        else:
            kind, signer, value = int(message.kind), message.voter, message.value
        height, round = message.height, message.round
        if round > self.counts["max_round"]:
            self.counts["max_round"] = round
        if node.behaviour is None:
            key = (signer, kind, height, round)
            before = self.honest_signed.setdefault(key, message)
            if before != message:
                self.violations.append(
                    f"wal: honest validator {signer} signed two messages of kind {kind} at "
                    f"height {height} round {round}: {before} and {message}")
        self.digest.update(b"S%d:%d:%d:%d:%d;" % (int(self.now * 1000), node.index, kind,
                                                   height, round) + (value or b"-"))

    def _send(self, sender: int, receiver: int, message: Proposal | Vote) -> None:
        if sender == receiver:
            self._push(self.now, _DELIVER, receiver, (sender, message))
            return
        s, rng = self.scenario, self.rng
        self.counts["sent"] += 1
        if self.stable:
            delay = rng.random() * s.delta_ms
        else:
            if self.group[sender] != self.group[receiver] or rng.random() < s.loss \
                    or self.isolated_until[sender] > self.now \
                    or self.isolated_until[receiver] > self.now \
                    or self._nemesis_drops(message, sender, receiver):
                self.counts["dropped"] += 1
                return
            delay = rng.random() * s.delay_ms
        self._push(self.now + delay, _DELIVER, receiver, (sender, message))
        if s.duplicate and rng.random() < s.duplicate:
            self.counts["duplicated"] += 1
            self._push(self.now + rng.random() * max(s.delay_ms, s.delta_ms), _DELIVER,
                       receiver, (sender, message))

    def _nemesis_drops(self, message: Proposal | Vote, sender: int, receiver: int) -> bool:
        s = self.scenario
        vote = type(message) is Vote
        if vote and s.precommit_loss and message.kind == 2 \
                and self.rng.random() < s.precommit_loss:
            return True
        nemesis = s.nemesis
        if nemesis is None or message.height != nemesis[0] or message.round != 0:
            return False
        _, decider, outsiders, _ = nemesis
        if not vote:
            return receiver in outsiders
        if message.kind == 1:
            return receiver in outsiders and sender == decider
        return sender == decider

    def _byzantine_broadcast(self, node: _Node, message: Proposal | Vote) -> None:
        """What a Byzantine node sends in place of an honest node's broadcast. It signs as
        itself only (its key): every message made here has its key as signer."""
        behaviour, index, rng = node.behaviour, node.index, self.rng
        self._send(index, index, message)  # its own machine goes on as if honest
        if behaviour in ("silent", "selective"):
            self._signed(node, message)
        if behaviour == "silent":
            return
        if behaviour == "selective":
            for key in self.scenario.selective_targets[node.key]:
                self._send(index, key, message)
            return
        other: Proposal | Vote | None = None
        if behaviour == "equivocate_proposals" and type(message) is Proposal:
            # A fresh value with no valid round: only a lock keeps an honest node from it.
            other = Proposal(message.height, message.round, rng.randbytes(32), -1, node.key)
        elif behaviour.startswith("equivocate") and type(message) is Vote:
            self._equivocate_vote(node, message)
            return
        elif behaviour == "invalid" and (type(message) is Proposal or rng.random() < 0.7):
            message = self._invalidated(message, node.key)
        self._signed(node, message)
        if other is not None:
            self._signed(node, other)
            self.counts["equivocations"] += 1
        for receiver in range(len(self.nodes)):
            if receiver != index:
                chosen = other if other is not None and rng.random() < 0.5 else message
                self._send(index, receiver, chosen)

    def _equivocate_vote(self, node: _Node, vote: Vote) -> None:
        """Send each node the vote it would like: for the value it voted for or was proposed
        (the adversary sees every node's state), so that each side of a split finds its
        quorum: the attack that a lock must withstand."""
        made: dict[bytes | None, Vote] = {vote.value: vote}
        self._signed(node, vote)
        for receiver in self.nodes:
            if receiver is node:
                continue
            value = self._liked(receiver, vote) if self.rng.random() < 0.8 else vote.value
            chosen = made.get(value)
            if chosen is None:
                chosen = made[value] = Vote(vote.kind, vote.height, vote.round, value, node.key)
                self._signed(node, chosen)
                self.counts["equivocations"] += 1
            self._send(node.index, receiver.index, chosen)

    def _liked(self, receiver: _Node, vote: Vote) -> bytes | None:
        """The value of the receiver's own vote of this kind at this round, else of its
        prevote there, else of the proposal it has there, else the vote's own."""
        machine = receiver.machine
        if machine is None or receiver.height != vote.height:
            return vote.value
        prevote = None
        for message in reversed(receiver.wal.get(vote.height, ())):
            if type(message) is Vote and message.round == vote.round:
                if message.kind == vote.kind:
                    return message.value
                prevote = message
        if prevote is not None:
            return prevote.value
        for message in machine.messages(vote.round):
            if type(message) is Proposal:
                return message.value
        return vote.value

    def _invalidated(self, message: Proposal | Vote, key: int) -> Proposal | Vote:
        """The message with an invalid value: a block that honest validation rejects."""
        value = self.rng.randbytes(32)
        self.invalid.add(value)
        if type(message) is Proposal:
            return Proposal(message.height, message.round, value, message.valid_round, key)
        assert type(message) is Vote
        return Vote(message.kind, message.height, message.round, value, key)

    def _witness(self, node: _Node, vote: Vote) -> None:
        """An honest node is given a Byzantine's vote: note when it has both of a conflict."""
        key = (node.index, node.incarnation, vote.voter, int(vote.kind), vote.height,
               vote.round)
        first = self.seen_first.setdefault(key, vote.value)
        if first != vote.value:
            self.seen_both.add(key)

    # -- the checker ------------------------------------------------------------------------

    def _result(self) -> SimResult:
        s, violations = self.scenario, self.violations
        by_height: dict[int, dict[bytes, int]] = {}
        for node in self.honest:
            for height, value in enumerate(node.decided):
                by_height.setdefault(height, {}).setdefault(value, node.index)
                if value in self.invalid:
                    violations.append(f"validity: validator {node.index} decided an invalid "
                                      f"value {value.hex()[:12]} at height {height}")
                elif value not in self.proposed:
                    violations.append(f"validity: validator {node.index} decided a value never "
                                      f"proposed, {value.hex()[:12]} at height {height}")
        for height, values in sorted(by_height.items()):
            if len(values) > 1:
                names = ", ".join(f"validator {v} decided {value.hex()[:12]}"
                                  for value, v in values.items())
                violations.append(f"safety: at height {height} {names}")
        target = self.target
        for node in self.honest:
            if target is None or len(node.decided) < target:
                violations.append(
                    f"liveness: validator {node.index} decided {len(node.decided)} heights of "
                    f"{target} by {self.now:.0f}ms (GST {s.gst_ms:.0f}ms)")
        missed = self.seen_both - self.evidence_found
        if missed:
            violations.append(f"evidence: {len(missed)} conflicting vote pairs reached honest "
                              f"validators unreported, first {sorted(missed)[0]}")
        stats: dict[str, object] = dict(self.counts)
        stats.update(scenario=s.describe(), end_ms=round(self.now, 3), target=target,
                     conflicts_seen=len(self.seen_both),
                     evidence_found=len(self.evidence_found & self.seen_both),
                     heights=min(len(node.decided) for node in self.honest))
        decided = {node.index: tuple(node.decided) for node in self.honest}
        return SimResult(self.seed, violations, decided, stats, self.digest.hexdigest())


def run(seed: int, n: int = 4, byzantine: int | Sequence[str] | None = None, *,
        heights: int = 3, planted_bug: bool = False, weighted: bool | None = None,
        log_received: bool = True) -> SimResult:
    """One simulated run, fully determined by its arguments.

    ``byzantine``: how many Byzantine validators (behaviours drawn from the seed), or their
    behaviours by name (BEHAVIOURS); None is the most the validators tolerate, f = (n - 1) // 3.
    ``heights``: how many heights after GST every honest validator must decide. ``weighted``:
    validators of weights 1 to 3 (None: drawn from the seed, one run in four).
    ``log_received=False``: the WAL keeps own messages only, so that a restart forgets every
    message received (liveness can then stall, see the module's docstring)."""
    rng = random.Random(seed)
    scenario = make_scenario(rng, n, byzantine, heights, planted_bug, weighted)
    if not log_received:
        scenario = dataclasses.replace(scenario, log_received=False)
    return _Sim(seed, scenario, rng).run()


def summary(result: SimResult) -> list[str]:
    """A short account of one run, for the replaying command."""
    stats = result.stats
    lines = [f"seed {result.seed}: {stats['scenario']}",
             f"  {stats['events']:,} events, {stats['sent']:,} messages sent "
             f"({stats['dropped']:,} lost, {stats['duplicated']:,} duplicated), "
             f"{stats['crashes']} crashes, highest round {stats['max_round']}, "
             f"{stats['equivocations']} equivocations ({stats['conflicts_seen']} seen, "
             f"{stats['evidence_found']} found as evidence), {stats['catch_ups']} catch-ups",
             f"  ended at {stats['end_ms']:,.0f} ms virtual; every honest validator decided "
             f"{stats['heights']} heights (target {stats['target']}); "
             f"trace digest {result.trace_digest}"]
    for node, values in sorted(result.decided.items()):
        shown = " ".join(value.hex()[:8] for value in values[:6])
        lines.append(f"  validator {node}: {shown}{' ...' if len(values) > 6 else ''}")
    lines += [f"  VIOLATION {violation}" for violation in result.violations]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tsunagi.consensus.sim",
        description="Replay seeded simulations of Tendermint validators; exit 1 on a violation.")
    parser.add_argument("--seed", type=int, required=True, help="the seed (the first, with "
                        "--count)")
    parser.add_argument("--n", type=int, default=4, help="validators (default 4)")
    parser.add_argument("--count", type=int, default=1, help="run this many seeds from --seed")
    parser.add_argument("--heights", type=int, default=3, help="heights to decide after GST")
    parser.add_argument("--planted-bug", action="store_true",
                        help="honest validators ignore their lock when they prevote")
    args = parser.parse_args(argv)
    options = dict(heights=args.heights, planted_bug=args.planted_bug)
    if args.count == 1:
        result = run(args.seed, args.n, **options)
        print("\n".join(summary(result)))
        return 1 if result.violations else 0
    from rich.progress import Progress

    failed = []
    with Progress(transient=True) as progress:
        task = progress.add_task(f"n={args.n} seeds", total=args.count)
        for seed in range(args.seed, args.seed + args.count):
            result = run(seed, args.n, **options)
            if result.violations:
                failed.append(result)
                progress.console.print(f"seed {seed}: {result.violations[0]}")
            progress.advance(task)
    print(f"{args.count} seeds from {args.seed} at n={args.n}: {len(failed)} with violations"
          + (f" (first: seed {failed[0].seed})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
