"""Usage billing (demo 2 of ConnectionChain): every data access on a data-rights chain is
charged on a token chain, per a billing rule attached after both chains are running.

Method: three Ledgers in temporary directories (the data chain, the token chain, and the
connection chain running the connection contract), a TsunagiConnector per linked chain and a
ConnectionNode with its journal. Consumers access a data set by a transfer of one data unit to
its account, tagged; the node's follow_billing() finds them and charges the price. The tests
read what users care about: the token balances, each bill's state and proven trail (every
linked-chain step re-checked against that chain), the contract's codes for records that are
not accesses and for replays, and, with the node killed at each of its external actions, that
no access is ever charged twice.

Accesses in blocks at or below the data chain's height when the rule is attached are not billed
(the rule bills "from its attachment on"); the contract refuses them with access_mismatch.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connect_helpers import NodeCalls, Clock, Crash, arm_actions
from tsunagi.connect import contract as cc
from tsunagi.connect import limits
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode, StepRefused
from tsunagi.connect.tsunagi_chain import TsunagiConnector, check_step
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import source_sha256
from tsunagi.core import records as rec
from tsunagi.core.block import decode_block
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError
from tsunagi.ledger.ledger import Ledger

DATA, TOKEN, CONNECTION = 201, 202, 200
# Accounts of the data chain: consumers, the data set whose credits mark an access, another.
ALICE, BOB, CAROL, DAVE, DATASET, OTHER = 1, 2, 3, 4, 5, 6
# Accounts of the token chain: the consumers' token accounts and the data owner's.
ALICE_T, BOB_T, CAROL_T, OWNER_T = 1, 2, 3, 4
OPERATOR, STRANGER = 1, 2
TARGET = "tsunagi.connect.contract:ConnectionContract"
ACCESS_TAG = 0xDA7A
PRICE = 25
RULE = {"rule_id": 1, "data_chain": DATA, "token_chain": TOKEN, "data_set": DATASET,
        "access_tag": ACCESS_TAG, "price": PRICE, "payee": OWNER_T}
CONSUMERS = {ALICE: ALICE_T, BOB: BOB_T, CAROL: CAROL_T}  # Dave has no token account
START_S = 1_800_000_000
TOKENS = {ALICE_T: 1000, BOB_T: 1000, CAROL_T: 10, OWNER_T: 1}  # Carol cannot pay 25


class World(NodeCalls):
    """The data chain, the token chain and the connection chain linking them, all running;
    no billing rule yet."""

    def __init__(self, tmp_path, confirmations: int = 0, tokens=TOKENS) -> None:
        self.tmp_path, self.clock = tmp_path, Clock()
        self.keys_d = {n: PrivateKey.generate() for n in (ALICE, BOB, CAROL, DAVE, DATASET,
                                                          OTHER)}
        self.keys_t = {n: PrivateKey.generate() for n in tokens}
        self.operator_key, self.stranger_key = PrivateKey.generate(), PrivateKey.generate()
        self.d = self._chain("d", DATA, self.keys_d, dict.fromkeys(self.keys_d, 1000))
        self.t = self._chain("t", TOKEN, self.keys_t, tokens)
        config = ChainConfig(
            name="connection", chain_id=CONNECTION, asset_code="CON",
            allocations=((self.operator_key.public_key, 1), (self.stranger_key.public_key, 1)),
            contracts=(("connection", bytes.fromhex(source_sha256(TARGET))),))
        self.contracts = ChainContracts(config, {"connection": TARGET})
        self.c = Ledger.create(tmp_path / "c", config, threads=1, calls=self.contracts)
        self.make_connectors()
        self.node = self.start_node()
        self.ok("setup", [CONNECTION, [OPERATOR]])
        for ledger in (self.d, self.t):
            genesis = decode_block(ledger.block(0))
            self.ok("add_chain", [ledger.config.chain_id, cc.KIND_TSUNAGI_POW, genesis.hash,
                                  ledger.config.bits, confirmations])
        self.token_total = self.token_sum()

    def _chain(self, directory, chain_id, keys, amounts):
        config = ChainConfig(name=directory, chain_id=chain_id, asset_code=directory.upper(),
                             allocations=tuple((keys[n].public_key, amounts[n])
                                               for n in sorted(keys)))
        return Ledger.create(self.tmp_path / directory, config, threads=1)

    def make_connectors(self) -> None:
        """Connectors that remember nothing (as a restarted process has them): the token
        chain's holds the consumers' keys, entrusted to it as payers entrust demo 1's."""
        self.data = TsunagiConnector(self.d, self.keys_d, authority=DATASET,
                                     settlement=DATASET, now_s=self.clock)
        self.token = TsunagiConnector(self.t, self.keys_t, authority=OWNER_T,
                                      settlement=OWNER_T, now_s=self.clock)

    def start_node(self) -> ConnectionNode:
        return ConnectionNode(
            self.c, self.contracts, operator_account=OPERATOR, operator_key=self.operator_key,
            connectors={DATA: self.data, TOKEN: self.token},
            journal=Journal(self.tmp_path / "journal"), confirm=lambda *_: True,
            now_s=self.clock)

    def access(self, who: int, *, credit: int = DATASET, tag: int = ACCESS_TAG) -> bytes:
        """``who`` reads the data set: one data unit to its account, tagged; the txid."""
        ref = self.data.access(who, credit, tag)
        assert int(self.d.transaction(ref.txid).code) == 0
        return ref.txid

    def token_sum(self) -> int:
        return sum(self.t.balance(n) for n in self.keys_t)

    def charges(self, access_txid: bytes) -> int:
        """Applied charges of an access on the token chain: transfers to the owner with the
        bill's tag."""
        tag = cc.transfer_tag(access_txid)
        return sum(1 for info in self.t.history(OWNER_T) if info.record[0] == rec.Kind.transfer
                   and int.from_bytes(info.record[120:128], "little") == tag
                   and int(info.code) == 0)

    def headers(self, connector) -> list[bytes]:
        tip = self.node.stored(f"tip:{connector.chain_id}")[0]
        return connector.headers_between(tip + 1, connector.ledger.height)

    def close(self) -> None:
        self.node.journal.close()
        for ledger in (self.d, self.t, self.c):
            ledger.close()


