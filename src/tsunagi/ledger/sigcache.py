"""Signatures checked before their block: a consortium validator's mempool check.

Every validator of a consortium chain checks every record's signature (docs/FORMAT.md), and a
block must be checked before a validator votes for it: checked only then, the signatures of a
height are verified one validator after another (the proposer's, then the others' at once),
while the cores wait between heights. So a validator checks the records of each submission as
it enters its queue (Tendermint's CheckTx does the same), off the event loop, while the
previous height is decided, and remembers the good ones here: the engine then skips a record
whose txid, signer key and signature are all those remembered (Engine.process). A key that
changed since (an account opened meanwhile with another key) misses, and is verified again.

Bounded: the oldest entries go first past ``entries_max``.
"""

from __future__ import annotations

import threading

import numpy as np

from tsunagi import hashing
from tsunagi._native import commit, sigverify
from tsunagi.core.records import RECORD_BYTES, RECORD_DTYPE, Flags
from tsunagi.ledger import limits

__all__ = ["SignatureCache"]


class SignatureCache:
    """(txid, key, signature) triples known to verify, each remembered by 128 bits of the
    SHA-256d of the triple (a second preimage of those is out of reach, so a record can only
    hit with the very signature that verified)."""

    def __init__(self, entries_max: int = limits.signature_cache_entries_max) -> None:
        self.entries_max = entries_max
        self._entries: dict[tuple[int, int], None] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.checked = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, state, records, signatures, chain_id: int, threads: int = 1
              ) -> np.ndarray:
        """Verifies the signatures of records not batch-authorized (against the signer keys
        ``state`` names now) and remembers those that hold; returns every record's txid."""
        flat = np.frombuffer(records, np.uint8)
        view = flat.view(RECORD_DTYPE)
        txids = hashing.sha256d_records(flat, RECORD_BYTES, threads)
        own = np.flatnonzero((view["flags"] & Flags.batch_authorized) == 0)
        if not own.size or len(signatures) != 64 * own.size:
            return txids
        codes = commit.check_fields(flat, chain_id)
        keys = commit.resolve_signers(state, flat, codes)
        rows = np.frombuffer(signatures, np.uint8).reshape(-1, 64)
        usable = codes[own] == 0
        chosen = own[usable]
        valid = sigverify.verify_batch(txids[chosen], keys[chosen], rows[usable], threads)
        good = chosen[valid]
        names = _names(txids[good], keys[good], rows[usable][valid])
        with self._lock:
            self._entries.update(dict.fromkeys(names))
            excess = len(self._entries) - self.entries_max
            if excess > 0:
                for name in list(self._entries)[:excess]:
                    del self._entries[name]
        self.checked += len(good)
        return txids

    def known(self, txids: np.ndarray, keys: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        """Which of these (txid, key, signature) triples verified before (a bool array)."""
        entries = self._entries
        if not entries:
            return np.zeros(len(txids), dtype=bool)
        found = np.fromiter((name in entries for name in _names(txids, keys, signatures)),
                            dtype=bool, count=len(txids))
        self.hits += int(found.sum())
        return found


def _names(txids: np.ndarray, keys: np.ndarray, signatures: np.ndarray) -> list[tuple]:
    """128 bits of SHA-256d(txid || key || signature) of each row, as (u64, u64) tuples."""
    if not len(txids):
        return []
    triples = np.concatenate([txids, keys, signatures], axis=1)  # N x 128
    digests = hashing.sha256d_records(np.ascontiguousarray(triples), 128)
    words = digests[:, :16].copy().view("<u8")
    return list(zip(words[:, 0].tolist(), words[:, 1].tolist()))
