# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native canonical encoding of contract values (the format of tsunagi.contracts.encoding, whose
docstring is its definition and whose plain-Python code is the reference tests hold this to).

The same bytes and the same refusals, with the same messages: a whole value is encoded or
decoded in one call, into a C buffer that starts on the stack, with no Python call per item
for the exact types (None, bool, int, bytes, str, list, dict) that stored values, events and
arguments are made of. Int subclasses, str subclasses, bytearray and ints beyond 64 bits take
the reference's own Python steps, so their results cannot differ.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

from tsunagi.errors import EncodingError

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL
    object PyUnicode_DecodeUTF8(const char *data, Py_ssize_t size, const char *errors)
    long long PyLong_AsLongLongAndOverflow(object number, int *overflow) except? -1

# The bounds of tsunagi.contracts.limits (int_bytes_max, encoding_depth_max,
# encoded_bytes_max), compiled in; NATIVE_CONSTANTS reports them and tsunagi.contracts.encoding
# uses this module only when they agree, so a stale build falls back to the reference.
cdef enum:
    int_bytes_max = 32
    encoding_depth_max = 32
    encoded_bytes_max = 64 * 1024

NATIVE_CONSTANTS = {"int_bytes_max": int_bytes_max, "encoding_depth_max": encoding_depth_max,
                    "encoded_bytes_max": encoded_bytes_max}

cdef enum:
    TAG_NONE = 0
    TAG_FALSE = 1
    TAG_TRUE = 2
    TAG_INT = 3
    TAG_NEGATIVE = 4
    TAG_BYTES = 5
    TAG_STR = 6
    TAG_LIST = 7
    TAG_DICT = 8

# Room on the C stack before a buffer moves to the heap: a transfer's stored entry fits the
# output's, a dict's keys (16 of them, short) fit the key buffer.
cdef enum:
    out_stack_bytes = 2048
    keys_stack_bytes = 512
    keys_stack_count = 16
    # Below this many keys an insertion sort beats the merge sort.
    insertion_sort_max = 12


cdef struct Out:
    uint8_t *data
    Py_ssize_t size
    Py_ssize_t capacity
    bint heap  # data was malloc'd (else it is a caller's stack array)


cdef int _reserve(Out *out, Py_ssize_t extra) except -1:
    """Room for ``extra`` more bytes, doubling the buffer (moving it off the stack) when full."""
    cdef Py_ssize_t need = out.size + extra, capacity = out.capacity
    cdef uint8_t *grown
    if need <= capacity:
        return 0
    while capacity < need:
        capacity *= 2
    if out.heap:
        grown = <uint8_t *>realloc(out.data, capacity)
    else:
        grown = <uint8_t *>malloc(capacity)
        if grown != NULL:
            memcpy(grown, out.data, out.size)
    if grown == NULL:
        raise MemoryError("no memory for an encoded value")
    out.data, out.capacity, out.heap = grown, capacity, True
    return 0


cdef inline int _put_head(Out *out, uint8_t tag, size_t count) except -1:
    """A tag and a LEB128 count in the fewest bytes."""
    if out.size + 11 > out.capacity:
        _reserve(out, 11)
    out.data[out.size] = tag
    out.size += 1
    while count >= 0x80:
        out.data[out.size] = <uint8_t>((count & 0x7F) | 0x80)
        out.size += 1
        count >>= 7
    out.data[out.size] = <uint8_t>count
    out.size += 1
    return 0


cdef inline int _put(Out *out, uint8_t tag, const char *data, Py_ssize_t size) except -1:
    """A tag, the length of ``data`` and ``data``."""
    _put_head(out, tag, <size_t>size)
    if out.size + size > out.capacity:
        _reserve(out, size)
    memcpy(out.data + out.size, data, size)
    out.size += size
    return 0


# --- encoding ------------------------------------------------------------------------------------

def encode(value):
    """The canonical bytes of ``value``; EncodingError names what cannot be encoded."""
    cdef uint8_t stack[out_stack_bytes]
    cdef Out out
    out.data, out.size, out.capacity, out.heap = stack, 0, out_stack_bytes, False
    try:
        _encode(value, &out, 0)
        if out.size > encoded_bytes_max:
            raise EncodingError(f"an encoded value is at most {encoded_bytes_max} bytes, "
                                f"this one is {out.size}: store or pass less at once")
        return PyBytes_FromStringAndSize(<char *>out.data, out.size)
    finally:
        if out.heap:
            free(out.data)


