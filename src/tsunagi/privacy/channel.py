"""The authenticated channel from a holder to the confidentiality service (runs inside TLS).

Sans-IO: this module turns bytes into bytes and keeps no sockets, so the node's HTTP layer,
the tests and a browser page can all carry the same three handshake messages and frames.

The service has a static X25519 key and a BIP340 signing key; its identity statement is the
X25519 key signed with the signing key, and a client pins the signing key. A session:

1. client hello: version (1 byte), the client's ephemeral X25519 key (32).
2. service hello: the service identity (128), the service's ephemeral X25519 key (32) and a
   fresh 32-byte challenge.
3. client auth: the client's BIP340 key (32) and its signature (64) of the transcript hash
   ``H = SHA-256("tsunagi/channel/1" || hello || service hello || client key)``.

Both sides derive two AES-256-GCM keys, one a direction, with HKDF-SHA256 over
``DH(client ephemeral, service ephemeral) || DH(client ephemeral, service static)``, salted
with ``H``: only the holder of the service's static key can read what the client sends, the
ephemeral pair gives forward secrecy, and the client's signature binds its identity to this
very session and challenge. A frame is its 64-bit sequence number (big-endian) and the
AES-GCM ciphertext; the nonce is 4 zero bytes and the sequence number, the associated data
``H``, the direction and the sequence number, so a frame replayed, reordered, moved to the
other direction or to another session fails. Any failure closes the session.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tsunagi.core import keys
from tsunagi.errors import ChannelError, EncodingError, IdentityError, ReplayError
from tsunagi.privacy import limits

__all__ = ["ClientHandshake", "ServiceHandshake", "ServiceIdentity", "ServiceKeys", "Session"]

CHANNEL_DOMAIN = b"tsunagi/channel/1"
SERVICE_IDENTITY_DOMAIN = b"tsunagi/service-identity/1"
CHANNEL_VERSION = 1
X25519_BYTES = 32
CHALLENGE_BYTES = 32
SIGNATURE_BYTES = 64
SERVICE_IDENTITY_BYTES = keys.KEY_BYTES + X25519_BYTES + SIGNATURE_BYTES
HELLO_BYTES = 1 + X25519_BYTES
SERVICE_HELLO_BYTES = SERVICE_IDENTITY_BYTES + X25519_BYTES + CHALLENGE_BYTES
AUTH_BYTES = keys.KEY_BYTES + SIGNATURE_BYTES
SEQUENCE_BYTES = 8
TAG_BYTES = 16
TO_SERVICE, TO_CLIENT = b"\x01", b"\x02"


@dataclass(frozen=True)
class ServiceIdentity:
    """The service's public identity: its BIP340 signing key, its static X25519 channel key
    and the signing key's signature over the channel key."""

    signing_key: bytes
    channel_key: bytes
    signature: bytes

    def statement(self) -> bytes:
        return hashlib.sha256(SERVICE_IDENTITY_DOMAIN + self.signing_key
                              + self.channel_key).digest()

    def to_bytes(self) -> bytes:
        return self.signing_key + self.channel_key + self.signature

    @classmethod
    def from_bytes(cls, data: bytes, trusted_key: bytes) -> ServiceIdentity:
        """The identity in ``data`` when it is signed by ``trusted_key`` (the service key the
        client pins); IdentityError otherwise."""
        identity = cls(data[:32], data[32:64], data[64:SERVICE_IDENTITY_BYTES])
        if identity.signing_key != bytes(trusted_key):
            raise IdentityError(
                f"the service answered as {identity.signing_key.hex()[:16]}..., not the "
                f"service {bytes(trusted_key).hex()[:16]}... this holder trusts: it is another "
                "service or an impostor; check the address")
        if not keys.verify(identity.signing_key, identity.statement(), identity.signature):
            raise IdentityError("the service's identity is not signed by its own key: it is "
                                "an impostor or a damaged answer; check the address")
        return identity


