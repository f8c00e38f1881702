"""The Ethereum leg of ConnectionChain moves money only as its rules say, and proves every step
so that a light client believes the honest proof and refuses each kind of lie with its code.

Method: an in-process eth-tester chain (py-evm) per test, with the Vyper token and escrow of
tsunagi/connect/contracts deployed on it; the contracts are compiled once for the module (about
4 s here: token 1.0-1.3 s, escrow 2.6 s) into a temporary compile cache that every later deploy
reads. Balances, hold states and receipt statuses are read back from the chain; proofs come from
the connector and are checked by a light client that follows the chain's headers from genesis,
then spoiled one field at a time. eth-tester's time travel stands in for waiting for an expiry.
The receipt encoding is held against py-evm's own, and the keystore against files on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import rlp
from eth_account import Account
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.connect import eth_contracts, eth_keystore, limits
from tsunagi.connect.connector import Connector, StepProof, TxRef, TxStatus
from tsunagi.connect.eth_proof import (
    EVENTS,
    EthereumLightClient,
    StepCode,
    check_step,
    expect,
)
from tsunagi.connect.ethereum import EthereumChain, EthereumConnector
from tsunagi.errors import ConfigError, EncodingError, KeyFileError

HOUR_S = 3600
GAS = limits.eth_call_gas


@pytest.fixture(scope="module", autouse=True)
def compiled(tmp_path_factory):
    """Compiles both contracts once into a cache of this module's own; every deploy of the
    module then reads it (the compile time is printed with -s)."""
    cache = tmp_path_factory.mktemp("vyper-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSUNAGI_CACHE_DIR", str(cache))
        started = time.perf_counter()
        contracts = {name: eth_contracts.compile_contract(name) for name in
                     eth_contracts.CONTRACTS}
        print(f"compiled the Vyper contracts in {time.perf_counter() - started:.1f} s")
        yield SimpleNamespace(cache=cache / "vyper", contracts=contracts)


@pytest.fixture
def world():
    """A fresh chain: the token (issuer: the first development account), the escrow whose
    authority is a new key, a payer holding 1,000 and approving the escrow for 600, a shop,
    the connector and a light client that follows the chain from genesis."""
    chain = EthereumChain()
    issuer, payer, shop, stranger = chain.accounts[:4]
    authority = Account.create()
    chain.fund(authority.address, 10**18)
    token = chain.deploy("token", "Yen", "JPY")
    escrow = chain.deploy("escrow", token.address, authority.address)
    token.functions.mint(payer, 1000).transact({"from": issuer})
    token.functions.approve(escrow.address, 600).transact({"from": payer})
    connector = EthereumConnector(chain, token.address, escrow.address, authority)
    light = EthereumLightClient(chain.chain_id, chain.header(0))
    return SimpleNamespace(chain=chain, token=token, escrow=escrow, authority=authority,
                           issuer=issuer, payer=payer, shop=shop, stranger=stranger,
                           connector=connector, light=light)


def balance(world, address: str) -> int:
    return world.token.functions.balanceOf(address).call()


def sync(world) -> None:
    """The light client takes every header up to the chain's newest."""
    for header in world.connector.follow(world.light.tip_height + 1):
        assert world.light.add(header) == StepCode.ok


def proven(world, ref: TxRef, name: str, **args) -> StepCode:
    sync(world)
    proof = world.connector.find(ref.txid)
    contract = world.token.address if name in ("Transfer", "Approval") else world.escrow.address
    return world.light.check(proof, expect(contract, name, **args))


def send_as(world, sender: str, call) -> int:
    """Sends ``call`` from an unlocked development account with fixed gas, so a revert is
    mined; answers the receipt's status."""
    txid = call.transact({"from": sender, "gas": GAS})
    return world.chain.web3.eth.wait_for_transaction_receipt(txid).status


def later(world, seconds: int) -> int:
    return world.chain.latest_time_s() + seconds


# --- contracts --------------------------------------------------------------------------------


def test_the_compiled_events_are_those_the_checker_decodes(compiled):
    found = {}
    for contract in compiled.contracts.values():
        for entry in contract.abi:
            if entry["type"] == "event":
                found[entry["name"]] = tuple((field["name"], field["type"], field["indexed"])
                                             for field in entry["inputs"])
    assert found == EVENTS


