"""The Tendermint machine follows Algorithm 1 of "The latest gossip on BFT consensus" rule by
rule, keeps its lock and its signatures across a restart, and reports equivocation.

Method: drive one machine by hand with the messages each rule of the paper names (the line
numbers are in the test names) and check the actions it returns and its state; hypothesis
drives machines with arbitrary messages and crashes them at arbitrary points, and checks that
what they sign over all their lives never holds two messages for one (kind, round) and that the
lock is never lost.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.consensus.sim import LockIgnoringTendermint
from tsunagi.consensus.tendermint import (
    Broadcast,
    Decide,
    Proposal,
    Schedule,
    Step,
    Tendermint,
    Timeouts,
    Vote,
    VoteKind,
    proposer_of,
)

V, W, U = b"v" * 32, b"w" * 32, b"u" * 32
EQUAL = (1, 1, 1, 1)
PV, PC = VoteKind.prevote, VoteKind.precommit


def machine(me: int | None = 1, weights=EQUAL, height: int = 0, cls=Tendermint,
            restored=(), valid=lambda value: True) -> Tendermint:
    return cls(height, weights, me, get_value=lambda h, r: b"%d-%d" % (h, r) + b"." * 29,
               valid=valid, restored=restored)


def sent(actions: list) -> list:
    return [action.message for action in actions if isinstance(action, Broadcast)]


def feed(m: Tendermint, messages) -> list:
    actions = []
    for message in messages:
        if isinstance(message, Proposal):
            actions += m.on_proposal(message)
        else:
            actions += m.on_vote(message)
    return actions


def votes(kind, round, value, voters, height=0):
    return [Vote(kind, height, round, value, voter) for voter in voters]


def proposal(round, value, valid_round=-1, height=0, weights=EQUAL):
    return Proposal(height, round, value, valid_round, proposer_of(weights, height, round))


def lock_on_v_in_round_0(m: Tendermint) -> None:
    """Round 0: V proposed, a polka for V (the machine locks and precommits V), then
    precommits of 2f + 1 that do not commit, and the precommit timeout: round 1."""
    m.start()
    feed(m, [proposal(0, V)] + votes(PV, 0, V, (0, 1, 2)))
    assert (m.locked_value, m.locked_round) == (V, 0)
    feed(m, votes(PC, 0, V, (1,)) + votes(PC, 0, None, (2, 3)))
    m.on_timeout(Step.precommit, 0, 0)
    assert m.round == 1


def test_timeouts_grow_with_the_round():
    t = Timeouts()
    assert [t.of(Step.propose, r) for r in (0, 1, 4)] == [3000, 3500, 5000]
    assert t.of(Step.prevote, 2) == t.of(Step.precommit, 2) == 2000


def test_happy_path_decides_in_round_0_lines_22_36_49():
    m = machine(me=1)
    assert m.start() == [Schedule(Step.propose, 0, 0, 3000)]  # line 21: not the proposer
    assert sent(m.on_proposal(proposal(0, V))) == [Vote(PV, 0, 0, V, 1)]  # line 24
    actions = feed(m, votes(PV, 0, V, (0, 1, 2)))
    assert Schedule(Step.prevote, 0, 0, 1000) in actions  # line 35
    assert sent(actions) == [Vote(PC, 0, 0, V, 1)]  # line 40
    assert (m.locked_value, m.locked_round, m.valid_value, m.valid_round) == (V, 0, V, 0)
    actions = feed(m, votes(PC, 0, V, (0, 2, 3)))
    assert actions[-1] == Decide(0, 0, V, tuple(votes(PC, 0, V, (0, 2, 3))))  # line 51
    assert m.decision == actions[-1]
    assert feed(m, votes(PC, 0, V, (1,))) == []  # decided: nothing more


def test_the_proposer_proposes_get_value_then_its_valid_value_line_14():
    m = machine(me=0)
    assert sent(m.start()) == [Proposal(0, 0, b"0-0" + b"." * 29, -1, 0)]  # line 18
    m = machine(me=1)  # proposer of round 1 at height 0
    m.start()
    feed(m, [proposal(0, V)] + votes(PV, 0, V, (0, 2, 3)))  # polka: valid value V
    feed(m, votes(PC, 0, None, (0, 2, 3)))
    assert sent(m.on_timeout(Step.precommit, 0, 0)) == [Proposal(0, 1, V, 0, 1)]  # line 16


def test_a_lock_refuses_another_value_line_23_and_the_planted_bug_does_not():
    for cls, expected in ((Tendermint, None), (LockIgnoringTendermint, W)):
        m = machine(me=1, cls=cls)
        lock_on_v_in_round_0(m)
        assert sent(m.on_proposal(proposal(1, W))) == [Vote(PV, 0, 1, expected, 1)]


def test_a_lock_gives_way_to_a_later_polka_line_29():
    m = machine(me=1)
    lock_on_v_in_round_0(m)
    m.on_timeout(Step.propose, 0, 1)  # prevote nil in round 1
    feed(m, votes(PV, 1, W, (0, 2, 3)) + votes(PC, 1, None, (0, 2, 3)))
    m.on_timeout(Step.precommit, 0, 1)
    assert m.round == 2 and m.locked_round == 0
    # A proposal of W with valid round 1, where W had its polka: lockedRound 0 <= vr = 1.
    assert sent(m.on_proposal(proposal(2, W, valid_round=1))) == [Vote(PV, 0, 2, W, 1)]


def test_a_valid_round_without_its_polka_waits_line_28():
    m = machine(me=1)
    lock_on_v_in_round_0(m)
    assert m.on_proposal(proposal(1, W, valid_round=0)) == []  # no polka for W in round 0
    assert sent(m.on_timeout(Step.propose, 0, 1)) == [Vote(PV, 0, 1, None, 1)]  # line 59


def test_a_polka_seen_after_precommitting_nil_sets_the_valid_value_only_line_42():
    m = machine(me=2)
    m.start()
    m.on_timeout(Step.propose, 0, 0)  # prevote nil
    feed(m, votes(PV, 0, None, (3,)) + votes(PV, 0, V, (0,)) + votes(PV, 0, W, (1,)))
    assert sent(m.on_timeout(Step.prevote, 0, 0)) == [Vote(PC, 0, 0, None, 2)]  # line 63
    # 0 again (a duplicate) and 1's second prevote (evidence, counted for V alone): weight 2.
    feed(m, [proposal(0, V)] + votes(PV, 0, V, (0, 1)))
    assert m.valid_value is None and len(m.evidence()) == 1
    feed(m, votes(PV, 0, V, (3,)))  # 3 prevoted nil before: V now has 0, 1 and 3
    assert (m.valid_value, m.valid_round) == (V, 0)
    assert (m.locked_value, m.locked_round) == (None, -1)  # step was precommit: no lock


def test_2f_plus_1_nil_prevotes_precommit_nil_line_44():
    m = machine(me=1)
    m.start()
    m.on_timeout(Step.propose, 0, 0)
    assert sent(feed(m, votes(PV, 0, None, (0, 2, 3)))) == [Vote(PC, 0, 0, None, 1)]
    assert m.step == Step.precommit


def test_f_plus_1_messages_of_a_later_round_skip_to_it_line_55():
    m = machine(me=1)
    m.start()
    assert m.on_vote(Vote(PV, 0, 3, None, 2)) == [] and m.round == 0  # f + 1 is 2 here
    m.on_vote(Vote(PV, 0, 3, None, 2))  # the same sender again: still one
    assert m.round == 0
    actions = m.on_vote(Vote(PC, 0, 3, None, 3))
    assert m.round == 3 and Schedule(Step.propose, 0, 3, 4500) in actions


def test_messages_of_other_heights_are_ignored():
    m = machine(me=1, height=5)
    m.start()
    assert feed(m, [proposal(0, V)] + votes(PV, 0, V, (0, 2, 3))) == []
    assert m.round == 0 and m.step == Step.propose


def test_weights_quorum_is_more_than_two_thirds_and_skip_more_than_a_third():
    weights = (3, 1, 1, 1)  # total 6: a quorum is 5, "f + 1" is 3
    counts = [proposer_of(weights, 0, r) for r in range(6)]
    assert counts.count(0) == 3 and sorted(set(counts)) == [0, 1, 2, 3]
    m = machine(me=None, weights=weights)
    m.start()
    feed(m, [proposal(0, V, weights=weights)])
    assert feed(m, votes(PC, 0, V, (0, 1))) == []  # weight 4
    assert isinstance(m.on_vote(Vote(PC, 0, 0, V, 2))[-1], Decide)  # weight 5
    m = machine(me=1, weights=weights)
    m.start()
    m.on_vote(Vote(PV, 0, 2, None, 0))  # weight 3 alone: more than a third
    assert m.round == 2


def test_a_follower_decides_and_never_sends():
    m = machine(me=None)
    actions = m.start() + feed(m, [proposal(0, V)] + votes(PV, 0, V, (0, 1, 2))
                               + votes(PC, 0, V, (0, 1, 2)))
    assert sent(actions) == [] and actions[-1] == m.decision and m.decision.value == V


def test_double_votes_are_evidence_and_count_once_in_the_total():
    m = machine(me=1)
    m.start()
    m.on_timeout(Step.propose, 0, 0)
    feed(m, [Vote(PV, 0, 0, V, 2), Vote(PV, 0, 0, W, 2), Vote(PV, 0, 0, V, 2)])
    assert m.evidence() == [(Vote(PV, 0, 0, V, 2), Vote(PV, 0, 0, W, 2))]
    # Voter 2 twice and voter 3: weight 2 of all prevotes, not 2f + 1: no prevote timer.
    assert m.on_vote(Vote(PV, 0, 0, U, 3)) == []
    assert any(isinstance(a, Schedule) for a in m.on_vote(Vote(PV, 0, 0, None, 1)))


def test_a_certificate_holding_a_double_vote_still_decides():
    """A node that saw a Byzantine's nil precommit first decides on a certificate that holds
    the same voter's precommit for the value (seed 4 of the simulator stalled without it)."""
    m = machine(me=1)
    m.start()
    feed(m, [proposal(0, V), Vote(PC, 0, 0, None, 0)] + votes(PC, 0, V, (1, 2)))
    assert m.decision is None
    assert m.on_vote(Vote(PC, 0, 0, V, 0))[-1].precommits == tuple(votes(PC, 0, V, (0, 1, 2)))
    assert len(m.evidence()) == 1


