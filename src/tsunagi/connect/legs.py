"""What the connection node does differently on each kind of linked chain: one leg per kind.

:class:`~tsunagi.connect.node.ConnectionNode` drives every transfer through the same steps
(hold into escrow, pay out from the pool, settle or refund), journals every external operation
the same way and proves each through the connection contract. What a kind of chain changes is
here, picked by the connector's ``kind``: the contract's method of each proven step (``paid``
or ``eth_paid``), the light client's tip and headers method, how accounts are named (u64
accounts, or 20-byte addresses), where the pool and the settlement account come from, and what
follows when the escrow's release is refused at its expiry (a tsunagi hold has returned by
itself; an Ethereum one is sent back by the escrow's ``refund_expired``, whose receipt proves
it). A leg belongs to one node and calls the node's own step helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from tsunagi.connect import contract, limits
from tsunagi.connect.connector import TxStatus
from tsunagi.errors import ConfigError, TsunagiError

if TYPE_CHECKING:
    from tsunagi.connect.node import ConnectionNode

__all__ = ["EthereumLeg", "TsunagiLeg", "leg_of"]


class TsunagiLeg:
    """A tsunagi chain: u64 accounts, the rule's pool and settlement, proven records."""

    kind = contract.KIND_TSUNAGI_POW
    plain = True  # accounts are u64: the transfer starts with the contract's plain request
    tip_key, headers_method = "tip", "headers"  # the light client's tip and its extension
    headers_per_call = contract.HEADERS_PER_CALL_MAX

    def __init__(self, node: ConnectionNode, connector) -> None:
        self.node, self.connector = node, connector

    def method(self, step: str) -> str:
        """The contract's method proving ``step`` (escrowed, paid, settled, refunded, ...)."""
        return step

    def account(self, value):
        """A payer or payee as the contract's request takes it."""
        return value

    def payer(self, entry: dict):
        return entry["payer"]

    def payee(self, entry: dict):
        return entry["payee"]

    def pool(self, rule: dict):
        return rule["pool"]

    def settlement(self, rule: dict):
        return rule["settlement"]

    def refund_step(self, transfer_id: bytes, entry: dict) -> tuple[str, Callable, str]:
        """The escrow's return to the payer: (journal op, prepare, step proven)."""
        return "refund", lambda: self.connector.prepare_void(transfer_id), "refunded"

    def release_refused(self, transfer_id: bytes, entry: dict, ref) -> None:
        """The post or void of the escrow was refused: only its expiry may explain that."""
        self.node._expire_or_fail(transfer_id, self.connector, ref)


class EthereumLeg(TsunagiLeg):
    """An Ethereum chain: 20-byte addresses, the pool and settlement the contract holds for
    the chain (``eth_accounts``), the escrow's and token's events proven from receipts."""

    kind = contract.KIND_ETHEREUM
    plain = False  # addresses: the transfer starts with eth_request
    tip_key, headers_method = "ethtip", "eth_headers"
    headers_per_call = limits.eth_headers_per_call

    _accounts: dict | None = None

    def method(self, step: str) -> str:
        return "eth_" + step

    def account(self, value):
        """A 20-byte address from ``0x`` and 40 hex digits; anything else goes as it is, for
        the contract to refuse with its code."""
        if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
            try:
                return bytes.fromhex(value[2:])
            except ValueError:
                pass
        return value

    def payer(self, entry: dict) -> str:
        return "0x" + entry["payer_eth"].hex()

    def payee(self, entry: dict) -> str:
        return "0x" + entry["payee_eth"].hex()

    def pool(self, rule: dict) -> str:
        return "0x" + self.accounts()["pool"].hex()

    def settlement(self, rule: dict) -> str:
        return "0x" + self.accounts()["settlement"].hex()

    def accounts(self) -> dict:
        """The addresses the contract matches this chain's steps against, read once."""
        if self._accounts is None:
            self._accounts = self.node.stored(f"ethacct:{self.connector.chain_id}")
            if self._accounts is None:
                raise ConfigError(f"the connection contract has no accounts of Ethereum chain "
                                  f"{self.connector.chain_id}: call eth_accounts first")
        return self._accounts

    def expired(self, entry: dict) -> bool:
        """Whether the hold's expiry is behind the chain's newest block: the next block is
        later still, so the escrow takes refund_expired there."""
        return self.connector.chain.latest_time_s() >= entry["hold"][2]

    def refund_step(self, transfer_id: bytes, entry: dict) -> tuple[str, Callable, str]:
        """After the expiry the refund is refund_expired, and the trail says "expired" (a
        journaled op goes on as it began)."""
        key = transfer_id.hex()
        if (key, "expire") in self.node._intents or \
                (key, "refund") not in self.node._intents and self.expired(entry):
            return "expire", lambda: self.connector.prepare_refund_expired(transfer_id), \
                "expired"
        return super().refund_step(transfer_id, entry)

    def release_refused(self, transfer_id: bytes, entry: dict, ref) -> None:
        """The escrow refuses release at or after the hold's expiry, and void once the hold
        is no longer held: the hold goes back by refund_expired, or went back already (the
        payer may send refund_expired), and that Refunded event is proven."""
        connector, node = self.connector, self.node
        state = connector.hold_state(transfer_id)["state"]
        if state == "held" and self.expired(entry):
            ref = node._perform(transfer_id, "expire", connector,
                                lambda: connector.prepare_refund_expired(transfer_id))
            if ref.status is TxStatus.ok:
                node._prove("expired", transfer_id, connector, ref.txid)
                return
            state = connector.hold_state(transfer_id)["state"]
        txid = connector.refund_of(transfer_id) if state == "refunded" else None
        if txid is None:
            raise TsunagiError(f"Ethereum chain {connector.chain_id} refused the escrow's "
                               f"release of transfer {transfer_id.hex()} (the hold is {state})")
        node._prove("expired", transfer_id, connector, txid)


_LEGS = {TsunagiLeg.kind: TsunagiLeg, contract.KIND_TSUNAGI_BFT: TsunagiLeg,
         EthereumLeg.kind: EthereumLeg}


def leg_of(node: ConnectionNode, connector) -> TsunagiLeg:
    """The leg of ``connector``'s kind of chain (a connector without ``kind`` is tsunagi's)."""
    kind = getattr(connector, "kind", contract.KIND_TSUNAGI_POW)
    leg = _LEGS.get(kind)
    if leg is None:
        raise ConfigError(f"the connection node drives chains of kinds {', '.join(_LEGS)}, "
                          f"not {kind!r} (chain {connector.chain_id})")
    return leg(node, connector)
