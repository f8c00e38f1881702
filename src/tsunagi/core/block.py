"""Blocks: their byte layout (docs/FORMAT.md), zero-copy decoding, context-free checks, mining.

A block is one buffer. :func:`decode_block` checks only that its sizes agree and returns numpy
views into it (records, codes, signatures, batches): no copy and no Python object per record.
:func:`check_block` then judges the block alone, as Bitcoin Core's CheckBlock does: Merkle
root, proof of work, flags, codes, batch ranges and signatures, genesis rules. Whether the
records' own signatures and the ledger rules hold needs the chain's state, so it lives above.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from tsunagi import hashing, limits
from tsunagi.core.codes import UNSTORED, Result
from tsunagi.core.config import ChainConfig, genesis_records
from tsunagi.core.entries import Payload, StateRoot, decode_entries, payload_digest
from tsunagi.core.keys import PrivateKey, verify
from tsunagi.core.records import (
    FLAGS_KNOWN,
    RECORD_BYTES,
    SIGNATURE_BYTES,
    Flags,
    Kind,
    as_records,
)
from tsunagi.errors import ConfigError, EncodingError

__all__ = [
    "BATCH_DTYPE", "BLOCK_VERSION", "BLOCK_VERSION_CONSORTIUM", "BatchAuth", "Block",
    "BlockResult", "batch_fault_message", "batch_proof", "batch_root", "check_batch_layout", "check_batch_ranges", "check_block",
    "decode_block", "encode_block", "genesis_block", "mine_header", "pack_batches",
    "record_txids", "sign_batch", "unpack_batches", "verify_batch", "verify_record_in_batch",
    "with_seal",
]

BLOCK_VERSION = 1
# A consortium chain's blocks (docs/FORMAT.md, "Block version 2"): the version 1 layout, then
# seal_length u32 and the seal (the commit certificate), which no digest covers: validators
# sign the block hash, so the signatures cannot be inside what they sign. No proof of work.
BLOCK_VERSION_CONSORTIUM = 2
HEADER_BYTES = limits.header_bytes
_HEADER = struct.Struct("<I32s32sIII")
_COUNTS = struct.Struct("<II")  # record_count, batch_count, right after the header
_U32 = struct.Struct("<I")
# Where the header keeps the fields that mining and sealing rewrite.
TIME_OFFSET, BITS_OFFSET, NONCE_OFFSET = 68, 72, 76
COUNTS_OFFSET = HEADER_BYTES
RECORDS_OFFSET = HEADER_BYTES + _COUNTS.size
# The smallest block (header, counts, extension_length: no records, no extension). The wire
# protocol refuses shorter block payloads with this same number.
BLOCK_BYTES_MIN = RECORDS_OFFSET + _U32.size
ZERO_HASH = bytes(32)

# One batch entry as blocks and the wire protocol's submit_batch lay it out (docs/FORMAT.md).
BATCH_DTYPE = np.dtype([
    ("first", "<u4"),
    ("count", "<u4"),
    ("signer_key", "u1", (32,)),
    ("reserved", "u1", (8,)),
    ("signature", "u1", (64,)),
])
BATCH_BYTES = BATCH_DTYPE.itemsize
assert BATCH_BYTES == 112

# Records hashed in one native call before it pays to start a second thread.
_THREAD_RECORDS_MIN = 16_384
_KNOWN_CODES = np.zeros(256, dtype=bool)
_KNOWN_CODES[[int(code) for code in Result]] = True
_UNSTORED_CODES = np.zeros(256, dtype=bool)
_UNSTORED_CODES[[int(code) for code in UNSTORED]] = True
_FLAGS_UNKNOWN = 0xFF ^ FLAGS_KNOWN
_KNOWN_KINDS = np.zeros(256, dtype=bool)
_KNOWN_KINDS[[int(kind) for kind in Kind]] = True


class BatchAuth(NamedTuple):
    """One batch signature: records ``first .. first+count-1`` signed together by a key."""

    first: int
    count: int
    signer_key: bytes  # 32-byte x-only key
    signature: bytes  # BIP340 over batch_root of the batch's txids


class BlockResult(IntEnum):
    """Why check_block refused a block; 0 is ok. Values are never reused."""

    ok = 0  # the block is well-formed on its own
    bad_version = 1  # header version is not BLOCK_VERSION
    bad_bits = 2  # compact bits encode no usable target
    bad_pow = 3  # the header hash is above the target of its bits
    bad_merkle_root = 4  # the header's root is not that of the txids and body digest
    too_many_records = 5  # more records than any chain allows (limits.block_records_max)
    malformed_record = 6  # a record with an unknown kind or unknown flag bits
    mixed_chain = 7  # records for more than one chain_id
    unknown_code = 8  # a result code that Result does not define
    unstored_code = 9  # a code a record gets only when it is never stored
    duplicate_record = 10  # the same record (txid) twice
    batch_empty = 11  # a batch of zero records
    batch_out_of_range = 12  # a batch reaches past the last record
    batch_order = 13  # batches overlap or are not in record order
    batch_reserved = 14  # a batch's reserved bytes are not zero
    batch_coverage = 15  # batches do not cover exactly the batch_authorized records
    batch_signature_invalid = 16  # a batch signature does not verify over its batch root
    extension_not_empty = 17  # a version 1 block other than genesis carries consortium entries
    genesis_batches = 18  # the genesis block carries batches
    genesis_config_invalid = 19  # the genesis extension is not a valid canonical config
    genesis_mismatch = 20  # genesis records, codes, bits or time differ from its config's
    # Against the chain (Ledger.connect_block), each a reason the block does not connect:
    undecodable = 21  # the bytes are not a block (sizes disagree)
    not_tip_child = 22  # its prev_hash is not the tip: the chain layer connects branches
    wrong_bits = 23  # bits other than the chain's rules give at its height
    time_before_parent = 24  # its time is before its parent's
    time_too_far_ahead = 25  # its time is past the node's clock + time_future_s (may pass later)
    not_authenticated = 26  # a record's signature, signer or sequence does not hold here
    codes_differ = 27  # a record applies to another result code than the block stores
    replayed_open = 28  # an open_account already committed on this chain
    # Version 2 (consortium) blocks, alone:
    consortium_work = 29  # a version 2 block whose bits or nonce are not 0 (it has no work)
    consortium_genesis = 30  # a version 2 block with a zero prev_hash: genesis is version 1
    consortium_entries = 31  # an extension after genesis that is no valid list of block entries
    seal_too_large = 32  # a seal longer than limits.seal_bytes_max
    # Against a consortium chain (tsunagi.consensus.consortium):
    bad_certificate = 33  # the seal is no commit certificate of the height's validators
    entries_refused = 34  # a consortium entry does not hold on the chain (EntryResult says why)
    # Payloads (block entries of call records), alone:
    payload_mismatch = 35  # a call lacks its one payload, a payload has no call, or they differ
    # Against a chain with contracts (Ledger.connect_block with a CallRunner):
    state_root_differs = 36  # the block's state root is missing or not the one its calls give


def _bytes_view(data, what: str) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise EncodingError(f"{what} must be bytes-like, not {type(data).__name__}") from exc
    if not view.c_contiguous:
        raise EncodingError(f"{what} must be a contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _threads(record_count: int, threads: int | None) -> int:
    if threads is not None:
        return threads
    return hashing.cpu_count() if record_count >= _THREAD_RECORDS_MIN else 1


def record_txids(records, threads: int | None = None) -> np.ndarray:
    """txids of a buffer of whole 128-byte records, as an N x 32 uint8 array (one native call)."""
    view = _bytes_view(records, "records")
    count = view.nbytes // RECORD_BYTES
    return hashing.sha256d_records(view, RECORD_BYTES, _threads(count, threads))


def _signature_count(flags: np.ndarray, genesis: bool) -> int:
    # Genesis records are authorised by being genesis; every other record without the
    # batch_authorized flag carries its own signature.
    if genesis:
        return 0
    return int(flags.size - np.count_nonzero(flags & Flags.batch_authorized))


def _body_digest(view: memoryview, body_offset: int, extension_length_offset: int,
                 extension_end: int) -> bytes:
    # SHA-256d(codes || signatures || batches || extension): the four are contiguous except for
    # the extension_length field, which is skipped without copying the body. A version 2
    # block's seal, after extension_end, is not covered.
    inner = hashlib.sha256(view[body_offset:extension_length_offset])
    inner.update(view[extension_length_offset + _U32.size:extension_end])
    return hashlib.sha256(inner.digest()).digest()


def _merkle_leaves(txids: np.ndarray, body_digest: bytes) -> np.ndarray:
    leaves = np.empty((len(txids) + 1, 32), dtype=np.uint8)
    leaves[:-1] = txids
    leaves[-1] = np.frombuffer(body_digest, dtype=np.uint8)
    return leaves


def pack_batches(batches) -> np.ndarray:
    """Batch entries as one BATCH_DTYPE array, laid out as a block and the wire protocol hold
    them (docs/FORMAT.md): from BatchAuth-like (first, count, signer_key, signature) tuples
    (reserved bytes zero), from their bytes (whole 112-byte entries, no copy), or a BATCH_DTYPE
    array as it is. Fields that do not fit raise EncodingError; whether the ranges are valid is
    check_batch_layout's question. One step a tuple, never one a record."""
    if isinstance(batches, np.ndarray) and batches.dtype == BATCH_DTYPE:
        return batches
    if isinstance(batches, (bytes, bytearray, memoryview)):
        view = _bytes_view(batches, "batches")
        if view.nbytes % BATCH_BYTES:
            raise EncodingError(f"batch entries are whole {BATCH_BYTES}-byte items, got "
                                f"{view.nbytes} bytes")
        return np.frombuffer(view, dtype=BATCH_DTYPE)
    packed = np.zeros(len(batches), dtype=BATCH_DTYPE)
    for index, batch in enumerate(batches):  # one step per batch, never per record
        first, count, signer_key, signature = batch
        if not (0 <= first <= limits.u32_max and 0 <= count <= limits.u32_max):
            raise EncodingError(f"batch {index}: first and count are u32, got {first}, {count}")
        if len(signer_key) != 32 or len(signature) != SIGNATURE_BYTES:
            raise EncodingError(f"batch {index}: a signer key is 32 bytes and a signature "
                                f"{SIGNATURE_BYTES}, got {len(signer_key)} and {len(signature)}")
        packed[index] = (first, count, np.frombuffer(bytes(signer_key), np.uint8), 0,
                         np.frombuffer(bytes(signature), np.uint8))
    return packed


