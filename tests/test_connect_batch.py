"""The batched path of ConnectionChain (ConnectionNode.pay_many and the contract's *_many
methods): many cross-chain payments stepped together end exactly as the single path ends one.

Method: the real chains of tests/test_connect_tsunagi.py's World (two tsunagi chains and the
connection chain, in temporary directories). The tests read the transfers' states and trails
on the connection chain, the balances on both chains (money conserved, escrow empty, nothing
paid twice), how many blocks the batch took, the contract's code for a batch carrying one
lying proof, and a node killed mid-batch (an exception where the journal would be written)
that is reopened and resumed.
"""

from __future__ import annotations

import pytest
from test_connect_tsunagi import AUTHORITY_A, CHAIN_A, HANAKO, POOL, RULE, SHOP, START_S, World

from tsunagi.connect import limits
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.connector import TxStatus
from tsunagi.connect.journal import Journal
from tsunagi.contracts import encoding
from tsunagi.contracts.runtime import CallCode
from tsunagi.core.block import decode_block

TWELVE = ["request", "escrow", "escrow_final", "rate", "confirm", "payout", "payout_final",
          "payout_seen", "settle", "settle_final", "settle_seen", "complete"]


FUNDS = 1000  # every account of both chains starts with this many times World's amounts


class BatchWorld(World):
    """World with richer accounts, so Hanako can pay for a few hundred orders."""

    def _chain(self, directory, chain_id, keys, amounts):
        return super()._chain(directory, chain_id, keys,
                              {n: amount * FUNDS for n, amount in amounts.items()})


def transfers(count: int, amount: int = 12) -> list[tuple]:
    return [(b"batch-%06d" % n, 7, HANAKO, SHOP, amount) for n in range(count)]


@pytest.fixture
def world(tmp_path):
    made = BatchWorld(tmp_path)
    yield made
    made.close()


def test_a_batch_completes_every_transfer_with_the_twelve_steps_and_money_conserved(world):
    batch = transfers(150)  # two groups of a linked block each, one connection block a step
    blocks_before = (world.a.height, world.b.height, world.c.height)
    entries = world.node.pay_many(batch)
    assert all(entry["state"] == "complete" for entry in entries.values())
    for entry in entries.values():
        assert [step["step"] for step in entry["trail"]] == TWELVE
        assert [step["n"] for step in entry["trail"]] == list(range(1, 13))
    payout = (12 - 10) * 3 // 2
    assert world.a.balance(HANAKO) == 1000 * FUNDS - 150 * 12
    assert world.b.balance(SHOP) == FUNDS + 150 * payout
    assert world.b.balance(POOL) == 100_000 * FUNDS - 150 * payout
    world.assert_conserved()
    # Two blocks of holds and two of posts on A, two of payouts on B, six on the connection
    # chain (request, escrowed, confirm, paid, settled, complete) for all 150.
    assert (world.a.height - blocks_before[0], world.b.height - blocks_before[1],
            world.c.height - blocks_before[2]) == (4, 2, 6)


def test_each_group_of_one_key_goes_under_one_batch_signature(world):
    # Hanako's holds, the authority's posts (chain A) and the pool's payouts (chain B) are each
    # one key's records: a block of a group carries one batch signature and none of its own.
    first_a, first_b = world.a.height, world.b.height
    entries = world.node.pay_many(transfers(150))
    assert {entry["state"] for entry in entries.values()} == {"complete"}
    blocks = [decode_block(world.a.block(height)) for height in range(first_a, world.a.height)]
    blocks += [decode_block(world.b.block(height)) for height in range(first_b, world.b.height)]
    assert [(len(block), len(block.batches), len(block.signatures)) for block in blocks] == \
        [(100, 1, 0), (50, 1, 0), (100, 1, 0), (50, 1, 0), (100, 1, 0), (50, 1, 0)]
    for block in blocks:
        (batch,) = block.batches
        assert (batch.first, batch.count) == (0, len(block))


