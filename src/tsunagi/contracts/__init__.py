"""Contracts on a tsunagi chain: world state with a root per block, the canonical encoding,
and deterministic Python contracts installed with the node.

The ledger drives this layer: for each block it hands :meth:`Runtime.execute_block` the block's
decoded calls and stores the results and ``state.root``; to take a block back it calls
``state.undo_block(height)``.
"""

from tsunagi.contracts.base import (
    CallContext,
    Contract,
    ContractState,
    Event,
    OutOfBudget,
    Refuse,
    method,
)
from tsunagi.contracts.encoding import decode, encode
from tsunagi.contracts.keccak import keccak256
from tsunagi.contracts.runtime import (
    Call,
    CallCode,
    CallResult,
    InstalledContract,
    Registry,
    Runtime,
    source_sha256,
)
from tsunagi.contracts.state import WorldState, verify_proof

__all__ = ["Call", "CallCode", "CallContext", "CallResult", "Contract", "ContractState", "Event",
           "InstalledContract", "OutOfBudget", "Refuse", "Registry", "Runtime", "WorldState",
           "decode", "encode", "keccak256", "method", "source_sha256", "verify_proof"]
