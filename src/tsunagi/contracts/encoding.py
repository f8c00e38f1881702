"""The canonical encoding of contract arguments, return values, stored values and events.

One value has exactly one encoding, so two nodes that store or hash the same value store or
hash the same bytes, and decoding refuses every other spelling (a non-minimal length or integer,
unsorted or repeated dict keys, bytes after the value). Each value is a tag byte and a body::

    0x00 None            0x01 False            0x02 True
    0x03 int >= 0        length, then the magnitude big-endian with no leading zero byte
                         (0 has length 0)
    0x04 int < 0         length, then the magnitude of the value, as above (never 0)
    0x05 bytes           length, then the bytes
    0x06 str             length, then the UTF-8 bytes (strict: no lone surrogates)
    0x07 list            item count, then each item
    0x08 dict            entry count, then key and value of each entry; keys are str or bytes,
                         in ascending order of their encodings, each once

Lengths and counts are unsigned LEB128 in the fewest bytes. Floats are refused (their rounding
differs by platform and their equality is not identity), and so is every other type: tuples
and sets among them (a decoded list would not equal the tuple, and a set has no canonical
order). Bounds: :data:`~tsunagi.contracts.limits.int_bytes_max`,
:data:`~tsunagi.contracts.limits.encoding_depth_max` and
:data:`~tsunagi.contracts.limits.encoded_bytes_max`.

``encode`` and ``decode`` are the native ones (tsunagi._native.encoding, about 20 times faster:
stored values, events and arguments are encoded and decoded on every contract call) when that
module is built with these bounds; ``reference_encode`` and ``reference_decode`` are the same
format in plain Python, the definition tests hold the native code to and the fallback when it
is absent.
"""

from __future__ import annotations

import operator

from tsunagi.contracts import limits
from tsunagi.errors import EncodingError

__all__ = ["NATIVE", "decode", "encode", "reference_decode", "reference_encode"]

TAG_NONE, TAG_FALSE, TAG_TRUE, TAG_INT, TAG_NEGATIVE = 0, 1, 2, 3, 4
TAG_BYTES, TAG_STR, TAG_LIST, TAG_DICT = 5, 6, 7, 8


def reference_encode(value) -> bytes:
    """The canonical bytes of ``value``; EncodingError names what cannot be encoded."""
    out = bytearray()
    _encode(value, out, 0)
    if len(out) > limits.encoded_bytes_max:
        raise EncodingError(f"an encoded value is at most {limits.encoded_bytes_max} bytes, "
                            f"this one is {len(out)}: store or pass less at once")
    return bytes(out)


def _length(count: int, out: bytearray) -> None:
    while count >= 0x80:
        out.append(count & 0x7F | 0x80)
        count >>= 7
    out.append(count)


def _encode(value, out: bytearray, depth: int) -> None:
    encoder = _ENCODERS.get(type(value))  # exact types: nearly every value, and the fast path
    if encoder is not None:
        encoder(value, out, depth)
    elif isinstance(value, int) and not isinstance(value, bool):
        _encode_int(int(value), out, depth)  # an IntEnum and the like: stored as its number
    elif isinstance(value, str):
        _encode_str(str(value), out, depth)
    elif isinstance(value, bytes | bytearray):
        _encode_bytes(bytes(value), out, depth)
    else:
        kind = type(value)
        hint = "use int (scaled) for amounts" if kind is float else "use a list" \
            if kind is tuple else "use None, bool, int, bytes, str, list or dict"
        raise EncodingError(f"cannot encode a value of type {kind.__name__}: {hint}")


def _encode_constant(value, out: bytearray, depth: int) -> None:
    out.append(TAG_NONE if value is None else TAG_TRUE if value else TAG_FALSE)


def _encode_bytes(value: bytes, out: bytearray, depth: int = 0) -> None:
    size = len(value)
    if size < 0x80:
        out += _BYTES_HEADS[size]
    else:
        out.append(TAG_BYTES)
        _length(size, out)
    out += value


