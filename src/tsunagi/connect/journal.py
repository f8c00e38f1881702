"""The connection node's step journal: a small append-only file, fsynced before the node acts.

Before every external operation (a record sent to a linked chain, a call to the connection
chain) the node appends its intent, with the txid of the signed record it is about to send and
the record itself, and waits for the fsync; after the operation it appends the outcome the same
way. A node killed anywhere finds, on restart, each intent whose outcome is missing and asks
the chain whether that txid is there: if it is, the operation happened; if not, it sends the
very same bytes again, which a chain applies at most once. Nothing is ever sent twice under two
different txids, so nothing is paid twice.

Each line is ``<crc32 hex> <json>``: one entry (a JSON object), or many entries written
together (append_many: a JSON array ``[shared, [rest, ...]]``, each entry the fields all of
them share plus its own), so a group's intents are durable, or torn away, together. A torn
last line (a crash mid-write, never acted on) is dropped on open, and damage anywhere else
raises CorruptLogError. A journal of one-entry lines only (as written before lines of many
entries) reads as it always did.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

from tsunagi.connect import limits
from tsunagi.errors import CorruptLogError, EncodingError

__all__ = ["Journal"]


def _line(entry: dict) -> bytes:
    text = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def _many_line(entries: list[dict]) -> bytes:
    """One line of many entries: the fields all of them share (same value), once, and each
    entry's others."""
    first, rest = entries[0], entries[1:]
    shared = {key: value for key, value in first.items()
              if all(key in entry and entry[key] == value for entry in rest)}
    own = [{key: value for key, value in entry.items() if key not in shared}
           for entry in entries]
    return _line([shared, own])


def _parse(line: bytes) -> list[dict] | None:
    """The entries of a line, or None when it is damaged."""
    crc, _, text = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(text):
            return None
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        return [value]
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], dict) and
            isinstance(value[1], list) and all(isinstance(own, dict) for own in value[1])):
        return None
    shared, own = value
    return [{**shared, **fields} for fields in own]


class Journal:
    """Entries (JSON-able dicts) in the order they were written, durable once appended."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.entries: list[dict] = []
        created = not self.path.exists()
        if not created:
            self._read()
        self._file = open(self.path, "ab")
        if created:
            self._file.flush()
            os.fsync(self._file.fileno())
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the new file's name is durable too
            finally:
                os.close(directory)

    def _read(self) -> None:
        data = self.path.read_bytes()
        if len(data) > limits.journal_bytes_max:
            raise CorruptLogError(f"{self.path} is {len(data)} bytes, more than a journal "
                                  f"grows to ({limits.journal_bytes_max}): check the path")
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        good = 0
        for number, line in enumerate(complete):
            entries = _parse(line)
            if entries is None:
                if number == len(complete) - 1 and not tail:
                    break  # a torn last line: written, never acted on
                raise CorruptLogError(f"{self.path} line {number + 1} is damaged: restore "
                                      "the journal, or rebuild it from the connection chain")
            self.entries.extend(entries)
            good += len(line) + 1
        if good != len(data):
            with open(self.path, "r+b") as file:
                file.truncate(good)
                os.fsync(file.fileno())

    def append(self, entry: dict) -> None:
        """Writes ``entry`` and returns once it is on disk."""
        line = _line(entry)
        if len(line) > limits.journal_entry_bytes_max:
            raise EncodingError(f"a journal entry is at most {limits.journal_entry_bytes_max} "
                                f"bytes, got {len(line)}")
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.entries.append(entry)

    def append_many(self, entries: list[dict]) -> None:
        """Writes ``entries`` in order and returns once all are on disk: one fsync for a
        batch, one line for each run of up to limits.journal_line_entries_max of them. A crash
        mid-write leaves a prefix of those lines (and at most a torn last line)."""
        if len(entries) == 1:
            return self.append(entries[0])
        size = limits.journal_line_entries_max
        lines = [_many_line(entries[first:first + size])
                 for first in range(0, len(entries), size)]
        for line in lines:
            if len(line) > limits.journal_line_bytes_max:
                raise EncodingError(f"a journal line of many entries is at most "
                                    f"{limits.journal_line_bytes_max} bytes, got {len(line)}")
        self._file.write(b"".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.entries.extend(entries)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
