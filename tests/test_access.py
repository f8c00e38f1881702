"""NodeAccess verifies a node's chain here, trusting nothing the node says.

Method: a NodeServer over the real Ledger on 127.0.0.1, reached through a proxy that can change
one byte of one block on its way to the client. Verifying through the clean path must give
the ledger's own report; a block changed in transit must fail at its height.
"""

from __future__ import annotations

from test_client import CuttingProxy
from test_node import NodeThread, make_ledger

from tsunagi.node import protocol as p
from tsunagi.node.access import NodeAccess

AMOUNT_OFFSET = 32  # of a record (docs/FORMAT.md)
RECORDS_OFFSET = 88  # of a block: header 80, record count 4, batch count 4


class TamperingProxy(CuttingProxy):
    """Relays a node's frames; changes a byte of the block at ``height`` in block notices."""

    def __init__(self, target_port: int, height: int | None) -> None:
        super().__init__(target_port)
        self.height, self.changed = height, 0

    async def _pump_down(self, up_reader, writer) -> None:
        frames = p.FrameReader((1,))
        while data := await up_reader.read(65536):
            frames.feed(data)
            while (frame := frames.next_frame()) is not None:
                writer.write(self._relay(frame))

    def _relay(self, frame: p.Frame) -> bytes:
        message = p.decode(frame)
        if isinstance(message, p.BlockNotice) and message.height == self.height \
                and message.block is not None:
            block = bytearray(message.block)
            block[RECORDS_OFFSET + AMOUNT_OFFSET] ^= 1
            self.changed += 1
            message = p.BlockNotice(message.height, message.block_hash, message.record_count,
                                    bytes(block))
        return p.encode(message, frame.request_id, frame.version)


def test_verify_through_a_node_checks_every_block_here(tmp_path):
    ledger, wallet = make_ledger(tmp_path, payers=2)
    for sequence in range(1, 4):
        ledger.submit(*wallet.transfer(sequence, 10))
    expected = ledger.verify()
    with NodeThread(ledger) as node:
        clean, tampering = TamperingProxy(node.port, None), TamperingProxy(node.port, 2)
        with NodeAccess("127.0.0.1", node.run(clean.start())) as chain:
            assert chain.verify() == expected and expected.ok and expected.blocks == 4
        with NodeAccess("127.0.0.1", node.run(tampering.start())) as chain:
            report = chain.verify()
        assert tampering.changed == 1
        assert not report.ok and report.bad_height == 2
        node.run(clean.stop())
        node.run(tampering.stop())
