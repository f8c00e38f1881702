# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""BIP340 verification of many signatures at once, on C threads with the GIL released.

Two ways, the same answers:
- batched (the default): BIP340's batch equation, one multi-scalar multiplication per group of
  signatures, on libsecp256k1's internal code (ext/bip340_batch.c, the library's 0.2.0 release
  vendored under ext/vendor/secp256k1), about twice as fast a signature as verifying each;
- each alone: coincurve's libsecp256k1 ``secp256k1_schnorrsig_verify``, reached through
  function pointers taken from coincurve's cffi module once, at import: the per-signature
  limit the benchmarks compare against.
"""

from libc.stdint cimport uint8_t, uintptr_t

from tsunagi.errors import EncodingError

import numpy as np

cimport limits

cdef extern from "schnorr_batch.h" nogil:
    ctypedef int (*ts_schnorr_verify_fn)(const void *, const unsigned char *,
                                         const unsigned char *, size_t, const void *)
    ctypedef int (*ts_xonly_parse_fn)(const void *, void *, const unsigned char *)
    ctypedef struct ts_secp:
        const void *context
        ts_schnorr_verify_fn verify
        ts_xonly_parse_fn parse
    void ts_verify_batch(const ts_secp *secp, const uint8_t *messages, const uint8_t *keys,
                         const uint8_t *signatures, size_t count, int threads, uint8_t *out)
    void ts_check_keys(const ts_secp *secp, const uint8_t *keys, size_t count, uint8_t *out)

cdef extern from "bip340_batch.h" nogil:
    void ts_bip340_verify_batched(const uint8_t *messages, const uint8_t *keys,
                                  const uint8_t *signatures, size_t count, int threads,
                                  uint8_t *out)

cdef extern from "parallel.h" nogil:
    int TS_THREADS_MAX

# The limits this module was compiled with, by their names in ext/limits.pxd and the C headers:
# tests/test_limits.py holds each against its Python home (tsunagi.limits).
NATIVE_CONSTANTS = {"threads_max": limits.threads_max, "TS_THREADS_MAX": TS_THREADS_MAX}

cdef ts_secp _secp


def _bind_libsecp256k1():
    """Takes libsecp256k1's verify and parse functions and its static context from coincurve."""
    from coincurve._libsecp256k1 import ffi, lib
    _secp.context = <const void *><uintptr_t>int(
        ffi.cast("uintptr_t", lib.secp256k1_context_static))
    _secp.verify = <ts_schnorr_verify_fn><uintptr_t>int(
        ffi.cast("uintptr_t", ffi.addressof(lib, "secp256k1_schnorrsig_verify")))
    _secp.parse = <ts_xonly_parse_fn><uintptr_t>int(
        ffi.cast("uintptr_t", ffi.addressof(lib, "secp256k1_xonly_pubkey_parse")))


_bind_libsecp256k1()


cdef object _rows(object data, Py_ssize_t width, str what):
    """data as a C-contiguous N x width uint8 array (a copy only if it is not one already)."""
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data, dtype=np.uint8)
    else:
        try:
            array = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        except (TypeError, ValueError) as exc:
            raise EncodingError(f"{what} must be a contiguous buffer: {exc}") from exc
    if array.size % width or (array.ndim == 2 and array.shape[1] != width) or array.ndim > 2:
        raise EncodingError(f"{what} must be N x {width} bytes, got shape {array.shape}")
    return array.reshape(-1, width)


def verify_batch(messages, public_keys, signatures, int threads=1, bint batched=True):
    """N bool: whether signatures[i] (64 bytes) is a valid BIP340 signature of messages[i]
    (32 bytes) under the x-only key public_keys[i] (32 bytes). Runs on `threads` threads.

    ``batched`` checks groups of signatures with one batch equation each (a group with a bad
    signature is split until the bad ones are found); ``batched=False`` verifies each alone
    with coincurve's libsecp256k1. Both give the same answers."""
    message_rows = _rows(messages, 32, "messages")
    key_rows = _rows(public_keys, 32, "public_keys")
    signature_rows = _rows(signatures, 64, "signatures")
    cdef size_t count = message_rows.shape[0]
    if key_rows.shape[0] != count or signature_rows.shape[0] != count:
        raise EncodingError(
            f"messages, public_keys and signatures differ in count: {count}, "
            f"{key_rows.shape[0]}, {signature_rows.shape[0]}")
    result = np.zeros(count, dtype=np.bool_)
    if count == 0:
        return result
    cdef const uint8_t[:, ::1] m = message_rows
    cdef const uint8_t[:, ::1] k = key_rows
    cdef const uint8_t[:, ::1] s = signature_rows
    cdef uint8_t[::1] out = result.view(np.uint8)
    threads = max(1, min(threads, limits.threads_max))
    with nogil:
        if batched:
            ts_bip340_verify_batched(&m[0, 0], &k[0, 0], &s[0, 0], count, threads, &out[0])
        else:
            ts_verify_batch(&_secp, &m[0, 0], &k[0, 0], &s[0, 0], count, threads, &out[0])
    return result


def check_keys(public_keys):
    """N bool: whether each 32-byte value is a valid x-only public key."""
    key_rows = _rows(public_keys, 32, "public_keys")
    cdef size_t count = key_rows.shape[0]
    result = np.zeros(count, dtype=np.bool_)
    if count == 0:
        return result
    cdef const uint8_t[:, ::1] k = key_rows
    cdef uint8_t[::1] out = result.view(np.uint8)
    with nogil:
        ts_check_keys(&_secp, &k[0, 0], count, &out[0])
    return result
