"""SLIP-0039 mnemonics pass the 45 published vectors: each valid set recombines to its master
secret (and its BIP-32 master key), each invalid set is refused with the specific ShareError of
its fault; and tsunagi's native kernel interpolates the vectors' shares exactly as SLIP-0039 does.

Method: the vectors come from ../shared/testdata/slip39 (trezor/python-shamir-mnemonic), read
with the passphrase "TREZOR" they were made with; the expected error class of each invalid
vector follows from its description. The BIP-32 key is computed here with hmac and a small
base58 encoder. The kernel check decodes the vectors' mnemonics with shamir-mnemonic and
recombines each group, then the groups, with tsunagi._native.shamir.interpolate.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from shamir_mnemonic.cipher import decrypt
from shamir_mnemonic.shamir import decode_mnemonics

from tsunagi._native import shamir as native
from tsunagi.errors import (
    ConfigError,
    DuplicateShareError,
    ShareChecksumError,
    ShareDigestError,
    ShareError,
    ShareFormatError,
    ShareMismatchError,
    TooFewSharesError,
)
from tsunagi.privacy import shamir
from tsunagi.privacy.slip39 import combine_mnemonics, split_mnemonics

PASSPHRASE = b"TREZOR"  # the vectors' passphrase
# The fault an invalid vector's description names, and the error it must raise.
FAULTS = [
    ("invalid checksum", ShareChecksumError),
    ("invalid padding", ShareFormatError),
    ("Basic sharing 2-of-3", TooFewSharesError),  # an invalid one gives a single mnemonic
    ("different identifiers", ShareMismatchError),
    ("different iteration exponents", ShareMismatchError),
    ("mismatching group thresholds", ShareMismatchError),
    ("mismatching group counts", ShareMismatchError),
    ("greater group threshold than group counts", ShareFormatError),
    ("duplicate member indices", DuplicateShareError),
    ("mismatching member thresholds", ShareMismatchError),
    ("invalid digest", ShareDigestError),
    ("Insufficient number of groups", TooFewSharesError),
    ("insufficient number of members", TooFewSharesError),
    ("insufficient length", ShareFormatError),
    ("invalid master secret length", ShareFormatError),
]


def load_vectors() -> list:
    from conftest import TESTDATA

    path = TESTDATA / "slip39" / "slip39_vectors.json"
    if not path.is_file():
        pytest.fail(f"SLIP-0039 vectors not found at {path}: clone with shared/ beside the repo")
    return json.loads(path.read_text())


VECTORS = load_vectors()
VALID = [vector for vector in VECTORS if vector[2]]
INVALID = [vector for vector in VECTORS if not vector[2]]


def fault_of(description: str) -> type[ShareError]:
    kinds = [kind for fault, kind in FAULTS if fault.lower() in description.lower()]
    assert len(kinds) == 1, f"no single fault names {description!r}"
    return kinds[0]


def base58check(payload: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number, text = int.from_bytes(data, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        text = alphabet[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def bip32_master_xprv(seed: bytes) -> str:
    """BIP-32's master private key of a seed, serialized for mainnet."""
    derived = hmac.digest(b"Bitcoin seed", seed, "sha512")
    key, chain_code = derived[:32], derived[32:]
    return base58check(bytes.fromhex("0488ade4") + bytes(9) + chain_code + b"\0" + key)


def test_all_45_vectors_are_here():
    assert len(VECTORS) == 45 and len(VALID) == 15 and len(INVALID) == 30


@pytest.mark.parametrize("description, mnemonics, secret_hex, xprv", VALID,
                         ids=[vector[0].split(".")[0] for vector in VALID])
def test_a_valid_vector_recombines_to_its_master_secret(description, mnemonics, secret_hex,
                                                         xprv):
    secret = combine_mnemonics(mnemonics, PASSPHRASE)
    assert secret.hex() == secret_hex
    assert bip32_master_xprv(secret) == xprv
    assert combine_mnemonics(list(reversed(mnemonics)), PASSPHRASE) == secret


@pytest.mark.parametrize("description, mnemonics, secret_hex, xprv", INVALID,
                         ids=[vector[0].split(".")[0] for vector in INVALID])
def test_an_invalid_vector_is_refused_with_the_error_of_its_fault(description, mnemonics,
                                                                  secret_hex, xprv):
    with pytest.raises(fault_of(description)) as refused:
        combine_mnemonics(mnemonics, PASSPHRASE)
    assert "(" in str(refused.value) or "Give" in str(refused.value)  # it says what to do


