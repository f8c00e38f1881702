"""The native canonical encoder (tsunagi._native.encoding) gives the reference's bytes and
refusals, so a node with it built stores, hashes and refuses exactly what a node without it does.

Method: hypothesis draws values of every kind encode meets (the supported types, int and str
subclasses, bytearray, ints past the bound, floats, tuples and sets nested anywhere) and byte
strings (random, from the format's own bytes, and mutated or cut encodings); native and
reference (tsunagi.contracts.encoding.reference_*) must give the same bytes or value, or both
refuse with the same EncodingError message. Hand-made cases pin each refusal, the bounds at and
past their limits, and that the package imports and encodes when the native module is absent.
"""

from __future__ import annotations

import enum
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_contracts_encoding import typed

from tsunagi.contracts import encoding, limits
from tsunagi.contracts.encoding import reference_decode, reference_encode
from tsunagi.errors import EncodingError

native = pytest.importorskip("tsunagi._native.encoding")

SETTINGS = settings(deadline=None, max_examples=400, suppress_health_check=list(HealthCheck))


class Color(enum.IntEnum):
    red = 1
    blue = 300


class Name(str):
    """A str subclass whose __str__ is its own: encoded as the str it gives."""

    def __str__(self) -> str:
        return "name:" + str.__str__(self)


texts = st.text(max_size=12) | st.lists(
    st.sampled_from("aé\u00ff\u4e00\U0001f600\ud800\udfff"), max_size=6).map("".join)
integers = st.integers(-300, 300) | st.integers(-(2**64) - 2, 2**64 + 2) \
    | st.integers(-(2**256) + 1, 2**256 - 1) | st.integers(-(2**264), 2**264)
plain_scalars = st.none() | st.booleans() | st.binary(max_size=40) \
    | st.text(max_size=20) | st.integers(-(2**256) + 1, 2**256 - 1)
plain_values = st.recursive(plain_scalars, lambda inner: st.lists(inner, max_size=5)
                            | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8),
                                              inner, max_size=5), max_leaves=30)
# Everything encode may be handed, the refused kinds among them.
odd_scalars = st.sampled_from(list(Color)) | texts.map(Name) | st.binary(max_size=8).map(
    bytearray) | st.floats(allow_nan=False) | st.tuples(st.integers()) \
    | st.frozensets(st.integers(), max_size=2) | st.just(object())
any_keys = texts | st.binary(max_size=8) | texts.map(Name) | st.integers(0, 3) \
    | st.tuples(st.integers(0, 1))
any_values = st.recursive(
    plain_scalars | texts | integers | odd_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(any_keys, inner, max_size=6)
    | st.dictionaries(st.text(max_size=3), inner, min_size=13, max_size=24),  # the merge sort
    max_leaves=40)
# Byte strings of the format's own tags, lengths and continuation bytes: structure, often.
format_bytes = st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x7F, 0x80, 0x81, 0xC3,
                                         0xA9, 0xED, 0xFF]), max_size=40).map(bytes)


def outcome(function, argument):
    """What ``function`` gives for ``argument``: its typed result, or its refusal's message."""
    try:
        return ("gives", typed(function(argument)))
    except EncodingError as exc:
        return ("refuses", str(exc))


def test_the_native_module_is_built_with_the_contract_limits_and_in_use():
    assert native.NATIVE_CONSTANTS == {"int_bytes_max": limits.int_bytes_max,
                                       "encoding_depth_max": limits.encoding_depth_max,
                                       "encoded_bytes_max": limits.encoded_bytes_max}
    assert encoding.NATIVE and encoding.encode is native.encode
    assert encoding.decode is native.decode


@SETTINGS
@given(any_values)
def test_native_encode_gives_the_reference_bytes_or_its_refusal(value):
    assert outcome(native.encode, value) == outcome(reference_encode, value)


@SETTINGS
@given(plain_values)
def test_native_decode_gives_back_what_was_encoded(value):
    encoded = native.encode(value)
    assert typed(native.decode(encoded)) == typed(value)
    assert typed(reference_decode(encoded)) == typed(value)


@SETTINGS
@given(st.binary(max_size=64) | format_bytes)
def test_native_decode_of_any_bytes_agrees_with_the_reference(data):
    expected = outcome(reference_decode, data)
    assert outcome(native.decode, data) == expected
    assert outcome(native.decode, bytearray(data)) == expected
    assert outcome(native.decode, memoryview(data)) == expected


@SETTINGS
@given(plain_values, st.data())
def test_native_decode_of_mutated_encodings_agrees_with_the_reference(value, data):
    encoded = bytearray(reference_encode(value))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    inserted = data.draw(st.binary(min_size=1, max_size=3))
    for candidate in (bytes(encoded), bytes(encoded[:cut]), bytes(encoded) + b"\x00",
                      bytes(encoded[:cut] + inserted + encoded[cut:]),
                      bytes(encoded[:cut] + encoded[cut + 1:])):
        assert outcome(native.decode, candidate) == outcome(reference_decode, candidate)


