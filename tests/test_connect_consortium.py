"""ConnectionChain with consortium chains, linked and as the connection chain itself: its blocks are final once validators holding
more than two thirds of the weight sign them, and the connection contract believes a step
there only from the block's header and its commit certificate, checked against the validator
set it follows from the genesis set through the certificates alone.

Method: chain A and chain B are real Ledgers in temporary directories; either (or both) is a
consortium chain of four validators (weight 1 each) whose blocks are decided in this process
(ConsortiumChain.commit_with_keys, the development mode: three of the four keys sign each
block's precommits); the other is a proof-of-work chain. The connection chain runs the
connection contract, the ConnectionNode drives demo 1 through it; the connection chain may be
a consortium chain too (its own four validators deciding each call's block), the contract
unchanged. Lies are real blocks of the
consortium chain with their certificates altered (too little weight, a forged signature, a
signer outside the set, outsiders' signatures, a truncated certificate, work in the header, a
second block at a final height): each refused with its code, nothing recorded. A validator set
change on the chain (an on-chain update the set approves) is followed by the contract from the
certificate that announces it, and transfers go on under the new set.
"""

from __future__ import annotations

import pytest

from connect_helpers import NodeCalls, Clock
from tsunagi import hashing
from tsunagi.connect import contract as cc
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.connection_chain import LocalConnectionChain
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode
from tsunagi.connect.tsunagi_chain import LedgerChain, TsunagiConnector, check_step
from tsunagi.consensus.certificate import (
    Certificate,
    CertResult,
    ValidatorSet,
    check_certificate,
    make_certificate,
)
from tsunagi.consensus.consortium import ConsortiumChain
from tsunagi.consensus.validators import approve_update
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import CallCode, source_sha256
from tsunagi.core.block import decode_block, encode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.entries import encode_entries
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError
from tsunagi.ledger.ledger import Ledger

CHAIN_A, CHAIN_B, CHAIN_C = 101, 102, 100
HANAKO, SETTLEMENT_A, AUTHORITY_A = 1, 2, 3
SHOP, POOL, AUTHORITY_B = 1, 2, 3
OPERATOR = 1
TARGET = "tsunagi.connect.contract:ConnectionContract"
RULE = {"rule_id": 7, "source": CHAIN_A, "target": CHAIN_B, "rate_numerator": 3,
        "rate_denominator": 2, "fee": 10, "settlement": SETTLEMENT_A, "pool": POOL,
        "escrow_authority": AUTHORITY_A, "escrow_expiry_s": 3600, "payout_window_s": 600}
START_S = 1_800_000_000
VALIDATORS = [PrivateKey.from_bytes(bytes([0x60 + n]) * 32) for n in range(5)]
TRANSFER = b"order-0001"
TWELVE = ["request", "escrow", "escrow_final", "rate", "confirm", "payout", "payout_final",
          "payout_seen", "settle", "settle_final", "settle_seen", "complete"]


