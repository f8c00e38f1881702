"""`tsunagi demo`, the README's main job, commits both ways, verifies, and protects other data.

Method: run it small through the library and through the console command; check the chain it
leaves (heights, money conserved, verify) and that it refuses a directory it did not make.
"""

import subprocess
import sys

import pytest

from tsunagi.demo import run_demo
from tsunagi.errors import StorageError
from tsunagi.ledger import Ledger


def test_demo_commits_baseline_and_batches_and_verifies(tmp_path):
    result = run_demo(tmp_path / "d", accounts=12, transfers=300, baseline_transfers=10,
                      batch_size=100)
    assert result.verified and result.batched_rate > 0 and result.baseline_rate > 0
    assert result.blocks == 1 + 10 + 3  # genesis, one block per baseline transfer, 3 batches
    with Ledger.open(tmp_path / "d") as ledger:  # the chain is where the demo says it is
        assert ledger.state.balance_total() == 12 * 10**9  # transfers move, never make money
        assert sum(1 for _ in ledger.history(1, limit=1000)) > 0
    again = run_demo(tmp_path / "d", accounts=5, transfers=50, baseline_transfers=5,
                     batch_size=50)  # an earlier demo's directory is replaced
    assert again.blocks == 1 + 5 + 1


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep me")
    with pytest.raises(StorageError, match="not made by"):
        run_demo(tmp_path / "precious", accounts=3, transfers=10, baseline_transfers=1)
    assert (tmp_path / "precious" / "data.txt").read_text() == "keep me"


def test_demo_command_prints_both_rates():
    done = subprocess.run([sys.executable, "-m", "tsunagi", "demo", "commit", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--baseline" in done.stdout


def test_demo_command_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tsunagi", "demo", "commit", "--data", str(tmp_path / "d"),
         "--accounts",
         "8", "--transfers", "200", "--baseline", "5", "--batch", "100"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "batched / baseline" in done.stdout and "verify: ok" in done.stdout
    hint = f"tsunagi blocks {tmp_path / 'd'}"
    assert hint in " ".join(done.stdout.split())  # rich may wrap the line
    listed = subprocess.run([sys.executable, "-m", "tsunagi", *hint.split()[1:]],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "records" in listed.stdout and "Traceback" not in listed.stderr