def recombine_with_the_kernel(points: list[tuple[int, bytes]]) -> bytes:
    """The secret at x = 255 of the points, checked against the digest share at x = 254."""
    xs = bytes(x for x, _ in points)
    opened = native.interpolate(xs, b"".join(value for _, value in points),
                                bytes([shamir.SECRET_X, shamir.DIGEST_X]))
    length = len(points[0][1])
    secret, digest_share = opened[:length], opened[length:]
    assert shamir._digest(digest_share[shamir.DIGEST_BYTES:], secret) \
        == digest_share[:shamir.DIGEST_BYTES]
    return secret


@pytest.mark.parametrize("description, mnemonics, secret_hex, xprv", VALID,
                         ids=[vector[0].split(".")[0] for vector in VALID])
def test_the_native_kernel_interpolates_the_vectors_as_slip39_does(description, mnemonics,
                                                                    secret_hex, xprv):
    groups = decode_mnemonics(mnemonics)
    group_secrets = []
    for index, group in groups.items():
        raw = [(share.index, share.value) for share in group.shares]
        single = group.member_threshold() == 1
        group_secrets.append((index, raw[0][1] if single else recombine_with_the_kernel(raw)))
    params = next(iter(groups.values())).common_parameters()
    encrypted = group_secrets[0][1] if params.group_threshold == 1 \
        else recombine_with_the_kernel(group_secrets)
    master = decrypt(encrypted, PASSPHRASE, params.iteration_exponent, params.identifier,
                     params.extendable)
    assert master.hex() == secret_hex


# --- the wrapper's own use --------------------------------------------------------------------


def test_groups_split_and_recombine_with_a_passphrase():
    secret = bytes(range(32))
    groups = split_mnemonics(secret, [(2, 3), (3, 5), (1, 1)], group_threshold=2,
                             passphrase="a will")
    assert [len(group) for group in groups] == [3, 5, 1]
    assert all(len(mnemonic.split()) == 33 for group in groups for mnemonic in group)
    assert combine_mnemonics(groups[0][1:] + groups[2], "a will") == secret
    assert combine_mnemonics(groups[1][:3] + groups[0][:2], b"a will") == secret


def test_a_wrong_passphrase_opens_to_another_secret_by_design():
    secret = bytes(range(16))
    mnemonics = split_mnemonics(secret, [(2, 3)], passphrase="right")[0]
    assert combine_mnemonics(mnemonics[:2], "wrong") != secret


def test_more_mnemonics_than_the_threshold_are_refused_saying_how_many():
    mnemonics = split_mnemonics(bytes(16), [(2, 3)])[0]
    with pytest.raises(ShareError, match="Give exactly 2"):
        combine_mnemonics(mnemonics)


def test_a_word_outside_the_list_is_refused_as_malformed():
    mnemonic = split_mnemonics(bytes(16), [(1, 1)])[0][0].split()
    mnemonic[3] = "tsunagi"
    with pytest.raises(ShareFormatError, match="Invalid mnemonic word 'tsunagi'"):
        combine_mnemonics([" ".join(mnemonic)])


def test_a_mistyped_word_is_refused_as_damaged():
    mnemonic = split_mnemonics(bytes(16), [(1, 1)])[0][0].split()
    mnemonic[5] = "academic" if mnemonic[5] != "academic" else "acid"
    with pytest.raises(ShareChecksumError, match="checksum"):
        combine_mnemonics([" ".join(mnemonic)])


@pytest.mark.parametrize("call, message", [
    (lambda: combine_mnemonics([]), "empty"),
    (lambda: combine_mnemonics([b"bytes"]), "mnemonic 1 is a bytes, not a str"),
])
def test_nothing_or_bytes_is_refused(call, message):
    with pytest.raises(ShareError, match=message):
        call()


@pytest.mark.parametrize("arguments, message", [
    (dict(secret=bytes(14), groups=[(2, 3)]), "at least 16 bytes"),
    (dict(secret=bytes(17), groups=[(2, 3)]), "an even number"),
    (dict(secret=bytes(16), groups=[(2, 3)], group_threshold=2), "must not exceed"),
    (dict(secret=bytes(16), groups=[(1, 3)]), "member threshold 1"),
    (dict(secret=bytes(16), groups=[(2, 3)], passphrase="schön"), "printable ASCII"),
    (dict(secret="text", groups=[(2, 3)]), "must be bytes, not str"),
])
def test_parameters_slip39_refuses_are_a_config_error(arguments, message):
    with pytest.raises(ConfigError, match=message):
        split_mnemonics(**arguments)
