"""Every limit has one home and one name, and what native code is compiled with agrees with it.

A layer keeps its limits in one module (tsunagi.limits for the native core and core,
tsunagi.ledger.limits, tsunagi.node.limits), each a lower-case name, units last, with a comment
saying why; the native mirrors agree with those homes.

Method: the source of every module is parsed (ast) for limits kept elsewhere and for u32/u64
maxima spelled out; the limits modules are read line by line for their names and comments;
ext/limits.pxd and the C headers are read as text (no build needed), every constant they declare
is looked up in tsunagi.limits (or tsunagi.hashing.HeaderResult) and compared by value.
"""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path

import pytest

from tsunagi import limits
from tsunagi.hashing import HeaderResult

EXT = Path(__file__).resolve().parents[1] / "ext"
SRC = Path(__file__).resolve().parents[1] / "src" / "tsunagi"
# Modules whose owners are moving them elsewhere; they take tsunagi.limits when they land.
ELSEWHERE = {"ledger/index.py", "node/loadgen.py"}

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


def c_defines(path: Path, prefix: str) -> dict[str, int]:
    pattern = re.compile(rf"^#define\s+({prefix}\w*)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\b", re.M)
    return {name: int(value, 0) for name, value in pattern.findall(path.read_text())}


def test_pxd_parser_reads_enums_and_defs():
    text = "# c\ncdef enum:\n    a = 80  # x\n    b = 1 << 16\n\nDEF c = 0x20\ncdef int d = 5\n"
    assert pxd_constants(text) == {"a": 80, "b": 65536, "c": 32}


def test_every_pxd_limit_matches_limits_py():
    declared = pxd_constants((EXT / "limits.pxd").read_text())
    assert {"header_bytes", "hash_bytes", "threads_max"} <= set(declared)
    for name, value in declared.items():
        assert hasattr(limits, name), f"ext/limits.pxd declares {name}, limits.py does not"
        assert getattr(limits, name) == value, f"{name}: {value} in the pxd, not in limits.py"


def test_c_headers_match_limits_py():
    assert c_defines(EXT / "pow.h", "TS_HEADER_BYTES") == {"TS_HEADER_BYTES": limits.header_bytes}
    assert c_defines(EXT / "parallel.h", "TS_THREADS_MAX") == {
        "TS_THREADS_MAX": limits.threads_max}


def test_header_results_match_pow_h():
    reasons = c_defines(EXT / "pow.h", "TS_HEADER_")
    reasons.pop("TS_HEADER_BYTES")
    assert {name.removeprefix("TS_HEADER_").lower(): value
            for name, value in reasons.items()} == {r.name: r.value for r in HeaderResult}


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


def test_field_maxima_are_spelled_once_in_limits_py():
    assert limits.u32_max == 2**32 - 1 and limits.u64_max == 2**64 - 1
    spelled = {}
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name != "limits.py" and name not in ELSEWHERE:
            lines = _field_maxima(ast.parse(path.read_text()))
            if lines:
                spelled[name] = lines
    assert spelled == {}, "import u32_max / u64_max from tsunagi.limits instead"


LIMITS_MODULES = {"limits.py", "ledger/limits.py", "node/limits.py"}
# Names outside the limits modules that look like limits but are facts of a format or a system,
# or tuning that bounds nothing; each says why it stays where it is.
NOT_LIMITS = {
    ("core/address.py", "_LENGTH_MAX"): "BIP173's string length, part of the address format",
    ("core/block.py", "BLOCK_BYTES_MIN"): "the block format's smallest size, beside the format",
    ("core/block.py", "_THREAD_RECORDS_MIN"): "when a second hashing thread pays: tuning",
    ("core/records.py", "POLICY_RECIPIENTS_MAX"): "what fits in a record's extra field: format",
    ("core/config.py", "BLOCK_RECORDS_LIMIT"): "the old name, for the modules moved elsewhere",
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
