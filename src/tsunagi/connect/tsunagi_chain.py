"""The connector of a tsunagi chain: over a Ledger in this process (:class:`TsunagiConnector`)
or through the node client to a ``tsunagi node`` process (:class:`RemoteTsunagiConnector`).

Escrow is a hold: the payer's money moves into a hold whose authority is the connection
chain's account on this chain, with an expiry, so it comes back to the payer by itself if
everything else dies. Posting pays it to the hold's credit account (the rule's settlement
account); voiding returns it. Each record carries the transfer's tag in ``user_data``
(:func:`tsunagi.connect.contract.transfer_tag`), so its proof names its transfer.

:meth:`TsunagiConnector.find` answers a :class:`TsunagiStepProof`: the block's 80-byte header,
the record, its code, its Merkle path to the header's root, and the block's body (codes,
signatures, batches, extension) with the body leaf's path, which proves the code. The
connection contract checks all of it; :func:`check_step` is the same check here, for tests and
for a node that wants to look before it submits.

Both connectors are one class over a small *chain access* object (:class:`LedgerChain`,
:class:`NodeChain`): the sequence of an account, a stored record with its Merkle path, a block,
a run of headers, the height, and a submit. Only that object knows where the chain is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from tsunagi import hashing
from tsunagi.connect import contract, limits
from tsunagi.connect.connector import ChainHeader, LedgerCommit, TxRef, TxStatus
from tsunagi.core import records as rec
from tsunagi.core.block import BatchAuth, batch_root, decode_block
from tsunagi.core.codes import UNSTORED, Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError, EncodingError, NotFoundError, TsunagiError

__all__ = ["BlockRecord", "ChainAccess", "LedgerChain", "NodeChain", "Prepared",
           "RecordNotStored", "RemoteTsunagiConnector", "StoredRecord", "TsunagiConnector",
           "TsunagiStepProof", "check_step"]


class RecordNotStored(TsunagiError):
    """The chain refused a record before storing it (``code``, an unstored Result): nothing
    happened there. A record refused for its sequence (``sequence_used``) never can be
    stored later, so whoever prepared it may prepare a new one."""

    def __init__(self, chain_id: int, code: Result) -> None:
        self.code = code
        super().__init__(f"chain {chain_id} did not store the record ({code.name}): nothing "
                         "happened there; fix the cause and try again")


@dataclass(frozen=True)
class Prepared:
    """A signed record of this chain, ready to send, and its txid. A batch-authorized record
    has no signature of its own: ``batch`` is its batch's (signer key, signature), which signs
    the records sent next to it with the same ``batch`` (send_many sends them as one batch)."""

    record: bytes
    signature: bytes
    txid: bytes
    batch: tuple[bytes, bytes] | None = None


@dataclass(frozen=True)
class BlockRecord:
    """A record of a block of this chain as it stands there: what a follower scans."""

    txid: bytes
    record: bytes  # 128 bytes
    code: Result
    height: int
    position: int


@dataclass(frozen=True)
class TsunagiStepProof:
    """A record of a tsunagi chain proven under its block's header."""

    chain_id: int
    txid: bytes
    height: int
    block_hash: bytes
    header: bytes  # 80 bytes (a consortium chain would add its commit certificate)
    record: bytes  # 128 bytes
    code: Result
    position: int
    path: tuple[bytes, ...]  # the txid's Merkle path to the header's root
    record_count: int
    body: bytes  # codes || signatures || batches || extension: its digest is the last leaf
    body_path: tuple[bytes, ...]

    def to_contract(self) -> dict:
        """The proof as the connection contract's step methods take it."""
        return {"height": self.height, "header": self.header, "record": self.record,
                "position": self.position, "path": list(self.path), "body": self.body,
                "body_path": list(self.body_path), "record_count": self.record_count}


