"""Every limit has one home and one name, and what native code is compiled with agrees with it.

A layer keeps its limits in one module (tsunagi.limits for the native core and core,
tsunagi.ledger.limits, tsunagi.node.limits), each a lower-case name, units last, with a comment
saying why; the native mirrors agree with those homes.

Method: the source of every module is parsed (ast) for limits kept elsewhere and for u32/u64
maxima spelled out; the limits modules are read line by line for their names and comments.
ext/limits.pxd and the C headers are read as text, and every constant they declare must have a
Python home (tsunagi.limits, the record layout, the state's dtypes, the result enums) with its
value; each native module also reports what it was compiled with (NATIVE_CONSTANTS), held
against the same homes, so a stale build fails too.
"""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path

import numpy as np
import pytest

from tsunagi import limits
from tsunagi._native import commit, indexing, sigverify
from tsunagi._native import hashing as native_hashing
from tsunagi.core import records
from tsunagi.core.codes import Result
from tsunagi.hashing import HeaderResult
from tsunagi.ledger import limits as ledger_limits
from tsunagi.ledger import state
from tsunagi.node import protocol

EXT = Path(__file__).resolve().parents[1] / "ext"
SRC = Path(__file__).resolve().parents[1] / "src" / "tsunagi"
# Modules whose owners are moving them elsewhere; they take tsunagi.limits when they land.
ELSEWHERE: set[str] = set()  # modules excused from the rules below: none

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.LShift: operator.lshift, ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv}


def integer_value(text: str) -> int:
    """Value of an integer constant expression such as ``80``, ``0x20`` or ``1 << 16``."""
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"not an integer constant: {text!r}")
    return walk(ast.parse(text.strip(), mode="eval").body)


def pxd_constants(text: str) -> dict[str, int]:
    """``name = value`` entries of every ``cdef enum`` block, and ``DEF name = value`` lines."""
    found: dict[str, int] = {}
    in_enum = False
    for line in text.splitlines():
        code = line.split("#", 1)[0].rstrip()
        if not code.strip():
            continue
        if re.match(r"\s*(cdef|cpdef)\s+enum\b.*:\s*$", code):
            in_enum = True
            continue
        defined = re.match(r"\s*DEF\s+(\w+)\s*=\s*(.+)$", code)
        entry = re.match(r"\s+(\w+)\s*=\s*(.+)$", code)
        if defined:
            found[defined[1]] = integer_value(defined[2])
        elif in_enum and entry:
            found[entry[1]] = integer_value(entry[2])
        elif not code.startswith((" ", "\t")):
            in_enum = False
    return found


def c_constants(text: str) -> dict[str, int]:
    """``#define TS_NAME <integer>`` lines and ``TS_NAME = <integer>`` enum entries of a C header
    (comments dropped, ``u`` suffixes read, UINT64_MAX as its value)."""
    text = re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)
    found = {}
    for name, value in re.findall(r"^#define[ \t]+(TS_\w+)[ \t]+(\w+)", text, re.M) \
            + re.findall(r"\b(TS_\w+)\s*=\s*(\w+)", text):
        found[name] = 2**64 - 1 if value == "UINT64_MAX" else int(value.rstrip("uUlL"), 0)
    return found


# Where Python sets each constant the native code is compiled with, by its native name: the
# C headers' TS_ names, the pyx's own and the sizes of the kernel's structs. ext/limits.pxd
# names are those of tsunagi.limits.
NATIVE_HOMES = {
    "TS_HEADER_BYTES": limits.header_bytes,
    "TS_THREADS_MAX": limits.threads_max,
    "TS_MERGE_RUNS_MAX": np.iinfo(np.uint16).max,  # the index numbers a merge's inputs in u16
    "RECORD_SIZE": records.RECORD_BYTES,
    "sizeof(ts_record)": records.RECORD_BYTES,
    "sizeof(ts_hold)": state.HOLD_DTYPE.itemsize,
    "sizeof(ts_policy)": state.POLICY_DTYPE.itemsize,
    "TS_KEY_SLOTS": records.KEY_SLOTS,
    "TS_FLAG_LINKED": records.Flags.linked,
    "TS_FLAG_BATCH_AUTHORIZED": records.Flags.batch_authorized,
    "TS_FLAGS_KNOWN": records.FLAGS_KNOWN,
    "TS_ACCOUNT_ISSUER": state.ISSUER,
    **{f"TS_KIND_{kind.name.upper()}": kind.value for kind in records.Kind},
    **{f"TS_STATUS_{name.upper()}": value for value, name in state.HOLD_STATUS_NAMES.items()},
    **{f"TS_{code.name.upper()}": code.value for code in Result},
    **{f"TS_HEADER_{reason.name.upper()}": reason.value for reason in HeaderResult},
}
# Header constants Python never sees as numbers, and why.
NATIVE_ONLY = {
    "TS_BACKEND_PORTABLE": "which SHA-256 path runs; Python sees its name (hashing.backend())",
    "TS_BACKEND_SHANI": "which SHA-256 path runs; Python sees its name (hashing.backend())",
    "TS_X86": "whether the compiler targets x86: a fact of the build",
    "TS_NOT_FOUND": "a miss in the commit kernel's hash maps, inside C",
    "TS_NONCE_NONE": "no nonce found, None once it crosses into Python",
    "TS_JOURNAL_ROWS_PER_RECORD": "room commit.pyx gives the kernel's journal, inside native",
    "TS_JOURNAL_ROW_WORDS": "words of a journal row; Python reads it as commit.JOURNAL_ROW_WORDS",
}
HEADERS = sorted(EXT.glob("*.h"))


