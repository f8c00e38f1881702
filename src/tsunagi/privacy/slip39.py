"""SLIP-0039 mnemonics: shares of a key as words a person can write down, in groups.

A thin wrapper over the ``shamir-mnemonic`` package (Trezor's implementation of SLIP-0039,
which brings the word list, the RS1024 checksum of each mnemonic, the digest of each group's
secret and the passphrase encryption): it takes and gives bytes and lists of words, and turns
the package's one MnemonicError into the specific :class:`~tsunagi.errors.ShareError` of
each refusal, saying what to do. The binary shares kept on chain are
:mod:`tsunagi.privacy.shamir`'s.

A wrong passphrase is not detected: SLIP-0039 decrypts to another secret, so that no
passphrase can be confirmed by trying it (plausible deniability).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import shamir_mnemonic
from shamir_mnemonic import MnemonicError

from tsunagi.errors import (
    ConfigError,
    DuplicateShareError,
    ShareChecksumError,
    ShareDigestError,
    ShareError,
    ShareFormatError,
    ShareMismatchError,
    TooFewSharesError,
)

__all__ = ["combine_mnemonics", "split_mnemonics"]

# The package's messages (shamir-mnemonic 0.3), what each means and what to do about it.
_REFUSALS: list[tuple[str, type[ShareError], str]] = [
    ("checksum", ShareChecksumError,
     "a word of that mnemonic is wrong: enter it again carefully, or give another share"),
    ("Share indices must be unique", DuplicateShareError, "give each mnemonic once"),
    ("Invalid digest", ShareDigestError,
     "the mnemonics do not recombine to their secret: one was altered, try another subset"),
    ("Insufficient number of mnemonic groups", TooFewSharesError,
     "give mnemonics of more groups"),
    ("is empty", TooFewSharesError, "give the mnemonics of the set"),
    ("Invalid set of", ShareMismatchError,
     "give only mnemonics of one set: they begin with the same words"),
    ("Invalid mnemonic", ShareFormatError,
     "check that each mnemonic is whole and its words are from the SLIP-0039 list"),
]
_WRONG_COUNT = re.compile(r"Expected (\d+) (?:mnemonics|groups).*but (\d+) were provided")


def _refusal(error: MnemonicError) -> ShareError:
    """The ShareError of the package's ``error``, its message kept and a remedy added."""
    message = str(error)
    wrong = _WRONG_COUNT.search(message)
    if wrong:
        expected, given = map(int, wrong.groups())
        if given < expected:
            return TooFewSharesError(f"{message} Give {expected - given} more.")
        return ShareError(f"{message} Give exactly {expected}: SLIP-0039 takes the threshold.")
    for marker, kind, remedy in _REFUSALS:
        if marker in message:
            return kind(f"{message} ({remedy})")
    return ShareError(message)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    data = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not all(32 <= byte <= 126 for byte in data):
        raise ConfigError("a SLIP-0039 passphrase is printable ASCII only (code points 32-126)")
    return data


def split_mnemonics(secret: bytes, groups: Sequence[tuple[int, int]], group_threshold: int = 1,
                    *, passphrase: str | bytes = b"", extendable: bool = True,
                    iteration_exponent: int = 1) -> list[list[str]]:
    """The SLIP-0039 mnemonics of ``secret`` (16 bytes or more, an even count): one list per
    group in ``groups`` of (member threshold, member count); ``group_threshold`` of the groups
    open it, each with its member threshold of mnemonics. ``passphrase`` encrypts the secret
    first (the same one opens it). Raises ConfigError for parameters SLIP-0039 refuses."""
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise ConfigError(f"the secret must be bytes, not {type(secret).__name__}")
    try:
        return shamir_mnemonic.generate_mnemonics(
            group_threshold, [tuple(group) for group in groups], bytes(secret),
            _passphrase_bytes(passphrase), extendable, iteration_exponent)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"SLIP-0039 refuses these parameters: {exc}") from None


def combine_mnemonics(mnemonics: Iterable[str], passphrase: str | bytes = b"") -> bytes:
    """The secret of a SLIP-0039 set from its mnemonics (the group threshold of groups, each
    with exactly its member threshold of mnemonics), decrypted with ``passphrase``. Raises a
    ShareError subclass naming what is wrong: never a secret the set's digests refute."""
    words = list(mnemonics)
    for position, mnemonic in enumerate(words, start=1):
        if not isinstance(mnemonic, str):
            raise ShareFormatError(f"mnemonic {position} is a {type(mnemonic).__name__}, not "
                                   "a str of words separated by spaces")
    key = _passphrase_bytes(passphrase)
    try:
        return shamir_mnemonic.combine_mnemonics(words, key)
    except MnemonicError as exc:
        raise _refusal(exc) from None
    except ValueError as exc:  # the cipher's refusal of a secret of odd length
        raise ShareFormatError(f"the mnemonics hold no valid SLIP-0039 secret: {exc}") from None
