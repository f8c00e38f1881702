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

import inspect
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connect_helpers import NodeCalls, Clock, Crash, arm_actions
from tsunagi import hashing
from tsunagi.connect import contract as cc
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode
from tsunagi.connect.tsunagi_chain import TsunagiConnector, check_step
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import CallCode, source_sha256
from tsunagi.core.block import block_payloads, decode_block
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import NodeError
from tsunagi.ledger.ledger import Ledger

CHAIN_A, CHAIN_B, CHAIN_C = 101, 102, 100
HANAKO, SETTLEMENT_A, AUTHORITY_A = 1, 2, 3  # accounts of chain A
SHOP, POOL, AUTHORITY_B = 1, 2, 3  # accounts of chain B
OPERATOR, STRANGER = 1, 2  # the connection node's account on the connection chain, another
TARGET = "tsunagi.connect.contract:ConnectionContract"
RULE = {"rule_id": 7, "source": CHAIN_A, "target": CHAIN_B, "rate_numerator": 3,
        "rate_denominator": 2, "fee": 10, "settlement": SETTLEMENT_A, "pool": POOL,
        "escrow_authority": AUTHORITY_A, "escrow_expiry_s": 3600, "payout_window_s": 600}
START_S = 1_800_000_000


class World(NodeCalls):
    """Chain A, chain B and the connection chain, with the node that links them."""

    def __init__(self, tmp_path, confirm=lambda transfer_id, entry: True,
                 confirmations: int = 0) -> None:
        self.tmp_path, self.clock, self.confirm = tmp_path, Clock(), confirm
        self.keys_a = {n: PrivateKey.generate() for n in (HANAKO, SETTLEMENT_A, AUTHORITY_A)}
        self.keys_b = {n: PrivateKey.generate() for n in (SHOP, POOL, AUTHORITY_B)}
        self.operator_key, self.stranger_key = PrivateKey.generate(), PrivateKey.generate()
        self.a = self._chain("a", CHAIN_A, self.keys_a, {HANAKO: 1000, SETTLEMENT_A: 1,
                                                        AUTHORITY_A: 1})
        self.b = self._chain("b", CHAIN_B, self.keys_b, {SHOP: 1, POOL: 100_000,
                                                        AUTHORITY_B: 1})
        self.config_c = ChainConfig(
            name="connection", chain_id=CHAIN_C, asset_code="CON",
            allocations=((self.operator_key.public_key, 1), (self.stranger_key.public_key, 1)),
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
                                  ledger.config.bits, confirmations])
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


def test_a_payer_who_cannot_pay_ends_refunded_with_nothing_moved(world):
    entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 5000)  # she has 1000
    assert entry["state"] == "refunded"
    assert [step["step"] for step in entry["trail"]] == ["request", "abort"]
    assert world.a.balance(HANAKO) == 1000 and world.b.balance(SHOP) == 1
    world.assert_conserved()


def test_the_pool_short_aborts_before_payout_and_the_escrow_returns(world):
    world.connector_b.transfer(POOL, AUTHORITY_B, 100_000 - 100)  # the pool keeps 100
    world.totals = (world.total(world.a), world.total(world.b))
    entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)  # a payout of 150
    assert entry["state"] == "refunded"
    steps = [step["step"] for step in entry["trail"]]
    assert steps == ["request", "escrow", "escrow_final", "rate", "confirm", "abort", "refund",
                     "refund_final", "refund_seen"]
    assert world.a.balance(HANAKO) == 1000
    assert world.b.balance(SHOP) == 1 and world.b.balance(POOL) == 100
    world.assert_conserved()


def test_an_escrow_that_expires_returns_by_itself_and_the_trail_says_so(tmp_path):
    def late_answer(transfer_id, entry):
        world.clock.now += RULE["escrow_expiry_s"] + 1  # the shop answers after the expiry
        return False

    world = World(tmp_path, confirm=late_answer)
    try:
        entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
        assert entry["state"] == "expired"
        assert entry["trail"][-1]["step"] == "expired"
        assert entry["trail"][-1]["time_s"] >= entry["hold"][2]
        assert world.a.balance(HANAKO) == 1000  # back without anyone's release
        world.assert_conserved()
    finally:
        world.close()


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


def forged_block(header: bytes, record: bytes, *, mined: bool = True):
    """A block of one ``record`` in place of the one under ``header`` (same parent), as a
    liar would make it: its header (mined to meet its bits, or not) and the step proof."""
    body = bytes(1) + bytes(64)  # code ok, and a signature nobody checks here
    leaves = [hashing.sha256d(record), hashing.sha256d(body)]
    root = hashing.sha256d(leaves[0] + leaves[1])
    target = hashing.bits_to_target(int.from_bytes(header[72:76], "little"))
    for nonce in range(10_000):
        forged = header[:36] + root + header[68:76] + nonce.to_bytes(4, "little")
        if (int.from_bytes(hashing.sha256d(forged), "little") <= target) == mined:
            break
    proof = {"height": 0, "header": forged, "record": record, "position": 0,
             "path": [leaves[1]], "body": body, "body_path": [leaves[0]], "record_count": 1}
    return forged, proof