def unpack_batches(table: np.ndarray) -> list[BatchAuth]:
    """The entries of a BATCH_DTYPE array as BatchAuth tuples (one Python object a batch)."""
    return [BatchAuth(int(row["first"]), int(row["count"]), row["signer_key"].tobytes(),
                      row["signature"].tobytes()) for row in table]


def block_bytes(record_count: int, signature_bytes: int, batch_count: int,
                extension_bytes: int = 0) -> int:
    """Size of a block of ``record_count`` records (and as many codes), with its signatures,
    batches and extension, as encode_block lays it out."""
    return (RECORDS_OFFSET + record_count * (RECORD_BYTES + 1) + signature_bytes
            + batch_count * BATCH_BYTES + _U32.size + extension_bytes)


def _address(view: memoryview) -> int:
    return np.frombuffer(view, np.uint8).ctypes.data if view.nbytes else 0


def encode_block(*, prev_hash: bytes, time: int, bits: int, records, codes, signatures,
                 batches=(), extension=b"", version: int = BLOCK_VERSION, nonce: int = 0,
                 seal=b"", threads: int | None = None, txids: np.ndarray | None = None,
                 txid_levels: Sequence[np.ndarray] | None = None,
                 as_array: bool = False,
                 allocate: Callable[[int], np.ndarray] | None = None
                 ) -> bytearray | np.ndarray:
    """One block's bytes, with its Merkle root computed (the nonce is not searched).

    ``records`` is a buffer of N 128-byte records, ``codes`` N result codes (uint8),
    ``signatures`` 64 bytes for each record without the batch_authorized flag, in record order
    (none in a genesis block), ``batches`` what pack_batches takes. Sizes that disagree raise
    EncodingError; whether the content is valid is check_block's question. ``txids`` (N x 32),
    when the caller already hashed these very records, saves hashing them again; so does
    ``txid_levels`` (hashing.merkle_levels of those txids) for the Merkle tree.

    ``version=BLOCK_VERSION_CONSORTIUM`` lays out a version 2 block: ``seal`` (bytes, empty
    by default; with_seal puts one in later) follows the extension, outside every digest.
    Other versions take the version 1 layout and no seal.

    ``as_array`` returns a uint8 numpy array instead of a bytearray: numpy asks for huge pages
    for large buffers, which made allocating and filling a 34 MB block 4x faster here (4.8 ms
    against 21.5 ms; a bytearray that size gets fresh 4 KiB pages each time). ``allocate``
    (size -> uint8 array of that many bytes, any content) gives it the array to fill instead,
    such as a buffer used again (every byte is written). Records that already lie where the
    block keeps them (a buffer from ``allocate`` the caller filled ahead) are not copied.
    """
    prev_hash = _bytes_view(prev_hash, "prev_hash").tobytes()
    if len(prev_hash) != 32:
        raise EncodingError(f"prev_hash is 32 bytes, got {len(prev_hash)}")
    record_view = _bytes_view(records, "records")
    flags = as_records(record_view)["flags"]
    count = flags.size
    code_view = _bytes_view(codes, "codes")
    signature_view = _bytes_view(signatures, "signatures")
    extension_view = _bytes_view(extension, "extension")
    seal_view = _bytes_view(seal, "seal")
    sealed = version == BLOCK_VERSION_CONSORTIUM
    if seal_view.nbytes and not sealed:
        raise EncodingError(f"only a version {BLOCK_VERSION_CONSORTIUM} block carries a seal")
    if code_view.nbytes != count:
        raise EncodingError(f"{count} records need {count} codes, got {code_view.nbytes}")
    genesis = prev_hash == ZERO_HASH
    expected = _signature_count(flags, genesis)
    if signature_view.nbytes != expected * SIGNATURE_BYTES:
        raise EncodingError(
            f"{count} records ({'genesis' if genesis else 'not genesis'}) need {expected} "
            f"signatures of {SIGNATURE_BYTES} bytes, got {signature_view.nbytes} bytes")
    packed = pack_batches(batches)
    if max(count, len(packed), extension_view.nbytes, seal_view.nbytes) > limits.u32_max:
        raise EncodingError("record_count, batch_count, extension_length and seal_length "
                            "are u32")
    body_offset = RECORDS_OFFSET + record_view.nbytes
    extension_length_offset = (body_offset + count + signature_view.nbytes
                               + packed.nbytes)
    size = block_bytes(count, signature_view.nbytes, len(packed), extension_view.nbytes)
    extension_end = size
    if sealed:
        size += _U32.size + seal_view.nbytes
    if allocate is not None:
        block = allocate(size)
    else:
        block = np.empty(size, np.uint8) if as_array else bytearray(size)
    view = memoryview(block).cast("B")
    _COUNTS.pack_into(block, COUNTS_OFFSET, count, len(packed))
    if _address(view[RECORDS_OFFSET:body_offset]) != _address(record_view):
        view[RECORDS_OFFSET:body_offset] = record_view
    view[body_offset:body_offset + count] = code_view
    offset = body_offset + count
    view[offset:offset + signature_view.nbytes] = signature_view
    offset += signature_view.nbytes
    view[offset:extension_length_offset] = packed.view(np.uint8).reshape(-1)
    _U32.pack_into(block, extension_length_offset, extension_view.nbytes)
    view[extension_length_offset + _U32.size:extension_end] = extension_view
    if sealed:
        _U32.pack_into(block, extension_end, seal_view.nbytes)
        view[extension_end + _U32.size:] = seal_view
    body_digest = _body_digest(view, body_offset, extension_length_offset, extension_end)
    if txid_levels is not None and count:
        _given_txids(txid_levels[0], count)
        root = hashing.merkle_root_plus_leaf(txid_levels, body_digest)
    else:
        if txids is None:
            txids = record_txids(record_view, threads)
        txids = _given_txids(txids, count)
        root = hashing.merkle_root(_merkle_leaves(txids, body_digest), _threads(count, threads))
    view.release()  # lets the caller resize the bytearray
    try:
        _HEADER.pack_into(block, 0, version, prev_hash, root, time, bits, nonce)
    except struct.error as exc:
        raise EncodingError(f"a header field is out of range: {exc}") from exc
    return block