class ServiceKeys:
    """The service's private keys: a BIP340 signing key and a static X25519 channel key."""

    __slots__ = ("channel", "signing")

    def __init__(self, signing: keys.PrivateKey, channel: X25519PrivateKey) -> None:
        self.signing, self.channel = signing, channel

    @classmethod
    def generate(cls) -> ServiceKeys:
        return cls(keys.PrivateKey.generate(), X25519PrivateKey.generate())

    def identity(self) -> ServiceIdentity:
        draft = ServiceIdentity(self.signing.public_key,
                                self.channel.public_key().public_bytes_raw(), b"")
        return ServiceIdentity(draft.signing_key, draft.channel_key,
                               self.signing.sign(draft.statement()))

    def to_bytes(self) -> bytes:
        """64 secret bytes: the signing key, then the channel key."""
        return self.signing.to_bytes() + self.channel.private_bytes_raw()

    @classmethod
    def from_bytes(cls, secret: bytes) -> ServiceKeys:
        if len(secret) != 64:
            raise EncodingError("a service's private keys are 64 bytes")
        return cls(keys.PrivateKey.from_bytes(secret[:32]),
                   X25519PrivateKey.from_private_bytes(secret[32:]))

    def __repr__(self) -> str:
        return f"ServiceKeys(signing_key={self.signing.public_key.hex()})"


class Session:
    """An open session: seals frames one way and opens them the other, in order."""

    def __init__(self, transcript: bytes, challenge: bytes, peer_key: bytes, okm: bytes,
                 client: bool) -> None:
        self.transcript, self.challenge, self.peer_key = transcript, challenge, peer_key
        to_service, to_client = AESGCM(okm[:32]), AESGCM(okm[32:])
        self._send, self._receive = (to_service, to_client) if client else (to_client,
                                                                              to_service)
        self._send_direction = TO_SERVICE if client else TO_CLIENT
        self._receive_direction = TO_CLIENT if client else TO_SERVICE
        self._sent = self._received = 0
        self.closed = False

    def seal(self, payload: bytes) -> bytes:
        """The frame that carries ``payload`` to the other side."""
        self._check_open()
        if len(payload) > limits.channel_message_bytes_max:
            raise EncodingError(f"a channel message is at most "
                                f"{limits.channel_message_bytes_max} bytes")
        if self._sent >= limits.channel_messages_max:
            self.closed = True
            raise ChannelError("this session has sent all the messages it may: open a new one")
        sequence = struct.pack(">Q", self._sent)
        self._sent += 1
        return sequence + self._send.encrypt(
            _nonce(sequence), payload, self.transcript + self._send_direction + sequence)

    def open(self, frame: bytes) -> bytes:
        """The payload of the next frame; ReplayError for a frame seen before, ChannelError
        for one missing, changed or from another session. Either closes the session."""
        self._check_open()
        frame = bytes(frame)
        if not SEQUENCE_BYTES + TAG_BYTES <= len(frame) <= SEQUENCE_BYTES + TAG_BYTES \
                + limits.channel_message_bytes_max:
            self._fail(ChannelError(f"a channel frame of {len(frame)} bytes is not one"))
        (number,) = struct.unpack(">Q", frame[:SEQUENCE_BYTES])
        if number < self._received:
            self._fail(ReplayError(f"frame {number} was received before: it is a replay and "
                                   "was refused; open a new session"))
        if number > self._received:
            self._fail(ChannelError(f"frame {number} came where {self._received} was due: "
                                    "frames were lost or reordered; open a new session"))
        sequence = frame[:SEQUENCE_BYTES]
        try:
            payload = self._receive.decrypt(
                _nonce(sequence), frame[SEQUENCE_BYTES:],
                self.transcript + self._receive_direction + sequence)
        except InvalidTag:
            self._fail(ChannelError("a channel frame failed its authentication: it was changed "
                                    "on the way or belongs to another session; open a new "
                                    "session"))
        self._received += 1
        return payload

    def _check_open(self) -> None:
        if self.closed:
            raise ChannelError("this channel session is closed: open a new one")

    def _fail(self, error: ChannelError):
        self.closed = True
        raise error


