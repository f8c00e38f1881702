"""The answer to a submission: one type whether a Ledger or a node's Client gave it.

Codes are a numpy array of :class:`Result` values in request order; ``originals`` holds the
first code of each record answered ``already_committed`` (a retry), ``opened`` the account an
``open_account`` record opened. The txids are hashed from the records on first use when the
answer was not given them (a node's answer names codes only; the client knows its records).
"""

from __future__ import annotations

import numpy as np

from tsunagi import hashing
from tsunagi.core.codes import UNSTORED, Result
from tsunagi.core.records import RECORD_BYTES

__all__ = ["BatchAnswer"]

# For each result code: True when a record with that code is stored in the block.
_STORED = np.ones(256, dtype=bool)
_STORED[[int(code) for code in UNSTORED]] = False


class BatchAnswer:
    """The answer to one submit or submit_batch, in request order.

    ``codes``: N uint8 Result codes. ``opened``: N uint64, the account an open_account record
    opened, else 0. ``height`` and ``block_hash`` name the block holding the stored records
    (None when none were stored). ``originals``: index -> original code of each record
    answered already_committed. ``sync_s``: seconds the block's fsync took (a Ledger's answer).
    """

    __slots__ = ("_records", "_txids", "block_hash", "codes", "height", "opened", "originals",
                 "sync_s")

    def __init__(self, codes, txids=None, opened=None, height: int | None = None,
                 block_hash: bytes | None = None, originals: dict[int, int] | None = None,
                 sync_s: float = 0.0, *, records=None) -> None:
        self.codes = np.asarray(codes, dtype=np.uint8)
        count = len(self.codes)
        self.opened = np.zeros(count, np.uint64) if opened is None \
            else np.asarray(opened, dtype=np.uint64)
        self.height, self.block_hash = height, block_hash
        self.originals = {} if originals is None else originals
        self.sync_s = sync_s
        if txids is None and records is None:
            raise ValueError("an answer needs its txids, or the records to hash them from")
        self._txids, self._records = txids, records

    @property
    def txids(self) -> np.ndarray:
        """N x 32 txids (SHA-256d of each record), hashed on first use if not given."""
        if self._txids is None:
            self._txids = hashing.sha256d_records(self._records, RECORD_BYTES)
            self._records = None
        return self._txids

    @property
    def failures(self) -> list[tuple[int, Result]]:
        """(index, code) of every record that was not applied."""
        return [(int(i), Result(int(self.codes[i]))) for i in np.flatnonzero(self.codes)]

    def final_codes(self) -> np.ndarray:
        """Codes with ``already_committed`` replaced by the original code: what a retry means."""
        codes = self.codes.copy()
        for index, code in self.originals.items():
            codes[index] = code
        return codes

    @property
    def code(self) -> Result:
        """The code of a one-record answer (a submit)."""
        if len(self.codes) != 1:
            raise ValueError(f"the answer holds {len(self.codes)} codes; read .codes")
        return Result(int(self.codes[0]))

    @property
    def account(self) -> int:
        """The account a one-record open_account answer opened (0 if none)."""
        if len(self.opened) != 1:
            raise ValueError(f"the answer holds {len(self.opened)} records; read .opened")
        return int(self.opened[0])

    def slice(self, start: int, end: int) -> BatchAnswer:
        """The answer for records ``start .. end-1`` alone, indexes counted from ``start``.

        Its height and block hash are kept only when one of those records was stored.
        """
        codes = self.codes[start:end]
        stored = bool(_STORED[codes].any())
        if self._txids is not None:
            txids, records = self._txids[start:end], None
        else:
            txids = None
            records = memoryview(self._records)[start * RECORD_BYTES:end * RECORD_BYTES]
        originals = {i - start: c for i, c in self.originals.items() if start <= i < end}
        return BatchAnswer(codes, txids, self.opened[start:end],
                           self.height if stored else None,
                           self.block_hash if stored else None, originals, records=records)

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return (f"BatchAnswer({len(self)} records, height={self.height}, "
                f"failures={self.failures[:8]}{'...' if len(self.failures) > 8 else ''})")
