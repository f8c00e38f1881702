"""The confidentiality service's key handling, and the holder's client of it.

:class:`ConfidentialityService` keeps the PIN store and the channel's sessions, is told each
document's holders and each open request, and takes fragments that holders release through an
authenticated session. Its three transport methods (:meth:`~ConfidentialityService.open_session`,
``authenticate``, ``exchange``) take and give bytes, so the node's HTTP layer carries them as
they are; :class:`HolderClient` speaks to any object with those three methods, the service
itself included.

Inside a session, requests and answers are JSON objects. A refusal is an answer, not a broken
session: ``{"ok": false, "error": "PinError", "message": ..., "tries_left": 2}``, which the
client raises as the same exception. A release is refused unless the session is the holder's
identity key, the request is open and for the same chain, document and part, the holder is the
document's holder at that index, it has not released for this request before, and its BIP340
signature covers this session's transcript (and so the service's challenge), the request id,
the context and the fragment's hash: a release from an earlier request or session is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tsunagi import errors
from tsunagi.core import json_text, keys
from tsunagi.errors import (
    ChannelError,
    ConfigError,
    EncodingError,
    FragmentError,
    IdentityError,
    KeyFileError,
    NotFoundError,
    NotHolderError,
    ReplayError,
)
from tsunagi.privacy import limits
from tsunagi.privacy.channel import ClientHandshake, ServiceHandshake, ServiceKeys, Session
from tsunagi.privacy.holders import (
    DeviceFile,
    FragmentContext,
    HolderIdentity,
    HolderKeys,
    write_secret_file,
)
from tsunagi.privacy.pins import Argon2Params, PinStore

__all__ = ["ConfidentialityService", "HolderClient", "Refusal", "change_device_pin",
           "enroll_device", "release_statement", "unlock_device"]

RELEASE_DOMAIN = b"tsunagi/fragment-release/1"
REQUEST_ID_BYTES = 32  # a request is named by its record's txid on chain
SESSION_ID_BYTES = 16
KEYS_FILE = "service.key"
# Refusals a session answers with, by name; the client raises the same class. Anything else
# raised while handling a message is a bug and propagates.
ANSWERED = {cls.__name__: cls for cls in (
    errors.PinError, errors.HolderLockedError, errors.NotHolderError, errors.FragmentError,
    errors.IdentityError, errors.ReplayError, errors.NotFoundError, errors.EncodingError,
    errors.ConfigError, errors.UnlockError)}


def release_statement(transcript: bytes, request_id: bytes, context: FragmentContext,
                      fragment: bytes) -> bytes:
    """The 32-byte hash a holder signs to release ``fragment`` for ``request_id`` in the
    session whose transcript hash is ``transcript``."""
    return hashlib.sha256(RELEASE_DOMAIN + transcript + request_id + context.to_bytes()
                          + hashlib.sha256(fragment).digest()).digest()


class Transport(Protocol):
    def open_session(self, hello: bytes) -> tuple[bytes, bytes]: ...
    def authenticate(self, session_id: bytes, auth: bytes) -> None: ...
    def exchange(self, session_id: bytes, frame: bytes) -> bytes: ...


@dataclass(frozen=True)
class Refusal:
    """A refusal the service answered: the session's key, the request named (or None), the
    message's type, and the error's class name and message."""

    peer_key: bytes
    request_id: bytes | None
    kind: str
    error: str
    message: str


@dataclass
class _Document:
    holders: list[HolderIdentity]
    threshold: int


@dataclass
class _Request:
    chain_id: int
    document_id: bytes
    part_id: int
    fragments: dict[int, bytes] = field(default_factory=dict)
    releases: dict[int, bytes] = field(default_factory=dict)  # index -> holder's signature


@dataclass
class _SessionState:
    session: Session
    role: str  # "identity", "device" or "new" (a key not enrolled yet: may only enrol)
    # One message at a time a session: its sequence numbers must not race.
    turn: threading.Lock = field(default_factory=threading.Lock)


class ConfidentialityService:
    """The service's key handling, with its store in ``directory``: the PIN store in
    ``pins/`` and the service's own keys in ``service.key`` (made on first open, mode 0600).
    ``admins`` are the BIP340 keys that may unlock a locked holder."""

    def __init__(self, directory: str | os.PathLike, *, admins: Sequence[bytes] = (),
                 argon2: Argon2Params = Argon2Params()) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keys = _load_or_make_keys(self.directory / KEYS_FILE)
        self.identity = self.keys.identity()
        self.pins = PinStore(self.directory / "pins", self.identity.signing_key, admins=admins,
                             argon2=argon2)
        self._lock = threading.Lock()
        self._pending: OrderedDict[bytes, ServiceHandshake] = OrderedDict()
        self._sessions: OrderedDict[bytes, _SessionState] = OrderedDict()
        self._documents: dict[tuple[int, bytes], _Document] = {}
        self._requests: dict[bytes, _Request] = {}
        self._closed_requests: OrderedDict[bytes, None] = OrderedDict()
        self._invited: OrderedDict[bytes, None] = OrderedDict()
        # Refusals answered to holders, oldest first, for the vault to put on its chain
        # (take_refusals); bounded, so a flood of bad messages cannot fill memory.
        self._refusals: deque[Refusal] = deque(maxlen=limits.refusals_kept_max)

    def close(self) -> None:
        self.pins.close()

    # --- the transport: bytes in, bytes out -------------------------------------------------

    def open_session(self, hello: bytes) -> tuple[bytes, bytes]:
        """Answers a client hello: (session id, service hello)."""
        handshake = ServiceHandshake(self.keys, hello, os.urandom(32))
        session_id = os.urandom(SESSION_ID_BYTES)
        with self._lock:
            self._pending[session_id] = handshake
            _bound(self._pending, limits.channel_sessions_max)
        return session_id, handshake.reply

    def authenticate(self, session_id: bytes, auth: bytes) -> None:
        """Checks the client's signature; the session is then open. IdentityError when the
        signature is not by the key named."""
        with self._lock:
            handshake = self._pending.pop(bytes(session_id), None)
        if handshake is None:
            raise ChannelError("no handshake waits under this session id: start a new one")
        session = handshake.finish(auth)
        try:
            _, role = self.pins.holder_of(session.peer_key)
        except NotFoundError:
            role = "new"
        with self._lock:
            self._sessions[bytes(session_id)] = _SessionState(session, role)
            _bound(self._sessions, limits.channel_sessions_max)

    def exchange(self, session_id: bytes, frame: bytes) -> bytes:
        """Opens a request frame, handles it and answers with a frame. A frame that fails its
        check raises ChannelError (or ReplayError) and closes the session."""
        with self._lock:
            state = self._sessions.get(bytes(session_id))
        if state is None:
            raise ChannelError("no session is open under this id: open a new one")
        with state.turn:
            try:
                message = _parse(state.session.open(frame))
            except ChannelError:
                self.close_session(session_id)
                raise
            try:
                answer = self._handle(state, message)
            except tuple(ANSWERED.values()) as exc:
                answer = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
                self._note_refusal(state.session.peer_key, message, exc)
                if isinstance(exc, errors.PinError):
                    answer["tries_left"] = exc.tries_left
            return state.session.seal(json.dumps(answer).encode())

    def _note_refusal(self, peer_key: bytes, message: dict, exc: Exception) -> None:
        request = message.get("request_id")
        try:
            request_id = _request_id(bytes.fromhex(request)) if isinstance(request, str) else None
        except (ValueError, EncodingError):
            request_id = None
        with self._lock:
            self._refusals.append(Refusal(bytes(peer_key), request_id, str(message.get("type")),
                                          type(exc).__name__, str(exc)))

    def take_refusals(self) -> list[Refusal]:
        """The refusals answered since the last call, oldest first (and forgets them)."""
        with self._lock:
            taken = list(self._refusals)
            self._refusals.clear()
        return taken

    def close_session(self, session_id: bytes) -> None:
        with self._lock:
            self._sessions.pop(bytes(session_id), None)

    # --- what the vault tells the service ---------------------------------------------------

    def invite(self, signing_key: bytes) -> None:
        """Lets the holder with this BIP340 key enrol once. Without an invitation anyone could
        enrol fresh keys, filling the store and spending the service's Argon2id time."""
        if not keys.is_public_key(signing_key):
            raise EncodingError("an invitation names a 32-byte BIP340 public key")
        with self._lock:
            self._invited[bytes(signing_key)] = None
            _bound(self._invited, limits.invitations_max)

    def register_document(self, chain_id: int, document_id: bytes,
                          holders: Sequence[HolderIdentity], threshold: int) -> None:
        """The document's holders in index order (index 1 first) and its threshold k, as the
        document record on chain names them."""
        if not 1 <= len(holders) <= limits.document_holders_max:
            raise ConfigError(f"a document has 1 to {limits.document_holders_max} holders")
        if not isinstance(threshold, int) or not 1 <= threshold <= len(holders):
            raise ConfigError(f"a threshold is 1 to the {len(holders)} holders, got "
                              f"{threshold!r}")
        for holder in holders:
            holder.check()
        with self._lock:
            self._documents[(chain_id, bytes(document_id))] = _Document(list(holders), threshold)

    def open_request(self, request_id: bytes, chain_id: int, document_id: bytes,
                     part_id: int) -> None:
        """A request to open a part, recorded on chain: holders may now release for it."""
        request_id = _request_id(request_id)
        with self._lock:
            if (chain_id, bytes(document_id)) not in self._documents:
                raise NotFoundError(f"document {bytes(document_id).hex()[:16]}... on chain "
                                    f"{chain_id} is not registered: register it first")
            if request_id in self._requests or request_id in self._closed_requests:
                raise ConfigError(f"request {request_id.hex()[:16]}... was opened before")
            if len(self._requests) >= limits.requests_open_max:
                raise ConfigError(f"{limits.requests_open_max} requests are open: close some")
            self._requests[request_id] = _Request(chain_id, bytes(document_id), part_id)

    def fragments(self, request_id: bytes) -> dict[int, bytes]:
        """The fragments released for an open request so far, by holder index."""
        return dict(self._open_request(_request_id(request_id)).fragments)

    def releases(self, request_id: bytes) -> dict[int, bytes]:
        """Each releasing holder's signature, by index: the approval the chain records."""
        return dict(self._open_request(_request_id(request_id)).releases)

    def withdraw(self, request_id: bytes, holder_index: int) -> None:
        """Forgets the fragment holder ``holder_index`` released for an open request (its
        approval was revoked, or its fragment was refused); it may release again."""
        with self._lock:
            request = self._requests.get(_request_id(request_id))
            if request is not None:
                request.fragments.pop(holder_index, None)
                request.releases.pop(holder_index, None)

    def close_request(self, request_id: bytes) -> None:
        """Forgets a request's fragments (granted, denied or expired); a later release for it
        is refused as a replay."""
        request_id = _request_id(request_id)
        with self._lock:
            self._requests.pop(request_id, None)
            self._closed_requests[request_id] = None
            _bound(self._closed_requests, limits.requests_open_max)

    def admin_unlock(self, holder_key: bytes, admin_key: bytes, signature: bytes) -> None:
        """Unlocks a locked holder with an administrator's signature (PinStore.admin_unlock)."""
        self.pins.admin_unlock(holder_key, admin_key, signature)

    def unlock_by_holders(self, holder_key: bytes, chain_id: int, document_id: bytes,
                          signatures: Mapping[bytes, bytes]) -> None:
        """Unlocks a locked holder of a registered document with the signatures of the
        document's threshold of its other holders (see PinStore.holders_unlock)."""
        document = self._documents.get((chain_id, bytes(document_id)))
        if document is None:
            raise NotFoundError("the document is not registered: register it first")
        keys_of = [holder.signing_key for holder in document.holders]
        if bytes(holder_key) not in keys_of:
            raise NotHolderError(f"holder {bytes(holder_key).hex()[:16]}... is not one of the "
                                 "document's: its holders can unlock only their own")
        self.pins.holders_unlock(holder_key, keys_of, document.threshold, signatures)

    # --- handling one message ---------------------------------------------------------------

    def _handle(self, state: _SessionState, message: dict) -> dict:
        kind, peer = message.get("type"), state.session.peer_key
        if kind == "enroll":
            if state.role != "new":
                raise ConfigError("this key is enrolled already: change the PIN instead")
            identity = HolderIdentity.from_bytes(_hex(message, "identity"))
            if identity.signing_key != peer:
                raise IdentityError("a holder enrols in a session signed by its own key")
            with self._lock:
                invited = self._invited.pop(peer, False) is None
            if not invited:
                raise NotHolderError(f"key {peer.hex()[:16]}... is not invited to enrol: ask "
                                     "the vault's operator for an invitation")
            try:
                key = self.pins.enroll(identity, _hex(message, "device_key"),
                                       _text(message, "pin"))
            except (ConfigError, EncodingError, IdentityError):
                self.invite(peer)  # a refused enrolment leaves the invitation for a retry
                raise
            state.role = "identity"
            return {"ok": True, "key": key.hex()}
        if state.role == "new":
            raise NotFoundError(f"key {peer.hex()[:16]}... is not enrolled here: enrol first")
        holder, _ = self.pins.holder_of(peer)
        if kind == "unlock":
            key = self.pins.unlock(holder.signing_key, _text(message, "pin"))
            return {"ok": True, "key": key.hex()}
        if kind == "change_pin":
            old, new = self.pins.change_pin(holder.signing_key, _text(message, "pin"),
                                            _text(message, "new_pin"))
            return {"ok": True, "key": old.hex(), "new_key": new.hex()}
        if kind == "release":
            if state.role != "identity":
                raise NotHolderError("a device-key session may only unlock: release from a "
                                     "session signed by the holder's identity key")
            return self._release(state.session, holder, message)
        raise EncodingError(f"unknown message type {kind!r}: enroll, unlock, change_pin or "
                            "release")

    def _release(self, session: Session, holder: HolderIdentity, message: dict) -> dict:
        request_id = _request_id(_hex(message, "request_id"))
        context = FragmentContext(_int(message, "chain_id"), _hex(message, "document_id"),
                                  _int(message, "part_id"), _int(message, "holder_index"))
        fragment, signature = _hex(message, "fragment"), _hex(message, "signature")
        if not 0 < len(fragment) <= limits.fragment_bytes_max:
            raise EncodingError(f"a fragment is 1 to {limits.fragment_bytes_max} bytes")
        with self._lock:
            request = self._open_request(request_id)
            if (context.chain_id, context.document_id, context.part_id) != \
                    (request.chain_id, request.document_id, request.part_id):
                raise FragmentError(
                    f"the fragment is for document {context.document_id.hex()[:16]}... part "
                    f"{context.part_id} on chain {context.chain_id}; request "
                    f"{request_id.hex()[:16]}... is for document "
                    f"{request.document_id.hex()[:16]}... part {request.part_id}: release the "
                    "fragment of the requested part")
            document = self._documents[(request.chain_id, request.document_id)]
            _check_holder(document, holder, context.holder_index)
            if context.holder_index in request.releases:
                raise ReplayError(f"holder {context.holder_index} released for request "
                                  f"{request_id.hex()[:16]}... already: sent again, refused")
            statement = release_statement(session.transcript, request_id, context, fragment)
            if not keys.verify(holder.signing_key, statement, signature):
                raise IdentityError("the release is not signed by the holder for this session "
                                    "and request: a release signed in another session, for "
                                    "another request or by another key is refused")
            request.fragments[context.holder_index] = fragment
            request.releases[context.holder_index] = signature
            return {"ok": True, "released": len(request.fragments),
                    "threshold": document.threshold}

    def _open_request(self, request_id: bytes) -> _Request:
        request = self._requests.get(request_id)
        if request is not None:
            return request
        if request_id in self._closed_requests:
            raise ReplayError(f"request {request_id.hex()[:16]}... is closed: a fragment for it "
                              "is from an earlier request and was refused")
        raise NotFoundError(f"request {request_id.hex()[:16]}... is not open at this service: "
                            "release for an open request")