def _encode_str(value: str, out: bytearray, depth: int = 0) -> None:
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(f"a str to encode is not valid Unicode ({exc.reason} at "
                            f"{exc.start}): pass bytes for binary data") from None
    size = len(data)
    if size < 0x80:
        out += _STR_HEADS[size]
    else:
        out.append(TAG_STR)
        _length(size, out)
    out += data


def _encode_int(value: int, out: bytearray, depth: int = 0) -> None:
    if 0 <= value < len(_SMALL_INTS):
        out += _SMALL_INTS[value]
        return
    magnitude = -value if value < 0 else value
    size = (magnitude.bit_length() + 7) // 8
    if size > limits.int_bytes_max:
        raise EncodingError(f"an int is at most {limits.int_bytes_max} bytes of magnitude "
                            f"({8 * limits.int_bytes_max} bits), this one is {size}")
    out.append(TAG_NEGATIVE if value < 0 else TAG_INT)
    out.append(size)  # int_bytes_max < 0x80: the length is one LEB128 byte
    out += magnitude.to_bytes(size, "big")


def _check_container(out: bytearray, depth: int) -> None:
    if depth >= limits.encoding_depth_max:
        raise EncodingError(f"lists and dicts nest at most {limits.encoding_depth_max} "
                            "levels deep: flatten the value")
    if len(out) > limits.encoded_bytes_max:
        raise EncodingError(f"an encoded value is at most {limits.encoded_bytes_max} bytes")


def _encode_list(value: list, out: bytearray, depth: int) -> None:
    _check_container(out, depth)
    out.append(TAG_LIST)
    _length(len(value), out)
    for item in value:
        _encode(item, out, depth + 1)


def _encode_dict(value: dict, out: bytearray, depth: int) -> None:
    _check_container(out, depth)
    entries = []
    for key, item in value.items():
        if not isinstance(key, str | bytes):
            raise EncodingError(f"dict keys are str or bytes, not {type(key).__name__}")
        encoded_key = bytearray()
        _encode(key, encoded_key, depth)
        entries.append((bytes(encoded_key), item))
    entries.sort(key=_first)
    out.append(TAG_DICT)
    _length(len(entries), out)
    for encoded_key, item in entries:
        out += encoded_key
        _encode(item, out, depth + 1)


_first = operator.itemgetter(0)


_ENCODERS = {int: _encode_int, str: _encode_str, bytes: _encode_bytes, dict: _encode_dict,
             list: _encode_list, bool: _encode_constant, type(None): _encode_constant}
# The encodings of 0..255, which most counts, amounts and flags are.
_BYTES_HEADS = tuple(bytes([TAG_BYTES, size]) for size in range(0x80))
_STR_HEADS = tuple(bytes([TAG_STR, size]) for size in range(0x80))
_SMALL_INTS = tuple(bytes([TAG_INT, 0]) if number == 0 else bytes([TAG_INT, 1, number])
                    for number in range(256))


