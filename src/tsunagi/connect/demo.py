"""``tsunagi demo``: Fujitsu's two ConnectionChain prototypes, on the embedded store.

Demo 1, regional currency payment: Hanako holds currency A and buys from bookstore X, which
takes only currency B; she has no account on B. The connection chain records her request, her
A goes into escrow on chain A (a hold only the connection chain's key can release, with an
expiry), the bookstore confirms it can fulfil the order, the pool pays the bookstore in B, the
escrow settles to the exchange's account on A, and the transfer completes: twelve steps, each
one on a linked chain proven there by its header and Merkle path before the connection chain
records it. A second order the bookstore cannot fulfil ends refunded: the escrowed A returns
to Hanako, and the refund's transaction is on the trail.

Demo 2, usage billing: a data-rights chain D records each access to a data set (a transfer of
one data unit to the data set's account, tagged); a token chain T pays for them. A billing rule,
attached once both chains are running (an access before it is not billed), charges every later
access on T, from the consumer's token account to the data owner: the access proven on D, the
charge proven on T. A consumer who cannot pay ends "unpaid", with T's refusal proven.

Demo 1 on Ethereum (``tsunagi demo --ethereum``): the same two orders with chain B replaced by
an Ethereum chain in this process (eth-tester, the Vyper token as currency B and its escrow):
the bookstore is paid by a token transfer from the pool there, proven by its receipt. The
Ethereum chain lives in memory, so that run's deployment keeps chain A and the connection
chain only.

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

__all__ = ["Bookstore", "DemoRun", "http_confirm", "run_connect_demo", "run_ethereum_demo"]

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
CHAIN_D = ChainSpec(
    key="d", chain_id=203, name="chain D", asset="DAT",
    accounts={"lab": 1, "startup": 2, "traffic-data": 3},
    funds={"lab": 100, "startup": 100, "traffic-data": 1},
    authority="traffic-data", settlement="traffic-data")
CHAIN_T = ChainSpec(
    key="t", chain_id=204, name="chain T", asset="TOK",
    accounts={"lab": 1, "startup": 2, "city": 3},
    funds={"lab": 1_000, "startup": 30, "city": 1},
    authority="city", settlement="city")
ACCESS_TAG = 0xDA7A  # what an access carries in user_data
# Billing rule 1: each access to the city's traffic data costs 25 tokens, paid to the city.
BILLING_RULE = {"rule_id": 1, "data_chain": CHAIN_D.chain_id, "token_chain": CHAIN_T.chain_id,
                "data_set": CHAIN_D.accounts["traffic-data"], "access_tag": ACCESS_TAG,
                "price": 25, "payee": CHAIN_T.accounts["city"]}
CONSUMERS = {CHAIN_D.accounts[name]: CHAIN_T.accounts[name] for name in ("lab", "startup")}
# Accesses after the rule: the lab twice, the startup twice (it has tokens for one).
ACCESSES = ("lab", "startup", "lab", "startup")
ORDERS = (  # (transfer id, what Hanako buys, price in A)
    (b"order-0001", "The Tale of Genji, vol. 1", 1_000),
    (b"order-0002", "A book out of stock", 500),
)
# Demo 1 on Ethereum: B's token and its pool there; the rule as RULE_A_TO_B, to that chain.
# A transfer id is the escrow's 32-byte hold id on an Ethereum leg: the order's, padded.
ETH_POOL_TOKENS = 1_000_000
ETH_ORDERS = tuple((transfer_id.ljust(32), item, price) for transfer_id, item, price in ORDERS)


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
    bills: list[dict]  # demo 2: each with its trail (Deployment.bills)
    unbilled: list[str]  # demo 2: the access made before the rule, as txid hex
    accessed_by: dict[str, str]  # access txid hex -> who


def run_connect_demo(directory: str | os.PathLike, *,
                     confirm: Callable[[bytes, dict], bool] | None = None,
                     progress: Callable[[str], None] = lambda text: None) -> DemoRun:
    """Makes the deployment in ``directory`` (replacing an earlier demo's) and runs demo 1
    (one order the bookstore fulfils, one it cannot) and demo 2 (usage billing)."""
    hook = confirm if confirm is not None else Bookstore({ORDERS[0][0]})
    progress("starting chains A, B, D, T and the connection chain")
    with Deployment.create(directory, [CHAIN_A, CHAIN_B, CHAIN_D, CHAIN_T],
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
        unbilled, accessed_by = _demo_two(deployment, progress)
        return DemoRun(Path(directory), before, deployment.balances(), transfers,
                       {transfer_id.decode(): item for transfer_id, item, _ in ORDERS},
                       deployment.bills(), unbilled, accessed_by)


def _demo_two(deployment: Deployment, progress) -> tuple[list[str], dict[str, str]]:
    data = deployment.connectors[CHAIN_D.chain_id]
    data_set = CHAIN_D.accounts["traffic-data"]
    progress("demo 2: the lab reads the traffic data before any billing rule")
    early = data.access(CHAIN_D.accounts["lab"], data_set, ACCESS_TAG)
    progress("demo 2: billing rule 1 attached to the running chains D and T")
    deployment.node.add_billing_rule(BILLING_RULE, CONSUMERS)
    accessed_by = {early.txid.hex(): "lab"}
    for name in ACCESSES:
        progress(f"demo 2: the {name} reads the traffic data")
        ref = data.access(CHAIN_D.accounts[name], data_set, ACCESS_TAG)
        accessed_by[ref.txid.hex()] = name
    progress("demo 2: billing the accesses")
    deployment.node.follow_billing()
    return [early.txid.hex()], accessed_by


def run_ethereum_demo(directory: str | os.PathLike, *,
                      confirm: Callable[[bytes, dict], bool] | None = None,
                      progress: Callable[[str], None] = lambda text: None) -> DemoRun:
    """Demo 1 with chain B an Ethereum chain in this process (see the module docstring):
    chain A and the connection chain in ``directory`` (replacing an earlier demo's), the
    Ethereum chain linked to the contract and driven by an EthereumConnector."""
    from eth_account import Account

    from tsunagi.connect.ethereum import EthereumChain, EthereumConnector

    hook = confirm if confirm is not None else Bookstore({ETH_ORDERS[0][0]})
    progress("starting chain A and the connection chain")
    with Deployment.create(directory, [CHAIN_A], connection_chain_id=CONNECTION_CHAIN_ID,
                           confirm=hook, replace=True) as deployment:
        progress("starting the Ethereum chain (eth-tester) and deploying B's token and escrow")
        eth = EthereumChain()
        authority = Account.create()  # the escrow authority, and B's pool there
        eth.fund(authority.address, 10**18)
        token = eth.deploy("token", "Currency B", "CUB")
        escrow = eth.deploy("escrow", token.address, authority.address)
        token.functions.mint(authority.address, ETH_POOL_TOKENS).transact(
            {"from": eth.accounts[0]})
        bookstore = eth.accounts[1]
        connector = EthereumConnector(eth, token.address, escrow.address, authority)
        deployment.connectors[eth.chain_id] = deployment.node.connectors[eth.chain_id] = \
            connector
        deployment.call_ok("add_ethereum_chain", [eth.chain_id, eth.header(0), 0])
        deployment.call_ok("eth_accounts", [eth.chain_id] + [bytes.fromhex(address[2:]) for
                                                             address in (token.address,
                                                                         escrow.address,
                                                                         authority.address,
                                                                         authority.address)])
        deployment.call_ok("add_rule", [dict(RULE_A_TO_B, target=eth.chain_id)])
        named = {bookstore: "bookstore", authority.address: "pool"}

        def balances() -> list[dict]:
            return deployment.balances() + [
                {"chain": eth.chain_id, "chain_name": "Ethereum", "asset": "CUB",
                 "account": address, "name": name,
                 "balance": token.functions.balanceOf(address).call(), "held": 0}
                for address, name in named.items()]

        before = balances()
        transfers = []
        for transfer_id, item, price in ETH_ORDERS:
            progress(f"{transfer_id.decode().strip()}: Hanako pays {price:,} A for {item!r}")
            deployment.node.pay(transfer_id, RULE_A_TO_B["rule_id"],
                                CHAIN_A.accounts["hanako"], bookstore, price)
            transfers.append(_on_ethereum(deployment, transfer_id, eth.chain_id, "bookstore"))
        return DemoRun(Path(directory), before, balances(), transfers,
                       {transfer_id.decode().rstrip(): item
                        for transfer_id, item, _ in ETH_ORDERS},
                       [], [], {})


def _on_ethereum(deployment: Deployment, transfer_id: bytes, chain_id: int,
                 payee: str) -> dict:
    """A transfer as Deployment.transfer shows it, with the Ethereum chain named and its
    block hashes as Ethereum writes them (not reversed, as a tsunagi chain's are)."""
    shown = deployment.transfer(transfer_id)
    shown["id"], shown["payee_name"] = shown["id"].rstrip(), payee
    for row, step in zip(shown["trail"], deployment.node.state_of(transfer_id)["trail"]):
        if row["chain"] == chain_id:
            row["chain_name"], row["block_hash"] = "Ethereum", step["block_hash"].hex()
    return shown