cdef int _encode(object value, Out *out, int depth) except -1:
    cdef type kind = type(value)
    if kind is str:
        return _encode_str(value, out)
    if kind is int:
        return _encode_int(value, out)
    if kind is bytes:
        return _put(out, TAG_BYTES, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    if kind is dict:
        return _encode_dict(value, out, depth)
    if kind is list:
        return _encode_list(value, out, depth)
    if value is None or kind is bool:
        if out.size + 1 > out.capacity:
            _reserve(out, 1)
        out.data[out.size] = TAG_NONE if value is None else TAG_TRUE if value else TAG_FALSE
        out.size += 1
        return 0
    # Subclasses: the reference's own conversions, so an IntEnum is its number and a str
    # subclass the str its __str__ gives.
    if isinstance(value, int):
        return _encode_int(int(value), out)
    if isinstance(value, str):
        return _encode_str(str(value), out)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value)
        return _put(out, TAG_BYTES, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    hint = "use int (scaled) for amounts" if kind is float else "use a list" \
        if kind is tuple else "use None, bool, int, bytes, str, list or dict"
    raise EncodingError(f"cannot encode a value of type {kind.__name__}: {hint}")


cdef int _encode_str(object value, Out *out) except -1:
    cdef Py_ssize_t size = 0
    cdef const char *text = NULL
    try:
        text = PyUnicode_AsUTF8AndSize(value, &size)
    except UnicodeEncodeError:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodingError(f"a str to encode is not valid Unicode ({exc.reason} at "
                                f"{exc.start}): pass bytes for binary data") from None
        raise
    return _put(out, TAG_STR, text, size)


cdef int _encode_int(object value, Out *out) except -1:
    cdef int overflow = 0, size = 0, index
    cdef long long number = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long magnitude, rest
    cdef uint8_t tag
    if overflow:
        return _encode_big_int(value, out)
    if number >= 0:
        magnitude, tag = <unsigned long long>number, TAG_INT
    else:
        magnitude, tag = <unsigned long long>(-(number + 1)) + 1, TAG_NEGATIVE
    rest = magnitude
    while rest:
        size += 1
        rest >>= 8
    if out.size + 2 + size > out.capacity:
        _reserve(out, 2 + size)
    out.data[out.size] = tag
    out.data[out.size + 1] = <uint8_t>size  # int_bytes_max < 0x80: one LEB128 byte
    for index in range(size):
        out.data[out.size + 2 + index] = <uint8_t>(magnitude >> (8 * (size - 1 - index)))
    out.size += 2 + size
    return 0


cdef int _encode_big_int(object value, Out *out) except -1:
    """An int beyond 64 bits, as the reference computes it."""
    magnitude = -value if value < 0 else value
    cdef Py_ssize_t size = (magnitude.bit_length() + 7) // 8
    if size > int_bytes_max:
        raise EncodingError(f"an int is at most {int_bytes_max} bytes of magnitude "
                            f"({8 * int_bytes_max} bits), this one is {size}")
    data = magnitude.to_bytes(size, "big")
    return _put(out, TAG_NEGATIVE if value < 0 else TAG_INT, PyBytes_AS_STRING(data), size)


cdef int _check_container(Out *out, int depth) except -1:
    if depth >= encoding_depth_max:
        raise EncodingError(f"lists and dicts nest at most {encoding_depth_max} "
                            "levels deep: flatten the value")
    if out.size > encoded_bytes_max:
        raise EncodingError(f"an encoded value is at most {encoded_bytes_max} bytes")
    return 0


cdef int _encode_list(list value, Out *out, int depth) except -1:
    cdef Py_ssize_t index = 0
    _check_container(out, depth)
    _put_head(out, TAG_LIST, <size_t>PyList_GET_SIZE(value))
    while index < PyList_GET_SIZE(value):  # as a list iterator: it may change under __str__
        item = <object>PyList_GET_ITEM(value, index)
        _encode(item, out, depth + 1)
        index += 1
    return 0


cdef inline int _compare(const uint8_t *keys, const Py_ssize_t *offsets, Py_ssize_t first,
                         Py_ssize_t second) noexcept:
    """Order of two encoded keys as Python orders bytes (a prefix first)."""
    cdef Py_ssize_t first_size = offsets[first + 1] - offsets[first]
    cdef Py_ssize_t second_size = offsets[second + 1] - offsets[second]
    cdef int order = memcmp(keys + offsets[first], keys + offsets[second],
                            first_size if first_size < second_size else second_size)
    if order:
        return order
    return (first_size > second_size) - (first_size < second_size)


cdef void _sort(Py_ssize_t *order, Py_ssize_t *spare, Py_ssize_t count, const uint8_t *keys,
                const Py_ssize_t *offsets) noexcept:
    """Sorts entry numbers by their encoded keys, stably (as list.sort): insertion for a few,
    bottom-up merges for more."""
    cdef Py_ssize_t index, back, entry, width, low, middle, high, left, right, target
    cdef Py_ssize_t *source = order
    cdef Py_ssize_t *target_run = spare
    if count <= insertion_sort_max:
        for index in range(1, count):
            entry = order[index]
            back = index
            while back > 0 and _compare(keys, offsets, order[back - 1], entry) > 0:
                order[back] = order[back - 1]
                back -= 1
            order[back] = entry
        return
    width = 1
    while width < count:
        low = 0
        while low < count:
            middle = min(low + width, count)
            high = min(low + 2 * width, count)
            left, right, target = low, middle, low
            while left < middle and right < high:
                if _compare(keys, offsets, source[right], source[left]) < 0:
                    target_run[target] = source[right]
                    right += 1
                else:
                    target_run[target] = source[left]
                    left += 1
                target += 1
            while left < middle:
                target_run[target] = source[left]
                left += 1
                target += 1
            while right < high:
                target_run[target] = source[right]
                right += 1
                target += 1
            low = high
        source, target_run = target_run, source
        width *= 2
    if source != order:
        memcpy(order, source, count * sizeof(Py_ssize_t))


cdef int _encode_dict(dict value, Out *out, int depth) except -1:
    """Keys encoded apart first (all of them, in insertion order, as the reference does, so the
    same key is refused first), sorted by their bytes, then each key and value."""
    cdef uint8_t keys_stack[keys_stack_bytes]
    cdef Py_ssize_t offsets_stack[keys_stack_count + 1]
    cdef Py_ssize_t order_stack[2 * keys_stack_count]
    cdef PyObject *items_stack[keys_stack_count]
    cdef Py_ssize_t count = len(value), found = 0, index, entry, size
    cdef Py_ssize_t *offsets = offsets_stack
    cdef Py_ssize_t *order = order_stack
    cdef PyObject **items = items_stack
    cdef Out keys
    _check_container(out, depth)
    keys.data, keys.size, keys.capacity, keys.heap = keys_stack, 0, keys_stack_bytes, False
    try:
        if count > keys_stack_count:
            offsets = <Py_ssize_t *>malloc((count + 1) * sizeof(Py_ssize_t))
            order = <Py_ssize_t *>malloc(2 * count * sizeof(Py_ssize_t))
            items = <PyObject **>malloc(count * sizeof(PyObject *))
            if offsets == NULL or order == NULL or items == NULL:
                raise MemoryError("no memory to sort a dict's keys")
        offsets[0] = 0
        for key, item in value.items():
            if found == count:
                raise RuntimeError("dictionary changed size during iteration")
            if not isinstance(key, (str, bytes)):
                raise EncodingError(f"dict keys are str or bytes, not {type(key).__name__}")
            _encode(key, &keys, depth)
            Py_INCREF(item)
            items[found] = <PyObject *>item
            order[found] = found
            found += 1
            offsets[found] = keys.size
        _sort(order, order + found, found, keys.data, offsets)
        _put_head(out, TAG_DICT, <size_t>found)
        for index in range(found):
            entry = order[index]
            size = offsets[entry + 1] - offsets[entry]
            if out.size + size > out.capacity:
                _reserve(out, size)
            memcpy(out.data + out.size, keys.data + offsets[entry], size)
            out.size += size
            _encode(<object>items[entry], out, depth + 1)
    finally:
        for index in range(found):
            Py_DECREF(<object>items[index])
        if keys.heap:
            free(keys.data)
        if offsets != offsets_stack:
            free(offsets)
            free(order)
            free(items)
    return 0


# --- decoding ------------------------------------------------------------------------------------

cdef enum:
    WHAT_STR = 0
    WHAT_BYTES = 1
    WHAT_INT = 2

_WHAT = ("a str", "bytes", "an int")


def decode(data):
    """The value ``data`` encodes; EncodingError unless ``data`` is exactly one canonical
    encoding (nothing before or after it)."""
    cdef Py_ssize_t position = 0, size
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EncodingError(f"decode takes bytes, not {type(data).__name__}")
        data = bytes(data)
    size = PyBytes_GET_SIZE(data)
    if size > encoded_bytes_max:
        raise EncodingError(f"an encoded value is at most {encoded_bytes_max} bytes, "
                            f"got {size}")
    value = _decode(<const uint8_t *>PyBytes_AS_STRING(data), size, &position, 0)
    if position != size:
        raise EncodingError(f"{size - position} bytes follow the encoded value at offset "
                            f"{position}")
    return value


cdef Py_ssize_t _read_length(const uint8_t *data, Py_ssize_t size,
                             Py_ssize_t *position) except -1:
    cdef Py_ssize_t count = 0, start = position[0], at = start
    cdef int shift = 0
    cdef uint8_t byte
    while True:
        if at >= size:
            raise EncodingError(f"the data ends inside a length at offset {start}")
        byte = data[at]
        at += 1
        count |= (<Py_ssize_t>(byte & 0x7F)) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:  # encoded_bytes_max fits three LEB128 bytes
            raise EncodingError(f"a length at offset {start} is longer than the data can be")
    if byte == 0 and at - start > 1:
        raise EncodingError(f"a length at offset {start} is not in its shortest form")
    position[0] = at
    return count


cdef inline Py_ssize_t _take(const uint8_t *data, Py_ssize_t size, Py_ssize_t *position,
                             int what) except -1:
    """Reads a length and checks its bytes are there: returns where they start and moves
    ``position`` past them."""
    cdef Py_ssize_t at = position[0], length
    if at < size and data[at] < 0x80:  # a one-byte length: most of them
        length = data[at]
        at += 1
    else:
        length = _read_length(data, size, position)
        at = position[0]
    if at + length > size:
        raise EncodingError(f"{_WHAT[what]} at offset {at} needs {length} bytes, "
                            f"{size - at} remain")
    position[0] = at + length
    return at


cdef object _decode(const uint8_t *data, Py_ssize_t size, Py_ssize_t *position, int depth):
    cdef Py_ssize_t at = position[0], start, count, index
    cdef uint8_t tag
    if at >= size:
        raise EncodingError(f"the data ends where a value should begin (offset {at})")
    tag = data[at]
    position[0] = at + 1
    if tag == TAG_STR:
        start = _take(data, size, position, WHAT_STR)
        try:
            return PyUnicode_DecodeUTF8(<const char *>data + start, position[0] - start, NULL)
        except UnicodeDecodeError as exc:
            raise EncodingError(f"a str is not valid UTF-8: {exc.reason}") from None
    if tag == TAG_INT or tag == TAG_NEGATIVE:
        return _decode_int(data, size, position, tag)
    if tag == TAG_BYTES:
        start = _take(data, size, position, WHAT_BYTES)
        return PyBytes_FromStringAndSize(<const char *>data + start, position[0] - start)
    if tag == TAG_NONE:
        return None
    if tag == TAG_FALSE:
        return False
    if tag == TAG_TRUE:
        return True
    if tag != TAG_LIST and tag != TAG_DICT:
        raise EncodingError(f"unknown tag 0x{tag:02x} at offset {at}")
    if depth >= encoding_depth_max:
        raise EncodingError(f"lists and dicts nest at most {encoding_depth_max} deep")
    count = _read_length(data, size, position)
    if count > size - position[0]:  # every item takes a byte at least
        raise EncodingError(f"a {count}-item container cannot fit in the data that remains")
    if tag == TAG_DICT:
        return _decode_dict(data, size, position, depth, count)
    items = PyList_New(count)  # its empty slots are safe to free if an item fails
    for index in range(count):
        item = _decode(data, size, position, depth + 1)
        Py_INCREF(item)
        PyList_SET_ITEM(items, index, item)
    return items


cdef object _decode_int(const uint8_t *data, Py_ssize_t size, Py_ssize_t *position,
                        uint8_t tag):
    cdef Py_ssize_t tag_at = position[0] - 1, start, length, index
    cdef unsigned long long magnitude = 0
    start = _take(data, size, position, WHAT_INT)
    length = position[0] - start
    if length > int_bytes_max:
        raise EncodingError(f"an int is at most {int_bytes_max} bytes, got {length}")
    if (length and data[start] == 0) or (tag == TAG_NEGATIVE and not length):
        raise EncodingError(f"the int at offset {tag_at} is not in its shortest form")
    if length > 8:
        number = int.from_bytes(PyBytes_FromStringAndSize(<const char *>data + start, length),
                                "big")
        return -number if tag == TAG_NEGATIVE else number
    for index in range(length):
        magnitude = magnitude << 8 | data[start + index]
    if tag == TAG_INT:
        return PyLong_FromUnsignedLongLong(magnitude)
    if magnitude <= (<unsigned long long>1) << 63:
        return PyLong_FromLongLong(-<long long>(magnitude - 1) - 1)
    return -PyLong_FromUnsignedLongLong(magnitude)


cdef object _decode_dict(const uint8_t *data, Py_ssize_t size, Py_ssize_t *position,
                         int depth, Py_ssize_t count):
    cdef Py_ssize_t index, start, key_size, previous_start = 0, previous_size = 0, common
    cdef int order
    result = {}
    for index in range(count):
        start = position[0]
        if start >= size or (data[start] != TAG_BYTES and data[start] != TAG_STR):
            raise EncodingError(f"a dict key at offset {start} is not str or bytes")
        key = _decode(data, size, position, depth + 1)
        key_size = position[0] - start
        common = key_size if key_size < previous_size else previous_size
        order = memcmp(data + start, data + previous_start, common)
        if order < 0 or (order == 0 and key_size <= previous_size):
            raise EncodingError(f"dict keys are not in ascending order, or repeat, at offset "
                                f"{start}")
        previous_start, previous_size = start, key_size
        item = _decode(data, size, position, depth + 1)
        PyDict_SetItem(result, key, item)
    return result
