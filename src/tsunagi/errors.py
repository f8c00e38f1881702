"""Exceptions of tsunagi: misuse and operating failures, never rejected transactions.

A rejected transaction or block is a result code (see :mod:`tsunagi.core.codes`), not an
exception. Everything raised on purpose by tsunagi, native code included, derives from
:class:`TsunagiError`; classes that resemble a builtin also inherit it, so ``except ValueError``
keeps working for callers that do not know tsunagi::

    TsunagiError
    ├── EncodingError (ValueError)        bytes of the wrong size, shape or layout
    ├── ConfigError (ValueError)          a setting out of range or inconsistent
    ├── KeyFileError (ValueError)         a key file that cannot be read or decrypted
    ├── KeyNotOwnerError (ValueError)     a key that may not sign for the account it would debit
    ├── NotFoundError (KeyError)          no such account, transaction or block
    ├── StorageError (OSError)            the data directory cannot be used
    │   ├── CorruptLogError               committed data is damaged: the node refuses to start
    │   └── LockedError                   another process owns the data directory
    ├── NodeError (ConnectionError)       a node could not be reached or answered badly
    │   ├── ProtocolError                 a frame that breaks the wire protocol
    │   └── OverloadedError               the node pushed back: retry later
    ├── MissingExtraError (ImportError)   a feature's optional dependencies are not installed
    ├── ShareError (ValueError)           secret shares that cannot give back their secret
    │   ├── ShareFormatError              a share of the wrong size, version or field value
    │   ├── ShareChecksumError            a share damaged in storage or in transit
    │   ├── ShareMismatchError            shares of different sets mixed together
    │   ├── DuplicateShareError           two shares with the same index
    │   ├── TooFewSharesError             fewer shares than the set's threshold
    │   └── ShareDigestError              shares whose secret fails the set's digest
    ├── CancelledError                    a long native operation was cancelled
    └── VaultError                        the document vault refused a step of key handling
        ├── FragmentError (ValueError)    a sealed fragment does not open in this context
        ├── IdentityError (ValueError)    a holder's or the service's signature does not hold
        ├── NotHolderError (PermissionError)  the holder is not one of the document's
        ├── PinError (PermissionError)    a wrong PIN, counted: the message says tries left
        │   └── HolderLockedError         too many wrong PINs: the message says who can unlock
        ├── UnlockError (PermissionError) an unlock of a locked holder lacks its signatures
        ├── StepRefusedError (PermissionError)  the vault contract refused a step (its code)
        ├── PartDamagedError (ValueError)  an encrypted part fails its AEAD check
        └── ChannelError (ConnectionError)  a channel handshake or message failed its check
            └── ReplayError               a message or fragment seen before, sent again
"""

from __future__ import annotations


class TsunagiError(Exception):
    """Base of every error tsunagi raises on purpose."""


class EncodingError(TsunagiError, ValueError):
    """Input bytes have the wrong size, shape or layout."""


class ConfigError(TsunagiError, ValueError):
    """A setting is out of range or inconsistent with another."""


class KeyFileError(TsunagiError, ValueError):
    """A key file cannot be read, or its passphrase is wrong."""


class KeyNotOwnerError(TsunagiError, ValueError):
    """A key may not sign for the account a record debits: it neither owns the account nor
    holds its policy key in the slot named. Caught before signing, so nothing is sent.

    ``key_address`` is the key's address; ``signer_address`` the address of the key that may
    sign (the owner's, or the policy key's in ``slot``; None when that slot is empty);
    ``owned`` the accounts the key does own.
    """

    def __init__(self, key_address: str, account: int, slot: int, signer_address: str | None,
                 owned: list[int]) -> None:
        self.key_address, self.account, self.slot = key_address, account, slot
        self.signer_address, self.owned = signer_address, list(owned)
        super().__init__(f"key {key_address} {self.what()}; {self.owns()}")

    def what(self) -> str:
        """What is wrong, without naming the key: 'does not own account 1 (owned by ...)'."""
        if not self.slot:
            return f"does not own account {self.account} (owned by {self.signer_address})"
        if self.signer_address is None:
            return f"cannot sign for account {self.account}: its policy slot {self.slot} is empty"
        return (f"is not the policy key in slot {self.slot} of account {self.account} "
                f"(that is {self.signer_address})")

    def owns(self) -> str:
        """'it owns account 2', 'it owns accounts 2, 5' or 'it owns no account'."""
        if not self.owned:
            return "it owns no account"
        plural = "s" if len(self.owned) > 1 else ""
        return f"it owns account{plural} {', '.join(map(str, self.owned))}"