def test_the_compile_cache_is_keyed_by_the_source_and_survives_damage(compiled, monkeypatch):
    monkeypatch.setenv("TSUNAGI_CACHE_DIR", str(compiled.cache.parent))
    again = eth_contracts.compile_contract("token")
    first = compiled.contracts["token"]
    assert again.from_cache and (again.abi, again.bytecode) == (first.abi, first.bytecode)
    cached = compiled.cache / f"token-{first.source_sha256}.json"
    assert cached.is_file()
    cached.write_text("{not json")  # a damaged cache compiles again, and is rewritten
    redone = eth_contracts.compile_contract("token")
    assert not redone.from_cache and redone.bytecode == first.bytecode
    assert json.loads(cached.read_text())["bytecode"] == first.bytecode.hex()


def test_the_token_mints_for_its_owner_only_and_moves_by_approval(world):
    assert balance(world, world.payer) == 1000
    assert send_as(world, world.stranger, world.token.functions.mint(world.stranger, 5)) == 0
    assert balance(world, world.stranger) == 0
    token = world.token.functions
    assert send_as(world, world.payer, token.transfer(world.shop, 100)) == 1
    assert send_as(world, world.payer, token.transfer(world.shop, 10_000)) == 0  # too much
    assert send_as(world, world.payer, token.approve(world.stranger, 50)) == 1
    assert send_as(world, world.stranger, token.transferFrom(world.payer, world.shop, 60)) == 0
    assert send_as(world, world.stranger, token.transferFrom(world.payer, world.shop, 50)) == 1
    assert (balance(world, world.payer), balance(world, world.shop)) == (850, 150)
    assert token.allowance(world.payer, world.stranger).call() == 0
    assert token.totalSupply().call() == 1000


def test_a_hold_moves_the_payers_tokens_into_escrow(world):
    transfer_id = b"\x01" * 32
    ref = world.connector.hold(transfer_id, world.payer, 300, later(world, HOUR_S))
    assert ref.status == TxStatus.ok
    assert (balance(world, world.payer), balance(world, world.escrow.address)) == (700, 300)
    state = world.connector.hold_state(transfer_id)
    assert (state["payer"], state["amount"], state["state"]) == (world.payer, 300, "held")
    # More than the payer approved is refused, and moves nothing.
    assert world.connector.hold(b"\x02" * 32, world.payer, 301, later(world, HOUR_S)).status \
        == TxStatus.failed
    assert balance(world, world.escrow.address) == 300


def test_the_payer_may_hold_its_own_tokens_but_a_stranger_may_not(world):
    hold = world.escrow.functions.hold
    expiry = later(world, HOUR_S)
    assert send_as(world, world.stranger, hold(b"\x03" * 32, world.payer, 10, expiry)) == 0
    assert send_as(world, world.payer, hold(b"\x03" * 32, world.payer, 10, expiry)) == 1
    assert balance(world, world.escrow.address) == 10


def test_release_by_the_authority_pays_out_and_returns_the_rest(world):
    transfer_id = b"\x04" * 32
    world.connector.hold(transfer_id, world.payer, 300, later(world, HOUR_S))
    ref = world.connector.post(transfer_id, world.shop, 200)
    assert ref.status == TxStatus.ok
    assert (balance(world, world.payer), balance(world, world.shop),
            balance(world, world.escrow.address)) == (800, 200, 0)
    assert world.connector.hold_state(transfer_id)["state"] == "released"
    assert world.connector.post(transfer_id, world.shop, 100).status == TxStatus.failed
    assert world.connector.void(transfer_id).status == TxStatus.failed  # not paid twice
    assert balance(world, world.shop) == 200


def test_release_or_void_by_another_address_is_refused(world):
    transfer_id = b"\x05" * 32
    world.connector.hold(transfer_id, world.payer, 300, later(world, HOUR_S))
    escrow = world.escrow.functions
    for sender in (world.payer, world.shop, world.issuer):
        assert send_as(world, sender, escrow.release(transfer_id, world.shop, 300)) == 0
        assert send_as(world, sender, escrow.void(transfer_id)) == 0
    with pytest.raises(Exception, match="only the authority"):  # what a caller is told
        escrow.release(transfer_id, world.shop, 300).transact({"from": world.shop})
    assert (balance(world, world.escrow.address), balance(world, world.shop)) == (300, 0)
    assert world.connector.hold_state(transfer_id)["state"] == "held"


