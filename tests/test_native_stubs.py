"""The .pyi stubs beside tsunagi._native name exactly what each native module exports.

Method: parse each stub with ast and compare its top-level names with the module's public
attributes (imports excluded), so a reader or type checker is never told of a missing function
or constant.
"""

import ast
import importlib
from pathlib import Path

import pytest

import tsunagi._native

STUBS = sorted(Path(tsunagi._native.__file__).parent.glob("*.pyi"))


@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.stem)
def test_stub_matches_module(stub):
    module = importlib.import_module(f"tsunagi._native.{stub.stem}")
    tree = ast.parse(stub.read_text())
    declared = {node.name for node in tree.body
                if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    exported = {name for name, value in vars(module).items()
                if not name.startswith("_") and callable(value)
                and getattr(value, "__module__", module.__name__) == module.__name__}
    assert declared == exported


@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.stem)
def test_constants_a_stub_declares_are_there(stub):
    module = importlib.import_module(f"tsunagi._native.{stub.stem}")
    declared = [node.target.id for node in ast.parse(stub.read_text()).body
                if isinstance(node, ast.AnnAssign)]
    assert [name for name in declared if not hasattr(module, name)] == []


def test_every_native_module_has_a_stub():
    built = {path.name.split(".")[0] for path in
             Path(tsunagi._native.__file__).parent.glob("*.so")}
    assert built == {stub.stem for stub in STUBS}
