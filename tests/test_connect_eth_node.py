"""Demo 1 with Ethereum as one of the two chains, driven end to end by the ConnectionNode: a
payment from an Ethereum escrow to a tsunagi chain, and from a tsunagi chain to an Ethereum
payout, each through the connection contract with every step proven.

Method: one in-process eth-tester chain (py-evm) with the Vyper token and escrow, one tsunagi
Ledger, and a connection chain Ledger running the connection contract; an EthereumConnector
and a TsunagiConnector, and a ConnectionNode with its journal on disk. Rule 1 pays from
Ethereum to tsunagi, rule 2 from tsunagi to Ethereum. The tests read what users care about:
token balances on Ethereum and balances on the ledger, money conserved on both with the escrow
empty, the transfer's state and trail, each linked chain's step re-checked from the headers
the connection chain stored, and, after a node killed at chosen points and restarted from its
journal, that nothing was paid twice. Time moves by hand: the tsunagi chains' clock and
eth-tester's time_travel, never by sleeping.
"""

from __future__ import annotations

import pytest
import rlp
from eth_account import Account
from eth_hash.auto import keccak

from connect_helpers import Clock, Crash, arm_actions
from tsunagi.connect import contract as cc
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.eth_proof import EthereumLightClient, expect
from tsunagi.connect.ethereum import EthereumChain, EthereumConnector
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode
from tsunagi.connect.tsunagi_chain import TsunagiConnector, check_step
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import CallCode, source_sha256
from tsunagi.core.block import decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError
from tsunagi.ledger.ledger import Ledger

# The Ethereum chain (eth-tester's chain id), the tsunagi chain, the connection chain.
ETH, TSU, CON = 131277322940537, 101, 100
HANAKO, SETTLEMENT, AUTHORITY, SHOP, POOL = 1, 2, 3, 4, 5  # accounts of the tsunagi chain
OPERATOR = 1
TARGET = "tsunagi.connect.contract:ConnectionContract"
EXPIRY_S, WINDOW_S = 3600, 600
COMMON = {"fee": 10, "escrow_authority": AUTHORITY, "escrow_expiry_s": EXPIRY_S,
          "payout_window_s": WINDOW_S}
# Rule 1: Ethereum escrow to a tsunagi payout (2 points a token); rule 2 the reverse (3/2).
FROM_ETH = {"rule_id": 1, "source": ETH, "target": TSU, "rate_numerator": 2,
            "rate_denominator": 1, "settlement": SETTLEMENT, "pool": POOL, **COMMON}
TO_ETH = {"rule_id": 2, "source": TSU, "target": ETH, "rate_numerator": 3,
          "rate_denominator": 2, "settlement": SETTLEMENT, "pool": POOL, **COMMON}
PAID_FROM_ETH, PAYOUT_FROM_ETH = 400, (400 - 10) * 2  # 780 points on the tsunagi chain
PAID_TO_ETH, PAYOUT_TO_ETH = 110, (110 - 10) * 3 // 2  # 150 tokens on Ethereum
TRANSFER = keccak(b"order-0001")  # the escrow's hold id is 32 bytes
TRAIL = ["request", "escrow", "escrow_final", "rate", "confirm", "payout", "payout_final",
         "payout_seen", "settle", "settle_final", "settle_seen", "complete"]
REFUNDED = ["request", "escrow", "escrow_final", "rate", "declined", "refund", "refund_final",
            "refund_seen"]