def test_only_a_run_of_one_key_is_batch_authorized_the_rest_signed_each(world):
    # Holds of two payers: a run of two of one payer's goes under one batch signature, a
    # record alone between others keeps its own; the block stores them all.
    def holds(payers):
        return [(b"run-%d-%d" % (len(payers), n), payer, 5, START_S + 3600)
                for n, payer in enumerate(payers)]
    for payers, shape in (([HANAKO, AUTHORITY_A, HANAKO], (0, 3)),
                          ([HANAKO, HANAKO, AUTHORITY_A], (1, 1))):
        prepared = world.connector_a.prepare_holds(holds(payers), batched=True)
        refs = world.connector_a.send_many(prepared)
        assert {ref.status for ref in refs} == {TxStatus.ok}
        block = decode_block(world.a.block(refs[0].height))
        assert (len(block.batches), len(block.signatures)) == shape


@pytest.mark.parametrize("op", ["hold", "payout", "settle"])
def test_a_batch_journaled_before_a_kill_is_sent_again_byte_for_byte(world, op):
    batch = transfers(120)
    world.node.journal.close()
    world.node.journal = DyingJournal(world.tmp_path / "journal", op, "intent")
    with pytest.raises(Killed):
        world.node.pay_many(batch)
    world.node.journal.close()
    with Journal(world.tmp_path / "journal") as journal:
        journaled = [entry for entry in journal.entries
                     if entry["op"] == op and entry["phase"] == "intent"]
    assert len(journaled) == 100 and {len(entry["batch"]) for entry in journaled} == {2}
    ledger = world.b if op == "payout" else world.a
    before = ledger.height
    world.node = world.start_node()
    resumed = world.node.resume()
    assert {entry["state"] for entry in resumed.values()} == {"complete"}
    sent = decode_block(ledger.block(before))  # the first block after the restart
    assert [record.tobytes().hex() for record in sent.records] == \
        [entry["record"] for entry in journaled]
    assert sent.batches[0].signature.hex() == journaled[0]["batch"][1]
    world.assert_conserved()


def test_a_journaled_batch_whose_sequence_another_record_took_is_prepared_anew(world):
    # Killed after the holds' intents; then a record of Hanako's takes the first sequence the
    # batch holds, so the batch can never be stored: the restarted node drops its intents and
    # each transfer's hold is prepared anew, paid once.
    batch = transfers(5)
    world.node.journal.close()
    world.node.journal = DyingJournal(world.tmp_path / "journal", "hold", "intent")
    with pytest.raises(Killed):
        world.node.pay_many(batch)
    world.node.journal.close()
    world.connector_a.transfer(HANAKO, AUTHORITY_A, 1)
    with Journal(world.tmp_path / "journal") as journal:
        journaled = [bytes.fromhex(entry["txid"]) for entry in journal.entries
                     if entry["op"] == "hold"]
    world.node = world.start_node()
    resumed = world.node.resume()
    assert {entry["state"] for entry in resumed.values()} == {"complete"}
    assert len(journaled) == 5 and all(world.a.transaction(txid) is None for txid in journaled)
    payout = (12 - 10) * 3 // 2
    assert world.b.balance(SHOP) == FUNDS + 5 * payout
    assert world.a.balance(HANAKO) == 1000 * FUNDS - 5 * 12 - 1
    world.assert_conserved()


def test_the_batched_trail_names_the_same_proven_blocks_as_the_chains(world):
    entries = world.node.pay_many(transfers(3))
    for entry in entries.values():
        for step in entry["trail"]:
            if step["chain"] == CHAIN_A:
                info = world.a.transaction(step["txid"])
                assert info.height == step["height"] and int(info.code) == 0


def three_holds_sent(world) -> tuple[list[bytes], list]:
    """Three transfers requested and their holds in one block of chain A, not yet proven:
    their ids and the holds' TxRefs."""
    batch = transfers(3)
    world.node.call("request_many", [[list(one) for one in batch]])
    ids = [one[0] for one in batch]
    prepared = world.connector_a.prepare_holds(
        [(transfer_id, HANAKO, 12, world.clock.now + 3600) for transfer_id in ids])
    return ids, world.connector_a.send_many(prepared)


