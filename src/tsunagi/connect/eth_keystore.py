"""The connection node's Ethereum key, kept encrypted on disk.

The file is a standard Ethereum keystore (Web3 Secret Storage, version 3: JSON, scrypt,
AES-128-CTR, a MAC over the ciphertext) as eth-account writes it, so geth or any wallet can
open it too. It is written with mode 0600 through a temporary file and an atomic link, so a
crash leaves no half-written key; a file that others may read is refused, as ssh refuses such a
key. The passphrase comes from the caller, else from the environment variable
``TSUNAGI_ETH_PASSPHRASE``, else from a prompt when there is a terminal.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from pathlib import Path

from tsunagi import extras, limits
from tsunagi.core import json_text
from tsunagi.core.keyfile import write_private_file
from tsunagi.errors import KeyFileError

__all__ = ["PASSPHRASE_ENVIRONMENT", "SCRYPT_N_DEFAULT", "create_key", "load_key", "save_key"]

FEATURE = "the Ethereum key store"
PASSPHRASE_ENVIRONMENT = "TSUNAGI_ETH_PASSPHRASE"
# scrypt cost: 2**17 with r = 8 takes 128 MiB and about 0.4 s here, as tsunagi's own key files
# (tsunagi.core.keyfile); eth-account's default is 2**18. Tests lower it.
SCRYPT_N_DEFAULT = 2**17


def create_key(path: str | os.PathLike, passphrase: str | None = None, *,
               scrypt_n: int = SCRYPT_N_DEFAULT):
    """A new random key, saved at ``path``; returns its eth-account LocalAccount."""
    extras.require("ethereum", FEATURE)
    from eth_account import Account

    account = Account.create()
    save_key(path, account.key, passphrase, scrypt_n=scrypt_n)
    return account


def save_key(path: str | os.PathLike, private_key: bytes, passphrase: str | None = None, *,
             scrypt_n: int = SCRYPT_N_DEFAULT, overwrite: bool = False) -> str:
    """Writes ``private_key`` (32 bytes) encrypted under the passphrase to ``path`` with mode
    0600; refuses to replace a file unless ``overwrite``. Returns the key's address."""
    extras.require("ethereum", FEATURE)
    from eth_account import Account

    secret = _passphrase(passphrase, path, confirm=True)
    if not (isinstance(scrypt_n, int) and limits.scrypt_n_min <= scrypt_n <= limits.scrypt_n_max
            and scrypt_n & (scrypt_n - 1) == 0):
        raise KeyFileError(f"scrypt n must be a power of two in [{limits.scrypt_n_min}, "
                           f"{limits.scrypt_n_max}], got {scrypt_n!r}")
    document = Account.encrypt(private_key, secret, kdf="scrypt", iterations=scrypt_n)
    write_private_file(Path(path), (json.dumps(document, indent=2) + "\n").encode(), overwrite)
    return Account.from_key(private_key).address


def load_key(path: str | os.PathLike, passphrase: str | None = None):
    """The key stored at ``path`` as an eth-account LocalAccount; KeyFileError saying what to
    do if the file is missing, readable by others, not a keystore, or the passphrase is
    wrong."""
    extras.require("ethereum", FEATURE)
    from eth_account import Account

    target = Path(path)
    document = _read_document(target)
    secret = _passphrase(passphrase, target, confirm=False)
    try:
        private_key = Account.decrypt(document, secret)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeyFileError(f"cannot open {target}: the passphrase is wrong (or the file "
                               "was altered); check the passphrase, or restore the file from "
                               "a backup") from None
        raise KeyFileError(f"{target} is not a keystore this can open ({exc}); restore it "
                           "from a backup") from None
    account = Account.from_key(private_key)
    stated = document.get("address")
    if stated and stated.lower().removeprefix("0x") != account.address.lower()[2:]:
        raise KeyFileError(f"{target}: the stored key is not that of its address {stated}; "
                           "the file was edited: restore it from a backup")
    return account


def _passphrase(given: str | None, path, *, confirm: bool) -> str:
    if given is None:
        given = os.environ.get(PASSPHRASE_ENVIRONMENT)
    if given is None and sys.stdin is not None and sys.stdin.isatty():
        given = getpass.getpass(f"passphrase of {path}: ")
        if confirm and getpass.getpass("again: ") != given:
            raise KeyFileError("the two passphrases differ; nothing was written")
    if given is None:
        raise KeyFileError(f"{path} needs a passphrase: set {PASSPHRASE_ENVIRONMENT}, or run "
                           "in a terminal to be asked")
    if not isinstance(given, str) or not given:
        raise KeyFileError("an Ethereum key file needs a non-empty passphrase (a str)")
    return given


def _read_document(path: Path) -> dict:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path} may be read by others (mode {stat.S_IMODE(mode):o}): "
                               f"run chmod 600 {path}, and move the money if others read it")
        with open(path, "rb") as handle:
            data = handle.read(limits.key_file_bytes_max + 1)
    except FileNotFoundError:
        raise KeyFileError(f"no Ethereum key file at {path}: check the path") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limits.key_file_bytes_max:
        raise KeyFileError(f"{path} is larger than any key file; is it the right path?")
    try:
        document = json_text.loads(data)
    except ValueError:
        raise KeyFileError(f"{path} is not an Ethereum keystore (not JSON); is it the right "
                           "path?") from None
    kdf = document.get("crypto", {}).get("kdfparams", {}) if isinstance(document, dict) else {}
    if not isinstance(document, dict) or document.get("version") != 3 or not isinstance(kdf, dict):
        raise KeyFileError(f"{path} is not a version 3 Ethereum keystore")
    # A hostile file could ask scrypt for all the machine's memory: refuse what tsunagi's own
    # key files refuse.
    n, r = kdf.get("n", 0), kdf.get("r", 0)
    if not (isinstance(n, int) and isinstance(r, int)):
        raise KeyFileError(f"{path} is not an Ethereum keystore (bad scrypt parameters)")
    if 128 * n * r > limits.scrypt_memory_bytes_max:
        raise KeyFileError(f"{path} asks scrypt for more than "
                           f"{limits.scrypt_memory_bytes_max >> 30} GiB; it was not written "
                           "by tsunagi")
    return document
