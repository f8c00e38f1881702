"""Shamir's secret sharing over GF(256), k of n, in the binary share format kept on chain.

``split(secret, threshold, count)`` gives ``count`` shares of which any ``threshold`` give the
secret back with ``combine(shares)``, and fewer reveal nothing about it. Each share carries a
checksum and the set a digest, so a damaged, altered or mixed set is refused with a specific
:class:`~tsunagi.errors.ShareError` instead of opening to a wrong secret. docs/FORMAT.md
describes the bytes.

Byte i of every share comes from one polynomial of degree threshold - 1 over GF(256) that is
pinned at x = 255 to byte i of ``secret || tag``, where ``tag = SHA-256(domain || set id ||
threshold || secret)[:16]`` (format version 2); share i sits at x = i, so a set has up to 255
shares (x = 0..254). The kernel writes the polynomial as ``f(x) = pinned*(x+254) + W*(x+255) +
(x+254)(x+255)*h(x)``: W, its value at x = 254, and every coefficient of h, the leading one
included, are drawn uniformly from the OS's generator and none is ever forced non-zero (that
would make shares depend on the secret), so W is just the share of index 254. Version 1 (read,
no longer written) kept SLIP-0039's layout, the secret at x = 255 and a digest share
``D = HMAC-SHA256(R, secret)[:4] || R`` at x = 254, which cost a point of the field: 254
shares at most, and a wrong secret passing with odds 2**-32 where the tag makes them 2**-128.
The arithmetic runs in native code (tsunagi._native.shamir) without table lookups or branches
on secret bytes; the ``reference_*`` functions are the same arithmetic in plain Python, for
tests to hold the native kernel to, and are not meant for secrets (Python's integers are not
constant-time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tsunagi import limits
from tsunagi._native import shamir as native
from tsunagi.errors import (
    ConfigError,
    DuplicateShareError,
    EncodingError,
    ShareChecksumError,
    ShareDigestError,
    ShareFormatError,
    ShareMismatchError,
    TooFewSharesError,
)

__all__ = ["Share", "combine", "reference_evaluate_shares", "reference_interpolate",
           "reference_inverse", "reference_multiply", "split"]

# The binary format (docs/FORMAT.md): version, set identifier, threshold, index, value, checksum.
FORMAT_VERSION = 2  # what split() writes; combine() reads versions 1 and 2
VERSIONS = (1, 2)
SET_ID_BYTES = 8  # random: two sets share an identifier with odds 2**-64
HEADER_BYTES = 1 + SET_ID_BYTES + 1 + 1
CHECKSUM_BYTES = 4  # a damaged share passes with odds 2**-32
TAG_BYTES = 16  # version 2: the secret's tag rides in the value; a wrong secret passes 2**-128
TAG_DOMAIN = b"tsunagi/shamir/tag/v2"
DIGEST_BYTES = 4  # version 1, as SLIP-0039: a wrong secret passes with odds 2**-32
# The checksum hashes this before the share's bytes, so no other hash in tsunagi collides.
CHECKSUM_DOMAIN = b"tsunagi/shamir/share/v1"
SECRET_X = 255
DIGEST_X = 254  # version 1's digest share; in version 2 the share of index 254
V1_LARGEST_SET = 254  # version 1: x = 0..253, the secret and the digest taking 255 and 254
# What a share's value adds to the secret's bytes, by version.
VALUE_EXTRA_BYTES = {1: 0, 2: TAG_BYTES}

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class Share:
    """One share of a set: ``index`` is its x (0..254), ``value`` the secret's length plus the
    tag's (16 bytes; version 1 shares: as long as the secret)."""

    set_id: bytes
    threshold: int
    index: int
    value: bytes
    version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        body = bytes([self.version]) + self.set_id + bytes([self.threshold, self.index]) \
            + self.value
        return body + _checksum(body)

    @classmethod
    def from_bytes(cls, data: bytes, position: int = 0) -> Share:
        """Reads a share, checking its size, checksum, version and fields; ``position`` (from
        0) names it in the error messages. Raises ShareFormatError or ShareChecksumError."""
        where = f"share {position + 1}"
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ShareFormatError(f"{where} is a {type(data).__name__}, not bytes: pass the "
                                   "share's bytes as split() gave them")
        data = bytes(data)
        smallest = HEADER_BYTES + CHECKSUM_BYTES + limits.shamir_secret_bytes_min
        largest = HEADER_BYTES + CHECKSUM_BYTES + limits.shamir_secret_bytes_max + TAG_BYTES
        if not smallest <= len(data) <= largest:
            raise ShareFormatError(
                f"{where} is {len(data)} bytes; a share is {HEADER_BYTES + CHECKSUM_BYTES} "
                f"bytes plus a value of {smallest - HEADER_BYTES - CHECKSUM_BYTES}.."
                f"{largest - HEADER_BYTES - CHECKSUM_BYTES}: pass the whole share")
        body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if not hmac.compare_digest(_checksum(body), checksum):
            raise ShareChecksumError(f"{where} is damaged (its checksum does not match its "
                                     "bytes): use an undamaged copy of it or another share")
        version = body[0]
        if version not in VERSIONS:
            raise ShareFormatError(f"{where} has format version {version}; this tsunagi reads "
                                   f"versions {VERSIONS[0]}..{VERSIONS[-1]}: upgrade tsunagi to "
                                   "read it")
        value = body[HEADER_BYTES:]
        secret_bytes = len(value) - VALUE_EXTRA_BYTES[version]
        if not limits.shamir_secret_bytes_min <= secret_bytes <= limits.shamir_secret_bytes_max:
            raise ShareFormatError(f"{where} (version {version}) holds a secret of "
                                   f"{secret_bytes} bytes, outside "
                                   f"{limits.shamir_secret_bytes_min}.."
                                   f"{limits.shamir_secret_bytes_max}: it was not made by split()")
        shares_max = V1_LARGEST_SET if version == 1 else limits.shamir_shares_max
        threshold, index = body[1 + SET_ID_BYTES], body[2 + SET_ID_BYTES]
        if not limits.shamir_threshold_min <= threshold <= shares_max or index >= shares_max:
            raise ShareFormatError(f"{where} has threshold {threshold} and index {index}; "
                                   f"a version {version} share has threshold "
                                   f"{limits.shamir_threshold_min}..{shares_max} and index "
                                   f"0..{shares_max - 1}: it was not made by split()")
        return cls(body[1:1 + SET_ID_BYTES], threshold, index, value, version)


