"""A light client of a consortium chain: finality from 80-byte headers and seals alone.

It trusts one thing, the genesis (or a checkpoint): the chain id, the hash of the header to
build on and the validator set of the height after it. Each next header must be version 2,
carry no work (bits and nonce 0), link to the one before, and have a certificate (its block's
seal) that the set of its height signed with more than two thirds of the weight; a certificate
that names a next set (every precommit signs that set's hash) moves the client on to it. No
node is trusted, no block body is needed.

:meth:`LightClient.check_many` is the fast path: one native call hashes all headers, one
native batch call verifies every signature of every certificate, and a failure is pinpointed
to the first bad block with its code. A full node checks its blocks' certificates with the
same code (tsunagi.consensus.certificate.check_certificates, with its ValidatorSchedule's
sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from tsunagi import hashing
from tsunagi.consensus.certificate import CertResult, ValidatorSet, follow_certificates
from tsunagi.core.block import BLOCK_VERSION_CONSORTIUM, HEADER_BYTES
from tsunagi.errors import EncodingError

__all__ = ["HEADER_DTYPE", "LightCheck", "LightClient", "LightResult"]

HEADER_DTYPE = np.dtype([("version", "<u4"), ("prev_hash", "u1", (32,)),
                         ("merkle_root", "u1", (32,)), ("time", "<u4"), ("bits", "<u4"),
                         ("nonce", "<u4")])
assert HEADER_DTYPE.itemsize == HEADER_BYTES


class LightResult(IntEnum):
    """Why a light client refuses a block; 0 is ok. 1..19 are CertResult's codes, by the same
    names and values; values are never reused."""

    ok = 0  # the block is final and follows the chain
    undecodable = 1  # the seal is not a certificate
    unknown_signer = 2  # a signer index is not in the set of that height
    duplicate_signer = 3  # one signer index appears twice
    too_little_weight = 4  # the signers hold 2/3 of the weight or less
    bad_signature = 5  # a signature does not verify
    wrong_next_set = 6  # the next set named is not the one the signers signed
    unordered_signers = 7  # signer indices are not ascending
    bad_version = 20  # the header is not version 2 (BLOCK_VERSION_CONSORTIUM)
    has_work = 21  # the header's bits or nonce are not 0
    broken_link = 22  # prev_hash is not the hash of the header before


class LightCheck(NamedTuple):
    """The height of the first block refused and its code, or the new tip's height and ok."""

    height: int
    result: LightResult


class LightClient:
    """Follows one consortium chain from a trusted header and validator set."""

    def __init__(self, chain_id: bytes, genesis_hash: bytes, genesis_validators: ValidatorSet,
                 *, height: int = 0, threads: int = 1) -> None:
        """``chain_id``: the 32 bytes votes name the chain by (its genesis block hash);
        ``genesis_hash``: the hash of the trusted header at ``height`` (the genesis block's,
        at 0, or a checkpoint's); ``genesis_validators``: the set of the height after it."""
        if len(chain_id) != 32 or len(genesis_hash) != 32:
            raise EncodingError("chain_id and genesis_hash are 32 bytes")
        self.chain_id = bytes(chain_id)
        self.height = height  # the height of the last block checked final
        self.tip_hash = bytes(genesis_hash)
        self.validators = genesis_validators  # the set of height + 1
        self.threads = threads

    def check(self, header, seal) -> LightCheck:
        """check_many of one block."""
        return self.check_many(header, [seal])

    def check_many(self, headers, seals: Sequence) -> LightCheck:
        """Checks the next blocks from their headers (N x 80 bytes, one buffer or a sequence)
        and seals (N certificates), and moves the tip over every block before the first one
        refused: LightCheck(height of that block, its code), or (new height, ok)."""
        rows = _header_rows(headers)
        if len(rows) != len(seals):
            raise ValueError(f"{len(rows)} headers need as many seals, got {len(seals)}")
        if not len(rows):
            return LightCheck(self.height, LightResult.ok)
        hashes = hashing.sha256d_records(rows.view(np.uint8).reshape(-1), HEADER_BYTES,
                                         self.threads)
        header_fault, first_bad = _first_bad_header(rows, hashes, self.tip_hash)
        flat = hashes.tobytes()
        followed = follow_certificates(
            seals[:first_bad], [flat[32 * index:32 * index + 32] for index in range(first_bad)],
            self.height + 1, self.chain_id, self.validators, self.threads)
        good = followed.count
        if good:
            self.height += good
            self.tip_hash = flat[32 * (good - 1):32 * good]
            self.validators = followed.validators
        if followed.result is not CertResult.ok:
            return LightCheck(self.height + 1, LightResult[followed.result.name])
        if header_fault is not None:
            return LightCheck(self.height + 1, header_fault)
        return LightCheck(self.height, LightResult.ok)


def _header_rows(headers) -> np.ndarray:
    if isinstance(headers, (list, tuple)):
        if any(len(header) != HEADER_BYTES for header in headers):
            raise EncodingError(f"a header is {HEADER_BYTES} bytes")
        headers = b"".join(bytes(header) for header in headers)
    view = memoryview(headers).cast("B")
    if view.nbytes % HEADER_BYTES:
        raise EncodingError(f"headers are whole {HEADER_BYTES}-byte items, got {view.nbytes} "
                            "bytes")
    return np.frombuffer(view, HEADER_DTYPE)


def _first_bad_header(rows: np.ndarray, hashes: np.ndarray,
                      tip_hash: bytes) -> tuple[LightResult | None, int]:
    """(code, index) of the first header that is not a version 2 header without work linking
    to the one before, or (None, count). Numpy over all headers at once."""
    previous = np.empty_like(hashes)
    previous[0] = np.frombuffer(tip_hash, np.uint8)
    previous[1:] = hashes[:-1]
    faults = np.zeros(len(rows), np.uint8)  # the first fault of each header by priority
    faults[~(rows["prev_hash"] == previous).all(axis=1)] = LightResult.broken_link
    faults[(rows["bits"] != 0) | (rows["nonce"] != 0)] = LightResult.has_work
    faults[rows["version"] != BLOCK_VERSION_CONSORTIUM] = LightResult.bad_version
    bad = np.flatnonzero(faults)
    if not bad.size:
        return None, len(rows)
    return LightResult(int(faults[bad[0]])), int(bad[0])
