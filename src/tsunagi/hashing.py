"""SHA-256 hashing, Merkle trees, Bitcoin-style headers and proof of work.

The loops run in :mod:`tsunagi._native.hashing` (C, SHA-NI when the CPU has it, portable C
otherwise; set ``TSUNAGI_SHA256_PORTABLE=1`` to force the portable path). This module adds what
needs no speed: compact-bits arithmetic on Python ints, Merkle proofs, and the threaded wrapper
around the nonce search that shows progress and can be interrupted.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence
from enum import IntEnum

import numpy as np

from tsunagi import limits
from tsunagi._native.hashing import (
    NonceSearch,
    backend,
    check_pow,
    header_hash,
    merkle_parents,
    merkle_root,
    select_backend,
    sha256,
    sha256d,
)
from tsunagi._native.hashing import sha256d_records as _sha256d_records
from tsunagi._native.hashing import validate_headers as _validate_headers
from tsunagi.errors import EncodingError

__all__ = [
    "HeaderResult",
    "NonceSearch",
    "backend",
    "bits_to_target",
    "check_pow",
    "cpu_count",
    "header_fields",
    "header_hash",
    "make_header",
    "merkle_levels",
    "merkle_multiproof",
    "merkle_parents",
    "merkle_path",
    "merkle_proof",
    "merkle_root",
    "merkle_root_plus_leaf",
    "search_nonce",
    "select_backend",
    "sha256",
    "sha256d",
    "sha256d_records",
    "target_to_bits",
    "validate_headers",
    "verify_merkle_multiproof",
    "verify_merkle_proof",
    "work_from_bits",
]


class HeaderResult(IntEnum):
    """Why validate_headers stopped at a header (the values of ext/pow.h)."""

    ok = 0  # every header linked and met its target
    bad_link = 1  # previous-hash field is not the hash of the header before it
    bad_bits = 2  # compact bits are negative, zero or overflow 256 bits
    bad_pow = 3  # header hash is above the target its bits give


def cpu_count() -> int:
    """Cores this process may run on: the default thread count of native calls."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def sha256d_records(buffer, record_size: int, threads: int = 1) -> np.ndarray:
    """SHA-256d of each fixed-size record of a contiguous buffer, as an N x 32 uint8 array."""
    return _sha256d_records(buffer, record_size, threads)


def validate_headers(headers, prev_hash: bytes | None = None,
                     threads: int | None = None) -> tuple[int, HeaderResult]:
    """Checks N contiguous 80-byte headers in one native call (links and proof of work).

    Returns ``(index, HeaderResult)`` of the first bad header, or ``(N, HeaderResult.ok)``.
    ``prev_hash``, when given, is the hash the first header must link to.
    """
    index, reason = _validate_headers(headers, prev_hash, threads or cpu_count())
    return index, HeaderResult(reason)


def bits_to_target(bits: int) -> int:
    """The target a compact "bits" value encodes; EncodingError if it is negative or overflows."""
    if not 0 <= bits <= limits.u32_max:
        raise EncodingError(f"bits must be a 32-bit unsigned value, got {bits}")
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if bits & 0x00800000 and mantissa:
        raise EncodingError(f"bits 0x{bits:08x} encode a negative target")
    if exponent <= 3:
        target = mantissa >> (8 * (3 - exponent))
    else:
        target = mantissa << (8 * (exponent - 3))
    if target >= 2**256:
        raise EncodingError(f"bits 0x{bits:08x} encode a target above 2**256")
    return target


def target_to_bits(target: int) -> int:
    """The compact "bits" form of a target (rounded down to 3 significant bytes, as Bitcoin)."""
    if not 0 <= target < 2**256:
        raise EncodingError(f"a target is between 0 and 2**256 - 1, got {target}")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        mantissa = target << (8 * (3 - size))
    else:
        mantissa = target >> (8 * (size - 3))
    if mantissa & 0x00800000:  # the sign bit: move to a larger exponent
        mantissa >>= 8
        size += 1
    return mantissa | size << 24