def test_void_returns_the_whole_hold(world):
    transfer_id = b"\x06" * 32
    world.connector.hold(transfer_id, world.payer, 300, later(world, HOUR_S))
    assert world.connector.void(transfer_id).status == TxStatus.ok
    assert (balance(world, world.payer), balance(world, world.escrow.address)) == (1000, 0)
    assert world.connector.hold_state(transfer_id)["state"] == "voided"


def test_an_expired_hold_returns_to_the_payer_by_anyones_call(world):
    transfer_id = b"\x07" * 32
    expiry = later(world, HOUR_S)
    world.connector.hold(transfer_id, world.payer, 300, expiry)
    refund = world.escrow.functions.refund_expired(transfer_id)
    assert send_as(world, world.stranger, refund) == 0  # not yet expired
    world.chain.time_travel(expiry)
    # From the expiry on, the authority can no longer pay out: the money is the payer's.
    assert world.connector.post(transfer_id, world.shop, 300).status == TxStatus.failed
    assert send_as(world, world.stranger, refund) == 1
    assert (balance(world, world.payer), balance(world, world.escrow.address)) == (1000, 0)
    assert world.connector.hold_state(transfer_id)["state"] == "refunded"
    assert send_as(world, world.stranger, refund) == 0  # once only


def test_a_hold_id_is_used_once_ever(world):
    transfer_id = b"\x08" * 32
    world.connector.hold(transfer_id, world.payer, 100, later(world, HOUR_S))
    assert world.connector.hold(transfer_id, world.payer, 100, later(world, HOUR_S)).status \
        == TxStatus.failed
    world.connector.void(transfer_id)
    assert world.connector.hold(transfer_id, world.payer, 100, later(world, HOUR_S)).status \
        == TxStatus.failed  # not even after the first has ended
    assert (balance(world, world.payer), balance(world, world.escrow.address)) == (1000, 0)


def test_a_hold_needs_an_amount_and_a_future_expiry(world):
    connector = world.connector
    assert connector.hold(b"\x09" * 32, world.payer, 0, later(world, HOUR_S)).status \
        == TxStatus.failed
    assert connector.hold(b"\x0a" * 32, world.payer, 5, world.chain.latest_time_s()).status \
        == TxStatus.failed
    assert balance(world, world.escrow.address) == 0


# --- the connector's answers and proofs ------------------------------------------------------


def test_each_operation_answers_its_txref_and_a_proof_the_light_client_accepts(world):
    connector, held, paid = world.connector, b"\x11" * 32, b"\x12" * 32
    assert all(callable(getattr(connector, name)) for name in vars(Connector)
               if not name.startswith("_") and name != "chain_id")
    pool = Account.create()
    world.chain.fund(pool.address, 10**17)
    world.token.functions.mint(pool.address, 50).transact({"from": world.issuer})
    connector = EthereumConnector(world.chain, world.token.address, world.escrow.address,
                                  world.authority, accounts=[pool])
    expiry = later(world, HOUR_S)
    steps = [
        (connector.hold(held, world.payer, 100, expiry), "Held",
         {"id": held, "payer": world.payer, "amount": 100, "expiry": expiry}),
        (connector.void(held), "Voided", {"id": held, "payer": world.payer, "amount": 100}),
        (connector.hold(paid, world.payer, 100, expiry), "Held", {"id": paid, "amount": 100}),
        (connector.post(paid, world.shop, 70), "Released",
         {"id": paid, "receiver": world.shop, "amount": 70, "rest": 30}),
        (connector.transfer(pool.address, world.shop, 40), "Transfer",
         {"sender": pool.address, "receiver": world.shop, "value": 40}),
    ]
    for ref, name, args in steps:
        header = world.chain.header(ref.height)
        assert ref.status == TxStatus.ok and ref.chain_id == world.chain.chain_id
        assert ref.block_hash == keccak(header)
        assert ref.time_s == world.chain.web3.eth.get_block(ref.height).timestamp
        proof = connector.find(ref.txid)
        assert isinstance(proof, StepProof)
        assert (proof.txid, proof.height, proof.block_hash, proof.header) == \
            (ref.txid, ref.height, ref.block_hash, header)
        assert proven(world, ref, name, **args) == StepCode.ok, name
    assert balance(world, world.shop) == 110


