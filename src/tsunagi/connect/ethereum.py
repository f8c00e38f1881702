"""The Ethereum leg of ConnectionChain: an in-process Ethereum chain and its connector.

:class:`EthereumChain` is eth-tester with the py-evm backend, reached through web3's
EthereumTesterProvider: a chain of another architecture than tsunagi's (accounts and
contracts, RLP, keccak, Merkle-Patricia tries), all in this process. It mines every
transaction into a block of its own at once, and its blocks are final when mined (no forks).

:class:`EthereumConnector` implements :class:`tsunagi.connect.connector.Connector` with the
Vyper token and escrow of ``contracts/``: escrow operations are calls of the escrow contract
signed by the escrow authority (the connection node's key, see
:mod:`tsunagi.connect.eth_keystore`), and :meth:`EthereumConnector.find` answers the
:class:`~tsunagi.connect.eth_proof.EthereumStepProof` that
:func:`~tsunagi.connect.eth_proof.check_step` checks.

Needs the ethereum extra: ``pip install 'tsunagi[ethereum]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from tsunagi import extras
from tsunagi.connect import limits
from tsunagi.connect.connector import ChainHeader, TxRef, TxStatus
from tsunagi.connect.eth_contracts import compile_contract
from tsunagi.connect.eth_proof import (
    BLOOM_BYTES,
    HASH_BYTES,
    EthereumStepProof,
    build_step_proof,
    encode_receipt,
    header_time_s,
)
from tsunagi.connect.tsunagi_chain import Prepared, RecordNotStored
from tsunagi.core.codes import Result
from tsunagi.errors import ConfigError, EncodingError, TsunagiError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["EthereumChain", "EthereumConnector", "HOLD_STATES"]

FEATURE = "the Ethereum connector"
UINT256_END = 1 << 256  # amounts and times are uint256 in the contracts
# The escrow's flag State (contracts/escrow.vy): 0 for an id never used.
HOLD_STATES = {0: "none", 1: "held", 2: "released", 4: "voided", 8: "refunded"}


class EthereumChain:
    """An in-process Ethereum chain (see the module docstring). ``accounts`` are eth-tester's
    unlocked development accounts, each funded with a million ether; the first deploys."""

    def __init__(self) -> None:
        extras.require("ethereum", FEATURE)
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider, Web3

        self.tester = EthereumTester(PyEVMBackend())
        self.web3 = Web3(EthereumTesterProvider(self.tester))
        self.chain_id = int(self.web3.eth.chain_id)
        self.accounts = list(self.web3.eth.accounts)

    def deploy(self, name: str, *arguments, sender: str | None = None):
        """Deploys contracts/``name``.vy (compiled, or from the compile cache) with the
        constructor's ``arguments``; returns the web3 contract at its address."""
        compiled = compile_contract(name)
        factory = self.web3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        txid = factory.constructor(*arguments).transact({"from": sender or self.accounts[0]})
        receipt = self.web3.eth.wait_for_transaction_receipt(txid)
        if receipt.status != 1:
            raise ConfigError(f"deploying {name} failed: check the constructor's arguments "
                              f"{arguments!r}")
        return self.web3.eth.contract(address=receipt.contractAddress, abi=compiled.abi)

    def fund(self, address: str, wei: int) -> None:
        """Sends ``wei`` of ether from the first development account: gas money for a key."""
        txid = self.web3.eth.send_transaction({"from": self.accounts[0], "to": address,
                                               "value": wei})
        self.web3.eth.wait_for_transaction_receipt(txid)

    def time_travel(self, time_s: int) -> None:
        """Mines an empty block at ``time_s`` (a later time than the newest block's)."""
        self.tester.time_travel(time_s)

    def latest_time_s(self) -> int:
        return int(self.web3.eth.get_block("latest").timestamp)

    def height(self) -> int:
        return int(self.web3.eth.block_number)

    def header(self, height: int) -> bytes:
        """The RLP header of the block at ``height``."""
        import rlp

        return rlp.encode(self._block(height).header)

    def block_parts(self, height: int) -> tuple[bytes, list[bytes], list[bytes]]:
        """The block's RLP header and its transactions and receipts as the block's tries hold
        them (EIP-2718)."""
        import rlp

        chain = self.tester.backend.chain
        block = self._block(height)
        transactions = [transaction.encode() for transaction in block.transactions]
        receipts = []
        for transaction, receipt in zip(block.transactions, block.get_receipts(chain.chaindb)):
            logs = [(log.address, [topic.to_bytes(HASH_BYTES, "big") for topic in log.topics],
                     log.data) for log in receipt.logs]
            receipts.append(encode_receipt(
                getattr(transaction, "type_id", None) or 0, receipt.state_root == b"\x01",
                receipt.gas_used, receipt.bloom.to_bytes(BLOOM_BYTES, "big"), logs))
        return rlp.encode(block.header), transactions, receipts

    def _block(self, height: int):
        return self.tester.backend.chain.get_canonical_block_by_number(height)


