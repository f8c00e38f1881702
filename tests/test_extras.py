"""`pip install tsunagi` alone runs the library and the demo; a feature whose extra is missing
says in one line which extra to install.

Method: pyproject.toml is read for the dependencies and extras; a missing extra is simulated in
a child process by setting its modules to None in sys.modules (so importing them fails as if
they were not installed), and the tsunagi command runs there; its exit code and stderr are what
a user sees.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tsunagi import extras

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# What each extra's packages bring that tsunagi imports: blocked together, as a pip install
# without the extra would leave them all out.
BLOCKED = {"http": ["fastapi", "fastapi_offline", "starlette", "pydantic", "uvicorn",
                    "prometheus_client", "jinja2"],
           "charts": ["matplotlib"],
           "ethereum": ["eth_tester", "web3", "vyper", "eth_account", "eth_hash", "rlp", "trie",
                        "eth", "eth_abi", "eth_keys", "eth_utils"]}
NEEDS_AN_EXTRA = {"tsunagi.connect.rest": "http", "tsunagi.node.rest": "http", "tsunagi.node.metrics": "http",
                  "tsunagi.node.http.pages": "http", "tsunagi.node.http.vault_pages": "http"}


def without(extra_names: list[str], code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a Python where the modules of these extras cannot be imported."""
    blocked = sorted(m for name in extra_names for m in BLOCKED[name])
    prelude = f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, timeout=120)


def tsunagi_without(extra_names: list[str], *argv: str) -> subprocess.CompletedProcess:
    return without(extra_names, f"from tsunagi.cli import main\nsys.exit(main({list(argv)!r}))")


def requirement(text: str) -> tuple[str, set[str]]:
    """The distribution name and extras of a requirement: ``"tsunagi[all]"``."""
    name, extras_text = re.match(r"\s*([\w.-]+)\s*(?:\[([^\]]*)\])?", text).groups()
    return name.lower(), {e.strip() for e in (extras_text or "").split(",") if e.strip()}


def names(requirements: list[str]) -> set[str]:
    return {requirement(text)[0] for text in requirements}


def test_the_base_install_leaves_the_web_and_chart_packages_to_extras():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    base, optional = names(project["dependencies"]), project["optional-dependencies"]
    http, charts = names(optional["http"]), names(optional["charts"])
    ethereum = names(optional["ethereum"])
    assert {"fastapi", "fastapi-offline", "uvicorn", "prometheus-client"} <= http
    assert charts == {"matplotlib"}
    assert {"eth-tester", "web3", "vyper"} <= ethereum
    assert not (http | charts | ethereum) & base
    assert [requirement(text) for text in optional["all"]] == \
        [("tsunagi", {"http", "charts", "ethereum"})]
    assert ("tsunagi", {"all"}) in map(requirement, optional["test"])  # the tests use it all
    # The check the commands run looks for the modules of these same packages.
    assert {extra: {m.replace("_", "-") for m in modules}
            for extra, modules in extras.EXTRAS.items()} == \
        {"http": http, "charts": charts, "ethereum": ethereum}


def test_the_library_and_the_demo_need_no_extra(tmp_path):
    code = f"""
import importlib, json, pkgutil, tsunagi
failed = {{}}
for module in pkgutil.walk_packages(tsunagi.__path__, "tsunagi."):
    if module.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(module.name)
    except ImportError as exc:
        failed[module.name] = str(exc)
from tsunagi.cli import main
code = main(["demo", "commit", "--data", {str(tmp_path / "demo")!r}, "--accounts", "8",
             "--transfers", "200", "--baseline", "5", "--batch", "100"])
code = code or main(["demo", "--data", {str(tmp_path / "connect")!r}])
print(json.dumps({{"failed": sorted(failed), "exit": code}}))
"""
    done = without(["http", "charts", "ethereum"], code)
    assert done.returncode == 0, done.stderr
    *shown, last = done.stdout.strip().splitlines()
    assert json.loads(last) == {"failed": sorted(NEEDS_AN_EXTRA), "exit": 0}
    assert "verify: ok" in "\n".join(shown)
    assert "order-0001" in "\n".join(shown) and "refunded" in "\n".join(shown)


@pytest.fixture
def chain(tmp_path) -> str:
    from tsunagi.cli import main
    from tsunagi.core.address import encode_address
    from tsunagi.core.keys import PrivateKey

    holder = encode_address(PrivateKey.generate().public_key)
    assert main(["init", str(tmp_path / "chain"), "--alloc", f"{holder}=1"]) == 0
    return str(tmp_path / "chain")


@pytest.mark.parametrize("flag", ["--http", "--metrics"])
def test_the_node_without_the_http_extra_says_how_to_install_it(chain, flag):
    done = tsunagi_without(["http"], "node", "--data", chain, "--listen", "127.0.0.1:0",
                           flag, "127.0.0.1:0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"tsunagi: node {flag} needs the http extra: "
                                  "pip install 'tsunagi[http]'")
    assert len(done.stderr.strip().splitlines()) == 1


def test_loadgen_out_without_the_charts_extra_says_so_before_running(tmp_path):
    stem = tmp_path / "result"
    done = tsunagi_without(["charts"], "loadgen", "--prepare", str(tmp_path / "c"), "--spawn",
                           str(tmp_path / "c"), "--accounts", "8", "--keys", "1", "--clients",
                           "1", "--mode", "baseline", "--count", "20", "--out", str(stem))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("tsunagi: loadgen --out needs the charts extra: "
                                  "pip install 'tsunagi[charts]'")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists() and not stem.with_suffix(".json").exists()
