"""Step proofs of an Ethereum chain and the light client that checks them.

A step on Ethereum is a transaction of the escrow or token contract. Its proof is the block
header in RLP (whose keccak-256 is the block hash), a Merkle-Patricia proof of the transaction
under the header's transactionsRoot (the transaction's keccak is its id) and one of its receipt
under receiptsRoot, both at the transaction's position in the block (key: the position in
RLP). The receipt says whether it succeeded and carries the logs, so the checker reads from
proven bytes which escrow event happened, with its hold id, amount and account.

Encodings follow the yellow paper and EIP-2718: a legacy receipt is
``rlp([status, cumulative_gas, bloom, logs])``, a typed one is its type byte followed by the
same list; a log is ``[address, topics, data]``.

Finality: eth-tester mines each transaction into a block of its own and has no forks, so a
block is final when it is mined. :class:`EthereumLightClient` therefore trusts every header that
links to the newest header it trusts (parent hash and height), starting from a header it was
given (the genesis). Those headers carry no seal a light client could check: on a public
network the trusted headers would come from a finality proof (the beacon chain's sync
committee), which this light client does not implement.

Everything read from a proof is untrusted: :func:`check_step` answers a :class:`StepCode` for
every failure and never raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Mapping, Sequence

from tsunagi import extras
from tsunagi.connect import limits
from tsunagi.connect.connector import ChainHeader
from tsunagi.errors import NodeError

try:  # the ethereum extra: without it this module imports, and its functions say what to add
    import rlp
    from eth_hash.auto import keccak
    from trie import HexaryTrie
except ImportError:
    rlp = keccak = HexaryTrie = None

__all__ = ["EVENTS", "EthereumLightClient", "EthereumStepProof", "Event", "StepCode",
           "build_step_proof", "check_step", "encode_receipt", "expect", "header_fields",
           "header_time_s", "receipt_events"]

FEATURE = "the Ethereum connector"
HASH_BYTES = 32
ADDRESS_BYTES = 20
BLOOM_BYTES = 256
# Positions in the header's RLP list (the yellow paper's order; later forks append fields).
_PARENT, _TRANSACTIONS_ROOT, _RECEIPTS_ROOT, _NUMBER, _TIME = 0, 4, 5, 8, 11
_HEADER_FIELDS_LEAST = 15  # the fields every fork has (Frontier's fifteen)
_HASH_FIELDS = (0, 1, 3, 4, 5)  # parent, ommers, state, transactions and receipts roots
_TYPED_LAST = 0x7F  # EIP-2718: a first byte up to 0x7f is a type; 0xc0 and up is a legacy list


class StepCode(IntEnum):
    ok = 0  # the step happened, in a block the light client trusts, as expected
    malformed = 1  # a field of the wrong type or size, or a count past its limit
    wrong_chain = 2  # the proof names another chain than the checker's
    header_malformed = 3  # the header is not an RLP list of an Ethereum header's fields
    header_hash_mismatch = 4  # the header's keccak is not the block hash named: a forged header
    header_not_linked = 5  # the header is not on the chain of headers the light client trusts
    height_mismatch = 6  # the header's number is not the height named (or the parent's + 1)
    transaction_not_in_block = 7  # the transaction proof fails against transactionsRoot
    transaction_mismatch = 8  # the block's transaction there is another one: a proof for another
    receipt_not_in_block = 9  # the receipt proof fails against receiptsRoot at that position
    receipt_malformed = 10  # the proven receipt is not an EIP-2718 receipt
    receipt_failed = 11  # the transaction is in the block but reverted: it changed nothing
    contract_mismatch = 12  # no log of the receipt comes from the expected contract
    event_mismatch = 13  # the contract logged, but not the expected event with those values


# The events of contracts/token.vy and contracts/escrow.vy (a test holds them to the compiled
# ABI): name -> its arguments as (name, type, indexed). Every type is one 32-byte word.
EVENTS = {
    "Transfer": (("sender", "address", True), ("receiver", "address", True),
                 ("value", "uint256", False)),
    "Approval": (("owner", "address", True), ("spender", "address", True),
                 ("value", "uint256", False)),
    "Held": (("id", "bytes32", True), ("payer", "address", True), ("amount", "uint256", False),
             ("expiry", "uint256", False)),
    "Released": (("id", "bytes32", True), ("receiver", "address", True),
                 ("amount", "uint256", False), ("rest", "uint256", False)),
    "Voided": (("id", "bytes32", True), ("payer", "address", True), ("amount", "uint256", False)),
    "Refunded": (("id", "bytes32", True), ("payer", "address", True),
                 ("amount", "uint256", False)),
}


def _signature(name: str) -> str:
    return f"{name}({','.join(kind for _, kind, _ in EVENTS[name])})"


@dataclass(frozen=True)
class Event:
    """A decoded log: the contract that wrote it, the event's name, its arguments in order
    (addresses as 20 bytes, ids as 32 bytes, amounts as int). An expected event (from
    :func:`expect`) may name only some arguments."""

    contract: bytes
    name: str
    args: tuple[tuple[str, object], ...]

    def arg(self, name: str) -> object:
        return dict(self.args)[name]

    def matches(self, expected: Event) -> bool:
        mine = dict(self.args)
        return (self.contract == expected.contract and self.name == expected.name
                and all(mine.get(key, _MISSING) == value for key, value in expected.args))


_MISSING = object()


def expect(contract: bytes | str, name: str, **args: object) -> Event:
    """The event a checker wants to see: ``expect(escrow, "Held", id=transfer_id,
    amount=5)``. Addresses may be hex strings; they are compared as 20 bytes."""
    if name not in EVENTS:
        raise ValueError(f"unknown event {name!r}: one of {', '.join(EVENTS)}")
    known = {arg for arg, _, _ in EVENTS[name]}
    if set(args) - known:
        raise ValueError(f"{name} has no argument {sorted(set(args) - known)}; "
                         f"it has {sorted(known)}")
    kinds = {arg: kind for arg, kind, _ in EVENTS[name]}
    values = tuple((key, _address_bytes(value) if kinds[key] == "address" else value)
                   for key, value in args.items())
    return Event(_address_bytes(contract), name, values)


def _address_bytes(address: bytes | str) -> bytes:
    if isinstance(address, str):
        address = bytes.fromhex(address.removeprefix("0x"))
    if not isinstance(address, bytes) or len(address) != ADDRESS_BYTES:
        raise ValueError(f"an Ethereum address is 20 bytes (40 hex digits), got {address!r}")
    return address


@dataclass(frozen=True)
class EthereumStepProof:
    """An Ethereum transaction with what a light client needs to believe it (see the module
    docstring). Made by :func:`build_step_proof`; checked by :func:`check_step`."""

    chain_id: int
    txid: bytes
    height: int
    block_hash: bytes
    header: bytes  # the block header in RLP
    position: int  # the transaction's index in its block: the key of both proofs
    transaction: bytes  # the transaction as signed (EIP-2718): its keccak is the txid
    transaction_proof: tuple[bytes, ...]  # trie nodes in RLP, root first
    receipt: bytes  # the receipt (EIP-2718)
    receipt_proof: tuple[bytes, ...]

    def to_contract(self) -> dict:
        """The proof as the connection contract's eth_* step methods take it."""
        return {"header": self.header, "position": self.position,
                "transaction_proof": list(self.transaction_proof),
                "receipt_proof": list(self.receipt_proof)}

    def events(self) -> tuple[Event, ...]:
        """The receipt's logs that are events of tsunagi's contracts: read only after
        check_step answered ok, they say what happened."""
        decoded = _decode_receipt(self.receipt)
        return () if decoded is None else receipt_events(decoded[1])


