"""Workloads of the ledger benchmarks: chains with funded accounts and pre-signed batches.

Everything here goes through the public API a client has: ``Ledger.create`` with a chain
config, ``submit_batch`` with records, signatures and ``BatchAuth`` entries. Records are built
as numpy structured arrays (no Python object per record) and signed before any timing starts,
as a client signs before it sends.

Two kinds of chain, both with accounts numbered 2 .. accounts + 1 (account 1 is the issuer):

- :func:`genesis_chain`: every account has its own key and is funded at genesis (a config
  allows at most ``tsunagi.limits.genesis_accounts_max`` accounts);
- :func:`owned_chain`: one key owns every account (a key may own many). The accounts are opened
  by batch-authorized ``open_account`` records and funded by batch-authorized mints of the
  issuer, ``SETUP_BATCH_RECORDS`` records and one signature a block: the fastest way the public
  API offers to open millions of accounts (a signature per record costs ~150 us to make and
  ~35 us of a core to verify here; a batch signature costs one verification a block and the
  Merkle hashing of the txids, well under a microsecond a record).

Sequences: a record's sequence is its position in the chain's whole stream of benchmark records
plus one, so every debit account sees strictly increasing sequences (gaps are allowed) however
the accounts are drawn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsunagi import hashing
from tsunagi.core.block import BatchAuth
from tsunagi import limits
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.core.records import RECORD_BYTES, SIGNATURE_BYTES, Kind, pack_many
from tsunagi.ledger.ledger import BatchAnswer, Ledger

CHAIN_ID = 7
ISSUER_ACCOUNT = 1
FIRST_ACCOUNT = 2  # the issuer is account 1, the benchmark accounts follow it
# Each account starts with this much: more than any benchmark moves out of one account, so no
# transfer fails for funds and every record of a run is an applied transfer.
FUNDING_UNITS = 10**12
# Records of one opening or minting block on an owned chain: the most one block may hold.
SETUP_BATCH_RECORDS = limits.block_records_max
# The chain lets a block hold as many records as any chain may, so that batches up to 2**20
# records are accepted as they are.
BLOCK_RECORDS_MAX = limits.block_records_max
# Keys come from fixed seeds, so two runs build the same chains and the same records.
KEY_SEED = 20_240_601
HASH_THREADS = 2  # client-side hashing of the workloads (not timed)


def deterministic_key(seed: int, index: int) -> PrivateKey:
    """Key ``index`` of the stream ``seed``: a SHA-256d secret (below the order in practice)."""
    secret = hashing.sha256d(seed.to_bytes(8, "little") + index.to_bytes(8, "little"))
    return PrivateKey.from_bytes(secret)


@dataclass
class Chain:
    """A ledger and what its client knows: keys, the accounts, the next sequence to use."""

    ledger: Ledger
    path: Path
    issuer: PrivateKey
    account_count: int
    signers: list[PrivateKey]  # one key an account, or one key for all of them
    owner_keys: np.ndarray  # account_count x 32, or 1 x 32 when one key owns every account
    next_sequence: int = 1
    setup_s: dict[str, float] = field(default_factory=dict)

    @property
    def one_owner(self) -> bool:
        return len(self.signers) == 1

    def take_sequences(self, count: int) -> np.ndarray:
        first = self.next_sequence
        self.next_sequence += count
        return np.arange(first, first + count, dtype=np.uint64)

    def keys_of(self, picks: np.ndarray) -> np.ndarray:
        """Owner keys (N x 32) of the accounts at positions ``picks``."""
        if self.one_owner:
            return np.broadcast_to(self.owner_keys[0], (len(picks), 32))
        return self.owner_keys[picks]

    def close(self) -> None:
        self.ledger.close()


def _config(issuer: PrivateKey, allocations=()) -> ChainConfig:
    return ChainConfig(name="bench", chain_id=CHAIN_ID, asset_code="TSU",
                       issuers=(issuer.public_key,), allocations=tuple(allocations),
                       block_records_max=BLOCK_RECORDS_MAX)


def genesis_chain(path: Path, accounts: int, threads: int | None = None) -> Chain:
    """``accounts`` accounts, each with its own key, funded at genesis (~60 us a key)."""
    issuer = deterministic_key(KEY_SEED, 0)
    keys = [deterministic_key(KEY_SEED, 1 + i) for i in range(accounts)]
    started = time.perf_counter()
    config = _config(issuer, [(key.public_key, FUNDING_UNITS) for key in keys])
    ledger = Ledger.create(path, config, threads=threads)
    owner_keys = np.frombuffer(b"".join(k.public_key for k in keys), np.uint8).reshape(-1, 32)
    chain = Chain(ledger, Path(path), issuer, accounts, keys, owner_keys)
    chain.setup_s["create"] = time.perf_counter() - started
    return chain


def new_records(count: int, kind: Kind, sequences, debit, credit, amount,
                batch_authorized: bool) -> np.ndarray:
    """``count`` records of one kind on the benchmark chain, every field set in bulk."""
    return pack_many(count, kind, chain_id=CHAIN_ID, sequence=sequences, debit_account=debit,
                     credit_account=credit, amount=amount, batch_authorized=batch_authorized)


def txids_of(records) -> np.ndarray:
    return hashing.sha256d_records(memoryview(records).cast("B"), RECORD_BYTES, HASH_THREADS)


def batch_auth(records: np.ndarray, key: PrivateKey) -> BatchAuth:
    """One signature over the Merkle root of the records' txids, covering them all."""
    root = hashing.merkle_root(txids_of(records))
    return BatchAuth(0, len(records), key.public_key, key.sign(root))