def test_a_forged_header_is_refused(escrow_pending):
    world, proof = escrow_pending
    before = world.node.state_of(TRANSFER)
    honest = proof.to_contract()
    # The liar's block holds a hold Hanako never made (sequence 9), under a header with the
    # honest block's parent, mined to meet the chain's bits.
    record = bytearray(honest["record"])
    record[8:16] = (9).to_bytes(8, "little")
    forged, lying = forged_block(honest["header"], bytes(record))
    lying["height"] = honest["height"]
    headers = headers_of(world)
    # Not mined: not enough work. Mined but competing with the honest header the contract
    # knows: equal work keeps the first seen, so the forged block is not on the best chain.
    unmined, _ = forged_block(honest["header"], bytes(record), mined=False)
    assert world.refused("escrowed", [TRANSFER, dict(lying, header=unmined),
                                      headers + [unmined]]) is ConnectCode.header_work
    assert world.refused("escrowed", [TRANSFER, lying, headers + [forged]]) \
        is ConnectCode.block_unknown
    # A header whose parent nobody knows.
    orphan = bytes(4) + bytes(32) + forged[36:]
    assert world.refused("headers", [CHAIN_A, [orphan]]) is ConnectCode.header_unlinked
    assert_nothing_recorded(world, before)
    assert world.node.call("escrowed", [TRANSFER, honest, headers]).code is CallCode.ok


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


def test_a_step_waits_until_its_block_is_final_by_the_chains_rule(tmp_path):
    world = World(tmp_path, confirmations=2)
    try:
        entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
        assert entry["state"] == "request"  # the hold is in A, two blocks short of final
        rounds = 0
        while entry["state"] != "complete":
            rounds += 1
            assert rounds < 10
            for connector, (debit, credit) in ((world.connector_a, (SETTLEMENT_A, AUTHORITY_A)),
                                               (world.connector_b, (POOL, AUTHORITY_B))):
                connector.transfer(debit, credit, 1)  # other traffic makes blocks
            entry = world.node.drive(TRANSFER)
        steps = {step["step"]: step for step in entry["trail"]}
        assert steps["escrow_final"]["height"] == steps["escrow"]["height"] + 2
        assert steps["payout_final"]["height"] == steps["payout"]["height"] + 2
        assert world.b.balance(SHOP) == 1 + 150
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
    source = inspect.getsource(cc)
    block = source[source.index("# Refusal codes"):source.index("KIND_TSUNAGI_POW =")]
    constants = {name.lower(): (int(value), comment) for name, value, comment in
                 re.findall(r"^([A-Z_]+) = (\d+)  # (.*)$", block, re.M)}
    assert constants == {code.name: (code.value, comment) for code, comment in
                         zip(ConnectCode, re.findall(r"= \d+  # (.*)$",
                                                     inspect.getsource(ConnectCode), re.M))}


# ---------------------------------------------------------------------- crash recovery


def arm(world, crash_at: int | None) -> list:
    """Makes the node's k-th external action (a journal write made durable, a record sent to
    a linked chain, a call on the connection chain) the last one: it happens, then the node
    dies. Returns the list of points passed."""
    return arm_actions(crash_at, [
        (world.node.journal, "append"),
        (world.node, "call"),
        (world.connector_a, "send"),
        (world.connector_b, "send"),
    ])


def restart(world) -> None:
    """A new node process: the journal read again from its file, connectors that remember
    nothing; the chains are as the dead node left them."""
    world.node.journal.close()
    world.connector_a = TsunagiConnector(world.a, world.keys_a, authority=AUTHORITY_A,
                                         settlement=SETTLEMENT_A, now_s=world.clock)
    world.connector_b = TsunagiConnector(world.b, world.keys_b, authority=AUTHORITY_B,
                                         settlement=SHOP, now_s=world.clock)
    world.node = world.start_node()


def payouts_to_shop(world) -> int:
    tag = cc.transfer_tag(TRANSFER)
    return sum(1 for info in world.b.history(SHOP) if info.record[0] == 2 and
               int.from_bytes(info.record[120:128], "little") == tag and int(info.code) == 0)


