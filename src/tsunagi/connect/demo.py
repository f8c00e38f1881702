"""``tsunagi demo``: Fujitsu's two ConnectionChain prototypes, on the embedded store.

Demo 1, regional currency payment: Hanako holds currency A and buys from bookstore X, which
takes only currency B; she has no account on B. The connection chain records her request, her
A goes into escrow on chain A (a hold only the connection chain's key can release, with an
expiry), the bookstore confirms it can fulfil the order, the pool pays the bookstore in B, the
escrow settles to the exchange's account on A, and the transfer completes: twelve steps, each
one on a linked chain proven there by its header and Merkle path before the connection chain
records it. A second order the bookstore cannot fulfil ends refunded: the escrowed A returns
to Hanako, and the refund's transaction is on the trail.

The bookstore's answer is a hook (:class:`Bookstore`, a Python callable; :func:`http_confirm`
asks an HTTP endpoint instead).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tsunagi.connect.deployment import ChainSpec, Deployment

__all__ = ["Bookstore", "DemoRun", "http_confirm", "run_connect_demo"]

CONNECTION_CHAIN_ID = 200
CHAIN_A = ChainSpec(
    key="a", chain_id=201, name="chain A", asset="CUA",
    accounts={"hanako": 1, "exchange": 2, "escrow": 3},
    funds={"hanako": 10_000, "exchange": 1, "escrow": 1},
    authority="escrow", settlement="exchange")
CHAIN_B = ChainSpec(
    key="b", chain_id=202, name="chain B", asset="CUB",
    accounts={"bookstore": 1, "pool": 2, "escrow": 3},
    funds={"bookstore": 1, "pool": 1_000_000, "escrow": 1},
    authority="escrow", settlement="pool")
# Rule 1: A to B at 6/5 (1 A buys 1.2 B), a fee of 10 A; the escrow holds for an hour and the
# payout must come within ten minutes of it (SATP's and Interledger's rule: the escrow outlives
# the payout window, so nobody holds a free option on the rate).
RULE_A_TO_B = {"rule_id": 1, "source": CHAIN_A.chain_id, "target": CHAIN_B.chain_id,
               "rate_numerator": 6, "rate_denominator": 5, "fee": 10,
               "settlement": CHAIN_A.accounts["exchange"], "pool": CHAIN_B.accounts["pool"],
               "escrow_authority": CHAIN_A.accounts["escrow"], "escrow_expiry_s": 3600,
               "payout_window_s": 600}
ORDERS = (  # (transfer id, what Hanako buys, price in A)
    (b"order-0001", "The Tale of Genji, vol. 1", 1_000),
    (b"order-0002", "A book out of stock", 500),
)


class Bookstore:
    """Bookstore X's answer to "can you fulfil this order?": yes for what it has in stock."""

    def __init__(self, in_stock: set[bytes]) -> None:
        self.in_stock = set(in_stock)
        self.asked: list[bytes] = []

    def __call__(self, transfer_id: bytes, entry: dict) -> bool:
        self.asked.append(transfer_id)
        return transfer_id in self.in_stock


def http_confirm(url: str, timeout_s: float = 10.0) -> Callable[[bytes, dict], bool]:
    """A payee hook that asks ``url``: it POSTs ``{"transfer", "payee", "payout"}`` as JSON and
    fulfils the order when the answer is 200 with ``{"accept": true}``. Anything else (no
    answer, another status, other JSON) is a no, so the payer is refunded, never left waiting."""

    def confirm(transfer_id: bytes, entry: dict) -> bool:
        body = json.dumps({"transfer": transfer_id.hex(), "payee": entry["payee"],
                           "payout": entry["payout"]}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                return answer.status == 200 and json.loads(answer.read()).get("accept") is True
        except (OSError, ValueError, urllib.error.URLError, AttributeError):
            return False

    return confirm


@dataclass
class DemoRun:
    directory: Path
    balances_before: list[dict]
    balances_after: list[dict]
    transfers: list[dict]  # each with its trail (Deployment.transfer)
    items: dict[str, str]  # transfer id -> what was bought


def run_connect_demo(directory: str | os.PathLike, *,
                     confirm: Callable[[bytes, dict], bool] | None = None,
                     progress: Callable[[str], None] = lambda text: None) -> DemoRun:
    """Makes the deployment in ``directory`` (replacing an earlier demo's) and runs demo 1:
    one order the bookstore fulfils, one it cannot."""
    hook = confirm if confirm is not None else Bookstore({ORDERS[0][0]})
    progress("starting chain A, chain B and the connection chain")
    with Deployment.create(directory, [CHAIN_A, CHAIN_B],
                           connection_chain_id=CONNECTION_CHAIN_ID, confirm=hook,
                           replace=True) as deployment:
        progress("adding rule 1 (A to B) to the running chains")
        deployment.call_ok("add_rule", [RULE_A_TO_B])
        before = deployment.balances()
        transfers = []
        for transfer_id, item, price in ORDERS:
            progress(f"{transfer_id.decode()}: Hanako pays {price:,} A for {item!r}")
            deployment.node.pay(transfer_id, RULE_A_TO_B["rule_id"],
                                CHAIN_A.accounts["hanako"], CHAIN_B.accounts["bookstore"],
                                price)
            transfers.append(deployment.transfer(transfer_id))
        return DemoRun(Path(directory), before, deployment.balances(), transfers,
                       {transfer_id.decode(): item for transfer_id, item, _ in ORDERS})
