"""The node: binary wire protocol, asyncio server with group commit, client library.

``NodeServer`` serves one Ledger over TCP (``run_node`` is the entry point of
``tsunagi node``); ``Client`` and ``AsyncClient`` talk to it, with an auto-batcher that turns
concurrent one-record submits into batches. The wire layout is in docs/PROTOCOL.md; the
encoders and decoders are in :mod:`tsunagi.node.protocol`.
"""

from tsunagi.node.batcher import AutoBatcher
from tsunagi.node.client import AsyncClient, Client
from tsunagi.node.protocol import BlockNotice, ErrorCode, SubmitAnswer
from tsunagi.node.server import DEFAULT_PORT, NodeServer, NodeSettings, run_node

__all__ = sorted([
    "AsyncClient", "AutoBatcher", "BlockNotice", "Client", "DEFAULT_PORT", "ErrorCode",
    "NodeServer", "NodeSettings", "SubmitAnswer", "run_node",
])
