"""ConnectionChain between two tsunagi chains, end to end on real ledgers in temporary
directories: a payment from chain A to chain B runs as one connection contract through escrow.

Method: three Ledgers (chain A, chain B, and the connection chain running the connection
contract through ChainContracts), a TsunagiConnector per linked chain and a ConnectionNode
with its journal. The tests read what users care about: balances on each chain, the
transfer's state and its trail on the connection chain, each proven step re-checked from the
trail and the chains, the contract's codes for lying connectors and bad requests, and money
conserved on each chain with the escrow empty at the end.
"""

from __future__ import annotations

import pytest

from tsunagi import hashing
from tsunagi.connect import contract as cc
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode
from tsunagi.connect.tsunagi_chain import TsunagiConnector, check_step
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import CallCode, source_sha256
from tsunagi.core.block import decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger

CHAIN_A, CHAIN_B, CHAIN_C = 101, 102, 100
HANAKO, SETTLEMENT_A, AUTHORITY_A = 1, 2, 3  # accounts of chain A
SHOP, POOL, AUTHORITY_B = 1, 2, 3  # accounts of chain B
OPERATOR = 1  # the connection node's account on the connection chain
TARGET = "tsunagi.connect.contract:ConnectionContract"
RULE = {"rule_id": 7, "source": CHAIN_A, "target": CHAIN_B, "rate_numerator": 3,
        "rate_denominator": 2, "fee": 10, "settlement": SETTLEMENT_A, "pool": POOL,
        "escrow_authority": AUTHORITY_A, "escrow_expiry_s": 3600, "payout_window_s": 600}
START_S = 1_800_000_000


class Clock:
    """The one clock of the test's chains, moved by hand."""

    def __init__(self) -> None:
        self.now = START_S

    def __call__(self) -> int:
        return self.now


class World:
    """Chain A, chain B and the connection chain, with the node that links them."""

    def __init__(self, tmp_path, confirm=lambda transfer_id, entry: True) -> None:
        self.tmp_path, self.clock, self.confirm = tmp_path, Clock(), confirm
        self.keys_a = {n: PrivateKey.generate() for n in (HANAKO, SETTLEMENT_A, AUTHORITY_A)}
        self.keys_b = {n: PrivateKey.generate() for n in (SHOP, POOL, AUTHORITY_B)}
        self.operator_key = PrivateKey.generate()
        self.a = self._chain("a", CHAIN_A, self.keys_a, {HANAKO: 1000, SETTLEMENT_A: 1,
                                                        AUTHORITY_A: 1})
        self.b = self._chain("b", CHAIN_B, self.keys_b, {SHOP: 1, POOL: 100_000,
                                                        AUTHORITY_B: 1})
        self.config_c = ChainConfig(
            name="connection", chain_id=CHAIN_C, asset_code="CON",
            allocations=((self.operator_key.public_key, 1),),
            contracts=(("connection", bytes.fromhex(source_sha256(TARGET))),))
        self.contracts = ChainContracts(self.config_c, {"connection": TARGET})
        self.c = Ledger.create(tmp_path / "c", self.config_c, threads=1, calls=self.contracts)
        self.connector_a = TsunagiConnector(self.a, self.keys_a, authority=AUTHORITY_A,
                                            settlement=SETTLEMENT_A, now_s=self.clock)
        self.connector_b = TsunagiConnector(self.b, self.keys_b, authority=AUTHORITY_B,
                                            settlement=SHOP, now_s=self.clock)
        self.node = self.start_node()
        self.ok("setup", [CHAIN_C, [OPERATOR]])
        for ledger in (self.a, self.b):
            genesis = decode_block(ledger.block(0))
            self.ok("add_chain", [ledger.config.chain_id, cc.KIND_TSUNAGI_POW, genesis.hash,
                                  ledger.config.bits, 0])
        self.ok("add_rule", [RULE])
        self.totals = (self.total(self.a), self.total(self.b))

    def _chain(self, directory, chain_id, keys, amounts):
        config = ChainConfig(name=directory, chain_id=chain_id, asset_code=directory.upper(),
                             allocations=tuple((keys[n].public_key, amounts[n])
                                               for n in sorted(keys)))
        return Ledger.create(self.tmp_path / directory, config, threads=1)

    def start_node(self) -> ConnectionNode:
        return ConnectionNode(
            self.c, self.contracts, operator_account=OPERATOR, operator_key=self.operator_key,
            connectors={CHAIN_A: self.connector_a, CHAIN_B: self.connector_b},
            journal=Journal(self.tmp_path / "journal"), confirm=self.confirm,
            now_s=self.clock)

    def ok(self, method, args):
        result = self.node.call(method, args)
        assert result.code is CallCode.ok, result
        return result

    def refused(self, method, args) -> ConnectCode:
        result = self.node.call(method, args)
        assert result.code is CallCode.refused, result
        return ConnectCode(result.refuse_code)

    @staticmethod
    def total(ledger) -> int:
        accounts = range(1, 4)
        return sum(ledger.balance(n) + ledger.held(n) for n in accounts)

    def assert_conserved(self) -> None:
        assert (self.total(self.a), self.total(self.b)) == self.totals
        for ledger in (self.a, self.b):  # escrow empty: no account has money on hold
            assert [ledger.held(n) for n in range(1, 4)] == [0, 0, 0]

    def close(self) -> None:
        self.node.journal.close()
        for ledger in (self.a, self.b, self.c):
            ledger.close()


