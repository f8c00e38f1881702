"""Holders of a document's fragments: their keys, their signed identity, fragments sealed to
them, and the device file that keeps their private keys wrapped.

A holder has two keys. A BIP340 (secp256k1) signing key, the kind the ledger's accounts use,
names the holder and signs for it; an X25519 key receives fragments. The holder's identity
statement is the X25519 public key signed with the signing key, so whoever seals a fragment
knows the key is the holder's. A fragment (a Shamir share, bytes) is sealed to that key with
HPKE base mode (RFC 9180), suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM: every
step a browser's WebCrypto also has. Its ``info`` binds the chain, document, part, holder
index and holder, so a fragment of one document never opens as another's.

The device file keeps both private keys sealed with AES-256-GCM under a key K that only the
confidentiality service can give (see :mod:`tsunagi.privacy.pins`): a copy of the file alone
opens nothing. It also keeps, in the clear, a device key: a BIP340 key registered with the
service that may do one thing, ask for K with a PIN, so the holder can reach the service
before the identity key is unwrapped. Whoever copies the file may therefore try PINs online,
and the service counts and stops them.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tsunagi.core import keys
from tsunagi.errors import EncodingError, FragmentError, IdentityError, KeyFileError
from tsunagi.privacy import limits

__all__ = ["FRAGMENT_SUITE_NAME", "DeviceFile", "FragmentContext", "HolderIdentity",
           "HolderKeys", "open_fragment", "seal_fragment"]

# The HPKE suite every fragment is sealed with: the browsers' pages use the same steps.
FRAGMENT_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
FRAGMENT_SUITE_NAME = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM"
# Domain separation: a signature or a key made for one purpose means nothing for another.
IDENTITY_DOMAIN = b"tsunagi/holder-identity/1"
FRAGMENT_DOMAIN = b"tsunagi/fragment/1"
WRAPPING_KEY_DOMAIN = b"tsunagi/wrapping-key/1"
X25519_BYTES = 32
IDENTITY_BYTES = keys.KEY_BYTES + X25519_BYTES + 64  # signing key, fragment key, signature
DOCUMENT_ID_BYTES = 32  # a document is named by a hash, like a txid
# HPKE's encapsulated key (32 bytes for X25519) and AES-GCM's tag come with every fragment.
SEALED_OVERHEAD_BYTES = 32 + 16
DEVICE_FORMAT = "tsunagi-holder-device"
DEVICE_VERSION = 1
NONCE_BYTES = 12


@dataclass(frozen=True)
class HolderIdentity:
    """A holder's public identity: its BIP340 signing key, its X25519 key for fragments, and
    the signing key's signature over the X25519 key. Check it with :meth:`check`."""

    signing_key: bytes
    fragment_key: bytes
    signature: bytes

    def statement(self) -> bytes:
        """The 32-byte hash the signature is over."""
        return identity_statement(self.signing_key, self.fragment_key)

    def check(self) -> HolderIdentity:
        """Returns itself when the signature holds; IdentityError otherwise."""
        if len(self.fragment_key) != X25519_BYTES \
                or not keys.verify(self.signing_key, self.statement(), self.signature):
            raise IdentityError(
                f"the identity of holder {bytes(self.signing_key).hex()[:16]}... is not "
                "signed by its own key: ask the holder for its identity again")
        return self

    @property
    def holder_id(self) -> str:
        """The holder's name in stores and messages: its signing key in hex."""
        return self.signing_key.hex()

    def to_bytes(self) -> bytes:
        """128 bytes: signing key, fragment key, signature."""
        return self.signing_key + self.fragment_key + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> HolderIdentity:
        """The identity of 128 bytes, checked; EncodingError or IdentityError if not one."""
        data = bytes(data)
        if len(data) != IDENTITY_BYTES:
            raise EncodingError(f"a holder identity is {IDENTITY_BYTES} bytes, got {len(data)}")
        signing, fragment = data[:32], data[32:64]
        return cls(signing, fragment, data[64:]).check()


def identity_statement(signing_key: bytes, fragment_key: bytes) -> bytes:
    """What a holder signs to claim an X25519 key (domain-separated SHA-256)."""
    return hashlib.sha256(IDENTITY_DOMAIN + bytes(signing_key) + bytes(fragment_key)).digest()