def test_pxd_parser_reads_enums_and_defs():
    text = "# c\ncdef enum:\n    a = 80  # x\n    b = 1 << 16\n\nDEF c = 0x20\ncdef int d = 5\n"
    assert pxd_constants(text) == {"a": 80, "b": 65536, "c": 32}


def test_every_pxd_limit_matches_limits_py():
    declared = pxd_constants((EXT / "limits.pxd").read_text())
    assert {"header_bytes", "hash_bytes", "threads_max"} <= set(declared)
    for name, value in declared.items():
        assert hasattr(limits, name), f"ext/limits.pxd declares {name}, limits.py does not"
        assert getattr(limits, name) == value, f"{name}: {value} in the pxd, not in limits.py"


def test_c_header_parser_reads_defines_and_enums():
    text = ("#ifndef TS_X_H\n#define TS_X_H\n#define TS_A 8u /* slots */\n"
            "enum { TS_B = 1, TS_C = 2 };\n#define TS_D UINT64_MAX\n#define OTHER 3\n")
    assert c_constants(text) == {"TS_A": 8, "TS_B": 1, "TS_C": 2, "TS_D": 2**64 - 1}


@pytest.mark.parametrize("header", HEADERS, ids=lambda path: path.name)
def test_every_c_header_constant_has_its_python_value(header):
    found = c_constants(header.read_text())
    assert sorted(set(found) - set(NATIVE_HOMES) - set(NATIVE_ONLY)) == [], \
        "give the new constant its Python home in NATIVE_HOMES (or a reason in NATIVE_ONLY)"
    assert {name: value for name, value in found.items()
            if name in NATIVE_HOMES and value != NATIVE_HOMES[name]} == {}


@pytest.mark.parametrize("module", [commit, native_hashing, indexing, sigverify],
                         ids=lambda module: module.__name__)
def test_each_native_module_was_built_with_the_python_values(module):
    compiled = module.NATIVE_CONSTANTS
    assert compiled
    expected = {name: NATIVE_HOMES[name] if name in NATIVE_HOMES else getattr(limits, name)
                for name in compiled}
    assert compiled == expected


def test_python_copies_of_native_facts_agree():
    assert commit.RECORD_BYTES == records.RECORD_BYTES
    assert protocol.ACCOUNT_ISSUER == state.ISSUER  # the wire's account flag is the state's
    assert ledger_limits.index_merge_fanout <= indexing.MERGE_RUNS_MAX


@pytest.mark.parametrize("name", ["nonce_end", "nonce_chunk"])
def test_nonce_limits_fit_the_32_bit_nonce_field(name):
    assert 0 < getattr(limits, name) <= 2**32
    assert limits.nonce_end == 2**32


def _field_maxima(tree: ast.AST) -> list[int]:
    """Lines that spell a u32/u64 maximum out (2**32 - 1, (1 << 64) - 1) or name one
    U32_MAX/U64_MAX of their own."""
    def power_of_two(node: ast.AST) -> bool:
        return isinstance(node, ast.BinOp) and (
            isinstance(node.op, ast.Pow) and getattr(node.left, "value", None) == 2
            or isinstance(node.op, ast.LShift) and getattr(node.left, "value", None) == 1) \
            and getattr(node.right, "value", None) in (32, 64)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) \
                and power_of_two(node.left) and isinstance(node.right, ast.Constant):
            lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id in ("U32_MAX", "U64_MAX"):
            lines.append(node.lineno)
    return lines


# Contract modules import only the contract API (tsunagi.contracts.check), so they cannot take
# u32_max from tsunagi.limits and spell the record fields' maxima themselves.
CONTRACT_SOURCES = {"privacy/vault_contract.py"}


def test_field_maxima_are_spelled_once_in_limits_py():
    assert limits.u32_max == 2**32 - 1 and limits.u64_max == 2**64 - 1
    spelled = {}
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name != "limits.py" and name not in ELSEWHERE and name not in CONTRACT_SOURCES:
            lines = _field_maxima(ast.parse(path.read_text()))
            if lines:
                spelled[name] = lines
    assert spelled == {}, "import u32_max / u64_max from tsunagi.limits instead"