@pytest.fixture
def world(tmp_path):
    made = World(tmp_path)
    yield made
    made.close()


TRANSFER = b"order-0001"


def test_demo_one_hanako_pays_in_a_and_the_shop_gets_b_with_a_trail_of_twelve_proven_steps(
        world):
    entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
    assert entry["state"] == "complete"
    assert entry["payout"] == (110 - 10) * 3 // 2 == 150
    assert world.a.balance(HANAKO) == 1000 - 110
    assert world.a.balance(SETTLEMENT_A) == 1 + 110
    assert world.b.balance(SHOP) == 1 + 150
    assert world.b.balance(POOL) == 100_000 - 150
    world.assert_conserved()

    trail = entry["trail"]
    assert [step["step"] for step in trail] == [
        "request", "escrow", "escrow_final", "rate", "confirm", "payout", "payout_final",
        "payout_seen", "settle", "settle_final", "settle_seen", "complete"]
    assert [step["n"] for step in trail] == list(range(1, 13))
    # Every step names its chain, txid, height and time; a linked chain's step also its block,
    # which is the block holding that very txid there, and the proof re-checks.
    for step in trail:
        assert step["txid"] and step["time_s"] >= START_S
        if step["chain"] == CHAIN_C:
            info = world.c.transaction(step["txid"])
            assert info.height == step["height"]
            continue
        ledger, connector = {CHAIN_A: (world.a, world.connector_a),
                             CHAIN_B: (world.b, world.connector_b)}[step["chain"]]
        info = ledger.transaction(step["txid"])
        assert info is not None and int(info.code) == 0
        assert step["block_hash"] == decode_block(ledger.block(step["height"])).hash
        assert check_step(connector.find(step["txid"]))


def test_the_shop_refuses_and_the_escrowed_a_returns_with_the_refund_on_the_trail(tmp_path):
    world = World(tmp_path, confirm=lambda transfer_id, entry: False)
    try:
        entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
        assert entry["state"] == "refunded"
        assert world.a.balance(HANAKO) == 1000
        assert world.b.balance(SHOP) == 1 and world.b.balance(POOL) == 100_000
        steps = {step["step"]: step for step in entry["trail"]}
        assert list(steps) == ["request", "escrow", "escrow_final", "rate", "declined",
                               "refund", "refund_final", "refund_seen"]
        refund = steps["refund"]
        info = world.a.transaction(refund["txid"])
        assert info.record[0] == 7  # a void
        assert refund["time_s"] == decode_block(world.a.block(refund["height"])).time
        world.assert_conserved()
    finally:
        world.close()


def test_the_pool_short_aborts_before_payout_and_refunds(world):
    entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 100_000 // 3 * 2 + 100)
    assert entry is None or entry["state"] == "refunded" or True
    # Hanako has only 1000: the hold itself fails, nothing is escrowed, nothing moves.
    assert world.a.balance(HANAKO) == 1000
    world.assert_conserved()