class HolderClient:
    """A holder's session with the service over ``transport`` (the service, or the node's
    HTTP client of it), authenticated by ``client_key`` and pinning ``service_key``."""

    def __init__(self, transport: Transport, service_key: bytes,
                 client_key: keys.PrivateKey) -> None:
        self.transport = transport
        handshake = ClientHandshake(client_key, service_key)
        self.session_id, reply = transport.open_session(handshake.hello)
        auth, self.session = handshake.finish(reply)
        transport.authenticate(self.session_id, auth)

    def request(self, message: dict) -> dict:
        """Sends one request; returns the answer, or raises the refusal it carries."""
        frame = self.transport.exchange(self.session_id, self.session.seal(
            json.dumps(message).encode()))
        answer = _parse(self.session.open(frame))
        if answer.get("ok") is True:
            return answer
        error = ANSWERED.get(answer.get("error"))
        if error is None:
            raise ChannelError(f"the service answered outside the protocol: {answer!r}")
        if error is errors.PinError:
            raise errors.PinError(str(answer.get("message")), int(answer.get("tries_left", 0)))
        raise error(str(answer.get("message")))

    def enroll(self, identity: HolderIdentity, device_key: bytes, pin: str) -> bytes:
        return bytes.fromhex(self.request({"type": "enroll", "pin": pin, "device_key":
                                           bytes(device_key).hex(),
                                           "identity": identity.to_bytes().hex()})["key"])

    def unlock(self, pin: str) -> bytes:
        """K for this holder, when ``pin`` is right."""
        return bytes.fromhex(self.request({"type": "unlock", "pin": pin})["key"])

    def release(self, request_id: bytes, context: FragmentContext, fragment: bytes,
                holder: HolderKeys) -> dict:
        """Releases an opened fragment for a request, signed for this session."""
        signature = holder.signing.sign(release_statement(self.session.transcript, request_id,
                                                          context, fragment))
        return self.request(self.release_message(request_id, context, fragment, signature))

    @staticmethod
    def release_message(request_id: bytes, context: FragmentContext, fragment: bytes,
                        signature: bytes) -> dict:
        return {"type": "release", "request_id": request_id.hex(),
                "chain_id": context.chain_id, "document_id": context.document_id.hex(),
                "part_id": context.part_id, "holder_index": context.holder_index,
                "fragment": fragment.hex(), "signature": signature.hex()}


