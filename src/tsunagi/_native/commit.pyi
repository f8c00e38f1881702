"""Native commit kernel (ext/commit.pyx over ext/commit_kernel.c). See tsunagi.ledger.engine."""

from collections.abc import Buffer

import numpy as np

RECORD_BYTES: int
HOLD_BYTES: int
POLICY_BYTES: int
NATIVE_CONSTANTS: dict[str, int]  # compiled-in sizes, limits and codes by native name

def record_bytes(records: Buffer | np.ndarray) -> np.ndarray: ...  # flat uint8, N * 128
def count_kinds(records: Buffer | np.ndarray) -> np.ndarray: ...
def rebuild_maps(state: object) -> None: ...
def rebuild_heap(state: object) -> None: ...
class Journal:
    """What one apply_batch changed: account rows (N x 3 uint64), hold and policy indices."""

    accounts: np.ndarray
    holds: np.ndarray
    policies: np.ndarray

def apply_batch(state: object, records: Buffer | np.ndarray, pre_codes: np.ndarray | None = None,
                now_s: int = 0, genesis: bool = False,
                join_next: np.ndarray | None = None,
                journal: bool | np.ndarray | None = None
                ) -> tuple: ...  # codes, opened, stored (and a Journal when journal is given)
def journal_words(count: int) -> int: ...
def capture_accounts(state: object, indices: np.ndarray) -> np.ndarray: ...  # N x 3 u64
def place_accounts(state: object, rows: np.ndarray) -> None: ...
def expire_holds(state: object, now_s: int) -> np.ndarray: ...
def check_fields(records: Buffer | np.ndarray, chain_id: int) -> np.ndarray: ...
def resolve_signers(state: object, records: Buffer | np.ndarray,
                    codes: np.ndarray) -> np.ndarray: ...  # N x 32 keys
