"""The docs say what the code does: the protocol's tables name every message type and error
code the code has, with the same numbers, and the README makes no claim the code contradicts.

Method: parse the tables of docs/PROTOCOL.md and compare them with the enums of
tsunagi.node.protocol; read the README's claims about how the index reads its files.
"""

from __future__ import annotations

import re
from pathlib import Path

from tsunagi.node import protocol as p

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = (ROOT / "docs" / "PROTOCOL.md").read_text()


def _table_rows(heading: str) -> list[list[str]]:
    section = PROTOCOL[PROTOCOL.index(heading):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # the header row


def test_every_error_code_is_documented_with_its_number():
    documented = {name: int(code) for code, name, *_ in _table_rows("## Error codes")}
    assert documented == {code.name: int(code) for code in p.ErrorCode}


def test_every_message_type_is_documented_with_its_number():
    documented = {}
    for row in _table_rows("## Requests and answers") + _table_rows("## Handshake") \
            + _table_rows("## Peers"):
        documented[row[1]] = int(row[0], 16)
        for name, number in re.findall(r"([a-z_]+) \((0x[0-9A-Fa-f]{2})", " | ".join(row[2:])):
            documented[name] = int(number, 16)
    wrong = {t.name: int(t) for t in p.MessageType if documented.get(t.name) != int(t)}
    assert wrong == {}, "document these in docs/PROTOCOL.md"


def test_an_oversized_frame_is_documented_as_too_large():
    frames = PROTOCOL[PROTOCOL.index("## Frames"):PROTOCOL.index("## Handshake")]
    assert "above the node's `frame_bytes_max`" in frames
    sentence = frames[frames.index("above the node's `frame_bytes_max`"):]
    assert sentence.index("too_large") < sentence.index("malformed")


def test_the_readme_says_how_the_index_reads():
    readme = (ROOT / "README.md").read_text()
    assert "memory map" not in readme.lower()  # the index reads with pread
    index_code = "".join(path.read_text() for path in
                         (ROOT / "src" / "tsunagi" / "ledger" / "index").glob("*.py"))
    assert "pread" in index_code and "pread" in readme
