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
    """What one apply_batch changed: account rows (N x JOURNAL_ROW_WORDS uint64: account,
    balance, sequence, balance before, sequence before), hold and policy indices, and the
    policies' entries before (uint64 words, POLICY_BYTES each) when room was given."""

    accounts: np.ndarray
    holds: np.ndarray
    policies: np.ndarray
    policies_before: np.ndarray | None

JOURNAL_ROW_WORDS: int

def apply_batch(state: object, records: Buffer | np.ndarray, pre_codes: np.ndarray | None = None,
                now_s: int = 0, genesis: bool = False,
                join_next: np.ndarray | None = None,
                journal: bool | np.ndarray | None = None, policy_touches: int = 0
                ) -> tuple: ...  # codes, opened, stored (and a Journal when journal is given)
def journal_words(count: int, policy_touches: int = 0) -> int: ...
def policy_touches(records: Buffer | np.ndarray) -> int: ...
def truncate(state: object, account_count: int, hold_count: int, policy_count: int) -> None: ...
def capture_accounts(state: object, indices: np.ndarray) -> np.ndarray: ...  # N x 3 u64
def place_accounts(state: object, rows: np.ndarray) -> None: ...
def expire_holds(state: object, now_s: int) -> np.ndarray: ...
def check_fields(records: Buffer | np.ndarray, chain_id: int) -> np.ndarray: ...
def resolve_signers(state: object, records: Buffer | np.ndarray,
                    codes: np.ndarray) -> np.ndarray: ...  # N x 32 keys
