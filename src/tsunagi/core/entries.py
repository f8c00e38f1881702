"""Block entries: the byte layout of what a block's extension holds after genesis.

Three kinds (docs/FORMAT.md, "Block entries"): a payload, the arguments of one call record,
which are longer than a 128-byte record can carry (any chain); and, on a consortium chain
(version 2 blocks), a validator update (a key's new weight from a stated height, approved by
the current set) and equivocation evidence (two conflicting signed votes of one validator).
This module knows their bytes only, so that check_block can judge an extension alone; whether
the signatures hold and the set approves is :mod:`tsunagi.consensus.validators`' question,
with the chain's context.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from tsunagi import limits
from tsunagi.core.records import payload_digest
from tsunagi.errors import EncodingError

__all__ = ["CONSORTIUM_ENTRIES", "ENTRY_EVIDENCE", "ENTRY_PAYLOAD", "ENTRY_STATE_ROOT",
           "ENTRY_VALIDATOR_UPDATE", "Evidence", "Payload", "SignedVote", "StateRoot",
           "ValidatorUpdate", "check_entries", "decode_entries", "encode_entries",
           "payload_digest", "state_root_of"]

ENTRY_VALIDATOR_UPDATE = 1
ENTRY_EVIDENCE = 2
ENTRY_PAYLOAD = 3
ENTRY_STATE_ROOT = 4
CONSORTIUM_ENTRIES = (ENTRY_VALIDATOR_UPDATE, ENTRY_EVIDENCE)  # only in version 2 blocks
VOTE_KINDS = (1, 2)  # prevote, precommit (tsunagi.consensus.tendermint.VoteKind)

_ENTRY_HEAD = struct.Struct("<BI")  # type, body length
_UPDATE_HEAD = struct.Struct("<32sQQH")  # key, weight, effective_height, approval_count
_APPROVAL = struct.Struct("<H64s")  # signer index in the current set, BIP340 signature
# kind, height, round, has_value, value (zeros for nil), next validators hash, signature
_SIGNED_VOTE = struct.Struct("<BQIB32s32s64s")
_PAYLOAD_HEAD = struct.Struct("<I")  # the index of its call record in the block
_EVIDENCE_BYTES = 32 + 2 * _SIGNED_VOTE.size
ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class SignedVote:
    """A vote as its voter signed it (tsunagi.consensus.certificate.vote_message)."""

    kind: int  # 1 prevote, 2 precommit
    height: int
    round: int
    value: bytes | None  # the 32-byte block hash voted for; None for nil
    next_validators: bytes  # the 32-byte hash of the set the voter signed as next
    signature: bytes  # 64-byte BIP340


@dataclass(frozen=True)
class ValidatorUpdate:
    """``key`` holds ``weight`` (0: leaves the set) from ``effective_height`` on."""

    key: bytes  # 32-byte x-only key
    weight: int
    effective_height: int
    approvals: tuple[tuple[int, bytes], ...]  # (index in the current set, signature), ascending


@dataclass(frozen=True)
class Evidence:
    """Two votes of validator ``key`` at one (kind, height, round) for different values."""

    key: bytes
    first: SignedVote
    second: SignedVote


@dataclass(frozen=True)
class Payload:
    """The arguments of the call record at ``record_index`` of the same block: the record's
    ``data`` is payload_digest(data) and its ``aux2`` the payload's length, so the record's
    signature covers them."""

    record_index: int
    data: bytes


@dataclass(frozen=True)
class StateRoot:
    """The root of the chain's world state after this block (a chain with contracts)."""

    root: bytes


def state_root_of(found) -> bytes | None:
    """The state root among a block's decoded entries, or None."""
    return next((entry.root for entry in found if isinstance(entry, StateRoot)), None)


def _pack_vote(vote: SignedVote) -> bytes:
    value = ZERO_HASH if vote.value is None else vote.value
    return _SIGNED_VOTE.pack(vote.kind, vote.height, vote.round, vote.value is not None,
                             value, vote.next_validators, vote.signature)


def _pack_body(entry) -> tuple[int, bytes]:
    if isinstance(entry, ValidatorUpdate):
        head = _UPDATE_HEAD.pack(entry.key, entry.weight, entry.effective_height,
                                 len(entry.approvals))
        return ENTRY_VALIDATOR_UPDATE, head + b"".join(
            _APPROVAL.pack(index, signature) for index, signature in entry.approvals)
    if isinstance(entry, Evidence):
        return ENTRY_EVIDENCE, entry.key + _pack_vote(entry.first) + _pack_vote(entry.second)
    if isinstance(entry, Payload):
        return ENTRY_PAYLOAD, _PAYLOAD_HEAD.pack(entry.record_index) + bytes(entry.data)
    if isinstance(entry, StateRoot):
        return ENTRY_STATE_ROOT, bytes(entry.root)
    raise EncodingError(f"a block entry is a ValidatorUpdate, Evidence, Payload or StateRoot, "
                        f"not {type(entry).__name__}")


