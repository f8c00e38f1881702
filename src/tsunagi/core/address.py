"""Addresses: the bech32m (BIP350) text form of a 32-byte x-only key, e.g. ``tsu1...``.

The checksum catches any single changed character and any swapped pair, so a mistyped address
is refused instead of paying a stranger. Written by hand from BIP173/BIP350 (about 60 lines)
rather than taken from PyPI: the `bech32` reference package there predates bech32m.
"""

from __future__ import annotations

from tsunagi.errors import EncodingError

__all__ = ["ADDRESS_PREFIX_DEFAULT", "bech32m_decode", "bech32m_encode", "decode_address",
           "encode_address"]

ADDRESS_PREFIX_DEFAULT = "tsu"
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {character: value for value, character in enumerate(CHARSET)}
_BECH32M_CONST = 0x2BC830A3  # BIP350; BIP173's bech32 used 1
_BECH32_CONST = 1
_LENGTH_MAX = 90  # BIP173: longer strings lose the checksum's guarantees
_CHECKSUM_LENGTH = 6
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
KEY_BYTES = 32


def _polymod(values) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            checksum ^= _GENERATOR[bit] if (top >> bit) & 1 else 0
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(character) >> 5 for character in hrp] + [0] + [
        ord(character) & 31 for character in hrp]


def _check_hrp(hrp: str) -> None:
    if not hrp:
        raise EncodingError("an address prefix (human-readable part) may not be empty")
    if any(not 33 <= ord(character) <= 126 for character in hrp):
        raise EncodingError(f"address prefix {hrp!r} has characters outside ASCII 33..126")
    if hrp.lower() != hrp:
        raise EncodingError(f"address prefix {hrp!r} must be lower case")


def bech32m_encode(hrp: str, data: list[int]) -> str:
    """The bech32m string of a prefix and 5-bit values."""
    _check_hrp(hrp)
    values = _hrp_expand(hrp) + list(data) + [0] * _CHECKSUM_LENGTH
    polymod = _polymod(values) ^ _BECH32M_CONST
    checksum = [(polymod >> 5 * (5 - index)) & 31 for index in range(_CHECKSUM_LENGTH)]
    text = hrp + "1" + "".join(CHARSET[value] for value in list(data) + checksum)
    if len(text) > _LENGTH_MAX:
        raise EncodingError(f"a bech32m string is at most {_LENGTH_MAX} characters, "
                            f"this one would be {len(text)}")
    return text


def bech32m_decode(text: str) -> tuple[str, list[int]]:
    """(prefix, 5-bit values) of a bech32m string; EncodingError says what is wrong."""
    if not isinstance(text, str):
        raise EncodingError(f"an address is text, not {type(text).__name__}")
    if len(text) > _LENGTH_MAX:
        raise EncodingError(f"a bech32m string is at most {_LENGTH_MAX} characters, "
                            f"got {len(text)}")
    if any(not 33 <= ord(character) <= 126 for character in text):
        raise EncodingError("an address has characters outside printable ASCII 33..126")
    if text.lower() != text and text.upper() != text:
        raise EncodingError("an address is all lower case or all upper case, not mixed")
    text = text.lower()
    separator = text.rfind("1")
    if separator < 1:
        raise EncodingError("an address is '<prefix>1<data>'; the prefix or the '1' is missing")
    if len(text) - separator - 1 < _CHECKSUM_LENGTH:
        raise EncodingError("an address is too short to hold its 6-character checksum")
    hrp, rest = text[:separator], text[separator + 1:]
    bad = [character for character in rest if character not in _CHARSET_INDEX]
    if bad:
        raise EncodingError(
            f"character {bad[0]!r} cannot appear after the '1' of an address (a typo?)")
    values = [_CHARSET_INDEX[character] for character in rest]
    polymod = _polymod(_hrp_expand(hrp) + values)
    if polymod == _BECH32_CONST:
        raise EncodingError("the address has a bech32 (BIP173) checksum; tsunagi addresses "
                            "use bech32m (BIP350)")
    if polymod != _BECH32M_CONST:
        raise EncodingError("the address checksum does not match: a character is mistyped "
                            "or two are swapped")
    return hrp, values[:-_CHECKSUM_LENGTH]


def _convert_bits(data, from_bits: int, to_bits: int, pad: bool) -> list[int]:
    accumulator, bits, out = 0, 0, []
    mask = (1 << to_bits) - 1
    keep = (1 << (from_bits + to_bits - 1)) - 1  # the bits still needed, as BIP173's reference
    for value in data:
        accumulator = (accumulator << from_bits | value) & keep
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & mask)
    if pad and bits:
        out.append((accumulator << (to_bits - bits)) & mask)
    elif not pad and (bits >= from_bits or (accumulator << (to_bits - bits)) & mask):
        raise EncodingError("the address data has bad padding: it was not made from whole bytes")
    return out


def encode_address(key: bytes, hrp: str = ADDRESS_PREFIX_DEFAULT) -> str:
    """The address of a 32-byte x-only public key under a chain's prefix."""
    try:
        key = memoryview(key).tobytes()
    except TypeError as exc:
        raise EncodingError(f"a key is bytes, not {type(key).__name__}") from exc
    if len(key) != KEY_BYTES:
        raise EncodingError(f"an address holds a {KEY_BYTES}-byte key, got {len(key)} bytes")
    return bech32m_encode(hrp, _convert_bits(key, 8, 5, pad=True))


def decode_address(text: str, hrp: str = ADDRESS_PREFIX_DEFAULT) -> bytes:
    """The 32-byte key of an address; EncodingError for a typo, bad checksum or wrong prefix."""
    found_hrp, values = bech32m_decode(text)
    if found_hrp != hrp:
        raise EncodingError(f"the address prefix is {found_hrp!r}, this chain uses {hrp!r}: "
                            "it is an address of another chain")
    key = bytes(_convert_bits(values, 5, 8, pad=False))
    if len(key) != KEY_BYTES:
        raise EncodingError(f"an address holds a {KEY_BYTES}-byte key, this one holds "
                            f"{len(key)} bytes")
    return key
