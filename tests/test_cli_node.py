"""The commands work against a running node as they do on its data directory.

Method: a chain made with `tsunagi init`, served by a real `tsunagi node` process on
127.0.0.1 (port 0, read from the line it prints when ready). While it runs, each command is run
with --node (and with TSUNAGI_NODE); a command naming the data directory instead is told the
node's address. After the node stops, the same commands on the directory must print the same.
"""

from __future__ import annotations

from cli_helpers import ENV, NodeProcess, answer, make_key, tsunagi


def test_commands_against_a_node_match_the_data_directory(tmp_path):
    alice, bob = make_key(tmp_path / "alice.key"), make_key(tmp_path / "bob.key")
    data = tmp_path / "chain"
    answer("init", data, "--alloc", f"{alice}=100.00")
    with NodeProcess(data) as node:
        busy = tsunagi("balance", data, "1", check=False)
        assert busy.returncode == 1
        assert f"add --node {node.address} instead" in busy.stderr

        opened = answer("open-account", "--node", node.address, "--key", tmp_path / "bob.key")
        assert opened["code"] == "ok" and opened["account"] == 2
        sent = answer("send", "--node", node.address, "--key", tmp_path / "alice.key",
                      "--from", alice, "--to", bob, "--amount", "12.25")
        assert sent["code"] == "ok" and sent["height"] == 2
        by_env = answer("send", "--key", tmp_path / "alice.key", "--from", "1", "--to", "2",
                        "--amount", "0.75", env={**ENV, "TSUNAGI_NODE": node.address})
        assert by_env["code"] == "ok" and by_env["height"] == 3
        remote = {who: tsunagi("balance", "--node", node.address, who).stdout
                  for who in ("1", alice, bob)}
        assert answer("balance", "--node", node.address, bob)["balance"] == "13.00"
        remote_verify = tsunagi("verify", "--node", node.address).stdout
        remote_blocks = tsunagi("blocks", "--node", node.address, "--count", "3").stdout
    assert remote_verify.strip() == "ok: 4 blocks, 5 records verified"
    assert remote_blocks.count("│ ") >= 3 * 6  # three rows of six cells
    local = {who: tsunagi("balance", data, who).stdout for who in ("1", alice, bob)}
    assert local == remote
    assert tsunagi("verify", data).stdout == remote_verify
    assert tsunagi("blocks", data, "--count", "3").stdout == remote_blocks


def test_a_node_that_is_not_there_gets_a_message_naming_the_flag(tmp_path):
    done = tsunagi("balance", "--node", "127.0.0.1:1", "1", check=False)
    assert done.returncode == 1
    assert "cannot reach a node at 127.0.0.1:1" in done.stderr and "--node" in done.stderr
    done = tsunagi("balance", "1", check=False)  # neither a directory nor a node
    assert done.returncode == 2 and "--node HOST:PORT" in done.stderr
    assert "TSUNAGI_NODE" in done.stderr
    done = tsunagi("balance", tmp_path, "1", "--node", "127.0.0.1:1", check=False)
    assert done.returncode == 2 and "not both" in done.stderr



def test_send_waits_for_confirmations_against_a_node(tmp_path):
    """`send --confirmations 2` answers once a second block builds on the transfer's; on a
    data directory it is a usage error (its blocks are final)."""
    import json
    import subprocess
    import sys

    from net_helpers import wait_until

    alice, bob = make_key(tmp_path / "alice.key"), make_key(tmp_path / "bob.key")
    data = tmp_path / "chain"
    answer("init", data, "--alloc", f"{alice}=100.00", "--alloc", f"{bob}=100.00")
    with NodeProcess(data) as node:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "tsunagi", "send", "--node", node.address, "--key",
             str(tmp_path / "alice.key"), "--from", alice, "--to", bob, "--amount", "1",
             "--confirmations", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        # Once alice's transfer is in a block (her balance moved), bob's goes in the next.
        wait_until(lambda: answer("balance", "--node", node.address, alice)["balance"]
                   == "99.00", "alice's transfer to be committed")
        assert waiting.poll() is None  # one block holds it: not yet two
        second = answer("send", "--node", node.address, "--key", tmp_path / "bob.key",
                        "--from", bob, "--to", alice, "--amount", "2")
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0 and "Traceback" not in err, err
        confirmed = json.loads(out)
        assert confirmed["code"] == "ok" and confirmed["height"] == second["height"] - 1
    refused = tsunagi("send", data, "--key", tmp_path / "alice.key", "--from", alice, "--to",
                      bob, "--amount", "1", "--confirmations", "2", check=False)
    assert refused.returncode == 2 and "--node HOST:PORT" in refused.stderr
    assert answer("balance", data, alice)["balance"] == "101.00"  # nothing was sent
