"""The connection node: it drives each cross-chain transfer through the connection contract.

For every step it reads the transfer's state from the connection chain, performs the one
external operation that state asks for through the linked chain's connector (hold into
escrow, pay out from the pool, post or void the escrow), and submits the proven step to the
connection contract. Every external operation is journaled (:mod:`tsunagi.connect.journal`):
the intent, with the signed record, is durable before the record is sent, and the outcome after
it. Restarted, the node takes each transfer from the state the connection chain holds and
reuses a journaled record instead of signing a new one, so nothing happens twice.

:meth:`ConnectionNode.pay_many` is the fast path for many transfers: each step of all of them
goes in one block of the linked chain a group of 100 records and one block of the connection
chain for all the step calls, through the contract's batched methods (``escrowed_many``, ...),
journaled per transfer as pay() journals (a group's intents in one journal line), so resume()
and drive() take any transfer on alone. A group's records of one key (the pool's payouts, the
authority's posts, an entrusted payer's holds) go as one batch-authorized batch, one signature
for them all; each intent names its batch, and a restart sends the batch again whole.

Usage billing (demo 2) runs the same way: :meth:`ConnectionNode.follow_billing` scans each
billing rule's data chain for accesses, records each with its proof and charges it on the token
chain through the journal (docs/CONNECT.md, "Usage billing").

The connection chain is a Ledger with its ChainContracts in this process, or a node process
reached through its client (:mod:`tsunagi.connect.connection_chain`); the linked chains are
reached through :class:`~tsunagi.connect.tsunagi_chain.TsunagiConnector` or
:class:`~tsunagi.connect.tsunagi_chain.RemoteTsunagiConnector`, or, for an Ethereum chain,
:class:`~tsunagi.connect.ethereum.EthereumConnector`: pay(), drive() and resume() run a transfer
whose source or target is Ethereum through the contract's eth_* methods, what differs per kind
of chain kept in one leg per kind (:mod:`tsunagi.connect.legs`). pay_many() drives tsunagi
chains only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from tsunagi.connect import contract, legs, limits
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.connection_chain import ConnectionChain, LocalConnectionChain
from tsunagi.connect.connector import TxRef, TxStatus
from tsunagi.connect.journal import Journal
from tsunagi.connect.tsunagi_chain import BlockRecord, Prepared, RecordNotStored, TsunagiConnector
from tsunagi.contracts import encoding
from tsunagi.contracts.chain import ChainContracts, call_record
from tsunagi.contracts.runtime import CallCode, CallResult
from tsunagi.core.codes import Result
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError, TsunagiError

__all__ = ["ConnectionNode", "StepRefused"]

FINAL_STATES = ("complete", "refunded", "expired")
BILL_FINAL_STATES = ("complete", "unpaid")
# The journal's entries of usage billing: resume() leaves them to follow_billing().
BILLING_OPS = ("bill_access", "bill_charge", "bill_scan")
_PREFIX = contract.ConnectionContract.name.encode() + b"\x00"
_STEP_KEYS = ("n", *contract.STEP_FIELDS)  # a trail step's keys (contract.trail_step)


class StepRefused(TsunagiError):
    """The connection contract refused a step the node built from a linked chain: that chain
    or its connector does not tell the truth, or the node is wrong. ``code`` says which check."""

    def __init__(self, method: str, code: ConnectCode | int, detail: str) -> None:
        self.method, self.code = method, code
        super().__init__(f"the connection contract refused {method} ({code!r}): {detail}")


class ConnectionNode:
    """Drives transfers on the connection chain ``ledger`` (running ``contracts``) as
    ``operator_account``; ``connectors`` by linked chain id; ``confirm(transfer_id, entry)``
    is the payee's hook (True: fulfil the order); ``now_s`` fixes block times (tests).
    With ``contracts`` None, ``ledger`` is a ConnectionChain: a NodeConnectionChain drives
    the connection chain of a node process; a LocalConnectionChain (with ``contracts``) one
    decided here by a consortium's validators."""

    def __init__(self, ledger, contracts: ChainContracts | None, *, operator_account: int,
                 operator_key: PrivateKey, connectors: Mapping[int, TsunagiConnector],
                 journal: Journal, confirm: Callable[[bytes, dict], bool],
                 contract_number: int = 1, now_s: Callable[[], int] | None = None) -> None:
        self.ledger, self.contracts = ledger, contracts
        self.chain: ConnectionChain = ledger if contracts is None \
            else ledger if isinstance(ledger, LocalConnectionChain) \
            else LocalConnectionChain(ledger, contracts)
        self.operator_account, self.operator_key = operator_account, operator_key
        self.connectors = dict(connectors)
        self.journal, self.confirm_hook = journal, confirm
        self.contract_number, self.now_s = contract_number, now_s
        self._intents: dict[tuple[str, str], dict] = {}
        self._outcomes: set[tuple[str, str]] = set()
        self._rules: dict[int, dict] = {}  # transfer rules by id (state_of)
        self._legs: dict[int, legs.TsunagiLeg] = {}  # by linked chain id
        # A batch's signature -> the intents of its records, in block order (_send_batch).
        self._batches: dict[str, list[tuple[str, str]]] = {}
        for entry in journal.entries:
            key = (entry["transfer"], entry["op"])
            if entry.get("phase") == "intent":
                self._intents[key] = entry
                self._outcomes.discard(key)
                if "batch" in entry:
                    self._batches.setdefault(entry["batch"][1], []).append(key)
            elif entry.get("phase") == "outcome":
                self._outcomes.add(key)

    # ------------------------------------------------------------- the connection chain

    def call(self, method: str, args: list) -> CallResult:
        """One call of the connection contract, in its own block; its result."""
        sequence = self.chain.sequence(self.operator_account) + 1
        record, payload = call_record(self.chain.chain_id, sequence,
                                      self.operator_account, self.contract_number, method, args)
        now = None if self.now_s is None else self.now_s()
        return self.chain.call(record, self.operator_key.sign_record(record), payload, now)

    def state_of(self, transfer_id: bytes) -> dict | None:
        """The transfer as the connection chain holds it (state, amounts, rule, trail), or
        None: its entry with its rule and its steps, those of each call a key (the contract's
        "transfer state layout")."""
        key = transfer_id.hex().encode()
        stored = self.chain.state(_PREFIX + b"xfer:" + key)
        if stored is None:
            return None
        entry = encoding.decode(stored)
        rule_id, steps = entry.pop("rule_id"), entry.pop("steps")
        entry["rule"] = dict(self._rule(rule_id))
        prefix, state, decode = _PREFIX + b"step:" + key + b":", self.chain.state, encoding.decode
        # contract.trail_step of each, inline: pay_many reads every transfer back this way.
        trail = entry["trail"] = []
        while len(trail) < steps:
            for stored in decode(state(b"%s%d" % (prefix, len(trail) + 1))):
                trail.append(dict(zip(_STEP_KEYS, (len(trail) + 1, *stored))))
        return entry

    def _rule(self, rule_id: int) -> dict:
        """A transfer rule, read once: a rule never changes once the contract holds it."""
        rule = self._rules.get(rule_id)
        if rule is None:
            rule = self._rules[rule_id] = self.stored(f"rule:{rule_id}")
        return rule

    def stored(self, key: str):
        """A value of the connection contract's state by its key (``tip:<chain>``, ...)."""
        stored = self.chain.state(_PREFIX + key.encode())
        return None if stored is None else encoding.decode(stored)

    def _step(self, method: str, args: list) -> CallResult:
        """A call that must succeed or wait for blocks (NOT_FINAL); StepRefused otherwise."""
        result = self.call(method, args)
        if result.code is CallCode.refused and result.refuse_code != ConnectCode.not_final:
            raise StepRefused(method, _code(result.refuse_code), result.detail)
        if result.code not in (CallCode.ok, CallCode.refused):
            raise StepRefused(method, 0, f"{result.code.name}: {result.detail}")
        return result

    # -------------------------------------------------------------------- external steps

    def _perform(self, transfer_id: bytes, op: str, connector: TsunagiConnector,
                 prepare: Callable[[], Prepared]) -> TxRef:
        """``op`` of a transfer on a linked chain, journaled before and after. A journaled
        intent is sent again as it is (the chain applies it once), never signed anew, unless
        the chain says its sequence is used: then it can never apply, and a new one goes."""
        key = (transfer_id.hex(), op)
        intent = self._intents.get(key)
        if intent is None:
            intent = self._intend(key, connector, prepare())
        try:
            return self._send(key, connector, intent)
        except RecordNotStored as exc:
            if exc.code not in _NEVER_STORED:
                raise
        return self._send(key, connector, self._intend(key, connector, prepare()))

    def _intend(self, key: tuple[str, str], connector: TsunagiConnector,
                prepared: Prepared) -> dict:
        intent = {"transfer": key[0], "op": key[1], "phase": "intent",
                  "chain": connector.chain_id, "txid": prepared.txid.hex(),
                  "record": prepared.record.hex(), "signature": prepared.signature.hex()}
        self.journal.append(intent)
        self._intents[key] = intent
        return intent

    def _send(self, key: tuple[str, str], connector: TsunagiConnector, intent: dict) -> TxRef:
        if "batch" in intent and key not in self._outcomes:
            return self._send_batch(connector, intent)[key]
        ref = connector.send(_prepared(intent))
        self.journal.append({"transfer": key[0], "op": key[1], "phase": "outcome",
                             "txid": ref.txid.hex(), "height": ref.height,
                             "status": int(ref.status)})
        self._outcomes.add(key)
        return ref

    def _send_batch(self, connector: TsunagiConnector, intent: dict) -> dict:
        """Sends the batch of a batch-authorized intent again, whole and as journaled (its
        signature covers all its records), or finds it in a block; journals the outcomes and
        answers their TxRefs by intent key. A batch the chain stores nowhere (a sequence of
        it used) never can be: its records' intents go, each step prepares anew."""
        batch = intent["batch"]
        members = [key for key in self._batches.get(batch[1], ())
                   if self._intents.get(key, {}).get("batch") == batch]
        try:
            refs = connector.send_many([_prepared(self._intents[key]) for key in members])
        except RecordNotStored as exc:
            if exc.code in _NEVER_STORED:
                for key in members:
                    del self._intents[key]
            raise
        self.journal.append_many([{
            "transfer": key[0], "op": key[1], "phase": "outcome", "txid": ref.txid.hex(),
            "height": ref.height, "status": int(ref.status)} for key, ref in zip(members, refs)])
        self._outcomes.update(members)
        return dict(zip(members, refs))

    def flush(self) -> None:
        """Sends every journaled record whose outcome is missing, oldest first: a restart does
        this before anything else, so no new record takes the sequence a dead one holds."""
        for key, intent in list(self._intents.items()):
            if "record" in intent and key not in self._outcomes and key in self._intents:
                try:
                    self._send(key, self.connectors[intent["chain"]], intent)
                except RecordNotStored as exc:
                    if exc.code not in _NEVER_STORED:
                        raise
                    # It can never apply: its step prepares anew.
                    self._intents.pop(key, None)

    def _leg(self, connector: TsunagiConnector) -> legs.TsunagiLeg:
        """What this connector's kind of chain changes in the steps (tsunagi.connect.legs)."""
        leg = self._legs.get(connector.chain_id)
        if leg is None:
            leg = self._legs[connector.chain_id] = legs.leg_of(self, connector)
        return leg

    def _headers(self, connector: TsunagiConnector) -> tuple[list, bool]:
        """The linked chain's headers the contract does not know yet (a run as long as a
        call may carry; on a consortium chain, as many certificates as a call's steps can
        check) and whether more follow them."""
        leg = self._leg(connector)
        tip = self.stored(f"{leg.tip_key}:{connector.chain_id}")[0]
        headers = connector.headers_between(tip + 1, tip + 1 + leg.headers_per_call)
        more = len(headers) == leg.headers_per_call
        if connector.certified:
            signatures = 0
            for n, (_, certificate) in enumerate(headers):
                signatures += int.from_bytes(certificate[4:6], "little")
                if n and signatures > limits.certificate_signatures_per_call:
                    return headers[:n], True
        return headers, more

    def _caught_up(self, connector: TsunagiConnector) -> list:
        """The last run of headers the contract lacks: the runs before it go in calls of
        their own, as many as a call may carry."""
        leg = self._leg(connector)
        headers, more = self._headers(connector)
        while more:
            self._step(leg.headers_method, [connector.chain_id, headers])
            headers, more = self._headers(connector)
        return headers

    def _prove(self, method: str, transfer_id: bytes, connector: TsunagiConnector,
               txid: bytes) -> CallResult:
        """``method`` of the transaction ``txid`` (the leg's: ``paid`` or ``eth_paid``)."""
        proof = connector.find(txid)
        return self._step(self._leg(connector).method(method),
                          [transfer_id, proof.to_contract(), self._caught_up(connector)])

    def _escrow(self, transfer_id: bytes, entry: dict) -> None:
        rule = entry["rule"]
        source = self.connectors[rule["source"]]
        expiry_s = entry["requested_s"] + rule["escrow_expiry_s"]
        ref = self._perform(transfer_id, "hold", source, lambda: source.prepare_hold(
            transfer_id, self._leg(source).payer(entry), entry["amount"], expiry_s))
        if ref.status is TxStatus.failed:  # the payer cannot pay: nothing is in escrow
            self._step("abort", [transfer_id])
            return
        self._prove("escrowed", transfer_id, source, ref.txid)

    def _confirm(self, transfer_id: bytes, entry: dict) -> None:
        key = (transfer_id.hex(), "confirm")
        intent = self._intents.get(key)
        if intent is None:
            intent = {"transfer": key[0], "op": "confirm", "phase": "intent",
                      "accepted": bool(self.confirm_hook(transfer_id, entry))}
            self.journal.append(intent)
            self._intents[key] = intent
        self._step("confirm", [transfer_id, intent["accepted"]])

    def _payout(self, transfer_id: bytes, entry: dict) -> None:
        rule = entry["rule"]
        target = self.connectors[rule["target"]]
        if (transfer_id.hex(), "payout") not in self._intents:
            now = self.now_s() if self.now_s is not None else None
            late = now is not None and now > entry["escrowed_s"] + rule["payout_window_s"]
            if late:  # past the window nobody pays out: the rate is no free option
                self._step("abort", [transfer_id])
                return
        leg = self._leg(target)
        ref = self._perform(transfer_id, "payout", target, lambda: target.prepare_transfer(
            leg.pool(rule), leg.payee(entry), entry["payout"], transfer_id=transfer_id))
        if ref.status is TxStatus.failed:  # the pool is short, or the chain refused
            self._step("abort", [transfer_id])
            return
        self._prove("paid", transfer_id, target, ref.txid)

    def _settle(self, transfer_id: bytes, entry: dict) -> None:
        rule = entry["rule"]
        source = self.connectors[rule["source"]]
        leg = self._leg(source)
        ref = self._perform(transfer_id, "settle", source, lambda: source.prepare_post(
            transfer_id, leg.settlement(rule), entry["amount"]))
        if ref.status is TxStatus.failed:
            leg.release_refused(transfer_id, entry, ref)
            return
        self._prove("settled", transfer_id, source, ref.txid)

    def _refund(self, transfer_id: bytes, entry: dict) -> None:
        source = self.connectors[entry["rule"]["source"]]
        leg = self._leg(source)
        op, prepare, proven = leg.refund_step(transfer_id, entry)
        ref = self._perform(transfer_id, op, source, prepare)
        if ref.status is TxStatus.failed:
            leg.release_refused(transfer_id, entry, ref)
            return
        self._prove(proven, transfer_id, source, ref.txid)

    def _expire_or_fail(self, transfer_id: bytes, source: TsunagiConnector, ref: TxRef):
        code = source.find(ref.txid).code
        if code is not Result.hold_expired:
            raise TsunagiError(f"chain {source.chain_id} refused the escrow's release "
                               f"({code.name}) of transfer {transfer_id.hex()}")
        self._step("expired", [transfer_id, self._caught_up(source)])

    # ------------------------------------------------------------------------ transfers

    def request(self, transfer_id: bytes, rule_id: int, payer: int, payee: int,
                amount: int) -> CallResult:
        """Step 1 only: the request recorded on the connection chain (or refused, with its
        code in the result). Journaled first, so a restart drives it on."""
        if (transfer_id.hex(), "request") not in self._intents:
            intent = {"transfer": transfer_id.hex(), "op": "request", "phase": "intent"}
            self.journal.append(intent)
            self._intents[(transfer_id.hex(), "request")] = intent
        sides = self._rule_legs(rule_id)
        if all(leg.plain for leg in sides):
            return self.call("request", [transfer_id, rule_id, payer, payee, amount])
        return self.call("eth_request", [transfer_id, rule_id, sides[0].account(payer),
                                         sides[1].account(payee), amount])

    def _rule_legs(self, rule_id) -> list[legs.TsunagiLeg]:
        """The legs of a rule's source and target, of the chains this node has connectors
        of; none for a rule the contract does not hold (its request is refused)."""
        rule = self._rule(rule_id) if isinstance(rule_id, int) else None
        if rule is None:
            return []
        return [self._leg(self.connectors[chain]) if chain in self.connectors
                else legs.TsunagiLeg(self, None) for chain in (rule["source"], rule["target"])]

    def pay(self, transfer_id: bytes, rule_id: int, payer: int, payee: int,
            amount: int) -> dict:
        """A whole transfer: request, then drive() it; StepRefused when the request is."""
        result = self.request(transfer_id, rule_id, payer, payee, amount)
        if result.code is not CallCode.ok:
            raise StepRefused("request", _code(result.refuse_code), result.detail)
        return self.drive(transfer_id)

    def drive(self, transfer_id: bytes) -> dict:
        """Takes a requested transfer as far as its linked chains allow: to a final state,
        or to a step waiting for blocks there. Returns the transfer as the chain holds it."""
        handlers = {"request": self._escrow, "escrow": self._confirm, "payout": self._payout,
                    "refund": self._refund}
        entry = self.state_of(transfer_id)
        for _ in range(limits.drive_rounds_max):
            if entry is None or entry["state"] in FINAL_STATES:
                return entry
            if entry["hold"]:
                self.connectors[entry["rule"]["source"]].remember(
                    transfer_id, entry["hold"][0], entry["hold"][1])
            if entry["state"] == "settle":
                if entry.get("settled"):
                    self._step("complete", [transfer_id])
                else:
                    self._settle(transfer_id, entry)
            else:
                handlers[entry["state"]](transfer_id, entry)
            after = self.state_of(transfer_id)
            if after == entry:
                return after  # waiting for blocks of a linked chain
            entry = after
        return entry

    def resume(self) -> dict[bytes, dict]:
        """After a restart: the records a dead node left unsent, then every transfer the
        journal names, driven on."""
        self.flush()
        ids = dict.fromkeys(bytes.fromhex(entry["transfer"]) for entry in self.journal.entries
                            if entry["op"] not in BILLING_OPS)  # bills: follow_billing()
        return {transfer_id: self.drive(transfer_id) for transfer_id in ids}

    # ---------------------------------------------------------------------- usage billing
    #
    # Demo 2 (docs/CONNECT.md, "Usage billing"): the node scans each billing rule's data chain,
    # block by final block, for accesses; records each on the connection chain with its proof,
    # which opens a bill; and charges it on the token chain through the journal like every
    # other record it sends, so a node killed anywhere never charges twice. The journal also
    # keeps, per rule, the height up to which the scan is done, and which bills are still open.

    _billing: dict | None = None  # open bills and scan heights, read from the journal once

    def bill_of(self, access_txid: bytes) -> dict | None:
        """The bill of an access (state, price, accounts, trail) as the connection chain
        holds it, or None: the bill with its steps, each a key of its own."""
        key = access_txid.hex()
        bill = self.stored("bill:" + key)
        if bill is not None:
            bill["trail"] = [contract.trail_step(n, self.stored(f"bstep:{key}:{n}"))
                             for n in range(1, bill.pop("steps") + 1)]
        return bill

    def billing_rule(self, rule_id: int) -> dict | None:
        """A billing rule as the connection chain holds it (with its ``first_height``)."""
        return self.stored(f"brule:{rule_id}")

    def _must(self, method: str, args: list) -> CallResult:
        result = self.call(method, args)
        if result.code is not CallCode.ok:
            raise StepRefused(method, _code(result.refuse_code), result.detail)
        return result

    def _linked_connector(self, chain_id: int) -> TsunagiConnector:
        connector = self.connectors.get(chain_id)
        if connector is None:
            raise TsunagiError(f"this node has no connector of chain {chain_id}: give it one "
                               "to bill accesses there")
        return connector

    def add_billing_rule(self, rule: dict, consumers: Mapping[int, int] | None = None) -> dict:
        """Attaches a billing rule (fields: rule_id, data_chain, token_chain, data_set,
        access_tag, price, payee) to linked chains, after bringing the contract's light client
        of the data chain up to its tip: accesses in later blocks are billed, earlier ones are
        not. ``consumers`` maps data-chain accounts to the token accounts charged for them.
        Returns the rule as stored; StepRefused with the contract's code when refused."""
        data = self._linked_connector(rule.get("data_chain"))
        linked = self.stored(f"tip:{data.chain_id}") is not None
        self._must("add_billing_rule", [rule, self._caught_up(data) if linked else []])
        for data_account, token_account in (consumers or {}).items():
            self.add_billing_consumer(rule["rule_id"], data_account, token_account)
        return self.billing_rule(rule["rule_id"])

    def add_billing_consumer(self, rule_id: int, data_account: int, token_account: int) -> None:
        """Registers the token account charged for ``data_account``'s accesses under the
        rule (the token chain's connector must hold its key, as a payer entrusts it: without
        it every charge would stop at the first bill, so it is refused here, unregistered)."""
        rule = self.billing_rule(rule_id)
        token = None if rule is None else self.connectors.get(rule["token_chain"])
        if token is not None and token_account not in token.keys:
            raise ConfigError(f"the connector of chain {token.chain_id} holds no key for "
                                   f"account {token_account}: give it the key to charge it")
        self._must("add_billing_consumer", [rule_id, data_account, token_account])

    def _billing_state(self) -> dict:
        if self._billing is None:
            opened, scanned = {}, {}
            for entry in self.journal.entries:
                if entry["op"] == "bill_access" and entry["phase"] == "intent" and \
                        (entry["transfer"], "bill_access") not in self._outcomes:
                    opened[bytes.fromhex(entry["transfer"])] = None
                elif entry["op"] == "bill_scan":
                    scanned[entry["rule"]] = entry["height"]
            self._billing = {"open": opened, "scanned": scanned}
        return self._billing

    def follow_billing(self) -> list[dict]:
        """Drives every open bill, then scans each billing rule's data chain from where the
        last scan ended up to its newest final block (a bounded run of blocks), recording
        and charging each access found. Returns the bills it touched, with their trails, in
        that order; a bill whose charge waits for blocks of the token chain stays "charge"
        and is driven on by the next call."""
        self.flush()
        touched: dict[bytes, dict] = {}
        for access_txid in list(self._billing_state()["open"]):
            bill = self._drive_bill(access_txid)
            if bill is not None:
                touched[access_txid] = bill
        for rule_id in self.stored("brules") or []:
            touched.update(self._scan_billing(self.billing_rule(rule_id)))
        return list(touched.values())

    def _scan_billing(self, rule: dict) -> dict[bytes, dict]:
        data = self.connectors.get(rule["data_chain"])
        if data is None:
            return {}  # another node follows that chain
        scanned = self._billing_state()["scanned"]
        first = max(scanned.get(rule["rule_id"], 0), rule["first_height"])
        confirmations = self.stored(f"chain:{data.chain_id}")["confirmations"]
        end = min(data.finalized_height() - confirmations + 1,
                  first + limits.billing_blocks_max)
        touched: dict[bytes, dict] = {}
        for height in range(first, end):
            for found in data.block_records(height, credit_account=rule["data_set"]):
                if not self._is_access(rule, found):
                    continue
                bill = self.bill_of(found.txid) or self._record_access(rule, found, data)
                if bill is not None:
                    touched[found.txid] = self._drive_bill(found.txid)
        if end > first:
            self.journal.append({"transfer": "", "op": "bill_scan", "phase": "outcome",
                                 "rule": rule["rule_id"], "height": end})
            scanned[rule["rule_id"]] = end
        return touched

    def _is_access(self, rule: dict, found: BlockRecord) -> bool:
        """The contract's test of an access, looked at before a call is spent on it; an
        account with no token account registered is not billed."""
        fields = contract.parse_record(found.record)
        return (found.code is Result.ok and fields["kind"] == contract.KIND_TRANSFER and
                fields["chain_id"] == rule["data_chain"] and
                fields["credit"] == rule["data_set"] and
                fields["user_data"] == rule["access_tag"] and
                self.stored(f"bcons:{rule['rule_id']}:{fields['debit']}") is not None)

    def _record_access(self, rule: dict, found: BlockRecord,
                       data: TsunagiConnector) -> dict | None:
        key = (found.txid.hex(), "bill_access")
        if key not in self._intents:
            intent = {"transfer": key[0], "op": "bill_access", "phase": "intent",
                      "rule": rule["rule_id"]}
            self.journal.append(intent)
            self._intents[key] = intent
        self._billing_state()["open"][found.txid] = None
        proof = data.find(found.txid).to_contract()
        result = self.call("record_access", [rule["rule_id"], proof, self._caught_up(data)])
        if result.code is CallCode.refused and result.refuse_code == ConnectCode.tx_used:
            bill = self.bill_of(found.txid)  # None: the record proved another step before
            if bill is None:
                self._bill_done(found.txid, "not billed")
            return bill
        if result.code is not CallCode.ok:
            raise StepRefused("record_access", _code(result.refuse_code), result.detail)
        return self.bill_of(found.txid)

    def _drive_bill(self, access_txid: bytes) -> dict | None:
        """Charges a bill in state "charge" on its token chain (one journaled record, sent
        again as it is after a crash) and proves the outcome; None when no bill is there yet
        (the access's call never ran: the scan finds it again)."""
        bill = self.bill_of(access_txid)
        if bill is not None and bill["state"] == "charge":
            token = self._linked_connector(bill["token_chain"])
            ref = self._perform(access_txid, "bill_charge", token, lambda: token.prepare_transfer(
                bill["account"], bill["payee"], bill["price"], transfer_id=access_txid))
            self._prove("charged", access_txid, token, ref.txid)
            bill = self.bill_of(access_txid)
        if bill is not None and bill["state"] in BILL_FINAL_STATES:
            self._bill_done(access_txid, bill["state"])
        return bill

    def _bill_done(self, access_txid: bytes, state: str) -> None:
        key = (access_txid.hex(), "bill_access")
        if key not in self._outcomes:
            self.journal.append({"transfer": key[0], "op": "bill_access", "phase": "outcome",
                                 "state": state})
            self._outcomes.add(key)
        self._billing_state()["open"].pop(access_txid, None)


    # ------------------------------------------------------- many transfers (fast path)

    def call_many(self, calls: list[tuple[str, list]]) -> list[CallResult]:
        """Calls of the connection contract, all in ONE block of the connection chain (one
        submit_batch of their call records and payloads); their results in order."""
        if not calls:
            return []
        first = self.chain.sequence(self.operator_account) + 1
        records, signatures, payloads = [], [], []
        for offset, (method, args) in enumerate(calls):
            record, payload = call_record(self.chain.chain_id, first + offset,
                                          self.operator_account, self.contract_number,
                                          method, args)
            records.append(record)
            signatures.append(self.operator_key.sign_record(record))
            payloads.append(payload)
        now = None if self.now_s is None else self.now_s()
        many = getattr(self.chain, "call_many", None)
        if many is None:  # a chain that takes one call a block (a node process, for now)
            return [self.chain.call(record, signature, payload, now)
                    for record, signature, payload in zip(records, signatures, payloads)]
        return many(records, signatures, payloads, now)

    def pay_many(self, transfers, times: dict | None = None) -> dict[bytes, dict | None]:
        """Many whole transfers ``(transfer_id, rule_id, payer, payee, amount)`` together:
        each step of all of them in a few blocks (one block of the linked chain per group of
        limits.batch_transfers_per_call records, one block of the connection chain for all
        the step calls), journaled before and after as pay() is, so resume() drives on any
        transfer a crash left. A transfer the batched steps do not finish (a refusal, a hold
        the payer cannot pay, a shop that says no, a block not yet final) goes on through
        drive(); its entry is returned, None when its request was refused. ``times`` (if
        given) gets ``transfer_id -> (requested, completed)`` in perf_counter seconds."""
        transfers = [tuple(transfer) for transfer in transfers]
        for transfer in transfers:
            if not all(leg.plain for leg in self._rule_legs(transfer[1])):
                raise ConfigError(f"pay_many drives transfers between tsunagi chains only; "
                                  f"transfer {transfer[0].hex()} has an Ethereum leg: drive "
                                  "it with pay()")
        ids = [transfer[0] for transfer in transfers]
        started = time.perf_counter()
        self._journal_once([(transfer_id, "request", {}) for transfer_id in ids])
        self._request_many(transfers)
        entries = {transfer_id: self.state_of(transfer_id) for transfer_id in ids}
        for phase in (self._escrow_many, self._confirm_many, self._payout_many,
                      self._settle_many, self._complete_many):
            phase(entries)
        completed = time.perf_counter()
        answer = {}
        for transfer_id in ids:
            entry = self.state_of(transfer_id)
            if entry is not None and entry["state"] not in FINAL_STATES:
                entry = self.drive(transfer_id)
            answer[transfer_id] = entry
            if times is not None and entry is not None and entry["state"] == "complete":
                times[transfer_id] = (started, completed)
        return answer

    def _journal_once(self, intents: list[tuple[bytes, str, dict]]) -> None:
        """Journals the intents not journaled yet, with one fsync."""
        fresh = []
        for transfer_id, op, fields in intents:
            key = (transfer_id.hex(), op)
            if key not in self._intents:
                intent = {"transfer": key[0], "op": op, "phase": "intent", **fields}
                self._intents[key] = intent
                fresh.append(intent)
                if "batch" in fields:
                    self._batches.setdefault(fields["batch"][1], []).append(key)
        if fresh:
            self.journal.append_many(fresh)

    def _request_many(self, transfers: list[tuple]) -> None:
        groups = _groups(transfers, limits.batch_plain_per_call)
        results = self.call_many([("request_many", [[list(one) for one in group]])
                                  for group in groups])
        for group, result in zip(groups, results):
            if result.code is not CallCode.ok:  # one is refused: each goes alone
                for one in group:
                    self.request(*one)

    def _in_state(self, entries: dict, state: str, op: str | None) -> list[bytes]:
        """Transfers in ``state`` whose ``op`` the journal has no intent of (a journaled one
        is a restart's: drive() takes it on as it is)."""
        return [transfer_id for transfer_id, entry in entries.items()
                if entry is not None and entry["state"] == state and
                (op is None or (transfer_id.hex(), op) not in self._intents)]

    def _external_many(self, entries: dict, ids: list[bytes], op: str, side: str,
                       prepare: Callable) -> None:
        """``op`` of the transfers ``ids`` on their ``side`` chain, a group of records a
        block, journaled before and after; then their proven step calls in one block."""
        by_chain: dict[int, list[bytes]] = {}
        for transfer_id in ids:
            by_chain.setdefault(entries[transfer_id]["rule"][side], []).append(transfer_id)
        calls = []
        for chain_id, chain_ids in by_chain.items():
            connector = self.connectors[chain_id]
            sent = [self._send_group(connector, op, group, prepare(connector, group))
                    for group in _groups(chain_ids, limits.batch_transfers_per_call)]
            headers = self._caught_up(connector)  # after every group's block is there
            by_block: dict[int, list[tuple[bytes, TxRef]]] = {}
            for good in sent:  # one block a group, or one a record through a node process
                for transfer_id, ref in good:
                    by_block.setdefault(ref.height, []).append((transfer_id, ref))
            for height, good in by_block.items():
                block, items = connector.find_many(height, [ref.txid for _, ref in good])
                calls.append((_PROVEN_METHOD[op], [block, sorted(
                    ([transfer_id] + item for (transfer_id, _), item in zip(good, items)),
                    key=_position), headers]))
                headers = []
        self._step_many(entries, calls)

    def _send_group(self, connector: TsunagiConnector, op: str, group: list[bytes],
                    prepared: list[Prepared]) -> list[tuple[bytes, TxRef]]:
        """One group's records in one block, journaled before and after; those applied. A
        batch-authorized record's intent names its batch (signer key, signature), so a
        restart sends the batch again whole (_send_batch)."""
        self._journal_once([(transfer_id, op, _intent_fields(connector, one))
                            for transfer_id, one in zip(group, prepared)])
        refs = connector.send_many(prepared)
        self.journal.append_many([{
            "transfer": transfer_id.hex(), "op": op, "phase": "outcome",
            "txid": ref.txid.hex(), "height": ref.height, "status": int(ref.status)}
            for transfer_id, ref in zip(group, refs)])
        self._outcomes.update((transfer_id.hex(), op) for transfer_id in group)
        # A failed one (the payer short, the pool short) goes on through drive().
        return [(transfer_id, ref) for transfer_id, ref in zip(group, refs)
                if ref.status is TxStatus.ok]

    def _step_many(self, entries: dict, calls: list[tuple[str, list]]) -> None:
        """Runs batched step calls in one block and reads back the transfers they name; a
        refused call's transfers stay as they were, for drive() to take on alone."""
        for (method, args), result in zip(calls, self.call_many(calls)):
            if result.code is not CallCode.ok:
                continue
            apply = _APPLIED[method]
            for item in (args[1] if len(args) == 3 else args[0]):
                # What the contract just stored, without reading it back (decoding every
                # trail again was a fifth of the batch's time); pay_many reads each at the end.
                apply(entries[item[0]], item, args[0])

    def _escrow_many(self, entries: dict) -> None:
        def prepare(connector, group):
            return connector.prepare_holds([
                (transfer_id, entries[transfer_id]["payer"], entries[transfer_id]["amount"],
                 entries[transfer_id]["requested_s"] +
                 entries[transfer_id]["rule"]["escrow_expiry_s"]) for transfer_id in group],
                batched=True)
        # A payer's holds side by side: the connector authorizes a run of one payer's
        # records (a key it holds) with one batch signature.
        ids = sorted(self._in_state(entries, "request", "hold"),
                     key=lambda transfer_id: entries[transfer_id]["payer"])
        self._external_many(entries, ids, "hold", "source", prepare)

    def _confirm_many(self, entries: dict) -> None:
        ids = self._in_state(entries, "escrow", None)
        self._journal_once([(transfer_id, "confirm", {
            "accepted": bool(self.confirm_hook(transfer_id, entries[transfer_id]))})
            for transfer_id in ids if (transfer_id.hex(), "confirm") not in self._intents])
        self._step_many(entries, [
            ("confirm_many", [[[transfer_id, self._intents[(transfer_id.hex(), "confirm")]
                                ["accepted"]] for transfer_id in group]])
            for group in _groups(ids, limits.batch_plain_per_call)])

    def _payout_many(self, entries: dict) -> None:
        now = self.now_s() if self.now_s is not None else None
        ids = [transfer_id for transfer_id in self._in_state(entries, "payout", "payout")
               if now is None or now <= entries[transfer_id]["escrowed_s"] +
               entries[transfer_id]["rule"]["payout_window_s"]]  # a late one: drive() aborts

        def prepare(connector, group):
            return connector.prepare_transfers([
                (entries[transfer_id]["rule"]["pool"], entries[transfer_id]["payee"],
                 entries[transfer_id]["payout"], transfer_id) for transfer_id in group],
                batched=True)
        self._external_many(entries, ids, "payout", "target", prepare)

    def _settle_many(self, entries: dict) -> None:
        ids = [transfer_id for transfer_id in self._in_state(entries, "settle", "settle")
               if not entries[transfer_id].get("settled")]

        def prepare(connector, group):
            for transfer_id in group:
                connector.remember(transfer_id, *entries[transfer_id]["hold"][:2])
            return connector.prepare_posts([
                (transfer_id, entries[transfer_id]["amount"]) for transfer_id in group],
                batched=True)
        self._external_many(entries, ids, "settle", "source", prepare)

    def _complete_many(self, entries: dict) -> None:
        ids = [transfer_id for transfer_id in self._in_state(entries, "settle", None)
               if entries[transfer_id].get("settled")]
        self._step_many(entries, [("complete_many", [[[transfer_id] for transfer_id in group]])
                                  for group in _groups(ids, limits.batch_plain_per_call)])


