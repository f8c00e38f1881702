"""Layers import downward only, and the top-level API lists what it exports.

Method: read every module's imports with the ast module (nothing is executed) and compare each
tsunagi import with the layer order of ARCHITECTURE.md.
"""

import ast
from pathlib import Path

import tsunagi

SOURCE = Path(tsunagi.__file__).parent
# Lower layers first; a module may import its own layer and any layer before it.
LAYERS = ["errors", "extras", "limits", "_native", "hashing", "core", "ledger", "consensus",
          "contracts", "connect", "privacy", "node", "loadgen", "demo", "cli"]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "tsunagi" or name.startswith("tsunagi.")}


def test_imports_point_down_only():
    wrong = []
    for path in SOURCE.rglob("*.py"):
        module = "tsunagi." + ".".join(path.relative_to(SOURCE).with_suffix("").parts)
        mine = layer_of(module.removesuffix(".__init__"))
        if mine in ("__init__", "__main__"):
            continue  # the package root re-exports the public API
        assert mine in LAYERS, f"{module}: add its layer to LAYERS in this test"
        for target in imports_of(path):
            theirs = layer_of(target)
            if theirs == "__init__" and target == "tsunagi":
                continue  # `from tsunagi import __version__` and friends
            if LAYERS.index(theirs) > LAYERS.index(mine):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_top_level_all_is_sorted_and_complete():
    assert tsunagi.__all__ == sorted(tsunagi.__all__)
    for name in tsunagi.__all__:
        assert getattr(tsunagi, name) is not None, name  # each lazy name really loads
    public = {name for name, value in vars(tsunagi).items() if not name.startswith("_")
              and type(value).__name__ != "module"}  # subpackages appear once imported
    assert public <= set(tsunagi.__all__), "exported but not in __all__"
    assert tsunagi.Ledger is __import__("tsunagi.ledger").ledger.Ledger


def test_import_tsunagi_stays_light():
    """The CLI imports the package on every start: nothing heavy may load with it."""
    import subprocess
    import sys

    code = "import sys, tsunagi; print(sorted(m for m in ('numpy', 'lmdb', 'coincurve') " \
           "if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


def runtime_imports(path: Path) -> set[str]:
    """The tsunagi modules ``path`` imports when it runs (at its top or in a function), by
    full name: ``from tsunagi.node import protocol`` names tsunagi.node.protocol too. Imports
    under ``if TYPE_CHECKING:`` never run, so they are left out."""
    tree = ast.parse(path.read_text())
    typing_only = {id(inner) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for statement in node.body for inner in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("tsunagi.")}


def test_no_modules_import_each_other():
    """Within a layer too, imports form no cycle (a package's __init__, which re-exports its
    modules, aside): a module that needs another's names at run time is below it."""
    modules = {}
    for path in SOURCE.rglob("*.py"):
        if path.name != "__init__.py":
            modules["tsunagi." + ".".join(path.relative_to(SOURCE).with_suffix("").parts)] = path
    edges = {name: sorted(runtime_imports(path) & set(modules) - {name})
             for name, path in modules.items()}
    cycles, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        for target in edges[name]:
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(name)

    for name in sorted(modules):
        if name not in done:
            visit(name, [name])
    assert not cycles, "modules that import each other:\n" + "\n".join(cycles)