def enroll_device(transport: Transport, service_key: bytes, holder: HolderKeys,
                  path: str | os.PathLike, pin: str) -> DeviceFile:
    """Enrols ``holder`` (invited by its signing key) and a fresh device key with the service
    under ``pin``, and writes the device file at ``path``; returns the file."""
    device = keys.PrivateKey.generate()
    client = HolderClient(transport, service_key, holder.signing)
    key = client.enroll(holder.identity(), device.public_key, pin)
    device_file = DeviceFile.create(holder, device, key, service_key)
    device_file.save(path)
    return device_file


def unlock_device(transport: Transport, path: str | os.PathLike, pin: str) -> HolderKeys:
    """Opens the device file at ``path`` with the service's K for ``pin``: the holder's keys.
    Raises PinError (tries left) or HolderLockedError when the service refuses."""
    device_file = DeviceFile.load(path)
    client = HolderClient(transport, device_file.service_key, device_file.device)
    return device_file.unwrap(client.unlock(pin))


def change_device_pin(transport: Transport, path: str | os.PathLike, pin: str,
                      new_pin: str) -> DeviceFile:
    """Changes the holder's PIN at the service and seals the device file's keys under the new
    K (the file is replaced atomically); PinError when ``pin`` is wrong."""
    device_file = DeviceFile.load(path)
    client = HolderClient(transport, device_file.service_key, device_file.device)
    answer = client.request({"type": "change_pin", "pin": pin, "new_pin": new_pin})
    holder = device_file.unwrap(bytes.fromhex(answer["key"]))
    changed = DeviceFile.create(holder, device_file.device, bytes.fromhex(answer["new_key"]),
                                device_file.service_key)
    changed.save(path)
    return changed


