"""decode_block and check_block of version 1 blocks, and of version 2 (consortium) blocks beside
them: what a block costs to read and judge alone, per block.

Run ``python -m pytest bench/bench_block.py --benchmark-only``. Two shapes: an empty block
(header, counts, extension length: the per-block overhead a sync of small blocks pays) and a
block of 4,096 batch-authorized records in 16 batches. Version 2 blocks carry a 300-byte seal
(about a certificate of 4 signatures), which no digest covers.
"""

from __future__ import annotations

import hashlib

import pytest

from tsunagi.core import records
from tsunagi.core.block import (
    BLOCK_VERSION,
    BLOCK_VERSION_CONSORTIUM,
    check_block,
    decode_block,
    encode_block,
    mine_header,
    sign_batch,
)
from tsunagi.core.keys import PrivateKey

CHAIN = 7
SIGNER = PrivateKey.from_bytes(b"\x22" * 32)
PREV = hashlib.sha256(b"previous block").digest()
BATCH_RECORDS = 256
SEAL = bytes(300)


def _batched(count: int) -> dict:
    data = [records.transfer(CHAIN, sequence, 1, 2, 10, batch_authorized=True)
            for sequence in range(1, count + 1)]
    batches = []
    for first in range(0, count, BATCH_RECORDS):
        chunk = b"".join(data[first:first + BATCH_RECORDS])
        batches.append((first, len(chunk) // records.RECORD_BYTES, SIGNER.public_key,
                        sign_batch(SIGNER, chunk)))
    return {"records": b"".join(data), "codes": bytes(count), "signatures": b"",
            "batches": batches}


def _block(shape: str, version: int) -> bytes:
    parts = _batched(4096) if shape == "4096-batched" else {
        "records": b"", "codes": b"", "signatures": b""}
    if version == BLOCK_VERSION:
        data = encode_block(prev_hash=PREV, time=1, bits=0x207FFFFF, **parts)
        mine_header(data)
    else:
        data = encode_block(prev_hash=PREV, time=1, bits=0, version=version, seal=SEAL, **parts)
    return bytes(data)


CASES = [(shape, version) for shape in ("empty", "4096-batched")
         for version in (BLOCK_VERSION, BLOCK_VERSION_CONSORTIUM)]


@pytest.mark.parametrize(("shape", "version"), CASES)
def test_decode(benchmark, shape, version):
    benchmark.group = f"decode {shape}"
    data = _block(shape, version)
    block = benchmark(decode_block, data)
    assert block.version == version


@pytest.mark.parametrize(("shape", "version"), CASES)
def test_check(benchmark, shape, version):
    """decode_block then check_block (batch signatures included), as connect_block does."""
    benchmark.group = f"check {shape}"
    data = _block(shape, version)
    result = benchmark(lambda: check_block(decode_block(data)))
    assert result == 0
