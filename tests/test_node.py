"""A live node serves many clients correctly and keeps serving when clients misbehave.

Method: a NodeServer over the real Ledger (a fresh data directory per test) runs on its own
event loop thread on 127.0.0.1; tests drive it with raw sockets and the client library and
check what a user cares about: per-request result codes, balances, block counts, that every
client gets its own answer, and that slow, vanishing and flooding clients cost the others
nothing. One test runs the node in a separate process and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass

import pytest

from tsunagi.core import records as rec
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger
from tsunagi.node import limits
from tsunagi.node import protocol as p
from tsunagi.node.client import AsyncClient, Client
from tsunagi.node.server import NodeServer, NodeSettings, new_event_loop

CHAIN_ID = 7
FUNDS = 10**12


@dataclass
class Wallet:
    """Keys and account numbers of a test chain: payers 1..n each own an allocation."""

    payer_keys: list[PrivateKey]
    payee: int

    @property
    def payer(self) -> int:
        return 1

    def transfer(self, sequence: int, amount: int = 1, payer: int = 1,
                 linked: bool = False) -> tuple[bytes, bytes]:
        record = rec.transfer(CHAIN_ID, sequence, payer, self.payee, amount, linked=linked)
        return record, self.payer_keys[payer - 1].sign_record(record)


def make_ledger(tmp_path, payers: int = 1):
    """A new chain in tmp_path: accounts 1..payers funded, account payers+1 the payee."""
    keys = [PrivateKey.generate() for _ in range(payers + 1)]
    config = ChainConfig(name="node-test", chain_id=CHAIN_ID, asset_code="TSU",
                         allocations=tuple((key.public_key, FUNDS if i < payers else 1)
                                           for i, key in enumerate(keys)))
    ledger = Ledger.create(tmp_path / "chain", config, threads=1)
    return ledger, Wallet(keys[:payers], payers + 1)


class NodeThread:
    """A NodeServer on its own event loop in a thread; ``call`` runs code on that thread."""

    def __init__(self, ledger, settings: NodeSettings | None = None,
                 loop_factory=new_event_loop) -> None:
        self.ledger = ledger
        self.loop = loop_factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = NodeServer(ledger, "127.0.0.1", 0, settings, close_ledger=False)

    def __enter__(self) -> NodeThread:
        self.thread.start()
        self.run(self.server.start())
        self.port = self.server.port
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.ledger.close()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def call(self, function):
        async def wrapper():
            return function()
        return self.run(wrapper())

    def stop(self) -> None:
        if self.loop.is_running():
            self.run(self.server.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def chain(tmp_path):
    return make_ledger(tmp_path, payers=8)


class Raw:
    """A raw TCP connection to a node that reads whole frames; for tests of the wire itself."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = p.FrameReader((1,))

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc_info) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self):
        """The next (request id, message); (None, None) once the node closed the connection."""
        while (frame := self.reader.next_frame()) is None:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None, None
            if not data:
                return None, None
            self.reader.feed(data)
        return frame.request_id, p.decode(frame)


def raw_connection(port: int, handshake: bool = True) -> Raw:
    raw = Raw(port)
    if handshake:
        raw.sendall(p.encode(p.Hello(limits.protocol_versions, CHAIN_ID), 0))
        _, welcome = raw.read()
        assert isinstance(welcome, p.Welcome) and welcome.chain_id == CHAIN_ID
    return raw


def request(raw: Raw, message, request_id: int = 1):
    raw.sendall(p.encode(message, request_id))
    return raw.read()