class Block:
    """A decoded block: header fields and numpy views into the buffer it was decoded from.

    Nothing is copied, so the buffer must not change while the Block is in use, except for the
    header's time and nonce (mining rewrites them; ``hash`` is read afresh each time).
    """

    __slots__ = ("data", "records", "codes", "signatures", "batch_array", "_extension_offset",
                 "_body_offset", "_extension_length_offset", "_extension_end", "_txids",
                 "_levels", "_flagged", "_entries")

    def __init__(self, data: memoryview, records: np.ndarray, codes: np.ndarray,
                 signatures: np.ndarray, batch_array: np.ndarray, body_offset: int,
                 extension_length_offset: int, extension_end: int) -> None:
        self.data = data
        self.records = records  # N records, RECORD_DTYPE
        self.codes = codes  # N uint8 result codes
        self.signatures = signatures  # M x 64 uint8
        self.batch_array = batch_array  # B batches, BATCH_DTYPE
        self._body_offset = body_offset
        self._extension_length_offset = extension_length_offset
        self._extension_offset = extension_length_offset + _U32.size
        self._extension_end = extension_end  # the seal (version 2) follows
        self._txids: np.ndarray | None = None
        self._levels: list[np.ndarray] | None = None
        self._flagged: np.ndarray | None = None
        self._entries: list | None = None  # the extension's entries, decoded once (after genesis)

    @property
    def header(self) -> bytes:
        return self.data[:HEADER_BYTES].tobytes()

    def _field(self, offset: int) -> int:
        return _U32.unpack_from(self.data, offset)[0]

    version = property(lambda self: self._field(0))
    time = property(lambda self: self._field(TIME_OFFSET))
    bits = property(lambda self: self._field(BITS_OFFSET))
    nonce = property(lambda self: self._field(NONCE_OFFSET))
    prev_hash = property(lambda self: self.data[4:36].tobytes())
    merkle_root = property(lambda self: self.data[36:68].tobytes())

    @property
    def hash(self) -> bytes:
        """SHA-256d of the header, internal byte order (reverse it to show it as hex)."""
        return hashing.header_hash(self.data[:HEADER_BYTES])

    @property
    def is_genesis(self) -> bool:
        return self.data[4:36] == ZERO_HASH

    @property
    def extension(self) -> bytes:
        return self.data[self._extension_offset:self._extension_end].tobytes()

    @property
    def extension_length(self) -> int:
        return self._extension_end - self._extension_offset

    @property
    def seal(self) -> memoryview:
        """A version 2 block's seal bytes (its commit certificate), a view into the buffer;
        empty for version 1. No digest covers it."""
        if self._extension_end == self.data.nbytes:
            return self.data[self.data.nbytes:]
        return self.data[self._extension_end + _U32.size:]

    @property
    def batches(self) -> list[BatchAuth]:
        """The batch signatures as BatchAuth tuples (built on demand, one per batch)."""
        return unpack_batches(self.batch_array)

    def __len__(self) -> int:
        return len(self.records)

    def txids(self) -> np.ndarray:
        """The records' txids, N x 32 uint8 (computed once, in one native call)."""
        if self._txids is None:
            self._txids = record_txids(self.data[RECORDS_OFFSET:self._body_offset])
            self._txids.setflags(write=False)
        return self._txids

    def body_digest(self) -> bytes:
        """SHA-256d(codes || signatures || batches || extension): the last Merkle leaf."""
        return _body_digest(self.data, self._body_offset, self._extension_length_offset,
                            self._extension_end)

    def computed_merkle_root(self) -> bytes:
        return self._merkle_levels()[-1][0].tobytes()

    def _merkle_levels(self) -> list[np.ndarray]:
        if self._levels is None:
            self._levels = hashing.merkle_levels(_merkle_leaves(self.txids(), self.body_digest()))
        return self._levels

    def tx_proof(self, position: int) -> list[bytes]:
        """Merkle path from the txid of record ``position`` to the header's root, bottom first.

        Check it with ``hashing.verify_merkle_proof(txid, path, position, block.merkle_root)``.
        """
        self._check_position(position)
        return hashing.merkle_path(self._merkle_levels(), position)

    def tx_multiproof(self, positions, *, with_body: bool = True) -> list[bytes]:
        """One Merkle multiproof of the txids of records ``positions`` (and, ``with_body``,
        of the body digest, the last leaf) under the header's root.

        Check it with ``hashing.verify_merkle_multiproof({position: txid, ...,
        len(block): body_digest}, len(block) + 1, hashes, block.merkle_root)``.
        """
        positions = [int(position) for position in positions]
        for position in positions:
            self._check_position(position)
        if with_body:
            positions.append(len(self.records))
        return hashing.merkle_multiproof(self._merkle_levels(), positions)

    def _check_position(self, position: int) -> None:
        if not 0 <= position < len(self.records):
            raise IndexError(f"record {position} out of range for {len(self.records)} records")

    def signature_for(self, position: int) -> bytes | BatchAuth | None:
        """What authorises record ``position``: its own signature, the BatchAuth covering it,
        or None in the genesis block (and for a flagged record no batch covers)."""
        self._check_position(position)
        if self.is_genesis:
            return None
        if self._flagged is None:
            flagged = (self.records["flags"] & Flags.batch_authorized) != 0
            self._flagged = np.concatenate(([0], np.cumsum(flagged)))
        if self._flagged[position + 1] == self._flagged[position]:  # has its own signature
            return self.signatures[position - int(self._flagged[position])].tobytes()
        firsts = self.batch_array["first"]
        index = int(np.searchsorted(firsts, position, side="right")) - 1
        if index >= 0 and position < int(firsts[index]) + int(self.batch_array["count"][index]):
            return unpack_batches(self.batch_array[index:index + 1])[0]
        return None

    def batch_txids(self, index: int) -> np.ndarray:
        """The txids of batch ``index``'s records (what its signature signs the root of)."""
        row = self.batch_array[index]
        return self.txids()[int(row["first"]):int(row["first"]) + int(row["count"])]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _given_txids(txids: np.ndarray, count: int) -> np.ndarray:
    if txids.dtype != np.uint8 or txids.shape != (count, 32):
        raise EncodingError(f"txids must be {count} x 32 uint8, got {txids.dtype} {txids.shape}")
    return txids


