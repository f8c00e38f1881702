"""The validator's write-ahead log: every proposal and vote it signs, durable before it is sent.

A validator that crashes and restarts must not sign a second, different message for a height,
round and kind it already signed (Jepsen's 2017 analysis of Tendermint 0.10 found write-ahead
log problems of exactly this kind), and must keep the lock its own precommits imply. So each
message is appended here and fdatasync'ed before it leaves the process; on restart the
messages of the current height go back to the state machine (``Tendermint(restored=...)``),
which resumes from them. The signatures are kept too: a restarted validator sends the very
bytes it signed before, not a new signature over the same content.

File ``DATA/consensus/votes.wal``: entries back to back, each::

    offset size field
         0    4 length      payload bytes (u32 little-endian)
         4    4 crc         zlib.crc32 of the payload
         8    n payload     type u8 (1 proposal, 2 vote), then the message (``_encode``)

A torn last entry (a crash while appending) was never sent, so it is dropped; damage before the
last entry is refused with a clear error. The file is rewritten (a new file renamed over the
old, then the directory fsynced) to drop heights below the one being decided, once it holds
more than ``compact_bytes``.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from tsunagi.consensus.tendermint import Proposal, Vote, VoteKind
from tsunagi.errors import CorruptLogError

__all__ = ["SignedMessage", "VoteLog"]

_ENTRY = struct.Struct("<II")
_PROPOSAL = struct.Struct("<BQIiH32s64s")  # type, height, round, valid_round, proposer, value, sig
_VOTE = struct.Struct("<BQIBH?32s64s")  # type, height, round, kind, voter, has_value, value, sig
WAL_FILE = "votes.wal"
COMPACT_BYTES = 1 << 20


class SignedMessage(tuple):
    """(message, signature): a Proposal or Vote and the 64-byte BIP340 signature over it."""

    __slots__ = ()

    def __new__(cls, message: Proposal | Vote, signature: bytes):
        return super().__new__(cls, (message, bytes(signature)))

    @property
    def message(self) -> Proposal | Vote:
        return self[0]

    @property
    def signature(self) -> bytes:
        return self[1]


def _encode(entry: SignedMessage) -> bytes:
    message, signature = entry
    if isinstance(message, Proposal):
        return _PROPOSAL.pack(1, message.height, message.round, message.valid_round,
                              message.proposer, message.value, signature)
    return _VOTE.pack(2, message.height, message.round, int(message.kind), message.voter,
                      message.value is not None, message.value or bytes(32), signature)


def _decode(payload: bytes) -> SignedMessage:
    if payload[:1] == b"\x01" and len(payload) == _PROPOSAL.size:
        _, height, round_, valid_round, proposer, value, signature = _PROPOSAL.unpack(payload)
        return SignedMessage(Proposal(height, round_, value, valid_round, proposer), signature)
    if payload[:1] == b"\x02" and len(payload) == _VOTE.size:
        _, height, round_, kind, voter, has_value, value, signature = _VOTE.unpack(payload)
        return SignedMessage(Vote(VoteKind(kind), height, round_, value if has_value else None,
                                  voter), signature)
    raise ValueError("an entry that is neither a proposal nor a vote")


class VoteLog:
    """Appends signed messages durably; ``at(height)`` gives those of one height back."""

    def __init__(self, directory: str | os.PathLike, *, compact_bytes: int = COMPACT_BYTES,
                 sync: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / WAL_FILE
        self.compact_bytes = compact_bytes
        self.sync = sync
        self.entries: list[SignedMessage] = self._load()
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open)
        self._size = self.path.stat().st_size

    def _load(self) -> list[SignedMessage]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        entries, offset = [], 0
        while offset < len(data):
            if offset + _ENTRY.size > len(data):
                break  # a torn header: the crash came mid-append
            length, crc = _ENTRY.unpack_from(data, offset)
            end = offset + _ENTRY.size + length
            payload = data[offset + _ENTRY.size:end]
            if end > len(data):
                break  # a torn payload
            if zlib.crc32(payload) != crc:
                if end == len(data):
                    break  # the last entry, torn in place
                raise CorruptLogError(
                    f"{self.path} is damaged at byte {offset} (an entry's checksum fails "
                    "before the end): the validator cannot prove which votes it signed. Move "
                    "the file aside only if this validator's key has not voted since.")
            try:
                entries.append(_decode(payload))
            except ValueError as exc:
                raise CorruptLogError(f"{self.path}: entry at byte {offset}: {exc}") from exc
            offset = end
        if offset < len(data):
            with open(self.path, "r+b") as file:  # the torn tail was never sent: drop it
                file.truncate(offset)
                os.fsync(file.fileno())
        return entries

    def append(self, entry: SignedMessage, *, durable: bool = True) -> None:
        """Writes one signed message; with ``durable`` (this node's own, before it is sent)
        returns once it is on disk. Others' votes are logged without a sync of their own:
        the next own message's sync takes them down too, and a crash loses only that tail
        (a restarted validator may hold the only copy of a vote the others need)."""
        payload = _encode(entry)
        self._file.write(_ENTRY.pack(len(payload), zlib.crc32(payload)) + payload)
        if self.sync and durable:
            os.fdatasync(self._file.fileno())
        self._size += _ENTRY.size + len(payload)
        self.entries.append(entry)

    def at(self, height: int) -> list[SignedMessage]:
        return [entry for entry in self.entries if entry.message.height == height]

    def find(self, message: Proposal | Vote) -> SignedMessage | None:
        """The entry already signed for this message's slot (height, round, type and kind,
        and signer)."""
        for entry in reversed(self.entries):
            if _slot(entry.message) == _slot(message):
                return entry
        return None

    def forget_below(self, height: int) -> None:
        """Drops entries below ``height`` from the file once it has grown past compact_bytes."""
        if self._size <= self.compact_bytes:
            return
        kept = [entry for entry in self.entries if entry.message.height >= height]
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            for entry in kept:
                payload = _encode(entry)
                file.write(_ENTRY.pack(len(payload), zlib.crc32(payload)) + payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self._file.close()
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = self.path.stat().st_size
        self.entries = kept

    def close(self) -> None:
        self._file.close()


def _slot(message: Proposal | Vote) -> tuple:
    if isinstance(message, Proposal):
        return (message.height, message.round, 0, message.proposer)
    return (message.height, message.round, int(message.kind), message.voter)
