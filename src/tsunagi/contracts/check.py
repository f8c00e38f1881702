"""The source check a contract passes at install, and the step charges compiled into it.

The check reads the module's syntax tree (none of the contract runs) and refuses what would
make a contract non-deterministic or let it reach past its view: imports beyond
:data:`ALLOWED_IMPORTS` (names only, none a module; of the contract API only
:data:`CONTRACT_API`), the attributes that lead to the runtime's frames
(:data:`REFUSED_ATTRIBUTES`: ``gi_frame``, ``f_back``, ...), float and complex literals and
true division (``/``: use ``//``), set displays and the set types (their iteration order over
str and bytes changes with the process's hash seed), the builtins of :data:`REFUSED_NAMES`
(I/O, reflection, ``hash`` and ``id``), ``global`` and ``nonlocal``, bare ``except:`` (it would
swallow the budget's stop), and every identifier or attribute that starts with ``_`` (no
climbing out through dunders such as ``__class__``).

This guards against mistakes in contracts a consortium reviews and installs together; it is not
a sandbox against hostile code, which Python cannot confine (a C-level loop such as
``sum(range(10**12))`` is charged one step, for one).
"""

from __future__ import annotations

import ast
import importlib
import types

from tsunagi.errors import ConfigError

__all__ = ["ALLOWED_IMPORTS", "CONTRACT_API", "PLAIN_IMPORTS", "REFUSED_ATTRIBUTES",
           "REFUSED_NAMES", "check_source", "instrument"]

# Modules a contract may import names from: the contract API, typing, and hashlib
# (deterministic digests). A name that is itself a module is refused (typing holds sys), and
# from tsunagi.contracts only CONTRACT_API: the rest of the package would reach past the view.
ALLOWED_IMPORTS = frozenset({"__future__", "typing", "hashlib", "tsunagi.contracts"})
CONTRACT_API = frozenset({"CallContext", "Contract", "Refuse", "decode", "encode", "keccak256",
                          "method"})
# Modules a contract may import whole (``import hashlib``): those with no public module inside.
PLAIN_IMPORTS = frozenset({"hashlib"})
# Attributes that lead from a generator, coroutine, traceback or frame to the frames of the
# runtime that called the contract, and so to the whole world state.
REFUSED_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame",
    "ag_code", "ag_await", "tb_frame", "tb_next", "f_back", "f_globals", "f_locals",
    "f_builtins", "f_code", "with_traceback", "mro",
})
REFUSED_NAMES = frozenset({
    "open", "eval", "exec", "compile", "__import__", "globals", "locals", "vars", "dir",
    "getattr", "setattr", "delattr", "input", "print", "breakpoint", "help", "exit", "quit",
    "memoryview", "id", "hash", "float", "complex", "set", "frozenset", "object", "type",
    "super", "classmethod", "staticmethod", "property", "BaseException", "SystemExit",
    "KeyboardInterrupt", "GeneratorExit",
})
# The names the instrumented code calls; a contract cannot name them (they start with "_").
STEP_NAME, ITERATE_NAME = "_tsunagi_step", "_tsunagi_iterate"


def _problem(node: ast.AST) -> str | None:
    """Why ``node`` is refused, or None."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return _import_problem(node)
    if isinstance(node, ast.Attribute) and node.attr in REFUSED_ATTRIBUTES:
        return f"uses the attribute {node.attr}, which leads out of the contract's view"
    if isinstance(node, ast.Constant) and isinstance(node.value, float | complex):
        return f"has the float literal {node.value!r}: use ints (scaled units)"
    if isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.Div):
        return "divides with / (a float): use // and %"
    if isinstance(node, ast.Set | ast.SetComp):
        return "builds a set, whose order varies between processes: use a dict or a list"
    if isinstance(node, ast.Global | ast.Nonlocal):
        return "declares global or nonlocal names: keep state in self.state"
    if isinstance(node, ast.ExceptHandler) and node.type is None:
        return "has a bare except: name the exceptions to catch"
    if isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
        return f"uses {node.id}, which contracts may not"
    name = _identifier(node)
    if name is not None and name.startswith("_"):
        return f"names {name}: identifiers and attributes starting with _ are refused"
    return None


def _import_problem(node: ast.Import | ast.ImportFrom) -> str | None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name not in PLAIN_IMPORTS:
                return f"imports {alias.name} whole (allowed: {', '.join(sorted(PLAIN_IMPORTS))}"\
                    "; import names from the modules allowed instead)"
        return None
    module = "." * node.level + (node.module or "")
    if module not in ALLOWED_IMPORTS:
        return f"imports {module} (allowed: {', '.join(sorted(ALLOWED_IMPORTS))})"
    if module == "__future__":
        return None
    for alias in node.names:
        if module == "tsunagi.contracts" and alias.name not in CONTRACT_API:
            return f"imports {alias.name} from tsunagi.contracts (allowed: " \
                f"{', '.join(sorted(CONTRACT_API))})"
        if alias.name == "*" or isinstance(getattr(importlib.import_module(module), alias.name,
                                                   None), types.ModuleType):
            return f"imports {alias.name} from {module}: import the names a contract uses"
    return None


def _identifier(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, ast.keyword):
        return node.arg
    if isinstance(node, ast.alias):
        return node.asname or node.name
    return None


def check_source(source: str, filename: str) -> ast.Module:
    """The parsed module; ConfigError naming the first refused construct and its line."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise ConfigError(f"contract {filename} does not parse: {exc.msg} "
                          f"(line {exc.lineno})") from None
    for node in ast.walk(tree):
        problem = _problem(node)
        if problem:
            line = getattr(node, "lineno", "?")
            raise ConfigError(f"contract {filename} line {line} {problem}")
    return tree


class _Charges(ast.NodeTransformer):
    """Charges a step at every function entry and loop iteration, and for each item a
    comprehension draws."""

    def _charge_first(self, body: list[ast.stmt]) -> list[ast.stmt]:
        call = ast.Expr(ast.Call(ast.Name(STEP_NAME, ast.Load()), [], []))
        return [call, *body]

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        node.body = self._charge_first(node.body)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_For(self, node):
        self.generic_visit(node)
        node.body = self._charge_first(node.body)
        return node

    visit_While = visit_For
    visit_AsyncFor = visit_For

    def visit_comprehension(self, node):
        self.generic_visit(node)
        node.iter = ast.Call(ast.Name(ITERATE_NAME, ast.Load()), [node.iter], [])
        return node


def instrument(tree: ast.Module) -> ast.Module:
    """``tree`` with the step charges inserted (the tree is changed in place)."""
    return ast.fix_missing_locations(_Charges().visit(tree))