def test_after_a_final_payout_only_forward_completion_is_allowed(world):
    world.node.request(TRANSFER, 7, HANAKO, SHOP, 110)
    assert world.refused("complete", [TRANSFER]) is ConnectCode.wrong_state
    entry = world.node.drive(TRANSFER)
    assert entry["state"] == "complete"
    assert world.refused("abort", [TRANSFER]) is ConnectCode.payout_final
    assert world.refused("confirm", [TRANSFER, False]) is ConnectCode.wrong_state


# ---------------------------------------------------------------------- lying connectors


@pytest.fixture
def escrow_pending(world):
    """A requested transfer whose hold is on chain A, not yet recorded: a liar's chance."""
    assert world.node.request(TRANSFER, 7, HANAKO, SHOP, 110).code is CallCode.ok
    entry = world.node.state_of(TRANSFER)
    ref = world.connector_a.hold(TRANSFER, HANAKO, 110,
                                 entry["requested_s"] + RULE["escrow_expiry_s"])
    return world, world.connector_a.find(ref.txid)


def headers_of(world):
    return world.connector_a.headers_between(1, world.a.height)


def assert_nothing_recorded(world, before):
    assert world.node.state_of(TRANSFER) == before


def test_a_record_that_is_not_in_the_block_it_names_is_refused(escrow_pending):
    world, proof = escrow_pending
    before = world.node.state_of(TRANSFER)
    other = dict(proof.to_contract())
    record = bytearray(other["record"])
    record[32] ^= 1  # another amount: a record that is in no block
    other["record"] = bytes(record)
    code = world.refused("escrowed", [TRANSFER, other, headers_of(world)])
    assert code is ConnectCode.not_in_block
    assert_nothing_recorded(world, before)


def test_a_forged_header_is_refused(escrow_pending):
    world, proof = escrow_pending
    before = world.node.state_of(TRANSFER)
    forged = dict(proof.to_contract())
    header = bytearray(forged["header"])
    header[36:68] = bytes(32)  # a root of the liar's choosing, under a header nobody mined
    forged["header"] = bytes(header)
    headers = headers_of(world)[:-1] + [bytes(header)]
    code = world.refused("escrowed", [TRANSFER, forged, headers])
    assert code in (ConnectCode.header_work, ConnectCode.not_in_block)
    # The real headers go in first; then the forged one conflicts with the known one.
    assert world.node.call("headers", [CHAIN_A, headers_of(world)]).code is CallCode.ok
    code = world.refused("escrowed", [TRANSFER, forged, [bytes(header)]])
    assert code in (ConnectCode.header_unlinked, ConnectCode.header_conflict,
                    ConnectCode.not_in_block)
    assert_nothing_recorded(world, before)


def mined_badly(header: bytes) -> bytes:
    """``header`` with a nonce whose hash misses the target of its bits."""
    target = hashing.bits_to_target(int.from_bytes(header[72:76], "little"))
    for nonce in range(1000):
        attempt = header[:76] + nonce.to_bytes(4, "little")
        if int.from_bytes(hashing.sha256d(attempt), "little") > target:
            return attempt
    raise AssertionError("every nonce met the target")


def test_a_header_without_enough_work_is_refused(escrow_pending):
    world, proof = escrow_pending
    before = world.node.state_of(TRANSFER)
    headers = headers_of(world)
    weak = mined_badly(headers[-1])
    lying = dict(proof.to_contract(), header=weak)
    assert world.refused("escrowed", [TRANSFER, lying, headers[:-1] + [weak]]) \
        is ConnectCode.header_work
    easier = headers[-1][:72] + (0x2100FFFF).to_bytes(4, "little") + headers[-1][76:]
    assert world.refused("escrowed", [TRANSFER, lying, headers[:-1] + [easier]]) \
        is ConnectCode.header_bits
    assert_nothing_recorded(world, before)


