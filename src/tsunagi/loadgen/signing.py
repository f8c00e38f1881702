"""Signing the prepared traffic: BIP340 with each key's keypair computed once, on a pool.

The pool's processes are started with multiprocessing's ``spawn``: a script that signs more
than ``sign_pool_min`` transfers with more than one worker must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from tsunagi.core.keys import PrivateKey
from tsunagi.core.records import SIGNATURE_BYTES
from tsunagi.errors import ConfigError
from tsunagi.loadgen.limits import sign_chunk
from tsunagi.loadgen.plan import Plan

__all__ = ["signing"]


class _Signer:
    """BIP340 signing with each key's keypair computed once (coincurve's own sign_schnorr
    recomputes it on every call, three times the work). Falls back to PrivateKey.sign."""

    def __init__(self, secrets: list[bytes]) -> None:
        self._keys = [PrivateKey.from_bytes(s) for s in secrets]
        try:
            from coincurve._libsecp256k1 import ffi, lib
            from coincurve.context import GLOBAL_CONTEXT
        except ImportError:
            self._lib = None
            return
        self._ffi, self._lib, self._context = ffi, lib, GLOBAL_CONTEXT.ctx
        self._pairs = []
        for secret in secrets:
            pair = ffi.new("secp256k1_keypair *")
            if not lib.secp256k1_keypair_create(self._context, pair, secret):
                raise ConfigError("a load key is not a valid secp256k1 secret")
            self._pairs.append(pair)

    def sign(self, txids: np.ndarray, owners: np.ndarray) -> bytes:
        """N x 64 signature bytes of N txids, each by the key ``owners[i]``."""
        out = bytearray(len(txids) * SIGNATURE_BYTES)
        if self._lib is None:
            for i, (txid, k) in enumerate(zip(txids, owners.tolist())):
                out[i * 64:(i + 1) * 64] = self._keys[k].sign(txid.tobytes())
            return bytes(out)
        buffer = self._ffi.from_buffer(out)
        sign, context, pairs = self._lib.secp256k1_schnorrsig_sign32, self._context, self._pairs
        # Zero auxiliary randomness is BIP340's deterministic variant: throwaway load keys do
        # not need the side-channel protection that fresh randomness buys.
        aux = bytes(32)
        for i, (txid, k) in enumerate(zip(_rows(txids), owners.tolist())):
            if not sign(context, buffer + i * 64, txid, pairs[k], aux):
                raise RuntimeError("libsecp256k1 failed to sign")
        return bytes(out)


def _rows(array: np.ndarray) -> list[bytes]:
    data = array.tobytes()
    width = array.shape[1]
    return [data[i:i + width] for i in range(0, len(data), width)]


_pool_signer: _Signer | None = None


def _pool_init(secrets: list[bytes]) -> None:
    global _pool_signer
    _pool_signer = _Signer(secrets)


def _pool_sign(txids: np.ndarray, owners: np.ndarray) -> bytes:
    return _pool_signer.sign(txids, owners)


Progress = Callable[[int], None]  # hears of each count of signatures made
Sign = Callable[[np.ndarray, np.ndarray, Progress | None], bytes]


@contextlib.contextmanager
def signing(plan: Plan, workers: int = 1) -> Iterator[Sign]:
    """A ``sign(txids, owners, progress=None) -> signature bytes`` of the plan's owner keys,
    on ``workers`` processes (spawned once, for every call in the ``with``) when ``workers > 1``.
    It signs sign_chunk txids at a time, and ``progress(count)`` hears of each chunk done."""
    secrets = [key.to_bytes() for key in plan.owner_keys()]
    if workers <= 1:
        signer = _Signer(secrets)

        def sign_here(txids: np.ndarray, owners: np.ndarray,
                      progress: Progress | None = None) -> bytes:
            return _joined((signer.sign(txids[i:i + sign_chunk], owners[i:i + sign_chunk])
                            for i in range(0, len(txids), sign_chunk)), progress)

        yield sign_here
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, context, initializer=_pool_init,
                             initargs=(secrets,)) as pool:

        def sign(txids: np.ndarray, owners: np.ndarray, progress: Progress | None = None
                 ) -> bytes:
            parts = [pool.submit(_pool_sign, txids[i:i + sign_chunk], owners[i:i + sign_chunk])
                     for i in range(0, len(txids), sign_chunk)]
            return _joined((part.result() for part in parts), progress)

        yield sign


def _joined(parts: Iterator[bytes], progress: Progress | None) -> bytes:
    """The signature bytes of ``parts`` in order, telling ``progress`` of each part."""
    out = []
    for part in parts:
        out.append(part)
        if progress is not None:
            progress(len(part) // SIGNATURE_BYTES)
    return b"".join(out)
