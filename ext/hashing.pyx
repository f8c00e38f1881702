# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native SHA-256 core: hashes, batch hashing, Merkle levels, header checks, nonce search.

Every function checks sizes before it touches memory and raises tsunagi.errors classes; the
loops run in C with the GIL released.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from tsunagi.errors import EncodingError, CancelledError

cimport limits

cdef extern from "sha256.h" nogil:
    int TS_BACKEND_PORTABLE, TS_BACKEND_SHANI
    int ts_sha256_select_backend()
    int ts_sha256_backend()
    void ts_sha256(const uint8_t *data, size_t length, uint8_t *out)
    void ts_sha256d(const uint8_t *data, size_t length, uint8_t *out)
    void ts_merkle_parents(const uint8_t *src, size_t count, uint8_t *out)
    void ts_header_hash(const uint8_t *header, uint8_t *out)
    int ts_bits_to_target(uint32_t bits, uint8_t *target)
    int ts_hash_meets_target(const uint8_t *hash, const uint8_t *target)

cdef extern from "pow.h" nogil:
    ctypedef struct ts_search:
        pass
    uint64_t TS_NONCE_NONE
    int TS_HEADER_BYTES
    ts_search *ts_search_new(const uint8_t *header, uint64_t first, uint64_t count,
                             uint64_t chunk)
    void ts_search_free(ts_search *search)
    uint64_t ts_search_run(ts_search *search, int threads)
    void ts_search_cancel(ts_search *search)
    int ts_search_cancelled(ts_search *search)
    uint64_t ts_search_hashes(ts_search *search)
    size_t ts_validate_headers(const uint8_t *headers, size_t count, const uint8_t *prev_hash,
                               int threads, int *reason)
    void ts_sha256d_records_parallel(const uint8_t *buffer, size_t record_count,
                                     size_t record_size, uint8_t *out, int threads)
    void ts_merkle_parents_parallel(const uint8_t *src, size_t count, uint8_t *out,
                                    int threads)

cdef extern from "parallel.h" nogil:
    int TS_THREADS_MAX

import numpy as np

ts_sha256_select_backend()

_BACKEND_NAMES = {TS_BACKEND_PORTABLE: "portable", TS_BACKEND_SHANI: "shani"}

# The sizes and limits this module was compiled with, by their names in ext/limits.pxd and the
# C headers: tests/test_limits.py holds each against its Python home (tsunagi.limits).
NATIVE_CONSTANTS = {
    "header_bytes": limits.header_bytes, "hash_bytes": limits.hash_bytes,
    "threads_max": limits.threads_max,
    "TS_HEADER_BYTES": TS_HEADER_BYTES, "TS_THREADS_MAX": TS_THREADS_MAX,
}


def backend():
    """Name of the compression path in use: 'shani' or 'portable'."""
    return _BACKEND_NAMES[ts_sha256_backend()]


def select_backend():
    """Chooses the backend again from the CPU and TSUNAGI_SHA256_PORTABLE; returns its name."""
    return _BACKEND_NAMES[ts_sha256_select_backend()]


cdef const uint8_t[::1] _bytes_view(object data, str what) except *:
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:
        raise EncodingError(
            f"{what} must be a contiguous bytes-like object, not {type(data).__name__}"
        ) from exc


cdef inline const uint8_t *_pointer(const uint8_t[::1] view) noexcept nogil:
    # An empty view has no element 0; any valid address works for a zero-length read.
    cdef const uint8_t *empty = b""
    return &view[0] if view.shape[0] else empty


def sha256(data):
    """SHA-256 of a bytes-like object."""
    cdef const uint8_t[::1] view = _bytes_view(data, "data")
    cdef uint8_t out[32]
    cdef const uint8_t *data_pointer = _pointer(view)
    cdef size_t length = view.shape[0]
    # Releasing the GIL costs more than hashing a short input.
    if length < 65536:
        ts_sha256(data_pointer, length, out)
    else:
        with nogil:
            ts_sha256(data_pointer, length, out)
    return out[:32]