class World(NodeCalls):
    """Chains A and B (those named in ``consortium`` run by four validators), the connection
    chain and its node."""

    def __init__(self, tmp_path, consortium: str, confirm=lambda transfer_id, entry: True):
        self.tmp_path, self.clock = tmp_path, Clock()
        self.keys_a = {n: PrivateKey.generate() for n in (HANAKO, SETTLEMENT_A, AUTHORITY_A)}
        self.keys_b = {n: PrivateKey.generate() for n in (SHOP, POOL, AUTHORITY_B)}
        self.validators = VALIDATORS[:4]
        self.consortia: dict[int, ConsortiumChain] = {}
        self.access: dict[int, LedgerChain] = {}
        self.a = self._chain("a", CHAIN_A, self.keys_a, {HANAKO: 1000, SETTLEMENT_A: 1,
                                                        AUTHORITY_A: 1}, "a" in consortium)
        self.b = self._chain("b", CHAIN_B, self.keys_b, {SHOP: 1, POOL: 100_000,
                                                        AUTHORITY_B: 1}, "b" in consortium)
        operator_key = PrivateKey.generate()
        config = ChainConfig(name="connection", chain_id=CHAIN_C, asset_code="CON",
                             allocations=((operator_key.public_key, 1),),
                             contracts=(("connection", bytes.fromhex(source_sha256(TARGET))),),
                             validators=tuple((key.public_key, 1) for key in self.validators)
                             if "c" in consortium else ())
        self.contracts = ChainContracts(config, {"connection": TARGET})
        self.c = Ledger.create(tmp_path / "c", config, threads=1, calls=self.contracts)
        connection = self.c
        if "c" in consortium:  # the connection chain itself decided by four validators
            self.consortia[CHAIN_C] = ConsortiumChain(self.c, threads=1)
            connection = LocalConnectionChain(self.c, self.contracts, self.consortia[CHAIN_C],
                                              self.validators[1:])
        self.connector_a = TsunagiConnector(self.access[CHAIN_A], self.keys_a,
                                            authority=AUTHORITY_A, settlement=SETTLEMENT_A,
                                            now_s=self.clock)
        self.connector_b = TsunagiConnector(self.access[CHAIN_B], self.keys_b,
                                            authority=AUTHORITY_B, settlement=SHOP,
                                            now_s=self.clock)
        self.node = ConnectionNode(
            connection, self.contracts, operator_account=OPERATOR, operator_key=operator_key,
            connectors={CHAIN_A: self.connector_a, CHAIN_B: self.connector_b},
            journal=Journal(tmp_path / "journal"), confirm=confirm, now_s=self.clock)
        self.ok("setup", [CHAIN_C, [OPERATOR]])
        for ledger in (self.a, self.b):
            chain_id, genesis = ledger.config.chain_id, decode_block(ledger.block(0)).hash
            if ledger.config.is_consortium:
                self.ok("add_consortium_chain", [chain_id, genesis, [
                    [key, weight] for key, weight in ledger.config.validators]])
            else:
                self.ok("add_chain", [chain_id, cc.KIND_TSUNAGI_POW, genesis,
                                      ledger.config.bits, 0])
        self.ok("add_rule", [RULE])
        self.totals = (self.total(self.a), self.total(self.b))

    def _chain(self, name, chain_id, keys, amounts, consortium: bool) -> Ledger:
        validators = tuple((key.public_key, 1) for key in self.validators) if consortium \
            else ()
        config = ChainConfig(name=name, chain_id=chain_id, asset_code=name.upper(),
                             allocations=tuple((keys[n].public_key, amounts[n])
                                               for n in sorted(keys)),
                             validators=validators)
        ledger = Ledger.create(self.tmp_path / name, config, threads=1)
        if consortium:
            self.consortia[chain_id] = ConsortiumChain(ledger, threads=1)
            self.access[chain_id] = LedgerChain(ledger, self.consortia[chain_id],
                                                self.validators[:3])
        else:
            self.access[chain_id] = LedgerChain(ledger)
        return ledger

    @staticmethod
    def total(ledger) -> int:
        return sum(ledger.balance(n) + ledger.held(n) for n in range(1, 4))

    def assert_conserved(self) -> None:
        assert (self.total(self.a), self.total(self.b)) == self.totals
        for ledger in (self.a, self.b):
            assert [ledger.held(n) for n in range(1, 4)] == [0, 0, 0]

    def check_trail(self, entry: dict) -> None:
        """Every linked-chain step names the block holding its txid, and its proof re-checks
        from the chain."""
        for step in entry["trail"]:
            if step["chain"] == CHAIN_C:
                continue
            ledger, connector = {CHAIN_A: (self.a, self.connector_a),
                                 CHAIN_B: (self.b, self.connector_b)}[step["chain"]]
            assert step["block_hash"] == decode_block(ledger.block(step["height"])).hash
            assert check_step(connector.find(step["txid"]))

    def close(self) -> None:
        self.node.journal.close()
        for chain in self.consortia.values():
            chain.close()
        for ledger in (self.a, self.b, self.c):
            ledger.close()


