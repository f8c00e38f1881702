"""Contract calls through a real node process: a client sends signed calls with their payloads.

Method: a chain whose config names the example NameRegistry contract is made on disk; `tsunagi
node` serves it with the contract's code installed (--contract); a client submits calls
(submit_calls) beside a plain transfer and a call sent without its payload by another client,
and reads the codes, then the calls' full results, the contract's state and the chain's
headers through the node; malformed frames are refused while the node keeps serving. A node
started without the contract's code refuses to start with what to pass.
"""

import hashlib
import inspect
import subprocess
import sys

import pytest
from cli_helpers import ENV, NodeProcess

from tsunagi.contracts import encoding, examples
from tsunagi.contracts.chain import call_record
from tsunagi.contracts.runtime import CallCode
from tsunagi.core import keys
from tsunagi.core import records as rec
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import NodeError
from tsunagi.ledger.ledger import Ledger
from tsunagi.node import protocol as p
from tsunagi.node.client import Client

CHAIN = 12
INSTALL = "names=tsunagi.contracts.examples:NameRegistry"


@pytest.fixture
def chain(tmp_path):
    keys = [PrivateKey.generate() for _ in range(2)]
    config = ChainConfig(
        name="names", chain_id=CHAIN, asset_code="NAM",
        allocations=tuple((key.public_key, 50) for key in keys),
        contracts=(("names", hashlib.sha256(inspect.getsource(examples).encode()).digest()),))
    Ledger.create(tmp_path / "chain", config, threads=1).close()
    return tmp_path / "chain", keys


def test_calls_reach_the_contract_through_the_node(chain):
    data, (alice, bob) = chain
    with NodeProcess(data, "--contract", INSTALL) as node:
        host, port = node.address.rsplit(":", 1)
        with Client(host, int(port)) as client:
            first, first_payload = call_record(CHAIN, 1, 1, 1, "register", ["alice"])
            taken, taken_payload = call_record(CHAIN, 1, 2, 1, "register", ["alice"])
            pay = rec.transfer(CHAIN, 2, 1, 2, 5)
            answer = client.submit_calls(
                first + taken + pay,
                alice.sign_record(first) + bob.sign_record(taken) + alice.sign_record(pay),
                [first_payload, taken_payload])
            assert list(answer.codes) == [Result.ok, Result.call_refused, Result.ok]
            assert client.balance(2) == 55
            # A call sent as a plain record carries no payload: refused, nothing else lost.
            bare, _ = call_record(CHAIN, 2, 2, 1, "register", ["bob"])
            answer = client.submit_batch(bare, bob.sign_record(bare))
            assert list(answer.codes) == [Result.payload_missing]
            # A payload that does not match its record is the same refusal.
            other, _ = call_record(CHAIN, 3, 2, 1, "register", ["bob"])
            answer = client.submit_calls(other, bob.sign_record(other),
                                         [b"not these arguments"])
            assert list(answer.codes) == [Result.payload_missing]
            # A frame whose payload count disagrees with its calls never reaches the ledger.
            with pytest.raises(ValueError, match="1 call records need as many payloads"):
                client.submit_calls(other, bob.sign_record(other), [])
            good, payload = call_record(CHAIN, 4, 2, 1, "register", ["bob"])
            answer = client.submit_calls(good, bob.sign_record(good), [payload])
            assert list(answer.codes) == [Result.ok]


def test_malformed_submit_calls_frames_are_refused():
    record, payload = call_record(CHAIN, 1, 1, 1, "register", ["x"])
    message = p.SubmitCalls(record, bytes(64), (payload,))
    frame = p.encode(message, 7, 1)
    assert p.decode(_one(frame)).payloads == (payload,)
    body = bytearray(frame)
    body[-len(payload) - 4] ^= 0xFF  # the payload's length now runs past the frame
    with pytest.raises(p.ProtocolError):
        p.decode(_one(bytes(body)))


def _one(frame: bytes):
    reader = p.FrameReader((1,), 1 << 24)
    reader.feed(frame)
    return reader.next_frame()