def test_commit_without_proposal_and_revalidate():
    known: set[bytes] = set()
    m = machine(me=1, valid=known.__contains__)
    m.start()
    feed(m, votes(PC, 0, V, (0, 2, 3)))
    assert m.commit_without_proposal() == (0, V) and m.decision is None
    assert sent(m.on_proposal(proposal(0, V))) == [Vote(PV, 0, 0, None, 1)]  # not valid yet
    assert m.decision is None and m.commit_without_proposal() is None
    known.add(V)  # the block arrived
    assert m.revalidate()[-1] == Decide(0, 0, V, tuple(votes(PC, 0, V, (0, 2, 3))))


def test_restore_resumes_the_round_keeps_the_lock_and_resends_the_same_messages():
    wal = [Vote(PV, 0, 0, V, 1), Vote(PC, 0, 0, V, 1), Vote(PV, 0, 1, None, 1)]
    m = machine(me=1, restored=wal)
    assert sent(m.start()) == [Vote(PV, 0, 1, None, 1)]  # this round's, sent again
    assert (m.round, m.step, m.locked_value, m.locked_round) == (1, Step.prevote, V, 0)
    assert m.on_proposal(proposal(1, W)) == []  # it prevoted already in round 1
    # A proposer that restarts sends the proposal it signed, not a new value.
    signed = Proposal(0, 0, U, -1, 0)
    m = machine(me=0, restored=[signed])
    assert sent(m.start()) == [signed]