@pytest.fixture
def world(tmp_path):
    made = World(tmp_path, "a")
    yield made
    made.close()


@pytest.mark.parametrize("consortium", ["a", "b", "ab", "c", "abc"])
def test_demo_one_completes_with_every_step_proven_by_certificates(tmp_path, consortium):
    world = World(tmp_path, consortium)
    try:
        entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
        assert entry["state"] == "complete"
        assert [step["step"] for step in entry["trail"]] == TWELVE
        assert world.a.balance(HANAKO) == 1000 - 110 and world.b.balance(SHOP) == 1 + 150
        world.assert_conserved()
        world.check_trail(entry)
        for chain_id, ledger in ((CHAIN_A, world.a), (CHAIN_B, world.b)):
            # The contract's light client is at the chain's tip: instant finality, no
            # confirmations asked of a consortium chain.
            assert world.node.stored(f"tip:{chain_id}")[0] == ledger.height - 1
        if "c" in consortium:
            # The trail's own steps stand in blocks the connection chain's validators signed.
            chain = world.consortia[CHAIN_C]
            for height in {step["height"] for step in entry["trail"]
                           if step["chain"] == CHAIN_C}:
                block = decode_block(world.c.block(height))
                assert check_certificate(bytes(block.seal), block.hash, height, chain.chain_id,
                                         chain.validators_at(height),
                                         chain.validators_at(height + 1)) is CertResult.ok
    finally:
        world.close()


def test_the_shop_refuses_and_the_escrow_on_the_consortium_chain_returns(tmp_path):
    world = World(tmp_path, "a", confirm=lambda transfer_id, entry: False)
    try:
        entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
        assert entry["state"] == "refunded"
        assert [step["step"] for step in entry["trail"]][-3:] == [
            "refund", "refund_final", "refund_seen"]
        assert world.a.balance(HANAKO) == 1000
        world.assert_conserved()
        world.check_trail(entry)
    finally:
        world.close()


def test_an_escrow_on_the_consortium_chain_expires_back_by_itself(tmp_path):
    def late_answer(transfer_id, entry):
        world.clock.now += RULE["escrow_expiry_s"] + 1
        return False

    world = World(tmp_path, "a", confirm=late_answer)
    try:
        entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
        assert entry["state"] == "expired"
        assert world.a.balance(HANAKO) == 1000
        world.assert_conserved()
    finally:
        world.close()


# ---------------------------------------------------------------------- lying certificates


@pytest.fixture
def next_block(world):
    """A transfer requested and its hold committed on consortium chain A, not yet recorded:
    the hold's block (its header and certificate) is what a liar alters."""
    assert world.node.request(TRANSFER, 7, HANAKO, SHOP, 110).code is CallCode.ok
    entry = world.node.state_of(TRANSFER)
    ref = world.connector_a.hold(TRANSFER, HANAKO, 110,
                                 entry["requested_s"] + RULE["escrow_expiry_s"])
    tip = world.node.stored(f"tip:{CHAIN_A}")[0]
    pairs = world.connector_a.headers_between(tip + 1, world.a.height)
    return world, pairs, world.connector_a.find(ref.txid)


def recertified(world, height: int, header: bytes, signers) -> bytes:
    """A certificate for ``header`` at ``height`` signed by ``signers`` ((index, key))."""
    chain = world.consortia[CHAIN_A]
    return make_certificate(chain.chain_id, height, 0, hashing.sha256d(header), signers,
                            chain.validators_at(height)).encode()