class World:
    """The Ethereum chain, the tsunagi chain and the connection chain, and the node."""

    def __init__(self, tmp_path, confirm=lambda transfer_id, entry: True) -> None:
        self.tmp_path, self.confirm = tmp_path, confirm
        self.eth = EthereumChain()
        assert self.eth.chain_id == ETH
        self.clock = Clock(self.eth.latest_time_s() + 60)
        self.payer, self.shop, self.settlement, self.other = self.eth.accounts[1:5]
        self.authority = Account.create()  # the escrow authority and the pool on Ethereum
        self.eth.fund(self.authority.address, 10**18)
        self.token = self.eth.deploy("token", "Yen", "JPY")
        self.escrow = self.eth.deploy("escrow", self.token.address, self.authority.address)
        issuer = self.eth.accounts[0]
        self.token.functions.mint(self.payer, 1000).transact({"from": issuer})
        self.token.functions.mint(self.authority.address, 100_000).transact({"from": issuer})
        self.token.functions.approve(self.escrow.address, 1000).transact({"from": self.payer})
        self.keys = {n: PrivateKey.generate() for n in (HANAKO, SETTLEMENT, AUTHORITY, SHOP,
                                                         POOL)}
        amounts = {HANAKO: 1000, SETTLEMENT: 1, AUTHORITY: 1, SHOP: 1, POOL: 100_000}
        config = ChainConfig(name="t", chain_id=TSU, asset_code="T", allocations=tuple(
            (self.keys[n].public_key, amounts[n]) for n in sorted(self.keys)))
        self.t = Ledger.create(tmp_path / "t", config, threads=1)
        self.operator_key = PrivateKey.generate()
        config_c = ChainConfig(name="connection", chain_id=CON, asset_code="CON",
                               allocations=((self.operator_key.public_key, 1),),
                               contracts=(("connection", bytes.fromhex(source_sha256(TARGET))),))
        self.contracts = ChainContracts(config_c, {"connection": TARGET})
        self.c = Ledger.create(tmp_path / "c", config_c, threads=1, calls=self.contracts)
        self.connect()
        self.node = self.start_node()
        self.ok("setup", [CON, [OPERATOR]])
        self.ok("add_chain", [TSU, cc.KIND_TSUNAGI_POW, decode_block(self.t.block(0)).hash,
                              self.t.config.bits, 0])
        self.ok("add_ethereum_chain", [ETH, self.eth.header(0), 0])
        self.ok("eth_accounts", [ETH] + [bytes.fromhex(address[2:]) for address in (
            self.token.address, self.escrow.address, self.authority.address,
            self.settlement)])
        self.ok("add_rule", [FROM_ETH])
        self.ok("add_rule", [TO_ETH])
        self.totals = self.money()

    def connect(self) -> None:
        """Connectors that remember nothing, as a new node process has."""
        self.connector_eth = EthereumConnector(self.eth, self.token.address,
                                               self.escrow.address, self.authority)
        self.connector_t = TsunagiConnector(self.t, self.keys, authority=AUTHORITY,
                                            settlement=SETTLEMENT, now_s=self.clock)

    def start_node(self) -> ConnectionNode:
        return ConnectionNode(
            self.c, self.contracts, operator_account=OPERATOR, operator_key=self.operator_key,
            connectors={ETH: self.connector_eth, TSU: self.connector_t},
            journal=Journal(self.tmp_path / "journal"), confirm=self.confirm, now_s=self.clock)

    def restart(self) -> None:
        self.node.journal.close()
        self.connect()
        self.node = self.start_node()

    def ok(self, method, args):
        result = self.node.call(method, args)
        assert result.code is CallCode.ok, result
        return result

    def later(self, seconds: int) -> None:
        """Moves both clocks ``seconds`` on: eth-tester mines an empty block then."""
        self.clock.now += seconds
        self.eth.time_travel(max(self.clock.now, self.eth.latest_time_s() + 1))

    def balance(self, address: str) -> int:
        return self.token.functions.balanceOf(address).call()

    def money(self) -> tuple[int, int]:
        """Tokens on Ethereum and points on the tsunagi chain, held ones counted."""
        eth = sum(self.balance(address) for address in (
            self.payer, self.shop, self.settlement, self.other, self.authority.address,
            self.escrow.address))
        return eth, sum(self.t.balance(n) + self.t.held(n) for n in self.keys)

    def assert_conserved(self) -> None:
        assert self.money() == self.totals
        assert self.balance(self.escrow.address) == 0  # the Ethereum escrow is empty
        assert [self.t.held(n) for n in self.keys] == [0] * len(self.keys)

    def eth_payouts(self) -> int:
        """Token transfers from the pool to the shop: a payout on Ethereum."""
        return len(self.token.events.Transfer.get_logs(from_block=0, argument_filters={
            "sender": self.authority.address, "receiver": self.shop}))

    def t_payouts(self) -> int:
        tag = cc.transfer_tag(TRANSFER)
        return sum(1 for info in self.t.history(SHOP) if info.record[0] == 2 and
                   int.from_bytes(info.record[120:128], "little") == tag and
                   int(info.code) == 0)

    def close(self) -> None:
        self.node.journal.close()
        for ledger in (self.t, self.c):
            ledger.close()