def check_step(proof: TsunagiStepProof) -> bool:
    """True when the proof holds together (record, code and header root), as the contract
    checks it; whether the header belongs to the chain is the light client's question."""
    try:
        fields = contract.check_inclusion(contract.proof_fields(proof.to_contract()))
    except contract.Refuse:
        return False
    return (fields["txid"] == proof.txid and fields["code"] == proof.code and
            hashing.sha256d(proof.header) == proof.block_hash)


def _account(value) -> int:
    try:
        account = int(value)
    except (TypeError, ValueError):
        raise EncodingError(f"an account of a tsunagi chain is its number, got {value!r}") \
            from None
    if not 0 < account < 2 ** 64:
        raise EncodingError(f"an account number is 1..2**64-1, got {account}")
    return account


# ------------------------------------------------------------------------- chain access


class StoredRecord(NamedTuple):
    """A record of the chain in a block, with its code and its Merkle path to the header."""

    txid: bytes
    record: bytes
    code: Result
    height: int
    position: int
    block_hash: bytes
    proof: tuple[bytes, ...]


class ChainAccess(Protocol):
    """What a connector reads and sends on its tsunagi chain, wherever the chain is."""

    chain_id: int
    config: ChainConfig  # the chain's config (a consortium chain's names its validators)

    def height(self) -> int:
        """Blocks the chain holds (the newest is height - 1)."""
        ...

    def sequence(self, account: int) -> int:
        """The last sequence ``account`` used; NotFoundError for an account not there."""
        ...

    def transaction(self, txid: bytes) -> StoredRecord | None: ...

    def block(self, height: int) -> bytes | None: ...

    def headers(self, first: int, end: int) -> bytes:
        """The 80-byte headers of blocks ``first..end-1`` there, back to back."""
        ...

    def submit(self, record: bytes, signature: bytes, now_s: int | None) -> Result:
        """Sends one signed record; its code once it is stored (or why it was not)."""
        ...


class LedgerChain:
    """A tsunagi chain whose Ledger is open in this process. A consortium chain's blocks are
    decided by its validators: pass its ``consortium`` (a
    :class:`tsunagi.consensus.consortium.ConsortiumChain` over ``ledger``) and the
    ``validator_keys`` of more than two thirds of the weight, all in this process (its
    development mode), and what is submitted is committed with their certificate."""

    def __init__(self, ledger, consortium=None, validator_keys=()) -> None:
        self.ledger = ledger
        self.chain_id = ledger.config.chain_id
        self.config = ledger.config
        self.commit = LedgerCommit(ledger, consortium, validator_keys, what="chain",
                                   owner="LedgerChain", node="a validator node (NodeChain)")

    def height(self) -> int:
        return self.ledger.height

    def sequence(self, account: int) -> int:
        return self.ledger.account(account).sequence

    def transaction(self, txid: bytes) -> StoredRecord | None:
        info = self.ledger.transaction(txid)
        if info is None:
            return None
        return StoredRecord(bytes(info.txid), bytes(info.record), Result(info.code),
                            info.height, info.position, bytes(info.block_hash),
                            tuple(bytes(node) for node in info.proof))

    def block(self, height: int) -> bytes | None:
        return self.ledger.block(height)

    def headers(self, first: int, end: int) -> bytes:
        return self.ledger.headers(first, min(end, self.ledger.height))

    def submit(self, record: bytes, signature: bytes, now_s: int | None) -> Result:
        return Result(int(self.commit(record, signature, now_s=now_s).codes[0]))

    def submit_many(self, records: bytes, signatures: bytes, now_s: int | None,
                    batches=()) -> tuple[list[Result], int | None]:
        """Sends signed records in one block (submit_batch: the fast path), ``batches`` the
        BatchAuth entries of those batch-authorized; their codes and the height of the block
        that holds those stored."""
        answer = self.commit(records, signatures, batches=batches, now_s=now_s)
        return [Result(int(code)) for code in answer.codes], answer.height


