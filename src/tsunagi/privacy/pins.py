"""PINs that unlock a holder's device, checked and rate-limited by the confidentiality service.

A PIN is short, so nothing one party stores may let it be guessed offline. The service keeps,
for each holder, a salt, a 32-byte random secret ``s`` and a verifier; the device keeps the
holder's private keys sealed under ``K = HKDF-SHA256(a || s)``, where ``a = Argon2id(PIN,
salt)`` is computed here, on the service (browsers have no Argon2). The verifier is
``HMAC-SHA256(s, "tsunagi/pin-verifier/1" || a)``, compared in constant time.

An unlock counts the attempt durably *before* the PIN is checked (the holder's file is
replaced and fsynced), so neither a crash, a restart nor an attacker who cuts the connection
once the answer is known can keep a wrong guess from counting. A right PIN resets the count
and gives K for that one unlock; ``pin_attempts_max`` wrong PINs in a row lock the holder
until an administrator, or ``k`` of the holder's fellow holders of a document, sign an unlock
for that lockout (its epoch, so an old unlock cannot be replayed against a later lockout).

The store is a directory: one small JSON file per holder, written through a temporary file, an
fsync, a rename and an fsync of the directory, and a lock file that keeps a second process out.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import struct
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from tsunagi.core import keys
from tsunagi.errors import (
    ConfigError,
    CorruptLogError,
    EncodingError,
    HolderLockedError,
    IdentityError,
    LockedError,
    NotFoundError,
    NotHolderError,
    PinError,
    UnlockError,
)
from tsunagi.privacy import limits
from tsunagi.privacy.holders import HolderIdentity, wrapping_key, write_secret_file

__all__ = ["Argon2Params", "PinStatus", "PinStore", "unlock_statement"]

VERIFIER_DOMAIN = b"tsunagi/pin-verifier/1"
UNLOCK_DOMAIN = b"tsunagi/pin-unlock/1"
SALT_BYTES = 16
SECRET_BYTES = 32
LOCK_FILE = "pins.lock"
HOLDERS_DIRECTORY = "holders"
RECORD_VERSION = 1


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id costs. The default is OWASP's first recommendation for Argon2id (Password
    Storage Cheat Sheet): 19 MiB of memory, 2 passes, 1 lane, 83-98 ms a PIN on the 2 shared
    cores here (bench/bench_pins.py). Every guess from a copy of the service store costs that
    much; tests lower it. A holder's record
    keeps the costs it was enrolled with, so a new default leaves enrolled PINs working."""

    memory_kib: int = 19_456
    iterations: int = 2
    lanes: int = 1

    def check(self) -> Argon2Params:
        """Returns itself, or raises ConfigError naming the cost out of range."""
        bounds = {"memory_kib": (limits.argon2_memory_kib_min, limits.argon2_memory_kib_max),
                  "iterations": (1, limits.argon2_iterations_max),
                  "lanes": (1, limits.argon2_lanes_max)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"Argon2id {name} is {low} to {high}, got {value!r}")
        if self.memory_kib < 8 * self.lanes:
            raise ConfigError("Argon2id needs at least 8 KiB of memory a lane")
        return self

    def derive(self, pin: bytes, salt: bytes) -> bytes:
        """``a``: 32 bytes of Argon2id over the PIN's bytes."""
        return Argon2id(salt=salt, length=32, iterations=self.iterations, lanes=self.lanes,
                        memory_cost=self.memory_kib).derive(pin)


@dataclass(frozen=True)
class PinStatus:
    """Where a holder stands: wrong PINs in a row, tries left, locked, and the lockout count
    (``lock_epoch``) an unlock must sign."""

    failures: int
    tries_left: int
    locked: bool
    lock_epoch: int


