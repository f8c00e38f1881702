"""The validator's write-ahead log (tsunagi.consensus.wal): what a validator signed survives a
crash, a torn last entry is dropped, damage before the end is refused, and a restarted state
machine signs nothing different for a slot it signed before.

Method: entries are appended and the file reopened, cut at every byte of its last entry
(a crash mid-append) and with a byte flipped inside an earlier one; a Tendermint machine
restored from the log is driven to the same slots with other values.
"""

from __future__ import annotations

import pytest

from tsunagi.consensus.tendermint import Broadcast, Proposal, Tendermint, Vote, VoteKind
from tsunagi.consensus.wal import WAL_FILE, SignedMessage, VoteLog
from tsunagi.errors import CorruptLogError

A, B = b"\xaa" * 32, b"\xbb" * 32
SIGNATURE = b"\x11" * 64


def _entries():
    return [SignedMessage(Proposal(5, 0, A, -1, 1), SIGNATURE),
            SignedMessage(Vote(VoteKind.prevote, 5, 0, A, 1), SIGNATURE),
            SignedMessage(Vote(VoteKind.precommit, 5, 0, None, 1), SIGNATURE),
            SignedMessage(Vote(VoteKind.precommit, 5, 1, B, 2), SIGNATURE)]


def test_entries_survive_a_reopen_and_are_found_by_slot(tmp_path):
    log = VoteLog(tmp_path)
    for entry in _entries():
        log.append(entry, durable=entry.message.round == 0)
    log.close()
    again = VoteLog(tmp_path)
    assert again.entries == _entries()
    assert again.at(5) == _entries() and again.at(6) == []
    # A slot is (height, round, kind, signer): another voter's vote is not this one's.
    assert again.find(Vote(VoteKind.prevote, 5, 0, B, 1)) == _entries()[1]
    assert again.find(Vote(VoteKind.precommit, 5, 1, B, 1)) is None
    assert again.find(Vote(VoteKind.precommit, 5, 1, A, 2)) == _entries()[3]


def test_a_torn_last_entry_is_dropped_at_every_cut(tmp_path):
    log = VoteLog(tmp_path)
    for entry in _entries():
        log.append(entry)
    log.close()
    data = (tmp_path / WAL_FILE).read_bytes()
    whole = len(data)
    last = whole - (8 + 1 + 8 + 4 + 1 + 2 + 1 + 32 + 64)  # the last entry's first byte
    for cut in range(last, whole):
        (tmp_path / WAL_FILE).write_bytes(data[:cut])
        reopened = VoteLog(tmp_path)
        assert reopened.entries == _entries()[:3], cut
        reopened.close()
        assert (tmp_path / WAL_FILE).stat().st_size == last  # the torn tail is gone


def test_damage_before_the_last_entry_is_refused(tmp_path):
    log = VoteLog(tmp_path)
    for entry in _entries():
        log.append(entry)
    log.close()
    data = bytearray((tmp_path / WAL_FILE).read_bytes())
    data[20] ^= 0x01  # inside the first entry's payload
    (tmp_path / WAL_FILE).write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="cannot prove which votes it signed"):
        VoteLog(tmp_path)


def test_a_restored_validator_signs_nothing_different_and_keeps_its_lock(tmp_path):
    """Validator 1 of 4 precommitted A in round 0 before the crash: restored, it is locked on
    A, and asked to vote in round 0 again it sends the same messages."""
    log = VoteLog(tmp_path)
    signed = [Vote(VoteKind.prevote, 5, 0, A, 1), Vote(VoteKind.precommit, 5, 0, A, 1)]
    for message in signed:
        log.append(SignedMessage(message, SIGNATURE))
    log.close()
    restored = [entry.message for entry in VoteLog(tmp_path).at(5)]
    machine = Tendermint(5, [1, 1, 1, 1], 1, get_value=lambda h, r: B,
                         valid=lambda value: True, restored=restored)
    sent = [action.message for action in machine.start() if isinstance(action, Broadcast)]
    assert set(sent) <= set(signed)
    assert machine.locked_value == A and machine.locked_round == 0
    # A proposal of B in round 0 (from its proposer) cannot make it prevote B there.
    out = machine.on_proposal(Proposal(5, 0, B, -1, (5 + 0) % 4))
    votes = [a.message for a in out if isinstance(a, Broadcast)]
    assert all(v in signed for v in votes)
