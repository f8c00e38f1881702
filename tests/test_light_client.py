"""A light client and a full node check a consortium chain of 10,000 blocks from headers and
commit certificates alone, following a validator set change mid-chain, and refuse each kind of
bad certificate or header with its code at the height where it is.

Method: one chain of 10,000 empty version 2 blocks, each sealed by a certificate of 3 of 4
validators (signers rotating), built once for the module. Block 4,000 carries validator
updates (4 validators approve removing D and adding E from height 5,000), so block 4,999's
certificate names the new set. The light client follows headers and seals; the full node
decodes every block, runs check_block, applies its entries to a ValidatorSchedule and checks
every certificate against the schedule's sets in one batch. Then one seal or header at a time
is spoiled and the client must stop exactly there, having taken every block before it.
"""

from __future__ import annotations

import hashlib

import pytest

from tsunagi.consensus.certificate import (
    PRECOMMIT,
    Certificate,
    CertificateCheck,
    CertResult,
    ValidatorSet,
    build_certificate,
    check_certificate,
    check_certificates,
    make_certificate,
    sign_vote,
)
from tsunagi.consensus.light import LightCheck, LightClient, LightResult
from tsunagi.consensus.validators import EntryResult, ValidatorSchedule, approve_update
from tsunagi.core.block import (
    BLOCK_VERSION_CONSORTIUM,
    BlockResult,
    check_block,
    decode_block,
    encode_block,
    with_seal,
)
from tsunagi.core.entries import encode_entries
from tsunagi.core.keys import PrivateKey

BLOCKS = 10_000
UPDATE_HEIGHT, CHANGE_HEIGHT = 4_000, 5_000
KEYS = {name: PrivateKey.from_bytes(hashlib.sha256(name.encode()).digest())
        for name in "ABCDEF"}
GENESIS_SET = ValidatorSet([(KEYS[name].public_key, 1) for name in "ABCD"])
NEW_SET = ValidatorSet([(KEYS[name].public_key, 1) for name in "ABCE"])
GENESIS_HASH = hashlib.sha256(b"genesis of the consortium test chain").digest()
CHAIN_ID = GENESIS_HASH


def signers_of(height: int, names: str) -> list[tuple[int, PrivateKey]]:
    """Three of the four, a different one left out at each height."""
    keys = [(index, KEYS[name]) for index, name in enumerate(names)]
    del keys[height % 4]
    return keys


class Chain:
    def __init__(self) -> None:
        self.blocks: list[bytes] = []  # index i: height i + 1
        self.headers: list[bytes] = []
        self.seals: list[bytes] = []
        self.hashes: list[bytes] = []


def _updates() -> bytes:
    approvers = signers_of(UPDATE_HEIGHT, "ABCD")
    return encode_entries([
        approve_update(CHAIN_ID, KEYS["D"].public_key, 0, CHANGE_HEIGHT, approvers),
        approve_update(CHAIN_ID, KEYS["E"].public_key, 1, CHANGE_HEIGHT, approvers)])


@pytest.fixture(scope="module")
def chain() -> Chain:
    built, previous = Chain(), GENESIS_HASH
    for height in range(1, BLOCKS + 1):
        extension = _updates() if height == UPDATE_HEIGHT else b""
        data = encode_block(prev_hash=previous, time=1_700_000_000 + height, bits=0,
                            records=b"", codes=b"", signatures=b"", extension=extension,
                            version=BLOCK_VERSION_CONSORTIUM)
        block = decode_block(data)
        names = "ABCD" if height < CHANGE_HEIGHT else "ABCE"
        validators = GENESIS_SET if height < CHANGE_HEIGHT else NEW_SET
        following = NEW_SET if height + 1 >= CHANGE_HEIGHT else GENESIS_SET
        seal = make_certificate(CHAIN_ID, height, height % 3, block.hash,
                                signers_of(height, names), validators, following).encode()
        built.blocks.append(bytes(with_seal(data, seal)))
        built.headers.append(bytes(data[:80]))
        built.seals.append(seal)
        built.hashes.append(block.hash)
        previous = block.hash
    return built


def client() -> LightClient:
    return LightClient(CHAIN_ID, GENESIS_HASH, GENESIS_SET, threads=2)