def sha256d(data):
    """SHA-256 of SHA-256 (Bitcoin's hash) of a bytes-like object."""
    cdef const uint8_t[::1] view = _bytes_view(data, "data")
    cdef uint8_t out[32]
    cdef const uint8_t *data_pointer = _pointer(view)
    cdef size_t length = view.shape[0]
    # Releasing the GIL costs more than hashing a short input.
    if length < 65536:
        ts_sha256d(data_pointer, length, out)
    else:
        with nogil:
            ts_sha256d(data_pointer, length, out)
    return out[:32]


def sha256d_records(buffer, Py_ssize_t record_size, int threads=1):
    """SHA-256d of each record_size-byte record of a contiguous buffer, as an N x 32 array."""
    cdef const uint8_t[::1] view = _bytes_view(buffer, "buffer")
    if record_size <= 0:
        raise EncodingError(f"record_size must be positive, got {record_size}")
    if view.shape[0] % record_size:
        raise EncodingError(
            f"buffer of {view.shape[0]} bytes is not a whole number of {record_size}-byte records"
        )
    cdef size_t count = view.shape[0] // record_size
    result = np.empty((count, 32), dtype=np.uint8)
    cdef uint8_t[:, ::1] out = result
    threads = max(1, min(threads, limits.threads_max))
    if count:
        with nogil:
            ts_sha256d_records_parallel(&view[0], count, record_size, &out[0, 0], threads)
    return result


def _leaf_view(leaves):
    """Leaves as one contiguous N*32-byte uint8 array, without copying an array given as one."""
    if isinstance(leaves, np.ndarray):
        if leaves.dtype != np.uint8 or leaves.ndim != 2 or leaves.shape[1] != 32:
            raise EncodingError(
                f"leaves array must be N x 32 uint8, got {leaves.dtype} {leaves.shape}"
            )
        return np.ascontiguousarray(leaves).reshape(-1)
    return _leaf_buffer(leaves)


def _leaf_buffer(leaves):
    """A sequence of 32-byte leaves joined into one uint8 array."""
    items = list(leaves)
    for index, leaf in enumerate(items):
        if len(leaf) != 32:
            raise EncodingError(f"leaf {index} is {len(leaf)} bytes; leaves are 32-byte hashes")
    return np.frombuffer(b"".join(items), dtype=np.uint8)