def lies(world, pairs) -> dict[str, tuple[list, ConnectCode]]:
    """Each lie about the next block, as the headers argument, with the code it must get."""
    *before, (header, good) = pairs
    height = world.node.stored(f"tip:{CHAIN_A}")[0] + len(pairs)
    decoded = Certificate.decode(good)
    keys = world.validators
    outsiders = VALIDATORS[4:] + [PrivateKey.from_bytes(bytes([0x70 + n]) * 32)
                                  for n in range(2)]
    forged = Certificate(decoded.round, decoded.signers,
                         (decoded.signatures[0], decoded.signatures[1][:63] + b"\0",
                          *decoded.signatures[2:])).encode()
    reordered = Certificate(decoded.round, tuple(reversed(decoded.signers)),
                            tuple(reversed(decoded.signatures))).encode()
    worked = header[:72] + (0x207FFFFF).to_bytes(4, "little") + header[76:]
    return {
        "too little weight": (recertified(world, height, header, list(enumerate(keys))[:2]),
                              ConnectCode.cert_weight),
        "a forged signature": (forged, ConnectCode.cert_signature),
        "a signer not in the set": (
            good[:6] + (9).to_bytes(2, "little") + good[8:], ConnectCode.cert_signer_unknown),
        "signers out of order": (reordered, ConnectCode.cert_signer_unknown),
        "outsiders' signatures": (
            recertified(world, height, header, list(enumerate(outsiders))[:3]),
            ConnectCode.cert_signature),
        "a truncated certificate": (good[:-1], ConnectCode.cert_malformed),
        "bytes after it": (good + b"\0", ConnectCode.cert_malformed),
        "work in the header": ([worked, good], ConnectCode.header_bits),
    }


def test_each_lie_about_a_certificate_is_refused_with_its_code_and_records_nothing(
        next_block):
    world, pairs, proof = next_block
    before_state, before_tip = world.node.state_of(TRANSFER), world.node.stored(
        f"tip:{CHAIN_A}")
    for name, (lie, code) in lies(world, pairs).items():
        item = lie if isinstance(lie, list) else [pairs[-1][0], lie]
        headers = [list(pair) for pair in pairs[:-1]] + [item]
        assert world.refused("headers", [CHAIN_A, headers]) is code, name
        assert world.refused("escrowed", [TRANSFER, proof.to_contract(), headers]) is code, name
        assert world.node.stored(f"tip:{CHAIN_A}") == before_tip, name
        assert world.node.state_of(TRANSFER) == before_state, name
    # The truth still goes through, and the transfer completes.
    world.ok("escrowed", [TRANSFER, proof.to_contract(), [list(pair) for pair in pairs]])
    assert world.node.drive(TRANSFER)["state"] == "complete"
    world.assert_conserved()


def test_a_second_block_at_a_final_height_is_refused_as_a_conflict(next_block):
    world, pairs, _ = next_block
    world.ok("headers", [CHAIN_A, [list(pair) for pair in pairs]])
    tip = world.node.stored(f"tip:{CHAIN_A}")
    height = tip[0]
    parent = decode_block(world.a.block(height)).prev_hash
    # Another block on the same parent, signed by the same three validators: only Byzantine
    # validators (more than a third) could make it; the contract keeps the first it saw.
    other = encode_block(prev_hash=parent, time=START_S + 99, bits=0, records=b"", codes=b"",
                         signatures=b"", version=2)
    other_header = bytes(other[:80])
    seal = recertified(world, height, other_header, list(enumerate(world.validators))[:3])
    assert world.refused("headers", [CHAIN_A, [[other_header, seal]]]) \
        is ConnectCode.cert_conflict
    assert world.node.stored(f"tip:{CHAIN_A}") == tip


def test_headers_that_are_not_header_certificate_pairs_are_refused(next_block):
    world, pairs, _ = next_block
    header, certificate = pairs[0]
    for bad in ([header], [[header]], [[header, certificate, b""]], [[header[:79], certificate]],
                [[header, "text"]]):
        assert world.refused("headers", [CHAIN_A, bad]) is ConnectCode.header_malformed


def test_linking_a_consortium_chain_checks_its_validator_set(world):
    genesis = decode_block(world.b.block(0)).hash
    key = VALIDATORS[0].public_key
    for validators in ([], [[key, 0]], [[key, 1], [key, 1]], [[key[:31], 1]], [[key]],
                       [[key, 1]] * 300, "set"):
        assert world.refused("add_consortium_chain", [200, genesis, validators]) \
            is ConnectCode.rule_invalid
    assert world.refused("add_consortium_chain", [CHAIN_A, genesis, [[key, 1]]]) \
        is ConnectCode.chain_exists
    assert world.refused("add_chain", [201, "tsunagi-bft", genesis, 1, 0]) \
        is ConnectCode.chain_kind_unknown


