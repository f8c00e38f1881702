"""Key files: a secret key on disk, encrypted under a passphrase.

The file is JSON text. The secret is sealed with ChaCha20-Poly1305 under a key that scrypt
derives from the passphrase; the scrypt parameters and salt are stored in the file, and every
clear field (public key, address, parameters) is bound to the ciphertext as associated data,
so an edited file fails to open instead of showing a wrong address. Files are written with
0600 permissions through a temporary file and an atomic rename, so a crash leaves either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tsunagi import limits
from tsunagi.core import json_text
from tsunagi.core.address import ADDRESS_PREFIX_DEFAULT, decode_address, encode_address
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import EncodingError, KeyFileError

__all__ = ["SCRYPT_N_DEFAULT", "load_key", "save_key", "write_private_file"]

FORMAT_NAME = "tsunagi-key"
FORMAT_VERSION = 1
# scrypt cost: N = 2**17, r = 8 takes 128 MiB and about 0.4 s here (OWASP's recommendation);
# opening a key is rare, and this makes each passphrase guess as dear.
SCRYPT_N_DEFAULT = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
NONCE_BYTES = 12


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    # NFC so the same typed passphrase gives the same bytes on every system.
    if isinstance(passphrase, str):
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if isinstance(passphrase, (bytes, bytearray)):
        return bytes(passphrase)
    raise TypeError(f"a passphrase is str or bytes, not {type(passphrase).__name__}")


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _associated_data(document: dict) -> bytes:
    clear = {name: value for name, value in document.items() if name != "ciphertext"}
    return json.dumps(clear, sort_keys=True, separators=(",", ":")).encode()


def save_key(path: str | os.PathLike, private_key: PrivateKey, passphrase: str | bytes, *,
             address_prefix: str = ADDRESS_PREFIX_DEFAULT, scrypt_n: int = SCRYPT_N_DEFAULT,
             overwrite: bool = False) -> Path:
    """Writes ``private_key`` encrypted under ``passphrase`` to ``path`` (mode 0600).

    Refuses to replace an existing file unless ``overwrite``: losing a key loses its money.
    ``scrypt_n`` (a power of two) trades opening time for resistance to guessing; tests lower
    it. Returns the path written.
    """
    secret = _passphrase_bytes(passphrase)
    if not secret:
        raise KeyFileError("a key file needs a non-empty passphrase")
    _check_scrypt(scrypt_n, SCRYPT_R, SCRYPT_P)
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "public_key": private_key.public_key.hex(),
        "address": encode_address(private_key.public_key, address_prefix),
        "kdf": {"name": "scrypt", "n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P,
                "salt": salt.hex()},
        "cipher": {"name": "chacha20-poly1305", "nonce": nonce.hex()},
    }
    sealing_key = _derive(secret, salt, scrypt_n, SCRYPT_R, SCRYPT_P)
    sealed = ChaCha20Poly1305(sealing_key).encrypt(nonce, private_key.to_bytes(),
                                                   _associated_data(document))
    document["ciphertext"] = sealed.hex()
    text = json.dumps(document, sort_keys=True, indent=2) + "\n"
    target = Path(path)
    write_private_file(target, text.encode(), overwrite)
    return target


def write_private_file(target: Path, data: bytes, overwrite: bool) -> None:
    """Writes a key file (mode 0600 whatever the umask) whole or not at all; without
    ``overwrite`` an existing file is never replaced. KeyFileError says what to do."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError as exc:
        raise KeyFileError(f"cannot write {target}: there is no folder {target.parent}; "
                           "create it first, or choose another path") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot write {target}: {exc.strerror}; choose another path"
                           ) from exc
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        if overwrite:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # atomic, and fails if the target exists
    except FileExistsError as exc:
        raise KeyFileError(f"{target} exists: choose another path (replacing a key file "
                           "loses the key in it unless it is backed up)") from exc
    finally:
        if temporary.exists():
            temporary.unlink()
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a crash
    finally:
        os.close(directory)


