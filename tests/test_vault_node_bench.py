"""The vault-through-the-node benchmark's flow still works, so its figures cannot rot: two
documents stored one a submit and two in one submit, both first ones opened over HTTPS, at
Argon2id test costs, against a real `tsunagi node --vault --http --tls-dev`.

Method: bench/bench_vault_node.py is loaded from its path and its run() is called as the
command line calls it; the opened parts must be the secrets stored, byte for byte. No figure
is asserted (tests never assert a speed).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "bench" / "bench_vault_node.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_vault_node", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_documents_stored_through_the_node_open_over_https_to_their_secrets():
    bench = load_bench()
    table = io.StringIO()
    figures = bench.run(2, 2, 2, bench.CHEAP, out=table)
    assert figures["opened"] == [bench.secret_of(0), bench.secret_of(1)]
    assert len(figures["single_s"]) == 2 and len(figures["batch_s"]) == 1
    assert all(len(seconds) == 4 for phase, seconds in figures["phases"].items()
               if phase in ("unlock", "approve", "release"))
    assert "opened over HTTPS" in table.getvalue() and "stored, 2 a submit" in table.getvalue()