def test_an_expiry_refund_sent_by_anyone_is_proven_too(world):
    transfer_id = b"\x13" * 32
    expiry = later(world, HOUR_S)
    world.connector.hold(transfer_id, world.payer, 100, expiry)
    world.chain.time_travel(expiry)
    bystander = Account.create()
    world.chain.fund(bystander.address, 10**17)
    ref = world.connector.refund_expired(transfer_id, sender=bystander)
    assert proven(world, ref, "Refunded", id=transfer_id, payer=world.payer, amount=100) \
        == StepCode.ok


def test_find_and_follow_answer_only_what_the_chain_has(world):
    assert world.connector.find(b"\x00" * 32) is None
    height = world.connector.finalized_height()
    assert height == world.chain.web3.eth.block_number
    headers = world.connector.follow(0)
    assert [header.height for header in headers] == list(range(height + 1))
    assert all(header.block_hash == world.chain.web3.eth.get_block(header.height).hash
               for header in headers)
    assert world.connector.follow(height + 1) == []
    with pytest.raises(EncodingError, match="32 bytes"):
        world.connector.hold(b"short", world.payer, 1, later(world, HOUR_S))
    with pytest.raises(EncodingError, match="not an Ethereum address"):
        world.connector.post(b"\x01" * 32, "0x1234", 1)
    with pytest.raises(ConfigError, match="holds no key"):
        world.connector.transfer(world.payer, world.shop, 1)


def test_a_connector_with_another_key_than_the_escrows_authority_is_refused(world):
    with pytest.raises(ConfigError, match="names the authority"):
        EthereumConnector(world.chain, world.token.address, world.escrow.address,
                          Account.create())


def test_proofs_hold_for_every_position_of_a_block_of_many_transactions(world):
    # eth-tester takes one pending transaction per sender, so each comes from its own account.
    senders = world.chain.accounts[4:10]
    for sender in senders:
        world.token.functions.mint(sender, 100).transact({"from": world.issuer})
    tester = world.chain.tester
    tester.disable_auto_mine_transactions()
    sent = [world.token.functions.transfer(world.shop, amount).transact(
        {"from": sender, "gas": GAS}) for amount, sender in enumerate(senders, start=1)]
    tester.mine_blocks(1)  # the pending transactions, in one block
    tester.enable_auto_mine_transactions()
    receipts = [world.chain.web3.eth.get_transaction_receipt(txid) for txid in sent]
    assert len({receipt.blockNumber for receipt in receipts}) == 1
    assert sorted(receipt.transactionIndex for receipt in receipts) == list(range(len(sent)))
    sync(world)
    for amount, receipt in enumerate(receipts, start=1):
        proof = world.connector.find(bytes(receipt.transactionHash))
        assert proof.position == receipt.transactionIndex
        assert len(proof.receipt_proof) > 1  # a path through a branch, not a lone leaf
        assert world.light.check(proof, expect(world.token.address, "Transfer",
                                               value=amount)) == StepCode.ok
        assert world.light.check(proof, expect(world.token.address, "Transfer",
                                               value=amount + 1)) == StepCode.event_mismatch
    assert balance(world, world.shop) == sum(range(1, len(sent) + 1))


def test_receipts_are_encoded_as_py_evm_encodes_them(world):
    world.connector.hold(b"\x14" * 32, world.payer, 10, later(world, HOUR_S))
    chain = world.chain.tester.backend.chain
    for height in range(world.chain.height() + 1):
        block = chain.get_canonical_block_by_number(height)
        _, _, receipts = world.chain.block_parts(height)
        assert receipts == [receipt.encode() for receipt in block.get_receipts(chain.chaindb)]


# --- check_step refuses each lie with its code -----------------------------------------------


@pytest.fixture
def honest(world):
    """An honest proof of a hold, the event it shows, and a second step (a release) with its
    proof, both in blocks the light client trusts."""
    transfer_id = b"\x21" * 32
    hold = world.connector.hold(transfer_id, world.payer, 300, later(world, HOUR_S))
    release = world.connector.post(transfer_id, world.shop, 300)
    sync(world)
    held = expect(world.escrow.address, "Held", id=transfer_id, amount=300)
    return SimpleNamespace(world=world, proof=world.connector.find(hold.txid), event=held,
                           other=world.connector.find(release.txid))


def check(honest, proof, event=None) -> StepCode:
    return honest.world.light.check(proof, event or honest.event)


def test_the_honest_proof_is_accepted(honest):
    assert check(honest, honest.proof) == StepCode.ok
    assert check_step(honest.proof, honest.world.light.known_headers, honest.event) \
        == StepCode.ok
    held = [event for event in honest.proof.events() if event.name == "Held"]
    assert held[0].arg("payer") == bytes.fromhex(honest.world.payer[2:])