def decode_block(data, txids: np.ndarray | None = None) -> Block:
    """Views of a block's parts; EncodingError saying what and where when sizes disagree.

    ``txids`` (N x 32), when the caller already hashed these very records, is kept instead of
    hashing them again on first use.
    """
    view = _bytes_view(data, "a block")
    size = view.nbytes
    if size < BLOCK_BYTES_MIN:
        raise EncodingError(f"a block is at least {BLOCK_BYTES_MIN} bytes (header, counts, "
                            f"extension length), got {size}")
    record_count, batch_count = _COUNTS.unpack_from(view, COUNTS_OFFSET)
    body_offset = RECORDS_OFFSET + record_count * RECORD_BYTES
    if body_offset + record_count + _U32.size > size:
        raise EncodingError(
            f"record_count {record_count} at offset {COUNTS_OFFSET} needs "
            f"{record_count * (RECORD_BYTES + 1)} bytes of records and codes from offset "
            f"{RECORDS_OFFSET}, but the block is {size} bytes")
    records = _read_only(as_records(view[RECORDS_OFFSET:body_offset]))
    signature_count = _signature_count(records["flags"], view[4:36] == ZERO_HASH)
    signatures_offset = body_offset + record_count
    batches_offset = signatures_offset + signature_count * SIGNATURE_BYTES
    extension_length_offset = batches_offset + batch_count * BATCH_BYTES
    if extension_length_offset + _U32.size > size:
        raise EncodingError(
            f"{signature_count} signatures from offset {signatures_offset} and {batch_count} "
            f"batches need {extension_length_offset + _U32.size - signatures_offset} bytes "
            f"before the extension length, but the block ends at {size}")
    extension_length = _U32.unpack_from(view, extension_length_offset)[0]
    extension_end = extension_length_offset + _U32.size + extension_length
    if _U32.unpack_from(view, 0)[0] == BLOCK_VERSION_CONSORTIUM:
        _check_seal_length(view, extension_end, extension_length, extension_length_offset)
    elif extension_end != size:
        where = ("runs past the end" if extension_end > size
                 else f"leaves {size - extension_end} trailing bytes")
        raise EncodingError(f"extension_length {extension_length} at offset "
                            f"{extension_length_offset} {where} of the {size}-byte block")
    codes = _read_only(np.frombuffer(view, np.uint8, record_count, body_offset))
    signatures = _read_only(np.frombuffer(
        view, np.uint8, signature_count * SIGNATURE_BYTES, signatures_offset
    ).reshape(signature_count, SIGNATURE_BYTES))
    batch_array = _read_only(np.frombuffer(view, BATCH_DTYPE, batch_count, batches_offset))
    block = Block(view, records, codes, signatures, batch_array, body_offset,
                  extension_length_offset, extension_end)
    if txids is not None:
        block._txids = _read_only(_given_txids(txids, record_count).view())
    return block