@pytest.mark.parametrize("data, why", [
    (b"\x03\x01\x00", "shortest"),  # zero with a leading zero byte
    (b"\x04\x00", "shortest"),  # minus zero
    (b"\x04\x02\x00\x01", "shortest"),  # a negative int with a leading zero byte
    (b"\x05\x81\x00", "shortest"),  # a length in two bytes that fits one
    (b"\x05\x80\x80\x00", "shortest"),  # three bytes that fit one
    (b"\x05\x80\x80\x80\x80\x01", "longer than the data"),  # a fifth LEB128 byte
    (b"\x05\xff\xff\xff\x7f", "needs"),  # four bytes: read, then too long for the data
    (b"\x05\x80", "ends inside a length"),
    (b"\x06\x05abc", "needs 5 bytes, 3 remain"),
    (b"\x03\x21" + b"\x01" * 33, "at most 32 bytes"),
    (b"\x08\x02\x06\x01b\x00\x06\x01a\x00", "ascending"),  # keys out of order
    (b"\x08\x02\x06\x01a\x00\x06\x01a\x00", "ascending"),  # a key twice
    (b"\x08\x02\x06\x02ab\x00\x06\x01a\x00", "ascending"),  # a longer key before its prefix
    (b"\x08\x02\x06\x01a\x00\x05\x01a\x00", "ascending"),  # str keys sort after bytes keys
    (b"\x08\x01\x03\x00\x00", "str or bytes"),  # an int key
    (b"\x08\x01", "cannot fit"),
    (b"\x06\x01\xff", "UTF-8"),
    (b"\x06\x03\xed\xa0\x80", "UTF-8"),  # a surrogate's UTF-8
    (b"\x06\x02\xc0\x80", "UTF-8"),  # an overlong NUL
    (b"\x09", "unknown tag"),
    (b"\xff", "unknown tag 0xff"),
    (b"\x00\x00", "follow"),
    (b"", "ends"),
    (b"\x07\x05\x00", "cannot fit"),
    (b"\x07\x01" * (limits.encoding_depth_max + 1) + b"\x00", "nest"),
    (b"\x05" + b"\x00" * limits.encoded_bytes_max, "at most"),
])
def test_each_malformed_input_is_refused_by_both_with_the_same_reason(data, why):
    with pytest.raises(EncodingError, match=why) as refused:
        native.decode(data)
    with pytest.raises(EncodingError) as reference:
        reference_decode(data)
    assert str(refused.value) == str(reference.value)


class Listish(list):
    pass


class Dictish(dict):
    pass


@pytest.mark.parametrize("value, why", [
    (1.5, "float"), ([1, (1, 2)], "tuple"), ({1, 2}, "set"), ({1: "x"}, "dict keys"),
    ({(1,): 1}, "dict keys are str or bytes, not tuple"),
    (2**256, "at most 32 bytes"), (-(2**256), "at most 32 bytes"),
    ("\ud800", "not valid Unicode"), ({"a\udc80": 1}, "not valid Unicode"),
    (object(), "object"), (Listish([1]), "Listish"), (Dictish(a=1), "Dictish"),
    (b"x" * limits.encoded_bytes_max, "at most 65536 bytes, this one is 65540"),
    ([b"x" * limits.encoded_bytes_max, [1]], "at most 65536 bytes"),  # seen at the inner list
])
def test_values_outside_the_encoding_are_refused_by_both_with_the_same_reason(value, why):
    with pytest.raises(EncodingError, match=why) as refused:
        native.encode(value)
    with pytest.raises(EncodingError) as reference:
        reference_encode(value)
    assert str(refused.value) == str(reference.value)


def test_subclasses_and_bytearray_encode_as_their_plain_values():
    assert native.encode(Color.blue) == native.encode(300) == reference_encode(Color.blue)
    assert native.encode(Name("x")) == native.encode("name:x") == reference_encode(Name("x"))
    assert native.encode({Name("k"): bytearray(b"v")}) == native.encode({"name:k": b"v"})
    assert native.encode(bytearray(b"ab")) == native.encode(b"ab")


def test_known_encodings_and_their_bounds():
    assert native.encode(None) == b"\x00" and native.encode(False) == b"\x01"
    assert native.encode(0) == b"\x03\x00" and native.encode(-1) == b"\x04\x01\x01"
    assert native.encode(256) == b"\x03\x02\x01\x00" and native.encode("é") == b"\x06\x02\xc3\xa9"
    assert native.encode(-(2**63)) == b"\x04\x08\x80" + b"\x00" * 7
    assert native.encode(2**64 - 1) == b"\x03\x08" + b"\xff" * 8
    assert native.encode(b"x" * 200)[:3] == b"\x05\xc8\x01"
    assert native.encode({"b": 1, b"a": 2}) == b"\x08\x02\x05\x01a\x03\x01\x02\x06\x01b\x03\x01\x01"
    for number in (2**256 - 1, -(2**256) + 1, -(2**63), 2**63, -(2**64), 2**64 - 1):
        assert native.decode(native.encode(number)) == number
    deep: list = []
    for _ in range(limits.encoding_depth_max - 1):
        deep = [deep]
    assert native.decode(native.encode(deep)) == deep  # the deepest nesting that is allowed
    with pytest.raises(EncodingError, match="nest"):
        native.encode([deep])
    biggest = b"x" * (limits.encoded_bytes_max - 4)
    assert native.decode(native.encode(biggest)) == biggest
    with pytest.raises(EncodingError, match="decode takes bytes, not str"):
        native.decode("\x00")


def test_the_package_imports_and_encodes_with_the_reference_when_native_is_absent():
    blocker = (
        "import sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tsunagi._native.encoding':\n"
        "            raise ImportError('not built')\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from tsunagi.contracts import encoding, decode, encode\n"
        "assert not encoding.NATIVE and encode is encoding.reference_encode\n"
        "assert decode(encode({'a': [1, b'x']})) == {'a': [1, b'x']}\n"
        "print('reference')\n")
    ran = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "reference"