def test_a_transaction_not_in_the_block_named_is_refused(honest):
    other = honest.other  # a real, trusted block that does not hold the transaction
    moved = dataclasses.replace(honest.proof, header=other.header, block_hash=other.block_hash,
                                height=other.height)
    assert check(honest, moved) == StepCode.transaction_not_in_block


def test_a_forged_header_is_refused(honest):
    fields = rlp.decode(honest.proof.header)
    fields[5] = keccak(b"another receipts root")
    forged = rlp.encode(fields)
    assert check(honest, dataclasses.replace(honest.proof, header=forged)) \
        == StepCode.header_hash_mismatch


def test_a_header_not_linked_to_the_trusted_chain_is_refused(honest):
    fields = rlp.decode(honest.proof.header)
    fields[0] = keccak(b"a parent nobody knows")  # a consistent header of another chain
    header = rlp.encode(fields)
    unlinked = dataclasses.replace(honest.proof, header=header, block_hash=keccak(header))
    assert check(honest, unlinked) == StepCode.header_not_linked
    assert honest.world.light.add(header) == StepCode.header_not_linked


def test_a_proof_for_another_transaction_is_refused(honest):
    renamed = dataclasses.replace(honest.proof, txid=honest.other.txid)
    assert check(honest, renamed) == StepCode.transaction_mismatch


def test_a_failed_receipt_is_refused(honest):
    world = honest.world
    failed = world.connector.void(b"\x21" * 32)  # released already: mined, and reverted
    assert failed.status == TxStatus.failed
    sync(world)
    event = expect(world.escrow.address, "Voided", id=b"\x21" * 32)
    assert check(honest, world.connector.find(failed.txid), event) == StepCode.receipt_failed


def test_the_wrong_event_or_contract_is_refused(honest):
    escrow, token = honest.world.escrow.address, honest.world.token.address
    assert check(honest, honest.proof, expect(escrow, "Held", amount=301)) \
        == StepCode.event_mismatch
    assert check(honest, honest.proof, expect(escrow, "Released")) == StepCode.event_mismatch
    stranger = honest.world.stranger
    assert check(honest, honest.proof, expect(stranger, "Held")) == StepCode.contract_mismatch
    # The hold's token movement is a Transfer of the token into the escrow.
    assert check(honest, honest.proof, expect(token, "Transfer", receiver=escrow, value=300)) \
        == StepCode.ok


def test_other_spoiled_fields_get_their_codes(honest):
    proof, other = honest.proof, honest.other
    assert check(honest, dataclasses.replace(proof, height=proof.height + 1)) \
        == StepCode.height_mismatch
    assert check(honest, dataclasses.replace(proof, receipt=other.receipt)) \
        == StepCode.receipt_not_in_block
    assert check(honest, dataclasses.replace(proof, receipt_proof=other.receipt_proof)) \
        == StepCode.receipt_not_in_block
    assert check(honest, dataclasses.replace(proof, chain_id=proof.chain_id + 1)) \
        == StepCode.wrong_chain
    assert check(honest, dataclasses.replace(proof, header=b"\xc0")) \
        == StepCode.header_malformed
    for spoiled in (dict(txid=b"short"), dict(transaction_proof=[b"\x00"]),
                    dict(transaction_proof=()), dict(position=-1), dict(height="7"),
                    dict(receipt_proof=(b"\x00",) * (limits.eth_proof_nodes_max + 1))):
        assert check(honest, dataclasses.replace(proof, **spoiled)) == StepCode.malformed
    assert check(honest, "not a proof") == StepCode.malformed


def test_the_light_client_takes_only_the_next_header(world):
    light, headers = world.light, world.connector.follow(1)
    assert light.add(headers[1]) == StepCode.header_not_linked  # skips a block
    assert light.add(headers[0]) == StepCode.ok
    assert light.add(headers[0]) == StepCode.ok  # known already
    assert light.add(dataclasses.replace(headers[1], block_hash=b"\x00" * 32)) \
        == StepCode.header_hash_mismatch
    fields = rlp.decode(headers[1].header)
    fields[8] = rlp.encode(99)[1:]  # linked, but numbered wrongly
    assert light.add(rlp.encode(fields)) == StepCode.height_mismatch
    assert light.add(b"\x01\x02") == StepCode.header_malformed
    assert light.tip_height == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_spoiled_byte_anywhere_is_refused_never_raised(honest, data):
    proof = honest.proof
    field = data.draw(st.sampled_from(["header", "transaction", "receipt", "transaction_proof",
                                       "receipt_proof"]))
    value = getattr(proof, field)
    if isinstance(value, tuple):
        index = data.draw(st.integers(0, len(value) - 1))
        spoiled = value[:index] + (_flip(value[index], data),) + value[index + 1:]
    else:
        spoiled = _flip(value, data)
    code = check(honest, dataclasses.replace(proof, **{field: spoiled}))
    assert isinstance(code, StepCode) and code != StepCode.ok


