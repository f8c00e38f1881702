"""Every command explains a mistake in the words of the command line, never with a traceback.

Method: each subcommand's --help is shown in-process; then each command runs as a user would
(`python -m tsunagi` in a subprocess) with a typical wrong input. The exit code must say what
kind of failure it was (2: the command line, 1: the chain or the files), stderr must say what
to do in terms of flags and commands, and nothing may mention the Python API or show a
traceback.
"""

from __future__ import annotations

import argparse

import pytest
from cli_helpers import answer, make_key, tsunagi

from tsunagi import cli
from tsunagi.node.server import NodeSettings
from tsunagi.node.service import SETTING_HELP, RestSettings

PYTHON_WORDS = ("Traceback", "=True", "Ledger.", ".py", "__init__", "positional argument")


def subcommands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from subcommands(child, (*prefix, name))


def test_every_command_has_help(capsys):
    names = list(subcommands(cli.build_parser()))
    assert {("send",), ("mint",), ("policy", "set"), ("holds",), ("node",)} <= set(names)
    for words in names:
        with pytest.raises(SystemExit) as done:
            cli.main([*words, "--help"])
        assert done.value.code == 0, words
        shown = capsys.readouterr().out
        assert "usage: tsunagi " + " ".join(words) in shown
        assert "node/limits.py" not in shown and "Traceback" not in shown


def test_node_help_describes_every_setting():
    from dataclasses import fields

    for item in fields(NodeSettings) + fields(RestSettings):
        assert len(SETTING_HELP[item.name].split()) >= 3, item.name


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A chain in `chain` (alice owns account 1), alice's key file, a folder without a chain."""
    root = tmp_path_factory.mktemp("mistakes")
    alice = make_key(root / "alice.key")
    answer("init", root / "chain", "--alloc", f"{alice}=10")
    (root / "empty").mkdir()
    (root / "notakey.txt").write_text("hello")
    return root, alice


MISTAKES = [  # (arguments, exit code, words stderr must hold); {root} and {alice} filled in
    (["keygen", "/nonexistent/dir/k.key"], 1, "create it first"),
    (["keygen", "{root}/alice.key"], 1, "choose another path"),
    (["init", "{root}/new"], 2, "--alloc ADDRESS=AMOUNT"),
    (["init", "{root}/chain", "--alloc", "{alice}=1"], 1, "pick a new directory"),
    (["init", "{root}/new", "--alloc", "nonsense"], 2, "ADDRESS=AMOUNT"),
    (["init", "{root}/new", "--alloc", "tsu1abc=1"], 1, "--alloc tsu1abc=1"),
    (["init", "{root}/new", "--config", "{root}/missing.json"], 1, "--config"),
    (["init", "{root}/new", "--config", "{root}/notakey.txt"], 1, "JSON"),
    (["blocks", "{root}/chain", "--count", "-1"], 2, "--count"),
    (["blocks", "{root}/chain", "--count", "0"], 2, "--count"),
    (["blocks", "{root}/chain", "--last", "-2"], 2, "--last"),
    (["blocks", "--node", "nonsense"], 1, "--node"),
    (["balance", "{root}/empty", "1"], 1, "tsunagi init"),
    (["balance", "{root}/chain", "99"], 1, "no account 99"),
    (["balance", "{root}/chain", "tsu1bad"], 1, "address"),
    (["holds", "{root}/chain", "99"], 1, "no account 99"),
    (["verify", "{root}/empty"], 1, "tsunagi init"),
    (["send", "{root}/chain", "--key", "{root}/missing.key", "--from", "1", "--to", "1",
      "--amount", "1"], 1, "no key file"),
    (["send", "{root}/chain", "--key", "{root}/notakey.txt", "--from", "1", "--to", "1",
      "--amount", "1"], 1, "not a tsunagi key file"),
    (["send", "{root}/chain", "--key", "{root}/alice.key", "--from", "1", "--to", "1",
      "--amount", "abc"], 1, "not an amount"),
    (["send", "{root}/chain", "--key", "{root}/alice.key", "--from", "1", "--to", "1",
      "--amount", "1", "--key-slot", "8"], 2, "--key-slot"),
    (["send", "--node", "127.0.0.1:1", "--key", "{root}/alice.key", "--from", "1", "--to",
      "1", "--amount", "1"], 1, "cannot reach a node at 127.0.0.1:1"),
    (["mint", "{root}/chain", "--key", "{root}/alice.key", "--from", "1", "--to", "1",
      "--amount", "-1"], 1, "non-negative"),
    (["hold", "{root}/chain", "--key", "{root}/alice.key", "--from", "1", "--to", "1",
      "--amount", "1", "--expires-in", "soon"], 2, "--expires-in"),
    (["hold", "{root}/chain", "--key", "{root}/alice.key", "--from", "1", "--to", "1",
      "--amount", "1", "--expires-in", "1h", "--hashlock", "zz"], 2, "--hashlock"),
    (["post", "{root}/chain", "--key", "{root}/alice.key", "--hold", "x"], 2, "PAYER:SEQUENCE"),
    (["post", "{root}/chain", "--key", "{root}/alice.key", "--hold", "1:5"], 1, "no hold 1:5"),
    (["void", "{root}/chain", "--key", "{root}/alice.key", "--hold", "1:5"], 1, "no hold 1:5"),
    (["policy", "{root}/chain"], 2, "choose from 'set', 'revoke'"),
    (["policy", "set", "{root}/chain", "--key", "{root}/alice.key", "--account", "1",
      "--slot", "9", "--policy-key", "{alice}"], 2, "slot is 1..7"),
    (["policy", "set", "{root}/chain", "--key", "{root}/alice.key", "--account", "1",
      "--slot", "1", "--policy-key", "nonsense"], 1, "address"),
    (["policy", "revoke", "{root}/chain", "--key", "{root}/alice.key", "--account", "2",
      "--slot", "1"], 1, "no account 2"),
    (["node", "--data", "{root}/empty", "--listen", "127.0.0.1:0"], 1, "tsunagi init"),
    (["pow", "--header", "zz"], 2, "--header"),
    (["demo", "commit", "--data", "{root}/chain", "--accounts", "2"], 1, "--data"),
    (["demo", "--data", "{root}/chain"], 1, "--data"),
    (["connect", "--data", "{root}/chain", "transfers"], 1, "tsunagi demo"),
]


@pytest.mark.parametrize("words, code, says", MISTAKES,
                         ids=[" ".join(words[:2]) + f" {i}" for i, (words, _, _)
                              in enumerate(MISTAKES)])
def test_a_mistake_gets_a_message_in_the_words_of_the_command_line(place, words, code, says):
    root, alice = place
    done = tsunagi(*[word.format(root=root, alice=alice) for word in words], check=False)
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert not [word for word in PYTHON_WORDS if word in done.stderr], done.stderr
