"""The client library gets correct answers, batches automatically, and retries safely.

Method: the sync Client and the AsyncClient talk to a live NodeServer over the real Ledger on
127.0.0.1. Queries are checked against the ledger (balances, Merkle proofs that verify against
the block header). The auto-batcher is driven from many threads and coroutines and must send
fewer requests than calls with every caller getting its own code. Lost answers and dropped
subscriptions are made by a proxy that cuts the connection at a chosen frame: the retried
submission must answer already_committed with the original code and move money only once.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from test_node import CHAIN_ID, FUNDS, NodeThread, make_ledger

from tsunagi import hashing
from tsunagi.core import records as rec
from tsunagi.core.answer import BatchAnswer
from tsunagi.core.codes import Result
from tsunagi.core.keys import PrivateKey, txid
from tsunagi.errors import NodeError
from tsunagi.node import limits
from tsunagi.node import protocol as p
from tsunagi.node.client import AsyncClient, Client
from tsunagi.node.server import NodeSettings


class CuttingProxy:
    """Relays a node's connections frame by frame; can cut one instead of relaying a frame."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_type: int | None = None
        self.cut_after = 0  # frames of cut_type relayed before the cut
        self.cuts = 0

    def cut_at(self, message_type: int, after: int = 0) -> None:
        self.cut_type, self.cut_after = message_type, after

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        upward = asyncio.ensure_future(self._pump_up(reader, up_writer))
        try:
            await self._pump_down(up_reader, writer)
        finally:
            upward.cancel()
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pump_up(reader, up_writer) -> None:
        while data := await reader.read(65536):
            up_writer.write(data)

    async def _pump_down(self, up_reader, writer) -> None:
        frames = p.FrameReader((1,))
        while data := await up_reader.read(65536):
            frames.feed(data)
            while (frame := frames.next_frame()) is not None:
                if frame.type == self.cut_type:
                    if self.cut_after == 0:
                        self.cut_type, self.cuts = None, self.cuts + 1
                        return  # the answer is lost with the connection
                    self.cut_after -= 1
                writer.write(p.encode_frame(frame.type, frame.request_id,
                                            bytes(frame.payload), frame.flags, frame.version))


@pytest.fixture
def node(tmp_path):
    ledger, wallet = make_ledger(tmp_path, payers=8)
    with NodeThread(ledger, NodeSettings(group_wait_ms=2)) as running:
        running.wallet = wallet
        yield running


def test_sync_client_queries_match_the_ledger(node):
    wallet = node.wallet
    with Client("127.0.0.1", node.port, chain_id=CHAIN_ID) as client:
        assert client.welcome.chain_id == CHAIN_ID and client.welcome.height == 0
        record, signature = wallet.transfer(1, 1234)
        answer = client.submit(record, signature)
        assert (answer.code, answer.height) == (Result.ok, 1)
        assert client.balance(wallet.payee) == 1235
        assert client.balance(10_000) is None
        account = client.account(wallet.payer)
        assert (account.balance, account.sequence) == (FUNDS - 1234, 1)
        assert account.owner_key == wallet.payer_keys[0].public_key
        found = client.transaction(txid(record))
        assert (found.record, found.code, found.height) == (record, Result.ok, 1)
        block = client.block(1)
        assert client.block(answer.block_hash) == block
        assert client.block(99) is None
        merkle_root = hashing.header_fields(block[:80])[2]
        assert hashing.verify_merkle_proof(txid(record), found.proof, found.position,
                                           merkle_root)
        history = client.history(wallet.payer)  # newest first: the transfer, the genesis mint
        assert [entry.record for entry in history][:1] == [record]
        assert [entry.height for entry in history] == [1, 0]
        status = client.status()
        assert (status.height, status.tip_hash) == (1, answer.block_hash)


def test_client_answers_are_the_ledgers_answer_type(node):
    """A Client's answer is the BatchAnswer a Ledger gives: numpy codes, txids, opened, and the
    one-record helpers, through the auto-batcher and without it."""
    wallet = node.wallet
    record, signature = wallet.transfer(1, 10)
    overdraft = wallet.transfer(2, FUNDS * 2)
    newcomer = PrivateKey.generate()
    opening = rec.open_account(CHAIN_ID, newcomer.public_key, sequence=1)
    with Client("127.0.0.1", node.port) as client, \
            Client("127.0.0.1", node.port, auto_batch=False) as direct:
        one = client.submit(record, signature)
        batch = direct.submit_batch(overdraft[0] + opening,
                                    overdraft[1] + newcomer.sign_record(opening))
    assert isinstance(one, BatchAnswer) and isinstance(batch, BatchAnswer)
    assert one.codes.dtype == np.uint8 and one.code == Result.ok and one.account == 0
    assert one.txids[0].tobytes() == txid(record) and one.height == 1
    assert batch.failures == [(0, Result.insufficient_funds)]
    assert batch.opened.dtype == np.uint64 and batch.opened.tolist() == [0, wallet.payee + 1]
    assert [t.tobytes() for t in batch.txids] == [txid(overdraft[0]), txid(opening)]
    assert batch.slice(1, 2).account == wallet.payee + 1
    local = node.ledger.submit(record, signature)  # the same record, straight to the ledger
    assert type(local) is type(one) and local.code == Result.already_committed
    assert local.final_codes().tolist() == [Result.ok]