def test_a_consortium_chain_needs_its_validators_to_be_reached_in_process(tmp_path):
    config = ChainConfig(name="x", chain_id=5, asset_code="X",
                         validators=((VALIDATORS[0].public_key, 1),))
    with Ledger.create(tmp_path / "x", config, threads=1) as ledger:
        with pytest.raises(ConfigError, match="give LedgerChain its ConsortiumChain"):
            LedgerChain(ledger)


# ------------------------------------------------------------ the validator set changes


def test_the_contract_follows_a_validator_set_change_from_the_certificates(world):
    """Validator 3 leaves and validator 4 joins, approved on chain A by the set and taking
    effect two blocks later; the contract learns the new set from the certificate that
    announces it, and refuses the old set's signatures after the change."""
    chain = world.consortia[CHAIN_A]
    first = world.node.pay(b"before", 7, HANAKO, SHOP, 50)
    assert first["state"] == "complete"
    height = world.a.height
    effective = height + 2
    approvers = list(enumerate(world.validators))[:3]
    updates = encode_entries([
        approve_update(chain.chain_id, world.validators[3].public_key, 0, effective, approvers),
        approve_update(chain.chain_id, VALIDATORS[4].public_key, 1, effective, approvers)])
    staged = world.a.stage_batch(b"", extension=updates, now_s=world.clock())
    seal = make_certificate(chain.chain_id, height, 0, staged.block_hash, approvers,
                            chain.validators_at(height), chain.validators_at(height)).encode()
    chain.commit_decided(seal)
    world.connector_a.transfer(SETTLEMENT_A, AUTHORITY_A, 1)  # height + 1: announces the set
    new_set = chain.validators_at(effective)
    assert VALIDATORS[4].public_key in [member.key for member in new_set]
    world.access[CHAIN_A].commit.validator_keys = (world.validators[0], world.validators[1],
                                            VALIDATORS[4])
    # The old set's signatures on the first block of the new set are a lie now.
    world.connector_a.transfer(SETTLEMENT_A, AUTHORITY_A, 1)  # at ``effective``
    tip = world.node.stored(f"tip:{CHAIN_A}")[0]
    pairs = world.connector_a.headers_between(tip + 1, world.a.height)
    leaver = world.validators[3]  # signing at index 3, which is validator 4's now
    old_signers = recertified(world, effective, pairs[-1][0],
                              [(0, world.validators[0]), (1, world.validators[1]), (3, leaver)])
    lied = [list(pair) for pair in pairs[:-1]] + [[pairs[-1][0], old_signers]]
    assert world.refused("headers", [CHAIN_A, lied]) is ConnectCode.cert_signature
    second = world.node.pay(b"after", 7, HANAKO, SHOP, 60)
    assert second["state"] == "complete"
    assert world.node.stored(f"vset:{CHAIN_A}") == [[member.key, member.weight]
                                                    for member in new_set]
    world.assert_conserved()


def test_a_consortium_chain_far_ahead_is_caught_up_in_calls_its_steps_allow(world):
    """Each certificate's signatures cost the contract steps: the node feeds the headers in
    runs of as many certificates as a call can check (64 of three signers), not 256."""
    for _ in range(150):  # chain A runs ahead: one block each
        world.connector_a.transfer(SETTLEMENT_A, AUTHORITY_A, 1)
    entry = world.node.pay(TRANSFER, 7, HANAKO, SHOP, 110)
    assert entry["state"] == "complete"
    assert world.node.stored(f"tip:{CHAIN_A}")[0] == world.a.height - 1
    runs = [result for result in world.contracts.results.values() if result.steps > 40_000]
    assert runs and max(result.steps for result in runs) < 100_000


# ------------------------------------------- the connection chain as validator processes