def test_a_light_client_follows_10000_blocks_and_a_set_change(chain):
    light = client()
    assert light.check_many(b"".join(chain.headers), chain.seals) == (BLOCKS, LightResult.ok)
    assert light.height == BLOCKS and light.tip_hash == chain.hashes[-1]
    assert light.validators == NEW_SET
    # Only block 4,999's certificate names a next set; every other one is unchanged.
    carried = [height for height, seal in enumerate(chain.seals, 1)
               if Certificate.decode(seal).next_validators is not None]
    assert carried == [CHANGE_HEIGHT - 1]


def test_one_block_at_a_time_gives_the_same_answers(chain):
    light = client()
    for height in range(1, 200):
        assert light.check(chain.headers[height - 1], chain.seals[height - 1]) == (
            height, LightResult.ok)


def test_a_full_node_checks_the_same_blocks_with_its_schedule(chain):
    schedule = ValidatorSchedule(GENESIS_SET, CHAIN_ID)
    checks = []
    for height, data in enumerate(chain.blocks, 1):
        block = decode_block(data)
        assert check_block(block) == BlockResult.ok
        assert bytes(block.seal) == chain.seals[height - 1]
        # Entries of blocks below height - 1 fix the sets of height and height + 1.
        checks.append(CertificateCheck(bytes(block.seal), block.hash, height,
                                       schedule.set_at(height), schedule.set_at(height + 1)))
        assert schedule.apply_block(height, block.extension) == (
            2 if height == UPDATE_HEIGHT else 0, EntryResult.ok)
    assert schedule.set_at(CHANGE_HEIGHT - 1) == GENESIS_SET
    assert schedule.set_at(CHANGE_HEIGHT) == NEW_SET
    assert check_certificates(checks, CHAIN_ID, threads=2) == (BLOCKS, CertResult.ok)
    # A node that expects the old set to stay refuses block 4,999's certificate.
    height = CHANGE_HEIGHT - 1
    assert check_certificate(chain.seals[height - 1], chain.hashes[height - 1], height,
                             CHAIN_ID, GENESIS_SET, GENESIS_SET) == CertResult.wrong_next_set


def _spoiled_seal(height: int, **changes) -> bytes:
    """The certificate of ``height`` with fields replaced (signatures kept or given)."""
    certificate = Certificate.decode(CHAIN.seals[height - 1])
    fields = {"round": certificate.round, "signers": certificate.signers,
              "signatures": certificate.signatures,
              "next_validators": certificate.next_validators}
    fields.update(changes)
    return Certificate(**fields).encode()


def _forged(height: int) -> bytes:
    certificate = Certificate.decode(CHAIN.seals[height - 1])
    signatures = list(certificate.signatures)
    signatures[1] = bytes([signatures[1][0] ^ 1]) + signatures[1][1:]
    return _spoiled_seal(height, signatures=tuple(signatures))


def _two_signers(height: int) -> bytes:
    certificate = Certificate.decode(CHAIN.seals[height - 1])
    return _spoiled_seal(height, signers=certificate.signers[:2],
                         signatures=certificate.signatures[:2])


def _outsider(height: int) -> bytes:
    # F signs as a fifth validator, index 4: no such index in a set of 4.
    certificate = Certificate.decode(CHAIN.seals[height - 1])
    signature = sign_vote(KEYS["F"], CHAIN_ID, PRECOMMIT, height, certificate.round,
                          CHAIN.hashes[height - 1], NEW_SET.hash())
    return _spoiled_seal(height, signers=certificate.signers + (4,),
                         signatures=certificate.signatures + (signature,))


def _duplicated(height: int) -> bytes:
    certificate = Certificate.decode(CHAIN.seals[height - 1])
    return _spoiled_seal(height, signers=certificate.signers[:1] + certificate.signers,
                         signatures=certificate.signatures[:1] + certificate.signatures)


def _removed_signer(height: int) -> bytes:
    # D, removed at 5,000, signs under its old index 3, which is now E's.
    certificate = Certificate.decode(CHAIN.seals[height - 1])
    signed = dict(zip(certificate.signers, certificate.signatures))
    signed[3] = sign_vote(KEYS["D"], CHAIN_ID, PRECOMMIT, height, certificate.round,
                          CHAIN.hashes[height - 1], NEW_SET.hash())
    return build_certificate(certificate.round, signed.items(), NEW_SET).encode()