@pytest.mark.parametrize("accepted", [True, False])
def test_a_node_killed_at_any_point_resumes_and_nothing_happens_twice(tmp_path, accepted):
    world = World(tmp_path / "count", confirm=lambda transfer_id, entry: accepted)
    points = arm(world, None)
    world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
    total_points = len(points)
    world.close()
    assert total_points > (12 if accepted else 8)  # more points than trail steps
    for crash_at in range(1, total_points + 1):
        world = World(tmp_path / str(crash_at), confirm=lambda transfer_id, entry: accepted)
        try:
            arm(world, crash_at)
            with pytest.raises(Crash):
                world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
            restart(world)
            entries = world.node.resume()
            entry = entries.get(TRANSFER) or world.node.state_of(TRANSFER)
            if entry is None:  # killed before the request reached the connection chain
                entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
            expected = "complete" if accepted else "refunded"
            assert entry["state"] == expected, crash_at
            assert world.a.balance(HANAKO) == (1000 - 110 if accepted else 1000), crash_at
            assert world.b.balance(SHOP) == (1 + 150 if accepted else 1), crash_at
            assert payouts_to_shop(world) == (1 if accepted else 0), crash_at
            assert len(entry["trail"]) == (12 if accepted else 8), crash_at
            world.assert_conserved()
        finally:
            world.close()


def test_a_replayed_call_or_a_reused_transaction_changes_nothing(world):
    first = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
    assert first["state"] == "complete"
    escrow_txid = first["trail"][1]["txid"]
    # The same signed call record again: the connection chain refuses it before it runs.
    request = world.c.transaction(first["trail"][0]["txid"])
    payload = block_payloads(decode_block(world.c.block(request.height)))[request.position]
    root_before = world.contracts.state.root
    answer = world.c.submit_batch(request.record, request.authorization, payloads=[payload])
    assert Result(int(answer.codes[0])) in (Result.sequence_used, Result.already_committed)
    assert world.contracts.state.root == root_before
    # The first transfer's escrow proof offered for a second transfer of the same amount.
    second = b"order-0002"
    assert world.node.request(second, 7, HANAKO, SHOP, 110).code is CallCode.ok
    proof = world.connector_a.find(escrow_txid).to_contract()
    assert world.refused("escrowed", [second, proof, headers_of(world)]) is ConnectCode.tx_used
    assert world.node.state_of(second)["state"] == "request"
    assert world.node.drive(second)["state"] == "complete"  # its own hold goes through
    world.assert_conserved()


def mine_on(parent: bytes, bits: int, salt: int) -> bytes:
    """A header of an empty-looking block on ``parent`` that meets ``bits``."""
    target = hashing.bits_to_target(bits)
    root = hashing.sha256d(salt.to_bytes(8, "little"))
    for nonce in range(10_000):
        header = (1).to_bytes(4, "little") + parent + root + START_S.to_bytes(4, "little") + \
            bits.to_bytes(4, "little") + nonce.to_bytes(4, "little")
        if int.from_bytes(hashing.sha256d(header), "little") <= target:
            return header
    raise AssertionError("no nonce met the target")


def test_the_light_client_follows_the_branch_with_most_work(escrow_pending):
    world, proof = escrow_pending
    headers = headers_of(world)
    assert world.node.call("headers", [CHAIN_A, headers]).code is CallCode.ok
    # A branch from genesis one block longer than chain A: more work, so it is the best chain
    # now, and a step in a block it left behind is no longer on it. (On a development chain
    # anyone can mine such a branch: its bits are what make proof of work worth anything.)
    bits = world.a.config.bits
    parent = decode_block(world.a.block(0)).hash
    branch = []
    for salt in range(len(headers) + 1):
        branch.append(mine_on(parent, bits, salt))
        parent = hashing.sha256d(branch[-1])
    assert world.node.call("headers", [CHAIN_A, branch]).code is CallCode.ok
    assert world.node.stored(f"tip:{CHAIN_A}")[1] == parent
    assert world.refused("escrowed", [TRANSFER, proof.to_contract(), []]) \
        is ConnectCode.block_unknown
    # Chain A grows past the branch again: its blocks are the best chain once more.
    for _ in range(2):
        world.connector_a.transfer(SETTLEMENT_A, AUTHORITY_A, 1)
    assert world.node.call("escrowed", [TRANSFER, proof.to_contract(), headers_of(world)]
                           ).code is CallCode.ok


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(orders=st.lists(st.tuples(st.integers(11, 700), st.booleans()), min_size=1, max_size=3),
       pool=st.sampled_from([100_000, 400]), crash_at=st.integers(1, 80))
