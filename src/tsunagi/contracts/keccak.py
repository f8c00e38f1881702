"""Keccak-256 for contracts: the hash of Ethereum's headers, tries and event topics.

hashlib has SHA3-256, whose padding differs from the Keccak-256 Ethereum uses, so a contract
that checks Ethereum proofs gets this one through the contract API. It is deterministic (a
pure function of its bytes) and backed by ``eth_hash`` (pycryptodome), the ethereum extra.
"""

from __future__ import annotations

from tsunagi import extras

__all__ = ["keccak256"]


def keccak256(data: bytes) -> bytes:
    """The 32-byte Keccak-256 of ``data``; ConfigError names the extra to install without it."""
    extras.require("ethereum", "Keccak-256 in contracts")
    from eth_hash.auto import keccak

    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"keccak256 hashes bytes, got {type(data).__name__}")
    return keccak(bytes(data))