@pytest.fixture
def world(tmp_path):
    made = World(tmp_path)
    yield made
    made.close()


def pay_from_eth(world, amount: int = PAID_FROM_ETH) -> dict:
    return world.node.pay(TRANSFER, 1, world.payer, SHOP, amount)


def pay_to_eth(world, amount: int = PAID_TO_ETH) -> dict:
    return world.node.pay(TRANSFER, 2, HANAKO, world.shop, amount)


EVENT_OF_STEP = {"escrow": "Held", "payout": "Transfer", "settle": "Released",
                 "refund": "Voided", "expired": "Refunded"}


def recheck(world, trail: list) -> None:
    """Every step names its chain, txid, height and block; each step of a linked chain is
    re-checked from its proof: a tsunagi record by check_step, an Ethereum receipt and
    transaction under the roots the connection chain stored for that block, and by a light
    client that follows the chain, with the step's event."""
    light = EthereumLightClient(ETH, world.eth.header(0))
    for height in range(1, world.eth.height() + 1):
        light.add(world.eth.header(height))
    for step in trail:
        assert step["txid"]
        if step["chain"] == CON:
            assert world.c.transaction(step["txid"]).height == step["height"]
        elif step["chain"] == TSU:
            info = world.t.transaction(step["txid"])
            assert info is not None and int(info.code) == 0
            assert step["block_hash"] == decode_block(world.t.block(step["height"])).hash
            assert check_step(world.connector_t.find(step["txid"]))
        else:
            assert step["chain"] == ETH
            proof = world.connector_eth.find(step["txid"])
            assert (proof.height, proof.block_hash) == (step["height"], step["block_hash"])
            best = world.node.stored(f"ethbest:{ETH}:{step['height']}")
            assert best == [step["block_hash"], step["time_s"]]
            stored = world.node.stored(f"ethhdr:{ETH}:{step['block_hash'].hex()}")
            key = rlp.encode(proof.position)
            assert cc.mpt_value(stored[2], key, list(proof.receipt_proof)) == proof.receipt
            transaction = cc.mpt_value(stored[3], key, list(proof.transaction_proof))
            assert keccak(transaction) == step["txid"]
            name = EVENT_OF_STEP[step["step"].split("_")[0]]
            contract = world.token.address if name == "Transfer" else world.escrow.address
            assert light.check(proof, expect(contract, name)) == 0, step


# --------------------------------------------------------------------------- success


def test_an_ethereum_escrow_pays_a_tsunagi_shop_with_twelve_proven_steps(world):
    entry = pay_from_eth(world)
    assert entry["state"] == "complete"
    assert [step["step"] for step in entry["trail"]] == TRAIL
    assert world.balance(world.payer) == 1000 - PAID_FROM_ETH
    assert world.balance(world.settlement) == PAID_FROM_ETH
    assert world.t.balance(SHOP) == 1 + PAYOUT_FROM_ETH
    assert world.t.balance(POOL) == 100_000 - PAYOUT_FROM_ETH
    assert world.connector_eth.hold_state(TRANSFER)["state"] == "released"
    chains = [step["chain"] for step in entry["trail"]]
    assert chains == [CON, ETH, ETH, CON, CON, TSU, TSU, CON, ETH, ETH, CON, CON]
    recheck(world, entry["trail"])
    world.assert_conserved()


def test_a_tsunagi_escrow_pays_an_ethereum_shop_with_twelve_proven_steps(world):
    entry = pay_to_eth(world)
    assert entry["state"] == "complete"
    assert [step["step"] for step in entry["trail"]] == TRAIL
    assert world.t.balance(HANAKO) == 1000 - PAID_TO_ETH
    assert world.t.balance(SETTLEMENT) == 1 + PAID_TO_ETH
    assert world.balance(world.shop) == PAYOUT_TO_ETH
    assert world.balance(world.authority.address) == 100_000 - PAYOUT_TO_ETH
    chains = [step["chain"] for step in entry["trail"]]
    assert chains == [CON, TSU, TSU, CON, CON, ETH, ETH, CON, TSU, TSU, CON, CON]
    assert world.eth_payouts() == 1
    recheck(world, entry["trail"])
    world.assert_conserved()