def _checksum(body: bytes) -> bytes:
    return hashlib.sha256(CHECKSUM_DOMAIN + body).digest()[:CHECKSUM_BYTES]


def _digest(random_part: bytes, secret: bytes) -> bytes:
    """Version 1's digest (SLIP-0039's): the first bytes of the digest share."""
    return hmac.digest(random_part, secret, "sha256")[:DIGEST_BYTES]


def _tag(set_id: bytes, threshold: int, secret: bytes) -> bytes:
    """Version 2's tag of the secret, pinned with it at x = 255: it binds the set's identifier
    and threshold, so the bytes one set opens to are checked against that set only."""
    return hashlib.sha256(TAG_DOMAIN + set_id + bytes([threshold]) + secret).digest()[:TAG_BYTES]


def _check_split_arguments(secret: object, threshold: object, count: object) -> None:
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise EncodingError(f"the secret must be bytes, not {type(secret).__name__}")
    if not limits.shamir_secret_bytes_min <= len(secret) <= limits.shamir_secret_bytes_max:
        raise EncodingError(f"the secret is {len(secret)} bytes; Shamir sharing takes "
                            f"{limits.shamir_secret_bytes_min}..{limits.shamir_secret_bytes_max}"
                            ": share a key, and encrypt larger data with it")
    for name, value in (("threshold", threshold), ("count", count)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"the {name} must be an int, not {type(value).__name__}")
    if not limits.shamir_threshold_min <= threshold <= count <= limits.shamir_shares_max:
        raise ConfigError(f"threshold {threshold} of count {count}: a set needs "
                          f"{limits.shamir_threshold_min} <= threshold <= count <= "
                          f"{limits.shamir_shares_max}")


def split(secret: bytes, threshold: int, count: int, *,
          random_bytes: RandomBytes | None = None) -> list[bytes]:
    """``count`` shares of ``secret`` (16..4096 bytes), any ``threshold`` of which recombine
    to it (2 <= threshold <= count <= 255), each in the binary format (version 2), index i at
    position i.

    Randomness comes from the OS's generator; ``random_bytes`` (a function of a byte count,
    such as ``random.Random(seed).randbytes``) replaces it, for tests only."""
    _check_split_arguments(secret, threshold, count)
    secret = bytes(secret)
    width = len(secret) + TAG_BYTES
    wanted = SET_ID_BYTES + (threshold - 1) * width
    drawn = (random_bytes or secrets.token_bytes)(wanted)
    if not isinstance(drawn, bytes) or len(drawn) != wanted:
        raise ConfigError(f"random_bytes({wanted}) must return {wanted} bytes")
    set_id, drawn = drawn[:SET_ID_BYTES], drawn[SET_ID_BYTES:]
    at_254, coefficients = drawn[:width], drawn[width:]
    pinned = secret + _tag(set_id, threshold, secret)
    values = native.evaluate_shares(pinned, at_254, coefficients, bytes(range(count)))
    return [Share(set_id, threshold, index, values[index * width:(index + 1) * width])
            .to_bytes() for index in range(count)]