@dataclass
class _Record:
    identity: HolderIdentity
    device_key: bytes
    salt: bytes
    secret: bytes
    verifier: bytes
    argon2: Argon2Params
    failures: int = 0
    locked: bool = False
    lock_epoch: int = 0
    unlocked_by: str = ""  # who signed the last unlock: "admin <key>" or "holders <keys>"

    def to_json(self) -> bytes:
        data = {"version": RECORD_VERSION, "identity": self.identity.to_bytes().hex(),
                "device_key": self.device_key.hex(), "salt": self.salt.hex(),
                "secret": self.secret.hex(), "verifier": self.verifier.hex(),
                "argon2": asdict(self.argon2), "failures": self.failures,
                "locked": self.locked, "lock_epoch": self.lock_epoch,
                "unlocked_by": self.unlocked_by}
        return (json.dumps(data, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, text: bytes) -> _Record:
        data = json.loads(text)
        if data["version"] != RECORD_VERSION:
            raise ValueError(f"version {data['version']}, this code reads {RECORD_VERSION}")
        return cls(HolderIdentity.from_bytes(bytes.fromhex(data["identity"])),
                   bytes.fromhex(data["device_key"]), bytes.fromhex(data["salt"]),
                   bytes.fromhex(data["secret"]), bytes.fromhex(data["verifier"]),
                   Argon2Params(**data["argon2"]).check(), int(data["failures"]),
                   bool(data["locked"]), int(data["lock_epoch"]), str(data["unlocked_by"]))


def unlock_statement(service_key: bytes, holder_key: bytes, lock_epoch: int) -> bytes:
    """The 32-byte hash an administrator or a fellow holder signs (BIP340) to unlock
    ``holder_key`` from its lockout number ``lock_epoch`` at the service ``service_key``."""
    return hashlib.sha256(UNLOCK_DOMAIN + bytes(service_key) + bytes(holder_key)
                          + struct.pack("<Q", lock_epoch)).digest()


def pin_bytes(pin: str) -> bytes:
    """A PIN's bytes: NFC-normalised UTF-8, so the same typed PIN matches on every system."""
    if not isinstance(pin, str):
        raise EncodingError(f"a PIN is a str, not {type(pin).__name__}")
    pin = unicodedata.normalize("NFC", pin)
    if not limits.pin_chars_min <= len(pin) <= limits.pin_chars_max:
        raise EncodingError(f"a PIN is {limits.pin_chars_min} to {limits.pin_chars_max} "
                            f"characters, got {len(pin)}: type it again")
    return pin.encode("utf-8")


class PinStore:
    """The confidentiality service's PIN records, in ``directory``, one writer process at a
    time (LockedError otherwise). ``service_key`` is the service's BIP340 public key, bound
    into every unlock statement; ``admins`` the BIP340 keys that may unlock a locked holder;
    ``argon2`` the costs new enrolments get."""

    def __init__(self, directory: str | os.PathLike, service_key: bytes, *,
                 admins: Iterable[bytes] = (), argon2: Argon2Params = Argon2Params()) -> None:
        self.directory = Path(directory)
        self.service_key, self.admins = bytes(service_key), {bytes(key) for key in admins}
        self.argon2 = argon2.check()
        (self.directory / HOLDERS_DIRECTORY).mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_lock(self.directory / LOCK_FILE)
        self._records: dict[bytes, _Record] = {}
        self._by_device: dict[bytes, bytes] = {}
        self._guard = threading.Lock()
        self._holder_locks: dict[bytes, threading.Lock] = {}
        for path in sorted((self.directory / HOLDERS_DIRECTORY).glob("*.json")):
            record = _read_record(path)
            self._remember(record)

    def close(self) -> None:
        """Releases the store's lock file; the store may then be opened again."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the file releases the flock
            self._lock_fd = -1

    def __enter__(self) -> PinStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- enrolment and lookup ---------------------------------------------------------------

    def enroll(self, identity: HolderIdentity, device_key: bytes, pin: str) -> bytes:
        """Enrols a holder with its device key and PIN; returns K, which the device seals the
        holder's private keys under. Refuses a holder enrolled already (ConfigError): a PIN
        changes with :meth:`change_pin`, which needs the old one."""
        identity.check()
        if not keys.is_public_key(device_key):
            raise EncodingError("a device key is a 32-byte BIP340 public key")
        record, key = self._new_secrets(identity, bytes(device_key), pin)  # Argon2id unlocked
        with self._guard:
            if identity.signing_key in self._records or bytes(device_key) in self._by_device:
                raise ConfigError(f"holder {identity.holder_id[:16]}... or its device key is "
                                  "enrolled already: change its PIN with change_pin")
            if len(self._records) >= limits.holders_enrolled_max:
                raise ConfigError(f"this service has enrolled {limits.holders_enrolled_max} "
                                  "holders, its most: run another service for more")
            self._write(record)
            self._remember(record)
        return key

    def holder_of(self, public_key: bytes) -> tuple[HolderIdentity, str]:
        """The holder a signing or device key belongs to, and which it is ("identity" or
        "device"); NotFoundError if neither."""
        public_key = bytes(public_key)
        if public_key in self._records:
            return self._records[public_key].identity, "identity"
        if public_key in self._by_device:
            return self._records[self._by_device[public_key]].identity, "device"
        raise NotFoundError(f"no holder with key {public_key.hex()[:16]}... is enrolled at "
                            "this service: enrol the holder first")

    def status(self, holder_key: bytes) -> PinStatus:
        record = self._record(holder_key)
        return PinStatus(record.failures, max(0, limits.pin_attempts_max - record.failures),
                         record.locked, record.lock_epoch)

    # --- unlocking with a PIN ---------------------------------------------------------------

    def unlock(self, holder_key: bytes, pin: str) -> bytes:
        """K for the holder when ``pin`` is right. A wrong PIN is counted (on disk) before it
        is checked and raises PinError with the tries left; the last one locks the holder and
        raises HolderLockedError, as does any PIN while locked."""
        secret_pin = pin_bytes(pin)
        with self._holder_lock(holder_key):
            record = self._record(holder_key)
            if record.locked:
                raise HolderLockedError(self._locked_message(record))
            self._save(replace(record, failures=record.failures + 1))  # counted first
            pin_key = record.argon2.derive(secret_pin, record.salt)
            if hmac.compare_digest(_verifier(record.secret, pin_key), record.verifier):
                self._save(replace(record, failures=0))
                return wrapping_key(pin_key, record.secret, record.identity.signing_key)
            failures = record.failures + 1
            if failures >= limits.pin_attempts_max:
                locked = replace(record, failures=failures, locked=True,
                                 lock_epoch=record.lock_epoch + 1)
                self._save(locked)
                raise HolderLockedError(self._locked_message(locked))
            tries = limits.pin_attempts_max - failures
            raise PinError(f"wrong PIN for holder {record.identity.holder_id[:16]}...: {tries} "
                           f"{'try' if tries == 1 else 'tries'} left before the holder is "
                           "locked", tries)

    def change_pin(self, holder_key: bytes, pin: str, new_pin: str) -> tuple[bytes, bytes]:
        """Checks ``pin`` as :meth:`unlock` does, then gives the holder a new salt, secret and
        PIN; returns (old K, new K) so the device can open its keys and seal them again."""
        pin_bytes(new_pin)  # refuse a malformed new PIN before the old one is spent
        old_key = self.unlock(holder_key, pin)
        with self._holder_lock(holder_key):
            record = self._record(holder_key)
            fresh, new_key = self._new_secrets(record.identity, record.device_key, new_pin)
            self._save(replace(fresh, lock_epoch=record.lock_epoch))
        return old_key, new_key

    # --- unlocking a locked holder ----------------------------------------------------------

    def admin_unlock(self, holder_key: bytes, admin_key: bytes, signature: bytes) -> None:
        """Unlocks a locked holder with an administrator's BIP340 signature of
        :func:`unlock_statement` for its current lockout; UnlockError otherwise."""
        admin_key = bytes(admin_key)
        with self._holder_lock(holder_key):
            record = self._locked_record(holder_key)
            if admin_key not in self.admins:
                raise UnlockError(f"key {admin_key.hex()[:16]}... is not an administrator of "
                                  "this service: ask one of its administrators to sign")
            statement = unlock_statement(self.service_key, record.identity.signing_key,
                                         record.lock_epoch)
            if not keys.verify(admin_key, statement, signature):
                raise UnlockError(self._bad_unlock_signature(admin_key, record))
            self._save(replace(record, failures=0, locked=False,
                               unlocked_by=f"admin {admin_key.hex()}"))

    def holders_unlock(self, holder_key: bytes, fellows: Sequence[bytes], threshold: int,
                       signatures: Mapping[bytes, bytes]) -> None:
        """Unlocks a locked holder with the BIP340 signatures of at least ``threshold`` of its
        fellow holders (the signing keys in ``fellows``, the other holders of a document the
        vault names) over :func:`unlock_statement`; UnlockError otherwise."""
        holder_key = bytes(holder_key)
        fellows = {bytes(key) for key in fellows} - {holder_key}
        if not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"an unlock by holders needs a threshold of 1 or more, "
                              f"got {threshold!r}")
        with self._holder_lock(holder_key):
            record = self._locked_record(holder_key)
            statement = unlock_statement(self.service_key, holder_key, record.lock_epoch)
            signed = []
            for signer, signature in signatures.items():
                signer = bytes(signer)
                if signer not in fellows:
                    raise NotHolderError(f"key {signer.hex()[:16]}... is not a fellow holder "
                                         "of the locked holder's document: leave it out")
                if not keys.verify(signer, statement, signature):
                    raise UnlockError(self._bad_unlock_signature(signer, record))
                signed.append(signer.hex())
            if len(signed) < threshold:
                raise UnlockError(f"{len(signed)} fellow holders signed the unlock of holder "
                                  f"{holder_key.hex()[:16]}...; {threshold} must")
            self._save(replace(record, failures=0, locked=False,
                               unlocked_by="holders " + ",".join(sorted(signed))))

    # --- internals --------------------------------------------------------------------------

    def _new_secrets(self, identity: HolderIdentity, device_key: bytes,
                     pin: str) -> tuple[_Record, bytes]:
        salt, secret = os.urandom(SALT_BYTES), os.urandom(SECRET_BYTES)
        pin_key = self.argon2.derive(pin_bytes(pin), salt)
        record = _Record(identity, device_key, salt, secret, _verifier(secret, pin_key),
                         self.argon2)
        return record, wrapping_key(pin_key, secret, identity.signing_key)

    def _record(self, holder_key: bytes) -> _Record:
        record = self._records.get(bytes(holder_key))
        if record is None:
            raise NotFoundError(f"holder {bytes(holder_key).hex()[:16]}... is not enrolled at "
                                "this service: enrol it first")
        return record

    def _locked_record(self, holder_key: bytes) -> _Record:
        record = self._record(holder_key)
        if not record.locked:
            raise UnlockError(f"holder {record.identity.holder_id[:16]}... is not locked: "
                              "there is nothing to unlock")
        return record

    def _holder_lock(self, holder_key: bytes) -> threading.Lock:
        # One lock a holder: Argon2id runs outside the store-wide guard, so one holder's
        # unlock does not wait for another's, while two guesses at one holder take turns.
        self._record(holder_key)  # no lock is made for a key that is not enrolled
        with self._guard:
            return self._holder_locks.setdefault(bytes(holder_key), threading.Lock())

    def _remember(self, record: _Record) -> None:
        self._records[record.identity.signing_key] = record
        self._by_device[record.device_key] = record.identity.signing_key

    def _save(self, record: _Record) -> None:
        self._write(record)
        self._records[record.identity.signing_key] = record

    def _write(self, record: _Record) -> None:
        path = self.directory / HOLDERS_DIRECTORY / f"{record.identity.holder_id}.json"
        write_secret_file(path, record.to_json())

    def _locked_message(self, record: _Record) -> str:
        return (f"holder {record.identity.holder_id[:16]}... is locked after "
                f"{limits.pin_attempts_max} wrong PINs in a row (lockout {record.lock_epoch}): "
                "an administrator of the service, or the threshold of the holder's fellow "
                "holders of a document, must sign its unlock before a PIN is checked again")

    def _bad_unlock_signature(self, signer: bytes, record: _Record) -> str:
        return (f"the unlock signature by {signer.hex()[:16]}... does not verify for holder "
                f"{record.identity.holder_id[:16]}... at lockout {record.lock_epoch}: sign "
                "unlock_statement for this service, holder and lockout")


def _verifier(secret: bytes, pin_key: bytes) -> bytes:
    return hmac.new(secret, VERIFIER_DOMAIN + pin_key, hashlib.sha256).digest()


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(f"another process has the PIN store {path.parent} open: stop it, "
                          "or open the store there through it") from None
    return fd


def _read_record(path: Path) -> _Record:
    try:
        if path.stat().st_size > limits.holder_record_bytes_max:
            raise ValueError(f"over {limits.holder_record_bytes_max} bytes")
        record = _Record.from_json(path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError, IdentityError, ConfigError,
            EncodingError) as exc:
        raise CorruptLogError(f"the PIN record {path} is damaged ({exc}): the service refuses "
                              "to start rather than forget a holder's count; restore the file "
                              "from a backup") from exc
    if path.stem != record.identity.holder_id:
        raise CorruptLogError(f"the PIN record {path} holds another holder's record: restore "
                              "it from a backup")
    return record