@pytest.fixture
def world(tmp_path):
    made = World(tmp_path)
    yield made
    made.close()


def assert_proven_step(world, step) -> None:
    """A linked chain's step names the block that holds its txid there, and the proof
    re-checks; a connection chain's step names its call."""
    if step["chain"] == CONNECTION:
        assert world.c.transaction(step["txid"]).height == step["height"]
        return
    ledger, connector = {DATA: (world.d, world.data), TOKEN: (world.t, world.token)}[
        step["chain"]]
    info = ledger.transaction(step["txid"])
    assert info is not None
    block = decode_block(ledger.block(step["height"]))
    assert step["block_hash"] == block.hash and step["time_s"] == block.time
    assert check_step(connector.find(step["txid"]))


def test_every_access_after_the_rule_is_charged_once_and_earlier_ones_never(world):
    early = [world.access(ALICE), world.access(BOB)]  # before any rule
    rule = world.node.add_billing_rule(RULE, CONSUMERS)
    assert rule["first_height"] == world.d.height  # the next block of the data chain
    accesses = [world.access(ALICE), world.access(BOB), world.access(ALICE)]
    bills = world.node.follow_billing()
    assert [bill["access"] for bill in bills] == accesses
    assert [bill["state"] for bill in bills] == ["complete"] * 3
    assert world.t.balance(ALICE_T) == 1000 - 2 * PRICE
    assert world.t.balance(BOB_T) == 1000 - PRICE
    assert world.t.balance(OWNER_T) == 1 + 3 * PRICE
    assert world.token_sum() == world.token_total
    for bill in bills:
        assert world.charges(bill["access"]) == 1
        assert [step["step"] for step in bill["trail"]] == [
            "access", "access_final", "bill", "charge", "charge_final", "complete"]
        assert [step["n"] for step in bill["trail"]] == list(range(1, 7))
        assert bill["trail"][0]["txid"] == bill["access"]
        for step in bill["trail"]:
            assert step["time_s"] >= START_S
            assert_proven_step(world, step)
        charge = world.t.transaction(bill["trail"][3]["txid"]).record
        assert rec.unpack(charge)["user_data"] == cc.transfer_tag(bill["access"])
    # Nothing new: nothing more is billed, and the earlier accesses never are.
    assert world.node.follow_billing() == []
    assert world.t.balance(OWNER_T) == 1 + 3 * PRICE
    assert [world.node.bill_of(txid) for txid in early] == [None, None]
    proof = world.data.find(early[0]).to_contract()
    assert world.refused("record_access", [1, proof, []]) is ConnectCode.access_mismatch


