"""The ledger commands work end to end as a user types them: keys, a chain, payments.

Method: run `python -m tsunagi` in subprocesses against a temporary data directory, with the
passphrase in the environment, and check the JSON it prints and the balances that result.
"""

import json
import os
import subprocess
import sys

import pytest


def tsunagi(*args, env=None, check=True):
    done = subprocess.run([sys.executable, "-m", "tsunagi", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def env():
    return {**os.environ, "TSUNAGI_PASSPHRASE": "correct horse"}


def test_keys_chain_payment_balance_verify_blocks(tmp_path, env):
    alice = json.loads(tsunagi("keygen", tmp_path / "alice.key", env=env).stdout)
    bob = json.loads(tsunagi("keygen", tmp_path / "bob.key", env=env).stdout)
    assert alice["address"].startswith("tsu1") and alice["address"] != bob["address"]
    data = tmp_path / "chain"
    made = json.loads(tsunagi("init", data, "--name", "town", "--decimals", "2",
                              "--alloc", f"{alice['address']}=100.50", env=env).stdout)
    assert made["accounts"] == {"1": alice["address"]}
    opened = json.loads(tsunagi("open-account", data, "--key", tmp_path / "bob.key",
                                env=env).stdout)
    assert opened["code"] == "ok" and opened["account"] == 2

    sent = json.loads(tsunagi("send", data, "--key", tmp_path / "alice.key", "--from",
                              alice["address"], "--to", "2", "--amount", "12.25",
                              env=env).stdout)
    assert sent["code"] == "ok" and sent["height"] == 2
    assert json.loads(tsunagi("balance", data, "1").stdout)["balance"] == "88.25"
    assert json.loads(tsunagi("balance", data, bob["address"]).stdout)["balance"] == "12.25"

    overdraft = tsunagi("send", data, "--key", tmp_path / "alice.key", "--from", "1",
                        "--to", "2", "--amount", "1000", env=env, check=False)
    assert overdraft.returncode == 1
    assert json.loads(overdraft.stdout)["code"] == "insufficient_funds"

    assert "ok: 4 blocks" in tsunagi("verify", data).stdout
    listing = tsunagi("blocks", data).stdout
    assert "height" in listing and "records" in listing


def test_mistakes_get_a_message_not_a_traceback(tmp_path, env):
    done = tsunagi("balance", tmp_path / "nothing", "1", check=False)
    assert done.returncode == 1 and "tsunagi init" in done.stderr
    assert "Traceback" not in done.stderr
    address = json.loads(tsunagi("keygen", tmp_path / "k.key", env=env).stdout)["address"]
    wrong = {**env, "TSUNAGI_PASSPHRASE": "wrong"}
    data = tmp_path / "chain"
    tsunagi("init", data, "--alloc", f"{address}=1", env=env)
    done = tsunagi("open-account", data, "--key", tmp_path / "k.key", env=wrong, check=False)
    assert done.returncode == 1 and "passphrase" in done.stderr.lower()
    assert "Traceback" not in done.stderr
    done = tsunagi("send", data, "--key", tmp_path / "k.key", "--from", "1", "--to", "2",
                   "--amount", "1.234", env=env, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