def encode_receipt(transaction_type: int, succeeded: bool, cumulative_gas: int, bloom: bytes,
                   logs: Sequence[tuple[bytes, Sequence[bytes], bytes]]) -> bytes:
    """A receipt as the receipts trie holds it (EIP-2718; type 0 is the legacy list)."""
    extras.require("ethereum", FEATURE)
    body = rlp.encode([b"\x01" if succeeded else b"", cumulative_gas, bloom,
                       [[address, list(topics), data] for address, topics, data in logs]])
    return body if transaction_type == 0 else bytes([transaction_type]) + body


def _position_key(position: int) -> bytes:
    return rlp.encode(position)


def _trie(items: Sequence[bytes]) -> HexaryTrie:
    built = HexaryTrie({})
    with built.squash_changes() as batch:
        for position, item in enumerate(items):
            batch[_position_key(position)] = item
    return built


def build_step_proof(chain_id: int, header: bytes, transactions: Sequence[bytes],
                     receipts: Sequence[bytes], position: int) -> EthereumStepProof:
    """The proof of the transaction at ``position`` of a block, from the block's header (RLP)
    and all its transactions and receipts, encoded. Raises NodeError when they do not hash to
    the header's roots: the node answered a block that is not what it mined."""
    extras.require("ethereum", FEATURE)
    fields = rlp.decode(header)
    transaction_trie, receipt_trie = _trie(transactions), _trie(receipts)
    if (transaction_trie.root_hash, receipt_trie.root_hash) != \
            (fields[_TRANSACTIONS_ROOT], fields[_RECEIPTS_ROOT]):
        raise NodeError(f"block {int.from_bytes(fields[_NUMBER], 'big')}: its transactions or "
                        "receipts do not hash to its header's roots; the Ethereum node answered "
                        "inconsistent data")
    key = _position_key(position)
    return EthereumStepProof(
        chain_id=chain_id, txid=keccak(transactions[position]),
        height=int.from_bytes(fields[_NUMBER], "big"), block_hash=keccak(header), header=header,
        position=position, transaction=transactions[position],
        transaction_proof=tuple(rlp.encode(node) for node in transaction_trie.get_proof(key)),
        receipt=receipts[position],
        receipt_proof=tuple(rlp.encode(node) for node in receipt_trie.get_proof(key)))


