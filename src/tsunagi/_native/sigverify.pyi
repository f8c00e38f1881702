"""Batch BIP340 verification through libsecp256k1 (coincurve's), GIL released, on threads."""

import numpy as np

def verify_batch(messages: np.ndarray | bytes, public_keys: np.ndarray | bytes,
                 signatures: np.ndarray | bytes, threads: int = 1) -> np.ndarray: ...
def check_keys(public_keys: np.ndarray | bytes) -> np.ndarray: ...