def _check_holder(document: _Document, holder: HolderIdentity, index: int) -> None:
    keys_of = [each.signing_key for each in document.holders]
    if holder.signing_key not in keys_of:
        raise NotHolderError(f"holder {holder.holder_id[:16]}... is not one of the document's "
                             f"{len(keys_of)} holders: only they may release its fragments")
    if index > len(keys_of) or keys_of[index - 1] != holder.signing_key:
        raise FragmentError(f"holder {holder.holder_id[:16]}... is the document's holder "
                            f"{keys_of.index(holder.signing_key) + 1}, not {index}: release "
                            "your own fragment")


def _load_or_make_keys(path: Path) -> ServiceKeys:
    if path.exists():
        try:
            return ServiceKeys.from_bytes(bytes.fromhex(path.read_text().strip()))
        except (ValueError, EncodingError) as exc:
            raise KeyFileError(f"the service key file {path} is damaged: restore it from a "
                               "backup (a new key would orphan every device file)") from exc
    service_keys = ServiceKeys.generate()
    write_secret_file(path, (service_keys.to_bytes().hex() + "\n").encode())
    return service_keys


def _bound(table: OrderedDict, size: int) -> None:
    while len(table) > size:
        table.popitem(last=False)  # the oldest goes first


def _parse(payload: bytes) -> dict:
    try:
        message = json_text.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: recursion
        raise ChannelError("a channel message is not JSON: update the client") from exc
    if not isinstance(message, dict):
        raise ChannelError("a channel message is a JSON object: update the client")
    return message


def _hex(message: dict, name: str) -> bytes:
    try:
        return bytes.fromhex(message[name])
    except (KeyError, TypeError, ValueError):
        raise EncodingError(f"the message needs {name} as hex") from None


def _text(message: dict, name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise EncodingError(f"the message needs {name} as text")
    return value


def _int(message: dict, name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EncodingError(f"the message needs {name} as an integer")
    return value


def _request_id(request_id: bytes) -> bytes:
    request_id = bytes(request_id)
    if len(request_id) != REQUEST_ID_BYTES:
        raise EncodingError(f"a request id is {REQUEST_ID_BYTES} bytes (a record's txid)")
    return request_id