def test_a_replayed_access_proof_or_charge_proof_is_refused_and_changes_nothing(world):
    world.node.add_billing_rule(RULE, CONSUMERS)
    txid = world.access(ALICE)
    [bill] = world.node.follow_billing()
    root = world.contracts.state.root
    access_proof = world.data.find(txid).to_contract()
    charge_proof = world.token.find(bill["trail"][3]["txid"]).to_contract()
    assert world.refused("record_access", [1, access_proof, []]) is ConnectCode.tx_used
    assert world.refused("charged", [txid, charge_proof, []]) is ConnectCode.wrong_state
    assert world.contracts.state.root == root
    assert world.node.bill_of(txid) == bill
    assert world.charges(txid) == 1 and world.t.balance(OWNER_T) == 1 + PRICE
    # The same access proof offered under another rule of the same data set: one access,
    # one bill, whichever rule recorded it.
    world.node.add_billing_rule(dict(RULE, rule_id=2), CONSUMERS)
    assert world.refused("record_access", [2, access_proof, []]) is ConnectCode.tx_used
    assert world.refused("record_access", [99, access_proof, []]) \
        is ConnectCode.billing_rule_unknown
    assert world.refused("charged", [bytes(32), charge_proof, []]) is ConnectCode.bill_unknown
    assert world.refused("bill_trail", [b"short"]) is ConnectCode.bill_unknown


def test_records_that_are_not_accesses_are_never_billed(world):
    world.node.add_billing_rule(RULE, CONSUMERS)
    not_accesses = [world.access(ALICE, credit=OTHER),  # another account
                    world.access(ALICE, tag=0),  # the data set's account, untagged
                    world.access(ALICE, tag=ACCESS_TAG + 1)]  # another tag
    unregistered = world.access(DAVE)  # an access, but Dave has no token account
    assert world.node.follow_billing() == []
    assert world.t.balance(OWNER_T) == 1 and world.t.balance(ALICE_T) == 1000
    for txid in not_accesses:
        proof = world.data.find(txid).to_contract()
        assert world.refused("record_access", [1, proof, world.headers(world.data)]) \
            is ConnectCode.access_mismatch
        assert world.node.bill_of(txid) is None
    proof = world.data.find(unregistered).to_contract()
    assert world.refused("record_access", [1, proof, world.headers(world.data)]) \
        is ConnectCode.consumer_unknown
    # An access recorded by hand (anyone may prove one) is a bill in state "charge"; a
    # transfer of the price to the owner under another tag is not its charge.
    txid = world.access(ALICE)
    world.ok("record_access", [1, world.data.find(txid).to_contract(),
                               world.headers(world.data)])
    other = world.token.transfer(ALICE_T, OWNER_T, PRICE, transfer_id=b"not-a-bill")
    assert world.refused("charged", [txid, world.token.find(other.txid).to_contract(),
                                     world.headers(world.token)]) is ConnectCode.record_mismatch
    # The node's scan finds the open bill and charges it, once.
    assert [bill["state"] for bill in world.node.follow_billing()] == ["complete"]
    assert world.charges(txid) == 1


