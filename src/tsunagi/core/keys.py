"""secp256k1 keys and BIP340 Schnorr signatures (libsecp256k1 through coincurve).

A public key is the 32-byte x-only form of BIP340; a signature is 64 bytes. Records are signed
over their txid, the SHA-256d of their 128 bytes (docs/FORMAT.md). :func:`verify` answers a
bool for any input, so untrusted keys and signatures never raise.
"""

from __future__ import annotations

import coincurve

from tsunagi import hashing
from tsunagi.core.records import RECORD_BYTES, SIGNATURE_BYTES
from tsunagi.errors import EncodingError

__all__ = ["KEY_BYTES", "PrivateKey", "is_public_key", "txid", "verify"]

KEY_BYTES = 32  # secret keys and x-only public keys alike
MESSAGE_BYTES = 32  # BIP340 as used here signs 32-byte hashes only


class PrivateKey:
    """A secp256k1 secret key that signs with BIP340. Its repr never shows the secret."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: coincurve.PrivateKey) -> None:
        self._key = key
        self.public_key: bytes = key.public_key_xonly.format()

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh key from the operating system's random source."""
        return cls(coincurve.PrivateKey())

    @classmethod
    def from_bytes(cls, secret: bytes) -> PrivateKey:
        """The key of a 32-byte secret; EncodingError unless 0 < secret < the curve order."""
        secret = _as_bytes(secret)
        if secret is None or len(secret) != KEY_BYTES:
            raise EncodingError(f"a secret key is {KEY_BYTES} bytes")
        try:
            return cls(coincurve.PrivateKey(secret))
        except ValueError as exc:
            raise EncodingError(
                "a secret key must be above 0 and below the secp256k1 group order") from exc

    def to_bytes(self) -> bytes:
        """The 32-byte secret. Keep it out of logs; key files store it encrypted."""
        return self._key.secret

    def sign(self, message: bytes, aux_rand: bytes | None = None) -> bytes:
        """BIP340 signature (64 bytes) of a 32-byte message.

        ``aux_rand`` is BIP340's 32 bytes of auxiliary randomness; by default fresh random
        bytes are used, which protects against side channels. Pass it only to reproduce
        known-answer tests.
        """
        data = _as_bytes(message)
        if data is None or len(data) != MESSAGE_BYTES:
            size = "not bytes" if data is None else f"{len(data)} bytes"
            raise EncodingError(f"a signed message is a {MESSAGE_BYTES}-byte hash, got {size}")
        aux = b"" if aux_rand is None else _as_bytes(aux_rand)
        if aux is None or (aux_rand is not None and len(aux) != 32):
            raise EncodingError("aux_rand is 32 bytes")
        # coincurve reads b"" as "draw 32 fresh random bytes".
        return self._key.sign_schnorr(data, aux)

    def sign_record(self, record: bytes) -> bytes:
        """BIP340 signature over a 128-byte record's txid."""
        return self.sign(txid(record))

    def __repr__(self) -> str:
        return f"PrivateKey(public_key={self.public_key.hex()})"


def txid(record) -> bytes:
    """A record's id: SHA-256d of its 128 bytes (internal byte order)."""
    view = memoryview(record)
    if view.nbytes != RECORD_BYTES:
        raise EncodingError(f"a record is {RECORD_BYTES} bytes, got {view.nbytes}")
    return hashing.sha256d(view)


def _as_bytes(data) -> bytes | None:
    # memoryview, unlike bytes(), refuses an int instead of making that many zero bytes.
    try:
        return memoryview(data).tobytes()
    except (TypeError, ValueError):
        return None


def _parse(public_key) -> coincurve.PublicKeyXOnly | None:
    key = _as_bytes(public_key)
    if key is None:
        return None
    if len(key) != KEY_BYTES:
        return None
    try:
        return coincurve.PublicKeyXOnly(key)
    except ValueError:  # not the x coordinate of a curve point
        return None


def is_public_key(public_key) -> bool:
    """True when 32 bytes are the x coordinate of a point on secp256k1 (a usable BIP340 key)."""
    return _parse(public_key) is not None


def verify(public_key, message, signature) -> bool:
    """True when ``signature`` is a valid BIP340 signature of the 32-byte ``message``.

    Any malformed input (wrong sizes, a key off the curve, a non-bytes object) gives False.
    """
    key = _parse(public_key)
    if key is None:
        return False
    message, signature = _as_bytes(message), _as_bytes(signature)
    if message is None or signature is None:
        return False
    if len(message) != MESSAGE_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    return key.verify(signature, message)
