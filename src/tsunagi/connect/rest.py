"""The operators' REST API of a ConnectionChain deployment (``tsunagi connect serve``).

Read what the connection chain holds and act as its operator:

- ``GET /chains``: the linked chains and the tip each light client in the contract knows;
- ``GET /rules``, ``POST /rules``: the transfer rules; a new one is added to running chains;
- ``GET /transfers``, ``POST /transfers``: every transfer and its state; a new payment by a
  rule, driven to its end (complete, or refunded) before the answer;
- ``GET /transfers/{id}``: one transfer with its trail, and for each step on a linked chain
  its proof (the block's header, the record, its Merkle path), so anyone can check it again;
- ``GET /bills``: usage billing's bills (each access charged, or unpaid), with their trails;
- ``GET /balances``: every named account of the linked chains.

A refusal of the connection contract answers 409 with its code (``rule_unknown``,
``amount_overflow``, ...); an unknown transfer or account 404. The API is one process's: the
deployment's ledgers are open in it, and requests are served one at a time.
"""

from __future__ import annotations

import secrets
import threading

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from tsunagi import __version__
from tsunagi.connect.codes import ConnectCode
from tsunagi.connect.deployment import Deployment, transfer_id_of
from tsunagi.connect.node import StepRefused
from tsunagi.errors import NotFoundError, TsunagiError
from tsunagi.limits import u64_max

__all__ = ["make_app"]


class RuleIn(BaseModel):
    rule_id: int = Field(ge=1, le=u64_max)
    source: int = Field(ge=0, le=u64_max, description="the source chain's id")
    target: int = Field(ge=0, le=u64_max, description="the target chain's id")
    rate_numerator: int = Field(ge=1, le=u64_max, description="target units per source unit: "
                                "numerator of an exact ratio")
    rate_denominator: int = Field(ge=1, le=u64_max)
    fee: int = Field(0, ge=0, le=u64_max, description="fixed fee in source units")
    settlement: str = Field(description="the settlement account on the source chain (a name "
                            "of the layout, or a number)")
    pool: str = Field(description="the pool account on the target chain")
    escrow_expiry_s: int = Field(3600, ge=1, le=u64_max)
    payout_window_s: int = Field(600, ge=1, le=u64_max)


class TransferIn(BaseModel):
    rule_id: int = Field(ge=1, le=u64_max)
    payer: str = Field(description="the payer on the rule's source chain (name or number)")
    payee: str = Field(description="the payee on the rule's target chain (name or number)")
    amount: int = Field(ge=1, le=u64_max, description="in source units")
    id: str | None = Field(None, max_length=66,
                           description="the transfer's id: text, or 0x and hex (1-32 bytes); "
                                       "a new random one when left out")


def _refusal(method: str, code: int, detail: str) -> JSONResponse:
    try:
        name = ConnectCode(code).name
    except ValueError:
        name = str(code)
    return JSONResponse({"detail": f"the connection contract refused {method}: {detail}",
                         "code": name}, status_code=409)


def make_app(deployment: Deployment) -> FastAPIOffline:
    """The API over an open deployment (the caller closes it)."""
    app = FastAPIOffline(title="tsunagi ConnectionChain", version=__version__,
                         summary="Linked chains, transfer rules, cross-chain transfers and "
                                 "their proven trails.",
                         description=__doc__.split("\n\n", 1)[1])
    lock = threading.Lock()  # the ledgers are one writer's: one request at a time

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StepRefused)
    async def refused(request: Request, exc: StepRefused) -> JSONResponse:
        return _refusal(exc.method, int(exc.code), str(exc))

    @app.exception_handler(TsunagiError)
    async def failed(request: Request, exc: TsunagiError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/chains", summary="the linked chains")
    def chains() -> list[dict]:
        with lock:
            return deployment.linked_chains()

    @app.get("/rules", summary="the transfer rules")
    def rules() -> list[dict]:
        with lock:
            return deployment.rules()

    @app.post("/rules", status_code=201, summary="add a transfer rule to the running chains",
              responses={409: {"description": "refused by the connection contract"}})
    def add_rule(rule: RuleIn):
        with lock:
            fields = rule.model_dump()
            fields["settlement"] = deployment.account(rule.source, rule.settlement)
            fields["pool"] = deployment.account(rule.target, rule.pool)
            fields["escrow_authority"] = deployment.account(
                rule.source, deployment.spec(rule.source).authority)
            result = deployment.node.call("add_rule", [fields])
            if result.refuse_code:
                return _refusal("add_rule", result.refuse_code, result.detail)
            return next(found for found in deployment.rules()
                        if found["rule_id"] == rule.rule_id)

    @app.get("/transfers", summary="every transfer and its state")
    def transfers() -> list[dict]:
        with lock:
            return deployment.transfers()

    @app.post("/transfers", status_code=201,
              summary="a cross-chain payment, driven to its end before the answer",
              responses={409: {"description": "refused by the connection contract"}})
    def pay(transfer: TransferIn):
        transfer_id = (transfer_id_of(transfer.id) if transfer.id else
                       b"t-" + secrets.token_hex(8).encode())
        if not 0 < len(transfer_id) <= 32:
            raise TsunagiError("a transfer id is 1 to 32 bytes")
        with lock:
            rule = next((found for found in deployment.rules()
                         if found["rule_id"] == transfer.rule_id), None)
            if rule is None:
                return _refusal("request", ConnectCode.rule_unknown,
                                f"no rule {transfer.rule_id}")
            payer = deployment.account(rule["source"], transfer.payer)
            payee = deployment.account(rule["target"], transfer.payee)
            deployment.node.pay(transfer_id, transfer.rule_id, payer, payee, transfer.amount)
            return deployment.transfer(transfer_id)

    @app.get("/transfers/{transfer_id}", summary="one transfer, its trail and each step's proof")
    def transfer(transfer_id: str, proofs: bool = True) -> dict:
        with lock:
            return deployment.transfer(transfer_id_of(transfer_id), proofs=proofs)

    @app.get("/bills", summary="usage billing: every access billed, its state and trail")
    def bills(proofs: bool = False) -> list[dict]:
        with lock:
            return deployment.bills(proofs=proofs)

    @app.get("/balances", summary="every named account of the linked chains")
    def balances() -> list[dict]:
        with lock:
            return deployment.balances()

    return app