def _flip(value: bytes, data) -> bytes:
    at = data.draw(st.integers(0, len(value) - 1))
    bit = data.draw(st.integers(0, 7))
    return value[:at] + bytes([value[at] ^ (1 << bit)]) + value[at + 1:]


# --- the connection node's key ---------------------------------------------------------------

LOW_COST = 2**10  # scrypt n for tests: the format is the same, the guessing cost is not


def test_the_keystore_round_trips_with_mode_0600(tmp_path):
    account = Account.create()
    path = tmp_path / "authority.json"
    assert eth_keystore.save_key(path, account.key, "correct horse", scrypt_n=LOW_COST) \
        == account.address
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["crypto"]["kdf"] == "scrypt" and document["crypto"]["kdfparams"]["n"] \
        == LOW_COST
    assert account.key.hex() not in path.read_text()
    assert eth_keystore.load_key(path, "correct horse").key == account.key
    with pytest.raises(KeyFileError, match="exists"):
        eth_keystore.save_key(path, Account.create().key, "x", scrypt_n=LOW_COST)
    assert eth_keystore.load_key(path, "correct horse").key == account.key  # not replaced


def test_a_wrong_passphrase_says_so(tmp_path):
    path = tmp_path / "authority.json"
    eth_keystore.save_key(path, Account.create().key, "correct horse", scrypt_n=LOW_COST)
    with pytest.raises(KeyFileError, match="passphrase is wrong"):
        eth_keystore.load_key(path, "battery staple")


def test_the_passphrase_comes_from_the_environment_or_an_error_says_where(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / "authority.json"
    monkeypatch.setenv(eth_keystore.PASSPHRASE_ENVIRONMENT, "from the environment")
    account = eth_keystore.create_key(path, scrypt_n=LOW_COST)
    assert eth_keystore.load_key(path).address == account.address
    monkeypatch.delenv(eth_keystore.PASSPHRASE_ENVIRONMENT)
    monkeypatch.setattr(sys, "stdin", None)  # no terminal to ask on
    with pytest.raises(KeyFileError, match=eth_keystore.PASSPHRASE_ENVIRONMENT):
        eth_keystore.load_key(path)


def test_a_key_file_others_may_read_or_a_missing_one_is_refused(tmp_path):
    path = tmp_path / "authority.json"
    eth_keystore.save_key(path, Account.create().key, "pass", scrypt_n=LOW_COST)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        eth_keystore.load_key(path, "pass")
    with pytest.raises(KeyFileError, match="no Ethereum key file"):
        eth_keystore.load_key(tmp_path / "missing.json", "pass")
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a version 3"):
        eth_keystore.load_key(junk, "pass")


def test_the_connector_runs_on_a_key_opened_from_its_keystore(world, tmp_path):
    path = tmp_path / "authority.json"
    eth_keystore.save_key(path, world.authority.key, "pass", scrypt_n=LOW_COST)
    opened = eth_keystore.load_key(path, "pass")
    connector = EthereumConnector(world.chain, world.token.address, world.escrow.address, opened)
    assert connector.hold(b"\x31" * 32, world.payer, 5, later(world, HOUR_S)).status \
        == TxStatus.ok


# --- without the extra -----------------------------------------------------------------------


def test_without_the_extra_the_modules_import_and_using_them_says_what_to_install():
    blocked = ["eth_tester", "web3", "vyper", "eth_account", "eth_hash", "rlp", "trie", "eth",
               "eth_abi", "eth_keys", "eth_utils"]
    code = (f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
            "from tsunagi.connect import ethereum, eth_proof, eth_keystore, eth_contracts\n"
            "try:\n    ethereum.EthereumChain()\nexcept ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("the Ethereum connector needs the ethereum extra: "
                                  "pip install 'tsunagi[ethereum]'")
