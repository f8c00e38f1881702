"""Commit certificates of a consortium chain: validator sets, vote digests, and the check that
validators holding more than two thirds of the weight signed a block (docs/FORMAT.md).

A validator signs BIP340 over a 32-byte vote digest (:func:`vote_message`) that names the
chain (its genesis block hash), the vote's kind, height and round, the block hash voted for
(or nil), and the hash of the validator set of the next height. A block's certificate is the
precommits of one round for its hash, as (signer index, signature) pairs, plus the next set
when it differs from this one: so a light client holding the genesis set follows every change
from headers and certificates alone (tsunagi.consensus.light). Signatures of one certificate,
or of many, are checked in one call of the native batch verifier.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from tsunagi import limits
from tsunagi._native.sigverify import check_keys, verify_batch
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError, EncodingError

__all__ = [
    "PRECOMMIT", "PREVOTE", "PROPOSAL_TAG", "VALIDATORS_TAG", "VOTE_TAG", "CertResult",
    "Certificate", "CertificateCheck", "Followed", "Validator", "ValidatorSet",
    "build_certificate", "check_certificate", "check_certificates", "follow_certificates",
    "make_certificate", "proposal_message", "sign_proposal", "sign_vote", "vote_message",
]

VOTE_TAG = b"tsunagi/vote/1"
PROPOSAL_TAG = b"tsunagi/proposal/1"
VALIDATORS_TAG = b"tsunagi/validators/1"
PREVOTE, PRECOMMIT = 1, 2  # tsunagi.consensus.tendermint.VoteKind's values
ZERO_HASH = bytes(32)

_VOTE = struct.Struct(f"<{len(VOTE_TAG)}s32sBQIB32s32s")
_PROPOSAL = struct.Struct(f"<{len(PROPOSAL_TAG)}s32sQI32sq")
_COUNT = struct.Struct("<H")
_VALIDATOR = struct.Struct("<32sQ")  # key, weight
_CERT_HEAD = struct.Struct("<IH")  # round, signer_count
SIGNATURE_BYTES = 64


class CertResult(IntEnum):
    """Why a certificate does not show a block final; 0 is ok. Values are never reused."""

    ok = 0  # validators with more than 2/3 of the weight signed precommits for the block
    undecodable = 1  # the bytes are not a certificate (sizes, flags, an invalid next set)
    unknown_signer = 2  # a signer index is not in the validator set
    duplicate_signer = 3  # one signer index appears twice
    too_little_weight = 4  # the signers hold 2/3 of the weight or less
    bad_signature = 5  # a signature does not verify over the precommit digest
    wrong_next_set = 6  # the next set is not the one expected, or the signers signed another
    unordered_signers = 7  # signer indices are not in ascending order


@dataclass(frozen=True)
class Validator:
    key: bytes  # 32-byte x-only BIP340 key
    weight: int  # >= 1


class ValidatorSet:
    """An ordered set of validators: a signer is named by its index. Immutable."""

    __slots__ = ("_hash", "_index", "_weight_array", "keys", "total", "validators", "weights")

    def __init__(self, validators: Iterable[Validator | tuple[bytes, int]]) -> None:
        members = tuple(item if isinstance(item, Validator) else Validator(bytes(item[0]),
                                                                          item[1])
                        for item in validators)
        if not 1 <= len(members) <= limits.validators_max:
            raise ConfigError(f"a validator set holds 1..{limits.validators_max} validators, "
                              f"got {len(members)}")
        for member in members:
            weight = member.weight
            if not isinstance(weight, int) or isinstance(weight, bool) \
                    or not 1 <= weight <= limits.validator_weight_max:
                raise ConfigError(f"a validator weight is in [1, {limits.validator_weight_max}]"
                                  f", got {weight!r}")
            if not isinstance(member.key, bytes) or len(member.key) != 32:
                raise ConfigError("a validator key is 32 bytes")
        keys = np.frombuffer(b"".join(member.key for member in members), np.uint8)
        keys = keys.reshape(len(members), 32)
        if not check_keys(keys).all():
            raise ConfigError("a validator key is not a valid x-only secp256k1 key")
        self._index = {member.key: index for index, member in enumerate(members)}
        if len(self._index) != len(members):
            raise ConfigError("a validator key is listed twice in one set")
        keys.setflags(write=False)
        self.validators = members
        self.keys = keys  # N x 32 uint8, for gathering signers' keys without a loop
        self.weights = tuple(member.weight for member in members)
        self._weight_array = np.array(self.weights, np.int64)
        self.total = sum(self.weights)
        self._hash: bytes | None = None

    @classmethod
    def from_config(cls, config: ChainConfig) -> ValidatorSet:
        """The genesis set of a consortium chain's config, in config order."""
        return cls(config.validators)

    def encode(self) -> bytes:
        """count u16, then (key 32, weight u64) per validator, in index order."""
        return _COUNT.pack(len(self.validators)) + b"".join(
            _VALIDATOR.pack(member.key, member.weight) for member in self.validators)

    @classmethod
    def decode(cls, data) -> ValidatorSet:
        """The set of exactly these bytes; EncodingError when they are not a valid set."""
        set_, end = cls._decode_from(memoryview(data).tobytes(), 0)
        if end != len(data):
            raise EncodingError(f"a validator set of {len(set_)} is {end} bytes, "
                                f"got {len(data)}")
        return set_

    @classmethod
    def _decode_from(cls, data: bytes, offset: int) -> tuple[ValidatorSet, int]:
        if offset + _COUNT.size > len(data):
            raise EncodingError("a validator set begins with its count (u16)")
        count = _COUNT.unpack_from(data, offset)[0]
        end = offset + _COUNT.size + count * _VALIDATOR.size
        if end > len(data):
            raise EncodingError(f"a validator set of {count} needs {end - offset} bytes")
        members = list(_VALIDATOR.iter_unpack(data[offset + _COUNT.size:end]))
        try:
            return cls(members), end
        except ConfigError as exc:
            raise EncodingError(f"not a valid validator set: {exc}") from exc

    def hash(self) -> bytes:
        """SHA-256(VALIDATORS_TAG || encode()): what votes sign as the next set."""
        if self._hash is None:
            self._hash = hashlib.sha256(VALIDATORS_TAG + self.encode()).digest()
        return self._hash

    def index_of(self, key: bytes) -> int | None:
        return self._index.get(bytes(key))

    def quorum(self, weight: int) -> bool:
        """More than two thirds of the total weight."""
        return 3 * weight > 2 * self.total

    def weight_of(self, indices: np.ndarray) -> int:
        """The weight of the validators at ``indices`` (valid, distinct)."""
        return int(self._weight_array[indices].sum())

    def __len__(self) -> int:
        return len(self.validators)

    def __iter__(self):
        return iter(self.validators)

    def __eq__(self, other) -> bool:
        return isinstance(other, ValidatorSet) and self.validators == other.validators

    def __hash__(self) -> int:
        return hash(self.validators)

    def __repr__(self) -> str:
        return f"ValidatorSet({len(self)} validators, total weight {self.total})"


