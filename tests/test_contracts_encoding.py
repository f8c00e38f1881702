"""The canonical encoding gives each value exactly one spelling and turns every other input
into an EncodingError.

Method: hypothesis draws values of every supported type (nested, with str and bytes keys) and
checks the round trip and that distinct values never share bytes; byte strings, mutations of
valid encodings and hand-made non-canonical spellings must decode to the same value re-encoded
identically or fail with EncodingError, never another exception.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.contracts import decode, encode, limits
from tsunagi.errors import EncodingError

SETTINGS = settings(deadline=None, max_examples=300,
                    suppress_health_check=list(HealthCheck))

scalars = st.none() | st.booleans() | st.binary(max_size=40) | st.text(max_size=20) \
    | st.integers(min_value=-(2**256) + 1, max_value=2**256 - 1)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=8) | st.binary(max_size=8), inner, max_size=5), max_leaves=30)


def typed(value):
    """``value`` with every scalar tagged by its type, so True and 1 (equal in Python) differ."""
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, dict):
        return ("dict", sorted((typed(key), typed(item)) for key, item in value.items()))
    return (type(value).__name__, value)


@SETTINGS
@given(values)
def test_decode_gives_back_what_was_encoded(value):
    assert typed(decode(encode(value))) == typed(value)


@SETTINGS
@given(values, values)
def test_different_values_never_share_an_encoding(first, second):
    if typed(first) != typed(second):
        assert encode(first) != encode(second)


@SETTINGS
@given(st.binary(max_size=64))
def test_any_bytes_decode_canonically_or_raise_encoding_error(data):
    try:
        value = decode(data)
    except EncodingError:
        return
    assert encode(value) == data  # what decodes is the one spelling of its value


@SETTINGS
@given(values, st.data())
def test_mutated_encodings_decode_canonically_or_raise_encoding_error(value, data):
    encoded = bytearray(encode(value))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded), bytes(encoded[:cut]), bytes(encoded) + b"\x00"):
        try:
            decoded = decode(candidate)
        except EncodingError:
            continue
        assert encode(decoded) == candidate


def test_dict_keys_are_sorted_by_their_encoding_whatever_the_insertion_order():
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})
    assert decode(encode({"b": 1, b"a": 2})) == {b"a": 2, "b": 1}


@pytest.mark.parametrize("data, why", [
    (b"\x03\x01\x00", "shortest"),  # zero with a leading zero byte
    (b"\x03\x02\x00\x01", "shortest"),  # one with a leading zero byte
    (b"\x04\x00", "shortest"),  # minus zero
    (b"\x05\x81\x00", "shortest"),  # a length in two bytes that fits one
    (b"\x08\x02\x06\x01b\x00\x06\x01a\x00", "ascending"),  # keys out of order
    (b"\x08\x02\x06\x01a\x00\x06\x01a\x00", "ascending"),  # a key twice
    (b"\x08\x01\x03\x00\x00", "str or bytes"),  # an int key
    (b"\x06\x01\xff", "UTF-8"),
    (b"\x09", "unknown tag"),
    (b"\x00\x00", "follow"),
    (b"", "ends"),
    (b"\x07\x05\x00", "cannot fit"),
])
def test_non_canonical_or_malformed_input_is_refused_with_the_reason(data, why):
    with pytest.raises(EncodingError, match=why):
        decode(data)


@pytest.mark.parametrize("value, why", [
    (1.5, "float"), ((1, 2), "tuple"), ({1, 2}, "set"), ({1: "x"}, "dict keys"),
    (2**256, "at most 32 bytes"), ("\ud800", "not valid Unicode"), (object(), "object"),
])
def test_values_outside_the_encoding_are_refused_with_what_to_do(value, why):
    with pytest.raises(EncodingError, match=why):
        encode(value)


def test_nesting_and_size_are_bounded_both_ways():
    deep: list = []
    for _ in range(limits.encoding_depth_max):
        deep = [deep]
    with pytest.raises(EncodingError, match="nest"):
        encode(deep)
    with pytest.raises(EncodingError, match="nest"):
        decode(b"\x07\x01" * (limits.encoding_depth_max + 1) + b"\x00")
    with pytest.raises(EncodingError, match="at most"):
        encode(b"x" * limits.encoded_bytes_max)
    assert decode(encode(b"x" * (limits.encoded_bytes_max - 4))) == \
        b"x" * (limits.encoded_bytes_max - 4)


def test_known_encodings():
    assert encode(None) == b"\x00" and encode(False) == b"\x01" and encode(True) == b"\x02"
    assert encode(0) == b"\x03\x00" and encode(-1) == b"\x04\x01\x01"
    assert encode(256) == b"\x03\x02\x01\x00"
    assert encode("é") == b"\x06\x02\xc3\xa9" and encode(b"") == b"\x05\x00"
    assert encode([None, {}]) == b"\x07\x02\x00\x08\x00"
    assert encode(b"x" * 200)[:3] == b"\x05\xc8\x01"