def header_fields(header: bytes) -> list[bytes] | None:
    """The header's fields, or None when it is not an Ethereum header."""
    if not isinstance(header, bytes) or not 0 < len(header) <= limits.eth_header_bytes_max:
        return None
    try:
        fields = rlp.decode(header)
    except rlp.DecodingError:
        return None
    if not isinstance(fields, list) or len(fields) < _HEADER_FIELDS_LEAST \
            or not all(isinstance(field, bytes) for field in fields):
        return None
    if any(len(fields[index]) != HASH_BYTES for index in _HASH_FIELDS):
        return None
    return fields


def _proven(root: bytes, position: int, nodes: tuple[bytes, ...]) -> bytes | None:
    """The value the proof shows at ``position`` under ``root``; None if it proves nothing."""
    try:
        decoded = [rlp.decode(node) for node in nodes]
        value = HexaryTrie.get_from_proof(root, _position_key(position), decoded)
    except Exception:  # noqa: BLE001 - the trie package raises many kinds on crafted nodes
        return None
    return value or None  # empty: the proof shows that nothing is at that position


def _well_formed(proof: EthereumStepProof) -> bool:
    def sized(value: object, size: int) -> bool:
        return isinstance(value, bytes) and len(value) == size

    def nodes(value: object) -> bool:
        return isinstance(value, tuple) and 0 < len(value) <= limits.eth_proof_nodes_max \
            and all(isinstance(node, bytes) and len(node) <= limits.eth_proof_node_bytes_max
                    for node in value)

    return (isinstance(proof, EthereumStepProof) and sized(proof.txid, HASH_BYTES)
            and sized(proof.block_hash, HASH_BYTES)
            and all(isinstance(number, int) and not isinstance(number, bool) and number >= 0
                    for number in (proof.chain_id, proof.height, proof.position))
            and isinstance(proof.transaction, bytes)
            and len(proof.transaction) <= limits.eth_transaction_bytes_max
            and isinstance(proof.receipt, bytes)
            and len(proof.receipt) <= limits.eth_receipt_bytes_max
            and nodes(proof.transaction_proof) and nodes(proof.receipt_proof))


