"""Contracts on a tsunagi chain, end to end through the ledger: the real runtime and world state.

Method: a chain whose config names the example NameRegistry contract by the SHA-256 of its
source. Signed call records with their payloads go through Ledger.submit_batch; the test reads
the codes, the world state, the state root in each block and a proof of a stored value against
that root alone; then a second node connects the blocks, the first reopens (snapshot) and
replays (no snapshot), and a node whose installed code differs is refused before it runs.
"""

import hashlib
import inspect

import pytest

from tsunagi.contracts import examples
from tsunagi.contracts.chain import ChainContracts, call_record
from tsunagi.contracts.state import verify_proof
from tsunagi.core import block as blk
from tsunagi.core import entries
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError
from tsunagi.ledger.ledger import Ledger

CHAIN = 11
ALICE, BOB = 1, 2
INSTALLED = {"names": "tsunagi.contracts.examples:NameRegistry"}
SOURCE_SHA256 = hashlib.sha256(inspect.getsource(examples).encode()).digest()


@pytest.fixture
def setup(tmp_path):
    keys = {ALICE: PrivateKey.generate(), BOB: PrivateKey.generate()}
    config = ChainConfig(name="names", chain_id=CHAIN, asset_code="TSU",
                         allocations=tuple((keys[n].public_key, 10) for n in (ALICE, BOB)),
                         contracts=(("names", SOURCE_SHA256),))
    return keys, config


def submit(ledger, keys, calls):
    """calls: (account, sequence, method, args); one batch."""
    records, signatures, payloads = b"", b"", []
    for account, sequence, method, args in calls:
        record, payload = call_record(CHAIN, sequence, account, 1, method, args)
        records += record
        signatures += keys[account].sign_record(record)
        payloads.append(payload)
    return ledger.submit_batch(records, signatures, payloads=payloads)


def test_names_registered_by_calls_are_proven_by_the_blocks_state_root(setup, tmp_path):
    keys, config = setup
    contracts = ChainContracts(config, INSTALLED)
    ledger = Ledger.create(tmp_path / "a", config, threads=1, calls=contracts)
    answer = submit(ledger, keys, [
        (ALICE, 1, "register", ["alice", b"\x01"]),
        (BOB, 1, "register", ["alice", b"\x02"]),  # taken: the contract refuses
        (BOB, 2, "register", ["bob"]),
        (BOB, 3, "no_such_method", []),
        (ALICE, 2, "point", ["bob", b"\x03"]),  # not Alice's name
    ])
    assert list(answer.codes) == [Result.ok, Result.call_refused, Result.ok,
                                  Result.call_failed, Result.call_refused]
    first = ledger.block(answer.height)
    root = entries.state_root_of(blk.block_entries(blk.decode_block(first)))
    assert root == contracts.state.root
    # Alice's entry, proven from the root in the block alone.
    key = next(k for k, _ in contracts.state.items() if k.endswith(b"name:alice"))
    value = contracts.state.get(key)
    assert verify_proof(root, key, value, contracts.state.prove(key))
    assert not verify_proof(root, key, value + b"x", contracts.state.prove(key))
    answer = submit(ledger, keys, [(ALICE, 3, "point", ["alice", b"\x04"])])
    assert list(answer.codes) == [Result.ok]
    second = ledger.block(answer.height)
    expected_root = contracts.state.root
    ledger.close()

    # Another node with the same contract installed connects the blocks: same state.
    other = ChainContracts(config, INSTALLED)
    peer = Ledger.create(tmp_path / "b", config, threads=1, calls=other)
    assert peer.connect_block(first) is blk.BlockResult.ok
    assert peer.connect_block(second) is blk.BlockResult.ok
    assert other.state.root == expected_root
    peer.close()

    # Reopened from the snapshot saved at close, then with no snapshot (replayed).
    for remove_snapshot in (False, True):
        if remove_snapshot:
            (tmp_path / "a" / "contracts.snapshot").unlink()
        again = ChainContracts(config, INSTALLED)
        reopened = Ledger.open(tmp_path / "a", threads=1, calls=again)
        try:
            assert again.state.root == expected_root
            assert reopened.verify().ok
        finally:
            reopened.close()


def test_a_node_refuses_to_run_a_chain_whose_contract_code_it_does_not_have(setup, tmp_path):
    keys, config = setup
    with pytest.raises(ConfigError, match="install its code with the node"):
        ChainContracts(config, {})
    other = tmp_path / "names.py"
    other.write_text(inspect.getsource(examples) + "\n# changed\n")
    with pytest.raises(ConfigError):
        ChainContracts(config, {"names": f"{other}:NameRegistry"})
