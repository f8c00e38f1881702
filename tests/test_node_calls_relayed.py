"""Contract calls reach the block maker wherever a client sends them: peers relay calls with
their payloads (relay_calls), so a node that only relays, a consortium's validator and a
consortium's follower all take submit_calls, and the client is answered once a final block
holds each call, with the contract's result.

Method: real `tsunagi node` processes on loopback with the example NameRegistry contract
installed (--contract). A proof-of-work chain of a miner and a node that does not mine; a
consortium chain of four validators (each checks every call's block and runs the contract)
and a follower that is not a validator. Clients send signed calls to the node that does not
make blocks, or to one validator; the answers, the results read back through that node, and
the contract's state on every node say where each call went. One validator is SIGKILLed and
calls still go through the other three.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil

import net_helpers
import pytest
from net_helpers import NetNode, free_ports, wait_until

from tsunagi.consensus.certificate import CertResult, ValidatorSet, check_certificate
from tsunagi.contracts import examples
from tsunagi.contracts.chain import call_record
from tsunagi.contracts.runtime import CallCode
from tsunagi.core.block import decode_block
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keyfile import save_key
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger

CHAIN = 14
INSTALL = ("--contract", "names=tsunagi.contracts.examples:NameRegistry")
SOURCE = hashlib.sha256(inspect.getsource(examples).encode()).digest()
VALIDATORS = [PrivateKey.from_bytes(bytes([0x50 + n]) * 32) for n in range(4)]
TIMEOUTS = {"timeout_propose_ms": 800, "timeout_prevote_ms": 400,
            "timeout_precommit_ms": 400, "timeout_delta_ms": 200, "block_wait_ms": 20}
# Other test modules set the nodes' passphrase too: key files are made with whichever is set
# when a test runs.
net_helpers.ENV.setdefault("TSUNAGI_PASSPHRASE", "relayed calls")


def chain_dirs(root, count: int, users, **fields) -> list:
    config = ChainConfig(name="names", chain_id=CHAIN, asset_code="NAM",
                         allocations=tuple((key.public_key, 50) for key in users),
                         contracts=(("names", SOURCE),), **fields)
    first = root / "node0"
    Ledger.create(first, config, threads=1).close()
    dirs = [first]
    for n in range(1, count):
        dirs.append(shutil.copytree(first, root / f"node{n}"))
    return dirs


def register(client, key: PrivateKey, account: int, sequence: int, name: str):
    record, payload = call_record(CHAIN, sequence, account, 1, "register", [name])
    return client.submit_calls(record, key.sign_record(record), [payload]), record


def test_a_node_that_does_not_mine_relays_calls_with_their_payloads_to_the_miner(tmp_path):
    users = [PrivateKey.generate() for _ in range(2)]
    dirs = chain_dirs(tmp_path, 2, users)
    ports = free_ports(2)
    miner = NetNode(dirs[0], ports[0], [f"127.0.0.1:{ports[1]}"], mine=True, extra=INSTALL)
    relay = NetNode(dirs[1], ports[1], [f"127.0.0.1:{ports[0]}"], mine=False, extra=INSTALL)
    try:
        miner.start()
        relay.start()
        wait_until(lambda: relay.status().height >= 0 and _peers(relay) >= 1,
                   "the relay connected to the miner")
        with relay.client() as client:
            answer, record = register(client, users[0], 1, 1, "alice")
            assert list(answer.codes) == [Result.ok]
            taken, _ = register(client, users[1], 2, 1, "alice")
            assert list(taken.codes) == [Result.call_refused]
            result = client.call_result(bytes(answer.txids[0]))
            assert result is not None and CallCode(result.code) is CallCode.ok
        # The call's block was made by the miner, with the payload in it: both nodes hold it.
        height = answer.height
        for node in (miner, relay):
            with node.client() as client:
                wait_until(lambda: client.status().height >= height, "the block everywhere")
                block = decode_block(client.block(height))
                assert record in block.records.tobytes()
    finally:
        relay.stop()
        miner.stop()


def _peers(node: NetNode) -> int:
    with node.client() as client:
        return client.network().peers


@pytest.fixture
def consortium(tmp_path):
    users = [PrivateKey.generate() for _ in range(3)]
    validators = tuple((key.public_key, 1) for key in VALIDATORS)
    dirs = chain_dirs(tmp_path, 5, users, validators=validators, **TIMEOUTS)
    ports = free_ports(5)
    passphrase = net_helpers.ENV["TSUNAGI_PASSPHRASE"]
    files = [save_key(tmp_path / f"validator{n}.key", key, passphrase, scrypt_n=1024)
             for n, key in enumerate(VALIDATORS)]
    nodes = []
    for n, data in enumerate(dirs):
        peers = [f"127.0.0.1:{ports[m]}" for m in range(4) if m != n]
        extra = INSTALL + (("--validator-key", str(files[n])) if n < 4 else ())
        nodes.append(NetNode(data, ports[n], peers, mine=False, extra=extra))
    try:
        for node in nodes:
            node.start()
        wait_until(lambda: all(_peers(node) >= 3 for node in nodes[:4]),
                   "the validators connected to each other")
        yield nodes, users
    finally:
        for node in nodes:
            node.stop()


def test_calls_to_a_validator_and_to_a_follower_are_final_with_their_results(consortium):
    nodes, users = consortium
    answers = []
    with nodes[0].client() as client:  # a validator
        answer, _ = register(client, users[0], 1, 1, "alice")
        assert list(answer.codes) == [Result.ok]
        answers.append(answer)
        result = client.call_result(bytes(answer.txids[0]))
        assert CallCode(result.code) is CallCode.ok
    with nodes[4].client() as client:  # a follower: relays to the validators
        answer, _ = register(client, users[1], 2, 1, "bob")
        assert list(answer.codes) == [Result.ok]
        taken, _ = register(client, users[2], 3, 1, "alice")
        assert list(taken.codes) == [Result.call_refused]
        answers.append(answer)
    # Every call stands in a block its validators certified, the same on every node.
    genesis = ValidatorSet(tuple((key.public_key, 1) for key in VALIDATORS))
    for answer in answers:
        height = answer.height
        with nodes[1].client() as client:
            wait_until(lambda: client.status().height >= height, "the block on validator 1")
            data = client.block(height)
            chain_id = decode_block(client.block(0)).hash
        block = decode_block(data)
        assert check_certificate(bytes(block.seal), block.hash, height, chain_id, genesis,
                                 genesis) is CertResult.ok
        for node in nodes:
            with node.client() as client:
                wait_until(lambda: client.status().height >= height, "the block everywhere")
                assert decode_block(client.block(height)).hash == block.hash


def test_calls_go_on_with_one_validator_killed(consortium):
    nodes, users = consortium
    nodes[3].stop(kill=True)
    for n, (node, name) in enumerate(((nodes[0], "carol"), (nodes[4], "dave"))):
        with node.client() as client:
            answer, _ = register(client, users[n], n + 1, 1, name)
            assert list(answer.codes) == [Result.ok]