class NodeChain:
    """A tsunagi chain served by a ``tsunagi node`` process, through a
    :class:`tsunagi.node.client.Client` (passed in: this layer does not import the node's).
    The node sets its blocks' times from its clock, so a fixed ``now_s`` is refused."""

    def __init__(self, client) -> None:
        self.client = client
        self.chain_id = client.welcome.chain_id
        self._config: ChainConfig | None = None

    @property
    def config(self) -> ChainConfig:
        """The chain's config, read once from its genesis block."""
        if self._config is None:
            self._config = ChainConfig.from_json(decode_block(self.client.block(0)).extension)
        return self._config

    def height(self) -> int:
        return self.client.status().height + 1

    def sequence(self, account: int) -> int:
        found = self.client.account(account)
        if found is None:
            raise NotFoundError(f"chain {self.chain_id} has no account {account}")
        return found.sequence

    def transaction(self, txid: bytes) -> StoredRecord | None:
        found = self.client.transaction(txid)
        if found is None:
            return None
        return StoredRecord(bytes(txid), found.record, Result(found.code), found.height,
                            found.position, found.block_hash, tuple(found.proof))

    def block(self, height: int) -> bytes | None:
        return self.client.block(height)

    def headers(self, first: int, end: int) -> bytes:
        parts, height = [], first
        while height < end:
            run = self.client.headers(height, min(end - height, limits.follow_headers_max))
            if not run:
                break  # the chain ends before ``end``
            parts.append(run)
            height += len(run) // 80
        return b"".join(parts)

    def submit(self, record: bytes, signature: bytes, now_s: int | None) -> Result:
        if now_s is not None:
            raise EncodingError("a node process times its blocks by its own clock: connect "
                                "to it without now_s")
        answer = self.client.submit_batch(record, signature)
        return Result(int(answer.codes[0]))


# ---------------------------------------------------------------------------- connectors


