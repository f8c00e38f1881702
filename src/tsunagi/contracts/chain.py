"""The contracts of one chain, as the ledger drives them block by block.

A chain config names its contracts by name and the SHA-256 of their source; a node installs
the code (``name -> module:Class``, as chaincode is installed on Fabric peers) and
:class:`ChainContracts` checks each against the config before it runs a call. It is the
ledger's :class:`tsunagi.ledger.calls.CallRunner`: ``Ledger.create(..., calls=contracts)``.

A call record's payload is the canonical encoding (:mod:`tsunagi.contracts.encoding`) of
``[method, arguments]``, arguments a list (positional) or a dict (keyword);
:func:`call_record` builds both. The record names the contract by its number in the config,
1 for the first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from tsunagi.contracts import encoding, limits
from tsunagi.contracts.runtime import Call, CallCode, CallResult, Registry, Runtime
from tsunagi.contracts.state import WorldState
from tsunagi.core import records
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.errors import ConfigError, CorruptLogError, EncodingError

__all__ = ["ChainContracts", "call_payload", "call_record"]

# How a contract's result reads as the record's code in its block.
_RECORD_CODE = {CallCode.ok: Result.ok, CallCode.refused: Result.call_refused}


def call_payload(method: str, args: list | dict | None = None) -> bytes:
    """The payload of a call of ``method`` with ``args``."""
    return encoding.encode([method, [] if args is None else args])


def call_record(chain_id: int, sequence: int, caller_account: int, contract: int,
                method: str, args: list | dict | None = None, **flags) -> tuple[bytes, bytes]:
    """A call record and its payload: sign the record, send both (``payloads=``)."""
    payload = call_payload(method, args)
    return records.call(chain_id, sequence, caller_account, contract, payload, **flags), payload


class ChainContracts:
    """World state and the installed contracts of the chain ``config``; ``installed`` maps
    each contract name of the config to the ``module:Class`` (or ``file.py:Class``) holding
    its code on this node. ConfigError when one is missing or its source hash differs."""

    def __init__(self, config: ChainConfig, installed: Mapping[str, str], *,
                 steps_max: int = limits.call_steps_max) -> None:
        registry = Registry()
        self.names: list[str] = []
        for name, digest in config.contracts:
            target = installed.get(name)
            if target is None:
                raise ConfigError(f"this chain runs contract {name!r}: install its code with "
                                  f"the node ({name}=module:Class)")
            contract = registry.install(target, digest.hex())
            if contract.name != name:
                raise ConfigError(f"{target} is contract {contract.name!r}, but the chain "
                                  f"names {name!r} there")
            self.names.append(name)
        self.runtime = Runtime(registry, steps_max)
        self.state = WorldState()
        # The newest calls' full results (return value, events, refusal), by txid, for
        # whoever answers the caller; the block keeps only each call's code.
        self.results: OrderedDict[bytes, CallResult] = OrderedDict()

    def _call(self, call) -> Call:
        name = self.names[call.contract - 1] if 0 < call.contract <= len(self.names) else ""
        try:
            method, args = encoding.decode(call.payload)
            if not isinstance(method, str) or not isinstance(args, (list, dict)):
                raise EncodingError("a payload is [method, arguments]")
        except EncodingError:
            method, args = "", []  # an unknown method: the call fails, the block goes on
        return Call(name, method, args, call.caller_account, call.caller_key, call.txid)

    def run_block(self, height: int, block_time_s: int, calls: Sequence) -> tuple[list, bytes]:
        results = self.runtime.execute_block(self.state, height, block_time_s,
                                             [self._call(call) for call in calls])
        for call, result in zip(calls, results):
            self.results[call.txid] = result
        while len(self.results) > limits.call_results_kept:
            self.results.popitem(last=False)
        return [_RECORD_CODE.get(result.code, Result.call_failed) for result in results], \
            self.state.root

    def undo_block(self, height: int) -> None:
        self.state.undo_block(height)

    def decoded_under(self, prefix: bytes):
        """(the rest of the key, the decoded value) of every stored key that starts with
        ``prefix`` (a contract's name, a zero byte, then its own key's start), in slot order;
        read from a snapshot of the keys, so a block applied meanwhile does not break it."""
        for key, value in list(self.state.items()):
            if key.startswith(prefix):
                yield key[len(prefix):], encoding.decode(value)

    def snapshot(self) -> bytes:
        return self.state.to_bytes()

    def restore(self, data: bytes, height: int) -> None:
        state = WorldState.from_bytes(data, "beside the chain")
        if state.height != height:
            raise CorruptLogError(f"the world state snapshot is of block {state.height}, its "
                                  f"header says {height}: remove contracts.snapshot to replay")
        self.state = state