def _submit_setup(ledger: Ledger, records: np.ndarray, key: PrivateKey,
                  what: str) -> BatchAnswer:
    answer = ledger.submit_batch(records, b"", [batch_auth(records, key)])
    failures = answer.failures
    if failures:
        raise RuntimeError(f"{what}: {len(failures)} records failed, first {failures[:3]}")
    return answer


def owned_chain(path: Path, accounts: int, threads: int | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> Chain:
    """``accounts`` accounts of one key, opened and funded in blocks of 2**20 records."""
    issuer = deterministic_key(KEY_SEED, 0)
    owner = deterministic_key(KEY_SEED + 1, 0)
    started = time.perf_counter()
    ledger = Ledger.create(path, _config(issuer), threads=threads)
    owner_row = np.frombuffer(owner.public_key, np.uint8)
    for first, count in chunks(accounts, SETUP_BATCH_RECORDS):
        # The sequence of an open_account is free; distinct ones make distinct records.
        opens = new_records(count, Kind.open_account, np.arange(first, first + count), 0, 0, 0,
                            batch_authorized=True)
        opens["data"] = owner_row
        answer = _submit_setup(ledger, opens, owner, "open_account")
        expected = np.arange(FIRST_ACCOUNT + first, FIRST_ACCOUNT + first + count)
        if not np.array_equal(answer.opened, expected):
            raise RuntimeError("the accounts were not opened with consecutive numbers")
        if progress:
            progress("opened", first + count, accounts)
    opened_s = time.perf_counter() - started
    for first, count in chunks(accounts, SETUP_BATCH_RECORDS):
        mints = new_records(count, Kind.mint, np.arange(first + 1, first + count + 1),
                            ISSUER_ACCOUNT, np.arange(FIRST_ACCOUNT + first,
                                                      FIRST_ACCOUNT + first + count),
                            FUNDING_UNITS, batch_authorized=True)
        _submit_setup(ledger, mints, issuer, "mint")
        if progress:
            progress("funded", first + count, accounts)
    chain = Chain(ledger, Path(path), issuer, accounts, [owner], owner_row.reshape(1, 32))
    chain.setup_s = {"open": opened_s, "fund": time.perf_counter() - started - opened_s}
    return chain


def reopen_owned_chain(path: Path, accounts: int, threads: int | None = None) -> Chain:
    """The chain owned_chain made in ``path``, opened again (by a fresh process, say).

    Its setup used no transfer sequences, so the client starts again from sequence 1.
    """
    owner = deterministic_key(KEY_SEED + 1, 0)
    owner_row = np.frombuffer(owner.public_key, np.uint8)
    started = time.perf_counter()
    ledger = Ledger.open(path, threads=threads)
    chain = Chain(ledger, Path(path), deterministic_key(KEY_SEED, 0), accounts, [owner],
                  owner_row.reshape(1, 32))
    chain.setup_s["open"] = time.perf_counter() - started
    return chain


@dataclass
class Batch:
    """One submit_batch call's arguments, ready to send, and what its signatures sign."""

    records: bytes
    signatures: bytes
    batches: list[BatchAuth]
    txids: np.ndarray  # N x 32: the messages the record signatures sign
    signer_keys: np.ndarray  # N x 32: the key each record's signature is checked against

    def __len__(self) -> int:
        return len(self.records) // RECORD_BYTES

    def submit(self, ledger: Ledger) -> BatchAnswer:
        return ledger.submit_batch(self.records, self.signatures, self.batches)

    def signature_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(messages, keys, signatures) of the record signatures, as verify_batch takes them."""
        signatures = np.frombuffer(self.signatures, np.uint8).reshape(-1, SIGNATURE_BYTES)
        return self.txids, np.ascontiguousarray(self.signer_keys), signatures


def _transfers(chain: Chain, count: int, rng: np.random.Generator,
               batch_authorized: bool) -> tuple[np.ndarray, np.ndarray]:
    """``count`` transfers of 1 unit between random distinct accounts; and the payers' picks."""
    picks = rng.integers(0, chain.account_count, size=count)
    others = rng.integers(1, max(2, chain.account_count), size=count)  # never 0: not the payer
    records = new_records(count, Kind.transfer, chain.take_sequences(count),
                          FIRST_ACCOUNT + picks,
                          FIRST_ACCOUNT + (picks + others) % chain.account_count, 1,
                          batch_authorized)
    return records, picks


def signed_batch(chain: Chain, size: int, rng: np.random.Generator) -> Batch:
    """Transfers that each carry their own BIP340 signature (~150 us a signature to make)."""
    records, picks = _transfers(chain, size, rng, batch_authorized=False)
    txids = txids_of(records)
    if chain.one_owner:
        signers = [chain.signers[0]] * size
    else:
        signers = [chain.signers[p] for p in picks.tolist()]
    signatures = b"".join(key.sign(txid.tobytes()) for key, txid in zip(signers, txids))
    return Batch(records.tobytes(), signatures, [], txids, chain.keys_of(picks))


def authorized_batch(chain: Chain, size: int, rng: np.random.Generator) -> Batch:
    """Transfers covered by one signature (over the Merkle root of their txids).

    Only an owned chain has one key for every payer, which a batch signature needs.
    """
    if not chain.one_owner:
        raise ValueError("batch-authorized transfers need an owned_chain (one owner key)")
    records, _ = _transfers(chain, size, rng, batch_authorized=True)
    txids = txids_of(records)
    key = chain.signers[0]
    auth = BatchAuth(0, size, key.public_key, key.sign(hashing.merkle_root(txids)))
    return Batch(records.tobytes(), b"", [auth], txids, chain.owner_keys)


def batches(make: Callable[[Chain, int, np.random.Generator], Batch], chain: Chain, size: int,
            count: int, seed: int) -> list[Batch]:
    """``count`` batches of ``size`` records, built (and signed) now, before any timing."""
    rng = np.random.default_rng(seed)
    return [make(chain, size, rng) for _ in range(count)]


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """(first, count) pieces of ``total`` items, ``size`` at most each."""
    for first in range(0, total, size):
        yield first, min(size, total - first)


def vm_status_kib(field_name: str = "VmRSS") -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: the peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)