class TsunagiConnector:
    """A tsunagi chain as the connection node sees it: ``keys`` are the accounts it may sign
    for (payers who entrust it, the pool, the escrow authority); ``authority`` is the escrow
    authority's account; ``settlement`` the account escrow posts to. ``now_s`` (for tests)
    fixes the block time of what it submits. ``ledger`` is the chain's Ledger in this
    process, or any :class:`ChainAccess` (:class:`RemoteTsunagiConnector` passes a
    :class:`NodeChain`)."""


    def __init__(self, ledger, keys: Mapping[int, PrivateKey], *, authority: int,
                 settlement: int, now_s=None) -> None:
        self.chain: ChainAccess = LedgerChain(ledger) if hasattr(ledger, "submit_batch") \
            else ledger
        self.ledger = getattr(self.chain, "ledger", None)  # None through a node
        self.chain_id = self.chain.chain_id
        self.keys = dict(keys)
        self.authority = _account(authority)
        self.settlement = _account(settlement)
        self.now_s = now_s  # a callable giving the time, or None for the clock
        # transfer id -> (payer, hold sequence): what post and void name.
        self.holds: dict[bytes, tuple[int, int]] = {}

    def prepare(self, account: int, build) -> Prepared:
        """A record ``build(sequence)`` from ``account``, signed and not yet sent: a node
        journals its txid before it sends it, so a restart finds it or sends the same bytes."""
        key = self.keys.get(account)
        if key is None:
            raise ConfigError(f"this connector holds no key for account {account} of "
                              f"chain {self.chain_id}: give it the key or use another")
        record = build(self.chain.sequence(account) + 1)
        return Prepared(record, key.sign_record(record), hashing.sha256d(record))

    def send(self, prepared: Prepared) -> TxRef:
        """Sends a prepared record, or finds it when it is in a block already."""
        info = self.chain.transaction(prepared.txid)
        if info is None:
            now = None if self.now_s is None else self.now_s()
            code = self.chain.submit(prepared.record, prepared.signature, now)
            if code in UNSTORED and code is not Result.already_committed:
                raise RecordNotStored(self.chain_id, code)
            info = self.chain.transaction(prepared.txid)
        return self._ref(info)

    def _ref(self, info: StoredRecord) -> TxRef:
        block = decode_block(self.chain.block(info.height))
        return TxRef(self.chain_id, info.txid, info.height, info.block_hash, block.time,
                     TxStatus.ok if info.code is Result.ok else TxStatus.failed)

    @staticmethod
    def _check_id(transfer_id: bytes) -> None:
        if not isinstance(transfer_id, bytes) or not 0 < len(transfer_id) <= 32:
            raise EncodingError("a transfer id is 1 to 32 bytes")

    def prepare_hold(self, transfer_id: bytes, payer, amount: int, expiry_s: int) -> Prepared:
        self._check_id(transfer_id)
        payer = _account(payer)
        tag = contract.transfer_tag(transfer_id)
        prepared = self.prepare(payer, lambda sequence: rec.hold(
            self.chain_id, sequence, payer, self.settlement, amount,
            authority_account=self.authority, expiry_s=expiry_s, user_data=tag))
        self.holds[transfer_id] = (payer, rec.unpack(prepared.record)["sequence"])
        return prepared

    def hold(self, transfer_id: bytes, payer, amount: int, expiry_s: int) -> TxRef:
        return self.send(self.prepare_hold(transfer_id, payer, amount, expiry_s))

    def remember(self, transfer_id: bytes, payer: int, sequence: int) -> None:
        """Names the hold of a transfer (after a restart, from the connection chain)."""
        self.holds[transfer_id] = (_account(payer), int(sequence))

    def _hold_of(self, transfer_id: bytes) -> tuple[int, int]:
        self._check_id(transfer_id)
        found = self.holds.get(transfer_id)
        if found is None:
            raise NotFoundError(f"no hold of transfer {transfer_id.hex()} is known here: "
                                "remember() it from the connection chain's trail first")
        return found

    def prepare_post(self, transfer_id: bytes, to, amount: int) -> Prepared:
        payer, sequence = self._hold_of(transfer_id)
        if _account(to) != self.settlement:
            raise EncodingError(f"a hold on a tsunagi chain pays its credit account "
                                f"{self.settlement}, not {to}")
        tag = contract.transfer_tag(transfer_id)
        return self.prepare(self.authority, lambda own: rec.post(
            self.chain_id, own, self.authority, payer, sequence, amount, user_data=tag))

    def post(self, transfer_id: bytes, to, amount: int) -> TxRef:
        return self.send(self.prepare_post(transfer_id, to, amount))

    def prepare_void(self, transfer_id: bytes) -> Prepared:
        payer, sequence = self._hold_of(transfer_id)
        tag = contract.transfer_tag(transfer_id)
        return self.prepare(self.authority, lambda own: rec.void(
            self.chain_id, own, self.authority, payer, sequence, user_data=tag))

    def void(self, transfer_id: bytes) -> TxRef:
        return self.send(self.prepare_void(transfer_id))

    def prepare_transfer(self, source, destination, amount: int, *,
                         transfer_id: bytes | None = None) -> Prepared:
        tag = 0 if transfer_id is None else contract.transfer_tag(transfer_id)
        source, destination = _account(source), _account(destination)
        return self.prepare(source, lambda own: rec.transfer(
            self.chain_id, own, source, destination, amount, user_data=tag))

    def transfer(self, source, destination, amount: int, *,
                 transfer_id: bytes | None = None) -> TxRef:
        """A plain transfer; ``transfer_id`` tags it as that transfer's payout."""
        return self.send(self.prepare_transfer(source, destination, amount,
                                               transfer_id=transfer_id))

    def prepare_access(self, consumer, data_set, access_tag: int, amount: int = 1) -> Prepared:
        """A data access as a billing rule reads it: ``amount`` units from ``consumer`` to
        the data set's account with ``access_tag`` in user_data."""
        consumer, data_set = _account(consumer), _account(data_set)
        return self.prepare(consumer, lambda own: rec.transfer(
            self.chain_id, own, consumer, data_set, amount, user_data=access_tag))

    def access(self, consumer, data_set, access_tag: int, amount: int = 1) -> TxRef:
        """Records a data access on this chain (the consumer's key must be here)."""
        return self.send(self.prepare_access(consumer, data_set, access_tag, amount))

    def find(self, txid: bytes) -> TsunagiStepProof | None:
        info = self.chain.transaction(txid)
        if info is None:
            return None
        block = decode_block(self.chain.block(info.height))
        body = (block.codes.tobytes() + block.signatures.tobytes() +
                block.batch_array.tobytes() + block.extension)
        count = len(block)
        # The body digest is the last leaf; the block proves records only, so its path is
        # taken from the same leaves here.
        leaves = np.vstack([block.txids(), np.frombuffer(block.body_digest(), np.uint8)])
        return TsunagiStepProof(
            chain_id=self.chain_id, txid=info.txid, height=info.height,
            block_hash=info.block_hash, header=block.header, record=info.record,
            code=info.code, position=info.position, path=tuple(info.proof),
            record_count=count, body=body, body_path=tuple(hashing.merkle_proof(leaves, count)))

    # --------------------------------------------------------- many records (fast path)

    def prepare_many(self, builds, *, batched: bool = False) -> list[Prepared]:
        """Records ``build(sequence)`` of ``(account, build)`` pairs, signed, in order: each
        account's sequences run on from its last, so one block can carry them all.
        ``batched``: a run of two or more records of one account in a row is batch-authorized
        instead, one signature of that account's key over them all (send_many sends them as
        one batch); only where the chain takes a block's records at once (submit_many)."""
        sequences: dict[int, int] = {}
        accounts, records = [], []
        for account, build in builds:
            if self.keys.get(account) is None:
                raise ConfigError(f"this connector holds no key for account {account} of "
                                  f"chain {self.chain_id}: give it the key or use another")
            sequence = sequences.get(account) or self.chain.sequence(account) + 1
            sequences[account] = sequence + 1
            accounts.append(account)
            records.append(build(sequence))
        runs = _runs(accounts) if batched and hasattr(self.chain, "submit_many") else []
        for first, end in runs:
            for index in range(first, end):
                records[index] = _batch_authorized(records[index])
        txids = [hashing.sha256d(record) for record in records]
        batches: list[tuple[bytes, bytes] | None] = [None] * len(records)
        signatures: list[bytes] = [b""] * len(records)
        for first, end in runs:
            key = self.keys[accounts[first]]
            batch = (key.public_key, key.sign(batch_root(txids[first:end])))
            batches[first:end] = [batch] * (end - first)
        by_account: dict[int, list[int]] = {}  # each account's records are signed together
        for index, account in enumerate(accounts):
            if batches[index] is None:
                by_account.setdefault(account, []).append(index)
        for account, indices in by_account.items():
            signed = self.keys[account].sign_many([txids[index] for index in indices])
            for index, signature in zip(indices, signed):
                signatures[index] = signature
        return [Prepared(record, signature, txid, batch)
                for record, signature, txid, batch in zip(records, signatures, txids, batches)]

    def prepare_holds(self, holds, *, batched: bool = False) -> list[Prepared]:
        """Holds of ``(transfer_id, payer, amount, expiry_s)``, as prepare_hold makes each
        (``batched``: as prepare_many batches them)."""
        builds = []
        for transfer_id, payer, amount, expiry_s in holds:
            self._check_id(transfer_id)
            builds.append((_account(payer), _hold_build(
                self, payer, amount, expiry_s, contract.transfer_tag(transfer_id))))
        prepared = self.prepare_many(builds, batched=batched)
        for (transfer_id, payer, _, _), one in zip(holds, prepared):
            self.holds[transfer_id] = (_account(payer), rec.unpack(one.record)["sequence"])
        return prepared

    def prepare_posts(self, posts, *, batched: bool = False) -> list[Prepared]:
        """Posts of ``(transfer_id, amount)`` to the settlement account, from the authority
        (``batched``: as prepare_many batches them)."""
        builds = []
        for transfer_id, amount in posts:
            payer, sequence = self._hold_of(transfer_id)
            tag = contract.transfer_tag(transfer_id)
            builds.append((self.authority, lambda own, p=payer, s=sequence, a=amount, t=tag:
                           rec.post(self.chain_id, own, self.authority, p, s, a, user_data=t)))
        return self.prepare_many(builds, batched=batched)

    def prepare_transfers(self, transfers, *, batched: bool = False) -> list[Prepared]:
        """Plain transfers of ``(source, destination, amount, transfer_id)`` (``batched``: as
        prepare_many batches them)."""
        builds = []
        for source, destination, amount, transfer_id in transfers:
            tag = contract.transfer_tag(transfer_id)
            source, destination = _account(source), _account(destination)
            builds.append((source, lambda own, s=source, d=destination, a=amount, t=tag:
                           rec.transfer(self.chain_id, own, s, d, a, user_data=t)))
        return self.prepare_many(builds, batched=batched)

    def send_many(self, prepared: list[Prepared]) -> list[TxRef]:
        """Sends prepared records in one block (submit_batch: the fast path), or finds those
        in a block already; RecordNotStored when the chain stores one of them nowhere."""
        submit_many = getattr(self.chain, "submit_many", None)
        if submit_many is None:  # a chain that takes one record a request (a node, for now)
            return [self.send(one) for one in prepared]
        now = None if self.now_s is None else self.now_s()
        codes, height = submit_many(b"".join(one.record for one in prepared),
                                    b"".join(one.signature for one in prepared), now,
                                    _batch_auths(prepared))
        for code in codes:
            if code in UNSTORED and code is not Result.already_committed:
                raise RecordNotStored(self.chain_id, code)
        refs, block = [], None
        for one, code in zip(prepared, codes):
            if code is Result.already_committed:
                refs.append(self._ref(self.chain.transaction(one.txid)))
                continue
            if block is None:
                block = decode_block(self.chain.block(height))
            status = TxStatus.ok if code is Result.ok else TxStatus.failed
            refs.append(TxRef(self.chain_id, one.txid, height, block.hash, block.time, status))
        return refs

    def find_many(self, height: int, txids: list[bytes]) -> tuple[dict, list[list]]:
        """The proof of block ``height`` (header, body, and one Merkle multiproof of the
        records and the body leaf) and, per txid in order, its record and position: what the
        batched step methods take (their items in ascending position)."""
        block = decode_block(self.chain.block(height))
        body = (block.codes.tobytes() + block.signatures.tobytes() +
                block.batch_array.tobytes() + block.extension)
        positions = {bytes(txid): i for i, txid in enumerate(block.txids())}
        items = []
        for txid in txids:
            position = positions.get(bytes(txid))
            if position is None:
                raise NotFoundError(f"txid {txid.hex()} is not in block {height} of chain "
                                    f"{self.chain_id}")
            items.append([block.records[position].tobytes(), position])
        proof = {"height": height, "header": block.header, "body": body,
                 "hashes": block.tx_multiproof([item[1] for item in items]),
                 "record_count": len(block)}
        return proof, items

    @property
    def certified(self) -> bool:
        """Whether the chain is a consortium chain, whose headers travel with certificates."""
        return self.chain.config.is_consortium

    @property
    def kind(self) -> str:
        """The connection contract's kind of this chain."""
        return contract.KIND_TSUNAGI_BFT if self.certified else contract.KIND_TSUNAGI_POW

    def headers_between(self, first: int, end: int) -> list:
        """What a light client is fed of blocks ``first..end-1``: their 80-byte headers, or
        on a consortium chain [header, commit certificate] pairs."""
        data = self.chain.headers(first, end)
        headers = [data[i:i + 80] for i in range(0, len(data), 80)]
        if not self.certified:
            return headers
        return [[header, bytes(decode_block(self.chain.block(first + n)).seal)]
                for n, header in enumerate(headers)]

    def follow(self, from_height: int) -> list[ChainHeader]:
        end = min(self.chain.height(), from_height + limits.follow_headers_max)
        data = self.chain.headers(from_height, end)
        return [ChainHeader(from_height + i // 80, hashing.sha256d(data[i:i + 80]),
                            data[i:i + 80]) for i in range(0, len(data), 80)]

    def block_records(self, height: int, *, credit_account: int | None = None
                      ) -> list[BlockRecord]:
        """The records of block ``height`` with their txids and codes, in block order; only
        those crediting ``credit_account`` when it is given (picked out in one numpy pass, so a
        large block costs no Python object per record it does not match)."""
        tip = self.chain.height()
        data = self.chain.block(height) if 0 <= height < tip else None
        if data is None:
            raise NotFoundError(f"chain {self.chain_id} has no block {height} (its height is "
                                f"{tip})")
        block = decode_block(data)
        positions = np.arange(len(block))
        if credit_account is not None:
            positions = np.flatnonzero(block.records["credit_account"] == int(credit_account))
        txids, records = block.txids(), block.records
        return [BlockRecord(txids[i].tobytes(), records[i].tobytes(), Result(int(block.codes[i])),
                            height, int(i)) for i in positions]

    def finalized_height(self) -> int:
        """A single-node proof-of-work development chain never reorganises by itself; the
        connection contract asks for its own confirmations on top of this."""
        return self.chain.height() - 1


