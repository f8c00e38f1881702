"""Native kernels of the index's sorted runs (ext/indexing.pyx over ext/index_kernel.c). See
tsunagi.ledger.index."""

from collections.abc import Sequence

import numpy as np

MERGE_RUNS_MAX: int
NATIVE_CONSTANTS: dict[str, int]  # compiled-in sizes, limits and codes by native name

def merge_sources(keys: Sequence[np.ndarray], seconds: Sequence[np.ndarray]
                  ) -> np.ndarray: ...  # uint16, the input of each merged row
def gather_rows(columns: Sequence[np.ndarray], sources: np.ndarray,
                out: np.ndarray | None = None) -> np.ndarray: ...
def bloom_add(words: np.ndarray, keys: np.ndarray) -> None: ...