def test_both_directions_run_one_after_the_other_on_the_same_node(world):
    assert pay_from_eth(world)["state"] == "complete"
    second = keccak(b"order-0002")
    entry = world.node.pay(second, 2, HANAKO, world.shop, PAID_TO_ETH)
    assert entry["state"] == "complete"
    assert world.t.balance(SHOP) == 1 + PAYOUT_FROM_ETH
    assert world.balance(world.shop) == PAYOUT_TO_ETH
    world.assert_conserved()


# -------------------------------------------------------------------------- refunds


@pytest.mark.parametrize("direction", ["from_eth", "to_eth"])
def test_the_shop_refuses_and_the_escrow_returns_with_a_proven_refund(tmp_path, direction):
    world = World(tmp_path, confirm=lambda transfer_id, entry: False)
    try:
        entry = pay_from_eth(world) if direction == "from_eth" else pay_to_eth(world)
        assert entry["state"] == "refunded"
        assert [step["step"] for step in entry["trail"]] == REFUNDED
        source = ETH if direction == "from_eth" else TSU
        assert [step["chain"] for step in entry["trail"][5:7]] == [source, source]
        assert world.balance(world.payer) == 1000 and world.t.balance(HANAKO) == 1000
        assert world.balance(world.shop) == 0 and world.t.balance(SHOP) == 1
        if direction == "from_eth":
            assert world.connector_eth.hold_state(TRANSFER)["state"] == "voided"
        recheck(world, entry["trail"])
        world.assert_conserved()
    finally:
        world.close()


def test_the_ethereum_pool_short_aborts_before_payout_and_the_tsunagi_escrow_returns(world):
    world.connector_eth.transfer(world.authority.address, world.other, 100_000 - 100)
    entry = pay_to_eth(world)  # a payout of 150 from a pool of 100
    assert entry["state"] == "refunded"
    assert [step["step"] for step in entry["trail"]] == [
        "request", "escrow", "escrow_final", "rate", "confirm", "abort", "refund",
        "refund_final", "refund_seen"]
    assert world.t.balance(HANAKO) == 1000 and world.balance(world.shop) == 0
    assert world.balance(world.authority.address) == 100
    assert world.eth_payouts() == 0
    world.assert_conserved()


def test_the_tsunagi_pool_short_aborts_and_the_ethereum_escrow_is_voided(world):
    world.connector_t.transfer(POOL, AUTHORITY, 100_000 - 100)  # the pool keeps 100
    world.totals = world.money()
    entry = pay_from_eth(world)  # a payout of 780
    assert entry["state"] == "refunded"
    assert entry["trail"][5]["step"] == "abort"
    assert entry["trail"][6]["chain"] == ETH
    assert world.balance(world.payer) == 1000 and world.t.balance(SHOP) == 1
    assert world.connector_eth.hold_state(TRANSFER)["state"] == "voided"
    recheck(world, entry["trail"])
    world.assert_conserved()


def test_an_ethereum_payer_who_cannot_pay_ends_refunded_with_nothing_moved(world):
    entry = pay_from_eth(world, 5000)  # she has 1000, and approved 1000
    assert entry["state"] == "refunded"
    assert [step["step"] for step in entry["trail"]] == ["request", "abort"]
    assert world.balance(world.payer) == 1000 and world.t.balance(SHOP) == 1
    world.assert_conserved()


# --------------------------------------------------------------------------- expiry


def late_answer(holder: list, accepted: bool):
    """The shop answers after the escrow's expiry (both chains' clocks moved past it)."""
    def answer(transfer_id, entry):
        holder[0].later(EXPIRY_S + 1)
        return accepted
    return answer