def check_step(proof: EthereumStepProof, known_headers: Mapping[bytes, bytes], expected: Event,
               chain_id: int | None = None) -> StepCode:
    """Whether ``proof`` shows that ``expected`` happened on the chain a light client trusts.

    ``known_headers`` maps the hash of every header the light client trusts to the header
    (:attr:`EthereumLightClient.known_headers`); ``chain_id``, when given, is the chain the
    checker follows. Checks, in order: the proof's shape, the chain, the header's hash and
    trust, the height, the transaction proof and its hash, the receipt proof, the receipt's
    status, and a log of ``expected.contract`` that matches ``expected``.
    """
    extras.require("ethereum", FEATURE)
    if not _well_formed(proof):
        return StepCode.malformed
    if chain_id is not None and proof.chain_id != chain_id:
        return StepCode.wrong_chain
    fields = header_fields(proof.header)
    if fields is None:
        return StepCode.header_malformed
    if keccak(proof.header) != proof.block_hash:
        return StepCode.header_hash_mismatch
    if known_headers.get(proof.block_hash) != proof.header:
        return StepCode.header_not_linked
    if int.from_bytes(fields[_NUMBER], "big") != proof.height:
        return StepCode.height_mismatch
    return _check_inclusion(proof, fields, expected)


def _check_inclusion(proof: EthereumStepProof, fields: list[bytes],
                     expected: Event) -> StepCode:
    transaction = _proven(fields[_TRANSACTIONS_ROOT], proof.position, proof.transaction_proof)
    if transaction is None or transaction != proof.transaction:
        return StepCode.transaction_not_in_block
    if keccak(transaction) != proof.txid:
        return StepCode.transaction_mismatch
    receipt = _proven(fields[_RECEIPTS_ROOT], proof.position, proof.receipt_proof)
    if receipt is None or receipt != proof.receipt:
        return StepCode.receipt_not_in_block
    decoded = _decode_receipt(receipt)
    if decoded is None:
        return StepCode.receipt_malformed
    succeeded, logs = decoded
    if not succeeded:
        return StepCode.receipt_failed
    if not any(address == expected.contract for address, _, _ in logs):
        return StepCode.contract_mismatch
    if not any(event.matches(expected) for event in receipt_events(logs)):
        return StepCode.event_mismatch
    return StepCode.ok


def _decode_receipt(receipt: bytes) -> tuple[bool, list] | None:
    """(succeeded, logs) of an encoded receipt; None if it is not one."""
    if not receipt:
        return None
    body = receipt[1:] if receipt[0] <= _TYPED_LAST else receipt
    try:
        fields = rlp.decode(body)
    except rlp.DecodingError:
        return None
    if not (isinstance(fields, list) and len(fields) == 4 and fields[0] in (b"", b"\x01")
            and isinstance(fields[2], bytes) and len(fields[2]) == BLOOM_BYTES
            and isinstance(fields[3], list) and len(fields[3]) <= limits.eth_receipt_logs_max):
        return None  # a 32-byte state root instead of a status predates Byzantium: refused
    logs = fields[3]
    for log in logs:
        if not (isinstance(log, list) and len(log) == 3 and isinstance(log[0], bytes)
                and len(log[0]) == ADDRESS_BYTES and isinstance(log[1], list)
                and all(isinstance(t, bytes) and len(t) == HASH_BYTES for t in log[1])
                and isinstance(log[2], bytes)):
            return None
    return fields[0] == b"\x01", logs