def _digest(what: str, data: bytes) -> bytes:
    if len(data) != 32:
        raise EncodingError(f"{what} is 32 bytes, got {len(data)}")
    return data


def vote_message(chain_id: bytes, kind: int, height: int, round: int, value: bytes | None,
                 next_validators: bytes) -> bytes:
    """The 32-byte digest a validator signs for a vote: SHA-256 of VOTE_TAG, chain_id (the
    genesis block hash), kind u8 (1 prevote, 2 precommit), height u64, round u32, has_value u8,
    value (the block hash, or 32 zero bytes for nil), next_validators (the hash of the next
    height's set)."""
    if kind not in (PREVOTE, PRECOMMIT):
        raise EncodingError(f"a vote's kind is {PREVOTE} or {PRECOMMIT}, got {kind}")
    try:
        packed = _VOTE.pack(VOTE_TAG, _digest("chain_id", chain_id), kind, height, round,
                            value is not None,
                            ZERO_HASH if value is None else _digest("a value", value),
                            _digest("next_validators", next_validators))
    except struct.error as exc:
        raise EncodingError(f"height is u64 and round u32: {exc}") from exc
    return hashlib.sha256(packed).digest()


def proposal_message(chain_id: bytes, height: int, round: int, value: bytes,
                     valid_round: int) -> bytes:
    """The 32-byte digest a proposer signs: SHA-256 of PROPOSAL_TAG, chain_id, height u64,
    round u32, value (the block hash), valid_round i64 (-1: none)."""
    if not -1 <= valid_round < round:
        raise EncodingError(f"valid_round is -1 or below the round {round}, got {valid_round}")
    try:
        packed = _PROPOSAL.pack(PROPOSAL_TAG, _digest("chain_id", chain_id), height, round,
                                _digest("a value", value), valid_round)
    except struct.error as exc:
        raise EncodingError(f"height is u64 and round u32: {exc}") from exc
    return hashlib.sha256(packed).digest()