def _same_set(shares: list[Share]) -> None:
    first = shares[0]
    for position, share in enumerate(shares[1:], start=2):
        for field in ("set_id", "threshold", "version"):
            if getattr(share, field) != getattr(first, field):
                what = {"set_id": "set id", "version": "format version"}.get(field, field)
                raise ShareMismatchError(
                    f"share {position} is of another set than share 1 (its {what} differs): "
                    "give only shares that split() made together")
        if len(share.value) != len(first.value):
            raise ShareMismatchError(f"share {position} holds {len(share.value)} bytes, share 1 "
                                     f"{len(first.value)}: give only shares of one set")
    seen: dict[int, int] = {}
    for position, share in enumerate(shares, start=1):
        if share.index in seen:
            raise DuplicateShareError(f"shares {seen[share.index]} and {position} both have "
                                      f"index {share.index}: give each share once")
        seen[share.index] = position


def combine(shares: Iterable[bytes]) -> bytes:
    """The secret of a set from at least its threshold of shares (in any order; all of them
    are used, so every extra share is checked too). Raises a ShareError subclass naming what
    is wrong when the shares cannot give the secret: never a wrong secret."""
    parsed = [Share.from_bytes(data, position) for position, data in enumerate(shares)]
    if not parsed:
        raise TooFewSharesError("no shares were given: give at least the set's threshold")
    _same_set(parsed)
    threshold = parsed[0].threshold
    if len(parsed) < threshold:
        raise TooFewSharesError(f"the set needs {threshold} shares and {len(parsed)} were "
                                f"given: give {threshold - len(parsed)} more")
    xs = bytes(share.index for share in parsed)
    values = b"".join(share.value for share in parsed)
    first = parsed[0]
    if first.version == 1:
        opened = native.interpolate(xs, values, bytes([SECRET_X, DIGEST_X]))
        length = len(first.value)
        secret, digest_share = opened[:length], opened[length:]
        sound = hmac.compare_digest(_digest(digest_share[DIGEST_BYTES:], secret),
                                    digest_share[:DIGEST_BYTES])
    else:
        opened = native.interpolate(xs, values, bytes([SECRET_X]))
        secret, tag = opened[:-TAG_BYTES], opened[-TAG_BYTES:]
        sound = hmac.compare_digest(_tag(first.set_id, threshold, secret), tag)
    if not sound:
        raise ShareDigestError("the shares recombine to a secret that fails the set's digest: "
                               "a share was altered or forged; try another subset of shares")
    return secret


# --- the plain-Python reference of the native arithmetic (for tests, not for secrets) --------


def reference_multiply(a: int, b: int) -> int:
    """a*b in GF(256) modulo 0x11B, by shift and masked xor, as ext/shamir_kernel.c does."""
    product = 0
    for _ in range(8):
        product ^= -(b & 1) & a
        a = ((a << 1) ^ (-(a >> 7) & 0x1B)) & 0xFF
        b >>= 1
    return product


def reference_inverse(a: int) -> int:
    """a^254 (the inverse of a, 0 for 0) by the kernel's fixed chain of squares and products."""
    power = result = reference_multiply(a, a)
    for _ in range(6):
        power = reference_multiply(power, power)
        result = reference_multiply(result, power)
    return result


def reference_evaluate_shares(secret: bytes, digest: bytes, coefficients: bytes,
                              xs: bytes) -> bytes:
    """tsunagi._native.shamir.evaluate_shares in plain Python (same arguments and result)."""
    length = len(secret)
    if length == 0 or len(digest) != length or len(coefficients) % length:
        raise ValueError("secret, digest and coefficient rows must be as long and not empty")
    rows = [coefficients[i:i + length] for i in range(0, len(coefficients), length)]
    mul = reference_multiply
    out = bytearray()
    for x in xs:
        # Lagrange's basis of the points 255 and 254 at x: (x+254)/1 and (x+255)/1.
        to_secret, to_digest = x ^ DIGEST_X, x ^ SECRET_X
        both = mul(to_secret, to_digest)
        for i in range(length):
            value = 0
            for row in reversed(rows):
                value = mul(value, x) ^ row[i]
            out.append(mul(value, both) ^ mul(secret[i], to_secret) ^ mul(digest[i], to_digest))
    return bytes(out)


def reference_interpolate(xs: bytes, values: bytes, targets: bytes) -> bytes:
    """tsunagi._native.shamir.interpolate in plain Python (same arguments and result)."""
    count = len(xs)
    if count == 0 or not values or len(values) % count:
        raise ValueError("values must be len(xs) non-empty rows of one length")
    if len(set(xs)) != count:
        raise ValueError("the points' xs must be distinct")
    length = len(values) // count
    mul = reference_multiply
    out = bytearray()
    for target in targets:
        weights = []
        for i in range(count):
            numerator = denominator = 1
            for j in range(count):
                if j != i:
                    numerator = mul(numerator, target ^ xs[j])
                    denominator = mul(denominator, xs[i] ^ xs[j])
            weights.append(mul(numerator, reference_inverse(denominator)))
        for b in range(length):
            total = 0
            for i in range(count):
                total ^= mul(values[i * length + b], weights[i])
            out.append(total)
    return bytes(out)
