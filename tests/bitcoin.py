"""A small reader of the Bitcoin block files in shared/testdata/bitcoin, written for the tests.

It is independent of tsunagi on purpose: it parses with ``struct`` and hashes with ``hashlib``,
so the native core is checked against a second implementation rather than against itself.
A file is a bzip2 stream of ``[u32 magic 0xD9B4BEF9][u32 length][raw block]`` records; a raw
block is the 80-byte header, a varint transaction count and pre-segwit transactions.
"""

from __future__ import annotations

import bz2
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0xD9B4BEF9
HEADER_BYTES = 80

GENESIS_HEADER = struct.pack(
    "<I32s32sIII", 1, bytes(32),
    bytes.fromhex("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b")[::-1],
    1231006505, 0x1D00FFFF, 2083236893)
GENESIS_HASH_HEX = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def merkle_root(hashes: list[bytes]) -> bytes:
    """Bitcoin's Merkle root in plain Python: an odd level pairs its last hash with itself."""
    if not hashes:
        return bytes(32)
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@dataclass(frozen=True)
class Block:
    header: bytes
    transactions: list[bytes]  # raw pre-segwit serializations

    @property
    def hash(self) -> bytes:
        return sha256d(self.header)

    @property
    def prev_hash(self) -> bytes:
        return self.header[4:36]

    @property
    def merkle_root(self) -> bytes:
        return self.header[36:68]

    @property
    def bits(self) -> int:
        return struct.unpack_from("<I", self.header, 72)[0]

    @property
    def nonce(self) -> int:
        return struct.unpack_from("<I", self.header, 76)[0]

    @property
    def txids(self) -> list[bytes]:
        return [sha256d(tx) for tx in self.transactions]


class Reader:
    """A cursor over bytes that raises ValueError when a field runs past the end."""

    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.offset = data, offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise ValueError(f"need {size} bytes at offset {self.offset}, data ends first")
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def varint(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        return int.from_bytes(self.take(size), "little")


def skip_transaction(reader: Reader) -> None:
    """Moves past one pre-segwit transaction: version, inputs, outputs, lock time."""
    reader.take(4)
    for _ in range(reader.varint()):
        reader.take(36)  # previous output: txid and index
        reader.take(reader.varint())  # script
        reader.take(4)  # sequence
    for _ in range(reader.varint()):
        reader.take(8)  # value
        reader.take(reader.varint())  # script
    reader.take(4)


def parse_block(raw: bytes) -> Block:
    reader = Reader(raw)
    header = reader.take(HEADER_BYTES)
    transactions = []
    for _ in range(reader.varint()):
        start = reader.offset
        skip_transaction(reader)
        transactions.append(raw[start:reader.offset])
    if reader.offset != len(raw):
        raise ValueError(f"{len(raw) - reader.offset} bytes left after the last transaction")
    return Block(header, transactions)


def read_blocks(path: Path) -> list[Block]:
    """Every block of a bzip2 block file, in file order."""
    reader = Reader(bz2.decompress(Path(path).read_bytes()))
    blocks = []
    while reader.offset < len(reader.data):
        magic = reader.u32()
        if magic != MAGIC:
            raise ValueError(f"bad network magic 0x{magic:08x} at offset {reader.offset - 4}")
        blocks.append(parse_block(reader.take(reader.u32())))
    return blocks


def read_header_lines(path: Path) -> list[bytes]:
    """The headers of a text file with one 160-digit hex header a line."""
    lines = Path(path).read_text().split()
    return [bytes.fromhex(line) for line in lines]


def bits_target(bits: int) -> int:
    """Target of valid compact bits (the sign bit and overflow are the caller's to avoid)."""
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    return mantissa >> 8 * (3 - exponent) if exponent <= 3 else mantissa << 8 * (exponent - 3)


def lowest_nonce(header: bytes, first: int, count: int) -> int | None:
    """The lowest nonce in [first, first + count) meeting the header's own target, by hashlib."""
    target = bits_target(struct.unpack_from("<I", header, 72)[0])
    for nonce in range(first, first + count):
        candidate = header[:76] + struct.pack("<I", nonce)
        if int.from_bytes(sha256d(candidate), "little") <= target:
            return nonce
    return None


def mine_chain(bits: list[int], seed: int = 0) -> list[bytes]:
    """A linked chain with the given bits per header, each nonce found by hashlib."""
    headers, prev = [], bytes(32)
    for index, header_bits in enumerate(bits):
        root = hashlib.sha256(f"{seed}/{index}".encode()).digest()
        header = struct.pack("<I32s32sIII", 0x20000000, prev, root, 1_700_000_000 + index,
                             header_bits, 0)
        nonce = lowest_nonce(header, 0, 2**32)
        header = header[:76] + struct.pack("<I", nonce)
        headers.append(header)
        prev = sha256d(header)
    return headers