class ClientHandshake:
    """A holder's side of the handshake, authenticated by ``client_key`` (the holder's identity
    key, or its device key for a PIN unlock) to the service whose key it pins."""

    def __init__(self, client_key: keys.PrivateKey, service_key: bytes) -> None:
        self.client_key, self.service_key = client_key, bytes(service_key)
        self._ephemeral = X25519PrivateKey.generate()
        self.hello = bytes([CHANNEL_VERSION]) + self._ephemeral.public_key().public_bytes_raw()

    def finish(self, service_hello: bytes) -> tuple[bytes, Session]:
        """The auth message to send, and the session; IdentityError when the answer is not
        from the pinned service."""
        service_hello = bytes(service_hello)
        if len(service_hello) != SERVICE_HELLO_BYTES:
            raise ChannelError(f"a service hello is {SERVICE_HELLO_BYTES} bytes, got "
                               f"{len(service_hello)}")
        identity = ServiceIdentity.from_bytes(service_hello, self.service_key)
        ephemeral = service_hello[SERVICE_IDENTITY_BYTES:SERVICE_IDENTITY_BYTES + X25519_BYTES]
        challenge = service_hello[SERVICE_IDENTITY_BYTES + X25519_BYTES:]
        client_public = self.client_key.public_key
        transcript = _transcript(self.hello, service_hello, client_public)
        shared = _exchange(self._ephemeral, ephemeral) \
            + _exchange(self._ephemeral, identity.channel_key)
        auth = client_public + self.client_key.sign(transcript)
        return auth, Session(transcript, challenge, self.service_key, _derive(shared, transcript),
                             client=True)


class ServiceHandshake:
    """The service's side of one handshake: :attr:`reply` answers the hello, :meth:`finish`
    checks the client's signature."""

    def __init__(self, service: ServiceKeys, hello: bytes, challenge: bytes) -> None:
        hello = bytes(hello)
        if len(hello) != HELLO_BYTES or hello[0] != CHANNEL_VERSION:
            raise ChannelError(f"a client hello is {HELLO_BYTES} bytes starting with version "
                               f"{CHANNEL_VERSION}: update the client")
        self.hello, self._client_ephemeral = hello, hello[1:]
        ephemeral = X25519PrivateKey.generate()
        self.reply = (service.identity().to_bytes() + ephemeral.public_key().public_bytes_raw()
                      + challenge)
        self.challenge = challenge
        self._shared = _exchange(ephemeral, self._client_ephemeral) \
            + _exchange(service.channel, self._client_ephemeral)

    def finish(self, auth: bytes) -> Session:
        """The session with the client whose key signed the transcript; IdentityError when
        the signature is not by the key the client names."""
        auth = bytes(auth)
        if len(auth) != AUTH_BYTES:
            raise ChannelError(f"a client auth is {AUTH_BYTES} bytes, got {len(auth)}")
        client_key, signature = auth[:keys.KEY_BYTES], auth[keys.KEY_BYTES:]
        transcript = _transcript(self.hello, self.reply, client_key)
        if not keys.verify(client_key, transcript, signature):
            raise IdentityError(f"the session is not signed by the key it names "
                                f"({client_key.hex()[:16]}...): sign the transcript with the "
                                "holder's own key")
        return Session(transcript, self.challenge, client_key, _derive(self._shared, transcript),
                       client=False)


def _transcript(hello: bytes, service_hello: bytes, client_key: bytes) -> bytes:
    return hashlib.sha256(CHANNEL_DOMAIN + hello + service_hello + client_key).digest()


def _derive(shared: bytes, transcript: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=transcript,
                info=CHANNEL_DOMAIN + b" keys").derive(shared)


def _exchange(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # a low-order point gives an all-zero secret
        raise ChannelError("the peer's X25519 key is not usable: open a new session") from exc


def _nonce(sequence: bytes) -> bytes:
    return b"\x00" * 4 + sequence