def test_restored_lock_refuses_another_value_after_the_crash():
    before = machine(me=1)
    lock_on_v_in_round_0(before)
    wal = [Vote(PV, 0, 0, V, 1), Vote(PC, 0, 0, V, 1)]
    after = machine(me=1, restored=wal)
    after.start()
    feed(after, votes(PC, 0, None, (0, 2, 3)))
    after.on_timeout(Step.precommit, 0, 0)
    assert sent(after.on_proposal(proposal(1, W))) == [Vote(PV, 0, 1, None, 1)]


message_strategy = st.one_of(
    st.builds(lambda r, v, vr: ("p", r, v, vr), st.integers(0, 3), st.sampled_from([V, W, U]),
              st.integers(-1, 2)),
    st.builds(lambda k, r, v, who: ("v", k, r, v, who), st.sampled_from([PV, PC]),
              st.integers(0, 3), st.sampled_from([V, W, None]), st.integers(0, 3)),
    st.builds(lambda s, r: ("t", s, r), st.sampled_from(list(Step)), st.integers(0, 3)),
    st.just(("crash",)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message_strategy, max_size=80), st.integers(0, 3))
def test_crashes_never_make_two_signatures_for_one_kind_and_round(script, me):
    wal: list = []
    m = machine(me=me)
    signed: dict[tuple[int, int], object] = {}
    lock = (-1, None)

    def perform(actions):
        for message in sent(actions):
            wal.append(message)  # the WAL before the network
            key = (0 if isinstance(message, Proposal) else int(message.kind), message.round)
            assert signed.setdefault(key, message) == message, (key, signed[key], message)

    perform(m.start())
    for step in script:
        if step[0] == "crash":
            m = machine(me=me, restored=list(wal))
            perform(m.start())
        elif step[0] == "p":
            _, r, value, vr = step
            perform(m.on_proposal(Proposal(0, r, value, min(vr, r - 1), proposer_of(EQUAL, 0, r))))
        elif step[0] == "v":
            _, kind, r, value, voter = step
            perform(m.on_vote(Vote(kind, 0, r, value, voter)))
        else:
            perform(m.on_timeout(step[1], 0, step[2]))
        assert m.locked_round >= lock[0]  # a crash never loses the lock
        lock = (m.locked_round, m.locked_value)
