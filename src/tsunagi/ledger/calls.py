"""Call records and the contract layer: how the ledger hands a block's calls to a runner.

The commit kernel treats a call (kind 9) as an authorized record that changes no balance. What
the call does is a contract's business (tsunagi.contracts, a layer above this one), so the
ledger takes a :class:`CallRunner` from whoever opens it and, for every block of a chain whose
config names contracts, hands it the block's authorized calls in order. The runner answers one
code per call and the world state's root after the block; the root goes in the block as a
state-root entry (docs/FORMAT.md, "Block entries"), so every node that replays the chain checks
it reaches the same state. A call the contract refuses still uses its sequence and is stored
with its code, as a transfer without funds is.

Contract outcomes do not take part in linked groups or authorized batches: the kernel decided
those before the contract ran.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tsunagi.core.block import BlockResult, block_entries
from tsunagi.core.codes import Result
from tsunagi.core.entries import Payload, StateRoot, encode_entries, state_root_of
from tsunagi.core.records import Kind
from tsunagi.errors import StorageError
from tsunagi.ledger.checksum import crc32
from tsunagi.ledger.log import write_file_atomically

__all__ = ["CONTRACT_CODES", "Call", "CallRunner", "ContractHost", "calls_of",
           "kernel_view_of_codes"]

SNAPSHOT_FILE = "contracts.snapshot"
_SNAPSHOT_MAGIC = b"TSUWORLD"
_SNAPSHOT_HEAD = struct.Struct("<8sQ32sI")  # magic, height, block hash, crc32 of the state

# Codes only the contract layer gives; the kernel sees such a call as ok.
CONTRACT_CODES = (Result.call_refused, Result.call_failed)
_CONTRACT_CODE = np.zeros(256, dtype=bool)
_CONTRACT_CODE[[int(code) for code in CONTRACT_CODES]] = True


@dataclass(frozen=True)
class Call:
    """One authorized call of a block, as a contract runner sees it."""

    position: int  # the record's index in its block
    txid: bytes
    caller_account: int
    caller_key: bytes  # the key that signed: the caller account's owner key
    contract: int  # the chain config's contract number (1 for the first)
    sequence: int
    payload: bytes


class CallRunner(Protocol):
    """World state and the contracts on it, driven block by block by the ledger."""

    def run_block(self, height: int, block_time_s: int,
                  calls: Sequence[Call]) -> tuple[list[int], bytes]:
        """Runs ``calls`` in order as block ``height``: one Result code per call (ok,
        call_refused or call_failed), and the 32-byte state root after the block. Called for
        every block of the chain, also those without calls."""

    def undo_block(self, height: int) -> None:
        """Takes block ``height``, the newest run, back exactly."""

    def snapshot(self) -> bytes:
        """The whole state after the newest block run, to hand to ``restore``."""

    def restore(self, data: bytes, height: int) -> None:
        """Puts back a ``snapshot`` taken after block ``height``."""


def calls_of(records: np.ndarray, codes: np.ndarray, txids: np.ndarray, keys,
             payloads: dict[int, bytes]) -> list[Call]:
    """The calls of a block's records that the kernel authorized (code ok), in order.
    ``keys``: position -> the signing key; ``payloads``: position -> payload."""
    found = np.flatnonzero((records["kind"] == Kind.call) & (codes == 0))
    return [Call(int(i), txids[i].tobytes(), int(records["debit_account"][i]), keys(int(i)),
                 int(records["aux"][i]), int(records["sequence"][i]), payloads[int(i)])
            for i in found]


def kernel_view_of_codes(records: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A block's stored codes as the kernel alone gives them: a call the contract refused
    or failed was ok to the kernel."""
    codes = np.asarray(codes, dtype=np.uint8)
    contract = _CONTRACT_CODE[codes] & (records["kind"] == Kind.call)
    return np.where(contract, np.uint8(0), codes) if contract.any() else codes


