"""secp256k1 keys and BIP340 Schnorr signatures (libsecp256k1 through coincurve).

A public key is the 32-byte x-only form of BIP340; a signature is 64 bytes. Records are signed
over their txid, the SHA-256d of their 128 bytes (docs/FORMAT.md). :func:`verify` answers a
bool for any input, so untrusted keys and signatures never raise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import coincurve
from coincurve._libsecp256k1 import ffi, lib

from tsunagi import hashing
from tsunagi._native.sigverify import verify_batch
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

    def sign_many(self, messages: Sequence[bytes]) -> list[bytes]:
        """BIP340 signatures of many 32-byte messages, each as sign() makes it (fresh
        auxiliary randomness each) in half the time: the keypair is derived once, not once a
        signature, and the check that a fault did not corrupt a signature (one that could
        leak the key: coincurve verifies each signature it makes) is one batch verification
        of them all. EncodingError names a message that is not a 32-byte hash."""
        rows = [_as_bytes(message) for message in messages]
        for index, data in enumerate(rows):
            if data is None or len(data) != MESSAGE_BYTES:
                size = "not bytes" if data is None else f"{len(data)} bytes"
                raise EncodingError(f"a signed message is a {MESSAGE_BYTES}-byte hash, "
                                    f"message {index} is {size}")
        if not rows:
            return []
        context = self._key.context.ctx
        keypair = ffi.new("secp256k1_keypair *")
        signature = ffi.new("unsigned char[64]")
        randomness = os.urandom(32 * len(rows))
        signatures = []
        try:
            if not lib.secp256k1_keypair_create(context, keypair, self._key.secret):
                raise ValueError("the secret key is not valid for secp256k1")
            for index, data in enumerate(rows):
                if not lib.secp256k1_schnorrsig_sign32(
                        context, signature, data, keypair,
                        randomness[32 * index:32 * index + 32]):
                    raise ValueError("libsecp256k1 could not sign")
                signatures.append(ffi.buffer(signature, SIGNATURE_BYTES)[:])
        finally:
            ffi.memmove(keypair, bytes(ffi.sizeof("secp256k1_keypair")),
                        ffi.sizeof("secp256k1_keypair"))  # the secret leaves no copy behind
        valid = verify_batch(b"".join(rows), self.public_key * len(rows), b"".join(signatures))
        if not valid.all():
            raise ValueError("a signature just made does not verify: the machine may be "
                             "faulty; nothing was signed")
        return signatures

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