def encode_entries(entries) -> bytes:
    """The extension bytes of a list of entries (empty: no entries); EncodingError when a
    field does not fit. decode_entries(encode_entries(e)) == e for entries it accepts."""
    parts = []
    for entry in entries:
        try:
            kind, body = _pack_body(entry)
        except struct.error as exc:
            raise EncodingError(f"a block entry field is out of range: {exc}") from exc
        parts.append(_ENTRY_HEAD.pack(kind, len(body)) + body)
    data = b"".join(parts)
    decode_entries(data)  # the same rules on both sides: never write what a reader refuses
    return data


def _unpack_vote(body, offset: int) -> SignedVote:
    kind, height, round_, has_value, value, next_hash, signature = \
        _SIGNED_VOTE.unpack_from(body, offset)
    if kind not in VOTE_KINDS:
        raise EncodingError(f"a vote's kind is 1 (prevote) or 2 (precommit), got {kind}")
    if has_value > 1 or (not has_value and value != ZERO_HASH):
        raise EncodingError("a nil vote has has_value 0 and a zero value; others has_value 1")
    return SignedVote(kind, height, round_, value if has_value else None, next_hash,
                      signature)


def _unpack_update(body: bytes) -> ValidatorUpdate:
    if len(body) < _UPDATE_HEAD.size:
        raise EncodingError(f"a validator update is at least {_UPDATE_HEAD.size} bytes")
    key, weight, effective_height, count = _UPDATE_HEAD.unpack_from(body)
    if len(body) != _UPDATE_HEAD.size + count * _APPROVAL.size:
        raise EncodingError(f"a validator update with {count} approvals is "
                            f"{_UPDATE_HEAD.size + count * _APPROVAL.size} bytes, "
                            f"got {len(body)}")
    if weight > limits.validator_weight_max:
        raise EncodingError(f"a validator weight is at most {limits.validator_weight_max}")
    approvals = tuple(_APPROVAL.iter_unpack(body[_UPDATE_HEAD.size:]))
    indices = [index for index, _ in approvals]
    if any(later <= earlier for earlier, later in itertools.pairwise(indices)):
        raise EncodingError("approvals come in ascending signer order, each signer once")
    return ValidatorUpdate(key, weight, effective_height, approvals)


def _unpack_payload(body: bytes) -> Payload:
    if len(body) < _PAYLOAD_HEAD.size:
        raise EncodingError(f"a payload entry is at least {_PAYLOAD_HEAD.size} bytes")
    if len(body) - _PAYLOAD_HEAD.size > limits.payload_bytes_max:
        raise EncodingError(f"a payload is at most {limits.payload_bytes_max} bytes, got "
                            f"{len(body) - _PAYLOAD_HEAD.size}")
    return Payload(_PAYLOAD_HEAD.unpack_from(body)[0], body[_PAYLOAD_HEAD.size:])


def decode_entries(data) -> list:
    """The entries of an extension after genesis, in order; EncodingError saying what is
    wrong. Payloads come in ascending record order, each record at most once."""
    data = memoryview(data).tobytes()
    entries: list[ValidatorUpdate | Evidence | Payload | StateRoot] = []
    offset = 0
    consortium = 0
    last_payload = -1
    roots = 0
    while offset < len(data):
        if offset + _ENTRY_HEAD.size > len(data):
            raise EncodingError(f"a block entry at offset {offset} is cut short")
        kind, length = _ENTRY_HEAD.unpack_from(data, offset)
        offset += _ENTRY_HEAD.size
        body = data[offset:offset + length]
        if len(body) != length:
            raise EncodingError(f"entry body of {length} bytes at offset {offset} runs past "
                                f"the {len(data)}-byte extension")
        offset += length
        consortium += kind in CONSORTIUM_ENTRIES
        if consortium > limits.consortium_entries_max:
            raise EncodingError(f"at most {limits.consortium_entries_max} consortium entries "
                                "a block")
        if kind == ENTRY_PAYLOAD:
            payload = _unpack_payload(body)
            if payload.record_index <= last_payload:
                raise EncodingError("payloads come in ascending record order, one a record")
            last_payload = payload.record_index
            entries.append(payload)
        elif kind == ENTRY_STATE_ROOT:
            roots += 1
            if length != 32 or roots > 1:
                raise EncodingError("a block has at most one state root, of 32 bytes")
            entries.append(StateRoot(body))
        elif kind == ENTRY_VALIDATOR_UPDATE:
            entries.append(_unpack_update(body))
        elif kind == ENTRY_EVIDENCE:
            if length != _EVIDENCE_BYTES:
                raise EncodingError(f"evidence is {_EVIDENCE_BYTES} bytes, got {length}")
            entries.append(Evidence(body[:32], _unpack_vote(body, 32),
                                    _unpack_vote(body, 32 + _SIGNED_VOTE.size)))
        else:
            raise EncodingError(f"unknown block entry type {kind} at offset "
                                f"{offset - length - _ENTRY_HEAD.size}")
    return entries


def check_entries(data) -> bool:
    """True when ``data`` (bytes-like) decodes as a list of consortium entries (empty too)."""
    if not len(data):
        return True
    try:
        decode_entries(data)
    except (EncodingError, struct.error):
        return False
    return True