def _check_seal_length(view: memoryview, extension_end: int, extension_length: int,
                       extension_length_offset: int) -> None:
    size = view.nbytes
    if extension_end + _U32.size > size:
        raise EncodingError(f"extension_length {extension_length} at offset "
                            f"{extension_length_offset} leaves no room for the seal_length of "
                            f"a version {BLOCK_VERSION_CONSORTIUM} block of {size} bytes")
    seal_length = _U32.unpack_from(view, extension_end)[0]
    end = extension_end + _U32.size + seal_length
    if end != size:
        where = "runs past the end" if end > size else f"leaves {size - end} trailing bytes"
        raise EncodingError(f"seal_length {seal_length} at offset {extension_end} {where} "
                            f"of the {size}-byte block")


def with_seal(data, seal, *, allocate: Callable[[int], np.ndarray] | None = None
              ) -> bytearray | np.ndarray:
    """The same version 2 block with ``seal`` in place of its seal (a new buffer): its hash,
    Merkle root and every other byte stay; EncodingError unless ``data`` is such a block.
    ``allocate`` (size -> uint8 array) gives the buffer to fill instead of a bytearray (a
    numpy array on huge pages fills several times faster for a large block)."""
    block = decode_block(data)
    if block.version != BLOCK_VERSION_CONSORTIUM:
        raise EncodingError(f"only a version {BLOCK_VERSION_CONSORTIUM} block carries a seal; "
                            f"this one is version {block.version}")
    seal_view = _bytes_view(seal, "seal")
    if seal_view.nbytes > limits.u32_max:
        raise EncodingError("seal_length is u32")
    end = block._extension_end
    size = end + _U32.size + seal_view.nbytes
    sealed = bytearray(size) if allocate is None else allocate(size)
    view = memoryview(sealed).cast("B")
    view[:end] = block.data[:end]
    _U32.pack_into(view, end, seal_view.nbytes)
    view[end + _U32.size:] = seal_view
    view.release()
    return sealed