class RemoteTsunagiConnector(TsunagiConnector):
    """A tsunagi chain served by a ``tsunagi node`` process, reached through ``client`` (a
    :class:`tsunagi.node.client.Client`): the same connector as :class:`TsunagiConnector`,
    over a :class:`NodeChain`. Blocks there carry the node's own times."""

    def __init__(self, client, keys: Mapping[int, PrivateKey], *, authority: int,
                 settlement: int) -> None:
        super().__init__(NodeChain(client), keys, authority=authority, settlement=settlement)
        self.client = client


def _hold_build(connector: TsunagiConnector, payer, amount: int, expiry_s: int, tag: int):
    payer = _account(payer)
    return lambda sequence: rec.hold(
        connector.chain_id, sequence, payer, connector.settlement, amount,
        authority_account=connector.authority, expiry_s=expiry_s, user_data=tag)


def _runs(accounts: list[int]) -> list[tuple[int, int]]:
    """The ``(first, end)`` ranges where two or more records of one account follow each
    other: what one key may authorize as a batch."""
    runs, first = [], 0
    for index in range(1, len(accounts) + 1):
        if index == len(accounts) or accounts[index] != accounts[first]:
            if index - first >= 2:
                runs.append((first, index))
            first = index
    return runs


def _batch_authorized(record: bytes) -> bytes:
    """The record with its batch_authorized flag set (its txid changes with it)."""
    return record[:1] + bytes([record[1] | rec.Flags.batch_authorized]) + record[2:]


def _batch_auths(prepared: list[Prepared]) -> list[BatchAuth]:
    """The BatchAuth entries of the batch-authorized records among ``prepared``: each run of
    records with one ``batch`` is that batch."""
    auths: list[BatchAuth] = []
    for index, one in enumerate(prepared):
        if one.batch is None:
            continue
        if auths and index == auths[-1].first + auths[-1].count and \
                prepared[index - 1].batch == one.batch:
            last = auths[-1]
            auths[-1] = last._replace(count=last.count + 1)
        else:
            auths.append(BatchAuth(index, 1, *one.batch))
    return auths
