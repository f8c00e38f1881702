"""BIP340 verification of many signatures (batch equation or each alone), GIL released."""

import numpy as np

NATIVE_CONSTANTS: dict[str, int]  # compiled-in sizes, limits and codes by native name

def verify_batch(messages: np.ndarray | bytes, public_keys: np.ndarray | bytes,
                 signatures: np.ndarray | bytes, threads: int = 1,
                 batched: bool = True) -> np.ndarray: ...
def check_keys(public_keys: np.ndarray | bytes) -> np.ndarray: ...