class ContractHost:
    """The ledger's side of the contract layer for one chain: runs each block's calls through
    the runner, puts the state root in the blocks made here and checks it in blocks made
    elsewhere, takes blocks back, and keeps the runner's snapshot beside the chain.

    A chain whose config names no contracts runs none: every authorized call there gets
    call_failed, the same on every node, and its blocks carry no state root. A chain that
    names contracts needs a runner to take writes (reads need none)."""

    def __init__(self, runner: CallRunner | None, contracts: bool, directory: Path) -> None:
        self.runner = runner
        self.contracts = contracts
        self.path = directory / SNAPSHOT_FILE

    def _runner(self) -> CallRunner | None:
        if self.contracts and self.runner is None:
            raise StorageError("this chain runs contracts (its config names them): open the "
                               "ledger with calls= a contract runtime (tsunagi.contracts) to "
                               "write to it")
        return self.runner

    def _run(self, height: int, block_time: int, calls: list[Call]):
        runner = self._runner()
        if runner is None:
            return [Result.call_failed] * len(calls), None
        codes, root = runner.run_block(height, block_time, calls)
        if len(codes) != len(calls) or len(root) != 32:
            raise ValueError("a contract runner answers one code per call and a 32-byte root")
        return codes, bytes(root)

    def run_made(self, height: int, block_time: int, outcome, owner_key) -> bytes:
        """Runs the calls of a block made here (a processed batch's stored records), writes
        their codes into the outcome, and returns the state-root entry for its extension."""
        if not self.contracts and not outcome.stored_payloads:
            return b""  # every stored call has its payload: no payloads, no calls to fail
        stored = outcome.stored_records
        payloads = {entry.record_index: entry.data for entry in outcome.stored_payloads}
        calls = calls_of(stored, outcome.stored_codes, outcome.txids[outcome.stored],
                         lambda i: owner_key(int(stored["debit_account"][i])), payloads)
        codes, root = self._run(height, block_time, calls)
        where = np.flatnonzero(outcome.stored)
        for call, code in zip(calls, codes):
            outcome.stored_codes[call.position] = code
            outcome.codes[where[call.position]] = code
        return b"" if root is None else encode_entries([StateRoot(root)])

    def run_connected(self, height: int, block, kernel_codes: np.ndarray,
                      owner_key) -> BlockResult:
        """Runs the calls of a block made elsewhere and checks the codes and the state root
        it stores; on a mismatch the runner has taken the block back already."""
        if not self.contracts and not block.extension_length:
            return BlockResult.ok  # check_block saw every call's payload in the extension
        records = block.records
        found = block_entries(block)
        payloads = {entry.record_index: entry.data for entry in found
                    if isinstance(entry, Payload)}
        calls = calls_of(records, kernel_codes, block.txids(),
                         lambda i: owner_key(int(records["debit_account"][i])), payloads)
        codes, root = self._run(height, block.time, calls)
        if any(int(block.codes[call.position]) != int(code) for call, code in zip(calls, codes)):
            result = BlockResult.codes_differ
        elif root != state_root_of(found):
            result = BlockResult.state_root_differs
        else:
            return BlockResult.ok
        if root is not None:
            self.runner.undo_block(height)
        return result

    def undo(self, height: int) -> None:
        """Block ``height``, the newest run, goes back (the ledger took it back)."""
        if self.runner is not None and self.contracts:
            self.runner.undo_block(height)

    def save(self, height: int, block_hash: bytes) -> None:
        """The runner's state after block ``height`` (durable), beside the chain."""
        if self.runner is None or not self.contracts:
            return
        data = self.runner.snapshot()
        head = _SNAPSHOT_HEAD.pack(_SNAPSHOT_MAGIC, height, block_hash, crc32(data))
        write_file_atomically(self.path, head + data)

    def restore(self, block_hash_at) -> int:
        """Puts the saved state back when it belongs to this chain (the block it was taken
        after is still there); returns the height to run blocks from (1: from the start)."""
        if self.runner is None or not self.contracts or not self.path.exists():
            return 1
        raw = self.path.read_bytes()
        if len(raw) < _SNAPSHOT_HEAD.size:
            return 1
        magic, height, block_hash, checksum = _SNAPSHOT_HEAD.unpack_from(raw)
        data = raw[_SNAPSHOT_HEAD.size:]
        if magic != _SNAPSHOT_MAGIC or crc32(data) != checksum or \
                block_hash_at(height) != block_hash:
            return 1  # damaged, or of a branch a reorg took off: run the chain again
        self.runner.restore(data, height)
        return height + 1