def _check_scrypt(n: int, r: int, p: int) -> None:
    low, high = limits.scrypt_n_min, limits.scrypt_n_max
    if not (isinstance(n, int) and low <= n <= high and n & (n - 1) == 0):
        raise KeyFileError(f"scrypt n must be a power of two in [{low}, {high}], got {n!r}")
    if not (isinstance(r, int) and 1 <= r <= limits.scrypt_r_max):
        raise KeyFileError(f"scrypt r must be in [1, {limits.scrypt_r_max}], got {r!r}")
    if not (isinstance(p, int) and 1 <= p <= limits.scrypt_p_max):
        raise KeyFileError(f"scrypt p must be in [1, {limits.scrypt_p_max}], got {p!r}")
    if 128 * r * n > limits.scrypt_memory_bytes_max:
        raise KeyFileError(f"scrypt parameters ask for more than "
                           f"{limits.scrypt_memory_bytes_max >> 30} GiB of memory")


def load_key(path: str | os.PathLike, passphrase: str | bytes) -> PrivateKey:
    """The key stored at ``path``; KeyFileError (saying what to do) if it cannot be opened."""
    document = _read_document(Path(path))
    public_key, (n, r, p), salt, nonce, sealed = _fields(document, path)
    _check_scrypt(n, r, p)
    sealing_key = _derive(_passphrase_bytes(passphrase), salt, n, r, p)
    try:
        secret = ChaCha20Poly1305(sealing_key).decrypt(nonce, sealed,
                                                       _associated_data(document))
    except InvalidTag as exc:
        raise KeyFileError(f"cannot open {path}: the passphrase is wrong, or the file was "
                           "altered; check the passphrase, then restore the file from a "
                           "backup") from exc
    key = _key_from_secret(secret, path)
    if key.public_key != public_key:
        raise KeyFileError(f"{path}: the stored key does not match its public key; "
                           "restore the file from a backup")
    return key


def _fields(document: dict, path) -> tuple:
    """(public key, scrypt (n, r, p), salt, nonce, ciphertext) of a parsed key file."""
    try:
        kdf, cipher = document["kdf"], document["cipher"]
        names = (kdf["name"], cipher["name"])
        public_key = bytes.fromhex(document["public_key"])
        address = document["address"]
        address_key = decode_address(address, address.rpartition("1")[0].lower())
        fields = (public_key, (kdf["n"], kdf["r"], kdf["p"]), bytes.fromhex(kdf["salt"]),
                  bytes.fromhex(cipher["nonce"]), bytes.fromhex(document["ciphertext"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise KeyFileError(f"{path} is not a valid tsunagi key file ({exc}); "
                           "restore it from a backup") from exc
    if names != ("scrypt", "chacha20-poly1305") or len(fields[3]) != NONCE_BYTES:
        raise KeyFileError(f"{path} uses an unknown kdf or cipher {names}; "
                           "it was written by another program")
    if address_key != public_key:
        raise KeyFileError(f"{path}: the address does not belong to the public key; "
                           "the file was edited: restore it from a backup")
    return fields


def _key_from_secret(secret: bytes, path) -> PrivateKey:
    try:
        return PrivateKey.from_bytes(secret)
    except EncodingError as exc:
        raise KeyFileError(f"{path} holds an invalid secret key; restore it from a backup"
                           ) from exc


def _read_document(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.key_file_bytes_max + 1)
    except FileNotFoundError as exc:
        raise KeyFileError(f"no key file at {path}: check the path") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    if len(data) > limits.key_file_bytes_max:
        raise KeyFileError(f"{path} is larger than any key file; is it the right path?")
    try:
        document = json_text.loads(data)
    except ValueError as exc:  # also bad UTF-8
        raise KeyFileError(f"{path} is not a tsunagi key file (not JSON); "
                           "is it the right path?") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise KeyFileError(f"{path} is not a tsunagi key file; is it the right path?")
    if document.get("version") != FORMAT_VERSION:
        raise KeyFileError(f"{path} is a version {document.get('version')!r} key file; this "
                           f"tsunagi reads version {FORMAT_VERSION}: upgrade tsunagi")
    return document