class HolderKeys:
    """A holder's private keys: the signing key and the fragment key. Never shown in a repr."""

    __slots__ = ("fragment", "signing")

    def __init__(self, signing: keys.PrivateKey, fragment: X25519PrivateKey) -> None:
        self.signing, self.fragment = signing, fragment

    @classmethod
    def generate(cls) -> HolderKeys:
        """Fresh keys from the operating system's random source."""
        return cls(keys.PrivateKey.generate(), X25519PrivateKey.generate())

    def identity(self) -> HolderIdentity:
        """The public identity, signed with the signing key."""
        fragment_key = _raw_public(self.fragment.public_key())
        signing_key = self.signing.public_key
        signature = self.signing.sign(identity_statement(signing_key, fragment_key))
        return HolderIdentity(signing_key, fragment_key, signature)

    def to_bytes(self) -> bytes:
        """64 secret bytes (signing, then fragment): only ever stored sealed."""
        return self.signing.to_bytes() + self.fragment.private_bytes_raw()

    @classmethod
    def from_bytes(cls, secret: bytes) -> HolderKeys:
        if len(secret) != 64:
            raise EncodingError("a holder's private keys are 64 bytes")
        return cls(keys.PrivateKey.from_bytes(secret[:32]),
                   X25519PrivateKey.from_private_bytes(secret[32:]))

    def __repr__(self) -> str:
        return f"HolderKeys(signing_key={self.signing.public_key.hex()})"