def check_block(block: Block, *, batch_signatures: bool = True) -> BlockResult:
    """Judges a decoded block on its own (no chain state), cheapest and anti-DoS checks first.

    ``batch_signatures=False`` skips the BIP340 checks of batch signatures, for a caller that
    verifies them itself in worker threads.
    """
    version = block.version
    if version == BLOCK_VERSION:
        result = _check_header_work(block)
    elif version == BLOCK_VERSION_CONSORTIUM:
        result = _check_consortium_header(block)
    else:
        return BlockResult.bad_version
    if result is BlockResult.ok and len(block.records) > limits.block_records_max:
        result = BlockResult.too_many_records
    if result is BlockResult.ok:
        result = _check_records(block)
    if result is BlockResult.ok and block.computed_merkle_root() != block.merkle_root:
        result = BlockResult.bad_merkle_root
    if result is BlockResult.ok:
        result = _check_duplicates(block.txids())
    if result is not BlockResult.ok:
        return result
    if block.is_genesis:
        return _check_genesis(block)
    result = _check_entries(block)
    if result is BlockResult.ok:
        result = _check_batch_layout(block)
    if result is BlockResult.ok and batch_signatures:
        result = _check_batch_signatures(block)
    return result


def _check_entries(block: Block) -> BlockResult:
    calls = np.flatnonzero(block.records["kind"] == Kind.call)
    if not block.extension_length:
        return BlockResult.payload_mismatch if calls.size else BlockResult.ok
    try:
        found = block_entries(block)
    except EncodingError:
        return BlockResult.consortium_entries
    payloads = [entry for entry in found if isinstance(entry, Payload)]
    if block.version != BLOCK_VERSION_CONSORTIUM and any(
            not isinstance(entry, (Payload, StateRoot)) for entry in found):
        return BlockResult.extension_not_empty
    return _check_payloads(block, calls, payloads)


def _check_payloads(block: Block, calls: np.ndarray, payloads: list[Payload]) -> BlockResult:
    # Both lists ascend (decode_entries sees to the payloads'), so they pair one to one.
    if len(payloads) != calls.size:
        return BlockResult.payload_mismatch
    records = block.records
    for index, payload in zip(calls.tolist(), payloads):
        if (payload.record_index != index or len(payload.data) != records["aux2"][index]
                or payload_digest(payload.data) != records["data"][index].tobytes()):
            return BlockResult.payload_mismatch
    return BlockResult.ok


def block_payloads(block: Block) -> dict[int, bytes]:
    """The payloads of a block that check_block passed, by the index of their call record."""
    return {entry.record_index: entry.data for entry in block_entries(block)
            if isinstance(entry, Payload)}


def block_entries(block: Block) -> list:
    """The entries of a block's extension (none for genesis, whose extension is its config),
    decoded once and kept with the block; EncodingError when they do not decode (check_block
    refuses such a block)."""
    if not block.extension_length or block.is_genesis:
        return []
    if block._entries is None:
        block._entries = decode_entries(block.extension)
    return block._entries


def _check_header_work(block: Block) -> BlockResult:
    try:
        target = hashing.bits_to_target(block.bits)
    except EncodingError:
        return BlockResult.bad_bits
    if target == 0:
        return BlockResult.bad_bits
    if not hashing.check_pow(block.data[:HEADER_BYTES]):
        return BlockResult.bad_pow
    return BlockResult.ok