def work_from_bits(bits: int) -> int:
    """Expected hashes to meet the target of bits: Bitcoin's block proof, for most-work choice."""
    target = bits_to_target(bits)
    return 2**256 // (target + 1)


def merkle_levels(leaves, threads: int = 1) -> list[np.ndarray]:
    """Every level of the Merkle tree, leaves first, root last (each an N x 32 array)."""
    levels = [_as_leaf_array(leaves)]
    while len(levels[-1]) > 1:
        levels.append(merkle_parents(levels[-1], threads))
    return levels


def merkle_root_plus_leaf(levels: Sequence[np.ndarray], leaf: bytes) -> bytes:
    """Merkle root of ``levels[0]`` with ``leaf`` appended, from the levels of the tree without it.

    Only the rightmost node of each level changes, so this costs one hash a level instead of a
    whole tree: a block's root covers its txids and one more leaf, and the txids' levels were
    built already to check batch signatures.
    """
    if len(leaf) != 32:
        raise EncodingError("a Merkle leaf is a 32-byte hash")
    tail = bytes(leaf)
    clean = len(levels[0]) if levels else 0  # nodes of a level that hang under old leaves only
    for level in levels:
        if clean == 0:  # the tail stands alone on this level: it is the root
            return tail
        if clean % 2:  # the last clean node pairs with the tail
            tail = sha256d(level[clean - 1].tobytes() + tail)
        else:  # the clean nodes pair among themselves; the tail pairs with itself
            tail = sha256d(tail + tail)
        clean //= 2
    if clean == 0:
        return tail
    raise EncodingError("merkle_root_plus_leaf needs every level up to the root")


def _as_leaf_array(leaves) -> np.ndarray:
    if isinstance(leaves, np.ndarray):
        return leaves
    items = list(leaves)
    if any(len(leaf) != 32 for leaf in items):
        raise EncodingError("Merkle leaves are 32-byte hashes")
    return np.frombuffer(b"".join(items), dtype=np.uint8).reshape(-1, 32)