def test_submit_query_and_block_on_one_connection(chain):
    ledger, wallet = chain
    with NodeThread(ledger) as node, raw_connection(node.port) as sock:
        record, signature = wallet.transfer(1, amount=250)
        request_id, answer = request(sock, p.Submit(record, signature), 11)
        assert request_id == 11 and answer.code == Result.ok and answer.height == 1
        assert request(sock, p.QueryBalance(wallet.payee), 12) == (12, p.Balance(wallet.payee,
                                                                                  251))
        _, block = request(sock, p.QueryBlock(height=1), 13)
        from tsunagi import hashing
        assert hashing.header_hash(block.data[:80]) == answer.block_hash
        assert record in block.data
        _, status = request(sock, p.QueryStatus(), 14)
        assert (status.chain_id, status.height, status.tip_hash) == (CHAIN_ID, 1,
                                                                     answer.block_hash)
        assert status.records_committed == 1 and status.groups_committed == 1
        _, missing = request(sock, p.QueryBalance(999), 15)
        assert missing.code == p.ErrorCode.not_found
        _, again = request(sock, p.Submit(record, signature), 16)
        assert again.code == Result.already_committed and again.originals == ((0, 0),)
        assert again.height is None


def test_plain_asyncio_loop_serves_too(chain):
    # CI has uvloop, so the fallback loop is run here on purpose.
    ledger, wallet = chain
    with NodeThread(ledger, loop_factory=asyncio.new_event_loop) as node, \
            raw_connection(node.port) as sock:
        assert not type(node.loop).__module__.startswith("uvloop")
        _, answer = request(sock, p.Submit(*wallet.transfer(1, 40)), 1)
        assert answer.code == Result.ok
        assert request(sock, p.QueryBalance(wallet.payee), 2) == (2, p.Balance(wallet.payee, 41))


def test_stop_commits_the_forming_group_then_refuses(chain):
    ledger, wallet = chain
    settings = NodeSettings(group_wait_ms=5000)  # the group is still forming when stop comes
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as sock:
        for sequence in (1, 2, 3):
            sock.sendall(p.encode(p.Submit(*wallet.transfer(sequence, 10)), sequence))
        while node.call(lambda: node.server.queued_records) < 3:
            time.sleep(0.005)
        stopper = threading.Thread(target=node.stop)
        stopper.start()
        answers = dict(sock.read() for _ in range(3))
        stopper.join()
        assert [answers[i].code for i in (1, 2, 3)] == [Result.ok] * 3
        assert sock.read() == (None, None)  # then the node closed the connection
        assert ledger.balance(wallet.payee) == 31 and ledger.height == 2


def test_handshake_refusals(chain):
    ledger, _ = chain
    with NodeThread(ledger) as node:
        cases = [(p.Hello((1,), CHAIN_ID + 1), p.ErrorCode.wrong_chain),
                 (p.Hello((9, 200), CHAIN_ID), p.ErrorCode.unsupported_version),
                 (p.QueryStatus(), p.ErrorCode.handshake_required)]
        for first, expected in cases:
            with raw_connection(node.port, handshake=False) as sock:
                data = p.encode(first, 5, version=p.HELLO_VERSION)
                sock.sendall(data)
                request_id, answer = sock.read()
                assert (request_id, answer.code) == (5, expected)
                assert sock.read() == (None, None)  # and the node closed it


def test_malformed_request_gets_an_error_and_the_connection_goes_on(chain):
    ledger, _ = chain
    with NodeThread(ledger) as node, raw_connection(node.port) as sock:
        bad = p.encode_frame(p.MessageType.query_balance, 21, bytes(7))
        sock.sendall(bad)
        request_id, answer = sock.read()
        assert request_id == 21 and answer.code == p.ErrorCode.malformed
        sock.sendall(p.encode_frame(0x7E, 22, b""))
        assert sock.read()[1].code == p.ErrorCode.unknown_type
        sock.sendall(p.encode(p.Balance(1, 2), 23))  # an answer type sent as a request
        assert sock.read()[1].code == p.ErrorCode.unknown_type
        assert request(sock, p.Ping(), 24) == (24, p.Pong())
        # A frame that cannot be cut (length below the header) ends the connection.
        sock.sendall(b"\x03\x00\x00\x00abc")
        assert sock.read()[1].code == p.ErrorCode.malformed
        assert sock.read() == (None, None)
        with raw_connection(node.port) as other:
            other.sendall(b"\x00\x00\x00\x80")  # a 2 GiB frame is refused before it comes
            assert other.read() == (0, p.Error(p.ErrorCode.too_large, "a frame of 2147483652 "
                                               "bytes is above the limit of 16777216"))
            assert other.read() == (None, None)



