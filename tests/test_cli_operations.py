"""Mint, burn, hold, post, void and policy keys from the command line, and the signer check.

Method: one chain made with `tsunagi init` (alice is the issuer, account 1, and holds an
allocation, account 2; bob opens account 3), driven through the commands as a user types
them, once on the data directory and once through a real `tsunagi node` process. After each
step the balances and held amounts `tsunagi balance` prints are checked; at the end the chain
verifies. A key that may not sign for the account a command debits is refused before
anything is signed, with a message naming the key, the owner and the flag to change.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from cli_helpers import NodeProcess, answer, make_key, tsunagi


@pytest.fixture(params=["directory", "node"])
def chain(request, tmp_path):
    """(run, keys): run(command, *args) runs a command on the chain, as DATA or --node."""
    keys = {name: make_key(tmp_path / f"{name}.key") for name in ("alice", "bob", "carol")}
    data = tmp_path / "chain"
    answer("init", data, "--issuer", keys["alice"], "--alloc", f"{keys['alice']}=100.00")
    answer("open-account", data, "--key", tmp_path / "bob.key")
    where = [data]
    node = None
    if request.param == "node":
        node = NodeProcess(data)
        where = ["--node", node.address]

    def run(command: str, *args, check=True):
        words = command.split()  # "policy set" is a command of two words
        return tsunagi(*words, *where, *args, check=check)

    run.key = lambda name: ["--key", tmp_path / f"{name}.key"]
    yield run, keys
    if node is not None:
        node.stop()
    assert "ok: " in tsunagi("verify", data).stdout


def funds(run, account) -> tuple[str, str]:
    shown = json.loads(run("balance", str(account)).stdout)
    return shown["balance"], shown["held"]


def signed(run, command: str, *args, code: str = "ok") -> dict:
    done = run(command, *args, check=False)
    result = json.loads(done.stdout)
    assert result["code"] == code, done.stdout
    assert done.returncode == (0 if code == "ok" else 1)
    return result


def test_mint_and_burn(chain):
    run, _ = chain
    signed(run, "mint", *run.key("alice"), "--from", "1", "--to", "3", "--amount", "10")
    assert funds(run, 3) == ("10.00", "0.00")
    signed(run, "mint", *run.key("alice"), "--from", "1", "--to", "1", "--amount", "7")
    signed(run, "burn", *run.key("alice"), "--from", "1", "--amount", "2.5")
    assert funds(run, 1) == ("4.50", "0.00")
    signed(run, "burn", *run.key("alice"), "--from", "1", "--amount", "6",
           code="insufficient_funds")
    signed(run, "mint", *run.key("bob"), "--from", "3", "--to", "3", "--amount", "1",
           code="not_issuer")  # bob owns account 3, which is no issuer


def test_hold_post_and_void(chain):
    run, _ = chain
    made = signed(run, "hold", *run.key("alice"), "--from", "2", "--to", "3", "--amount", "4",
                  "--expires-in", "1h")
    payer, sequence = made["hold"].split(":")
    assert payer == "2" and int(sequence) > 0
    assert funds(run, 2) == ("96.00", "4.00")
    listed = json.loads(run("holds", "3").stdout)
    assert listed["open_holds"] == 1 and listed["holds"][0]["hold"] == made["hold"]
    assert listed["holds"][0]["amount"] == "4.00" and listed["held"] == "0.00"
    signed(run, "post", *run.key("bob"), "--hold", made["hold"], "--amount", "1.50")
    assert funds(run, 2) == ("98.50", "0.00")  # the rest came back to the payer
    assert funds(run, 3) == ("1.50", "0.00")
    signed(run, "post", *run.key("bob"), "--hold", made["hold"], code="hold_already_posted")

    preimage = bytes(range(32))
    locked = signed(run, "hold", *run.key("alice"), "--from", "2", "--to", "3", "--amount",
                    "3", "--expires-in", "90m", "--hashlock",
                    hashlib.sha256(preimage).hexdigest())
    assert funds(run, 2) == ("95.50", "3.00")
    signed(run, "post", *run.key("bob"), "--hold", locked["hold"], "--preimage", "00" * 32,
           code="hashlock_mismatch")
    signed(run, "void", *run.key("bob"), "--hold", locked["hold"])
    assert funds(run, 2) == ("98.50", "0.00")

    third = signed(run, "hold", *run.key("alice"), "--from", "2", "--to", "3", "--amount",
                   "2", "--expires-in", "2d", "--hashlock",
                   hashlib.sha256(preimage).hexdigest())
    signed(run, "post", *run.key("bob"), "--hold", third["hold"], "--preimage",
           preimage.hex())
    assert funds(run, 3) == ("3.50", "0.00") and funds(run, 2) == ("96.50", "0.00")


def test_policy_key_set_used_and_revoked(chain):
    run, keys = chain
    signed(run, "policy set", *run.key("alice"), "--account", "2", "--slot", "1",
           "--policy-key", keys["carol"], "--amount-max", "2", "--allowance", "3",
           "--expires-in", "7d", "--recipient", "3")
    as_carol = [*run.key("carol"), "--key-slot", "1", "--from", "2", "--to", "3"]
    signed(run, "send", *as_carol, "--amount", "2")
    signed(run, "send", *as_carol, "--amount", "2.01", code="policy_amount")
    signed(run, "send", *as_carol, "--amount", "1.5", code="policy_allowance")
    signed(run, "send", *as_carol, "--amount", "1")
    assert funds(run, 3) == ("3.00", "0.00") and funds(run, 2) == ("97.00", "0.00")
    signed(run, "policy revoke", *run.key("alice"), "--account", "2", "--slot", "1")
    refused = run("send", *as_carol, "--amount", "0.5", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "policy slot 1 is empty" in refused.stderr and "--key-slot" in refused.stderr
    assert funds(run, 3) == ("3.00", "0.00")


def test_a_key_that_does_not_own_the_account_is_refused_before_signing(chain):
    run, keys = chain
    before = json.loads(run("balance", "3").stdout)
    refused = run("send", *run.key("bob"), "--from", "1", "--to", "3", "--amount", "1",
                  check=False)
    assert refused.returncode == 1 and refused.stdout == ""  # nothing was submitted
    assert refused.stderr.strip() == (
        f"tsunagi: {refused.args[refused.args.index('--key') + 1]} ({keys['bob']}) does not "
        f"own account 1 (owned by {keys['alice']}); it owns account 3: use --from 3")
    refused = run("hold", *run.key("alice"), "--from", "3", "--to", "2", "--amount", "1",
                  "--expires-in", "60", check=False)
    assert refused.returncode == 1
    assert "it owns accounts 1, 2: use --from with one of them" in refused.stderr
    refused = run("send", *run.key("carol"), "--from", "2", "--to", "3", "--amount", "1",
                  check=False)
    assert "it owns no account" in refused.stderr and "--key" in refused.stderr
    refused = run("policy set", *run.key("bob"), "--account", "2", "--slot", "1",
                  "--policy-key", keys["carol"], check=False)
    assert "does not own account 2" in refused.stderr and "use --account 3" in refused.stderr
    made = signed(run, "hold", *run.key("alice"), "--from", "2", "--to", "3", "--amount", "1",
                  "--expires-in", "1h")
    refused = run("void", *run.key("alice"), "--hold", made["hold"], check=False)
    assert refused.returncode == 1
    assert "the hold's authority" in refused.stderr and "does not own account 3" \
        in refused.stderr
    assert json.loads(run("balance", "3").stdout) == before