def receipt_events(logs: Sequence[Sequence]) -> tuple[Event, ...]:
    """The logs (``[address, topics, data]``) that are events of :data:`EVENTS`, decoded;
    other logs are left out."""
    extras.require("ethereum", FEATURE)
    topics = _event_topics()
    found = []
    for address, log_topics, data in logs:
        name = topics.get(log_topics[0]) if log_topics else None
        if name is not None:
            event = _decode_event(address, name, log_topics[1:], data)
            if event is not None:
                found.append(event)
    return tuple(found)


_TOPICS: dict[bytes, str] = {}


def _event_topics() -> dict[bytes, str]:
    if not _TOPICS:
        _TOPICS.update({keccak(_signature(name).encode()): name for name in EVENTS})
    return _TOPICS


def _decode_event(address: bytes, name: str, topics: Sequence[bytes], data: bytes
                  ) -> Event | None:
    layout = EVENTS[name]
    indexed = [entry for entry in layout if entry[2]]
    plain = [entry for entry in layout if not entry[2]]
    if len(topics) != len(indexed) or len(data) != HASH_BYTES * len(plain):
        return None  # same signature, other layout: not one of ours
    words = dict(zip([arg for arg, _, _ in indexed], topics))
    words.update((arg, data[HASH_BYTES * i:HASH_BYTES * (i + 1)])
                 for i, (arg, _, _) in enumerate(plain))
    args = []
    for arg, kind, _ in layout:
        word = words[arg]
        if kind == "address":
            if any(word[:HASH_BYTES - ADDRESS_BYTES]):
                return None
            args.append((arg, word[HASH_BYTES - ADDRESS_BYTES:]))
        else:
            args.append((arg, word if kind == "bytes32" else int.from_bytes(word, "big")))
    return Event(address, name, tuple(args))


class EthereumLightClient:
    """The headers of one Ethereum chain that a checker trusts: an anchor it was given, and
    every header since that links to the newest (see the module docstring on finality)."""

    def __init__(self, chain_id: int, anchor: bytes) -> None:
        extras.require("ethereum", FEATURE)
        fields = header_fields(anchor)
        if fields is None:
            raise ValueError("the anchor is not an Ethereum block header in RLP; pass the "
                             "header of a block this light client may trust (the genesis)")
        self.chain_id = chain_id
        self.known_headers: dict[bytes, bytes] = {keccak(anchor): anchor}
        self.tip_hash, self.tip_height = keccak(anchor), int.from_bytes(fields[_NUMBER], "big")

    def add(self, header: ChainHeader | bytes) -> StepCode:
        """Trusts ``header`` if it is the child of the newest trusted header; answers why not
        otherwise (ok for a header already trusted)."""
        raw = header.header if isinstance(header, ChainHeader) else header
        fields = header_fields(raw)
        if fields is None:
            return StepCode.header_malformed
        block_hash = keccak(raw)
        if isinstance(header, ChainHeader) and header.block_hash != block_hash:
            return StepCode.header_hash_mismatch
        if self.known_headers.get(block_hash) == raw:
            return StepCode.ok
        if fields[_PARENT] != self.tip_hash:
            return StepCode.header_not_linked
        if int.from_bytes(fields[_NUMBER], "big") != self.tip_height + 1:
            return StepCode.height_mismatch
        self.known_headers[block_hash] = raw
        self.tip_hash, self.tip_height = block_hash, self.tip_height + 1
        return StepCode.ok

    def check(self, proof: EthereumStepProof, expected: Event) -> StepCode:
        return check_step(proof, self.known_headers, expected, chain_id=self.chain_id)


def header_time_s(header: bytes) -> int:
    """The block time of an RLP header, seconds since 1970."""
    return int.from_bytes(rlp.decode(header)[_TIME], "big")