@pytest.mark.parametrize("accepted", [True, False])
def test_an_ethereum_escrow_past_its_expiry_comes_back_with_a_proven_expired_step(
        tmp_path, accepted):
    holder: list = []
    world = World(tmp_path, confirm=late_answer(holder, accepted))
    holder.append(world)
    try:
        entry = pay_from_eth(world)
        assert entry["state"] == "expired"
        steps = [step["step"] for step in entry["trail"]]
        assert steps[-3:] == ["expired", "expired_final", "expired_seen"]
        # Accepted, the payout came too late for the window: the node aborted it unpaid.
        assert ("abort" in steps) is accepted
        expired = entry["trail"][-3]
        assert expired["chain"] == ETH and expired["time_s"] >= entry["hold"][2]
        assert world.connector_eth.hold_state(TRANSFER)["state"] == "refunded"
        assert world.balance(world.payer) == 1000 and world.t.balance(SHOP) == 1
        recheck(world, entry["trail"])
        world.assert_conserved()
    finally:
        world.close()


def test_a_tsunagi_escrow_past_its_expiry_comes_back_and_ethereum_pays_nothing(tmp_path):
    holder: list = []
    world = World(tmp_path, confirm=late_answer(holder, True))
    holder.append(world)
    try:
        entry = pay_to_eth(world)
        assert entry["state"] == "expired"
        assert entry["trail"][-1]["step"] == "expired"
        assert world.t.balance(HANAKO) == 1000 and world.balance(world.shop) == 0
        assert world.eth_payouts() == 0
        world.assert_conserved()
    finally:
        world.close()


def dies(transfer_id, entry):
    """A shop's hook during which the node is killed."""
    raise Crash


def test_a_hold_sent_back_by_a_stranger_while_the_node_was_down_is_proven_expired(tmp_path):
    answers = [Crash, True]

    def confirm(transfer_id, entry):  # the node dies while it asks the shop, the first time
        answer = answers.pop(0)
        if answer is Crash:
            raise Crash
        return answer

    world = World(tmp_path, confirm=confirm)
    try:
        with pytest.raises(Crash):
            pay_from_eth(world)
        assert world.node.state_of(TRANSFER)["state"] == "escrow"
        world.later(EXPIRY_S + 1)
        stranger = Account.create()  # anyone may send an expired hold back to its payer
        world.eth.fund(stranger.address, 10**17)
        world.connector_eth.refund_expired(TRANSFER, stranger)
        assert world.balance(world.payer) == 1000
        world.restart()
        entry = world.node.resume()[TRANSFER]
        assert entry["state"] == "expired"
        assert entry["trail"][-3]["txid"] == world.connector_eth.refund_of(TRANSFER)
        assert world.t.balance(SHOP) == 1  # the late payout was aborted, never sent
        recheck(world, entry["trail"])
        world.assert_conserved()
    finally:
        world.close()


def test_a_node_down_past_the_expiry_after_the_payout_gets_the_release_refused(world):
    call = world.node.call

    def dies_after_the_payout(method, args):
        result = call(method, args)
        if method == "paid":
            raise Crash
        return result

    world.node.call = dies_after_the_payout
    with pytest.raises(Crash):
        pay_from_eth(world)
    assert world.node.state_of(TRANSFER)["state"] == "settle"
    world.later(EXPIRY_S + 1)  # the node comes back after the escrow's expiry
    world.restart()
    entry = world.node.resume()[TRANSFER]
    # The escrow refused the release and the hold went back: the payout stands, paid once,
    # and the exchange bears it (why the window is far shorter than the expiry).
    assert entry["state"] == "expired"
    assert [step["step"] for step in entry["trail"]][-3:] == [
        "expired", "expired_final", "expired_seen"]
    assert world.balance(world.payer) == 1000 and world.balance(world.settlement) == 0
    assert world.t_payouts() == 1 and world.t.balance(SHOP) == 1 + PAYOUT_FROM_ETH
    recheck(world, entry["trail"])
    world.assert_conserved()