def merkle_parents(level, int threads=1):
    """The next Merkle level up from an N x 32 array (odd levels pair the last hash with itself),
    hashed on ``threads`` threads when the level is large."""
    cdef const uint8_t[::1] data = _leaf_view(level)
    cdef size_t count = data.shape[0] // 32
    result = np.empty(((count + 1) // 2, 32), dtype=np.uint8)
    if count == 0:
        return result
    cdef uint8_t[:, ::1] out = result
    with nogil:
        ts_merkle_parents_parallel(&data[0], count, &out[0, 0], threads)
    return result


def merkle_root(leaves, int threads=1):
    """Bitcoin's Merkle root of 32-byte hashes (list or N x 32 array); 32 zero bytes if empty.

    With ``threads`` > 1 the large levels are hashed on that many threads.
    """
    cdef const uint8_t[::1] data = _leaf_view(leaves)
    cdef size_t count = data.shape[0] // 32
    if count == 0:
        return bytes(32)
    if count == 1:
        return bytes(data[:32])
    # Two scratch levels in turn: a threaded level must not write over the one it reads.
    scratch = np.empty(2 * 32 * ((count + 1) // 2), dtype=np.uint8)
    cdef uint8_t[::1] spare = scratch
    cdef size_t half = spare.shape[0] // 2
    cdef const uint8_t *source = &data[0]
    cdef uint8_t *target = &spare[0]
    cdef int turn = 0
    with nogil:
        while count > 1:
            ts_merkle_parents_parallel(source, count, target, threads)
            count = (count + 1) // 2
            source = target
            turn ^= 1
            target = &spare[half * turn]
    return PyBytes_FromStringAndSize(<const char *> source, 32)


cdef const uint8_t[::1] _header_view(object header) except *:
    cdef const uint8_t[::1] view = _bytes_view(header, "header")
    if view.shape[0] != limits.header_bytes:
        raise EncodingError(f"a header is {limits.header_bytes} bytes, got {view.shape[0]}")
    return view


def header_hash(header):
    """SHA-256d of an 80-byte header, in internal byte order."""
    cdef const uint8_t[::1] view = _header_view(header)
    cdef uint8_t out[32]
    ts_header_hash(&view[0], out)
    return out[:32]


def bits_valid(uint32_t bits):
    """0 when compact bits give a usable target, else 1 negative, 2 zero, 3 overflow."""
    cdef uint8_t target[32]
    return ts_bits_to_target(bits, target)


def check_pow(header):
    """True when the header's hash meets the target of its own bits."""
    cdef const uint8_t[::1] view = _header_view(header)
    cdef uint8_t target[32]
    cdef uint8_t out[32]
    cdef uint32_t bits = view[72] | view[73] << 8 | view[74] << 16 | <uint32_t>view[75] << 24
    if ts_bits_to_target(bits, target) != 0:
        return False
    ts_header_hash(&view[0], out)
    return bool(ts_hash_meets_target(out, target))


def validate_headers(headers, prev_hash=None, int threads=1):
    """Checks N contiguous 80-byte headers: links and proof of work.

    Returns (index, reason): the first bad header and why (see HeaderResult), or (N, 0).
    """
    cdef const uint8_t[::1] view = _bytes_view(headers, "headers")
    cdef const uint8_t[::1] prev_view
    cdef const uint8_t *prev = NULL
    if view.shape[0] % limits.header_bytes:
        raise EncodingError(
            f"headers buffer of {view.shape[0]} bytes is not a whole number of 80-byte headers"
        )
    if prev_hash is not None:
        prev_view = _bytes_view(prev_hash, "prev_hash")
        if prev_view.shape[0] != 32:
            raise EncodingError(f"prev_hash is 32 bytes, got {prev_view.shape[0]}")
        prev = &prev_view[0]
    cdef size_t count = view.shape[0] // limits.header_bytes
    cdef int reason = 0
    cdef size_t index = 0
    threads = max(1, min(threads, limits.threads_max))
    if count == 0:
        return 0, 0
    with nogil:
        index = ts_validate_headers(&view[0], count, prev, threads, &reason)
    if reason < 0:
        raise MemoryError("validate_headers could not allocate its work area")
    return index, reason


cdef class NonceSearch:
    """One nonce search over [first, first + count) for an 80-byte header.

    run() blocks with the GIL released; cancel() and hashes_done work from any other thread
    meanwhile. The answer is the lowest qualifying nonce whatever the thread count.
    """

    cdef ts_search *search
    cdef readonly uint64_t first
    cdef readonly uint64_t count

    def __cinit__(self, header, first=0, count=2**32, chunk=0):
        cdef const uint8_t[::1] view = _header_view(header)
        # Checked as Python ints, before any conversion to C: a negative or huge value is a
        # range error, not an OverflowError from the conversion.
        first, count, chunk = int(first), int(count), int(chunk)
        if not 0 <= first <= 2**32 or not 0 <= count <= 2**32 - first:
            raise EncodingError(
                f"nonce range [{first}, {first + count}) does not fit the 32-bit nonce field: "
                f"start and count are 0..2**32 with start + count <= 2**32")
        if not 0 <= chunk <= 2**32:
            raise EncodingError(f"chunk must be 0 (default) to 2**32 nonces, got {chunk}")
        self.first = first
        self.count = count
        self.search = ts_search_new(&view[0], first, count, chunk)
        if self.search == NULL:
            raise MemoryError("could not allocate a nonce search")

    def __dealloc__(self):
        if self.search != NULL:
            ts_search_free(self.search)

    def run(self, int threads=1):
        """Searches on `threads` threads; returns the nonce, or None if none qualifies.

        Raises CancelledError when cancel() stopped it before the range was done.
        """
        cdef uint64_t nonce
        threads = max(1, min(threads, limits.threads_max))
        with nogil:
            nonce = ts_search_run(self.search, threads)
        if ts_search_cancelled(self.search):
            raise CancelledError("nonce search cancelled")
        return None if nonce == TS_NONCE_NONE else nonce

    def cancel(self):
        ts_search_cancel(self.search)

    @property
    def hashes_done(self):
        return ts_search_hashes(self.search)
