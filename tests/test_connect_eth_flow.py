"""The connection contract believes an Ethereum step only from proofs: a final block linked
to the genesis it was given, a receipt under that block's receiptsRoot, and the escrow's or
token's event in it; each kind of lie is refused with its code and records nothing.

Method: one in-process eth-tester chain (py-evm) per test with the Vyper token and escrow
deployed; the connector makes real transactions and their proofs. The connection contract runs
in the contract runtime over a world state (the same code a connection chain installs), one
call per block, and every answer is read back as a refusal code or as state.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import rlp
from eth_account import Account
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.connect import contract as cc
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.ethereum import EthereumChain, EthereumConnector
from tsunagi.contracts import (
    Call,
    CallCode,
    Registry,
    Runtime,
    WorldState,
    decode,
    source_sha256,
)

TARGET = "tsunagi.connect.contract:ConnectionContract"
OPERATOR, ETH = 7, 1337
TRANSFER_TOPIC = keccak(b"Transfer(address,address,uint256)")
HELD_TOPIC = keccak(b"Held(bytes32,address,uint256,uint256)")


class Connection:
    """The connection contract in a runtime of its own, one call per block."""

    def __init__(self) -> None:
        registry = Registry()
        registry.install(TARGET, source_sha256(TARGET))
        self.runtime, self.state, self.height = Runtime(registry), WorldState(), 0

    def call(self, method: str, args: list):
        self.height += 1
        txid = self.height.to_bytes(32, "big")
        call = Call("connection", method, args, OPERATOR, b"", txid)
        return self.runtime.execute_block(self.state, self.height, 1_700_000_000 + self.height,
                                          [call])[0]

    def ok(self, method: str, args: list):
        result = self.call(method, args)
        assert result.code is CallCode.ok, result
        return decode(result.value)

    def refused(self, method: str, args: list) -> ConnectCode:
        root = self.state.root
        result = self.call(method, args)
        assert result.code is CallCode.refused, result
        assert self.state.root == root  # nothing recorded
        return ConnectCode(result.refuse_code)


def word(value: int | bytes) -> bytes:
    if isinstance(value, int):
        return value.to_bytes(32, "big")
    return bytes(12) + value if len(value) == 20 else value


@pytest.fixture
def world():
    chain = EthereumChain()
    issuer, payer, shop = chain.accounts[:3]
    authority = Account.create()
    chain.fund(authority.address, 10**18)
    token = chain.deploy("token", "Yen", "JPY")
    escrow = chain.deploy("escrow", token.address, authority.address)
    token.functions.mint(authority.address, 1000).transact({"from": issuer})
    token.functions.mint(payer, 1000).transact({"from": issuer})
    token.functions.approve(escrow.address, 600).transact({"from": payer})
    connector = EthereumConnector(chain, token.address, escrow.address, authority)
    connection = Connection()
    connection.ok("setup", [99, [OPERATOR]])
    return SimpleNamespace(chain=chain, token=token, escrow=escrow, authority=authority,
                           payer=payer, shop=shop, connector=connector, connection=connection)


def link(world, confirmations: int = 0) -> None:
    world.connection.ok("add_ethereum_chain", [ETH, world.chain.header(0), confirmations])


def headers(world, first: int = 1) -> list:
    return [header.header for header in world.connector.follow(first)]


def proof_of(world, ref) -> dict:
    proof = world.connector.find(ref.txid)
    return {"header": proof.header, "position": proof.position,
            "receipt_proof": list(proof.receipt_proof),
            "transaction_proof": list(proof.transaction_proof)}


def pay_shop(world, amount: int = 250):
    """The pool (the authority's tokens) pays the shop: the payout step of demo 1 on B."""
    ref = world.connector.transfer(world.authority.address, world.shop, amount)
    event = [bytes.fromhex(world.token.address[2:]),
             [TRANSFER_TOPIC, word(bytes.fromhex(world.authority.address[2:])),
              word(bytes.fromhex(world.shop[2:]))], word(amount)]
    return ref, event


def test_a_payout_on_ethereum_is_recorded_from_its_receipt_proof_once(world):
    link(world)
    ref, event = pay_shop(world)
    where = world.connection.ok("eth_event", [ETH, proof_of(world, ref), headers(world),
                                              *event])
    assert where == [ETH, ref.txid, ref.height, ref.block_hash, ref.time_s]
    assert world.token.functions.balanceOf(world.shop).call() == 250
    assert world.connection.refused("eth_event", [ETH, proof_of(world, ref), [], *event]) \
        is ConnectCode.eth_tx_used


def test_an_escrow_hold_on_ethereum_is_proven_by_its_held_event(world):
    link(world)
    transfer_id = keccak(b"hanako-1")
    expiry_s = world.chain.latest_time_s() + 3600
    ref = world.connector.hold(transfer_id, world.payer, 400, expiry_s)
    event = [bytes.fromhex(world.escrow.address[2:]),
             [HELD_TOPIC, transfer_id, word(bytes.fromhex(world.payer[2:]))],
             word(400) + word(expiry_s)]
    world.connection.ok("eth_event", [ETH, proof_of(world, ref), headers(world), *event])
    assert world.connector.hold_state(transfer_id)["state"] == "held"


def test_a_lying_ethereum_connector_gets_nothing_recorded_with_its_code(world):
    link(world)
    ref, event = pay_shop(world)
    other, _ = pay_shop(world, 5)
    proof = proof_of(world, ref)
    chained = headers(world)
    forged = dict(proof, header=proof["header"][:-1] + bytes([proof["header"][-1] ^ 1]))
    assert world.connection.refused("eth_event", [ETH, forged, chained, *event]) \
        is ConnectCode.eth_block_unknown
    # The receipt proof of another transaction under this block's header.
    swapped = dict(proof, receipt_proof=proof_of(world, other)["receipt_proof"])
    assert world.connection.refused("eth_event", [ETH, swapped, chained, *event]) \
        is ConnectCode.eth_receipt_not_in_block
    swapped = dict(proof, transaction_proof=proof_of(world, other)["transaction_proof"])
    assert world.connection.refused("eth_event", [ETH, swapped, chained, *event]) \
        is ConnectCode.eth_receipt_not_in_block
    # The proof of the other transaction, claimed as this payout (amount 250, not 5).
    assert world.connection.refused("eth_event", [ETH, proof_of(world, other), chained,
                                                  *event]) is ConnectCode.eth_event_mismatch
    assert world.connection.refused("eth_event", [ETH, dict(proof, position=3), chained,
                                                  *event]) is ConnectCode.eth_receipt_not_in_block
    assert world.connection.refused("eth_headers", [ETH, chained[1:]]) \
        is ConnectCode.eth_header_unlinked
    assert world.connection.refused("eth_headers", [ETH, [b"\xc0"]]) \
        is ConnectCode.eth_header_malformed
    world.connection.ok("eth_event", [ETH, proof, chained, *event])  # the truth still holds


def test_a_reverted_transaction_and_a_block_not_yet_final_are_refused(world):
    link(world, confirmations=2)
    ref = world.connector.transfer(world.authority.address, world.shop, 10**9)  # too much
    assert ref.status.name == "failed"
    assert world.connection.refused("eth_event", [ETH, proof_of(world, ref), headers(world),
                                                  b"\x00" * 20, [], b""]) \
        is ConnectCode.eth_not_final
    paid, event = pay_shop(world)
    pay_shop(world, 1)
    pay_shop(world, 1)
    assert world.connection.refused("eth_event", [ETH, proof_of(world, ref), headers(world),
                                                  *event]) is ConnectCode.eth_receipt_failed
    world.connection.ok("eth_event", [ETH, proof_of(world, paid), headers(world), *event])


def test_ethereum_kind_arguments_are_checked(world):
    assert world.connection.refused("add_ethereum_chain", [ETH, b"\xc0", 0]) \
        is ConnectCode.eth_chain_invalid
    link(world)
    assert world.connection.refused("add_ethereum_chain", [ETH, world.chain.header(0), 0]) \
        is ConnectCode.chain_exists
    assert cc.KIND_ETHEREUM == "ethereum"


# --- transfers with Ethereum legs -------------------------------------------------------------
# Both ends are the same eth-tester chain linked under two ids: the source's escrow contract
# holds the payer's tokens, the target's pool pays the shop. (The tsunagi end of demo 1 with
# Ethereum as chain B needs ConnectionNode to drive an EthereumConnector: not done yet.)

SOURCE, TARGET_CHAIN = 1337, 1338
RULE = {"rule_id": 1, "source": SOURCE, "target": TARGET_CHAIN, "rate_numerator": 2,
        "rate_denominator": 1, "fee": 10, "settlement": 1, "pool": 1, "escrow_authority": 1,
        "escrow_expiry_s": 3600, "payout_window_s": 600}


def address(value: str) -> bytes:
    return bytes.fromhex(value[2:])


@pytest.fixture
def linked(world):
    settlement = world.chain.accounts[3]
    for chain_id in (SOURCE, TARGET_CHAIN):
        world.connection.ok("add_ethereum_chain", [chain_id, world.chain.header(0), 0])
        world.connection.ok("eth_accounts", [
            chain_id, address(world.token.address), address(world.escrow.address),
            address(world.authority.address), address(settlement)])
    world.connection.ok("add_rule", [RULE])
    world.settlement = settlement
    return world


def step(world, method: str, transfer_id: bytes, ref) -> None:
    assert ref.status.name == "ok"
    for chain_id in (SOURCE, TARGET_CHAIN):  # each light client follows the chain
        world.connection.ok("eth_headers", [chain_id, headers(world)])
    world.connection.ok(method, [transfer_id, proof_of(world, ref), []])


def escrow(world, transfer_id: bytes):
    payout = world.connection.ok("eth_request", [transfer_id, 1, address(world.payer),
                                                 address(world.shop), 400])
    assert payout == (400 - 10) * 2
    expiry_s = world.chain.latest_time_s() + 7200
    ref = world.connector.hold(transfer_id, world.payer, 400, expiry_s)
    step(world, "eth_escrowed", transfer_id, ref)
    return ref


def balance(world, owner: str) -> int:
    return world.token.functions.balanceOf(owner).call()


def test_an_ethereum_escrow_pays_out_settles_and_completes_with_a_proven_trail(linked):
    world, transfer_id = linked, keccak(b"order-1")
    escrow(world, transfer_id)
    world.connection.ok("confirm", [transfer_id, True])
    step(world, "eth_paid", transfer_id, world.connector.transfer(world.authority.address,
                                                                  world.shop, 780))
    step(world, "eth_settled", transfer_id,
         world.connector.post(transfer_id, world.settlement, 400))
    world.connection.ok("complete", [transfer_id])
    trail = world.connection.ok("trail", [transfer_id])
    assert trail["state"] == "complete"
    assert [entry["step"] for entry in trail["trail"]] == [
        "request", "escrow", "escrow_final", "rate", "confirm", "payout", "payout_final",
        "payout_seen", "settle", "settle_final", "settle_seen", "complete"]
    assert (balance(world, world.shop), balance(world, world.settlement),
            balance(world, world.payer)) == (780, 400, 600)
    assert world.connector.hold_state(transfer_id)["state"] == "released"


def test_the_shop_refuses_and_the_ethereum_escrow_returns_with_the_refund_on_the_trail(linked):
    world, transfer_id = linked, keccak(b"order-2")
    held = escrow(world, transfer_id)
    world.connection.ok("confirm", [transfer_id, False])
    # Lies first: the hold's own receipt, and a token payment, offered as the refund.
    assert world.connection.refused("eth_refunded", [transfer_id, proof_of(world, held), []]) \
        is ConnectCode.eth_tx_used
    other = world.connector.transfer(world.authority.address, world.shop, 400)
    assert world.connection.refused("eth_refunded", [transfer_id, proof_of(world, other),
                                                     headers(world)]) \
        is ConnectCode.eth_event_mismatch
    assert world.connection.ok("trail", [transfer_id])["state"] == "refund"
    ref = world.connector.void(transfer_id)
    step(world, "eth_refunded", transfer_id, ref)
    trail = world.connection.ok("trail", [transfer_id])
    assert trail["state"] == "refunded"
    assert trail["trail"][-3]["txid"] == ref.txid
    assert balance(world, world.payer) == 1000
    assert world.connector.hold_state(transfer_id)["state"] == "voided"


# --- keccak, RLP and the trie walk in the contract ----------------------------------------------

def test_keccak256_is_ethereums_and_the_source_check_allows_only_it_beside_the_api():
    from tsunagi.contracts import keccak256
    from tsunagi.contracts.check import check_source
    from tsunagi.errors import ConfigError

    # The known answer of the empty string (the Ethereum yellow paper's KEC(())).
    assert keccak256(b"").hex() == \
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    check_source("from tsunagi.contracts import keccak256\n", "ok.py")
    with pytest.raises(ConfigError, match="Registry"):
        check_source("from tsunagi.contracts import Registry\n", "no.py")


items = st.recursive(st.binary(max_size=70), lambda inner: st.lists(inner, max_size=4),
                     max_leaves=12)


@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=200)
@given(items)
def test_the_contracts_rlp_decoder_agrees_with_the_rlp_package(item):
    encoded = rlp.encode(item)
    decoded = cc.rlp_decode(encoded)
    if decoded is not None:  # None only past the contract's depth bound
        assert decoded == rlp.decode(encoded)
    else:
        assert _depth(item) > cc.ETH_RLP_DEPTH_MAX


def _depth(item) -> int:
    return 0 if isinstance(item, bytes) else 1 + max([_depth(x) for x in item] or [0])


@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=300)
@given(st.binary(max_size=300), st.lists(st.binary(max_size=120), max_size=4))
def test_malformed_rlp_headers_receipts_and_proofs_get_none_never_a_crash(data, nodes):
    assert cc.rlp_decode(data) in (None, rlp.decode(data) if _valid(data) else None)
    for noncanonical in (b"\x81\x05", b"\xb8\x01a", b"\xf8\x01\x80"):
        assert cc.rlp_decode(noncanonical) is None
    assert cc.eth_header_fields(data) is None or len(cc.eth_header_fields(data)) >= 15
    cc.eth_receipt(data)
    assert cc.mpt_value(keccak(data), b"\x80", nodes + [data]) in (None, *_values(data))


def _valid(data: bytes) -> bool:
    try:
        rlp.decode(data)
    except rlp.DecodingError:
        return False
    return True


def _values(data: bytes) -> list:
    decoded = rlp.decode(data) if _valid(data) else None
    return [x for x in (decoded if isinstance(decoded, list) else []) if isinstance(x, bytes)]