@dataclass(frozen=True)
class FragmentContext:
    """Where a fragment belongs: chain, document (a 32-byte id), part, and the holder's index
    in the document's holder list (its Shamir share index, 1 to 255)."""

    chain_id: int
    document_id: bytes
    part_id: int
    holder_index: int

    def __post_init__(self) -> None:
        for name in ("chain_id", "part_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < 2**32:
                raise EncodingError(f"{name} is a u32, got {value!r}")
        if not isinstance(self.holder_index, int) \
                or not 1 <= self.holder_index <= limits.document_holders_max:
            raise EncodingError(f"holder_index is 1 to {limits.document_holders_max}, "
                                f"got {self.holder_index!r}")
        if not isinstance(self.document_id, bytes) or len(self.document_id) != DOCUMENT_ID_BYTES:
            raise EncodingError(f"document_id is {DOCUMENT_ID_BYTES} bytes")

    def to_bytes(self) -> bytes:
        """41 bytes: chain id (u32 LE), document id, part id (u32 LE), holder index (u8)."""
        return (struct.pack("<I", self.chain_id) + self.document_id
                + struct.pack("<IB", self.part_id, self.holder_index))

    def info(self, holder_signing_key: bytes) -> bytes:
        """HPKE ``info`` for this context and holder (what the pages pass as well)."""
        return FRAGMENT_DOMAIN + self.to_bytes() + bytes(holder_signing_key)


def seal_fragment(fragment: bytes, holder: HolderIdentity, context: FragmentContext) -> bytes:
    """``fragment`` sealed to ``holder`` for ``context``: HPKE's encapsulated key, then the
    ciphertext. The holder's identity is checked first (IdentityError if it fails)."""
    fragment = bytes(fragment)
    if not 0 < len(fragment) <= limits.fragment_bytes_max:
        raise EncodingError(f"a fragment is 1 to {limits.fragment_bytes_max} bytes")
    holder.check()
    public = X25519PublicKey.from_public_bytes(holder.fragment_key)
    return FRAGMENT_SUITE.encrypt(fragment, public, info=context.info(holder.signing_key))


def open_fragment(sealed: bytes, holder: HolderKeys, context: FragmentContext) -> bytes:
    """The fragment in ``sealed``; FragmentError when it was sealed for another context or
    holder, or was changed."""
    sealed = bytes(sealed)
    if not SEALED_OVERHEAD_BYTES < len(sealed) <= limits.fragment_bytes_max \
            + SEALED_OVERHEAD_BYTES:
        raise FragmentError(f"a sealed fragment is {SEALED_OVERHEAD_BYTES + 1} to "
                            f"{limits.fragment_bytes_max + SEALED_OVERHEAD_BYTES} bytes, "
                            f"got {len(sealed)}: it is not one")
    info = context.info(holder.signing.public_key)
    try:
        return FRAGMENT_SUITE.decrypt(sealed, holder.fragment, info=info)
    except (InvalidTag, ValueError) as exc:
        raise FragmentError(
            f"the fragment does not open for document {context.document_id.hex()[:16]}... "
            f"part {context.part_id}, holder index {context.holder_index} on chain "
            f"{context.chain_id}: it is another document's or holder's, or it was changed; "
            "fetch it again from the document record") from exc


def wrapping_key(pin_key: bytes, secret: bytes, holder_signing_key: bytes) -> bytes:
    """K, the key that wraps a holder's private keys on its device: HKDF-SHA256 over the
    Argon2id output of the PIN (``pin_key``) and the service's per-holder ``secret``."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=WRAPPING_KEY_DOMAIN + bytes(holder_signing_key)).derive(pin_key + secret)


@dataclass(frozen=True)
class DeviceFile:
    """What a holder's device keeps: the identity, the service's signing key it trusts, the
    device key (clear: it may only ask the service for K), and the holder's private keys
    sealed under K. Made by :meth:`create`, written by :meth:`save`, read by :meth:`load`."""

    identity: HolderIdentity
    service_key: bytes
    device_secret: bytes
    nonce: bytes
    ciphertext: bytes

    @classmethod
    def create(cls, holder: HolderKeys, device: keys.PrivateKey, key: bytes,
               service_key: bytes) -> DeviceFile:
        """Seals ``holder``'s keys under ``key`` (K from the service's enrolment)."""
        identity = holder.identity()
        draft = cls(identity, bytes(service_key), device.to_bytes(), os.urandom(NONCE_BYTES), b"")
        sealed = AESGCM(_check_key(key)).encrypt(draft.nonce, holder.to_bytes(),
                                                 draft._associated_data())
        return cls(identity, draft.service_key, draft.device_secret, draft.nonce, sealed)

    @property
    def device(self) -> keys.PrivateKey:
        return keys.PrivateKey.from_bytes(self.device_secret)

    def unwrap(self, key: bytes) -> HolderKeys:
        """The holder's private keys, opened with K; KeyFileError when K is not this file's
        (a stale K after a PIN change, or an edited file)."""
        try:
            secret = AESGCM(_check_key(key)).decrypt(self.nonce, self.ciphertext,
                                                     self._associated_data())
        except InvalidTag as exc:
            raise KeyFileError("the device file does not open with the key the service gave: "
                               "it was edited, or it is older than the last PIN change; "
                               "restore the newest copy") from exc
        holder = HolderKeys.from_bytes(secret)
        if holder.identity().signing_key != self.identity.signing_key:
            raise KeyFileError("the device file's keys are not its identity's")
        return holder

    def _associated_data(self) -> bytes:
        return json.dumps(self._clear(), sort_keys=True, separators=(",", ":")).encode()

    def _clear(self) -> dict:
        return {"format": DEVICE_FORMAT, "version": DEVICE_VERSION,
                "identity": self.identity.to_bytes().hex(), "service_key": self.service_key.hex(),
                "device_key": self.device_secret.hex(), "cipher": "aes-256-gcm"}

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the file (JSON, mode 0600) through a temporary file and a rename."""
        path = Path(path)
        document = self._clear() | {"nonce": self.nonce.hex(), "ciphertext": self.ciphertext.hex()}
        write_secret_file(path, (json.dumps(document, indent=1) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DeviceFile:
        """Reads a device file; KeyFileError naming what is wrong when it is not one."""
        path = Path(path)
        try:
            if path.stat().st_size > limits.device_file_bytes_max:
                raise KeyFileError(f"{path} is over {limits.device_file_bytes_max} bytes: "
                                   "not a holder's device file")
            return cls.from_json(path.read_bytes(), str(path))
        except OSError as exc:
            raise KeyFileError(f"{path} cannot be read as a holder's device file ({exc}); "
                               "restore it from a copy") from exc

    @classmethod
    def from_json(cls, data: bytes | str, name: str = "the device file") -> DeviceFile:
        """A device file's content (as a browser keeps it); KeyFileError naming what is
        wrong when it is not one."""
        if len(data) > limits.device_file_bytes_max:
            raise KeyFileError(f"{name} is over {limits.device_file_bytes_max} bytes: not a "
                               "holder's device file")
        try:
            document = json.loads(data)
            if document.get("format") != DEVICE_FORMAT or document.get("version") \
                    != DEVICE_VERSION:
                raise KeyFileError(f"{name} is not a {DEVICE_FORMAT} file of version "
                                   f"{DEVICE_VERSION}")
            return cls(HolderIdentity.from_bytes(bytes.fromhex(document["identity"])),
                       bytes.fromhex(document["service_key"]),
                       bytes.fromhex(document["device_key"]), bytes.fromhex(document["nonce"]),
                       bytes.fromhex(document["ciphertext"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, KeyFileError):
                raise
            raise KeyFileError(f"{name} cannot be read as a holder's device file ({exc}); "
                               "restore it from a copy") from exc


def write_secret_file(path: Path, data: bytes) -> None:
    """Replaces ``path`` by ``data`` (mode 0600) so that a crash leaves the old or the new file
    whole (tsunagi.ledger.log.write_file_atomically)."""
    from tsunagi.ledger.log import write_file_atomically

    write_file_atomically(path, data, mode=0o600)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != 32:
        raise EncodingError("a device key K is 32 bytes")
    return key


def _raw_public(public: X25519PublicKey) -> bytes:
    return public.public_bytes_raw()
