"""The connection node's journal keeps what it was told once it says so, and no more.

Method: entries are appended and the file reopened; then the file is cut mid-line (a crash
during a write: the torn entry was never acted on and is dropped), or a byte of a committed
entry is changed (damage: the journal refuses to open, naming the line).
"""

from __future__ import annotations

import zlib

import pytest

from tsunagi.connect import limits
from tsunagi.connect.journal import Journal
from tsunagi.errors import CorruptLogError, EncodingError


def test_appended_entries_come_back_in_order_after_reopening(tmp_path):
    path = tmp_path / "journal"
    with Journal(path) as journal:
        journal.append({"transfer": "01", "op": "hold", "phase": "intent"})
        journal.append({"transfer": "01", "op": "hold", "phase": "outcome", "height": 3})
    with Journal(path) as journal:
        assert [entry["phase"] for entry in journal.entries] == ["intent", "outcome"]
        journal.append({"transfer": "02", "op": "request", "phase": "intent"})
    assert len(Journal(path).entries) == 3


def test_a_torn_last_entry_is_dropped_and_the_journal_goes_on(tmp_path):
    path = tmp_path / "journal"
    with Journal(path) as journal:
        journal.append({"transfer": "01", "op": "hold", "phase": "intent"})
        journal.append({"transfer": "01", "op": "hold", "phase": "outcome"})
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the second line cut short
    with Journal(path) as journal:
        assert [entry["phase"] for entry in journal.entries] == ["intent"]
        journal.append({"transfer": "01", "op": "hold", "phase": "outcome"})
    assert [entry["phase"] for entry in Journal(path).entries] == ["intent", "outcome"]


def test_a_damaged_committed_entry_refuses_to_open(tmp_path):
    path = tmp_path / "journal"
    with Journal(path) as journal:
        for number in range(3):
            journal.append({"transfer": f"{number:02x}", "op": "request", "phase": "intent"})
    data = bytearray(path.read_bytes())
    data[20] ^= 1  # inside the first line
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="line 1"):
        Journal(path)


def test_an_oversized_entry_is_refused_before_it_is_written(tmp_path):
    with Journal(tmp_path / "journal") as journal:
        with pytest.raises(EncodingError, match="at most"):
            journal.append({"blob": "x" * 100_000})
        assert journal.entries == []
    assert Journal(tmp_path / "journal").entries == []


def test_many_entries_go_in_one_line_and_come_back_whole(tmp_path):
    path = tmp_path / "journal"
    intents = [{"transfer": f"{number:02x}", "op": "hold", "phase": "intent", "chain": 101,
                "record": f"{number:0256x}"} for number in range(limits.journal_line_entries_max
                                                                + 5)]
    with Journal(path) as journal:
        journal.append({"transfer": "ff", "op": "request", "phase": "intent"})  # one a line
        journal.append_many(intents)
        assert journal.entries[1:] == intents
    assert len(path.read_bytes().splitlines()) == 3  # one line, then 200 and 5 in two
    assert Journal(path).entries[1:] == intents


def test_a_torn_line_of_many_entries_drops_them_all(tmp_path):
    path = tmp_path / "journal"
    with Journal(path) as journal:
        journal.append({"transfer": "01", "op": "request", "phase": "intent"})
        journal.append_many([{"transfer": "01", "op": "hold", "phase": "intent"},
                             {"transfer": "02", "op": "hold", "phase": "intent"}])
    path.write_bytes(path.read_bytes()[:-10])  # the group's line cut short: never acted on
    assert [entry["op"] for entry in Journal(path).entries] == ["request"]


def test_a_line_that_is_not_an_entry_or_a_group_refuses_to_open(tmp_path):
    path = tmp_path / "journal"
    with Journal(path) as journal:
        journal.append({"transfer": "01", "op": "request", "phase": "intent"})
    text = b"[1,2,3]"
    path.write_bytes(path.read_bytes() + b"%08x %s\n" % (zlib.crc32(text), text) +
                     path.read_bytes())
    with pytest.raises(CorruptLogError, match="line 2"):
        Journal(path)
