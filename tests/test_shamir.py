"""Shamir sharing gives the secret back from any threshold of shares and refuses every damaged,
mixed or short set with its specific error, never a wrong secret; the native kernel computes
what the plain-Python reference does.

Method: hypothesis draws secrets, thresholds, counts, subsets and orders; a seeded byte source
(random.Random(seed).randbytes) makes splits repeatable where a test needs it. Negative cases
alter real shares (a flipped bit; a value changed and its checksum made right again; shares of
two sets mixed) and check the class of the error. The kernel is held to the reference on random
inputs, to FIPS-197's known products, and to an independent oracle (carry-less products reduced
by long division).
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi import limits
from tsunagi._native import shamir as native
from tsunagi.errors import (
    ConfigError,
    DuplicateShareError,
    EncodingError,
    ShareChecksumError,
    ShareDigestError,
    ShareError,
    ShareFormatError,
    ShareMismatchError,
    TooFewSharesError,
)
from tsunagi.privacy import shamir
from tsunagi.privacy.shamir import Share, combine, split

LOAD_SAFE = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHARES_MAX = limits.shamir_shares_max

secrets_drawn = st.binary(min_size=limits.shamir_secret_bytes_min, max_size=96)


@st.composite
def share_sets(draw, count_max: int = SHARES_MAX):
    """(secret, threshold, count, shares) of one split."""
    secret = draw(secrets_drawn)
    count = draw(st.integers(2, count_max))
    threshold = draw(st.integers(2, count))
    return secret, threshold, count, split(secret, threshold, count)


def seeded(seed: int):
    return random.Random(seed).randbytes


def reforged(data: bytes, **changes) -> bytes:
    """The share with fields changed and its checksum made right again: what an attacker who
    knows the format, or a bug, would produce."""
    return dataclasses.replace(Share.from_bytes(data), **changes).to_bytes()


# --- any threshold of shares recombine ------------------------------------------------------


@settings(max_examples=150, **LOAD_SAFE)
@given(share_sets(), st.randoms(use_true_random=False))
def test_any_threshold_of_shares_in_any_order_give_the_secret(drawn, chooser):
    secret, threshold, count, shares = drawn
    subset = chooser.sample(shares, chooser.randint(threshold, count))
    assert combine(subset) == secret


@settings(max_examples=40, **LOAD_SAFE)
@given(share_sets(count_max=12), st.randoms(use_true_random=False))
def test_fewer_than_the_threshold_are_refused(drawn, chooser):
    secret, threshold, count, shares = drawn
    with pytest.raises(TooFewSharesError, match=f"the set needs {threshold}"):
        combine(chooser.sample(shares, threshold - 1))


def test_a_share_is_its_header_value_and_checksum():
    secret = bytes(range(32))
    shares = split(secret, 3, 5, random_bytes=seeded(1))
    assert [len(data) for data in shares] == [shamir.HEADER_BYTES + 32 + shamir.TAG_BYTES
                                              + shamir.CHECKSUM_BYTES] * 5
    parsed = [Share.from_bytes(data) for data in shares]
    assert [share.index for share in parsed] == [0, 1, 2, 3, 4]
    assert {share.set_id for share in parsed} == {shares[0][1:9]}
    assert {share.threshold for share in parsed} == {3}
    assert all(data[0] == shamir.FORMAT_VERSION == 2 for data in shares)


def test_a_seeded_source_repeats_a_split_and_the_os_generator_never_does():
    secret = os.urandom(32)
    assert split(secret, 2, 3, random_bytes=seeded(7)) == split(secret, 2, 3,
                                                                random_bytes=seeded(7))
    assert split(secret, 2, 3, random_bytes=seeded(7)) != split(secret, 2, 3,
                                                                random_bytes=seeded(8))
    assert split(secret, 2, 3) != split(secret, 2, 3)


def test_coefficients_are_taken_as_drawn_even_all_zero():
    """Nothing is drawn again or forced non-zero: a source of zeros gives a set that works
    (and whose shares sit on the line through the secret and the digest share)."""
    secret = bytes(range(16, 48))
    shares = split(secret, 4, 6, random_bytes=lambda size: bytes(size))
    assert combine(shares[2:]) == secret
    assert Share.from_bytes(shares[0]).set_id == bytes(8)


def test_the_largest_set_has_255_shares_and_any_threshold_of_them_recombine():
    secret = os.urandom(32)
    shares = split(secret, 128, SHARES_MAX)
    assert SHARES_MAX == 255
    assert [Share.from_bytes(data).index for data in shares] == list(range(255))
    assert combine(shares[-128:]) == secret  # the share at x = 254 among them
    assert combine(shares[:128]) == secret
    assert combine(shares) == secret
    chooser = random.Random(255)
    for _ in range(3):
        assert combine(chooser.sample(shares, 128)) == secret


def test_a_255_of_255_set_opens_only_with_every_share():
    secret = os.urandom(16)
    shares = split(secret, 255, 255)
    assert combine(list(reversed(shares))) == secret
    with pytest.raises(TooFewSharesError, match="the set needs 255 shares and 254"):
        combine(shares[1:])


# A version-1 set (SLIP-0039's layout: digest share at x = 254), as tsunagi wrote it before
# version 2: split(bytes(range(0x20, 0x40)), 3, 5, random_bytes=random.Random(2026).randbytes).
VERSION_1_SECRET = bytes(range(0x20, 0x40))
VERSION_1_SHARES = [bytes.fromhex(text) for text in """
0119a47e1e70bcc9510300cbce9afdeaccef50afc2e3e19c2e6259d171d9fc2e4fe5c5b1b49fc1ff60abd70634a756
0119a47e1e70bcc9510301d367234294366df77bc442398bd34af57687456a8a85fb2ec01f51094735d3f2f2cd761b
0119a47e1e70bcc9510302774216e2dacd06933db6d622fc11ca619cd5aca43d39de012998db2bb13a4c1b0d9743cf
0119a47e1e70bcc95103036febaf5da4378434e9b077faebece2cd3b23303299f3c0ea583315e3096f343e714ad1f0
0119a47e1e70bcc9510304aef42030975bd3a314d122c77f05e4de2b7570eb136a8f7269733691f739227a8fc3ec55
""".split()]


def test_version_1_shares_still_open():
    assert [Share.from_bytes(data).version for data in VERSION_1_SHARES] == [1] * 5
    assert combine(VERSION_1_SHARES[2:]) == VERSION_1_SECRET
    assert combine([VERSION_1_SHARES[4], VERSION_1_SHARES[0], VERSION_1_SHARES[1]]) \
        == VERSION_1_SECRET
    altered = bytearray(Share.from_bytes(VERSION_1_SHARES[0]).value)
    altered[0] ^= 1
    with pytest.raises(ShareDigestError, match="fails the set's digest"):
        combine([reforged(VERSION_1_SHARES[0], value=bytes(altered))] + VERSION_1_SHARES[1:3])


def test_a_version_1_share_at_x_254_is_refused_as_malformed():
    with pytest.raises(ShareFormatError, match="version 1 share has threshold 2..254 and index "
                                               "0..253"):
        Share.from_bytes(reforged(VERSION_1_SHARES[0], index=254))


def test_shares_of_two_format_versions_are_refused_as_mixed():
    v2 = Share.from_bytes(split(VERSION_1_SECRET, 3, 5)[3])
    posing = dataclasses.replace(v2, set_id=Share.from_bytes(VERSION_1_SHARES[0]).set_id)
    with pytest.raises(ShareMismatchError, match="its format version differs"):
        combine(VERSION_1_SHARES[:2] + [posing.to_bytes()])


def test_the_tag_binds_the_threshold():
    """Shares whose threshold is lowered (checksums redone) interpolate a lower polynomial:
    the tag, which hashes the threshold, refuses what they open to."""
    shares = split(os.urandom(32), 3, 5)
    lowered = [reforged(data, threshold=2) for data in shares[:2]]
    with pytest.raises(ShareDigestError, match="fails the set's digest"):
        combine(lowered)


# --- every negative case has its own error ---------------------------------------------------


@settings(max_examples=100, **LOAD_SAFE)
@given(share_sets(count_max=8), st.data())
def test_a_damaged_share_is_refused_as_damaged(drawn, data):
    secret, threshold, count, shares = drawn
    victim = data.draw(st.integers(0, count - 1))
    damaged = bytearray(shares[victim])
    bit = data.draw(st.integers(0, len(damaged) * 8 - 1))
    damaged[bit // 8] ^= 1 << (bit % 8)
    shares[victim] = bytes(damaged)
    with pytest.raises(ShareChecksumError, match=f"share {victim + 1} is damaged"):
        combine(shares)


@settings(max_examples=60, **LOAD_SAFE)
@given(share_sets(count_max=8), st.data())
def test_a_share_altered_with_its_checksum_redone_fails_the_digest(drawn, data):
    secret, threshold, count, shares = drawn
    victim = data.draw(st.integers(0, threshold - 1))
    value = bytearray(Share.from_bytes(shares[victim]).value)
    place = data.draw(st.integers(0, len(value) - 1))
    value[place] ^= data.draw(st.integers(1, 255))
    shares[victim] = reforged(shares[victim], value=bytes(value))
    with pytest.raises(ShareDigestError, match="fails the set's digest"):
        combine(shares[:threshold])


@settings(max_examples=60, **LOAD_SAFE)
@given(share_sets(count_max=8), st.data())
def test_shares_of_two_sets_are_refused_as_mixed(drawn, data):
    secret, threshold, count, shares = drawn
    length = len(secret)
    other = split(data.draw(st.binary(min_size=length, max_size=length)), threshold, count)
    mixed = shares[:threshold - 1] + [other[threshold - 1]]
    with pytest.raises(ShareMismatchError, match=f"share {threshold} is of another set"):
        combine(mixed)


def test_shares_of_another_threshold_or_length_are_refused_as_mixed():
    shares = split(os.urandom(32), 2, 3)
    with pytest.raises(ShareMismatchError, match="its threshold differs"):
        combine([shares[0], reforged(shares[1], threshold=3)])
    with pytest.raises(ShareMismatchError, match="holds 49 bytes, share 1 48"):
        combine([shares[0], reforged(shares[1], value=bytes(49))])


@settings(max_examples=40, **LOAD_SAFE)
@given(share_sets(count_max=8), st.data())
def test_a_share_given_twice_is_refused_as_a_duplicate(drawn, data):
    secret, threshold, count, shares = drawn
    twice = data.draw(st.integers(0, count - 1))
    given_shares = shares + [shares[twice]]
    with pytest.raises(DuplicateShareError, match=f"index {twice}: give each share once"):
        combine(given_shares)


def test_two_shares_claiming_one_index_are_refused_as_duplicates():
    shares = split(os.urandom(32), 2, 3)
    with pytest.raises(DuplicateShareError, match="shares 1 and 2 both have index 0"):
        combine([shares[0], reforged(shares[1], index=0)])


def test_no_shares_are_too_few():
    with pytest.raises(TooFewSharesError, match="no shares were given"):
        combine([])


@pytest.mark.parametrize("mangle, message", [
    (lambda data: data[:20], "is 20 bytes; a share is 15 bytes plus a value of 16..4112"),
    (lambda data: data + bytes(5000), "pass the whole share"),
    (lambda data: reforged(data, threshold=1), "has threshold 1 and index 0"),
    (lambda data: reforged(data, index=255), "has threshold 2 and index 255"),
    (lambda data: "not bytes", "is a str, not bytes"),
])
def test_a_malformed_share_is_refused_as_malformed(mangle, message):
    shares = split(os.urandom(32), 2, 2)
    with pytest.raises(ShareFormatError, match=message):
        combine([mangle(shares[0]), shares[1]])


def test_a_share_of_another_format_version_says_to_upgrade():
    body = b"\x03" + split(os.urandom(32), 2, 2)[0][1:-shamir.CHECKSUM_BYTES]
    with pytest.raises(ShareFormatError, match="version 3; this tsunagi reads versions 1..2"):
        Share.from_bytes(body + shamir._checksum(body))


def test_every_refusal_is_a_share_error_and_a_value_error():
    for kind in (ShareFormatError, ShareChecksumError, ShareMismatchError, DuplicateShareError,
                 TooFewSharesError, ShareDigestError):
        assert issubclass(kind, ShareError) and issubclass(kind, ValueError)


@pytest.mark.parametrize("secret, threshold, count, error, message", [
    (bytes(15), 2, 3, EncodingError, "the secret is 15 bytes"),
    (bytes(4097), 2, 3, EncodingError, "encrypt larger data"),
    ("text", 2, 3, EncodingError, "must be bytes, not str"),
    (bytes(32), 1, 3, ConfigError, "threshold 1 of count 3"),
    (bytes(32), 4, 3, ConfigError, "threshold 4 of count 3"),
    (bytes(32), 2, 256, ConfigError, "count <= 255"),
    (bytes(32), 2.0, 3, ConfigError, "threshold must be an int"),
    (bytes(32), True, 3, ConfigError, "threshold must be an int"),
])
def test_split_refuses_what_it_cannot_share(secret, threshold, count, error, message):
    with pytest.raises(error, match=message):
        split(secret, threshold, count)


def test_a_byte_source_that_gives_too_little_is_refused():
    with pytest.raises(ConfigError, match=r"random_bytes\(56\) must return 56 bytes"):
        split(bytes(32), 2, 3, random_bytes=lambda size: bytes(size - 1))


# --- the native kernel computes what the reference does ---------------------------------------


def oracle_multiply(a: int, b: int) -> int:
    """A second, independent product: carry-less multiplication, then long division by 0x11B."""
    product = 0
    for bit in range(8):
        if b >> bit & 1:
            product ^= a << bit
    for bit in range(14, 7, -1):
        if product >> bit & 1:
            product ^= 0x11B << (bit - 8)
    return product


def test_every_product_agrees_with_the_reference_and_the_oracle():
    for a in range(256):
        for b in range(256):
            expected = oracle_multiply(a, b)
            assert native.multiply(a, b) == shamir.reference_multiply(a, b) == expected


def test_known_products_of_fips_197():
    assert native.multiply(0x57, 0x83) == 0xC1
    assert native.multiply(0x57, 0x13) == 0xFE


def test_every_inverse_inverts():
    assert native.inverse(0) == shamir.reference_inverse(0) == 0
    for a in range(1, 256):
        assert native.inverse(a) == shamir.reference_inverse(a)
        assert native.multiply(a, native.inverse(a)) == 1


@settings(max_examples=80, **LOAD_SAFE)
@given(st.binary(min_size=1, max_size=24), st.data())
def test_native_evaluation_equals_the_reference(secret, data):
    length = len(secret)
    digest = data.draw(st.binary(min_size=length, max_size=length))
    rows = data.draw(st.integers(0, 6))
    coefficients = data.draw(st.binary(min_size=rows * length, max_size=rows * length))
    xs = bytes(data.draw(st.lists(st.integers(0, 255), max_size=20)))
    assert native.evaluate_shares(secret, digest, coefficients, xs) \
        == shamir.reference_evaluate_shares(secret, digest, coefficients, xs)


@settings(max_examples=80, **LOAD_SAFE)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=20, unique=True), st.data())
def test_native_interpolation_equals_the_reference(xs, data):
    length = data.draw(st.integers(1, 24))
    values = data.draw(st.binary(min_size=len(xs) * length, max_size=len(xs) * length))
    targets = bytes(data.draw(st.lists(st.integers(0, 255), max_size=4)))
    assert native.interpolate(bytes(xs), values, targets) \
        == shamir.reference_interpolate(bytes(xs), values, targets)


def test_the_kernel_refuses_repeated_points_and_ragged_rows():
    with pytest.raises(ValueError, match="distinct, 3 comes twice"):
        native.interpolate(bytes([3, 3]), bytes(2), bytes([255]))
    with pytest.raises(ValueError, match="non-empty rows of one length"):
        native.interpolate(bytes([1, 2]), bytes(3), bytes([255]))
    with pytest.raises(ValueError, match="whole rows of 4 bytes"):
        native.evaluate_shares(bytes(4), bytes(4), bytes(5), bytes([0]))