OTHER_SET = ValidatorSet([(KEYS[name].public_key, 1) for name in "ABCF"])
CHAIN: Chain  # set by the autouse fixture below, for the spoilers above


@pytest.fixture(autouse=True, scope="module")
def _chain_for_spoilers(chain):
    global CHAIN
    CHAIN = chain


SEAL_FAULTS = [
    ("too little weight", 7_000, _two_signers, LightResult.too_little_weight),
    ("forged signature", 3_000, _forged, LightResult.bad_signature),
    ("signer not in the set", 6_001, _outsider, LightResult.unknown_signer),
    ("removed validator signs", 6_002, _removed_signer, LightResult.bad_signature),
    ("duplicated signer", 2_000, _duplicated, LightResult.duplicate_signer),
    ("claims a change nobody signed", 3_500,
     lambda height: _spoiled_seal(height, next_validators=OTHER_SET), LightResult.wrong_next_set),
    ("carries the unchanged set", 3_600,
     lambda height: _spoiled_seal(height, next_validators=GENESIS_SET),
     LightResult.wrong_next_set),
    ("swaps the new set", CHANGE_HEIGHT - 1,
     lambda height: _spoiled_seal(height, next_validators=OTHER_SET), LightResult.bad_signature),
    ("hides the new set", CHANGE_HEIGHT - 1,
     lambda height: _spoiled_seal(height, next_validators=None), LightResult.bad_signature),
    ("not a certificate", 9_999, lambda height: b"\x01\x02", LightResult.undecodable),
]


@pytest.mark.parametrize(("height", "spoil", "expected"),
                         [case[1:] for case in SEAL_FAULTS], ids=[c[0] for c in SEAL_FAULTS])
def test_a_bad_certificate_is_refused_with_its_code_at_its_height(chain, height, spoil,
                                                                  expected):
    seals = list(chain.seals)
    seals[height - 1] = spoil(height)
    light = client()
    assert light.check_many(b"".join(chain.headers), seals) == LightCheck(height, expected)
    assert light.height == height - 1 and light.tip_hash == chain.hashes[height - 2]
    # The blocks from there on are taken once the real certificate comes.
    assert light.check_many(b"".join(chain.headers[height - 1:]), chain.seals[height - 1:]) \
        == (BLOCKS, LightResult.ok)


def _header_with(header: bytes, offset: int, value: bytes) -> bytes:
    return header[:offset] + value + header[offset + len(value):]


HEADER_FAULTS = [
    ("broken link", 8_000, lambda h: _header_with(h, 4, bytes(32)), LightResult.broken_link),
    ("version 1", 8_001, lambda h: _header_with(h, 0, b"\1\0\0\0"), LightResult.bad_version),
    ("bits", 8_002, lambda h: _header_with(h, 72, b"\xff\xff\x7f\x20"), LightResult.has_work),
    ("nonce", 8_003, lambda h: _header_with(h, 76, b"\1\0\0\0"), LightResult.has_work),
]


@pytest.mark.parametrize(("height", "spoil", "expected"),
                         [case[1:] for case in HEADER_FAULTS],
                         ids=[c[0] for c in HEADER_FAULTS])
def test_a_bad_header_is_refused_with_its_code_at_its_height(chain, height, spoil, expected):
    headers = list(chain.headers)
    headers[height - 1] = spoil(headers[height - 1])
    light = LightClient(CHAIN_ID, chain.hashes[7_000 - 1], NEW_SET, height=7_000, threads=2)
    assert light.check_many(headers[7_000:], chain.seals[7_000:]) == LightCheck(height, expected)
    assert light.height == height - 1


def test_a_bad_certificate_before_a_bad_header_is_the_one_named(chain):
    headers, seals = list(chain.headers), list(chain.seals)
    headers[9_000 - 1] = _header_with(headers[9_000 - 1], 4, bytes(32))
    seals[8_500 - 1] = _two_signers(8_500)
    light = LightClient(CHAIN_ID, chain.hashes[8_000 - 1], NEW_SET, height=8_000)
    assert light.check_many(headers[8_000:], seals[8_000:]) == (8_500,
                                                                LightResult.too_little_weight)