class NotFoundError(TsunagiError, KeyError):
    """No such account, transaction or block on this chain."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class StorageError(TsunagiError, OSError):
    """The data directory cannot be used."""


class CorruptLogError(StorageError):
    """Committed data is damaged; the message names the block and the byte offset."""


class LockedError(StorageError):
    """Another process has the data directory open for writing."""


class NodeError(TsunagiError, ConnectionError):
    """A node could not be reached, or answered outside the protocol."""


class ProtocolError(NodeError):
    """A frame breaks the wire protocol (size, version, layout)."""


class OverloadedError(NodeError):
    """The node's queues are full; the request was not taken. Retry after a pause."""


class MissingExtraError(TsunagiError, ImportError):
    """A feature needs an extra of the package (``pip install 'tsunagi[http]'``) that is not
    installed; the message names it (see :mod:`tsunagi.extras`)."""


class ShareError(TsunagiError, ValueError):
    """Secret shares (tsunagi.privacy.shamir, tsunagi.privacy.slip39) that cannot give back
    their secret: nothing is returned rather than a wrong secret. The subclass says why."""


class ShareFormatError(ShareError):
    """A share is not one: wrong type or size, unknown version, a field out of range, a word
    that is not in the SLIP-0039 list."""


class ShareChecksumError(ShareError):
    """A share's checksum does not match its bytes or words: it was damaged or mistyped."""


class ShareMismatchError(ShareError):
    """The shares given belong to different sets (identifier, threshold, length or group
    parameters differ)."""


class DuplicateShareError(ShareError):
    """Two shares given have the same index: one share was given twice, or a share was
    altered."""


class TooFewSharesError(ShareError):
    """Fewer shares (or SLIP-0039 groups) were given than the set's threshold."""


class ShareDigestError(ShareError):
    """Every share is well formed, yet the secret they recombine to fails the set's digest:
    a share was forged or altered with its checksum recomputed, or the shares do not belong
    together."""


class CancelledError(TsunagiError):
    """A long native operation (a nonce search) was cancelled before it finished."""


class VaultError(TsunagiError):
    """The document vault refused a step of key handling (see :mod:`tsunagi.privacy`)."""


class StepRefusedError(VaultError, PermissionError):
    """The vault contract refused a step of a document's workflow; ``code`` is its
    tsunagi.privacy.vault.VaultCode and the refusal is on the chain as a refused call."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class PartDamagedError(VaultError, ValueError):
    """An encrypted part does not open under its recombined key: its ciphertext on chain was
    changed, or the part was stored for another document, part or chain."""


class FragmentError(VaultError, ValueError):
    """A sealed fragment does not open: it was tampered with, or it belongs to another chain,
    document, part or holder index than the one named, or it was sealed to another holder."""


class IdentityError(VaultError, ValueError):
    """A holder's or the service's identity statement, or a signature that should be by it,
    does not verify: the key or the signature is another's."""


class NotHolderError(VaultError, PermissionError):
    """A holder who is not one of the document's tried to give or ask for its fragment."""


class PinError(VaultError, PermissionError):
    """A wrong PIN. It was counted before this was raised; ``tries_left`` more wrong PINs in a
    row lock the holder."""

    def __init__(self, message: str, tries_left: int) -> None:
        self.tries_left = tries_left
        super().__init__(message)


class HolderLockedError(PinError):
    """The holder is locked after too many wrong PINs in a row; no PIN is checked until an
    administrator or enough of the holder's fellow holders sign an unlock."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0)


class UnlockError(VaultError, PermissionError):
    """An unlock of a locked holder was refused: a signature is not by an administrator or a
    fellow holder, is for another lockout, or too few signed."""


class ChannelError(VaultError, ConnectionError):
    """A channel handshake or message failed its check (a tampered or malformed frame, an
    unexpected step): the session is closed, open a new one."""


class ReplayError(ChannelError):
    """A message or fragment that was seen before (an earlier sequence number, request or
    session) was sent again; nothing was taken from it."""
