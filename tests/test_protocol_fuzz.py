"""Malformed wire input gets ProtocolError, never a crash: at the decoder and at a live node.

Method: at unit level, hypothesis and a seeded mutation fuzzer feed the frame decoder and every
message decoder truncated, oversized, garbage, wrong-version and lying-length input, and the
only exception allowed out is ProtocolError. Against a live node on 127.0.0.1 (the real
Ledger), each fuzz case goes down its own connection followed by a ping: the node must answer
the ping or close the connection, while a second, well-behaved client keeps getting correct
answers all along. The number of cases tried is printed.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_node import NodeThread, make_ledger
from test_protocol import messages

from tsunagi.core import records as rec
from tsunagi.errors import ProtocolError
from tsunagi.node import limits
from tsunagi.node import protocol as p
from tsunagi.node.client import Client
from tsunagi.node.server import NodeSettings

VERSIONS = (p.HELLO_VERSION,) + limits.protocol_versions


def corpus() -> list[bytes]:
    """One valid frame of every request and answer type."""
    record = rec.transfer(7, 1, 1, 2, 5)
    authorized = rec.transfer(7, 2, 1, 2, 5, batch_authorized=True)
    entry = struct.pack("<II", 1, 1) + bytes(range(32)) + bytes(8) + bytes(range(64))
    block = bytes(range(92))
    samples = [
        p.Hello((1,), 7), p.Welcome(1, 7, 3, bytes(32), 1 << 20, 8, 100),
        p.Error(p.ErrorCode.not_found, "no such account"), p.Ping(), p.Pong(),
        p.Submit(record, bytes(64)),
        p.SubmitBatch(record + authorized + record, bytes(128), entry),
        p.SubmitAnswer(3, bytes(range(32)), bytes([0, 10, 8]), ((1, 0),), ((0, 9),)),
        p.QueryBalance(1), p.Balance(1, 50), p.QueryAccount(2),
        p.Account(2, bytes(32), 5, 6, 1), p.QueryTransaction(bytes(32)),
        p.Transaction(record, 0, 4, 1, bytes(32), (bytes(32), bytes(range(32)))),
        p.QueryBlock(height=2), p.QueryBlock(block_hash=bytes(32)), p.Block(block),
        p.QueryHistory(1, 10, (5, 2)), p.History((p.HistoryEntry(record, 0, 1, 2, bytes(32)),)),
        p.QueryStatus(), p.Status(7, 1, 3, bytes(32), 2, 0, 5, 9),
        p.Subscribe(0, True), p.Subscribed(3), p.BlockNotice(1, bytes(32), 2, block),
        p.BlockNotice(1, bytes(32), 2), p.Unsubscribe(), p.SubscriptionEnd(),
        p.QueryAccounts(bytes(range(32)), 3), p.Accounts((4, 9, 12)), p.QueryHolds(2),
        p.Holds(40, 2, (p.Hold(2, 5, 3, 3, 40, 99, bytes(32), p.HOLD_OPEN),)),
        p.QueryHold(2, 5), p.Hold(2, 5, 3, 3, 40, 99, bytes(range(32)), 2),
        p.QueryPolicy(2, 1), p.Policy(2, 1, bytes(range(32)), 10, 100, 90, 0, (3,)),
    ]
    return [p.encode(message, 1000 + i) for i, message in enumerate(samples)]


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """One random damage of a valid frame: the classes of defect a fuzzer should reach."""
    data = bytearray(frame)
    kind = rng.randrange(9)
    if kind == 0:  # flip one bit anywhere
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)):]
    elif kind == 2:  # append garbage
        data += rng.randbytes(rng.randrange(1, 40))
    elif kind == 3:  # lie about the length, keep the bytes
        struct.pack_into("<I", data, 0, rng.choice(
            [0, 1, 11, 12, len(data) - 5, len(data) + 7, 2**31, 2**32 - 1]))
    elif kind == 4:  # wrong version
        data[4] = rng.choice([0, 2, 3, 255])
    elif kind == 5:  # another message type with this payload
        data[5] = rng.randrange(256)
    elif kind == 6:  # undefined flags
        struct.pack_into("<H", data, 6, rng.randrange(1, 2**16))
    elif kind == 7 and len(data) > 16:  # overwrite a payload field with extremes
        at = rng.randrange(16, len(data))
        width = min(4, len(data) - at)
        data[at:at + width] = rng.choice([b"\xff", b"\x00"]) * width
    else:  # delete a slice from the middle, length field left as it was
        at = rng.randrange(len(data))
        del data[at:at + rng.randrange(1, 24)]
    return bytes(data)


def decode_all(data: bytes):
    """Frame reader, then message decoder, as a node reads: messages out or ProtocolError."""
    reader = p.FrameReader(VERSIONS)
    reader.feed(data)
    decoded = []
    while (frame := reader.next_frame()) is not None:
        decoded.append(p.decode(frame))
    return decoded


@given(st.binary(max_size=400))
@settings(max_examples=1500, deadline=None)
def test_garbage_bytes_only_raise_protocol_error(data):
    try:
        decode_all(data)
    except ProtocolError:
        pass


@given(messages, st.data())
@settings(max_examples=800, deadline=None)
def test_every_truncation_of_every_message_is_refused_cleanly(message, data):
    frame = p.encode(message, 1)
    cut = data.draw(st.integers(0, len(frame) - 1))
    # A frame cut short is not a frame: decode_frame must refuse it whole.
    with pytest.raises(ProtocolError):
        p.decode_frame(frame[:cut], VERSIONS)
    # The same payload under a corrected length may still parse as a shorter valid message
    # (a block is any length); otherwise it must be ProtocolError and nothing else.
    if cut >= 16:
        shortened = struct.pack("<I", cut - 4) + frame[4:cut]
        try:
            p.decode_message(shortened, VERSIONS)
        except ProtocolError:
            pass


def test_oversized_wrong_version_and_lying_length_frames():
    reader = p.FrameReader(VERSIONS, frame_bytes_max=1024)
    reader.feed(struct.pack("<I", 2000) + bytes(8))
    with pytest.raises(ProtocolError, match="above the limit"):
        reader.next_frame()
    frame = bytearray(p.encode(p.QueryBalance(1), 1))
    frame[4] = 9
    with pytest.raises(ProtocolError, match="version 9"):
        p.decode_frame(frame)
    for length in (0, 11, 19, 21, 2**32 - 1):
        lying = struct.pack("<I", length) + bytes(frame[4:])
        with pytest.raises(ProtocolError):
            p.decode_frame(lying)


def test_mutation_fuzzer_over_valid_frames():
    rng = random.Random(20240601)
    frames = corpus()
    outcomes = {"decoded": 0, "refused": 0}
    cases = 0
    for _ in range(6000):
        damaged = mutate(rng.choice(frames), rng)
        cases += 1
        try:
            decode_all(damaged)
            outcomes["decoded"] += 1
        except ProtocolError:
            outcomes["refused"] += 1
    print(f"\nmutation fuzzer: {cases} cases, {outcomes}")
    assert outcomes["refused"] > cases // 2  # most damage must be noticed, not waved through


# --- against a live node ---------------------------------------------------------------------

def hello_bytes() -> bytes:
    return p.encode(p.Hello(limits.protocol_versions, 0), 0)


def read_until_pong_or_close(sock: socket.socket, ping_id: int) -> str:
    """'answered' when the node answers the ping after the damaged frame, 'closed' when it
    closes the connection first. A timeout fails the test: the node must never be stuck."""
    reader = p.FrameReader(VERSIONS)
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return "closed"
        if not data:
            return "closed"
        reader.feed(data)
        while (frame := reader.next_frame()) is not None:
            if frame.request_id == ping_id and frame.type == p.MessageType.pong:
                return "answered"


def send_case(port: int, payload: bytes, handshake: bool) -> str:
    ping_id = 2**63 + 1
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if handshake:
            sock.sendall(hello_bytes())
        try:
            sock.sendall(payload + p.encode(p.Ping(), ping_id))
            # Ending our side makes the node close once it has read everything, so a
            # frame that lies about its length ends at once instead of at the frame timeout.
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
        return read_until_pong_or_close(sock, ping_id)


def well_behaved(port: int, wallet, stop: threading.Event, results: list) -> None:
    with Client("127.0.0.1", port, auto_batch=False) as client:
        sequence = 1000
        while not stop.is_set():
            sequence += 1
            answer = client.submit(*wallet.transfer(sequence))
            balance = client.balance(wallet.payee)
            results.append((answer.code, balance))


def wait_for_progress(results: list, timeout_s: float = 10.0) -> None:
    seen, deadline = len(results), time.monotonic() + timeout_s
    while len(results) == seen:
        assert time.monotonic() < deadline, "the well-behaved client got no answer"
        time.sleep(0.005)


def test_live_node_survives_fuzzing(tmp_path):
    ledger, wallet = make_ledger(tmp_path)
    settings_ = NodeSettings(frame_timeout_s=2.0, group_wait_ms=1.0)
    with NodeThread(ledger, settings_) as node:
        before = node.call(lambda: ledger.balance(wallet.payee))
        stop, results = threading.Event(), []
        helper = threading.Thread(target=well_behaved, args=(node.port, wallet, stop, results))
        helper.start()
        rng = random.Random(7)
        frames = corpus()
        counts = {"answered": 0, "closed": 0}
        cases = 0
        try:
            for case in range(400):
                if case % 40 == 0:
                    wait_for_progress(results)  # the other client is served throughout
                payload = mutate(rng.choice(frames), rng)
                counts[send_case(node.port, payload, handshake=rng.random() < 0.9)] += 1
                cases += 1
            for payload in (rng.randbytes(300), b"\xff" * 16, bytes(4), hello_bytes()[:7]):
                counts[send_case(node.port, payload, handshake=False)] += 1
                cases += 1
        finally:
            stop.set()
            helper.join()
        print(f"\nlive fuzz: {cases} cases, {counts}; well-behaved client: "
              f"{len(results)} answers")
        assert counts["answered"] > 0 and counts["closed"] > 0
        assert len(results) >= 10
        assert all(code == 0 for code, _ in results)
        # Balances kept increasing by exactly the well-behaved client's transfers.
        assert [balance for _, balance in results] == \
            list(range(before + 1, before + 1 + len(results)))
        assert node.call(lambda: ledger.balance(wallet.payee)) == before + len(results)