def sign_vote(private_key: PrivateKey, chain_id: bytes, kind: int, height: int, round: int,
              value: bytes | None, next_validators: bytes) -> bytes:
    """BIP340 signature (64 bytes) of vote_message(...)."""
    return private_key.sign(vote_message(chain_id, kind, height, round, value,
                                         next_validators))


def sign_proposal(private_key: PrivateKey, chain_id: bytes, height: int, round: int,
                  value: bytes, valid_round: int) -> bytes:
    """BIP340 signature (64 bytes) of proposal_message(...)."""
    return private_key.sign(proposal_message(chain_id, height, round, value, valid_round))


@dataclass(frozen=True)
class Certificate:
    """Precommits of one round for a block: signers ascending, a signature each, and the next
    height's set when it differs from this height's (None: unchanged)."""

    round: int
    signers: tuple[int, ...]
    signatures: tuple[bytes, ...]
    next_validators: ValidatorSet | None = None

    def encode(self) -> bytes:
        """round u32, signer_count u16, signers u16 each, signatures 64 bytes each,
        has_next u8, then the next set's encoding when has_next is 1."""
        count = len(self.signers)
        if count != len(self.signatures) or count > limits.validators_max:
            raise EncodingError(f"a certificate holds one signature a signer, at most "
                                f"{limits.validators_max}: got {count} signers and "
                                f"{len(self.signatures)} signatures")
        if any(len(signature) != SIGNATURE_BYTES for signature in self.signatures):
            raise EncodingError(f"a signature is {SIGNATURE_BYTES} bytes")
        try:
            head = _CERT_HEAD.pack(self.round, count) + struct.pack(f"<{count}H", *self.signers)
        except struct.error as exc:
            raise EncodingError(f"round is u32 and signer indices u16: {exc}") from exc
        tail = b"\0" if self.next_validators is None else b"\1" + self.next_validators.encode()
        return head + b"".join(self.signatures) + tail

    @classmethod
    def decode(cls, data) -> Certificate:
        """The certificate of exactly these bytes; EncodingError on a bad layout (the order and
        validity of signers are check_certificate's question)."""
        parsed = _parse(memoryview(data).tobytes())
        return cls(parsed.round, tuple(int(index) for index in parsed.signers),
                   tuple(row.tobytes() for row in parsed.signatures), parsed.next_validators)


class _Parsed(NamedTuple):
    round: int
    signers: np.ndarray  # u16
    signatures: np.ndarray  # N x 64 uint8
    next_validators: ValidatorSet | None