def _check_consortium_header(block: Block) -> BlockResult:
    # Validators' signatures in the seal make the block, not work: its bits and nonce are 0
    # so that no two encodings of one block differ there. The seal itself needs the validator
    # set, so tsunagi.consensus.certificate checks it against the chain.
    if block.bits or block.nonce:
        return BlockResult.consortium_work
    if block.is_genesis:
        return BlockResult.consortium_genesis
    if block.seal.nbytes > limits.seal_bytes_max:
        return BlockResult.seal_too_large
    return BlockResult.ok


def _check_records(block: Block) -> BlockResult:
    records = block.records
    if not _KNOWN_KINDS[records["kind"]].all() or (records["flags"] & _FLAGS_UNKNOWN).any():
        return BlockResult.malformed_record
    chain_ids = records["chain_id"]
    if chain_ids.size and (chain_ids != chain_ids[0]).any():
        return BlockResult.mixed_chain
    if not _KNOWN_CODES[block.codes].all():
        return BlockResult.unknown_code
    if _UNSTORED_CODES[block.codes].any():
        return BlockResult.unstored_code
    return BlockResult.ok


def _check_duplicates(txids: np.ndarray) -> BlockResult:
    # Sort the first 8 bytes of each txid; only where two prefixes tie (for honest blocks:
    # nowhere) are whole txids compared. One sort of N integers in all.
    if len(txids) < 2:
        return BlockResult.ok
    prefixes = np.ascontiguousarray(txids[:, :8]).view("<u8").ravel()
    ordered = np.sort(prefixes)
    if not (ordered[1:] == ordered[:-1]).any():
        return BlockResult.ok
    tied = np.isin(prefixes, ordered[1:][ordered[1:] == ordered[:-1]])
    candidates = np.ascontiguousarray(txids[tied]).view(np.dtype((np.void, 32))).ravel()
    if len(np.unique(candidates)) != len(candidates):
        return BlockResult.duplicate_record
    return BlockResult.ok


def _check_batch_layout(block: Block) -> BlockResult:
    return check_batch_layout(block.batch_array,
                              (block.records["flags"] & Flags.batch_authorized) != 0)


# What each fault of check_batch_layout means to a sender, for callers that answer with an
# error rather than a BlockResult (the engine, the wire protocol, the REST API).
_BATCH_FAULTS = {
    BlockResult.batch_empty: "a batch entry covers 1 or more records, not 0",
    BlockResult.batch_out_of_range: "a batch entry covers 1 or more of the {count} records and "
                                    "ends within them",
    BlockResult.batch_order: "batch entries must be in record order and must not overlap",
    BlockResult.batch_reserved: "the reserved bytes of a batch entry must be zero",
    BlockResult.batch_coverage: "batch entries must cover exactly the records flagged "
                                "batch_authorized",
}


def batch_fault_message(result: BlockResult, record_count: int) -> str:
    """The sentence an error gives for a fault of check_batch_layout over ``record_count``."""
    return _BATCH_FAULTS[result].format(count=record_count)


def check_batch_ranges(batches: np.ndarray, record_count: int) -> BlockResult:
    """Whether batch entries (BATCH_DTYPE) are each non-empty, end within ``record_count``
    records, and come in record order without overlapping: ok, batch_empty, batch_out_of_range
    or batch_order, the first rule broken in that order. Numpy over the entries, no loop."""
    counts = batches["count"]
    first = batches["first"].astype(np.int64)
    end = first + counts
    if (counts == 0).any():
        return BlockResult.batch_empty
    if (end > record_count).any():
        return BlockResult.batch_out_of_range
    if (first[1:] < end[:-1]).any():
        return BlockResult.batch_order
    return BlockResult.ok


def check_batch_layout(batches: np.ndarray, flagged: np.ndarray) -> BlockResult:
    """The batch rules of docs/FORMAT.md for entries (BATCH_DTYPE) over records whose
    batch_authorized flag is ``flagged`` (N bools): check_batch_ranges, then reserved bytes
    zero (batch_reserved), then the entries cover exactly the flagged records
    (batch_coverage). Numpy: no Python loop per record or per entry.
    """
    result = check_batch_ranges(batches, len(flagged))
    if result is not BlockResult.ok:
        return result
    if batches["reserved"].any():
        return BlockResult.batch_reserved
    # Entries sorted and disjoint: +1 where one starts, -1 where one ends (an end that is the
    # next entry's first cancels out) sum up to 1 on exactly the covered records. In int8 this
    # takes a third of the time of counting flagged records in int64 (65,536 records: 150-210
    # against 450-550 us here).
    first = batches["first"].astype(np.int64)
    marks = np.zeros(len(flagged) + 1, np.int8)
    marks[first] = 1
    marks[first + batches["count"]] -= 1
    covered = np.cumsum(marks[:-1], dtype=np.int8).view(np.bool_)
    if not np.array_equal(covered, flagged):
        return BlockResult.batch_coverage
    return BlockResult.ok


def _check_batch_signatures(block: Block) -> BlockResult:
    for index, row in enumerate(block.batch_array):  # one verification per batch
        root = batch_root(block.batch_txids(index))
        if not verify(row["signer_key"].tobytes(), root, row["signature"].tobytes()):
            return BlockResult.batch_signature_invalid
    return BlockResult.ok