async def submit_concurrently(port: int, jobs: list[tuple[bytes, bytes]], clients: int):
    """All jobs in flight at once over ``clients`` connections; answers in job order.

    The records of one payer all go down one connection, which keeps their order (sequence
    numbers must rise); the connections race each other.
    """
    connections = [AsyncClient("127.0.0.1", port, auto_batch=False) for _ in range(clients)]
    for client in connections:
        await client.connect()
    try:
        return await asyncio.gather(*(
            connections[rec.unpack(record)["debit_account"] % clients].submit(record, signature)
            for record, signature in jobs))
    finally:
        for client in connections:
            await client.close()


@pytest.mark.parametrize("groups_in_flight", [1, 2])
def test_group_commit_shares_blocks_and_answers_each_request_its_own_codes(chain,
                                                                           groups_in_flight):
    """With 2 groups in flight the next group applies while the one before waits for its
    fsync: the codes are those of strict one-at-a-time commit."""
    ledger, wallet = chain
    settings = NodeSettings(group_wait_ms=20, group_records_max=64,
                            groups_in_flight=groups_in_flight)
    jobs, expected = [], []
    for payer in range(1, 9):
        for sequence in range(1, 21):
            # Every fifth request asks for more than the payer has: only those must fail.
            amount = FUNDS * 2 if sequence % 5 == 0 else payer
            jobs.append(wallet.transfer(sequence, amount, payer=payer))
            expected.append(Result.insufficient_funds if sequence % 5 == 0 else Result.ok)
    with NodeThread(ledger, settings) as node:
        answers = asyncio.run(submit_concurrently(node.port, jobs, clients=8))
        blocks = node.call(lambda: ledger.height) - 1
        payee = node.call(lambda: ledger.balance(wallet.payee))
    assert [answer.code for answer in answers] == expected
    assert all(answer.height is not None for answer in answers)
    print(f"\ngroup commit: {len(jobs)} requests from 8 clients -> {blocks} blocks")
    assert blocks < len(jobs) // 4
    assert payee == 1 + sum(payer * 16 for payer in range(1, 9))


def test_a_high_queue_pauses_reading_and_every_request_is_still_served(chain):
    """Past half of queue_records_max the node stops reading frames (TCP pushes back on the
    sender) instead of answering overloaded: all ten submissions commit, in groups no larger
    than the queue."""
    ledger, wallet = chain
    settings = NodeSettings(group_wait_ms=100, queue_records_max=4)
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as sock:
        for sequence in range(1, 11):
            sock.sendall(p.encode(p.Submit(*wallet.transfer(sequence)), sequence))
        answers = dict(sock.read() for _ in range(10))
    assert sorted(answers) == list(range(1, 11))
    assert all(isinstance(a, p.SubmitAnswer) and a.code == Result.ok for a in answers.values())
    # A group holds what was queued: at most the high mark (2) plus the frame cut at it.
    assert len({answer.height for answer in answers.values()}) >= 4


def test_a_batch_larger_than_the_room_left_is_answered_overloaded(chain):
    ledger, wallet = chain
    # The writer waits 300 ms for a group, so the first submission is still queued when the
    # batch arrives: 1 + 4 records exceed the queue of 4.
    settings = NodeSettings(group_wait_ms=300, queue_records_max=4)
    batch = [wallet.transfer(sequence) for sequence in range(2, 6)]
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as sock:
        sock.sendall(p.encode(p.Submit(*wallet.transfer(1)), 1)
                     + p.encode(p.SubmitBatch(b"".join(r for r, _ in batch),
                                              b"".join(s for _, s in batch)), 2))
        answers = dict(sock.read() for _ in range(2))
    assert answers[1].code == Result.ok
    assert answers[2] == p.Error(p.ErrorCode.overloaded,
                                 "1 records are waiting; retry after a pause")