def _parse(data: bytes) -> _Parsed:
    if len(data) < _CERT_HEAD.size + 1:
        raise EncodingError(f"a certificate is at least {_CERT_HEAD.size + 1} bytes")
    round_, count = _CERT_HEAD.unpack_from(data)
    if count > limits.validators_max:
        raise EncodingError(f"at most {limits.validators_max} signers, got {count}")
    signatures_at = _CERT_HEAD.size + 2 * count
    flag_at = signatures_at + SIGNATURE_BYTES * count
    if flag_at + 1 > len(data):
        raise EncodingError(f"{count} signers need {flag_at + 1} bytes, got {len(data)}")
    signers = np.frombuffer(data, "<u2", count, _CERT_HEAD.size)
    signatures = np.frombuffer(data, np.uint8, SIGNATURE_BYTES * count, signatures_at)
    flag, next_validators, end = data[flag_at], None, flag_at + 1
    if flag == 1:
        next_validators, end = ValidatorSet._decode_from(data, end)
    elif flag:
        raise EncodingError(f"has_next is 0 or 1, got {flag}")
    if end != len(data):
        raise EncodingError(f"a certificate of {count} signers is {end} bytes, got {len(data)}")
    return _Parsed(round_, signers, signatures.reshape(count, SIGNATURE_BYTES), next_validators)


def build_certificate(round: int, signed: Iterable[tuple[int, bytes]],
                      validators: ValidatorSet,
                      next_validators: ValidatorSet | None = None) -> Certificate:
    """A certificate from (signer index, precommit signature) pairs in any order; the next
    height's set (None: the same as ``validators``) is carried only when it differs."""
    pairs = sorted(signed)
    if next_validators is not None and next_validators.hash() == validators.hash():
        next_validators = None
    return Certificate(round, tuple(index for index, _ in pairs),
                       tuple(signature for _, signature in pairs), next_validators)


def make_certificate(chain_id: bytes, height: int, round: int, block_hash: bytes,
                     signers: Iterable[tuple[int, PrivateKey]], validators: ValidatorSet,
                     next_validators: ValidatorSet | None = None) -> Certificate:
    """Signs the precommits of ``signers`` ((index, key) pairs) and builds their certificate:
    what a development chain of one validator, and the tests, need."""
    next_hash = (validators if next_validators is None else next_validators).hash()
    signed = [(index, sign_vote(key, chain_id, PRECOMMIT, height, round, block_hash, next_hash))
              for index, key in signers]
    return build_certificate(round, signed, validators, next_validators)


class _Prepared(NamedTuple):
    message: bytes  # the precommit digest every signature must sign
    keys: np.ndarray  # N x 32, the signers' keys
    signatures: np.ndarray  # N x 64
    next_validators: ValidatorSet  # the set of the next height the certificate names
    unchanged_message: bytes | None  # the digest had the set stayed (for wrong_next_set)


def _prepare(seal, block_hash: bytes, height: int, chain_id: bytes, validators: ValidatorSet,
             expected_next: ValidatorSet | None) -> _Prepared | CertResult:
    """Every check of a certificate but its signatures, cheapest first."""
    if len(seal) > limits.seal_bytes_max:
        return CertResult.undecodable
    try:
        parsed = _parse(memoryview(seal).tobytes())
    except EncodingError:
        return CertResult.undecodable
    # A list: for the few signers of a certificate, Python's max and sum beat numpy's calls.
    signers = parsed.signers.tolist()
    if signers and max(signers) >= len(validators):
        return CertResult.unknown_signer
    if any(later <= earlier for earlier, later in itertools.pairwise(signers)):
        if len(set(signers)) != len(signers):
            return CertResult.duplicate_signer
        return CertResult.unordered_signers
    carried = parsed.next_validators
    next_set = validators if carried is None else carried
    if carried is not None and carried.hash() == validators.hash():
        return CertResult.wrong_next_set  # carried only when it changes: one encoding
    if expected_next is not None and next_set.hash() != expected_next.hash():
        return CertResult.wrong_next_set
    weights = validators.weights
    if not validators.quorum(sum(weights[index] for index in signers)):
        return CertResult.too_little_weight
    message = vote_message(chain_id, PRECOMMIT, height, parsed.round, block_hash,
                           next_set.hash())
    unchanged = None if carried is None else vote_message(
        chain_id, PRECOMMIT, height, parsed.round, block_hash, validators.hash())
    return _Prepared(message, validators.keys[signers], parsed.signatures, next_set, unchanged)