def reference_decode(data) -> object:
    """The value ``data`` encodes; EncodingError unless ``data`` is exactly one canonical
    encoding (nothing before or after it)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError(f"decode takes bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.encoded_bytes_max:
        raise EncodingError(f"an encoded value is at most {limits.encoded_bytes_max} bytes, "
                            f"got {len(data)}")
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise EncodingError(f"{len(data) - end} bytes follow the encoded value at offset {end}")
    return value


def _read_length(data: bytes, position: int) -> tuple[int, int]:
    count, shift, start = 0, 0, position
    while True:
        if position >= len(data):
            raise EncodingError(f"the data ends inside a length at offset {start}")
        byte = data[position]
        position += 1
        count |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:  # encoded_bytes_max fits three LEB128 bytes
            raise EncodingError(f"a length at offset {start} is longer than the data can be")
    if byte == 0 and position - start > 1:
        raise EncodingError(f"a length at offset {start} is not in its shortest form")
    return count, position


def _take(data: bytes, position: int, what: str) -> tuple[bytes, int]:
    if position < len(data) and data[position] < 0x80:  # a one-byte length: most of them
        size = data[position]
        position += 1
    else:
        size, position = _read_length(data, position)
    end = position + size
    if end > len(data):
        raise EncodingError(f"{what} at offset {position} needs {size} bytes, "
                            f"{len(data) - position} remain")
    return data[position:end], end


def _decode(data: bytes, position: int, depth: int) -> tuple[object, int]:
    if position >= len(data):
        raise EncodingError(f"the data ends where a value should begin (offset {position})")
    tag = data[position]
    position += 1
    if tag == TAG_STR:
        raw, position = _take(data, position, "a str")
        try:
            return raw.decode("utf-8"), position
        except UnicodeDecodeError as exc:
            raise EncodingError(f"a str is not valid UTF-8: {exc.reason}") from None
    if tag == TAG_INT or tag == TAG_NEGATIVE:
        return _decode_int(data, position, tag)
    if tag == TAG_BYTES:
        return _take(data, position, "bytes")
    if tag <= TAG_TRUE:
        return (None, False, True)[tag], position
    if tag not in (TAG_LIST, TAG_DICT):
        raise EncodingError(f"unknown tag 0x{tag:02x} at offset {position - 1}")
    if depth >= limits.encoding_depth_max:
        raise EncodingError(f"lists and dicts nest at most {limits.encoding_depth_max} deep")
    count, position = _read_length(data, position)
    if count > len(data) - position:  # every item takes a byte at least
        raise EncodingError(f"a {count}-item container cannot fit in the data that remains")
    if tag == TAG_LIST:
        items = []
        for _ in range(count):
            item, position = _decode(data, position, depth + 1)
            items.append(item)
        return items, position
    return _decode_dict(data, position, depth, count)


def _decode_int(data: bytes, position: int, tag: int) -> tuple[int, int]:
    raw, end = _take(data, position, "an int")
    if len(raw) > limits.int_bytes_max:
        raise EncodingError(f"an int is at most {limits.int_bytes_max} bytes, got {len(raw)}")
    if raw[:1] == b"\x00" or (tag == TAG_NEGATIVE and not raw):
        raise EncodingError(f"the int at offset {position - 1} is not in its shortest form")
    magnitude = int.from_bytes(raw, "big")
    return (-magnitude if tag == TAG_NEGATIVE else magnitude), end


def _decode_dict(data: bytes, position: int, depth: int, count: int) -> tuple[dict, int]:
    result: dict = {}
    previous = b""
    for _ in range(count):
        start = position
        if position >= len(data) or data[position] not in (TAG_BYTES, TAG_STR):
            raise EncodingError(f"a dict key at offset {start} is not str or bytes")
        key, position = _decode(data, position, depth + 1)
        encoded_key = data[start:position]
        if encoded_key <= previous:
            raise EncodingError(f"dict keys are not in ascending order, or repeat, at offset "
                                f"{start}")
        previous = encoded_key
        result[key], position = _decode(data, position, depth + 1)
    return result, position


def _load_native():
    """tsunagi._native.encoding if it is built and with this module's bounds, else None."""
    try:
        from tsunagi._native import encoding as native
    except ImportError:  # not built (a source checkout before setup.py build_ext)
        return None
    bounds = {"int_bytes_max": limits.int_bytes_max,
              "encoding_depth_max": limits.encoding_depth_max,
              "encoded_bytes_max": limits.encoded_bytes_max}
    return native if native.NATIVE_CONSTANTS == bounds else None  # a stale build: the reference


_native = _load_native()
# Whether encode and decode are the native ones.
NATIVE = _native is not None
encode = _native.encode if NATIVE else reference_encode
decode = _native.decode if NATIVE else reference_decode