def merkle_proof(leaves, index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root, bottom first."""
    return merkle_path(merkle_levels(leaves), index)


def merkle_path(levels: Sequence[np.ndarray], index: int) -> list[bytes]:
    """The proof of leaf ``index`` read off levels from merkle_levels (kept to prove many)."""
    if not 0 <= index < len(levels[0]):
        raise IndexError(f"leaf index {index} out of range for {len(levels[0])} leaves")
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling >= len(level):  # an odd level pairs its last hash with itself
            sibling = index
        proof.append(level[sibling].tobytes())
        index //= 2
    return proof


def verify_merkle_proof(leaf: bytes, proof: Sequence[bytes], index: int, root: bytes) -> bool:
    """True when ``leaf`` at position ``index`` with ``proof`` hashes up to ``root``.

    An odd level pairs its last node with itself, and only ever as the left one: a right
    sibling equal to the node is refused, or the copy would prove a position past the end
    (the trick behind Bitcoin's CVE-2012-2459).
    """
    if len(leaf) != 32 or len(root) != 32 or index < 0:
        return False
    node = bytes(leaf)
    for sibling in proof:
        if len(sibling) != 32:
            return False
        if index & 1 and sibling == node:
            return False
        node = sha256d(sibling + node) if index & 1 else sha256d(node + sibling)
        index >>= 1
    return index == 0 and node == root


def merkle_multiproof(levels: Sequence[np.ndarray], positions: Sequence[int]) -> list[bytes]:
    """The hashes that, with the leaves at ``positions``, rebuild the root of ``levels`` (from
    merkle_levels): one proof for many leaves, where a path a leaf repeats the nodes their
    paths share. Bottom level first, each level left to right; a known node's sibling is
    taken from the proof only when it is not known itself (or rebuilt from known ones), and
    the lone last node of an odd level pairs with itself. Empty when every leaf is known.
    Check it with verify_merkle_multiproof."""
    size = len(levels[0])
    known = sorted(set(positions))
    if known and not (0 <= known[0] and known[-1] < size):
        raise IndexError(f"leaf positions must be in 0..{size - 1}")
    hashes: list[bytes] = []
    for level in levels[:-1]:
        parents, index = [], 0
        while index < len(known):
            position = known[index]
            if position % 2 == 0 and index + 1 < len(known) and known[index + 1] == position + 1:
                index += 2  # both children known
            else:
                sibling = position ^ 1
                if sibling < len(level):  # else the lone last node pairs with itself
                    hashes.append(level[sibling].tobytes())
                index += 1
            parents.append(position // 2)
        known = parents
    return hashes


def verify_merkle_multiproof(leaves: dict[int, bytes], size: int, hashes: Sequence[bytes],
                             root: bytes) -> bool:
    """True when the ``leaves`` (position -> 32-byte hash) of a tree of ``size`` leaves and
    ``hashes`` (merkle_multiproof's order, every one used) lead to ``root``. As
    verify_merkle_proof, a node paired with a copy of itself is refused unless it is the lone
    last node of its level (CVE-2012-2459), so with the last leaf among ``leaves`` the shape
    pins ``size`` (a block proves its body leaf, its last, this way)."""
    if not leaves or size < 1 or len(root) != 32:
        return False
    level = sorted(leaves.items())
    if level[0][0] < 0 or level[-1][0] >= size or any(len(node) != 32 for _, node in level):
        return False
    used = 0
    while size > 1:
        parents, index = [], 0
        while index < len(level):
            position, node = level[index]
            lone = position == size - 1 and position % 2 == 0
            if position % 2 == 0 and index + 1 < len(level) and \
                    level[index + 1][0] == position + 1:
                sibling, index = level[index + 1][1], index + 2
            elif lone:
                sibling, index = node, index + 1
            else:
                if used == len(hashes) or len(hashes[used]) != 32:
                    return False
                sibling, used, index = bytes(hashes[used]), used + 1, index + 1
            if (sibling == node) != lone:
                return False
            parents.append((position // 2, sha256d(sibling + node) if position % 2
                            else sha256d(node + sibling)))
        level, size = parents, (size + 1) // 2
    return used == len(hashes) and level[0][1] == root


def search_nonce(header, start: int = 0, count: int = limits.nonce_end,
                 threads: int | None = None,
                 progress: Callable[[int], None] | None = None,
                 progress_interval_s: float = 0.2) -> int | None:
    """The lowest nonce in [start, start + count) whose header meets its own target, or None.

    Runs on ``threads`` native threads (all cores by default) with the GIL released. When
    ``progress`` is given it is called with the hashes done so far every
    ``progress_interval_s``. Ctrl-C (or any exception in ``progress``) cancels the search.
    """
    search = NonceSearch(header, start, count, limits.nonce_chunk)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["nonce"] = search.run(threads or cpu_count())
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="tsunagi-nonce-search", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(progress_interval_s)
            if progress is not None:
                progress(search.hashes_done)
    except BaseException:
        search.cancel()
        worker.join()
        raise
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["nonce"]  # type: ignore[return-value]


def header_fields(header) -> tuple[int, bytes, bytes, int, int, int]:
    """(version, prev_hash, merkle_root, time, bits, nonce) of an 80-byte header."""
    if len(header) != limits.header_bytes:
        raise EncodingError(f"a header is {limits.header_bytes} bytes, got {len(header)}")
    return struct.unpack("<I32s32sIII", header)


def make_header(version: int, prev_hash: bytes, merkle_root_: bytes, time: int, bits: int,
                nonce: int = 0) -> bytes:
    """Packs an 80-byte header (hashes in internal byte order)."""
    if len(prev_hash) != 32 or len(merkle_root_) != 32:
        raise EncodingError("prev_hash and merkle_root are 32-byte hashes")
    return struct.pack("<I32s32sIII", version, prev_hash, merkle_root_, time, bits, nonce)