def _check_genesis(block: Block) -> BlockResult:
    if len(block.batch_array):
        return BlockResult.genesis_batches
    extension = block.extension
    try:
        config = ChainConfig.from_json(extension)
    except ConfigError:
        return BlockResult.genesis_config_invalid
    if not config.is_canonical(extension):
        return BlockResult.genesis_config_invalid
    if (block.data[RECORDS_OFFSET:block._body_offset] != genesis_records(config)
            or block.codes.any() or block.bits != config.bits
            or block.time != config.genesis_time_s):
        return BlockResult.genesis_mismatch
    return BlockResult.ok


def genesis_block(config: ChainConfig, threads: int | None = None) -> bytearray:
    """The mined genesis block of a config: same config, same bytes, same hash."""
    records = genesis_records(config)
    block = encode_block(prev_hash=ZERO_HASH, time=config.genesis_time_s, bits=config.bits,
                         records=records, codes=bytes(len(records) // RECORD_BYTES),
                         signatures=b"", batches=(), extension=config.to_json().encode())
    mine_header(block, threads=threads)
    return block


_QUICK_NONCES = 4096  # about 0.1 ms of hashing on one core


def mine_header(block: bytearray, threads: int | None = None, *,
                nonce_count: int = limits.nonce_end,
                progress: Callable[[int], None] | None = None,
                stop: threading.Event | None = None) -> int | None:
    """Finds the lowest nonce that meets the header's bits and writes it into ``block``.

    When no nonce of the first ``nonce_count`` qualifies (all 2**32 by default), the header's
    time moves one second on and the search starts again, as miners do. Returns the nonce, or
    None once ``stop`` is set: the search looks at it after every stretch of
    ``limits.seal_thread_nonces`` nonces a thread (tens of milliseconds) and then leaves the
    buffer as it was. ``progress``, when given, gets the hashes done so far after each stretch.
    """
    view = memoryview(block)
    if view.readonly or view.nbytes < HEADER_BYTES:
        raise EncodingError("mine_header writes into a writable block buffer (a bytearray)")
    header = bytearray(view[:HEADER_BYTES])
    try:
        if hashing.bits_to_target(_U32.unpack_from(header, BITS_OFFSET)[0]) == 0:
            raise EncodingError("bits encode a zero target: no nonce can meet it")
    except EncodingError as exc:
        raise EncodingError(f"cannot mine this header: {exc}") from exc
    hashes = 0
    while True:
        first = 0
        while first < nonce_count:
            if stop is not None and stop.is_set():
                return None
            # Development difficulty needs a couple of tries: a short first stretch on this
            # thread costs microseconds, where starting worker threads costs more. Stretches
            # go up from nonce 0, so the first nonce found is the lowest of all.
            workers = 1 if first == 0 else threads or hashing.cpu_count()
            count = _QUICK_NONCES if first == 0 else workers * limits.seal_thread_nonces
            search = hashing.NonceSearch(bytes(header), first, min(count, nonce_count - first))
            nonce = search.run(workers)
            hashes += search.hashes_done
            if progress is not None:
                progress(hashes)
            if nonce is not None:
                _U32.pack_into(header, NONCE_OFFSET, nonce)
                view[:HEADER_BYTES] = header
                return nonce
            first += search.count
        time = _U32.unpack_from(header, TIME_OFFSET)[0]
        if time == limits.u32_max:
            raise EncodingError("no nonce qualifies and the header time cannot move on")
        _U32.pack_into(header, TIME_OFFSET, time + 1)


def batch_root(txids) -> bytes:
    """What a batch signature signs: the Merkle root of the batch's txids (N x 32 or a list)."""
    if len(txids) == 0:
        raise EncodingError("a batch holds at least one record")
    return hashing.merkle_root(txids)


def sign_batch(private_key: PrivateKey, records) -> bytes:
    """BIP340 signature over the batch root of a buffer of records, as a client sends them."""
    return private_key.sign(batch_root(record_txids(records)))


def verify_batch(txids, signer_key: bytes, signature: bytes) -> bool:
    """True when ``signature`` by ``signer_key`` signs the batch root of ``txids``."""
    if len(txids) == 0:
        return False
    return verify(signer_key, batch_root(txids), signature)


def batch_proof(txids, index: int) -> list[bytes]:
    """Merkle path of txid ``index`` within its batch (for verify_record_in_batch)."""
    return hashing.merkle_proof(txids, index)


def verify_record_in_batch(record, path, index: int, batch: BatchAuth) -> bool:
    """True when ``record`` is item ``index`` of the batch that ``batch``'s signature signs.

    ``path`` is its batch_proof. Proves one record alone: record + path + batch signature.
    Any malformed input gives False.
    """
    try:
        record = memoryview(record).tobytes()
        path = [memoryview(sibling).tobytes() for sibling in path]
    except TypeError:
        return False
    count = batch.count
    if (len(record) != RECORD_BYTES or not 0 <= index < count
            or len(path) != (count - 1).bit_length()
            or not record[1] & Flags.batch_authorized):
        return False
    node = hashing.sha256d(record)
    position = index
    for sibling in path:
        if len(sibling) != 32:
            return False
        node = hashing.sha256d(sibling + node if position & 1 else node + sibling)
        position >>= 1
    return verify(batch.signer_key, node, batch.signature)
