"""The limits native code is compiled with agree with src/tsunagi/limits.py, where they are set.

Method: ext/limits.pxd and the C headers are read as text (no build needed), every constant they
declare is looked up in tsunagi.limits (or tsunagi.hashing.HeaderResult) and compared by value.
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
