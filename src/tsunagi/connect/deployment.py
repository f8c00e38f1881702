"""A ConnectionChain deployment on the embedded store: linked chains, the connection chain, the
connectors and the connection node, laid out in one directory that ``tsunagi demo`` makes and
``tsunagi connect`` and its REST API open again.

The directory holds ``connect.json`` (the layout: each chain's directory, id, name, asset and
named accounts, the connection chain's operator, the rules' ids), one ledger directory per
chain, and the connection node's ``journal``. Accounts are numbers on each chain; the layout
names them (``hanako``, ``pool``) so commands and pages can speak of people, not numbers.

Keys: this is a development deployment, made by the demo. Every key of it is derived from the
deployment's seed (kept in ``connect.json``, mode 0600) and the account's name, so a command
run later signs as the same accounts without key files. A production connection node would
take its operator and escrow keys from encrypted key files instead (``tsunagi keygen``); the
layout marks itself ``"development": true`` so nobody mistakes one for the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tsunagi.connect import contract as cc
from tsunagi.connect.journal import Journal
from tsunagi.connect.node import ConnectionNode
from tsunagi.connect.tsunagi_chain import TsunagiConnector
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import CallCode, source_sha256
from tsunagi.core.block import decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keyfile import write_private_file
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import NotFoundError, StorageError, TsunagiError
from tsunagi.ledger.ledger import CONFIG_FILE, Ledger

__all__ = ["CONNECTION_CONTRACT", "ChainSpec", "Deployment", "LAYOUT"]

LAYOUT = "connect.json"
CONNECTION_CONTRACT = "tsunagi.connect.contract:ConnectionContract"
_PREFIX = cc.ConnectionContract.name.encode() + b"\x00"


@dataclass(frozen=True)
class ChainSpec:
    """A linked chain of the deployment: ``accounts`` names each account number;
    ``authority`` and ``settlement`` are the escrow authority's and the settlement account's
    names (a chain that is only ever a target still has an authority: it signs nothing)."""

    key: str  # the short name of its directory and of commands: "a", "b"
    chain_id: int
    name: str
    asset: str
    accounts: Mapping[str, int]
    funds: Mapping[str, int]
    authority: str
    settlement: str

    def to_json(self) -> dict:
        return {"key": self.key, "chain_id": self.chain_id, "name": self.name,
                "asset": self.asset, "accounts": dict(self.accounts),
                "funds": dict(self.funds), "authority": self.authority,
                "settlement": self.settlement}

    @classmethod
    def from_json(cls, data: dict) -> ChainSpec:
        return cls(**data)


def _key(seed: bytes, chain_key: str, account: str) -> PrivateKey:
    digest = hashlib.sha256(b"tsunagi development key\x00" + seed + b"\x00" +
                            chain_key.encode() + b"\x00" + account.encode()).digest()
    return PrivateKey.from_bytes(digest)


@dataclass
class Deployment:
    """The open deployment in ``directory``: every ledger open, the node ready to drive."""

    directory: Path
    layout: dict
    chains: dict[int, Ledger]
    specs: dict[int, ChainSpec]
    connection: Ledger
    contracts: ChainContracts
    connectors: dict[int, TsunagiConnector]
    node: ConnectionNode
    confirm: Callable[[bytes, dict], bool] = field(default=lambda transfer_id, entry: True)

    # ------------------------------------------------------------------------ making one

    @classmethod
    def create(cls, directory: str | os.PathLike, chains: list[ChainSpec], *,
               connection_chain_id: int, confirm: Callable[[bytes, dict], bool],
               replace: bool = False) -> Deployment:
        """A new deployment: each chain with its genesis funds, the connection chain with
        the connection contract set up and every chain linked (no rules yet)."""
        directory = Path(directory)
        if directory.exists():
            if not (directory / LAYOUT).exists():
                raise StorageError(f"{directory} exists and was not made by `tsunagi demo`: "
                                   "pass another --data directory")
            if not replace:
                raise StorageError(f"{directory} holds a deployment already: open it, or "
                                   "pass another --data directory")
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        seed = secrets.token_bytes(32)
        layout = {"development": True, "seed": seed.hex(), "operator_account": 1,
                  "connection": {"chain_id": connection_chain_id, "dir": "connection"},
                  "chains": [spec.to_json() for spec in chains], "billing": []}
        for spec in chains:
            keys = {name: _key(seed, spec.key, name) for name in spec.accounts}
            config = ChainConfig(
                name=spec.name, chain_id=spec.chain_id, asset_code=spec.asset,
                allocations=tuple((keys[name].public_key, spec.funds.get(name, 0))
                                  for name in sorted(spec.accounts, key=spec.accounts.get)))
            Ledger.create(directory / spec.key, config, threads=1).close()
        operator = _key(seed, "connection", "operator")
        config = ChainConfig(
            name="connection", chain_id=connection_chain_id, asset_code="CON",
            allocations=((operator.public_key, 1),),
            contracts=(("connection", bytes.fromhex(source_sha256(CONNECTION_CONTRACT))),))
        contracts = ChainContracts(config, {"connection": CONNECTION_CONTRACT})
        Ledger.create(directory / "connection", config, threads=1, calls=contracts).close()
        write_private_file(directory / LAYOUT, json.dumps(layout, indent=1).encode(),
                           overwrite=False)
        made = cls.open(directory, confirm=confirm)
        try:
            made.call_ok("setup", [connection_chain_id, [layout["operator_account"]]])
            for chain_id, ledger in made.chains.items():
                genesis = decode_block(ledger.block(0))
                made.call_ok("add_chain", [chain_id, cc.KIND_TSUNAGI_POW, genesis.hash,
                                           ledger.config.bits, 0])
        except BaseException:
            made.close()
            raise
        return made

    @classmethod
    def open(cls, directory: str | os.PathLike, *,
             confirm: Callable[[bytes, dict], bool] | None = None) -> Deployment:
        """Opens a deployment ``tsunagi demo`` made (its ledgers are then this process's)."""
        directory = Path(directory)
        try:
            layout = json.loads((directory / LAYOUT).read_text())
        except FileNotFoundError:
            raise NotFoundError(f"{directory} holds no ConnectionChain deployment ({LAYOUT} "
                                "is missing): run `tsunagi demo` first, or pass its --data "
                                "directory") from None
        seed = bytes.fromhex(layout["seed"])
        specs = {data["chain_id"]: ChainSpec.from_json(data) for data in layout["chains"]}
        opened: list[Ledger] = []
        try:
            chains = {}
            for chain_id, spec in specs.items():
                chains[chain_id] = Ledger.open(directory / spec.key, threads=1)
                opened.append(chains[chain_id])
            config = ChainConfig.from_json(
                (directory / layout["connection"]["dir"] / CONFIG_FILE).read_bytes())
            contracts = ChainContracts(config, {"connection": CONNECTION_CONTRACT})
            connection = Ledger.open(directory / layout["connection"]["dir"], threads=1,
                                     calls=contracts)
            opened.append(connection)
        except BaseException:
            for ledger in opened:
                ledger.close()
            raise
        connectors = {}
        for chain_id, spec in specs.items():
            keys = {number: _key(seed, spec.key, name)
                    for name, number in spec.accounts.items()}
            connectors[chain_id] = TsunagiConnector(
                chains[chain_id], keys, authority=spec.accounts[spec.authority],
                settlement=spec.accounts[spec.settlement])
        hook = confirm if confirm is not None else (lambda transfer_id, entry: True)
        node = ConnectionNode(
            connection, contracts, operator_account=layout["operator_account"],
            operator_key=_key(seed, "connection", "operator"), connectors=connectors,
            journal=Journal(directory / "journal"), confirm=lambda t, e: made.confirm(t, e))
        made = cls(directory, layout, chains, specs, connection, contracts, connectors, node,
                   hook)
        return made

    def close(self) -> None:
        self.node.journal.close()
        for ledger in (*self.chains.values(), self.connection):
            ledger.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------- operating

    def call_ok(self, method: str, args: list):
        result = self.node.call(method, args)
        if result.code is not CallCode.ok:
            raise TsunagiError(f"the connection contract refused {method}: "
                               f"{result.code.name} {result.refuse_code} {result.detail}")
        return result

    def account(self, chain_id: int, name: str) -> int:
        spec = self.spec(chain_id)
        if name.isdigit():
            return int(name)
        try:
            return spec.accounts[name]
        except KeyError:
            raise NotFoundError(f"chain {spec.name} has no account named {name!r}; its "
                                f"accounts: {', '.join(spec.accounts)}") from None

    def spec(self, chain_id: int) -> ChainSpec:
        try:
            return self.specs[chain_id]
        except KeyError:
            raise NotFoundError(f"no linked chain {chain_id}; linked: "
                                f"{', '.join(map(str, self.specs))}") from None

    def name_of(self, chain_id: int, account: int) -> str:
        spec = self.specs.get(chain_id)
        if spec is not None:
            for name, number in spec.accounts.items():
                if number == account:
                    return name
        return str(account)

    def chain_name(self, chain_id: int) -> str:
        if chain_id == self.connection.config.chain_id:
            return "connection"
        spec = self.specs.get(chain_id)
        return spec.name if spec else str(chain_id)

    def balances(self) -> list[dict]:
        """Every named account of every chain: balance and amount on hold."""
        rows = []
        for chain_id, spec in self.specs.items():
            ledger = self.chains[chain_id]
            for name, number in spec.accounts.items():
                rows.append({"chain": chain_id, "chain_name": spec.name, "asset": spec.asset,
                             "account": number, "name": name,
                             "balance": ledger.balance(number), "held": ledger.held(number)})
        return rows

    # ------------------------------------------------------------------- reading the state

    def _items(self, prefix: str):
        for key, value in self.contracts.decoded_under(_PREFIX + prefix.encode()):
            yield key.decode(), value

    def _named(self, shown: dict) -> dict:
        shown["payer_name"] = self.name_of(shown["source"], shown["payer"])
        shown["payee_name"] = self.name_of(shown["target"], shown["payee"])
        return shown

    def linked_chains(self) -> list[dict]:
        """The chains the connection contract links, with its light client's tip of each."""
        found = []
        for chain_id, chain in self._items("chain:"):
            # An Ethereum chain (tsunagi demo --ethereum) has its own tip and no bits, and
            # its hashes read as Ethereum writes them, not reversed as Bitcoin-style ones.
            ethereum = chain["kind"] == cc.KIND_ETHEREUM
            tip = self.node.stored(f"{'ethtip' if ethereum else 'tip'}:{chain_id}")
            shown = (lambda digest: digest.hex()) if ethereum else \
                (lambda digest: digest[::-1].hex())
            spec = self.specs.get(int(chain_id))
            found.append({"chain_id": int(chain_id), "name": spec.name if spec else None,
                          "asset": spec.asset if spec else None, "kind": chain["kind"],
                          "genesis_hash": shown(chain["genesis"]), "bits": chain.get("bits"),
                          "confirmations": chain["confirmations"],
                          "light_client_height": tip[0], "light_client_tip": shown(tip[1])})
        return sorted(found, key=lambda chain: chain["chain_id"])

    def rules(self) -> list[dict]:
        return sorted((rule for _, rule in self._items("rule:")),
                      key=lambda rule: rule["rule_id"])

    def transfers(self) -> list[dict]:
        """Every transfer the connection chain holds: id, state, amounts (no trail)."""
        found = []
        rules = {rule["rule_id"]: rule for _, rule in self._items("rule:")}
        for transfer_hex, entry in self._items("xfer:"):
            entry["rule"] = rules[entry["rule_id"]]  # an entry names its rule by id
            found.append(self._named(summary(bytes.fromhex(transfer_hex), entry)))
        return sorted(found, key=lambda transfer: (transfer["requested_s"], transfer["id"]))

    def transfer(self, transfer_id: bytes, *, proofs: bool = False) -> dict:
        """One transfer with its trail; with ``proofs``, each step on a linked chain with the
        proof anyone can check again (its header, record, Merkle paths)."""
        entry = self.node.state_of(transfer_id)
        if entry is None:
            raise NotFoundError(f"no transfer {transfer_id!r} on the connection chain; "
                                "`tsunagi connect transfers` lists them")
        shown = self._named(summary(transfer_id, entry))
        shown["rule"] = entry["rule"]
        shown["trail"] = self.trail_rows(entry["trail"], proofs=proofs)
        return shown


    def trail_rows(self, trail: list, *, proofs: bool = False) -> list[dict]:
        """A trail as the chain holds it, for people and JSON: hashes as hex (block hashes in
        the usual reversed order), chain names; with ``proofs``, each step on a linked chain
        with the proof anyone can check again (its header, record, Merkle path)."""
        rows = []
        for step in trail:
            row = {"n": step["n"], "step": step["step"], "chain": step["chain"],
                   "chain_name": self.chain_name(step["chain"]), "txid": step["txid"].hex(),
                   "height": step["height"], "block_hash": step["block_hash"][::-1].hex(),
                   "time_s": step["time_s"]}
            connector = self.connectors.get(step["chain"])
            if proofs and connector is not None and step["txid"]:
                proof = connector.find(step["txid"])
                if proof is not None:
                    row["proof"] = {"header": proof.header.hex(), "record": proof.record.hex(),
                                    "code": proof.code.name, "position": proof.position,
                                    "path": [node.hex() for node in proof.path],
                                    "record_count": proof.record_count}
            rows.append(row)
        return rows

    def bills(self, *, proofs: bool = False) -> list[dict]:
        """Every bill of usage billing (demo 2): the access it charges, state, trail."""
        found = []
        for access_hex, _ in self._items("bill:"):
            bill = self.node.bill_of(bytes.fromhex(access_hex))  # with its steps
            shown = {key: value for key, value in bill.items() if key != "trail"}
            shown = {key: value.hex() if isinstance(value, bytes) else value
                     for key, value in shown.items()}
            shown["access"] = access_hex
            shown["trail"] = self.trail_rows(bill["trail"], proofs=proofs)
            found.append(shown)
        return sorted(found, key=lambda bill: (bill["trail"][0]["height"], bill["access"])
                      if bill["trail"] else (0, bill["access"]))


def summary(transfer_id: bytes, entry: dict) -> dict:
    try:
        shown_id = transfer_id.decode("ascii")
        if not shown_id.isprintable():
            raise ValueError
    except ValueError:
        shown_id = transfer_id.hex()
    return {"id": shown_id, "id_hex": transfer_id.hex(), "state": entry["state"],
            "rule_id": entry["rule"]["rule_id"], "source": entry["rule"]["source"],
            "target": entry["rule"]["target"], "payer": entry["payer"],
            "payee": entry["payee"], "amount": entry["amount"], "payout": entry["payout"],
            "requested_s": entry["requested_s"],
            "steps": len(entry["trail"]) if "trail" in entry else entry["steps"]}


def transfer_id_of(text: str) -> bytes:
    """A transfer id as a command or URL gives it: its text, or ``0x`` and its hex."""
    if text.startswith("0x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise TsunagiError(f"{text!r} is not hex after 0x") from None
    return text.encode()
