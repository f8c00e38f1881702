"""The connection chain as the connection node reaches it: in this process or through a node.

The node needs four things of the connection chain: its id, the last sequence of its operator
account, a contract call run in a block with its full result, and a value of the connection
contract's state. :class:`LocalConnectionChain` answers them from a Ledger and its
ChainContracts open here; :class:`NodeConnectionChain` from a ``tsunagi node --contract
connection=tsunagi.connect.contract:ConnectionContract`` process, through its client
(submit_calls, then query_call_result and query_contract_state: docs/PROTOCOL.md).
"""

from __future__ import annotations

from typing import Protocol

from tsunagi.contracts import encoding
from tsunagi.contracts.base import Event
from tsunagi.contracts.chain import ChainContracts
from tsunagi.contracts.runtime import CallCode, CallResult
from tsunagi.core.codes import Result
from tsunagi.connect.connector import LedgerCommit
from tsunagi.errors import EncodingError, NotFoundError, TsunagiError

__all__ = ["ConnectionChain", "LocalConnectionChain", "NodeConnectionChain"]


class ConnectionChain(Protocol):
    chain_id: int

    def sequence(self, account: int) -> int:
        """The last sequence ``account`` used there."""
        ...

    def call(self, record: bytes, signature: bytes, payload: bytes,
             now_s: int | None) -> CallResult:
        """Runs one signed call record in a block; its result. TsunagiError when the chain
        stored no call (the record refused before it ran, with its code)."""
        ...

    def state(self, key: bytes) -> bytes | None:
        """A world-state value by its whole key (contract prefix included), or None."""
        ...


def _not_run(code: Result) -> TsunagiError:
    return TsunagiError(f"the connection chain did not run the call ({code.name})")


class LocalConnectionChain:
    """The connection chain's Ledger and the ChainContracts it runs, in this process. On a
    consortium chain, pass its ``consortium`` (a ConsortiumChain over ``ledger``) and the
    ``validator_keys`` of more than two thirds of the weight: each block is decided by them
    here (the development mode), the contract unchanged."""

    def __init__(self, ledger, contracts: ChainContracts, consortium=None,
                 validator_keys=()) -> None:
        self.ledger, self.contracts = ledger, contracts
        self.chain_id = ledger.config.chain_id
        self.commit = LedgerCommit(ledger, consortium, validator_keys,
                                   what="the connection chain", owner="LocalConnectionChain",
                                   node="a validator node")

    def sequence(self, account: int) -> int:
        return self.ledger.account(account).sequence

    def call(self, record: bytes, signature: bytes, payload: bytes,
             now_s: int | None) -> CallResult:
        answer = self.commit(record, signature, payloads=[payload], now_s=now_s)
        result = self.contracts.results.get(bytes(answer.txids[0]))
        if result is None:
            raise _not_run(Result(int(answer.codes[0])))
        return result

    def state(self, key: bytes) -> bytes | None:
        return self.contracts.state.get(key)

    def call_many(self, records: list[bytes], signatures: list[bytes], payloads: list[bytes],
                  now_s: int | None) -> list[CallResult]:
        """Runs signed call records all in ONE block (submit_batch of them and their
        payloads: the fast path); their results in order."""
        answer = self.commit(b"".join(records), b"".join(signatures), payloads=payloads,
                             now_s=now_s)
        results = [self.contracts.results.get(bytes(txid)) for txid in answer.txids]
        for result, code in zip(results, answer.codes):
            if result is None:
                raise _not_run(Result(int(code)))
        return results


class NodeConnectionChain:
    """The connection chain served by a node process, through ``client`` (a
    :class:`tsunagi.node.client.Client`, passed in: this layer does not import the node's).
    The node times its blocks by its own clock, so a fixed ``now_s`` is refused."""

    def __init__(self, client) -> None:
        self.client = client
        self.chain_id = client.welcome.chain_id

    def sequence(self, account: int) -> int:
        found = self.client.account(account)
        if found is None:
            raise NotFoundError(f"the connection chain {self.chain_id} has no account "
                                f"{account}: the operator needs one there")
        return found.sequence

    def call(self, record: bytes, signature: bytes, payload: bytes,
             now_s: int | None) -> CallResult:
        if now_s is not None:
            raise EncodingError("a node process times its blocks by its own clock: drive "
                                "it without now_s")
        answer = self.client.submit_calls(record, signature, [payload])
        code = Result(int(answer.final_codes()[0]))
        found = self.client.call_result(bytes(answer.txids[0]))
        if found is not None:
            events = tuple(Event(name, fields) for name, fields in encoding.decode(found.events)) \
                if found.events else ()
            return CallResult(CallCode(found.code), found.value, events, found.steps,
                              found.refuse_code, found.detail)
        # The node no longer knows the result (it restarted since the call): the block still
        # says whether the call stood, though not the contract's refusal code.
        if code is Result.ok:
            return CallResult(CallCode.ok)
        if code is Result.call_refused:
            return CallResult(CallCode.refused, detail="the node no longer keeps this "
                                                       "call's result")
        raise _not_run(code)

    def state(self, key: bytes) -> bytes | None:
        return self.client.contract_state(key)