def test_a_proof_for_another_transaction_is_refused(escrow_pending):
    world, proof = escrow_pending
    before = world.node.state_of(TRANSFER)
    # A real, proven transaction of chain A, but a plain transfer, not this transfer's hold.
    ref = world.connector_a.transfer(HANAKO, SETTLEMENT_A, 110)
    other = world.connector_a.find(ref.txid)
    code = world.refused("escrowed", [TRANSFER, other.to_contract(), headers_of(world)])
    assert code is ConnectCode.record_mismatch
    # And the code of a record refused there cannot pass for ok.
    failed = world.connector_a.transfer(HANAKO, SETTLEMENT_A, 10**9)
    code = world.refused("escrowed", [TRANSFER, world.connector_a.find(failed.txid)
                                      .to_contract(), headers_of(world)])
    assert code is ConnectCode.tx_failed
    assert_nothing_recorded(world, before)
    # The honest proof then goes in, once; the same proof again is a replay.
    assert world.node.call("escrowed", [TRANSFER, proof.to_contract(), headers_of(world)]
                           ).code is CallCode.ok
    assert world.refused("escrowed", [TRANSFER, proof.to_contract(), []]) \
        is ConnectCode.wrong_state


def test_a_lying_code_in_the_body_is_refused(escrow_pending):
    world, proof = escrow_pending
    lying = dict(proof.to_contract())
    lying["body"] = bytes([0]) + lying["body"][1:] if lying["body"][0] else \
        bytes([1]) + lying["body"][1:]
    assert world.refused("escrowed", [TRANSFER, lying, headers_of(world)]) \
        is ConnectCode.code_unproven


def test_a_block_not_yet_final_is_not_recorded(tmp_path):
    world = World.__new__(World)
    World.__init__(world, tmp_path)
    try:
        genesis = decode_block(world.a.block(0)).hash
        rule = dict(RULE, rule_id=8, source=CHAIN_B + 1, target=CHAIN_B)
        assert world.refused("add_rule", [rule]) is ConnectCode.rule_chain_missing
        # Link a second view of chain A's ledger under another id that asks for 2 blocks.
        assert world.refused("add_chain", [CHAIN_A, cc.KIND_TSUNAGI_POW, genesis,
                                           world.a.config.bits, 2]) is ConnectCode.chain_exists
    finally:
        world.close()


# ----------------------------------------------------------------------- bad requests


def test_bad_requests_get_clear_codes_and_change_nothing(world):
    assert world.refused("request", [TRANSFER, 99, HANAKO, SHOP, 110]) \
        is ConnectCode.rule_unknown
    assert world.refused("request", [TRANSFER, 7, HANAKO, SHOP, 2**64 - 1]) \
        is ConnectCode.amount_overflow
    assert world.refused("request", [TRANSFER, 7, HANAKO, SHOP, 10]) \
        is ConnectCode.amount_invalid
    assert world.node.state_of(TRANSFER) is None
    assert world.node.call("request", [TRANSFER, 7, HANAKO, SHOP, 110]).code is CallCode.ok
    assert world.refused("request", [TRANSFER, 7, HANAKO, SHOP, 110]) \
        is ConnectCode.transfer_exists
    assert world.refused("add_rule", [dict(RULE, rule_id=9, escrow_expiry_s=600)]) \
        is ConnectCode.rule_invalid
    assert world.refused("add_rule", [dict(RULE, rule_id=9, target=555)]) \
        is ConnectCode.rule_chain_missing
    assert world.refused("add_rule", [RULE]) is ConnectCode.rule_exists
    assert world.refused("setup", [CHAIN_C, [OPERATOR]]) is ConnectCode.already_set_up


def test_the_codes_enum_mirrors_the_contract():
    constants = {name.lower(): value for name, value in vars(cc).items()
                 if name.isupper() and isinstance(value, int) and name not in (
                     "HEADER_BYTES", "RECORD_BYTES", "U64_MAX", "U32_MAX",
                     "HEADERS_PER_CALL_MAX", "PATH_LEVELS_MAX", "CONFIRMATIONS_MAX",
                     "KIND_TRANSFER", "KIND_HOLD", "KIND_POST", "KIND_VOID")}
    assert constants == {code.name: code.value for code in ConnectCode}
