# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native kernel of Shamir secret sharing over GF(256) (ext/shamir_kernel.c): the values of a
whole share set in one call, and the interpolation of a whole set in one call, each without
the GIL. The arithmetic is constant-time (no table, no branch on a secret byte).

tsunagi.privacy.shamir lays the bytes out, draws the randomness and checks shares; it keeps a
plain-Python reference of the same arithmetic that tests hold this kernel to.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t

cdef extern from "shamir_kernel.h" nogil:
    uint8_t ts_gf_multiply(uint8_t a, uint8_t b)
    uint8_t ts_gf_inverse(uint8_t a)
    void ts_shamir_evaluate(const uint8_t *secret, const uint8_t *digest, size_t length,
                            const uint8_t *coefficients, size_t degree_count,
                            const uint8_t *xs, size_t count, uint8_t *out)
    void ts_shamir_interpolate(const uint8_t *xs, const uint8_t *values, size_t count,
                               size_t length, const uint8_t *targets, size_t target_count,
                               uint8_t *out)

# GF(256) has this many elements: no set of distinct points is larger.
cdef enum:
    field_size = 256

cdef uint8_t EMPTY[1]


cdef const uint8_t *_start(const uint8_t[::1] view) noexcept:
    """Address of a buffer's first byte; an empty buffer has none, so a static stands in."""
    return &view[0] if view.shape[0] else <const uint8_t *>EMPTY


def multiply(int a, int b):
    """The product of two field elements (for tests: one byte at a time)."""
    if not (0 <= a < field_size and 0 <= b < field_size):
        raise ValueError(f"field elements are 0..255, got {a} and {b}")
    return ts_gf_multiply(a, b)


def inverse(int a):
    """The inverse of a field element; 0 maps to 0 (for tests)."""
    if not 0 <= a < field_size:
        raise ValueError(f"a field element is 0..255, got {a}")
    return ts_gf_inverse(a)


def evaluate_shares(const uint8_t[::1] secret, const uint8_t[::1] digest,
                    const uint8_t[::1] coefficients, const uint8_t[::1] xs):
    """The values at each x of ``xs`` of the polynomial through (255, secret) and
    (254, digest) whose free part h has ``coefficients`` (rows of len(secret) bytes, lowest
    power first): len(xs) * len(secret) bytes, share i at i * len(secret)."""
    cdef size_t length = secret.shape[0], count = xs.shape[0], degree_count
    if length == 0 or <size_t>digest.shape[0] != length:
        raise ValueError(f"secret and digest must be as long and not empty, got {length} and "
                         f"{digest.shape[0]} bytes")
    if coefficients.shape[0] % length:
        raise ValueError(f"coefficients must be whole rows of {length} bytes, got "
                         f"{coefficients.shape[0]} bytes")
    degree_count = coefficients.shape[0] // length
    out = PyBytes_FromStringAndSize(NULL, count * length)
    cdef uint8_t *target = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const uint8_t *secret_bytes = _start(secret)
    cdef const uint8_t *digest_bytes = _start(digest)
    cdef const uint8_t *rows = _start(coefficients)
    cdef const uint8_t *points = _start(xs)
    with nogil:
        ts_shamir_evaluate(secret_bytes, digest_bytes, length, rows, degree_count, points,
                           count, target)
    return out


def interpolate(const uint8_t[::1] xs, const uint8_t[::1] values, const uint8_t[::1] targets):
    """The values at each of ``targets`` of the polynomial of least degree through the points
    (xs[i], values[i*length:(i+1)*length]), length = len(values) // len(xs): len(targets) *
    length bytes. The xs must be distinct (raises ValueError otherwise)."""
    cdef size_t count = xs.shape[0], length, i
    cdef bint seen[field_size]
    if count == 0 or values.shape[0] % count or values.shape[0] == 0:
        raise ValueError(f"values must be {count} (len(xs)) non-empty rows of one length, "
                         f"got {values.shape[0]} bytes")
    length = values.shape[0] // count
    for i in range(<size_t>field_size):
        seen[i] = False
    for i in range(count):
        if seen[xs[i]]:
            raise ValueError(f"the points' xs must be distinct, {xs[i]} comes twice")
        seen[xs[i]] = True
    out = PyBytes_FromStringAndSize(NULL, targets.shape[0] * length)
    cdef uint8_t *target = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const uint8_t *points = _start(xs)
    cdef const uint8_t *rows = _start(values)
    cdef const uint8_t *wanted = _start(targets)
    with nogil:
        ts_shamir_interpolate(points, rows, count, length, wanted, targets.shape[0], target)
    return out