def test_the_expired_step_believes_only_the_escrows_refund_of_that_hold(tmp_path):
    world = World(tmp_path, confirm=dies)
    try:
        with pytest.raises(Crash):  # the node dies while it asks the shop
            pay_from_eth(world)
        entry = world.node.state_of(TRANSFER)
        held = world.connector_eth.find(entry["trail"][1]["txid"])
        paid = world.connector_eth.transfer(world.authority.address, world.shop, 390)

        def refused(txid):
            before = world.node.state_of(TRANSFER)
            result = world.node.call("eth_expired", [
                TRANSFER, world.connector_eth.find(txid).to_contract(),
                world.connector_eth.headers_between(entry["trail"][1]["height"] + 1,
                                                    world.eth.height() + 1)])
            assert result.code is CallCode.refused
            assert world.node.state_of(TRANSFER) == before  # nothing recorded
            return ConnectCode(result.refuse_code)

        assert refused(held.txid) is ConnectCode.eth_tx_used
        assert refused(paid.txid) is ConnectCode.eth_event_mismatch
        world.later(EXPIRY_S + 1)
        back = world.connector_eth.refund_expired(TRANSFER)
        world.ok("eth_expired", [TRANSFER, world.connector_eth.find(back.txid).to_contract(),
                                 world.connector_eth.headers_between(
                                     world.node.stored(f"ethtip:{ETH}")[0] + 1,
                                     world.eth.height() + 1)])
        assert world.node.state_of(TRANSFER)["state"] == "expired"
        assert world.balance(world.payer) == 1000
    finally:
        world.close()


# ------------------------------------------------------------------------ the fast path


def test_pay_many_refuses_an_ethereum_leg_and_names_pay(world):
    with pytest.raises(ConfigError, match=r"pay\(\)"):
        world.node.pay_many([(TRANSFER, 1, world.payer, SHOP, PAID_FROM_ETH)])
    assert world.node.state_of(TRANSFER) is None  # nothing was requested
    assert world.balance(world.payer) == 1000


# ---------------------------------------------------------------------------- restarts


def arm(world, crash_at: int | None) -> list:
    """Makes the node's k-th external action (a journal write, a transaction sent to a
    linked chain, a call on the connection chain) its last: it happens, then the node dies;
    a send may die just before it goes out. Returns the list of points passed."""
    return arm_actions(crash_at, [
        (world.node.journal, "append"),
        (world.node, "call"),
        (world.connector_eth, "send"),
        (world.connector_t, "send"),
    ])


@pytest.mark.parametrize("direction,accepted", [("from_eth", True), ("from_eth", False),
                                                ("to_eth", True), ("to_eth", False)])
def test_a_node_killed_at_any_point_resumes_and_pays_once(tmp_path, direction, accepted):
    pay = pay_from_eth if direction == "from_eth" else pay_to_eth
    world = World(tmp_path / "count", confirm=lambda transfer_id, entry: accepted)
    points = arm(world, None)
    pay(world)
    world.close()
    total = len(points)
    assert total > (12 if accepted else 8)  # more points than trail steps
    for crash_at in range(1, total + 1):
        world = World(tmp_path / str(crash_at), confirm=lambda transfer_id, entry: accepted)
        try:
            arm(world, crash_at)
            with pytest.raises(Crash):
                pay(world)
            world.restart()
            entry = world.node.resume().get(TRANSFER) or world.node.state_of(TRANSFER)
            if entry is None:  # killed before the request reached the connection chain
                entry = pay(world)
            assert entry["state"] == ("complete" if accepted else "refunded"), crash_at
            assert len(entry["trail"]) == (12 if accepted else 8), crash_at
            payouts = world.t_payouts() if direction == "from_eth" else world.eth_payouts()
            assert payouts == (1 if accepted else 0), crash_at
            payer_left = world.balance(world.payer) if direction == "from_eth" else \
                world.t.balance(HANAKO)
            paid = PAID_FROM_ETH if direction == "from_eth" else PAID_TO_ETH
            assert payer_left == (1000 - paid if accepted else 1000), crash_at
            world.assert_conserved()
        finally:
            world.close()


def test_a_journaled_transaction_whose_nonce_was_taken_meanwhile_is_signed_anew(world):
    # Points: append(request intent), call(eth_request), append(hold intent), then the
    # hold's send: the node dies just before the hold goes out.
    passed = arm(world, 4)
    with pytest.raises(Crash):
        pay_from_eth(world)
    assert passed[-1] == "send (before)"
    # The authority's key sends something else meanwhile: the journaled hold's nonce is taken.
    world.connector_eth.transfer(world.authority.address, world.other, 5)
    world.restart()
    entry = world.node.resume()[TRANSFER]
    assert entry["state"] == "complete"
    assert world.balance(world.payer) == 1000 - PAID_FROM_ETH
    assert world.t_payouts() == 1
    world.assert_conserved()
