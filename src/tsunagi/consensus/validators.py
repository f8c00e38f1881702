"""On-chain validator changes and equivocation evidence of a consortium chain.

Both travel as consortium entries in a version 2 block's extension (their bytes:
tsunagi.core.entries, docs/FORMAT.md "Block entries"). A validator update gives a key a
new weight (0: it leaves the set) from an effective height on; validators of the set in force
at the block's height holding more than two thirds of its weight sign it (update_message).
Its effective height is at least the block's height + 2, so the set of the block after next
is the first it may change: a block's own certificate names the next height's set, which
is then known before the block is (ValidatorSchedule.set_at of height + 1 needs blocks up to
height - 1 only). Evidence is two signed votes of one validator at one (kind, height, round)
for different values; it is recorded, once.

:class:`ValidatorSchedule` keeps the set for every height, from the genesis set and the entries
of the blocks applied, without undo: a consortium chain's blocks are final.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from tsunagi._native.sigverify import verify_batch
from tsunagi.consensus.certificate import ValidatorSet, sign_vote, vote_message
from tsunagi.core.entries import (
    Evidence,
    SignedVote,
    ValidatorUpdate,
    decode_entries,
    encode_entries,
)
from tsunagi.core.keys import PrivateKey, is_public_key
from tsunagi.errors import ConfigError, EncodingError

__all__ = ["UPDATE_TAG", "EntryResult", "Evidence", "SignedVote", "ValidatorSchedule",
           "ValidatorUpdate", "approve_update", "decode_entries", "encode_entries",
           "sign_update", "signed_vote", "update_message"]

UPDATE_TAG = b"tsunagi/validator-update/1"
_UPDATE = struct.Struct(f"<{len(UPDATE_TAG)}s32s32sQQ")
# The first height an update in the block at height h may change: h + 2 (module docstring).
UPDATE_DELAY_BLOCKS = 2


class EntryResult(IntEnum):
    """Why a block's consortium entries do not hold; 0 is ok. Values are never reused."""

    ok = 0  # every entry holds
    undecodable = 1  # the extension is not a list of consortium entries
    effective_too_soon = 2  # an update takes effect before the block's height + 2
    update_key_invalid = 3  # an update's key is not a valid x-only key
    unknown_approver = 4  # an approval's signer index is not in the current set
    too_little_approval = 5  # approvers hold 2/3 of the current set's weight or less
    bad_approval = 6  # an approval signature does not verify
    removes_absent = 7  # weight 0 for a key not in the set where it would take effect
    bad_resulting_set = 8  # the update would leave a set empty or too large
    duplicate_update = 9  # a second update for one key at one effective height
    evidence_not_conflicting = 10  # the votes differ in kind, height or round, or agree
    evidence_from_future = 11  # a vote's height is above the block's height
    evidence_not_validator = 12  # the key is not in the set at the votes' height
    bad_evidence_signature = 13  # a vote's signature does not verify
    duplicate_evidence = 14  # evidence for that validator, kind, height and round is on chain


def update_message(chain_id: bytes, key: bytes, weight: int, effective_height: int) -> bytes:
    """The 32-byte digest approvers sign: SHA-256 of UPDATE_TAG, chain_id (the genesis hash),
    key 32, weight u64, effective_height u64."""
    try:
        return hashlib.sha256(_UPDATE.pack(UPDATE_TAG, bytes(chain_id), bytes(key), weight,
                                           effective_height)).digest()
    except struct.error as exc:
        raise EncodingError(f"weight and effective_height are u64: {exc}") from exc


def sign_update(private_key: PrivateKey, chain_id: bytes, key: bytes, weight: int,
                effective_height: int) -> bytes:
    return private_key.sign(update_message(chain_id, key, weight, effective_height))


def approve_update(chain_id: bytes, key: bytes, weight: int, effective_height: int,
                   approvers: Iterable[tuple[int, PrivateKey]]) -> ValidatorUpdate:
    """The update signed by ``approvers`` ((index in the current set, key) pairs)."""
    approvals = sorted((index, sign_update(private, chain_id, key, weight, effective_height))
                       for index, private in approvers)
    return ValidatorUpdate(bytes(key), weight, effective_height, tuple(approvals))


