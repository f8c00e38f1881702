"""The interface every connector of ConnectionChain shares, whatever the linked chain.

A connector acts on one linked chain for the connection node: it moves money into escrow,
pays it out or returns it, and makes plain transfers from the accounts it holds keys for. Each
operation answers a :class:`TxRef` once the linked chain has included it; :meth:`Connector.find`
then gives the :class:`StepProof` a light client of that chain checks before the connection
chain records the step. The connection chain trusts proofs, never a connector's word.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, Sequence, runtime_checkable

from tsunagi.errors import ConfigError

__all__ = ["ChainHeader", "Connector", "LedgerCommit", "StepProof", "TxRef", "TxStatus"]


class TxStatus(IntEnum):
    ok = 0  # included and applied: its effects stand
    failed = 1  # included in a block but refused there (reverted, or a rejection code)


@dataclass(frozen=True)
class TxRef:
    """Where a transaction of a linked chain is: what the connection chain's trail records."""

    chain_id: int  # the linked chain's own id (an Ethereum chain id, a tsunagi chain id)
    txid: bytes  # the transaction's id on that chain
    height: int  # the block that holds it
    block_hash: bytes
    time_s: int  # the block's time, seconds since 1970
    status: TxStatus


@dataclass(frozen=True)
class ChainHeader:
    """A block header of a linked chain in that chain's own encoding, for a light client."""

    height: int
    block_hash: bytes
    header: bytes


@runtime_checkable
class StepProof(Protocol):
    """What a light client needs to believe a step: the block's header in the chain's own
    encoding and the inclusion proof of the transaction under it. Each kind of chain adds its
    own fields (a Merkle path of records; a Merkle-Patricia path of receipts) and a checker."""

    chain_id: int
    txid: bytes
    height: int
    block_hash: bytes
    header: bytes


class Connector(Protocol):
    """A linked chain as the connection node sees it.

    Every operation waits until the chain has included its transaction and answers its
    TxRef; a transaction included but refused there answers ``status`` failed (it has a proof
    too, so the trail can show the refusal). Misuse (an id of the wrong size, a source account
    the connector holds no key for) raises an error from :mod:`tsunagi.errors` and sends
    nothing.
    """

    chain_id: int

    def hold(self, transfer_id: bytes, payer: str, amount: int, expiry_s: int) -> TxRef:
        """Moves ``amount`` of ``payer``'s money into escrow under ``transfer_id`` until
        ``expiry_s`` (the chain's block time, seconds since 1970). Only the escrow authority
        (this connector's key) may then post or void it; after the expiry it returns to the
        payer without anyone's help. A transfer id is used once on a chain, ever."""
        ...

    def post(self, transfer_id: bytes, to: str, amount: int) -> TxRef:
        """Pays ``amount`` of the hold to ``to``; the rest of the hold returns to its payer."""
        ...

    def void(self, transfer_id: bytes) -> TxRef:
        """Returns the whole hold to its payer."""
        ...

    def transfer(self, source: str, destination: str, amount: int) -> TxRef:
        """A plain transfer from an account this connector holds the key of (a pool)."""
        ...

    def find(self, txid: bytes) -> StepProof | None:
        """The proof of an included transaction: its block's header and the inclusion proof;
        None when the chain has no such transaction in a block."""
        ...

    def follow(self, from_height: int) -> Sequence[ChainHeader]:
        """Headers from ``from_height`` up, in order, as many as the connector's limit allows
        (call again from the next height for more); empty when that height is not there."""
        ...

    def finalized_height(self) -> int:
        """The height of the newest block that can no longer be undone."""
        ...


class LedgerCommit:
    """Commits records to a tsunagi ledger open in this process: by ``submit_batch``, or on a
    consortium chain as the block its ``validator_keys`` (more than two thirds of the
    weight, all here: the development mode) decide through ``consortium`` (a
    :class:`tsunagi.consensus.consortium.ConsortiumChain` over ``ledger``). ``owner`` names
    the class that holds it and ``node`` how else to reach the chain, for the error that a
    consortium chain without its ConsortiumChain gets."""

    def __init__(self, ledger, consortium, validator_keys, *, what: str, owner: str,
                 node: str) -> None:
        if ledger.config.is_consortium and consortium is None:
            raise ConfigError(f"{what} {ledger.config.chain_id} is a consortium chain: give "
                              f"{owner} its ConsortiumChain and validator keys, or reach it "
                              f"through {node}")
        self.ledger, self.consortium = ledger, consortium
        self.validator_keys = tuple(validator_keys)

    def __call__(self, records, signatures, *, batches=(), payloads=(), now_s=None):
        """The batch's answer once its block is stored."""
        if self.consortium is None:
            return self.ledger.submit_batch(records, signatures, batches, now_s=now_s,
                                            payloads=payloads)
        return self.consortium.commit_with_keys(self.validator_keys, records, signatures,
                                                batches, now_s=now_s, payloads=payloads)