def _first_bad(prepared: Sequence[_Prepared], threads: int) -> tuple[int, CertResult]:
    """(index of the first certificate with a bad signature, its code), or (len, ok): all
    signatures of all of them in one native batch call."""
    counts = np.array([len(item.signatures) for item in prepared], np.int64)
    if not counts.sum():
        return len(prepared), CertResult.ok
    messages = np.frombuffer(b"".join(item.message * len(item.signatures)
                                      for item in prepared), np.uint8).reshape(-1, 32)
    good = verify_batch(messages, np.concatenate([item.keys for item in prepared]),
                        np.concatenate([item.signatures for item in prepared]), threads)
    if good.all():
        return len(prepared), CertResult.ok
    position = int(np.searchsorted(np.cumsum(counts), int(np.argmin(good)), side="right"))
    item = prepared[position]
    if item.unchanged_message is not None:  # signed that the set stays, claims it changes?
        count = len(item.signatures)
        retry = np.frombuffer(item.unchanged_message * count, np.uint8).reshape(count, 32)
        if verify_batch(retry, item.keys, item.signatures, threads).all():
            return position, CertResult.wrong_next_set
    return position, CertResult.bad_signature


def check_certificate(cert_bytes, block_hash: bytes, height: int, chain_id: bytes,
                      validators: ValidatorSet, next_validators: ValidatorSet | None = None,
                      threads: int = 1) -> CertResult:
    """Whether ``cert_bytes`` shows the block ``block_hash`` at ``height`` final: signers of
    ``validators`` (the set at that height) holding more than 2/3 of its weight signed
    precommits for it, over the hash of the next height's set. ``next_validators`` is that set
    when the caller knows it (a full node, from its ValidatorSchedule): the certificate must
    name the same one; None takes the certificate's word (a light client). Signatures are
    checked in one native batch call on ``threads`` threads."""
    prepared = _prepare(cert_bytes, block_hash, height, chain_id, validators, next_validators)
    if isinstance(prepared, CertResult):
        return prepared
    return _first_bad([prepared], threads)[1]


class CertificateCheck(NamedTuple):
    """One block's certificate to check, with the sets of its height and the next."""

    seal: bytes
    block_hash: bytes
    height: int
    validators: ValidatorSet
    next_validators: ValidatorSet | None = None


def check_certificates(checks: Iterable[CertificateCheck], chain_id: bytes,
                       threads: int = 1) -> tuple[int, CertResult]:
    """check_certificate of many blocks, every signature in one native batch call: (position
    of the first certificate that fails, its code), or (count, ok)."""
    prepared: list[_Prepared] = []
    failure = None
    for check in checks:
        item = _prepare(check.seal, check.block_hash, check.height, chain_id, check.validators,
                        check.next_validators)
        if isinstance(item, CertResult):
            failure = item
            break
        prepared.append(item)
    position, result = _first_bad(prepared, threads)
    if result is CertResult.ok and failure is not None:
        return len(prepared), failure
    return position, result


class Followed(NamedTuple):
    """What follow_certificates found: how many certificates held, the first failure's code
    (ok when all held), and the set of the height after the last one that held."""

    count: int
    result: CertResult
    validators: ValidatorSet


def follow_certificates(seals: Sequence, block_hashes: Sequence[bytes], first_height: int,
                        chain_id: bytes, validators: ValidatorSet,
                        threads: int = 1) -> Followed:
    """The certificates of consecutive blocks from ``first_height``, the set moving on as
    each certificate names the next: what a light client needs, all signatures in one
    native batch call."""
    prepared: list[_Prepared] = []
    sets = [validators]
    failure = None
    for offset, (seal, block_hash) in enumerate(zip(seals, block_hashes, strict=True)):
        item = _prepare(seal, block_hash, first_height + offset, chain_id, sets[-1], None)
        if isinstance(item, CertResult):
            failure = item
            break
        prepared.append(item)
        sets.append(item.next_validators)
    position, result = _first_bad(prepared, threads)
    if result is CertResult.ok and failure is not None:
        position, result = len(prepared), failure
    return Followed(position, result, sets[position])
