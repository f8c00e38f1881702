"""Headers of a long chain for the header benchmarks, mined once and cached in the temp folder.

The chain is a fresh ledger's genesis of :data:`CONFIG` and ``count`` headers on it at the
development bits (0x207fffff: about two tries a header), one NonceSearch a header, each a second
after its parent, with a zero Merkle root: headers without bodies, which a Chain checks for
links, work, bits and time only. They are cached as
``tsunagi-bench-headers-<count>-<genesis hash>.bin`` for the next run.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from tsunagi import hashing
from tsunagi.consensus.chain import HeadersVerdict
from tsunagi.core.block import BLOCK_VERSION, HEADER_BYTES
from tsunagi.core.config import ChainConfig
from tsunagi.ledger.ledger import Ledger

__all__ = ["CONFIG", "RUN_HEADERS", "accept_all", "cached_headers", "genesis_header"]

CONFIG = ChainConfig(name="headers-bench", chain_id=9, asset_code="TSU")
ROOT = bytes(32)
RUN_HEADERS = 16_384  # a run: what one peer message carries (node.limits.headers_per_message_max)


def genesis_header(directory: Path) -> bytes:
    """Creates a ledger of CONFIG in ``directory`` (a new folder); returns its genesis header."""
    with Ledger.create(directory, CONFIG) as ledger:
        return ledger.block(0)[:HEADER_BYTES]


def _mine(genesis: bytes, count: int) -> bytes:
    out = bytearray(count * HEADER_BYTES)
    view = memoryview(out)
    prev = hashing.sha256d(genesis)
    time_s = struct.unpack_from("<I", genesis, 68)[0]
    for height in range(1, count + 1):
        header = hashing.make_header(BLOCK_VERSION, prev, ROOT, time_s + height, CONFIG.bits)
        nonce = hashing.NonceSearch(header, 0, 1 << 16).run(1)
        at = (height - 1) * HEADER_BYTES
        view[at:at + 76] = header[:76]
        struct.pack_into("<I", out, at + 76, nonce)
        prev = hashing.sha256d(view[at:at + HEADER_BYTES])
    return bytes(out)


def cached_headers(genesis: bytes, count: int) -> bytes:
    """``count`` headers on ``genesis``, from the cache when an earlier run left them there."""
    name = f"tsunagi-bench-headers-{count}-{hashing.sha256d(genesis)[::-1].hex()[:16]}.bin"
    cached = Path(tempfile.gettempdir()) / name
    if cached.exists() and cached.stat().st_size == count * HEADER_BYTES:
        return cached.read_bytes()
    made = _mine(genesis, count)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(made)
    os.replace(partial, cached)
    return made


def accept_all(chain, headers: bytes) -> None:
    """Gives ``chain`` (a tsunagi.consensus.Chain) every header, a run at a time, as a peer's
    ``headers`` answers would come; every run must be taken whole."""
    view = memoryview(headers)
    step = RUN_HEADERS * HEADER_BYTES
    for first in range(0, len(view), step):
        answer = chain.accept_headers(view[first:first + step])
        assert answer.verdict is HeadersVerdict.ok
        assert answer.taken == len(view[first:first + step]) // HEADER_BYTES