def test_a_batch_with_one_lying_proof_is_refused_with_its_code_and_changes_nothing(world):
    ids, refs = three_holds_sent(world)
    block, items = world.connector_a.find_many(refs[0].height, [ref.txid for ref in refs])
    lying = [list(item) for item in items]
    lying[1][0] = lying[2][0]  # the second transfer shows the third one's record
    headers = world.node._caught_up(world.connector_a)
    args = [block, [[transfer_id] + item for transfer_id, item in zip(ids, lying)], headers]
    before = [world.node.state_of(transfer_id) for transfer_id in ids]
    result = world.node.call("escrowed_many", args)
    assert result.code is CallCode.refused
    assert ConnectCode(result.refuse_code) is ConnectCode.not_in_block
    assert "root" in result.detail  # one multiproof for all: it names no one record
    assert [world.node.state_of(transfer_id) for transfer_id in ids] == before
    honest = [block, [[transfer_id] + item for transfer_id, item in zip(ids, items)], headers]
    assert world.node.call("escrowed_many", honest).code is CallCode.ok
    assert {world.node.state_of(transfer_id)["state"] for transfer_id in ids} == {"escrow"}
    # The same proofs again: each transaction proved its step already.
    assert world.node.call("escrowed_many", honest).refuse_code == ConnectCode.wrong_state


def test_a_multiproof_proves_part_of_a_block_and_refuses_every_change(world):
    ids, refs = three_holds_sent(world)
    assert len({ref.height for ref in refs}) == 1
    headers = world.node._caught_up(world.connector_a)
    block, items = world.connector_a.find_many(refs[0].height, [refs[0].txid, refs[2].txid])
    assert block["hashes"]  # the second record's txid: the two do not cover the block
    good = [[ids[0]] + items[0], [ids[2]] + items[1]]
    before = [world.node.state_of(transfer_id) for transfer_id in ids]
    lies = {
        "a hash left out": ({**block, "hashes": block["hashes"][:-1]}, good),
        "a hash too many": ({**block, "hashes": block["hashes"] + [bytes(32)]}, good),
        "a code changed": ({**block, "body": b"\x01" + block["body"][1:]}, good),
        "one more record counted": ({**block, "record_count": block["record_count"] + 1},
                                    good),
    }
    for name, (lying, lying_items) in lies.items():
        result = world.node.call("escrowed_many", [lying, lying_items, headers])
        assert result.refuse_code == ConnectCode.not_in_block, name
    # Positions out of order (or twice) are malformed before any hash is taken.
    for lying_items in (good[::-1], [good[0], [ids[2]] + items[0]]):
        assert world.refused("escrowed_many", [block, lying_items, headers]) is \
            ConnectCode.proof_malformed
    assert [world.node.state_of(transfer_id) for transfer_id in ids] == before
    assert world.node.call("escrowed_many", [block, good, headers]).code is CallCode.ok
    block, items = world.connector_a.find_many(refs[1].height, [refs[1].txid])
    assert world.node.call("escrowed_many", [block, [[ids[1]] + items[0]], []]).code is \
        CallCode.ok
    assert {world.node.state_of(transfer_id)["state"] for transfer_id in ids} == {"escrow"}


@pytest.mark.parametrize("items, code", [
    ([], ConnectCode.batch_malformed),
    ([[b"x", 7]], ConnectCode.batch_malformed),
    ([[b"x", 7, HANAKO, SHOP, 12]] * 2, ConnectCode.batch_duplicate),
    ([[b"t%d" % n, 7, HANAKO, SHOP, 12] for n in range(201)], ConnectCode.batch_too_large),
])
def test_malformed_batches_get_their_codes_and_change_nothing(world, items, code):
    assert world.refused("request_many", [items]) is code
    assert world.node.state_of(b"x") is None and world.node.state_of(b"t0") is None


def test_a_bad_block_proof_is_refused_as_malformed(world):
    world.node.call("request_many", [[list(one) for one in transfers(1)]])
    assert world.refused("escrowed_many", [{"height": 1}, [[b"batch-000000", bytes(128), 0]],
                                           []]) is ConnectCode.block_malformed


class Killed(Exception):
    """Stands for SIGKILL: the node stops at this point and never writes anything more."""