def _escrowed(entry: dict, item: list, block: dict) -> None:
    fields = contract.parse_record(item[1])
    entry.update(state="escrow", hold=[fields["debit"], fields["sequence"], fields["aux"]],
                 escrowed_s=contract.u32(block["header"], 68))


# How each batched step changes a transfer the contract stepped, as the contract does it.
_APPLIED = {
    "request_many": lambda entry, item, block: None,
    "escrowed_many": _escrowed,
    "confirm_many": lambda entry, item, block: entry.update(
        state="payout" if item[1] is True else "refund"),
    "paid_many": lambda entry, item, block: entry.update(state="settle"),
    "settled_many": lambda entry, item, block: entry.update(settled=True),
    "complete_many": lambda entry, item, block: entry.update(state="complete"),
}
_PROVEN_METHOD = {"hold": "escrowed_many", "payout": "paid_many", "settle": "settled_many"}


def _position(item: list) -> int:
    """A batched proven item's position in its block: the contract takes them in order."""
    return item[2]


# Codes of a record the chain stores nowhere and never will (its sequence is used, or a record
# of its batch's is): whoever prepared it prepares a new one.
_NEVER_STORED = (Result.sequence_used, Result.batch_rejected)


def _prepared(intent: dict) -> Prepared:
    """The signed record a journaled intent holds, as it was prepared."""
    batch = intent.get("batch")
    return Prepared(bytes.fromhex(intent["record"]), bytes.fromhex(intent["signature"]),
                    bytes.fromhex(intent["txid"]),
                    None if batch is None else (bytes.fromhex(batch[0]), bytes.fromhex(batch[1])))


def _intent_fields(connector: TsunagiConnector, prepared: Prepared) -> dict:
    fields = {"chain": connector.chain_id, "txid": prepared.txid.hex(),
              "record": prepared.record.hex(), "signature": prepared.signature.hex()}
    if prepared.batch is not None:
        fields["batch"] = [prepared.batch[0].hex(), prepared.batch[1].hex()]
    return fields


def _groups(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _code(value: int) -> ConnectCode | int:
    try:
        return ConnectCode(value)
    except ValueError:
        return value