def test_a_consumer_who_cannot_pay_ends_unpaid_with_the_refused_charge_proven(world):
    world.node.add_billing_rule(RULE, CONSUMERS)
    txid = world.access(CAROL)  # she has 10 tokens, the price is 25
    [bill] = world.node.follow_billing()
    assert bill["state"] == "unpaid"
    assert bill["refusal"] == Result.insufficient_funds
    assert [step["step"] for step in bill["trail"]] == [
        "access", "access_final", "bill", "charge_refused", "charge_refused_final", "unpaid"]
    refused = bill["trail"][3]
    info = world.t.transaction(refused["txid"])
    assert info.code is Result.insufficient_funds  # the refusal is on the token chain
    assert rec.unpack(info.record)["user_data"] == cc.transfer_tag(txid)
    for step in bill["trail"]:
        assert_proven_step(world, step)
    assert world.t.balance(CAROL_T) == 10 and world.t.balance(OWNER_T) == 1
    assert world.charges(txid) == 0
    assert world.node.follow_billing() == []  # unpaid is final: never charged again
    assert world.t.balance(CAROL_T) == 10


def test_bad_billing_rules_and_consumers_get_clear_codes(world):
    stranger = ConnectionNode(
        world.c, world.contracts, operator_account=STRANGER, operator_key=world.stranger_key,
        connectors={DATA: world.data}, journal=world.node.journal, confirm=lambda *_: True,
        now_s=world.clock)
    with pytest.raises(StepRefused) as refused:
        stranger.add_billing_rule(RULE)
    assert refused.value.code is ConnectCode.not_operator
    assert world.refused("add_billing_rule", [dict(RULE, price=0), []]) \
        is ConnectCode.rule_invalid
    assert world.refused("add_billing_rule", [dict(RULE, payee=-1), []]) \
        is ConnectCode.rule_invalid
    assert world.refused("add_billing_rule", [dict(RULE, token_chain=555), []]) \
        is ConnectCode.rule_chain_missing
    assert world.refused("add_billing_consumer", [1, ALICE, ALICE_T]) \
        is ConnectCode.billing_rule_unknown
    world.node.add_billing_rule(RULE)
    assert world.refused("add_billing_rule", [RULE, []]) is ConnectCode.rule_exists
    assert world.refused("add_billing_consumer", [1, ALICE, 2**64]) \
        is ConnectCode.amount_invalid
    with pytest.raises(ConfigError):  # the token connector could never charge it
        world.node.add_billing_consumer(1, DAVE, 99)
    assert world.node.stored(f"bcons:1:{DAVE}") is None
    assert world.node.stored("brules") == [1]


def test_a_charge_waits_for_the_token_chain_to_make_it_final(tmp_path):
    world = World(tmp_path, confirmations=2)
    try:
        world.node.add_billing_rule(RULE, CONSUMERS)
        txid = world.access(ALICE)
        assert world.node.follow_billing() == []  # the access is not final on the data chain
        rounds, bills = 0, []
        while not bills or bills[0]["state"] != "complete":
            rounds += 1
            assert rounds < 10
            world.access(BOB, credit=OTHER)  # other traffic makes blocks on both chains
            world.token.transfer(OWNER_T, BOB_T, 1)
            bills = world.node.follow_billing()
            assert len(bills) <= 1
        assert bills[0]["access"] == txid
        steps = {step["step"]: step for step in bills[0]["trail"]}
        assert steps["access_final"]["height"] == steps["access"]["height"] + 2
        assert steps["charge_final"]["height"] == steps["charge"]["height"] + 2
        assert world.charges(txid) == 1 and world.t.balance(ALICE_T) == 1000 - PRICE
    finally:
        world.close()


def test_a_data_chain_far_ahead_is_scanned_in_bounded_runs_that_survive_a_restart(world):
    rule = world.node.add_billing_rule(RULE, CONSUMERS)
    for _ in range(limits.billing_blocks_max + 20):  # traffic that is no access, a block each
        world.access(BOB, credit=OTHER)
    txid = world.access(ALICE)
    assert world.node.follow_billing() == []  # one bounded run, no access in it
    scans = [entry for entry in world.node.journal.entries if entry["op"] == "bill_scan"]
    assert scans[-1]["height"] == rule["first_height"] + limits.billing_blocks_max
    restart(world)  # the next process scans on from the journal's height
    [bill] = world.node.follow_billing()
    assert bill["access"] == txid and bill["state"] == "complete"
    assert world.t.balance(ALICE_T) == 1000 - PRICE