class DyingJournal(Journal):
    """A journal whose node dies at ``op``'s ``phase``: at "intent", right after the intents
    are durable and before the records go out (they never reach the chain); at "outcome",
    before the outcomes are written (the records are on the chain, the node does not know)."""

    def __init__(self, path, op: str, phase: str) -> None:
        super().__init__(path)
        self.op, self.phase = op, phase

    def append_many(self, entries):
        dying = any(entry.get("op") == self.op and entry["phase"] == self.phase
                    for entry in entries)
        if dying and self.phase == "outcome":
            raise Killed(self.op)
        super().append_many(entries)
        if dying:
            raise Killed(self.op)


@pytest.mark.parametrize("op, phase", [(op, phase) for op in ("hold", "payout", "settle")
                                       for phase in ("intent", "outcome")])
def test_killed_mid_batch_and_resumed_nothing_is_paid_twice(world, op, phase):
    batch = transfers(120)
    world.node.journal.close()
    world.node.journal = DyingJournal(world.tmp_path / "journal", op, phase)
    with pytest.raises(Killed):
        world.node.pay_many(batch)
    world.node.journal.close()
    world.node = world.start_node()  # reopened from the journal on disk
    resumed = world.node.resume()
    assert {entry["state"] for entry in resumed.values()} == {"complete"}
    assert set(resumed) == {one[0] for one in batch}
    payout = (12 - 10) * 3 // 2
    assert world.b.balance(SHOP) == FUNDS + 120 * payout  # each paid once
    assert world.a.balance(HANAKO) == 1000 * FUNDS - 120 * 12
    world.assert_conserved()
    for entry in resumed.values():
        assert [step["step"] for step in entry["trail"]] == TWELVE


def test_a_declined_or_unpayable_transfer_in_a_batch_goes_its_own_way(tmp_path):
    world = BatchWorld(tmp_path, confirm=lambda transfer_id, entry: transfer_id != b"batch-000001")
    try:
        batch = transfers(3) + [(b"too-much", 7, HANAKO, SHOP, 5000 * FUNDS)]
        entries = world.node.pay_many(batch)
        states = {transfer_id: entry["state"] for transfer_id, entry in entries.items()}
        assert states == {b"batch-000000": "complete", b"batch-000001": "refunded",
                          b"batch-000002": "complete", b"too-much": "refunded"}
        world.assert_conserved()
    finally:
        world.close()


def test_the_group_size_fits_a_call():
    assert limits.batch_transfers_per_call <= limits.batch_plain_per_call <= 200


def test_a_refused_request_in_a_batch_is_left_out_and_the_others_complete(world):
    batch = transfers(3) + [(b"no-rule", 99, HANAKO, SHOP, 12)]
    entries = world.node.pay_many(batch)
    assert entries[b"no-rule"] is None and world.node.state_of(b"no-rule") is None
    assert {entries[one[0]]["state"] for one in batch[:3]} == {"complete"}
    world.assert_conserved()


def test_a_chain_that_takes_one_record_a_request_still_completes_the_batch(world):
    # Through a node process there is no submit_many yet: each record goes alone, in a block
    # of its own, and each block's records are proven by a call of their own.
    for connector in (world.connector_a, world.connector_b):
        connector.chain = OneAtATime(connector.chain)
    entries = world.node.pay_many(transfers(4))
    assert {entry["state"] for entry in entries.values()} == {"complete"}
    world.assert_conserved()


class OneAtATime:
    """A chain access with everything of the real one but submit_many."""

    def __init__(self, chain) -> None:
        self._chain = chain

    def __getattr__(self, name):
        if name == "submit_many":
            raise AttributeError(name)
        return getattr(self._chain, name)


def test_an_entry_stays_small_and_every_reader_gets_the_whole_trail_and_rule(world):
    # The contract's state layout: a transfer's entry names its rule by id and counts its
    # steps, each step a key of its own, so what a step rewrites stays small however long
    # the trail is; the contract's trail method and the node's state_of read it all back.
    entries = world.node.pay_many(transfers(3))
    for transfer_id, entry in entries.items():
        stored = world.node.chain.state(b"connection\x00xfer:" + transfer_id.hex().encode())
        assert len(stored) < 300  # 1,883 bytes when it held the trail and a copy of the rule
        assert entry["rule"] == RULE
        assert [step["step"] for step in entry["trail"]] == TWELVE
        assert encoding.decode(world.ok("trail", [transfer_id]).value) == entry == \
            world.node.state_of(transfer_id)