def test_inflight_limit_pauses_reading_without_losing_requests(chain):
    ledger, wallet = chain
    settings = NodeSettings(inflight_per_connection_max=2, group_wait_ms=5)
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as sock:
        frames = b"".join(p.encode(p.Submit(*wallet.transfer(sequence)), sequence)
                          for sequence in range(1, 31))
        sock.sendall(frames)
        answers = dict(sock.read() for _ in range(30))
    assert sorted(answers) == list(range(1, 31))
    assert all(answer.code == Result.ok for answer in answers.values())


def test_duplicate_request_id_in_flight_is_refused(chain):
    ledger, wallet = chain
    settings = NodeSettings(group_wait_ms=200)
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as sock:
        sock.sendall(p.encode(p.Submit(*wallet.transfer(1)), 8)
                     + p.encode(p.Submit(*wallet.transfer(2)), 8))
        first, second = sock.read(), sock.read()
    assert first == (8, p.Error(p.ErrorCode.duplicate_request,
                                "request id 8 is already in flight"))
    assert second[0] == 8 and second[1].code == Result.ok


def test_slow_sender_is_cut_off_while_others_are_served(chain):
    ledger, wallet = chain
    settings = NodeSettings(frame_timeout_s=0.3)
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as slow, \
            Client("127.0.0.1", node.port) as other:
        frame = p.encode(p.Submit(*wallet.transfer(1)), 3)
        closed_after = None
        for index in range(len(frame)):
            try:
                slow.sendall(frame[index:index + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_after = index
                break
            assert other.balance(wallet.payee) == 1  # served while the slow one dribbles
            time.sleep(0.02)
        request_id, answer = slow.read()
        assert closed_after is not None or answer.code == p.ErrorCode.timeout
        assert slow.read() == (None, None)
        assert other.balance(wallet.payer) == FUNDS  # the dribbled transfer never ran


def test_silent_and_surplus_connections_are_closed(chain):
    ledger, _ = chain
    settings = NodeSettings(handshake_timeout_s=0.2, connections_max=2)
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as kept, \
            raw_connection(node.port, handshake=False) as silent:
        assert silent.read() == (0, p.Error(p.ErrorCode.timeout,
                                            "no hello within handshake_timeout_s"))
        assert silent.read() == (None, None)
        with raw_connection(node.port, handshake=False) as second, \
                raw_connection(node.port, handshake=False) as third:
            assert third.read() == (0, p.Error(p.ErrorCode.overloaded,
                                               "the node takes no more connections"))
            assert third.read() == (None, None)
            second.sendall(p.encode(p.Hello((1,), 0), 0))
            assert isinstance(second.read()[1], p.Welcome)
        assert request(kept, p.Ping(), 9) == (9, p.Pong())


def test_clients_vanishing_mid_frame_and_mid_batch(chain):
    ledger, wallet = chain
    batch = [wallet.transfer(sequence, 10) for sequence in range(1, 6)]
    frame = p.encode(p.SubmitBatch(b"".join(r for r, _ in batch),
                                   b"".join(s for _, s in batch)), 1)
    with NodeThread(ledger) as node:
        with raw_connection(node.port) as sock:
            sock.sendall(frame[:len(frame) // 2])  # half a frame, then gone
        with raw_connection(node.port) as sock:
            sock.sendall(frame)  # a whole batch, gone before the answer
        with Client("127.0.0.1", node.port) as client:
            deadline = time.monotonic() + 5
            while client.balance(wallet.payee) != 51 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.balance(wallet.payee) == 51
            retry = client.submit_batch(frame_records(batch), frame_signatures(batch))
            assert retry.codes.tolist() == [Result.already_committed] * 5
            assert retry.final_codes().tolist() == [Result.ok] * 5
            assert client.status().connections == 1


def frame_records(jobs) -> bytes:
    return b"".join(record for record, _ in jobs)


def frame_signatures(jobs) -> bytes:
    return b"".join(signature for _, signature in jobs)


def test_open_linked_group_does_not_link_into_another_request(chain):
    ledger, wallet = chain
    settings = NodeSettings(group_wait_ms=50)
    # Both records are linked, so the group is still open at the end of the request.
    open_ended = [wallet.transfer(1, 5, payer=1, linked=True),
                  wallet.transfer(2, 5, payer=1, linked=True)]
    plain = [wallet.transfer(1, 7, payer=2)]
    with NodeThread(ledger, settings) as node, raw_connection(node.port) as sock:
        sock.sendall(p.encode(p.SubmitBatch(frame_records(open_ended),
                                            frame_signatures(open_ended)), 1)
                     + p.encode(p.SubmitBatch(frame_records(plain), frame_signatures(plain)), 2))
        answers = dict(sock.read() for _ in range(2))
        assert answers[1].codes_array().tolist() == [Result.linked_group_open] * 2
        assert answers[2].codes_array().tolist() == [Result.ok]
        assert node.call(lambda: ledger.balance(wallet.payee)) == 1 + 7



def test_subscription_pushes_every_block_in_order(chain):
    from tsunagi import hashing

    ledger, wallet = chain
    with NodeThread(ledger) as node, raw_connection(node.port) as sock:
        sock.sendall(p.encode(p.Subscribe(0, with_blocks=True), 40))
        assert sock.read() == (40, p.Subscribed(0))
        notices, answers = [], []
        for sequence in (1, 2):
            record, signature = wallet.transfer(sequence, 3)
            sock.sendall(p.encode(p.Submit(record, signature), sequence))
            while len(answers) < sequence or len(notices) < sequence + 1:
                request_id, message = sock.read()
                (notices if request_id == 40 else answers).append(message)
        assert [n.height for n in notices] == [0, 1, 2]
        assert [n.block_hash for n in notices[1:]] == [a.block_hash for a in answers]
        assert all(hashing.header_hash(n.block[:80]) == n.block_hash for n in notices)
        assert [n.record_count for n in notices[1:]] == [1, 1]
        sock.sendall(p.encode(p.Unsubscribe(), 40))
        assert sock.read() == (40, p.SubscriptionEnd())
        assert request(sock, p.Submit(*wallet.transfer(3, 3)), 3)[1].code == Result.ok
        assert request(sock, p.Ping(), 4) == (4, p.Pong())  # and no notice came in between


SERVE = textwrap.dedent("""
    import sys
    from tsunagi.node.server import NodeSettings, run_node
    run_node(sys.argv[1], "127.0.0.1", 0, NodeSettings(group_wait_ms=5),
             on_ready=lambda server: print(server.port, flush=True))
    print("stopped", flush=True)
""")


def test_node_in_another_process_serves_and_stops_cleanly_on_sigterm(tmp_path):
    ledger, wallet = make_ledger(tmp_path)
    ledger.close()
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path / "chain")],
                               stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        with Client("127.0.0.1", port, chain_id=CHAIN_ID) as client:
            answers = [client.submit(*wallet.transfer(sequence, 100))
                       for sequence in range(1, 4)]
            assert [answer.code for answer in answers] == [Result.ok] * 3
            assert client.balance(wallet.payee) == 301
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline() == "stopped\n"
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    with Ledger.open(tmp_path / "chain") as reopened:  # everything answered was durable
        assert reopened.balance(wallet.payee) == 301
        assert reopened.height == 4

