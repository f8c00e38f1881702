"""Commit certificates, validator sets, vote digests and consortium entries have the documented
bytes, and every rule that refuses one gives its own code.

Method: digests recomputed from docs/FORMAT.md with struct and hashlib; certificates of small
sets built with the public helpers, then spoiled one field at a time; weights chosen so that the
two-thirds boundary falls exactly on a signer; the ValidatorSchedule fed blocks of entries
that each break one rule; hypothesis for round trips and for garbage, which must give a code
(or EncodingError from a decoder), never another exception.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagi._native.sigverify import verify_batch
from tsunagi.consensus.certificate import (
    PRECOMMIT,
    PREVOTE,
    Certificate,
    CertificateCheck,
    CertResult,
    Validator,
    ValidatorSet,
    build_certificate,
    check_certificate,
    check_certificates,
    make_certificate,
    proposal_message,
    sign_vote,
    vote_message,
)
from tsunagi.consensus.validators import (
    EntryResult,
    Evidence,
    ValidatorSchedule,
    ValidatorUpdate,
    approve_update,
    decode_entries,
    encode_entries,
    signed_vote,
    update_message,
)
from tsunagi.core.keys import PrivateKey, verify
from tsunagi.errors import ConfigError, EncodingError

KEYS = [PrivateKey.from_bytes(hashlib.sha256(bytes([index])).digest()) for index in range(8)]
CHAIN_ID = hashlib.sha256(b"chain").digest()
BLOCK = hashlib.sha256(b"block").digest()
OTHER = hashlib.sha256(b"other block").digest()
# Weights 1, 2, 3, 4 (total 10): {3, 4} hold 7 > 20/3; {1, 2, 3} hold 6 <= 20/3.
WEIGHTED = ValidatorSet([(KEYS[index].public_key, index + 1) for index in range(4)])
EQUAL = ValidatorSet([(KEYS[index].public_key, 1) for index in range(4)])


def certificate(signers, validators=EQUAL, *, height=5, round=1, block=BLOCK,
                next_validators=None) -> bytes:
    return make_certificate(CHAIN_ID, height, round, block,
                            [(index, KEYS[index]) for index in signers], validators,
                            next_validators).encode()


def check(seal, validators=EQUAL, *, height=5, block=BLOCK, next_validators=None):
    return check_certificate(seal, block, height, CHAIN_ID, validators, next_validators)


def test_vote_and_proposal_digests_are_the_documented_bytes():
    next_hash = EQUAL.hash()
    expected = hashlib.sha256(b"tsunagi/vote/1" + CHAIN_ID + bytes([2])
                              + struct.pack("<QI", 7, 3) + b"\1" + BLOCK + next_hash).digest()
    assert vote_message(CHAIN_ID, PRECOMMIT, 7, 3, BLOCK, next_hash) == expected
    nil = hashlib.sha256(b"tsunagi/vote/1" + CHAIN_ID + bytes([1]) + struct.pack("<QI", 7, 3)
                         + b"\0" + bytes(32) + next_hash).digest()
    assert vote_message(CHAIN_ID, PREVOTE, 7, 3, None, next_hash) == nil
    proposal = hashlib.sha256(b"tsunagi/proposal/1" + CHAIN_ID + struct.pack("<QI", 7, 3)
                              + BLOCK + struct.pack("<q", -1)).digest()
    assert proposal_message(CHAIN_ID, 7, 3, BLOCK, -1) == proposal
    for bad in ({"kind": 3}, {"value": b"short"}, {"round": 2**32}, {"chain_id": b""}):
        arguments = {"chain_id": CHAIN_ID, "kind": PREVOTE, "height": 1, "round": 0, "value": None,
                         "next_validators": next_hash} | bad
        with pytest.raises(EncodingError):
            vote_message(**arguments)


def test_a_validator_set_encodes_hashes_and_decodes_canonically():
    data = WEIGHTED.encode()
    assert data == struct.pack("<H", 4) + b"".join(
        KEYS[index].public_key + struct.pack("<Q", index + 1) for index in range(4))
    assert WEIGHTED.hash() == hashlib.sha256(b"tsunagi/validators/1" + data).digest()
    assert ValidatorSet.decode(data) == WEIGHTED and WEIGHTED.total == 10
    assert WEIGHTED.index_of(KEYS[2].public_key) == 2 and WEIGHTED.index_of(bytes(32)) is None
    assert WEIGHTED.hash() != EQUAL.hash()
    for bad in (data[:-1], data + b"\0", struct.pack("<H", 0)):
        with pytest.raises(EncodingError):
            ValidatorSet.decode(bad)
    for members in ([], [(KEYS[0].public_key, 1)] * 2, [(KEYS[0].public_key, 0)],
                    [(b"\xff" * 32, 1)], [(KEYS[0].public_key, 2**32)]):
        with pytest.raises(ConfigError):
            ValidatorSet(members)
    assert ValidatorSet([Validator(KEYS[0].public_key, 3)]).weights == (3,)


def test_quorum_is_more_than_two_thirds_of_the_weight():
    assert check(certificate([2, 3], WEIGHTED), WEIGHTED) == CertResult.ok  # 7 of 10
    assert check(certificate([0, 1, 2], WEIGHTED), WEIGHTED) == CertResult.too_little_weight
    assert check(certificate([0, 1, 2])) == CertResult.ok  # 3 of 4
    assert check(certificate([0, 1])) == CertResult.too_little_weight  # 2 of 4
    assert check(certificate([])) == CertResult.too_little_weight
    six = ValidatorSet([(KEYS[index].public_key, 1) for index in range(6)])
    assert check(certificate(range(4), six), six) == CertResult.too_little_weight  # exactly 2/3
    assert check(certificate(range(5), six), six) == CertResult.ok


def _respoiled(seal: bytes, **changes) -> bytes:
    parsed = Certificate.decode(seal)
    fields = {"round": parsed.round, "signers": parsed.signers, "signatures": parsed.signatures,
                  "next_validators": parsed.next_validators} | changes
    return Certificate(**fields).encode()


GOOD = certificate([0, 1, 3])


def test_each_bad_certificate_gets_its_code():
    parsed = Certificate.decode(GOOD)
    signatures = parsed.signatures
    forged = (signatures[0][:10] + bytes([signatures[0][10] ^ 4]) + signatures[0][11:],)
    cases = {
        CertResult.undecodable: GOOD[:-1],
        CertResult.unknown_signer: _respoiled(GOOD, signers=(0, 1, 4)),
        CertResult.duplicate_signer: _respoiled(GOOD, signers=(0, 1, 1)),
        CertResult.unordered_signers: _respoiled(GOOD, signers=(1, 0, 3),
                                                 signatures=(signatures[1], signatures[0],
                                                             signatures[2])),
        CertResult.bad_signature: _respoiled(GOOD, signatures=forged + signatures[1:]),
        CertResult.wrong_next_set: _respoiled(GOOD, next_validators=WEIGHTED),
    }
    assert check(GOOD) == CertResult.ok
    for expected, seal in cases.items():
        assert check(seal) == expected, expected
    assert check(GOOD, height=6) == CertResult.bad_signature  # signed for another height
    assert check(GOOD, block=OTHER) == CertResult.bad_signature
    assert check_certificate(GOOD, BLOCK, 5, OTHER, EQUAL) == CertResult.bad_signature
    assert check(_respoiled(GOOD, round=2)) == CertResult.bad_signature


def test_the_next_set_is_carried_only_when_it_changes_and_is_signed():
    changing = certificate([0, 1, 2], next_validators=WEIGHTED)
    assert Certificate.decode(changing).next_validators == WEIGHTED
    assert check(changing) == CertResult.ok
    assert check(changing, next_validators=WEIGHTED) == CertResult.ok
    assert check(changing, next_validators=EQUAL) == CertResult.wrong_next_set
    assert check(GOOD, next_validators=WEIGHTED) == CertResult.wrong_next_set
    # Unchanged sets are left out, and a certificate spelling one out is refused.
    assert Certificate.decode(certificate([0, 1, 2], next_validators=EQUAL)) \
        .next_validators is None
    assert check(_respoiled(GOOD, next_validators=EQUAL)) == CertResult.wrong_next_set
    # Signed for the new set, presented as unchanged: the signatures do not hold.
    assert check(_respoiled(changing, next_validators=None)) == CertResult.bad_signature


def test_certificate_bytes_are_the_documented_layout():
    parsed = Certificate.decode(GOOD)
    expected = (struct.pack("<IH", 1, 3) + struct.pack("<3H", 0, 1, 3)
                + b"".join(parsed.signatures) + b"\0")
    assert GOOD == expected
    for index, signer in enumerate(parsed.signers):
        message = vote_message(CHAIN_ID, PRECOMMIT, 5, 1, BLOCK, EQUAL.hash())
        assert verify(KEYS[signer].public_key, message, parsed.signatures[index])
    changing = certificate([0, 1, 2], next_validators=WEIGHTED)
    assert changing.endswith(b"\1" + WEIGHTED.encode())
    with pytest.raises(EncodingError):
        Certificate(0, (1, 2), (bytes(64),)).encode()


@settings(deadline=None, max_examples=60)
@given(round=st.integers(0, 2**32 - 1), signers=st.lists(st.integers(0, 2**16 - 1),
                                                          max_size=20))
def test_certificates_round_trip(round, signers):
    signatures = tuple(bytes([index % 256]) * 64 for index in range(len(signers)))
    certificate = Certificate(round, tuple(signers), signatures, None)
    assert Certificate.decode(certificate.encode()) == certificate


@settings(deadline=None)
@given(st.binary(max_size=400))
def test_garbage_seals_get_a_code(data):
    assert isinstance(check(data), CertResult)
    assert check(data) != CertResult.ok


def test_many_certificates_in_one_batch_name_the_first_failure():
    checks = [CertificateCheck(certificate([0, 1, 2], height=height), BLOCK, height, EQUAL)
              for height in range(1, 9)]
    assert check_certificates(checks, CHAIN_ID) == (8, CertResult.ok)
    spoiled = list(checks)
    spoiled[5] = spoiled[5]._replace(height=99)  # its signatures are for height 6
    spoiled[6] = spoiled[6]._replace(seal=b"")
    assert check_certificates(spoiled, CHAIN_ID) == (5, CertResult.bad_signature)
    spoiled[5] = checks[5]
    assert check_certificates(spoiled, CHAIN_ID) == (6, CertResult.undecodable)
    assert check_certificates([], CHAIN_ID) == (0, CertResult.ok)


def test_build_certificate_sorts_the_signers():
    next_hash = EQUAL.hash()
    signed = [(index, sign_vote(KEYS[index], CHAIN_ID, PRECOMMIT, 5, 1, BLOCK, next_hash))
              for index in (3, 0, 2)]
    built = build_certificate(1, signed, EQUAL)
    assert built.signers == (0, 2, 3)
    assert check(built.encode()) == CertResult.ok


# --- consortium entries and the validator schedule ------------------------------------------

def update(key_index, weight, effective, approvers=(0, 1, 2)):
    return approve_update(CHAIN_ID, KEYS[key_index].public_key, weight, effective,
                          [(index, KEYS[index]) for index in approvers])


def vote(voter, value, *, kind=PREVOTE, height=3, round=0):
    return signed_vote(KEYS[voter], CHAIN_ID, kind, height, round, value, EQUAL.hash())


def evidence(voter=1, first=BLOCK, second=OTHER, **changes):
    return Evidence(KEYS[voter].public_key, vote(voter, first),
                    vote(voter, second, **changes))


def test_entries_round_trip_and_refuse_bad_layouts():
    entries = [update(4, 5, 10), evidence(), evidence(2, BLOCK, None)]
    data = encode_entries(entries)
    assert decode_entries(data) == entries
    assert decode_entries(b"") == []
    head = struct.pack("<BI", 1, 50)
    assert data.startswith(struct.pack("<BI", 1, 50 + 3 * 66) + KEYS[4].public_key)
    for bad in (data[:-1], data + b"\0", struct.pack("<BI", 9, 0), head + bytes(49),
                struct.pack("<BI", 2, 10) + bytes(10)):
        with pytest.raises(EncodingError):
            decode_entries(bad)
    unordered = ValidatorUpdate(KEYS[4].public_key, 1, 10, ((1, bytes(64)), (0, bytes(64))))
    with pytest.raises(EncodingError):
        encode_entries([unordered])
    assert update_message(CHAIN_ID, KEYS[4].public_key, 5, 10) == hashlib.sha256(
        b"tsunagi/validator-update/1" + CHAIN_ID + KEYS[4].public_key
        + struct.pack("<QQ", 5, 10)).digest()


def schedule(blocks=0) -> ValidatorSchedule:
    made = ValidatorSchedule(EQUAL, CHAIN_ID)
    for height in range(1, blocks + 1):
        assert made.apply_block(height, b"") == (0, EntryResult.ok)
    return made


def test_updates_change_the_set_from_their_effective_height_only():
    chain = schedule(4)
    entries = encode_entries([update(4, 5, 10), update(0, 0, 10), update(1, 3, 12)])
    assert chain.apply_block(5, entries) == (3, EntryResult.ok)
    assert chain.set_at(9) == EQUAL and chain.set_at(0) == EQUAL
    keys = [validator.key for validator in chain.set_at(10)]
    assert keys == [KEYS[1].public_key, KEYS[2].public_key, KEYS[3].public_key,
                    KEYS[4].public_key]
    assert chain.set_at(10).total == 1 + 1 + 1 + 5
    assert chain.set_at(12).weights == (3, 1, 1, 5) and chain.set_at(10_000).weights == (3, 1,
                                                                                        1, 5)
    with pytest.raises(ValueError):
        chain.apply_block(7, b"")


def _approvals_forged() -> ValidatorUpdate:
    made = update(4, 1, 10)
    approvals = list(made.approvals)
    approvals[2] = (approvals[2][0], bytes(64))
    return ValidatorUpdate(made.key, made.weight, made.effective_height, tuple(approvals))


ENTRY_FAULTS = [
    (EntryResult.undecodable, lambda: b"\x07"),
    (EntryResult.effective_too_soon, lambda: [update(4, 1, 6)]),
    (EntryResult.update_key_invalid, lambda: [ValidatorUpdate(b"\xff" * 32, 1, 10, ())]),
    (EntryResult.unknown_approver, lambda: [update(4, 1, 10, approvers=(0, 1, 5))]),
    (EntryResult.too_little_approval, lambda: [update(4, 1, 10, approvers=(0, 1))]),
    (EntryResult.bad_approval, lambda: [_approvals_forged()]),
    (EntryResult.removes_absent, lambda: [update(6, 0, 10)]),
    (EntryResult.bad_resulting_set, lambda: [update(index, 0, 10) for index in range(4)]),
    (EntryResult.duplicate_update, lambda: [update(4, 1, 10), update(4, 2, 10)]),
    (EntryResult.evidence_not_conflicting, lambda: [evidence(first=BLOCK, second=BLOCK)]),
    (EntryResult.evidence_not_conflicting, lambda: [evidence(round=1)]),
    (EntryResult.evidence_from_future,
     lambda: [Evidence(KEYS[1].public_key, vote(1, BLOCK, height=6), vote(1, OTHER, height=6))]),
    (EntryResult.evidence_not_validator, lambda: [evidence(voter=6)]),
    (EntryResult.bad_evidence_signature,
     lambda: [Evidence(KEYS[1].public_key, vote(1, BLOCK), vote(2, OTHER))]),
    (EntryResult.duplicate_evidence, lambda: [evidence(), evidence(second=None)]),
]


@pytest.mark.parametrize(("expected", "entries"), ENTRY_FAULTS,
                         ids=[f"{case[0].name}-{index}" for index, case in
                              enumerate(ENTRY_FAULTS)])
def test_each_bad_entry_gets_its_code_and_changes_nothing(expected, entries):
    chain = schedule(4)
    made = entries()
    data = made if isinstance(made, bytes) else encode_entries(made)
    position, result = chain.apply_block(5, data)
    assert result == expected
    assert position == (len(made) - 1 if isinstance(made, list) else 0)
    assert chain.height == 4 and chain.set_at(10) == EQUAL and chain.evidence == []
    # A good entry in front moves the position on: the first bad one is named.
    if isinstance(made, list):
        assert chain.check_block(5, encode_entries([update(7, 1, 20)] + made)) == (
            len(made), expected)


def test_evidence_is_recorded_once():
    chain = schedule(4)
    assert chain.apply_block(5, encode_entries([evidence()])) == (1, EntryResult.ok)
    assert [height for height, _ in chain.evidence] == [5]
    assert chain.apply_block(6, encode_entries([evidence(second=None)])) == (
        0, EntryResult.duplicate_evidence)
    assert chain.apply_block(6, encode_entries([evidence(voter=2)])) == (1, EntryResult.ok)


def test_entry_signatures_are_the_native_verifiers_answers():
    made = evidence()
    messages = [vote_message(CHAIN_ID, item.kind, item.height, item.round, item.value,
                             item.next_validators) for item in (made.first, made.second)]
    good = verify_batch(b"".join(messages), made.key * 2,
                        made.first.signature + made.second.signature)
    assert good.tolist() == [True, True]