def test_auto_batcher_coalesces_calls_from_threads(node):
    wallet, calls_per_thread = node.wallet, 25
    with Client("127.0.0.1", node.port, batch_wait_ms=5) as client:
        codes: dict[int, list] = {}

        def work(payer: int) -> None:
            codes[payer] = [client.submit(*wallet.transfer(sequence, payer, payer=payer)).code
                            for sequence in range(1, calls_per_thread + 1)]

        threads = [threading.Thread(target=work, args=(payer,)) for payer in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        calls = 8 * calls_per_thread
        sent = client.batcher.batches_sent
        assert all(code == Result.ok for payer in codes for code in codes[payer])
        assert client.balance(wallet.payee) == 1 + sum(p_ * calls_per_thread
                                                       for p_ in range(1, 9))
    print(f"\nauto-batcher, 8 threads: {calls} submit calls -> {sent} batch requests")
    assert sent <= calls // 2


def test_auto_batcher_coalesces_coroutines_and_keeps_their_order(node):
    wallet = node.wallet

    async def main():
        async with AsyncClient("127.0.0.1", node.port, batch_records_max=64) as client:
            # One payer, 200 rising sequences, all at once: call order must survive batching.
            answers = await asyncio.gather(*(client.submit(*wallet.transfer(sequence, 2))
                                             for sequence in range(1, 201)))
            return answers, client.batcher.batches_sent, await client.balance(wallet.payee)

    answers, sent, balance = asyncio.run(main())
    assert [answer.code for answer in answers] == [Result.ok] * 200
    assert sent == 4  # 64 + 64 + 64 + 8
    assert balance == 1 + 400


def test_lost_answer_is_retried_and_answers_already_committed(node):
    wallet = node.wallet
    proxy = CuttingProxy(node.port)
    port = node.run(proxy.start())
    proxy.cut_at(p.MessageType.submit_answer)
    with Client("127.0.0.1", port, auto_batch=False) as client:
        record, signature = wallet.transfer(1, 500)
        answer = client.submit(record, signature)
        assert proxy.cuts == 1
        assert answer.code == Result.already_committed and answer.originals == {0: 0}
        assert answer.final_codes().tolist() == [Result.ok]
        assert client.balance(wallet.payee) == 501  # the money moved once
    node.run(proxy.stop())


def test_overloaded_node_is_retried_until_it_takes_the_request(tmp_path):
    ledger, wallet = make_ledger(tmp_path, payers=8)
    settings = NodeSettings(group_wait_ms=30, queue_records_max=2)

    async def main(port):
        async with AsyncClient("127.0.0.1", port, auto_batch=False, retries=8,
                               retry_pause_s=0.02) as client:
            return await asyncio.gather(*(client.submit(*wallet.transfer(1, 9, payer=payer))
                                          for payer in range(1, 9)))

    with NodeThread(ledger, settings) as running:
        answers = asyncio.run(main(running.port))
        assert running.server.groups_committed >= 4  # two records a group at most
        assert [answer.code for answer in answers] == [Result.ok] * 8


def test_subscription_resumes_after_a_lost_connection(node):
    wallet = node.wallet
    proxy = CuttingProxy(node.port)
    port = node.run(proxy.start())
    proxy.cut_at(p.MessageType.block_notice, after=2)  # the third notice is lost

    async def main():
        async with AsyncClient("127.0.0.1", port, auto_batch=False,
                               retry_pause_s=0.01) as client:
            for sequence in range(1, 6):
                await client.submit(*wallet.transfer(sequence))
            heights = []
            async for notice in client.subscribe(0):
                heights.append(notice.height)
                if notice.height == 5:
                    break
            return heights

    assert asyncio.run(main()) == [0, 1, 2, 3, 4, 5]
    assert proxy.cuts == 1
    node.run(proxy.stop())


def test_wrong_chain_and_unreachable_node_raise_node_error(node):
    with pytest.raises(NodeError, match="wrong_chain"):
        Client("127.0.0.1", node.port, chain_id=CHAIN_ID + 1)
    proxy = CuttingProxy(node.port)
    port = node.run(proxy.start())
    node.run(proxy.stop())
    with pytest.raises(NodeError, match="gave up after 2 tries"):
        with Client("127.0.0.1", port, retries=1, retry_pause_s=0.01) as client:
            client.status()


def test_sync_subscribe_yields_blocks_with_their_bytes(node):
    wallet = node.wallet
    with Client("127.0.0.1", node.port) as client:
        answer = client.submit(*wallet.transfer(1, 6))
        notices = client.subscribe(0, with_blocks=True)
        genesis, first = next(notices), next(notices)
        notices.close()  # ends the subscription on the node too
        assert (genesis.height, first.height) == (0, 1)
        assert first.block_hash == answer.block_hash and first.record_count == 1
        assert first.block == client.block(1)
        assert client.status().height == 1  # the connection is still usable


def test_batch_authorized_request_shares_a_group_with_another(tmp_path):
    from tsunagi.core import records as rec
    from tsunagi.core.block import BatchAuth, sign_batch

    ledger, wallet = make_ledger(tmp_path, payers=2)
    key = wallet.payer_keys[1]
    authorized = b"".join(rec.transfer(CHAIN_ID, sequence, 2, wallet.payee, 100,
                                       batch_authorized=True) for sequence in range(1, 5))
    batch = BatchAuth(0, 4, key.public_key, sign_batch(key, authorized))
    plain = [wallet.transfer(sequence, 1, payer=1) for sequence in range(1, 4)]

    async def main(port):
        async with AsyncClient("127.0.0.1", port) as client:
            return await asyncio.gather(
                client.submit_batch(b"".join(r for r, _ in plain), b"".join(s for _, s in plain)),
                client.submit_batch(authorized, b"", [batch]))

    # Both requests land in one group, so the batch's range moves to group positions 3..6.
    with NodeThread(ledger, NodeSettings(group_wait_ms=100)) as running:
        first, second = asyncio.run(main(running.port))
        assert running.server.groups_committed == 1
        assert first.codes.tolist() == [Result.ok] * 3
        assert second.codes.tolist() == [Result.ok] * 4
        assert first.height == second.height == 1
        assert running.call(lambda: ledger.balance(wallet.payee)) == 1 + 3 + 400


def test_accounts_holds_and_policy_queries_match_the_ledger(node, monkeypatch):
    """The queries the CLI needs: accounts of a key (asked a page at a time), units held and
    open holds, one hold by name, a policy slot; absent things answer None or nothing."""
    monkeypatch.setattr(limits, "accounts_per_answer_max", 2)  # pages of two accounts
    wallet, key = node.wallet, node.wallet.payer_keys[0]
    spender = PrivateKey.generate()
    expiry_s = 2**32 - 1
    opens = [rec.open_account(CHAIN_ID, key.public_key, sequence=100 + n) for n in range(4)]
    hold = rec.hold(CHAIN_ID, 7, 1, wallet.payee, 300, authority_account=wallet.payee,
                    expiry_s=expiry_s, hashlock=bytes(range(32)))
    policy = rec.set_policy_key(CHAIN_ID, 8, 1, 2, spender.public_key, amount_max=50,
                                allowance=500, recipients=(wallet.payee,))
    records = opens + [hold, policy]
    with Client("127.0.0.1", node.port, auto_batch=False) as client:
        answer = client.submit_batch(b"".join(records), b"".join(map(key.sign_record, records)))
        assert answer.failures == []
        assert client.accounts_of(key.public_key) == [1, 10, 11, 12, 13]
        assert client.accounts_of(spender.public_key) == []
        holds = client.holds(1)
        assert (holds.held, holds.open_count, len(holds.holds)) == (300, 1, 1)
        assert holds.holds[0] == client.hold(1, 7)
        assert client.holds(wallet.payee).held == 0  # the payee is owed it, not holding it
        found = client.hold(1, 7)
        assert (found.payee, found.authority, found.amount, found.status_name) == (
            wallet.payee, wallet.payee, 300, "open")
        assert found.hashlock == bytes(range(32)) and found.expiry_s == expiry_s
        slot = client.policy(1, 2)
        assert (slot.policy_key, slot.amount_max, slot.allowance, slot.recipients) == (
            spender.public_key, 50, 500, (wallet.payee,))
        assert client.policy(1, 3) is None and client.hold(1, 8) is None
        assert client.holds(10_000) is None
    assert node.ledger.held(1) == 300 and node.ledger.hold(1, 7)["status"] == "open"
    assert node.ledger.policy(1, 2)["key"] == spender.public_key