def _transfer_id(transfer_id: bytes) -> bytes:
    if not isinstance(transfer_id, (bytes, bytearray)) or len(transfer_id) != HASH_BYTES:
        raise EncodingError(f"a transfer id is {HASH_BYTES} bytes (the escrow's bytes32 hold "
                            f"id), got {transfer_id!r}")
    return bytes(transfer_id)


def _amount(amount: int, what: str = "an amount") -> int:
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount < \
            UINT256_END:
        raise EncodingError(f"{what} is an integer from 0 below 2**256, got {amount!r}")
    return amount


class EthereumConnector:
    """The connector of an Ethereum chain: see :class:`tsunagi.connect.connector.Connector`.

    ``authority`` is the escrow authority's eth-account key (the escrow was deployed naming
    its address); it signs every escrow call and pays the gas. ``accounts`` are further keys
    :meth:`transfer` may send from (a pool); the authority is always one of them.

    For :class:`~tsunagi.connect.node.ConnectionNode`, each operation also comes as
    ``prepare_*`` (signed, not sent) and :meth:`send`, as a TsunagiConnector's do, so the
    node journals a transaction before it goes out and a restart sends the same bytes.
    """

    kind = "ethereum"  # the connection contract's kind of this chain (KIND_ETHEREUM)
    certified = False  # its headers travel alone (eth-tester's carry no seal)

    def __init__(self, chain: EthereumChain, token: str, escrow: str,
                 authority: LocalAccount, accounts: Sequence[LocalAccount] = ()) -> None:
        extras.require("ethereum", FEATURE)
        web3 = chain.web3
        self.chain, self.chain_id = chain, chain.chain_id
        self.token = web3.eth.contract(address=token, abi=compile_contract("token").abi)
        self.escrow = web3.eth.contract(address=escrow, abi=compile_contract("escrow").abi)
        named = self.escrow.functions.authority().call()
        if named != authority.address:
            raise ConfigError(f"the escrow at {escrow} names the authority {named}, not this "
                              f"key's {authority.address}: open that key instead")
        self.authority = authority
        self._signers = {account.address: account for account in (authority, *accounts)}

    def hold(self, transfer_id: bytes, payer: str, amount: int, expiry_s: int) -> TxRef:
        return self.send(self.prepare_hold(transfer_id, payer, amount, expiry_s))

    def post(self, transfer_id: bytes, to: str, amount: int) -> TxRef:
        return self.send(self.prepare_post(transfer_id, to, amount))

    def void(self, transfer_id: bytes) -> TxRef:
        return self.send(self.prepare_void(transfer_id))

    def refund_expired(self, transfer_id: bytes, sender: LocalAccount | None = None) -> TxRef:
        """Returns an expired hold to its payer: anyone may send it (``sender``, by default
        the authority), which is why a hold comes back even when the connection node is
        gone."""
        call = self.escrow.functions.refund_expired(_transfer_id(transfer_id))
        return self._send(call, sender or self.authority)

    def transfer(self, source: str, destination: str, amount: int) -> TxRef:
        return self.send(self.prepare_transfer(source, destination, amount))

    def hold_state(self, transfer_id: bytes) -> dict:
        """The escrow's record of a hold: payer, amount, expiry_s and state (HOLD_STATES)."""
        payer, amount, expiry, state = \
            self.escrow.functions.holds(_transfer_id(transfer_id)).call()
        return {"payer": payer, "amount": amount, "expiry_s": expiry,
                "state": HOLD_STATES.get(state, str(state))}

    def find(self, txid: bytes) -> EthereumStepProof | None:
        from web3.exceptions import TransactionNotFound

        if not isinstance(txid, (bytes, bytearray)) or len(txid) != HASH_BYTES:
            raise EncodingError(f"an Ethereum transaction id is {HASH_BYTES} bytes, got "
                                f"{txid!r}")
        try:
            receipt = self.chain.web3.eth.get_transaction_receipt(bytes(txid))
        except TransactionNotFound:
            return None
        header, transactions, receipts = self.chain.block_parts(receipt.blockNumber)
        return build_step_proof(self.chain_id, header, transactions, receipts,
                                receipt.transactionIndex)

    def follow(self, from_height: int) -> list[ChainHeader]:
        if not isinstance(from_height, int) or from_height < 0:
            raise EncodingError(f"a height is a non-negative integer, got {from_height!r}")
        last = min(self.finalized_height(), from_height + limits.follow_headers_max - 1)
        headers = []
        for height in range(from_height, last + 1):
            header = self.chain.header(height)
            headers.append(ChainHeader(height, _keccak(header), header))
        return headers

    def finalized_height(self) -> int:
        return self.chain.height()  # eth-tester's blocks are final when mined

    def _address(self, address: str) -> str:
        from web3 import Web3

        try:
            return Web3.to_checksum_address(address)
        except (ValueError, TypeError):
            raise EncodingError(f"not an Ethereum address: {address!r} (40 hex digits, "
                                "0x first)") from None

    def _send(self, call, signer: LocalAccount) -> TxRef:
        """Signs and sends a contract call; waits for its block. A call that reverts is still
        mined (fixed gas, limits.eth_call_gas) and answers status failed."""
        return self.send(self._prepare(call, signer))

    # ------------------------------------------------ journaled operations (the node's API)
    # A Prepared of this chain is a signed transaction: ``record`` is its raw bytes (EIP-2718,
    # the signature inside, so ``signature`` is empty) and ``txid`` its keccak. Its nonce is
    # what a tsunagi record's sequence is: sent again it applies once, and once another
    # transaction of its sender took that nonce it never can (RecordNotStored, sequence_used).

    def _prepare(self, call, signer: LocalAccount) -> Prepared:
        web3 = self.chain.web3
        transaction = call.build_transaction({
            "from": signer.address, "nonce": web3.eth.get_transaction_count(signer.address),
            "gas": limits.eth_call_gas, "chainId": self.chain_id})
        signed = signer.sign_transaction(transaction)
        return Prepared(bytes(signed.raw_transaction), b"", bytes(signed.hash))

    def prepare_hold(self, transfer_id: bytes, payer: str, amount: int,
                     expiry_s: int) -> Prepared:
        return self._prepare(self.escrow.functions.hold(
            _transfer_id(transfer_id), self._address(payer), _amount(amount),
            _amount(expiry_s, "an expiry")), self.authority)

    def prepare_post(self, transfer_id: bytes, to: str, amount: int) -> Prepared:
        return self._prepare(self.escrow.functions.release(
            _transfer_id(transfer_id), self._address(to), _amount(amount)), self.authority)

    def prepare_void(self, transfer_id: bytes) -> Prepared:
        return self._prepare(self.escrow.functions.void(_transfer_id(transfer_id)),
                             self.authority)

    def prepare_refund_expired(self, transfer_id: bytes) -> Prepared:
        return self._prepare(self.escrow.functions.refund_expired(_transfer_id(transfer_id)),
                             self.authority)

    def prepare_transfer(self, source: str, destination: str, amount: int, *,
                         transfer_id: bytes | None = None) -> Prepared:
        """A token transfer from an account this connector holds the key of. The token's
        Transfer event carries no tag, so ``transfer_id`` (taken for a TsunagiConnector's
        signature) is not in it: the connection contract uses each receipt once instead."""
        signer = self._signers.get(self._address(source))
        if signer is None:
            raise ConfigError(f"the connector holds no key for {source}; it sends from "
                              f"{', '.join(self._signers)} (give more keys in accounts=)")
        return self._prepare(self.token.functions.transfer(
            self._address(destination), _amount(amount)), signer)

    def send(self, prepared: Prepared) -> TxRef:
        """Sends a prepared transaction, or finds it when it is in a block already; waits for
        its block."""
        from web3.exceptions import TransactionNotFound

        web3 = self.chain.web3
        try:
            receipt = web3.eth.get_transaction_receipt(prepared.txid)
        except TransactionNotFound:
            sender, nonce = _sender_and_nonce(prepared.record)
            if web3.eth.get_transaction_count(sender) > nonce:
                raise RecordNotStored(self.chain_id, Result.sequence_used) from None
            try:
                web3.eth.send_raw_transaction(prepared.record)
            except ValueError as exc:  # eth-tester's ValidationError is a ValueError
                raise TsunagiError(f"chain {self.chain_id} did not take the transaction "
                                   f"{prepared.txid.hex()}: {exc}") from exc
            receipt = web3.eth.wait_for_transaction_receipt(prepared.txid)
        return self._ref(receipt)

    def remember(self, transfer_id: bytes, payer, sequence: int) -> None:
        """Nothing to remember: the escrow contract keys its holds by transfer id."""

    def headers_between(self, first: int, end: int) -> list[bytes]:
        """The RLP headers of heights ``first`` up to below ``end``, those that are there."""
        return [self.chain.header(height)
                for height in range(max(first, 0), min(end, self.finalized_height() + 1))]

    def refund_of(self, transfer_id: bytes) -> bytes | None:
        """The txid of the escrow's Refunded event of a hold (anyone may send refund_expired:
        the payer, after the expiry, without the node), or None."""
        found = self.escrow.events.Refunded.get_logs(
            from_block=0, argument_filters={"id": _transfer_id(transfer_id)})
        return bytes(found[0].transactionHash) if found else None

    def _ref(self, receipt) -> TxRef:
        header = self.chain.header(receipt.blockNumber)
        return TxRef(chain_id=self.chain_id, txid=bytes(receipt.transactionHash),
                     height=int(receipt.blockNumber), block_hash=bytes(receipt.blockHash),
                     time_s=header_time_s(header),
                     status=TxStatus.ok if receipt.status == 1 else TxStatus.failed)


def _sender_and_nonce(raw: bytes) -> tuple[str, int]:
    """The sender and the nonce of a signed transaction (legacy, or typed: EIP-2718)."""
    import rlp
    from eth_account import Account

    fields = rlp.decode(raw) if raw[0] >= 0xC0 else rlp.decode(raw[1:])
    nonce = fields[0] if raw[0] >= 0xC0 else fields[1]  # a typed one names its chain first
    return Account.recover_transaction(raw), int.from_bytes(nonce, "big")


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    return keccak(data)