def test_random_transfers_failures_and_a_crash_end_final_with_money_conserved(
        tmp_path_factory, orders, pool, crash_at):
    accepted = {}
    world = World(tmp_path_factory.mktemp("world"),
                  confirm=lambda transfer_id, entry: accepted[transfer_id])
    try:
        world.connector_b.transfer(POOL, AUTHORITY_B, 100_000 - pool)
        world.totals = (world.total(world.a), world.total(world.b))
        ids = [b"order-%d" % number for number in range(len(orders))]
        accepted.update(zip(ids, (accept for _, accept in orders)))
        arm(world, crash_at)
        try:
            for transfer_id, (amount, _) in zip(ids, orders):
                world.node.pay(transfer_id, 7, HANAKO, SHOP, amount)
        except Crash:
            restart(world)
            world.node.resume()
        for transfer_id, (amount, _) in zip(ids, orders):
            if world.node.state_of(transfer_id) is None:
                world.node.pay(transfer_id, 7, HANAKO, SHOP, amount)
        entries = {transfer_id: world.node.state_of(transfer_id) for transfer_id in ids}
        assert all(entry["state"] in ("complete", "refunded") for entry in entries.values())
        completed = [entry for entry in entries.values() if entry["state"] == "complete"]
        assert world.b.balance(SHOP) == 1 + sum(entry["payout"] for entry in completed)
        assert world.a.balance(HANAKO) == 1000 - sum(entry["amount"] for entry in completed)
        for transfer_id, entry in entries.items():
            steps = [step["step"] for step in entry["trail"]]
            assert ("payout" in steps) == (entry["state"] == "complete")  # never both
            assert ("refund" in steps) <= (entry["state"] == "refunded")
        world.assert_conserved()
    finally:
        world.close()


def test_anyone_may_prove_a_step_but_only_an_operator_relays_answers(escrow_pending):
    world, proof = escrow_pending
    stranger = ConnectionNode(
        world.c, world.contracts, operator_account=STRANGER, operator_key=world.stranger_key,
        connectors={}, journal=world.node.journal, confirm=world.confirm, now_s=world.clock)
    assert stranger.call("add_rule", [dict(RULE, rule_id=8)]).refuse_code \
        == ConnectCode.not_operator
    assert stranger.call("escrowed", [TRANSFER, proof.to_contract(), headers_of(world)]
                         ).code is CallCode.ok  # the proof is the authority
    for method, args in (("confirm", [TRANSFER, False]), ("abort", [TRANSFER])):
        assert stranger.call(method, args).refuse_code == ConnectCode.not_operator
    assert world.node.state_of(TRANSFER)["state"] == "escrow"


def test_a_journaled_record_whose_sequence_was_taken_meanwhile_is_prepared_anew(world):
    # Points: append(request intent), call(request), append(hold intent), then the hold's
    # send: the node dies just before the hold goes out.
    passed = arm(world, 4)
    with pytest.raises(Crash):
        world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
    assert passed[-1] == "send (before)"
    # Hanako spends with her own wallet meanwhile: the journaled hold's sequence is taken.
    world.connector_a.transfer(HANAKO, SETTLEMENT_A, 5)
    restart(world)
    entry = world.node.resume()[TRANSFER]
    assert entry["state"] == "complete"
    assert world.a.balance(HANAKO) == 1000 - 5 - 110
    world.assert_conserved()


def test_a_target_chain_down_for_a_while_delays_the_payout_but_pays_once(world):
    send = world.connector_b.send
    outages = [3]

    def down(prepared):
        if outages[0]:
            outages[0] -= 1
            raise NodeError("chain B is not answering")
        return send(prepared)
    world.connector_b.send = down
    for _ in range(3):
        with pytest.raises(NodeError):
            world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110) if world.node.state_of(TRANSFER) \
                is None else world.node.drive(TRANSFER)
        assert world.node.state_of(TRANSFER)["state"] == "payout"
    assert world.node.drive(TRANSFER)["state"] == "complete"
    assert payouts_to_shop(world) == 1 and world.b.balance(SHOP) == 1 + 150
    world.assert_conserved()


def test_a_chain_far_ahead_of_the_light_client_is_caught_up_in_bounded_calls(world):
    records = []
    for _ in range(cc.HEADERS_PER_CALL_MAX + 40):  # chain A runs ahead: one block each
        records.append(world.connector_a.transfer(SETTLEMENT_A, AUTHORITY_A, 1))
    entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
    assert entry["state"] == "complete"
    assert world.node.stored(f"tip:{CHAIN_A}")[0] == world.a.height - 1


def test_a_connector_without_the_payers_key_says_so_and_sends_nothing(world):
    from tsunagi.errors import ConfigError

    before = world.a.height
    with pytest.raises(ConfigError, match="holds no key for account 9 of chain 101"):
        world.connector_a.hold(b"no-key", 9, 100, START_S + 3600)
    assert world.a.height == before