def test_demo_one_through_a_connection_chain_of_four_validator_processes(tmp_path):
    """The connection chain is four `tsunagi node --validator-key` processes running the
    connection contract; the connection node reaches one of them through the node client.
    Its calls are relayed to the other validators with their payloads, so whichever proposes
    takes them; a transfer completes with every call in a certified block, and again with
    one validator SIGKILLed."""
    import shutil

    import net_helpers
    from net_helpers import NetNode, free_ports, wait_until

    from tsunagi.connect.connection_chain import NodeConnectionChain
    from tsunagi.core.keyfile import save_key
    from tsunagi.node.client import Client

    net_helpers.ENV.setdefault("TSUNAGI_PASSPHRASE", "connection validators")
    world = World(tmp_path, "")
    operator_key = PrivateKey.generate()
    config = ChainConfig(
        name="connection", chain_id=CHAIN_C, asset_code="CON",
        allocations=((operator_key.public_key, 1),),
        contracts=(("connection", bytes.fromhex(source_sha256(TARGET))),),
        validators=tuple((key.public_key, 1) for key in VALIDATORS[:4]),
        timeout_propose_ms=800, timeout_prevote_ms=400, timeout_precommit_ms=400,
        timeout_delta_ms=200, block_wait_ms=20)
    first = tmp_path / "c0"
    Ledger.create(first, config, threads=1).close()
    dirs = [first] + [shutil.copytree(first, tmp_path / f"c{n}") for n in range(1, 4)]
    files = [save_key(tmp_path / f"v{n}.key", key, net_helpers.ENV["TSUNAGI_PASSPHRASE"],
                      scrypt_n=1024) for n, key in enumerate(VALIDATORS[:4])]
    ports = free_ports(4)
    nodes = [NetNode(dirs[n], ports[n], [f"127.0.0.1:{ports[m]}" for m in range(4) if m != n],
                     mine=False, extra=("--validator-key", str(files[n]), "--contract",
                                        f"connection={TARGET}")) for n in range(4)]
    client = None
    try:
        for node in nodes:
            node.start()
        wait_until(lambda: all(node.status().height >= 1 for node in nodes),
                   "the validators deciding blocks")
        client = Client("127.0.0.1", ports[0])
        node = ConnectionNode(
            NodeConnectionChain(client), None, operator_account=OPERATOR,
            operator_key=operator_key,
            connectors={CHAIN_A: world.connector_a, CHAIN_B: world.connector_b},
            journal=Journal(tmp_path / "validators.journal"), confirm=lambda *_: True,
            now_s=None)
        for method, args in [("setup", [CHAIN_C, [OPERATOR]])] + [
                ("add_chain", [ledger.config.chain_id, cc.KIND_TSUNAGI_POW,
                               decode_block(ledger.block(0)).hash, ledger.config.bits, 0])
                for ledger in (world.a, world.b)] + [("add_rule", [RULE])]:
            assert node.call(method, args).code is CallCode.ok, method
        world.connector_a.now_s = world.connector_b.now_s = None  # the nodes' own clocks
        entry = node.pay(b"through-validators", 7, HANAKO, SHOP, 110)
        assert entry["state"] == "complete"
        assert [step["step"] for step in entry["trail"]] == TWELVE
        genesis = decode_block(client.block(0)).hash
        heights = {step["height"] for step in entry["trail"] if step["chain"] == CHAIN_C}
        validators = ValidatorSet(tuple((key.public_key, 1) for key in VALIDATORS[:4]))
        for height in heights:
            block = decode_block(client.block(height))
            assert check_certificate(bytes(block.seal), block.hash, height, genesis,
                                     validators, validators) is CertResult.ok
        nodes[3].stop(kill=True)
        again = node.pay(b"one-validator-down", 7, HANAKO, SHOP, 60)
        assert again["state"] == "complete"
        node.journal.close()
        world.assert_conserved()
    finally:
        if client is not None:
            client.close()
        for validator in nodes:
            validator.stop()
        world.close()
