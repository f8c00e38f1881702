# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native kernels of the index's sorted runs (ext/index_kernel.c): a linear k-way merge of runs
already sorted by (key, second), the gather of a column in merged order, and the Bloom filter.

One call per merge chunk and column, never per row; each runs without the GIL, so the commit
thread keeps running while the indexer merges. tsunagi.ledger.index keeps the numpy reference
(lexsort, fancy indexing) that tests hold these to.
"""

from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.stdlib cimport free, malloc

import numpy as np

cdef extern from "index_kernel.h" nogil:
    int TS_MERGE_RUNS_MAX
    int ts_merge_sources(size_t runs, const uint64_t *const *keys,
                         const uint64_t *const *seconds, const size_t *counts,
                         uint16_t *sources)
    void ts_gather_rows(size_t runs, const uint8_t *const *columns, size_t itemsize,
                        const uint16_t *sources, size_t count, uint8_t *out)
    int ts_count_sources(const uint16_t *sources, size_t count, size_t runs, size_t *counts)
    void ts_bloom_add(uint64_t *words, unsigned shift, const uint64_t *keys, size_t count)

MERGE_RUNS_MAX = TS_MERGE_RUNS_MAX
# The limits this module was compiled with, by their names in the C header: tests/test_limits.py
# holds each against what the Python side relies on.
NATIVE_CONSTANTS = {"TS_MERGE_RUNS_MAX": TS_MERGE_RUNS_MAX}


cdef object _u64(object array, str what):
    """A 1-D C-contiguous uint64 view of ``array`` (no copy when it is one)."""
    array = np.ascontiguousarray(array, dtype=np.uint64)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {array.shape}")
    return array


def merge_sources(keys, seconds=None):
    """For each row of the merge of inputs sorted by (key, second), the input it comes from
    (uint16): ``keys[r]`` and ``seconds[r]`` are input r's columns. Equal (key, second) rows
    come oldest input first. ``seconds`` None merges by key alone (equal keys oldest input
    first): the same order when seconds grow from input to input, and faster."""
    cdef Py_ssize_t runs = len(keys), run
    cdef bint by_key = seconds is None
    if by_key:
        seconds = keys  # stands in for the checks below; the kernel is given none
    if len(seconds) != runs:
        raise ValueError(f"{runs} key columns but {len(seconds)} second columns")
    if runs > TS_MERGE_RUNS_MAX:
        raise ValueError(f"a merge takes at most {TS_MERGE_RUNS_MAX} inputs, got {runs}")
    held = [(_u64(k, "keys"), _u64(s, "seconds")) for k, s in zip(keys, seconds)]
    cdef size_t total = 0
    for run in range(runs):
        if held[run][0].shape[0] != held[run][1].shape[0]:
            raise ValueError(f"input {run}: {held[run][0].shape[0]} keys but "
                             f"{held[run][1].shape[0]} seconds")
        total += held[run][0].shape[0]
    sources = np.empty(total, dtype=np.uint16)
    if total == 0:
        return sources
    cdef const uint64_t **key_rows = <const uint64_t **>malloc(runs * sizeof(void *))
    cdef const uint64_t **second_rows = <const uint64_t **>malloc(runs * sizeof(void *))
    cdef size_t *counts = <size_t *>malloc(runs * sizeof(size_t))
    cdef uint16_t[::1] out = sources
    cdef uint64_t[::1] view
    cdef int status = 0
    try:
        if key_rows == NULL or second_rows == NULL or counts == NULL:
            raise MemoryError()
        for run in range(runs):
            counts[run] = held[run][0].shape[0]
            if counts[run]:
                view = held[run][0]
                key_rows[run] = &view[0]
                view = held[run][1]
                second_rows[run] = &view[0]
            else:
                key_rows[run] = second_rows[run] = NULL
        with nogil:
            status = ts_merge_sources(runs, key_rows, NULL if by_key else second_rows,
                                      counts, &out[0])
        if status:
            raise MemoryError()
    finally:
        free(key_rows)
        free(second_rows)
        free(counts)
    return sources


def gather_rows(columns, sources, out=None):
    """The rows of ``columns`` (one 1-D array an input, one dtype) in the order ``sources``
    gives (from merge_sources): row i is the next unread row of input sources[i]. Each input
    must be named exactly as often as it has rows. Into ``out`` when given (1-D, that dtype)."""
    cdef Py_ssize_t runs = len(columns), run
    if not runs:
        raise ValueError("gather_rows needs at least one input")
    if runs > TS_MERGE_RUNS_MAX:
        raise ValueError(f"a merge takes at most {TS_MERGE_RUNS_MAX} inputs, got {runs}")
    dtype = np.asarray(columns[0]).dtype
    held = [np.ascontiguousarray(column) for column in columns]
    for run in range(runs):
        if held[run].dtype != dtype or held[run].ndim != 1:
            raise ValueError(f"input {run}: {held[run].dtype} of shape {held[run].shape}; "
                             f"every input is a 1-D array of {dtype}")
    cdef const uint16_t[::1] order = np.ascontiguousarray(sources, dtype=np.uint16)
    cdef size_t count = order.shape[0]
    if out is None:
        out = np.empty(count, dtype)
    elif out.dtype != dtype or out.ndim != 1 or out.shape[0] != count \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous 1-D array of {count} {dtype}")
    cdef size_t itemsize = dtype.itemsize
    cdef size_t *counts = <size_t *>malloc(runs * sizeof(size_t))
    cdef const uint8_t **rows = <const uint8_t **>malloc(runs * sizeof(void *))
    cdef const uint8_t[::1] bytes_view
    cdef uint8_t[::1] target
    cdef int status
    try:
        if counts == NULL or rows == NULL:
            raise MemoryError()
        for run in range(runs):
            counts[run] = 0
        with nogil:
            status = ts_count_sources(&order[0] if count else NULL, count, runs, counts)
        if status:
            raise ValueError(f"sources name an input past the {runs} given")
        for run in range(runs):
            if counts[run] != <size_t>held[run].shape[0]:
                raise ValueError(f"sources name input {run} {counts[run]} times, but it has "
                                 f"{held[run].shape[0]} rows")
            rows[run] = NULL
            if held[run].shape[0]:
                bytes_view = held[run].view(np.uint8)
                rows[run] = &bytes_view[0]
        if count and itemsize:
            target = out.view(np.uint8)
            with nogil:
                ts_gather_rows(runs, rows, itemsize, &order[0], count, &target[0])
    finally:
        free(counts)
        free(rows)
    return out


def bloom_add(words, keys):
    """Sets the bits of ``keys`` in the Bloom filter ``words`` (a power of two of uint64, at
    least two): three bits from each key's low 18, in word key >> (64 - log2(len(words)))."""
    cdef uint64_t[::1] filter_words = words
    cdef const uint64_t[::1] key_rows = _u64(keys, "keys")
    cdef size_t size = filter_words.shape[0]
    if size < 2 or size & (size - 1):
        raise ValueError(f"a Bloom filter is a power of two words, at least two, got {size}")
    cdef unsigned shift = 64 - (size.bit_length() - 1)
    if key_rows.shape[0]:
        with nogil:
            ts_bloom_add(&filter_words[0], shift, &key_rows[0], key_rows.shape[0])