LIMITS_MODULES = {"limits.py", "ledger/limits.py", "consensus/limits.py", "node/limits.py",
                  "loadgen/limits.py", "privacy/limits.py", "connect/limits.py",
                  "contracts/limits.py"}
# Names outside the limits modules that look like limits but are facts of a format or a system,
# or tuning that bounds nothing; each says why it stays where it is.
NOT_LIMITS = {
    ("contracts/examples.py", "NAME_CHARS_MAX"): "the example contract's own rule; a contract "
                                                 "imports only the contract API, not limits",
    ("contracts/examples.py", "TARGET_BYTES_MAX"): "the example contract's own rule, as above",
    ("privacy/vault_contract.py", "TEXT_CHARS_MAX"): "the vault contract's own rule; a contract "
                                                     "imports only the contract API",
    ("privacy/vault_contract.py", "OPEN_TEXT_CHARS_MAX"): "the vault contract's own rule",
    ("privacy/vault_contract.py", "PARTS_MAX"): "the vault contract's own rule",
    ("privacy/vault_contract.py", "HOLDERS_MAX"): "Shamir over GF(256), as "
                                                  "privacy/limits.document_holders_max",
    ("privacy/vault_contract.py", "EXPIRY_MAX_S"): "the vault contract's own rule (24 h)",
    ("connect/contract.py", "HEADERS_PER_CALL_MAX"): "the connection contract's own rule; a "
                                                      "contract imports only the contract API",
    ("connect/contract.py", "REORG_DEPTH_MAX"): "the connection contract's own rule, as above",
    ("connect/contract.py", "PATH_LEVELS_MAX"): "the connection contract's own rule, as above",
    ("connect/contract.py", "BATCH_TRANSFERS_MAX"): "the connection contract's own rule, as "
                                                     "above",
    ("connect/contract.py", "ETH_HEADER_BYTES_MAX"): "the connection contract's own rule, as "
                                                      "above",
    ("connect/contract.py", "ETH_PROOF_NODES_MAX"): "the connection contract's own rule, as "
                                                     "above",
    ("connect/contract.py", "ETH_RLP_DEPTH_MAX"): "the connection contract's own rule, as above",
    ("connect/contract.py", "CONFIRMATIONS_MAX"): "the connection contract's own rule, as above",
    ("connect/contract.py", "LINKED_VALIDATORS_MAX"): "the connection contract's own rule, as "
                                                       "above",
    ("core/address.py", "_LENGTH_MAX"): "BIP173's string length, part of the address format",
    ("core/block.py", "BLOCK_BYTES_MIN"): "the block format's smallest size, beside the format",
    ("core/block.py", "_THREAD_RECORDS_MIN"): "when a second hashing thread pays: tuning",
    ("core/records.py", "POLICY_RECIPIENTS_MAX"): "what fits in a record's extra field: format",
    ("ledger/index/runfile.py", "HEIGHT_LIMIT"): "the heights an index place can encode: "
                                                 "the run file format, from block_records_max",
    ("ledger/log.py", "_IOV_MAX"): "Linux's limit on buffers per writev",
    ("ledger/state.py", "_ACCOUNTS_MIN"): "the smallest table, grown on demand: tuning",
    ("ledger/state.py", "_HOLDS_MIN"): "the smallest table, grown on demand: tuning",
    ("ledger/state.py", "_POLICIES_MIN"): "the smallest table, grown on demand: tuning",
    ("node/protocol.py", "_RESULT_MAX"): "the highest Result code, derived from the enum",
}


def _module_names(tree: ast.Module):
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                yield target.id, node


def test_each_layer_keeps_its_limits_in_one_module():
    homes = {path.relative_to(SRC).as_posix() for path in SRC.rglob("limits.py")}
    assert homes == LIMITS_MODULES
    kept_elsewhere = []
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name in LIMITS_MODULES or name in ELSEWHERE:
            continue
        for found, _ in _module_names(ast.parse(path.read_text())):
            if re.search(r"_(max|min|limit)(_default)?$", found, re.IGNORECASE) \
                    and (name, found) not in NOT_LIMITS:
                kept_elsewhere.append(f"{name}: {found}")
    assert kept_elsewhere == [], "move these to the layer's limits module"


@pytest.mark.parametrize("module", sorted(LIMITS_MODULES))
def test_limits_are_lower_case_units_last_and_say_why(module):
    path = SRC / module
    lines = path.read_text().splitlines()
    for found, node in _module_names(ast.parse(path.read_text())):
        assert re.fullmatch(r"[a-z][a-z0-9_]*", found), f"{module}: {found} is not lower-case"
        assert not re.search(r"_(max|min)_(bytes|records|blocks|s|ms|chars|rows)$", found), \
            f"{module}: {found} puts its unit after max/min"
        above = node.lineno - 2  # the line before the assignment, or before its group
        while above >= 0 and re.match(r"[a-z][a-z0-9_]* = ", lines[above]):
            above -= 1
        assert above >= 0 and lines[above].startswith("#"), f"{module}: {found} has no comment"