def signed_vote(private_key: PrivateKey, chain_id: bytes, kind: int, height: int, round: int,
                value: bytes | None, next_validators: bytes) -> SignedVote:
    """A vote with its signature, as evidence holds it."""
    return SignedVote(kind, height, round, value, next_validators,
                      sign_vote(private_key, chain_id, kind, height, round, value,
                                next_validators))


class _Signed(NamedTuple):
    entry: int  # position of the entry in the block
    key: bytes
    message: bytes
    signature: bytes
    code: EntryResult  # what a failure of this signature means


def _changed(members: list[tuple[bytes, int]], key: bytes, weight: int) -> None:
    # Kept in place when present, appended when new, dropped at weight 0: indices of the
    # others move only when one before them leaves.
    for position, (member, _) in enumerate(members):
        if member == key:
            if weight:
                members[position] = (key, weight)
            else:
                del members[position]
            return
    if weight:
        members.append((key, weight))


class ValidatorSchedule:
    """The validator set of every height of one consortium chain."""

    def __init__(self, genesis: ValidatorSet, chain_id: bytes) -> None:
        self.chain_id = bytes(chain_id)
        self.genesis = genesis
        self.height = 0  # the highest block applied (genesis is 0)
        self._updates: list[tuple[int, int, bytes, int]] = []  # (effective, order, key, weight)
        self._sets: tuple[list[int], list[ValidatorSet]] = ([1], [genesis])
        self.evidence: list[tuple[int, Evidence]] = []  # (height of the block, evidence)
        self._evidence_seen: set[tuple[bytes, int, int, int]] = set()

    def set_at(self, height: int) -> ValidatorSet:
        """The set that signs the block at ``height`` (>= 1)."""
        starts, sets = self._sets
        return sets[max(bisect.bisect_right(starts, height) - 1, 0)]

    def check_block(self, height: int, extension) -> tuple[int, EntryResult]:
        """(position of the first entry that fails, its code), or (count, ok), for the
        entries of the block at ``height`` (the next one: ``self.height + 1``). Changes
        nothing. Signatures are checked in one native batch call."""
        return self._check(height, extension)[:2]

    def apply_block(self, height: int, extension) -> tuple[int, EntryResult]:
        """check_block, then, when every entry holds, records them: their updates change the
        sets of heights from their effective heights on, their evidence is kept."""
        position, result, updates, evidence = self._check(height, extension)
        if result is EntryResult.ok:
            if len(updates) != len(self._updates):
                self._updates = updates
                self._sets = self._build(updates)
            for item in evidence:
                self.evidence.append((height, item))
                self._evidence_seen.add(_evidence_id(item))
            self.height = height
        return position, result

    def _check(self, height: int, extension):
        if height != self.height + 1:
            raise ValueError(f"blocks apply in order: the next is {self.height + 1}, "
                             f"not {height}")
        try:
            entries = decode_entries(extension)
        except EncodingError:
            return 0, EntryResult.undecodable, None, None
        updates, evidence, signed = list(self._updates), [], []
        current = self.set_at(height)
        seen: set[tuple[bytes, int, int, int]] = set()  # this block's, beside those on chain
        failure = (len(entries), EntryResult.ok)
        for position, entry in enumerate(entries):
            if isinstance(entry, ValidatorUpdate):
                code = self._check_update(entry, height, current, updates, position, signed)
            elif isinstance(entry, Evidence):
                code = self._check_evidence(entry, height, seen, position, signed)
                evidence.append(entry)
            else:  # a call's payload or the state root: the contract layer's
                continue
            if code is not EntryResult.ok:
                failure = (position, code)
                break
        bad = _first_bad_signature(signed, failure[0])
        if bad is not None:
            failure = bad
        return failure[0], failure[1], updates, evidence

    def _check_update(self, update: ValidatorUpdate, height: int, current: ValidatorSet,
                      updates: list, position: int, signed: list) -> EntryResult:
        if update.effective_height < height + UPDATE_DELAY_BLOCKS:
            return EntryResult.effective_too_soon
        if not is_public_key(update.key):
            return EntryResult.update_key_invalid
        indices = np.array([index for index, _ in update.approvals], np.int64)
        if indices.size and int(indices.max()) >= len(current):
            return EntryResult.unknown_approver
        if not current.quorum(current.weight_of(indices)):
            return EntryResult.too_little_approval
        if any(effective == update.effective_height and key == update.key
               for effective, _, key, _ in updates):
            return EntryResult.duplicate_update
        if not update.weight and self._would_hold(updates, update).index_of(update.key) is None:
            return EntryResult.removes_absent
        updates.append((update.effective_height, len(updates), update.key, update.weight))
        updates.sort()
        try:
            self._build(updates)
        except ConfigError:
            return EntryResult.bad_resulting_set
        message = update_message(self.chain_id, update.key, update.weight,
                                 update.effective_height)
        signed.extend(_Signed(position, current.validators[index].key, message, signature,
                              EntryResult.bad_approval) for index, signature in update.approvals)
        return EntryResult.ok

    def _would_hold(self, updates: list, update: ValidatorUpdate) -> ValidatorSet:
        # The set at the update's effective height, before the update itself.
        before = [item for item in updates if item[0] <= update.effective_height]
        return self._build(before)[1][-1]

    def _check_evidence(self, evidence: Evidence, height: int, seen: set, position: int,
                        signed: list) -> EntryResult:
        first, second = evidence.first, evidence.second
        if ((first.kind, first.height, first.round) != (second.kind, second.height, second.round)
                or first.value == second.value):
            return EntryResult.evidence_not_conflicting
        if first.height > height:
            return EntryResult.evidence_from_future
        if first.height < 1 or self.set_at(first.height).index_of(evidence.key) is None:
            return EntryResult.evidence_not_validator
        identity = _evidence_id(evidence)
        if identity in seen or identity in self._evidence_seen:
            return EntryResult.duplicate_evidence
        seen.add(identity)
        for vote in (first, second):
            message = vote_message(self.chain_id, vote.kind, vote.height, vote.round,
                                   vote.value, vote.next_validators)
            signed.append(_Signed(position, evidence.key, message, vote.signature,
                                  EntryResult.bad_evidence_signature))
        return EntryResult.ok

    def _build(self, updates: list) -> tuple[list[int], list[ValidatorSet]]:
        """The sets from genesis through every update, by effective height (ConfigError when
        one would be empty or past limits.validators_max)."""
        starts, sets = [1], [self.genesis]
        members = [(member.key, member.weight) for member in self.genesis]
        index = 0
        while index < len(updates):
            effective = updates[index][0]
            while index < len(updates) and updates[index][0] == effective:
                _changed(members, updates[index][2], updates[index][3])
                index += 1
            starts.append(effective)
            sets.append(ValidatorSet(members))
        return starts, sets


def _evidence_id(evidence: Evidence) -> tuple[bytes, int, int, int]:
    vote = evidence.first
    return evidence.key, vote.kind, vote.height, vote.round


def _first_bad_signature(signed: list[_Signed], before: int) -> tuple[int, EntryResult] | None:
    """The first entry before position ``before`` whose signature fails, in one batch call."""
    signed = [item for item in signed if item.entry < before]
    if not signed:
        return None
    rows = np.frombuffer(b"".join(item.message for item in signed), np.uint8).reshape(-1, 32)
    keys = np.frombuffer(b"".join(item.key for item in signed), np.uint8).reshape(-1, 32)
    signatures = np.frombuffer(b"".join(item.signature for item in signed), np.uint8)
    good = verify_batch(rows, keys, signatures.reshape(-1, 64), 1)
    if good.all():
        return None
    item = signed[int(np.argmin(good))]
    return item.entry, item.code