# ---------------------------------------------------------------------- crash recovery


def arm(world, crash_at: int | None) -> list:
    """Makes the node's k-th external action (a durable journal write, a call on the
    connection chain, a record sent to the token chain, or just before that send) its last."""
    return arm_actions(crash_at, [
        (world.node.journal, "append"),
        (world.node, "call"),
        (world.token, "send"),
    ])


def restart(world) -> None:
    """A new node process: the journal read from its file, fresh connectors."""
    world.node.journal.close()
    world.make_connectors()
    world.node = world.start_node()


def bill_all(world) -> None:
    """follow_billing() until it has nothing left to do (a bounded number of calls)."""
    for _ in range(5):
        if not world.node.follow_billing():
            return
    raise AssertionError("follow_billing() still finds work after five calls")


def test_a_node_killed_at_any_point_resumes_and_never_charges_twice(tmp_path):
    def run(world, arm_at):
        world.node.add_billing_rule(RULE, CONSUMERS)
        accesses = [world.access(ALICE), world.access(CAROL), world.access(BOB)]
        passed = arm(world, arm_at)
        return accesses, passed

    world = World(tmp_path / "count")
    accesses, passed = run(world, None)
    world.node.follow_billing()
    total_points = len(passed)
    world.close()
    assert total_points >= 3 * 6  # each bill: two calls, three journal writes, a send
    for crash_at in range(1, total_points + 1):
        world = World(tmp_path / str(crash_at))
        try:
            accesses, passed = run(world, crash_at)
            with pytest.raises(Crash):
                world.node.follow_billing()
            restart(world)
            assert world.node.resume() == {}  # bills are follow_billing's, not transfers
            bill_all(world)
            bills = [world.node.bill_of(txid) for txid in accesses]
            assert [bill["access"] for bill in bills] == accesses, crash_at
            assert [bill["state"] for bill in bills] == ["complete", "unpaid", "complete"]
            assert [world.charges(txid) for txid in accesses] == [1, 0, 1], crash_at
            assert world.t.balance(ALICE_T) == 1000 - PRICE, crash_at
            assert world.t.balance(BOB_T) == 1000 - PRICE, crash_at
            assert world.t.balance(OWNER_T) == 1 + 2 * PRICE, crash_at
            assert world.token_sum() == world.token_total
            for bill in bills:
                assert len(bill["trail"]) == 6, crash_at
        finally:
            world.close()


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(readers=st.lists(st.sampled_from([ALICE, BOB, CAROL, DAVE]), min_size=1, max_size=6),
       bob_tokens=st.sampled_from([1000, 60, 10]), crash_at=st.integers(1, 50))
def test_random_accesses_balances_and_a_crash_bill_each_access_once_in_order(
        tmp_path_factory, readers, bob_tokens, crash_at):
    tokens = {ALICE_T: 1000, BOB_T: bob_tokens, CAROL_T: 10, OWNER_T: 1}
    world = World(tmp_path_factory.mktemp("world"), tokens=tokens)
    try:
        world.node.add_billing_rule(RULE, CONSUMERS)
        accesses = [(reader, world.access(reader)) for reader in readers]
        arm(world, crash_at)
        try:
            world.node.follow_billing()
        except Crash:
            restart(world)
        bill_all(world)
        # Bills are charged in the data chain's order: a consumer pays while the price is
        # there; Dave, with no token account, is never billed.
        left = {CONSUMERS[n]: tokens[CONSUMERS[n]] for n in CONSUMERS}
        paid = 0
        for reader, txid in accesses:
            bill = world.node.bill_of(txid)
            if reader == DAVE:
                assert bill is None
                continue
            account = CONSUMERS[reader]
            expected = "complete" if left[account] >= PRICE else "unpaid"
            assert bill["state"] == expected
            assert world.charges(txid) == (expected == "complete")
            if expected == "complete":
                left[account] -= PRICE
                paid += PRICE
        assert {account: world.t.balance(account) for account in left} == left
        assert world.t.balance(OWNER_T) == 1 + paid
        assert world.token_sum() == world.token_total
    finally:
        world.close()