def test_a_node_without_the_contracts_code_does_not_start(chain):
    data, _ = chain
    done = subprocess.run([sys.executable, "-m", "tsunagi", "node", "--data", str(data),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert done.returncode != 0
    assert "install its code with the node" in done.stderr


def test_init_names_a_contract_by_its_source_hash_and_a_node_serves_it(tmp_path):
    key = PrivateKey.generate()
    from tsunagi.core.address import encode_address
    done = subprocess.run(
        [sys.executable, "-m", "tsunagi", "init", str(tmp_path / "c"), "--name", "names",
         "--alloc", f"{encode_address(key.public_key)}=1.00", "--contract", INSTALL],
        capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    config = ChainConfig.from_json((tmp_path / "c" / "config.json").read_bytes())
    assert config.contracts == (("names", hashlib.sha256(
        inspect.getsource(examples).encode()).digest()),)
    with NodeProcess(tmp_path / "c", "--contract", INSTALL) as node:
        host, port = node.address.rsplit(":", 1)
        with Client(host, int(port)) as client:
            record, payload = call_record(config.chain_id, 1, 1, 1, "register", ["shop"])
            answer = client.submit_calls(record, key.sign_record(record), [payload])
            assert list(answer.codes) == [Result.ok]
    bad = subprocess.run(
        [sys.executable, "-m", "tsunagi", "init", str(tmp_path / "d"), "--name", "x",
         "--alloc", f"{encode_address(key.public_key)}=1.00", "--contract", "names"],
        capture_output=True, text=True, env=ENV, timeout=120)
    assert bad.returncode != 0 and "--contract takes NAME=MODULE:CLASS" in bad.stderr


def test_a_client_reads_the_contracts_state_results_and_headers_through_the_node(chain):
    data, (alice, bob) = chain
    with NodeProcess(data, "--contract", INSTALL) as node:
        host, port = node.address.rsplit(":", 1)
        with Client(host, int(port)) as client:
            first, first_payload = call_record(CHAIN, 1, 1, 1, "register", ["alice"])
            taken, taken_payload = call_record(CHAIN, 1, 2, 1, "register", ["alice"])
            client.submit_calls(first + taken, alice.sign_record(first) + bob.sign_record(taken),
                                [first_payload, taken_payload])
            ok = client.call_result(keys.txid(first))
            assert (ok.code, encoding.decode(ok.value)) == (CallCode.ok, 1)
            [[name, fields]] = encoding.decode(ok.events)
            assert (name, encoding.decode(fields)) == ("registered", {"name": "alice", "owner": 1})
            refused = client.call_result(keys.txid(taken))
            assert (refused.code, refused.refuse_code) == (CallCode.refused, examples.NAME_TAKEN)
            assert refused.detail == "the name is taken"
            assert client.call_result(bytes(32)) is None
            entry = encoding.decode(client.contract_state(b"names\x00name:alice"))
            assert entry["owner"] == 1
            assert encoding.decode(client.contract_state(b"names\x00count")) == 1
            assert client.contract_state(b"names\x00name:bob") is None
            # Headers: every block's first 80 bytes, none past the tip.
            height = client.status().height
            headers = client.headers(0)
            assert len(headers) == 80 * (height + 1)
            assert headers[-80:] == client.block(height)[:80]
            assert client.headers(1, 1) == client.block(1)[:80]
            assert client.headers(height + 1) == b""


def test_a_chain_without_contracts_says_so_when_asked_for_contract_state(tmp_path):
    key = PrivateKey.generate()
    config = ChainConfig(name="plain", chain_id=13, asset_code="PLN",
                         allocations=((key.public_key, 5),))
    Ledger.create(tmp_path / "plain", config, threads=1).close()
    with NodeProcess(tmp_path / "plain") as node:
        host, port = node.address.rsplit(":", 1)
        with Client(host, int(port)) as client:
            with pytest.raises(NodeError, match="runs no contracts"):
                client.contract_state(b"names\x00count")
            assert len(client.headers(0)) == 80
